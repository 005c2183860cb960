//! `state_dict()` / `load_state_dict()`: round trips before and after the lazy
//! initialisation, JSON, PyTorch's state dict, disabled states.

mod common;

use amp_scaler::{Error, GradScaler, Optimizer, ScalerState};
use amp_tensor::{DType, Device, Tensor};
use common::{fill_grad, Sgd};

fn one_param(device: &Device) -> (Tensor, Sgd) {
    let w = Tensor::ones(&[3], DType::F32, device).unwrap();
    w.set_requires_grad(true).unwrap();
    let opt = Sgd::new(vec![("w".into(), w.clone())], 0.0);
    (w, opt)
}

/// Runs iterations with an overflow wherever `overflow[i]`; returns (scale, tracker) after each.
fn run(scaler: &mut GradScaler, device: &Device, overflow: &[bool]) -> Vec<(f32, u64)> {
    let (w, mut opt) = one_param(device);
    let mut seen = Vec::new();
    for &inf in overflow {
        opt.zero_grad();
        scaler
            .scale(&w.sum_all().unwrap())
            .unwrap()
            .backward()
            .unwrap();
        if inf {
            fill_grad(&w, f64::INFINITY);
        }
        scaler.step(&mut opt).unwrap();
        scaler.update().unwrap();
        seen.push((scaler.get_scale(), scaler.growth_tracker()));
    }
    seen
}

fn custom() -> GradScaler {
    GradScaler::builder()
        .init_scale(512.0)
        .growth_factor(4.0)
        .backoff_factor(0.25)
        .growth_interval(3)
        .hysteresis(2)
        .min_scale(1.0)
        .max_scale(1e6)
        .max_consecutive_skips(50)
        .build()
        .unwrap()
}

fn json_round_trip(state: &ScalerState) -> ScalerState {
    let text = serde_json::to_string(state).unwrap();
    assert!(text.contains("\"_growth_tracker\""), "{text}");
    serde_json::from_str(&text).unwrap()
}

const SEQUENCE: [bool; 9] = [false, false, true, false, true, true, false, false, false];

#[test]
fn round_trip_before_lazy_init() {
    for (_, device) in amp_testkit::all_devices() {
        let original = custom();
        let state = original.state_dict();
        assert_eq!(
            (state.scale, state.growth_tracker, state.enabled),
            (512.0, 0, true)
        );
        let mut restored = GradScaler::new();
        restored.load_state_dict(&json_round_trip(&state)).unwrap();
        assert_eq!(restored.state_dict(), state);
        // Loading does not initialise: update before scale() is still the PyTorch error.
        let m = restored.update().unwrap_err().to_string();
        assert!(m.contains("Attempted update but _scale is None"), "{m}");
        // Both behave identically from here.
        let mut original = original;
        assert_eq!(
            run(&mut original, &device, &SEQUENCE),
            run(&mut restored, &device, &SEQUENCE)
        );
    }
}

#[test]
fn round_trip_after_lazy_init() {
    for (_, device) in amp_testkit::all_devices() {
        let mut original = custom();
        run(&mut original, &device, &[false, true, false, false]);
        let state = original.state_dict();
        assert_eq!((state.steps, state.skips, state.growth_tracker), (3, 1, 2));
        assert_eq!(state.hysteresis_left, Some(1));
        let mut restored = GradScaler::new();
        restored
            .scale(&Tensor::scalar(1.0, DType::F32, &device).unwrap())
            .unwrap();
        restored.load_state_dict(&json_round_trip(&state)).unwrap();
        assert_eq!(restored.state_dict(), state);
        assert_eq!(
            run(&mut original, &device, &SEQUENCE),
            run(&mut restored, &device, &SEQUENCE)
        );
        assert_eq!(original.state_dict(), restored.state_dict());
    }
}

#[test]
fn pytorch_state_dict_loads() {
    // json.dumps(torch.amp.GradScaler().state_dict()) after some training.
    let text = r#"{"scale": 32768.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000, "_growth_tracker": 17}"#;
    let state: ScalerState = serde_json::from_str(text).unwrap();
    let mut scaler = GradScaler::new();
    scaler.load_state_dict(&state).unwrap();
    assert_eq!((scaler.get_scale(), scaler.growth_tracker()), (32768.0, 17));
    let saved = scaler.state_dict();
    assert_eq!(
        (saved.hysteresis, saved.hysteresis_left, saved.min_scale),
        (1, Some(1), None)
    );
}

#[test]
fn disabled_states() {
    let disabled = GradScaler::builder().enabled(false).build().unwrap();
    let state = disabled.state_dict();
    assert!(!state.enabled);
    assert_eq!(state.scale, 1.0);
    let mut enabled = GradScaler::new();
    match enabled.load_state_dict(&json_round_trip(&state)) {
        Err(Error::InvalidState { msg }) => assert!(
            msg.contains("The source state dict is empty, possibly because it was saved from a disabled instance of GradScaler."),
            "{msg}"
        ),
        other => panic!("expected InvalidState, got {other:?}"),
    }
    assert_eq!(enabled.get_scale(), 65536.0);

    // A disabled scaler ignores any state, as PyTorch's does.
    let mut disabled = disabled;
    disabled.load_state_dict(&custom().state_dict()).unwrap();
    assert_eq!(disabled.get_scale(), 1.0);
    assert!(!disabled.is_enabled());
}

#[test]
fn invalid_states_are_rejected_and_leave_the_scaler_unchanged() {
    let good = custom().state_dict();
    let bad_states = [
        ScalerState {
            scale: 0.0,
            ..good.clone()
        },
        ScalerState {
            scale: f64::INFINITY,
            ..good.clone()
        },
        ScalerState {
            growth_factor: 1.0,
            ..good.clone()
        },
        ScalerState {
            backoff_factor: 1.0,
            ..good.clone()
        },
        ScalerState {
            growth_interval: 0,
            ..good.clone()
        },
        ScalerState {
            hysteresis: 0,
            ..good.clone()
        },
        ScalerState {
            hysteresis_left: Some(3),
            ..good.clone()
        },
        ScalerState {
            min_scale: Some(1e7),
            ..good.clone()
        },
    ];
    for bad in bad_states {
        let mut scaler = GradScaler::new();
        let err = scaler.load_state_dict(&bad).unwrap_err();
        assert!(matches!(err, Error::InvalidState { .. }), "{bad:?}: {err}");
        assert_eq!(scaler.state_dict(), GradScaler::new().state_dict());
    }
}
