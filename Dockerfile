# syntax=docker/dockerfile:1
#
# One build, four images: `docker build --target sv-operator -t REGISTRY/sv-operator:TAG .` (and
# sv-nfs, sv-syncer, sv-webhook), or `ci/build-images.sh`, which builds all four. Each image holds
# one static binary and nothing else: a CVE in one program's dependencies shows up in that image's
# scan only, the names match what the operator and the manifests run, and a pod never carries a
# program it does not use. The build stage is shared, so the four cost one compilation.
#
# Static musl binaries on distroless/static (no libc, no shell, no package manager). sv-nfs runs as
# root with every capability dropped but the few the operator's StatefulSet adds back (it chowns
# files for every client uid and opens files by handle); the three others run as the image's
# nonroot user, uid 65532, which the manifests' runAsUser repeats.

ARG RUST_VERSION=1.95
ARG BASE=gcr.io/distroless/static-debian12

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
ARG TARGETARCH
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    set -eu; \
    case "${TARGETARCH:-amd64}" in \
      amd64) triple=x86_64-unknown-linux-musl ;; \
      arm64) triple=aarch64-unknown-linux-musl ;; \
      *) echo "unsupported TARGETARCH ${TARGETARCH}" >&2; exit 1 ;; \
    esac; \
    rustup target add "$triple"; \
    cargo build --release --locked --target "$triple" \
      -p sv-operator -p sv-nfs -p sv-syncer -p sv-webhook --bins; \
    mkdir -p /out; \
    for program in sv-operator sv-nfs sv-syncer sv-webhook; do \
      cp "target/$triple/release/$program" /out/; \
    done

FROM ${BASE}:nonroot AS sv-operator
COPY --from=build /out/sv-operator /usr/local/bin/sv-operator
ENTRYPOINT ["/usr/local/bin/sv-operator"]

FROM ${BASE}:nonroot AS sv-syncer
COPY --from=build /out/sv-syncer /usr/local/bin/sv-syncer
ENTRYPOINT ["/usr/local/bin/sv-syncer"]

FROM ${BASE}:nonroot AS sv-webhook
COPY --from=build /out/sv-webhook /usr/local/bin/sv-webhook
ENTRYPOINT ["/usr/local/bin/sv-webhook"]

# Last, so that a plain `docker build .` yields the image that must run as root knowingly.
FROM ${BASE}:latest AS sv-nfs
COPY --from=build /out/sv-nfs /usr/local/bin/sv-nfs
ENTRYPOINT ["/usr/local/bin/sv-nfs"]
