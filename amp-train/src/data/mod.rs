//! Data: [`TensorDataset`], [`DataLoader`] (batching, seeded shuffle,
//! `drop_last`), and the bundled [`digits`] data set.
//!
//! ```
//! use amp_tensor::{DType, Device, Tensor};
//! use amp_train::data::{DataLoader, TensorDataset};
//!
//! let device = Device::reference();
//! let x = Tensor::randn(&[10, 3], DType::F32, &device, 0)?;
//! let y = Tensor::randint(0, 2, &[10], &device, 1)?;
//! let loader = DataLoader::new(TensorDataset::new(vec![x, y])?, 4)
//!     .shuffle(7)
//!     .drop_last(true)
//!     .pairs()?; // batches as (inputs, targets)
//! let mut batches = 0;
//! for batch in loader.iter() {
//!     let (x, y) = batch?;
//!     assert_eq!((x.dims(), y.dims()), (&[4, 3][..], &[4][..]));
//!     batches += 1;
//! }
//! assert_eq!(batches, 2); // 10 rows, batches of 4, the last 2 rows dropped
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#[cfg(feature = "digits")]
mod digits;
#[cfg(feature = "text")]
pub mod text;

#[cfg(feature = "digits")]
pub use digits::{digits, DIGITS_CLASSES, DIGITS_FEATURES, DIGITS_ROWS, DIGITS_TRAIN_ROWS};

use crate::{Error, Result};
use amp_tensor::random::draw_u64;
use amp_tensor::{Device, Tensor};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};

/// Tensors that share their first dimension; row `i` of the data set is row
/// `i` of each (`torch.utils.data.TensorDataset`).
#[derive(Debug, Clone)]
pub struct TensorDataset {
    tensors: Vec<Tensor>,
    len: usize,
}

impl TensorDataset {
    /// A data set of `tensors`: at least one, each at least 1-D, all with the
    /// same first dimension and on the same device.
    pub fn new(tensors: Vec<Tensor>) -> Result<TensorDataset> {
        let Some(first) = tensors.first() else {
            return Err(Error::data(
                "TensorDataset::new",
                "needs at least one tensor",
            ));
        };
        if first.rank() == 0 {
            return Err(Error::data(
                "TensorDataset::new",
                "tensor 0 is a scalar; each tensor needs a first (row) dimension",
            ));
        }
        let len = first.dims()[0];
        for (i, t) in tensors.iter().enumerate() {
            if t.rank() == 0 || t.dims()[0] != len {
                return Err(Error::data(
                    "TensorDataset::new",
                    format!("size mismatch between tensors: tensor 0 has shape {:?}, tensor {i} has shape {:?}", first.dims(), t.dims()),
                ));
            }
            if !t.device().same_device(first.device()) {
                return Err(Error::data(
                    "TensorDataset::new",
                    format!(
                        "tensor 0 is on {}, tensor {i} on {}",
                        first.device(),
                        t.device()
                    ),
                ));
            }
        }
        Ok(TensorDataset { tensors, len })
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The tensors.
    pub fn tensors(&self) -> &[Tensor] {
        &self.tensors
    }

    /// The device the tensors are on.
    pub fn device(&self) -> &Device {
        self.tensors[0].device()
    }

    /// Rows `index` (i64 row numbers) of every tensor.
    pub fn rows(&self, index: &[i64]) -> Result<Vec<Tensor>> {
        let index = Tensor::from_vec(index.to_vec(), &[index.len()], self.device())?;
        Ok(self
            .tensors
            .iter()
            .map(|t| t.index_select(0, &index))
            .collect::<amp_tensor::Result<_>>()?)
    }

    /// Rows `start..start + len` of every tensor (views, no copy).
    pub fn range(&self, start: usize, len: usize) -> Result<Vec<Tensor>> {
        Ok(self
            .tensors
            .iter()
            .map(|t| t.narrow(0, start, len))
            .collect::<amp_tensor::Result<_>>()?)
    }
}

/// What a [`DataLoader`] yields per batch, made from the batch's tensors (one
/// per data set tensor): `Vec<Tensor>`, or `(Tensor, Tensor)` for a data set
/// of inputs and targets ([`DataLoader::pairs`]).
pub trait Batch: Sized {
    /// The batch from its tensors.
    fn from_tensors(tensors: Vec<Tensor>) -> Result<Self>;
}

impl Batch for Vec<Tensor> {
    fn from_tensors(tensors: Vec<Tensor>) -> Result<Self> {
        Ok(tensors)
    }
}

impl Batch for (Tensor, Tensor) {
    fn from_tensors(tensors: Vec<Tensor>) -> Result<Self> {
        let n = tensors.len();
        let mut it = tensors.into_iter();
        match (it.next(), it.next(), n) {
            (Some(x), Some(y), 2) => Ok((x, y)),
            _ => Err(Error::data(
                "DataLoader",
                format!("a pair batch needs a data set of 2 tensors, this one has {n}"),
            )),
        }
    }
}

/// Batches of a [`TensorDataset`] (`torch.utils.data.DataLoader` without
/// workers): `Vec<Tensor>` per batch, or `(inputs, targets)` after
/// [`DataLoader::pairs`]. Iteration yields `Result`s: a batch that cannot be
/// gathered (or a batch size of 0) is an `Err`, never a panic.
///
/// Shuffling is reproducible: with [`DataLoader::shuffle`]`(seed)`, epoch `e`
/// visits the rows in a permutation determined only by `(seed, e)`. Each call
/// of [`DataLoader::iter`] starts the next epoch (the first call is epoch 0),
/// so a loop that calls `iter()` once per epoch is reshuffled every epoch as
/// in PyTorch; [`DataLoader::set_epoch`] moves the counter (for resuming), and
/// [`DataLoader::iter_epoch`] iterates a given epoch without touching it.
#[derive(Debug)]
pub struct DataLoader<B = Vec<Tensor>> {
    dataset: TensorDataset,
    batch_size: usize,
    shuffle_seed: Option<u64>,
    drop_last: bool,
    /// `(rank, world_size)`: this rank's shard of every epoch.
    shard: Option<(usize, usize)>,
    epoch: AtomicU64,
    batch: PhantomData<fn() -> B>,
}

impl DataLoader {
    /// Batches of `batch_size` rows in order (the last one may be smaller).
    /// A `batch_size` of 0 is an `Err` from the first batch.
    pub fn new(dataset: TensorDataset, batch_size: usize) -> DataLoader {
        DataLoader {
            dataset,
            batch_size,
            shuffle_seed: None,
            drop_last: false,
            shard: None,
            epoch: AtomicU64::new(0),
            batch: PhantomData,
        }
    }

