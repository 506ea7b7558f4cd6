//! [`RightIndex`]: the right side of an `ASOF JOIN`, grouped by key and sorted by time, and the probe
//! that finds each left row's match in it.
//!
//! Build: the right rows are numbered in read order (partition by partition, row by row); each row
//! gets a group id from its key (rows with a NULL key or time are left out: they never match);
//! a stable counting sort lays the (time, row) entries out group by group, and each group is then
//! stably sorted by time unless it already is (feature tables written in (key, time) order cost no
//! sort). Ties keep read order, so among equal keys and times the row read last wins.
//!
//! Probe: per left row, the key's group is found by hash and the time by binary search; the result
//! is a nullable row index per left row, used to `take` the right columns.

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type};
use arrow::row::{RowConverter, SortField};
use datafusion::common::{Result, exec_err, plan_err};
use hashbrown::HashMap;

use super::MatchOp;

/// Converts a time column to comparable `i64`s (timestamps and dates as their raw values, integers
/// widened). Both sides share one type after coercion, so raw values compare correctly.
pub(super) fn time_values(array: &ArrayRef) -> Result<Int64Array> {
    let as_i64 = match array.data_type() {
        DataType::Timestamp(_, _) | DataType::Date64 | DataType::Int64 => {
            cast(array, &DataType::Int64)?
        }
        DataType::Date32
        | DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32 => cast(array, &DataType::Int64)?,
        DataType::UInt64 => {
            // Values above i64::MAX cannot be compared as i64: refuse them rather than wrap.
            arrow::compute::kernels::cast::cast_with_options(
                array,
                &DataType::Int64,
                &arrow::compute::CastOptions {
                    safe: false,
                    ..Default::default()
                },
            )?
        }
        other => {
            return plan_err!(
                "ASOF JOIN times must be timestamps, dates or integers; found {other}"
            );
        }
    };
    Ok(as_i64.as_primitive::<Int64Type>().clone())
}

/// Whether a time type is supported (checked at planning time).
pub(super) fn is_time_type(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Timestamp(_, _)
            | DataType::Date32
            | DataType::Date64
            | DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
    )
}

/// Maps keys to group ids.
enum Groups {
    /// The right side has no rows: nothing matches.
    Empty,
    /// No `ON` keys: every row is in group 0.
    All,
    /// One integer key (the common case), hashed as `i64`.
    Int(HashMap<i64, u32>),
    /// Any keys, hashed in Arrow's row format.
    Rows {
        converter: RowConverter,
        map: HashMap<Box<[u8]>, u32>,
    },
}

const NO_GROUP: u32 = u32::MAX;

fn is_int_key(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
    )
}

/// Rows whose keys are all non-null.
fn keys_valid(keys: &[ArrayRef], i: usize) -> bool {
    keys.iter().all(|k| k.is_valid(i))
}

impl Groups {
    fn new(key_types: &[DataType]) -> Result<Self> {
        Ok(match key_types {
            [] => Groups::All,
            [t] if is_int_key(t) => Groups::Int(HashMap::new()),
            types => Groups::Rows {
                converter: RowConverter::new(
                    types.iter().map(|t| SortField::new(t.clone())).collect(),
                )?,
                map: HashMap::new(),
            },
        })
    }

    /// Group id of every row of `keys` (NO_GROUP for a NULL key or an unknown key).
    fn lookup(&self, keys: &[ArrayRef], n: usize) -> Result<Vec<u32>> {
        let mut out = vec![NO_GROUP; n];
        match self {
            Groups::Empty => {}
            Groups::All => out.iter_mut().for_each(|g| *g = 0),
            Groups::Int(map) => {
                let values = cast(&keys[0], &DataType::Int64)?;
                let values = values.as_primitive::<Int64Type>();
                for (i, g) in out.iter_mut().enumerate() {
                    if values.is_valid(i)
                        && let Some(&id) = map.get(&values.value(i))
                    {
                        *g = id;
                    }
                }
            }
            Groups::Rows { converter, map } => {
                let rows = converter.convert_columns(keys)?;
                for (i, g) in out.iter_mut().enumerate() {
                    if keys_valid(keys, i)
                        && let Some(&id) = map.get(rows.row(i).as_ref())
                    {
                        *g = id;
                    }
                }
            }
        }
        Ok(out)
    }

