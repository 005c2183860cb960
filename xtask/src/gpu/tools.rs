//! The tools the bundle is built with, installed once under
//! `target/gpu-tools/`: a Python venv with zig, cargo-zigbuild and the
//! NVRTC and CUDA header wheels of each toolkit.

use super::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The tools the bundle is built with.
pub(super) struct Tools {
    /// The Python of the tools' virtual environment.
    pub(super) python: PathBuf,
    /// The folder of the `zig` binary.
    pub(super) zig_dir: PathBuf,
    /// `cargo-zigbuild`.
    pub(super) zigbuild: PathBuf,
}

pub(super) fn run_checked(cmd: &mut Command, what: &str) -> Result<(), String> {
    eprintln!("$ {what}");
    let status = cmd
        .status()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status})"))
    }
}

/// Installs (once) zig, cargo-zigbuild and the NVRTC/header wheels under `target/gpu-tools/`.
pub(super) fn tools() -> Result<Tools, String> {
    let root = workspace_root().join("target").join("gpu-tools");
    let venv = root.join("venv");
    let python = venv.join("bin").join("python3");
    if !python.exists() {
        run_checked(
            Command::new("python3").arg("-m").arg("venv").arg(&venv),
            "python3 -m venv target/gpu-tools/venv",
        )?;
    }
    let mut wanted = vec!["ziglang".to_string()];
    for (_, nvrtc, runtime) in TOOLKITS {
        wanted.push(nvrtc.to_string());
        wanted.push(runtime.to_string());
    }
    let site = site_packages(&python)?;
    let have = site.join("ziglang").is_dir()
        && TOOLKITS
            .iter()
            .all(|(major, _, _)| toolkit_dirs(&site, *major).is_some());
    if !have {
        run_checked(
            Command::new(&python)
                .args(["-m", "pip", "install", "--quiet"])
                .args(&wanted),
            &format!("pip install {}", wanted.join(" ")),
        )?;
    }
    let zig_dir = site.join("ziglang");
    if !zig_dir.join("zig").exists() {
        return Err(format!("no zig binary in {}", zig_dir.display()));
    }
    let zigbuild = match which("cargo-zigbuild") {
        Some(p) => p,
        None => {
            let bin = root.join("cargo").join("bin").join("cargo-zigbuild");
            if !bin.exists() {
                run_checked(
                    cargo()
                        .args(["install", "--locked", "cargo-zigbuild", "--root"])
                        .arg(root.join("cargo")),
                    "cargo install --locked cargo-zigbuild",
                )?;
            }
            bin
        }
    };
    Ok(Tools {
        python,
        zig_dir,
        zigbuild,
    })
}

pub(super) fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

pub(super) fn site_packages(python: &Path) -> Result<PathBuf, String> {
    let out = Command::new(python)
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ])
        .output()
        .map_err(|e| format!("{}: {e}", python.display()))?;
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// The (lib, include) folders of CUDA `major`'s NVRTC and runtime wheels.
pub(super) fn toolkit_dirs(site: &Path, major: u32) -> Option<(PathBuf, PathBuf)> {
    let nvidia = site.join("nvidia");
    let (lib, include) = if major >= 13 {
        let d = nvidia.join(format!("cu{major}"));
        (d.join("lib"), d.join("include"))
    } else {
        (
            nvidia.join("cuda_nvrtc").join("lib"),
            nvidia.join("cuda_runtime").join("include"),
        )
    };
    let nvrtc = std::fs::read_dir(&lib).ok()?.flatten().find(|e| {
        let n = e.file_name().to_string_lossy().into_owned();
        n.starts_with(&format!("libnvrtc.so.{major}")) && !n.contains("alt")
    })?;
    include
        .join("cuda_fp16.h")
        .is_file()
        .then(|| (nvrtc.path(), include))
}
