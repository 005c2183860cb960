//! Checkpoint files: named tensors in the `safetensors` format plus a JSON
//! document with everything else, stored together in one directory that is
//! replaced atomically and checked byte for byte when read.
//!
//! A checkpoint at `PATH` is a directory holding exactly two files,
//! [`TENSORS_FILE`] and [`STATE_FILE`]. [`save`] writes both into a fresh
//! temporary directory next to `PATH`, flushes them to disk, and only then
//! moves the directory into place — with one atomic exchange on Linux, so
//! that at every moment `PATH` holds either the old checkpoint or the new one.
//!
//! # Nothing is lost
//!
//! `save` replaces only what is provably a checkpoint: an empty directory, or
//! a directory whose entries are exactly our two file names, with a
//! [`STATE_FILE`] that carries the [`FORMAT`] marker. Anything else at `PATH`
//! (a file, a directory with other files in it, a `state.json` of somebody
//! else's) is refused with an error that lists what is there, and left as it
//! was. The replaced checkpoint is removed file by file — only the two files
//! we write, then the empty directory — never recursively. Temporary
//! directories left by a process killed while saving are removed by the next
//! save to the same path, when their process is gone and they hold nothing
//! but our files.
//!
//! # Every byte is checked
//!
//! [`STATE_FILE`] records the length and an FNV-1a checksum of the tensor
//! file and of every tensor's bytes, and ends with a checksum of its own
//! bytes. [`load`] verifies all of them, so a changed digit anywhere — an
//! epoch count, a hyper-parameter, the loss scale, one weight — is an error
//! that names the damaged part (`state.json`, the tensor file's header, or
//! the tensor), never a resume with different numbers. Files are read only
//! if they are regular files, and [`STATE_FILE`] only up to
//! [`MAX_STATE_BYTES`], so a FIFO or `/dev/zero` in their place is an error,
//! not a hang. Non-finite floats in the state (a NaN loss) are written so that
//! they read back (see `crate::json`).
//!
//! ```
//! use amp_tensor::{DType, Device, Tensor};
//! use amp_train::checkpoint;
//!
//! let device = Device::reference();
//! let dir = std::env::temp_dir().join(format!("amp-train-doc-{}", std::process::id()));
//! let w = Tensor::randn(&[2, 3], DType::F32, &device, 0)?;
//! checkpoint::save(&dir, &[("w".to_string(), w.clone())], &serde_json::json!({ "epoch": 3 }))?;
//! let (tensors, state) = checkpoint::load(&dir, &device)?;
//! assert_eq!(tensors[0].1.to_vec::<f32>()?, w.to_vec::<f32>()?);
//! assert_eq!(state["epoch"], 3);
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::{Error, Result};
use amp_tensor::{bf16, f16, DType, Device, Tensor};
use safetensors::tensor::{Dtype as StDtype, TensorView};
use safetensors::SafeTensors;
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The tensors' file inside a checkpoint directory.
pub const TENSORS_FILE: &str = "tensors.safetensors";
/// The JSON state's file inside a checkpoint directory.
pub const STATE_FILE: &str = "state.json";
/// The `format` field of every checkpoint's JSON: the marker that makes a
/// directory ours to replace.
pub const FORMAT: &str = "amp-train-checkpoint";
/// The checkpoint format version this crate writes and reads.
pub const VERSION: u64 = 2;
/// The largest [`STATE_FILE`] that [`load`] reads (256 MiB).
pub const MAX_STATE_BYTES: u64 = 256 << 20;

/// The files a checkpoint directory holds, and nothing else.
const OUR_FILES: [&str; 2] = [TENSORS_FILE, STATE_FILE];
/// The checksum text written in place of the state file's own checksum while
/// that checksum is computed.
const CHECKSUM_PLACEHOLDER: &str = "0000000000000000";

/// FNV-1a, 64 bit: detects corruption, not attacks.
fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn hex(sum: u64) -> String {
    format!("{sum:016x}")
}

