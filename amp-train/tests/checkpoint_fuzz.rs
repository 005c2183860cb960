//! The checkpoint loader against random bytes and random mutations of a real
//! checkpoint: it never panics, and it either refuses (an `Err`) or returns
//! exactly what was saved — never a silently different resume.

use amp_tensor::{DType, Device, Tensor};
use amp_train::checkpoint::{self, STATE_FILE, TENSORS_FILE};
use proptest::prelude::*;
use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

/// A fresh directory per case.
fn case_dir() -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "amp-train-fuzz-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_dir_all(&dir);
    dir
}

fn tensors(device: &Device) -> Vec<(String, Tensor)> {
    vec![
        (
            "model.0.weight".into(),
            Tensor::randn(&[4, 3], DType::F32, device, 1).unwrap(),
        ),
        (
            "model.0.bias".into(),
            Tensor::randn(&[4], DType::F32, device, 2).unwrap(),
        ),
        (
            "optim.exp_avg".into(),
            Tensor::randn(&[5], DType::BF16, device, 3).unwrap(),
        ),
        (
            "labels".into(),
            Tensor::from_vec(vec![3i64, 0, 9], &[3], device).unwrap(),
        ),
    ]
}

fn state() -> serde_json::Value {
    serde_json::json!({
        "epochs_done": 2,
        "loader_epoch": 2,
        "optimizer": {"kind": "AdamW", "config": {"lr": 0.001, "betas": [0.9, 0.999]}, "steps": [["w", 46]]},
        "scaler": {"scale": 65536.0, "_growth_tracker": 46},
        "step_losses": [2.30, 1.97, "NaN", 0.5],
    })
}

/// The saved checkpoint's two files.
fn original() -> (Vec<u8>, Vec<u8>) {
    let dir = case_dir();
    checkpoint::write(&dir, &tensors(&Device::reference()), &state()).unwrap();
    let files = (
        fs::read(dir.join(STATE_FILE)).unwrap(),
        fs::read(dir.join(TENSORS_FILE)).unwrap(),
    );
    fs::remove_dir_all(&dir).unwrap();
    files
}

/// Writes the two files, loads, and checks the property.
fn check(state_bytes: &[u8], tensor_bytes: &[u8]) -> Result<(), TestCaseError> {
    let dir = case_dir();
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(STATE_FILE), state_bytes).unwrap();
    fs::write(dir.join(TENSORS_FILE), tensor_bytes).unwrap();
    let device = Device::reference();
    let result = checkpoint::read(&dir, &device);
    fs::remove_dir_all(&dir).unwrap();
    if let Ok((loaded, loaded_state)) = result {
        // Accepted: it must be exactly what was saved.
        prop_assert_eq!(loaded_state, state());
        let saved = tensors(&device);
        let mut saved: Vec<_> = saved.iter().collect();
        saved.sort_by(|a, b| a.0.cmp(&b.0));
        prop_assert_eq!(loaded.len(), saved.len());
        for ((n1, t1), (n2, t2)) in loaded.iter().zip(saved) {
            prop_assert_eq!(n1, n2);
            prop_assert_eq!(t1.dims(), t2.dims());
            prop_assert_eq!(t1.dtype(), t2.dtype());
            let bits = |t: &Tensor| {
                t.to_f64_vec()
                    .unwrap()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect::<Vec<_>>()
            };
            prop_assert_eq!(bits(t1), bits(t2));
        }
    }
    Ok(())
}

#[derive(Debug, Clone)]
enum Mutation {
    FlipBit(usize, u8),
    SetByte(usize, u8),
    Truncate(usize),
    Insert(usize, u8),
    Delete(usize, usize),
}

