//! What the machine offers the pipeline (CUDA driver, GPUs, NVDEC, NVENC,
//! NVRTC, and where each GPU's kernels come from: PTX embedded at build time
//! or NVRTC at start): the facts `rungs probe` prints and the backend
//! planner (`transcode::backend`) chooses from, and the check behind
//! `gpu.enabled = "on"`.
//!
//! libcuda and libnvrtc are loaded at run time. cudarc panics when a library
//! it needs is missing, so each is looked for before its first use, and a
//! machine without them is simply answered "CPU backends".

use std::fmt;

use ffmpeg_next as ffmpeg;
use serde::Serialize;

use super::GpuConfig;
use super::device::{DriverVersion, driver_too_old};
use super::kernels::{self, KernelOrigin};

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
    /// Whether every selected GPU gets its CUDA kernels, and from where:
    /// the PTX embedded at build time, or NVRTC at start.
    pub kernels: Capability,
}

#[derive(Clone, Debug, Serialize)]
pub struct Device {
    pub index: usize,
    pub name: String,
    pub memory_bytes: u64,
    /// "major.minor", e.g. "9.0" for Hopper.
    pub compute_capability: String,
    pub selected: bool,
    /// Where its kernels come from, or why it gets none.
    pub kernels: Capability,
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
    let nvrtc_version = kernels::nvrtc_version();
    let nvrtc = match nvrtc_version {
        Some((major, minor)) => Capability::yes(format!("libnvrtc loaded, CUDA {major}.{minor}")),
        None => Capability::no("libnvrtc.so.12 not found on the library path"),
    };
    let (driver, devices, nvdec, nvenc) = match cuda_devices(cfg, nvrtc_version) {
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
    let kernels = all_kernels(&devices, nvrtc_version.is_some());
    Probe {
        driver,
        devices,
        nvdec,
        nvenc,
        nvrtc,
        kernels,
    }
}

/// What the build embedded, e.g. "PTX embedded for compute_75, compute_90
/// (CUDA 12.8)".
fn embedded_summary() -> String {
    match kernels::EMBEDDED {
        [] => "no PTX embedded (built without NVRTC)".to_owned(),
        all @ [first, ..] => {
            let archs: Vec<&str> = all.iter().map(|e| e.arch).collect();
            let (major, minor) = first.cuda;
            format!(
                "PTX embedded for {} (CUDA {major}.{minor})",
                archs.join(", ")
            )
        }
    }
}

/// The kernels for the whole machine: usable when every selected GPU gets
/// them (with no GPU, when the build or NVRTC would give some).
fn all_kernels(devices: &[Device], nvrtc: bool) -> Capability {
    let summary = embedded_summary();
    let selected: Vec<&Device> = devices.iter().filter(|d| d.selected).collect();
    if selected.is_empty() {
        let embedded = !kernels::EMBEDDED.is_empty();
        let detail = match (embedded, nvrtc) {
            (true, true) => format!("{summary}; NVRTC at start for other GPUs"),
            (true, false) => format!("{summary}; no NVRTC for other GPUs"),
            (false, true) => format!("{summary}; {}", KernelOrigin::Nvrtc),
            (false, false) => format!("{summary}, and no NVRTC (libnvrtc.so.12) to compile them"),
        };
        return if embedded || nvrtc {
            Capability::yes(detail)
        } else {
            Capability::no(detail)
        };
    }
    let per_gpu: Vec<String> = selected
        .iter()
        .map(|d| format!("GPU {}: {}", d.index, d.kernels.detail))
        .collect();
    let detail = format!("{summary}; {}", per_gpu.join("; "));
    if selected.iter().all(|d| d.kernels.usable) {
        Capability::yes(detail)
    } else {
        Capability::no(detail)
    }
}

/// Where a GPU of compute capability `capability` gets its kernels, as
/// `Gpu::open` will do it: the embedded PTX for its architecture unless the
/// driver is older than that PTX's CUDA, else NVRTC's (`nvrtc`: its CUDA
/// version, when on the library path) unless the driver is older than it.
fn kernels_for(
    capability: (i32, i32),
    embedded: Option<(&'static str, (i32, i32))>,
    nvrtc: Option<(i32, i32)>,
    driver: &DriverVersion,
) -> Capability {
    // An unknown driver version is taken to be new enough: loading will tell.
    let takes = |cuda: (i32, i32)| driver.cuda.is_none_or(|d| d >= cuda);
    let (major, minor) = capability;
    match (embedded, nvrtc) {
        (Some((arch, cuda)), _) if takes(cuda) => {
            Capability::yes(KernelOrigin::Embedded(arch).to_string())
        }
        (_, Some(cuda)) if takes(cuda) => {
            let why = if embedded.is_some() {
                " (the driver is older than the embedded PTX)"
            } else {
                ""
            };
            Capability::yes(format!("{}{why}", KernelOrigin::Nvrtc))
        }
        (Some((_, cuda)), _) | (None, Some(cuda)) => {
            Capability::no(driver_too_old(driver, Some(cuda)))
        }
        (None, None) => Capability::no(format!(
            "no PTX embedded for compute capability {major}.{minor} and NVRTC \
             (libnvrtc.so.12) is not on the library path to compile the kernels"
        )),
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
        if !self.kernels.usable {
            return Err(GpuRequired(format!(
                "the CUDA kernels cannot be loaded: {}",
                self.kernels.detail
            )));
        }
        Ok(())
    }
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show =
            |c: &Capability| format!("{} ({})", if c.usable { "yes" } else { "no" }, c.detail);
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
                writeln!(f, "NVDEC (FFmpeg cuda hwaccel): {}", show(&self.nvdec))?;
                writeln!(f, "NVENC (h264_nvenc): {}", show(&self.nvenc))?;
            }
        }
        writeln!(f, "CUDA kernels: {}", show(&self.kernels))?;
        write!(f, "NVRTC: {}", show(&self.nvrtc))
    }
}

