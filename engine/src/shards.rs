//! Splitting one query's result into `n` shards that together hold every row exactly once.
//!
//! Training workers each read one shard, in parallel, possibly from different processes and
//! through different requests. Each shard is planned independently, so a shard must be a
//! deterministic function of (query, `k`, `n`):
//!
//! - When the physical plan, planned for `n` target partitions, is a chain of per-partition
//!   operators over file scans (projections, filters, ... but no repartitioning, whose output
//!   depends on timing), and it has at least `n` partitions, shard `k` runs only partitions
//!   `k, k + n, k + 2n, ...`. A training set or table read is this case: each shard reads only its
//!   byte ranges of the Parquet files. (File-scan work stealing is switched off for these plans:
//!   with it, a partition executed alone reads its idle siblings' files as well.)
//! - Otherwise (joins, aggregates, a table too small to split), every shard runs the whole query and
//!   keeps the rows whose hash (over all columns, with a fixed seed) falls in shard `k`: correct for
//!   any query that gives the same rows every time it runs, at `n` times the compute. A query
//!   calling a function whose value changes from run to run (`random()`, `now()`) is refused on
//!   this path: each shard would keep its share of different rows.
//!
//! Either way the stream is consumed batch by batch; nothing is collected.

use std::sync::Arc;

use arrow::array::{BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use datafusion::common::TableReference;
use datafusion::common::hash_utils::{RandomState, create_hashes};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::provider_as_source;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, Volatility};
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::stream::{
    RecordBatchReceiverStreamBuilder, RecordBatchStreamAdapter,
};
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties, execute_stream};
use futures::StreamExt;

use super::{Engine, Planned};
use crate::{Error, Result};

/// The most shards one request may ask for.
pub const MAX_SHARDS: usize = 1024;

/// Rows per batch of a sharded read.
const SHARD_BATCH_ROWS: usize = 65_536;

/// Seed of the row hash used by hash sharding (fixed: every request must agree).
const SHARD_HASH_SEED: u64 = 0x666c_7977_6865_656c;

impl Engine {
    /// How many partitions a read in `shards` shards is planned for: at least one per core, so a
    /// lone stream still decodes on all cores, and a multiple of `shards`, so shards get equal
    /// shares; no more, so parallel shards do not oversubscribe the cores (each running partition
    /// holds a row group in memory).
    pub fn shard_partitions(&self, shards: usize) -> usize {
        let cores = self.context().copied_config().target_partitions().max(1);
        let shards = shards.max(1);
        cores
            .div_ceil(shards)
            .saturating_mul(shards)
            .min(MAX_SHARDS)
    }

