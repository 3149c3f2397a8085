#!/usr/bin/env bash
# Fails if the platform-independent core names an OS filesystem API or errno constants.
set -euo pipefail
cd "$(dirname "$0")/.."
if grep -rnE 'fuser::|winfsp::|libc::E[A-Z]+' src/; then
  echo "error: src/ must stay platform-independent (see STYLE: layering)" >&2
  exit 1
fi
if grep -rnE 'nuage::(cache|meta|fetch|webdav)' platform/; then
  echo "error: platform adapters may only use vfs, cli and error" >&2
  exit 1
fi
echo "layering ok"
