//! [`CudaBackend`]: the `amp_tensor::backend::Backend` kernels on one GPU.

use crate::device::{grid_for, grid_for_rows, launch, Gpu};
use crate::kernels::{COPY, ELEMENTWISE, REDUCE, SCATTER};
use crate::meta::StridedMeta;
use crate::split;
use crate::storage::CudaStorage;
use amp_dtype::DType;
use amp_tensor::backend::{
    composed_adamw_step, AdamWStep, Backend, BinaryOp, DeviceKind, NonFiniteCount, ReduceOp,
    UnaryOp, View,
};
use amp_tensor::backend::{HostStorage, Storage};
use amp_tensor::layout::contiguous_strides;
use amp_tensor::{Error, Layout, Result};
use std::sync::Arc;

/// The CUDA backend of one GPU (hand-outs: [`crate::device`]).
#[derive(Debug, Clone)]
pub struct CudaBackend {
    pub(crate) gpu: Arc<Gpu>,
}

/// A kernel input: a device address, and the temporary copy behind it when
/// the view had to be made contiguous (kept alive until the kernel is queued;
/// frees are stream-ordered, so the kernel still sees it).
pub(crate) struct Operand {
    pub ptr: u64,
    _keep: Option<CudaStorage>,
}

/// The kernel-name suffix of a dtype for the cast kernels, which handle every dtype.
fn cast_suffix(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "f32",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        DType::F64 => "f64",
        DType::I64 => "i64",
        DType::U8 => "u8",
        DType::Bool => "bool",
        DType::F8E4M3 => "f8e4m3",
        DType::F8E5M2 => "f8e5m2",
    }
}

/// The kernel-name suffix of a dtype for the arithmetic kernels, or `None`
/// for fp8, which is only stored, cast and moved (as in PyTorch).
pub(crate) fn suffix(dtype: DType) -> Option<&'static str> {
    match dtype {
        DType::F8E4M3 | DType::F8E5M2 => None,
        other => Some(cast_suffix(other)),
    }
}

fn size_suffix(dtype: DType) -> &'static str {
    match dtype.size_in_bytes() {
        1 => "b1",
        2 => "b2",
        4 => "b4",
        _ => "b8",
    }
}

fn unsupported(op: &'static str, dtype: DType, reason: &str) -> Error {
    Error::UnsupportedDType {
        op,
        dtype,
        reason: reason.to_string(),
    }
}

