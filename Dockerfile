# Portico's image: a static-enough binary on a distroless base, running as a non-root user.
#
#   docker build -t portico:0.1.0 .
#
# Build stage: the Rust toolchain the workspace asks for (rust-version 1.85 or newer), the
# dependency versions pinned by Cargo.lock (--locked).
FROM rust:1-bookworm AS build
WORKDIR /src
# The workspace: the portico crate and its members (the sandbox is a member, so its manifest must
# be present for cargo to read the workspace, though it is not built).
COPY . .
RUN cargo build --release --locked -p portico --bin portico \
 && strip target/release/portico \
 && install -D -m 0755 target/release/portico /out/portico

# Runtime stage: glibc, CA certificates and /etc/passwd with the nonroot user (65532), no shell,
# no package manager. rustls does the TLS, so no OpenSSL is needed.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/portico /usr/local/bin/portico
# The service API's example templates, where `api.descriptions: /etc/portico/descriptions` finds
# them; the service-api Component mounts its ConfigMap (your templates) over them.
COPY --from=build /src/descriptions /etc/portico/descriptions
USER 65532:65532
# The webhook (HTTPS) and the ops port (/healthz, /readyz, /metrics).
EXPOSE 8443 9090
ENTRYPOINT ["/usr/local/bin/portico"]
CMD ["serve"]