    /// The same loader with batches as `(inputs, targets)`: `Err` unless the
    /// data set has exactly two tensors.
    pub fn pairs(self) -> Result<DataLoader<(Tensor, Tensor)>> {
        let n = self.dataset.tensors().len();
        if n != 2 {
            return Err(Error::data(
                "DataLoader::pairs",
                format!("needs a data set of 2 tensors (inputs, targets), this one has {n}"),
            ));
        }
        Ok(DataLoader {
            dataset: self.dataset,
            batch_size: self.batch_size,
            shuffle_seed: self.shuffle_seed,
            drop_last: self.drop_last,
            shard: self.shard,
            epoch: self.epoch,
            batch: PhantomData,
        })
    }
}

impl<B: Batch> DataLoader<B> {
    /// Shuffles the rows every epoch, reproducibly from `seed`.
    pub fn shuffle(mut self, seed: u64) -> Self {
        self.shuffle_seed = Some(seed);
        self
    }

    /// Drops the last batch if it is smaller than the batch size.
    pub fn drop_last(mut self, drop_last: bool) -> Self {
        self.drop_last = drop_last;
        self
    }

    /// Only rank `rank`'s shard of each epoch, for data-parallel training
    /// over `world_size` ranks (PyTorch's `DistributedSampler` with its
    /// defaults): the epoch's order (shuffled or not) is padded by repeating
    /// its first rows to a multiple of `world_size`, and rank `r` takes rows
    /// `r, r + world_size, …` — disjoint shards of equal length
    /// `ceil(len / world_size)`, reshuffled every epoch by the same seed on
    /// every rank. So batch `k` of the ranks together is batch `k` of one
    /// process with a `world_size` times larger batch. A rank outside
    /// `0..world_size` is an `Err` from the first batch.
    pub fn shard(mut self, rank: usize, world_size: usize) -> Self {
        self.shard = Some((rank, world_size));
        self
    }

