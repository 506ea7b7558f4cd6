//! [`Snapshot`]: one view's latest row per key, indexed by key, with what it needs to serve: key
//! and event-time column names, the TTL, and when it was loaded.

use std::hash::BuildHasher;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch};
use arrow::buffer::Buffer;
use arrow::datatypes::{DataType, Schema, TimeUnit};
use arrow::ipc::convert::fb_to_schema;
use arrow::ipc::reader::{FileDecoder, read_footer_length};
use arrow::ipc::root_as_footer;
use arrow::ipc::writer::FileWriter;
use arrow::row::{RowConverter, Rows, SortField};
use hashbrown::{DefaultHashBuilder, HashTable};

use crate::windows::{Aggregate, Events};
use crate::{Error, Result};

const META_VIEW: &str = "flywheel.view";
const META_KEYS: &str = "flywheel.keys";
const META_EVENT_TIME: &str = "flywheel.event_time";
const META_TTL_US: &str = "flywheel.ttl_us";
const META_LOADED_AT_US: &str = "flywheel.loaded_at_us";
const META_CUTOFF_US: &str = "flywheel.cutoff_us";
const META_AGGREGATES: &str = "flywheel.aggregates";

/// The served state of one online feature view.
pub struct Snapshot {
    pub view: String,
    /// The entity's key columns, in the entity's order.
    pub keys: Vec<String>,
    pub event_time: String,
    /// Values older than this (relative to the lookup) are served as NULL.
    pub ttl_us: Option<i64>,
    /// When the load ran, and the event-time cut-off it used (microseconds since the epoch).
    pub loaded_at_us: i64,
    pub cutoff_us: i64,
    /// One row per key: key columns, event time, features.
    pub batch: RecordBatch,
    converter: RowConverter,
    /// The Arrow types of the key columns, in the entity's order.
    key_types: Vec<DataType>,
    index: KeyIndex,
    /// Each row's event time in microseconds (computed once; `None` for other time types).
    event_times_us: Option<Vec<Option<i64>>>,
    /// A view of aggregate features: each key's events of its longest window (row `i` of
    /// `batch` is key `i` of the events), evaluated at each lookup's time.
    windows: Option<Arc<Events>>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("view", &self.view)
            .field("rows", &self.batch.num_rows())
            .field("loaded_at_us", &self.loaded_at_us)
            .finish_non_exhaustive()
    }
}

/// The row of each key: the keys in Arrow's row format, in one buffer, and a hash table of row
/// numbers over it. A lookup is one probe of a table of `u32`s and one comparison in the buffer,
/// without a separately allocated key per row to chase.
struct KeyIndex {
    rows: Rows,
    table: HashTable<u32>,
    hasher: DefaultHashBuilder,
}

impl KeyIndex {
    /// Indexes `rows`; a repeated key keeps its last row.
    fn new(rows: Rows) -> Self {
        let hasher = DefaultHashBuilder::default();
        let mut table = HashTable::with_capacity(rows.num_rows());
        for (i, row) in rows.iter().enumerate() {
            let hash = hasher.hash_one(row.as_ref());
            let same = |j: &u32| rows.row(*j as usize).as_ref() == row.as_ref();
            match table.find_mut(hash, same) {
                Some(slot) => *slot = i as u32,
                None => {
                    table.insert_unique(hash, i as u32, |j| {
                        hasher.hash_one(rows.row(*j as usize).as_ref())
                    });
                }
            }
        }
        Self {
            rows,
            table,
            hasher,
        }
    }

    /// The row of `key` (a key in the same row format), if indexed.
    fn get(&self, key: &[u8]) -> Option<u32> {
        let hash = self.hasher.hash_one(key);
        self.table
            .find(hash, |j| self.rows.row(*j as usize).as_ref() == key)
            .copied()
    }
}

