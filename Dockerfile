# The BAL's container image: `bal serve` on a small, non-root, read-only base.
#
#   docker build -t bal .
#   docker run --read-only -v bal-data:/var/lib/bal -p 8443:8443 -p 8883:8883 bal
#
# Built from the committed contract artifact (contracts/artifacts/Certification.json): no Node
# at build time. Checked in CI by hadolint and scripts/check-deploy (no Docker engine there).

# --- build: the release binary, exactly the locked dependencies.
FROM rust:1.95-slim-bookworm AS build
# protoc: rmqtt's node-to-node gRPC (the embedded MQTT cluster) is compiled at build time.
# make: jemalloc, the binary's allocator, is built from source (tikv-jemalloc-sys).
RUN apt-get update \
    && apt-get install -y --no-install-recommends protobuf-compiler=3.21.* make=4.3-* \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates crates
COPY contracts/artifacts contracts/artifacts
RUN cargo build --release --locked --bin bal \
    && install -D -m 0755 target/release/bal /out/usr/local/bin/bal \
    && install -d -m 0700 /out/var/lib/bal

# --- run: glibc and CA certificates only, as the unprivileged user 65532 (nonroot).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/usr/local/bin/bal /usr/local/bin/bal
COPY --from=build --chown=65532:65532 /out/var/lib/bal /var/lib/bal
USER 65532:65532
WORKDIR /var/lib/bal
# The data folder: SQLite, the generated keys and certificates (none of them when the settings
# name PostgreSQL, the keys and the certificates, as the Helm chart does).
ENV BAL_DATA_DIR=/var/lib/bal \
    BAL_LOG__FORMAT=json
VOLUME ["/var/lib/bal"]
# HTTPS (API, dashboard, probes), MQTT over TLS (embedded broker), metrics.listen if set, the
# MQTT cluster's node-to-node port (mqtt.cluster.listen; the pod network only).
EXPOSE 8443 8883 9090 5363
# No curl in this image: bal asks its own /readyz (exit 0 ready, 1 not).
HEALTHCHECK --interval=15s --timeout=6s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/bal", "health"]
ENTRYPOINT ["/usr/local/bin/bal"]
CMD ["serve"]
