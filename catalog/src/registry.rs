//! [`Registry`]: the warehouse's object registry, an append-only Delta table.
//!
//! Every DDL statement appends one row (`create` or `drop` of a named object) in one Delta commit.
//! The current state is the fold of all rows in commit order; older definitions stay in the log as
//! history. Readers call [`Registry::refresh`] before each statement, which re-reads the log only when
//! another writer (this server or another one on the same warehouse) committed since.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use arrow::array::{Array, ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::prelude::SessionContext;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::{DataType as DeltaType, PrimitiveType, StructField};
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableError};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use url::Url;

use crate::{Error, Result, Warehouse};

/// Whether Flywheel owns a table's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TableKind {
    /// Created by `CREATE TABLE` under the warehouse's `tables/`; `DROP TABLE` deletes its files.
    Managed,
    /// Registered by `CREATE EXTERNAL TABLE ... LOCATION`; `DROP TABLE` only forgets it.
    External,
    /// Plain files (`CREATE EXTERNAL TABLE ... STORED AS PARQUET|CSV|JSON`): read-only, no
    /// versions; `DROP TABLE` only forgets them.
    Files(FileFormat),
}

/// The format of a [`TableKind::Files`] table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    Parquet,
    Csv {
        /// Whether the first line names the columns.
        has_header: bool,
        /// The column delimiter.
        delimiter: u8,
    },
    /// Newline-delimited JSON objects.
    Json,
}

impl FileFormat {
    /// The format's SQL name (`PARQUET`, `CSV`, `JSON`).
    pub fn sql(&self) -> &'static str {
        match self {
            FileFormat::Parquet => "PARQUET",
            FileFormat::Csv { .. } => "CSV",
            FileFormat::Json => "JSON",
        }
    }
}

/// A table the registry knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableEntry {
    pub name: String,
    pub location: Url,
    pub kind: TableKind,
}

/// The JSON definition stored with a table row.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TableDefinition {
    kind: TableKind,
}

const KIND_TABLE: &str = "table";
const OP_CREATE: &str = "create";
const OP_DROP: &str = "drop";

/// One row of the registry log.
#[derive(Debug, Clone)]
struct Record {
    kind: String,
    name: String,
    op: String,
    location: Option<String>,
    definition: Option<String>,
    created_at_us: i64,
    writer: String,
}

#[derive(Debug, Default)]
struct State {
    version: Option<u64>,
    /// Live objects by (kind, name): the latest `create` not followed by a `drop`.
    live: BTreeMap<(String, String), Record>,
    /// How many `create`s each (kind, name) has had since its last `drop`.
    versions: BTreeMap<(String, String), u64>,
    /// The newest `created_at_us` of the log: a new row is stamped after it, so the fold's order
    /// (by time) is the commit order even when writers' clocks disagree.
    newest_us: i64,
}

/// The registry of one warehouse.
#[derive(Debug)]
pub struct Registry {
    warehouse: Warehouse,
    location: Url,
    /// Serializes this process's writes and refreshes of the log.
    table: Mutex<DeltaTable>,
    state: RwLock<State>,
    writer: String,
}

fn log_schema() -> SchemaRef {
    let s = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    Arc::new(Schema::new(vec![
        s("kind", false),
        s("name", false),
        s("op", false),
        s("location", true),
        s("definition", true),
        Field::new("created_at_us", DataType::Int64, false),
        s("writer", false),
    ]))
}

fn delta_columns() -> Vec<StructField> {
    let string = || DeltaType::Primitive(PrimitiveType::String);
    vec![
        StructField::new("kind", string(), false),
        StructField::new("name", string(), false),
        StructField::new("op", string(), false),
        StructField::new("location", string(), true),
        StructField::new("definition", string(), true),
        StructField::new(
            "created_at_us",
            DeltaType::Primitive(PrimitiveType::Long),
            false,
        ),
        StructField::new("writer", string(), false),
    ]
}

