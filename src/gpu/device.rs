//! `Gpu`: one CUDA device opened for the node, with every kernel loaded
//! into it: the PTX embedded for its architecture, or NVRTC's when none fits.
//! Opened once at start; scalers and quality meters each take a stream of
//! their own from it. Also what the driver's version means for that PTX
//! (`DriverVersion`, `GpuError::DriverTooOld`).

use std::sync::Arc;

use cudarc::driver::sys::CUresult;
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream, DriverError};
use cudarc::nvrtc::Ptx;

use super::GpuConfig;
use crate::gpu::kernels::{self, KernelError, KernelOrigin, KernelSource};

#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("no CUDA driver (libcuda.so.1 not found)")]
    NoDriver,
    #[error("no GPU to use: {0}")]
    NoDevice(String),
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// The driver refused the PTX as too new (CUDA_ERROR_UNSUPPORTED_PTX_VERSION).
    #[error("{}", driver_too_old(.driver, *.ptx_cuda))]
    DriverTooOld {
        driver: DriverVersion,
        /// The CUDA version of the NVRTC that wrote the PTX, when known.
        ptx_cuda: Option<(i32, i32)>,
    },
    #[error("CUDA: {what}: {source}")]
    Driver {
        what: &'static str,
        source: DriverError,
    },
}

/// Wraps a driver error with what was being done.
pub(crate) fn driver(what: &'static str) -> impl FnOnce(DriverError) -> GpuError {
    move |source| GpuError::Driver { what, source }
}

/// Whether libcuda can be loaded; cudarc panics on first use when it cannot.
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen libcuda under its usual names.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// The installed NVIDIA driver, as far as it can be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriverVersion {
    /// Its release, e.g. "550.54.14", from /proc/driver/nvidia/version.
    pub release: Option<String>,
    /// The newest CUDA (major, minor) it supports, from cuDriverGetVersion.
    pub cuda: Option<(i32, i32)>,
}

impl DriverVersion {
    /// Asks the driver; what cannot be read is `None`.
    pub fn query() -> Self {
        let mut version = 0;
        let cuda = driver_present()
            // SAFETY: libcuda loads (checked first); the pointer is valid for the call.
            .then(|| unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut version) })
            .and_then(|status| status.result().ok())
            // cuDriverGetVersion gives 1000 * major + 10 * minor: 12040 for 12.4.
            .map(|()| (version / 1000, (version % 1000) / 10));
        let release = std::fs::read_to_string("/proc/driver/nvidia/version")
            .ok()
            .and_then(|text| release_of(&text));
        Self { release, cuda }
    }
}

/// The release in /proc/driver/nvidia/version's first line, the first word
/// made of digits and dots: "NVRM version: NVIDIA UNIX x86_64 Kernel Module
/// 550.54.14  Thu Feb 22 ..." (the open kernel module's line reads "... Open
/// Kernel Module for x86_64  570.86.15  Release Build ...").
fn release_of(proc_version: &str) -> Option<String> {
    proc_version
        .lines()
        .next()?
        .split_whitespace()
        .find(|word| {
            word.contains('.')
                && word.starts_with(|c: char| c.is_ascii_digit())
                && word.chars().all(|c| c.is_ascii_digit() || c == '.')
        })
        .map(str::to_owned)
}

/// The first Linux driver release of each CUDA version (NVIDIA's "CUDA
/// Toolkit and Corresponding Driver Versions" table, GA releases): the
/// one to ask for when the driver is too old for PTX of that CUDA.
fn first_driver_for(cuda: (i32, i32)) -> Option<&'static str> {
    Some(match cuda {
        (12, 0) => "525.60.13",
        (12, 1) => "530.30.02",
        (12, 2) => "535.54.03",
        (12, 3) => "545.23.06",
        (12, 4) => "550.54.14",
        (12, 5) => "555.42.02",
        (12, 6) => "560.28.03",
        (12, 8) => "570.26",
        (12, 9) => "575.51.03",
        (13, 0) => "580.65.06",
        _ => return None,
    })
}