impl Snapshot {
    /// Indexes `batch` (one row per key; a repeated key keeps its last row).
    pub fn new(
        view: String,
        keys: Vec<String>,
        event_time: String,
        ttl_us: Option<i64>,
        loaded_at_us: i64,
        cutoff_us: i64,
        batch: RecordBatch,
    ) -> Result<Self> {
        let key_columns = key_columns(&batch, &keys)?;
        let key_types: Vec<DataType> = key_columns.iter().map(|c| c.data_type().clone()).collect();
        let converter = RowConverter::new(key_types.iter().cloned().map(SortField::new).collect())?;
        let index = KeyIndex::new(converter.convert_columns(&key_columns)?);
        let Some(times) = batch.column_by_name(&event_time) else {
            return Err(Error::InvalidInput(format!(
                "online view `{view}` has no event time column `{event_time}`"
            )));
        };
        let event_times_us = event_times_us(times)?;
        Ok(Self {
            view,
            keys,
            event_time,
            ttl_us,
            loaded_at_us,
            cutoff_us,
            batch,
            converter,
            key_types,
            index,
            event_times_us,
            windows: None,
        })
    }

    /// The snapshot of a view of aggregate features: `events` (key columns, event time, each
    /// aggregate's input) are grouped by key and kept; `batch` gets one row per key, with its
    /// latest event time.
    #[allow(clippy::too_many_arguments)]
    pub fn aggregated(
        view: String,
        keys: Vec<String>,
        event_time: String,
        loaded_at_us: i64,
        cutoff_us: i64,
        events: RecordBatch,
        aggregates: &[Aggregate],
    ) -> Result<Self> {
        let time_field = events
            .schema()
            .field_with_name(&event_time)
            .map_err(|_| {
                Error::InvalidInput(format!(
                    "online view `{view}` has no event time column `{event_time}`"
                ))
            })?
            .clone();
        let grouped = Events::new(events, &keys, &event_time, aggregates, true)?;
        let latest: arrow::array::TimestampMicrosecondArray = (0..grouped.key_count())
            .map(|g| grouped.latest_time(g))
            .collect();
        let latest = match time_field.data_type() {
            DataType::Timestamp(TimeUnit::Microsecond, tz) => {
                Arc::new(latest.with_timezone_opt(tz.clone())) as ArrayRef
            }
            _ => Arc::new(latest) as ArrayRef,
        };
        let mut fields: Vec<arrow::datatypes::Field> = keys
            .iter()
            .zip(grouped.keys())
            .map(|(k, c)| arrow::datatypes::Field::new(k, c.data_type().clone(), true))
            .collect();
        fields.push(arrow::datatypes::Field::new(
            &event_time,
            latest.data_type().clone(),
            true,
        ));
        let mut columns = grouped.keys().to_vec();
        columns.push(latest);
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
        let mut snapshot = Self::new(view, keys, event_time, None, loaded_at_us, cutoff_us, batch)?;
        snapshot.windows = Some(Arc::new(grouped));
        Ok(snapshot)
    }

    /// Every row served at `now_us`: rows past the TTL left out; a view of aggregate features
    /// gives each key with its latest event time and its aggregates evaluated at `now_us`.
    pub fn served(&self, now_us: i64) -> Result<RecordBatch> {
        if let Some(events) = &self.windows {
            let probes: Vec<(Option<u32>, Option<i64>)> = (0..self.batch.num_rows())
                .map(|g| (Some(g as u32), Some(now_us)))
                .collect();
            let which: Vec<usize> = (0..events.aggregates().count()).collect();
            let values = events.evaluate(&probes, &which, 1)?;
            let mut fields: Vec<arrow::datatypes::FieldRef> =
                self.batch.schema().fields().iter().cloned().collect();
            fields.extend(
                events
                    .aggregates()
                    .zip(events.output_types())
                    .map(|(a, t)| Arc::new(arrow::datatypes::Field::new(&a.name, t, true))),
            );
            let mut columns = self.batch.columns().to_vec();
            columns.extend(values);
            return Ok(RecordBatch::try_new(
                Arc::new(Schema::new(fields)),
                columns,
            )?);
        }
        let live: arrow::array::BooleanArray = (0..self.batch.num_rows())
            .map(|i| Some(!self.expired(i, now_us)))
            .collect();
        Ok(arrow::compute::filter_record_batch(&self.batch, &live)?)
    }

