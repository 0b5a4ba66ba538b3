#!/bin/sh
# Every GPU figure in one command, on a machine with the NVIDIA driver and
# nothing else: run from the unpacked device bundle (`make device-bundle`).
# Usage: rungs-device/run.sh OUT_DIR  ->  OUT_DIR/figures.json + one log per step.
# The bundle's libraries come first: the host may have no FFmpeg at all.
here=$(cd "$(dirname "$0")" && pwd)
[ $# -eq 1 ] || { echo "usage: $0 OUT_DIR" >&2; exit 2; }
need=$(sed -n 's/^glibc=//p' "$here/VERSION")
have=$(getconf GNU_LIBC_VERSION 2>/dev/null | cut -d' ' -f2)
if [ -n "$need" ] && [ -n "$have" ] &&
  [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -n1)" != "$need" ]; then
  echo "run.sh: this host has glibc $have; the bundle needs $need or newer (it was built on Debian 12)" >&2
  exit 3
fi
LD_LIBRARY_PATH="$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "$here/bin/device" "$1"
