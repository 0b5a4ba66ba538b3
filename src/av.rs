//! FFmpeg as a library: its one-time setup and the CUDA devices its
//! decoders run on. Every user of ffmpeg-next in the node calls [`init`]
//! first; nothing here decodes, encodes or knows a stream.

use ffmpeg_next as ffmpeg;

/// Runs `ffmpeg_next::init` once per process. It fills the table that FFmpeg error messages
/// are printed from (without it they print as empty strings) and writes that table without
/// locking, so it must not run twice concurrently.
pub fn init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Only device registration can fail, and no code here uses devices.
        let _ = ffmpeg::init();
        // libx264 prints its settings and statistics at info level for every
        // encoder it opens; a node opens several per stream. Our own logs say
        // what matters, so FFmpeg only speaks about errors.
        ffmpeg::util::log::set_level(ffmpeg::util::log::Level::Error);
    });
}

/// A reference to an FFmpeg CUDA device, released when dropped.
pub struct CudaDevice(*mut ffmpeg::ffi::AVBufferRef);

impl CudaDevice {
    /// Opens CUDA device `device` (FFmpeg's default when `None`) on the
    /// device's primary context: the one the node's kernels run in, so
    /// what FFmpeg decodes there is readable by them where it lies.
    pub fn open(device: Option<usize>) -> Result<Self, ffmpeg::Error> {
        use ffmpeg::ffi;
        init();
        let name =
            device.map(|d| std::ffi::CString::new(d.to_string()).expect("digits have no NUL"));
        let mut hw = std::ptr::null_mut();
        let mut opts = std::ptr::null_mut();
        // SAFETY: av_dict_set copies the C strings into a new dictionary that is freed below;
        // av_hwdevice_ctx_create reads the name and options during the call and on success
        // stores a new reference in `hw`.
        let ret = unsafe {
            ffi::av_dict_set(&mut opts, c"primary_ctx".as_ptr(), c"1".as_ptr(), 0);
            let ret = ffi::av_hwdevice_ctx_create(
                &mut hw,
                ffi::AVHWDeviceType::AV_HWDEVICE_TYPE_CUDA,
                name.as_ref().map_or(std::ptr::null(), |n| n.as_ptr()),
                opts,
                0,
            );
            ffi::av_dict_free(&mut opts);
            ret
        };
        if ret < 0 {
            return Err(ffmpeg::Error::from(ret));
        }
        Ok(CudaDevice(hw))
    }

    /// Hands the reference over to FFmpeg (a codec context's
    /// `hw_device_ctx`, which releases it when freed).
    pub fn into_raw(self) -> *mut ffmpeg::ffi::AVBufferRef {
        let raw = self.0;
        std::mem::forget(self);
        raw
    }
}

impl Drop for CudaDevice {
    fn drop(&mut self) {
        // SAFETY: `self.0` is the reference av_hwdevice_ctx_create made, not handed over.
        unsafe { ffmpeg::ffi::av_buffer_unref(&mut self.0) };
    }
}