    /// The events of a view of aggregate features.
    pub fn windows(&self) -> Option<&Arc<Events>> {
        self.windows.as_ref()
    }

    /// The row of each requested key (`key_columns` in the entity's key order), or `None`.
    pub fn find(&self, key_columns: &[ArrayRef]) -> Result<Vec<Option<u32>>> {
        let cast = cast_keys(key_columns, &self.key_types)?;
        let rows = self.converter.convert_columns(&cast)?;
        Ok(rows
            .iter()
            .enumerate()
            .map(|(i, row)| {
                if cast.iter().any(|c| c.is_null(i)) {
                    None
                } else {
                    self.index.get(row.as_ref())
                }
            })
            .collect())
    }

    /// The Arrow types of the key columns, in the entity's order.
    pub fn key_types(&self) -> &[DataType] {
        &self.key_types
    }

    /// The event time of row `i` in microseconds, when the column is a timestamp or date.
    pub fn event_time_us(&self, i: usize) -> Option<i64> {
        self.event_times_us.as_ref()?.get(i).copied().flatten()
    }

    /// Whether row `i` is too old to serve at `now_us`.
    pub fn expired(&self, i: usize, now_us: i64) -> bool {
        let Some(ttl) = self.ttl_us else {
            return false;
        };
        self.event_time_us(i)
            .is_some_and(|t| t < now_us.saturating_sub(ttl))
    }

    /// This snapshot updated with `fresh`: rows of the view written after it was loaded (in commit
    /// order, with this snapshot's columns), loaded again at `loaded_at_us` with cut-off
    /// `cutoff_us`. Each key's row becomes the latest of its served row and its fresh rows at or
    /// before the cut-off (on equal times the fresh row, from the later commit; among fresh rows,
    /// the later one). Keys without fresh rows keep theirs. Returns the snapshot and how many keys
    /// changed; `None` when the event time is not a timestamp or a date (then the view is loaded
    /// whole instead).
    pub fn merged(
        &self,
        fresh: &RecordBatch,
        loaded_at_us: i64,
        cutoff_us: i64,
    ) -> Result<Option<(Snapshot, usize)>> {
        if self.windows.is_some() {
            // Aggregate features are loaded whole.
            return Ok(None);
        }
        // The fresh rows with this snapshot's columns, in its order and types.
        let schema = self.batch.schema();
        let mut columns = Vec::with_capacity(schema.fields().len());
        for field in schema.fields() {
            let Some(column) = fresh.column_by_name(field.name()) else {
                return Ok(None);
            };
            columns.push(arrow::compute::cast(column, field.data_type())?);
        }
        let options =
            arrow::array::RecordBatchOptions::new().with_row_count(Some(fresh.num_rows()));
        let fresh = &RecordBatch::try_new_with_options(Arc::clone(&schema), columns, &options)?;
        let (Some(old_times), Some(times)) = (
            self.event_times_us.as_ref(),
            fresh
                .column_by_name(&self.event_time)
                .map(event_times_us)
                .transpose()?
                .flatten(),
        ) else {
            return Ok(None);
        };
        let keys = cast_keys(&key_columns(fresh, &self.keys)?, &self.key_types)?;
        let rows = self.converter.convert_columns(&keys)?;
        // The latest fresh row of each key: by time, ties to the row written later.
        let mut eligible: Vec<usize> = (0..fresh.num_rows())
            .filter(|&i| {
                times[i].is_some_and(|t| t <= cutoff_us) && keys.iter().all(|k| k.is_valid(i))
            })
            .collect();
        eligible.sort_by_key(|&i| times[i]);
        let mut best: std::collections::HashMap<&[u8], usize> = std::collections::HashMap::new();
        for i in eligible {
            best.insert(rows.row(i).data(), i);
        }
        let mut replaced = vec![false; self.batch.num_rows()];
        let mut taken: Vec<u32> = Vec::with_capacity(best.len());
        for (row, i) in best {
            match self.index.get(row) {
                Some(old) if old_times[old as usize] > times[i] => {}
                Some(old) => {
                    replaced[old as usize] = true;
                    taken.push(i as u32);
                }
                None => taken.push(i as u32),
            }
        }
        taken.sort_unstable();
        let changed = taken.len();
        let keep: arrow::array::BooleanArray = replaced.iter().map(|r| Some(!r)).collect();
        let kept = arrow::compute::filter_record_batch(&self.batch, &keep)?;
        let fresh =
            arrow::compute::take_record_batch(fresh, &arrow::array::UInt32Array::from(taken))?;
        let batch = arrow::compute::concat_batches(&schema, [&kept, &fresh])?;
        let snapshot = Snapshot::new(
            self.view.clone(),
            self.keys.clone(),
            self.event_time.clone(),
            self.ttl_us,
            loaded_at_us,
            cutoff_us,
            batch,
        )?;
        Ok(Some((snapshot, changed)))
    }

