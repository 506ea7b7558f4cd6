//! The right side of an `ASOF JOIN` against a [`LeftIndex`]: [`RightPart`] collects one right
//! partition as it streams, and [`Matches`] finds the right row every left row takes.
//!
//! A right row is kept as an entry (time, group, row number) in the *bucket* of its group: a run of
//! groups whose part of the index fits in a core's cache (see [`LeftIndex::bucket_shift`]). Rows
//! whose key no left row has, or whose key or time is NULL, are dropped at once. The match then runs
//! bucket by bucket, buckets split between the cores (each owns the slots of its buckets): every
//! entry is located in its group's slots and kept if it beats the slot's best so far. Entries come
//! in read order (partition by partition, row by row), so on equal times the row read last wins,
//! unless the rows' commit ranks differ ([`super::commit_order`]): then the later commit's row.
//! Offered row by row as they were read, each entry cost a cache miss or two; bucket by bucket,
//! the index stays in cache.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, RecordBatchOptions,
};
use arrow::compute::filter_record_batch;
use arrow::datatypes::Int64Type;
use arrow::datatypes::{Schema, SchemaRef};
use datafusion::common::{Result, exec_err};
use datafusion::execution::memory_pool::MemoryReservation;

use super::MatchOp;
use super::left_index::{LeftIndex, NONE};

/// A right row waiting to be matched.
#[derive(Clone, Copy)]
struct Entry {
    time: i64,
    group: u32,
    /// Read-order number within its partition.
    row: u32,
}

/// Entries of one bucket, in chunks of fixed size: growing never copies, and at most one chunk per
/// bucket is partly empty.
#[derive(Default)]
struct Chunks(Vec<Vec<Entry>>);

impl Chunks {
    const SIZE: usize = 8192;

    fn push(&mut self, entry: Entry) {
        match self.0.last_mut() {
            Some(chunk) if chunk.len() < Self::SIZE => chunk.push(entry),
            _ => {
                let mut chunk = Vec::with_capacity(Self::SIZE);
                chunk.push(entry);
                self.0.push(chunk);
            }
        }
    }

    fn len(&self) -> usize {
        self.0.iter().map(Vec::len).sum()
    }

    fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.0.iter().flatten()
    }
}

/// Which groups a pass over the right side keeps: those with `group % of == pass`. One pass keeps
/// everything; more passes each hold a share of the right side, for when it does not fit in memory.
#[derive(Clone, Copy, Debug)]
pub(super) struct Pass {
    pub pass: usize,
    pub of: usize,
}

/// One right partition, collected: its batches and its entries by bucket. What it holds is counted
/// against the session's memory pool.
pub(super) struct RightPart {
    index: Arc<LeftIndex>,
    shift: u32,
    pass: Pass,
    batches: Vec<RecordBatch>,
    rows: usize,
    buckets: Vec<Chunks>,
    /// Each row's commit rank (by read-order number), when the right side gives them.
    ranks: Vec<u32>,
    reservation: MemoryReservation,
}

impl RightPart {
    pub fn new(index: Arc<LeftIndex>, pass: Pass, reservation: MemoryReservation) -> Self {
        let shift = index.bucket_shift();
        let buckets = (0..index.buckets()).map(|_| Chunks::default()).collect();
        Self {
            index,
            shift,
            pass,
            batches: Vec::new(),
            rows: 0,
            buckets,
            ranks: Vec::new(),
            reservation,
        }
    }