fn float_suffix(op: &'static str, dtype: DType) -> Result<&'static str> {
    match dtype {
        DType::F32 | DType::F16 | DType::BF16 | DType::F64 => Ok(suffix(dtype).unwrap_or("f32")),
        other => Err(unsupported(
            op,
            other,
            "needs f32, f16, bf16 or f64 on CUDA",
        )),
    }
}

fn unary_code(op: UnaryOp) -> (i32, f64, f64) {
    match op {
        UnaryOp::Neg => (0, 0.0, 0.0),
        UnaryOp::Exp => (1, 0.0, 0.0),
        UnaryOp::Log => (2, 0.0, 0.0),
        UnaryOp::Sqrt => (3, 0.0, 0.0),
        UnaryOp::Rsqrt => (4, 0.0, 0.0),
        UnaryOp::Abs => (5, 0.0, 0.0),
        UnaryOp::Relu => (6, 0.0, 0.0),
        UnaryOp::GeluErf => (7, 0.0, 0.0),
        UnaryOp::GeluTanh => (8, 0.0, 0.0),
        UnaryOp::Tanh => (9, 0.0, 0.0),
        UnaryOp::Sigmoid => (10, 0.0, 0.0),
        UnaryOp::Silu => (11, 0.0, 0.0),
        UnaryOp::Erf => (12, 0.0, 0.0),
        UnaryOp::Recip => (13, 0.0, 0.0),
        UnaryOp::Sign => (14, 0.0, 0.0),
        UnaryOp::Powf(p) => (15, p, 0.0),
        UnaryOp::Affine { mul, add } => (16, mul, add),
        UnaryOp::Identity => (17, 0.0, 0.0),
        UnaryOp::NonZero => (18, 0.0, 0.0),
    }
}

fn binary_code(op: BinaryOp) -> i32 {
    match op {
        BinaryOp::Add => 0,
        BinaryOp::Sub => 1,
        BinaryOp::Mul => 2,
        BinaryOp::Div => 3,
        BinaryOp::Maximum => 4,
        BinaryOp::Minimum => 5,
        BinaryOp::Eq => 6,
        BinaryOp::Gt => 7,
        BinaryOp::Lt => 8,
        BinaryOp::ReluBackward => 9,
        BinaryOp::GeluErfBackward => 10,
        BinaryOp::GeluTanhBackward => 11,
        BinaryOp::TanhBackward => 12,
        BinaryOp::SigmoidBackward => 13,
        BinaryOp::SiluBackward => 14,
    }
}

/// The bytes of a host buffer as the device stores them (bool as 0/1 bytes,
/// fp8 as its bit patterns).
pub(crate) fn host_bytes(h: &HostStorage) -> Vec<u8> {
    match h {
        HostStorage::F64(v) => v.iter().flat_map(|x| x.to_ne_bytes()).collect(),
        HostStorage::F32(v) => v.iter().flat_map(|x| x.to_ne_bytes()).collect(),
        HostStorage::F16(v) => v.iter().flat_map(|x| x.to_bits().to_ne_bytes()).collect(),
        HostStorage::BF16(v) => v.iter().flat_map(|x| x.to_bits().to_ne_bytes()).collect(),
        HostStorage::I64(v) => v.iter().flat_map(|x| x.to_ne_bytes()).collect(),
        HostStorage::U8(v) => v.clone(),
        HostStorage::Bool(v) => v.iter().map(|&b| b as u8).collect(),
        HostStorage::F8E4M3(v) => v.iter().map(|x| x.to_bits()).collect(),
        HostStorage::F8E5M2(v) => v.iter().map(|x| x.to_bits()).collect(),
    }
}

fn words<const N: usize>(bytes: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
    bytes.chunks_exact(N).map(|c| {
        let mut w = [0u8; N];
        w.copy_from_slice(c);
        w
    })
}

/// A host buffer of `dtype` from the device's bytes.
pub(crate) fn host_from_bytes(dtype: DType, bytes: &[u8]) -> HostStorage {
    use amp_dtype::{bf16, f16, F8E4M3, F8E5M2};
    match dtype {
        DType::F64 => HostStorage::F64(words::<8>(bytes).map(f64::from_ne_bytes).collect()),
        DType::F32 => HostStorage::F32(words::<4>(bytes).map(f32::from_ne_bytes).collect()),
        DType::F16 => HostStorage::F16(
            words::<2>(bytes)
                .map(|w| f16::from_bits(u16::from_ne_bytes(w)))
                .collect(),
        ),
        DType::BF16 => HostStorage::BF16(
            words::<2>(bytes)
                .map(|w| bf16::from_bits(u16::from_ne_bytes(w)))
                .collect(),
        ),
        DType::I64 => HostStorage::I64(words::<8>(bytes).map(i64::from_ne_bytes).collect()),
        DType::U8 => HostStorage::U8(bytes.to_vec()),
        DType::F8E4M3 => HostStorage::F8E4M3(bytes.iter().map(|&b| F8E4M3::from_bits(b)).collect()),
        DType::F8E5M2 => HostStorage::F8E5M2(bytes.iter().map(|&b| F8E5M2::from_bits(b)).collect()),
        DType::Bool => HostStorage::Bool(bytes.iter().map(|&b| b != 0).collect()),
    }
}

impl CudaBackend {
    /// The GPU's name as the driver reports it.
    pub fn device_name(&self) -> &str {
        &self.gpu.name
    }

    /// Compute capability `(major, minor)`.
    pub fn compute_capability(&self) -> (i32, i32) {
        self.gpu.compute_capability
    }

    /// Waits for every queued kernel of this device; reports asynchronous errors.
    pub fn synchronize(&self) -> Result<()> {
        self.gpu.synchronize("synchronize")
    }

    /// The driver and library versions this device was opened with.
    pub fn versions(&self) -> &crate::versions::Versions {
        &self.gpu.versions
    }

    /// Loads every kernel module now (instead of at first use) and returns,
    /// for each, the image it came from or why none loaded.
    pub fn load_all_kernels(&self) -> Vec<(&'static str, std::result::Result<String, String>)> {
        crate::kernels::ALL
            .iter()
            .map(|source| {
                let result = self.gpu.module(source).map_err(|e| e.to_string());
                let image = self
                    .gpu
                    .loaded_images()
                    .into_iter()
                    .find(|(m, _)| *m == source.name)
                    .map(|(_, image)| image.to_string());
                (source.name, result.map(|_| image.unwrap_or_default()))
            })
            .collect()
    }

    /// Which image each kernel module loaded so far came from (NVRTC, a precompiled CUBIN or PTX).
    pub fn kernel_images(&self) -> Vec<(&'static str, crate::images::ImageSource)> {
        self.gpu.loaded_images()
    }

    pub(crate) fn storage<'a>(&self, op: &'static str, s: &'a Storage) -> Result<&'a CudaStorage> {
        match s {
            Storage::Device(d) => match d.as_any().downcast_ref::<CudaStorage>() {
                Some(c) if c.ordinal == self.gpu.ordinal => Ok(c),
                Some(c) => Err(Error::DeviceMismatch {
                    op,
                    lhs: format!("cuda:{}", self.gpu.ordinal),
                    rhs: format!("cuda:{}", c.ordinal),
                }),
                None => Err(Error::invalid(
                    op,
                    format!("expected CUDA memory, got {d:?}"),
                )),
            },
            Storage::Host(h) => Err(Error::invalid(
                op,
                format!(
                    "expected CUDA memory of cuda:{}, got host memory {h:?}",
                    self.gpu.ordinal
                ),
            )),
        }
    }

    pub(crate) fn storage_mut<'a>(
        &self,
        op: &'static str,
        s: &'a mut Storage,
    ) -> Result<&'a mut CudaStorage> {
        let ordinal = self.gpu.ordinal;
        match s {
            Storage::Device(d) => match d.as_any_mut().downcast_mut::<CudaStorage>() {
                Some(c) if c.ordinal == ordinal => Ok(c),
                Some(c) => Err(Error::DeviceMismatch {
                    op,
                    lhs: format!("cuda:{ordinal}"),
                    rhs: format!("cuda:{}", c.ordinal),
                }),
                None => Err(Error::invalid(op, "expected CUDA memory")),
            },
            Storage::Host(_) => Err(Error::invalid(
                op,
                format!("expected CUDA memory of cuda:{ordinal}, got host memory"),
            )),
        }
    }

    /// The CUDA buffer of a view, checking the view lies inside it.
    pub(crate) fn view<'a>(
        &self,
        op: &'static str,
        v: View<'a>,
    ) -> Result<(&'a CudaStorage, &'a Layout)> {
        let s = self.storage(op, v.0)?;
        if v.1.storage_extent() > s.len {
            return Err(Error::invalid(
                op,
                format!("view {:?} reaches past a buffer of {} elements", v.1, s.len),
            ));
        }
        Ok((s, v.1))
    }

    /// Copies `shape` elements from a strided view to a strided destination (same dtype).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn copy_strided(
        &self,
        op: &'static str,
        dtype: DType,
        shape: &[usize],
        src: u64,
        src_strides: &[usize],
        dst: u64,
        dst_strides: &[usize],
    ) -> Result<()> {
        let n: usize = shape.iter().product();
        if n == 0 {
            return Ok(());
        }
        let meta = StridedMeta::new(op, shape, &[src_strides, dst_strides])?;
        let f = self
            .gpu
            .function(&COPY, &format!("copy_strided_{}", size_suffix(dtype)))?;
        let n64 = n as i64;
        launch!(self.gpu, op, f, grid_for(n), &src, &dst, &n64, &meta)
    }

    /// A new contiguous buffer with the view's elements in logical order.
    pub(crate) fn contiguous_copy(
        &self,
        op: &'static str,
        s: &CudaStorage,
        l: &Layout,
    ) -> Result<CudaStorage> {
        let n = l.numel();
        let out = self.gpu.alloc(op, s.dtype, n)?;
        if n == 0 {
            return Ok(out);
        }
        if l.is_contiguous() {
            let size = s.dtype.size_in_bytes();
            let (start, end) = (l.offset() * size, (l.offset() + n) * size);
            let src = s
                .buf
                .try_slice(start..end)
                .ok_or_else(|| Error::invalid(op, format!("view {l:?} reaches past its buffer")))?;
            let mut out = out;
            self.gpu
                .stream
                .memcpy_dtod(&src, &mut out.buf)
                .map_err(|e| self.gpu.driver_err(op, e))?;
            return Ok(out);
        }
        let dst = out.ptr();
        self.copy_strided(
            op,
            s.dtype,
            l.shape(),
            s.ptr_at(l.offset()),
            l.strides(),
            dst,
            &contiguous_strides(l.shape()),
        )?;
        Ok(out)
    }

    /// The view as a contiguous kernel input (a copy only when needed).
    pub(crate) fn operand(&self, op: &'static str, s: &CudaStorage, l: &Layout) -> Result<Operand> {
        if l.is_contiguous() {
            return Ok(Operand {
                ptr: s.ptr_at(l.offset()),
                _keep: None,
            });
        }
        let c = self.contiguous_copy(op, s, l)?;
        Ok(Operand {
            ptr: c.ptr(),
            _keep: Some(c),
        })
    }

    /// `n` contiguous elements at `src` (of `from`) cast into a new buffer of `to`.
    pub(crate) fn cast_ptr(
        &self,
        op: &'static str,
        src: u64,
        from: DType,
        n: usize,
        to: DType,
    ) -> Result<CudaStorage> {
        let (a, b) = (cast_suffix(from), cast_suffix(to));
        let out = self.gpu.alloc(op, to, n)?;
        if n == 0 {
            return Ok(out);
        }
        let f = self.gpu.function(&COPY, &format!("cast_{a}_{b}"))?;
        let (dst, n64) = (out.ptr(), n as i64);
        launch!(self.gpu, op, f, grid_for(n), &src, &dst, &n64)?;
        Ok(out)
    }

    /// A contiguous buffer of the view's elements in dtype `to`.
    pub(crate) fn cast_view(
        &self,
        op: &'static str,
        s: &CudaStorage,
        l: &Layout,
        to: DType,
    ) -> Result<CudaStorage> {
        if s.dtype == to {
            return self.contiguous_copy(op, s, l);
        }
        let input = self.operand(op, s, l)?;
        self.cast_ptr(op, input.ptr, s.dtype, l.numel(), to)
    }

    /// `s` (contiguous) itself when it already has dtype `to`, else a cast copy.
    pub(crate) fn cast_owned(
        &self,
        op: &'static str,
        s: CudaStorage,
        to: DType,
    ) -> Result<CudaStorage> {
        if s.dtype == to {
            return Ok(s);
        }
        self.cast_ptr(op, s.ptr(), s.dtype, s.len, to)
    }

    fn wrap(s: CudaStorage) -> Storage {
        Storage::Device(Box::new(s))
    }

    /// A contiguous i64 index buffer from any integer view.
    fn index_operand(&self, op: &'static str, v: View<'_>) -> Result<Operand> {
        let (s, l) = self.view(op, v)?;
        if s.dtype == DType::I64 {
            return self.operand(op, s, l);
        }
        if s.dtype.is_float() {
            return Err(unsupported(op, s.dtype, "indices must be i64"));
        }
        let c = self.cast_view(op, s, l, DType::I64)?;
        Ok(Operand {
            ptr: c.ptr(),
            _keep: Some(c),
        })
    }
}

