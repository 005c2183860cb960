//! The op cases: seeded inputs with realistic and adversarial value ranges
//! (long reductions, large logits, fully masked rows, long sequences) and
//! the op each runs.

use super::*;

/// One test case: named inputs (f64 values and shapes) and the op.
pub(super) struct Case {
    pub(super) op: &'static str,
    pub(super) name: String,
    pub(super) inputs: Vec<(Vec<f64>, Vec<usize>)>,
    /// Inputs that are integer class labels (kept i64).
    pub(super) index_inputs: Vec<(Vec<i64>, Vec<usize>)>,
    pub(super) f: OpFn,
}

pub(super) fn randn(shape: &[usize], scale: f64, seed: u64) -> (Vec<f64>, Vec<usize>) {
    let n: usize = shape.iter().product();
    let v = amp_tensor::random::normals(seed, n)
        .into_iter()
        .map(|x| x * scale)
        .collect();
    (v, shape.to_vec())
}

pub(super) fn uniform(shape: &[usize], lo: f64, hi: f64, seed: u64) -> (Vec<f64>, Vec<usize>) {
    let n: usize = shape.iter().product();
    let v = (0..n as u64)
        .map(|i| lo + (hi - lo) * amp_tensor::random::uniform(seed, i))
        .collect();
    (v, shape.to_vec())
}