/// The driver's version and its GPUs (each with where its kernels come from,
/// given NVRTC's version when it is on the path), or why there are none.
fn cuda_devices(
    cfg: &GpuConfig,
    nvrtc: Option<(i32, i32)>,
) -> Result<(String, Vec<Device>), String> {
    use cudarc::driver::{result, sys};
    // SAFETY: only tries to dlopen libcuda under its usual names.
    if !unsafe { sys::is_culib_present() } {
        return Err("libcuda.so.1 not found".into());
    }
    let err = |what: &str, e: result::DriverError| format!("{what}: {e}");
    result::init().map_err(|e| err("cuInit", e))?;
    let driver = DriverVersion::query();
    let Some((cuda_major, cuda_minor)) = driver.cuda else {
        return Err("cuDriverGetVersion failed".into());
    };
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
        let embedded = kernels::embedded_for(major, minor).map(|e| (e.arch, e.cuda));
        devices.push(Device {
            index,
            name,
            memory_bytes: memory as u64,
            compute_capability: format!("{major}.{minor}"),
            selected: cfg.devices.is_empty() || cfg.devices.contains(&index),
            kernels: kernels_for((major, minor), embedded, nvrtc, &driver),
        });
    }
    Ok((format!("{cuda_major}.{cuda_minor}"), devices))
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
        assert!(json["kernels"]["usable"].is_boolean(), "{json}");
        assert!(text.contains("\nCUDA kernels: "), "{text}");
    }

    fn driver(cuda: (i32, i32)) -> DriverVersion {
        DriverVersion {
            release: Some("550.54.14".into()),
            cuda: Some(cuda),
        }
    }

    const HOPPER: (i32, i32) = (9, 0);
    const EMBEDDED_90: Option<(&str, (i32, i32))> = Some(("compute_90", (12, 8)));

    #[test]
    fn a_gpu_with_embedded_ptx_needs_no_nvrtc() {
        let k = kernels_for(HOPPER, EMBEDDED_90, None, &driver((12, 8)));
        assert!(k.usable);
        assert_eq!(k.detail, "embedded PTX for compute_90");
    }

    /// A driver older than the build's NVRTC: an NVRTC the driver takes
    /// compiles the kernels instead; without one, the operator is told
    /// which driver to install.
    #[test]
    fn a_driver_older_than_the_embedded_ptx() {
        let old = driver((12, 4));
        let k = kernels_for(HOPPER, EMBEDDED_90, Some((12, 4)), &old);
        assert!(k.usable);
        assert_eq!(
            k.detail,
            "compiled by NVRTC at start (the driver is older than the embedded PTX)"
        );
        for nvrtc in [None, Some((12, 8))] {
            let k = kernels_for(HOPPER, EMBEDDED_90, nvrtc, &old);
            assert!(!k.usable);
            assert!(
                k.detail
                    .contains("is older than the PTX (CUDA 12.8); update the driver to >= 570.26"),
                "{}",
                k.detail
            );
        }
    }

    #[test]
    fn a_gpu_below_every_embedded_arch_needs_nvrtc() {
        let volta = (7, 0);
        let k = kernels_for(volta, None, Some((12, 8)), &driver((12, 8)));
        assert!(k.usable);
        assert_eq!(k.detail, "compiled by NVRTC at start");
        let k = kernels_for(volta, None, None, &driver((12, 8)));
        assert!(!k.usable);
        assert!(k.detail.contains("compute capability 7.0"), "{}", k.detail);
    }

    /// `gpu.enabled = "on"` is refused when a selected GPU gets no kernels,
    /// with the reason.
    #[test]
    fn on_requires_kernels_for_every_selected_gpu() {
        let gpu = |index, kernels| Device {
            index,
            name: "NVIDIA H100 80GB HBM3".into(),
            memory_bytes: 80 << 30,
            compute_capability: "9.0".into(),
            selected: true,
            kernels,
        };
        let refused = kernels_for(HOPPER, EMBEDDED_90, None, &driver((12, 4)));
        let fine = kernels_for(HOPPER, EMBEDDED_90, None, &driver((12, 8)));
        let devices = vec![gpu(0, fine), gpu(1, refused)];
        let p = Probe {
            driver: Some("12.4".into()),
            kernels: all_kernels(&devices, false),
            devices,
            nvdec: Capability::yes("test"),
            nvenc: Capability::no("test"),
            nvrtc: Capability::no("test"),
        };
        let err = p.require().expect_err("GPU 1 has no kernels");
        let text = err.to_string();
        assert!(text.contains("the CUDA kernels cannot be loaded"), "{text}");
        assert!(
            text.contains("GPU 1: the NVIDIA driver (version 550.54.14"),
            "{text}"
        );
    }
}