/// What to tell the operator when the driver refuses PTX as too new: which
/// driver this is, which CUDA the PTX needs, and which driver to install.
pub fn driver_too_old(driver: &DriverVersion, ptx_cuda: Option<(i32, i32)>) -> String {
    let mut about = Vec::new();
    if let Some(release) = &driver.release {
        about.push(format!("version {release}"));
    }
    if let Some((major, minor)) = driver.cuda {
        about.push(format!("supports CUDA {major}.{minor}"));
    }
    let driver = if about.is_empty() {
        "the NVIDIA driver".to_owned()
    } else {
        format!("the NVIDIA driver ({})", about.join(", "))
    };
    match ptx_cuda {
        Some(cuda @ (major, minor)) => {
            let update = match first_driver_for(cuda) {
                Some(release) => format!(">= {release} (CUDA {major}.{minor})"),
                None => format!("one that supports CUDA {major}.{minor} or newer"),
            };
            format!(
                "{driver} is older than the PTX (CUDA {major}.{minor}); update the driver to {update}"
            )
        }
        None => format!("{driver} is older than the PTX of the CUDA kernels; update the driver"),
    }
}

/// A module that did not load: too old a driver for the PTX (said plainly,
/// with the version `driver` finds out), or another driver error.
fn load_error(
    source: DriverError,
    ptx_cuda: Option<(i32, i32)>,
    driver: impl FnOnce() -> DriverVersion,
) -> GpuError {
    if source.0 == CUresult::CUDA_ERROR_UNSUPPORTED_PTX_VERSION {
        GpuError::DriverTooOld {
            driver: driver(),
            ptx_cuda,
        }
    } else {
        GpuError::Driver {
            what: "cuModuleLoadData",
            source,
        }
    }
}

/// Loads each kernel's PTX into `ctx`, in the order given.
fn load_modules(
    ctx: &Arc<CudaContext>,
    ptx: Vec<(KernelSource, Ptx)>,
) -> Result<Vec<Arc<CudaModule>>, DriverError> {
    ptx.into_iter()
        .map(|(_, ptx)| ctx.load_module(ptx))
        .collect()
}

/// Every kernel loaded into `ctx` (a GPU of compute capability
/// `major.minor`), in kernels::ALL's order: the embedded PTX for its
/// architecture, else NVRTC's compiled now.
fn load_kernels(
    ctx: &Arc<CudaContext>,
    major: i32,
    minor: i32,
) -> Result<(KernelOrigin, Vec<Arc<CudaModule>>), GpuError> {
    if let Some(embedded) = kernels::embedded_for(major, minor) {
        match load_modules(ctx, embedded.ptx_all()) {
            Ok(modules) => return Ok((KernelOrigin::Embedded(embedded.arch), modules)),
            // A driver older than the build's NVRTC refuses its PTX; an NVRTC
            // on this host (the toolkit that came with the driver, say) may
            // still write PTX the driver takes.
            Err(e)
                if e.0 == CUresult::CUDA_ERROR_UNSUPPORTED_PTX_VERSION
                    && kernels::nvrtc_present() =>
            {
                tracing::warn!(
                    arch = embedded.arch,
                    "{}; compiling the kernels with NVRTC instead",
                    driver_too_old(&DriverVersion::query(), Some(embedded.cuda))
                );
            }
            Err(e) => return Err(load_error(e, Some(embedded.cuda), DriverVersion::query)),
        }
    }
    let ptx = kernels::compile_all(kernels::arch_for(major, minor))?;
    let modules = load_modules(ctx, ptx)
        .map_err(|e| load_error(e, kernels::nvrtc_version(), DriverVersion::query))?;
    Ok((KernelOrigin::Nvrtc, modules))
}

