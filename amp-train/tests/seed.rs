//! The process-wide seed: alone in its test binary, because every unseeded
//! constructor in the process draws from it.

use amp_tensor::Device;
use amp_train::nn::{Gelu, LayerNorm, Linear, Module, Sequential};

fn model(device: &Device) -> Sequential {
    Sequential::new()
        .add(Linear::new(4, 3, device).unwrap())
        .add(Gelu::new())
        .add(LayerNorm::new(3, device).unwrap())
        .add(Linear::new(3, 2, device).unwrap())
}

#[test]
fn manual_seed_makes_unseeded_constructors_reproducible() {
    let device = Device::reference();
    let build = || {
        amp_tensor::random::manual_seed(7);
        model(&device).state_dict()
    };
    let (a, b) = (build(), build());
    for ((n, x), (_, y)) in a.iter().zip(&b) {
        assert_eq!(
            x.to_vec::<f32>().unwrap(),
            y.to_vec::<f32>().unwrap(),
            "{n}"
        );
    }
    // Consecutive layers draw different seeds.
    assert_ne!(
        a[0].1.to_vec::<f32>().unwrap()[..6],
        a[4].1.to_vec::<f32>().unwrap()[..6]
    );
}
