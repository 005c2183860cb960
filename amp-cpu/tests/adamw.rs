//! The fused AdamW update (`Backend::adamw_step`): on every CPU path, for f32,
//! bf16 and f16 parameters and gradients, contiguous and transposed gradients,
//! lengths around the chunk and parallel thresholds, three consecutive steps
//! agree with an exact f64 evaluation of `torch.optim.AdamW`'s formula (the
//! parameter rounded to its dtype after each step), and with the reference
//! backend's composed implementation.

use amp_cpu::{CpuBackend, Isa};
use amp_dtype::{bf16, f16, DType};
use amp_tensor::reference::ReferenceBackend;
use amp_tensor::testing::{check_values, Tolerance};
use amp_tensor::{AdamWStep, Backend, HostElement, HostStorage, Layout, Storage};

fn hyper(step: u64) -> AdamWStep {
    AdamWStep {
        lr: 1e-2,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.05,
        step,
    }
}

/// One step of the formula in f64; the parameter is then rounded to `dtype`.
fn exact_step(p: &mut [f64], g: &[f64], m: &mut [f64], v: &mut [f64], h: &AdamWStep, dtype: DType) {
    let t = h.step as i32;
    let (bc1, bc2) = (1.0 - h.beta1.powi(t), 1.0 - h.beta2.powi(t));
    for i in 0..p.len() {
        m[i] = h.beta1 * m[i] + (1.0 - h.beta1) * g[i];
        v[i] = h.beta2 * v[i] + (1.0 - h.beta2) * g[i] * g[i];
        let denom = v[i].sqrt() / bc2.sqrt() + h.eps;
        let new = p[i] * (1.0 - h.lr * h.weight_decay) - h.lr / bc1 * m[i] / denom;
        p[i] = HostStorage::from_f64(dtype, &[new]).get_f64(0);
    }
}

fn read(s: &Storage) -> Vec<f64> {
    let h = s.host("test").unwrap();
    h.read_f64(&Layout::contiguous(&[h.len()]))
}

/// Runs three steps on `backend` with a gradient of `gdtype` stored either
/// contiguous or as the transpose of a `[cols, rows]` buffer.
fn run<P: HostElement, G: HostElement>(
    backend: &dyn Backend,
    n: usize,
    transposed: bool,
    seed: u64,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let p0 = amp_tensor::random::normals(seed, n);
    let mut param = Storage::Host(HostStorage::from_f64(P::DTYPE, &p0));
    let mut m = Storage::Host(HostStorage::F32(vec![0.0; n]));
    let mut v = Storage::Host(HostStorage::F32(vec![0.0; n]));
    for step in 1..=3u64 {
        let g: Vec<f64> = amp_tensor::random::normals(seed * 10 + step, n)
            .iter()
            .map(|x| x * 0.1)
            .collect();
        let (storage, layout) = gradient(&g, G::DTYPE, n, transposed);
        backend
            .adamw_step(
                &mut param,
                (&storage, &layout),
                &mut m,
                &mut v,
                &hyper(step),
            )
            .unwrap();
    }
    (read(&param), read(&m), read(&v))
}

/// The gradient values `g` (in logical order) as a storage and a view of it.
fn gradient(g: &[f64], dtype: DType, n: usize, transposed: bool) -> (Storage, Layout) {
    if !transposed || !n.is_multiple_of(4) {
        return (
            Storage::Host(HostStorage::from_f64(dtype, g)),
            Layout::contiguous(&[n]),
        );
    }
    // Logical [rows, 4] stored as its transpose [4, rows].
    let rows = n / 4;
    let mut stored = vec![0.0; n];
    for r in 0..rows {
        for c in 0..4 {
            stored[c * rows + r] = g[r * 4 + c];
        }
    }
    (
        Storage::Host(HostStorage::from_f64(dtype, &stored)),
        Layout::contiguous(&[4, rows]).transpose(0, 1),
    )
}

fn exact<P: HostElement, G: HostElement>(n: usize, seed: u64) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut p = HostStorage::from_f64(P::DTYPE, &amp_tensor::random::normals(seed, n))
        .read_f64(&Layout::contiguous(&[n]));
    let (mut m, mut v) = (vec![0.0; n], vec![0.0; n]);
    for step in 1..=3u64 {
        let g: Vec<f64> = amp_tensor::random::normals(seed * 10 + step, n)
            .iter()
            .map(|x| x * 0.1)
            .collect();
        let g = HostStorage::from_f64(G::DTYPE, &g).read_f64(&Layout::contiguous(&[n]));
        exact_step(&mut p, &g, &mut m, &mut v, &hyper(step), P::DTYPE);
    }
    (p, m, v)
}

fn check<P: HostElement, G: HostElement>(backend: &CpuBackend) {
    for (i, &n) in [1usize, 17, 1024, 1028, 70_004].iter().enumerate() {
        for transposed in [false, true] {
            let seed = i as u64 + 1;
            let case = format!(
                "isa {} param {} grad {} n={n} transposed={transposed}",
                backend.isa(),
                P::DTYPE,
                G::DTYPE
            );
            let (p, m, v) = run::<P, G>(backend, n, transposed, seed);
            let (ep, em, ev) = exact::<P, G>(n, seed);
            // The parameter: its dtype's rounding of an f32 computation.
            let ptol = Tolerance::for_dtype(P::DTYPE).scale(2.0);
            check_values(&p, &ep, ptol).unwrap_or_else(|e| panic!("{case}: param: {e}"));
            check_values(&m, &em, Tolerance::for_dtype(DType::F32))
                .unwrap_or_else(|e| panic!("{case}: exp_avg: {e}"));
            check_values(&v, &ev, Tolerance::for_dtype(DType::F32))
                .unwrap_or_else(|e| panic!("{case}: exp_avg_sq: {e}"));
            // The reference backend's composed update agrees too.
            let (rp, rm, rv) = run::<P, G>(&ReferenceBackend, n, transposed, seed);
            check_values(&p, &rp, ptol).unwrap_or_else(|e| panic!("{case}: vs reference: {e}"));
            check_values(&m, &rm, Tolerance::for_dtype(DType::F32)).unwrap();
            check_values(&v, &rv, Tolerance::for_dtype(DType::F32)).unwrap();
        }
    }
}

#[test]
fn fused_adamw_matches_the_exact_formula_on_every_path() {
    for isa in Isa::available() {
        let backend = CpuBackend::with_isa(isa).unwrap();
        check::<f32, f32>(&backend);
        check::<f32, bf16>(&backend);
        check::<f32, f16>(&backend);
        check::<bf16, bf16>(&backend);
        check::<f16, f32>(&backend);
    }
}

#[test]
fn mismatched_lengths_are_an_error_not_a_panic() {
    let backend = CpuBackend::new();
    let mut p = Storage::Host(HostStorage::F32(vec![1.0; 4]));
    let g = Storage::Host(HostStorage::F32(vec![1.0; 3]));
    let mut m = Storage::Host(HostStorage::F32(vec![0.0; 4]));
    let mut v = Storage::Host(HostStorage::F32(vec![0.0; 4]));
    let err = backend
        .adamw_step(
            &mut p,
            (&g, &Layout::contiguous(&[3])),
            &mut m,
            &mut v,
            &hyper(1),
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("adamw_step") && err.contains("grad 3"),
        "{err}"
    );
}
