//! [`Sequential`]: modules applied one after another.

use super::Module;
use amp_tensor::{Result, Tensor};
use std::sync::atomic::{AtomicBool, Ordering};

/// Runs its modules in order (`torch.nn.Sequential`); parameters are named
/// `"<index>.<name>"`.
pub struct Sequential {
    layers: Vec<Box<dyn Module>>,
    training: AtomicBool,
}

impl Sequential {
    /// An empty sequence (the identity).
    pub fn new() -> Sequential {
        Sequential {
            layers: Vec::new(),
            training: AtomicBool::new(true),
        }
    }

    /// Appends `layer` (builder style).
    #[allow(clippy::should_implement_trait)]
    pub fn add(mut self, layer: impl Module + 'static) -> Sequential {
        self.push(layer);
        self
    }

    /// Appends `layer`.
    pub fn push(&mut self, layer: impl Module + 'static) {
        layer.set_training(self.is_training());
        self.layers.push(Box::new(layer));
    }

    /// Number of layers.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// True if there are no layers.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// The layers.
    pub fn layers(&self) -> &[Box<dyn Module>] {
        &self.layers
    }
}

impl Default for Sequential {
    fn default() -> Self {
        Sequential::new()
    }
}

impl std::fmt::Debug for Sequential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Sequential({} layers, {} parameters)",
            self.layers.len(),
            self.num_parameters()
        )
    }
}

impl Module for Sequential {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut y = x.clone();
        for layer in &self.layers {
            y = layer.forward(&y)?;
        }
        Ok(y)
    }

    fn children(&self) -> Vec<(String, &dyn Module)> {
        self.layers
            .iter()
            .enumerate()
            .map(|(i, l)| (i.to_string(), l.as_ref() as &dyn Module))
            .collect()
    }

    fn set_training(&self, training: bool) {
        self.training.store(training, Ordering::Relaxed);
        for l in &self.layers {
            l.set_training(training);
        }
    }

    fn is_training(&self) -> bool {
        self.training.load(Ordering::Relaxed)
    }
}
