//! The CUDA kernels: their sources and their PTX, both embedded in the
//! binary. build.rs compiles the PTX for a fixed set of virtual
//! architectures (`EMBEDDED`), so that a GPU host needs only the driver; for
//! a GPU older than all of them, or a binary built without NVRTC, NVRTC
//! compiles the sources at start, once, for the device present.
//!
//! NVRTC is loaded at run time (cudarc's dynamic loading): a GPU server has
//! it from the CUDA toolkit, a machine without one from PyPI's
//! `nvidia-cuda-nvrtc-cu12` wheel (what `make deps` installs into `.nvrtc/`
//! so that the build embeds the PTX and CI compiles every kernel with no GPU
//! and no driver).

use cudarc::nvrtc::{CompileError, Ptx};

include!("nvrtc_common.rs");

/// One kernel source file and the entry points it defines.
#[derive(Clone, Copy, Debug)]
pub struct KernelSource {
    pub file: &'static str,
    pub source: &'static str,
    pub entries: &'static [&'static str],
}

pub const SCALE: KernelSource = KernelSource {
    file: "kernels/scale.cu",
    source: include_str!("../../kernels/scale.cu"),
    entries: &["scale_ladder", "p010_to_nv12"],
};

pub const QUALITY: KernelSource = KernelSource {
    file: "kernels/quality.cu",
    source: include_str!("../../kernels/quality.cu"),
    entries: &["sse_planes", "ssim_planes"],
};

pub const ALL: [KernelSource; 2] = [SCALE, QUALITY];

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(
        "NVRTC (libnvrtc.so.12) is not on the library path: install the CUDA toolkit's NVRTC, \
         or `pip install --target .nvrtc nvidia-cuda-nvrtc-cu12==12.8.93` and add \
         .nvrtc/nvidia/cuda_nvrtc/lib to LD_LIBRARY_PATH"
    )]
    NoNvrtc,
    #[error("{file} does not compile for {arch}: {log}")]
    Compile {
        file: &'static str,
        arch: String,
        log: String,
    },
    #[error("{file}: NVRTC failed: {why}")]
    Nvrtc { file: &'static str, why: String },
}

/// PTX build.rs compiled for one virtual architecture, for every kernel.
#[derive(Debug)]
pub struct EmbeddedPtx {
    /// e.g. `compute_90`.
    pub arch: &'static str,
    /// The lowest compute capability (major, minor) that runs it.
    capability: (i32, i32),
    /// The CUDA version (major, minor) of the NVRTC that wrote it: a driver
    /// for an older CUDA refuses the PTX.
    pub cuda: (i32, i32),
    /// Each kernel file (as `KernelSource::file` names it) and its PTX.
    files: &'static [(&'static str, &'static str)],
}

/// Every architecture build.rs compiled the kernels for, lowest first; empty
/// when the build had no NVRTC.
pub const EMBEDDED: &[EmbeddedPtx] = include!(concat!(env!("OUT_DIR"), "/embedded_ptx.rs"));

impl EmbeddedPtx {
    /// The PTX of one kernel.
    fn ptx(&self, kernel: KernelSource) -> &'static str {
        self.files
            .iter()
            .find(|(file, _)| *file == kernel.file)
            .map(|(_, ptx)| *ptx)
            // build.rs compiles every kernels/*.cu, and each of ALL's files is
            // one of them (its include_str! would not build otherwise).
            .expect("build.rs embeds every kernels/*.cu")
    }

    /// Every kernel's PTX, in ALL's order.
    pub fn ptx_all(&self) -> Vec<(KernelSource, Ptx)> {
        ALL.iter()
            .map(|&k| (k, Ptx::from_src(self.ptx(k))))
            .collect()
    }
}

/// The embedded PTX for a GPU of compute capability `major.minor`: the
/// highest architecture not above it, since PTX runs on its own
/// architecture and every later one. `None`: the GPU is older than all of
/// them, or nothing is embedded; NVRTC compiles its kernels then.
pub fn embedded_for(major: i32, minor: i32) -> Option<&'static EmbeddedPtx> {
    highest_at_most(EMBEDDED, (major, minor))
}

