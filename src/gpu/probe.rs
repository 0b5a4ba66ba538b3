//! What the machine offers the pipeline (CUDA driver, GPUs, NVDEC, NVENC,
//! NVRTC): the facts `rungs probe` prints and the backend planner
//! (`transcode::backend`) chooses from, and the check behind
//! `gpu.enabled = "on"`.
//!
//! libcuda and libnvrtc are loaded at run time. cudarc panics when a library
//! it needs is missing, so each is looked for before its first use, and a
//! machine without them is simply answered "CPU backends".

use std::fmt;

use ffmpeg_next as ffmpeg;
use serde::Serialize;

use super::GpuConfig;

/// Everything `rungs probe` reports.
#[derive(Clone, Debug, Serialize)]
pub struct Probe {
    /// CUDA driver API version, e.g. "12.8"; `None`: no driver.
    pub driver: Option<String>,
    /// Every GPU the driver sees; `selected` ones are those `gpu.devices` allows.
    pub devices: Vec<Device>,
    pub nvdec: Capability,
    pub nvenc: Capability,
    pub nvrtc: Capability,
}

#[derive(Clone, Debug, Serialize)]
pub struct Device {
    pub index: usize,
    pub name: String,
    pub memory_bytes: u64,
    /// "major.minor", e.g. "9.0" for Hopper.
    pub compute_capability: String,
    pub selected: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Capability {
    pub usable: bool,
    /// What was found, or why it is not usable.
    pub detail: String,
}

impl Capability {
    fn yes(detail: impl Into<String>) -> Self {
        Self {
            usable: true,
            detail: detail.into(),
        }
    }