impl Registry {
    /// Opens the registry of `warehouse`, creating an empty one on first use.
    pub async fn open(warehouse: Warehouse) -> Result<Self> {
        let location = warehouse.registry_location()?;
        Warehouse::ensure_dir(&location)?;
        let mut table = DeltaTable::try_from_url(location.clone()).await?;
        if table.version().is_none() {
            let created = table
                .create()
                .with_table_name("flywheel_registry")
                .with_comment("Flywheel object registry: one row per DDL statement")
                .with_columns(delta_columns())
                .with_save_mode(SaveMode::Ignore)
                .await;
            table = match created {
                Ok(t) => t,
                // Another server created it at the same moment: use theirs.
                Err(_) => deltalake::open_table(location.clone()).await?,
            };
        }
        let registry = Self {
            warehouse,
            location,
            table: Mutex::new(table),
            state: RwLock::new(State::default()),
            writer: uuid::Uuid::new_v4().to_string(),
        };
        registry.refresh().await?;
        Ok(registry)
    }

    /// The warehouse this registry describes.
    pub fn warehouse(&self) -> &Warehouse {
        &self.warehouse
    }

    /// Re-reads the log if any writer committed since the last read.
    pub async fn refresh(&self) -> Result<()> {
        let mut table = self.table.lock().await;
        self.refresh_locked(&mut table).await
    }

    async fn refresh_locked(&self, table: &mut DeltaTable) -> Result<()> {
        let latest = table.get_latest_version().await?;
        if self.read_state().version == Some(latest) {
            return Ok(());
        }
        table.update_incremental(None).await?;
        let records = self.read_records(table).await?;
        let newest_us = records.iter().map(|r| r.created_at_us).max().unwrap_or(0);
        let mut live = BTreeMap::new();
        let mut versions: BTreeMap<(String, String), u64> = BTreeMap::new();
        for r in records {
            let key = (r.kind.clone(), r.name.clone());
            if r.op == OP_DROP {
                live.remove(&key);
                versions.remove(&key);
            } else {
                *versions.entry(key.clone()).or_default() += 1;
                live.insert(key, r);
            }
        }
        let mut state = self.state.write().map_err(|_| self.poisoned())?;
        state.version = table.version();
        state.live = live;
        state.versions = versions;
        state.newest_us = newest_us;
        Ok(())
    }

    fn poisoned(&self) -> Error {
        Error::CorruptRegistry {
            location: self.location.to_string(),
            reason: "a writer panicked while holding the registry lock".into(),
        }
    }

    fn read_state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // A poisoned lock still holds a consistent state: it is only replaced whole.
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads every row of the log, in commit order.
    async fn read_records(&self, table: &DeltaTable) -> Result<Vec<Record>> {
        let ctx = SessionContext::new();
        let provider = table.table_provider().await?;
        let batches = ctx.read_table(provider)?.collect().await?;
        let corrupt = |reason: String| Error::CorruptRegistry {
            location: self.location.to_string(),
            reason,
        };
        let mut out = Vec::new();
        for batch in batches {
            let col = |name: &str| -> Result<ArrayRef> {
                let a = batch
                    .column_by_name(name)
                    .ok_or_else(|| corrupt(format!("missing column `{name}`")))?;
                if name == "created_at_us" {
                    Ok(arrow::compute::cast(a, &DataType::Int64)?)
                } else {
                    Ok(arrow::compute::cast(a, &DataType::Utf8)?)
                }
            };
            let strings = |name: &str| -> Result<StringArray> {
                let a = col(name)?;
                a.as_any()
                    .downcast_ref::<StringArray>()
                    .cloned()
                    .ok_or_else(|| corrupt(format!("column `{name}` is not a string")))
            };
            let (kind, name, op, location, definition, writer) = (
                strings("kind")?,
                strings("name")?,
                strings("op")?,
                strings("location")?,
                strings("definition")?,
                strings("writer")?,
            );
            let created = col("created_at_us")?;
            let created = created
                .as_any()
                .downcast_ref::<Int64Array>()
                .ok_or_else(|| corrupt("column `created_at_us` is not an integer".into()))?;
            let opt = |a: &StringArray, i: usize| (!a.is_null(i)).then(|| a.value(i).to_string());
            for i in 0..batch.num_rows() {
                out.push(Record {
                    kind: kind.value(i).to_string(),
                    name: name.value(i).to_string(),
                    op: op.value(i).to_string(),
                    location: opt(&location, i),
                    definition: opt(&definition, i),
                    created_at_us: created.value(i),
                    writer: writer.value(i).to_string(),
                });
            }
        }
        out.sort_by(|a, b| (a.created_at_us, &a.writer).cmp(&(b.created_at_us, &b.writer)));
        Ok(out)
    }