impl Backend for CudaBackend {
    fn name(&self) -> &str {
        "cuda"
    }

    fn kind(&self) -> DeviceKind {
        DeviceKind::Cuda
    }

    fn ordinal(&self) -> usize {
        self.gpu.ordinal
    }

    fn is_bf16_supported(&self) -> bool {
        self.gpu.compute_capability.0 >= 8
    }

    fn from_host(&self, data: HostStorage) -> Result<Storage> {
        let bytes = host_bytes(&data);
        Ok(Self::wrap(self.gpu.upload(
            "from_host",
            data.dtype(),
            data.len(),
            &bytes,
        )?))
    }

    fn to_host(&self, src: View<'_>) -> Result<HostStorage> {
        let (s, l) = self.view("to_host", src)?;
        let n = l.numel();
        let bytes = if l.is_contiguous() {
            self.gpu.download("to_host", s, l.offset(), n)?
        } else {
            let c = self.contiguous_copy("to_host", s, l)?;
            self.gpu.download("to_host", &c, 0, n)?
        };
        Ok(host_from_bytes(s.dtype, &bytes))
    }

    fn full(&self, numel: usize, value: f64, dtype: DType) -> Result<Storage> {
        // The value rounded on the host by amp-dtype (fp8 included), then filled as bits.
        let one = host_bytes(&HostStorage::filled(dtype, 1, value));
        let mut pattern = [0u8; 8];
        pattern[..one.len()].copy_from_slice(&one);
        let pattern = u64::from_le_bytes(pattern);
        if pattern == 0 {
            return Ok(Self::wrap(self.gpu.zeros("full", dtype, numel)?));
        }
        let out = self.gpu.alloc("full", dtype, numel)?;
        if numel > 0 {
            let f = self
                .gpu
                .function(&COPY, &format!("fill_{}", size_suffix(dtype)))?;
            let (dst, n64) = (out.ptr(), numel as i64);
            launch!(self.gpu, "full", f, grid_for(numel), &dst, &n64, &pattern)?;
        }
        Ok(Self::wrap(out))
    }

