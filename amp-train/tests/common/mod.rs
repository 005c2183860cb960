//! Helpers shared by amp-train's integration tests (each file uses a part).
#![allow(dead_code)]

use amp_train::nn::Module;
use amp_train::train::TrainOutcome;
use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output};

/// A path of its own under the temporary folder, with nothing there yet.
pub fn temp_path(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("amp-train-test-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&path);
    path
}

/// An empty folder of its own under the temporary folder.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = temp_path(name);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the `amp-train` binary with `args`.
pub fn amp_train(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_amp-train"))
        .args(args)
        .output()
        .expect("the binary runs")
}

pub fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

/// Every parameter of the trained model as its f32 bit patterns, by name.
pub fn param_bits(outcome: &TrainOutcome) -> Vec<(String, Vec<u32>)> {
    outcome
        .model
        .named_parameters()
        .into_iter()
        .map(|(n, t)| {
            let bits = t.to_vec::<f32>().unwrap().into_iter().map(f32::to_bits);
            (n, bits.collect())
        })
        .collect()
}
