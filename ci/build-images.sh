#!/usr/bin/env bash
# Builds the four images from the Dockerfile. REGISTRY and TAG name them (the kustomize base and
# the operator's defaults use ghcr.io/sharedvolume and the workspace version); PLATFORM picks the
# architecture (linux/amd64 or linux/arm64). PUSH=1 pushes them; KIND_CLUSTER=NAME loads them into
# that kind cluster instead.
set -euo pipefail
cd "$(dirname "$0")/.."

registry=${REGISTRY:-ghcr.io/sharedvolume}
tag=${TAG:-$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)}
platform=${PLATFORM:-linux/amd64}
command -v docker >/dev/null || { echo "build-images: docker is not installed; nothing built" >&2; exit 2; }

for program in sv-operator sv-nfs sv-syncer sv-webhook; do
  image="$registry/$program:$tag"
  echo "building $image"
  docker build --platform "$platform" --target "$program" -t "$image" .
  if [[ "${PUSH:-0}" == 1 ]]; then docker push "$image"; fi
  if [[ -n "${KIND_CLUSTER:-}" ]]; then kind load docker-image "$image" --name "$KIND_CLUSTER"; fi
done
