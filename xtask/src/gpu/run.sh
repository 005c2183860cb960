#!/usr/bin/env bash
# amp's GPU bundle: runs the CUDA tests, the accuracy rows on CUDA and the CUDA
# bench on a machine with an NVIDIA GPU and no Rust toolchain, after a
# preflight that tells the whole story in one screen: the C library, the GPU
# and its driver, which libcuda / libnvrtc / libcublas will be loaded (files
# and versions), the headers, and where each kernel module's code comes from.
#
#   ./run.sh               preflight, then everything (about 6 minutes at most)
#   ./run.sh --preflight   the preflight only
#   ./run.sh --quick       smaller bench sizes
#
# Exit status: 0 when every step passed; 1 when a step failed; 2 when the
# preflight found something missing (nothing else is run then).
# AMP_EXTRA_LIB_DIRS (':'-separated) adds library folders to search first.
set -u
HERE="$(cd "$(dirname "$0")" && pwd)"
OUT="${AMP_RESULTS:-$HERE/results}"
mkdir -p "$OUT"
GLIBC_NEEDED="@GLIBC@"
PREFLIGHT_ONLY=0
QUICK=""
for a in "$@"; do
  case "$a" in
    --preflight) PREFLIGHT_ONLY=1 ;;
    --quick) QUICK="--quick" ;;
    *) echo "usage: $0 [--preflight] [--quick]"; exit 2 ;;
  esac
done
START=$(date +%s)
# The bundle's files travel packed: unpack them beside this script when the
# archive is newer than the last unpacking.
if [ -f "$HERE/payload.tar.gz" ]; then
  if [ ! -f "$HERE/.unpacked" ] || [ "$HERE/payload.tar.gz" -nt "$HERE/.unpacked" ]; then
    if ! tar xzf "$HERE/payload.tar.gz" -C "$HERE" 2>"$OUT/unpack.log"; then
      echo "PREFLIGHT FAILED: cannot unpack $HERE/payload.tar.gz into $HERE: $(head -3 "$OUT/unpack.log")"
      exit 2
    fi
    touch "$HERE/.unpacked"
  fi
  echo "unpacked         $HERE/payload.tar.gz"
fi
PROBLEMS=()
missing() { PROBLEMS+=("$*"); echo "MISSING: $*"; }

# version_le A B: true when version A <= version B (dotted numbers).
version_le() { [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -1)" = "$1" ]; }

echo "================ amp GPU bundle: preflight ================"
# ---- the C library (the bundle's binaries are linked against glibc >= $GLIBC_NEEDED) ----
GLIBC=$( (ldd --version 2>&1 | head -1 | grep -oE '[0-9]+\.[0-9]+$') || true)
[ -z "$GLIBC" ] && GLIBC=$( (getconf GNU_LIBC_VERSION 2>/dev/null | grep -oE '[0-9]+\.[0-9]+') || true)
if [ -z "$GLIBC" ]; then
  missing "glibc: its version could not be read (ldd, getconf); the binaries need glibc >= $GLIBC_NEEDED"
elif version_le "$GLIBC_NEEDED" "$GLIBC"; then
  echo "glibc            $GLIBC (binaries need >= $GLIBC_NEEDED)"
else
  missing "glibc $GLIBC is older than $GLIBC_NEEDED, which the bundle's binaries need"
fi
echo "system           $(uname -srm)"

# ---- the GPU and its driver ----
DRIVER_CUDA=""
if command -v nvidia-smi >/dev/null 2>&1; then
  GPU_LINE=$(timeout 20 nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv,noheader 2>&1 | head -1)
  DRIVER_CUDA=$( (timeout 20 nvidia-smi 2>/dev/null | grep -oE 'CUDA Version: *[0-9]+\.[0-9]+' | grep -oE '[0-9]+\.[0-9]+') || true)
  echo "GPU              ${GPU_LINE:-none reported}"
  echo "driver           supports CUDA ${DRIVER_CUDA:-?}"
  echo "$GPU_LINE" > "$OUT/gpu.txt"
  case "$GPU_LINE" in
    ""|*"No devices"*|*"failed"*|*"NVIDIA-SMI has failed"*) missing "GPU: nvidia-smi reports none ($GPU_LINE)" ;;
  esac