    /// Streams one shard of a sharded read of `source`.
    ///
    /// The read is planned for `spec.partitions` partitions (see [`Engine::shard_partitions`];
    /// every shard of one read must use the same number), and a shard's partitions run
    /// concurrently.
    pub async fn read_shard(
        &self,
        source: &ShardSource,
        spec: ShardSpec,
    ) -> Result<SendableRecordBatchStream> {
        let started = tokio::time::Instant::now();
        let ShardSpec {
            shard,
            shards,
            partitions,
        } = spec;
        if shards == 0 || shards > MAX_SHARDS || shard >= shards {
            return Err(Error::InvalidInput(format!(
                "shard {shard} of {shards} does not exist: ask for 1 to {MAX_SHARDS} shards and a \
                 shard number below their count"
            )));
        }
        if partitions < shards || partitions > MAX_SHARDS {
            return Err(Error::InvalidInput(format!(
                "a shard ticket's partitions ({partitions}) must be between its shard count \
                 ({shards}) and {MAX_SHARDS}: use the tickets a FlightInfo hands out"
            )));
        }
        let logical = self.source_plan(source).await?;
        // Bigger batches: fewer, larger Flight messages for bulk downloads.
        let mut config = self
            .context()
            .copied_config()
            .with_batch_size(SHARD_BATCH_ROWS);
        config.options_mut().execution.target_partitions = partitions;
        // A partition must read only its own file group: with work stealing (DataFusion's default),
        // a partition running alone would take its idle siblings' files too.
        config
            .options_mut()
            .execution
            .enable_file_stream_work_stealing = false;
        let state = SessionStateBuilder::new_from_existing(self.context().state())
            .with_config(config)
            .build();
        let physical = state
            .create_physical_plan(&logical)
            .await
            .map_err(Error::from_datafusion)?;
        let task = state.task_ctx();
        let partitions = physical.output_partitioning().partition_count();
        let per_partition = is_per_partition(&physical);
        tracing::debug!(
            shard,
            shards,
            partitions,
            per_partition,
            plan = %datafusion::physical_plan::displayable(physical.as_ref()).indent(false),
            "sharded read"
        );
        let by_partition = per_partition && partitions >= shards;
        if !by_partition
            && shards > 1
            && let Some(function) = varying_function(&logical)
        {
            return Err(Error::InvalidInput(format!(
                "this query cannot be read in {shards} shards: split by row hash, it runs once \
                 per shard, so its rows must be the same each time, and `{function}()` gives \
                 new values every run; read it in one shard (shards=1), or write it to a table \
                 first (CREATE TABLE t AS ...) and read the table in shards"
            )));
        }
        if by_partition {
            // This shard's partitions, each decoded on its own task (on all cores), merged.
            let mut merged = RecordBatchReceiverStreamBuilder::new(physical.schema(), 2);
            for p in (shard..partitions).step_by(shards) {
                let tx = merged.tx();
                let plan = Arc::clone(&physical);
                let task = Arc::clone(&task);
                merged.spawn(async move {
                    let mut batches = plan.execute(p, task)?;
                    while let Some(batch) = batches.next().await {
                        if tx.send(batch).await.is_err() {
                            // The client hung up.
                            break;
                        }
                    }
                    Ok(())
                });
            }
            return Ok(self.limits.timed_stream(merged.build(), started));
        }
        let schema = physical.schema();
        let all = execute_stream(physical, task).map_err(Error::from_datafusion)?;
        let kept = all.map(move |batch| keep_shard(batch?, shard, shards));
        let stream = Box::pin(RecordBatchStreamAdapter::new(schema, kept));
        Ok(self.limits.timed_stream(stream, started))
    }
}

/// Whether each output partition of `plan` is computed from one input partition only, down to the
/// scans (so running some partitions reads only their share of the input, deterministically).
fn is_per_partition(plan: &Arc<dyn ExecutionPlan>) -> bool {
    let passes_through = plan.is::<ProjectionExec>()
        || plan.is::<FilterExec>()
        || plan.name().starts_with("DeltaScan");
    let children = plan.children();
    if children.is_empty() {
        // A scan (Parquet files, memory, ...): its partitions are fixed by its file groups.
        return plan.name() == "DataSourceExec";
    }
    passes_through && children.iter().all(|c| is_per_partition(c))
}

/// The first function of `plan` (subqueries included) whose value may change from one run to the
/// next (`random()`, `now()`, `uuid()`: volatile or stable), by name.
fn varying_function(plan: &LogicalPlan) -> Option<String> {
    let mut found = None;
    let _ = plan.apply_with_subqueries(|node| {
        for e in node.expressions() {
            e.apply(|e| {
                if let Expr::ScalarFunction(f) = e
                    && f.func.signature().volatility != Volatility::Immutable
                {
                    found = Some(f.name().to_string());
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            })?;
        }
        Ok(match found {
            Some(_) => TreeNodeRecursion::Stop,
            None => TreeNodeRecursion::Continue,
        })
    });
    found
}

/// The rows of `batch` that belong to shard `shard` of `shards` by their hash.
fn keep_shard(
    batch: RecordBatch,
    shard: usize,
    shards: usize,
) -> std::result::Result<RecordBatch, DataFusionError> {
    if shards == 1 {
        return Ok(batch);
    }
    let mut hashes = vec![0u64; batch.num_rows()];
    let state = RandomState::with_seed(SHARD_HASH_SEED);
    create_hashes(batch.columns(), &state, &mut hashes)?;
    let n = shards as u64;
    let k = shard as u64;
    let mask: BooleanArray = hashes.iter().map(|h| Some(h % n == k)).collect();
    Ok(filter_record_batch(&batch, &mask)?)
}

/// A table pinned at one version: what a sharded read of it needs to know up front.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedTable {
    pub name: String,
    pub version: u64,
    /// Data files at that version (the default shard count).
    pub files: usize,
    /// Rows at that version, from the Delta log's file statistics (`None` when a file has none).
    pub rows: Option<u64>,
}