    fn cast(&self, src: View<'_>, out: DType) -> Result<Storage> {
        let (s, l) = self.view("cast", src)?;
        Ok(Self::wrap(self.cast_view("cast", s, l, out)?))
    }

    fn unary(&self, op: UnaryOp, src: View<'_>, out: DType) -> Result<Storage> {
        let name = "unary";
        let (s, l) = self.view(name, src)?;
        let n = l.numel();
        // Bool runs as u8 (0/1).
        let widened;
        let (input, dtype) = if s.dtype == DType::Bool {
            widened = self.cast_view(name, s, l, DType::U8)?;
            (
                Operand {
                    ptr: widened.ptr(),
                    _keep: None,
                },
                DType::U8,
            )
        } else {
            (self.operand(name, s, l)?, s.dtype)
        };
        let sfx = suffix(dtype)
            .ok_or_else(|| unsupported(name, dtype, "fp8 math is not supported on CUDA"))?;
        let y = self.gpu.alloc(name, dtype, n)?;
        if n > 0 {
            let f = self.gpu.function(&ELEMENTWISE, &format!("unary_{sfx}"))?;
            let (code, p0, p1) = unary_code(op);
            let (x, yp, n64) = (input.ptr, y.ptr(), n as i64);
            launch!(
                self.gpu,
                name,
                f,
                grid_for(n),
                &x,
                &yp,
                &n64,
                &code,
                &p0,
                &p1
            )?;
        }
        Ok(Self::wrap(self.cast_owned(name, y, out)?))
    }

