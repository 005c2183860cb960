//! Op accuracy: every primitive and composite op × dtype × backend, on seeded
//! inputs with realistic and adversarial value ranges, against the reference
//! backend computing in f64 from the same (already rounded) inputs.
//!
//! The error measured is therefore the op's own error: accumulation order,
//! accumulation precision and the final rounding to the output dtype.

use amp_tensor::ops::{self, GeluApprox};
use amp_tensor::{DType, Device, Result, Tensor};
pub use amp_testkit::NormTolerance;

mod cases;
use cases::*;

/// One op × case × dtype × backend measurement.
#[derive(Debug, Clone)]
pub struct OpRow {
    /// The op (the table is grouped by it).
    pub op: &'static str,
    /// The input case (shape, value range).
    pub case: String,
    /// Compute dtype.
    pub dtype: DType,
    /// Backend (and ISA path) that computed the result.
    pub backend: String,
    /// Output elements compared.
    pub n: usize,
    /// Largest absolute error.
    pub max_abs: f64,
    /// Largest elementwise relative error (over reference values above the dtype's tiny).
    pub max_rel: f64,
    /// Norm-wise relative error ‖out − ref‖ / ‖ref‖.
    pub norm_rel: f64,
    /// Largest error in ulps of the output dtype at the reference value, over
    /// outputs at least 2⁻²⁰ of the largest.
    pub ulps: f64,
    /// Outputs that are inf or NaN where the reference is finite (or vice versa).
    pub nan_inf: usize,
    /// The tolerance applied.
    pub tolerance: NormTolerance,
    /// Whether the row passed.
    pub pass: bool,
    /// Why it failed, if it did.
    pub note: Option<String>,
}

/// A backend under test: its label and device.
pub struct Backend {
    /// Label in the table (`"reference"`, `"cpu/avx512"`, `"cuda:0"`).
    pub label: String,
    /// The device.
    pub device: Device,
}

/// ulp of `dtype` at magnitude `x` (the spacing of representable values there).
fn ulp(dtype: DType, x: f64) -> f64 {
    let Ok(info) = dtype.finfo() else { return 1.0 };
    let x = x.abs().max(info.smallest_normal);
    let e = x.log2().floor();
    2f64.powf(e) * info.eps
}

/// Compares `out` (any dtype) with the f64 reference.
pub fn compare(
    out: &[f64],
    reference: &[f64],
    dtype: DType,
    tolerance: NormTolerance,
) -> (OpRow, bool) {
    let mut row = OpRow {
        op: "",
        case: String::new(),
        dtype,
        backend: String::new(),
        n: out.len(),
        max_abs: 0.0,
        max_rel: 0.0,
        norm_rel: 0.0,
        ulps: 0.0,
        nan_inf: 0,
        tolerance,
        pass: true,
        note: None,
    };
    if out.len() != reference.len() {
        row.pass = false;
        row.note = Some(format!(
            "{} outputs for {} reference values",
            out.len(),
            reference.len()
        ));
        return (row, false);
    }
    let tiny = dtype.finfo().map(|f| f.smallest_normal).unwrap_or(0.0);
    // ulps are reported over the significant outputs only (|ref| ≥ 2⁻²⁰ of the
    // largest): a softmax tail of 1e-30 has an ulp of 1e-37, and an absolute
    // error there far below anything that matters would read as millions of ulps.
    let significant = reference
        .iter()
        .filter(|r| r.is_finite())
        .fold(0.0f64, |m, r| m.max(r.abs()))
        * 2f64.powi(-20);
    let (mut diff2, mut ref2) = (0.0, 0.0);
    for (&o, &r) in out.iter().zip(reference) {
        if o.is_finite() != r.is_finite() || o.is_nan() != r.is_nan() {
            row.nan_inf += 1;
            continue;
        }
        if !r.is_finite() {
            if o != r && !(o.is_nan() && r.is_nan()) {
                row.nan_inf += 1;
            }
            continue;
        }
        let d = (o - r).abs();
        row.max_abs = row.max_abs.max(d);
        if r.abs() > tiny {
            row.max_rel = row.max_rel.max(d / r.abs());
        }
        if r.abs() >= significant {
            row.ulps = row.ulps.max(d / ulp(dtype, r));
        }
        diff2 += d * d;
        ref2 += r * r;
    }
    row.norm_rel = if ref2 > 0.0 {
        (diff2 / ref2).sqrt()
    } else {
        diff2.sqrt()
    };
    let bound = tolerance.rel * ref2.sqrt() + tolerance.abs * (out.len() as f64).sqrt();
    let ok = row.nan_inf == 0 && diff2.sqrt() <= bound;
    if row.nan_inf > 0 {
        row.note = Some(format!(
            "{} outputs non-finite where the reference is not (or differently)",
            row.nan_inf
        ));
    } else if !ok {
        row.note = Some(format!(
            "norm-wise error {:.3e} over tolerance {:.1e}",
            row.norm_rel, tolerance.rel
        ));
    }
    row.pass = ok;
    (row, ok)
}