    /// Group id of every row of `keys` (NO_GROUP for a NULL key), creating groups when `insert`.
    fn assign(&mut self, keys: &[ArrayRef], n: usize, insert: bool) -> Result<Vec<u32>> {
        let mut out = vec![NO_GROUP; n];
        match self {
            Groups::Empty => {}
            Groups::All => out.iter_mut().for_each(|g| *g = 0),
            Groups::Int(map) => {
                let values = cast(&keys[0], &DataType::Int64)?;
                let values = values.as_primitive::<Int64Type>();
                for (i, g) in out.iter_mut().enumerate() {
                    if values.is_null(i) {
                        continue;
                    }
                    let v = values.value(i);
                    *g = match map.get(&v) {
                        Some(&id) => id,
                        None if insert => {
                            let id = map.len() as u32;
                            map.insert(v, id);
                            id
                        }
                        None => NO_GROUP,
                    };
                }
            }
            Groups::Rows { converter, map } => {
                let rows = converter.convert_columns(keys)?;
                for (i, g) in out.iter_mut().enumerate() {
                    if !keys_valid(keys, i) {
                        continue;
                    }
                    let row = rows.row(i);
                    *g = match map.get(row.as_ref()) {
                        Some(&id) => id,
                        None if insert => {
                            let id = map.len() as u32;
                            map.insert(row.as_ref().into(), id);
                            id
                        }
                        None => NO_GROUP,
                    };
                }
            }
        }
        Ok(out)
    }

    fn len(&self) -> usize {
        match self {
            Groups::Empty => 0,
            Groups::All => 1,
            Groups::Int(m) => m.len(),
            Groups::Rows { map, .. } => map.len(),
        }
    }
}

/// Sorts each group's entries by time, keeping read order among equal times; groups are split
/// between the machine's cores.
fn sort_groups(offsets: &[usize], times: &mut [i64], rows: &mut [u32]) {
    let n_groups = offsets.len() - 1;
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(n_groups.max(1));
    if threads <= 1 || times.len() < 1 << 16 {
        sort_group_range(offsets, 0, n_groups, times, rows);
        return;
    }
    // Cut at group boundaries into `threads` ranges of about equal size.
    let total = times.len();
    let mut cuts = vec![0usize];
    for t in 1..threads {
        let target = total * t / threads;
        let g = offsets.partition_point(|&o| o < target).min(n_groups);
        if g > *cuts.last().unwrap_or(&0) {
            cuts.push(g);
        }
    }
    cuts.push(n_groups);
    std::thread::scope(|scope| {
        let (mut times, mut rows) = (times, rows);
        let mut consumed = 0;
        for w in cuts.windows(2) {
            let (g0, g1) = (w[0], w[1]);
            let len = offsets[g1] - offsets[g0];
            let (t_here, t_rest) = std::mem::take(&mut times).split_at_mut(len);
            let (r_here, r_rest) = std::mem::take(&mut rows).split_at_mut(len);
            times = t_rest;
            rows = r_rest;
            let base = consumed;
            consumed += len;
            scope.spawn(move || {
                let local: Vec<usize> = offsets[g0..=g1].iter().map(|o| o - base).collect();
                sort_group_range(&local, 0, g1 - g0, t_here, r_here);
            });
        }
    });
}

fn sort_group_range(offsets: &[usize], g0: usize, g1: usize, times: &mut [i64], rows: &mut [u32]) {
    let mut pairs: Vec<(i64, u32)> = Vec::new();
    for g in g0..g1 {
        let (lo, hi) = (offsets[g], offsets[g + 1]);
        let t = &times[lo..hi];
        if t.windows(2).all(|w| w[0] <= w[1]) {
            continue;
        }
        pairs.clear();
        pairs.extend(t.iter().copied().zip(rows[lo..hi].iter().copied()));
        pairs.sort_by_key(|p| p.0);
        for (k, (tt, rr)) in pairs.iter().enumerate() {
            times[lo + k] = *tt;
            rows[lo + k] = *rr;
        }
    }
}