fn to_bytes(name: &str, t: &Tensor) -> Result<(StDtype, Vec<u8>)> {
    fn le<T, const N: usize>(v: Vec<T>, f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
        v.into_iter().flat_map(f).collect()
    }
    Ok(match t.dtype() {
        DType::F64 => (StDtype::F64, le(t.to_vec::<f64>()?, f64::to_le_bytes)),
        DType::F32 => (StDtype::F32, le(t.to_vec::<f32>()?, f32::to_le_bytes)),
        DType::F16 => (
            StDtype::F16,
            le(t.to_vec::<f16>()?, |x| x.to_bits().to_le_bytes()),
        ),
        DType::BF16 => (
            StDtype::BF16,
            le(t.to_vec::<bf16>()?, |x| x.to_bits().to_le_bytes()),
        ),
        DType::I64 => (StDtype::I64, le(t.to_vec::<i64>()?, i64::to_le_bytes)),
        DType::U8 => (StDtype::U8, t.to_vec::<u8>()?),
        DType::Bool => (StDtype::BOOL, le(t.to_vec::<bool>()?, |b| [u8::from(b)])),
        other => {
            return Err(Error::data(
                "checkpoint::save",
                format!("tensor {name:?}: dtype {other} cannot be saved"),
            ))
        }
    })
}

fn from_view(view: &TensorView<'_>, device: &Device) -> std::result::Result<Tensor, String> {
    let data = view.data();
    let shape = view.shape();
    fn chunks<const N: usize>(data: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
        data.chunks_exact(N)
            .map(|c| c.try_into().expect("exact chunk"))
    }
    let t = match view.dtype() {
        StDtype::F64 => Tensor::from_vec(
            chunks(data).map(f64::from_le_bytes).collect(),
            shape,
            device,
        ),
        StDtype::F32 => Tensor::from_vec(
            chunks(data).map(f32::from_le_bytes).collect(),
            shape,
            device,
        ),
        StDtype::F16 => Tensor::from_vec(
            chunks(data)
                .map(|c| f16::from_bits(u16::from_le_bytes(c)))
                .collect(),
            shape,
            device,
        ),
        StDtype::BF16 => Tensor::from_vec(
            chunks(data)
                .map(|c| bf16::from_bits(u16::from_le_bytes(c)))
                .collect(),
            shape,
            device,
        ),
        StDtype::I64 => Tensor::from_vec(
            chunks(data).map(i64::from_le_bytes).collect(),
            shape,
            device,
        ),
        StDtype::U8 => Tensor::from_vec(data.to_vec(), shape, device),
        StDtype::BOOL => {
            if data.iter().any(|&b| b > 1) {
                return Err("a bool tensor holds a byte other than 0 or 1".into());
            }
            Tensor::from_vec(data.iter().map(|&b| b != 0).collect(), shape, device)
        }
        other => return Err(format!("unsupported dtype {other:?}")),
    };
    t.map_err(|e| e.to_string())
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = fs::File::create(path).map_err(|e| Error::io("creating", path, e))?;
    f.write_all(bytes)
        .map_err(|e| Error::io("writing", path, e))?;
    f.sync_all().map_err(|e| Error::io("syncing", path, e))
}