    /// Adds one right batch with its key columns, its times (`time_values`) and, when the right
    /// side gives them, its rows' commit ranks.
    pub fn push(
        &mut self,
        batch: RecordBatch,
        keys: &[ArrayRef],
        times: &Int64Array,
        ranks: Option<Vec<u32>>,
    ) -> Result<()> {
        let n = batch.num_rows();
        if self.rows + n >= u32::MAX as usize {
            return exec_err!(
                "a partition of the right side of an ASOF JOIN has more than {} rows",
                u32::MAX - 1
            );
        }
        let mut groups = self.index.groups(keys, n)?;
        let has_nulls = times.null_count() > 0;
        let Pass { pass, of } = self.pass;
        for (i, group) in groups.iter_mut().enumerate() {
            if *group != NONE && ((has_nulls && times.is_null(i)) || *group as usize % of != pass) {
                *group = NONE;
            }
        }
        // In a pass of several, only the rows of this pass's buckets are kept.
        let (batch, groups, times, ranks) = if of > 1 {
            let keep: BooleanArray = groups.iter().map(|&g| Some(g != NONE)).collect();
            let times = arrow::compute::filter(times, &keep)?;
            let times = times.as_primitive::<Int64Type>().clone();
            let ranks = ranks.map(|r| {
                r.into_iter()
                    .zip(&groups)
                    .filter(|(_, g)| **g != NONE)
                    .map(|(r, _)| r)
                    .collect::<Vec<u32>>()
            });
            let groups: Vec<u32> = groups.into_iter().filter(|&g| g != NONE).collect();
            (filter_record_batch(&batch, &keep)?, groups, times, ranks)
        } else {
            (batch, groups, times.clone(), ranks)
        };
        let n = batch.num_rows();
        let entries = groups.iter().filter(|&&g| g != NONE).count();
        let rank_bytes = ranks.as_ref().map_or(0, |r| r.len() * 4);
        self.reservation.try_grow(
            batch.get_array_memory_size() + entries * std::mem::size_of::<Entry>() + rank_bytes,
        )?;
        if let Some(ranks) = ranks {
            // Rows before this batch had no ranks (an earlier batch without them): rank 0.
            self.ranks.resize(self.rows, 0);
            self.ranks.extend(ranks);
        }
        for (i, (&group, &time)) in groups.iter().zip(times.values()).enumerate() {
            if group == NONE {
                continue;
            }
            self.buckets[(group >> self.shift) as usize].push(Entry {
                time,
                group,
                row: (self.rows + i) as u32,
            });
        }
        self.rows += n;
        if n > 0 {
            self.batches.push(batch);
        }
        Ok(())
    }
}

/// No right row.
const NO_ROW: u64 = u64::MAX;

/// The right row every left row takes: the right batches (then one all-NULL row) and, per left row
/// in read order, the global read-order number of its right row.
pub(super) struct Matches {
    batches: Vec<RecordBatch>,
    /// `starts[b]`: the global read-order number of the first row of `batches[b]`.
    starts: Vec<u64>,
    rows: Vec<u64>,
    /// The memory of `batches`, held until the output is emitted.
    reservations: Vec<MemoryReservation>,
}

impl Matches {
    /// Matches the right partitions (in partition order) against the index on all cores.
    pub fn build(
        index: &LeftIndex,
        parts: Vec<RightPart>,
        op: MatchOp,
        right: &SchemaRef,
    ) -> Result<Self> {
        let mut part_starts = Vec::with_capacity(parts.len());
        let mut total = 0u64;
        for part in &parts {
            part_starts.push(total);
            total += part.rows as u64;
        }
        let buckets = index.buckets();
        let sizes: Vec<usize> = (0..buckets)
            .map(|b| parts.iter().map(|p| p.buckets[b].len()).sum())
            .collect();
        // Split the buckets between the cores, about equal entries each.
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let all: usize = sizes.iter().sum();
        let mut cuts = vec![0usize];
        let mut acc = 0;
        for (b, size) in sizes.iter().enumerate() {
            acc += size;
            if cuts.len() < threads && acc * threads >= all * cuts.len() && b + 1 < buckets {
                cuts.push(b + 1);
            }
        }
        cuts.push(buckets);
        let mut best_time = vec![0i64; index.slots()];
        let mut best_row = vec![NO_ROW; index.slots()];
        // The commit rank of each slot's best row: on equal times a higher rank wins, then (equal
        // ranks) the row read last.
        let mut best_rank = vec![0u32; index.slots()];
        std::thread::scope(|scope| {
            let (mut times, mut rows, mut ranks) = (
                best_time.as_mut_slice(),
                best_row.as_mut_slice(),
                best_rank.as_mut_slice(),
            );
            for w in cuts.windows(2) {
                let (b0, b1) = (w[0], w[1]);
                let base = index.bucket_start(b0);
                let len = index.bucket_start(b1) - base;
                let (t_here, t_rest) = std::mem::take(&mut times).split_at_mut(len);
                let (r_here, r_rest) = std::mem::take(&mut rows).split_at_mut(len);
                let (k_here, k_rest) = std::mem::take(&mut ranks).split_at_mut(len);
                (times, rows, ranks) = (t_rest, r_rest, k_rest);
                let (parts, part_starts) = (&parts, &part_starts);
                scope.spawn(move || {
                    for b in b0..b1 {
                        for (part, start) in parts.iter().zip(part_starts) {
                            for e in part.buckets[b].iter() {
                                let slot = index.slot(e.group, e.time, op);
                                if slot == NONE {
                                    continue;
                                }
                                let s = slot as usize - base;
                                let rank = part.ranks.get(e.row as usize).copied().unwrap_or(0);
                                let better = r_here[s] == NO_ROW
                                    || e.time > t_here[s]
                                    || (e.time == t_here[s] && rank >= k_here[s]);
                                if better {
                                    t_here[s] = e.time;
                                    r_here[s] = start + e.row as u64;
                                    k_here[s] = rank;
                                }
                            }
                        }
                    }
                });
            }
        });
        drop(best_time);
        drop(best_rank);
        let rows = index.resolve(&best_row, NO_ROW);
        drop(best_row);

        let mut batches = Vec::new();
        let mut starts = Vec::new();
        let mut reservations = Vec::with_capacity(parts.len());
        for (part, start) in parts.into_iter().zip(part_starts) {
            reservations.push(part.reservation);
            let mut at = start;
            for batch in part.batches {
                starts.push(at);
                at += batch.num_rows() as u64;
                batches.push(batch);
            }
        }
        starts.push(total);
        let nulls: Vec<ArrayRef> = right
            .fields()
            .iter()
            .map(|f| arrow::array::new_null_array(f.data_type(), 1))
            .collect();
        let null_schema = Arc::new(Schema::new(
            right
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>(),
        ));
        let one_row = RecordBatchOptions::new().with_row_count(Some(1));
        batches.push(RecordBatch::try_new_with_options(
            null_schema,
            nulls,
            &one_row,
        )?);
        Ok(Self {
            batches,
            starts,
            rows,
            reservations,
        })
    }

