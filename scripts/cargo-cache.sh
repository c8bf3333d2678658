# shellcheck shell=bash
# Cargo target dirs kept outside the checkout and shared by its clones (tests/run keeps them in
# ~/.cache/meshbridge/cargo-*, like the Go programs): the dependencies from crates.io are compiled
# once per machine instead of once per clone. Sourced by tests/run, scripts/fuzz-smoke and
# image/lib.sh; bash, set -euo pipefail.
#
# Cargo takes a package of the workspace (a path package) as up to date when its files are older
# than its last build, and a clone's files can be older than what another clone built there since
# (two runs at once). So a shared dir is used by one build at a time, and that build starts by
# removing what is there of the checkout's own packages: they are always compiled from this
# checkout's files; only the crates.io dependencies are reused (cargo checks them by version,
# features, flags and compiler).

# mb_cargo_cache_dir NAME: prints ~/.cache/meshbridge/NAME (made if missing); a dir that has grown
# past 10 GiB (old versions of dependencies or toolchains pile up) starts over.
mb_cargo_cache_dir() {
  local d="$HOME/.cache/meshbridge/$1"
  if [ -d "$d" ] && (($(du -sm "$d" | cut -f1) > 10240)); then rm -rf "$d"; fi
  mkdir -p "$d"
  echo "$d"
}

# mb_cargo_cache_take DIR LOCKFILE [CARGO-CLEAN-ARGS...]: takes DIR's lock on fd 9 (held until the
# caller exits or runs `exec 9>&-`), then, unless this checkout was the last to use DIR (then
# cargo's own checks hold, as in target/), `cargo clean -p` each path package of ./Cargo.lock in
# DIR (CARGO-CLEAN-ARGS: e.g. --release --target TRIPLE). Run from the directory of that Cargo.lock.
mb_cargo_cache_take() {
  local dir=$1 lock=$2 p pkgs=() me
  shift 2
  mkdir -p "$dir"
  exec 9>"$dir/$lock"
  if ! flock -n 9; then
    echo ">> waiting for $dir (another build is using it)"
    flock 9
  fi
  me=$(pwd -P)
  [ "$(cat "$dir/$lock.checkout" 2>/dev/null)" != "$me" ] || return 0
  # Path packages: the [[package]] entries of Cargo.lock without a `source`.
  for p in $(awk '/^\[\[package\]\]/ { if (n != "" && !s) print n; n = ""; s = 0 }
      /^name = / { gsub(/"/, "", $3); n = $3 } /^source = / { s = 1 } END { if (n != "" && !s) print n }' Cargo.lock); do
    pkgs+=(-p "$p")
  done
  if ((${#pkgs[@]})); then cargo clean -q --target-dir "$dir" "$@" "${pkgs[@]}"; fi
  echo "$me" >"$dir/$lock.checkout"
}
