//! Attention, the transformer block and the GPT: PyTorch's parameter names,
//! self-attention against a hand computation in f64, causality, weight
//! tying, and a short run that learns in f32, bf16 and f16.

use amp_autocast::autocast;
use amp_scaler::GradScaler;
use amp_tensor::{ops, DType, Device, Tensor};
use amp_train::nn::{Gpt, GptConfig, Module, MultiheadAttention, TransformerBlock};
use amp_train::optim::{AdamW, AdamWConfig};

fn names(m: &dyn Module) -> Vec<String> {
    m.named_parameters().into_iter().map(|(n, _)| n).collect()
}

#[test]
fn parameter_names_are_pytorchs() {
    let d = Device::reference();
    let block = TransformerBlock::seeded(8, 2, 0.0, &d, 0).unwrap();
    // `nn.TransformerEncoderLayer(8, 2, 32, norm_first=True).state_dict().keys()`.
    assert_eq!(
        names(&block),
        [
            "self_attn.in_proj_weight",
            "self_attn.in_proj_bias",
            "self_attn.out_proj.weight",
            "self_attn.out_proj.bias",
            "linear1.weight",
            "linear1.bias",
            "linear2.weight",
            "linear2.bias",
            "norm1.weight",
            "norm1.bias",
            "norm2.weight",
            "norm2.bias"
        ]
    );
    let gpt = Gpt::seeded(
        GptConfig {
            vocab: 11,
            context: 6,
            layers: 2,
            d_model: 8,
            heads: 2,
        },
        0.0,
        &d,
        1,
    )
    .unwrap();
    let n = names(&gpt);
    assert_eq!(n[..2], ["wte.weight", "wpe.weight"]);
    assert!(n.contains(&"blocks.1.linear2.bias".to_string()) && n.last().unwrap() == "ln_f.bias");
    // The output head is the token embedding: counted once.
    let per_block = 3 * 64 + 24 + 64 + 8 + 8 * 32 + 32 + 32 * 8 + 8 + 4 * 8;
    assert_eq!(gpt.num_parameters(), 11 * 8 + 6 * 8 + 2 * per_block + 2 * 8);
}

/// Causal self-attention of `x` `[T, E]` in f64 with the module's parameters.
fn attention_by_hand(
    x: &[f64],
    t: usize,
    e: usize,
    heads: usize,
    p: &[(String, Tensor)],
) -> Vec<f64> {
    let get = |name: &str| {
        p.iter()
            .find(|(n, _)| n == name)
            .unwrap()
            .1
            .to_f64_vec()
            .unwrap()
    };
    let (w, b, wo, bo) = (
        get("in_proj_weight"),
        get("in_proj_bias"),
        get("out_proj.weight"),
        get("out_proj.bias"),
    );
    let proj =
        |row: usize, o: usize| b[o] + (0..e).map(|i| x[row * e + i] * w[o * e + i]).sum::<f64>();
    let dh = e / heads;
    let mut y = vec![0.0; t * e];
    for h in 0..heads {
        for i in 0..t {
            let q: Vec<f64> = (0..dh).map(|c| proj(i, h * dh + c)).collect();
            let scores: Vec<f64> = (0..=i)
                .map(|j| {
                    (0..dh).map(|c| q[c] * proj(j, e + h * dh + c)).sum::<f64>()
                        / (dh as f64).sqrt()
                })
                .collect();
            let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = scores.iter().map(|s| (s - max).exp()).sum();
            for (j, s) in scores.iter().enumerate() {
                for c in 0..dh {
                    y[i * e + h * dh + c] += (s - max).exp() / z * proj(j, 2 * e + h * dh + c);
                }
            }
        }
    }
    (0..t * e)
        .map(|k| {
            bo[k % e]
                + (0..e)
                    .map(|i| y[(k / e) * e + i] * wo[(k % e) * e + i])
                    .sum::<f64>()
        })
        .collect()
}

#[test]
fn self_attention_matches_a_hand_computation() {
    for d in [Device::reference(), amp_cpu::device()] {
        let (t, e, heads) = (5, 8, 2);
        let mha = MultiheadAttention::seeded(e, heads, true, &d, 3).unwrap();
        let x = Tensor::randn(&[1, t, e], DType::F32, &d, 4).unwrap();
        let got = mha.forward(&x).unwrap().to_f64_vec().unwrap();
        let want = attention_by_hand(
            &x.to_f64_vec().unwrap(),
            t,
            e,
            heads,
            &mha.named_parameters(),
        );
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g - w).abs() < 1e-5 * w.abs().max(1.0),
                "{d}: {got:?} vs {want:?}"
            );
        }
    }
}

