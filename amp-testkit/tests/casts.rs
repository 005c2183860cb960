//! Casts and data movement against the f64 reference backend on every
//! device: casts between every dtype bit-exact, fills, `where` and host round
//! trips, fp8 decoding and rounding bit-exact with amp-dtype, and fp8
//! arithmetic refused by name. (Written first for the CUDA backend; run on
//! every device through the shared suite.)

use amp_dtype::{F8E4M3, F8E5M2};
use amp_tensor::backend::HostStorage;
use amp_tensor::backend::{BinaryOp, ReduceOp, UnaryOp};
use amp_tensor::ops;
use amp_tensor::{DType, Device, Layout, Result, Tensor};
use amp_testkit::{assert_close, on_every_device, on_ref, Tolerance};

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
