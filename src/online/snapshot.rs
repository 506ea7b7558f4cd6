//! [`Snapshot`]: one view's latest row per key, indexed by key, with what it needs to serve: key
//! and event-time column names, the TTL, and when it was loaded.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, Schema, TimeUnit};
use arrow::ipc::reader::FileReader;
use arrow::ipc::writer::FileWriter;
use arrow::row::{RowConverter, SortField};

use crate::{Error, Result};

const META_VIEW: &str = "flywheel.view";
const META_KEYS: &str = "flywheel.keys";
const META_EVENT_TIME: &str = "flywheel.event_time";
const META_TTL_US: &str = "flywheel.ttl_us";
const META_LOADED_AT_US: &str = "flywheel.loaded_at_us";
const META_CUTOFF_US: &str = "flywheel.cutoff_us";

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
    index: HashMap<Box<[u8]>, u32>,
    /// Each row's event time in microseconds (computed once; `None` for other time types).
    event_times_us: Option<Vec<Option<i64>>>,
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
        let converter = RowConverter::new(
            key_columns
                .iter()
                .map(|c| SortField::new(c.data_type().clone()))
                .collect(),
        )?;
        let rows = converter.convert_columns(&key_columns)?;
        let mut index = HashMap::with_capacity(batch.num_rows());
        for (i, row) in rows.iter().enumerate() {
            index.insert(Box::<[u8]>::from(row.as_ref()), i as u32);
        }
        let Some(times) = batch.column_by_name(&event_time) else {
            return Err(Error::Invalid(format!(
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
            index,
            event_times_us,
        })
    }

    /// The row of each requested key (`key_columns` in the entity's key order), or `None`.
    pub fn find(&self, key_columns: &[ArrayRef]) -> Result<Vec<Option<u32>>> {
        let cast: Vec<ArrayRef> = key_columns
            .iter()
            .zip(self.converter_types())
            .map(|(c, t)| arrow::compute::cast(c, &t))
            .collect::<std::result::Result<_, _>>()?;
        let rows = self.converter.convert_columns(&cast)?;
        Ok(rows
            .iter()
            .enumerate()
            .map(|(i, row)| {
                if cast.iter().any(|c| c.is_null(i)) {
                    None
                } else {
                    self.index.get(row.as_ref()).copied()
                }
            })
            .collect())
    }

    /// The Arrow types of the key columns.
    pub fn converter_types(&self) -> Vec<DataType> {
        self.keys
            .iter()
            .filter_map(|k| self.batch.column_by_name(k))
            .map(|c| c.data_type().clone())
            .collect()
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

    /// The latest event time served.
    pub fn max_event_time_us(&self) -> Option<i64> {
        (0..self.batch.num_rows())
            .filter_map(|i| self.event_time_us(i))
            .max()
    }

    /// The snapshot as an Arrow IPC file (its metadata in the schema's metadata).
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut metadata = self.batch.schema().metadata().clone();
        metadata.insert(META_VIEW.into(), self.view.clone());
        metadata.insert(META_KEYS.into(), self.keys.join("\u{1f}"));
        metadata.insert(META_EVENT_TIME.into(), self.event_time.clone());
        if let Some(ttl) = self.ttl_us {
            metadata.insert(META_TTL_US.into(), ttl.to_string());
        }
        metadata.insert(META_LOADED_AT_US.into(), self.loaded_at_us.to_string());
        metadata.insert(META_CUTOFF_US.into(), self.cutoff_us.to_string());
        let schema = Arc::new(Schema::new_with_metadata(
            self.batch.schema().fields().clone(),
            metadata,
        ));
        let batch = self.batch.clone().with_schema(Arc::clone(&schema))?;
        let mut out = Vec::new();
        let mut w = FileWriter::try_new(&mut out, &schema)?;
        w.write(&batch)?;
        w.finish()?;
        drop(w);
        Ok(out)
    }

    /// Reads what [`Snapshot::encode`] wrote; `source` names it in errors.
    pub fn decode(bytes: &[u8], source: &str) -> Result<Self> {
        let bad = |what: &str| {
            Error::Invalid(format!(
                "online snapshot {source} is unreadable ({what}); REFRESH the feature view to rebuild it"
            ))
        };
        let reader = FileReader::try_new(std::io::Cursor::new(bytes), None)?;
        let schema = reader.schema();
        let meta = schema.metadata();
        let get = |k: &str| meta.get(k).cloned().ok_or_else(|| bad(k));
        let num = |k: &str| -> Result<i64> { get(k)?.parse().map_err(|_| bad(k)) };
        let batches: Vec<RecordBatch> = reader.collect::<std::result::Result<_, _>>()?;
        let plain = Arc::new(Schema::new(schema.fields().clone()));
        let batch = arrow::compute::concat_batches(&plain, &batches)?;
        Self::new(
            get(META_VIEW)?,
            get(META_KEYS)?
                .split('\u{1f}')
                .map(str::to_string)
                .collect(),
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
        let bytes = self.encode()?;
        let tmp = path.with_extension(format!("arrow.{}.tmp", uuid::Uuid::new_v4().simple()));
        {
            let mut file = std::fs::File::create(&tmp)?;
            std::io::Write::write_all(&mut file, &bytes)?;
            file.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        Ok(())
    }

    /// Reads a snapshot [`Snapshot::write`] wrote.
    pub fn read(path: &Path) -> Result<Self> {
        Self::decode(&std::fs::read(path)?, &format!("`{}`", path.display()))
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
        .ok_or_else(|| Error::Invalid("event time did not cast to integers".into()))?;
    Ok(Some(values.iter().map(|v| v.map(scale)).collect()))
}

fn key_columns(batch: &RecordBatch, keys: &[String]) -> Result<Vec<ArrayRef>> {
    keys.iter()
        .map(|k| {
            batch
                .column_by_name(k)
                .cloned()
                .ok_or_else(|| Error::Invalid(format!("online snapshot has no key column `{k}`")))
        })
        .collect()
}
