# Shared helpers for the bootstrap scripts. Sourced, not run.
set -euo pipefail

METANODE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Big builds (peer harnesses, later the kernel) are cached here, keyed by
# their inputs, so a warm run is fast and a cold one still works.
export METANODE_CACHE_DIR="${METANODE_CACHE_DIR:-/var/cache/metanode}"

step() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        die "need root for: $* (run as root or install sudo)"
    fi
}

# The requested packages that are not installed, one per line.
apt_missing() {
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || echo "$p"
    done
}

# Install Debian packages that are missing (quietly, no prompts). Installing
# one package can remove another that was already there (seen: Debian 12's
# qemu-system-x86 7.2 removed a backports qemu-utils 10.0, and the image
# build then had no qemu-img), so every requested package is checked again
# afterwards and the ones gone are installed in a second pass.
apt_install() {
    local missing
    mapfile -t missing < <(apt_missing "$@")
    [ ${#missing[@]} -eq 0 ] && return 0
    step "installing Debian packages: ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    mapfile -t missing < <(apt_missing "$@")
    [ ${#missing[@]} -eq 0 ] && return 0
    step "installing Debian packages removed by the install above: ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    mapfile -t missing < <(apt_missing "$@")
    [ ${#missing[@]} -eq 0 ] || die "Debian packages still not installed: ${missing[*]}"
}

ensure_rust() {
    command -v cargo >/dev/null || die "cargo not found: install Rust 1.95 (https://rustup.rs) and re-run"
    local v
    v="$(rustc --version | awk '{print $2}')"
    case "$v" in
        1.9[5-9]*|1.[1-9][0-9][0-9]*) ;;
        *) die "rustc $v is too old: Metanode needs 1.95 (rustup toolchain install 1.95)" ;;
    esac
    rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt
}

# The BISO traffic lights (#7): clang-14 compiles ebpf/xdp/*.c (ebpf/loader's
# build script) against libbpf's headers; bpftool to inspect what is loaded.
# The cage bench's peers and load: nginx, wrk (the drop-rate packet generators
# are ours: an AF_PACKET sender in xtask and ebpf/xdp/gen.c); ethtool turns on
# GRO on a veth so it takes the XDP generator's frames without XDP.
traffic_deps() {
    apt_install clang-14 llvm-14 libbpf-dev bpftool nftables nginx wrk ethtool
}

# Everything `cargo xtask image` and the QEMU system tests need: the kernel
# source and its build tools, the UKI stub and boot loader, signing, the disk
# tools, QEMU and OVMF, and virt-firmware (PyPI) to enroll Secure Boot keys.
image_deps() {
    apt_install linux-source-6.1 bc bison flex libelf-dev libssl-dev gcc-12-plugin-dev cpio \
        systemd-boot-efi sbsigntool openssl binutils e2fsprogs dosfstools mtools gdisk zstd \
        qemu-utils qemu-system-x86 ovmf python3-pip dnsmasq-base iproute2 busybox-static
    # The chain's network-namespace tests emulate loss and partitions with
    # nftables (the host kernel has no sch_netem).
    apt_install nftables
    traffic_deps
    if ! command -v virt-fw-vars >/dev/null; then
        step "installing virt-firmware (PyPI) for Secure Boot key enrollment"
        python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore virt-firmware \
            || python3 -m pip install --quiet --break-system-packages virt-firmware
        # `python3 -m pip` does not refresh pyenv's shims the way its `pip` shim does.
        if command -v pyenv >/dev/null; then pyenv rehash; fi
        command -v virt-fw-vars >/dev/null \
            || die "virt-fw-vars not on PATH after installing virt-firmware (add pip's script directory to PATH)"
    fi
}
