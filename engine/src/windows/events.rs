//! [`Events`]: a view's events grouped by key and sorted by time once, with what each aggregate
//! needs to answer "its value over `(t - window, t]`" for many probe times `t` in one sweep.
//!
//! - count, sum, avg, var_samp, stddev_samp: prefix sums, restarted at each key (a window's value
//!   is a difference of two; variance sums are taken around the key's first value, so large
//!   means do not cancel the digits that matter);
//! - min, max: a monotonic deque per aggregate, swept along the key's probes in time order;
//! - count(DISTINCT), approx_distinct: a sliding multiset of the values' row-format bytes;
//! - first_value, last_value, last_k: the next / previous non-NULL event of each position.
//!
//! The window's bounds are found by moving two indexes along the key's events as the probes'
//! times grow. Keys are split into ranges evaluated on separate threads.

use std::collections::VecDeque;

use hashbrown::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Float64Array, Int64Array, ListArray, RecordBatch, UInt32Array, UInt64Array,
    make_comparator,
};
use arrow::buffer::OffsetBuffer;
use arrow::compute::SortOptions;
use arrow::datatypes::{DataType, Field, Int64Type, TimeUnit};
use arrow::row::{OwnedRow, RowConverter, Rows, SortField};

use super::spec::{Aggregate, Func};
use crate::{Error, Result};

/// Times in microseconds since the epoch (timestamps of any unit and zone, dates); other types
/// are refused.
pub fn times_us(array: &ArrayRef) -> Result<Int64Array> {
    let scale: fn(i64) -> i64 = match array.data_type() {
        DataType::Timestamp(TimeUnit::Second, _) => |v| v.saturating_mul(1_000_000),
        DataType::Timestamp(TimeUnit::Millisecond, _) => |v| v.saturating_mul(1_000),
        DataType::Timestamp(TimeUnit::Microsecond, _) => |v| v,
        DataType::Timestamp(TimeUnit::Nanosecond, _) => |v| v.div_euclid(1_000),
        DataType::Date32 => |v| v.saturating_mul(86_400_000_000),
        DataType::Date64 => |v| v.saturating_mul(1_000),
        DataType::Dictionary(_, value) => {
            let plain = arrow::compute::cast(array, value)?;
            return times_us(&plain);
        }
        other => {
            return Err(Error::InvalidInput(format!(
                "aggregate features need a timestamp or date event time; found {other}"
            )));
        }
    };
    let raw = arrow::compute::cast(array, &DataType::Int64)?;
    let raw = raw
        .as_any()
        .downcast_ref::<Int64Array>()
        .ok_or_else(|| Error::InvalidInput("event times did not convert to integers".into()))?;
    Ok(raw.unary::<_, Int64Type>(scale))
}

/// The value of type `t` (a timestamp of any unit and zone, or a date) at `us` microseconds
/// since the epoch, rounded down.
pub fn time_literal(us: i64, t: &DataType) -> Result<datafusion::common::ScalarValue> {
    use datafusion::common::ScalarValue as V;
    Ok(match t {
        DataType::Timestamp(TimeUnit::Second, tz) => {
            V::TimestampSecond(Some(us.div_euclid(1_000_000)), tz.clone())
        }
        DataType::Timestamp(TimeUnit::Millisecond, tz) => {
            V::TimestampMillisecond(Some(us.div_euclid(1_000)), tz.clone())
        }
        DataType::Timestamp(TimeUnit::Microsecond, tz) => {
            V::TimestampMicrosecond(Some(us), tz.clone())
        }
        DataType::Timestamp(TimeUnit::Nanosecond, tz) => {
            V::TimestampNanosecond(Some(us.saturating_mul(1_000)), tz.clone())
        }
        DataType::Date32 => V::Date32(i32::try_from(us.div_euclid(86_400_000_000)).ok()),
        DataType::Date64 => V::Date64(Some(us.div_euclid(1_000))),
        DataType::Dictionary(_, value) => return time_literal(us, value),
        other => {
            return Err(Error::InvalidInput(format!(
                "aggregate features need a timestamp or date event time; found {other}"
            )));
        }
    })
}

/// Each key's group number.
enum KeyMap {
    /// One integer key column, by value.
    Int(HashMap<i64, u32>),
    /// Any other keys, by their bytes in Arrow's row format.
    Rows {
        converter: RowConverter,
        index: HashMap<OwnedRow, u32>,
    },
}

/// One integer key column as `i64`s, when the keys are that.
fn integer_key(columns: &[ArrayRef]) -> Result<Option<Int64Array>> {
    match columns {
        [c] if c.data_type().is_integer() => {
            let cast = arrow::compute::cast(c, &DataType::Int64)?;
            Ok(cast.as_any().downcast_ref::<Int64Array>().cloned())
        }
        _ => Ok(None),
    }
}