/// A failed row for an op that returned an error instead of a result.
fn error_row(dtype: DType, tolerance: NormTolerance, error: &amp_tensor::Error) -> OpRow {
    let (mut row, _) = compare(&[], &[], dtype, tolerance);
    row.pass = false;
    row.note = Some(format!("error: {error}"));
    row
}

/// An op under test: builds its output from inputs already on the device.
type OpFn = fn(&[Tensor]) -> Result<Tensor>;

/// Runs every case in `dtype` on `backend`; one row per case.
fn run_case(case: &Case, dtype: DType, backend: &Backend) -> OpRow {
    let reference = Device::reference();
    let build = |device: &Device, dt: DType| -> Result<Vec<Tensor>> {
        let mut ts = Vec::new();
        for (v, shape) in &case.inputs {
            // Round the inputs to the dtype under test first, so both sides see the same values.
            let rounded = Tensor::from_f64_slice(v, shape, dtype, &reference)?.to_f64_vec()?;
            ts.push(Tensor::from_f64_slice(&rounded, shape, dt, device)?);
        }
        for (v, shape) in &case.index_inputs {
            ts.push(Tensor::from_vec(v.clone(), shape, device)?);
        }
        Ok(ts)
    };
    let result = (|| -> Result<(Vec<f64>, Vec<f64>)> {
        let exact = (case.f)(&build(&reference, DType::F64)?)?.to_f64_vec()?;
        let out = (case.f)(&build(&backend.device, dtype)?)?;
        if out.dtype() != dtype {
            return Err(amp_tensor::Error::DTypeMismatch {
                op: case.op,
                lhs: dtype,
                rhs: out.dtype(),
            });
        }
        Ok((out.to_f64_vec()?, exact))
    })();
    let mut row = match result {
        Ok((out, exact)) => compare(&out, &exact, dtype, NormTolerance::for_dtype(dtype)).0,
        Err(e) => error_row(dtype, NormTolerance::for_dtype(dtype), &e),
    };
    row.op = case.op;
    row.case = case.name.clone();
    row.backend = backend.label.clone();
    row
}

/// f32 → dtype casts on the backend, bit-exact against amp-dtype's scalar conversion.
fn cast_rows(backend: &Backend) -> Vec<OpRow> {
    let reference = Device::reference();
    let mut rows = Vec::new();
    // Every 97th f32 bit pattern (finite and not), plus specials.
    let mut values: Vec<f32> = (0..(1u64 << 32))
        .step_by(97 * 4099)
        .map(|b| f32::from_bits(b as u32))
        .collect();
    values.extend([
        0.0,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        65504.0,
        65520.0,
        448.0,
        464.0,
        1e-40,
        -1e-45,
    ]);
    for dtype in [DType::BF16, DType::F16, DType::F8E4M3, DType::F8E5M2] {
        let result = (|| -> Result<(Vec<f64>, Vec<f64>)> {
            let src = Tensor::from_vec(values.clone(), &[values.len()], &backend.device)?;
            let got = src.to_dtype(dtype)?.to_f64_vec()?;
            let src_ref = Tensor::from_vec(values.clone(), &[values.len()], &reference)?;
            let want = src_ref.to_dtype(dtype)?.to_f64_vec()?;
            Ok((got, want))
        })();
        let mut row = match result {
            Ok((got, want)) => {
                let mismatches = got
                    .iter()
                    .zip(&want)
                    .filter(|(a, b)| a.to_bits() != b.to_bits() && !(a.is_nan() && b.is_nan()))
                    .count();
                let (mut row, _) = compare(&got, &want, dtype, NormTolerance::EXACT);
                row.pass = mismatches == 0;
                row.note = (mismatches > 0).then(|| {
                    format!("{mismatches} casts differ from amp-dtype's scalar conversion")
                });
                row
            }
            Err(e) => error_row(dtype, NormTolerance::EXACT, &e),
        };
        row.op = "cast";
        row.case = "f32 -> dtype, bit-exact".into();
        row.backend = backend.label.clone();
        rows.push(row);
    }
    rows
}

