# The kvstore image: `kvstore serve` as the entry point, `kvctl` beside it,
# on a minimal non-root glibc runtime.
#
# Needs BuildKit (the default builder of Docker 23 and later, `docker
# buildx build`): it builds only the stages the target uses, and the cache
# mounts below are BuildKit syntax.
#
#   docker build -t kvstore:dev .
#   docker buildx build --platform linux/amd64,linux/arm64 -t <repo>:<tag> --push .
#
# The builder always runs on the build machine's own platform and
# cross-compiles for the target platform (linux/amd64 or linux/arm64 for
# Graviton), so a multi-platform build needs no emulation. The runtime
# stage takes the target platform's base image.
#
# Where no registry is reachable, the binaries can come from outside: put
# `kvstore` and `kvctl` (glibc, built for the target platform) in a
# directory and build with that directory as the context:
#   docker build -f Dockerfile --build-arg BINARIES=prebuilt \
#     --build-arg RUNTIME_IMAGE=<a local glibc image> -t kvstore:test <dir>
# (.ci/k8s/container-test.sh does exactly that). The runtime stage is the
# same either way.

# Bookworm on both sides: the binaries link against the builder's glibc,
# and the runtime must have that glibc or a newer one.
ARG RUST_IMAGE=docker.io/library/rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot
# "build" compiles from source; "prebuilt" takes binaries from the context.
ARG BINARIES=build
# The images are tagged in the ARG defaults above; checkov cannot see
# through the variables of the FROM lines.
# checkov:skip=CKV_DOCKER_7: every FROM takes a build argument whose default is a pinned tag (rust:1.95-slim-bookworm, distroless cc-debian12:nonroot) or a stage name

FROM --platform=$BUILDPLATFORM ${RUST_IMAGE} AS build
ARG TARGETARCH
WORKDIR /src
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# The Rust target of the target platform. A native build uses the image's
# own gcc as the linker; a cross build installs Debian's cross gcc and
# glibc for the target and tells cargo to link with it. Nothing else is
# needed: the crates are pure Rust and protox compiles the protos without
# protoc.
# hadolint ignore=DL3008
RUN case "${TARGETARCH}" in \
      amd64) triple=x86_64-unknown-linux-gnu;  cc=x86_64-linux-gnu;  gcc_pkg=gcc-x86-64-linux-gnu; libc_pkg=libc6-dev-amd64-cross ;; \
      arm64) triple=aarch64-unknown-linux-gnu; cc=aarch64-linux-gnu; gcc_pkg=gcc-aarch64-linux-gnu; libc_pkg=libc6-dev-arm64-cross ;; \
      *) echo "unsupported TARGETARCH=${TARGETARCH}" >&2; exit 1 ;; \
    esac \
    && if [ "$(dpkg --print-architecture)" != "${TARGETARCH}" ]; then \
         apt-get update \
         && apt-get install -y --no-install-recommends "${gcc_pkg}" "${libc_pkg}" \
         && rm -rf /var/lib/apt/lists/* \
         && printf '[target.%s]\nlinker = "%s-gcc"\n' "${triple}" "${cc}" >> "${CARGO_HOME}/config.toml" \
         && rustup target add "${triple}"; \
       fi \
    && echo "${triple}" > /rust-target
# The manifest and lockfile first, then the sources; --locked builds exactly
# the dependency versions of Cargo.lock.
# The pod binary is built without the default "box" feature: the cluster
# in a box (embedded DNS, supervisor, demo) is for laptops and CI, and the
# image carries none of it (`docker run IMAGE demo` says so).
COPY Cargo.toml Cargo.lock ./
COPY proto ./proto
COPY src ./src
COPY crates ./crates
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    triple="$(cat /rust-target)" \
    && cargo build --release --locked --target "${triple}" -p kvstore --no-default-features --bin kvstore \
    && cargo build --release --locked --target "${triple}" -p kvstore-client --bin kvctl \
    && mkdir -p /out/bin /out/data \
    && cp "target/${triple}/release/kvstore" "target/${triple}/release/kvctl" /out/bin/

# Binaries built elsewhere (see above): the context holds kvstore and kvctl.
FROM scratch AS prebuilt
COPY kvstore kvctl /out/bin/
WORKDIR /out/data

# Whichever of the two supplies /out.
# hadolint ignore=DL3006
FROM ${BINARIES} AS binaries

FROM ${RUNTIME_IMAGE} AS runtime
ARG RUNTIME_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="kvstore" \
      org.opencontainers.image.description="A small replicated key-value store built for Kubernetes StatefulSets" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.base.name="${RUNTIME_IMAGE}"
COPY --from=binaries /out/bin/kvstore /out/bin/kvctl /usr/local/bin/
# The data dir, owned by the runtime user so a plain `docker run` (or a
# named volume, which copies this ownership) can write it. In Kubernetes the
# PVC is mounted here and made writable by the pod's fsGroup.
COPY --from=binaries --chown=65532:65532 /out/data /var/lib/kvstore
# distroless "nonroot" (65532); numeric, so runAsNonRoot can verify it.
USER 65532:65532
WORKDIR /var/lib/kvstore
ENV KVSTORE_DATA_DIR=/var/lib/kvstore \
    KVSTORE_LOG_FORMAT=json
# 7379: clients (KV, Cluster, Maintenance, grpc.health.v1, reflection);
# 7380: peers; 7381: the ops port (/healthz, /readyz, /metrics), when
# KVSTORE_OPS_LISTEN sets it, as the StatefulSet does.
EXPOSE 7379 7380 7381
# Kubernetes ignores HEALTHCHECK and probes the ops port over HTTP instead
# (k8s/base/statefulset.yaml); the image has no shell or probe tool to run
# one with.
# checkov:skip=CKV_DOCKER_2: Kubernetes probes the ops port (httpGet) natively; HEALTHCHECK is ignored there and the distroless image has nothing to run it with
# `serve` is the default command, so the StatefulSet (which sets only env)
# runs a node, and `docker run IMAGE <subcommand>` reaches the binary.
ENTRYPOINT ["/usr/local/bin/kvstore"]
CMD ["serve"]
