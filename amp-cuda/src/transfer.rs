//! Device memory as tensors see it: the backend's own storages, host
//! transfers, strided copies and casts, and the ops that only move elements
//! (`full`, `cast`, `cat`, `index_select`, `gather`, `scatter_add`).

use crate::backend::CudaBackend;
use crate::device::{grid_for, launch};
use crate::kernels::{cast_suffix, size_suffix, suffix, unsupported, COPY, SCATTER};
use crate::meta::StridedMeta;
use crate::storage::CudaStorage;
use amp_dtype::DType;
use amp_tensor::backend::{HostStorage, Storage, View};
use amp_tensor::layout::contiguous_strides;
use amp_tensor::{Error, Layout, Result};

/// A kernel input: a device address, and the temporary copy behind it when
/// the view had to be made contiguous (kept alive until the kernel is queued;
/// frees are stream-ordered, so the kernel still sees it).
pub(crate) struct Operand {
    pub ptr: u64,
    pub(crate) _keep: Option<CudaStorage>,
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

    pub(crate) fn wrap(s: CudaStorage) -> Storage {
        Storage::Device(Box::new(s))
    }

    /// A contiguous i64 index buffer from any integer view.
    pub(crate) fn index_operand(&self, op: &'static str, v: View<'_>) -> Result<Operand> {
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

impl CudaBackend {
    pub(crate) fn upload_host(&self, data: HostStorage) -> Result<Storage> {
        let bytes = host_bytes(&data);
        Ok(Self::wrap(self.gpu.upload(
            "from_host",
            data.dtype(),
            data.len(),
            &bytes,
        )?))
    }

    pub(crate) fn to_host_kernel(&self, src: View<'_>) -> Result<HostStorage> {
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

    pub(crate) fn full_kernel(&self, numel: usize, value: f64, dtype: DType) -> Result<Storage> {
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

    pub(crate) fn cast_kernel(&self, src: View<'_>, out: DType) -> Result<Storage> {
        let (s, l) = self.view("cast", src)?;
        Ok(Self::wrap(self.cast_view("cast", s, l, out)?))
    }

    pub(crate) fn cat_kernel(
        &self,
        inputs: &[View<'_>],
        dim: usize,
        out: DType,
    ) -> Result<Storage> {
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

    pub(crate) fn index_select_kernel(
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

    pub(crate) fn gather_kernel(
        &self,
        src: View<'_>,
        dim: usize,
        index: View<'_>,
        out: DType,
    ) -> Result<Storage> {
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

    pub(crate) fn scatter_add_kernel(
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
}