    /// `(rank, world_size)` if this loader yields one rank's shard.
    pub fn shard_of(&self) -> Option<(usize, usize)> {
        self.shard
    }

    /// The data set.
    pub fn dataset(&self) -> &TensorDataset {
        &self.dataset
    }

    /// The batch size.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// The shuffle seed, if shuffling.
    pub fn shuffle_seed(&self) -> Option<u64> {
        self.shuffle_seed
    }

    /// Number of batches per epoch (of this rank's shard, if sharded).
    pub fn len(&self) -> usize {
        self.len_in(self.shard)
    }

    /// Rows per epoch for `shard`.
    fn rows_in(&self, shard: Option<(usize, usize)>) -> usize {
        match shard {
            Some((_, world)) if world > 0 => self.dataset.len().div_ceil(world),
            _ => self.dataset.len(),
        }
    }

    /// Batches per epoch for `shard`.
    fn len_in(&self, shard: Option<(usize, usize)>) -> usize {
        let rows = self.rows_in(shard);
        match (self.batch_size, self.drop_last) {
            (0, _) => 0,
            (b, true) => rows / b,
            (b, false) => rows.div_ceil(b),
        }
    }

    /// True if an epoch has no batches.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The epoch the next [`DataLoader::iter`] call will produce.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Relaxed)
    }

    /// Sets the epoch the next [`DataLoader::iter`] call will produce.
    pub fn set_epoch(&self, epoch: u64) {
        self.epoch.store(epoch, Ordering::Relaxed);
    }

    /// The row order of epoch `epoch`: `0..len` unshuffled, else a
    /// Fisher–Yates permutation drawn from the stream `(seed, epoch)`.
    pub fn order(&self, epoch: u64) -> Vec<i64> {
        let n = self.dataset.len();
        let mut order: Vec<i64> = (0..n as i64).collect();
        if let Some(seed) = self.shuffle_seed {
            let stream = draw_u64(seed, epoch);
            for i in (1..n).rev() {
                // Unbiased enough for any realistic n: multiply-shift of a 64-bit draw.
                let j = ((draw_u64(stream, i as u64) as u128 * (i as u128 + 1)) >> 64) as usize;
                order.swap(i, j);
            }
        }
        order
    }

    /// The next epoch's batches, each a `Result`.
    pub fn iter(&self) -> Batches<'_, B> {
        let epoch = self.epoch.fetch_add(1, Ordering::Relaxed);
        self.iter_epoch(epoch)
    }

    /// The batches of epoch `epoch`, without moving the epoch counter.
    pub fn iter_epoch(&self, epoch: u64) -> Batches<'_, B> {
        self.iter_epoch_in(epoch, self.shard)
    }

    /// The batches of epoch `epoch` of `shard`.
    fn iter_epoch_in(&self, epoch: u64, shard: Option<(usize, usize)>) -> Batches<'_, B> {
        let error = if self.batch_size == 0 {
            Some(Error::data(
                "DataLoader",
                "batch_size must be at least 1, got 0",
            ))
        } else {
            match shard {
                Some((rank, world)) if rank >= world => Some(Error::data(
                    "DataLoader::shard",
                    format!("rank {rank} is not one of {world} ranks (0..{world})"),
                )),
                _ => None,
            }
        };
        let order = self.shuffle_seed.map(|_| self.order(epoch));
        let order = match shard {
            Some((rank, world)) if error.is_none() => {
                let order = order.unwrap_or_else(|| (0..self.dataset.len() as i64).collect());
                let rows = self.rows_in(shard);
                Some(
                    (0..rows)
                        .map(|k| order[(rank + k * world) % order.len().max(1)])
                        .collect(),
                )
            }
            _ => order,
        };
        Batches {
            dataset: &self.dataset,
            batch_size: self.batch_size,
            order,
            next: 0,
            remaining: if error.is_some() {
                1
            } else {
                self.len_in(shard)
            },
            error,
            batch: PhantomData,
        }
    }

    /// The next epoch's batches as the data set's tensors, whatever `B` is
    /// (what the trainer iterates).
    pub(crate) fn iter_tensors(&self, shard: Option<(usize, usize)>) -> Batches<'_, Vec<Tensor>> {
        let epoch = self.epoch.fetch_add(1, Ordering::Relaxed);
        let batches = self.iter_epoch_in(epoch, shard.or(self.shard));
        Batches {
            dataset: batches.dataset,
            batch_size: batches.batch_size,
            order: batches.order,
            next: batches.next,
            remaining: batches.remaining,
            error: batches.error,
            batch: PhantomData,
        }
    }
}