/// The fused unscale on the backend: exact `x * inv_scale` in f32 and every inf/NaN counted.
fn unscale_rows(backend: &Backend) -> Vec<OpRow> {
    let n = 100_003usize;
    let (v, _) = randn(&[n], 1000.0, 40);
    let mut vals: Vec<f32> = v.iter().map(|&x| x as f32).collect();
    let (inf_at, nan_at) = (n / 3, 2 * n / 3 + 5);
    vals[inf_at] = f32::INFINITY;
    vals[nan_at] = f32::NAN;
    let inv_scale = (1.0f64 / 65536.0) as f32;
    let result = (|| -> Result<(Vec<f64>, Vec<amp_tensor::backend::NonFiniteCount>)> {
        let g = Tensor::from_vec(vals.clone(), &[n], &backend.device)?;
        let counts = amp_tensor::ops::non_finite_check_and_unscale_(&[&g], inv_scale)?;
        Ok((g.to_f64_vec()?, counts))
    })();
    let want: Vec<f64> = vals.iter().map(|&x| (x * inv_scale) as f64).collect();
    let mut row = match result {
        Ok((got, counts)) => {
            let (mut row, _) = compare(&got, &want, DType::F32, NormTolerance::EXACT);
            let exact = got
                .iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()));
            let found = counts.first().map(|c| (c.inf, c.nan)) == Some((1, 1));
            row.pass = exact && found;
            if !row.pass {
                row.note = Some(format!(
                    "bit-exact: {exact}, counts {counts:?} (want 1 inf, 1 NaN)"
                ));
            }
            row
        }
        Err(e) => error_row(DType::F32, NormTolerance::EXACT, &e),
    };
    row.op = "non_finite_check_and_unscale";
    row.case = "100003 f32, 1 inf + 1 NaN".into();
    row.backend = backend.label.clone();
    vec![row]
}

