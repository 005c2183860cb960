//! A user's own model (LayerNorm, GELU) in f16 with the GradScaler and clipping, saved after one
//! epoch and reloaded into fresh objects that continue bit for bit (`--example custom_model`).
use amp::{nn::Gelu, nn::LayerNorm, nn::Linear, optim::AdamW, optim::AdamWConfig, prelude::*};

struct Net(LayerNorm, Linear, Gelu, Linear);

impl Module for Net {
    fn forward(&self, x: &Tensor) -> nn::Result<Tensor> {
        self.3.forward(&self.2.forward(&self.1.forward(&self.0.forward(x)?)?)?)
    }
    fn children(&self) -> Vec<(String, &dyn Module)> {
        nn::children!(self; 0, 1, 2, 3)
    }
}

fn net(d: &Device) -> amp::Result<(Net, AdamW, GradScaler)> {
    let m = Net(LayerNorm::new(8, d)?, Linear::new(8, 32, d)?, Gelu::new(), Linear::new(32, 4, d)?);
    let opt = AdamW::new(m.named_parameters(), AdamWConfig::lr(3e-3));
    Ok((m, opt, GradScaler::new()))
}

fn epoch(m: &Net, opt: &mut AdamW, sc: &mut GradScaler, data: &Loader) -> amp::Result<f64> {
    let mut loss_sum = 0.0;
    for batch in data.iter() {
        let (x, y) = batch?;
        opt.zero_grad();
        let region = autocast(x.device().kind(), DType::F16)?; // forward and loss only
        let loss = ops::cross_entropy(&m.forward(&x)?, &y)?;
        drop(region);
        sc.scale(&loss)?.backward()?;
        sc.clip_grad_norm(opt, 1.0)?; // unscales, then clips the true gradients
        sc.step(opt)?; // skipped on inf/NaN
        sc.update()?;
        loss_sum += loss.scalar_f64()?;
    }
    Ok(loss_sum / data.len() as f64)
}
type Loader = data::DataLoader<(Tensor, Tensor)>;

fn main() -> amp::Result<()> {
    amp::manual_seed(0);
    let device = Device::best();
    let x = Tensor::randn(&[512, 8], DType::F32, &device, 1)?;
    let y = Tensor::randint(0, 4, &[512], &device, 2)?;
    let data = data::DataLoader::new(data::TensorDataset::new(vec![x, y])?, 32).pairs()?;
    let (model, mut opt, mut scaler) = net(&device)?;
    println!("epoch 1: loss {:.4}", epoch(&model, &mut opt, &mut scaler, &data)?);
    let path = std::env::temp_dir().join(format!("amp-custom-model-{}", std::process::id()));
    amp::checkpoint::save(&path, &model, &opt, &scaler, amp::json!({ "epoch": 1 }))?;
    let loss = epoch(&model, &mut opt, &mut scaler, &data)?;
    let (model2, mut opt2, mut scaler2) = net(&device)?; // other weights, a fresh scaler
    let extra = amp::checkpoint::load(&path, &model2, &mut opt2, &mut scaler2)?;
    data.set_epoch(extra["epoch"].as_u64().unwrap_or(0));
    let loss2 = epoch(&model2, &mut opt2, &mut scaler2, &data)?;
    let bits = |m: &Net| m.parameters().iter().map(|p| p.to_vec::<f32>().ok()).collect::<Vec<_>>();
    assert!(loss2.to_bits() == loss.to_bits() && bits(&model2) == bits(&model), "not bit for bit");
    println!("epoch 2: loss {loss:.4}, after reloading {loss2:.4}: bit for bit");
    Ok(std::fs::remove_dir_all(&path)?)
}