    /// Appends `records` in one Delta commit at the version after the one read, then refreshes.
    /// The commit is not retried by delta-rs: another writer's commit in between fails it (see
    /// [`is_commit_race`]), and [`Registry::commit`] re-reads the log and checks again.
    async fn append(&self, table: &mut DeltaTable, records: Vec<Record>) -> Result<()> {
        let strings = |f: &dyn Fn(&Record) -> Option<String>| {
            Arc::new(records.iter().map(f).collect::<StringArray>()) as ArrayRef
        };
        let batch = RecordBatch::try_new(
            log_schema(),
            vec![
                strings(&|r| Some(r.kind.clone())),
                strings(&|r| Some(r.name.clone())),
                strings(&|r| Some(r.op.clone())),
                strings(&|r| r.location.clone()),
                strings(&|r| r.definition.clone()),
                Arc::new(Int64Array::from_iter_values(
                    records.iter().map(|r| r.created_at_us),
                )),
                strings(&|r| Some(r.writer.clone())),
            ],
        )?;
        let written = table
            .clone()
            .write(vec![batch])
            .with_save_mode(SaveMode::Append)
            .with_commit_properties(CommitProperties::default().with_max_retries(0))
            .await;
        match written {
            Ok(t) => *table = t,
            Err(e) => return Err(e.into()),
        }
        self.refresh_locked(table).await
    }