pub(super) fn cases(full: bool) -> Vec<Case> {
    let big = if full { 4 } else { 1 };
    let mut c = Vec::new();
    let mut add = |op: &'static str, name: String, inputs, index_inputs, f: OpFn| {
        c.push(Case {
            op,
            name,
            inputs,
            index_inputs,
            f,
        });
    };
    for &(m, k, n) in &[
        (64usize, 256usize, 64usize),
        (33, 4096, 17),
        (128 * big, 512, 96),
    ] {
        add(
            "matmul",
            format!("{m}x{k}x{n}"),
            vec![randn(&[m, k], 1.0, 1), randn(&[k, n], 1.0, 2)],
            vec![],
            |v| ops::matmul(&v[0], &v[1]),
        );
    }
    add(
        "matmul",
        "batched 4x31x65x29, B transposed".into(),
        vec![randn(&[4, 31, 65], 1.0, 3), randn(&[4, 29, 65], 1.0, 4)],
        vec![],
        |v| ops::matmul(&v[0], &v[1].transpose(-1, -2)?),
    );
    add(
        "bmm",
        "8x64x96x48".into(),
        vec![randn(&[8, 64, 96], 1.0, 40), randn(&[8, 96, 48], 1.0, 41)],
        vec![],
        |v| ops::bmm(&v[0], &v[1]),
    );
    add(
        "baddbmm",
        "4x33x200x17, beta 0.5, alpha 0.125".into(),
        vec![
            randn(&[4, 33, 17], 1.0, 42),
            randn(&[4, 33, 200], 1.0, 43),
            randn(&[4, 200, 17], 1.0, 44),
        ],
        vec![],
        |v| ops::baddbmm(&v[0], &v[1], &v[2], 0.5, 0.125),
    );
    attention_cases(&mut add, big);
    conv_cases(&mut add, big);
    add(
        "linear",
        "256x64 -> 256, bias".into(),
        vec![
            randn(&[256, 64], 1.0, 5),
            randn(&[256, 64], 0.125, 6),
            randn(&[256], 0.125, 7),
        ],
        vec![],
        |v| ops::linear(&v[0], &v[1], Some(&v[2])),
    );
    add(
        "linear",
        "K=4096 long reduction".into(),
        vec![
            randn(&[16, 4096], 1.0, 8),
            randn(&[32, 4096], 0.02, 9),
            randn(&[32], 0.02, 10),
        ],
        vec![],
        |v| ops::linear(&v[0], &v[1], Some(&v[2])),
    );
    add(
        "softmax",
        "64x1000 logits N(0,1)".into(),
        vec![randn(&[64, 1000], 1.0, 11)],
        vec![],
        |v| ops::softmax(&v[0], -1),
    );
    add(
        "softmax",
        "64x1000 large logits N(0,30)".into(),
        vec![randn(&[64, 1000], 30.0, 12)],
        vec![],
        |v| ops::softmax(&v[0], -1),
    );
    add(
        "log_softmax",
        "64x1000 large logits N(0,30)".into(),
        vec![randn(&[64, 1000], 30.0, 13)],
        vec![],
        |v| ops::log_softmax(&v[0], -1),
    );
    add(
        "log_softmax",
        "over dim 0 (strided)".into(),
        vec![randn(&[300, 40], 3.0, 14)],
        vec![],
        |v| ops::log_softmax(&v[0], 0),
    );
    add(
        "layer_norm",
        "128x768 affine".into(),
        vec![
            randn(&[128, 768], 2.0, 15),
            randn(&[768], 1.0, 16),
            randn(&[768], 1.0, 17),
        ],
        vec![],
        |v| ops::layer_norm(&v[0], Some(&v[1]), Some(&v[2]), 1e-5),
    );
    add(
        "layer_norm",
        "offset mean 100".into(),
        vec![uniform(&[64, 512], 99.0, 101.0, 18)],
        vec![],
        |v| ops::layer_norm(&v[0], None, None, 1e-5),
    );
    add(
        "sum",
        "rows of 16384".into(),
        vec![randn(&[8, 16384 * big], 1.0, 19)],
        vec![],
        |v| v[0].sum_dim(-1, false),
    );
    add(
        "sum",
        "many small addends (1 + 4096 x 1e-3)".into(),
        vec![uniform(&[4, 4096], 0.5e-3, 1.5e-3, 20)],
        vec![],
        |v| v[0].sum_dim(-1, false),
    );
    add(
        "mean",
        "rows of 16384".into(),
        vec![uniform(&[8, 16384], 0.0, 1.0, 21)],
        vec![],
        |v| v[0].mean_dim(-1, false),
    );
    add(
        "sum",
        "over dim 0 (strided), f16 near overflow".into(),
        vec![uniform(&[64, 32], 0.0, 900.0, 22)],
        vec![],
        |v| v[0].sum_dim(0, false),
    );
    add(
        "cross_entropy",
        "256x10".into(),
        vec![randn(&[256, 10], 3.0, 23)],
        vec![((0..256).map(|i| (i * 7 % 10) as i64).collect(), vec![256])],
        |v| ops::cross_entropy(&v[0], &v[1]),
    );
    add(
        "cross_entropy",
        "64x32000 vocabulary".into(),
        vec![randn(&[64, 32000], 2.0, 24)],
        vec![(
            (0..64).map(|i| (i * 4999 % 32000) as i64).collect(),
            vec![64],
        )],
        |v| ops::cross_entropy(&v[0], &v[1]),
    );
    add(
        "gelu",
        "N(0,3)".into(),
        vec![randn(&[4096], 3.0, 25)],
        vec![],
        |v| v[0].gelu(GeluApprox::None),
    );
    add(
        "gelu",
        "tanh form".into(),
        vec![randn(&[4096], 3.0, 26)],
        vec![],
        |v| v[0].gelu(GeluApprox::Tanh),
    );
    add(
        "exp",
        "U(-10, 10)".into(),
        vec![uniform(&[4096], -10.0, 10.0, 27)],
        vec![],
        |v| v[0].exp(),
    );
    add(
        "log",
        "U(1e-3, 1e3)".into(),
        vec![uniform(&[4096], 1e-3, 1e3, 28)],
        vec![],
        |v| v[0].log(),
    );
    add(
        "add",
        "broadcast row + f16 near-overflow".into(),
        vec![
            uniform(&[128, 64], 3e4, 3.2e4, 29),
            uniform(&[64], 0.0, 100.0, 30),
        ],
        vec![],
        |v| v[0].add(&v[1]),
    );
    add(
        "mul",
        "transposed views".into(),
        vec![randn(&[64, 96], 1.0, 31), randn(&[96, 64], 1.0, 32)],
        vec![],
        |v| v[0].mul(&v[1].t()?),
    );
    c
}

