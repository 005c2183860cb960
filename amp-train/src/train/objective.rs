//! What the trainer minimises: an [`Objective`] turns the model's output and
//! the batch into a scalar loss, and (for classification) counts correct
//! predictions for the evaluation's accuracy.

use crate::Result;
use amp_tensor::ops::{self, Reduction};
use amp_tensor::Tensor;

/// The loss the trainer minimises, computed inside the autocast region from
/// the model's output (`model.forward(&batch[0])`) and the whole batch.
///
/// [`CrossEntropy`] (labels in `batch[1]`) and [`MeanSquaredError`] (targets
/// in `batch[1]`) cover the usual cases; any closure
/// `Fn(&Tensor, &[Tensor]) -> Result<Tensor>` is an objective too:
///
/// ```
/// use amp_tensor::{ops, Tensor};
/// use amp_train::train::Objective;
///
/// // Mean absolute error against batch[1].
/// let mae = |output: &Tensor, batch: &[Tensor]| -> amp_train::Result<Tensor> {
///     Ok(output.sub(&batch[1])?.abs()?.mean_all()?)
/// };
/// assert_eq!(Objective::name(&mae), "loss");
/// ```
pub trait Objective {
    /// The loss's name, for the report and the plot's axis.
    fn name(&self) -> &str {
        "loss"
    }

    /// The scalar loss of `output` on `batch`.
    fn loss(&self, output: &Tensor, batch: &[Tensor]) -> Result<Tensor>;

    /// `(correct, counted)` predictions in this batch, for the evaluation's
    /// accuracy; `None` (the default) when accuracy means nothing here.
    fn correct(&self, output: &Tensor, batch: &[Tensor]) -> Result<Option<(usize, usize)>> {
        let _ = (output, batch);
        Ok(None)
    }
}

impl<F> Objective for F
where
    F: Fn(&Tensor, &[Tensor]) -> Result<Tensor>,
{
    fn loss(&self, output: &Tensor, batch: &[Tensor]) -> Result<Tensor> {
        self(output, batch)
    }
}

/// The batch's second tensor, or an `Err` naming the objective.
fn targets<'b>(what: &'static str, batch: &'b [Tensor]) -> Result<&'b Tensor> {
    batch.get(1).ok_or_else(|| {
        crate::Error::data(
            what,
            format!(
                "the batch has {} tensor(s); expected the inputs and the targets",
                batch.len()
            ),
        )
    })
}

/// Cross-entropy of logits `[..., C]` against i64 class labels `[...]` in
/// `batch[1]` (`torch.nn.functional.cross_entropy`, mean over every label):
/// a classifier's `[N, C]` against `[N]`, or a language model's `[B, T, V]`
/// against `[B, T]`. Accuracy is the share of labels that are the argmax.
#[derive(Debug, Clone, Copy, Default)]
pub struct CrossEntropy;

impl CrossEntropy {
    /// `output` as `[rows, C]` and the labels as `[rows]`.
    fn flat(output: &Tensor, labels: &Tensor) -> Result<(Tensor, Tensor)> {
        let classes = *output.dims().last().unwrap_or(&1);
        let rows = output.numel() / classes.max(1);
        if labels.numel() != rows || output.dims().len() != labels.dims().len() + 1 {
            return Err(crate::Error::data(
                "CrossEntropy",
                format!(
                    "logits {:?} ({}) need labels of shape {:?}, got {:?} ({})",
                    output.dims(),
                    output.dtype(),
                    &output.dims()[..output.dims().len().saturating_sub(1)],
                    labels.dims(),
                    labels.dtype()
                ),
            ));
        }
        Ok((output.reshape(&[rows, classes])?, labels.reshape(&[rows])?))
    }
}

impl Objective for CrossEntropy {
    fn name(&self) -> &str {
        "cross-entropy loss"
    }

    fn loss(&self, output: &Tensor, batch: &[Tensor]) -> Result<Tensor> {
        let (logits, labels) = Self::flat(output, targets("CrossEntropy", batch)?)?;
        Ok(ops::cross_entropy(&logits, &labels)?)
    }

    fn correct(&self, output: &Tensor, batch: &[Tensor]) -> Result<Option<(usize, usize)>> {
        let (logits, labels) = Self::flat(output, targets("CrossEntropy", batch)?)?;
        let predicted = logits.argmax(-1, false)?.to_vec::<i64>()?;
        let labels = labels.to_vec::<i64>()?;
        let correct = predicted
            .iter()
            .zip(&labels)
            .filter(|(p, l)| p == l)
            .count();
        Ok(Some((correct, labels.len())))
    }
}

/// Mean squared error against the targets in `batch[1]`
/// (`torch.nn.functional.mse_loss`); no accuracy.
#[derive(Debug, Clone, Copy, Default)]
pub struct MeanSquaredError;

impl Objective for MeanSquaredError {
    fn name(&self) -> &str {
        "mean squared error"
    }

    fn loss(&self, output: &Tensor, batch: &[Tensor]) -> Result<Tensor> {
        let target = targets("MeanSquaredError", batch)?;
        Ok(ops::mse_loss(output, target, Reduction::Mean)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amp_tensor::{DType, Device};

    fn t(values: &[f64], dims: &[usize], dtype: DType) -> Tensor {
        Tensor::from_f64_slice(values, dims, dtype, &Device::reference()).unwrap()
    }

    #[test]
    fn cross_entropy_flattens_sequences_and_counts_argmax_hits() {
        // [B=1, T=2, V=3] logits against [1, 2] labels.
        let logits = t(&[2.0, 0.0, 0.0, 0.0, 0.0, 3.0], &[1, 2, 3], DType::F32);
        let labels = t(&[0.0, 1.0], &[1, 2], DType::I64);
        let batch = [logits.clone(), labels];
        let loss = CrossEntropy
            .loss(&logits, &batch)
            .unwrap()
            .scalar_f64()
            .unwrap();
        // Exact f64: mean of -log softmax at the labels.
        let lse = |v: &[f64]| v.iter().map(|x| x.exp()).sum::<f64>().ln();
        let want = ((lse(&[2.0, 0.0, 0.0]) - 2.0) + (lse(&[0.0, 0.0, 3.0]) - 0.0)) / 2.0;
        assert!((loss - want).abs() < 1e-6, "{loss} vs {want}");
        assert_eq!(CrossEntropy.correct(&logits, &batch).unwrap(), Some((1, 2)));
    }

    #[test]
    fn mismatched_labels_and_missing_targets_are_errors() {
        let logits = t(&[0.0; 6], &[2, 3], DType::F32);
        let labels = t(&[0.0; 3], &[3], DType::I64);
        let err = CrossEntropy
            .loss(&logits, &[logits.clone(), labels])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("CrossEntropy") && err.contains("[2, 3]") && err.contains("[3]"),
            "{err}"
        );
        let err = MeanSquaredError
            .loss(&logits, std::slice::from_ref(&logits))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("MeanSquaredError") && err.contains("1 tensor"),
            "{err}"
        );
    }

    #[test]
    fn mean_squared_error_matches_f64() {
        let out = t(&[1.0, 2.0, 4.0], &[3], DType::F32);
        let target = t(&[0.0, 2.0, 1.0], &[3], DType::F32);
        let loss = MeanSquaredError
            .loss(&out, &[out.clone(), target])
            .unwrap()
            .scalar_f64()
            .unwrap();
        assert!((loss - 10.0 / 3.0).abs() < 1e-6);
        assert_eq!(MeanSquaredError.correct(&out, &[]).unwrap(), None);
    }
}
