//! The bytes of a checkpoint: tensors to and from safetensors' little-endian
//! layout, FNV-1a checksums, and the seal that ends [`STATE_FILE`] with a
//! checksum of its own bytes.

use super::*;
use safetensors::tensor::{Dtype as StDtype, TensorView};
use safetensors::SafeTensors;

/// FNV-1a, 64 bit: detects corruption, not attacks.
pub(super) fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

pub(super) fn hex(sum: u64) -> String {
    format!("{sum:016x}")
}

pub(super) fn to_bytes(name: &str, t: &Tensor) -> Result<(StDtype, Vec<u8>)> {
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
                "checkpoint::write",
                format!("tensor {name:?}: dtype {other} cannot be saved"),
            ))
        }
    })
}

pub(super) fn from_view(
    view: &TensorView<'_>,
    device: &Device,
) -> std::result::Result<Tensor, String> {
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

/// Inserts `"checksum": "<hex>"` as the last field of the pretty-printed JSON
/// object `body`, the checksum being that of the whole file with
/// [`CHECKSUM_PLACEHOLDER`] in its place.
pub(super) fn seal(body: &[u8]) -> Vec<u8> {
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
pub(super) fn verify_seal(
    bytes: &[u8],
    doc: &serde_json::Value,
) -> std::result::Result<(), String> {
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

/// Names the tensors whose bytes no longer match their recorded checksums.
pub(super) fn damaged_tensors(bytes: &[u8], each: &serde_json::Value) -> String {
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
