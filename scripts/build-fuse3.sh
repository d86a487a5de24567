#!/usr/bin/env bash
# Build the libfuse 3 low-level N-API addon (node-agent/native/fuse3) with node-gyp, against
# Debian's libfuse3-dev and this Node's own headers (no download, no prebuilt binary).
# scripts/ensure-deps.sh installs libfuse3-dev and runs this; it rebuilds only when the C
# source or binding.gyp is newer than the built addon.
set -euo pipefail
cd "$(dirname "$0")/../node-agent/native/fuse3"
out=build/Release/fuse3_lowlevel.node
if [ -f "$out" ] && [ -z "$(find fuse3_lowlevel.c binding.gyp -newer "$out" 2>/dev/null)" ]; then
  exit 0
fi
if ! pkg-config --exists fuse3 2>/dev/null; then
  echo "libfuse3-dev is missing: run scripts/ensure-deps.sh as root (or apt-get install -y libfuse3-dev pkg-config)" >&2
  exit 1
fi
# node-gyp ships with npm; headers come from this node's install prefix (include/node)
node_prefix=$(node -p 'require("path").resolve(process.execPath, "..", "..")')
gyp=$(dirname "$(readlink -f "$(command -v npm)")")/../node_modules/node-gyp/bin/node-gyp.js
if [ ! -f "$gyp" ]; then gyp=$(command -v node-gyp); fi
if [ -f "$node_prefix/include/node/node_api.h" ]; then
  node "$gyp" rebuild --nodedir="$node_prefix" --loglevel=warn
else
  node "$gyp" rebuild --loglevel=warn
fi
echo "built $(pwd)/$out" >&2
