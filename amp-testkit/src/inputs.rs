//! Test inputs: seeded values with exact zeros, views of every kind (contiguous,
//! transposed, narrowed, broadcast), and shapes with odd and empty sizes.

use amp_tensor::{DType, Device, Result, Tensor};

/// The float dtypes with fast kernels on every backend.
pub const FLOATS: [DType; 3] = [DType::F32, DType::BF16, DType::F16];

/// Seeded normal values with `scale`, and a few exact zeros.
pub fn values(n: usize, seed: u64, scale: f64) -> Vec<f64> {
    amp_tensor::random::normals(seed, n)
        .into_iter()
        .enumerate()
        .map(|(i, v)| if i % 11 == 5 { 0.0 } else { v * scale })
        .collect()
}

/// Input views of logical `shape` on `device`: contiguous, transposed (rank ≥ 2),
/// narrowed out of a larger tensor, and broadcast from a smaller one.
pub fn views(
    device: &Device,
    shape: &[usize],
    dtype: DType,
    seed: u64,
    scale: f64,
) -> Result<Vec<(String, Tensor)>> {
    let n: usize = shape.iter().product();
    let mut out = vec![(
        "contiguous".to_string(),
        Tensor::from_f64_slice(&values(n, seed, scale), shape, dtype, device)?,
    )];
    let r = shape.len();
    if r >= 2 {
        let mut ts = shape.to_vec();
        ts.swap(r - 2, r - 1);
        let t = Tensor::from_f64_slice(&values(n, seed + 1, scale), &ts, dtype, device)?;
        out.push(("transposed".into(), t.transpose(-1, -2)?));
    }
    if r >= 1 {
        let mut big = shape.to_vec();
        big[r - 1] += 3;
        let nb: usize = big.iter().product();
        let t = Tensor::from_f64_slice(&values(nb, seed + 2, scale), &big, dtype, device)?;
        out.push(("narrowed".into(), t.narrow(-1, 2, shape[r - 1])?));
        let mut small = shape.to_vec();
        small[0] = 1;
        let ns: usize = small.iter().product();
        let t = Tensor::from_f64_slice(&values(ns, seed + 3, scale), &small, dtype, device)?;
        out.push(("broadcast".into(), t.broadcast_to(shape)?));
    }
    Ok(out)
}

/// Shapes with odd sizes, empty and single elements, and sizes past the SIMD chunk.
pub const SHAPES: &[&[usize]] = &[
    &[0],
    &[1],
    &[1, 1],
    &[7],
    &[3, 33],
    &[2, 5, 17],
    &[4, 0, 3],
    &[2, 1100],
];

/// `t` moved to the reference backend (the oracle every device is compared with).
pub fn on_ref(t: &Tensor) -> Result<Tensor> {
    t.to_device(&Device::reference())
}

/// Seeded inputs of `shape`: uniform in (0.1, 3) when `positive` (for log,
/// sqrt, rsqrt, pow), else standard normal times 2, rounded to `dtype`.
pub fn input(
    shape: &[usize],
    dtype: DType,
    device: &Device,
    seed: u64,
    positive: bool,
) -> Result<Tensor> {
    if positive {
        Tensor::rand_uniform(shape, 0.1, 3.0, dtype, device, seed)
    } else {
        Tensor::randn(shape, DType::F64, device, seed)?
            .mul_scalar(2.0)?
            .to_dtype(dtype)
    }
}
