#!/usr/bin/env bash
# Runs each fuzz target for a short while (SV_FUZZ_SECONDS, default 60 for the NFS decoder and
# half that for the webhook's). cargo-fuzz needs nightly-only compiler flags; RUSTC_BOOTSTRAP
# lets the stable toolchain accept them.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${SV_FUZZ_SECONDS:-60}"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked --version 0.13.2
(
  cd nfs
  RUSTC_BOOTSTRAP=1 cargo fuzz run rpc_decode -- -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1
)
(
  cd webhook
  corpus="$(mktemp -d)"
  trap 'rm -rf "$corpus"' EXIT
  # The recorded AdmissionReviews seed the corpus (tests/admission/requests, read only: new inputs go to the temporary one).
  RUSTC_BOOTSTRAP=1 cargo fuzz run review_decode "$corpus" tests/admission/requests -- \
    -max_total_time="$(( (seconds + 1) / 2 ))" -rss_limit_mb=2048 -print_final_stats=1
)