    /// The latest event time served.
    pub fn max_event_time_us(&self) -> Option<i64> {
        (0..self.batch.num_rows())
            .filter_map(|i| self.event_time_us(i))
            .max()
    }

    /// Writes the snapshot to `out` as an Arrow IPC file (its metadata in the schema's metadata).
    fn encode_to(&self, out: impl std::io::Write) -> Result<()> {
        let mut metadata = self.batch.schema().metadata().clone();
        metadata.insert(META_VIEW.into(), self.view.clone());
        metadata.insert(META_KEYS.into(), self.keys.join("\u{1f}"));
        metadata.insert(META_EVENT_TIME.into(), self.event_time.clone());
        if let Some(ttl) = self.ttl_us {
            metadata.insert(META_TTL_US.into(), ttl.to_string());
        }
        metadata.insert(META_LOADED_AT_US.into(), self.loaded_at_us.to_string());
        metadata.insert(META_CUTOFF_US.into(), self.cutoff_us.to_string());
        // A view of aggregate features persists its events; the rows per key derive from them.
        let batch = match &self.windows {
            Some(events) => {
                let aggregates: Vec<&Aggregate> = events.aggregates().collect();
                let json = serde_json::to_string(&aggregates).map_err(|e| {
                    Error::InvalidInput(format!("cannot encode the aggregates: {e}"))
                })?;
                metadata.insert(META_AGGREGATES.into(), json);
                events.batch()
            }
            None => &self.batch,
        };
        let schema = Arc::new(Schema::new_with_metadata(
            batch.schema().fields().clone(),
            metadata,
        ));
        let batch = batch.clone().with_schema(Arc::clone(&schema))?;
        let mut w = FileWriter::try_new(out, &schema)?;
        w.write(&batch)?;
        w.finish()?;
        Ok(())
    }

    /// The snapshot as an Arrow IPC file, in memory (sized up front: growing a buffer of
    /// hundreds of megabytes by doubling copies it and faults in fresh pages each time).
    pub fn encode(&self) -> Result<Vec<u8>> {
        let size = match &self.windows {
            Some(events) => events.batch().get_array_memory_size(),
            None => self.batch.get_array_memory_size(),
        };
        let mut out = Vec::with_capacity(size + (64 << 10));
        self.encode_to(&mut out)?;
        Ok(out)
    }

