//! Output files (`--metrics`, `--plot`): checked before a run starts, so a
//! path that cannot be written fails in a second, not after an hour of training.

use crate::{Error, Result};
use std::fs;
use std::io::Write;
use std::path::Path;

/// Errors unless `path` can be written: its folder exists, it is not a
/// folder itself, and it opens for writing and accepts a write (a zero-byte
/// write, which a full device such as `/dev/full` refuses). Changes nothing:
/// an existing file keeps its contents, and a file created for the check is
/// removed again. `what` names the option (`"--metrics"`).
pub fn check_writable(what: &'static str, path: &Path) -> Result<()> {
    let bad = |msg: String| Error::config(what, format!("{}: {msg}", path.display()));
    if path.as_os_str().is_empty() {
        return Err(Error::config(what, "the path is empty".to_string()));
    }
    if path.is_dir() {
        return Err(bad("is a directory; give a file name".into()));
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        return Err(bad(format!(
            "the directory {} does not exist",
            parent.display()
        )));
    }
    let existed = path.exists();
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // A FIFO without a reader is an error (ENXIO) instead of a wait.
        options.custom_flags(libc::O_NONBLOCK);
    }
    let mut file = options
        .open(path)
        .map_err(|e| bad(format!("cannot be opened for writing: {e}")))?;
    // `write` (not `write_all`) issues the system call even for zero bytes.
    #[allow(clippy::unused_io_amount)]
    let probe = file.write(&[]);
    drop(file);
    if !existed {
        let _ = fs::remove_file(path);
    }
    probe.map_err(|e| bad(format!("cannot be written: {e}")))?;
    Ok(())
}

/// Writes the run's `--metrics` JSON and `--plot` SVG, each on its own: one
/// that fails does not keep the other from being written. Returns what was
/// written (for the report) and what failed.
pub fn write_outputs(
    report: &crate::train::TrainReport,
    metrics: Option<&Path>,
    plot: Option<&Path>,
) -> (Vec<String>, Vec<String>) {
    let (mut written, mut failed) = (Vec::new(), Vec::new());
    if let Some(path) = metrics {
        let result = serde_json::to_string_pretty(report)
            .map_err(|e| e.to_string())
            .and_then(|json| fs::write(path, json + "\n").map_err(|e| e.to_string()));
        match result {
            Ok(()) => written.push(format!("metrics written to {}", path.display())),
            Err(e) => failed.push(format!("writing metrics {}: {e}", path.display())),
        }
    }
    if let Some(path) = plot {
        match crate::plot::write_loss_svg(path, report) {
            Ok(()) => written.push(format!("loss curve written to {}", path.display())),
            Err(e) => failed.push(format!("writing the plot {}: {e}", path.display())),
        }
    }
    (written, failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unwritable_paths_are_refused_and_nothing_changes() {
        let dir = std::env::temp_dir().join(format!("amp-train-output-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();

        let missing = dir.join("no-such-dir").join("m.json");
        let err = check_writable("--metrics", &missing)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--metrics") && err.contains("does not exist"),
            "{err}"
        );

        let err = check_writable("--plot", &dir).unwrap_err().to_string();
        assert!(err.contains("is a directory"), "{err}");

        if Path::new("/dev/full").exists() {
            let err = check_writable("--metrics", Path::new("/dev/full"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("cannot be written"), "{err}");
        }

        let fresh = dir.join("fresh.json");
        check_writable("--metrics", &fresh).unwrap();
        assert!(!fresh.exists(), "the check leaves no file behind");

        let kept = dir.join("kept.json");
        fs::write(&kept, "old contents").unwrap();
        check_writable("--metrics", &kept).unwrap();
        assert_eq!(fs::read_to_string(&kept).unwrap(), "old contents");
        fs::remove_dir_all(&dir).unwrap();
    }
}
