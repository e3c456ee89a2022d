#!/usr/bin/env bash
# Build Metanode and run a local node in the foreground.
#
#   bash bootstrap/run.sh                 # node on 127.0.0.1:7878, data in ~/.local/share/metanode/dev
#   METANODE_DATA_DIR=/srv/mn METANODE_API_LISTEN=0.0.0.0:7878 bash bootstrap/run.sh
#
# Everything it needs is installed by the script itself. Stop with Ctrl-C
# (the store is flushed on shutdown).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DATA_DIR="${METANODE_DATA_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/metanode/dev}"
LISTEN="${METANODE_API_LISTEN:-127.0.0.1:7878}"

ensure_rust
apt_install pkg-config
step "building metanode (release)"
cargo build --release --locked --manifest-path "$METANODE_ROOT/Cargo.toml" -p metanode
mkdir -p "$DATA_DIR"
step "starting a local node: api http://$LISTEN, data $DATA_DIR"
cat >&2 <<HINT
    try:  curl -s http://$LISTEN/health
          echo hello | curl -s --data-binary @- http://$LISTEN/api/v1/blobs
          $METANODE_ROOT/target/release/metanode store --help
HINT
exec "$METANODE_ROOT/target/release/metanode" agent --dev --data-dir "$DATA_DIR" --api-listen "$LISTEN"
