//! `cargo xtask gpu [--out DIR]`: builds, on a machine without a GPU, a
//! folder (default `gpu-bundle/`, git-ignored) that runs amp's CUDA tests, the
//! accuracy rows on CUDA and the CUDA bench on a machine with an NVIDIA GPU,
//! CUDA and no Rust toolchain, with one `run.sh` whose preflight says what
//! that machine has and lacks before anything else runs.
//!
//! What goes in, and why:
//! - **Binaries for an old C library.** They are built with `cargo zigbuild`
//!   for glibc [`GLIBC`] (dynamically linked, so that libcuda can be
//!   loaded), and every binary's needed glibc symbol versions are checked with
//!   `objdump`: a bundle that would not start on an Ubuntu 20.04 or
//!   RHEL 8-class system is refused.
//! - **Kernels for every driver.** NVRTC 12.8 (a pip wheel) compiles every
//!   module to CUBINs for sm_75/80/90/100/120 and to PTX for `compute_80`,
//!   into `kernels/cuda12/`: they load on every driver from R525 on, so a
//!   machine whose NVRTC is missing, fails, or is newer than its driver still
//!   runs, and a GPU newer than all of them JIT-compiles the PTX (see
//!   `amp_cuda::images`).
//! - **Headers of CUDA 12 and 13** (`include/cuda12/`, `include/cuda13/`,
//!   only the files `cuda_fp16.h`, `cuda_bf16.h` and `cuda.h` pull in):
//!   NVRTC has no built-in `cuda_fp16.h`, and headers of another CUDA version
//!   than the NVRTC that loads fail; `run.sh` picks the matching folder. Each
//!   set is proven by compiling every module with its own NVRTC against it.
//!
//! A bundle without headers or without precompiled kernels is an error, as is
//! one over the size budget. The tools (zig, cargo-zigbuild, the NVRTC and
//! header wheels) are installed under `target/gpu-tools/` on first use.

mod binaries;
mod kernels;
mod tools;

use binaries::{copy_exe, zigbuild};
use kernels::{copy_headers, precompile};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use tools::{site_packages, toolkit_dirs, tools};

pub use kernels::precompile_here;

/// The script the bundle runs on the GPU machine (`@GLIBC@` is filled in).
const RUN_SH: &str = include_str!("run.sh");
/// The oldest glibc the bundle's binaries need.
pub const GLIBC: &str = "2.17";
/// The target triple cargo-zigbuild builds for.
const TARGET: &str = "x86_64-unknown-linux-gnu";
/// The size budget of the bundle: what travels to a lent GPU machine (the
/// repository's working tree plus carried paths) is limited to 64 MiB.
const BUDGET_MB: f64 = 48.0;
/// The archive the bundle's files travel in (run.sh unpacks it): the test
/// executables compress about 5×, and uncompressed they are over the budget.
pub const PAYLOAD: &str = "payload.tar.gz";
/// The CUDA versions the bundle carries headers for, with the wheels that
/// bring their NVRTC and headers.
const TOOLKITS: [(u32, &str, &str); 2] = [
    (
        12,
        "nvidia-cuda-nvrtc-cu12==12.8.*",
        "nvidia-cuda-runtime-cu12==12.8.*",
    ),
    (
        13,
        "nvidia-cuda-nvrtc==13.0.*",
        "nvidia-cuda-runtime==13.0.*",
    ),
];
/// The CUDA version whose NVRTC precompiles the kernels: images of CUDA 12
/// load on every driver from R525 on, CUDA 13's included (an older toolkit's
/// CUBINs and PTX run on newer drivers), and 12.8 knows every architecture
/// below. Every toolkit in [`TOOLKITS`] still compiles every module here, as
/// a check of the headers shipped for it.
const PRECOMPILE_WITH: u32 = 12;
/// The architectures precompiled as CUBINs: a CUBIN runs on its major
/// architecture at the same or a later minor (sm_80 covers 8.6 and 8.9).
const CUBIN_ARCHS: [u32; 5] = [75, 80, 90, 100, 120];
/// The headers NVRTC needs, with what they include (collected by [`kernels::header_closure`]).
const HEADER_ROOTS: [&str; 3] = ["cuda_fp16.h", "cuda_bf16.h", "cuda.h"];
/// The virtual architecture of the PTX fallback (the driver compiles it for any newer GPU).
const PTX_ARCH: u32 = 80;

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string()))
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                dir_size(&p)
            } else {
                e.metadata().map(|m| m.len()).unwrap_or(0)
            }
        })
        .sum()
}