/// All op rows for the given backends.
pub fn rows(backends: &[Backend], full: bool) -> Vec<OpRow> {
    let mut rows = Vec::new();
    let cases = cases(full);
    for backend in backends {
        for case in &cases {
            for dtype in [DType::F32, DType::BF16, DType::F16] {
                rows.push(run_case(case, dtype, backend));
            }
        }
        rows.extend(cast_rows(backend));
        rows.extend(unscale_rows(backend));
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use amp_tensor::backend::{BinaryOp, DeviceKind, NonFiniteCount, ReduceOp, UnaryOp, View};
    use amp_tensor::backend::{HostStorage, Storage};
    use amp_tensor::reference::ReferenceBackend;
    use amp_tensor::{bf16, Layout};
    use std::sync::Arc;

    /// The reference kernels, except a deliberately wrong sum: for bf16 it
    /// accumulates in bf16 (rounding every partial sum), the regression the
    /// suite must catch.
    #[derive(Debug)]
    struct PlantedBf16Sum;

    impl amp_tensor::backend::Backend for PlantedBf16Sum {
        fn name(&self) -> &str {
            "planted"
        }
        fn kind(&self) -> DeviceKind {
            DeviceKind::Cpu
        }
        fn is_bf16_supported(&self) -> bool {
            true
        }
        fn from_host(&self, data: HostStorage) -> Result<Storage> {
            ReferenceBackend.from_host(data)
        }
        fn to_host(&self, src: View<'_>) -> Result<HostStorage> {
            ReferenceBackend.to_host(src)
        }
        fn full(&self, numel: usize, value: f64, dtype: DType) -> Result<Storage> {
            ReferenceBackend.full(numel, value, dtype)
        }
        fn cast(&self, src: View<'_>, out: DType) -> Result<Storage> {
            ReferenceBackend.cast(src, out)
        }
        fn unary(&self, op: UnaryOp, src: View<'_>, out: DType) -> Result<Storage> {
            ReferenceBackend.unary(op, src, out)
        }
        fn binary(
            &self,
            op: BinaryOp,
            lhs: View<'_>,
            rhs: View<'_>,
            out: DType,
        ) -> Result<Storage> {
            ReferenceBackend.binary(op, lhs, rhs, out)
        }
        fn where_cond(&self, c: View<'_>, t: View<'_>, f: View<'_>, out: DType) -> Result<Storage> {
            ReferenceBackend.where_cond(c, t, f, out)
        }
        fn reduce(
            &self,
            op: ReduceOp,
            src: View<'_>,
            dims: &[usize],
            out: DType,
        ) -> Result<Storage> {
            let last_only = dims == [src.1.rank() - 1];
            if op != ReduceOp::Sum || out != DType::BF16 || !last_only {
                return ReferenceBackend.reduce(op, src, dims, out);
            }
            let values = src.0.host("reduce")?.read_f64(src.1);
            let n = src.1.shape()[src.1.rank() - 1].max(1);
            let sums: Vec<f64> = values
                .chunks(n)
                .map(|row| {
                    row.iter()
                        .fold(bf16::ZERO, |acc, &x| bf16::from_f64(acc.to_f64() + x))
                        .to_f64()
                })
                .collect();
            Ok(Storage::Host(HostStorage::from_f64(DType::BF16, &sums)))
        }
        fn matmul(&self, lhs: View<'_>, rhs: View<'_>, out: DType) -> Result<Storage> {
            ReferenceBackend.matmul(lhs, rhs, out)
        }
        fn softmax(&self, src: View<'_>, log: bool, out: DType) -> Result<Storage> {
            ReferenceBackend.softmax(src, log, out)
        }
        fn layer_norm(
            &self,
            src: View<'_>,
            w: Option<View<'_>>,
            b: Option<View<'_>>,
            eps: f64,
            out: DType,
        ) -> Result<(Storage, Storage, Storage)> {
            ReferenceBackend.layer_norm(src, w, b, eps, out)
        }
        fn cat(&self, inputs: &[View<'_>], dim: usize, out: DType) -> Result<Storage> {
            ReferenceBackend.cat(inputs, dim, out)
        }
        fn index_select(
            &self,
            src: View<'_>,
            dim: usize,
            index: View<'_>,
            out: DType,
        ) -> Result<Storage> {
            ReferenceBackend.index_select(src, dim, index, out)
        }
        fn gather(
            &self,
            src: View<'_>,
            dim: usize,
            index: View<'_>,
            out: DType,
        ) -> Result<Storage> {
            ReferenceBackend.gather(src, dim, index, out)
        }
        fn scatter_add(
            &self,
            shape: &[usize],
            dim: usize,
            index: View<'_>,
            src: View<'_>,
            out: DType,
        ) -> Result<Storage> {
            ReferenceBackend.scatter_add(shape, dim, index, src, out)
        }
        fn non_finite_check_and_unscale(
            &self,
            buffers: &mut [(&mut Storage, &Layout)],
            inv_scale: f32,
        ) -> Result<Vec<NonFiniteCount>> {
            ReferenceBackend.non_finite_check_and_unscale(buffers, inv_scale)
        }
    }

    #[test]
    fn the_suite_fails_on_a_bf16_accumulating_sum() {
        let planted = Backend {
            label: "planted".into(),
            device: Device::new(Arc::new(PlantedBf16Sum)),
        };
        let rows = rows(&[planted], false);
        let failed: Vec<&OpRow> = rows.iter().filter(|r| !r.pass).collect();
        assert!(!failed.is_empty(), "the planted kernel went unnoticed");
        // Exactly the bf16 sum rows fail; f32/f16 and the other ops still pass.
        assert!(
            failed
                .iter()
                .all(|r| r.op == "sum" && r.dtype == DType::BF16),
            "{failed:?}"
        );
        assert!(failed.iter().any(|r| r.case.contains("rows of 16384")));
    }

    #[test]
    fn the_reference_backend_passes_and_compare_rejects_nan() {
        let reference = Backend {
            label: "reference".into(),
            device: Device::reference(),
        };
        assert!(rows(&[reference], false).iter().all(|r| r.pass));
        let (row, ok) = compare(
            &[1.0, f64::NAN],
            &[1.0, 2.0],
            DType::F32,
            NormTolerance::for_dtype(DType::F32),
        );
        assert!(!ok && row.nan_inf == 1);
        let (_, ok) = compare(
            &[1.0, 2.1],
            &[1.0, 2.0],
            DType::BF16,
            NormTolerance::for_dtype(DType::BF16),
        );
        assert!(!ok, "a 5% error must fail the bf16 tolerance");
    }
}
