//! The bundle's executables: built with cargo-zigbuild for glibc
//! [`GLIBC`], and refused if any needs a newer glibc symbol version.

use super::tools::Tools;
use super::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Builds with cargo-zigbuild for glibc [`GLIBC`] and returns the executables.
pub(super) fn zigbuild(
    tools: &Tools,
    args: &[&str],
    tests_only: bool,
) -> Result<Vec<PathBuf>, String> {
    let target = format!("{TARGET}.{GLIBC}");
    eprintln!("$ cargo zigbuild {} --target {target}", args.join(" "));
    let path = std::env::join_paths(
        std::iter::once(tools.zig_dir.clone()).chain(
            std::env::var_os("PATH")
                .iter()
                .flat_map(std::env::split_paths),
        ),
    )
    .map_err(|e| e.to_string())?;
    let out = Command::new(&tools.zigbuild)
        .arg("zigbuild")
        .args(args)
        .args([
            "--target",
            &target,
            "--message-format=json-render-diagnostics",
        ])
        .env("PATH", path)
        .env(
            "CARGO_TARGET_DIR",
            workspace_root().join("target").join("gpu-build"),
        )
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run cargo-zigbuild: {e}"))?;
    if !out.status.success() {
        return Err(format!("cargo zigbuild {} failed", args.join(" ")));
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

/// The newest `GLIBC_x.y` symbol version `objdump -T` lists for `exe`.
pub(super) fn needed_glibc(exe: &Path) -> Result<String, String> {
    let out = Command::new("objdump")
        .arg("-T")
        .arg(exe)
        .output()
        .map_err(|e| {
            format!(
                "objdump (binutils) is needed to check {}: {e}",
                exe.display()
            )
        })?;
    newest_glibc_version(&String::from_utf8_lossy(&out.stdout))
        .ok_or_else(|| format!("{} names no GLIBC symbol version", exe.display()))
}

/// The newest `GLIBC_x.y[.z]` in `objdump -T` output.
pub fn newest_glibc_version(dump: &str) -> Option<String> {
    let parse = |v: &str| -> Vec<u32> { v.split('.').filter_map(|p| p.parse().ok()).collect() };
    dump.split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .filter_map(|w| w.strip_prefix("GLIBC_"))
        .filter(|v| v.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .max_by_key(|v| parse(v))
        .map(str::to_string)
}

pub(super) fn version_le(a: &str, b: &str) -> bool {
    let parse = |v: &str| -> Vec<u32> { v.split('.').filter_map(|p| p.parse().ok()).collect() };
    parse(a) <= parse(b)
}

pub(super) fn copy_exe(src: &Path, dst: &Path) -> Result<(), String> {
    std::fs::copy(src, dst)
        .map_err(|e| format!("copy {} -> {}: {e}", src.display(), dst.display()))?;
    // Debug info is most of the size.
    let stripped = Command::new("strip").arg("--strip-debug").arg(dst).status();
    if !matches!(stripped, Ok(s) if s.success()) {
        eprintln!("note: could not strip {}", dst.display());
    }
    let glibc = needed_glibc(dst)?;
    if !version_le(&glibc, GLIBC) {
        return Err(format!(
            "{} needs glibc {glibc}, newer than the {GLIBC} the bundle promises",
            dst.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_glibc_version_is_read_from_objdump_output() {
        let dump = "0000 DF *UND* 0000 (GLIBC_2.2.5) memcpy\n0000 DF *UND* 0000 (GLIBC_2.17) clock_gettime\n\
                    0000 DF *UND* 0000 (GLIBC_2.3) x\n0000 DF *UND* 0000 GLIBC_PRIVATE y";
        assert_eq!(newest_glibc_version(dump).as_deref(), Some("2.17"));
        assert!(version_le("2.17", GLIBC) && version_le("2.2.5", "2.17"));
        assert!(!version_le("2.34", GLIBC));
        assert_eq!(newest_glibc_version("no versions"), None);
    }
}
