# syntax=docker/dockerfile:1
# pdp: the decision service. Build: docker build -t pdp:0.1.0 .
# Run:   docker run -p 50051:50051 pdp:0.1.0            (serves the example bundle in bundles/)
#        docker run -v $PWD/pdp.yaml:/etc/pdp/pdp.yaml pdp:0.1.0 serve --config /etc/pdp/pdp.yaml
# tests/adopt/test_deploy.py runs this file's build-stage RUN commands in a clean virtual
# environment and serves from what they installed (there is no Docker engine on the CI host).

# -- build: a virtual environment with pdp and its pinned dependencies ---------------------
FROM python:3.11-slim AS build
WORKDIR /src
# The native transport's extension (`pdp serve --transport native`): gcc, Debian's libnghttp2,
# OpenSSL (its TLS) and zlib's headers (compressed requests; the slim image has the library).
RUN (test -f /usr/include/nghttp2/nghttp2.h && test -f /usr/include/openssl/ssl.h \
     && test -f /usr/include/zlib.h && command -v gcc >/dev/null) \
 || (apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev libnghttp2-dev \
     libssl-dev zlib1g-dev \
     && rm -rf /var/lib/apt/lists/*)
COPY pyproject.toml setup.py constraints.txt README.md LICENSE ./
COPY pdp ./pdp
RUN python -m venv /opt/pdp \
 && /opt/pdp/bin/python -m pip install --no-cache-dir --disable-pip-version-check -c constraints.txt .

# -- runtime: the environment only, no compiler, no pip cache, not root ---------------------
FROM python:3.11-slim
# libnghttp2 and libssl3 for the native transport's extension (the libraries only, no compiler).
RUN apt-get update && apt-get install -y --no-install-recommends libnghttp2-14 libssl3 \
 && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin pdp \
 && mkdir -p /var/cache/pdp /etc/pdp \
 && chown 10001 /var/cache/pdp
COPY --from=build /opt/pdp /opt/pdp
COPY bundles /srv/pdp/bundles
ENV PATH=/opt/pdp/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /srv/pdp
USER 10001
EXPOSE 50051
# gRPC health (grpc.health.v1): SERVING once a bundle is active.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["pdp", "health", "--address", "127.0.0.1:50051", "--timeout", "3"]
ENTRYPOINT ["pdp"]
CMD ["serve", "--bundle", "/srv/pdp/bundles", "--listen", "0.0.0.0:50051", "--cache-dir", "/var/cache/pdp"]
