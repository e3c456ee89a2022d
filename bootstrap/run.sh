#!/usr/bin/env bash
# The main job: build the appliance image and boot it (one node) under QEMU,
# with the serial console on this terminal.
#
#   bash bootstrap/run.sh                 # build target/image/, boot it with UEFI (OVMF → systemd-boot → UKI)
#   bash bootstrap/run.sh --boot secure-boot   # the same with Secure Boot on and our keys enrolled
#   bash bootstrap/run.sh --boot direct   # QEMU loads the kernel and initramfs itself (fastest)
#   bash bootstrap/run.sh --fresh         # start again from the image's pristine disk
#   bash bootstrap/run.sh --local         # no VM: run the agent on this machine (API 127.0.0.1:7878)
#
# The node's API is forwarded to http://127.0.0.1:7878 on this machine.
# Ctrl-A X quits QEMU. Everything the build needs is installed by the script
# (the first build compiles the kernel: about 10-15 minutes on 2 cores; later
# builds reuse it from $METANODE_CACHE_DIR).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ensure_rust
apt_install pkg-config gcc
# clang-14 + libbpf headers: the agent embeds the XDP program it compiles.
traffic_deps

if [ "${1:-}" = "--local" ]; then
    shift
    DATA_DIR="${METANODE_DATA_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/metanode/dev}"
    LISTEN="${METANODE_API_LISTEN:-127.0.0.1:7878}"
    step "building metanode (release)"
    cargo build --release --locked --manifest-path "$METANODE_ROOT/Cargo.toml" -p metanode
    mkdir -p "$DATA_DIR"
    step "starting a local node: api http://$LISTEN, data $DATA_DIR"
    cat >&2 <<HINT
    try:  curl -s http://$LISTEN/health
          echo hello | curl -s --data-binary @- http://$LISTEN/api/v1/blobs
          $METANODE_ROOT/target/release/metanode store --help
HINT
    exec "$METANODE_ROOT/target/release/metanode" agent --dev --data-dir "$DATA_DIR" --api-listen "$LISTEN" "$@"
fi

image_deps
cd "$METANODE_ROOT"
step "cargo xtask image"
cargo xtask image
step "cargo xtask vm $*"
exec cargo xtask vm "$@"
