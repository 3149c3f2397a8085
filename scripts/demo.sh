#!/usr/bin/env bash
# Mounts a demo cloud (a Nextcloud-compatible server started on 127.0.0.1 with a few
# documents, a folder of pictures and one 200 MiB file) on ~/nuage-demo, then shows it.
# Needs root (or sudo) for apt-get when FUSE 3 is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
MP="${1:-$HOME/nuage-demo}"

if ! command -v fusermount3 >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends fuse3 >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo is missing; install Rust from https://rustup.rs" >&2
  exit 1
fi
cargo build --release --locked --quiet
NUAGE="$PWD/target/release/nuage"
mkdir -p "$MP"
if grep -q " $MP fuse" /proc/mounts 2>/dev/null; then "$NUAGE" unmount "$MP"; fi
"$NUAGE" demo "$MP" --daemon
echo "Mounted the demo cloud on $MP:"
ls -l "$MP" "$MP"/*
echo
head -n 3 "$MP/Documents/Bienvenue.txt"
echo
echo "Try: cat \"$MP/Documents/Bienvenue.txt\"; $NUAGE activity \"$MP\"; dd if=\"$MP/Vidéos/Grand fichier (200 Mo).bin\" bs=4k skip=25600 count=1 | xxd | head"
echo "When done: $NUAGE unmount \"$MP\""