else
  missing "GPU: nvidia-smi not found (no NVIDIA driver installed, or not on PATH)"
fi
DRIVER_MAJOR="${DRIVER_CUDA%%.*}"

# ---- library folders: where libcuda, libnvrtc and libcublas are ----
CANDIDATES=()
add_dir() { [ -d "$1" ] && CANDIDATES+=("$1"); }
if [ -n "${AMP_EXTRA_LIB_DIRS:-}" ]; then
  IFS=: read -r -a extra <<< "$AMP_EXTRA_LIB_DIRS"
  for d in "${extra[@]}"; do add_dir "$d"; done
fi
for v in CUDA_PATH CUDA_HOME CUDA_ROOT; do
  if [ -n "${!v:-}" ]; then add_dir "${!v}/lib64"; add_dir "${!v}/lib"; fi
done
# pip-installed nvidia-* wheels of every Python environment that can be found.
shopt -s nullglob
for site in /usr/lib/python3*/{site,dist}-packages /usr/local/lib/python3*/{site,dist}-packages \
            /opt/*/lib/python3*/site-packages /opt/*/.venv/lib/python3*/site-packages \
            /opt/conda/lib/python3*/site-packages "$HOME"/.local/lib/python3*/site-packages \
            ${VIRTUAL_ENV:+"$VIRTUAL_ENV"/lib/python3*/site-packages} ${CONDA_PREFIX:+"$CONDA_PREFIX"/lib/python3*/site-packages}; do
  for d in "$site"/nvidia/*/lib; do add_dir "$d"; done
done
if command -v python3 >/dev/null 2>&1; then
  while IFS= read -r d; do [ -n "$d" ] && add_dir "$d"; done < <(timeout 20 python3 -c '
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
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-*/lib64 \
         /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/lib/wsl/lib; do
  add_dir "$d"
done
shopt -u nullglob

# Every "major dir" pair of a library `libX.so.<major>[.*]`.
majors_of() {
  local d f base major
  for d in "${CANDIDATES[@]}"; do
    for f in "$d"/"$1".so.*; do
      [ -e "$f" ] || continue
      base=$(basename "$f")
      major=${base#"$1".so.}
      major=${major%%.*}
      case "$major" in ''|*[!0-9]*) continue ;; esac
      echo "$major $d"
    done
  done | sort -u
}

# pick_lib NAME: the folder of the newest major version the driver supports.
pick_lib() {
  local name="$1" best="" best_major=-1 newer="" major dir
  while read -r major dir; do
    [ -z "$major" ] && continue
    if [ -n "$DRIVER_MAJOR" ] && [ "$major" -gt "$DRIVER_MAJOR" ]; then
      newer="$newer $dir (CUDA $major)"
      continue
    fi
    if [ "$major" -gt "$best_major" ]; then best_major=$major; best=$dir; fi
  done < <(majors_of "$name")
  if [ -n "$best" ]; then
    echo "$best_major $best"
  elif [ -n "$newer" ]; then
    echo "newer$newer"
  fi
}

LIBDIRS=()
use_dir() { case " ${LIBDIRS[*]:-} " in *" $1 "*) ;; *) LIBDIRS+=("$1") ;; esac; }

LIBCUDA=""
for d in "${CANDIDATES[@]}"; do
  if [ -e "$d/libcuda.so.1" ]; then LIBCUDA="$d/libcuda.so.1"; break; fi
