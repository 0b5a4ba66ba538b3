//! The CUDA kernels: their sources, embedded in the binary, and their
//! compilation by NVRTC at start, once, for the device present.
//!
//! NVRTC is loaded at run time (cudarc's dynamic loading): a GPU server has
//! it from the CUDA toolkit, a machine without one from PyPI's
//! `nvidia-cuda-nvrtc-cu12` wheel (what `make deps` installs into `.nvrtc/`
//! so that CI compiles every kernel with no GPU and no driver).

use cudarc::nvrtc::{CompileError, CompileOptions, Ptx};

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

/// Whether libnvrtc can be loaded; cudarc panics on first use when it cannot.
pub fn nvrtc_present() -> bool {
    // SAFETY: only tries to dlopen the library under its usual names.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// The virtual architecture for a compute capability, e.g. `compute_90`: the
/// PTX is then JIT-compiled by the driver for exactly that device.
pub fn arch_for(major: i32, minor: i32) -> &'static str {
    // NVRTC takes the architecture as a &'static str. The known ones are
    // literals; an unknown (newer) one is leaked, once per start.
    match (major, minor) {
        (7, 5) => "compute_75",
        (8, 0) => "compute_80",
        (8, 6) => "compute_86",
        (8, 9) => "compute_89",
        (9, 0) => "compute_90",
        (10, 0) => "compute_100",
        (12, 0) => "compute_120",
        _ => Box::leak(format!("compute_{major}{minor}").into_boxed_str()),
    }
}

/// Compiles one kernel source to PTX for `arch`.
pub fn compile(kernel: KernelSource, arch: &'static str) -> Result<Ptx, KernelError> {
    if !nvrtc_present() {
        return Err(KernelError::NoNvrtc);
    }
    let options = CompileOptions {
        arch: Some(arch),
        name: Some(kernel.file.to_owned()),
        // Integer filters and SSIM's float ratio must match the CPU's: no
        // fused or approximate arithmetic.
        fmad: Some(false),
        prec_div: Some(true),
        ftz: Some(false),
        ..Default::default()
    };
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

/// Compiles every kernel for `arch`: what the node does at start when a GPU
/// stage is enabled, so that a broken kernel is a startup error.
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
