"""The HTTP face of pdp: OpenID AuthZEN 1.0, the JSON mirror of pdp.v1, and health.

A thin adapter over the same engine call, limits, TLS settings and observer as the gRPC
server (`pdp.server`); the engine imports nothing from here. docs/AUTHZEN.md has the mapping.
Modules: `api` (routes and handlers), `authzen` (the AuthZEN <-> pdp mapping), `body`
(strict JSON bodies), `server` (the aiohttp listener), `cli` (the `pdp serve` flags),
`search` (the table of `--search-db`/`--search-map`; SQLAlchemy only then). Nothing is
imported here, so `pdp serve` without `--http-listen` never loads aiohttp.
"""
