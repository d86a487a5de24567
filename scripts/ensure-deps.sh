#!/usr/bin/env bash
# Make sure this machine has what scoutfs needs, installing what is missing when run as root:
#   - Debian packages: libfuse2 (fuse-native's libfuse.so.2), fuse3 (fusermount, /dev/fuse
#     tools), libfuse3-dev and pkg-config (our libfuse 3 addon), build tools for native modules,
#     prometheus (its server and promtool, for the observability tests);
#   - node_modules (npm ci), the libfuse 3 addon (scripts/build-fuse3.sh: node-gyp, here and
#     not at npm install, so `npm ci` works on a machine without libfuse3-dev) and the
#     compiled dist/ (npm run build).
# Safe to run again: it only acts on what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
# (not `ldconfig -p | grep -q`: grep quitting early makes ldconfig die of SIGPIPE, and
# pipefail then reports the library missing, so it got reinstalled on some runs)
have_lib() { grep -q "$1" <<<"$(ldconfig -p 2>/dev/null)"; }
have_lib 'libfuse.so.2' || need_pkgs+=(libfuse2)
command -v fusermount3 >/dev/null 2>&1 || command -v fusermount >/dev/null 2>&1 || need_pkgs+=(fuse3)
pkg-config --exists fuse3 2>/dev/null || need_pkgs+=(libfuse3-dev pkg-config)
command -v losetup >/dev/null 2>&1 || need_pkgs+=(mount)
command -v make >/dev/null 2>&1 && command -v g++ >/dev/null 2>&1 || need_pkgs+=(build-essential)
command -v python3 >/dev/null 2>&1 || need_pkgs+=(python3)
# the observability tests run their own Prometheus and promtool (never the packaged service)
command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || need_pkgs+=(prometheus)
command -v getfattr >/dev/null 2>&1 || need_pkgs+=(attr) # bench/archive.ts compares with getfattr -R

if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "scoutfs needs these Debian packages: ${need_pkgs[*]}" >&2
    echo "install them as root:  apt-get update && apt-get install -y ${need_pkgs[*]}" >&2
    exit 1
  fi
  echo "installing Debian packages: ${need_pkgs[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

if [ ! -e /dev/fuse ]; then
  modprobe fuse 2>/dev/null || true
fi
if [ ! -e /dev/fuse ]; then
  echo "warning: /dev/fuse is missing; mounting will fail (load the fuse module, or run the container with --device /dev/fuse)" >&2
fi

node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 20 ]; then
  echo "scoutfs needs Node.js 20 or newer; this is $(node --version 2>/dev/null || echo 'no node')" >&2
  exit 1
fi

if [ ! -d node_modules/fuse-native ] || [ ! -d node_modules/typescript ] ||
  [ ! -d node_modules/@peculiar/x509 ] || [ ! -d node_modules/reflect-metadata ]; then
  echo "installing npm dependencies (npm ci)" >&2
  npm ci --no-audit --no-fund
fi
bash scripts/build-fuse3.sh
if [ ! -f dist/node-agent/src/cli/main.js ] || [ ! -f dist/scripts/local-cluster.js ] ||
  [ -n "$(find node-agent test bench scripts -name '*.ts' -newer dist/node-agent/src/cli/main.js 2>/dev/null | head -1)" ]; then
  npx tsc -p .
fi
