//! Compiling the kernel sources with NVRTC to a CUBIN for one GPU
//! architecture, with the CUDA headers (`cuda_fp16.h`, `cuda_bf16.h`) found on
//! this machine.
//!
//! Headers are looked for in: `AMP_CUDA_INCLUDE` (`:`-separated folders),
//! `$CUDA_PATH/include`, `$CUDA_HOME/include`, `$CUDA_ROOT/include`,
//! `/usr/local/cuda/include`, and next to the NVRTC library that was loaded
//! (the `nvidia-cuda-runtime` / `nvidia-cuda-nvrtc` Python wheels:
//! `nvidia/cu13/include`, or `nvidia/cuda_runtime/include` for CUDA 12 wheels).

use crate::error::{CudaError, CudaResult};
use crate::kernels::KernelSource;
use crate::libs;
use cudarc::nvrtc::{result, sys};
use std::ffi::CString;
use std::path::PathBuf;

/// A compiled kernel module.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// Module name.
    pub module: &'static str,
    /// Target architecture as `major * 10 + minor` (90 for sm_90).
    pub arch: u32,
    /// The CUBIN image.
    pub cubin: Vec<u8>,
    /// NVRTC's log (warnings); empty for a clean compile.
    pub log: String,
}

/// Errors unless NVRTC can be loaded, saying how to get it.
pub fn require_nvrtc() -> CudaResult<()> {
    libs::library_status().nvrtc.clone().map_err(|e| {
        CudaError::Compile(format!(
            "{e}. Install a CUDA toolkit, or the wheels with \
             `python3 -m pip install nvidia-cuda-nvrtc nvidia-cuda-runtime` and point \
             AMP_NVRTC_LIB (or LD_LIBRARY_PATH) at the libnvrtc.so.* they contain"
        ))
    })
}

/// NVRTC's version `(major, minor)`.
pub fn nvrtc_version() -> CudaResult<(i32, i32)> {
    require_nvrtc()?;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: NVRTC is loadable (checked above); both pointers are valid for writes.
    unsafe { sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .map_err(|e| CudaError::Compile(format!("nvrtcVersion failed: {e:?}")))?;
    Ok((major, minor))
}

/// The architectures this NVRTC can compile for (`major * 10 + minor`).
pub fn supported_archs() -> CudaResult<Vec<u32>> {
    require_nvrtc()?;
    let mut n = 0;
    // SAFETY: NVRTC is loadable; `n` is valid for writes.
    unsafe { sys::nvrtcGetNumSupportedArchs(&mut n) }
        .result()
        .map_err(|e| CudaError::Compile(format!("nvrtcGetNumSupportedArchs failed: {e:?}")))?;
    let mut archs = vec![0i32; n.max(0) as usize];
    if !archs.is_empty() {
        // SAFETY: `archs` has room for the `n` entries NVRTC writes.
        unsafe { sys::nvrtcGetSupportedArchs(archs.as_mut_ptr()) }
            .result()
            .map_err(|e| CudaError::Compile(format!("nvrtcGetSupportedArchs failed: {e:?}")))?;
    }
    Ok(archs
        .into_iter()
        .filter(|&a| a > 0)
        .map(|a| a as u32)
        .collect())
}

/// The architecture to compile for on a device of compute capability `cc`:
/// the exact one when NVRTC supports it, else the newest supported one of the
/// same major version and no newer minor (a CUBIN runs on later minors).
pub fn arch_for_device(cc: (i32, i32)) -> CudaResult<u32> {
    let want = (cc.0.max(0) * 10 + cc.1.max(0)) as u32;
    let archs = supported_archs()?;
    if archs.contains(&want) {
        return Ok(want);
    }
    archs.iter().copied().filter(|&a| a / 10 == want / 10 && a <= want).max().ok_or_else(|| {
        CudaError::Compile(format!(
            "this NVRTC cannot compile for compute capability {}.{} (supported: {archs:?}); use a newer CUDA",
            cc.0, cc.1
        ))
    })
}

/// Folders that hold `cuda_fp16.h`, in search order (see the module docs).
pub fn include_dirs() -> Vec<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(list) = std::env::var_os("AMP_CUDA_INCLUDE") {
        candidates.extend(std::env::split_paths(&list));
    }
    for var in ["CUDA_PATH", "CUDA_HOME", "CUDA_ROOT"] {
        if let Some(root) = std::env::var_os(var) {
            candidates.push(PathBuf::from(root).join("include"));
        }
    }
    candidates.push(PathBuf::from("/usr/local/cuda/include"));
    if let Some(lib) = libs::loaded_library_dir("libnvrtc") {
        if let Some(root) = lib.parent() {
            candidates.push(root.join("include"));
            if let Some(nvidia) = root.parent() {
                candidates.push(nvidia.join("cuda_runtime").join("include"));
                candidates.push(nvidia.join("cu13").join("include"));
            }
        }
    }
    let mut found: Vec<PathBuf> = Vec::new();
    for c in candidates {
        if c.join("cuda_fp16.h").is_file() && !found.contains(&c) {
            found.push(c);
        }
    }
    found
}