fn apply(bytes: &[u8], m: &Mutation) -> Vec<u8> {
    let mut b = bytes.to_vec();
    let n = b.len().max(1);
    match *m {
        Mutation::FlipBit(at, bit) => {
            if !b.is_empty() {
                b[at % n] ^= 1 << (bit % 8);
            }
        }
        Mutation::SetByte(at, v) => {
            if !b.is_empty() {
                b[at % n] = v;
            }
        }
        Mutation::Truncate(at) => b.truncate(at % n),
        Mutation::Insert(at, v) => b.insert(at % (b.len() + 1), v),
        Mutation::Delete(at, len) => {
            let start = at % n;
            let end = (start + len % 16 + 1).min(b.len());
            b.drain(start.min(b.len())..end);
        }
    }
    b
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Mutation::FlipBit(a, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Mutation::SetByte(a, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Mutation::Insert(a, b)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::Delete(a, b)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, .. ProptestConfig::default() })]

    #[test]
    fn random_bytes_are_refused(
        state_bytes in prop::collection::vec(any::<u8>(), 0..2048),
        tensor_bytes in prop::collection::vec(any::<u8>(), 0..2048),
    ) {
        check(&state_bytes, &tensor_bytes)?;
    }

    #[test]
    fn mutations_of_a_real_checkpoint_are_refused_or_harmless(
        mutations in prop::collection::vec((any::<bool>(), mutation()), 1..4),
    ) {
        let (mut state_bytes, mut tensor_bytes) = original();
        for (in_state, m) in &mutations {
            if *in_state {
                state_bytes = apply(&state_bytes, m);
            } else {
                tensor_bytes = apply(&tensor_bytes, m);
            }
        }
        check(&state_bytes, &tensor_bytes)?;
    }

    #[test]
    fn a_real_state_with_random_json_edits_is_refused(
        at in any::<usize>(),
        text in "[0-9.eE+-]{1,4}",
    ) {
        // Digit-level edits inside the JSON, where a parse still succeeds.
        let (state_bytes, tensor_bytes) = original();
        let s = String::from_utf8(state_bytes).unwrap();
        let digits: Vec<usize> = s.char_indices().filter(|(_, c)| c.is_ascii_digit()).map(|(i, _)| i).collect();
        let i = digits[at % digits.len()];
        let edited = format!("{}{}{}", &s[..i], text, &s[i + 1..]);
        check(edited.as_bytes(), &tensor_bytes)?;
    }
}

#[test]
fn the_unmutated_checkpoint_loads() {
    let (s, t) = original();
    let dir = case_dir();
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(STATE_FILE), &s).unwrap();
    fs::write(dir.join(TENSORS_FILE), &t).unwrap();
    let (loaded, st) = checkpoint::read(&dir, &Device::reference()).unwrap();
    assert_eq!(st, state());
    assert_eq!(loaded.len(), 4);
    fs::remove_dir_all(&dir).unwrap();
}

/// What a training checkpoint restores into: the model's parameters (bits),
/// AdamW's step counts and moments (bits) and the scaler's state (JSON).
#[derive(Debug, PartialEq)]
struct Snapshot {
    params: Vec<Vec<u64>>,
    steps: Vec<(String, u64)>,
    moments: Vec<Vec<u64>>,
    scaler: String,
}

fn training_snapshot(
    model: &amp_train::nn::Linear,
    opt: &amp_train::optim::AdamW,
    scaler: &amp_scaler::GradScaler,
) -> Snapshot {
    use amp_train::nn::Module;
    let bits = |t: &Tensor| -> Vec<u64> {
        t.to_f64_vec()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect()
    };
    let params = model
        .named_parameters()
        .iter()
        .map(|(_, t)| bits(t))
        .collect();
    let state = opt.state_dict().unwrap();
    let moments = state.tensors.iter().map(|(_, t)| bits(t)).collect();
    let scaler = serde_json::to_string(&scaler.state_dict()).unwrap();
    Snapshot {
        params,
        steps: state.steps,
        moments,
        scaler,
    }
}