    /// Commits `changes` as one Delta commit of the log: all of them are recorded, or none.
    ///
    /// Each change is checked against the registry as it is at the commit (a created name must be
    /// free unless replacing, a dropped one must exist), earlier changes of the same list
    /// included. When another writer (this process or another server) commits first, the log is
    /// re-read and the changes checked again, so of two statements creating one name at the same
    /// moment exactly one wins and the other gets [`Error::TableExists`] /
    /// [`Error::ObjectExists`].
    pub async fn commit(&self, changes: Vec<Change>) -> Result<Committed> {
        for change in &changes {
            if let Some((noun, name)) = change.created() {
                check_name(noun, name)?;
            }
        }
        let mut table = self.table.lock().await;
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.refresh_locked(&mut table).await?;
            let (records, committed) = self.check(&changes)?;
            if records.is_empty() {
                return Ok(committed);
            }
            match self.append(&mut table, records).await {
                Ok(()) => return Ok(committed),
                Err(Error::Delta(e)) if is_commit_race(&e) => {
                    if attempt >= MAX_COMMIT_ATTEMPTS {
                        return Err(Error::RegistryBusy {
                            location: self.location.to_string(),
                            attempts: attempt,
                        });
                    }
                    tracing::debug!(attempt, "registry commit raced another writer; retrying");
                    // Spread the retries of writers that raced each other.
                    let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0] % 20);
                    let pause = 5 * attempt.min(20) as u64 + jitter;
                    tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The log rows of `changes`, checked against the current state; and what they drop.
    fn check(&self, changes: &[Change]) -> Result<(Vec<Record>, Committed)> {
        let state = self.read_state();
        // The names this commit touched so far, as each change left them.
        let mut overlay: BTreeMap<(String, String), Option<Record>> = BTreeMap::new();
        let present = |overlay: &BTreeMap<(String, String), Option<Record>>,
                       key: &(String, String)| match overlay.get(key) {
            Some(r) => r.clone(),
            None => state.live.get(key).cloned(),
        };
        let mut stamp = chrono::Utc::now()
            .timestamp_micros()
            .max(state.newest_us.saturating_add(1));
        let mut records = Vec::with_capacity(changes.len());
        let mut committed = Committed::default();
        for change in changes {
            let (record, key) = match change {
                Change::CreateTable(entry) => {
                    let key = (KIND_TABLE.to_string(), entry.name.clone());
                    if present(&overlay, &key).is_some() {
                        return Err(Error::TableExists {
                            name: entry.name.clone(),
                        });
                    }
                    let definition = serde_json::to_string(&TableDefinition { kind: entry.kind })
                        .map_err(|e| Error::CorruptRegistry {
                        location: self.location.to_string(),
                        reason: e.to_string(),
                    })?;
                    let record = self.record(
                        KIND_TABLE,
                        &entry.name,
                        OP_CREATE,
                        Some(entry.location.to_string()),
                        Some(definition),
                        stamp,
                    );
                    (record, key)
                }
                Change::DropTable { name } => {
                    let key = (KIND_TABLE.to_string(), name.clone());
                    let dropped = present(&overlay, &key)
                        .as_ref()
                        .and_then(entry_of)
                        .ok_or_else(|| Error::TableNotFound { name: name.clone() })?;
                    committed.dropped_tables.push(dropped);
                    let record = self.record(KIND_TABLE, name, OP_DROP, None, None, stamp);
                    (record, key)
                }
                Change::CreateObject {
                    kind,
                    name,
                    definition,
                    replace,
                } => {
                    let key = (kind.clone(), name.clone());
                    if !replace && present(&overlay, &key).is_some() {
                        return Err(Error::ObjectExists {
                            kind: kind.clone(),
                            name: name.clone(),
                        });
                    }
                    let definition = Some(definition.clone());
                    let record = self.record(kind, name, OP_CREATE, None, definition, stamp);
                    (record, key)
                }
                Change::DropObjectIfExists { kind, name } => {
                    let key = (kind.clone(), name.clone());
                    if present(&overlay, &key).is_none() {
                        continue;
                    }
                    let record = self.record(kind, name, OP_DROP, None, None, stamp);
                    (record, key)
                }
                Change::DropObject { kind, name } => {
                    let key = (kind.clone(), name.clone());
                    let dropped = present(&overlay, &key).ok_or_else(|| Error::ObjectNotFound {
                        kind: kind.clone(),
                        name: name.clone(),
                    })?;
                    let version = state.versions.get(&key).copied();
                    committed.dropped_objects.push(object_of(&dropped, version));
                    let record = self.record(kind, name, OP_DROP, None, None, stamp);
                    (record, key)
                }
            };
            let after = (record.op == OP_CREATE).then(|| record.clone());
            overlay.insert(key, after);
            records.push(record);
            stamp = stamp.saturating_add(1);
        }
        Ok((records, committed))
    }

    /// A log row of this registry, stamped `created_at_us`.
    fn record(
        &self,
        kind: &str,
        name: &str,
        op: &str,
        location: Option<String>,
        definition: Option<String>,
        created_at_us: i64,
    ) -> Record {
        Record {
            kind: kind.to_string(),
            name: name.to_string(),
            op: op.to_string(),
            location,
            definition,
            created_at_us,
            writer: self.writer.clone(),
        }
    }

    /// Names of the live tables, sorted.
    pub fn table_names(&self) -> Vec<String> {
        self.read_state()
            .live
            .keys()
            .filter(|(k, _)| k == KIND_TABLE)
            .map(|(_, n)| n.clone())
            .collect()
    }

    /// The live table `name`, if any.
    pub fn table(&self, name: &str) -> Option<TableEntry> {
        let state = self.read_state();
        let r = state
            .live
            .get(&(KIND_TABLE.to_string(), name.to_string()))?;
        entry_of(r)
    }

    /// Records a new table. Fails with [`Error::TableExists`] if the name is taken.
    pub async fn create_table(&self, entry: &TableEntry) -> Result<()> {
        self.commit(vec![Change::CreateTable(entry.clone())])
            .await
            .map(|_| ())
    }

    /// Forgets the table `name` and returns what it was. Fails with [`Error::TableNotFound`].
    pub async fn drop_table(&self, name: &str) -> Result<TableEntry> {
        let change = Change::DropTable {
            name: name.to_string(),
        };
        let mut committed = self.commit(vec![change]).await?;
        committed
            .dropped_tables
            .pop()
            .ok_or_else(|| Error::TableNotFound {
                name: name.to_string(),
            })
    }
}

/// One change of a registry commit ([`Registry::commit`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Records a new table; its name must be free.
    CreateTable(TableEntry),
    /// Forgets a table; it must exist.
    DropTable { name: String },
    /// Records an object's definition; its name must be free unless `replace`.
    CreateObject {
        kind: String,
        name: String,
        definition: String,
        replace: bool,
    },
    /// Forgets an object; it must exist.
    DropObject { kind: String, name: String },
    /// Forgets an object if it exists.
    DropObjectIfExists { kind: String, name: String },
}

