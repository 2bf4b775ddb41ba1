# One image with all six service binaries; each Deployment of the chart runs its own
# (`command: ["/usr/local/bin/<service>"]`). One build compiles the shared libraries once,
# registries store their layers once, and every service of a release is the same version.
#
#   docker build -t ghcr.io/your-org/platform:v0.2.9 .

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
        -p app -p gitserver -p email_worker -p git_hook -p metrics_aggregator -p static_server \
 && mkdir -p /out \
 && cp target/release/app target/release/gitserver target/release/email_worker \
       target/release/git_hook target/release/metrics_aggregator target/release/static_server /out/

FROM debian:bookworm-slim
# git serves clones and pushes; ca-certificates verifies TLS to PostgreSQL, SMTP and the AI API.
RUN apt-get update \
 && apt-get install -y --no-install-recommends git ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 1000 platform \
 && useradd --uid 1000 --gid 1000 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin platform
COPY --from=build /out/ /usr/local/bin/
USER 1000:1000
ENV APP_LOG_LEVEL=info
# Each Deployment picks its binary; running the image bare starts the API server.
CMD ["/usr/local/bin/app"]
