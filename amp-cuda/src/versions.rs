//! The versions of the CUDA driver, NVRTC and cuBLAS that this process
//! loaded, read when a device is opened, and whether they work together.
//!
//! The rules ([`check`]) are NVIDIA's compatibility rules as they bite this
//! backend: a CUDA library of major version N needs a driver that supports
//! CUDA N (driver R525 or newer for CUDA 12, R580 or newer for CUDA 13);
//! within a major version, newer libraries run on older drivers (minor
//! version compatibility). So cuBLAS 13 on an R570 driver fails to create a
//! handle, and a CUBIN from NVRTC 13 is refused by that driver — both are
//! reported up front with every version and what to do, instead of as
//! "creating a cuBLAS handle" failing in every test.

use crate::libs;
use std::fmt;
use std::path::PathBuf;

/// A CUDA version, `major.minor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CudaVersion {
    /// Major version (12, 13, …).
    pub major: u32,
    /// Minor version.
    pub minor: u32,
}

impl CudaVersion {
    /// `major.minor`.
    pub const fn new(major: u32, minor: u32) -> Self {
        CudaVersion { major, minor }
    }

    /// From the driver's encoding, `1000 × major + 10 × minor` (13000 is 13.0, 12080 is 12.8).
    pub fn from_driver_code(code: i32) -> Option<Self> {
        (code > 0).then(|| CudaVersion::new(code as u32 / 1000, (code as u32 % 1000) / 10))
    }
}

impl fmt::Display for CudaVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The oldest Linux driver branch that supports CUDA `major` (for messages).
pub fn minimum_driver(major: u32) -> &'static str {
    match major {
        0..=11 => "R450",
        12 => "R525",
        13 => "R580",
        _ => "a driver newer than this build knows of",
    }
}

/// What this process loaded: each library's version and file, where known.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Versions {
    /// The CUDA version the driver supports (`cuDriverGetVersion`).
    pub driver: Option<CudaVersion>,
    /// The NVRTC that was loaded (`nvrtcVersion`).
    pub nvrtc: Option<CudaVersion>,
    /// The cuBLAS that was loaded (`cublasGetProperty`).
    pub cublas: Option<CudaVersion>,
    /// `libcuda` as mapped into this process.
    pub driver_path: Option<PathBuf>,
    /// `libnvrtc` as mapped into this process.
    pub nvrtc_path: Option<PathBuf>,
    /// `libcublas` as mapped into this process.
    pub cublas_path: Option<PathBuf>,
}

impl fmt::Display for Versions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let row = |f: &mut fmt::Formatter<'_>,
                   name: &str,
                   v: Option<CudaVersion>,
                   path: &Option<PathBuf>|
         -> fmt::Result {
            writeln!(
                f,
                "  {name:<7} {:<6} {}",
                v.map_or("-".to_string(), |v| v.to_string()),
                path.as_ref()
                    .map_or("(not loaded)".to_string(), |p| p.display().to_string())
            )
        };
        row(f, "driver", self.driver, &self.driver_path)?;
        row(f, "NVRTC", self.nvrtc, &self.nvrtc_path)?;
        row(f, "cuBLAS", self.cublas, &self.cublas_path)
    }
}

/// Reads the versions of whatever of the three libraries could be loaded
/// (never panics; a library that is absent reads as `None`).
pub fn read() -> Versions {
    let status = libs::library_status();
    let guarded = |f: &dyn Fn() -> Option<CudaVersion>| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(None)
    };
    let driver = if status.driver.is_ok() {
        guarded(&|| {
            let mut code = 0;
            // SAFETY: the driver library is loadable; `code` is valid for writes.
            // cuDriverGetVersion needs no cuInit.
            let rc = unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut code) };
            (rc == cudarc::driver::sys::CUresult::CUDA_SUCCESS)
                .then(|| CudaVersion::from_driver_code(code))
                .flatten()
        })
    } else {
        None
    };
    let nvrtc = if status.nvrtc.is_ok() {
        guarded(&|| {
            crate::compile::nvrtc_version()
                .ok()
                .map(|(a, b)| CudaVersion::new(a.max(0) as u32, b.max(0) as u32))
        })
    } else {
        None
    };
    let cublas = if status.cublas.is_ok() {
        guarded(&|| {
            use cudarc::cublas::sys::{cublasGetProperty, libraryPropertyType};
            let (mut major, mut minor) = (0, 0);
            // SAFETY: cuBLAS is loadable; both pointers are valid for writes. No handle is needed.
            let ok = unsafe {
                cublasGetProperty(libraryPropertyType::MAJOR_VERSION, &mut major)
                    .result()
                    .is_ok()
                    && cublasGetProperty(libraryPropertyType::MINOR_VERSION, &mut minor)
                        .result()
                        .is_ok()
            };
            ok.then(|| CudaVersion::new(major.max(0) as u32, minor.max(0) as u32))
        })
    } else {
        None
    };
    Versions {
        driver,
        nvrtc,
        cublas,
        driver_path: libs::loaded_library_path("libcuda"),
        nvrtc_path: libs::loaded_library_path("libnvrtc"),
        cublas_path: libs::loaded_library_path("libcublas"),
    }
}

