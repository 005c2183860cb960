//! One GPU: its context, stream, cuBLAS handle, and the kernel modules
//! compiled for it (lazily, once per module).

use crate::compile;
use crate::error::{CudaError, CudaResult};
use crate::images::{self, ImageSource};
use crate::kernels::KernelSource;
use crate::libs;
use crate::storage::CudaStorage;
use crate::versions::{self, Versions};
use amp_dtype::DType;
use amp_tensor::{Error, Result};
use cudarc::cublas::CudaBlas;
use cudarc::driver::{
    result as dresult, sys as dsys, CudaContext, CudaFunction, CudaModule, CudaStream, LaunchConfig,
};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

/// Threads per block of the elementwise kernels.
pub(crate) const BLOCK: u32 = 256;

/// A GPU with everything the backend needs to run on it. All work goes to one
/// stream (the context's default stream), in order.
pub(crate) struct Gpu {
    pub ordinal: usize,
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    pub blas: Mutex<CudaBlas>,
    pub compute_capability: (i32, i32),
    pub name: String,
    /// The driver and libraries this process loaded.
    pub versions: Versions,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    /// Which image each loaded module came from.
    images: Mutex<Vec<(&'static str, ImageSource)>>,
    functions: Mutex<HashMap<String, CudaFunction>>,
}

impl fmt::Debug for Gpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Gpu(cuda:{}, {}, sm_{}{})",
            self.ordinal, self.name, self.compute_capability.0, self.compute_capability.1
        )
    }
}

pub(crate) fn describe(e: &dresult::DriverError) -> String {
    match e.error_string() {
        Ok(s) => format!("{:?} ({})", e.0, s.to_string_lossy()),
        Err(_) => format!("{:?}", e.0),
    }
}

/// The number of GPUs the driver reports; an `Err` says why none can be used.
pub(crate) fn driver_device_count() -> CudaResult<usize> {
    libs::library_status()
        .driver
        .clone()
        .map_err(|e| CudaError::NoCudaDevice {
            reason: format!("the CUDA driver library is not loadable: {e}"),
        })?;
    let counted = std::panic::catch_unwind(|| -> CudaResult<usize> {
        dresult::init().map_err(|e| CudaError::NoCudaDevice {
            reason: format!("cuInit failed: {}", describe(&e)),
        })?;
        let n = dresult::device::get_count().map_err(|e| CudaError::NoCudaDevice {
            reason: format!("cuDeviceGetCount failed: {}", describe(&e)),
        })?;
        Ok(n.max(0) as usize)
    });
    counted.unwrap_or_else(|_| {
        Err(CudaError::NoCudaDevice {
            reason: "the CUDA driver panicked during initialisation".into(),
        })
    })
}

impl Gpu {
    /// Opens GPU `ordinal`. Every failure is an `Err` (cudarc panics are caught).
    pub(crate) fn open(ordinal: usize) -> CudaResult<Gpu> {
        let count = driver_device_count()?;
        if ordinal >= count {
            return Err(CudaError::NoCudaDevice {
                reason: format!("device ordinal {ordinal} requested but the driver reports {count} CUDA device(s)"),
            });
        }
        let status = libs::library_status();
        status.cublas.clone().map_err(|e| CudaError::NoCudaDevice {
            reason: format!("cuBLAS is not loadable: {e}"),
        })?;
        if status.nvrtc.is_err() && images::kernel_dir().is_none() {
            return Err(CudaError::NoCudaDevice {
                reason: format!(
                    "NVRTC is not loadable ({}), so kernels cannot be compiled, and no precompiled kernels were \
                     given (AMP_CUDA_KERNEL_DIR)",
                    status.nvrtc.clone().err().unwrap_or_default()
                ),
            });
        }
        // Every version, and whether they fit together, before anything is created.
        let versions = versions::read();
        versions::check(&versions).map_err(|problem| CudaError::Incompatible {
            problem,
            versions: versions.to_string(),
        })?;
        let opened = std::panic::catch_unwind(|| Gpu::open_unguarded(ordinal, versions));
        opened.unwrap_or_else(|_| {
            Err(CudaError::NoCudaDevice {
                reason: format!("cudarc panicked while opening cuda:{ordinal}"),
            })
        })
    }