/// The iterator of one epoch's batches (see [`DataLoader::iter`]).
#[derive(Debug)]
pub struct Batches<'a, B = Vec<Tensor>> {
    dataset: &'a TensorDataset,
    batch_size: usize,
    order: Option<Vec<i64>>,
    next: usize,
    remaining: usize,
    error: Option<Error>,
    batch: PhantomData<fn() -> B>,
}

impl<B: Batch> Iterator for Batches<'_, B> {
    type Item = Result<B>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        if let Some(e) = self.error.take() {
            return Some(Err(e));
        }
        let n = self.order.as_ref().map_or(self.dataset.len(), Vec::len);
        let start = self.next;
        let len = self.batch_size.min(n - start);
        self.next += len;
        let tensors = match &self.order {
            Some(order) => self.dataset.rows(&order[start..start + len]),
            None => self.dataset.range(start, len),
        };
        Some(tensors.and_then(B::from_tensors))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl<B: Batch> ExactSizeIterator for Batches<'_, B> {}

#[cfg(test)]
mod tests {
    use super::*;
    use amp_tensor::DType;

    fn dataset(n: usize) -> TensorDataset {
        let device = Device::reference();
        let x = Tensor::from_f64_slice(
            &(0..n * 2).map(|v| v as f64).collect::<Vec<_>>(),
            &[n, 2],
            DType::F32,
            &device,
        );
        let y = Tensor::from_vec((0..n as i64).collect(), &[n], &device);
        TensorDataset::new(vec![x.unwrap(), y.unwrap()]).unwrap()
    }

    fn labels(batches: &[Vec<Tensor>]) -> Vec<i64> {
        batches
            .iter()
            .flat_map(|b| b[1].to_vec::<i64>().unwrap())
            .collect()
    }

    #[test]
    fn dataset_rejects_inconsistent_tensors() {
        let device = Device::reference();
        let a = Tensor::zeros(&[4, 2], DType::F32, &device).unwrap();
        let b = Tensor::zeros(&[5], DType::F32, &device).unwrap();
        let err = TensorDataset::new(vec![a.clone(), b])
            .unwrap_err()
            .to_string();
        assert!(err.contains("[4, 2]") && err.contains("[5]"), "{err}");
        assert!(TensorDataset::new(vec![]).is_err());
        assert!(
            TensorDataset::new(vec![Tensor::scalar(1.0, DType::F32, &device).unwrap()]).is_err()
        );
        assert_eq!(TensorDataset::new(vec![a]).unwrap().len(), 4);
    }

    #[test]
    fn batches_in_order_with_and_without_drop_last() {
        let loader = DataLoader::new(dataset(10), 4);
        let batches = loader.iter().collect::<Result<Vec<_>>>().unwrap();
        assert_eq!(
            batches.iter().map(|b| b[0].dims()[0]).collect::<Vec<_>>(),
            [4, 4, 2]
        );
        assert_eq!(labels(&batches), (0..10).collect::<Vec<_>>());
        assert_eq!(
            batches[1][0].to_f64_vec().unwrap(),
            (8..16).map(|v| v as f64).collect::<Vec<_>>()
        );
        let loader = DataLoader::new(dataset(10), 4).drop_last(true);
        assert_eq!(loader.len(), 2);
        assert_eq!(
            labels(&loader.iter().collect::<Result<Vec<_>>>().unwrap()),
            (0..8).collect::<Vec<_>>()
        );
    }

