//! Storage: typed host buffers, and opaque device buffers owned by a backend.

use crate::{Error, Layout, Result};
use amp_dtype::{bf16, f16, DType, Element, F8E4M3, F8E5M2};
use std::any::Any;
use std::fmt;

/// A typed buffer in host memory. The reference and CPU backends store tensors this way.
#[derive(Clone, PartialEq)]
#[allow(missing_docs)]
pub enum HostStorage {
    F64(Vec<f64>),
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    F8E4M3(Vec<F8E4M3>),
    F8E5M2(Vec<F8E5M2>),
    I64(Vec<i64>),
    U8(Vec<u8>),
    Bool(Vec<bool>),
}

/// Runs `$body` with `$v` bound to the typed vector inside a [`HostStorage`].
#[macro_export]
macro_rules! with_host_storage {
    ($storage:expr, $v:ident => $body:expr) => {
        match $storage {
            $crate::backend::HostStorage::F64($v) => $body,
            $crate::backend::HostStorage::F32($v) => $body,
            $crate::backend::HostStorage::F16($v) => $body,
            $crate::backend::HostStorage::BF16($v) => $body,
            $crate::backend::HostStorage::F8E4M3($v) => $body,
            $crate::backend::HostStorage::F8E5M2($v) => $body,
            $crate::backend::HostStorage::I64($v) => $body,
            $crate::backend::HostStorage::U8($v) => $body,
            $crate::backend::HostStorage::Bool($v) => $body,
        }
    };
}

/// Element types that can be put into and taken out of a [`HostStorage`].
pub trait HostElement: Element {
    /// Wraps a vector.
    fn into_host(v: Vec<Self>) -> HostStorage;
    /// Borrows the vector if the storage holds this type.
    fn slice(s: &HostStorage) -> Option<&[Self]>;
    /// Mutably borrows the vector if the storage holds this type.
    fn slice_mut(s: &mut HostStorage) -> Option<&mut Vec<Self>>;
}

macro_rules! host_element {
    ($ty:ty, $var:ident) => {
        impl HostElement for $ty {
            fn into_host(v: Vec<Self>) -> HostStorage {
                HostStorage::$var(v)
            }
            fn slice(s: &HostStorage) -> Option<&[Self]> {
                match s {
                    HostStorage::$var(v) => Some(v),
                    _ => None,
                }
            }
            fn slice_mut(s: &mut HostStorage) -> Option<&mut Vec<Self>> {
                match s {
                    HostStorage::$var(v) => Some(v),
                    _ => None,
                }
            }
        }
    };
}

host_element!(f64, F64);
host_element!(f32, F32);
host_element!(f16, F16);
host_element!(bf16, BF16);
host_element!(F8E4M3, F8E4M3);
host_element!(F8E5M2, F8E5M2);
host_element!(i64, I64);
host_element!(u8, U8);
host_element!(bool, Bool);

impl HostStorage {
    /// The element dtype.
    pub fn dtype(&self) -> DType {
        fn d<T: Element>(_: &[T]) -> DType {
            T::DTYPE
        }
        with_host_storage!(self, v => d(v))
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        with_host_storage!(self, v => v.len())
    }

    /// True if there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads element `i` as f64 (exact for every float format).
    pub fn get_f64(&self, i: usize) -> f64 {
        with_host_storage!(self, v => v[i].to_f64())
    }

    /// The elements of a view in logical order, widened to f64.
    pub fn read_f64(&self, layout: &Layout) -> Vec<f64> {
        with_host_storage!(self, v => {
            match layout.contiguous_range() {
                Some(r) => v[r].iter().map(|x| x.to_f64()).collect(),
                None => layout.indices().map(|i| v[i].to_f64()).collect(),
            }
        })
    }

    /// A new buffer of `dtype` holding `values`, each rounded once.
    pub fn from_f64(dtype: DType, values: &[f64]) -> HostStorage {
        fn conv<T: HostElement>(values: &[f64]) -> HostStorage {
            T::into_host(values.iter().map(|&x| T::from_f64(x)).collect())
        }
        match dtype {
            DType::F64 => conv::<f64>(values),
            DType::F32 => conv::<f32>(values),
            DType::F16 => conv::<f16>(values),
            DType::BF16 => conv::<bf16>(values),
            DType::F8E4M3 => conv::<F8E4M3>(values),
            DType::F8E5M2 => conv::<F8E5M2>(values),
            DType::I64 => conv::<i64>(values),
            DType::U8 => conv::<u8>(values),
            DType::Bool => conv::<bool>(values),
        }
    }