fn sync_dir(dir: &Path) {
    // Best effort: directory fsync is not supported everywhere.
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Opens `path` for reading without blocking on a FIFO, and only if it is a
/// regular file; returns it with its length.
fn open_regular(path: &Path) -> std::io::Result<(fs::File, u64)> {
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
fn read_regular(path: &Path, name: &str, limit: u64) -> std::result::Result<Vec<u8>, String> {
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
enum Existing {
    /// Nothing: the checkpoint is created.
    Nothing,
    /// An empty directory or one of our checkpoints: it may be replaced.
    Ours,
}

/// Decides whether `path` may be replaced, or says why not.
fn inspect(path: &Path) -> Result<Existing> {
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

/// Errors unless [`save`] may write a checkpoint at `path`: nothing is
/// there, or an empty directory, or a checkpoint of ours (see the module
/// docs). Changes nothing. A training run calls it before its first epoch.
pub fn check_target(path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    if path.file_name().is_none() {
        return Err(Error::checkpoint(
            path,
            "the path needs a final component to name the checkpoint directory",
        ));
    }
    inspect(path).map(|_| ())
}

/// Removes a checkpoint directory that is ours: our two files, then the
/// directory if it is then empty. Never recursive; best effort.
fn remove_ours(dir: &Path) {
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
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
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
fn exchange(_a: &Path, _b: &Path) -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "no atomic exchange",
    ))
}

/// Moves the finished directory `tmp` to `path`, replacing what `existing` says is there.
fn install(tmp: &Path, path: &Path, existing: Existing) -> Result<()> {
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
fn base_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "checkpoint".into())
}

/// A unique hidden sibling of `path`: `.<name>.<tag>-<pid>-<n>`.
fn sibling(path: &Path, tag: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(
        ".{}.{tag}-{}-{n}",
        base_name(path),
        std::process::id()
    ))
}

/// True if process `pid` may still be running (always true where that cannot be told).
fn process_alive(pid: u32) -> bool {
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
fn remove_stale_siblings(path: &Path) {
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

/// Inserts `"checksum": "<hex>"` as the last field of the pretty-printed JSON
/// object `body`, the checksum being that of the whole file with
/// [`CHECKSUM_PLACEHOLDER`] in its place.
fn seal(body: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(body);
    let open = text
        .trim_end()
        .strip_suffix('}')
        .unwrap_or(&text)
        .trim_end();
    let with = |sum: &str| format!("{open},\n  \"checksum\": \"{sum}\"\n}}\n").into_bytes();
    let sum = checksum(&with(CHECKSUM_PLACEHOLDER));
    with(&hex(sum))
}

/// Checks the checksum that [`seal`] wrote into `bytes` (whose parse is `doc`).
fn verify_seal(bytes: &[u8], doc: &serde_json::Value) -> std::result::Result<(), String> {
    let damaged = |why: &str| format!("{STATE_FILE} is damaged ({why})");
    let Some(sum) = doc.get("checksum").and_then(|c| c.as_str()) else {
        return Err(damaged("it has no checksum"));
    };
    let field = format!("\"checksum\": \"{sum}\"");
    let text = std::str::from_utf8(bytes).map_err(|_| damaged("not UTF-8"))?;
    let Some(at) = text.rfind(&field) else {
        return Err(damaged("its checksum field was rewritten"));
    };
    let mut unsealed = text.as_bytes().to_vec();
    let start = at + "\"checksum\": \"".len();
    unsealed.splice(start..start + sum.len(), CHECKSUM_PLACEHOLDER.bytes());
    if hex(checksum(&unsealed)) != sum {
        return Err(damaged(
            "its checksum does not match its contents: a value in it was changed",
        ));
    }
    Ok(())
}

/// Writes `tensors` and `state` as the checkpoint directory `path`, atomically
/// replacing an earlier checkpoint there (see the module docs). [`STATE_FILE`]
/// holds `{"format", "version", "tensors": {"bytes", "checksum", "each"},
/// "state", "checksum"}`.
pub fn save(
    path: impl AsRef<Path>,
    tensors: &[(String, Tensor)],
    state: &serde_json::Value,
) -> Result<()> {
    let path = path.as_ref();
    if path.file_name().is_none() {
        return Err(Error::checkpoint(
            path,
            "the path needs a final component to name the checkpoint directory",
        ));
    }
    let existing = inspect(path)?;
    let mut owned = Vec::with_capacity(tensors.len());
    let mut each = BTreeMap::new();
    for (name, t) in tensors {
        let (dtype, bytes) = to_bytes(name, t)?;
        if each.insert(name.clone(), hex(checksum(&bytes))).is_some() {
            return Err(Error::checkpoint(
                path,
                format!("two tensors are named {name:?}"),
            ));
        }
        owned.push((name.clone(), dtype, t.shape(), bytes));
    }
    let views = owned
        .iter()
        .map(|(n, d, s, b)| TensorView::new(*d, s.clone(), b).map(|v| (n.clone(), v)))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::checkpoint(path, format!("serialising tensors: {e}")))?;
    let metadata = HashMap::from([("format".to_string(), FORMAT.to_string())]);
    let tensor_bytes = safetensors::serialize(views, Some(metadata))
        .map_err(|e| Error::checkpoint(path, format!("serialising tensors: {e}")))?;
    let doc = serde_json::json!({
        "format": FORMAT,
        "version": VERSION,
        "tensors": {
            "bytes": tensor_bytes.len(),
            "checksum": hex(checksum(&tensor_bytes)),
            "each": each,
        },
        "state": state,
    });
    let body = serde_json::to_vec_pretty(&doc)
        .map_err(|e| Error::checkpoint(path, format!("serialising state: {e}")))?;
    let json = seal(&body);

    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(|e| Error::io("creating directory", parent, e))?;
    }
    remove_stale_siblings(path);
    let tmp = sibling(path, "tmp");
    let result = (|| {
        fs::create_dir(&tmp).map_err(|e| Error::io("creating directory", &tmp, e))?;
        write_synced(&tmp.join(TENSORS_FILE), &tensor_bytes)?;
        write_synced(&tmp.join(STATE_FILE), &json)?;
        sync_dir(&tmp);
        install(&tmp, path, existing)
    })();
    if result.is_err() {
        remove_ours(&tmp);
    }
    if let Some(parent) = path.parent() {
        sync_dir(parent);
    }
    result
}

