//! Outputs of 8 MiB and more are written with non-temporal stores on AVX-512
//! paths: casts, unary and binary ops on such tensors (odd lengths, unaligned
//! starts) equal the portable scalar path bit for bit, element by element.

use amp_cpu::{device_with_isa, Isa};
use amp_tensor::{DType, Tensor};

fn bits(t: &Tensor) -> Vec<u64> {
    t.to_f64_vec()
        .unwrap()
        .iter()
        .map(|x| x.to_bits())
        .collect()
}

#[test]
fn large_outputs_equal_the_scalar_path() {
    let scalar = device_with_isa(Isa::Scalar).unwrap();
    let n = (1usize << 21) + 77; // f32 output: 8 MiB + 308 bytes
    let x32 = Tensor::randn(&[n], DType::F32, &scalar, 1).unwrap();
    let y32 = Tensor::randn(&[n], DType::F32, &scalar, 2).unwrap();
    // An unaligned start: a narrowed view one element in.
    let x16 = Tensor::randn(&[2 * n + 1], DType::BF16, &scalar, 3)
        .unwrap()
        .narrow(0, 1, 2 * n)
        .unwrap();
    let want = [
        bits(&x16.to_dtype(DType::F32).unwrap()),
        bits(&x32.exp().unwrap()),
        bits(&x32.add(&y32).unwrap()),
        bits(&x32.mul(&y32).unwrap().to_dtype(DType::F16).unwrap()),
    ];
    for isa in Isa::available() {
        let dev = device_with_isa(isa).unwrap();
        let (a, b, c) = (
            x32.to_device(&dev).unwrap(),
            y32.to_device(&dev).unwrap(),
            x16.to_device(&dev).unwrap(),
        );
        let got = [
            bits(&c.to_dtype(DType::F32).unwrap()),
            bits(&a.exp().unwrap()),
            bits(&a.add(&b).unwrap()),
            bits(&a.mul(&b).unwrap().to_dtype(DType::F16).unwrap()),
        ];
        for (k, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.len(), w.len(), "{isa} case {k}");
            if let Some(i) = (0..g.len()).find(|&i| g[i] != w[i]) {
                panic!("{isa} case {k}: element {i} differs");
            }
        }
    }
}
