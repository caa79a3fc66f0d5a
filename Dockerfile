# Multi-stage build: compile in the Rust image, run in a small Debian image as a non-root user.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY actors ./actors
COPY src ./src
COPY config ./config
COPY migrations ./migrations
# Cargo.toml names the benchmark targets, so their sources must be present to build at all.
COPY benches ./benches
RUN cargo build --release --locked --bin zundamon

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tini \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin zundamon \
 && mkdir -p /app/data /app/config \
 && chown -R zundamon /app && chmod 0700 /app/data
WORKDIR /app
COPY --from=build /src/target/release/zundamon /usr/local/bin/zundamon
COPY config ./config
USER zundamon
ENV PORT=8080 ZUNDA_DB_PATH=/app/data/zundamon.db RUST_LOG=info
EXPOSE 8080
# Mount a volume at /app/data to keep conversation windows across container replacements.
VOLUME ["/app/data"]
# tini forwards SIGTERM so the bot drains gracefully within ZUNDA_SHUTDOWN_GRACE_SECS.
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/zundamon"]