done
[ -z "$LIBCUDA" ] && LIBCUDA=$( (ldconfig -p 2>/dev/null | awk '$1 == "libcuda.so.1" {print $NF; exit}') || true)
if [ -n "$LIBCUDA" ]; then
  echo "libcuda          $(readlink -f "$LIBCUDA" 2>/dev/null || echo "$LIBCUDA")"
  use_dir "$(dirname "$LIBCUDA")"
else
  missing "libcuda.so.1 (the driver's library) not found in ${#CANDIDATES[@]} folders or by ldconfig"
fi

NVRTC_MAJOR=""
wheel_of() { case "$1" in libnvrtc) echo nvidia-cuda-nvrtc ;; *) echo nvidia-cublas ;; esac; }
for lib in libnvrtc libcublas; do
  picked=$(pick_lib "$lib")
  case "$picked" in
    "")
      missing "$lib.so.* not found (install a CUDA toolkit, or pip install $(wheel_of "$lib")-cu${DRIVER_MAJOR:-12} for this driver's CUDA)" ;;
    newer*)
      # Only libraries newer than the driver: the compat driver of a toolkit may run them.
      COMPAT=""
      for c in /usr/local/cuda/compat /usr/local/cuda-*/compat; do
        [ -e "$c/libcuda.so.1" ] && { COMPAT="$c"; break; }
      done
      if [ -n "$COMPAT" ]; then
        echo "$lib         only newer than the driver:${picked#newer}; using the forward-compatibility driver in $COMPAT"
        LIBDIRS=("$COMPAT" "${LIBDIRS[@]}")
        dir=$(echo "${picked#newer}" | awk '{print $1}')
        use_dir "$dir"
      else
        missing "$lib: only versions newer than the driver (CUDA $DRIVER_CUDA) found:${picked#newer}; install the CUDA $DRIVER_MAJOR.x wheel (pip install $(wheel_of "$lib")-cu$DRIVER_MAJOR) or update the driver (R580+ for CUDA 13)"
      fi ;;
    *)
      major=${picked%% *}; dir=${picked#* }
      file=$(ls "$dir"/"$lib".so.* 2>/dev/null | sort -V | tail -1)
      printf '%-16s %s (CUDA %s)\n' "$lib" "$file" "$major"
      use_dir "$dir"
      [ "$lib" = libnvrtc ] && NVRTC_MAJOR=$major ;;
  esac
done
LD_EXTRA=$(IFS=:; echo "${LIBDIRS[*]:-}")
export LD_LIBRARY_PATH="${LD_EXTRA}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# ---- headers of NVRTC's own version (NVRTC has no built-in cuda_fp16.h) ----
if [ -n "$NVRTC_MAJOR" ]; then
  if [ -f "$HERE/include/cuda$NVRTC_MAJOR/cuda_fp16.h" ]; then
    export AMP_CUDA_INCLUDE="$HERE/include/cuda$NVRTC_MAJOR"
    echo "headers          $AMP_CUDA_INCLUDE"
  else
    echo "headers          none of CUDA $NVRTC_MAJOR in the bundle: NVRTC searches the system's; the precompiled kernels remain"
  fi
fi
if [ -d "$HERE/kernels" ]; then
  export AMP_CUDA_KERNEL_DIR="$HERE/kernels"
  echo "precompiled      $(find "$HERE/kernels" -name '*.cubin' | wc -l) CUBINs, $(find "$HERE/kernels" -name '*.ptx' | wc -l) PTX in $HERE/kernels"
else
  missing "the bundle has no kernels/ folder (rebuild it with cargo xtask gpu)"
fi
[ -x "$HERE/cuda_doctor" ] || missing "the bundle has no cuda_doctor (rebuild it with cargo xtask gpu)"
# A missing GPU must fail the tests, never skip them.
export AMP_REQUIRE_CUDA=1

if [ "${#PROBLEMS[@]}" -gt 0 ]; then
  echo
  echo "PREFLIGHT FAILED: ${#PROBLEMS[@]} thing(s) missing:"
  for p in "${PROBLEMS[@]}"; do echo "  - $p"; done
  exit 2
fi

echo
echo "-- what the backend finds (cuda_doctor) --"
timeout 120 "$HERE/cuda_doctor" 2>&1 | tee "$OUT/doctor.log"
DOCTOR_RC=${PIPESTATUS[0]}
if [ "$DOCTOR_RC" -ne 0 ]; then
  echo "PREFLIGHT FAILED: cuda_doctor exited $DOCTOR_RC (its lines above say what is missing)"
  exit 2
fi
[ "$PREFLIGHT_ONLY" = 1 ] && { echo "PREFLIGHT OK"; exit 0; }

SUMMARY=()
FAILED=0
run_step() {  # name, timeout seconds, command...
  local name="$1" limit="$2"; shift 2
  local log="$OUT/$name.log" t0 t1 rc
  echo; echo "== $name (budget ${limit}s) =="
  t0=$(date +%s)
  timeout "$limit" "$@" > >(tee "$log") 2>&1
  rc=$?
  t1=$(date +%s)
  sleep 0.2
  [ "$rc" -ne 0 ] && FAILED=1
  STEP_RC=$rc; STEP_SECS=$((t1 - t0))
}

for t in "$HERE"/tests/*; do
  name="test-$(basename "$t")"
  case "$(basename "$t")" in
    # The conformance suite: only its CUDA slot (`<case>::cuda`); CI runs the CPU rows.
    amp-testkit-*|amp-dist-*) run_step "$name" 180 "$t" --test-threads=4 ::cuda ;;
    *) run_step "$name" 180 "$t" --test-threads=4 ;;
  esac
  passed=$(grep -Eo '[0-9]+ passed' "$OUT/$name.log" | awk '{s+=$1} END {print s+0}')
  failed=$(grep -Eo '[0-9]+ failed' "$OUT/$name.log" | awk '{s+=$1} END {print s+0}')
  skipped=$(grep -c 'skipped:' "$OUT/$name.log")
  [ "$STEP_RC" -ne 0 ] && [ "$failed" -eq 0 ] && failed="rc=$STEP_RC"
  SUMMARY+=("$(printf '%-34s passed %-5s failed %-7s skipped %-3s %4ss' "$name" "$passed" "$failed" "$skipped" "$STEP_SECS")")
done

run_step accuracy 180 "$HERE/xtask" accuracy --quick --cuda-only
SUMMARY+=("$(printf '%-34s %s %4ss' "accuracy (CUDA rows)" "$([ "$STEP_RC" -eq 0 ] && echo PASS || echo "FAIL (rc=$STEP_RC)")" "$STEP_SECS")")

run_step bench 120 "$HERE/cuda_bench" $QUICK
[ "$STEP_RC" -ne 0 ] && SUMMARY+=("$(printf '%-34s FAIL (rc=%s)' bench "$STEP_RC")")

END=$(date +%s)
echo
echo "================ amp CUDA summary ================"
cat "$OUT/gpu.txt" 2>/dev/null
grep '^kernels ' "$OUT/doctor.log" | head -8
for line in "${SUMMARY[@]}"; do echo "$line"; done
if [ -f "$OUT/accuracy.log" ]; then
  echo "-- accuracy rows (failures first) --"
  (grep -E 'FAIL' "$OUT/accuracy.log"; grep -vE 'FAIL' "$OUT/accuracy.log") | grep -E 'cuda|PASS|FAIL|passed' | head -40
fi
echo "-- bench --"
grep '^BENCH ' "$OUT/bench.log" 2>/dev/null | awk '{printf "%-48s %12s %s\n", $2, $3, $4}'
echo "libraries: ${LD_EXTRA:-<none found>}"
echo "total $((END - START)) s; logs in $OUT"
[ "$FAILED" -eq 0 ] && echo "RESULT: all steps passed" || echo "RESULT: SOME STEPS FAILED"
exit $FAILED
