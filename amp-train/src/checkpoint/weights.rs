//! A state dict as one safetensors file: `safetensors.torch.save_file` /
//! `load_file` for amp, readable by PyTorch and reading PyTorch's.

use super::encoding::{from_view, to_bytes};
use super::files::{read_regular, sibling, sync_dir, write_synced};
use crate::{Error, Result};
use amp_tensor::{Device, Tensor};
use safetensors::tensor::TensorView;
use safetensors::SafeTensors;
use std::fs;
use std::path::Path;

/// Writes `tensors` (a state dict) as the safetensors file `path`: written
/// beside it, flushed, then renamed into place, so `path` holds the old file
/// or the new one, never half of one. A directory at `path` is refused.
/// Python reads it with `safetensors.torch.load_file(path)`.
pub fn save_safetensors(path: impl AsRef<Path>, tensors: &[(String, Tensor)]) -> Result<()> {
    let path = path.as_ref();
    let bad = |msg: String| Error::checkpoint(path, msg);
    if path.is_dir() || path.file_name().is_none() {
        return Err(bad(
            "is a directory; save_safetensors writes one file (checkpoint::save writes a directory)"
                .into(),
        ));
    }
    let mut owned = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let (dtype, bytes) = to_bytes(name, t)?;
        owned.push((name.clone(), dtype, t.shape(), bytes));
    }
    let mut names: Vec<&str> = owned.iter().map(|(n, ..)| n.as_str()).collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(bad(format!("two tensors are named {:?}", w[0])));
    }
    let views = owned
        .iter()
        .map(|(n, d, s, b)| TensorView::new(*d, s.clone(), b).map(|v| (n.clone(), v)))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("serialising tensors: {e}")))?;
    let bytes = safetensors::serialize(views, None)
        .map_err(|e| bad(format!("serialising tensors: {e}")))?;
    let tmp = sibling(path, "tmp");
    let result = write_synced(&tmp, &bytes)
        .and_then(|()| fs::rename(&tmp, path).map_err(|e| Error::io("renaming", &tmp, e)));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    if let Some(parent) = path.parent() {
        sync_dir(parent);
    }
    result
}

/// Reads the safetensors file `path` (written by [`save_safetensors`] or by
/// Python's `safetensors`) onto `device`, in the file's order of names
/// (sorted). f32, f64, f16, bf16, fp8, i64 and bool tensors are read; other
/// dtypes are an `Err` naming the tensor.
pub fn load_safetensors(path: impl AsRef<Path>, device: &Device) -> Result<Vec<(String, Tensor)>> {
    let path = path.as_ref();
    let bad = |msg: String| Error::checkpoint(path, msg);
    let name = path.display().to_string();
    let bytes = read_regular(path, &name, u64::MAX).map_err(bad)?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| bad(format!("is not a valid safetensors file: {e}")))?;
    let mut names: Vec<&str> = st.names();
    names.sort_unstable();
    let mut out = Vec::with_capacity(names.len());
    for n in names {
        let view = st
            .tensor(n)
            .map_err(|e| bad(format!("tensor {n:?}: {e}")))?;
        let t = from_view(&view, device).map_err(|e| bad(format!("tensor {n:?}: {e}")))?;
        out.push((n.to_string(), t));
    }
    Ok(out)
}