/// FFmpeg opens a CUDA device on its primary context (NVDEC, NVENC's CUDA frames) only with
/// blocking-sync scheduling, and refuses one already active with other flags ("Primary
/// context already active with incompatible flags"). Ours would come up first, with the
/// driver's default, on any GPU FFmpeg has not opened yet (the probe opens only the
/// first), so an inactive primary context gets FFmpeg's flags before we retain it.
fn schedule_as_ffmpeg_does(index: usize) -> Result<(), GpuError> {
    use cudarc::driver::{result, sys};
    result::init().map_err(driver("cuInit"))?;
    let ordinal = i32::try_from(index).unwrap_or(i32::MAX);
    let device = result::device::get(ordinal).map_err(driver("cuDeviceGet"))?;
    let blocking = sys::CUctx_flags::CU_CTX_SCHED_BLOCKING_SYNC as u32;
    let (mut flags, mut active) = (0, 0);
    // SAFETY: `device` comes from cuDeviceGet; the pointers are valid for the call.
    unsafe { sys::cuDevicePrimaryCtxGetState(device, &mut flags, &mut active) }
        .result()
        .map_err(driver("cuDevicePrimaryCtxGetState"))?;
    if active == 0 && flags != blocking {
        // SAFETY: as above; the flags of an inactive primary context are ours to set.
        unsafe { sys::cuDevicePrimaryCtxSetFlags_v2(device, blocking) }
            .result()
            .map_err(driver("cuDevicePrimaryCtxSetFlags"))?;
    }
    Ok(())
}

