# syntax=docker/dockerfile:1
#
# daytona-mcp: a multi-stage build. The build stage compiles the release binary; the runtime
# stage is Debian slim with what the local driver's sandboxes use (bubblewrap, git, python3,
# node) and, optionally, the Daytona CLI for the `daytona` driver.
#
#   docker build -t daytona-mcp .
#   docker build -t daytona-mcp --build-arg DAYTONA_CLI_URL=<release asset URL> \
#       --build-arg DAYTONA_CLI_SHA256=<its sha256> .
#
# Privileges: the server runs as the unprivileged user `daytona` (uid 10001). The local
# driver's bubblewrap isolation needs user namespaces, which Docker's default seccomp (and,
# on Ubuntu hosts, AppArmor) profile refuses inside a container: run with
# `--security-opt seccomp=unconfined --security-opt apparmor=unconfined` (docker-compose.yml
# does) or the server falls back to Landlock (`local.isolation = "auto"`), which needs no
# privilege but does not hide the host's process list. Per-command cgroup limits need a
# writable, delegated cgroup; without one, limits are rlimits (see /readyz).

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=trixie

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
WORKDIR /src
# The manifest, then the sources: Cargo.toml names the benchmark, so benches/ must be there.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY migrations ./migrations
COPY benches ./benches
# Shown as `revision` in daytona_mcp_build_info.
ARG DAYTONA_MCP_REVISION=unknown
ENV DAYTONA_MCP_REVISION=${DAYTONA_MCP_REVISION}
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin daytona-mcp \
    && cp target/release/daytona-mcp /usr/local/bin/daytona-mcp

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# bubblewrap: the local driver's isolation; git, python3, nodejs: what sandboxes run;
# curl: the health check; ca-certificates: HTTPS git remotes and the Daytona API.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        bubblewrap ca-certificates curl git nodejs python3 \
    && rm -rf /var/lib/apt/lists/*
# The Daytona CLI, for `sandbox.driver = "daytona"`: only when a release asset URL is given
# (with its SHA-256, checked).
ARG DAYTONA_CLI_URL=""
ARG DAYTONA_CLI_SHA256=""
RUN if [ -n "${DAYTONA_CLI_URL}" ]; then \
        curl -fsSL -o /usr/local/bin/daytona "${DAYTONA_CLI_URL}" \
        && if [ -n "${DAYTONA_CLI_SHA256}" ]; then \
               echo "${DAYTONA_CLI_SHA256}  /usr/local/bin/daytona" | sha256sum -c -; \
           fi \
        && chmod 0755 /usr/local/bin/daytona \
        && daytona --version; \
    fi
COPY --from=build /usr/local/bin/daytona-mcp /usr/local/bin/daytona-mcp
RUN useradd --system --uid 10001 --home-dir /var/lib/daytona-mcp --create-home \
        --shell /usr/sbin/nologin daytona \
    && chmod 0700 /var/lib/daytona-mcp
USER 10001:10001
WORKDIR /var/lib/daytona-mcp
ENV DAYTONA_MCP_DATA_DIR=/var/lib/daytona-mcp \
    DAYTONA_MCP_LISTEN=0.0.0.0:8001 \
    DAYTONA_MCP_SERVER__METRICS_LISTEN=0.0.0.0:9464 \
    DAYTONA_MCP_LOG__FORMAT=json
VOLUME ["/var/lib/daytona-mcp"]
EXPOSE 8001 9464
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["curl", "-fsS", "http://127.0.0.1:8001/healthz"]
ENTRYPOINT ["/usr/local/bin/daytona-mcp"]
CMD ["serve"]
