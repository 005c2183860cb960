//! Checkpoint files: named tensors in the `safetensors` format plus a JSON
//! document with everything else, stored together in one directory that is
//! replaced atomically.
//!
//! A checkpoint at `PATH` is a directory holding [`TENSORS_FILE`] and
//! [`STATE_FILE`]. [`save`] writes both into a fresh temporary directory next
//! to `PATH`, flushes them to disk, and only then moves the directory into
//! place — with one atomic exchange on Linux, so that at every moment `PATH`
//! holds either the old checkpoint or the new one. The JSON records the
//! tensor file's length and checksum, so a truncated, corrupt or swapped
//! tensor file is detected by [`load`]. Anything at `PATH` that is not a
//! checkpoint is never replaced, and an error leaves `PATH` untouched.
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
use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The tensors' file inside a checkpoint directory.
pub const TENSORS_FILE: &str = "tensors.safetensors";
/// The JSON state's file inside a checkpoint directory.
pub const STATE_FILE: &str = "state.json";
/// The `format` field of every checkpoint's JSON.
pub const FORMAT: &str = "amp-train-checkpoint";
/// The checkpoint format version this crate writes and reads.
pub const VERSION: u64 = 1;

/// FNV-1a, 64 bit: a checksum of the tensor file (detects corruption, not attacks).
fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
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
        StDtype::BOOL => Tensor::from_vec(data.iter().map(|&b| b != 0).collect(), shape, device),
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

/// True if `path` is a directory that looks like a checkpoint (or is empty).
fn is_replaceable(path: &Path) -> bool {
    match fs::read_dir(path) {
        Ok(entries) => {
            let names: Vec<_> = entries.flatten().map(|e| e.file_name()).collect();
            names.is_empty() || names.iter().any(|n| n == STATE_FILE)
        }
        Err(_) => false,
    }
}

/// Atomically exchanges two paths (Linux `renameat2(RENAME_EXCHANGE)`).
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let a = CString::new(a.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    let b = CString::new(b.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: both pointers are valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::renameat2(
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

/// Moves the finished directory `tmp` to `path`, replacing an old checkpoint there.
fn install(tmp: &Path, path: &Path) -> Result<()> {
    if !path.exists() {
        return fs::rename(tmp, path).map_err(|e| Error::io("renaming into place", path, e));
    }
    if exchange(tmp, path).is_ok() {
        // `tmp` now holds the old checkpoint.
        let _ = fs::remove_dir_all(tmp);
        return Ok(());
    }
    // No atomic exchange here: move the old one aside, the new one in, then delete the old one.
    let old = sibling(path, "old");
    fs::rename(path, &old).map_err(|e| Error::io("moving the old checkpoint aside", path, e))?;
    if let Err(e) = fs::rename(tmp, path) {
        let _ = fs::rename(&old, path);
        return Err(Error::io("renaming into place", path, e));
    }
    let _ = fs::remove_dir_all(&old);
    Ok(())
}

/// A unique hidden sibling of `path`: `.<name>.<tag>-<pid>-<n>`.
fn sibling(path: &Path, tag: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "checkpoint".into());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.{tag}-{}-{n}", std::process::id()))
}

/// Writes `tensors` and `state` as the checkpoint directory `path`, atomically
/// replacing an earlier checkpoint there (see the module docs). The JSON file
/// holds `{"format", "version", "tensors_bytes", "tensors_checksum", "state"}`.
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
    if path.exists() && !is_replaceable(path) {
        return Err(Error::checkpoint(
            path,
            format!("exists and is not an amp-train checkpoint (no {STATE_FILE}); refusing to overwrite it"),
        ));
    }
    let mut owned = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let (dtype, bytes) = to_bytes(name, t)?;
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
        "tensors_bytes": tensor_bytes.len(),
        "tensors_checksum": format!("{:016x}", checksum(&tensor_bytes)),
        "state": state,
    });
    let json = serde_json::to_vec_pretty(&doc)
        .map_err(|e| Error::checkpoint(path, format!("serialising state: {e}")))?;

    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(|e| Error::io("creating directory", parent, e))?;
    }
    let tmp = sibling(path, "tmp");
    let result = (|| {
        fs::create_dir(&tmp).map_err(|e| Error::io("creating directory", &tmp, e))?;
        write_synced(&tmp.join(TENSORS_FILE), &tensor_bytes)?;
        write_synced(&tmp.join(STATE_FILE), &json)?;
        sync_dir(&tmp);
        install(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    if let Some(parent) = path.parent() {
        sync_dir(parent);
    }
    result
}

/// Reads the checkpoint directory `path`: its tensors (on `device`, in file
/// order) and the `state` JSON given to [`save`]. Every inconsistency is an
/// `Err` that says what is wrong.
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
    let state_path = path.join(STATE_FILE);
    let json = fs::read(&state_path).map_err(|e| bad(format!("cannot read {STATE_FILE}: {e}")))?;
    let doc: serde_json::Value = serde_json::from_slice(&json).map_err(|e| {
        bad(format!(
            "{STATE_FILE} is not valid JSON (truncated or corrupt?): {e}"
        ))
    })?;
    if doc.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
        return Err(bad(format!(
            "{STATE_FILE} is not an amp-train checkpoint (no \"format\": \"{FORMAT}\")"
        )));
    }
    match doc.get("version").and_then(|v| v.as_u64()) {
        Some(VERSION) => {}
        other => {
            return Err(bad(format!(
                "format version {other:?} is not supported (this build reads version {VERSION})"
            )))
        }
    }
    let tensors_path = path.join(TENSORS_FILE);
    let bytes =
        fs::read(&tensors_path).map_err(|e| bad(format!("cannot read {TENSORS_FILE}: {e}")))?;
    let expected_len = doc.get("tensors_bytes").and_then(|v| v.as_u64());
    if expected_len != Some(bytes.len() as u64) {
        return Err(bad(format!(
            "{TENSORS_FILE} has {} bytes but {STATE_FILE} records {} (truncated or from another checkpoint)",
            bytes.len(),
            expected_len.map_or("none".into(), |n| n.to_string())
        )));
    }
    let expected_sum = doc
        .get("tensors_checksum")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    if expected_sum != format!("{:016x}", checksum(&bytes)) {
        return Err(bad(format!("{TENSORS_FILE} does not match the checksum in {STATE_FILE} (corrupt or from another checkpoint)")));
    }
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| bad(format!("{TENSORS_FILE} is not valid safetensors: {e}")))?;
    let mut tensors = Vec::with_capacity(st.len());
    let mut names: Vec<&str> = st.names();
    names.sort_unstable();
    for name in names {
        let view = st
            .tensor(name)
            .map_err(|e| bad(format!("tensor {name:?}: {e}")))?;
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

        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x55;
        fs::write(&tensors, &flipped).unwrap();
        let err = load(&dir, &device).unwrap_err().to_string();
        assert!(err.contains("checksum"), "{err}");

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
    fn never_overwrites_something_that_is_not_a_checkpoint() {
        let device = Device::reference();
        let dir = temp("foreign");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("notes.txt"), "keep me").unwrap();
        let err = save(&dir, &sample(&device), &serde_json::json!({}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("refusing to overwrite"), "{err}");
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
