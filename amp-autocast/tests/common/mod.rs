//! Test devices: the reference backend re-labelled as another device kind,
//! with buffers that count themselves so tests can see memory being freed.

#![allow(dead_code)]

use amp_tensor::backend::View;
use amp_tensor::backend::{
    Backend, BinaryOp, DeviceStorage, HostStorage, NonFiniteCount, ReduceOp, Storage, UnaryOp,
};
use amp_tensor::reference::ReferenceBackend;
use amp_tensor::{DType, Device, DeviceKind, Layout, Result};
use std::any::Any;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A backend that computes with the reference kernels, reports `kind`, and
/// stores every buffer as a counted device buffer.
#[derive(Debug)]
pub struct FakeBackend {
    name: &'static str,
    kind: DeviceKind,
    bf16: bool,
    live: Arc<AtomicUsize>,
}

#[derive(Debug)]
struct Counted {
    host: HostStorage,
    live: Arc<AtomicUsize>,
}

impl DeviceStorage for Counted {
    fn dtype(&self) -> DType {
        self.host.dtype()
    }
    fn len(&self) -> usize {
        self.host.len()
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A device of `kind` computing with the reference kernels; `bf16` is its
/// `is_bf16_supported()`. The counter holds its number of live buffers.
pub fn fake_device(name: &'static str, kind: DeviceKind, bf16: bool) -> (Device, Arc<AtomicUsize>) {
    let live = Arc::new(AtomicUsize::new(0));
    (
        Device::new(Arc::new(FakeBackend {
            name,
            kind,
            bf16,
            live: live.clone(),
        })),
        live,
    )
}

/// A CUDA-kind device (reference kernels) with native bf16.
pub fn fake_cuda() -> Device {
    fake_device("fake-cuda", DeviceKind::Cuda, true).0
}

const R: ReferenceBackend = ReferenceBackend;

impl FakeBackend {
    fn wrap(&self, s: Storage) -> Storage {
        match s {
            Storage::Host(host) => {
                self.live.fetch_add(1, Ordering::SeqCst);
                Storage::Device(Box::new(Counted {
                    host,
                    live: self.live.clone(),
                }))
            }
            other => other,
        }
    }
}

fn host(s: &Storage) -> Storage {
    match s {
        Storage::Device(d) => Storage::Host(
            d.as_any()
                .downcast_ref::<Counted>()
                .expect("a fake buffer")
                .host
                .clone(),
        ),
        Storage::Host(h) => Storage::Host(h.clone()),
    }
}

impl Backend for FakeBackend {
    fn name(&self) -> &str {
        self.name
    }
    fn kind(&self) -> DeviceKind {
        self.kind
    }
    fn is_bf16_supported(&self) -> bool {
        self.bf16
    }
    fn from_host(&self, data: HostStorage) -> Result<Storage> {
        Ok(self.wrap(Storage::Host(data)))
    }
    fn to_host(&self, src: View<'_>) -> Result<HostStorage> {
        R.to_host((&host(src.0), src.1))
    }
    fn full(&self, numel: usize, value: f64, dtype: DType) -> Result<Storage> {
        Ok(self.wrap(R.full(numel, value, dtype)?))
    }
    fn cast(&self, src: View<'_>, out: DType) -> Result<Storage> {
        Ok(self.wrap(R.cast((&host(src.0), src.1), out)?))
    }
    fn unary(&self, op: UnaryOp, src: View<'_>, out: DType) -> Result<Storage> {
        Ok(self.wrap(R.unary(op, (&host(src.0), src.1), out)?))
    }
    fn binary(&self, op: BinaryOp, lhs: View<'_>, rhs: View<'_>, out: DType) -> Result<Storage> {
        Ok(self.wrap(R.binary(op, (&host(lhs.0), lhs.1), (&host(rhs.0), rhs.1), out)?))
    }
    fn where_cond(&self, c: View<'_>, t: View<'_>, f: View<'_>, out: DType) -> Result<Storage> {
        Ok(
            self.wrap(R.where_cond(
                (&host(c.0), c.1),
                (&host(t.0), t.1),
                (&host(f.0), f.1),
                out,
            )?),
        )
    }
    fn reduce(&self, op: ReduceOp, src: View<'_>, dims: &[usize], out: DType) -> Result<Storage> {
        Ok(self.wrap(R.reduce(op, (&host(src.0), src.1), dims, out)?))
    }
    fn matmul(&self, lhs: View<'_>, rhs: View<'_>, out: DType) -> Result<Storage> {
        Ok(self.wrap(R.matmul((&host(lhs.0), lhs.1), (&host(rhs.0), rhs.1), out)?))
    }
    fn softmax(&self, src: View<'_>, log: bool, out: DType) -> Result<Storage> {
        Ok(self.wrap(R.softmax((&host(src.0), src.1), log, out)?))
    }
    fn layer_norm(
        &self,
        src: View<'_>,
        weight: Option<View<'_>>,
        bias: Option<View<'_>>,
        eps: f64,
        out: DType,
    ) -> Result<(Storage, Storage, Storage)> {
        let w = weight.map(|(s, l)| (host(s), l));
        let b = bias.map(|(s, l)| (host(s), l));
        let (y, m, r) = R.layer_norm(
            (&host(src.0), src.1),
            w.as_ref().map(|(s, l)| (s, *l)),
            b.as_ref().map(|(s, l)| (s, *l)),
            eps,
            out,
        )?;
        Ok((self.wrap(y), self.wrap(m), self.wrap(r)))
    }
    fn cat(&self, inputs: &[View<'_>], dim: usize, out: DType) -> Result<Storage> {
        let hosts: Vec<(Storage, &Layout)> = inputs.iter().map(|(s, l)| (host(s), *l)).collect();
        let views: Vec<View<'_>> = hosts.iter().map(|(s, l)| (s, *l)).collect();
        Ok(self.wrap(R.cat(&views, dim, out)?))
    }
    fn index_select(
        &self,
        src: View<'_>,
        dim: usize,
        index: View<'_>,
        out: DType,
    ) -> Result<Storage> {
        Ok(
            self.wrap(R.index_select(
                (&host(src.0), src.1),
                dim,
                (&host(index.0), index.1),
                out,
            )?),
        )
    }
    fn gather(&self, src: View<'_>, dim: usize, index: View<'_>, out: DType) -> Result<Storage> {
        Ok(self.wrap(R.gather((&host(src.0), src.1), dim, (&host(index.0), index.1), out)?))
    }
    fn scatter_add(
        &self,
        shape: &[usize],
        dim: usize,
        index: View<'_>,
        src: View<'_>,
        out: DType,
    ) -> Result<Storage> {
        Ok(self.wrap(R.scatter_add(
            shape,
            dim,
            (&host(index.0), index.1),
            (&host(src.0), src.1),
            out,
        )?))
    }
    fn non_finite_check_and_unscale(
        &self,
        _buffers: &mut [(&mut Storage, &Layout)],
        _inv_scale: f32,
    ) -> Result<Vec<NonFiniteCount>> {
        Err(amp_tensor::Error::invalid(
            "non_finite_check_and_unscale",
            "not needed by the autocast tests",
        ))
    }
}
