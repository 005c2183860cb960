//! Checkpoint files: named tensors in the `safetensors` format plus a JSON
//! document with everything else, stored together in one directory that is
//! replaced atomically and checked byte for byte when read.
//!
//! A checkpoint at `PATH` is a directory holding exactly two files,
//! [`TENSORS_FILE`] and [`STATE_FILE`]. [`write()`] writes both into a fresh
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
//! bytes. [`read()`] verifies all of them, so a changed digit anywhere — an
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
//! checkpoint::write(&dir, &[("w".to_string(), w.clone())], &serde_json::json!({ "epoch": 3 }))?;
//! let (tensors, state) = checkpoint::read(&dir, &device)?;
//! assert_eq!(tensors[0].1.to_vec::<f32>()?, w.to_vec::<f32>()?);
//! assert_eq!(state["epoch"], 3);
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod encoding;
mod files;
mod training;
mod weights;

pub use training::{load, save, Checkpoint};
pub use weights::{load_safetensors, save_safetensors};

use crate::{Error, Result};
use amp_tensor::{bf16, f16, DType, Device, Tensor};
use encoding::{checksum, damaged_tensors, from_view, hex, seal, to_bytes, verify_seal};
use files::{
    inspect, install, read_regular, remove_ours, remove_stale_siblings, sibling, sync_dir,
    write_synced,
};
use safetensors::tensor::TensorView;
use safetensors::SafeTensors;
use std::collections::{BTreeMap, HashMap};
use std::fs;
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
/// The largest [`STATE_FILE`] that [`read()`] reads (256 MiB).
pub const MAX_STATE_BYTES: u64 = 256 << 20;

/// The files a checkpoint directory holds, and nothing else.
const OUR_FILES: [&str; 2] = [TENSORS_FILE, STATE_FILE];
/// The checksum text written in place of the state file's own checksum while
/// that checksum is computed.
const CHECKSUM_PLACEHOLDER: &str = "0000000000000000";

/// Errors unless [`write()`] may write a checkpoint at `path`: nothing is
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

/// Writes `tensors` and `state` as the checkpoint directory `path`, atomically
/// replacing an earlier checkpoint there (see the module docs). [`STATE_FILE`]
/// holds `{"format", "version", "tensors": {"bytes", "checksum", "each"},
/// "state", "checksum"}`.
pub fn write(
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

/// Reads the checkpoint directory `path`: its tensors (on `device`, sorted by
/// name) and the `state` JSON given to [`write()`]. Every inconsistency is an
/// `Err` that says which part is damaged (see the module docs).
pub fn read(
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
        write(&dir, &tensors[..1], &serde_json::json!({"n": 1})).unwrap();
        write(&dir, &tensors, &serde_json::json!({"n": 2})).unwrap();
        let (loaded, state) = read(&dir, &device).unwrap();
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
        let err = read(&dir, &device).unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");
        write(&dir, &sample(&device), &serde_json::json!({})).unwrap();
        let tensors = dir.join(TENSORS_FILE);
        let bytes = fs::read(&tensors).unwrap();

        fs::write(&tensors, &bytes[..bytes.len() - 10]).unwrap();
        let err = read(&dir, &device).unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");

        // Flipped bits in the last tensor's data: that tensor is named.
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x55;
        fs::write(&tensors, &flipped).unwrap();
        let err = read(&dir, &device).unwrap_err().to_string();
        // (safetensors orders the data by dtype: the last bytes are tensor "c"'s.)
        assert!(
            err.contains("bytes of tensor \"c\" do not match their checksum"),
            "{err}"
        );

        // A damaged header of the tensor file: named as such.
        let mut header = bytes.clone();
        assert_eq!(header[8], b'{');
        header[8] = b'[';
        fs::write(&tensors, &header).unwrap();
        let err = read(&dir, &device).unwrap_err().to_string();
        assert!(
            err.contains("tensors.safetensors is damaged (its header no longer parses)"),
            "{err}"
        );

        fs::write(&tensors, &bytes).unwrap();
        let json = fs::read(dir.join(STATE_FILE)).unwrap();
        fs::write(dir.join(STATE_FILE), &json[..json.len() / 2]).unwrap();
        let err = read(&dir, &device).unwrap_err().to_string();
        assert!(err.contains("not valid JSON"), "{err}");

        fs::remove_file(dir.join(STATE_FILE)).unwrap();
        let err = read(&dir, &device).unwrap_err().to_string();
        assert!(err.contains("state.json"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_state_file_over_the_cap_is_refused_unread() {
        let device = Device::reference();
        let dir = temp("cap");
        write(&dir, &sample(&device), &serde_json::json!({})).unwrap();
        // A sparse file one byte over the cap: refused from its length alone.
        let state = fs::OpenOptions::new()
            .write(true)
            .open(dir.join(STATE_FILE))
            .unwrap();
        state.set_len(MAX_STATE_BYTES + 1).unwrap();
        drop(state);
        let err = read(&dir, &device).unwrap_err().to_string();
        assert!(
            err.contains(&format!(
                "state.json has {} bytes, more than the {MAX_STATE_BYTES} this loader reads",
                MAX_STATE_BYTES + 1
            )),
            "{err}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn another_format_version_is_named_plainly() {
        let device = Device::reference();
        let dir = temp("version");
        write(&dir, &sample(&device), &serde_json::json!({})).unwrap();
        // A correctly sealed state of a newer version: refused by its number.
        let doc = serde_json::json!({"format": FORMAT, "version": 3, "state": {}});
        let body = serde_json::to_vec_pretty(&doc).unwrap();
        fs::write(dir.join(STATE_FILE), seal(&body)).unwrap();
        let err = read(&dir, &device).unwrap_err().to_string();
        assert!(
            err.contains("format version 3") && !err.contains("Some("),
            "{err}"
        );
        // A version-1 checkpoint (no checksum over its state) is named as such.
        let v1 = serde_json::json!({"format": FORMAT, "version": 1, "state": {}});
        fs::write(dir.join(STATE_FILE), serde_json::to_vec(&v1).unwrap()).unwrap();
        let err = read(&dir, &device).unwrap_err().to_string();
        assert!(err.contains("format version 1"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn never_overwrites_something_that_is_not_a_checkpoint() {
        let device = Device::reference();
        let dir = temp("foreign");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("notes.txt"), "keep me").unwrap();
        let err = write(&dir, &sample(&device), &serde_json::json!({}))
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
        assert!(write(&file, &sample(&device), &serde_json::json!({})).is_err());
        assert_eq!(fs::read_to_string(&file).unwrap(), "a file");
        let err = read(&file, &device).unwrap_err().to_string();
        assert!(err.contains("not a checkpoint directory"), "{err}");
        fs::remove_file(&file).unwrap();
    }
}