impl KeyMap {
    /// The map of `columns`' keys (numbered in order of first appearance) and each row's group
    /// (`u32::MAX` for rows that are not `valid`).
    fn build(columns: &[ArrayRef], valid: impl Fn(usize) -> bool) -> Result<(Self, Vec<u32>)> {
        let n = columns.first().map_or(0, |c| c.len());
        let mut group = vec![u32::MAX; n];
        if let Some(ints) = integer_key(columns)? {
            let mut map: HashMap<i64, u32> = HashMap::new();
            let values = ints.values();
            for (i, slot) in group.iter_mut().enumerate() {
                if valid(i) {
                    let next = map.len() as u32;
                    *slot = *map.entry(values[i]).or_insert(next);
                }
            }
            return Ok((KeyMap::Int(map), group));
        }
        let converter = RowConverter::new(
            columns
                .iter()
                .map(|c| SortField::new(c.data_type().clone()))
                .collect(),
        )?;
        let rows = converter.convert_columns(columns)?;
        let mut index: HashMap<OwnedRow, u32> = HashMap::new();
        {
            let mut seen: HashMap<arrow::row::Row<'_>, u32> = HashMap::new();
            for (i, slot) in group.iter_mut().enumerate() {
                if valid(i) {
                    let next = seen.len() as u32;
                    *slot = *seen.entry(rows.row(i)).or_insert(next);
                }
            }
            for (row, g) in seen {
                index.insert(row.owned(), g);
            }
        }
        Ok((KeyMap::Rows { converter, index }, group))
    }

    fn len(&self) -> usize {
        match self {
            KeyMap::Int(map) => map.len(),
            KeyMap::Rows { index, .. } => index.len(),
        }
    }

    /// The group of each row of `columns` (of the keys' types).
    fn find(&self, columns: &[ArrayRef]) -> Result<Vec<Option<u32>>> {
        let n = columns.first().map_or(0, |c| c.len());
        let valid = |i: usize| columns.iter().all(|c| c.is_valid(i));
        match self {
            KeyMap::Int(map) => {
                let ints = integer_key(columns)?
                    .ok_or_else(|| Error::InvalidInput("an integer key did not convert".into()))?;
                Ok((0..n)
                    .map(|i| {
                        ints.is_valid(i)
                            .then(|| map.get(&ints.value(i)).copied())
                            .flatten()
                    })
                    .collect())
            }
            KeyMap::Rows { converter, index } => {
                let rows = converter.convert_columns(columns)?;
                Ok((0..n)
                    .map(|i| {
                        valid(i)
                            .then(|| index.get(&rows.row(i).owned()).copied())
                            .flatten()
                    })
                    .collect())
            }
        }
    }
}

/// One aggregate's input, sorted like the events, and what answers it.
struct Prepared {
    func: Func,
    window_us: i64,
    /// The output type.
    output: DataType,
    /// The input, in event order.
    values: ArrayRef,
    /// Non-NULL inputs before each slot (see [`Events::slot`]).
    counts: Vec<u32>,
    /// Prefix sums (restarted per key) of the input (f64), and of squares, around `shift`.
    sums: Vec<f64>,
    squares: Vec<f64>,
    /// Per key: the value sums are taken around (its first non-NULL input).
    shift: Vec<f64>,
    /// Wrapping prefix sums of an integer input (exact for any window sum that fits).
    int_sums: Vec<i64>,
    /// `next_valid[i]`: the first non-NULL input at or after position `i` (`n` when none).
    next_valid: Vec<u32>,
    /// `prev_valid[i]`: the last non-NULL input before position `i`, plus one (0 when none).
    prev_valid: Vec<u32>,
    /// The inputs in Arrow's row format (distinct counts).
    rows: Option<Rows>,
}

/// A view's events by key, sorted by time; see the module docs.
pub struct Events {
    /// Event times, key by key, each key's in time order (ties in input order).
    times: Vec<i64>,
    /// Key `g`'s events are `starts[g]..starts[g + 1]`.
    starts: Vec<usize>,
    /// One row per key: its key columns.
    keys: Vec<ArrayRef>,
    index: KeyMap,
    aggregates: Vec<(Aggregate, Prepared)>,
    /// The events as given, sorted (key columns, event time, inputs), to persist them; only
    /// the inputs when they are not to be persisted.
    batch: RecordBatch,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("events", &self.times.len())
            .field("keys", &self.key_count())
            .finish_non_exhaustive()
    }
}

/// One output of an evaluation, by probe.
enum Out {
    Int(Vec<Option<i64>>),
    UInt(Vec<Option<u64>>),
    Float(Vec<Option<f64>>),
    /// The event position whose input is the value.
    Position(Vec<Option<u32>>),
    /// Event positions, newest first (last_k).
    Positions(Vec<Option<Vec<u32>>>),
}

