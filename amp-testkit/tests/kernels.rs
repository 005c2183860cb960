//! Backend kernels against the f64 reference backend, op by op, on every
//! device: unary and binary elementwise ops with broadcasting, casts (bit-exact,
//! fp8 included), fills and host round trips, reductions, softmax and layer
//! norm, indexing, and f32 products without TF32. (Written first for the CUDA
//! backend; run on every device through the shared suite.)

use amp_dtype::{F8E4M3, F8E5M2};
use amp_tensor::backend::HostStorage;
use amp_tensor::backend::{BinaryOp, ReduceOp, UnaryOp};
use amp_tensor::ops;
use amp_tensor::{DType, Device, Layout, Result, Tensor};
use amp_testkit::{assert_close, check_values, on_every_device, Tolerance};

/// `t` moved to the reference backend.
fn on_ref(t: &Tensor) -> Result<Tensor> {
    t.to_device(&Device::reference())
}

const FLOATS: [DType; 4] = [DType::F32, DType::F16, DType::BF16, DType::F64];

/// Inputs in (0.1, 3) for log/sqrt/rsqrt/pow, else standard normal, scaled.
fn input(
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

on_every_device!(unary_ops_match_reference, |d: &Device| -> Result<()> {
    let ops = [
        (UnaryOp::Neg, false),
        (UnaryOp::Exp, false),
        (UnaryOp::Log, true),
        (UnaryOp::Sqrt, true),
        (UnaryOp::Rsqrt, true),
        (UnaryOp::Abs, false),
        (UnaryOp::Relu, false),
        (UnaryOp::GeluErf, false),
        (UnaryOp::GeluTanh, false),
        (UnaryOp::Tanh, false),
        (UnaryOp::Sigmoid, false),
        (UnaryOp::Silu, false),
        (UnaryOp::Erf, false),
        (UnaryOp::Recip, true),
        (UnaryOp::Sign, false),
        (UnaryOp::Powf(1.7), true),
        (
            UnaryOp::Affine {
                mul: 0.3,
                add: -1.25,
            },
            false,
        ),
        (UnaryOp::Identity, false),
        (UnaryOp::NonZero, false),
    ];
    for dtype in FLOATS {
        for (i, &(op, positive)) in ops.iter().enumerate() {
            // A transposed (strided) input on odd iterations.
            let base = input(&[7, 33], dtype, d, i as u64, positive)?;
            let x = if i % 2 == 1 { base.t()? } else { base };
            let got = x.with_view(|v| d.backend().unary(op, v, dtype))??;
            let got = Tensor::from_host(
                d.backend().to_host((&got, &Layout::contiguous(x.dims())))?,
                x.dims(),
                &Device::reference(),
            )?;
            let xr = on_ref(&x)?;
            let want = xr.with_view(|v| Device::reference().backend().unary(op, v, dtype))??;
            let want =
                Tensor::from_host(want.host("test")?.clone(), x.dims(), &Device::reference())?;
            let tol = match dtype {
                // f32 transcendental functions are within a few ulps, plus an absolute part for cancellation.
                DType::F32 => Tolerance {
                    rel: 1e-5,
                    abs: 1e-6,
                },
                DType::F64 => Tolerance {
                    rel: 1e-12,
                    abs: 1e-14,
                },
                other => Tolerance::for_dtype(other),
            };
            assert_close(&got, &want, tol)
                .map_err(|e| amp_tensor::Error::invalid("unary", format!("{op:?} {dtype}: {e}")))?;
        }
    }
    // Integer unary ops (neg, abs, affine) in i64.
    let xi = Tensor::from_vec(vec![-3i64, 0, 7, -1 << 40], &[4], d)?;
    assert_eq!(xi.neg()?.to_vec::<i64>()?, vec![3, 0, -7, 1 << 40]);
    assert_eq!(xi.abs()?.to_vec::<i64>()?, vec![3, 0, 7, 1 << 40]);
    Ok(())
});

on_every_device!(
    binary_ops_with_broadcasting_match_reference,
    |d: &Device| -> Result<()> {
        let ops = [
            BinaryOp::Add,
            BinaryOp::Sub,
            BinaryOp::Mul,
            BinaryOp::Div,
            BinaryOp::Maximum,
            BinaryOp::Minimum,
            BinaryOp::Eq,
            BinaryOp::Gt,
            BinaryOp::Lt,
            BinaryOp::ReluBackward,
            BinaryOp::GeluErfBackward,
            BinaryOp::GeluTanhBackward,
            BinaryOp::TanhBackward,
            BinaryOp::SigmoidBackward,
            BinaryOp::SiluBackward,
        ];
        let shape = [3usize, 4, 5];
        for dtype in FLOATS {
            let a = input(&[3, 1, 5], dtype, d, 1, false)?;
            let b = input(&[4, 5], dtype, d, 2, false)?;
            // Make some elements equal for Eq.
            let b = ops::cat(
                &[&b.narrow(0, 0, 3)?, &a.narrow(0, 0, 1)?.reshape(&[1, 5])?],
                0,
            )?;
            let la = a.layout().broadcast_to("t", &shape)?;
            let lb = b.layout().broadcast_to("t", &shape)?;
            let (ar, br) = (on_ref(&a)?, on_ref(&b)?);
            for op in ops {
                let out = if matches!(op, BinaryOp::Eq | BinaryOp::Gt | BinaryOp::Lt) {
                    DType::Bool
                } else {
                    dtype
                };
                let got = {
                    let (sa, sb) = (a.materialised_input()?, b.materialised_input()?);
                    d.backend()
                        .binary(op, (sa.storage(), &la), (sb.storage(), &lb), out)?
                };
                let got = d.backend().to_host((&got, &Layout::contiguous(&shape)))?;
                let want = {
                    let (sa, sb) = (ar.materialised_input()?, br.materialised_input()?);
                    Device::reference().backend().binary(
                        op,
                        (sa.storage(), &la),
                        (sb.storage(), &lb),
                        out,
                    )?
                };
                let want = want.host("test")?.clone();
                let tol = if dtype == DType::F32 {
                    Tolerance {
                        rel: 1e-5,
                        abs: 1e-6,
                    }
                } else {
                    Tolerance::for_dtype(out)
                };
                check_values(
                    &got.read_f64(&Layout::contiguous(&[got.len()])),
                    &want.read_f64(&Layout::contiguous(&[want.len()])),
                    tol,
                )
                .map_err(|e| {
                    amp_tensor::Error::invalid("binary", format!("{op:?} {dtype}: {e}"))
                })?;
            }
        }
        // Contiguous same-shape arithmetic through the Tensor API is exact for + - * / in f32.
        let x = input(&[64, 65], DType::F32, d, 5, false)?;
        let y = input(&[64, 65], DType::F32, d, 6, true)?;
        for (got, want) in [
            (x.add(&y)?, on_ref(&x)?.add(&on_ref(&y)?)?),
            (x.sub(&y)?, on_ref(&x)?.sub(&on_ref(&y)?)?),
            (x.mul(&y)?, on_ref(&x)?.mul(&on_ref(&y)?)?),
            (x.div(&y)?, on_ref(&x)?.div(&on_ref(&y)?)?),
        ] {
            assert_close(&got, &want, Tolerance::EXACT)?;
        }
        Ok(())
    }
);

fn special_values() -> Vec<f64> {
    let mut v = vec![
        0.0,
        -0.0,
        1.0,
        -1.0,
        0.5,
        1.5,
        2.5,
        -2.5,
        65504.0,
        65520.0,
        70000.0,
        -1e10,
        3.4e38,
        1e300,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
        1e-8,
        6e-8,
        -3e-5,
        1e-40,
        1e-310,
        255.0,
        255.9,
        256.0,
        -7.9,
        9.3e18,
        -9.3e18,
        1.0 + 2f64.powi(-8),
        1.0 + 3.0 * 2f64.powi(-9),
        1.0 + 2f64.powi(-11),
        1.0 + 2f64.powi(-24),
        1.0 + 2f64.powi(-24) + 2f64.powi(-40),
        // Double-rounding traps: a tie after rounding to f32 first, but not exactly.
        1.0 + 2f64.powi(-8) + 2f64.powi(-30),
        1.0 + 2f64.powi(-11) + 2f64.powi(-40),
        -(1.0 + 2f64.powi(-8) + 2f64.powi(-30)),
    ];
    v.extend(
        amp_tensor::random::normals(11, 200)
            .into_iter()
            .map(|x| x * 1000.0),
    );
    v.extend(
        amp_tensor::random::normals(12, 200)
            .into_iter()
            .map(|x| x * 1e-3),
    );
    v
}

on_every_device!(
    casts_are_bit_exact_with_the_reference,
    |d: &Device| -> Result<()> {
        let dtypes = [
            DType::F64,
            DType::F32,
            DType::F16,
            DType::BF16,
            DType::I64,
            DType::U8,
            DType::Bool,
        ];
        let values = special_values();
        let n = values.len();
        for from in dtypes {
            // The source holds the values as `from` rounds them (on the reference).
            let src_ref = Tensor::from_f64_slice(&values, &[n], from, &Device::reference())?;
            let src = src_ref.to_device(d)?;
            for to in dtypes {
                let got = src.to_dtype(to)?.to_device(&Device::reference())?;
                let want = src_ref.to_dtype(to)?;
                let (g, w) = (got.materialised_input()?, want.materialised_input()?);
                let (g, w) = (g.storage().host("t")?, w.storage().host("t")?);
                let (gv, wv) = (
                    g.read_f64(&Layout::contiguous(&[n])),
                    w.read_f64(&Layout::contiguous(&[n])),
                );
                for i in 0..n {
                    let same = if wv[i].is_nan() {
                        gv[i].is_nan()
                    } else {
                        gv[i].to_bits() == wv[i].to_bits()
                    };
                    assert!(
                        same,
                        "{from} -> {to}: value {} gave {} want {}",
                        values[i], gv[i], wv[i]
                    );
                }
            }
        }
        // A strided source.
        let m = Tensor::randn(&[9, 13], DType::F32, d, 3)?.t()?;
        let got = m.to_dtype(DType::BF16)?.to_device(&Device::reference())?;
        let want = on_ref(&m)?.to_dtype(DType::BF16)?;
        assert_close(&got, &want, Tolerance::EXACT)
    }
);

on_every_device!(
    fill_where_and_host_round_trips,
    |d: &Device| -> Result<()> {
        for dtype in [
            DType::F64,
            DType::F32,
            DType::F16,
            DType::BF16,
            DType::I64,
            DType::U8,
            DType::Bool,
        ] {
            for value in [0.0, 1.0, -2.5, 7.0] {
                let t = Tensor::full(&[3, 5], value, dtype, d)?;
                let want = Tensor::full(&[3, 5], value, dtype, &Device::reference())?;
                assert_close(&t, &want, Tolerance::EXACT)?;
            }
        }
        let cond =
            Tensor::randn(&[4, 1], DType::F32, d, 1)?.gt(&Tensor::zeros(&[], DType::F32, d)?)?;
        let a = Tensor::randn(&[1, 6], DType::F16, d, 2)?;
        let b = Tensor::randn(&[4, 6], DType::F16, d, 3)?.t()?.t()?;
        let got = ops::where_cond(&cond, &a, &b)?;
        let want = ops::where_cond(&on_ref(&cond)?, &on_ref(&a)?, &on_ref(&b)?)?;
        assert_close(&got, &want, Tolerance::EXACT)?;
        // Empty tensors make no launches and come back empty.
        let e = Tensor::zeros(&[0, 3], DType::F32, d)?;
        assert_eq!(e.exp()?.to_vec::<f32>()?, Vec::<f32>::new());
        assert_eq!(e.sum_dims(&[0], false)?.to_vec::<f32>()?, vec![0.0; 3]);
        Ok(())
    }
);

const FP8: [DType; 2] = [DType::F8E4M3, DType::F8E5M2];

/// Every element's bit pattern (bool as 0/1, integers as two's complement).
fn bits(t: &Tensor) -> Result<Vec<u64>> {
    let h = t.with_view(|v| t.device().backend().to_host(v))??;
    Ok(match &h {
        HostStorage::F64(v) => v.iter().map(|x| x.to_bits()).collect(),
        HostStorage::F32(v) => v.iter().map(|x| u64::from(x.to_bits())).collect(),
        HostStorage::F16(v) => v.iter().map(|x| u64::from(x.to_bits())).collect(),
        HostStorage::BF16(v) => v.iter().map(|x| u64::from(x.to_bits())).collect(),
        HostStorage::F8E4M3(v) => v.iter().map(|x| u64::from(x.to_bits())).collect(),
        HostStorage::F8E5M2(v) => v.iter().map(|x| u64::from(x.to_bits())).collect(),
        HostStorage::I64(v) => v.iter().map(|&x| x as u64).collect(),
        HostStorage::U8(v) => v.iter().map(|&x| u64::from(x)).collect(),
        HostStorage::Bool(v) => v.iter().map(|&x| u64::from(x)).collect(),
    })
}

/// Asserts equal bit patterns, naming the first difference.
fn assert_same_bits(got: &[u64], want: &[u64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    if let Some(i) = (0..got.len()).find(|&i| got[i] != want[i]) {
        let bad = (0..got.len()).filter(|&i| got[i] != want[i]).count();
        panic!(
            "{what}: {bad} of {} differ; first at {i}: got {:#x}, want {:#x}",
            got.len(),
            got[i],
            want[i]
        );
    }
}

/// All 256 bit patterns of an fp8 dtype, in order.
fn all_fp8_patterns(dtype: DType) -> HostStorage {
    match dtype {
        DType::F8E4M3 => HostStorage::F8E4M3((0..=255u8).map(F8E4M3::from_bits).collect()),
        DType::F8E5M2 => HostStorage::F8E5M2((0..=255u8).map(F8E5M2::from_bits).collect()),
        other => panic!("{other} is not an fp8 dtype"),
    }
}

/// amp-dtype's rounding of an f64 into an fp8 dtype, as bits.
fn fp8_bits_from_f64(dtype: DType, x: f64) -> u64 {
    match dtype {
        DType::F8E4M3 => F8E4M3::from_f64(x).to_bits().into(),
        _ => F8E5M2::from_f64(x).to_bits().into(),
    }
}

/// amp-dtype's rounding of an f32 into an fp8 dtype, as bits.
fn fp8_bits_from_f32(dtype: DType, x: f32) -> u64 {
    match dtype {
        DType::F8E4M3 => F8E4M3::from_f32(x).to_bits().into(),
        _ => F8E5M2::from_f32(x).to_bits().into(),
    }
}

/// Values that probe fp8 rounding, as f64: every finite value of both
/// formats, the midpoints between neighbours (ties, including the subnormal
/// boundaries 2^-10 and 2^-17 between 0 and the smallest subnormals and the
/// overflow thresholds 464 and 61440 above the largest finite values),
/// one f32 ulp and one f64 ulp either side of each, both signs; the overflow
/// thresholds again, signed zeros, NaN of both signs, infinities, f32 and f64
/// subnormals, and a sweep of f32 bit patterns.
fn fp8_probe_values() -> Vec<f64> {
    let mut magnitudes: Vec<f64> = (0..=255u8)
        .flat_map(|b| [F8E4M3::from_bits(b).to_f64(), F8E5M2::from_bits(b).to_f64()])
        .filter(|v| v.is_finite() && *v >= 0.0)
        .collect();
    magnitudes.sort_by(f64::total_cmp);
    magnitudes.dedup();
    let mut points = magnitudes.clone();
    for w in magnitudes.windows(2) {
        points.push((w[0] + w[1]) / 2.0);
    }
    // Above each format's largest finite value: the tie, and the first value past it.
    points.extend([464.0, 465.0, 480.0, 61440.0, 61441.0, 65536.0, 1e6]);
    let mut v = Vec::new();
    for p in points {
        let f = p as f32; // exact: every point is an f32
        v.extend([p, f64::from_bits(p.to_bits() + 1)]);
        if p > 0.0 {
            v.extend([
                f64::from(f32::from_bits(f.to_bits() + 1)),
                f64::from(f32::from_bits(f.to_bits() - 1)),
                f64::from_bits(p.to_bits() - 1),
            ]);
        }
    }
    let negated: Vec<f64> = v.iter().map(|x| -x).collect();
    v.extend(negated);
    v.extend([
        f64::NAN,
        -f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::from(f32::MAX),
        f64::from(f32::MIN_POSITIVE),
        1e-40,
        -1e-45,
    ]);
    v.extend(
        (0..(1u64 << 32))
            .step_by(40_009)
            .map(|b| f64::from(f32::from_bits(b as u32))),
    );
    v
}

on_every_device!(
    fp8_bit_patterns_decode_exactly,
    |d: &Device| -> Result<()> {
        let targets = [
            DType::F32,
            DType::F64,
            DType::F16,
            DType::BF16,
            DType::I64,
            DType::U8,
            DType::Bool,
            DType::F8E4M3,
            DType::F8E5M2,
        ];
        for dtype in FP8 {
            let host = all_fp8_patterns(dtype);
            let x = Tensor::from_host(host.clone(), &[256], d)?;
            let xr = Tensor::from_host(host, &[256], &Device::reference())?;
            // Host round trip keeps every bit pattern (NaNs of both signs included).
            assert_same_bits(
                &bits(&x)?,
                &(0..256).collect::<Vec<u64>>(),
                &format!("{dtype} round trip"),
            );
            // Decoding to f32 is exact: amp-dtype's value, NaN as 0x7FC00000.
            let f32_bits: Vec<u64> = (0..=255u8)
                .map(|b| {
                    let v = match dtype {
                        DType::F8E4M3 => F8E4M3::from_bits(b).to_f32(),
                        _ => F8E5M2::from_bits(b).to_f32(),
                    };
                    u64::from(v.to_bits())
                })
                .collect();
            assert_same_bits(
                &bits(&x.to_dtype(DType::F32)?)?,
                &f32_bits,
                &format!("{dtype} -> f32"),
            );
            // Every target dtype, bit for bit with the reference backend's cast.
            for to in targets {
                let what = format!("{dtype} -> {to}");
                assert_same_bits(&bits(&x.to_dtype(to)?)?, &bits(&xr.to_dtype(to)?)?, &what);
            }
            // Strided views: cast and copy of a transposed [16, 16] view.
            let (t, tr) = (x.reshape(&[16, 16])?.t()?, xr.reshape(&[16, 16])?.t()?);
            assert!(!t.is_contiguous());
            assert_same_bits(
                &bits(&t.to_dtype(DType::F32)?)?,
                &bits(&tr.to_dtype(DType::F32)?)?,
                &format!("{dtype} strided -> f32"),
            );
            let want: Vec<u64> = (0..256u64).map(|i| (i % 16) * 16 + i / 16).collect();
            assert_same_bits(
                &bits(&t.contiguous()?)?,
                &want,
                &format!("{dtype} strided copy"),
            );
            assert_same_bits(&bits(&t)?, &want, &format!("{dtype} strided to_host"));
        }
        Ok(())
    }
);

on_every_device!(
    casts_to_fp8_are_bit_exact_with_amp_dtype,
    |d: &Device| -> Result<()> {
        let values = fp8_probe_values();
        let f32s: Vec<f32> = values.iter().map(|&x| x as f32).collect();
        // Double-rounding traps for f64 sources: a tie after rounding to f32
        // first, but not exactly a tie (one rounding, directly from f64).
        let mut f64s = values.clone();
        for p in [
            1.0625,
            17.0,
            0.0029296875,
            3.0 * 2f64.powi(-18),
            464.0,
            61440.0,
            2f64.powi(-10),
            2f64.powi(-17),
        ] {
            for s in [1.0, -1.0] {
                f64s.extend([
                    s * p * (1.0 + 2f64.powi(-30)),
                    s * p * (1.0 - 2f64.powi(-30)),
                ]);
            }
        }
        f64s.extend([1e300, -1e300, f64::MAX, 5e-324, -5e-324, 1e-310]);
        for dtype in FP8 {
            let n = f32s.len();
            let got = bits(&Tensor::from_vec(f32s.clone(), &[n], d)?.to_dtype(dtype)?)?;
            let want: Vec<u64> = f32s.iter().map(|&x| fp8_bits_from_f32(dtype, x)).collect();
            assert_same_bits(&got, &want, &format!("f32 -> {dtype}"));
            // The same through a strided (reversed-order transposed) view.
            let m = n / 2;
            let t = Tensor::from_vec(f32s[..2 * m].to_vec(), &[m, 2], d)?.t()?;
            let want_t: Vec<u64> = (0..2 * m).map(|i| want[(i % m) * 2 + i / m]).collect();
            assert_same_bits(
                &bits(&t.to_dtype(dtype)?)?,
                &want_t,
                &format!("strided f32 -> {dtype}"),
            );

            let n = f64s.len();
            let got = bits(&Tensor::from_vec(f64s.clone(), &[n], d)?.to_dtype(dtype)?)?;
            let want: Vec<u64> = f64s.iter().map(|&x| fp8_bits_from_f64(dtype, x)).collect();
            assert_same_bits(&got, &want, &format!("f64 -> {dtype}"));

            // Other sources, against the reference backend's cast of the same source values.
            for from in [DType::F16, DType::BF16, DType::I64, DType::U8, DType::Bool] {
                let src_ref = Tensor::from_f64_slice(&f64s, &[n], from, &Device::reference())?;
                let src = src_ref.to_device(d)?;
                let what = format!("{from} -> {dtype}");
                assert_same_bits(
                    &bits(&src.to_dtype(dtype)?)?,
                    &bits(&src_ref.to_dtype(dtype)?)?,
                    &what,
                );
            }
            // full: the value rounded by amp-dtype, every element.
            for value in [
                0.0,
                -0.0,
                1.0,
                -2.5,
                464.0,
                465.0,
                61440.0,
                -1e6,
                f64::NAN,
                2f64.powi(-10),
                3.0 * 2f64.powi(-11),
            ] {
                let got = bits(&Tensor::full(&[3, 5], value, dtype, d)?)?;
                assert_same_bits(
                    &got,
                    &[fp8_bits_from_f64(dtype, value); 15],
                    &format!("full({value}) {dtype}"),
                );
            }
        }
        Ok(())
    }
);

on_every_device!(
    fp8_moves_bits_and_refuses_math,
    |d: &Device| -> Result<()> {
        // Bit patterns equal, or NaN on both sides (the reference reads values
        // through f64, which drops the sign of a NaN).
        let same = |got: &Tensor, want: &Tensor, what: &str| -> Result<()> {
            let (g, w) = (got.to_f64_vec()?, want.to_f64_vec()?);
            let (gb, wb) = (bits(got)?, bits(want)?);
            assert_eq!(got.dtype(), want.dtype(), "{what}");
            assert_eq!(gb.len(), wb.len(), "{what}");
            for i in 0..gb.len() {
                assert!(
                    gb[i] == wb[i] || (g[i].is_nan() && w[i].is_nan()),
                    "{what}: element {i} got {:#x} want {:#x}",
                    gb[i],
                    wb[i]
                );
            }
            Ok(())
        };
        for dtype in FP8 {
            let host = all_fp8_patterns(dtype);
            let x = Tensor::from_host(host.clone(), &[16, 16], d)?;
            let xr = Tensor::from_host(host, &[16, 16], &Device::reference())?;
            let (xt, xrt) = (x.t()?, xr.t()?);
            same(
                &ops::cat(&[&x, &xt], 0)?,
                &ops::cat(&[&xr, &xrt], 0)?,
                &format!("cat {dtype}"),
            )?;
            same(
                &ops::cat(&[&xt, &x], 1)?,
                &ops::cat(&[&xrt, &xr], 1)?,
                &format!("cat dim 1 {dtype}"),
            )?;
            let idx = [3i64, 0, 15, 7, 7];
            let (i, ir) = (
                Tensor::from_vec(idx.to_vec(), &[5], d)?,
                Tensor::from_vec(idx.to_vec(), &[5], &Device::reference())?,
            );
            same(
                &xt.index_select(1, &i)?,
                &xrt.index_select(1, &ir)?,
                &format!("index_select {dtype}"),
            )?;
            let g: Vec<i64> = (0..256).map(|k| (k * 7 + 3) % 16).collect();
            let (gi, gir) = (
                Tensor::from_vec(g.clone(), &[16, 16], d)?,
                Tensor::from_vec(g, &[16, 16], &Device::reference())?,
            );
            same(
                &xt.gather(0, &gi)?,
                &xrt.gather(0, &gir)?,
                &format!("gather {dtype}"),
            )?;
            let c: Vec<bool> = (0..16).map(|k| k % 3 == 0).collect();
            let (cd, cr) = (
                Tensor::from_vec(c.clone(), &[16, 1], d)?,
                Tensor::from_vec(c, &[16, 1], &Device::reference())?,
            );
            same(
                &ops::where_cond(&cd, &x, &xt)?,
                &ops::where_cond(&cr, &xr, &xrt)?,
                &format!("where {dtype}"),
            )?;

            // Arithmetic on fp8 is an error naming the op and the dtype (PyTorch has none either).
            let b = d.backend();
            let input = x.materialised_input()?;
            let s = input.storage();
            let l = x.layout().clone();
            let l3 = Layout::contiguous(&[1, 16, 16]);
            let errors = [
                ("unary", b.unary(UnaryOp::Exp, (s, &l), dtype).err()),
                (
                    "binary",
                    b.binary(BinaryOp::Add, (s, &l), (s, &l), dtype).err(),
                ),
                (
                    "reduce",
                    b.reduce(ReduceOp::Sum, (s, &l), &[1], dtype).err(),
                ),
                ("matmul", b.matmul((s, &l3), (s, &l3), dtype).err()),
                ("softmax", b.softmax((s, &l), false, dtype).err()),
                (
                    "layer_norm",
                    b.layer_norm((s, &l), None, None, 1e-5, dtype).err(),
                ),
            ];
            for (op, err) in errors {
                let e = err.unwrap_or_else(|| panic!("{op} on {dtype} should be an error"));
                let msg = e.to_string();
                assert!(
                    msg.contains(op) && msg.contains(&dtype.to_string()),
                    "{op} on {dtype}: {msg}"
                );
            }
        }
        Ok(())
    }
);

on_every_device!(reductions_match_reference, |d: &Device| -> Result<()> {
    let shape = [3usize, 4, 37];
    let dim_sets: [&[usize]; 7] = [&[], &[0], &[1], &[2], &[0, 2], &[1, 2], &[0, 1, 2]];
    let ops = [
        ReduceOp::Sum,
        ReduceOp::Mean,
        ReduceOp::Max,
        ReduceOp::Min,
        ReduceOp::ArgMax,
        ReduceOp::ArgMin,
    ];
    for dtype in [DType::F32, DType::F16, DType::BF16, DType::F64, DType::I64] {
        let base = Tensor::randn(&[4, 3, 37], DType::F64, d, 9)?
            .mul_scalar(10.0)?
            .to_dtype(dtype)?;
        let x = base.transpose(0, 1)?; // strided [3, 4, 37]
        let xr = on_ref(&x)?;
        for dims in dim_sets {
            for op in ops {
                let out = match op {
                    ReduceOp::ArgMax | ReduceOp::ArgMin => DType::I64,
                    _ => dtype,
                };
                let got = x.with_view(|v| d.backend().reduce(op, v, dims, out))??;
                let out_shape: Vec<usize> = shape
                    .iter()
                    .enumerate()
                    .map(|(i, &s)| if dims.contains(&i) { 1 } else { s })
                    .collect();
                let got = d
                    .backend()
                    .to_host((&got, &Layout::contiguous(&out_shape)))?;
                let want =
                    xr.with_view(|v| Device::reference().backend().reduce(op, v, dims, out))??;
                let want = want.host("t")?.clone();
                let count: usize = dims.iter().map(|&i| shape[i]).product();
                let tol = match (dtype, op) {
                    (_, ReduceOp::ArgMax | ReduceOp::ArgMin | ReduceOp::Max | ReduceOp::Min) => {
                        Tolerance::EXACT
                    }
                    (DType::F32, _) => Tolerance {
                        rel: 1e-6,
                        abs: 1e-6,
                    },
                    (DType::I64, _) => Tolerance::EXACT,
                    (dt, _) => Tolerance::for_dtype(dt).scale_abs((count as f64).sqrt() * 10.0),
                };
                let (gv, wv) = (
                    got.read_f64(&Layout::contiguous(&[got.len()])),
                    want.read_f64(&Layout::contiguous(&[want.len()])),
                );
                // Mean of i64 truncates; argmax ties cannot occur with these draws except in i64/bf16 — compare values then.
                check_values(&gv, &wv, tol).map_err(|e| {
                    amp_tensor::Error::invalid(
                        "reduce",
                        format!("{op:?} {dtype} dims {dims:?}: {e}"),
                    )
                })?;
            }
        }
    }
    // NaN propagates through max and is the argmax (first one).
    let v = Tensor::from_vec(vec![1.0f32, f32::NAN, 5.0, f32::NAN], &[1, 4], d)?;
    let (m, i) = v.max_dim(1, false)?;
    assert!(m.to_vec::<f32>()?[0].is_nan());
    assert_eq!(i.to_vec::<i64>()?, vec![1]);
    // A long row (one block per row, many elements per thread).
    let long = Tensor::randn(&[2, 100_003], DType::F32, d, 4)?;
    assert_close(
        &long.sum_dim(1, false)?,
        &on_ref(&long)?.sum_dim(1, false)?,
        Tolerance {
            rel: 1e-6,
            abs: 1e-5,
        },
    )
});

on_every_device!(
    softmax_and_layer_norm_match_reference,
    |d: &Device| -> Result<()> {
        for dtype in FLOATS {
            let tol = match dtype {
                DType::F32 => Tolerance {
                    rel: 1e-5,
                    abs: 1e-6,
                },
                other => Tolerance::for_dtype(other),
            };
            let x = Tensor::randn(&[6, 129], DType::F32, d, 1)?
                .mul_scalar(3.0)?
                .to_dtype(dtype)?;
            let xr = on_ref(&x)?;
            for dim in [-1isize, 0] {
                assert_close(&ops::softmax(&x, dim)?, &ops::softmax(&xr, dim)?, tol)?;
                assert_close(
                    &ops::log_softmax(&x, dim)?,
                    &ops::log_softmax(&xr, dim)?,
                    tol,
                )?;
            }
            let w = Tensor::randn(&[129], DType::F32, d, 2)?.to_dtype(dtype)?;
            let b = Tensor::randn(&[129], DType::F32, d, 3)?.to_dtype(dtype)?;
            let (wr, br) = (on_ref(&w)?, on_ref(&b)?);
            assert_close(
                &ops::layer_norm(&x, Some(&w), Some(&b), 1e-5)?,
                &ops::layer_norm(&xr, Some(&wr), Some(&br), 1e-5)?,
                tol.scale(2.0),
            )?;
            assert_close(
                &ops::layer_norm(&x, None, None, 1e-5)?,
                &ops::layer_norm(&xr, None, None, 1e-5)?,
                tol.scale(2.0),
            )?;
        }
        // -inf entries (masked logits) and a fully masked row.
        let m = Tensor::from_vec(
            vec![
                0.0f32,
                f32::NEG_INFINITY,
                1.0,
                f32::NEG_INFINITY,
                f32::NEG_INFINITY,
                f32::NEG_INFINITY,
            ],
            &[2, 3],
            d,
        )?;
        let got = ops::softmax(&m, -1)?.to_vec::<f32>()?;
        let want = ops::softmax(&on_ref(&m)?, -1)?.to_vec::<f32>()?;
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g.is_nan() && w.is_nan()) || (g - w).abs() < 1e-6,
                "{got:?} vs {want:?}"
            );
        }
        Ok(())
    }
);

