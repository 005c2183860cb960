//! `cargo xtask gpu [--out DIR]`: builds, on a machine without a GPU, the CUDA
//! test binaries, the CUDA bench, this xtask (for `accuracy`) and precompiled
//! kernel CUBINs into one folder (default `gpu-bundle/`, git-ignored) with a
//! single `run.sh` that runs everything on a machine with an NVIDIA GPU,
//! CUDA 13 and no Rust toolchain, and prints one summary table.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

/// The script the bundle runs on the GPU machine.
const RUN_SH: &str = r#"#!/usr/bin/env bash
# Runs amp's CUDA tests, the accuracy suite and the CUDA bench on a machine
# with an NVIDIA GPU and CUDA 13; needs no Rust toolchain. Prints one summary
# table at the end; exits non-zero if anything failed. Budget: < 5 minutes.
#   ./run.sh            everything
#   ./run.sh --quick    smaller bench sizes
set -u
HERE="$(cd "$(dirname "$0")" && pwd)"
OUT="${AMP_RESULTS:-$HERE/results}"
mkdir -p "$OUT"
QUICK=""
[ "${1:-}" = "--quick" ] && QUICK="--quick"
START=$(date +%s)

echo "== machine =="
(timeout 20 nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv 2>&1 || echo "nvidia-smi not available") | tee "$OUT/nvidia-smi.txt"
uname -a; (ldd --version 2>&1 | head -1)

# ---- find libcuda, libnvrtc, libcublas ---------------------------------------
CANDIDATES=()
for v in CUDA_PATH CUDA_HOME CUDA_ROOT; do
  if [ -n "${!v:-}" ]; then CANDIDATES+=("${!v}/lib64" "${!v}/lib"); fi
done
CANDIDATES+=(/usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda/targets/sbsa-linux/lib)
for d in /usr/local/cuda-13*/lib64 /usr/local/cuda-12*/lib64; do [ -d "$d" ] && CANDIDATES+=("$d"); done
if command -v python3 >/dev/null 2>&1; then
  while IFS= read -r d; do [ -n "$d" ] && CANDIDATES+=("$d"); done < <(timeout 30 python3 -c '
import os
try:
    import nvidia
    for p in nvidia.__path__:
        for s in sorted(os.listdir(p)):
            d = os.path.join(p, s, "lib")
            if os.path.isdir(d):
                print(d)
except Exception:
    pass' 2>/dev/null)
fi
CANDIDATES+=(/usr/lib/x86_64-linux-gnu /usr/lib64 /usr/lib/wsl/lib)

find_dir() {  # $1: file name glob (e.g. libnvrtc.so.1[23]*) -> first folder that has it
  local d f
  for d in "${CANDIDATES[@]}"; do
    for f in "$d"/$1; do [ -e "$f" ] && { echo "$d"; return 0; }; done
  done
  local hit
  hit=$(ldconfig -p 2>/dev/null | awk -v pat="$2" '$1 ~ pat {print $NF; exit}')
  [ -n "$hit" ] && { dirname "$hit"; return 0; }
  return 1
}
LIBDIRS=()
for spec in "libcuda.so.1 ^libcuda\\.so" "libnvrtc.so.13* ^libnvrtc\\.so\\.13" "libcublas.so.13* ^libcublas\\.so\\.13" "libnvrtc.so.12* ^libnvrtc\\.so\\.12" "libcublas.so.12* ^libcublas\\.so\\.12"; do
  set -- $spec
  if dir=$(find_dir "$1" "$2"); then
    echo "found $1 in $dir"
    case " ${LIBDIRS[*]} " in *" $dir "*) ;; *) LIBDIRS+=("$dir");; esac
  else
    echo "not found: $1"
  fi
done
LD_EXTRA=$(IFS=:; echo "${LIBDIRS[*]}")
export LD_LIBRARY_PATH="${LD_EXTRA}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"

# ---- CUDA headers for NVRTC (cuda_fp16.h): the machine's own, else the bundle's ----
if [ -z "${AMP_CUDA_INCLUDE:-}" ]; then
  for d in "${CUDA_PATH:-/nonexistent}/include" "${CUDA_HOME:-/nonexistent}/include" /usr/local/cuda/include; do
    [ -f "$d/cuda_fp16.h" ] && { export AMP_CUDA_INCLUDE="$d"; break; }
  done