    fn binary(&self, op: BinaryOp, lhs: View<'_>, rhs: View<'_>, out: DType) -> Result<Storage> {
        let name = "binary";
        let (sa, la) = self.view(name, lhs)?;
        let (sb, lb) = self.view(name, rhs)?;
        if sa.dtype != sb.dtype {
            return Err(Error::DTypeMismatch {
                op: name,
                lhs: sa.dtype,
                rhs: sb.dtype,
            });
        }
        if la.shape() != lb.shape() {
            return Err(Error::ShapeMismatch {
                op: name,
                lhs: la.shape().to_vec(),
                rhs: lb.shape().to_vec(),
            });
        }
        let shape = la.shape();
        let n = la.numel();
        // Bool runs as u8 (0/1), on contiguous copies.
        let (wa, wb);
        let (pa, sa_strides, pb, sb_strides, dtype): (u64, Vec<usize>, u64, Vec<usize>, DType) =
            if sa.dtype == DType::Bool {
                wa = self.cast_view(name, sa, la, DType::U8)?;
                wb = self.cast_view(name, sb, lb, DType::U8)?;
                let c = contiguous_strides(shape);
                (wa.ptr(), c.clone(), wb.ptr(), c, DType::U8)
            } else {
                (
                    sa.ptr_at(la.offset()),
                    la.strides().to_vec(),
                    sb.ptr_at(lb.offset()),
                    lb.strides().to_vec(),
                    sa.dtype,
                )
            };
        let sfx = suffix(dtype)
            .ok_or_else(|| unsupported(name, dtype, "fp8 math is not supported on CUDA"))?;
        let y = self.gpu.alloc(name, dtype, n)?;
        if n > 0 {
            let code = binary_code(op);
            let (yp, n64) = (y.ptr(), n as i64);
            let contiguous = Layout::new(shape.to_vec(), sa_strides.clone(), 0).is_contiguous()
                && Layout::new(shape.to_vec(), sb_strides.clone(), 0).is_contiguous();
            if contiguous {
                let f = self
                    .gpu
                    .function(&ELEMENTWISE, &format!("binary_contig_{sfx}"))?;
                launch!(self.gpu, name, f, grid_for(n), &pa, &pb, &yp, &n64, &code)?;
            } else {
                let meta = StridedMeta::new(name, shape, &[&sa_strides, &sb_strides])?;
                let f = self
                    .gpu
                    .function(&ELEMENTWISE, &format!("binary_strided_{sfx}"))?;
                launch!(
                    self.gpu,
                    name,
                    f,
                    grid_for(n),
                    &pa,
                    &pb,
                    &yp,
                    &n64,
                    &code,
                    &meta
                )?;
            }
        }
        Ok(Self::wrap(self.cast_owned(name, y, out)?))
    }

    fn where_cond(
        &self,
        cond: View<'_>,
        on_true: View<'_>,
        on_false: View<'_>,
        out: DType,
    ) -> Result<Storage> {
        let name = "where";
        let (sc, lc) = self.view(name, cond)?;
        let (sa, la) = self.view(name, on_true)?;
        let (sb, lb) = self.view(name, on_false)?;
        if sa.dtype != sb.dtype {
            return Err(Error::DTypeMismatch {
                op: name,
                lhs: sa.dtype,
                rhs: sb.dtype,
            });
        }
        if la.shape() != lb.shape() || lc.shape() != la.shape() {
            return Err(Error::ShapeMismatch {
                op: name,
                lhs: lc.shape().to_vec(),
                rhs: la.shape().to_vec(),
            });
        }
        let shape = la.shape();
        let n = la.numel();
        // A non-bool condition is `!= 0`, as the reference reads it.
        let cond_bool;
        let (pc, c_strides) = if sc.dtype == DType::Bool {
            (sc.ptr_at(lc.offset()), lc.strides().to_vec())
        } else {
            cond_bool = self.cast_view(name, sc, lc, DType::Bool)?;
            (cond_bool.ptr(), contiguous_strides(shape))
        };
        let y = self.gpu.alloc(name, sa.dtype, n)?;
        if n > 0 {
            let meta = StridedMeta::new(name, shape, &[&c_strides, la.strides(), lb.strides()])?;
            let f = self
                .gpu
                .function(&COPY, &format!("where_{}", size_suffix(sa.dtype)))?;
            let (pa, pb, yp, n64) = (
                sa.ptr_at(la.offset()),
                sb.ptr_at(lb.offset()),
                y.ptr(),
                n as i64,
            );
            launch!(
                self.gpu,
                name,
                f,
                grid_for(n),
                &pc,
                &pa,
                &pb,
                &yp,
                &n64,
                &meta
            )?;
        }
        Ok(Self::wrap(self.cast_owned(name, y, out)?))
    }

