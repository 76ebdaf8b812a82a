#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine with the Rust toolchain.
# Idempotent: a tool already present is not installed again.
set -euo pipefail

need_apt=()
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)

if ((${#need_apt[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi
