# syntax=docker/dockerfile:1
# The clearing house as a container: built in the full Rust image, run in a slim Debian one.
# No protoc, OpenSSL or other system libraries are needed to build (see README).

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep downloaded crates and compiled dependencies between builds; the binary is
# copied out of the cached target dir in the same step, since the mount is gone after it.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin clearinghouse \
    && cp target/release/clearinghouse /usr/local/bin/clearinghouse

FROM debian:bookworm-slim
# CA certificates for TLS to MongoDB (mongodb+srv://, Atlas) and to a DAPS.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --home-dir /var/lib/clearinghouse --create-home clearinghouse
# The data directory (store, development PKI) exists in the image and belongs to the service's
# user: a named volume mounted here starts as a copy of it, owner included. Without it Docker
# would create the mount point root-owned and `serve` could not write its first file.
RUN install -d -o clearinghouse -g clearinghouse -m 0750 /var/lib/clearinghouse/data
COPY --from=build /usr/local/bin/clearinghouse /usr/local/bin/clearinghouse
USER clearinghouse
WORKDIR /var/lib/clearinghouse
# IDSCP2 (the port idscp2-jvm connectors use by default).
EXPOSE 29292
ENTRYPOINT ["/usr/local/bin/clearinghouse"]
