#!/usr/bin/env bash
# Packs what a GPU machine without Rust, FFmpeg or CUDA 12's NVRTC needs to
# run the gpu_* tests and the GPU benchmark: the two binaries (they link no
# FFmpeg library), NVRTC 12 from .nvrtc, and the test frames, with run.sh.
# Out: target/gpu-bundle.tar.xz. There: tar xJf gpu-bundle.tar.xz && gpu-bundle/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/gpu-bundle
rm -rf "$out" && mkdir -p "$out/lib" "$out/frames"
RUNGS_GPU_FRAMES="$PWD/$out/frames" cargo test --release --test gpu frames_for_the_gpu_tests
# cargo names the built executable on stderr: "Executable <target> (<path>)".
executable() { "$@" --no-run 2>&1 | sed -n 's/^ *Executable .*(\(.*\))$/\1/p' | tail -1; }
cp "$(executable cargo test --release --test gpu)" "$out/gpu-tests"
cp "$(executable cargo bench --bench gpu --features internals)" "$out/gpu-bench"
cp .nvrtc/nvidia/cuda_nvrtc/lib/libnvrtc.so.12 .nvrtc/nvidia/cuda_nvrtc/lib/libnvrtc-builtins.so.12.8 "$out/lib/"
cat > "$out/run.sh" <<'RUN'
#!/usr/bin/env bash
# The gpu_* tests, then the GPU benchmark.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export LD_LIBRARY_PATH="$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" RUNGS_GPU_FRAMES="$here/frames"
"$here/gpu-tests" --ignored --test-threads=1; tests=$?
"$here/gpu-bench" --bench; bench=$?
exit $(( tests || bench ))
RUN
chmod +x "$out/run.sh"
tar -C target -cJf target/gpu-bundle.tar.xz gpu-bundle
ls -l target/gpu-bundle.tar.xz