/// The built right side.
pub(super) struct RightIndex {
    /// Every right batch, in read order, then one all-NULL row that unmatched left rows point at.
    batches: Vec<RecordBatch>,
    /// `starts[b]` is the global row number of the first row of `batches[b]`.
    starts: Vec<usize>,
    groups: Groups,
    key_types: Vec<DataType>,
    /// Group g's entries are `times[offsets[g]..offsets[g + 1]]` (sorted) and the same range of `rows`
    /// (global row numbers).
    offsets: Vec<usize>,
    times: Vec<i64>,
    rows: Vec<u32>,
}

impl RightIndex {
    /// Builds the index over `batches` (every right row, in read order); `eval` gives a batch's key
    /// columns and time column.
    pub fn build(
        schema: &arrow::datatypes::SchemaRef,
        batches: Vec<RecordBatch>,
        eval: impl Fn(&RecordBatch) -> Result<(Vec<ArrayRef>, ArrayRef)>,
    ) -> Result<Self> {
        let n: usize = batches.iter().map(|b| b.num_rows()).sum();
        if n >= u32::MAX as usize {
            return exec_err!(
                "the right side of an ASOF JOIN has {n} rows; at most {} are supported",
                u32::MAX - 1
            );
        }
        let mut groups: Option<Groups> = None;
        let mut key_types = Vec::new();
        let mut group_of: Vec<u32> = Vec::with_capacity(n);
        let mut raw_times: Vec<i64> = Vec::with_capacity(n);
        let mut starts = Vec::with_capacity(batches.len() + 1);
        let mut start = 0;
        for batch in &batches {
            starts.push(start);
            start += batch.num_rows();
            let (keys, time) = eval(batch)?;
            let g = match &mut groups {
                Some(g) => g,
                None => {
                    key_types = keys.iter().map(|k| k.data_type().clone()).collect();
                    groups.insert(Groups::new(&key_types)?)
                }
            };
            let mut ids = g.assign(&keys, batch.num_rows(), true)?;
            let times = time_values(&time)?;
            for (i, id) in ids.iter_mut().enumerate() {
                if times.is_null(i) {
                    *id = NO_GROUP;
                }
            }
            group_of.extend_from_slice(&ids);
            raw_times.extend_from_slice(times.values());
        }
        let groups = match groups {
            Some(g) => g,
            // No right rows at all: an index that matches nothing.
            None => Groups::Empty,
        };
        let n_groups = groups.len();
        // Stable counting sort by group.
        let mut offsets = vec![0usize; n_groups + 1];
        for &g in &group_of {
            if g != NO_GROUP {
                offsets[g as usize + 1] += 1;
            }
        }
        for g in 0..n_groups {
            offsets[g + 1] += offsets[g];
        }
        let total = offsets[n_groups];
        let mut cursor = offsets.clone();
        let mut entry_times = vec![0i64; total];
        let mut entry_rows = vec![0u32; total];
        for (i, &g) in group_of.iter().enumerate() {
            if g == NO_GROUP {
                continue;
            }
            let at = &mut cursor[g as usize];
            entry_times[*at] = raw_times[i];
            entry_rows[*at] = i as u32;
            *at += 1;
        }
        drop(group_of);
        drop(raw_times);
        sort_groups(&offsets, &mut entry_times, &mut entry_rows);
        // The NULL row that unmatched left rows take their right columns from.
        starts.push(start);
        let mut batches = batches;
        let nulls = schema
            .fields()
            .iter()
            .map(|f| arrow::array::new_null_array(f.data_type(), 1))
            .collect();
        let null_schema = std::sync::Arc::new(arrow::datatypes::Schema::new(
            schema
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>(),
        ));
        batches.push(RecordBatch::try_new(null_schema, nulls)?);
        Ok(Self {
            batches,
            starts,
            groups,
            key_types,
            offsets,
            times: entry_times,
            rows: entry_rows,
        })
    }

