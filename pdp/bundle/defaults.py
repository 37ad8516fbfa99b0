"""The bundle sources' defaults that `pdp serve --help` shows, in a module that imports nothing:
building the parser must not load the reloader, the archive reader and the HTTP source (a
policy-directory server never uses them; ~12 ms of start-up)."""

DEFAULT_POLL_INTERVAL = 30.0
# A poll's per-read timeout (sources.HTTP_TIMEOUT_SECONDS) is not tripped by a server dripping
# a byte every few seconds: a whole download (connect, headers, body) must finish within this.
HTTP_FETCH_DEADLINE_SECONDS = 60.0