#[test]
fn the_gpt_is_causal_and_refuses_long_sequences() {
    let d = amp_cpu::device();
    let config = GptConfig {
        vocab: 13,
        context: 8,
        layers: 2,
        d_model: 16,
        heads: 4,
    };
    let gpt = Gpt::seeded(config, 0.0, &d, 5).unwrap();
    let a = Tensor::from_vec(vec![1i64, 2, 3, 4, 5, 6], &[1, 6], &d).unwrap();
    let b = Tensor::from_vec(vec![1i64, 2, 3, 9, 9, 9], &[1, 6], &d).unwrap();
    let (la, lb) = (gpt.forward(&a).unwrap(), gpt.forward(&b).unwrap());
    assert_eq!(la.dims(), &[1, 6, 13]);
    let first = |l: &Tensor| l.narrow(1, 0, 3).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(
        first(&la),
        first(&lb),
        "later tokens do not change earlier logits"
    );
    assert_ne!(la.to_vec::<f32>().unwrap(), lb.to_vec::<f32>().unwrap());
    let long = Tensor::from_vec(vec![0i64; 9], &[1, 9], &d).unwrap();
    let err = gpt.forward(&long).unwrap_err().to_string();
    assert!(err.contains("Gpt") && err.contains("[1, 9]"), "{err}");
}

#[test]
fn a_tiny_gpt_learns_a_repeating_sequence_in_every_precision() {
    let d = amp_cpu::device();
    let config = GptConfig {
        vocab: 7,
        context: 12,
        layers: 2,
        d_model: 32,
        heads: 4,
    };
    // 0 1 2 3 4 5 6 0 1 2 …: the next token is always (token + 1) mod 7.
    let seq: Vec<i64> = (0..8 * 13).map(|i| (i % 7) as i64).collect();
    let tokens = Tensor::from_vec(seq, &[8, 13], &d).unwrap();
    let (x, y) = (
        tokens.narrow(1, 0, 12).unwrap().contiguous().unwrap(),
        tokens.narrow(1, 1, 12).unwrap().contiguous().unwrap(),
    );
    for low in [None, Some(DType::BF16), Some(DType::F16)] {
        let gpt = Gpt::seeded(config, 0.0, &d, 7).unwrap();
        let mut opt = AdamW::new(gpt.named_parameters(), AdamWConfig::lr(3e-3));
        let mut scaler = GradScaler::builder()
            .enabled(low == Some(DType::F16))
            .build()
            .unwrap();
        let mut losses = Vec::new();
        for _ in 0..60 {
            opt.zero_grad();
            let loss = {
                let _region = low.map(|dt| autocast(d.kind(), dt).unwrap());
                let logits = gpt.forward(&x).unwrap();
                ops::cross_entropy(
                    &logits.reshape(&[96, 7]).unwrap(),
                    &y.reshape(&[96]).unwrap(),
                )
                .unwrap()
            };
            scaler.scale(&loss).unwrap().backward().unwrap();
            scaler.step(&mut opt).unwrap();
            scaler.update().unwrap();
            losses.push(loss.scalar_f64().unwrap());
        }
        let (start, end) = (losses[0], *losses.last().unwrap());
        // ln 7 ≈ 1.95 at the start; the pattern is learnable to near 0.
        assert!(start > 1.5 && end < 0.3, "{low:?}: loss {start} -> {end}");
        let wte = &gpt.named_parameters()[0].1;
        assert_eq!(
            wte.grad().unwrap().dtype(),
            DType::F32,
            "f32 master weights get f32 gradients"
        );
    }
}

#[cfg(feature = "text")]
#[test]
fn a_short_f32_language_model_run_lowers_its_validation_loss() {
    use amp_train::train::{train_lm, FitConfig, LmConfig};
    let config = LmConfig {
        fit: FitConfig {
            precision: amp_train::Precision::F32,
            ..Default::default()
        },
        steps: 60,
        eval_interval: 20,
        batch_size: 8,
        context: 32,
        layers: 1,
        d_model: 32,
        heads: 2,
        ..Default::default()
    };
    let outcome = train_lm(&config, &amp_cpu::device()).unwrap();
    let history: Vec<f64> = outcome
        .report
        .history
        .iter()
        .map(|r| r.eval_loss.unwrap())
        .collect();
    assert_eq!(history.len(), 3);
    let vocab = outcome.corpus.vocab().len() as f64;
    // From about ln(vocab) (uniform guessing) to clearly below it, every evaluation lower.
    assert!(
        history[0] < vocab.ln() && history.windows(2).all(|w| w[1] < w[0]),
        "{history:?}"
    );
    assert!(
        history[2] < 0.8 * vocab.ln(),
        "{history:?} vs ln {vocab} = {}",
        vocab.ln()
    );
    let sample = outcome
        .model
        .generate(&[1, 2, 3], 10, 0.8, 0, &amp_cpu::device())
        .unwrap();
    assert_eq!(sample.len(), 10);
    assert!(outcome.corpus.vocab().decode(&sample).is_ok());
}
