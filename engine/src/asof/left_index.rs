//! [`LeftIndex`]: the left side of an `ASOF JOIN` grouped by key and sorted by time, which every
//! right row is then located in.
//!
//! Build: the left rows are numbered in read order (partition by partition, row by row); each row
//! gets a group id from its key (rows with a NULL key or time are left out: they never match). One
//! integer key whose values are dense (entity ids usually are) maps to its group by subtraction, any
//! other key by hash. A counting sort lays the rows out group by group, each group sorted by time.
//! Every position of that layout is a *slot*.
//!
//! Locate: a right row with key `k` and time `t` belongs to the first slot of `k`'s group whose left
//! time is at or after `t` (strictly after for `>`): that left row and every later one of the group
//! may take it, no earlier one may. Slots later in a group only ever hold later right times, so a
//! left row's match is the best right row of the last non-empty slot at or before its own
//! ([`LeftIndex::resolve`]).

use arrow::array::{Array, ArrayRef, AsArray, Int64Array};
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
        DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 | DataType::UInt64
    ) || is_int_key(t)
}

/// No group, no slot.
pub(super) const NONE: u32 = u32::MAX;

/// How keys map to group ids.
enum Groups {
    /// No `ON` keys: every row is in group 0.
    All,
    /// One integer key with dense values: the group id is `key - min`, for `key - min < len`.
    Dense { min: i64, len: u64 },
    /// One integer key with sparse values, hashed as `i64`.
    Int(HashMap<i64, u32>),
    /// Any other keys, hashed in Arrow's row format.
    Rows {
        converter: RowConverter,
        map: HashMap<Box<[u8]>, u32>,
    },
}

/// Integer types whose every value fits an `i64` (`UInt64` does not).
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

/// One integer key column as `i64`s.
fn int_values(keys: &[ArrayRef]) -> Result<Int64Array> {
    Ok(cast(&keys[0], &DataType::Int64)?
        .as_primitive::<Int64Type>()
        .clone())
}

/// Rows whose keys are all non-null.
fn keys_valid(keys: &[ArrayRef], i: usize) -> bool {
    keys.iter().all(|k| k.is_valid(i))
}

impl Groups {
    /// Chooses the mapping for the left keys (one entry per left batch) and gives every left row its
    /// group id (`NONE` for a NULL key). Returns the mapping, the group count and the ids.
    fn build(
        key_types: &[DataType],
        keys: &[Vec<ArrayRef>],
        rows: usize,
    ) -> Result<(Self, usize, Vec<u32>)> {
        match key_types {
            [] => {
                let ids = vec![0; rows];
                Ok((Groups::All, 1, ids))
            }
            [t] if is_int_key(t) => {
                let values = keys
                    .iter()
                    .map(|k| int_values(k))
                    .collect::<Result<Vec<_>>>()?;
                let min = values.iter().filter_map(arrow::compute::min).min();
                let max = values.iter().filter_map(arrow::compute::max).max();
                let dense = match (min, max) {
                    (Some(min), Some(max)) => {
                        let len = (max as i128 - min as i128 + 1) as u128;
                        (len <= 4 * rows as u128 + 1024 && len < NONE as u128)
                            .then_some((min, len as u64))
                    }
                    _ => None,
                };
                let mut ids = Vec::with_capacity(rows);
                if let Some((min, len)) = dense {
                    for v in &values {
                        ids.extend(v.iter().map(|k| match k {
                            Some(k) => k.wrapping_sub(min) as u32,
                            None => NONE,
                        }));
                    }
                    return Ok((Groups::Dense { min, len }, len as usize, ids));
                }
                let mut map: HashMap<i64, u32> = HashMap::new();
                for v in &values {
                    ids.extend(v.iter().map(|k| match k {
                        Some(k) => {
                            let next = map.len() as u32;
                            *map.entry(k).or_insert(next)
                        }
                        None => NONE,
                    }));
                }
                let n = map.len();
                Ok((Groups::Int(map), n, ids))
            }
            types => {
                let converter =
                    RowConverter::new(types.iter().map(|t| SortField::new(t.clone())).collect())?;
                let mut map: HashMap<Box<[u8]>, u32> = HashMap::new();
                let mut ids = Vec::with_capacity(rows);
                for batch_keys in keys {
                    let converted = converter.convert_columns(batch_keys)?;
                    for i in 0..converted.num_rows() {
                        if !keys_valid(batch_keys, i) {
                            ids.push(NONE);
                            continue;
                        }
                        let row = converted.row(i);
                        let id = match map.get(row.as_ref()) {
                            Some(&id) => id,
                            None => {
                                let id = map.len() as u32;
                                map.insert(row.as_ref().into(), id);
                                id
                            }
                        };
                        ids.push(id);
                    }
                }
                let n = map.len();
                Ok((Groups::Rows { converter, map }, n, ids))
            }
        }
    }

