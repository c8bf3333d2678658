# shellcheck shell=bash disable=SC2034
# Shared helpers for the image/ scripts (sourced, not run). Debian, as root.
# Every build output goes under target/ (gitignored): binaries in target/cross/out/<triple>/,
# packages in target/pkg/.
set -euo pipefail

IMG_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MB_SELF="$IMG_DIR/$(basename "$0")"   # the running script, by absolute path
REPO="$(cd "$IMG_DIR/.." && pwd)"
# MB_CROSS_TARGET_DIR: cargo's target dir for the cross builds only, e.g. one kept outside the
# checkout (tests/run: ~/.cache/meshbridge/cargo-cross) so the dependencies are compiled once for
# every clone; the binaries still land in target/cross/out.
if [ -n "${MB_CROSS_TARGET_DIR:-}" ]; then
  export CARGO_TARGET_DIR="$MB_CROSS_TARGET_DIR"
  OUT_DIR="$REPO/target/cross/out"
else
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target/cross}"
  OUT_DIR="$CARGO_TARGET_DIR/out"        # <triple>/meshbridge, <triple>/build.log, <triple>/FAILED
fi
# zig's cache (musl crt/libc objects per target) lives beside cargo's.
export ZIG_GLOBAL_CACHE_DIR="${ZIG_GLOBAL_CACHE_DIR:-$CARGO_TARGET_DIR/zig-cache}"
PKG_DIR="${MB_PKG_DIR:-$REPO/target/pkg}"
VENV="${MB_ZIG_VENV:-$REPO/target/zig-venv}"
# Pinned so a fresh machine gets the toolchain measured in BENCHMARKS.md (override to try others).
ZIG_PIP_SPEC="${MB_ZIG_PIP_SPEC:-ziglang==0.17.1 cargo-zigbuild==0.24.0}"

DEFAULT_TARGETS=(aarch64-unknown-linux-musl x86_64-unknown-linux-musl)
ALL_TARGETS=(aarch64-unknown-linux-musl x86_64-unknown-linux-musl
  armv7-unknown-linux-musleabihf arm-unknown-linux-musleabihf
  mipsel-unknown-linux-musl mips-unknown-linux-musl)

# The package version: the workspace version in Cargo.toml.
mb_version() {
  sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$REPO/Cargo.toml" | head -n1
}

# Which targets need nightly -Zbuild-std (no prebuilt musl std for them on stable).
mb_needs_build_std() {
  case "$1" in
    x86_64-unknown-linux-musl) return 1 ;;
    *) return 0 ;;
  esac
}

# qemu-user binary (and CPU) for a triple; empty for x86_64 (runs natively).
mb_qemu_for() {
  case "$1" in
    aarch64-*) echo "qemu-aarch64-static" ;;
    armv7-*) echo "qemu-arm-static -cpu cortex-a7" ;;
    arm-*) echo "qemu-arm-static -cpu arm1176" ;;   # ARMv6 + VFP: Raspberry Pi 1 / Zero
    mipsel-*) echo "qemu-mipsel-static -cpu 24Kc" ;;
    mips-*) echo "qemu-mips-static -cpu 24Kc" ;;
    x86_64-*) echo "" ;;
    *) echo "unknown" ;;
  esac
}

# What `file` must say about a binary of this triple.
mb_file_pattern() {
  case "$1" in
    aarch64-*) echo "ELF 64-bit LSB .*ARM aarch64" ;;
    armv7-* | arm-*) echo "ELF 32-bit LSB .*ARM, EABI5" ;;
    mipsel-*) echo "ELF 32-bit LSB .*MIPS" ;;
    mips-*) echo "ELF 32-bit MSB .*MIPS" ;;
    x86_64-*) echo "ELF 64-bit LSB .*x86-64" ;;
  esac
}

mb_apt_install() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    echo ">> apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

mb_ensure_rustup() {
  if ! command -v rustup >/dev/null 2>&1; then
    if [ -x "$HOME/.cargo/bin/rustup" ]; then
      export PATH="$HOME/.cargo/bin:$PATH"
    else
      echo ">> installing rustup (rustup.rs, minimal profile, stable)"
      mb_apt_install curl ca-certificates build-essential
      curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --default-toolchain stable
      export PATH="$HOME/.cargo/bin:$PATH"
    fi
  fi
}

# zig + cargo-zigbuild from PyPI in a venv under target/ (zig is the cross linker and C compiler).
mb_ensure_zig() {
  mb_apt_install python3 python3-venv
  if [ ! -x "$VENV/bin/cargo-zigbuild" ] || [ ! -x "$VENV/bin/python-zig" ]; then
    echo ">> pip install $ZIG_PIP_SPEC (venv $VENV)"
    /usr/bin/python3 -m venv "$VENV"
    # shellcheck disable=SC2086
    "$VENV/bin/pip" install -q $ZIG_PIP_SPEC
  fi
  export PATH="$VENV/bin:$PATH"
}

mb_ensure_nightly() {
  if ! rustup run nightly rustc -V >/dev/null 2>&1; then
    echo ">> rustup toolchain install nightly --profile minimal"
    rustup toolchain install nightly --profile minimal
  fi
  if ! rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src'; then
    echo ">> rustup component add rust-src --toolchain nightly"
    rustup component add rust-src --toolchain nightly
  fi
}

mb_mib() { awk -v b="$1" 'BEGIN { printf "%.2f", b / 1048576 }'; }

# `SCRIPT -h|--help`: print the script's header comment and exit.
mb_help() {
  case "${1:-}" in
    -h | --help) sed -n '2,/^set -euo/p' "$MB_SELF" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  esac
}
