#!/usr/bin/env bash
# Build the webhooks Lambda (functions/webhooks, binary `webhooks`) for AWS Lambda
# (provided.al2023, x86_64) with cargo-lambda, and report the size of the zip Lambda would get.
#
#   scripts/lambda-build.sh            # release build, x86_64
#   scripts/lambda-build.sh --arm64    # extra flags go to `cargo lambda build`
#                                      # (arm64 needs: rustup target add aarch64-unknown-linux-gnu)
#
# `cdk deploy` runs the same build through cargo-lambda-cdk; this script is for checking the
# binary and its size by hand, or for `cargo lambda deploy`-style workflows.
# Output lands in <cargo target dir>/lambda/webhooks/bootstrap (CARGO_TARGET_DIR is honoured).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

# cargo-lambda ships on PyPI with zig bundled, so no Docker and no separate linker are needed.
if ! cargo lambda --version >/dev/null 2>&1; then
  echo "cargo-lambda not found; installing it with pip" >&2
  python3 -m pip install --quiet cargo-lambda
  if ! cargo lambda --version >/dev/null 2>&1; then
    echo "error: cargo-lambda installed but 'cargo lambda' still fails;" \
      "is pip's script directory ($(python3 -m site --user-base)/bin or similar) on PATH?" >&2
    exit 1
  fi
fi
echo "using $(cargo lambda --version)" >&2

# x86_64 unless the caller picked a target (--arm64 / --target ...).
arch_flag=(--x86-64)
for a in "$@"; do
  case "$a" in --arm64 | --x86-64 | --target | --target=*) arch_flag=() ;; esac
done
cargo lambda build --release --package vaani-webhooks --bin webhooks "${arch_flag[@]}" "$@"

target_dir="$(cargo metadata --format-version 1 --no-deps --offline |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
bootstrap="$target_dir/lambda/webhooks/bootstrap"
if [[ ! -f "$bootstrap" ]]; then
  echo "error: expected the built binary at $bootstrap" >&2
  exit 1
fi

# Lambda takes a zip with `bootstrap` at its root; measure exactly that.
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 - "$bootstrap" "$tmp/webhooks.zip" <<'PY'
import sys, zipfile
src, dst = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(dst, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
    info = zipfile.ZipInfo("bootstrap")
    info.external_attr = 0o100755 << 16  # regular file, executable
    info.compress_type = zipfile.ZIP_DEFLATED
    with open(src, "rb") as f:
        z.writestr(info, f.read(), compresslevel=9)
PY
raw_bytes=$(stat -c %s "$bootstrap")
zip_bytes=$(stat -c %s "$tmp/webhooks.zip")
awk -v p="$bootstrap" -v r="$raw_bytes" -v z="$zip_bytes" 'BEGIN {
  printf "bootstrap: %s (%d bytes, %.1f MiB)\n", p, r, r / 1048576
  printf "zipped:    %d bytes (%.1f MiB; Lambda allows 50 MiB zipped direct upload, 250 MiB unzipped)\n", z, z / 1048576
}'
