//! The UCI optical digits set bundled with the crate: 1797 8×8 images,
//! split 1437/360 into training and test rows.

use super::TensorDataset;
use crate::{Error, Result};
use amp_tensor::{DType, Device, Tensor};
use flate2::read::GzDecoder;
use std::io::Read;
use std::sync::OnceLock;

/// Rows of the digits data set.
pub const DIGITS_ROWS: usize = 1797;
/// Rows `0..DIGITS_TRAIN_ROWS` are the training split; the rest (360) the test split.
pub const DIGITS_TRAIN_ROWS: usize = 1437;
/// Pixels per image (8×8).
pub const DIGITS_FEATURES: usize = 64;
/// Classes (the digits 0..9).
pub const DIGITS_CLASSES: usize = 10;

static DIGITS_GZ: &[u8] = include_bytes!("../../data/digits.csv.gz");

/// Parsed digits: pixels scaled by 1/16 (row-major) and labels.
fn parsed_digits() -> Result<&'static (Vec<f64>, Vec<i64>)> {
    type Parsed = std::result::Result<(Vec<f64>, Vec<i64>), String>;
    static PARSED: OnceLock<Parsed> = OnceLock::new();
    PARSED
        .get_or_init(|| {
            let mut text = String::new();
            GzDecoder::new(DIGITS_GZ)
                .read_to_string(&mut text)
                .map_err(|e| format!("decompressing: {e}"))?;
            let mut pixels = Vec::with_capacity(DIGITS_ROWS * DIGITS_FEATURES);
            let mut labels = Vec::with_capacity(DIGITS_ROWS);
            for (row, line) in text.lines().enumerate() {
                let fields: Vec<&str> = line.trim().split(',').collect();
                if fields.len() != DIGITS_FEATURES + 1 {
                    return Err(format!(
                        "row {row}: {} fields, expected {}",
                        fields.len(),
                        DIGITS_FEATURES + 1
                    ));
                }
                for f in &fields[..DIGITS_FEATURES] {
                    let v: u8 = f
                        .parse()
                        .map_err(|_| format!("row {row}: bad pixel {f:?}"))?;
                    if v > 16 {
                        return Err(format!("row {row}: pixel {v} out of 0..=16"));
                    }
                    pixels.push(f64::from(v) / 16.0);
                }
                let label: i64 = fields[DIGITS_FEATURES]
                    .parse()
                    .map_err(|_| format!("row {row}: bad label"))?;
                if !(0..DIGITS_CLASSES as i64).contains(&label) {
                    return Err(format!("row {row}: label {label} out of 0..10"));
                }
                labels.push(label);
            }
            if labels.len() != DIGITS_ROWS {
                return Err(format!("{} rows, expected {DIGITS_ROWS}", labels.len()));
            }
            Ok((pixels, labels))
        })
        .as_ref()
        .map_err(|e| Error::data("digits", e.clone()))
}

/// The UCI optical digits set bundled with the crate (CC BY 4.0, see the
/// repository's `data/README.md`): `(train, test)` with the fixed split — rows
/// `0..1437` train, rows `1437..1797` test, not shuffled before splitting.
/// Each data set holds f32 pixels `[n, 64]` scaled by 1/16 into `[0, 1]` and
/// i64 labels `[n]` in `0..10`.
pub fn digits(device: &Device) -> Result<(TensorDataset, TensorDataset)> {
    let (pixels, labels) = parsed_digits()?;
    let split = |rows: std::ops::Range<usize>| -> Result<TensorDataset> {
        let n = rows.len();
        let x = Tensor::from_f64_slice(
            &pixels[rows.start * DIGITS_FEATURES..rows.end * DIGITS_FEATURES],
            &[n, DIGITS_FEATURES],
            DType::F32,
            device,
        )?;
        let y = Tensor::from_vec(labels[rows].to_vec(), &[n], device)?;
        TensorDataset::new(vec![x, y])
    };
    Ok((
        split(0..DIGITS_TRAIN_ROWS)?,
        split(DIGITS_TRAIN_ROWS..DIGITS_ROWS)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_split_and_scaling() {
        let (train, test) = digits(&Device::reference()).unwrap();
        assert_eq!((train.len(), test.len()), (1437, 360));
        let x = &train.tensors()[0];
        assert_eq!((x.dims(), x.dtype()), (&[1437, 64][..], DType::F32));
        // The first row of the CSV: 0,0,5,13,9,1,0,0,… label 0.
        let row0 = x.narrow(0, 0, 1).unwrap().to_f64_vec().unwrap();
        assert_eq!(
            &row0[..6],
            &[0.0, 0.0, 5.0 / 16.0, 13.0 / 16.0, 9.0 / 16.0, 1.0 / 16.0]
        );
        assert_eq!(train.tensors()[1].to_vec::<i64>().unwrap()[0], 0);
        let all: Vec<f64> = x.to_f64_vec().unwrap();
        assert!(all.iter().all(|v| (0.0..=1.0).contains(v)));
        // Every class appears in both splits.
        for split in [&train, &test] {
            let y = split.tensors()[1].to_vec::<i64>().unwrap();
            for c in 0..10 {
                assert!(y.contains(&c), "class {c} missing");
            }
        }
    }
}
