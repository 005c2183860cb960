//! Where a kernel module's machine code comes from, in order of preference:
//!
//! 1. **NVRTC** on this machine, for the GPU's exact architecture (or the
//!    newest one of the same major version that NVRTC knows) — when NVRTC is
//!    loadable, its major version is not newer than the driver's, and CUDA
//!    headers of NVRTC's own version are found;
//! 2. a **precompiled CUBIN** of the GPU bundle for that architecture (a
//!    CUBIN runs on the same major architecture, same or later minor), built
//!    by a CUDA no newer than the driver;
//! 3. precompiled **PTX**, which the driver compiles for any newer GPU — the
//!    path for architectures that neither NVRTC nor the CUBINs know.
//!
//! Every candidate is tried in turn until one loads: a failed compile or a
//! refused image moves on to the next, and only when all fail is it an error,
//! listing each attempt. Which one ran is recorded per module
//! (`CudaBackend::kernel_images`), and the bundle's preflight prints it.
//!
//! The precompiled images live in the folder named by `AMP_CUDA_KERNEL_DIR`
//! (or the older `AMP_CUDA_CUBIN_DIR`), one subfolder per CUDA major version
//! that built them: `cuda13/reduce.sm_90.cubin`, `cuda12/reduce.compute_80.ptx`.

use crate::versions::CudaVersion;
use std::fmt;
use std::path::{Path, PathBuf};

/// The folder of precompiled kernel images, if the environment names one.
pub fn kernel_dir() -> Option<PathBuf> {
    ["AMP_CUDA_KERNEL_DIR", "AMP_CUDA_CUBIN_DIR"]
        .iter()
        .find_map(std::env::var_os)
        .map(PathBuf::from)
}

/// One way to obtain a module's image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// Compiled by the loaded NVRTC for `sm_{arch}`.
    Nvrtc {
        /// NVRTC's version.
        version: CudaVersion,
        /// The architecture, `major * 10 + minor`.
        arch: u32,
    },
    /// A precompiled CUBIN.
    Cubin(Precompiled),
    /// Precompiled PTX, compiled by the driver when loaded.
    Ptx(Precompiled),
}

impl fmt::Display for ImageSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageSource::Nvrtc { version, arch } => write!(f, "NVRTC {version} for sm_{arch}"),
            ImageSource::Cubin(p) => write!(
                f,
                "precompiled CUBIN sm_{} (CUDA {}) {}",
                p.arch,
                p.toolkit,
                p.path.display()
            ),
            ImageSource::Ptx(p) => write!(
                f,
                "precompiled PTX compute_{} (CUDA {}), compiled by the driver, {}",
                p.arch,
                p.toolkit,
                p.path.display()
            ),
        }
    }
}

/// A precompiled image file: `cuda<toolkit>/<module>.sm_<arch>.cubin` or
/// `cuda<toolkit>/<module>.compute_<arch>.ptx`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Precompiled {
    /// The CUDA major version that built it.
    pub toolkit: u32,
    /// The module (file stem of the `.cu` source).
    pub module: String,
    /// The architecture, `major * 10 + minor`.
    pub arch: u32,
    /// PTX (true) or CUBIN.
    pub ptx: bool,
    /// The file.
    pub path: PathBuf,
}

impl Precompiled {
    /// Parses `<module>.sm_<arch>.cubin` / `<module>.compute_<arch>.ptx` in a `cuda<toolkit>` folder.
    pub fn parse(toolkit: u32, path: &Path) -> Option<Precompiled> {
        let name = path.file_name()?.to_str()?;
        let (stem, ptx) = if let Some(s) = name.strip_suffix(".cubin") {
            (s, false)
        } else {
            (name.strip_suffix(".ptx")?, true)
        };
        let (module, target) = stem.rsplit_once('.')?;
        let arch = if ptx {
            target.strip_prefix("compute_")?
        } else {
            target.strip_prefix("sm_")?
        };
        Some(Precompiled {
            toolkit,
            module: module.to_string(),
            arch: arch.parse().ok()?,
            ptx,
            path: path.to_path_buf(),
        })
    }
}