    fn reduce(&self, op: ReduceOp, src: View<'_>, dims: &[usize], out: DType) -> Result<Storage> {
        let name = "reduce";
        let (s, l) = self.view(name, src)?;
        let shape = l.shape();
        let rank = shape.len();
        let mut sorted = dims.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != dims.len() || sorted.iter().any(|&d| d >= rank) {
            return Err(Error::invalid(
                name,
                format!("dims {dims:?} are not distinct dimensions of shape {shape:?}"),
            ));
        }
        // Kept dimensions first, reduced ones last: rows × n.
        let mut perm: Vec<usize> = (0..rank).filter(|d| !sorted.contains(d)).collect();
        let rows: usize = perm.iter().map(|&d| shape[d]).product();
        let n: usize = sorted.iter().map(|&d| shape[d]).product();
        perm.extend(&sorted);
        let permuted = l.permute(&perm);
        let dtype = match s.dtype {
            DType::U8 | DType::Bool => DType::I64,
            DType::F32 | DType::F16 | DType::BF16 | DType::F64 | DType::I64 => s.dtype,
            other => {
                return Err(unsupported(
                    name,
                    other,
                    "fp8 reductions are not supported on CUDA",
                ))
            }
        };
        let input_copy;
        let x = if dtype != s.dtype {
            input_copy = self.cast_view(name, s, &permuted, dtype)?;
            input_copy.ptr()
        } else if permuted.is_contiguous() {
            s.ptr_at(permuted.offset())
        } else {
            input_copy = self.contiguous_copy(name, s, &permuted)?;
            input_copy.ptr()
        };
        let sfx = suffix(dtype).unwrap_or("f32");
        let (rows64, n64) = (rows as i64, n as i64);
        let result = match op {
            ReduceOp::ArgMax | ReduceOp::ArgMin => {
                let y = self.gpu.alloc(name, DType::I64, rows)?;
                if rows > 0 {
                    let f = self.gpu.function(&REDUCE, &format!("argreduce_{sfx}"))?;
                    let (yp, greater) = (y.ptr(), i32::from(op == ReduceOp::ArgMax));
                    launch!(
                        self.gpu,
                        name,
                        f,
                        grid_for_rows(rows, n),
                        &x,
                        &yp,
                        &rows64,
                        &n64,
                        &greater
                    )?;
                }
                y
            }
            _ => {
                let code: i32 = match op {
                    ReduceOp::Sum => 0,
                    ReduceOp::Mean => 1,
                    ReduceOp::Max => 2,
                    _ => 3,
                };
                let parts = split::parts(rows, n);
                if parts > 1 && dtype.is_float() {
                    // Few long rows: each cut into chunks with blocks of their own.
                    let input = split::Rows { x, rows, n, parts };
                    let y = split::reduce(self, name, input, dtype, code)?;
                    return Ok(Self::wrap(self.cast_owned(name, y, out)?));
                }
                let y = self.gpu.alloc(name, dtype, rows)?;
                if rows > 0 {
                    let f = self.gpu.function(&REDUCE, &format!("reduce_{sfx}"))?;
                    let yp = y.ptr();
                    launch!(
                        self.gpu,
                        name,
                        f,
                        grid_for_rows(rows, n),
                        &x,
                        &yp,
                        &rows64,
                        &n64,
                        &code
                    )?;
                }
                y
            }
        };
        Ok(Self::wrap(self.cast_owned(name, result, out)?))
    }

    fn matmul(&self, lhs: View<'_>, rhs: View<'_>, out: DType) -> Result<Storage> {
        Ok(Self::wrap(crate::matmul::matmul(self, lhs, rhs, out)?))
    }

    fn softmax(&self, src: View<'_>, log: bool, out: DType) -> Result<Storage> {
        let name = if log { "log_softmax" } else { "softmax" };
        let (s, l) = self.view(name, src)?;
        let sfx = float_suffix(name, s.dtype)?;
        let numel = l.numel();
        let n = l.shape().last().copied().unwrap_or(1);
        let rows = numel.checked_div(n).unwrap_or(0);
        let input = self.operand(name, s, l)?;
        let y = self.gpu.alloc(name, s.dtype, numel)?;
        let parts = split::parts(rows, n);
        if parts > 1 {
            let rows = split::Rows {
                x: input.ptr,
                rows,
                n,
                parts,
            };
            split::softmax(self, name, rows, &y, log)?;
        } else if rows > 0 {
            let f = self.gpu.function(&REDUCE, &format!("softmax_{sfx}"))?;
            let (yp, rows64, n64, log32) = (y.ptr(), rows as i64, n as i64, i32::from(log));
            launch!(
                self.gpu,
                name,
                f,
                grid_for_rows(rows, n),
                &input.ptr,
                &yp,
                &rows64,
                &n64,
                &log32
            )?;
        }
        Ok(Self::wrap(self.cast_owned(name, y, out)?))
    }

