#!/usr/bin/env bash
# Packs what a GPU machine with only the NVIDIA driver needs to produce every
# GPU figure (bench/device.rs says which): the stripped `rungs`, the gpu_*
# test binaries, the kernel, pipeline and device benchmarks, every shared
# library they link except glibc's own (found with ldd; run.sh puts them on
# LD_LIBRARY_PATH), the frames and clips the tests and benchmarks read, and
# run.sh. Kernels travel as PTX inside the binaries (build.rs), so no NVRTC.
#
# Usage: bench/device/bundle.sh [--profile release|dev] [--out DIR] [--no-pack]
#   default: release, into target/device-bundle, packed as target/rungs-device.tar.xz
#   (the size goal, 60 MiB, is checked and reported). tests/device_bundle.rs
#   proves a `--profile dev --no-pack` bundle in a root without FFmpeg.
set -euo pipefail
cd "$(dirname "$0")/../.."
profile=release out=target/device-bundle pack=1
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --no-pack) pack=0; shift ;;
    *) echo "bundle.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
goal_mib=60
root="$out/rungs-device"
rm -rf "$root" && mkdir -p "$root/bin" "$root/lib" "$root/media"

# Paths of the executables a cargo build made, as "kind:name path" lines.
built() {
  cargo build --profile "$profile" --message-format=json-render-diagnostics "$@" | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["target"]["kind"][0] + ":" + m["target"]["name"], m["executable"])'
}
# The benchmarks and tests first: the kernel benchmark needs the `internals`
# feature, which a node never has; the `rungs` built last is the node's.
built --features internals --bench gpu --bench gpu_pipeline --bench device \
  --test gpu --test gpu_pipeline > "$out/executables"
built --bin rungs >> "$out/executables"
declare -A exe
while read -r name path; do exe[$name]=$path; done < "$out/executables"
cp "${exe[bin:rungs]}" "$root/bin/rungs"
cp "${exe[test:gpu]}" "$root/bin/gpu-tests"
cp "${exe[test:gpu_pipeline]}" "$root/bin/gpu-pipeline-tests"
cp "${exe[bench:gpu]}" "$root/bin/gpu-bench"
cp "${exe[bench:gpu_pipeline]}" "$root/bin/gpu-pipeline-bench"
cp "${exe[bench:device]}" "$root/bin/device"
strip --strip-unneeded "$root"/bin/*

# Media, made here by the FFmpeg CLI: the frames and clips of the gpu_* tests
# (their tests that need no GPU make them); the pipeline benchmark reads one.
for t in gpu-tests gpu-pipeline-tests; do
  RUNGS_GPU_FRAMES="$PWD/$root/media" "$root/bin/$t" --test-threads=1 > "$out/media.log" 2>&1 ||
    { cat "$out/media.log"; echo "bundle: $t could not make its media" >&2; exit 1; }
done

# Every library the binaries link, glibc's own excepted (every host has those,
# and they must match its dynamic loader).
glibc='^(linux-vdso|ld-linux|libc|libm|libpthread|libdl|librt|libutil|libresolv|libanl|libmvec)\.so'
for b in "$root"/bin/*; do
  ldd "$b" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}'
done | sort -u | while read -r soname path; do
  [[ $soname =~ $glibc ]] || cp -L "$path" "$root/lib/$soname"
done
cp bench/device/run.sh "$root/run.sh"
# The newest glibc symbol version anything here needs: run.sh refuses, by
# name, a host whose glibc is older (every library but glibc travels).
glibc_need=$(for f in "$root"/bin/* "$root"/lib/*; do objdump -T "$f"; done 2>/dev/null |
  grep -o 'GLIBC_2\.[0-9]*' | sed 's/GLIBC_//' | sort -V | tail -1)
{
  echo "glibc=$glibc_need"
  echo "commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo +changes)"
  echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "profile=$profile"
} > "$root/VERSION"

echo "bundle: $root ($(du -sh "$root" | cut -f1) unpacked, $(ls "$root/lib" | wc -l) libraries)"
if [ "$pack" = 1 ]; then
  tarball="$(dirname "$out")/rungs-device.tar.xz"
  XZ_OPT="-9 -T0" tar -C "$out" -cJf "$tarball" rungs-device
  bytes=$(stat -c %s "$tarball")
  mib=$(awk -v b="$bytes" 'BEGIN {printf "%.1f", b / 1048576}')
  echo "bundle: $tarball: $mib MiB (goal <= $goal_mib MiB)"
  if [ "$bytes" -gt $((goal_mib << 20)) ]; then
    echo "bundle: over the $goal_mib MiB goal" >&2
    exit 1
  fi
  echo "on the GPU machine: tar xJf rungs-device.tar.xz && rungs-device/run.sh OUT_DIR"
fi