/// Names the tensors whose bytes no longer match their recorded checksums.
fn damaged_tensors(bytes: &[u8], each: &serde_json::Value) -> String {
    let Ok(st) = SafeTensors::deserialize(bytes) else {
        return format!("{TENSORS_FILE} is damaged (its header no longer parses)");
    };
    let mut names: Vec<String> = st
        .tensors()
        .into_iter()
        .filter(|(name, view)| {
            each.get(name).and_then(|s| s.as_str()) != Some(&hex(checksum(view.data())))
        })
        .map(|(name, _)| name)
        .collect();
    names.sort();
    if names.is_empty() {
        format!("{TENSORS_FILE} is damaged (in its header: the tensors' bytes are intact)")
    } else {
        format!(
            "{TENSORS_FILE} is damaged: the bytes of tensor{} {} do not match their checksum{}",
            if names.len() > 1 { "s" } else { "" },
            names
                .iter()
                .map(|n| format!("{n:?}"))
                .collect::<Vec<_>>()
                .join(", "),
            if names.len() > 1 { "s" } else { "" },
        )
    }
}

/// Reads the checkpoint directory `path`: its tensors (on `device`, sorted by
/// name) and the `state` JSON given to [`save`]. Every inconsistency is an
/// `Err` that says which part is damaged (see the module docs).
pub fn load(
    path: impl AsRef<Path>,
    device: &Device,
) -> Result<(Vec<(String, Tensor)>, serde_json::Value)> {
    let path = path.as_ref();
    let bad = |msg: String| Error::checkpoint(path, msg);
    if !path.exists() {
        return Err(bad("does not exist".into()));
    }
    if !path.is_dir() {
        return Err(bad(format!("is not a checkpoint directory (expected a directory with {TENSORS_FILE} and {STATE_FILE})")));
    }
    let json = read_regular(&path.join(STATE_FILE), STATE_FILE, MAX_STATE_BYTES).map_err(bad)?;
    let doc: serde_json::Value = serde_json::from_slice(&json).map_err(|e| {
        bad(format!(
            "{STATE_FILE} is damaged (not valid JSON: truncated or corrupt?): {e}"
        ))
    })?;
    if doc.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
        return Err(bad(format!(
            "{STATE_FILE} is not an amp-train checkpoint (no \"format\": \"{FORMAT}\")"
        )));
    }
    if doc.get("checksum").is_none() && doc.get("version").and_then(|v| v.as_u64()) == Some(1) {
        return Err(bad(format!(
            "was written by an older amp-train (checkpoint format version 1, without checksums over its state); \
             this build reads version {VERSION} only: start the run afresh"
        )));
    }
    verify_seal(&json, &doc).map_err(bad)?;
    match doc.get("version") {
        Some(v) if v.as_u64() == Some(VERSION) => {}
        Some(v) => {
            return Err(bad(format!(
                "has checkpoint format version {v}, but this build reads version {VERSION} only"
            )))
        }
        None => return Err(bad(format!("{STATE_FILE} has no format version"))),
    }
    let record = &doc["tensors"];
    let expected_len = record.get("bytes").and_then(|v| v.as_u64());
    let tensors_path = path.join(TENSORS_FILE);
    let bytes =
        read_regular(&tensors_path, TENSORS_FILE, expected_len.unwrap_or(0)).map_err(|e| {
            bad(format!(
                "{e} ({STATE_FILE} records {} bytes: from another checkpoint?)",
                expected_len.map_or("none".into(), |n| n.to_string())
            ))
        })?;
    if expected_len != Some(bytes.len() as u64) {
        return Err(bad(format!(
            "{TENSORS_FILE} has {} bytes but {STATE_FILE} records {} (truncated or from another checkpoint)",
            bytes.len(),
            expected_len.map_or("none".into(), |n| n.to_string())
        )));
    }
    if record.get("checksum").and_then(|v| v.as_str()) != Some(&hex(checksum(&bytes))) {
        return Err(bad(damaged_tensors(&bytes, &record["each"])));
    }
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| bad(format!("{TENSORS_FILE} is not valid safetensors: {e}")))?;
    let mut tensors = Vec::with_capacity(st.len());
    let mut names: Vec<&str> = st.names();
    names.sort_unstable();
    let recorded = record["each"].as_object().map_or(0, |m| m.len());
    if recorded != names.len() {
        return Err(bad(format!(
            "{TENSORS_FILE} has {} tensors but {STATE_FILE} records {recorded}",
            names.len()
        )));
    }
    for name in names {
        let view = st
            .tensor(name)
            .map_err(|e| bad(format!("tensor {name:?}: {e}")))?;
        if record["each"].get(name).and_then(|s| s.as_str()) != Some(&hex(checksum(view.data()))) {
            return Err(bad(format!(
                "tensor {name:?} does not match its checksum in {STATE_FILE}"
            )));
        }
        let t = from_view(&view, device).map_err(|e| bad(format!("tensor {name:?}: {e}")))?;
        tensors.push((name.to_string(), t));
    }
    let state = doc
        .get("state")
        .cloned()
        .ok_or_else(|| bad(format!("{STATE_FILE} has no \"state\" field")))?;
    Ok((tensors, state))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("amp-train-ckpt-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn sample(device: &Device) -> Vec<(String, Tensor)> {
        vec![
            (
                "a".into(),
                Tensor::randn(&[3, 4], DType::F32, device, 1).unwrap(),
            ),
            (
                "b".into(),
                Tensor::randn(&[5], DType::BF16, device, 2).unwrap(),
            ),
            (
                "c".into(),
                Tensor::randn(&[2], DType::F16, device, 3).unwrap(),
            ),
            (
                "d".into(),
                Tensor::from_vec(vec![7i64, -1], &[2], device).unwrap(),
            ),
            (
                "e".into(),
                Tensor::randn(&[2, 2], DType::F64, device, 4).unwrap(),
            ),
        ]
    }

    #[test]
    fn round_trip_is_bit_exact_and_replaces_old_checkpoints() {
        let device = Device::reference();
        let dir = temp("roundtrip");
        let tensors = sample(&device);
        save(&dir, &tensors[..1], &serde_json::json!({"n": 1})).unwrap();
        save(&dir, &tensors, &serde_json::json!({"n": 2})).unwrap();
        let (loaded, state) = load(&dir, &device).unwrap();
        assert_eq!(state["n"], 2);
        assert_eq!(loaded.len(), tensors.len());
        for ((n1, t1), (n2, t2)) in tensors.iter().zip(&loaded) {
            assert_eq!((n1, t1.dims(), t1.dtype()), (n2, t2.dims(), t2.dtype()));
            assert_eq!(t1.to_f64_vec().unwrap(), t2.to_f64_vec().unwrap());
        }
        // No temporary directories are left behind.
        let parent = dir.parent().unwrap();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let leftovers = fs::read_dir(parent).unwrap().flatten().filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!(".{name}."))
        });
        assert_eq!(leftovers.count(), 0);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_truncated_and_corrupt_checkpoints_are_errors() {
        let device = Device::reference();
        let dir = temp("corrupt");
        let err = load(&dir, &device).unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");
        save(&dir, &sample(&device), &serde_json::json!({})).unwrap();
        let tensors = dir.join(TENSORS_FILE);
        let bytes = fs::read(&tensors).unwrap();

        fs::write(&tensors, &bytes[..bytes.len() - 10]).unwrap();
        let err = load(&dir, &device).unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");

        // Flipped bits in the last tensor's data: that tensor is named.
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x55;
        fs::write(&tensors, &flipped).unwrap();
        let err = load(&dir, &device).unwrap_err().to_string();
        // (safetensors orders the data by dtype: the last bytes are tensor "c"'s.)
        assert!(
            err.contains("bytes of tensor \"c\" do not match their checksum"),
            "{err}"
        );

        fs::write(&tensors, &bytes).unwrap();
        let json = fs::read(dir.join(STATE_FILE)).unwrap();
        fs::write(dir.join(STATE_FILE), &json[..json.len() / 2]).unwrap();
        let err = load(&dir, &device).unwrap_err().to_string();
        assert!(err.contains("not valid JSON"), "{err}");

        fs::remove_file(dir.join(STATE_FILE)).unwrap();
        let err = load(&dir, &device).unwrap_err().to_string();
        assert!(err.contains("state.json"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn another_format_version_is_named_plainly() {
        let device = Device::reference();
        let dir = temp("version");
        save(&dir, &sample(&device), &serde_json::json!({})).unwrap();
        // A correctly sealed state of a newer version: refused by its number.
        let doc = serde_json::json!({"format": FORMAT, "version": 3, "state": {}});
        let body = serde_json::to_vec_pretty(&doc).unwrap();
        fs::write(dir.join(STATE_FILE), seal(&body)).unwrap();
        let err = load(&dir, &device).unwrap_err().to_string();
        assert!(
            err.contains("format version 3") && !err.contains("Some("),
            "{err}"
        );
        // A version-1 checkpoint (no checksum over its state) is named as such.
        let v1 = serde_json::json!({"format": FORMAT, "version": 1, "state": {}});
        fs::write(dir.join(STATE_FILE), serde_json::to_vec(&v1).unwrap()).unwrap();
        let err = load(&dir, &device).unwrap_err().to_string();
        assert!(err.contains("format version 1"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn never_overwrites_something_that_is_not_a_checkpoint() {
        let device = Device::reference();
        let dir = temp("foreign");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("notes.txt"), "keep me").unwrap();
        let err = save(&dir, &sample(&device), &serde_json::json!({}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("refusing to replace"), "{err}");
        assert_eq!(
            fs::read_to_string(dir.join("notes.txt")).unwrap(),
            "keep me"
        );
        fs::remove_dir_all(&dir).unwrap();

        let file = temp("file");
        fs::write(&file, "a file").unwrap();
        assert!(save(&file, &sample(&device), &serde_json::json!({})).is_err());
        assert_eq!(fs::read_to_string(&file).unwrap(), "a file");
        let err = load(&file, &device).unwrap_err().to_string();
        assert!(err.contains("not a checkpoint directory"), "{err}");
        fs::remove_file(&file).unwrap();
    }
}