    fn layer_norm(
        &self,
        src: View<'_>,
        weight: Option<View<'_>>,
        bias: Option<View<'_>>,
        eps: f64,
        out: DType,
    ) -> Result<(Storage, Storage, Storage)> {
        let name = "layer_norm";
        let (s, l) = self.view(name, src)?;
        let sfx = float_suffix(name, s.dtype)?;
        let numel = l.numel();
        let n = l.shape().last().copied().unwrap_or(1);
        let rows = numel.checked_div(n).unwrap_or(0);
        let input = self.operand(name, s, l)?;
        let affine = |v: Option<View<'_>>| -> Result<Option<CudaStorage>> {
            let Some(v) = v else { return Ok(None) };
            let (ps, pl) = self.view(name, v)?;
            if pl.numel() != n {
                return Err(Error::ShapeMismatch {
                    op: name,
                    lhs: l.shape().to_vec(),
                    rhs: pl.shape().to_vec(),
                });
            }
            Ok(Some(self.cast_view(name, ps, pl, s.dtype)?))
        };
        let w = affine(weight)?;
        let b = affine(bias)?;
        let y = self.gpu.alloc(name, s.dtype, numel)?;
        let mean = self.gpu.alloc(name, DType::F32, rows)?;
        let rstd = self.gpu.alloc(name, DType::F32, rows)?;
        let wp = w.as_ref().map_or(0u64, |w| w.ptr());
        let bp = b.as_ref().map_or(0u64, |b| b.ptr());
        let parts = split::parts(rows, n);
        if parts > 1 {
            let out_buffers = split::LayerNormOut {
                y: &y,
                mean: &mean,
                rstd: &rstd,
            };
            let rows = split::Rows {
                x: input.ptr,
                rows,
                n,
                parts,
            };
            split::layer_norm(self, name, rows, (wp, bp), out_buffers, eps)?;
        } else if rows > 0 {
            let f = self.gpu.function(&REDUCE, &format!("layer_norm_{sfx}"))?;
            let (yp, mp, rp, rows64, n64) =
                (y.ptr(), mean.ptr(), rstd.ptr(), rows as i64, n as i64);
            launch!(
                self.gpu,
                name,
                f,
                grid_for_rows(rows, n),
                &input.ptr,
                &wp,
                &bp,
                &yp,
                &mp,
                &rp,
                &rows64,
                &n64,
                &eps
            )?;
        }
        Ok((
            Self::wrap(self.cast_owned(name, y, out)?),
            Self::wrap(mean),
            Self::wrap(rstd),
        ))
    }

    fn cat(&self, inputs: &[View<'_>], dim: usize, out: DType) -> Result<Storage> {
        let name = "cat";
        let first = inputs
            .first()
            .ok_or_else(|| Error::invalid(name, "no inputs"))?
            .1
            .shape()
            .to_vec();
        if dim >= first.len() {
            return Err(Error::IndexOutOfRange {
                op: name,
                index: dim as i64,
                size: first.len(),
                shape: first,
            });
        }
        let mut shape = first.clone();
        shape[dim] = 0;
        for v in inputs {
            let s = v.1.shape();
            let ok = s.len() == first.len()
                && s.iter()
                    .zip(&first)
                    .enumerate()
                    .all(|(i, (a, b))| i == dim || a == b);
            if !ok {
                return Err(Error::ShapeMismatch {
                    op: name,
                    lhs: first.clone(),
                    rhs: s.to_vec(),
                });
            }
            shape[dim] += s[dim];
        }
        let total: usize = shape.iter().product();
        let y = self.gpu.alloc(name, out, total)?;
        let out_strides = contiguous_strides(&shape);
        let mut start = 0;
        for v in inputs {
            let (s, l) = self.view(name, *v)?;
            let part_shape = l.shape();
            let dst = y.ptr_at(start * out_strides[dim]);
            if s.dtype == out {
                self.copy_strided(
                    name,
                    out,
                    part_shape,
                    s.ptr_at(l.offset()),
                    l.strides(),
                    dst,
                    &out_strides,
                )?;
            } else {
                let c = self.cast_view(name, s, l, out)?;
                self.copy_strided(
                    name,
                    out,
                    part_shape,
                    c.ptr(),
                    &contiguous_strides(part_shape),
                    dst,
                    &out_strides,
                )?;
            }
            start += part_shape[dim];
        }
        Ok(Self::wrap(y))
    }

    fn index_select(
        &self,
        src: View<'_>,
        dim: usize,
        index: View<'_>,
        out: DType,
    ) -> Result<Storage> {
        let name = "index_select";
        let (s, l) = self.view(name, src)?;
        let shape = l.shape();
        if dim >= shape.len() {
            return Err(Error::IndexOutOfRange {
                op: name,
                index: dim as i64,
                size: shape.len(),
                shape: shape.to_vec(),
            });
        }
        let m = index.1.numel();
        let outer: usize = shape[..dim].iter().product();
        let inner: usize = shape[dim + 1..].iter().product();
        let total = outer * m * inner;
        let y = self.gpu.alloc(name, s.dtype, total)?;
        if total > 0 {
            let x = self.operand(name, s, l)?;
            let idx = self.index_operand(name, index)?;
            let f = self
                .gpu
                .function(&COPY, &format!("index_select_{}", size_suffix(s.dtype)))?;
            let (yp, o64, s64, i64_, m64) = (
                y.ptr(),
                outer as i64,
                shape[dim] as i64,
                inner as i64,
                m as i64,
            );
            launch!(
                self.gpu,
                name,
                f,
                grid_for(total),
                &x.ptr,
                &idx.ptr,
                &yp,
                &o64,
                &s64,
                &i64_,
                &m64
            )?;
        }
        Ok(Self::wrap(self.cast_owned(name, y, out)?))
    }

    fn gather(&self, src: View<'_>, dim: usize, index: View<'_>, out: DType) -> Result<Storage> {
        let name = "gather";
        let (s, l) = self.view(name, src)?;
        let idx_shape = index.1.shape().to_vec();
        if idx_shape.len() != l.rank() || dim >= l.rank() {
            return Err(Error::ShapeMismatch {
                op: name,
                lhs: l.shape().to_vec(),
                rhs: idx_shape,
            });
        }
        let n = index.1.numel();
        let y = self.gpu.alloc(name, s.dtype, n)?;
        if n > 0 {
            let meta = StridedMeta::exact(name, &idx_shape, &contiguous_strides(l.shape()))?;
            let x = self.operand(name, s, l)?;
            let idx = self.index_operand(name, index)?;
            let f = self
                .gpu
                .function(&COPY, &format!("gather_{}", size_suffix(s.dtype)))?;
            let (yp, n64, d64, size64) = (y.ptr(), n as i64, dim as i64, l.shape()[dim] as i64);
            launch!(
                self.gpu,
                name,
                f,
                grid_for(n),
                &x.ptr,
                &idx.ptr,
                &yp,
                &n64,
                &meta,
                &d64,
                &size64
            )?;
        }
        Ok(Self::wrap(self.cast_owned(name, y, out)?))
    }

    fn scatter_add(
        &self,
        shape: &[usize],
        dim: usize,
        index: View<'_>,
        src: View<'_>,
        out: DType,
    ) -> Result<Storage> {
        let name = "scatter_add";
        let (s, l) = self.view(name, src)?;
        let idx_shape = index.1.shape().to_vec();
        if idx_shape != l.shape() || idx_shape.len() != shape.len() || dim >= shape.len() {
            return Err(Error::ShapeMismatch {
                op: name,
                lhs: shape.to_vec(),
                rhs: idx_shape,
            });
        }
        // Accumulate in f32 (f64 for f64 and integer sources).
        let (acc_dtype, src_dtype) = match s.dtype {
            DType::F32 | DType::F16 | DType::BF16 => (DType::F32, s.dtype),
            DType::F64 => (DType::F64, DType::F64),
            DType::I64 | DType::U8 | DType::Bool => (DType::F64, DType::F64),
            other => {
                return Err(unsupported(
                    name,
                    other,
                    "fp8 math (scatter_add accumulates) is not supported on CUDA",
                ))
            }
        };
        let acc = self.gpu.zeros(name, acc_dtype, shape.iter().product())?;
        let n = l.numel();
        if n > 0 {
            let widened;
            let x = if src_dtype != s.dtype {
                widened = self.cast_view(name, s, l, src_dtype)?;
                Operand {
                    ptr: widened.ptr(),
                    _keep: None,
                }
            } else {
                self.operand(name, s, l)?
            };
            let idx = self.index_operand(name, index)?;
            let meta = StridedMeta::exact(name, &idx_shape, &contiguous_strides(shape))?;
            let sfx = suffix(src_dtype).unwrap_or("f64");
            let f = self.gpu.function(&SCATTER, &format!("scatter_add_{sfx}"))?;
            let (ap, n64, d64, size64) = (acc.ptr(), n as i64, dim as i64, shape[dim] as i64);
            launch!(
                self.gpu,
                name,
                f,
                grid_for(n),
                &idx.ptr,
                &x.ptr,
                &ap,
                &n64,
                &meta,
                &d64,
                &size64
            )?;
        }
        Ok(Self::wrap(self.cast_owned(name, acc, out)?))
    }

    fn non_finite_check_and_unscale(
        &self,
        buffers: &mut [(&mut Storage, &Layout)],
        inv_scale: f32,
    ) -> Result<Vec<NonFiniteCount>> {
        crate::amp::unscale_storages(self, buffers, inv_scale)
    }

    fn adamw_step(
        &self,
        param: &mut Storage,
        grad: View<'_>,
        exp_avg: &mut Storage,
        exp_avg_sq: &mut Storage,
        hyper: &AdamWStep,
    ) -> Result<()> {
        match crate::amp::adamw(self, param, grad, exp_avg, exp_avg_sq, hyper)? {
            Some(()) => Ok(()),
            // f64 parameters or gradients: the composed kernels.
            None => composed_adamw_step(self, param, grad, exp_avg, exp_avg_sq, hyper),
        }
    }
}