impl Change {
    /// The kind and name of what this change creates, if it creates something (a training set
    /// version's name is `set@version`: the set's name is checked).
    fn created(&self) -> Option<(&str, &str)> {
        match self {
            Change::CreateTable(entry) => Some((KIND_TABLE, &entry.name)),
            Change::CreateObject { kind, name, .. } => {
                let name = name.rsplit_once('@').map_or(name.as_str(), |(set, _)| set);
                Some((kind.as_str(), name))
            }
            Change::DropTable { .. }
            | Change::DropObject { .. }
            | Change::DropObjectIfExists { .. } => None,
        }
    }
}

/// What a commit dropped, as it was before.
#[derive(Debug, Default)]
pub struct Committed {
    pub dropped_tables: Vec<TableEntry>,
    pub dropped_objects: Vec<ObjectEntry>,
}

/// How often [`Registry::commit`] re-reads the log and tries again when others commit first.
const MAX_COMMIT_ATTEMPTS: usize = 50;

/// The longest name of a table or object, in bytes.
pub const MAX_NAME_BYTES: usize = 255;

/// Refuses names that cannot be identifiers of a table or an object: empty or blank, longer than
/// [`MAX_NAME_BYTES`], holding control characters or path separators, or `.` / `..`. Names never
/// become paths (tables live in folders named by ids); these are refused because other tools show
/// and quote them, and a name that looks like a path is a mistake.
pub fn check_name(kind: &str, name: &str) -> Result<()> {
    let refuse = |reason: &str| {
        Err(Error::InvalidName {
            noun: kind.replace('_', " "),
            name: name.chars().take(80).collect(),
            reason: reason.to_string(),
        })
    };
    if name.trim().is_empty() {
        return refuse("a name cannot be empty or blank");
    }
    if name.len() > MAX_NAME_BYTES {
        return refuse(&format!("a name is at most {MAX_NAME_BYTES} bytes long"));
    }
    if name.chars().any(char::is_control) {
        return refuse("a name cannot hold control characters (newlines, tabs, NUL, ...)");
    }
    if name.contains(['/', '\\']) {
        return refuse("a name cannot hold `/` or `\\`; use a name such as `events_2026`");
    }
    if name == "." || name == ".." {
        return refuse("`.` and `..` are not names");
    }
    Ok(())
}

/// A Flywheel object (entity, feature view, ...) as the registry stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectEntry {
    pub kind: String,
    pub name: String,
    /// The object's definition, as JSON.
    pub definition: String,
    /// How many definitions the name has had (1 for the first `CREATE`; `CREATE OR REPLACE` adds one).
    pub definition_version: u64,
    /// When the current definition was committed, in microseconds since the epoch.
    pub created_at_us: i64,
}

impl ObjectEntry {
    /// The definition as its type (`FeatureViewDefinition`, `TrainingSetDefinition`, ...); an
    /// unreadable one is [`Error::UnreadableDefinition`], naming the object.
    pub fn decode<D: serde::de::DeserializeOwned>(&self) -> Result<D> {
        serde_json::from_str(&self.definition).map_err(|e| Error::UnreadableDefinition {
            kind: self.kind.clone(),
            name: self.name.clone(),
            reason: e.to_string(),
        })
    }
}

impl Registry {
    /// The typed definition of the live object `kind`/`name`; `None` when there is none.
    pub fn definition<D: serde::de::DeserializeOwned>(
        &self,
        kind: &str,
        name: &str,
    ) -> Result<Option<D>> {
        self.object(kind, name).map(|o| o.decode()).transpose()
    }