on_every_device!(
    cat_index_select_gather_scatter_match_reference,
    |d: &Device| -> Result<()> {
        for dtype in [DType::F32, DType::F16, DType::BF16, DType::F64, DType::I64] {
            let a = Tensor::randn(&[3, 4], DType::F32, d, 1)?
                .mul_scalar(5.0)?
                .to_dtype(dtype)?;
            let b = Tensor::randn(&[5, 3], DType::F32, d, 2)?
                .mul_scalar(5.0)?
                .to_dtype(dtype)?
                .t()?; // [3, 5] strided
            let (ar, br) = (on_ref(&a)?, on_ref(&b)?);
            assert_close(
                &ops::cat(&[&a, &b], 1)?,
                &ops::cat(&[&ar, &br], 1)?,
                Tolerance::EXACT,
            )?;
            assert_close(
                &ops::cat(&[&a.t()?, &b.t()?], 0)?,
                &ops::cat(&[&ar.t()?, &br.t()?], 0)?,
                Tolerance::EXACT,
            )?;
            let idx = Tensor::from_vec(vec![2i64, 0, 2, 1], &[4], d)?;
            let idx_r = on_ref(&idx)?;
            assert_close(
                &a.index_select(0, &idx)?,
                &ar.index_select(0, &idx_r)?,
                Tolerance::EXACT,
            )?;
            assert_close(
                &a.index_select(1, &idx)?,
                &ar.index_select(1, &idx_r)?,
                Tolerance::EXACT,
            )?;
            let g = Tensor::from_vec(vec![3i64, 0, 1, 1, 2, 2], &[3, 2], d)?;
            assert_close(
                &a.gather(1, &g)?,
                &ar.gather(1, &on_ref(&g)?)?,
                Tolerance::EXACT,
            )?;
        }
        // scatter_add (the backward of gather) with repeated indices.
        for dtype in [DType::F32, DType::F16, DType::BF16, DType::F64] {
            let src = Tensor::randn(&[3, 6], DType::F32, d, 7)?.to_dtype(dtype)?;
            let idx = Tensor::from_vec(
                vec![0i64, 1, 1, 3, 3, 3, 2, 2, 0, 0, 0, 1, 3, 2, 1, 0, 0, 0],
                &[3, 6],
                d,
            )?;
            let (sr, ir) = (on_ref(&src)?, on_ref(&idx)?);
            let got = idx.with_view(|vi| {
                src.with_view(|vs| d.backend().scatter_add(&[3, 4], 1, vi, vs, dtype))
            })???;
            let got = d.backend().to_host((&got, &Layout::contiguous(&[3, 4])))?;
            let want = ir.with_view(|vi| {
                sr.with_view(|vs| {
                    Device::reference()
                        .backend()
                        .scatter_add(&[3, 4], 1, vi, vs, dtype)
                })
            })???;
            let want = want.host("t")?.clone();
            check_values(
                &got.read_f64(&Layout::contiguous(&[12])),
                &want.read_f64(&Layout::contiguous(&[12])),
                Tolerance::for_dtype(dtype),
            )?;
        }
        // Embedding-style lookup and its gradient end to end.
        let w = Tensor::randn(&[10, 8], DType::F32, d, 3)?;
        w.set_requires_grad(true)?;
        let ids = Tensor::from_vec(vec![1i64, 4, 4, 9], &[2, 2], d)?;
        ops::embedding(&ids, &w)?.sum_all()?.backward()?;
        let wr = on_ref(&w)?.detach();
        wr.set_requires_grad(true)?;
        ops::embedding(&on_ref(&ids)?, &wr)?.sum_all()?.backward()?;
        assert_close(
            &w.grad().expect("grad"),
            &wr.grad().expect("grad"),
            Tolerance::EXACT,
        )
    }
);