/// `scaled_dot_product_attention` (the fused kernel where the backend has
/// one, against the reference's composed f64 computation): a long causal
/// sequence, large logits, a float mask with fully masked rows and L ≠ S,
/// and the gradients of q, k and v.
pub(super) fn attention_cases(
    add: &mut impl FnMut(
        &'static str,
        String,
        Vec<(Vec<f64>, Vec<usize>)>,
        Vec<(Vec<i64>, Vec<usize>)>,
        OpFn,
    ),
    big: usize,
) {
    let qkv = |b: usize, h: usize, l: usize, s: usize, d: usize, scale: f64, seed: u64| {
        vec![
            randn(&[b, h, l, d], scale, seed),
            randn(&[b, h, s, d], scale, seed + 1),
            randn(&[b, h, s, d], 1.0, seed + 2),
        ]
    };
    fn sdpa(v: &[Tensor], causal: bool) -> Result<Tensor> {
        ops::scaled_dot_product_attention(&v[0], &v[1], &v[2], None, 0.0, causal, None)
    }
    let t = 512 * big;
    add(
        "sdpa",
        "2x4x128x64, no mask".into(),
        qkv(2, 4, 128, 128, 64, 1.0, 45),
        vec![],
        |v| sdpa(v, false),
    );
    add(
        "sdpa",
        format!("causal, long: 1x2x{t}x64"),
        qkv(1, 2, t, t, 64, 1.0, 48),
        vec![],
        |v| sdpa(v, true),
    );
    add(
        "sdpa",
        "large logits (q, k ~ N(0, 4²)), head dim 80".into(),
        qkv(1, 2, 100, 100, 80, 4.0, 51),
        vec![],
        |v| sdpa(v, false),
    );
    // -inf where (i·7 + j) % 5 == 0, and every key of rows i % 10 == 3:
    // those rows attend to nothing and give zeros.
    let (l, s) = (77, 130);
    let mask = (0..l * s)
        .map(|x| {
            let (i, j) = (x / s, x % s);
            if i % 10 == 3 || (i * 7 + j) % 5 == 0 {
                f64::NEG_INFINITY
            } else {
                0.0
            }
        })
        .collect();
    let mut inputs = qkv(2, 3, l, s, 48, 1.0, 54);
    inputs.push((mask, vec![l, s]));
    add(
        "sdpa",
        format!("float mask, fully masked rows, L {l} ≠ S {s}"),
        inputs,
        vec![],
        |v| ops::scaled_dot_product_attention(&v[0], &v[1], &v[2], Some(&v[3]), 0.0, false, None),
    );
    let mut inputs = qkv(1, 4, 200, 200, 64, 1.0, 57);
    inputs.push(randn(&[1, 4, 200, 64], 1.0, 60));
    add(
        "sdpa backward",
        "causal 1x4x200x64: dq, dk, dv of Σ y·w".into(),
        inputs,
        vec![],
        |v| {
            for x in &v[..3] {
                x.set_requires_grad(true)?;
            }
            sdpa(v, true)?.mul(&v[3])?.sum_all()?.backward()?;
            let grads = v[..3]
                .iter()
                .map(|x| {
                    x.grad()
                        .ok_or_else(|| amp_tensor::Error::invalid("sdpa backward", "no gradient"))?
                        .flatten_all()
                })
                .collect::<Result<Vec<_>>>()?;
            ops::cat(&grads.iter().collect::<Vec<_>>(), 0)
        },
    );
}

/// Σ y·probe's gradients of the first `n` inputs, flattened and concatenated.
fn input_gradients(v: &[Tensor], y: Tensor, n: usize, op: &'static str) -> Result<Tensor> {
    y.mul(&v[v.len() - 1])?.sum_all()?.backward()?;
    let grads = v[..n]
        .iter()
        .map(|x| {
            x.grad()
                .ok_or_else(|| amp_tensor::Error::invalid(op, "no gradient"))?
                .flatten_all()
        })
        .collect::<Result<Vec<_>>>()?;
    ops::cat(&grads.iter().collect::<Vec<_>>(), 0)
}

