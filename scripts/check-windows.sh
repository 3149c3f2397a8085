#!/usr/bin/env bash
# Type-checks nuage for Windows on Linux, the WinFsp adapter included: clippy (with -D
# warnings) for x86_64-pc-windows-gnu, with WinFsp's pre-generated bindings (feature
# winfsp-typecheck) instead of its SDK. Nothing is linked or run: that needs Windows, WinFsp
# and its SDK (see the README). Not part of .ci/run: it downloads Rust's standard library for
# Windows (rustup) and a MinGW compiler (apt-get) for SQLite's C code.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=x86_64-pc-windows-gnu
if ! rustup target list --installed | grep -qx "$TARGET"; then
  rustup target add "$TARGET"
fi
if ! command -v x86_64-w64-mingw32-gcc >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gcc-mingw-w64-x86-64 >/dev/null
fi
# The winfsp crate's bindings-only feature turns on a documentation attribute that stable
# Rust accepts only with RUSTC_BOOTSTRAP.
RUSTC_BOOTSTRAP=1 cargo clippy --locked --lib --bins --target "$TARGET" --features winfsp-typecheck -- -D warnings
echo "nuage type-checks for Windows ($TARGET)"