    /// Reads what [`Snapshot::encode`] wrote; `source` names it in errors. The columns are
    /// slices of `bytes`, not copies (a snapshot can be gigabytes).
    pub fn decode(bytes: Vec<u8>, source: &str) -> Result<Self> {
        let bad = |what: &str| {
            Error::InvalidInput(format!(
                "online snapshot {source} is unreadable ({what}); REFRESH the feature view to rebuild it"
            ))
        };
        let buffer = Buffer::from_vec(bytes);
        let trailer_start = buffer
            .len()
            .checked_sub(10)
            .ok_or_else(|| bad("too short"))?;
        let trailer: [u8; 10] = buffer[trailer_start..]
            .try_into()
            .map_err(|_| bad("trailer"))?;
        let footer_len = read_footer_length(trailer)?;
        let footer_start = trailer_start
            .checked_sub(footer_len)
            .ok_or_else(|| bad("footer"))?;
        let footer = root_as_footer(&buffer[footer_start..trailer_start])
            .map_err(|e| bad(&format!("footer: {e}")))?;
        let schema = Arc::new(fb_to_schema(footer.schema().ok_or_else(|| bad("schema"))?));
        let meta = schema.metadata();
        let get = |k: &str| meta.get(k).cloned().ok_or_else(|| bad(k));
        let num = |k: &str| -> Result<i64> { get(k)?.parse().map_err(|_| bad(k)) };
        let plain = Arc::new(Schema::new(schema.fields().clone()));
        let block_data = |offset: i64, len: usize| {
            usize::try_from(offset)
                .ok()
                .filter(|o| o.checked_add(len).is_some_and(|end| end <= footer_start))
                .map(|o| buffer.slice_with_length(o, len))
                .ok_or_else(|| bad("block out of range"))
        };
        let mut decoder = FileDecoder::new(Arc::clone(&plain), footer.version());
        for block in footer.dictionaries().iter().flatten() {
            let len = block.bodyLength() as usize + block.metaDataLength() as usize;
            decoder.read_dictionary(block, &block_data(block.offset(), len)?)?;
        }
        let mut batches = Vec::new();
        for block in footer.recordBatches().iter().flatten() {
            let len = block.bodyLength() as usize + block.metaDataLength() as usize;
            if let Some(batch) =
                decoder.read_record_batch(block, &block_data(block.offset(), len)?)?
            {
                batches.push(batch);
            }
        }
        // One batch (what `encode` writes) is kept as it is; several are joined.
        let batch = match batches.len() {
            1 => batches.remove(0),
            _ => arrow::compute::concat_batches(&plain, &batches)?,
        };
        let keys: Vec<String> = get(META_KEYS)?
            .split('\u{1f}')
            .map(str::to_string)
            .collect();
        if let Some(json) = meta.get(META_AGGREGATES) {
            let aggregates: Vec<Aggregate> =
                serde_json::from_str(json).map_err(|_| bad(META_AGGREGATES))?;
            return Self::aggregated(
                get(META_VIEW)?,
                keys,
                get(META_EVENT_TIME)?,
                num(META_LOADED_AT_US)?,
                num(META_CUTOFF_US)?,
                batch,
                &aggregates,
            );
        }
        Self::new(
            get(META_VIEW)?,
            keys,
            get(META_EVENT_TIME)?,
            meta.get(META_TTL_US).and_then(|v| v.parse().ok()),
            num(META_LOADED_AT_US)?,
            num(META_CUTOFF_US)?,
            batch,
        )
    }