/// Every precompiled image under `dir` (`dir/cuda<N>/*`).
pub fn list(dir: &Path) -> Vec<Precompiled> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(toolkit) = name
            .strip_prefix("cuda")
            .and_then(|v| v.parse::<u32>().ok())
        else {
            continue;
        };
        if let Ok(files) = std::fs::read_dir(entry.path()) {
            found.extend(
                files
                    .flatten()
                    .filter_map(|f| Precompiled::parse(toolkit, &f.path())),
            );
        }
    }
    found
}

/// What NVRTC can offer on this machine: its version and architectures, or why not.
pub type NvrtcOffer = Result<(CudaVersion, Vec<u32>), String>;

/// The architecture NVRTC compiles for on a GPU of compute capability `cc`:
/// the exact one, else the newest of the same major version and no newer minor.
pub fn nvrtc_arch(cc: (i32, i32), archs: &[u32]) -> Option<u32> {
    let want = (cc.0.max(0) * 10 + cc.1.max(0)) as u32;
    if archs.contains(&want) {
        return Some(want);
    }
    archs
        .iter()
        .copied()
        .filter(|&a| a / 10 == want / 10 && a <= want)
        .max()
}

/// The candidates for `module` on a GPU of compute capability `cc` under a
/// driver supporting CUDA `driver`, best first (see the module docs), and a
/// note for each route that was ruled out.
pub fn plan(
    module: &str,
    cc: (i32, i32),
    driver: Option<CudaVersion>,
    nvrtc: &NvrtcOffer,
    files: &[Precompiled],
) -> (Vec<ImageSource>, Vec<String>) {
    let want = (cc.0.max(0) * 10 + cc.1.max(0)) as u32;
    let mut out = Vec::new();
    let mut notes = Vec::new();
    match nvrtc {
        Ok((version, archs)) => match nvrtc_arch(cc, archs) {
            Some(arch) => out.push(ImageSource::Nvrtc {
                version: *version,
                arch,
            }),
            None => notes.push(format!(
                "NVRTC {version} cannot compile for sm_{want} (it knows {archs:?})"
            )),
        },
        Err(why) => notes.push(format!("NVRTC not used: {why}")),
    }
    let runs_here =
        |p: &&Precompiled| p.module == module && driver.is_none_or(|d| p.toolkit <= d.major);
    let mut cubins: Vec<&Precompiled> = files
        .iter()
        .filter(runs_here)
        .filter(|p| !p.ptx && p.arch / 10 == want / 10 && p.arch <= want)
        .collect();
    cubins.sort_by_key(|p| std::cmp::Reverse((p.toolkit, p.arch)));
    out.extend(cubins.into_iter().cloned().map(ImageSource::Cubin));
    let mut ptx: Vec<&Precompiled> = files
        .iter()
        .filter(runs_here)
        .filter(|p| p.ptx && p.arch <= want)
        .collect();
    ptx.sort_by_key(|p| std::cmp::Reverse((p.toolkit, p.arch)));
    out.extend(ptx.into_iter().cloned().map(ImageSource::Ptx));
    let newer: Vec<String> = files
        .iter()
        .filter(|p| p.module == module && driver.is_some_and(|d| p.toolkit > d.major))
        .map(|p| p.path.display().to_string())
        .collect();
    if !newer.is_empty() {
        notes.push(format!(
            "{} precompiled image(s) of a CUDA newer than the driver's skipped",
            newer.len()
        ));
    }
    (out, notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> Vec<Precompiled> {
        [
            (13, "reduce.sm_90.cubin"),
            (13, "reduce.sm_80.cubin"),
            (13, "reduce.sm_100.cubin"),
            (13, "reduce.compute_80.ptx"),
            (12, "reduce.sm_90.cubin"),
            (12, "reduce.sm_86.cubin"),
            (12, "reduce.compute_80.ptx"),
            (12, "copy.sm_90.cubin"),
        ]
        .iter()
        .map(|(t, n)| Precompiled::parse(*t, &Path::new(&format!("k/cuda{t}")).join(n)).unwrap())
        .collect()
    }

    fn kinds(plan: &[ImageSource]) -> Vec<String> {
        plan.iter()
            .map(|s| match s {
                ImageSource::Nvrtc { version, arch } => format!("nvrtc{version}/{arch}"),
                ImageSource::Cubin(p) => format!("cubin{}/{}", p.toolkit, p.arch),
                ImageSource::Ptx(p) => format!("ptx{}/{}", p.toolkit, p.arch),
            })
            .collect()
    }

    #[test]
    fn names_parse() {
        let p = Precompiled::parse(12, Path::new("cuda12/elementwise.compute_80.ptx")).unwrap();
        assert_eq!(
            (p.module.as_str(), p.arch, p.ptx, p.toolkit),
            ("elementwise", 80, true, 12)
        );
        assert!(Precompiled::parse(12, Path::new("cuda12/readme.txt")).is_none());
        assert!(Precompiled::parse(12, Path::new("cuda12/x.sm_ab.cubin")).is_none());
    }

    #[test]
    fn nvrtc_first_then_cubins_of_the_same_major_then_ptx() {
        let nvrtc: NvrtcOffer = Ok((CudaVersion::new(13, 0), vec![75, 80, 86, 89, 90, 100]));
        let (p, notes) = plan(
            "reduce",
            (9, 0),
            Some(CudaVersion::new(13, 0)),
            &nvrtc,
            &files(),
        );
        assert_eq!(
            kinds(&p),
            [
                "nvrtc13.0/90",
                "cubin13/90",
                "cubin12/90",
                "ptx13/80",
                "ptx12/80"
            ]
        );
        assert!(notes.is_empty(), "{notes:?}");
    }

    #[test]
    fn an_older_driver_skips_newer_images_and_nvrtc() {
        // Driver for CUDA 12.4 (R550): NVRTC 13 and every CUDA 13 image are ruled out.
        let nvrtc: NvrtcOffer =
            Err("NVRTC 13.0 makes kernels that need a driver for CUDA 13".into());
        let (p, notes) = plan(
            "reduce",
            (9, 0),
            Some(CudaVersion::new(12, 4)),
            &nvrtc,
            &files(),
        );
        assert_eq!(kinds(&p), ["cubin12/90", "ptx12/80"]);
        assert!(
            notes.iter().any(|n| n.contains("NVRTC not used")),
            "{notes:?}"
        );
        assert!(
            notes.iter().any(|n| n.contains("newer than the driver")),
            "{notes:?}"
        );
    }

    #[test]
    fn an_architecture_nobody_knows_runs_on_ptx() {
        // A future sm_130 part: no NVRTC arch, no CUBIN of its major; PTX is JIT-compiled.
        let nvrtc: NvrtcOffer = Ok((CudaVersion::new(13, 0), vec![80, 90, 100, 120]));
        let (p, notes) = plan(
            "reduce",
            (13, 0),
            Some(CudaVersion::new(14, 0)),
            &nvrtc,
            &files(),
        );
        assert_eq!(kinds(&p), ["ptx13/80", "ptx12/80"]);
        assert!(
            notes
                .iter()
                .any(|n| n.contains("cannot compile for sm_130")),
            "{notes:?}"
        );
        // A same-major newer minor (sm_86 GPU, sm_80 CUBIN) uses the CUBIN.
        let (p, _) = plan(
            "reduce",
            (8, 9),
            Some(CudaVersion::new(13, 0)),
            &Err("absent".into()),
            &files(),
        );
        assert_eq!(
            kinds(&p),
            ["cubin13/80", "cubin12/86", "ptx13/80", "ptx12/80"]
        );
        // NVRTC picks the newest arch of the same major it knows.
        assert_eq!(nvrtc_arch((8, 9), &[80, 86]), Some(86));
        assert_eq!(nvrtc_arch((9, 0), &[80, 86]), None);
    }
}