/// Convolution, pooling and normalisation: large channel counts (long
/// products), depthwise with stride and dilation, batch norm over a long
/// reduction of inputs with a large mean and a small spread, and the
/// gradients of every input.
pub(super) fn conv_cases(
    add: &mut impl FnMut(
        &'static str,
        String,
        Vec<(Vec<f64>, Vec<usize>)>,
        Vec<(Vec<i64>, Vec<usize>)>,
        OpFn,
    ),
    big: usize,
) {
    use ops::{BatchNormOptions, Conv2dOptions, Pool2dOptions};
    let n = 4 * big;
    add(
        "conv2d",
        format!("{n}x128x14x14 -> 128, 3x3 pad 1 (K = 1152)"),
        vec![
            randn(&[n, 128, 14, 14], 1.0, 70),
            randn(&[128, 128, 3, 3], 1.0 / 34.0, 71),
            randn(&[128], 0.1, 72),
        ],
        vec![],
        |v| {
            ops::conv2d(
                &v[0],
                &v[1],
                Some(&v[2]),
                Conv2dOptions::default().padding(1),
            )
        },
    );
    add(
        "conv2d",
        "depthwise 2x64x17x15, 3x3 stride 2 dilation 2 pad 2".into(),
        vec![
            randn(&[2, 64, 17, 15], 1.0, 73),
            randn(&[64, 1, 3, 3], 0.3, 74),
        ],
        vec![],
        |v| {
            let o = Conv2dOptions::default()
                .stride(2)
                .dilation(2)
                .padding(2)
                .groups(64);
            ops::conv2d(&v[0], &v[1], None, o)
        },
    );
    add(
        "conv2d backward",
        "2x32x9x11 -> 48, 3x3 pad 1: dx, dw, db of Σ y·w".into(),
        vec![
            randn(&[2, 32, 9, 11], 1.0, 75),
            randn(&[48, 32, 3, 3], 0.06, 76),
            randn(&[48], 0.1, 77),
            randn(&[2, 48, 9, 11], 1.0, 78),
        ],
        vec![],
        |v| {
            for x in &v[..3] {
                x.set_requires_grad(true)?;
            }
            let y = ops::conv2d(
                &v[0],
                &v[1],
                Some(&v[2]),
                Conv2dOptions::default().padding(1),
            )?;
            input_gradients(v, y, 3, "conv2d backward")
        },
    );
    let plane = 16 * big;
    let (mean, sd) = (100.0, 0.5);
    let shifted: Vec<f64> = randn(&[32, 8, plane, plane], sd, 79)
        .0
        .into_iter()
        .map(|x| x + mean)
        .collect();
    add(
        "batch_norm",
        format!(
            "32x8x{plane}x{plane} ({} per channel), mean {mean}, sd {sd}",
            32 * plane * plane
        ),
        vec![
            (shifted.clone(), vec![32, 8, plane, plane]),
            randn(&[8], 1.0, 80),
            randn(&[8], 1.0, 81),
        ],
        vec![],
        |v| {
            ops::batch_norm(
                &v[0],
                None,
                Some(&v[1]),
                Some(&v[2]),
                BatchNormOptions::default(),
            )
        },
    );
    add(
        "batch_norm backward",
        format!("32x8x{plane}x{plane}, mean {mean}: dx, dw, db of Σ y·w"),
        vec![
            (shifted, vec![32, 8, plane, plane]),
            randn(&[8], 1.0, 82),
            randn(&[8], 1.0, 83),
            randn(&[32, 8, plane, plane], 1.0, 84),
        ],
        vec![],
        |v| {
            for x in &v[..3] {
                x.set_requires_grad(true)?;
            }
            let y = ops::batch_norm(
                &v[0],
                None,
                Some(&v[1]),
                Some(&v[2]),
                BatchNormOptions::default(),
            )?;
            input_gradients(v, y, 3, "batch_norm backward")
        },
    );
    add(
        "group_norm",
        "8x32x16x16, 8 groups".into(),
        vec![
            randn(&[8, 32, 16, 16], 2.0, 85),
            randn(&[32], 1.0, 86),
            randn(&[32], 1.0, 87),
        ],
        vec![],
        |v| ops::group_norm(&v[0], 8, Some(&v[1]), Some(&v[2]), 1e-5),
    );
    add(
        "max_pool2d",
        "8x16x31x29, 3x3 stride 2 pad 1".into(),
        vec![randn(&[8, 16, 31, 29], 1.0, 88)],
        vec![],
        |v| ops::max_pool2d(&v[0], Pool2dOptions::new(3).stride(2).padding(1)),
    );
    add(
        "avg_pool2d backward",
        "8x16x31x29, 3x3 stride 2 pad 1: dx of Σ y·w".into(),
        vec![
            randn(&[8, 16, 31, 29], 1.0, 89),
            randn(&[8, 16, 16, 15], 1.0, 90),
        ],
        vec![],
        |v| {
            v[0].set_requires_grad(true)?;
            let y = ops::avg_pool2d(&v[0], Pool2dOptions::new(3).stride(2).padding(1), true)?;
            input_gradients(v, y, 1, "avg_pool2d backward")
        },
    );
    add(
        "adaptive_avg_pool2d",
        "8x16x7x7 -> 3x3 (uneven bins)".into(),
        vec![randn(&[8, 16, 7, 7], 1.0, 91)],
        vec![],
        |v| ops::adaptive_avg_pool2d(&v[0], [3, 3]),
    );
}