/// A model, optimizer and scaler one step into training (seed `seed`).
fn trained(
    seed: u64,
) -> (
    amp_train::nn::Linear,
    amp_train::optim::AdamW,
    amp_scaler::GradScaler,
) {
    use amp_train::nn::Module;
    let device = Device::reference();
    let model = amp_train::nn::Linear::seeded(4, 3, true, &device, seed).unwrap();
    let mut opt = amp_train::optim::AdamW::new(
        model.named_parameters(),
        amp_train::optim::AdamWConfig::lr(0.01),
    );
    let mut scaler = amp_scaler::GradScaler::new();
    let x = Tensor::randn(&[5, 4], DType::F32, &device, seed + 1).unwrap();
    let loss = model.forward(&x).unwrap().sum_all().unwrap();
    scaler.scale(&loss).unwrap().backward().unwrap();
    scaler.step(&mut opt).unwrap();
    scaler.update().unwrap();
    (model, opt, scaler)
}

/// The files of a training checkpoint (`checkpoint::save`) of [`trained`]`(1)`.
fn training_original() -> (Vec<u8>, Vec<u8>) {
    let (model, opt, scaler) = trained(1);
    let dir = case_dir();
    checkpoint::save(&dir, &model, &opt, &scaler, serde_json::json!({"epoch": 3})).unwrap();
    let files = (
        fs::read(dir.join(STATE_FILE)).unwrap(),
        fs::read(dir.join(TENSORS_FILE)).unwrap(),
    );
    fs::remove_dir_all(&dir).unwrap();
    files
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, .. ProptestConfig::default() })]

    /// The resume path (`checkpoint::load` = `Checkpoint::open` + `restore`) on
    /// a damaged training checkpoint: it restores exactly what was saved, or
    /// refuses and leaves the model, optimizer and scaler as they were.
    #[test]
    fn a_damaged_training_checkpoint_restores_exactly_or_changes_nothing(
        mutations in prop::collection::vec((any::<bool>(), mutation()), 1..4),
    ) {
        let (mut state_bytes, mut tensor_bytes) = training_original();
        for (in_state, m) in &mutations {
            if *in_state {
                state_bytes = apply(&state_bytes, m);
            } else {
                tensor_bytes = apply(&tensor_bytes, m);
            }
        }
        let dir = case_dir();
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(STATE_FILE), &state_bytes).unwrap();
        fs::write(dir.join(TENSORS_FILE), &tensor_bytes).unwrap();
        let (saved_model, saved_opt, saved_scaler) = trained(1);
        let saved = training_snapshot(&saved_model, &saved_opt, &saved_scaler);
        // Another run's objects, to restore into.
        let (model, mut opt, mut scaler) = trained(7);
        let before = training_snapshot(&model, &opt, &scaler);
        let result = checkpoint::load(&dir, &model, &mut opt, &mut scaler);
        fs::remove_dir_all(&dir).unwrap();
        let after = training_snapshot(&model, &opt, &scaler);
        match result {
            Ok(extra) => {
                prop_assert_eq!(extra, serde_json::json!({"epoch": 3}));
                prop_assert_eq!(after, saved);
            }
            Err(_) => prop_assert_eq!(after, before),
        }
    }
}

#[test]
fn an_undamaged_training_checkpoint_restores_exactly() {
    let (s, t) = training_original();
    let dir = case_dir();
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(STATE_FILE), &s).unwrap();
    fs::write(dir.join(TENSORS_FILE), &t).unwrap();
    let (saved_model, saved_opt, saved_scaler) = trained(1);
    let (model, mut opt, mut scaler) = trained(7);
    assert_ne!(
        training_snapshot(&model, &opt, &scaler),
        training_snapshot(&saved_model, &saved_opt, &saved_scaler)
    );
    checkpoint::load(&dir, &model, &mut opt, &mut scaler).unwrap();
    assert_eq!(
        training_snapshot(&model, &opt, &scaler),
        training_snapshot(&saved_model, &saved_opt, &saved_scaler)
    );
    fs::remove_dir_all(&dir).unwrap();
}
