//! `Gpu`: one CUDA device opened for the node, with every kernel compiled
//! for it and loaded. Opened once at start; scalers and quality meters each
//! take a stream of their own from it.

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream, DriverError};

use super::GpuConfig;
use crate::gpu::kernels::{self, KernelError};

#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("no CUDA driver (libcuda.so.1 not found)")]
    NoDriver,
    #[error("no GPU to use: {0}")]
    NoDevice(String),
    #[error(transparent)]
    Kernel(#[from] KernelError),
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
    /// Opens the first GPU `cfg.devices` allows and compiles the kernels for
    /// it; a kernel that does not compile is an error here, at start.
    pub fn open(cfg: &GpuConfig) -> Result<Arc<Self>, GpuError> {
        let index = Self::selected(cfg)?[0];
        Self::open_index(index)
    }

    /// Opens every GPU `cfg.devices` allows, each with the kernels compiled
    /// for it: the devices a node spreads its channels over.
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
    /// and loads the kernels compiled for it.
    pub fn open_index(index: usize) -> Result<Arc<Self>, GpuError> {
        if !driver_present() {
            return Err(GpuError::NoDriver);
        }
        let ctx = CudaContext::new(index).map_err(driver("cuCtxCreate"))?;
        let name = ctx.name().map_err(driver("cuDeviceGetName"))?;
        let (major, minor) = ctx
            .compute_capability()
            .map_err(driver("cuDeviceGetAttribute"))?;
        let arch = kernels::arch_for(major, minor);
        let mut modules = Vec::new();
        for (_, ptx) in kernels::compile_all(arch)? {
            modules.push(ctx.load_module(ptx).map_err(driver("cuModuleLoadData"))?);
        }
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