    /// A new buffer of `dtype` with `n` copies of `value`, or
    /// [`Error::OutOfMemory`] naming `op` when it cannot be allocated.
    pub fn try_filled(op: &'static str, dtype: DType, n: usize, value: f64) -> Result<HostStorage> {
        fn fill<T: HostElement>(op: &'static str, n: usize, value: f64) -> Result<HostStorage> {
            Ok(T::into_host(crate::memory::try_filled(
                op,
                n,
                T::from_f64(value),
            )?))
        }
        match dtype {
            DType::F64 => fill::<f64>(op, n, value),
            DType::F32 => fill::<f32>(op, n, value),
            DType::F16 => fill::<f16>(op, n, value),
            DType::BF16 => fill::<bf16>(op, n, value),
            DType::F8E4M3 => fill::<F8E4M3>(op, n, value),
            DType::F8E5M2 => fill::<F8E5M2>(op, n, value),
            DType::I64 => fill::<i64>(op, n, value),
            DType::U8 => fill::<u8>(op, n, value),
            DType::Bool => fill::<bool>(op, n, value),
        }
    }

    /// A new buffer of `dtype` with `n` copies of `value` (aborts if it cannot
    /// be allocated; see [`HostStorage::try_filled`]).
    pub fn filled(dtype: DType, n: usize, value: f64) -> HostStorage {
        fn fill<T: HostElement>(n: usize, value: f64) -> HostStorage {
            T::into_host(vec![T::from_f64(value); n])
        }
        match dtype {
            DType::F64 => fill::<f64>(n, value),
            DType::F32 => fill::<f32>(n, value),
            DType::F16 => fill::<f16>(n, value),
            DType::BF16 => fill::<bf16>(n, value),
            DType::F8E4M3 => fill::<F8E4M3>(n, value),
            DType::F8E5M2 => fill::<F8E5M2>(n, value),
            DType::I64 => fill::<i64>(n, value),
            DType::U8 => fill::<u8>(n, value),
            DType::Bool => fill::<bool>(n, value),
        }
    }

    /// Copies a view into a new contiguous buffer of the same dtype.
    pub fn gather_view(&self, layout: &Layout) -> HostStorage {
        fn g<T: HostElement>(v: &[T], layout: &Layout) -> HostStorage {
            T::into_host(match layout.contiguous_range() {
                Some(r) => v[r].to_vec(),
                None => layout.indices().map(|i| v[i]).collect(),
            })
        }
        with_host_storage!(self, v => g(v, layout))
    }

    /// Borrows the typed slice, or an error naming `op` and both dtypes.
    pub fn typed<T: HostElement>(&self, op: &'static str) -> Result<&[T]> {
        T::slice(self).ok_or(Error::DTypeMismatch {
            op,
            lhs: self.dtype(),
            rhs: T::DTYPE,
        })
    }

    /// Mutably borrows the typed vector, or an error naming `op` and both dtypes.
    pub fn typed_mut<T: HostElement>(&mut self, op: &'static str) -> Result<&mut Vec<T>> {
        let dtype = self.dtype();
        T::slice_mut(self).ok_or(Error::DTypeMismatch {
            op,
            lhs: dtype,
            rhs: T::DTYPE,
        })
    }
}

impl fmt::Debug for HostStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HostStorage<{}>[{}]", self.dtype(), self.len())
    }
}

/// A buffer owned by a non-host backend (e.g. CUDA device memory).
pub trait DeviceStorage: Any + Send + Sync + fmt::Debug {
    /// Element dtype.
    fn dtype(&self) -> DType;
    /// Number of elements.
    fn len(&self) -> usize;
    /// True if there are no elements.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// For downcasting by the owning backend.
    fn as_any(&self) -> &dyn Any;
    /// For downcasting by the owning backend.
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

/// The memory behind a tensor: host memory, or a backend's own device buffer.
#[derive(Debug)]
pub enum Storage {
    /// Host memory (reference and CPU backends).
    Host(HostStorage),
    /// Device memory owned by a backend.
    Device(Box<dyn DeviceStorage>),
}

impl Storage {
    /// Element dtype.
    pub fn dtype(&self) -> DType {
        match self {
            Storage::Host(h) => h.dtype(),
            Storage::Device(d) => d.dtype(),
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Storage::Host(h) => h.len(),
            Storage::Device(d) => d.len(),
        }
    }

    /// True if there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The host buffer, or an error naming `op` if this is device memory.
    pub fn host(&self, op: &'static str) -> Result<&HostStorage> {
        match self {
            Storage::Host(h) => Ok(h),
            Storage::Device(d) => Err(Error::invalid(
                op,
                format!("expected host memory, got {d:?}"),
            )),
        }
    }

    /// The host buffer mutably, or an error naming `op` if this is device memory.
    pub fn host_mut(&mut self, op: &'static str) -> Result<&mut HostStorage> {
        match self {
            Storage::Host(h) => Ok(h),
            Storage::Device(d) => Err(Error::invalid(
                op,
                format!("expected host memory, got {d:?}"),
            )),
        }
    }
}