fi
if [ -z "${AMP_CUDA_INCLUDE:-}" ]; then
  for d in "${LIBDIRS[@]}"; do
    for inc in "$d/../include" "$d/../../cuda_runtime/include"; do
      [ -f "$inc/cuda_fp16.h" ] && { export AMP_CUDA_INCLUDE="$(cd "$inc" && pwd)"; break 2; }
    done
  done
fi
if [ -z "${AMP_CUDA_INCLUDE:-}" ] && [ -f "$HERE/include/cuda_fp16.h" ]; then
  export AMP_CUDA_INCLUDE="$HERE/include"
fi
echo "AMP_CUDA_INCLUDE=${AMP_CUDA_INCLUDE:-<none: NVRTC built-ins>}"
# Precompiled kernels, used only when libnvrtc cannot be loaded.
[ -d "$HERE/cubins" ] && export AMP_CUDA_CUBIN_DIR="$HERE/cubins"
# A missing GPU must fail the tests here, never skip them.
export AMP_REQUIRE_CUDA=1

SUMMARY=()
FAILED=0
run_step() {  # name, timeout seconds, command...
  local name="$1" limit="$2"; shift 2
  local log="$OUT/$name.log" t0 t1 rc
  echo; echo "== $name =="
  t0=$(date +%s)
  timeout "$limit" "$@" > >(tee "$log") 2>&1
  rc=$?
  t1=$(date +%s)
  sleep 0.2
  echo "$rc" > "$OUT/$name.rc"
  [ "$rc" -ne 0 ] && FAILED=1
  STEP_RC=$rc; STEP_SECS=$((t1 - t0))
}

