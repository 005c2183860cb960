//! The mission's training loop, as the mission states it: bf16 where the
//! device supports it, else f16 with a GradScaler; autocast around the forward
//! pass and the loss only; backward and the optimizer step outside it.
//!
//! The loop itself is [`amp_train::demo::mission_loop`] (`src/demo.rs`, also
//! what `amp-train demo` runs); this example runs it on the best device.
//!
//! Run with `cargo run --release -p amp-train --example train_loop`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let device = amp_train::best_device(); // CUDA if usable, else CPU
    amp_train::demo::mission_loop(&device, &mut std::io::stdout().lock())
}
