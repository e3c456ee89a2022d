#!/usr/bin/env bash
# Install what the tests need, then run every test of every issue
# (formatting, clippy, unit + integration + system tests as root, and the
# benchmark smoke runs). This is what CI runs: .ci/run calls this script.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ensure_rust
# nodejs/npm: the Helia peer of the storage bench; pkg-config/gcc: -sys crates.
command -v node >/dev/null || apt_install nodejs
apt_install pkg-config gcc
image_deps
command -v npm >/dev/null || die "npm not found (the nodejs package must provide it)"
cd "$METANODE_ROOT"
# A one-shot run gains nothing from incremental caches; they only cost disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
step "cargo xtask ci"
exec cargo xtask ci "$@"