    #[test]
    fn shards_of_two_ranks_make_up_the_batches_of_one_process_with_twice_the_batch() {
        for shuffle in [None, Some(5)] {
            let one = DataLoader::new(dataset(24), 6);
            let ranks: Vec<DataLoader> = (0..2)
                .map(|r| DataLoader::new(dataset(24), 3).shard(r, 2))
                .collect();
            let (one, ranks) = match shuffle {
                Some(seed) => (
                    one.shuffle(seed),
                    ranks.into_iter().map(|l| l.shuffle(seed)).collect(),
                ),
                None => (one, ranks),
            };
            for epoch in 0..3 {
                let whole: Vec<Vec<Tensor>> = one.iter_epoch(epoch).collect::<Result<_>>().unwrap();
                let parts: Vec<Vec<Vec<Tensor>>> = ranks
                    .iter()
                    .map(|l| l.iter_epoch(epoch).collect::<Result<_>>().unwrap())
                    .collect();
                assert_eq!((whole.len(), parts[0].len(), parts[1].len()), (4, 4, 4));
                for (k, batch) in whole.iter().enumerate() {
                    let mut want = labels(std::slice::from_ref(batch));
                    let mut got: Vec<i64> =
                        parts.iter().flat_map(|p| labels(&p[k..k + 1])).collect();
                    want.sort_unstable();
                    got.sort_unstable();
                    assert_eq!(got, want, "epoch {epoch} batch {k} shuffle {shuffle:?}");
                }
            }
        }
        // Uneven: 10 rows over 3 ranks pad to 12 by repeating the first rows.
        let shards: Vec<Vec<i64>> = (0..3)
            .map(|r| {
                labels(
                    &DataLoader::new(dataset(10), 2)
                        .shard(r, 3)
                        .iter()
                        .collect::<Result<Vec<_>>>()
                        .unwrap(),
                )
            })
            .collect();
        assert_eq!(
            shards,
            vec![vec![0, 3, 6, 9], vec![1, 4, 7, 0], vec![2, 5, 8, 1]]
        );
        let loader = DataLoader::new(dataset(10), 2).shard(3, 3);
        let err = loader.iter().next().unwrap().unwrap_err().to_string();
        assert!(err.contains("rank 3 is not one of 3 ranks"), "{err}");
    }

    #[test]
    fn shuffle_is_a_seeded_permutation_that_changes_per_epoch() {
        let loader = DataLoader::new(dataset(50), 8).shuffle(3);
        let e0 = labels(&loader.iter().collect::<Result<Vec<_>>>().unwrap());
        let e1 = labels(&loader.iter().collect::<Result<Vec<_>>>().unwrap());
        assert_eq!(loader.epoch(), 2);
        let mut sorted = e0.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_ne!(e0, (0..50).collect::<Vec<_>>());
        assert_ne!(e0, e1);
        // Rows stay together across the tensors of the data set.
        for b in DataLoader::new(dataset(50), 8).shuffle(3).iter() {
            let b = b.unwrap();
            let (x, y) = (b[0].to_f64_vec().unwrap(), b[1].to_vec::<i64>().unwrap());
            for (i, &label) in y.iter().enumerate() {
                assert_eq!(x[2 * i], 2.0 * label as f64);
            }
        }
        // Same seed, same epoch: same order; set_epoch rewinds.
        let again = DataLoader::new(dataset(50), 8).shuffle(3);
        again.set_epoch(1);
        assert_eq!(
            labels(&again.iter().collect::<Result<Vec<_>>>().unwrap()),
            e1
        );
        assert_eq!(
            labels(&loader.iter_epoch(0).collect::<Result<Vec<_>>>().unwrap()),
            e0
        );
        assert_ne!(
            DataLoader::new(dataset(50), 8).shuffle(4).order(0),
            loader.order(0)
        );
    }

    #[test]
    fn zero_batch_size_is_an_error() {
        let loader = DataLoader::new(dataset(3), 0);
        let batches: Vec<_> = loader.iter().collect();
        assert_eq!(batches.len(), 1);
        let err = batches[0].as_ref().unwrap_err().to_string();
        assert!(err.contains("batch_size"), "{err}");
    }

    #[test]
    fn pairs_are_typed_and_need_two_tensors() {
        let loader = DataLoader::new(dataset(10), 4).pairs().unwrap();
        let mut seen = Vec::new();
        for batch in loader.iter() {
            let (x, y) = batch.unwrap();
            assert_eq!(x.dims()[0], y.dims()[0]);
            seen.extend(y.to_vec::<i64>().unwrap());
        }
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        let device = Device::reference();
        let one = TensorDataset::new(vec![Tensor::zeros(&[3], DType::F32, &device).unwrap()]);
        let err = DataLoader::new(one.unwrap(), 2)
            .pairs()
            .unwrap_err()
            .to_string();
        assert!(err.contains("2 tensors") && err.contains("has 1"), "{err}");
    }
}