    /// For each left row, the global number of its matching right row, or None.
    pub fn probe(
        &self,
        keys: &[ArrayRef],
        time: &ArrayRef,
        op: MatchOp,
    ) -> Result<Vec<Option<u32>>> {
        let n = time.len();
        let keys: Vec<ArrayRef> = if self.key_types.len() == keys.len() {
            keys.iter()
                .zip(&self.key_types)
                .map(|(k, t)| {
                    if k.data_type() == t {
                        Ok(k.clone())
                    } else {
                        cast(k, t)
                    }
                })
                .collect::<std::result::Result<_, _>>()?
        } else {
            keys.to_vec()
        };
        let group_of = self.groups.lookup(&keys, n)?;
        let times = time_values(time)?;
        // Visit the rows in group order: the index is read front to back instead of at random,
        // which keeps its pages and cache lines warm.
        let mut order: Vec<(u32, u32)> = group_of
            .iter()
            .enumerate()
            .filter(|&(i, &g)| g != NO_GROUP && times.is_valid(i))
            .map(|(i, &g)| (g, i as u32))
            .collect();
        order.sort_unstable();
        let mut out = vec![None; n];
        for (g, i) in order {
            let (lo, hi) = (self.offsets[g as usize], self.offsets[g as usize + 1]);
            let slice = &self.times[lo..hi];
            let t = times.value(i as usize);
            let pos = match op {
                MatchOp::AtOrBefore => slice.partition_point(|&x| x <= t),
                MatchOp::StrictlyBefore => slice.partition_point(|&x| x < t),
            };
            out[i as usize] = (pos > 0).then(|| self.rows[lo + pos - 1]);
        }
        Ok(out)
    }

    /// The right columns for `matches` (NULL where there is no match).
    pub fn gather(&self, matches: &[Option<u32>]) -> Result<Vec<ArrayRef>> {
        let null_batch = self.batches.len() - 1;
        let positions: Vec<(usize, usize)> = matches
            .iter()
            .map(|m| match m {
                None => (null_batch, 0),
                Some(row) => {
                    let row = *row as usize;
                    let b = self.starts.partition_point(|&s| s <= row) - 1;
                    (b, row - self.starts[b])
                }
            })
            .collect();
        let n_cols = self.batches[null_batch].num_columns();
        (0..n_cols)
            .map(|c| {
                let arrays: Vec<&dyn Array> =
                    self.batches.iter().map(|b| b.column(c).as_ref()).collect();
                Ok(arrow::compute::interleave(&arrays, &positions)?)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_group_sort_equals_sequential() {
        // Enough entries to take the threaded path; groups of uneven sizes, many ties.
        let mut state = 7u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            state >> 33
        };
        let mut offsets = vec![0usize];
        while *offsets.last().unwrap_or(&0) < 300_000 {
            let size = (next() % 500) as usize;
            offsets.push(offsets.last().unwrap_or(&0) + size);
        }
        let total = *offsets.last().unwrap_or(&0);
        let times: Vec<i64> = (0..total).map(|_| (next() % 50) as i64).collect();
        let rows: Vec<u32> = (0..total as u32).collect();
        let (mut t1, mut r1) = (times.clone(), rows.clone());
        sort_groups(&offsets, &mut t1, &mut r1);
        let (mut t2, mut r2) = (times, rows);
        sort_group_range(&offsets, 0, offsets.len() - 1, &mut t2, &mut r2);
        assert_eq!(t1, t2);
        assert_eq!(r1, r2);
        // Sorted by time within each group, read order kept among ties.
        for g in 0..offsets.len() - 1 {
            let (lo, hi) = (offsets[g], offsets[g + 1]);
            for i in lo + 1..hi {
                assert!((t1[i - 1], r1[i - 1]) < (t1[i], r1[i]));
            }
        }
    }
}