pub struct Gpu {
    pub index: usize,
    pub name: String,
    ctx: Arc<CudaContext>,
    /// Kept loaded for as long as the functions below are used.
    _modules: Vec<Arc<CudaModule>>,
    pub(crate) scale_ladder: CudaFunction,
    pub(crate) p010_to_nv12: CudaFunction,
    pub(crate) sse_planes: CudaFunction,
    pub(crate) ssim_planes: CudaFunction,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu")
            .field("index", &self.index)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Gpu {
    /// Opens the first GPU `cfg.devices` allows and loads the kernels into
    /// it; a kernel that does not compile or load is an error here, at start.
    pub fn open(cfg: &GpuConfig) -> Result<Arc<Self>, GpuError> {
        let index = Self::selected(cfg)?[0];
        Self::open_index(index)
    }

    /// Opens every GPU `cfg.devices` allows, each with the kernels loaded:
    /// the devices a node spreads its channels over.
    pub fn open_all(cfg: &GpuConfig) -> Result<Vec<Arc<Self>>, GpuError> {
        Self::selected(cfg)?
            .into_iter()
            .map(Self::open_index)
            .collect()
    }

    /// The CUDA ordinals `cfg.devices` allows among those present (never empty).
    fn selected(cfg: &GpuConfig) -> Result<Vec<usize>, GpuError> {
        if !driver_present() {
            return Err(GpuError::NoDriver);
        }
        let count = CudaContext::device_count().map_err(driver("cuDeviceGetCount"))?;
        let count = usize::try_from(count).unwrap_or(0);
        let selected: Vec<usize> = (0..count)
            .filter(|i| cfg.devices.is_empty() || cfg.devices.contains(i))
            .collect();
        if selected.is_empty() {
            return Err(GpuError::NoDevice(format!(
                "the driver sees {count} GPU(s), gpu.devices = {:?}",
                cfg.devices
            )));
        }
        Ok(selected)
    }

    /// Opens GPU `index` (its primary context, which FFmpeg's NVDEC shares)
    /// and loads the kernels for it.
    pub fn open_index(index: usize) -> Result<Arc<Self>, GpuError> {
        if !driver_present() {
            return Err(GpuError::NoDriver);
        }
        schedule_as_ffmpeg_does(index)?;
        let ctx = CudaContext::new(index).map_err(driver("cuCtxCreate"))?;
        let name = ctx.name().map_err(driver("cuDeviceGetName"))?;
        let (major, minor) = ctx
            .compute_capability()
            .map_err(driver("cuDeviceGetAttribute"))?;
        let (origin, modules) = load_kernels(&ctx, major, minor)?;
        tracing::info!(gpu = index, kernels = %origin, "CUDA kernels loaded");
        let function = |module: usize, name: &str| {
            modules[module]
                .load_function(name)
                .map_err(driver("cuModuleGetFunction"))
        };
        // Module order is kernels::ALL's: scale, then quality.
        let scale_ladder = function(0, "scale_ladder")?;
        let p010_to_nv12 = function(0, "p010_to_nv12")?;
        let sse_planes = function(1, "sse_planes")?;
        let ssim_planes = function(1, "ssim_planes")?;
        Ok(Arc::new(Self {
            index,
            name,
            ctx,
            _modules: modules,
            scale_ladder,
            p010_to_nv12,
            sse_planes,
            ssim_planes,
        }))
    }

    /// A stream of its own for one scaler or meter, so that several run at once.
    pub fn stream(&self) -> Result<Arc<CudaStream>, GpuError> {
        self.ctx.new_stream().map_err(driver("cuStreamCreate"))
    }

    pub(crate) fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// Device memory in use on this GPU, by every process.
    pub fn memory_used(&self) -> Result<u64, GpuError> {
        let (free, total) = self.ctx.mem_get_info().map_err(driver("cuMemGetInfo"))?;
        Ok(total.saturating_sub(free) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hopper_host_with_a_12_4_driver() -> DriverVersion {
        DriverVersion {
            release: Some("550.54.14".into()),
            cuda: Some((12, 4)),
        }
    }

    /// What an operator reads when the driver is older than the embedded PTX.
    #[test]
    fn a_refused_ptx_says_which_driver_to_install() {
        let refused = DriverError(CUresult::CUDA_ERROR_UNSUPPORTED_PTX_VERSION);
        let err = load_error(refused, Some((12, 8)), hopper_host_with_a_12_4_driver);
        assert!(matches!(err, GpuError::DriverTooOld { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "the NVIDIA driver (version 550.54.14, supports CUDA 12.4) is older than the PTX \
             (CUDA 12.8); update the driver to >= 570.26 (CUDA 12.8)"
        );
    }

    #[test]
    fn a_too_old_driver_is_described_with_what_is_known() {
        let unknown = DriverVersion {
            release: None,
            cuda: Some((11, 8)),
        };
        assert_eq!(
            driver_too_old(&unknown, Some((13, 7))),
            "the NVIDIA driver (supports CUDA 11.8) is older than the PTX (CUDA 13.7); \
             update the driver to one that supports CUDA 13.7 or newer"
        );
        let nothing = DriverVersion {
            release: None,
            cuda: None,
        };
        assert_eq!(
            driver_too_old(&nothing, None),
            "the NVIDIA driver is older than the PTX of the CUDA kernels; update the driver"
        );
    }

    /// Any other load failure stays a driver error naming the call, and the
    /// driver's version is not even asked for.
    #[test]
    fn other_load_failures_stay_driver_errors() {
        let err = load_error(
            DriverError(CUresult::CUDA_ERROR_INVALID_PTX),
            Some((12, 8)),
            || unreachable!("the version is read only for a refused PTX"),
        );
        assert!(
            matches!(
                err,
                GpuError::Driver {
                    what: "cuModuleLoadData",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn the_driver_release_is_read_from_proc() {
        let proc = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.14  \
                    Thu Feb 22 01:44:30 UTC 2024\nGCC version:  gcc version 12.2.0\n";
        assert_eq!(release_of(proc).as_deref(), Some("550.54.14"));
        let open = "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  570.86.15  \
                    Release Build  (dvs-builder@U16-I3-B03-4-3)\n";
        assert_eq!(release_of(open).as_deref(), Some("570.86.15"));
        assert_eq!(release_of(""), None);
    }
}
