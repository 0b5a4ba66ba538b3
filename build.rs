//! Compiles every CUDA kernel in kernels/*.cu to PTX, with NVRTC, for each
//! virtual architecture in `BUILD_ARCHS`, and writes into OUT_DIR one PTX
//! file per kernel and architecture plus `embedded_ptx.rs`, the table
//! src/gpu/kernels.rs embeds: a GPU host then needs only the driver.
//!
//! NVRTC is the one `make deps` unpacks into .nvrtc/ (the Makefile puts it on
//! LD_LIBRARY_PATH). Where it cannot be loaded (a build without `make deps`)
//! the build still succeeds: the table is empty, a cargo warning says so, and
//! the node compiles its kernels with NVRTC at start instead. A kernel that
//! does not compile fails the build.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::{env, fs};

include!("src/gpu/nvrtc_common.rs");

fn main() {
    println!("cargo:rerun-if-changed=kernels");
    println!("cargo:rerun-if-changed=src/gpu/nvrtc_common.rs");
    // NVRTC is looked up on the library path: a build that finds it embeds
    // PTX, one that does not embeds none.
    println!("cargo:rerun-if-env-changed=LD_LIBRARY_PATH");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let table = match nvrtc_version() {
        Some(version) => embed(version, &out_dir).unwrap_or_else(|why| {
            eprintln!("{why}");
            std::process::exit(1)
        }),
        None => {
            println!(
                "cargo:warning=NVRTC (libnvrtc.so.12) is not on the library path: no PTX \
                 embedded, so the node will compile its CUDA kernels with NVRTC at start. \
                 `make build` (after `make deps`) embeds it."
            );
            "&[]".to_owned()
        }
    };
    let path = out_dir.join("embedded_ptx.rs");
    fs::write(&path, table).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// Compiles every kernel for every architecture into `out_dir` and returns
/// the table that embeds them (a `&[EmbeddedPtx]` expression).
fn embed(nvrtc: (i32, i32), out_dir: &Path) -> Result<String, String> {
    let mut kernels: Vec<PathBuf> = fs::read_dir("kernels")
        .map_err(|e| format!("kernels/: {e}"))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("kernels/: {e}"))?;
    kernels.retain(|p| p.extension().is_some_and(|x| x == "cu"));
    // The table's order stays the same from one build to the next.
    kernels.sort();
    let mut table = format!(
        "// Written by build.rs: kernels/*.cu compiled by NVRTC {}.{}.\n&[\n",
        nvrtc.0, nvrtc.1
    );
    for ((major, minor), arch) in BUILD_ARCHS {
        fs::create_dir_all(out_dir.join(arch)).map_err(|e| format!("{arch}: {e}"))?;
        writeln!(
            table,
            "    EmbeddedPtx {{ arch: {arch:?}, capability: ({major}, {minor}), \
             cuda: {nvrtc:?}, files: &["
        )
        .expect("writing to a String cannot fail");
        for path in &kernels {
            // KernelSource::file names kernels the same way: relative to the crate root.
            let file = path.to_str().ok_or(format!("{path:?}: not UTF-8"))?;
            let source = fs::read_to_string(path).map_err(|e| format!("{file}: {e}"))?;
            let ptx = cudarc::nvrtc::compile_ptx_with_opts(source, nvrtc_options(file, arch))
                .map_err(|e| match e {
                    cudarc::nvrtc::CompileError::CompileError { log, .. } => {
                        format!(
                            "{file} does not compile for {arch}: {}",
                            log.to_string_lossy()
                        )
                    }
                    other => format!("{file}: NVRTC failed for {arch}: {other}"),
                })?;
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .ok_or(format!("{file}: no file name"))?;
            let name = format!("{arch}/{stem}.ptx");
            fs::write(out_dir.join(&name), ptx.to_src()).map_err(|e| format!("{name}: {e}"))?;
            writeln!(
                table,
                "        ({file:?}, include_str!(concat!(env!(\"OUT_DIR\"), \"/{name}\"))),"
            )
            .expect("writing to a String cannot fail");
        }
        table.push_str("    ] },\n");
    }
    table.push_str("]\n");
    Ok(table)
}
