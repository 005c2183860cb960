//! Row reductions, softmax and layer norm over rows too long for one block
//! (see `kernels/split.cu`): each row is cut into chunks reduced by blocks of
//! their own, so a handful of long rows still fills the GPU.

use crate::backend::CudaBackend;
use crate::device::{grid_for, grid_for_rows, launch};
use crate::kernels::SPLIT;
use crate::storage::CudaStorage;
use amp_dtype::DType;
use amp_tensor::Result;
use cudarc::driver::LaunchConfig;

/// Blocks a split launch aims for (a few per SM of a large GPU).
const TARGET_BLOCKS: usize = 512;
/// The shortest chunk worth a block of its own.
const MIN_CHUNK: usize = 4096;

/// Chunks per row: 1 (one block per row, the plain kernels) unless there are
/// too few rows to fill the GPU and they are long enough to cut.
pub(crate) fn parts(rows: usize, n: usize) -> usize {
    if rows == 0 || rows >= TARGET_BLOCKS / 2 || n < 2 * MIN_CHUNK {
        return 1;
    }
    TARGET_BLOCKS
        .div_ceil(rows)
        .min(n / MIN_CHUNK)
        .clamp(1, 1024)
}

/// The accumulation dtype of the row kernels for `dtype` (f32 for f16/bf16, f64 otherwise).
fn acc_dtype(dtype: DType) -> DType {
    match dtype {
        DType::F16 | DType::BF16 => DType::F32,
        _ => DType::F64,
    }
}

/// A launch of `blocks` blocks of 256 threads (grid-stride over the blocks' work items).
fn blocks(blocks: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (blocks.clamp(1, 1 << 20) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// `rows` rows of `n` contiguous elements at device address `x`, each cut into `parts` chunks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rows {
    pub x: u64,
    pub rows: usize,
    pub n: usize,
    pub parts: usize,
}

/// Sum (0), mean (1), max (2) or min (3) of each row of `dtype` (f32/f16/bf16/f64).
pub(crate) fn reduce(
    b: &CudaBackend,
    op: &'static str,
    input: Rows,
    dtype: DType,
    code: i32,
) -> Result<CudaStorage> {
    let Rows { x, rows, n, parts } = input;
    let sfx = crate::kernels::suffix(dtype).unwrap_or("f32");
    let partials = b.gpu.alloc(op, acc_dtype(dtype), rows * parts)?;
    let out = b.gpu.alloc(op, dtype, rows)?;
    let (pp, op_ptr) = (partials.ptr(), out.ptr());
    let (r, n64, p) = (rows as i64, n as i64, parts as i64);
    let f = b
        .gpu
        .function(&SPLIT, &format!("split_reduce_partial_{sfx}"))?;
    launch!(
        b.gpu,
        op,
        f,
        blocks(rows * parts),
        &x,
        &pp,
        &r,
        &n64,
        &p,
        &code
    )?;
    let f = b
        .gpu
        .function(&SPLIT, &format!("split_reduce_finish_{sfx}"))?;
    launch!(
        b.gpu,
        op,
        f,
        grid_for_rows(rows, parts),
        &pp,
        &op_ptr,
        &r,
        &n64,
        &p,
        &code
    )?;
    Ok(out)
}

/// Softmax (or log-softmax) of rows too long for one block, into `y`.
pub(crate) fn softmax(
    b: &CudaBackend,
    op: &'static str,
    input: Rows,
    y: &CudaStorage,
    log: bool,
) -> Result<()> {
    let Rows { x, rows, n, parts } = input;
    let sfx = crate::kernels::suffix(y.dtype).unwrap_or("f32");
    let acc = acc_dtype(y.dtype);
    let partials = b.gpu.alloc(op, acc, 2 * rows * parts)?;
    let stats = b.gpu.alloc(op, acc, 2 * rows)?;
    let (pp, sp, yp) = (partials.ptr(), stats.ptr(), y.ptr());
    let (r, n64, p, log32) = (rows as i64, n as i64, parts as i64, i32::from(log));
    let f = b
        .gpu
        .function(&SPLIT, &format!("split_softmax_partial_{sfx}"))?;
    launch!(b.gpu, op, f, blocks(rows * parts), &x, &pp, &r, &n64, &p)?;
    let f = b
        .gpu
        .function(&SPLIT, &format!("split_softmax_stats_{sfx}"))?;
    launch!(b.gpu, op, f, grid_for_rows(rows, parts), &pp, &sp, &r, &p)?;
    let f = b
        .gpu
        .function(&SPLIT, &format!("split_softmax_apply_{sfx}"))?;
    launch!(
        b.gpu,
        op,
        f,
        grid_for(rows * n),
        &x,
        &yp,
        &sp,
        &r,
        &n64,
        &log32
    )
}

/// The buffers of a split layer norm: the output and the f32 mean and rstd per row.
pub(crate) struct LayerNormOut<'a> {
    pub y: &'a CudaStorage,
    pub mean: &'a CudaStorage,
    pub rstd: &'a CudaStorage,
}