impl Events {
    /// Groups `batch`'s events by the key columns `keys` and sorts each key's by `time`; events
    /// with a NULL key or time are left out. Each aggregate's input is the column named after it.
    /// With `persist`, [`Events::batch`] holds every column of `batch`, sorted; otherwise only
    /// the inputs.
    pub fn new(
        batch: RecordBatch,
        keys: &[String],
        time: &str,
        aggregates: &[Aggregate],
        persist: bool,
    ) -> Result<Self> {
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .cloned()
                .ok_or_else(|| Error::InvalidInput(format!("the events have no column `{name}`")))
        };
        let key_columns: Vec<ArrayRef> = keys.iter().map(|k| column(k)).collect::<Result<_>>()?;
        let key_columns: Vec<ArrayRef> = key_columns
            .iter()
            .map(|c| match c.data_type() {
                DataType::Dictionary(_, value) => Ok(arrow::compute::cast(c, value)?),
                _ => Ok(Arc::clone(c)),
            })
            .collect::<Result<_>>()?;
        let times = times_us(&column(time)?)?;
        let valid = |i: usize| times.is_valid(i) && key_columns.iter().all(|c| c.is_valid(i));
        let (index, group) = KeyMap::build(&key_columns, valid)?;
        let groups = index.len();
        // Counting sort by group (stable), carrying each event's time, then each group's
        // (time, position) pairs sorted in place: ties keep the input order.
        let mut starts = vec![0usize; groups + 1];
        for &g in &group {
            if g != u32::MAX {
                starts[g as usize + 1] += 1;
            }
        }
        for g in 0..groups {
            starts[g + 1] += starts[g];
        }
        let mut next = starts.clone();
        let raw = times.values();
        let mut pairs = vec![(0i64, 0u32); starts[groups]];
        for (i, &g) in group.iter().enumerate() {
            if g != u32::MAX {
                pairs[next[g as usize]] = (raw[i], i as u32);
                next[g as usize] += 1;
            }
        }
        drop(group);
        for g in 0..groups {
            pairs[starts[g]..starts[g + 1]].sort_unstable();
        }
        let times: Vec<i64> = pairs.iter().map(|p| p.0).collect();
        let order: Vec<u32> = pairs.into_iter().map(|p| p.1).collect();
        let take = UInt32Array::from(order);
        let kept = if persist {
            batch.clone()
        } else {
            let mut names: Vec<&str> = aggregates.iter().map(|a| a.name.as_str()).collect();
            names.dedup();
            let indices = names
                .iter()
                .map(|n| batch.schema().index_of(n))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            batch.project(&indices)?
        };
        // Each column gathered into event order on a thread of its own.
        let columns = on_threads(kept.columns(), "sorting the events", |c| {
            Ok(arrow::compute::take(c.as_ref(), &take, None)?)
        })?;
        let sorted = RecordBatch::try_new_with_options(
            kept.schema(),
            columns,
            &arrow::array::RecordBatchOptions::new().with_row_count(Some(take.len())),
        )?;
        drop(kept);
        drop(batch);
        let firsts = UInt32Array::from(
            starts[..groups]
                .iter()
                .map(|&s| take.value(s))
                .collect::<Vec<u32>>(),
        );
        let keys = key_columns
            .iter()
            .map(|c| Ok(arrow::compute::take(c.as_ref(), &firsts, None)?))
            .collect::<Result<Vec<_>>>()?;
        let mut events = Self {
            times,
            starts,
            keys,
            index,
            aggregates: Vec::new(),
            batch: sorted,
        };
        // Each aggregate's prefix sums and indexes, on a thread each.
        let prepared = on_threads(aggregates, "preparing window aggregates", |a| {
            let values = events
                .batch
                .column_by_name(&a.name)
                .cloned()
                .ok_or_else(|| {
                    Error::InvalidInput(format!("the events have no input `{}`", a.name))
                })?;
            events.prepare(a, values)
        })?;
        events.aggregates = aggregates.iter().cloned().zip(prepared).collect();
        Ok(events)
    }

    /// The number of keys.
    pub fn key_count(&self) -> usize {
        self.starts.len() - 1
    }

    /// The number of events.
    pub fn len(&self) -> usize {
        self.times.len()
    }

    /// Whether there are no events.
    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }

    /// One row per key: the key columns.
    pub fn keys(&self) -> &[ArrayRef] {
        &self.keys
    }

    /// The sorted events (key columns, time, inputs).
    pub fn batch(&self) -> &RecordBatch {
        &self.batch
    }

    /// The aggregates, in order.
    pub fn aggregates(&self) -> impl Iterator<Item = &Aggregate> {
        self.aggregates.iter().map(|(a, _)| a)
    }

    /// The output type of each aggregate.
    pub fn output_types(&self) -> Vec<DataType> {
        self.aggregates
            .iter()
            .map(|(_, p)| p.output.clone())
            .collect()
    }

    /// The newest event time of key `g`.
    pub fn latest_time(&self, g: usize) -> Option<i64> {
        let end = *self.starts.get(g + 1)?;
        (end > self.starts[g]).then(|| self.times[end - 1])
    }

    /// Approximate bytes held.
    pub fn memory_size(&self) -> usize {
        let prepared: usize = self
            .aggregates
            .iter()
            .map(|(_, p)| {
                p.counts.len() * 4
                    + (p.sums.len() + p.squares.len() + p.shift.len()) * 8
                    + p.int_sums.len() * 8
                    + (p.next_valid.len() + p.prev_valid.len()) * 4
                    + p.rows.as_ref().map_or(0, Rows::size)
            })
            .sum();
        self.batch.get_array_memory_size()
            + self.times.len() * 8
            + self.starts.len() * 8
            + self.index.len() * 48
            + prepared
    }

    /// The key (group) of each row of `key_columns` (the key columns, any types that cast to
    /// the events' key types), `None` when the key has no events.
    pub fn find(&self, key_columns: &[ArrayRef]) -> Result<Vec<Option<u32>>> {
        let cast = key_columns
            .iter()
            .zip(&self.keys)
            .map(|(c, k)| {
                if c.data_type() == k.data_type() {
                    Ok(Arc::clone(c))
                } else {
                    Ok(arrow::compute::cast(c, k.data_type())?)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        self.index.find(&cast)
    }

    /// Slot of position `i` of key `g` in the prefix arrays: each key has one more slot than
    /// events, so that its prefix restarts at zero.
    fn slot(&self, g: usize, i: usize) -> usize {
        i + g
    }

    fn prepare(&self, a: &Aggregate, values: ArrayRef) -> Result<Prepared> {
        let n = self.times.len();
        let groups = self.key_count();
        let output = a.func.output_type(&a.name, values.data_type())?;
        let mut p = Prepared {
            func: a.func,
            window_us: a.window_us,
            output,
            values: Arc::clone(&values),
            counts: Vec::new(),
            sums: Vec::new(),
            squares: Vec::new(),
            shift: Vec::new(),
            int_sums: Vec::new(),
            next_valid: Vec::new(),
            prev_valid: Vec::new(),
            rows: None,
        };
        let valid = |i: usize| values.is_valid(i);
        // Without NULLs, a window's count is its length.
        if values.null_count() > 0
            && matches!(
                a.func,
                Func::Count | Func::Sum | Func::Avg | Func::StddevSamp | Func::VarSamp
            )
        {
            let mut counts = vec![0u32; n + groups];
            for g in 0..groups {
                let mut c = 0u32;
                for i in self.starts[g]..self.starts[g + 1] {
                    counts[self.slot(g, i)] = c;
                    c += u32::from(valid(i));
                }
                counts[self.slot(g, self.starts[g + 1])] = c;
            }
            p.counts = counts;
        }
        if a.func == Func::Sum && values.data_type().is_integer() {
            let ints = arrow::compute::cast(&values, &DataType::Int64)?;
            let ints = ints
                .as_any()
                .downcast_ref::<Int64Array>()
                .ok_or_else(|| Error::InvalidInput("integer input did not cast".into()))?;
            let mut sums = vec![0i64; n + 1];
            for i in 0..n {
                let v = if ints.is_valid(i) { ints.value(i) } else { 0 };
                sums[i + 1] = sums[i].wrapping_add(v);
            }
            p.int_sums = sums;
        } else if matches!(
            a.func,
            Func::Sum | Func::Avg | Func::StddevSamp | Func::VarSamp
        ) {
            let floats = arrow::compute::cast(&values, &DataType::Float64)?;
            let floats = floats
                .as_any()
                .downcast_ref::<Float64Array>()
                .ok_or_else(|| Error::InvalidInput("numeric input did not cast".into()))?;
            let squares_too = matches!(a.func, Func::StddevSamp | Func::VarSamp);
            let mut sums = vec![0f64; n + groups];
            let mut squares = vec![0f64; if squares_too { n + groups } else { 0 }];
            let mut shift = vec![0f64; groups];
            for (g, around) in shift.iter_mut().enumerate() {
                let (start, end) = (self.starts[g], self.starts[g + 1]);
                let c = if squares_too {
                    (start..end)
                        .find(|&i| floats.is_valid(i))
                        .map_or(0.0, |i| floats.value(i))
                } else {
                    0.0
                };
                *around = c;
                let (mut s, mut q) = (0f64, 0f64);
                for i in start..end {
                    let slot = self.slot(g, i);
                    sums[slot] = s;
                    if squares_too {
                        squares[slot] = q;
                    }
                    if floats.is_valid(i) {
                        let x = floats.value(i) - c;
                        s += x;
                        q += x * x;
                    }
                }
                let slot = self.slot(g, end);
                sums[slot] = s;
                if squares_too {
                    squares[slot] = q;
                }
            }
            p.sums = sums;
            p.squares = squares;
            p.shift = shift;
        }
        if matches!(a.func, Func::FirstValue | Func::LastValue | Func::LastK(_)) {
            let mut next_valid = vec![n as u32; n + 1];
            for i in (0..n).rev() {
                next_valid[i] = if valid(i) {
                    i as u32
                } else {
                    next_valid[i + 1]
                };
            }
            let mut prev_valid = vec![0u32; n + 1];
            for i in 0..n {
                prev_valid[i + 1] = if valid(i) {
                    i as u32 + 1
                } else {
                    prev_valid[i]
                };
            }
            p.next_valid = next_valid;
            p.prev_valid = prev_valid;
        }
        if matches!(a.func, Func::CountDistinct | Func::ApproxDistinct) {
            let converter = RowConverter::new(vec![SortField::new(values.data_type().clone())])?;
            p.rows = Some(converter.convert_columns(&[Arc::clone(&values)])?);
        }
        Ok(p)
    }

    /// Every aggregate (or those in `which`, by index) at each probe `(key, time)`: one array
    /// per aggregate, in probe order. A probe whose key has no events, or without a time, gets
    /// NULL (0 for counts of a known time). Keys are split over `threads` threads.
    pub fn evaluate(
        &self,
        probes: &[(Option<u32>, Option<i64>)],
        which: &[usize],
        threads: usize,
    ) -> Result<Vec<ArrayRef>> {
        let mut order: Vec<(u32, i64, u32)> = probes
            .iter()
            .enumerate()
            .filter_map(|(i, (g, t))| Some(((*g)?, (*t)?, i as u32)))
            .collect();
        order.sort_unstable();
        // Chunks of about equal size that never split a key.
        let threads = threads.clamp(1, 16);
        let target = order.len().div_ceil(threads).max(1);
        let mut chunks: Vec<&[(u32, i64, u32)]> = Vec::new();
        let mut rest = &order[..];
        while !rest.is_empty() {
            let mut cut = target.min(rest.len());
            while cut < rest.len() && rest[cut].0 == rest[cut - 1].0 {
                cut += 1;
            }
            let (head, tail) = rest.split_at(cut);
            chunks.push(head);
            rest = tail;
        }
        let parts = on_threads(&chunks, "evaluating window aggregates", |c| {
            Ok(self.sweep(c, which))
        })?;
        let n = probes.len();
        let mut outputs = Vec::with_capacity(which.len());
        for (w, &a) in which.iter().enumerate() {
            let p = &self.aggregates[a].1;
            // Probes without events: 0 for counts of a known time, else NULL.
            let mut out = p.empty_out(n);
            let counts_zero = |i: usize| (p.func.is_count() && probes[i].1.is_some()).then_some(0);
            match &mut out {
                Out::Int(o) => o.extend((0..n).map(counts_zero)),
                Out::UInt(o) => o.extend((0..n).map(|i| counts_zero(i).map(|z| z as u64))),
                Out::Float(o) => o.resize(n, None),
                Out::Position(o) => o.resize(n, None),
                Out::Positions(o) => o.resize(n, None),
            }
            for (chunk, part) in chunks.iter().zip(&parts) {
                let ids = chunk.iter().map(|(_, _, i)| *i as usize);
                match (&mut out, &part[w]) {
                    (Out::Int(o), Out::Int(v)) => ids.zip(v).for_each(|(i, v)| o[i] = *v),
                    (Out::UInt(o), Out::UInt(v)) => ids.zip(v).for_each(|(i, v)| o[i] = *v),
                    (Out::Float(o), Out::Float(v)) => ids.zip(v).for_each(|(i, v)| o[i] = *v),
                    (Out::Position(o), Out::Position(v)) => ids.zip(v).for_each(|(i, v)| o[i] = *v),
                    (Out::Positions(o), Out::Positions(v)) => {
                        ids.zip(v).for_each(|(i, v)| o[i] = v.clone())
                    }
                    _ => {
                        return Err(Error::InvalidInput(
                            "window aggregate outputs disagree".into(),
                        ));
                    }
                }
            }
            outputs.push(self.to_array(p, out)?);
        }
        Ok(outputs)
    }

    fn to_array(&self, p: &Prepared, out: Out) -> Result<ArrayRef> {
        Ok(match out {
            Out::Int(v) => Arc::new(Int64Array::from(v)),
            Out::UInt(v) => Arc::new(UInt64Array::from(v)),
            Out::Float(v) => Arc::new(Float64Array::from(v)),
            Out::Position(v) => arrow::compute::take(&p.values, &UInt32Array::from(v), None)?,
            Out::Positions(v) => {
                let lengths: Vec<usize> =
                    v.iter().map(|x| x.as_ref().map_or(0, Vec::len)).collect();
                let nulls: Vec<bool> = v.iter().map(Option::is_some).collect();
                let flat: Vec<u32> = v.into_iter().flatten().flatten().collect();
                let values = arrow::compute::take(&p.values, &UInt32Array::from(flat), None)?;
                let field = Arc::new(Field::new("item", p.values.data_type().clone(), true));
                Arc::new(ListArray::try_new(
                    field,
                    OffsetBuffer::from_lengths(lengths),
                    values,
                    Some(nulls.into()),
                )?)
            }
        })
    }

    /// The aggregates `which` at the probes `chunk` (sorted by key, then time).
    fn sweep(&self, chunk: &[(u32, i64, u32)], which: &[usize]) -> Vec<Out> {
        let mut outs: Vec<Out> = which
            .iter()
            .map(|&a| self.aggregates[a].1.empty_out(chunk.len()))
            .collect();
        // Min and max compare inputs of any orderable type.
        let comparators: Vec<Option<arrow::array::DynComparator>> = which
            .iter()
            .map(|&a| {
                let p = &self.aggregates[a].1;
                matches!(p.func, Func::Min | Func::Max)
                    .then(|| make_comparator(&p.values, &p.values, SortOptions::default()).ok())
                    .flatten()
            })
            .collect();
        let mut start = 0;
        while start < chunk.len() {
            let g = chunk[start].0;
            let mut end = start;
            while end < chunk.len() && chunk[end].0 == g {
                end += 1;
            }
            self.sweep_key(
                g as usize,
                &chunk[start..end],
                which,
                &comparators,
                &mut outs,
            );
            start = end;
        }
        outs
    }

    /// One key's probes, in time order.
    fn sweep_key(
        &self,
        g: usize,
        probes: &[(u32, i64, u32)],
        which: &[usize],
        comparators: &[Option<arrow::array::DynComparator>],
        outs: &mut [Out],
    ) {
        let (begin, end) = (self.starts[g], self.starts[g + 1]);
        // Per aggregate: its window's lower bound, and the state of the stateful ones.
        let mut lows = vec![begin; which.len()];
        let mut added = vec![begin; which.len()];
        let mut deques: Vec<VecDeque<u32>> = vec![VecDeque::new(); which.len()];
        let mut multisets: Vec<HashMap<&[u8], u32>> = vec![HashMap::new(); which.len()];
        let mut distinct = vec![0usize; which.len()];
        let mut high = begin;
        for &(_, t, _) in probes {
            while high < end && self.times[high] <= t {
                high += 1;
            }
            for (w, &a) in which.iter().enumerate() {
                let p = &self.aggregates[a].1;
                let floor = t.saturating_sub(p.window_us);
                let mut low = lows[w];
                while low < high && self.times[low] <= floor {
                    low += 1;
                }
                // Stateful aggregates take the events that entered, then drop those that left.
                match p.func {
                    Func::Min | Func::Max => {
                        let Some(cmp) = &comparators[w] else {
                            continue;
                        };
                        let deque = &mut deques[w];
                        let keep = if p.func == Func::Max {
                            std::cmp::Ordering::Greater
                        } else {
                            std::cmp::Ordering::Less
                        };
                        for j in added[w].max(low)..high {
                            if p.values.is_null(j) {
                                continue;
                            }
                            while let Some(&back) = deque.back() {
                                if cmp(back as usize, j) == keep {
                                    break;
                                }
                                deque.pop_back();
                            }
                            deque.push_back(j as u32);
                        }
                        while deque.front().is_some_and(|&f| (f as usize) < low) {
                            deque.pop_front();
                        }
                    }
                    Func::CountDistinct | Func::ApproxDistinct => {
                        let Some(rows) = &p.rows else {
                            continue;
                        };
                        // The multiset holds the inputs of `lows[w]..added[w]`.
                        let set = &mut multisets[w];
                        for j in added[w]..high {
                            if p.values.is_valid(j) {
                                let c = set.entry(rows.row(j).data()).or_insert(0);
                                if *c == 0 {
                                    distinct[w] += 1;
                                }
                                *c += 1;
                            }
                        }
                        for j in lows[w]..low {
                            if p.values.is_valid(j)
                                && let Some(c) = set.get_mut(rows.row(j).data())
                            {
                                *c -= 1;
                                if *c == 0 {
                                    distinct[w] -= 1;
                                }
                            }
                        }
                    }
                    _ => {}
                }
                added[w] = high;
                lows[w] = low;
                self.answer(g, p, low, high, &deques[w], distinct[w], &mut outs[w]);
            }
        }
    }

    /// The value of aggregate `p` over events `low..high` of key `g`.
    #[allow(clippy::too_many_arguments)]
    fn answer(
        &self,
        g: usize,
        p: &Prepared,
        low: usize,
        high: usize,
        deque: &VecDeque<u32>,
        distinct: usize,
        out: &mut Out,
    ) {
        let count = || {
            if p.counts.is_empty() {
                (high - low) as u32
            } else {
                p.counts[self.slot(g, high)] - p.counts[self.slot(g, low)]
            }
        };
        let float_sum = |v: &[f64]| v[self.slot(g, high)] - v[self.slot(g, low)];
        match (p.func, out) {
            (Func::Count, Out::Int(o)) => o.push(Some(i64::from(count()))),
            (Func::CountDistinct, Out::Int(o)) => o.push(Some(distinct as i64)),
            (Func::ApproxDistinct, Out::UInt(o)) => o.push(Some(distinct as u64)),
            (Func::Sum, Out::Int(o)) => {
                o.push((count() > 0).then(|| p.int_sums[high].wrapping_sub(p.int_sums[low])))
            }
            (Func::Sum, Out::Float(o)) => {
                let n = count();
                o.push((n > 0).then(|| float_sum(&p.sums)));
            }
            (Func::Avg, Out::Float(o)) => {
                let n = count();
                o.push((n > 0).then(|| float_sum(&p.sums) / f64::from(n)));
            }
            (Func::VarSamp | Func::StddevSamp, Out::Float(o)) => {
                let n = f64::from(count());
                if n < 2.0 {
                    o.push(None);
                } else {
                    let s = float_sum(&p.sums);
                    let q = float_sum(&p.squares);
                    let var = ((q - s * s / n) / (n - 1.0)).max(0.0);
                    o.push(Some(if p.func == Func::VarSamp {
                        var
                    } else {
                        var.sqrt()
                    }));
                }
            }
            (Func::Min | Func::Max, Out::Position(o)) => o.push(deque.front().copied()),
            (Func::FirstValue, Out::Position(o)) => {
                let first = p.next_valid[low] as usize;
                o.push((first < high).then_some(first as u32));
            }
            (Func::LastValue, Out::Position(o)) => {
                let last = p.prev_valid[high] as usize;
                o.push((last > low).then(|| last as u32 - 1));
            }
            (Func::LastK(k), Out::Positions(o)) => {
                let mut picked = Vec::new();
                let mut at = p.prev_valid[high] as usize;
                while at > low && picked.len() < k {
                    picked.push(at as u32 - 1);
                    at = p.prev_valid[at - 1] as usize;
                }
                o.push((!picked.is_empty()).then_some(picked));
            }
            _ => {}
        }
    }
}

impl Prepared {
    /// An empty output of this aggregate's kind, with room for `n` probes.
    fn empty_out(&self, n: usize) -> Out {
        match self.func {
            Func::Count | Func::CountDistinct => Out::Int(Vec::with_capacity(n)),
            Func::ApproxDistinct => Out::UInt(Vec::with_capacity(n)),
            Func::Sum if self.output == DataType::Int64 => Out::Int(Vec::with_capacity(n)),
            Func::Sum | Func::Avg | Func::StddevSamp | Func::VarSamp => {
                Out::Float(Vec::with_capacity(n))
            }
            Func::LastK(_) => Out::Positions(Vec::with_capacity(n)),
            Func::Min | Func::Max | Func::FirstValue | Func::LastValue => {
                Out::Position(Vec::with_capacity(n))
            }
        }
    }
}

/// `f` of each item, each on a thread of its own (one item: on this thread); `what` names the
/// work should a thread panic.
fn on_threads<I: Sync, T: Send>(
    items: &[I],
    what: &str,
    f: impl Fn(&I) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    if items.len() <= 1 {
        return items.iter().map(f).collect();
    }
    std::thread::scope(|scope| {
        let f = &f;
        let handles: Vec<_> = items
            .iter()
            .map(|item| scope.spawn(move || f(item)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::InvalidInput(format!("{what} failed"))))
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, StringArray, TimestampMicrosecondArray};
    use arrow::datatypes::Schema;

    /// A small deterministic generator (no dependency needed for the test).
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }
    }

    fn agg(name: &str, func: Func, window_us: i64) -> Aggregate {
        Aggregate {
            name: name.into(),
            func,
            window: String::new(),
            window_us,
            filter: None,
            argument: String::new(),
        }
    }

    /// Every aggregate at random probes equals a direct computation over the events in
    /// `(t - w, t]`, on data with many equal times, NULL inputs and empty windows.
    #[test]
    fn the_sweep_equals_a_direct_computation() {
        let mut rng = Lcg(7);
        let n = 3000;
        let keys: Vec<i64> = (0..n).map(|_| rng.next(6) as i64).collect();
        let times: Vec<i64> = (0..n).map(|_| rng.next(400) as i64 * 10).collect();
        let xs: Vec<Option<f64>> = (0..n)
            .map(|_| (rng.next(5) != 0).then(|| rng.next(100) as f64 - 30.0))
            .collect();
        let ss: Vec<Option<String>> = (0..n)
            .map(|_| (rng.next(4) != 0).then(|| format!("m{}", rng.next(7))))
            .collect();
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("t", DataType::Timestamp(TimeUnit::Microsecond, None), true),
            Field::new("x", DataType::Float64, true),
            Field::new("s", DataType::Utf8, true),
        ]));
        let aggregates = vec![
            (agg("x", Func::Count, 100), 'x'),
            (agg("x", Func::Sum, 250), 'x'),
            (agg("x", Func::Avg, 70), 'x'),
            (agg("x", Func::Min, 300), 'x'),
            (agg("x", Func::Max, 120), 'x'),
            (agg("x", Func::VarSamp, 500), 'x'),
            (agg("s", Func::CountDistinct, 200), 's'),
            (agg("x", Func::FirstValue, 90), 'x'),
            (agg("s", Func::LastValue, 90), 's'),
            (agg("s", Func::LastK(3), 150), 's'),
        ];
        let probes: Vec<(i64, i64)> = (0..800)
            .map(|_| (rng.next(7) as i64, rng.next(4200) as i64 - 50))
            .collect();
        for (a, input) in &aggregates {
            // One aggregate at a time, its input under the aggregate's name.
            let batch = RecordBatch::try_new(
                Arc::clone(&schema),
                vec![
                    Arc::new(Int64Array::from(keys.clone())),
                    Arc::new(TimestampMicrosecondArray::from(times.clone())),
                    Arc::new(Float64Array::from(xs.clone())),
                    Arc::new(StringArray::from(ss.clone())),
                ],
            )
            .expect("batch");
            let events = Events::new(batch, &["k".into()], "t", std::slice::from_ref(a), false)
                .expect("events");
            let groups = events
                .find(&[Arc::new(Int64Array::from(
                    probes.iter().map(|p| p.0).collect::<Vec<_>>(),
                )) as ArrayRef])
                .expect("find");
            let at: Vec<(Option<u32>, Option<i64>)> = groups
                .into_iter()
                .zip(&probes)
                .map(|(g, p)| (g, Some(p.1)))
                .collect();
            let out = events.evaluate(&at, &[0], 2).expect("evaluate").remove(0);
            for (i, &(k, t)) in probes.iter().enumerate() {
                // The window's events in time order, ties in input order.
                let mut window: Vec<usize> = (0..n)
                    .filter(|&j| keys[j] == k && times[j] > t - a.window_us && times[j] <= t)
                    .collect();
                window.sort_by_key(|&j| times[j]);
                let x: Vec<f64> = window.iter().filter_map(|&j| xs[j]).collect();
                let s: Vec<&String> = window.iter().filter_map(|&j| ss[j].as_ref()).collect();
                let got = ScalarValueText::of(&out, i);
                let want = match (a.func, input) {
                    (Func::Count, _) => x.len().to_string(),
                    (Func::Sum, _) if !x.is_empty() => format!("{:.6}", x.iter().sum::<f64>()),
                    (Func::Avg, _) if !x.is_empty() => {
                        format!("{:.6}", x.iter().sum::<f64>() / x.len() as f64)
                    }
                    (Func::Min, _) if !x.is_empty() => {
                        format!("{:.6}", x.iter().cloned().fold(f64::MAX, f64::min))
                    }
                    (Func::Max, _) if !x.is_empty() => {
                        format!("{:.6}", x.iter().cloned().fold(f64::MIN, f64::max))
                    }
                    (Func::VarSamp, _) if x.len() > 1 => {
                        let m = x.iter().sum::<f64>() / x.len() as f64;
                        let v =
                            x.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (x.len() - 1) as f64;
                        format!("{v:.6}")
                    }
                    (Func::CountDistinct, _) => {
                        let mut d = s.clone();
                        d.sort();
                        d.dedup();
                        d.len().to_string()
                    }
                    (Func::FirstValue, _) if !x.is_empty() => format!("{:.6}", x[0]),
                    (Func::LastValue, _) if !s.is_empty() => s[s.len() - 1].clone(),
                    (Func::LastK(k), _) if !s.is_empty() => {
                        let newest: Vec<String> =
                            s.iter().rev().take(k).map(|v| v.to_string()).collect();
                        format!("[{}]", newest.join(", "))
                    }
                    _ => "NULL".into(),
                };
                assert_eq!(got, want, "{:?} at key {k}, time {t}", a.func);
            }
        }
    }

    /// A value of an output as the test writes it.
    struct ScalarValueText;
    impl ScalarValueText {
        fn of(array: &ArrayRef, i: usize) -> String {
            if array.is_null(i) {
                return "NULL".into();
            }
            let v = datafusion::common::ScalarValue::try_from_array(array, i).expect("value");
            match v {
                datafusion::common::ScalarValue::Float64(Some(f)) => format!("{f:.6}"),
                other => other.to_string(),
            }
        }
    }
}
