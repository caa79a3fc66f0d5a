# syntax=docker/dockerfile:1
# Multi-stage build: plan and cook the dependencies in their own layer (cargo-chef), so a source
# change rebuilds only the workspace crates; run in a small Debian image as a non-root user.
FROM rust:1.95-slim-bookworm AS chef
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN cargo install cargo-chef --locked
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# The binary is linked statically (glibc) and not position-independent: no shared libraries and
# no start-up relocations to map, about 4 MiB less resident memory at rest (BENCHMARKS.md,
# "Footprint"). The price is a fixed address for the executable's own code (libraries, heap and
# stacks are still randomised). `--build-arg RUSTFLAGS=` builds a dynamically linked PIE instead.
# The target is named explicitly so that these flags do not reach build scripts and proc-macros.
ARG RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static"
ENV RUSTFLAGS=${RUSTFLAGS}
COPY --from=planner /src/recipe.json recipe.json
# Only the dependency graph goes into this layer: it is rebuilt when Cargo.toml/Cargo.lock change.
RUN cargo chef cook --release --locked --target "$(rustc -vV | sed -n 's/^host: //p')" \
      --recipe-path recipe.json
COPY Cargo.toml Cargo.lock ./
COPY actors ./actors
COPY src ./src
COPY config ./config
COPY migrations ./migrations
# Cargo.toml names the benchmark targets, so their sources must be present to build at all.
COPY benches ./benches
RUN target="$(rustc -vV | sed -n 's/^host: //p')" \
 && cargo build --release --locked --target "$target" --bin zundamon \
 && cp "target/$target/release/zundamon" /usr/local/bin/zundamon

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 zundamon \
 && useradd --system --uid 10001 --gid 10001 --home-dir /app --shell /usr/sbin/nologin zundamon \
 && mkdir -p /app/data /app/config \
 && chown -R zundamon /app && chmod 0700 /app/data
WORKDIR /app
COPY --from=build /usr/local/bin/zundamon /usr/local/bin/zundamon
COPY config ./config
# Numeric, so platforms can verify runAsNonRoot without reading /etc/passwd.
USER 10001:10001
ENV PORT=8080 ZUNDA_DB_PATH=/app/data/zundamon.db RUST_LOG=info
EXPOSE 8080
# Mount a volume at /app/data to keep conversation windows across container replacements.
VOLUME ["/app/data"]
# No curl in the image: the binary probes its own /healthz (exit 0 healthy, 1 unhealthy).
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/zundamon", "healthcheck", "--timeout", "3"]
# tini forwards SIGTERM (drain within ZUNDA_SHUTDOWN_GRACE_SECS) and SIGHUP (reload the
# configuration) to the bot.
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/zundamon"]
