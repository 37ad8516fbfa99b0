"""The native transport's C extension (`pdp serve --transport native`); the rest is pyproject.toml.

Built by every install (`pip install .`, `make`) where Debian's libnghttp2-dev and libssl-dev
(TLS, `_tls.c`) and a C compiler are present; optional, so an install without them still succeeds and
`--transport native` then says what is missing.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "pdp.server.native._h2",
            ["pdp/server/native/_h2.c", "pdp/server/native/_tls.c"],
            depends=[
                "pdp/server/native/_tls.h",
                "pdp/server/native/_h2_stream.c",
            ],  # included by _h2.c
            libraries=["nghttp2", "ssl", "crypto", "z"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-std=gnu11"],
            optional=True,
        )
    ]
)