    /// Writes the snapshot to `path` atomically (a temp file renamed into place).
    pub fn write(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension(format!("arrow.{}.tmp", uuid::Uuid::new_v4().simple()));
        // Streamed to the file: no copy of the whole snapshot in memory.
        let written = std::fs::File::create(&tmp)
            .map_err(Error::from)
            .and_then(|file| {
                let mut file = std::io::BufWriter::with_capacity(1 << 20, file);
                self.encode_to(&mut file)?;
                let file = file.into_inner().map_err(|e| Error::Io(e.into_error()))?;
                file.sync_all()?;
                Ok(())
            })
            .and_then(|()| Ok(std::fs::rename(&tmp, path)?));
        if written.is_err() {
            // A full disk or a crash mid-write leaves the served snapshot as it was.
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }

    /// Reads a snapshot [`Snapshot::write`] wrote.
    pub fn read(path: &Path) -> Result<Self> {
        Self::decode(std::fs::read(path)?, &format!("`{}`", path.display()))
    }
}

/// Event times in microseconds since the epoch, for timestamp and date columns.
fn event_times_us(c: &ArrayRef) -> Result<Option<Vec<Option<i64>>>> {
    let scale: fn(i64) -> i64 = match c.data_type() {
        DataType::Timestamp(TimeUnit::Second, _) => |v| v.saturating_mul(1_000_000),
        DataType::Timestamp(TimeUnit::Millisecond, _) => |v| v.saturating_mul(1_000),
        DataType::Timestamp(TimeUnit::Microsecond, _) => |v| v,
        DataType::Timestamp(TimeUnit::Nanosecond, _) => |v| v / 1_000,
        DataType::Date32 => |v| v.saturating_mul(86_400_000_000),
        DataType::Date64 => |v| v.saturating_mul(1_000),
        _ => return Ok(None),
    };
    let as_i64 = arrow::compute::cast(c, &DataType::Int64)?;
    let values = as_i64
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .ok_or_else(|| Error::InvalidInput("event time did not cast to integers".into()))?;
    Ok(Some(values.iter().map(|v| v.map(scale)).collect()))
}

/// `columns` cast to `types`; a column already of its type is shared, not copied.
pub fn cast_keys(columns: &[ArrayRef], types: &[DataType]) -> Result<Vec<ArrayRef>> {
    columns
        .iter()
        .zip(types)
        .map(|(c, t)| {
            if c.data_type() == t {
                Ok(Arc::clone(c))
            } else {
                Ok(arrow::compute::cast(c, t)?)
            }
        })
        .collect()
}

fn key_columns(batch: &RecordBatch, keys: &[String]) -> Result<Vec<ArrayRef>> {
    keys.iter()
        .map(|k| {
            batch.column_by_name(k).cloned().ok_or_else(|| {
                Error::InvalidInput(format!("online snapshot has no key column `{k}`"))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Float64Array, Int64Array, StringArray, TimestampMicrosecondArray};
    use arrow::datatypes::Field;

    use super::*;

    fn snapshot(users: Vec<Option<i64>>, regions: Vec<&str>) -> Snapshot {
        let n = users.len();
        let schema = Schema::new(vec![
            Field::new("user_id", DataType::Int64, true),
            Field::new("region", DataType::Utf8, false),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, None),
                false,
            ),
            Field::new("f", DataType::Float64, false),
        ]);
        let batch = RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(Int64Array::from(users)),
                Arc::new(StringArray::from(regions)),
                Arc::new(TimestampMicrosecondArray::from(vec![0; n])),
                Arc::new(Float64Array::from_iter_values((0..n).map(|i| i as f64))),
            ],
        )
        .expect("batch");
        let keys = vec!["user_id".to_string(), "region".to_string()];
        Snapshot::new("v".into(), keys, "ts".into(), None, 0, 0, batch).expect("snapshot")
    }

    fn probe(users: Vec<Option<i64>>, regions: Vec<&str>) -> Vec<ArrayRef> {
        vec![
            Arc::new(Int64Array::from(users)),
            Arc::new(StringArray::from(regions)),
        ]
    }

    #[test]
    fn composite_keys_find_their_rows_and_nothing_else() {
        let s = snapshot(
            vec![Some(1), Some(1), Some(2), None],
            vec!["eu", "us", "eu", "eu"],
        );
        let found = s
            .find(&probe(
                vec![Some(1), Some(2), Some(1), Some(3), None, Some(2)],
                vec!["us", "eu", "eu", "eu", "eu", "us"],
            ))
            .expect("find");
        assert_eq!(found, vec![Some(1), Some(2), Some(0), None, None, None]);
    }

