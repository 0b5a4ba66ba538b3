// What build.rs and src/gpu/kernels.rs share about NVRTC: the architectures
// compiled at build time, the options every kernel is compiled with, and how
// the library is found. Both take this file with `include!`, so the PTX
// embedded at build time and the PTX NVRTC compiles at start cannot drift
// apart. It is not a module: paths are written in full.

/// The virtual architectures build.rs compiles every kernel for, with the
/// compute capability each needs: Turing (T4, the oldest the node supports),
/// Ampere (A100; A10, RTX 30), Ada (L4, L40), Hopper (H100, H200). A GPU
/// between two of them, or newer than all (Blackwell), runs the highest
/// one below it, which its driver JIT-compiles.
const BUILD_ARCHS: [((i32, i32), &str); 5] = [
    ((7, 5), "compute_75"),
    ((8, 0), "compute_80"),
    ((8, 6), "compute_86"),
    ((8, 9), "compute_89"),
    ((9, 0), "compute_90"),
];

/// NVRTC's options for one kernel file and one virtual architecture.
fn nvrtc_options(file: &str, arch: &'static str) -> cudarc::nvrtc::CompileOptions {
    cudarc::nvrtc::CompileOptions {
        arch: Some(arch),
        name: Some(file.to_owned()),
        // Integer filters and SSIM's float ratio must match the CPU's: no
        // fused or approximate arithmetic.
        fmad: Some(false),
        prec_div: Some(true),
        ftz: Some(false),
        ..Default::default()
    }
}

/// Whether libnvrtc can be loaded; cudarc panics on first use when it cannot.
pub fn nvrtc_present() -> bool {
    // SAFETY: only tries to dlopen the library under its usual names.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// The CUDA version (major, minor) of the NVRTC on the library path: the
/// PTX it writes needs a driver for that version or newer.
pub fn nvrtc_version() -> Option<(i32, i32)> {
    if !nvrtc_present() {
        return None;
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: the library is loaded (checked above); both pointers are valid for the call.
    unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .ok()
        .map(|()| (major, minor))
}
