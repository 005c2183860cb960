//! The fused `non_finite_check_and_unscale`: infs and NaNs injected at random
//! positions of contiguous and strided buffers are always found and counted,
//! every viewed element becomes exactly `x * inv_scale` computed in f32
//! (f64 for f64 buffers) and rounded once, and the counts are of those results
//! (a value that overflows when scaled counts as inf) — on every CPU path.

use amp_cpu::{CpuBackend, Isa};
use amp_dtype::{bf16, f16};
use amp_tensor::random::draw_u64;
use amp_tensor::{Backend, HostElement, HostStorage, Layout, NonFiniteCount, Storage};

/// Values with inf/NaN planted at seeded random positions.
fn planted(n: usize, seed: u64) -> Vec<f64> {
    let mut v: Vec<f64> = amp_tensor::random::normals(seed, n)
        .iter()
        .map(|x| x * 1e3)
        .collect();
    let hits = (n / 50).max(usize::from(n > 0) * 2);
    for h in 0..hits as u64 {
        let at = (draw_u64(seed, 1000 + h) % n as u64) as usize;
        v[at] = match draw_u64(seed, 5000 + h) % 3 {
            0 => f64::INFINITY,
            1 => f64::NEG_INFINITY,
            _ => f64::NAN,
        };
    }
    v
}

fn expected_scaled<T: HostElement>(x: T, inv_scale: f32) -> T {
    match T::DTYPE {
        amp_dtype::DType::F64 => T::from_f64(x.to_f64() * inv_scale as f64),
        _ => T::from_f32(x.to_f32() * inv_scale),
    }
}

fn same_bits<T: HostElement>(a: T, b: T) -> bool {
    (a.to_f64().is_nan() && b.to_f64().is_nan()) || a.to_f64().to_bits() == b.to_f64().to_bits()
}

fn run_case<T: HostElement>(
    backend: &CpuBackend,
    n: usize,
    layout: Layout,
    seed: u64,
    inv_scale: f32,
) {
    let data: Vec<T> = planted(n, seed).iter().map(|&x| T::from_f64(x)).collect();
    let viewed: Vec<usize> = layout.indices().collect();
    let mut want = NonFiniteCount::default();
    // The results are counted: a finite value that overflows when scaled counts as inf.
    for &i in &viewed {
        let x = expected_scaled(data[i], inv_scale).to_f64();
        want.inf += x.is_infinite() as usize;
        want.nan += x.is_nan() as usize;
    }
    let mut storage = Storage::Host(T::into_host(data.clone()));
    let counts = backend
        .non_finite_check_and_unscale(&mut [(&mut storage, &layout)], inv_scale)
        .unwrap();
    let case = format!(
        "{} {} n={n} {:?} inv_scale={inv_scale}",
        backend.isa(),
        T::DTYPE,
        layout.shape()
    );
    assert_eq!(counts, vec![want], "{case}");
    let Storage::Host(h) = &storage else {
        panic!("host storage")
    };
    let out = T::slice(h).unwrap();
    let mut is_viewed = vec![false; n];
    for &i in &viewed {
        is_viewed[i] = true;
    }
    for i in 0..n {
        let e = if is_viewed[i] {
            expected_scaled(data[i], inv_scale)
        } else {
            data[i]
        };
        assert!(
            same_bits(out[i], e),
            "{case}: [{i}] {:?} -> {:?}, want {:?}",
            data[i],
            out[i],
            e
        );
    }
}

fn all_cases<T: HostElement>(backend: &CpuBackend) {
    // 65536: f16 values of ~1e3 overflow when scaled (the counts see it).
    for (s, &inv_scale) in [1.0 / 65536.0, 0.3f32, 1e-30, 2.0, 65536.0]
        .iter()
        .enumerate()
    {
        for (c, &n) in [0usize, 1, 15, 16, 17, 1000, 70_001].iter().enumerate() {
            let seed = (s * 10 + c) as u64;
            run_case::<T>(backend, n, Layout::contiguous(&[n]), seed, inv_scale);
            if n >= 4 {
                // Every other element, from offset 1; and a transposed 2-D view.
                run_case::<T>(
                    backend,
                    n,
                    Layout::new(vec![(n - 1) / 2], vec![2], 1),
                    seed,
                    inv_scale,
                );
                let rows = n / 4;
                run_case::<T>(
                    backend,
                    n,
                    Layout::contiguous(&[rows, 4]).transpose(0, 1),
                    seed + 1,
                    inv_scale,
                );
            }
        }
    }
}

#[test]
fn every_planted_inf_and_nan_is_counted_and_values_scale_exactly() {
    for isa in Isa::available() {
        let backend = CpuBackend::with_isa(isa).unwrap();
        all_cases::<f32>(&backend);
        all_cases::<bf16>(&backend);
        all_cases::<f16>(&backend);
        all_cases::<f64>(&backend);
    }
}

#[test]
fn a_value_that_overflows_when_unscaled_is_counted_never_written_unseen() {
    // A scale at the f32 floor (2^-126): 1/scale = 2^126, and a finite
    // gradient of 4 becomes inf. PyTorch counts before multiplying and reports nothing.
    let inv_scale = 2f32.powi(126);
    for isa in Isa::available() {
        let backend = CpuBackend::with_isa(isa).unwrap();
        let mut g = Storage::Host(HostStorage::F32(vec![4.0, 1e-40, 0.0]));
        let mut h = Storage::Host(HostStorage::F16(vec![f16::from_f32(1.0); 3]));
        let (l3, l3b) = (Layout::contiguous(&[3]), Layout::contiguous(&[3]));
        let counts = backend
            .non_finite_check_and_unscale(&mut [(&mut g, &l3), (&mut h, &l3b)], inv_scale)
            .unwrap();
        assert_eq!(
            counts,
            vec![
                NonFiniteCount { inf: 1, nan: 0 },
                NonFiniteCount { inf: 3, nan: 0 }
            ],
            "{isa}"
        );
    }
}

#[test]
fn many_buffers_in_one_call_get_one_count_each() {
    let backend = CpuBackend::new();
    let mut a = Storage::Host(HostStorage::F32(vec![1.0, f32::NAN, 3.0]));
    let mut b = Storage::Host(HostStorage::BF16(vec![bf16::INFINITY, bf16::from_f32(2.0)]));
    let mut c = Storage::Host(HostStorage::F16(vec![f16::from_f32(4.0); 5]));
    let (la, lb, lc) = (
        Layout::contiguous(&[3]),
        Layout::contiguous(&[2]),
        Layout::contiguous(&[5]),
    );
    let counts = backend
        .non_finite_check_and_unscale(&mut [(&mut a, &la), (&mut b, &lb), (&mut c, &lc)], 0.5)
        .unwrap();
    assert_eq!(
        counts,
        vec![
            NonFiniteCount { inf: 0, nan: 1 },
            NonFiniteCount { inf: 1, nan: 0 },
            NonFiniteCount::default()
        ]
    );
    let Storage::Host(HostStorage::F16(c)) = &c else {
        panic!()
    };
    assert!(c.iter().all(|x| x.to_f32() == 2.0));
    // Integer buffers are an error naming the op, not a panic.
    let mut i = Storage::Host(HostStorage::I64(vec![1, 2]));
    let err = backend
        .non_finite_check_and_unscale(&mut [(&mut i, &lb)], 0.5)
        .unwrap_err();
    assert!(
        err.to_string().contains("non_finite_check_and_unscale"),
        "{err}"
    );
}