    /// The live objects of `kind` with their typed definitions, sorted by name; objects whose
    /// definition does not read as `D` are left out.
    pub fn definitions<D: serde::de::DeserializeOwned>(&self, kind: &str) -> Vec<(ObjectEntry, D)> {
        self.objects(kind)
            .into_iter()
            .filter_map(|o| o.decode().ok().map(|d| (o, d)))
            .collect()
    }

    /// The live objects of `kind`, sorted by name.
    pub fn objects(&self, kind: &str) -> Vec<ObjectEntry> {
        let state = self.read_state();
        state
            .live
            .iter()
            .filter(|((k, _), _)| k == kind)
            .map(|((_, n), r)| {
                object_of(
                    r,
                    state.versions.get(&(kind.to_string(), n.clone())).copied(),
                )
            })
            .collect()
    }

    /// The live object `kind`/`name`, if any.
    pub fn object(&self, kind: &str, name: &str) -> Option<ObjectEntry> {
        let state = self.read_state();
        let key = (kind.to_string(), name.to_string());
        state
            .live
            .get(&key)
            .map(|r| object_of(r, state.versions.get(&key).copied()))
    }

    /// Records the definition of an object; with `replace`, a new definition of an existing one
    /// (the old one stays in the log). Fails with [`Error::ObjectExists`] when the name is taken.
    pub async fn create_object(
        &self,
        kind: &str,
        name: &str,
        definition: String,
        replace: bool,
    ) -> Result<()> {
        let change = Change::CreateObject {
            kind: kind.to_string(),
            name: name.to_string(),
            definition,
            replace,
        };
        self.commit(vec![change]).await.map(|_| ())
    }

    /// Forgets the object `kind`/`name` and returns what it was. Fails with [`Error::ObjectNotFound`].
    pub async fn drop_object(&self, kind: &str, name: &str) -> Result<ObjectEntry> {
        let change = Change::DropObject {
            kind: kind.to_string(),
            name: name.to_string(),
        };
        let mut committed = self.commit(vec![change]).await?;
        committed
            .dropped_objects
            .pop()
            .ok_or_else(|| Error::ObjectNotFound {
                kind: kind.to_string(),
                name: name.to_string(),
            })
    }
}

/// Whether a commit failed because another writer committed first (so it can be tried again after
/// re-reading the table), as opposed to failing for good.
pub fn is_commit_race(e: &DeltaTableError) -> bool {
    use deltalake::kernel::transaction::TransactionError as T;
    match e {
        DeltaTableError::VersionAlreadyExists(_) => true,
        DeltaTableError::Transaction { source } => {
            matches!(source, T::MaxCommitAttempts(_) | T::CommitConflict(_))
        }
        _ => false,
    }
}

fn object_of(r: &Record, version: Option<u64>) -> ObjectEntry {
    ObjectEntry {
        kind: r.kind.clone(),
        name: r.name.clone(),
        definition: r.definition.clone().unwrap_or_default(),
        definition_version: version.unwrap_or(1),
        created_at_us: r.created_at_us,
    }
}

fn entry_of(r: &Record) -> Option<TableEntry> {
    let location = Url::parse(r.location.as_deref()?).ok()?;
    let def: TableDefinition = serde_json::from_str(r.definition.as_deref()?).ok()?;
    Some(TableEntry {
        name: r.name.clone(),
        location,
        kind: def.kind,
    })
}

