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
use crate::versions::CudaVersion;
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
    /// The image: a CUBIN, or PTX text for [`Target::Ptx`].
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
        .map_err(|e| CudaError::Nvrtc {
            what: "nvrtcVersion".into(),
            source: e,
        })?;
    Ok((major, minor))
}

/// The architectures this NVRTC can compile for (`major * 10 + minor`).
pub fn supported_archs() -> CudaResult<Vec<u32>> {
    require_nvrtc()?;
    let mut n = 0;
    // SAFETY: NVRTC is loadable; `n` is valid for writes.
    unsafe { sys::nvrtcGetNumSupportedArchs(&mut n) }
        .result()
        .map_err(|e| CudaError::Nvrtc {
            what: "nvrtcGetNumSupportedArchs".into(),
            source: e,
        })?;
    let mut archs = vec![0i32; n.max(0) as usize];
    if !archs.is_empty() {
        // SAFETY: `archs` has room for the `n` entries NVRTC writes.
        unsafe { sys::nvrtcGetSupportedArchs(archs.as_mut_ptr()) }
            .result()
            .map_err(|e| CudaError::Nvrtc {
                what: "nvrtcGetSupportedArchs".into(),
                source: e,
            })?;
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
    let archs = supported_archs()?;
    crate::images::nvrtc_arch(cc, &archs).ok_or_else(|| {
        CudaError::Compile(format!(
            "this NVRTC cannot compile for compute capability {}.{} (supported: {archs:?}); use a newer CUDA",
            cc.0, cc.1
        ))
    })
}

/// The CUDA version of the headers in `dir`, from `cuda.h`'s `CUDA_VERSION`
/// or `cuda_runtime_api.h`'s `CUDART_VERSION` (`None` if neither says).
pub fn header_version(dir: &std::path::Path) -> Option<CudaVersion> {
    for (file, name) in [
        ("cuda.h", "CUDA_VERSION"),
        ("cuda_runtime_api.h", "CUDART_VERSION"),
    ] {
        let Ok(text) = std::fs::read_to_string(dir.join(file)) else {
            continue;
        };
        let code = text.lines().find_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("#define") && words.next() == Some(name))
                .then(|| words.next()?.parse::<i32>().ok())
                .flatten()
        });
        if let Some(v) = code.and_then(CudaVersion::from_driver_code) {
            return Some(v);
        }
    }
    None
}

/// The header folders to compile with under NVRTC `nvrtc`: those of NVRTC's
/// own major version (headers of another CUDA fail to compile or miscompile),
/// then folders whose version cannot be read. An `Err` names what was found
/// when nothing fits: NVRTC has no built-in `cuda_fp16.h`.
pub fn matching_include_dirs(nvrtc: CudaVersion) -> CudaResult<Vec<PathBuf>> {
    choose_include_dirs(nvrtc, include_dirs())
}

/// [`matching_include_dirs`] among the folders `all`, in their order.
fn choose_include_dirs(nvrtc: CudaVersion, all: Vec<PathBuf>) -> CudaResult<Vec<PathBuf>> {
    let versions: Vec<(PathBuf, Option<CudaVersion>)> = all
        .into_iter()
        .map(|d| {
            let v = header_version(&d);
            (d, v)
        })
        .collect();
    let mut chosen: Vec<PathBuf> = versions
        .iter()
        .filter(|(_, v)| v.is_some_and(|v| v.major == nvrtc.major))
        .map(|(d, _)| d.clone())
        .collect();
    chosen.extend(
        versions
            .iter()
            .filter(|(_, v)| v.is_none())
            .map(|(d, _)| d.clone()),
    );
    if chosen.is_empty() {
        let found: Vec<String> = versions
            .iter()
            .map(|(d, v)| {
                format!(
                    "{} (CUDA {})",
                    d.display(),
                    v.map_or("?".into(), |v| v.to_string())
                )
            })
            .collect();
        return Err(CudaError::Compile(format!(
            "no CUDA headers for NVRTC {nvrtc} (cuda_fp16.h, cuda_bf16.h; NVRTC has no built-in copy): {}. Set \
             AMP_CUDA_INCLUDE to the include folder of CUDA {}.x (the toolkit's, or the nvidia-cuda-runtime wheel's)",
            if found.is_empty() { "none found".to_string() } else { format!("found only {}", found.join(", ")) },
            nvrtc.major
        )));
    }
    Ok(chosen)
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

/// What NVRTC produces: a CUBIN for one GPU architecture (`sm_XY`), or PTX
/// for a virtual one (`compute_XY`), which the driver compiles for any newer GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Machine code for `sm_{arch}`.
    Cubin(u32),
    /// PTX for `compute_{arch}`.
    Ptx(u32),
}

/// Compiles one kernel module to a CUBIN for `sm_{arch}`. Fails on any
/// compile error; warnings are returned in [`Compiled::log`].
pub fn compile(source: &KernelSource, arch: u32) -> CudaResult<Compiled> {
    compile_to(source, Target::Cubin(arch))
}