    #[test]
    fn a_snapshot_reads_back_as_written_and_damaged_bytes_are_refused() {
        let s = snapshot(vec![Some(1), Some(2), None], vec!["eu", "us", "eu"]);
        let bytes = s.encode().expect("encodes");
        let back = Snapshot::decode(bytes.clone(), "`t`").expect("decodes");
        assert_eq!(back.batch, s.batch);
        assert_eq!(
            (back.view.as_str(), back.keys.clone()),
            (s.view.as_str(), s.keys.clone())
        );
        assert_eq!(
            back.find(&[s.batch.column(0).slice(1, 1), s.batch.column(1).slice(1, 1)])
                .expect("find"),
            vec![Some(1)]
        );
        // Cut short, zeroed or scrambled: an error naming the snapshot, never a panic.
        let mut scrambled = bytes.clone();
        let middle = scrambled.len() / 2;
        scrambled[middle..middle + 8].copy_from_slice(&[0xff; 8]);
        for damaged in [
            Vec::new(),
            bytes[..bytes.len() / 2].to_vec(),
            bytes[bytes.len() / 2..].to_vec(),
            vec![0; bytes.len()],
        ] {
            assert!(Snapshot::decode(damaged, "`t`").is_err());
        }
        let _ = Snapshot::decode(scrambled, "`t`");
    }

    #[test]
    fn a_repeated_key_keeps_its_last_row() {
        let s = snapshot(vec![Some(7), Some(8), Some(7)], vec!["eu", "eu", "eu"]);
        let found = s
            .find(&probe(vec![Some(7), Some(8)], vec!["eu", "eu"]))
            .expect("find");
        assert_eq!(found, vec![Some(2), Some(1)]);
    }

    #[test]
    fn every_one_of_many_keys_is_found() {
        let n = 50_000;
        let s = snapshot((0..n).map(Some).collect(), vec!["eu"; n as usize]);
        let keys: Vec<i64> = (0..n).rev().step_by(7).collect();
        let found = s
            .find(&probe(
                keys.iter().map(|k| Some(*k)).collect(),
                vec!["eu"; keys.len()],
            ))
            .expect("find");
        let want: Vec<Option<u32>> = keys.iter().map(|k| Some(*k as u32)).collect();
        assert_eq!(found, want);
    }

    #[test]
    fn a_merge_keeps_the_latest_row_of_each_key_and_fresh_rows_win_equal_times() {
        let batch = |keys: Vec<i64>, times: Vec<i64>, values: Vec<f64>| {
            RecordBatch::try_from_iter([
                ("k", Arc::new(Int64Array::from(keys)) as ArrayRef),
                (
                    "ts",
                    Arc::new(TimestampMicrosecondArray::from(times)) as ArrayRef,
                ),
                ("v", Arc::new(Float64Array::from(values)) as ArrayRef),
            ])
            .expect("batch")
        };
        let old = Snapshot::new(
            "view".into(),
            vec!["k".into()],
            "ts".into(),
            None,
            0,
            1_000,
            batch(vec![1, 2, 3], vec![100, 200, 300], vec![1.0, 2.0, 3.0]),
        )
        .expect("snapshot");
        // Key 1 newer, key 2 corrected (same time), key 3 late, key 4 new twice (the later time
        // wins), key 5 past the cut-off, key 6 twice at one time (the later row wins).
        let fresh = batch(
            vec![1, 2, 3, 4, 4, 5, 6, 6],
            vec![150, 200, 50, 400, 390, 5_000, 600, 600],
            vec![1.5, 2.5, 0.3, 4.0, 3.9, 5.0, 6.0, 6.5],
        );
        let (merged, changed) = old
            .merged(&fresh, 10, 2_000)
            .expect("merges")
            .expect("timestamps merge");
        assert_eq!(changed, 4);
        let keys = [1i64, 2, 3, 4, 5, 6].map(Some);
        let found = merged
            .find(&[Arc::new(Int64Array::from(keys.to_vec())) as ArrayRef])
            .expect("finds");
        let values = merged
            .batch
            .column_by_name("v")
            .and_then(|c| c.as_any().downcast_ref::<Float64Array>().cloned())
            .expect("values");
        let got: Vec<Option<f64>> = found
            .iter()
            .map(|row| row.map(|r| values.value(r as usize)))
            .collect();
        assert_eq!(
            got,
            vec![Some(1.5), Some(2.5), Some(3.0), Some(4.0), None, Some(6.5)]
        );
        assert_eq!(merged.cutoff_us, 2_000);
    }
}