    /// Group id of every row of `keys` (`NONE` for a NULL key or a key the left side lacks).
    fn lookup(&self, keys: &[ArrayRef], n: usize) -> Result<Vec<u32>> {
        let mut out = vec![NONE; n];
        match self {
            Groups::All => out.iter_mut().for_each(|g| *g = 0),
            Groups::Dense { min, len } => {
                let values = int_values(keys)?;
                for (g, k) in out.iter_mut().zip(values.iter()) {
                    if let Some(k) = k {
                        let id = k.wrapping_sub(*min) as u64;
                        if id < *len {
                            *g = id as u32;
                        }
                    }
                }
            }
            Groups::Int(map) => {
                let values = int_values(keys)?;
                for (g, k) in out.iter_mut().zip(values.iter()) {
                    if let Some(id) = k.and_then(|k| map.get(&k)) {
                        *g = *id;
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
}

/// The built left side; see the module docs.
pub(super) struct LeftIndex {
    groups: Groups,
    key_types: Vec<DataType>,
    /// Group g's slots are `offsets[g]..offsets[g + 1]`.
    offsets: Vec<u32>,
    /// Per slot, its left row's time (ascending within a group) and its left row's read-order number.
    times: Vec<i64>,
    rows: Vec<u32>,
    /// Number of left rows, matched or not.
    left_rows: usize,
}

impl LeftIndex {
    /// Indexes the left rows (`batches`, in read order); `eval` gives a batch's key columns and time
    /// column.
    pub fn build(
        batches: &[arrow::array::RecordBatch],
        eval: impl Fn(&arrow::array::RecordBatch) -> Result<(Vec<ArrayRef>, ArrayRef)>,
    ) -> Result<Self> {
        let left_rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        if left_rows >= NONE as usize {
            return exec_err!(
                "the left side of an ASOF JOIN has {left_rows} rows; at most {} are supported",
                NONE - 1
            );
        }
        let mut keys = Vec::with_capacity(batches.len());
        let mut raw_times = Vec::with_capacity(left_rows);
        let mut time_valid = Vec::with_capacity(left_rows);
        for batch in batches {
            let (k, t) = eval(batch)?;
            let t = time_values(&t)?;
            raw_times.extend_from_slice(t.values());
            time_valid.extend((0..t.len()).map(|i| t.is_valid(i)));
            keys.push(k);
        }
        let key_types: Vec<DataType> = match keys.first() {
            Some(k) => k.iter().map(|a| a.data_type().clone()).collect(),
            None => Vec::new(),
        };
        let (groups, n_groups, mut group_of) = if left_rows == 0 {
            (Groups::Int(HashMap::new()), 0, Vec::new())
        } else {
            Groups::build(&key_types, &keys, left_rows)?
        };
        drop(keys);
        for (g, valid) in group_of.iter_mut().zip(&time_valid) {
            if !valid {
                *g = NONE;
            }
        }
        // Counting sort by group, then each group by (time, row).
        let mut offsets = vec![0u32; n_groups + 1];
        for &g in &group_of {
            if g != NONE {
                offsets[g as usize + 1] += 1;
            }
        }
        for g in 0..n_groups {
            offsets[g + 1] += offsets[g];
        }
        let slots = offsets[n_groups] as usize;
        let mut cursor = offsets.clone();
        let mut entries = vec![(0i64, 0u32); slots];
        for (row, &g) in group_of.iter().enumerate() {
            if g == NONE {
                continue;
            }
            let at = &mut cursor[g as usize];
            entries[*at as usize] = (raw_times[row], row as u32);
            *at += 1;
        }
        drop(cursor);
        drop(group_of);
        drop(raw_times);
        for w in offsets.windows(2) {
            let group = &mut entries[w[0] as usize..w[1] as usize];
            if !group.windows(2).all(|p| p[0] <= p[1]) {
                group.sort_unstable();
            }
        }
        let (times, rows) = entries.into_iter().unzip();
        Ok(Self {
            groups,
            key_types,
            offsets,
            times,
            rows,
            left_rows,
        })
    }

    /// Number of slots (left rows with a key and a time).
    pub fn slots(&self) -> usize {
        self.times.len()
    }

    /// The group of every right row (`NONE` when its key is NULL or no left row has it).
    pub fn groups(&self, keys: &[ArrayRef], n: usize) -> Result<Vec<u32>> {
        if self.slots() == 0 {
            return Ok(vec![NONE; n]);
        }
        let keys: Vec<ArrayRef> = keys
            .iter()
            .zip(&self.key_types)
            .map(|(k, t)| {
                if k.data_type() == t {
                    Ok(k.clone())
                } else {
                    cast(k, t)
                }
            })
            .collect::<std::result::Result<_, _>>()?;
        self.groups.lookup(&keys, n)
    }

    /// The slot of a right row of group `g` at time `t` (`NONE` when no left row may take it).
    #[inline]
    pub fn slot(&self, g: u32, t: i64, op: MatchOp) -> u32 {
        let (lo, hi) = (
            self.offsets[g as usize] as usize,
            self.offsets[g as usize + 1] as usize,
        );
        let group = &self.times[lo..hi];
        let pos = match op {
            MatchOp::AtOrBefore => group.partition_point(|&x| x < t),
            MatchOp::StrictlyBefore => group.partition_point(|&x| x <= t),
        };
        if pos < group.len() {
            (lo + pos) as u32
        } else {
            NONE
        }
    }

    /// Right shift from a group id to its *bucket*: a run of groups whose slots (and their part of
    /// the index) fit in a core's cache, so rows handled bucket by bucket stay in cache.
    pub fn bucket_shift(&self) -> u32 {
        const SLOTS_PER_BUCKET: usize = 1 << 14;
        let buckets = self.slots().div_ceil(SLOTS_PER_BUCKET).max(1);
        (self
            .group_count()
            .div_ceil(buckets)
            .max(1)
            .next_power_of_two())
        .trailing_zeros()
    }

    /// Number of buckets.
    pub fn buckets(&self) -> usize {
        self.group_count().div_ceil(1 << self.bucket_shift())
    }

    /// The first slot of bucket `b` (the slot count for `b == buckets()`).
    pub fn bucket_start(&self, b: usize) -> usize {
        let g = (b << self.bucket_shift()).min(self.group_count());
        self.offsets[g] as usize
    }

    fn group_count(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Given the best right row of every slot (`empty` where none), the right row every left row
    /// takes, by left read order: the best of the last non-empty slot at or before its own, within
    /// its group.
    pub fn resolve(&self, best: &[u64], empty: u64) -> Vec<u64> {
        let mut out = vec![empty; self.left_rows];
        for w in self.offsets.windows(2) {
            let mut carry = empty;
            for slot in w[0] as usize..w[1] as usize {
                if best[slot] != empty {
                    carry = best[slot];
                }
                out[self.rows[slot] as usize] = carry;
            }
        }
        out
    }
}