    fn open_unguarded(ordinal: usize, versions: Versions) -> CudaResult<Gpu> {
        let driver = |op: &'static str, e: dresult::DriverError| CudaError::Driver {
            op,
            ordinal,
            source: e,
        };
        let ctx = CudaContext::new(ordinal).map_err(|e| driver("creating the context", e))?;
        // SAFETY: the backend uses a single stream, so no CudaSlice needs the
        // cross-stream event tracking; it is turned off before any allocation.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.default_stream();
        keep_freed_memory_in_pool(&ctx);
        let blas = CudaBlas::new(stream.clone()).map_err(|e| CudaError::Blas {
            op: "creating a cuBLAS handle".into(),
            ordinal,
            source: e,
        })?;
        // f32 stays f32 (no TF32), and no reduced-precision reductions inside f16 GEMMs.
        // SAFETY: the handle is live.
        unsafe {
            cudarc::cublas::sys::cublasSetMathMode(
                *blas.handle(),
                cudarc::cublas::sys::cublasMath_t::CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION,
            )
        }
        .result()
        .map_err(|e| CudaError::Blas {
            op: "cublasSetMathMode".into(),
            ordinal,
            source: e,
        })?;
        let compute_capability = ctx
            .compute_capability()
            .map_err(|e| driver("reading the compute capability", e))?;
        let name = ctx.name().unwrap_or_else(|_| "unknown GPU".to_string());
        Ok(Gpu {
            ordinal,
            ctx,
            stream,
            blas: Mutex::new(blas),
            compute_capability,
            name,
            versions,
            modules: Mutex::new(HashMap::new()),
            images: Mutex::new(Vec::new()),
            functions: Mutex::new(HashMap::new()),
        })
    }

    /// An `Error::Backend` naming `op` and this device.
    pub(crate) fn err(&self, op: &'static str, msg: impl fmt::Display) -> Error {
        Error::backend(op, format!("cuda:{}", self.ordinal), msg.to_string())
    }

    /// A driver error of `op` on this device, typed.
    pub(crate) fn driver_err(&self, op: &'static str, e: dresult::DriverError) -> Error {
        CudaError::Driver {
            op,
            ordinal: self.ordinal,
            source: e,
        }
        .into()
    }

    /// A cuBLAS error of the call `what` on this device, typed.
    pub(crate) fn blas_err(&self, what: String, e: cudarc::cublas::result::CublasError) -> Error {
        CudaError::Blas {
            op: what,
            ordinal: self.ordinal,
            source: e,
        }
        .into()
    }

    /// The loaded module of `source`, from the first image that loads (see
    /// [`crate::images`]): NVRTC here, else a precompiled CUBIN, else PTX.
    pub(crate) fn module(&self, source: &KernelSource) -> Result<Arc<CudaModule>> {
        let mut modules = self.modules.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = modules.get(source.name) {
            return Ok(m.clone());
        }
        let (module, image) = self
            .load_first(source)
            .map_err(|e| self.err("load_module", e))?;
        modules.insert(source.name, module.clone());
        self.images
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((source.name, image));
        Ok(module)
    }

    /// The candidates for `source` on this GPU, best first, with notes on the routes ruled out.
    pub(crate) fn image_plan(&self, source: &KernelSource) -> (Vec<ImageSource>, Vec<String>) {
        let nvrtc: images::NvrtcOffer = versions::nvrtc_usable(&self.versions).and_then(|v| {
            compile::supported_archs()
                .map(|archs| (v, archs))
                .map_err(|e| e.to_string())
        });
        let files = images::kernel_dir()
            .map(|d| images::list(&d))
            .unwrap_or_default();
        images::plan(
            source.name,
            self.compute_capability,
            self.versions.driver,
            &nvrtc,
            &files,
        )
    }

    /// Tries each candidate image until one loads; an error lists every attempt.
    fn load_first(&self, source: &KernelSource) -> CudaResult<(Arc<CudaModule>, ImageSource)> {
        let (candidates, mut attempts) = self.image_plan(source);
        for candidate in candidates {
            let image = match &candidate {
                ImageSource::Nvrtc { arch, .. } => compile::compile(source, *arch)
                    .map(|c| cudarc::nvrtc::Ptx::from_binary(c.cubin)),
                ImageSource::Cubin(p) => std::fs::read(&p.path)
                    .map(cudarc::nvrtc::Ptx::from_binary)
                    .map_err(|e| CudaError::Compile(format!("reading: {e}"))),
                ImageSource::Ptx(p) => std::fs::read_to_string(&p.path)
                    .map(cudarc::nvrtc::Ptx::from_src)
                    .map_err(|e| CudaError::Compile(format!("reading: {e}"))),
            };
            let loaded = image.and_then(|image| {
                self.ctx.load_module(image).map_err(|e| CudaError::Driver {
                    op: "cuModuleLoadData",
                    ordinal: self.ordinal,
                    source: e,
                })
            });
            match loaded {
                Ok(module) => return Ok((module, candidate)),
                Err(e) => attempts.push(format!("{candidate}: {e}")),
            }
        }
        Err(CudaError::Compile(format!(
            "no image of {} loads on {} (sm_{}{}): {}",
            source.file,
            self.name,
            self.compute_capability.0,
            self.compute_capability.1,
            if attempts.is_empty() {
                "no candidates".to_string()
            } else {
                attempts.join("; ")
            }
        )))
    }

    /// Which image each module loaded so far came from.
    pub(crate) fn loaded_images(&self) -> Vec<(&'static str, ImageSource)> {
        self.images
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Kernel `name` of module `source`.
    pub(crate) fn function(&self, source: &KernelSource, name: &str) -> Result<CudaFunction> {
        let key = format!("{}/{name}", source.name);
        if let Some(f) = self
            .functions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(f.clone());
        }
        let module = self.module(source)?;
        let f = module.load_function(name).map_err(|e| {
            self.err(
                "load_function",
                format!("kernel {name} in {}: {}", source.file, describe(&e)),
            )
        })?;
        self.functions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, f.clone());
        Ok(f)
    }

    /// Uninitialised device memory for `len` elements of `dtype`; callers write every element.
    pub(crate) fn alloc(&self, op: &'static str, dtype: DType, len: usize) -> Result<CudaStorage> {
        let bytes = len.checked_mul(dtype.size_in_bytes()).ok_or_else(|| {
            Error::invalid(
                op,
                format!("{len} elements of {dtype} overflow the address space"),
            )
        })?;
        // SAFETY: the memory is uninitialised; every caller fills all `len` elements
        // before they are read. At least one byte: CUDA cannot allocate zero.
        let buf = unsafe { self.stream.alloc::<u8>(bytes.max(1)) }
            .map_err(|e| self.err(op, format!("allocating {bytes} bytes: {}", describe(&e))))?;
        Ok(CudaStorage {
            dtype,
            len,
            ordinal: self.ordinal,
            buf,
        })
    }

    /// Zeroed device memory for `len` elements of `dtype`.
    pub(crate) fn zeros(&self, op: &'static str, dtype: DType, len: usize) -> Result<CudaStorage> {
        let mut s = self.alloc(op, dtype, len)?;
        self.stream
            .memset_zeros(&mut s.buf)
            .map_err(|e| self.driver_err(op, e))?;
        Ok(s)
    }

    /// Copies host bytes into a new buffer of `len` elements of `dtype`.
    pub(crate) fn upload(
        &self,
        op: &'static str,
        dtype: DType,
        len: usize,
        bytes: &[u8],
    ) -> Result<CudaStorage> {
        let mut s = self.alloc(op, dtype, len)?;
        if bytes.len() != s.num_bytes() {
            return Err(self.err(
                op,
                format!("{} bytes given for {len} elements of {dtype}", bytes.len()),
            ));
        }
        if !bytes.is_empty() {
            self.stream
                .memcpy_htod(bytes, &mut s.buf)
                .map_err(|e| self.driver_err(op, e))?;
        }
        Ok(s)
    }

    /// Copies `count` elements starting at element `offset` of `src` to the host (synchronises).
    pub(crate) fn download(
        &self,
        op: &'static str,
        src: &CudaStorage,
        offset: usize,
        count: usize,
    ) -> Result<Vec<u8>> {
        let size = src.dtype.size_in_bytes();
        let (start, end) = (offset * size, (offset + count) * size);
        let mut out = vec![0u8; end - start];
        if count == 0 {
            return Ok(out);
        }
        let view = src.buf.try_slice(start..end).ok_or_else(|| {
            self.err(
                op,
                format!(
                    "bytes {start}..{end} are outside a buffer of {} bytes",
                    src.buf.len()
                ),
            )
        })?;
        self.stream
            .memcpy_dtoh(&view, &mut out[..])
            .map_err(|e| self.driver_err(op, e))?;
        self.stream
            .synchronize()
            .map_err(|e| self.driver_err(op, e))?;
        Ok(out)
    }

    /// Waits for all queued work; reports errors of earlier kernels.
    pub(crate) fn synchronize(&self, op: &'static str) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(|e| self.driver_err(op, e))
    }
}