/// Errors (with the whole story and what to do) unless the driver and cuBLAS
/// work together. NVRTC is checked by [`nvrtc_usable`]: without it the
/// precompiled kernels may still do.
pub fn check(v: &Versions) -> Result<(), String> {
    let Some(driver) = v.driver else {
        return Err(
            "the CUDA driver's version could not be read (is libcuda.so.1 the driver's?)".into(),
        );
    };
    let Some(cublas) = v.cublas else {
        return Err(
            "cuBLAS was not loaded (libcublas.so.* not found); install a CUDA toolkit or the \
                    nvidia-cublas wheel matching the driver"
                .into(),
        );
    };
    if cublas.major > driver.major {
        return Err(format!(
            "cuBLAS {cublas} needs a driver that supports CUDA {} ({} or newer), but this driver supports CUDA \
             {driver}. Update the driver, or load cuBLAS {}.x instead: e.g. `pip install nvidia-cublas-cu{}` and put \
             its nvidia/cublas/lib folder first in LD_LIBRARY_PATH (the GPU bundle's run.sh picks such a folder \
             when it finds one)",
            cublas.major,
            minimum_driver(cublas.major),
            driver.major,
            driver.major
        ));
    }
    Ok(())
}

/// Errors unless kernels compiled by the loaded NVRTC can run on this driver:
/// a CUBIN or PTX from NVRTC of a newer major version than the driver's is refused.
pub fn nvrtc_usable(v: &Versions) -> Result<CudaVersion, String> {
    let Some(nvrtc) = v.nvrtc else {
        return Err("NVRTC was not loaded".into());
    };
    match v.driver {
        Some(driver) if nvrtc.major > driver.major => Err(format!(
            "NVRTC {nvrtc} makes kernels that need a driver for CUDA {} ({} or newer); this driver supports \
             CUDA {driver}",
            nvrtc.major,
            minimum_driver(nvrtc.major)
        )),
        _ => Ok(nvrtc),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn versions(driver: i32, nvrtc: Option<(u32, u32)>, cublas: Option<(u32, u32)>) -> Versions {
        Versions {
            driver: CudaVersion::from_driver_code(driver),
            nvrtc: nvrtc.map(|(a, b)| CudaVersion::new(a, b)),
            cublas: cublas.map(|(a, b)| CudaVersion::new(a, b)),
            ..Versions::default()
        }
    }

    #[test]
    fn driver_codes_decode() {
        assert_eq!(
            CudaVersion::from_driver_code(13000),
            Some(CudaVersion::new(13, 0))
        );
        assert_eq!(
            CudaVersion::from_driver_code(12080),
            Some(CudaVersion::new(12, 8))
        );
        assert_eq!(CudaVersion::from_driver_code(0), None);
    }

    #[test]
    fn cublas_newer_than_the_driver_is_refused_with_every_version_and_a_remedy() {
        // An R570 driver (CUDA 12.8) with cuBLAS 13: handle creation would fail.
        let err = check(&versions(12080, Some((13, 0)), Some((13, 1)))).unwrap_err();
        assert!(
            err.contains("cuBLAS 13.1") && err.contains("CUDA 12.8"),
            "{err}"
        );
        assert!(
            err.contains("R580") && err.contains("nvidia-cublas-cu12"),
            "{err}"
        );
        // Same major, or an older library on a newer driver: fine.
        assert!(check(&versions(13000, Some((13, 0)), Some((13, 1)))).is_ok());
        assert!(check(&versions(13020, None, Some((12, 8)))).is_ok());
        assert!(
            check(&versions(12020, None, Some((12, 8)))).is_ok(),
            "minor compatibility"
        );
        assert!(check(&versions(13000, None, None))
            .unwrap_err()
            .contains("cuBLAS was not loaded"));
        assert!(check(&versions(0, None, Some((12, 0)))).is_err());
    }

    #[test]
    fn nvrtc_newer_than_the_driver_is_not_used() {
        let err = nvrtc_usable(&versions(12040, Some((13, 0)), Some((12, 4)))).unwrap_err();
        assert!(
            err.contains("NVRTC 13.0") && err.contains("CUDA 12.4"),
            "{err}"
        );
        assert_eq!(
            nvrtc_usable(&versions(13000, Some((12, 9)), None)),
            Ok(CudaVersion::new(12, 9))
        );
        assert!(nvrtc_usable(&versions(13000, None, None)).is_err());
    }

    #[test]
    fn the_table_names_what_is_missing() {
        let text = versions(13000, None, Some((13, 0))).to_string();
        assert!(
            text.contains("driver  13.0")
                && text.contains("NVRTC   -")
                && text.contains("(not loaded)"),
            "{text}"
        );
    }
}
