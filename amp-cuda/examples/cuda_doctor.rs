//! `cuda_doctor`: what this machine offers the CUDA backend, in one screen —
//! the C library, the CUDA libraries that load (files and versions), the
//! headers NVRTC would use, each GPU, and where every kernel module's code
//! comes from (NVRTC, a precompiled CUBIN, or PTX). Exits 0 when GPU 0 opens
//! and every kernel module loads; otherwise 1, after saying what is missing.
//!
//! `cargo run -p amp-cuda --example cuda_doctor` (the GPU bundle runs it
//! first, as the preflight of `run.sh`).

use amp_cuda::{compile, images, libs, versions};
use std::process::ExitCode;

fn glibc() -> String {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: gnu_get_libc_version returns a static NUL-terminated string.
        let v = unsafe { std::ffi::CStr::from_ptr(libc::gnu_get_libc_version()) };
        v.to_string_lossy().into_owned()
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        "not glibc".to_string()
    }
}

fn main() -> ExitCode {
    let mut problems: Vec<String> = Vec::new();
    println!("== amp CUDA doctor ==");
    println!("glibc            {}", glibc());
    let status = libs::library_status();
    for (name, s) in [
        ("libcuda", &status.driver),
        ("libnvrtc", &status.nvrtc),
        ("libcublas", &status.cublas),
    ] {
        match s {
            Ok(()) => println!("{name:<16} loads"),
            Err(e) => {
                println!("{name:<16} MISSING: {e}");
                problems.push(format!("{name} does not load"));
            }
        }
    }
    let v = versions::read();
    println!("versions (library, version, file):\n{v}");
    if status.driver.is_ok() && status.cublas.is_ok() {
        if let Err(e) = versions::check(&v) {
            println!("PROBLEM: {e}");
            problems.push("the driver and libraries do not fit together".into());
        }
    }
    match versions::nvrtc_usable(&v) {
        Ok(nvrtc) => {
            let dirs = compile::include_dirs();
            if dirs.is_empty() {
                println!(
                    "headers          MISSING: no folder with cuda_fp16.h (set AMP_CUDA_INCLUDE)"
                );
            }
            for d in &dirs {
                let hv = compile::header_version(d);
                let fits = hv.is_some_and(|h| h.major == nvrtc.major);
                println!(
                    "headers          {} (CUDA {}){}",
                    d.display(),
                    hv.map_or("?".into(), |h| h.to_string()),
                    if fits {
                        ", matches NVRTC"
                    } else {
                        ", not NVRTC's version: unused"
                    }
                );
            }
        }
        Err(e) => println!("NVRTC            not used: {e}"),
    }
    match images::kernel_dir() {
        Some(dir) => println!(
            "precompiled      {} ({} images)",
            dir.display(),
            images::list(&dir).len()
        ),
        None => println!("precompiled      none (AMP_CUDA_KERNEL_DIR not set)"),
    }
    let count = amp_cuda::device_count();
    println!("GPUs             {count}");
    if count == 0 {
        problems.push("no CUDA GPU is visible to the driver".into());
    }
    match amp_cuda::backend(0) {
        Ok(gpu) => {
            let (major, minor) = gpu.compute_capability();
            println!(
                "cuda:0           {} (compute capability {major}.{minor})",
                gpu.device_name()
            );
            for (module, result) in gpu.load_all_kernels() {
                match result {
                    Ok(image) => println!("kernels {module:<11} {image}"),
                    Err(e) => {
                        println!("kernels {module:<11} FAILED: {e}");
                        problems.push(format!("kernel module {module} does not load"));
                    }
                }
            }
        }
        Err(e) => {
            println!("cuda:0           cannot be opened: {e}");
            if count > 0 {
                problems.push("cuda:0 cannot be opened".into());
            }
        }
    }
    if problems.is_empty() {
        println!("DOCTOR: ready");
        ExitCode::SUCCESS
    } else {
        println!("DOCTOR: not ready: {}", problems.join("; "));
        ExitCode::FAILURE
    }
}