on_every_device!(
    matmul_f32_has_no_tf32_and_half_types_are_close,
    |d: &Device| -> Result<()> {
        // K = 512 sums: TF32 (10-bit mantissa) would miss rel 1e-5 by two orders of magnitude.
        let a = Tensor::randn(&[2, 33, 512], DType::F32, d, 1)?;
        let b = Tensor::randn(&[2, 512, 47], DType::F32, d, 2)?;
        let want = ops::matmul(&on_ref(&a)?, &on_ref(&b)?)?;
        let got = ops::matmul(&a, &b)?;
        let (gv, wv) = (got.to_f64_vec()?, want.to_f64_vec()?);
        let scale = wv.iter().map(|x| x.abs()).fold(0.0, f64::max);
        let worst = gv
            .iter()
            .zip(&wv)
            .map(|(g, w)| (g - w).abs() / scale)
            .fold(0.0, f64::max);
        assert!(
            worst < 1e-5,
            "f32 matmul max error {worst:e} relative to max |C|: TF32 or a wrong kernel"
        );
        check_values(
            &gv,
            &wv,
            Tolerance {
                rel: 1e-5,
                abs: 1e-4,
            },
        )?;
        // Transposed operands (linear), broadcast batch, vectors, f64.
        let x = Tensor::randn(&[5, 64], DType::F32, d, 3)?;
        let w = Tensor::randn(&[7, 64], DType::F32, d, 4)?;
        let bias = Tensor::randn(&[7], DType::F32, d, 5)?;
        let y = ops::linear(&x, &w, Some(&bias))?;
        assert_close(
            &y,
            &ops::linear(&on_ref(&x)?, &on_ref(&w)?, Some(&on_ref(&bias)?))?,
            Tolerance {
                rel: 1e-5,
                abs: 1e-5,
            },
        )?;
        let bb = Tensor::randn(&[64, 3], DType::F32, d, 6)?;
        let batched = Tensor::randn(&[4, 5, 64], DType::F32, d, 7)?;
        assert_close(
            &batched.matmul(&bb)?,
            &on_ref(&batched)?.matmul(&on_ref(&bb)?)?,
            Tolerance {
                rel: 1e-5,
                abs: 1e-5,
            },
        )?;
        let v = Tensor::randn(&[64], DType::F32, d, 8)?;
        assert_close(
            &x.matmul(&v)?,
            &on_ref(&x)?.matmul(&on_ref(&v)?)?,
            Tolerance {
                rel: 1e-5,
                abs: 1e-5,
            },
        )?;
        assert_close(
            &v.matmul(&bb)?,
            &on_ref(&v)?.matmul(&on_ref(&bb)?)?,
            Tolerance {
                rel: 1e-5,
                abs: 1e-5,
            },
        )?;
        let x64 = x.to_dtype(DType::F64)?;
        let w64 = w.to_dtype(DType::F64)?;
        assert_close(
            &x64.matmul(&w64.t()?)?,
            &on_ref(&x64)?.matmul(&on_ref(&w64)?.t()?)?,
            Tolerance::for_dtype(DType::F64),
        )?;
        // bf16 within 1e-2 and f16 within 1e-3 of the exact product rounded once.
        for (dtype, rel) in [(DType::BF16, 1e-2), (DType::F16, 1e-3)] {
            let a = Tensor::randn(&[3, 40, 64], DType::F32, d, 9)?.to_dtype(dtype)?;
            let b = Tensor::randn(&[3, 64, 24], DType::F32, d, 10)?
                .to_dtype(dtype)?
                .transpose(1, 2)?
                .contiguous()?
                .transpose(1, 2)?;
            let got = ops::matmul(&a, &b)?;
            assert_eq!(got.dtype(), dtype);
            let want = ops::matmul(&on_ref(&a)?, &on_ref(&b)?)?;
            assert_close(&got, &want, Tolerance { rel, abs: rel })?;
        }
        // Empty and K = 0 products.
        let z = ops::matmul(
            &Tensor::zeros(&[3, 0], DType::F32, d)?,
            &Tensor::zeros(&[0, 2], DType::F32, d)?,
        )?;
        assert_eq!(z.to_vec::<f32>()?, vec![0.0; 6]);
        Ok(())
    }
);