for t in "$HERE"/tests/*; do
  name="test-$(basename "$t")"
  run_step "$name" 240 "$t" --test-threads=4
  passed=$(grep -Eo '[0-9]+ passed' "$OUT/$name.log" | awk '{s+=$1} END {print s+0}')
  failed=$(grep -Eo '[0-9]+ failed' "$OUT/$name.log" | awk '{s+=$1} END {print s+0}')
  skipped=$(grep -c 'skipped:' "$OUT/$name.log")
  [ "$STEP_RC" -ne 0 ] && [ "$failed" -eq 0 ] && failed="rc=$STEP_RC"
  SUMMARY+=("$(printf '%-34s passed %-5s failed %-7s skipped %-3s %4ss' "$name" "$passed" "$failed" "$skipped" "$STEP_SECS")")
done

if [ -x "$HERE/xtask" ]; then
  run_step accuracy 120 "$HERE/xtask" accuracy --quick
  SUMMARY+=("$(printf '%-34s %s %4ss' accuracy "$([ "$STEP_RC" -eq 0 ] && echo PASS || echo "FAIL (rc=$STEP_RC)")" "$STEP_SECS")")
fi

run_step bench 150 "$HERE/cuda_bench" $QUICK
[ "$STEP_RC" -ne 0 ] && SUMMARY+=("$(printf '%-34s FAIL (rc=%s)' bench "$STEP_RC")")

END=$(date +%s)
echo
echo "================ amp CUDA summary ================"
head -2 "$OUT/nvidia-smi.txt" | tail -1
for line in "${SUMMARY[@]}"; do echo "$line"; done
if [ -f "$OUT/accuracy.log" ]; then
  echo "-- accuracy rows (failures first) --"
  (grep -E 'FAIL' "$OUT/accuracy.log"; grep -vE 'FAIL' "$OUT/accuracy.log") | grep -E '\|| ok | pass|PASS|FAIL' | head -40
fi
echo "-- bench --"
grep '^BENCH ' "$OUT/bench.log" 2>/dev/null | awk '{printf "%-48s %12s %s\n", $2, $3, $4}'
echo "libraries: ${LD_EXTRA:-<none found>}"
echo "total $((END - START)) s; logs in $OUT"
[ "$FAILED" -eq 0 ] && echo "RESULT: all steps passed" || echo "RESULT: SOME STEPS FAILED"
exit $FAILED
"#;

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string()))
}

/// Runs `cargo <args> --message-format=json` and returns the executables it
/// built (only test harnesses when `tests_only`: `cargo test` also builds examples).
fn build_executables(args: &[&str], tests_only: bool) -> Result<Vec<PathBuf>, String> {
    eprintln!("$ cargo {}", args.join(" "));
    let out = cargo()
        .args(args)
        .arg("--message-format=json-render-diagnostics")
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!("cargo {} failed", args.join(" ")));
    }
    let mut exes = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact" && (!tests_only || msg["profile"]["test"] == true) {
            if let Some(exe) = msg["executable"].as_str() {
                exes.push(PathBuf::from(exe));
            }
        }
    }
    Ok(exes)
}

fn copy_exe(src: &Path, dst: &Path) -> Result<(), String> {
    std::fs::copy(src, dst)
        .map_err(|e| format!("copy {} -> {}: {e}", src.display(), dst.display()))?;
    // Debug info is most of the size; the bundle has a 60 MB budget.
    let stripped = Command::new("strip").arg("--strip-debug").arg(dst).status();
    if !matches!(stripped, Ok(s) if s.success()) {
        eprintln!("note: could not strip {}", dst.display());
    }
    Ok(())
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

fn copy_dir(src: &Path, dst: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dst)?;
    for e in std::fs::read_dir(src)? {
        let e = e?;
        let to = dst.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &to)?;
        } else {
            std::fs::copy(e.path(), &to)?;
        }
    }
    Ok(())
}

fn build(out: &Path) -> Result<(), String> {
    if out.exists() {
        std::fs::remove_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    }
    let tests = out.join("tests");
    std::fs::create_dir_all(&tests).map_err(|e| format!("{}: {e}", tests.display()))?;

    // CUDA test binaries (the unit tests and tests/*.rs of amp-cuda).
    let exes = build_executables(&["test", "--no-run", "--release", "-p", "amp-cuda"], true)?;
    if exes.is_empty() {
        return Err("cargo built no amp-cuda test executables".into());
    }
    for exe in &exes {
        let stem = exe.file_name().and_then(|n| n.to_str()).unwrap_or("test");
        // `cuda-0123abcd` -> `amp-cuda-cuda`; the lib's unit tests `amp_cuda-…` -> `amp-cuda-unit`.
        let base = stem.rsplit_once('-').map_or(stem, |(b, _)| b);
        let name = if base == "amp_cuda" {
            "amp-cuda-unit".to_string()
        } else {
            format!("amp-cuda-{base}")
        };
        copy_exe(exe, &tests.join(name))?;
    }
    // The bench.
    let bench = build_executables(
        &[
            "build",
            "--release",
            "-p",
            "amp-cuda",
            "--example",
            "cuda_bench",
        ],
        false,
    )?;
    let bench = bench
        .first()
        .ok_or("the cuda_bench example built no executable")?;
    copy_exe(bench, &out.join("cuda_bench"))?;
    // This xtask (release, as `cargo xtask` runs it) for `accuracy`.
    match std::env::current_exe() {
        Ok(me) => copy_exe(&me, &out.join("xtask"))?,
        Err(e) => eprintln!("note: no accuracy suite in the bundle ({e})"),
    }
    // Precompiled kernels (fallback when the GPU machine has no libnvrtc) and headers.
    match crate::kernels::write_cubins(&out.join("cubins"), &[80, 86, 89, 90, 100, 120]) {
        Ok(n) => eprintln!("wrote {n} CUBINs"),
        Err(e) => eprintln!("note: no precompiled CUBINs in the bundle: {e}"),
    }
    if let Some(inc) = amp_cuda::compile::include_dirs().first() {
        let dst = out.join("include");
        copy_dir(inc, &dst).map_err(|e| format!("copy {}: {e}", inc.display()))?;
    }
    let run = out.join("run.sh");
    std::fs::write(&run, RUN_SH).map_err(|e| format!("{}: {e}", run.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
    }
    let mb = dir_size(out) as f64 / 1e6;
    eprintln!("bundle: {} ({mb:.1} MB)", out.display());
    if mb > 60.0 {
        return Err(format!("the bundle is {mb:.1} MB, over the 60 MB budget"));
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
                "built {}: copy it to a machine with an NVIDIA GPU and run {}/run.sh",
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