/// Releases an NVRTC program on every path out of [`compile`].
struct Program(sys::nvrtcProgram);

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: the program was created by `create_program` and is destroyed once, here.
        let _ = unsafe { result::destroy_program(self.0) };
    }
}

fn c_log(raw: Vec<std::ffi::c_char>) -> String {
    let bytes: Vec<u8> = raw
        .into_iter()
        .map(|c| c as u8)
        .take_while(|&b| b != 0)
        .collect();
    String::from_utf8_lossy(&bytes).trim().to_string()
}

/// Compiles one kernel module to a CUBIN for `sm_{arch}`. Fails on any
/// compile error; warnings are returned in [`Compiled::log`].
pub fn compile(source: &KernelSource, arch: u32) -> CudaResult<Compiled> {
    require_nvrtc()?;
    let includes = include_dirs();
    let mut options = vec![
        format!("--gpu-architecture=sm_{arch}"),
        "--std=c++17".to_string(),
    ];
    options.extend(
        includes
            .iter()
            .map(|d| format!("--include-path={}", d.display())),
    );
    let src = CString::new(source.translation_unit())
        .map_err(|_| CudaError::Compile(format!("{}: source contains a NUL byte", source.file)))?;
    let name = CString::new(source.file).map_err(|_| CudaError::Compile("bad file name".into()))?;
    let program = Program(
        result::create_program(&src, Some(name.as_c_str())).map_err(|e| {
            CudaError::Compile(format!("{}: nvrtcCreateProgram failed: {e:?}", source.file))
        })?,
    );
    // SAFETY: `program.0` is a live program; the options are plain strings.
    let compiled = unsafe { result::compile_program(program.0, &options) };
    // SAFETY: as above.
    let log = unsafe { result::get_program_log(program.0) }
        .map(c_log)
        .unwrap_or_default();
    if let Err(e) = compiled {
        let hint = if includes.is_empty() && log.contains("cuda_fp16.h") {
            "\ncuda_fp16.h was not found: set AMP_CUDA_INCLUDE or CUDA_PATH, or install the \
             nvidia-cuda-runtime wheel (searched AMP_CUDA_INCLUDE, $CUDA_PATH/include, $CUDA_HOME/include, \
             /usr/local/cuda/include and the folder next to the loaded libnvrtc)"
        } else {
            ""
        };
        return Err(CudaError::Compile(format!(
            "{} for sm_{arch} failed ({e:?}) with options {options:?}:\n{log}{hint}",
            source.file
        )));
    }
    let mut size = 0usize;
    // SAFETY: the program compiled; `size` is valid for writes.
    unsafe { sys::nvrtcGetCUBINSize(program.0, &mut size) }
        .result()
        .map_err(|e| {
            CudaError::Compile(format!("{}: nvrtcGetCUBINSize failed: {e:?}", source.file))
        })?;
    let mut cubin = vec![0u8; size];
    if size > 0 {
        // SAFETY: `cubin` has the `size` bytes NVRTC reported.
        unsafe { sys::nvrtcGetCUBIN(program.0, cubin.as_mut_ptr().cast()) }
            .result()
            .map_err(|e| {
                CudaError::Compile(format!("{}: nvrtcGetCUBIN failed: {e:?}", source.file))
            })?;
    }
    if cubin.is_empty() {
        return Err(CudaError::Compile(format!(
            "{}: NVRTC produced an empty CUBIN for sm_{arch}",
            source.file
        )));
    }
    Ok(Compiled {
        module: source.name,
        arch,
        cubin,
        log,
    })
}
