//! Finding the CUDA libraries (driver, NVRTC, cuBLAS) before cudarc touches
//! them: cudarc's dynamic loading panics when a library is missing, so every
//! entry point asks [`library_status`] first.
//!
//! cudarc opens libraries by name (`libnvrtc.so`, `libnvrtc.so.13`, …), so the
//! dynamic loader's search path applies (`LD_LIBRARY_PATH`, `ldconfig`). When a
//! library is not found by name, it is looked for, and preloaded by full path,
//! in: the file named by `AMP_NVRTC_LIB` / `AMP_CUBLAS_LIB`, the folders in
//! `AMP_CUDA_LIB_DIR` (`:`-separated), `$CUDA_PATH/lib64`, `$CUDA_HOME/lib64`
//! and `/usr/local/cuda/lib64`. A library loaded by full path satisfies later
//! loads of its soname, which is how cudarc then finds it.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Whether each CUDA library could be loaded (`Err` says what was tried).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibraryStatus {
    /// The driver library (`libcuda.so`).
    pub driver: Result<(), String>,
    /// NVRTC (`libnvrtc.so`), for compiling kernels.
    pub nvrtc: Result<(), String>,
    /// cuBLAS (`libcublas.so`), for matmul.
    pub cublas: Result<(), String>,
}

/// Probes the three libraries once per process (never panics).
pub fn library_status() -> &'static LibraryStatus {
    static STATUS: OnceLock<LibraryStatus> = OnceLock::new();
    STATUS.get_or_init(|| LibraryStatus {
        driver: probe("libcuda", &[], present_driver),
        nvrtc: probe(
            "libnvrtc",
            &[("AMP_NVRTC_LIB", "libnvrtc.so")],
            present_nvrtc,
        ),
        cublas: probe(
            "libcublas",
            &[("AMP_CUBLAS_LIB", "libcublas.so")],
            present_cublas,
        ),
    })
}

fn present_driver() -> bool {
    // SAFETY: only tries to dlopen candidate library names (running their initialisers).
    guarded(|| unsafe { cudarc::driver::sys::is_culib_present() })
}

fn present_nvrtc() -> bool {
    // SAFETY: as above.
    guarded(|| unsafe { cudarc::nvrtc::sys::is_culib_present() })
}

fn present_cublas() -> bool {
    // SAFETY: as above.
    guarded(|| unsafe { cudarc::cublas::sys::is_culib_present() })
}

fn guarded(f: impl FnOnce() -> bool + std::panic::UnwindSafe) -> bool {
    std::panic::catch_unwind(f).unwrap_or(false)
}

/// Folders searched when a library is not found by name.
pub fn search_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(list) = std::env::var_os("AMP_CUDA_LIB_DIR") {
        dirs.extend(std::env::split_paths(&list));
    }
    for var in ["CUDA_PATH", "CUDA_HOME", "CUDA_ROOT"] {
        if let Some(root) = std::env::var_os(var) {
            dirs.push(PathBuf::from(&root).join("lib64"));
            dirs.push(PathBuf::from(root).join("lib"));
        }
    }
    dirs.push(PathBuf::from("/usr/local/cuda/lib64"));
    dirs
}

fn probe(stem: &str, env_files: &[(&str, &str)], present: fn() -> bool) -> Result<(), String> {
    if present() {
        return Ok(());
    }
    let mut tried = Vec::new();
    for (var, _) in env_files {
        if let Some(path) = std::env::var_os(var) {
            let path = PathBuf::from(path);
            preload_with_dependencies(&path, stem);
            tried.push(format!("{var}={}", path.display()));
            if present() {
                return Ok(());
            }
        }
    }
    if !env_files.is_empty() {
        for dir in search_dirs() {
            if let Some(path) = find_in_dir(&dir, &format!("{stem}.so")) {
                preload_with_dependencies(&path, stem);
                tried.push(path.display().to_string());
                if present() {
                    return Ok(());
                }
            } else {
                tried.push(format!("{}/{stem}.so*", dir.display()));
            }
        }
    }
    Err(format!(
        "{stem}.so not found by the dynamic loader (LD_LIBRARY_PATH, ldconfig){}{}",
        if tried.is_empty() {
            ""
        } else {
            "; also tried "
        },
        tried.join(", ")
    ))
}

/// Preloads what the library opens by name from its own folder first: cuBLAS
/// needs cuBLASLt, NVRTC dlopens `libnvrtc-builtins.so.<major>.<minor>`.
fn preload_with_dependencies(path: &Path, stem: &str) {
    let dependency = match stem {
        "libcublas" => Some("libcublasLt.so"),
        "libnvrtc" => Some("libnvrtc-builtins.so"),
        _ => None,
    };
    if let Some(dep) = dependency.and_then(|name| path.parent().and_then(|d| find_in_dir(d, name)))
    {
        dlopen_global(&dep);
    }
    dlopen_global(path);
}

/// The shortest file name in `dir` that starts with `prefix` (`libnvrtc.so`
/// before `libnvrtc.so.13`), skipping the `alt` and `builtins` variants.
fn find_in_dir(dir: &Path, prefix: &str) -> Option<PathBuf> {
    let entries = std::fs::read_dir(dir).ok()?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix) && !n.contains(".alt."))
        })
        .collect();
    found.sort_by_key(|p| p.as_os_str().len());
    found.into_iter().next()
}

#[cfg(unix)]
fn dlopen_global(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a NUL-terminated path. The handle is deliberately never
    // closed, so the library stays loaded for the process (cudarc opens it again by soname).
    let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    !handle.is_null()
}

#[cfg(not(unix))]
fn dlopen_global(_path: &Path) -> bool {
    false
}

/// The file of a loaded library (read from `/proc/self/maps`): the first
/// mapping named `<stem>.so*`.
pub fn loaded_library_path(stem: &str) -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let prefix = format!("{stem}.so");
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(Path::new)
        .find(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix))
        })
        .map(Path::to_path_buf)
}

/// The folder a loaded library came from, e.g. to find the headers next to
/// the NVRTC that was loaded.
pub fn loaded_library_dir(stem: &str) -> Option<PathBuf> {
    loaded_library_path(stem).and_then(|p| p.parent().map(Path::to_path_buf))
}