/// Layer norm of rows too long for one block (`w`, `bias`: 0 for none).
pub(crate) fn layer_norm(
    be: &CudaBackend,
    op: &'static str,
    input: Rows,
    (w, bias): (u64, u64),
    out: LayerNormOut<'_>,
    eps: f64,
) -> Result<()> {
    let Rows { x, rows, n, parts } = input;
    let sfx = crate::kernels::suffix(out.y.dtype).unwrap_or("f32");
    let acc = acc_dtype(out.y.dtype);
    let partials = be.gpu.alloc(op, acc, rows * parts)?;
    let stats = be.gpu.alloc(op, acc, 2 * rows)?;
    let (pp, sp, yp, mp, rp) = (
        partials.ptr(),
        stats.ptr(),
        out.y.ptr(),
        out.mean.ptr(),
        out.rstd.ptr(),
    );
    let (r, n64, p) = (rows as i64, n as i64, parts as i64);
    let partial = be
        .gpu
        .function(&SPLIT, &format!("split_layer_norm_partial_{sfx}"))?;
    let stat = be
        .gpu
        .function(&SPLIT, &format!("split_layer_norm_stats_{sfx}"))?;
    for phase in [0i32, 1] {
        launch!(
            be.gpu,
            op,
            partial.clone(),
            blocks(rows * parts),
            &x,
            &sp,
            &pp,
            &r,
            &n64,
            &p,
            &phase
        )?;
        launch!(
            be.gpu,
            op,
            stat.clone(),
            grid_for_rows(rows, parts),
            &pp,
            &sp,
            &mp,
            &rp,
            &r,
            &n64,
            &p,
            &phase,
            &eps
        )?;
    }
    let f = be
        .gpu
        .function(&SPLIT, &format!("split_layer_norm_apply_{sfx}"))?;
    launch!(
        be.gpu,
        op,
        f,
        grid_for(rows * n),
        &x,
        &w,
        &bias,
        &yp,
        &sp,
        &r,
        &n64
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_few_long_rows_are_split() {
        assert_eq!(parts(1, 1 << 20), 256, "one long row: 256 chunks of 4096");
        assert_eq!(parts(1, 1 << 30), 512);
        assert_eq!(parts(4, 1 << 20), 128);
        assert_eq!(parts(1, 1000), 1, "short rows run one block each");
        assert_eq!(parts(256, 1 << 20), 1, "enough rows fill the GPU");
        assert_eq!(parts(0, 1 << 20), 1);
        assert_eq!(parts(3, 9000), 2);
        for (rows, n) in [(1, 8192), (7, 100_000), (255, 1 << 24)] {
            let p = parts(rows, n);
            assert!(
                (1..=1024).contains(&p) && n / p >= MIN_CHUNK,
                "{rows}x{n}: {p}"
            );
        }
    }
}
