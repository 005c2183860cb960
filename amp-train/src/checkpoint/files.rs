//! The file-system side of a checkpoint: reading only regular files, writing
//! and flushing, telling our directories from anybody else's, the atomic
//! exchange into place, and removing only what we wrote.

use super::*;
use std::fs;
use std::io::{Read, Write};

pub(super) fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = fs::File::create(path).map_err(|e| Error::io("creating", path, e))?;
    f.write_all(bytes)
        .map_err(|e| Error::io("writing", path, e))?;
    f.sync_all().map_err(|e| Error::io("syncing", path, e))
}

pub(super) fn sync_dir(dir: &Path) {
    // Best effort: directory fsync is not supported everywhere.
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Opens `path` for reading without blocking on a FIFO, and only if it is a
/// regular file; returns it with its length.
pub(super) fn open_regular(path: &Path) -> std::io::Result<(fs::File, u64)> {
    let mut options = fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Opening a FIFO for reading would wait for a writer.
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file (a device, FIFO, socket or directory)",
        ));
    }
    Ok((file, meta.len()))
}

/// The bytes of the regular file `path`, at most `limit` of them; every
/// failure is a message for the checkpoint error.
pub(super) fn read_regular(
    path: &Path,
    name: &str,
    limit: u64,
) -> std::result::Result<Vec<u8>, String> {
    let (file, len) = open_regular(path).map_err(|e| format!("cannot read {name}: {e}"))?;
    if len > limit {
        return Err(format!(
            "{name} has {len} bytes, more than the {limit} this loader reads"
        ));
    }
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(len as usize)
        .map_err(|_| format!("cannot read {name}: {len} bytes do not fit in memory"))?;
    // `take`: a file that grows while it is read is still bounded.
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {name}: {e}"))?;
    if bytes.len() as u64 > limit {
        return Err(format!("{name} grew past {limit} bytes while being read"));
    }
    Ok(bytes)
}

/// What is at a checkpoint path.
pub(super) enum Existing {
    /// Nothing: the checkpoint is created.
    Nothing,
    /// An empty directory or one of our checkpoints: it may be replaced.
    Ours,
}

/// Decides whether `path` may be replaced, or says why not.
pub(super) fn inspect(path: &Path) -> Result<Existing> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Existing::Nothing),
        Err(e) => return Err(Error::io("inspecting", path, e)),
    };
    let refuse = |why: String| {
        Error::checkpoint(
            path,
            format!("{why}; refusing to replace it (choose another checkpoint path)"),
        )
    };
    if !meta.is_dir() {
        return Err(refuse(
            "exists and is not a checkpoint directory (it is a file or a link)".into(),
        ));
    }
    let entries = fs::read_dir(path).map_err(|e| Error::io("listing", path, e))?;
    let mut foreign = Vec::new();
    let mut ours = 0;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("listing", path, e))?;
        let name = entry.file_name();
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if is_file && OUR_FILES.iter().any(|f| name == *f) {
            ours += 1;
        } else {
            let mut shown = name.to_string_lossy().into_owned();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                shown.push('/');
            }
            foreign.push(shown);
        }
    }
    if !foreign.is_empty() {
        foreign.sort();
        return Err(refuse(format!(
            "holds files amp-train did not write ({})",
            foreign.join(", ")
        )));
    }
    if ours == 0 {
        return Ok(Existing::Ours); // an empty directory: nothing to lose
    }
    // Our file names alone do not make it ours: the state must carry our marker.
    let marked = read_regular(&path.join(STATE_FILE), STATE_FILE, MAX_STATE_BYTES)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|doc| doc.get("format").and_then(|f| f.as_str()) == Some(FORMAT));
    if !marked {
        return Err(refuse(format!(
            "has a {STATE_FILE} that is not an amp-train checkpoint's (no \"format\": \"{FORMAT}\")"
        )));
    }
    Ok(Existing::Ours)
}

/// Removes a checkpoint directory that is ours: our two files, then the
/// directory if it is then empty. Never recursive; best effort.
pub(super) fn remove_ours(dir: &Path) {
    for name in OUR_FILES {
        let file = dir.join(name);
        if fs::symlink_metadata(&file).is_ok_and(|m| m.is_file()) {
            let _ = fs::remove_file(file);
        }
    }
    // Fails, and keeps everything, if something else appeared in it meanwhile.
    let _ = fs::remove_dir(dir);
}

/// Atomically exchanges two paths (Linux `renameat2(RENAME_EXCHANGE)`).
#[cfg(target_os = "linux")]
pub(super) fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let a = CString::new(a.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    let b = CString::new(b.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // The system call, not glibc's wrapper (glibc 2.28+): binaries built for an
    // older glibc still exchange atomically (the call is in Linux since 3.15).
    // SAFETY: both pointers are valid NUL-terminated strings that outlive the call;
    // renameat2 takes (olddirfd, oldpath, newdirfd, newpath, flags).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
pub(super) fn exchange(_a: &Path, _b: &Path) -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "no atomic exchange",
    ))
}

/// Moves the finished directory `tmp` to `path`, replacing what `existing` says is there.
pub(super) fn install(tmp: &Path, path: &Path, existing: Existing) -> Result<()> {
    if let Existing::Nothing = existing {
        return fs::rename(tmp, path).map_err(|e| Error::io("renaming into place", path, e));
    }
    if exchange(tmp, path).is_ok() {
        // `tmp` now holds the old checkpoint.
        remove_ours(tmp);
        return Ok(());
    }
    // No atomic exchange here: move the old one aside, the new one in, then delete the old one.
    let old = sibling(path, "old");
    fs::rename(path, &old).map_err(|e| Error::io("moving the old checkpoint aside", path, e))?;
    if let Err(e) = fs::rename(tmp, path) {
        let _ = fs::rename(&old, path);
        return Err(Error::io("renaming into place", path, e));
    }
    remove_ours(&old);
    Ok(())
}

/// The name of `path`'s final component, for its hidden siblings.
pub(super) fn base_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "checkpoint".into())
}

/// A unique hidden sibling of `path`: `.<name>.<tag>-<pid>-<n>`.
pub(super) fn sibling(path: &Path, tag: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(
        ".{}.{tag}-{}-{n}",
        base_name(path),
        std::process::id()
    ))
}

/// True if process `pid` may still be running (always true where that cannot be told).
pub(super) fn process_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    if cfg!(target_os = "linux") {
        Path::new("/proc").join(pid.to_string()).exists()
    } else {
        true
    }
}

/// Removes the temporary siblings of `path` (`.<name>.tmp-<pid>-<n>`,
/// `.<name>.old-<pid>-<n>`) that a killed save left behind: only those whose
/// process is gone and that hold nothing but our files.
pub(super) fn remove_stale_siblings(path: &Path) {
    let Some(parent) = path.parent() else { return };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    let prefix = format!(".{}.", base_name(path));
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        let Some(tail) = rest
            .strip_prefix("tmp-")
            .or_else(|| rest.strip_prefix("old-"))
        else {
            continue;
        };
        let Some(pid) = tail
            .split_once('-')
            .and_then(|(pid, n)| n.parse::<u64>().ok().and(pid.parse::<u32>().ok()))
        else {
            continue;
        };
        if process_alive(pid) || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let dir = entry.path();
        let only_ours = fs::read_dir(&dir).is_ok_and(|files| {
            files.flatten().all(|f| {
                f.file_type().is_ok_and(|t| t.is_file())
                    && OUR_FILES.iter().any(|o| f.file_name() == *o)
            })
        });
        if only_ours {
            remove_ours(&dir);
        }
    }
}
