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

use std::collections::HashMap;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, UInt32Array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type};
use arrow::row::{RowConverter, SortField};
use datafusion::common::{Result, exec_err, plan_err};

use super::MatchOp;

/// Converts a time column to comparable `i64`s (timestamps and dates as their raw values, integers
/// widened). Both sides share one type after coercion, so raw values compare correctly.
pub(super) fn time_values(array: &ArrayRef) -> Result<Int64Array> {
    let as_i64 = match array.data_type() {
        DataType::Timestamp(_, _) | DataType::Date64 | DataType::Int64 => cast(array, &DataType::Int64)?,
        DataType::Date32
        | DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32 => cast(array, &DataType::Int64)?,
        DataType::UInt64 => {
            // Values above i64::MAX cannot be compared as i64: refuse them rather than wrap.
            let checked = arrow::compute::kernels::cast::cast_with_options(
                array,
                &DataType::Int64,
                &arrow::compute::CastOptions {
                    safe: false,
                    ..Default::default()
                },
            )?;
            checked
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
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 | DataType::UInt8 | DataType::UInt16 | DataType::UInt32
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
                converter: RowConverter::new(types.iter().map(|t| SortField::new(t.clone())).collect())?,
                map: HashMap::new(),
            },
        })
    }

    /// Group id of every row of `keys` (NO_GROUP for a NULL key or an unknown key).
    fn lookup(&self, keys: &[ArrayRef], n: usize) -> Result<Vec<u32>> {
        let mut out = vec![NO_GROUP; n];
        match self {
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
            Groups::All => 1,
            Groups::Int(m) => m.len(),
            Groups::Rows { map, .. } => map.len(),
        }
    }
}

/// The built right side.
pub(super) struct RightIndex {
    /// Every right row, in read order.
    pub batch: RecordBatch,
    groups: Groups,
    key_types: Vec<DataType>,
    /// Group g's entries are `entries[offsets[g]..offsets[g + 1]]`, sorted by time.
    offsets: Vec<usize>,
    times: Vec<i64>,
    rows: Vec<u32>,
}

impl RightIndex {
    /// Builds the index over `batch` (all right rows in read order), given its evaluated key
    /// columns and time column.
    pub fn build(batch: RecordBatch, keys: Vec<ArrayRef>, time: &ArrayRef) -> Result<Self> {
        let n = batch.num_rows();
        if n > u32::MAX as usize - 1 {
            return exec_err!("the right side of an ASOF JOIN has {n} rows; at most {} are supported", u32::MAX - 1);
        }
        let key_types: Vec<DataType> = keys.iter().map(|k| k.data_type().clone()).collect();
        let mut groups = Groups::new(&key_types)?;
        let mut group_of = groups.assign(&keys, n, true)?;
        let times = time_values(time)?;
        for (i, g) in group_of.iter_mut().enumerate() {
            if times.is_null(i) {
                *g = NO_GROUP;
            }
        }
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
        let raw_times = times.values();
        for (i, &g) in group_of.iter().enumerate() {
            if g == NO_GROUP {
                continue;
            }
            let at = &mut cursor[g as usize];
            entry_times[*at] = raw_times[i];
            entry_rows[*at] = i as u32;
            *at += 1;
        }
        // Sort each group by time, keeping read order among equal times.
        let mut pairs: Vec<(i64, u32)> = Vec::new();
        for g in 0..n_groups {
            let (lo, hi) = (offsets[g], offsets[g + 1]);
            let t = &entry_times[lo..hi];
            if t.windows(2).all(|w| w[0] <= w[1]) {
                continue;
            }
            pairs.clear();
            pairs.extend(t.iter().copied().zip(entry_rows[lo..hi].iter().copied()));
            pairs.sort_by_key(|p| p.0);
            for (k, (tt, rr)) in pairs.iter().enumerate() {
                entry_times[lo + k] = *tt;
                entry_rows[lo + k] = *rr;
            }
        }
        Ok(Self {
            batch,
            groups,
            key_types,
            offsets,
            times: entry_times,
            rows: entry_rows,
        })
    }

    /// For each left row, the index of its matching right row, or NULL.
    pub fn probe(&self, keys: &[ArrayRef], time: &ArrayRef, op: MatchOp) -> Result<UInt32Array> {
        let n = time.len();
        let keys: Vec<ArrayRef> = keys
            .iter()
            .zip(&self.key_types)
            .map(|(k, t)| if k.data_type() == t { Ok(k.clone()) } else { cast(k, t) })
            .collect::<std::result::Result<_, _>>()?;
        let group_of = self.groups.lookup(&keys, n)?;
        let times = time_values(time)?;
        let mut out = Vec::with_capacity(n);
        for (i, &g) in group_of.iter().enumerate() {
            if g == NO_GROUP || times.is_null(i) {
                out.push(None);
                continue;
            }
            let (lo, hi) = (self.offsets[g as usize], self.offsets[g as usize + 1]);
            let slice = &self.times[lo..hi];
            let t = times.value(i);
            let pos = match op {
                MatchOp::AtOrBefore => slice.partition_point(|&x| x <= t),
                MatchOp::StrictlyBefore => slice.partition_point(|&x| x < t),
            };
            out.push((pos > 0).then(|| self.rows[lo + pos - 1]));
        }
        Ok(UInt32Array::from(out))
    }
}
