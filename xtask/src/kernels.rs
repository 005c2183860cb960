//! `cargo xtask kernels`: compiles every CUDA kernel source of amp-cuda with
//! NVRTC for sm_80 and sm_90 — no GPU and no driver needed, only libnvrtc and
//! the CUDA headers — and fails on any error or warning.
//!
//! libnvrtc is found by name (LD_LIBRARY_PATH, ldconfig), or from
//! `AMP_NVRTC_LIB` / `AMP_CUDA_LIB_DIR` / `CUDA_PATH`, or from the
//! `nvidia-cuda-nvrtc` wheel of the `python3` on PATH (or `AMP_PYTHON`).
//! Headers: `AMP_CUDA_INCLUDE`, `CUDA_PATH`, `/usr/local/cuda`, or the
//! `nvidia-cuda-runtime` wheel next to the loaded libnvrtc.

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Instant;

/// The architectures every kernel must compile for.
const ARCHS: [u32; 2] = [80, 90];

const HOW_TO_GET_NVRTC: &str = "\
libnvrtc was not found. Without a CUDA toolkit, install the wheels into a virtual environment:
    python3 -m venv /tmp/nvrtc-venv
    /tmp/nvrtc-venv/bin/pip install 'nvidia-cuda-nvrtc==13.*' 'nvidia-cuda-runtime==13.*'
then run with AMP_PYTHON=/tmp/nvrtc-venv/bin/python3 cargo xtask kernels
(or set AMP_NVRTC_LIB to the libnvrtc.so.13 file and AMP_CUDA_INCLUDE to the include folder).";

/// The `nvidia/<x>/lib` and `nvidia/<x>/include` folders of a Python's wheels.
fn wheel_dirs() -> Vec<(PathBuf, PathBuf)> {
    let python = std::env::var("AMP_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let script = "import os, nvidia\nfor p in nvidia.__path__:\n    print(p)";
    let Ok(out) = Command::new(&python).args(["-c", script]).output() else {
        return Vec::new();
    };
    let mut dirs = Vec::new();
    for root in String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(PathBuf::from)
    {
        for sub in ["cu13", "cuda_nvrtc", "cuda_runtime"] {
            let lib = root.join(sub).join("lib");
            let include = root.join(sub).join("include");
            dirs.push((lib, include));
        }
        dirs.push((
            root.join("cuda_nvrtc").join("lib"),
            root.join("cuda_runtime").join("include"),
        ));
    }
    dirs.into_iter()
        .filter(|(l, i)| l.is_dir() || i.is_dir())
        .collect()
}

/// Points amp-cuda's library and header search at a Python's wheels when the
/// environment does not already say where they are.
fn use_python_wheels() {
    let wheels = wheel_dirs();
    if wheels.is_empty() {
        return;
    }
    let join = |paths: Vec<PathBuf>, var: &str| {
        let mut all: Vec<PathBuf> = std::env::var_os(var)
            .map(|v| std::env::split_paths(&v).collect())
            .unwrap_or_default();
        all.extend(paths);
        std::env::join_paths(all).ok()
    };
    let libs: Vec<PathBuf> = wheels
        .iter()
        .map(|(l, _)| l.clone())
        .filter(|l| l.is_dir())
        .collect();
    let includes: Vec<PathBuf> = wheels
        .iter()
        .map(|(_, i)| i.clone())
        .filter(|i| i.join("cuda_fp16.h").is_file())
        .collect();
    if let Some(v) = join(libs, "AMP_CUDA_LIB_DIR") {
        std::env::set_var("AMP_CUDA_LIB_DIR", v);
    }
    if let Some(v) = join(includes, "AMP_CUDA_INCLUDE") {
        std::env::set_var("AMP_CUDA_INCLUDE", v);
    }
}

/// Runs the check; the exit code is non-zero on any failure or warning.
pub fn run() -> ExitCode {
    let start = Instant::now();
    use_python_wheels();
    if let Err(e) = amp_cuda::compile::require_nvrtc() {
        eprintln!("error: {e}\n\n{HOW_TO_GET_NVRTC}");
        return ExitCode::FAILURE;
    }
    let version = match amp_cuda::compile::nvrtc_version() {
        Ok((major, minor)) => format!("{major}.{minor}"),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let includes = amp_cuda::compile::include_dirs();
    eprintln!(
        "NVRTC {version}; headers from {}",
        if includes.is_empty() {
            "NVRTC's built-ins (no cuda_fp16.h folder found)".to_string()
        } else {
            includes
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    let mut failures = 0;
    println!(
        "{:<16} {:<6} {:>10} {:>9}  result",
        "module", "arch", "cubin", "time"
    );
    for source in amp_cuda::kernels::ALL.iter() {
        for arch in ARCHS {
            let t = Instant::now();
            let result = amp_cuda::compile::compile(source, arch);
            let secs = t.elapsed().as_secs_f64();
            match result {
                Ok(c) if c.log.is_empty() => {
                    println!(
                        "{:<16} sm_{arch:<3} {:>9}B {secs:>8.2}s  ok",
                        source.file,
                        c.cubin.len()
                    );
                }
                Ok(c) => {
                    failures += 1;
                    println!(
                        "{:<16} sm_{arch:<3} {:>9}B {secs:>8.2}s  WARNINGS",
                        source.file,
                        c.cubin.len()
                    );
                    eprintln!("{}", c.log);
                }
                Err(e) => {
                    failures += 1;
                    println!(
                        "{:<16} sm_{arch:<3} {:>10} {secs:>8.2}s  FAILED",
                        source.file, "-"
                    );
                    eprintln!("{e}");
                }
            }
        }
    }
    eprintln!("kernels took {:.1?}", start.elapsed());
    if failures == 0 {
        println!(
            "all {} kernel modules compile cleanly for sm_80 and sm_90",
            amp_cuda::kernels::ALL.len()
        );
        ExitCode::SUCCESS
    } else {
        eprintln!("error: {failures} compile(s) failed or warned");
        ExitCode::FAILURE
    }
}
