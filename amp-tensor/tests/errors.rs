//! Bad input returns an `Err` that names the op and the offending shapes or
//! dtypes; nothing panics on user input.

use amp_tensor::backend::{Backend, BinaryOp, DeviceKind, NonFiniteCount, ReduceOp, UnaryOp, View};
use amp_tensor::backend::{HostStorage, Storage};
use amp_tensor::reference::ReferenceBackend;
use amp_tensor::{ops, DType, Device, Error, Layout, Result, Tensor};
use proptest::prelude::*;
use std::sync::Arc;

fn dev() -> Device {
    Device::reference()
}

fn zeros(shape: &[usize], dtype: DType) -> Tensor {
    Tensor::zeros(shape, dtype, &dev()).unwrap()
}

/// The reference kernels under another name: a second, distinct device.
#[derive(Debug)]
struct OtherDevice(ReferenceBackend);

impl Backend for OtherDevice {
    fn name(&self) -> &str {
        "other"
    }
    fn kind(&self) -> DeviceKind {
        DeviceKind::Cpu
    }
    fn ordinal(&self) -> usize {
        1
    }
    fn is_bf16_supported(&self) -> bool {
        false
    }
    fn from_host(&self, data: HostStorage) -> Result<Storage> {
        self.0.from_host(data)
    }
    fn to_host(&self, src: View<'_>) -> Result<HostStorage> {
        self.0.to_host(src)
    }
    fn full(&self, numel: usize, value: f64, dtype: DType) -> Result<Storage> {
        self.0.full(numel, value, dtype)
    }
    fn cast(&self, src: View<'_>, out: DType) -> Result<Storage> {
        self.0.cast(src, out)
    }
    fn unary(&self, op: UnaryOp, src: View<'_>, out: DType) -> Result<Storage> {
        self.0.unary(op, src, out)
    }
    fn binary(&self, op: BinaryOp, lhs: View<'_>, rhs: View<'_>, out: DType) -> Result<Storage> {
        self.0.binary(op, lhs, rhs, out)
    }
    fn where_cond(&self, c: View<'_>, t: View<'_>, f: View<'_>, out: DType) -> Result<Storage> {
        self.0.where_cond(c, t, f, out)
    }
    fn reduce(&self, op: ReduceOp, src: View<'_>, dims: &[usize], out: DType) -> Result<Storage> {
        self.0.reduce(op, src, dims, out)
    }
    fn matmul(&self, lhs: View<'_>, rhs: View<'_>, out: DType) -> Result<Storage> {
        self.0.matmul(lhs, rhs, out)
    }
    fn softmax(&self, src: View<'_>, log: bool, out: DType) -> Result<Storage> {
        self.0.softmax(src, log, out)
    }
    fn layer_norm(
        &self,
        src: View<'_>,
        w: Option<View<'_>>,
        b: Option<View<'_>>,
        eps: f64,
        out: DType,
    ) -> Result<(Storage, Storage, Storage)> {
        self.0.layer_norm(src, w, b, eps, out)
    }
    fn cat(&self, inputs: &[View<'_>], dim: usize, out: DType) -> Result<Storage> {
        self.0.cat(inputs, dim, out)
    }
    fn index_select(
        &self,
        src: View<'_>,
        dim: usize,
        index: View<'_>,
        out: DType,
    ) -> Result<Storage> {
        self.0.index_select(src, dim, index, out)
    }
    fn gather(&self, src: View<'_>, dim: usize, index: View<'_>, out: DType) -> Result<Storage> {
        self.0.gather(src, dim, index, out)
    }
    fn scatter_add(
        &self,
        shape: &[usize],
        dim: usize,
        index: View<'_>,
        src: View<'_>,
        out: DType,
    ) -> Result<Storage> {
        self.0.scatter_add(shape, dim, index, src, out)
    }
    fn non_finite_check_and_unscale(
        &self,
        buffers: &mut [(&mut Storage, &Layout)],
        inv_scale: f32,
    ) -> Result<Vec<NonFiniteCount>> {
        self.0.non_finite_check_and_unscale(buffers, inv_scale)
    }
}

#[test]
fn every_error_variant_names_op_and_operands() {
    let e = zeros(&[2, 3], DType::F32)
        .add(&zeros(&[4], DType::F32))
        .unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { op: "add", .. }));
    assert_eq!(e.to_string(), "add: shape mismatch between [2, 3] and [4]");

    let e = ops::matmul(&zeros(&[2, 3], DType::F32), &zeros(&[2, 3], DType::BF16)).unwrap_err();
    assert_eq!(e.to_string(), "matmul: dtype mismatch between f32 and bf16");
    let e = ops::matmul(&zeros(&[2, 3], DType::F32), &zeros(&[2, 3], DType::F32)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "matmul: shape mismatch between [2, 3] and [2, 3]"
    );

    let other = Device::new(Arc::new(OtherDevice(ReferenceBackend)));
    let e = zeros(&[2], DType::F32)
        .add(&Tensor::zeros(&[2], DType::F32, &other).unwrap())
        .unwrap_err();
    assert!(matches!(e, Error::DeviceMismatch { op: "add", .. }), "{e}");

    let e = zeros(&[2], DType::I64).exp().unwrap_err();
    assert_eq!(
        e.to_string(),
        "exp: unsupported dtype i64 (needs a floating-point tensor)"
    );

    let x = zeros(&[2, 3], DType::F32);
    let e = x
        .gather(
            1,
            &Tensor::from_vec(vec![0i64, 3, 1, 1, 2, 0], &[2, 3], &dev()).unwrap(),
        )
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "gather: index 3 out of range for size 3 (shape [2, 3])"
    );
    let e = ops::cross_entropy(
        &zeros(&[2, 3], DType::F32),
        &Tensor::from_vec(vec![0i64, 7], &[2], &dev()).unwrap(),
    );
    assert!(e
        .unwrap_err()
        .to_string()
        .contains("index 7 out of range for size 3"));
    let e = x.transpose(0, 5).unwrap_err();
    assert!(
        e.to_string().starts_with("transpose: index 5 out of range"),
        "{e}"
    );
    let e = x.narrow(1, 2, 2).unwrap_err();
    assert!(e.to_string().starts_with("narrow:"), "{e}");

    let e = x.backward().unwrap_err();
    assert!(matches!(e, Error::NonScalarBackward { .. }));

    let e = Tensor::from_vec(vec![1.0f32; 5], &[2, 3], &dev()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "from_vec: 5 elements of f32 given for shape [2, 3] (6 elements)"
    );

    let e = x.to_vec::<f64>().unwrap_err();
    assert_eq!(e.to_string(), "to_vec: dtype mismatch between f32 and f64");

    let e = ops::cat(&[&zeros(&[2], DType::F8E4M3), &zeros(&[2], DType::F32)], 0).unwrap_err();
    assert!(
        matches!(e, Error::DType(_)) && e.to_string().contains("float8"),
        "{e}"
    );

    let e = ops::where_cond(&zeros(&[2], DType::F32), &x, &x).unwrap_err();
    assert!(e.to_string().contains("condition must be bool"));
    let e = ops::layer_norm(&x, Some(&zeros(&[4], DType::F32)), None, 1e-5).unwrap_err();
    assert_eq!(
        e.to_string(),
        "layer_norm: shape mismatch between [2, 3] and [4]"
    );
    let e = ops::linear(&x, &zeros(&[4, 2], DType::F32), None).unwrap_err();
    assert_eq!(
        e.to_string(),
        "linear: shape mismatch between [2, 3] and [4, 2]"
    );
    let e = x.reshape(&[4]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "reshape: shape mismatch between [2, 3] and [4]"
    );
    let e = x.squeeze(0).unwrap_err();
    assert!(e.to_string().contains("has size 2, not 1"), "{e}");
    assert!(x.permute(&[0, 0]).is_err());
    assert!(ops::dropout(&x, 1.5, true, 0).is_err());
    assert!(Tensor::rand_uniform(&[2], 1.0, 1.0, DType::F32, &dev(), 0).is_err());
    assert!(zeros(&[2], DType::F32).scalar_f64().is_err());
    assert!(x.argmax(0, false).is_ok() && zeros(&[0, 2], DType::F32).argmax(0, false).is_err());
}

fn shape() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0usize..4, 0..4)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, .. ProptestConfig::default() })]

    /// Random shape pairs: binary ops and matmul either work (with the
    /// broadcast shape) or return an error; they never panic.
    #[test]
    fn random_shape_pairs_never_panic(a in shape(), b in shape()) {
        let (x, y) = (zeros(&a, DType::F32), zeros(&b, DType::F32));
        for r in [x.add(&y), x.mul(&y), x.div(&y), x.maximum(&y)] {
            match r {
                Ok(t) => prop_assert_eq!(t.shape(), amp_tensor::layout::broadcast_shapes("t", &a, &b).unwrap()),
                Err(e) => { let is_shape = matches!(e, Error::ShapeMismatch { .. }); prop_assert!(is_shape, "unexpected error {}", e) }
            }
        }
        let _ = ops::matmul(&x, &y);
        let _ = ops::linear(&x, &y, None);
        let _ = ops::cat(&[&x, &y], 0);
        let _ = x.sum_dim(-1, false);
        let _ = ops::softmax(&x, -1);
        let _ = ops::layer_norm(&x, None, None, 1e-5);
        let _ = ops::mse_loss(&x, &y, ops::Reduction::Mean);
    }
}