/// What a sharded read reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardSource {
    /// A table (feature views, labels and training sets included) at one version.
    Table { name: String, version: u64 },
    /// A client's query.
    Query(String),
}

/// Which shard of a read, and how the read is split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardSpec {
    pub shard: usize,
    pub shards: usize,
    /// The partition count every shard of the read plans for ([`Engine::shard_partitions`]).
    pub partitions: usize,
}

impl Engine {
    /// The Delta table registered as `name` (its registered name, and the table at `version`, or
    /// at its latest version), after catching up with the registry.
    async fn load_registered(
        &self,
        name: &str,
        version: Option<u64>,
    ) -> Result<(String, deltalake::DeltaTable)> {
        self.registry().refresh().await?;
        let entry =
            self.registry()
                .table(name)
                .ok_or_else(|| flywheel_catalog::Error::TableNotFound {
                    name: name.to_string(),
                })?;
        let target = version.map(flywheel_catalog::TravelTarget::Version);
        let table = flywheel_catalog::load_table(&entry, target.as_ref()).await?;
        Ok((entry.name, table))
    }

    /// Pins table `name` at `version` (default: its latest version).
    pub async fn pin_table(&self, name: &str, version: Option<u64>) -> Result<PinnedTable> {
        let (name, table) = self.load_registered(name, version).await?;
        let snapshot = table.snapshot()?;
        let (mut files, mut rows) = (0, Some(0u64));
        for file in snapshot.log_data() {
            files += 1;
            rows = rows.zip(file.num_records()).map(|(n, m)| n + m as u64);
        }
        Ok(PinnedTable {
            name,
            version: table.version().unwrap_or(0),
            files,
            rows,
        })
    }

    /// The plan of a sharded read's source: a table version scanned through the catalog's
    /// time-travel schema, or the client's query planned as any statement.
    pub async fn source_plan(&self, source: &ShardSource) -> Result<LogicalPlan> {
        match source {
            ShardSource::Table { name, version } => self.table_version_plan(name, *version).await,
            ShardSource::Query(sql) => match self.plan(self.parse_one(sql)?).await? {
                Planned::Query(logical) => Ok(logical),
                _ => Err(Error::InvalidInput(
                    "a sharded read takes a query (SELECT ...); run statements through \
                         Flight SQL"
                        .into(),
                )),
            },
        }
    }

    /// A scan of every column of table `name` at `version` (its columns qualified by the hidden
    /// time-travel name; alias it to name them otherwise).
    pub async fn table_version_plan(&self, name: &str, version: u64) -> Result<LogicalPlan> {
        let reference = TableReference::full(
            flywheel_catalog::DEFAULT_CATALOG,
            flywheel_catalog::TIME_TRAVEL_SCHEMA,
            flywheel_catalog::TravelTarget::Version(version).encode(name),
        );
        let provider = self
            .context()
            .table_provider(reference.clone())
            .await
            .map_err(Error::from_datafusion)?;
        // Named as `t VERSION AS OF n` is after the time-travel rewrite, which is what lineage and
        // incremental refreshes recognise a pinned input by.
        LogicalPlanBuilder::scan(reference, provider_as_source(provider), None)
            .and_then(LogicalPlanBuilder::build)
            .map_err(Error::from_datafusion)
    }
}