/// A 1-D launch over `n` elements with grid-stride loops (at least one block).
pub(crate) fn grid_for(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(BLOCK as usize).clamp(1, 1 << 16) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// A launch with one block per row (grid-stride over rows) and `threads` per block.
pub(crate) fn grid_for_rows(rows: usize, n: usize) -> LaunchConfig {
    let threads: u32 = if n <= 32 {
        32
    } else if n <= 128 {
        128
    } else if rows < 256 && n >= 8192 {
        1024
    } else {
        256
    };
    let blocks = rows.clamp(1, 1 << 20) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Makes freed memory stay in the device's default pool (a caching allocator,
/// as PyTorch's) instead of going back to the driver at every synchronisation.
fn keep_freed_memory_in_pool(ctx: &Arc<CudaContext>) {
    if !ctx.has_async_alloc() {
        return;
    }
    let mut pool: dsys::CUmemoryPool = std::ptr::null_mut();
    // SAFETY: `pool` is valid for writes and the device handle is live; a
    // failure only leaves the driver's default release threshold in place.
    unsafe {
        if dsys::cuDeviceGetDefaultMemPool(&mut pool, ctx.cu_device())
            == dsys::CUresult::CUDA_SUCCESS
            && !pool.is_null()
        {
            let mut threshold: u64 = u64::MAX;
            let _ = dsys::cuMemPoolSetAttribute(
                pool,
                dsys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                (&mut threshold as *mut u64).cast(),
            );
        }
    }
}

/// Launches `func` on the GPU's stream with the given argument references.
macro_rules! launch {
    ($gpu:expr, $op:expr, $func:expr, $cfg:expr, $($arg:expr),+ $(,)?) => {{
        let func = $func;
        use cudarc::driver::PushKernelArg as _;
        let mut builder = $gpu.stream.launch_builder(&func);
        $( builder.arg($arg); )+
        // SAFETY: the argument list matches the kernel's signature (checked by
        // hand against kernels/*.cu: device pointers as u64, i64 sizes, int op
        // codes as i32), every pointer addresses a live buffer of this GPU large
        // enough for the elements the kernel touches, and the buffers outlive
        // the launch (freed on the same stream, after it).
        unsafe { builder.launch($cfg) }.map(|_| ()).map_err(|e| $gpu.driver_err($op, e))
    }};
}
pub(crate) use launch;