/// Whether an error means "there is no Delta table here".
pub(crate) fn is_not_a_table(e: &DeltaTableError) -> bool {
    matches!(
        e,
        DeltaTableError::NotATable(_) | DeltaTableError::InvalidTableLocation(_)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn registry(dir: &std::path::Path) -> Registry {
        let wh = Warehouse::open(dir.to_str().expect("utf8")).expect("warehouse");
        Registry::open(wh).await.expect("registry")
    }

    fn entry(name: &str) -> TableEntry {
        TableEntry {
            name: name.into(),
            location: Url::parse(&format!("file:///tmp/x/{name}/")).expect("url"),
            kind: TableKind::External,
        }
    }

    #[tokio::test]
    async fn create_drop_and_persist() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = registry(dir.path()).await;
        r.create_table(&entry("a")).await.expect("create a");
        r.create_table(&entry("b")).await.expect("create b");
        assert!(matches!(
            r.create_table(&entry("a")).await,
            Err(Error::TableExists { .. })
        ));
        r.drop_table("a").await.expect("drop a");
        assert!(matches!(
            r.drop_table("a").await,
            Err(Error::TableNotFound { .. })
        ));
        assert_eq!(r.table_names(), vec!["b".to_string()]);

        // A second registry on the same warehouse (another server) sees the same objects,
        // and sees what the first one writes after a refresh.
        let other = registry(dir.path()).await;
        assert_eq!(other.table_names(), vec!["b".to_string()]);
        r.create_table(&entry("c")).await.expect("create c");
        r.create_object("entity", "user", "{}".into(), false)
            .await
            .expect("entity");
        assert!(matches!(
            r.create_object("entity", "user", "{}".into(), false).await,
            Err(Error::ObjectExists { .. })
        ));
        r.create_object("entity", "user", "{\"v\":2}".into(), true)
            .await
            .expect("replace");
        other.refresh().await.expect("refresh");
        assert_eq!(other.table_names(), vec!["b".to_string(), "c".to_string()]);
        assert_eq!(other.table("c"), Some(entry("c")));
        let user = other
            .object("entity", "user")
            .expect("entity visible to the other server");
        assert_eq!(
            (user.definition.as_str(), user.definition_version),
            ("{\"v\":2}", 2)
        );
        assert_eq!(other.objects("entity").len(), 1);
        other.drop_object("entity", "user").await.expect("drop");
        assert!(matches!(
            other.drop_object("entity", "user").await,
            Err(Error::ObjectNotFound { .. })
        ));
    }

    #[tokio::test]
    async fn one_of_two_servers_creating_one_name_at_once_wins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = registry(dir.path()).await;
        let b = registry(dir.path()).await;
        for round in 0..10 {
            let same = entry(&format!("same_{round}"));
            let (ra, rb) = tokio::join!(a.create_table(&same), b.create_table(&same));
            let wins = [&ra, &rb].iter().filter(|r| r.is_ok()).count();
            assert_eq!(wins, 1, "round {round}: {ra:?} / {rb:?}");
            for r in [ra, rb] {
                assert!(
                    matches!(r, Ok(()) | Err(Error::TableExists { .. })),
                    "{r:?}"
                );
            }
        }
        a.refresh().await.expect("refresh");
        b.refresh().await.expect("refresh");
        assert_eq!(a.table_names().len(), 10);
        assert_eq!(a.table_names(), b.table_names());
    }

    #[tokio::test]
    async fn a_commit_records_all_of_its_changes_or_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = registry(dir.path()).await;
        r.create_table(&entry("taken")).await.expect("create");
        let changes = vec![
            Change::CreateObject {
                kind: "training_set".into(),
                name: "ts".into(),
                definition: "{}".into(),
                replace: false,
            },
            Change::CreateTable(entry("taken")),
        ];
        assert!(matches!(
            r.commit(changes).await,
            Err(Error::TableExists { .. })
        ));
        assert!(r.object("training_set", "ts").is_none(), "nothing recorded");
        let committed = r
            .commit(vec![
                Change::CreateTable(entry("ts")),
                Change::CreateObject {
                    kind: "training_set".into(),
                    name: "ts".into(),
                    definition: "{}".into(),
                    replace: false,
                },
                Change::DropTable {
                    name: "taken".into(),
                },
            ])
            .await
            .expect("commits");
        assert_eq!(committed.dropped_tables, vec![entry("taken")]);
        assert!(r.object("training_set", "ts").is_some());
        assert_eq!(r.table_names(), vec!["ts".to_string()]);
    }

    #[tokio::test]
    async fn names_that_are_not_identifiers_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = registry(dir.path()).await;
        for bad in [
            "",
            " ",
            "..",
            ".",
            "a/b",
            "../../etc",
            "a\\b",
            "a\nb",
            &"x".repeat(256),
        ] {
            assert!(
                matches!(
                    r.create_table(&entry(bad)).await,
                    Err(Error::InvalidName { .. })
                ),
                "{bad:?}"
            );
        }
        r.create_table(&entry("Événements 2026"))
            .await
            .expect("any other text is a name");
    }
}
