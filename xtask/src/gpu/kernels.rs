//! The bundle's kernels and headers: every module precompiled by NVRTC
//! [`PRECOMPILE_WITH`] to CUBINs and PTX, and the CUDA headers NVRTC needs,
//! trimmed to what the roots include.

use super::tools::run_checked;
use super::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The headers `roots` include, transitively, as paths relative to `include`
/// (every `#include` line is followed, whatever its conditions: a superset).
pub(super) fn header_closure(include: &Path, roots: &[&str]) -> Vec<PathBuf> {
    let mut seen: Vec<PathBuf> = Vec::new();
    let mut todo: Vec<PathBuf> = roots.iter().map(PathBuf::from).collect();
    while let Some(file) = todo.pop() {
        if seen.contains(&file) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(include.join(&file)) else {
            continue;
        };
        seen.push(file.clone());
        let here = file.parent().map(Path::to_path_buf).unwrap_or_default();
        for line in text.lines() {
            let Some(rest) = line.trim_start().strip_prefix('#') else {
                continue;
            };
            let Some(rest) = rest.trim_start().strip_prefix("include") else {
                continue;
            };
            let name: String = rest
                .trim()
                .trim_start_matches(['<', '"'])
                .chars()
                .take_while(|&c| c != '>' && c != '"')
                .collect();
            for candidate in [here.join(&name), PathBuf::from(&name)] {
                if include.join(&candidate).is_file() {
                    todo.push(candidate);
                    break;
                }
            }
        }
    }
    seen.sort();
    seen
}

/// Copies the headers NVRTC needs (see [`HEADER_ROOTS`]) from `include` to `dst`.
pub(super) fn copy_headers(include: &Path, dst: &Path) -> Result<usize, String> {
    let files = header_closure(include, &HEADER_ROOTS);
    for f in &files {
        let to = dst.join(f);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        std::fs::copy(include.join(f), &to).map_err(|e| format!("{}: {e}", to.display()))?;
    }
    Ok(files.len())
}

/// Compiles every kernel module with CUDA `major`'s NVRTC against the
/// headers in `include` (in a child process: one process loads one
/// libnvrtc), writing the images into `out` when given.
pub(super) fn precompile(
    major: u32,
    nvrtc: &Path,
    include: &Path,
    out: Option<&Path>,
) -> Result<(), String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(me);
    cmd.arg("gpu-kernels")
        .env("AMP_NVRTC_LIB", nvrtc)
        .env("AMP_CUDA_INCLUDE", include)
        .env_remove("AMP_CUDA_LIB_DIR");
    let what = match out {
        Some(dir) => {
            cmd.arg(dir);
            format!(
                "precompile the kernels with NVRTC {major} into {}",
                dir.display()
            )
        }
        None => format!(
            "compile every kernel with NVRTC {major} against the bundle's {}",
            include.display()
        ),
    };
    run_checked(&mut cmd, &what)
}

/// `xtask gpu-kernels [DIR]` (run by [`precompile`]): CUBINs for every known
/// architecture of [`CUBIN_ARCHS`] and PTX for `compute_80`, with the NVRTC
/// that `AMP_NVRTC_LIB` names, written to `DIR` (only compiled without it).
pub fn precompile_here(args: &[String]) -> ExitCode {
    let out = args.first().map(PathBuf::from);
    match write_images(out.as_deref()) {
        Ok(n) => {
            match &out {
                Some(dir) => eprintln!("wrote {n} images to {}", dir.display()),
                None => eprintln!("compiled {n} images"),
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

pub(super) fn write_images(out: Option<&Path>) -> Result<usize, String> {
    use amp_cuda::compile::{self, Target};
    compile::require_nvrtc().map_err(|e| e.to_string())?;
    let known = compile::supported_archs().map_err(|e| e.to_string())?;
    if let Some(out) = out {
        std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    }
    let mut n = 0;
    for source in amp_cuda::kernels::ALL.iter() {
        let mut targets: Vec<Target> = CUBIN_ARCHS
            .iter()
            .filter(|a| known.contains(a))
            .map(|&a| Target::Cubin(a))
            .collect();
        targets.push(Target::Ptx(PTX_ARCH));
        for target in targets {
            let c = compile::compile_to(source, target).map_err(|e| e.to_string())?;
            let name = match target {
                Target::Cubin(a) => format!("{}.sm_{a}.cubin", source.name),
                Target::Ptx(a) => format!("{}.compute_{a}.ptx", source.name),
            };
            if let Some(out) = out {
                let path = out.join(name);
                std::fs::write(&path, &c.cubin).map_err(|e| format!("{}: {e}", path.display()))?;
            }
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn the_header_closure_follows_includes() {
        let dir = std::env::temp_dir().join(format!("amp-gpu-headers-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("crt")).unwrap();
        fs::write(
            dir.join("cuda_fp16.h"),
            "#include \"cuda_fp16.hpp\"\n#  include <crt/host_defines.h>\n#include <stdio.h>\n",
        )
        .unwrap();
        fs::write(dir.join("cuda_fp16.hpp"), "#include \"vector_types.h\"\n").unwrap();
        fs::write(dir.join("vector_types.h"), "").unwrap();
        fs::write(dir.join("crt").join("host_defines.h"), "").unwrap();
        fs::write(dir.join("unused.h"), "").unwrap();
        let got = header_closure(&dir, &["cuda_fp16.h"]);
        let names: Vec<String> = got.iter().map(|p| p.display().to_string()).collect();
        assert_eq!(
            names,
            [
                "crt/host_defines.h",
                "cuda_fp16.h",
                "cuda_fp16.hpp",
                "vector_types.h"
            ]
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