/// Errors unless `out` holds what the GPU machine needs: headers and kernels
/// of every toolkit for every module, the doctor, the tests and `run.sh`.
fn verify(out: &Path) -> Result<(), String> {
    let mut missing = Vec::new();
    for (major, _, _) in TOOLKITS {
        if !out
            .join("include")
            .join(format!("cuda{major}"))
            .join("cuda_fp16.h")
            .is_file()
        {
            missing.push(format!("include/cuda{major}/cuda_fp16.h"));
        }
    }
    let images = amp_cuda::images::list(&out.join("kernels"));
    let major = PRECOMPILE_WITH;
    for source in amp_cuda::kernels::ALL.iter() {
        let of = |ptx: bool| {
            images
                .iter()
                .any(|p| p.toolkit == major && p.module == source.name && p.ptx == ptx)
        };
        if !of(false) {
            missing.push(format!("kernels/cuda{major}/{}.sm_*.cubin", source.name));
        }
        if !of(true) {
            missing.push(format!("kernels/cuda{major}/{}.compute_*.ptx", source.name));
        }
    }
    for exe in ["cuda_doctor", "cuda_bench", "xtask", "run.sh"] {
        if !out.join(exe).is_file() {
            missing.push(exe.to_string());
        }
    }
    let tests: Vec<String> = std::fs::read_dir(out.join("tests"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    for krate in SUITES {
        if !tests.iter().any(|t| t.starts_with(&format!("{krate}-"))) {
            missing.push(format!("tests/{krate}-*"));
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the bundle is incomplete; missing: {}",
            missing.join(", ")
        ))
    }
}

/// The crates whose test executables the bundle carries.
/// amp-dist's `single` test runs data-parallel gradients on each device
/// (its MPI tests need `mpirun`, which the GPU machine may lack).
const SUITES: [&str; 3] = ["amp-cuda", "amp-testkit", "amp-dist"];

/// The bundle's name of a test executable cargo named `stem`:
/// `cuda-0123abcd` of amp-cuda -> `amp-cuda-cuda`; a library's unit tests
/// (`amp_cuda-…`) -> `amp-cuda-unit`.
fn test_name(krate: &str, stem: &str) -> String {
    let base = stem.rsplit_once('-').map_or(stem, |(b, _)| b);
    if base == krate.replace('-', "_") {
        format!("{krate}-unit")
    } else {
        format!("{krate}-{base}")
    }
}

/// What a bundle folder holds: what `build` writes and what `run.sh` adds.
const BUNDLE_ENTRIES: [&str; 10] = [
    "run.sh",
    PAYLOAD,
    ".unpacked",
    "results",
    "cuda_bench",
    "cuda_doctor",
    "xtask",
    "include",
    "kernels",
    "tests",
];

/// `Ok` when `out` may be replaced: an empty folder, or a bundle (our
/// `run.sh` and nothing but a bundle's entries). Anything else — a `--out`
/// pointing at a folder of the user's — is refused, never deleted.
fn replaceable(out: &Path) -> Result<(), String> {
    let refuse = |why: String| {
        Err(format!(
            "{} is not a GPU bundle ({why}); refusing to replace it: pass an empty or new folder to --out",
            out.display()
        ))
    };
    let entries: Vec<String> = std::fs::read_dir(out)
        .map_err(|e| format!("{}: {e}", out.display()))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", out.display()))?;
    if entries.is_empty() {
        return Ok(());
    }
    let ours = std::fs::read_to_string(out.join("run.sh"))
        .is_ok_and(|t| t.starts_with("#!/usr/bin/env bash\n# amp's GPU bundle"));
    if !ours {
        return refuse("no run.sh of amp's".into());
    }
    match entries
        .iter()
        .find(|e| !BUNDLE_ENTRIES.contains(&e.as_str()))
    {
        Some(other) => refuse(format!("it also holds {other:?}")),
        None => Ok(()),
    }
}

/// Moves everything in `out` but `run.sh` into [`PAYLOAD`] (run.sh unpacks it).
fn pack(out: &Path) -> Result<(), String> {
    let mut entries: Vec<String> = std::fs::read_dir(out)
        .map_err(|e| format!("{}: {e}", out.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n != "run.sh")
        .collect();
    entries.sort();
    let status = Command::new("tar")
        .arg("czf")
        .arg(out.join(PAYLOAD))
        .arg("-C")
        .arg(out)
        .args(&entries)
        .status()
        .map_err(|e| format!("cannot run tar: {e}"))?;
    if !status.success() {
        return Err(format!("tar czf {PAYLOAD} failed"));
    }
    for name in entries {
        let p = out.join(name);
        let removed = if p.is_dir() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        removed.map_err(|e| format!("{}: {e}", p.display()))?;
    }
    Ok(())
}

fn build(out: &Path) -> Result<(), String> {
    let tools = tools()?;
    if out.exists() {
        replaceable(out)?;
        std::fs::remove_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    }
    let tests = out.join("tests");
    std::fs::create_dir_all(&tests).map_err(|e| format!("{}: {e}", tests.display()))?;

    // The CUDA tests: amp-cuda's own (unit tests and tests/*.rs) and the
    // conformance suite in amp-testkit, whose `on_every_device!` cases have
    // a `cuda` slot (run.sh runs only those: the CPU rows are CI's job).
    for krate in SUITES {
        let exes = zigbuild(&tools, &["--release", "--tests", "-p", krate], true)?;
        if exes.is_empty() {
            return Err(format!("cargo built no {krate} test executables"));
        }
        for exe in &exes {
            let stem = exe.file_name().and_then(|n| n.to_str()).unwrap_or("test");
            let name = test_name(krate, stem);
            // amp-testkit's and amp-dist's unit tests have no CUDA case.
            if name != "amp-testkit-unit" && name != "amp-dist-unit" {
                copy_exe(exe, &tests.join(name))?;
            }
        }
    }
    for example in ["cuda_bench", "cuda_doctor"] {
        let built = zigbuild(
            &tools,
            &["--release", "-p", "amp-cuda", "--example", example],
            false,
        )?;
        let exe = built
            .iter()
            .find(|p| p.file_name().is_some_and(|n| n == example))
            .ok_or(format!("the {example} example built no executable"))?;
        copy_exe(exe, &out.join(example))?;
    }
    let built = zigbuild(
        &tools,
        &["--release", "-p", "xtask", "--bin", "xtask"],
        false,
    )?;
    let exe = built
        .iter()
        .find(|p| p.file_name().is_some_and(|n| n == "xtask"))
        .ok_or("xtask built no executable")?;
    copy_exe(exe, &out.join("xtask"))?;

    // Kernels and headers of every toolkit.
    let site = site_packages(&tools.python)?;
    for (major, _, _) in TOOLKITS {
        let (nvrtc, include) = toolkit_dirs(&site, major).ok_or(format!(
            "the CUDA {major} NVRTC or header wheel is not installed"
        ))?;
        let shipped = out.join("include").join(format!("cuda{major}"));
        let n = copy_headers(&include, &shipped)?;
        eprintln!("{n} headers of CUDA {major} -> {}", shipped.display());
        // Compiled against the shipped headers: proof that they are enough.
        let images =
            (major == PRECOMPILE_WITH).then(|| out.join("kernels").join(format!("cuda{major}")));
        precompile(major, &nvrtc, &shipped, images.as_deref())?;
    }
    let run = out.join("run.sh");
    std::fs::write(&run, run_sh()).map_err(|e| format!("{}: {e}", run.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
    }
    verify(out)?;
    pack(out)?;
    let mb = dir_size(out) as f64 / 1e6;
    eprintln!("bundle: {} ({mb:.1} MB)", out.display());
    if mb > BUDGET_MB {
        return Err(format!(
            "the bundle is {mb:.1} MB, over the {BUDGET_MB} MB budget"
        ));
    }
    Ok(())
}

/// Builds the bundle; `--out DIR` picks the folder.
pub fn run(args: &[String]) -> ExitCode {
    let mut out = PathBuf::from("gpu-bundle");
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--out" => match it.next() {
                Some(p) => out = PathBuf::from(p),
                None => {
                    eprintln!("error: --out needs a folder");
                    return ExitCode::from(2);
                }
            },
            other => {
                eprintln!("error: unknown argument to gpu: {other:?} (usage: cargo xtask gpu [--out DIR])");
                return ExitCode::from(2);
            }
        }
    }
    match build(&out) {
        Ok(()) => {
            println!(
                "built {}: copy it to a machine with an NVIDIA GPU and run {}/run.sh (--preflight first, if in doubt)",
                out.display(),
                out.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The bundle's `run.sh` with its placeholders filled.
fn run_sh() -> String {
    RUN_SH.replace("@GLIBC@", GLIBC)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// A bundle folder with `run.sh` and the given extra files (`path`, contents, executable).
    fn bundle(name: &str, files: &[(&str, &str, bool)]) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("amp-gpu-bundle-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let mut all = vec![("run.sh", run_sh(), true)];
        all.extend(files.iter().map(|(p, c, x)| (*p, c.to_string(), *x)));
        for (path, contents, exec) in all {
            let p = dir.join(path);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, contents).unwrap();
            #[cfg(unix)]
            if exec {
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
        dir
    }

    /// Runs `run.sh --preflight` in `dir` with a clean environment: `PATH` of
    /// `fake_bin` (if any) and the system's, no CUDA variables, `HOME` inside `dir`.
    fn preflight(dir: &Path, fake_bin: Option<&Path>, extra_libs: &str) -> (i32, String) {
        let mut path = String::new();
        if let Some(b) = fake_bin {
            path.push_str(&format!("{}:", b.display()));
        }
        path.push_str("/usr/bin:/bin:/usr/sbin:/sbin");
        let out = Command::new("bash")
            .arg(dir.join("run.sh"))
            .arg("--preflight")
            .env_clear()
            .env("PATH", path)
            .env("HOME", dir.join("home"))
            .env("AMP_RESULTS", dir.join("results"))
            .env("AMP_EXTRA_LIB_DIRS", extra_libs)
            .output()
            .expect("bash runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code().unwrap_or(-1), text)
    }

    fn system_has_nvidia() -> bool {
        tools::which("nvidia-smi").is_some()
            || Command::new("ldconfig")
                .arg("-p")
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("libcuda.so.1"))
    }

    #[test]
    fn the_preflight_without_a_gpu_says_exactly_what_is_missing() {
        if system_has_nvidia() {
            println!("skipped: this machine has an NVIDIA driver");
            return;
        }
        let dir = bundle("bare", &[]);
        let (code, text) = preflight(&dir, None, "");
        assert_eq!(code, 2, "{text}");
        for needle in [
            "glibc            ",
            "MISSING: GPU: nvidia-smi not found",
            "MISSING: libcuda.so.1 (the driver's library) not found",
            "MISSING: libnvrtc.so.* not found",
            "MISSING: libcublas.so.* not found",
            "MISSING: the bundle has no kernels/ folder",
            "MISSING: the bundle has no cuda_doctor",
            "PREFLIGHT FAILED: 6 thing(s) missing",
        ] {
            assert!(text.contains(needle), "{needle:?} not in:\n{text}");
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Fake driver tools and libraries: `nvidia-smi` reporting CUDA `cuda`, and
    /// library files named as the wheels name them.
    fn fake_machine(dir: &Path, cuda: &str, libs: &[(&str, &str)]) -> (PathBuf, String) {
        let bin = dir.join("fakebin");
        fs::create_dir_all(&bin).unwrap();
        let smi = bin.join("nvidia-smi");
        fs::write(
            &smi,
            format!(
                "#!/bin/sh\ncase \"$1\" in --query-gpu*) echo 'NVIDIA H100 80GB HBM3, 9.0, 550.54.15';; \
                 *) echo '| NVIDIA-SMI 550.54.15  Driver Version: 550.54.15  CUDA Version: {cuda} |';; esac\n"
            ),
        )
        .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&smi, fs::Permissions::from_mode(0o755)).unwrap();
        }
        let mut dirs = Vec::new();
        for (sub, file) in libs {
            let d = dir.join("libs").join(sub);
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join(file), "").unwrap();
            if !dirs.contains(&d) {
                dirs.push(d);
            }
        }
        let extra = dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        (bin, extra)
    }

    /// A fake machine whose driver supports CUDA 13, with CUDA 13 libraries.
    fn cuda13_machine(dir: &Path) -> (PathBuf, String) {
        fake_machine(
            dir,
            "13.0",
            &[
                ("cu13", "libnvrtc.so.13"),
                ("cu13", "libcublas.so.13"),
                ("driver", "libcuda.so.1"),
            ],
        )
    }

    const READY_DOCTOR: (&str, &str, bool) =
        ("cuda_doctor", "#!/bin/sh\necho 'DOCTOR: ready'\n", true);

    #[test]
    fn the_preflight_picks_the_libraries_and_headers_the_driver_supports() {
        let dir = bundle(
            "picks",
            &[
                ("include/cuda12/cuda_fp16.h", "", false),
                ("include/cuda13/cuda_fp16.h", "", false),
                ("kernels/cuda12/reduce.sm_90.cubin", "", false),
                READY_DOCTOR,
            ],
        );
        // An R550 driver (CUDA 12.4) with both CUDA 13 and CUDA 12 wheels installed.
        let (bin, extra) = fake_machine(
            &dir,
            "12.4",
            &[
                ("cu13", "libnvrtc.so.13"),
                ("cu13", "libcublas.so.13"),
                ("cu12", "libnvrtc.so.12"),
                ("cu12", "libcublas.so.12.4.5.8"),
                ("driver", "libcuda.so.1"),
            ],
        );
        let (code, text) = preflight(&dir, Some(&bin), &extra);
        assert_eq!(code, 0, "{text}");
        let cu12 = dir.join("libs").join("cu12");
        for needle in [
            "GPU              NVIDIA H100 80GB HBM3, 9.0, 550.54.15".to_string(),
            "driver           supports CUDA 12.4".to_string(),
            format!(
                "libnvrtc         {}/libnvrtc.so.12 (CUDA 12)",
                cu12.display()
            ),
            format!(
                "libcublas        {}/libcublas.so.12.4.5.8 (CUDA 12)",
                cu12.display()
            ),
            format!("headers          {}/include/cuda12", dir.display()),
            "DOCTOR: ready".to_string(),
            "PREFLIGHT OK".to_string(),
        ] {
            assert!(text.contains(&needle), "{needle:?} not in:\n{text}");
        }
        assert!(
            !text.contains("cu13/lib"),
            "CUDA 13 libraries were picked:\n{text}"
        );

        // Only CUDA 13 libraries under that driver, and no compat driver: refused, saying why.
        fs::remove_dir_all(dir.join("libs").join("cu12")).unwrap();
        let extra13: String = extra
            .split(':')
            .filter(|d| !d.ends_with("cu12"))
            .collect::<Vec<_>>()
            .join(":");
        let (code, text) = preflight(&dir, Some(&bin), &extra13);
        assert_eq!(code, 2, "{text}");
        assert!(
            text.contains(
                "MISSING: libcublas: only versions newer than the driver (CUDA 12.4) found"
            ) && text.contains("pip install nvidia-cublas-cu12"),
            "{text}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_doctor_that_finds_a_problem_stops_the_run() {
        let dir = bundle(
            "doctor",
            &[
                ("include/cuda13/cuda_fp16.h", "", false),
                ("kernels/cuda13/reduce.sm_90.cubin", "", false),
                ("cuda_doctor", "#!/bin/sh\necho 'DOCTOR: not ready: cuBLAS 13.1 needs a driver for CUDA 13'\nexit 1\n", true),
            ],
        );
        let (bin, extra) = cuda13_machine(&dir);
        let (code, text) = preflight(&dir, Some(&bin), &extra);
        assert_eq!(code, 2, "{text}");
        assert!(
            text.contains("DOCTOR: not ready")
                && text.contains("PREFLIGHT FAILED: cuda_doctor exited 1"),
            "{text}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_bundle_without_headers_or_kernels_is_refused() {
        let dir = bundle(
            "incomplete",
            &[
                ("include/cuda12/cuda_fp16.h", "", false),
                ("kernels/cuda12/reduce.sm_90.cubin", "", false),
                ("kernels/cuda12/reduce.compute_80.ptx", "", false),
                READY_DOCTOR,
            ],
        );
        let err = verify(&dir).unwrap_err();
        for needle in [
            "include/cuda13/cuda_fp16.h",
            "kernels/cuda12/copy.sm_*.cubin",
            "kernels/cuda12/amp.compute_*.ptx",
            "cuda_bench",
            "tests/amp-cuda-*",
            "tests/amp-testkit-*",
        ] {
            assert!(err.contains(needle), "{needle:?} not in {err}");
        }
        assert!(
            !err.contains("reduce.sm_") && !err.contains("cuda_doctor"),
            "{err}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_packed_bundle_is_unpacked_before_the_preflight() {
        let dir = bundle(
            "packed",
            &[
                ("include/cuda13/cuda_fp16.h", "", false),
                ("kernels/cuda13/reduce.sm_90.cubin", "", false),
                READY_DOCTOR,
            ],
        );
        pack(&dir).unwrap();
        let names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(dir.join(PAYLOAD).is_file() && dir.join("run.sh").is_file());
        let (bin, extra) = cuda13_machine(&dir);
        let (code, text) = preflight(&dir, Some(&bin), &extra);
        assert_eq!(code, 0, "{text}");
        for needle in [
            format!("unpacked         {}", dir.join(PAYLOAD).display()),
            format!("headers          {}/include/cuda13", dir.display()),
            "DOCTOR: ready".to_string(),
        ] {
            assert!(text.contains(&needle), "{needle:?} not in:\n{text}");
        }
        // A damaged archive stops the run before anything else.
        fs::write(dir.join(PAYLOAD), "not gzip").unwrap();
        let (code, text) = preflight(&dir, Some(&bin), &extra);
        assert_eq!(code, 2, "{text}");
        assert!(text.contains("PREFLIGHT FAILED: cannot unpack"), "{text}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_an_empty_folder_or_a_bundle_is_replaced() {
        let dir = bundle("replace", &[READY_DOCTOR]);
        pack(&dir).unwrap();
        fs::create_dir_all(dir.join("results")).unwrap();
        assert_eq!(replaceable(&dir), Ok(()));
        // A file of the user's beside the bundle: refused, and kept.
        fs::write(dir.join("notes.txt"), "mine").unwrap();
        let err = replaceable(&dir).unwrap_err();
        assert!(err.contains("it also holds \"notes.txt\""), "{err}");
        // A folder without our run.sh.
        let other =
            std::env::temp_dir().join(format!("amp-gpu-not-a-bundle-{}", std::process::id()));
        let _ = fs::remove_dir_all(&other);
        fs::create_dir_all(other.join("src")).unwrap();
        let err = replaceable(&other).unwrap_err();
        assert!(
            err.contains("no run.sh of amp's") && err.contains("--out"),
            "{err}"
        );
        fs::remove_dir_all(other.join("src")).unwrap();
        assert_eq!(replaceable(&other), Ok(()), "an empty folder");
        fs::remove_dir_all(&other).unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn test_executables_are_named_after_their_crate_and_file() {
        assert_eq!(test_name("amp-cuda", "amp_cuda-0123abcd"), "amp-cuda-unit");
        assert_eq!(test_name("amp-cuda", "cuda-0123abcd"), "amp-cuda-cuda");
        assert_eq!(
            test_name("amp-testkit", "amp_testkit-ff00"),
            "amp-testkit-unit"
        );
        assert_eq!(
            test_name("amp-testkit", "matmul-ff00"),
            "amp-testkit-matmul"
        );
    }
}
