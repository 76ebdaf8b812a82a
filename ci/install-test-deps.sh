#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine with the Rust toolchain.
# Idempotent: a tool already present is not installed again.
set -euo pipefail

need_apt=()
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
# A real third-party NFS client for the sv-nfs tests.
command -v nfs-ls >/dev/null 2>&1 || need_apt+=(libnfs-utils)
# Real source servers for the syncer tests: git (http-backend and over SSH), OpenSSH (SFTP).
command -v git >/dev/null 2>&1 || need_apt+=(git)
[ -x /usr/sbin/sshd ] || need_apt+=(openssh-server)
command -v ssh >/dev/null 2>&1 || need_apt+=(openssh-client)
command -v useradd >/dev/null 2>&1 || need_apt+=(passwd)
# An outside client for the simulated API server, and the recorded transcript tool's interpreter.
command -v kubectl >/dev/null 2>&1 || need_apt+=(kubernetes-client)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)

if ((${#need_apt[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi
