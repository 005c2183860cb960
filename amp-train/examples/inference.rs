//! Inference in mixed precision: train a digits MLP briefly in f32, then
//! classify the test split under `no_grad` and an autocast region — no tape
//! is recorded and the linears run in bf16 (or f16).
//!
//! Run with `cargo run --release -p amp-train --example inference`.

use amp_autocast::autocast;
use amp_dtype::DType;
use amp_train::data::digits;
use amp_train::nn::Module;
use amp_train::train::{train, FitConfig, TrainConfig};
use amp_train::Precision;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let device = amp_train::best_device();
    let config = TrainConfig {
        fit: FitConfig {
            precision: Precision::F32,
            epochs: 10,
            ..FitConfig::default()
        },
        ..TrainConfig::default()
    };
    let model = train(&config, &device)?.model;
    model.eval();

    let (_, test) = digits(&device)?;
    let (images, labels) = (&test.tensors()[0], &test.tensors()[1]);
    let dtype = if device.is_bf16_supported() {
        DType::BF16
    } else {
        DType::F16
    };

    let _no_grad = amp_tensor::no_grad(); // no autograd tape
    let _region = autocast(device.kind(), dtype)?; // linears in low precision
    let logits = model.forward(images)?;
    assert!(!logits.requires_grad());
    let predicted = logits.argmax(-1, false)?.to_vec::<i64>()?;
    let labels = labels.to_vec::<i64>()?;
    let correct = predicted
        .iter()
        .zip(&labels)
        .filter(|(p, l)| p == l)
        .count();
    println!(
        "logits dtype {} (autocast {dtype}), no grad: {}",
        logits.dtype(),
        !logits.requires_grad()
    );
    println!(
        "test accuracy {:.4} ({correct}/{})",
        correct as f64 / labels.len() as f64,
        labels.len()
    );
    println!(
        "first ten: predicted {:?}, labels {:?}",
        &predicted[..10],
        &labels[..10]
    );
    Ok(())
}