/// Compiles one kernel module for `target`, with the CUDA headers of NVRTC's
/// own version ([`matching_include_dirs`]).
pub fn compile_to(source: &KernelSource, target: Target) -> CudaResult<Compiled> {
    require_nvrtc()?;
    let (major, minor) = nvrtc_version()?;
    let nvrtc = CudaVersion::new(major.max(0) as u32, minor.max(0) as u32);
    let includes = matching_include_dirs(nvrtc)?;
    let (arch, flag) = match target {
        Target::Cubin(a) => (a, format!("--gpu-architecture=sm_{a}")),
        Target::Ptx(a) => (a, format!("--gpu-architecture=compute_{a}")),
    };
    let mut options = vec![flag, "--std=c++17".to_string()];
    options.extend(
        includes
            .iter()
            .map(|d| format!("--include-path={}", d.display())),
    );
    let src = CString::new(source.translation_unit())
        .map_err(|_| CudaError::Compile(format!("{}: source contains a NUL byte", source.file)))?;
    let name = CString::new(source.file).map_err(|_| CudaError::Compile("bad file name".into()))?;
    let program = Program(
        result::create_program(&src, Some(name.as_c_str())).map_err(|e| CudaError::Nvrtc {
            what: format!("{}: nvrtcCreateProgram", source.file),
            source: e,
        })?,
    );
    // SAFETY: `program.0` is a live program; the options are plain strings.
    let compiled = unsafe { result::compile_program(program.0, &options) };
    // SAFETY: as above.
    let log = unsafe { result::get_program_log(program.0) }
        .map(c_log)
        .unwrap_or_default();
    if let Err(e) = compiled {
        return Err(CudaError::Compile(format!(
            "{} for {target:?} with NVRTC {nvrtc} failed ({e:?}) with options {options:?}:\n{log}",
            source.file
        )));
    }
    let image = match target {
        Target::Cubin(_) => {
            let mut size = 0usize;
            // SAFETY: the program compiled; `size` is valid for writes.
            unsafe { sys::nvrtcGetCUBINSize(program.0, &mut size) }
                .result()
                .map_err(|e| CudaError::Nvrtc {
                    what: format!("{}: nvrtcGetCUBINSize", source.file),
                    source: e,
                })?;
            let mut cubin = vec![0u8; size];
            if size > 0 {
                // SAFETY: `cubin` has the `size` bytes NVRTC reported.
                unsafe { sys::nvrtcGetCUBIN(program.0, cubin.as_mut_ptr().cast()) }
                    .result()
                    .map_err(|e| CudaError::Nvrtc {
                        what: format!("{}: nvrtcGetCUBIN", source.file),
                        source: e,
                    })?;
            }
            cubin
        }
        Target::Ptx(_) => {
            let mut size = 0usize;
            // SAFETY: the program compiled; `size` is valid for writes.
            unsafe { sys::nvrtcGetPTXSize(program.0, &mut size) }
                .result()
                .map_err(|e| CudaError::Nvrtc {
                    what: format!("{}: nvrtcGetPTXSize", source.file),
                    source: e,
                })?;
            let mut ptx = vec![0u8; size];
            if size > 0 {
                // SAFETY: `ptx` has the `size` bytes NVRTC reported (NUL included).
                unsafe { sys::nvrtcGetPTX(program.0, ptx.as_mut_ptr().cast()) }
                    .result()
                    .map_err(|e| CudaError::Nvrtc {
                        what: format!("{}: nvrtcGetPTX", source.file),
                        source: e,
                    })?;
            }
            while ptx.last() == Some(&0) {
                ptx.pop();
            }
            ptx
        }
    };
    if image.is_empty() {
        return Err(CudaError::Compile(format!(
            "{}: NVRTC produced an empty image for {target:?}",
            source.file
        )));
    }
    Ok(Compiled {
        module: source.name,
        arch,
        cubin: image,
        log,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// A folder with `cuda_fp16.h` and, when given, `file` saying `#define NAME code`.
    fn headers(name: &str, file: Option<(&str, &str, i32)>) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("amp-cuda-headers-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("cuda_fp16.h"), "").unwrap();
        if let Some((file, define, code)) = file {
            let text = format!("/* header */\n#define {define}_EXTRA 1\n#define {define} {code}\n");
            fs::write(dir.join(file), text).unwrap();
        }
        dir
    }

    #[test]
    fn the_header_version_is_read_from_cuda_h_or_the_runtime_header() {
        let a = headers("cuda-h", Some(("cuda.h", "CUDA_VERSION", 13000)));
        let b = headers(
            "runtime",
            Some(("cuda_runtime_api.h", "CUDART_VERSION", 12080)),
        );
        let c = headers("unknown", None);
        assert_eq!(header_version(&a), Some(CudaVersion::new(13, 0)));
        assert_eq!(header_version(&b), Some(CudaVersion::new(12, 8)));
        assert_eq!(header_version(&c), None);
        for d in [a, b, c] {
            fs::remove_dir_all(d).unwrap();
        }
    }

    #[test]
    fn headers_of_nvrtcs_major_version_come_first_and_others_are_refused() {
        let h13 = headers("pick13", Some(("cuda.h", "CUDA_VERSION", 13020)));
        let h12 = headers("pick12", Some(("cuda.h", "CUDA_VERSION", 12080)));
        let unknown = headers("pick-unknown", None);
        let all = vec![h13.clone(), unknown.clone(), h12.clone()];
        assert_eq!(
            choose_include_dirs(CudaVersion::new(12, 4), all.clone()).unwrap(),
            vec![h12.clone(), unknown.clone()]
        );
        assert_eq!(
            choose_include_dirs(CudaVersion::new(13, 0), all).unwrap(),
            vec![h13.clone(), unknown.clone()]
        );
        // Only CUDA 13 headers under NVRTC 12: an error naming what was found.
        let err = choose_include_dirs(CudaVersion::new(12, 4), vec![h13.clone()])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no CUDA headers for NVRTC 12.4")
                && err.contains("(CUDA 13.2)")
                && err.contains("AMP_CUDA_INCLUDE"),
            "{err}"
        );
        let none = choose_include_dirs(CudaVersion::new(13, 0), Vec::new())
            .unwrap_err()
            .to_string();
        assert!(none.contains("none found"), "{none}");
        for d in [h13, h12, unknown] {
            fs::remove_dir_all(d).unwrap();
        }
    }
}