fn highest_at_most(table: &[EmbeddedPtx], capability: (i32, i32)) -> Option<&EmbeddedPtx> {
    table
        .iter()
        .filter(|e| e.capability <= capability)
        .max_by_key(|e| e.capability)
}

/// Where a GPU's kernels come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelOrigin {
    /// The PTX embedded at build time for this architecture.
    Embedded(&'static str),
    /// Compiled by NVRTC at start.
    Nvrtc,
}

impl std::fmt::Display for KernelOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Embedded(arch) => write!(f, "embedded PTX for {arch}"),
            Self::Nvrtc => f.write_str("compiled by NVRTC at start"),
        }
    }
}

/// The virtual architecture NVRTC compiles for at start, e.g. `compute_90`:
/// the PTX is then JIT-compiled by the driver for exactly that device.
pub fn arch_for(major: i32, minor: i32) -> &'static str {
    // NVRTC takes the architecture as a &'static str. The ones built in are
    // literals; another (older or newer) one is leaked, once per GPU opened.
    BUILD_ARCHS
        .iter()
        .find(|(capability, _)| *capability == (major, minor))
        .map_or_else(
            || Box::leak(format!("compute_{major}{minor}").into_boxed_str()) as &str,
            |(_, arch)| *arch,
        )
}

/// Compiles one kernel source to PTX for `arch`.
pub fn compile(kernel: KernelSource, arch: &'static str) -> Result<Ptx, KernelError> {
    if !nvrtc_present() {
        return Err(KernelError::NoNvrtc);
    }
    let options = nvrtc_options(kernel.file, arch);
    cudarc::nvrtc::compile_ptx_with_opts(kernel.source, options).map_err(|e| match e {
        CompileError::CompileError { log, .. } => KernelError::Compile {
            file: kernel.file,
            arch: arch.to_owned(),
            log: log.to_string_lossy().trim().to_owned(),
        },
        other => KernelError::Nvrtc {
            file: kernel.file,
            why: other.to_string(),
        },
    })
}