    /// Keeps only the right rows some left row takes, in one batch, and shrinks the reservation to
    /// them: what a pass of several holds while the next pass runs.
    pub fn compact(mut self) -> Result<Self> {
        let mut taken: Vec<u64> = self.rows.iter().copied().filter(|&r| r != NO_ROW).collect();
        taken.sort_unstable();
        taken.dedup();
        let total = taken.len() as u64;
        let schema = self.batches[self.batches.len() - 1].schema();
        let columns = self.take(&taken)?;
        let options = RecordBatchOptions::new().with_row_count(Some(taken.len()));
        let kept = RecordBatch::try_new_with_options(schema, columns, &options)?;
        for row in self.rows.iter_mut().filter(|r| **r != NO_ROW) {
            *row = taken.partition_point(|&t| t < *row) as u64;
        }
        let null = self.batches.pop();
        self.batches = std::iter::once(kept).chain(null).collect();
        self.starts = vec![0, total];
        let size = self.batches[0].get_array_memory_size();
        self.reservations.truncate(1);
        if let Some(r) = self.reservations.first_mut() {
            r.resize(size);
        }
        Ok(self)
    }

    /// Joins the matches of passes over disjoint buckets (so each left row is matched in at most
    /// one of them) into one.
    pub fn concat(passes: Vec<Matches>) -> Self {
        let mut passes = passes.into_iter();
        let Some(mut all) = passes.next() else {
            return Self {
                batches: Vec::new(),
                starts: Vec::new(),
                rows: Vec::new(),
                reservations: Vec::new(),
            };
        };
        for next in passes {
            let null = all.batches.pop();
            let offset = all.starts.pop().unwrap_or(0);
            let count = next.batches.len().saturating_sub(1);
            all.batches.extend(next.batches.into_iter().take(count));
            all.batches.extend(null);
            all.starts.extend(next.starts.iter().map(|s| s + offset));
            for (row, theirs) in all.rows.iter_mut().zip(next.rows) {
                if *row == NO_ROW && theirs != NO_ROW {
                    *row = theirs + offset;
                }
            }
            all.reservations.extend(next.reservations);
        }
        all
    }

    /// The right columns of left rows `start..start + len` (read order).
    pub fn gather(&self, start: usize, len: usize) -> Result<Vec<ArrayRef>> {
        self.take(&self.rows[start..start + len])
    }

    /// The right columns of `rows` (global read-order numbers; `NO_ROW` gives NULLs).
    fn take(&self, rows: &[u64]) -> Result<Vec<ArrayRef>> {
        let null_batch = self.batches.len() - 1;
        let positions: Vec<(usize, usize)> = rows
            .iter()
            .map(|&row| {
                if row == NO_ROW {
                    return (null_batch, 0);
                }
                let b = self.starts.partition_point(|&s| s <= row) - 1;
                (b, (row - self.starts[b]) as usize)
            })
            .collect();
        (0..self.batches[null_batch].num_columns())
            .map(|c| {
                let arrays: Vec<&dyn Array> =
                    self.batches.iter().map(|b| b.column(c).as_ref()).collect();
                Ok(arrow::compute::interleave(&arrays, &positions)?)
            })
            .collect()
    }
}