    fn no(detail: impl Into<String>) -> Self {
        Self {
            usable: false,
            detail: detail.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("gpu.enabled = \"on\" but {0}")]
pub struct GpuRequired(String);

impl GpuRequired {
    /// What is missing, without the `gpu.enabled = "on"` framing (for `auto`).
    pub fn missing(&self) -> &str {
        &self.0
    }
}

/// Looks at the machine. Never panics and never fails: what is missing is
/// reported as such.
pub fn probe(cfg: &GpuConfig) -> Probe {
    let nvrtc = if crate::gpu::kernels::nvrtc_present() {
        Capability::yes("libnvrtc loaded")
    } else {
        Capability::no("libnvrtc.so.12 not found on the library path")
    };
    let (driver, devices, nvdec, nvenc) = match cuda_devices(cfg) {
        Err(why) => {
            let no = || Capability::no(why.clone());
            (None, Vec::new(), no(), no())
        }
        Ok((version, devices)) => {
            let (nvdec, nvenc) = if devices.is_empty() {
                let no = || Capability::no("no GPU");
                (no(), no())
            } else {
                (nvdec(), nvenc())
            };
            (Some(version), devices, nvdec, nvenc)
        }
    };
    Probe {
        driver,
        devices,
        nvdec,
        nvenc,
        nvrtc,
    }
}

impl Probe {
    /// For `gpu.enabled = "on"`: an error saying what is missing unless the
    /// GPU stages can run.
    pub fn require(&self) -> Result<(), GpuRequired> {
        let Some(_) = &self.driver else {
            return Err(GpuRequired(format!(
                "there is no usable CUDA driver ({})",
                self.nvdec.detail
            )));
        };
        if self.devices.is_empty() {
            return Err(GpuRequired("the CUDA driver sees no GPU".into()));
        }
        if !self.devices.iter().any(|d| d.selected) {
            return Err(GpuRequired(
                "gpu.devices selects none of the GPUs present".into(),
            ));
        }
        if !self.nvrtc.usable {
            return Err(GpuRequired(format!(
                "NVRTC cannot be loaded to compile the kernels: {}",
                crate::gpu::kernels::KernelError::NoNvrtc
            )));
        }
        Ok(())
    }
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.driver {
            None => writeln!(f, "no CUDA driver: CPU backends ({})", self.nvdec.detail)?,
            Some(v) => {
                writeln!(f, "CUDA driver: {v}")?;
                if self.devices.is_empty() {
                    writeln!(f, "no GPU")?;
                }
                for d in &self.devices {
                    writeln!(
                        f,
                        "GPU {}: {}, {:.1} GiB, compute capability {}{}",
                        d.index,
                        d.name,
                        d.memory_bytes as f64 / f64::from(1u32 << 30),
                        d.compute_capability,
                        if d.selected {
                            ""
                        } else {
                            " (not in gpu.devices)"
                        }
                    )?;
                }
                let show = |c: &Capability| {
                    format!("{} ({})", if c.usable { "yes" } else { "no" }, c.detail)
                };
                writeln!(f, "NVDEC (FFmpeg cuda hwaccel): {}", show(&self.nvdec))?;
                writeln!(f, "NVENC (h264_nvenc): {}", show(&self.nvenc))?;
            }
        }
        write!(
            f,
            "NVRTC: {} ({})",
            if self.nvrtc.usable { "yes" } else { "no" },
            self.nvrtc.detail
        )
    }
}

/// The driver's version and its GPUs, or why there are none.
fn cuda_devices(cfg: &GpuConfig) -> Result<(String, Vec<Device>), String> {
    use cudarc::driver::{result, sys};
    // SAFETY: only tries to dlopen libcuda under its usual names.
    if !unsafe { sys::is_culib_present() } {
        return Err("libcuda.so.1 not found".into());
    }
    let err = |what: &str, e: result::DriverError| format!("{what}: {e}");
    result::init().map_err(|e| err("cuInit", e))?;
    let mut version = 0;
    // SAFETY: the library is loaded (checked above); the pointer is valid for the call.
    unsafe { sys::cuDriverGetVersion(&mut version) }
        .result()
        .map_err(|e| err("cuDriverGetVersion", e))?;
    let count = result::device::get_count().map_err(|e| err("cuDeviceGetCount", e))?;
    let mut devices = Vec::new();
    for index in 0..usize::try_from(count).unwrap_or(0) {
        let ordinal = i32::try_from(index).unwrap_or(i32::MAX);
        let dev = result::device::get(ordinal).map_err(|e| err("cuDeviceGet", e))?;
        let name = result::device::get_name(dev).map_err(|e| err("cuDeviceGetName", e))?;
        // SAFETY: `dev` came from cuDeviceGet.
        let (memory, major, minor) = unsafe {
            use sys::CUdevice_attribute::*;
            (
                result::device::total_mem(dev).map_err(|e| err("cuDeviceTotalMem", e))?,
                result::device::get_attribute(dev, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)
                    .map_err(|e| err("cuDeviceGetAttribute", e))?,
                result::device::get_attribute(dev, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)
                    .map_err(|e| err("cuDeviceGetAttribute", e))?,
            )
        };
        devices.push(Device {
            index,
            name,
            memory_bytes: memory as u64,
            compute_capability: format!("{major}.{minor}"),
            selected: cfg.devices.is_empty() || cfg.devices.contains(&index),
        });
    }
    Ok((
        format!("{}.{}", version / 1000, (version % 1000) / 10),
        devices,
    ))
}

/// Whether FFmpeg can open a CUDA device and decode H.264 on it.
fn nvdec() -> Capability {
    crate::av::init();
    let h264 = match ffmpeg::decoder::find(ffmpeg::codec::Id::H264) {
        Some(c) => c,
        None => return Capability::no("FFmpeg has no H.264 decoder"),
    };
    let cuda = ffmpeg::ffi::AVHWDeviceType::AV_HWDEVICE_TYPE_CUDA;
    // SAFETY: reads the codec's static hardware configuration table until its end (null).
    let has_config = (0..)
        .map(|i| unsafe { ffmpeg::ffi::avcodec_get_hw_config(h264.as_ptr(), i) })
        .take_while(|c| !c.is_null())
        // SAFETY: non-null entries of that table are valid for the program's life.
        .any(|c| unsafe { (*c).device_type } == cuda);
    if !has_config {
        return Capability::no("this FFmpeg build's H.264 decoder has no CUDA hwaccel");
    }
    if let Err(e) = crate::av::CudaDevice::open(None) {
        return Capability::no(format!("FFmpeg cannot open a CUDA device: {e}"));
    }
    Capability::yes("FFmpeg opened a CUDA device for h264")
}

/// Whether h264_nvenc opens: datacenter GPUs such as the H100 have no NVENC.
fn nvenc() -> Capability {
    crate::av::init();
    let Some(codec) = ffmpeg::encoder::find_by_name("h264_nvenc") else {
        return Capability::no("this FFmpeg build has no h264_nvenc");
    };
    let opened = ffmpeg::codec::Context::new_with_codec(codec)
        .encoder()
        .video()
        .and_then(|mut enc| {
            enc.set_width(256);
            enc.set_height(144);
            enc.set_format(ffmpeg::format::Pixel::YUV420P);
            enc.set_time_base(ffmpeg::Rational::new(1, 30));
            enc.set_bit_rate(500_000);
            enc.open_as(codec)
        });
    match opened {
        Ok(_) => Capability::yes("h264_nvenc opened"),
        Err(e) => Capability::no(format!("h264_nvenc does not open: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A machine without a CUDA driver (CI) gets a clean CPU answer; with one,
    /// the answer is consistent with what was found.
    #[test]
    fn probe_answers_with_or_without_a_driver() {
        let p = probe(&GpuConfig::default());
        let text = p.to_string();
        match &p.driver {
            None => {
                assert!(text.starts_with("no CUDA driver: CPU backends"), "{text}");
                assert!(p.devices.is_empty());
                let err = p.require().expect_err("on needs a driver");
                assert!(err.to_string().contains("no usable CUDA driver"), "{err}");
            }
            Some(_) => assert!(text.contains("CUDA driver: "), "{text}"),
        }
        let json = serde_json::to_value(&p).expect("json");
        assert!(json["nvrtc"]["usable"].is_boolean(), "{json}");
    }
}
