# Installs what building and testing meshbridge needs on Debian (sourced by
# tests/run, sim/run and bench/run; run as root). Safe to run again.
set -euo pipefail

MB_APT_PACKAGES=(wireguard-go wireguard-tools iperf3 dnsmasq-base isc-dhcp-client busybox udhcpc dhcpcd5
  tcpdump iproute2 nftables iputils-ping iputils-arping dnsutils avahi-daemon avahi-utils cups-ipp-utils dbus util-linux curl python3 ca-certificates build-essential pkg-config
  chromium zbar-tools
  qemu-system-x86 hostapd wpasupplicant iw)

mb_install_deps() {
  local missing=()
  for p in "${MB_APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ! python3 -c 'import pytest' 2>/dev/null; then missing+=(python3-pytest); fi
  if ((${#missing[@]})); then
    echo ">> installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  if ! command -v cargo >/dev/null 2>&1; then
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
      export PATH="$HOME/.cargo/bin:$PATH"
    else
      echo ">> installing rustup (Debian package)"
      apt-get install -y -qq --no-install-recommends rustup >/dev/null
      rustup default stable
    fi
  fi
  # python3 with pytest: prefer the one on PATH, fall back to Debian's.
  if python3 -c 'import pytest' 2>/dev/null; then MB_PYTHON=python3; else MB_PYTHON=/usr/bin/python3; fi
  export MB_PYTHON
  mb_install_browser_deps
}

# The browser tests (tests/e2e/test_web_browser.py) drive Debian's chromium with
# playwright-core from npm, pinned in tests/e2e/browser/package-lock.json (never a
# browser download). Node 18 (Debian's) is enough for the pinned version.
mb_install_browser_deps() {
  local dir
  dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tests/e2e/browser"
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo ">> installing: nodejs npm"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
  fi
  if [ ! -f "$dir/node_modules/playwright-core/package.json" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
    echo ">> npm ci in tests/e2e/browser"
    (cd "$dir" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  fi
}