/// Compiles every kernel for `arch`: what the node does at start for a GPU
/// no embedded PTX fits, so that a broken kernel is a startup error.
pub fn compile_all(arch: &'static str) -> Result<Vec<(KernelSource, Ptx)>, KernelError> {
    ALL.iter().map(|&k| Ok((k, compile(k, arch)?))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs NVRTC (no GPU): `make test` installs it into `.nvrtc/` and puts
    /// it on LD_LIBRARY_PATH.
    #[test]
    fn nvrtc_compiles_every_kernel_to_ptx() {
        assert!(
            nvrtc_present(),
            "{} (run through `make test`)",
            KernelError::NoNvrtc
        );
        // Hopper (the GPUs the node is benchmarked on) and the oldest the node supports.
        for arch in ["compute_90", "compute_75"] {
            let compiled = compile_all(arch).unwrap_or_else(|e| panic!("{e}"));
            for (kernel, ptx) in compiled {
                let ptx = ptx.to_src();
                for entry in kernel.entries {
                    assert!(
                        ptx.contains(&format!(".entry {entry}(")),
                        "{}: no entry {entry} in the PTX for {arch}",
                        kernel.file
                    );
                }
            }
        }
    }

    /// The 10-bit reduction compiles on its own terms: its entry takes the two pointers and
    /// four ints `GpuScaler` passes, and it rounds with integer arithmetic only (no float
    /// conversion that could round differently from the CPU).
    #[test]
    fn nvrtc_compiles_the_p010_reduction() {
        assert!(nvrtc_present(), "{}", KernelError::NoNvrtc);
        let ptx = compile(SCALE, "compute_90")
            .unwrap_or_else(|e| panic!("{e}"))
            .to_src();
        let start = ptx
            .find(".entry p010_to_nv12(")
            .expect("the p010_to_nv12 entry");
        let body = &ptx[start..];
        let params = &body[..body.find(')').expect("parameter list")];
        assert_eq!(params.matches(".param .u64").count(), 2, "{params}");
        assert_eq!(params.matches(".param .u32").count(), 4, "{params}");
        let end = body.find("\n}").expect("entry body");
        assert!(
            !body[..end].contains("cvt.rn.f"),
            "float rounding in the reduction"
        );
    }

    /// Needs a build that found NVRTC (`make build`, `make test`): then every
    /// architecture of BUILD_ARCHS is embedded, each with every kernel and
    /// every entry point, for its own target.
    #[test]
    fn every_build_arch_is_embedded_with_every_entry_point() {
        assert!(
            !EMBEDDED.is_empty(),
            "built without NVRTC on the library path: no PTX embedded (run through `make test`)"
        );
        let embedded: Vec<_> = EMBEDDED.iter().map(|e| (e.capability, e.arch)).collect();
        assert_eq!(embedded, BUILD_ARCHS);
        for e in EMBEDDED {
            assert_eq!(Some(e.cuda), nvrtc_version(), "{}", e.arch);
            let target = format!(".target {}", e.arch.replace("compute_", "sm_"));
            for kernel in ALL {
                let ptx = e.ptx(kernel);
                assert!(
                    ptx.contains(&target),
                    "{}: {}: no {target}",
                    e.arch,
                    kernel.file
                );
                for entry in kernel.entries {
                    assert!(
                        ptx.contains(&format!(".entry {entry}(")),
                        "{}: no entry {entry} in the PTX embedded for {}",
                        kernel.file,
                        e.arch
                    );
                }
            }
        }
    }

    /// The one definition of the options holds: what build.rs embedded is
    /// byte for byte what NVRTC compiles at start for the same architecture.
    #[test]
    fn embedded_ptx_is_what_nvrtc_compiles_at_start() {
        assert!(nvrtc_present(), "{}", KernelError::NoNvrtc);
        assert!(!EMBEDDED.is_empty(), "built without NVRTC: no PTX embedded");
        for e in EMBEDDED {
            for (kernel, ptx) in compile_all(e.arch).unwrap_or_else(|err| panic!("{err}")) {
                assert!(
                    ptx.to_src() == e.ptx(kernel),
                    "{}: the PTX embedded for {} differs from NVRTC's at start",
                    kernel.file,
                    e.arch
                );
            }
        }
    }

    /// A GPU takes the highest embedded architecture not above its compute
    /// capability; one older than all of them gets NVRTC.
    #[test]
    fn a_gpu_takes_the_highest_embedded_arch_not_above_it() {
        let table: Vec<EmbeddedPtx> = BUILD_ARCHS
            .iter()
            .map(|&(capability, arch)| EmbeddedPtx {
                arch,
                capability,
                cuda: (12, 8),
                files: &[],
            })
            .collect();
        let pick = |major, minor| highest_at_most(&table, (major, minor)).map(|e| e.arch);
        assert_eq!(pick(9, 0), Some("compute_90"), "H100, H200");
        assert_eq!(pick(8, 7), Some("compute_86"), "Jetson Orin");
        assert_eq!(pick(8, 9), Some("compute_89"), "L4, L40");
        assert_eq!(pick(8, 0), Some("compute_80"), "A100");
        assert_eq!(pick(7, 5), Some("compute_75"), "T4");
        assert_eq!(pick(10, 0), Some("compute_90"), "B200");
        assert_eq!(pick(12, 0), Some("compute_90"), "RTX 50");
        assert_eq!(pick(7, 0), None, "V100: NVRTC");
        assert_eq!(
            highest_at_most(&[], (9, 0)).map(|e| e.arch),
            None,
            "nothing embedded"
        );
        assert_eq!(arch_for(7, 0), "compute_70");
        assert_eq!(arch_for(9, 0), "compute_90");
    }

    #[test]
    fn nvrtc_reports_a_broken_kernel_with_its_log() {
        assert!(nvrtc_present(), "{}", KernelError::NoNvrtc);
        let broken = KernelSource {
            file: "kernels/broken.cu",
            source: "extern \"C\" __global__ void k() { undeclared = 1; }",
            entries: &["k"],
        };
        let err = compile(broken, "compute_90").expect_err("must not compile");
        let text = err.to_string();
        assert!(text.contains("kernels/broken.cu"), "{text}");
        assert!(text.contains("undeclared"), "{text}");
    }
}
