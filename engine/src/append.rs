//! Appends to warehouse tables (`INSERT INTO`, bulk ingest's `append`), written as every other
//! Flywheel table is.
//!
//! DataFusion's insert path ends in delta-rs's `DeltaDataSink`, which takes no Parquet writer
//! properties: its files have V1 pages, every column Snappy-compressed and every float column's
//! dictionary tried and abandoned, so an appended event log cost more to write and to read than a
//! table `CREATE TABLE AS` wrote ([`parquet_files`]). An append to a table of the warehouse
//! (managed or external) goes through delta-rs's `WriteBuilder` in append mode instead, with
//! [`parquet_files::writer_properties`] for the table's columns: one Delta commit, made only after
//! every row was written, so a failure leaves the table as it was.
//!
//! The rows stream from the input plan, are shaped into the table's columns ([`Conform`]) and
//! go through a one-shot source that counts them (the count is the statement's result). Columns
//! are matched by name and cast to the table's types; a nullable column the rows lack is NULL, a
//! generated column they lack is computed by delta-rs from its expression. A
//! column the table lacks, a missing NOT NULL column, a value that does not cast or a NULL in a
//! NOT NULL column fails the append with the table and the column named, and nothing is committed
//! (delta-rs's sink dropped extra columns without a word). `INSERT INTO` already arrives in the
//! table's shape, cast by DataFusion's planner; bulk ingest brings the client's batches as they
//! came. `WriteBuilder` also keeps the rules of tables other writers made: rows that break a CHECK
//! constraint or invariant are refused (the sink wrote them), generated columns are computed. The
//! tables of feature views, labels and training sets are not appended to (their rows come from
//! their definitions).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{ArrayRef, RecordBatch, UInt64Array, new_null_array};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{DmlStatement, Expr, LogicalPlan, LogicalPlanBuilder, WriteOp};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use deltalake::delta_datafusion::DataFusionMixins as _;
use deltalake::operations::write::WriteBuilder;
use deltalake::protocol::SaveMode;
use flywheel_catalog::{TableEntry, load_table};
use futures::StreamExt as _;

use super::one_shot::one_shot_plan;
use super::{Engine, Output, ddl, parquet_files};
use crate::{Error, Result};

/// The warehouse table and the input rows of `plan`, when it is an `INSERT INTO` (append) of a
/// table this module writes; `None` for any other plan (it runs as DataFusion plans it).
pub(super) fn target(engine: &Engine, plan: &LogicalPlan) -> Option<(TableEntry, LogicalPlan)> {
    let LogicalPlan::Dml(DmlStatement {
        table_name,
        op: WriteOp::Insert(InsertOp::Append),
        input,
        ..
    }) = plan
    else {
        return None;
    };
    let entry = engine.registry().table(&ddl::warehouse_name(table_name)?)?;
    Some((entry, input.as_ref().clone()))
}

/// Appends the rows of `input` to the warehouse table `entry` as one commit; returns how many.
/// The caller has refused the tables of Flywheel's objects ([`ddl::refuse_object_table`]).
pub(super) async fn append(engine: &Engine, entry: &TableEntry, input: LogicalPlan) -> Result<u64> {
    let name = entry.name.as_str();
    let table = load_table(entry, None).await?;
    let snapshot = table.snapshot()?.snapshot().clone();
    let properties =
        parquet_files::writer_properties(snapshot.arrow_schema().fields(), engine.data_pages);
    let table_shape = snapshot.input_schema();
    let input = without_unnamed_generated(input, &table_shape)?;
    let conform = Conform::new(name, input.schema().as_arrow(), &table_shape)?;
    let shape = Arc::clone(&conform.shape);
    let rows = Arc::new(AtomicU64::new(0));
    let stream = engine.stream(input).await?;
    let conformed = stream.map(move |batch| conform.apply(&batch?));
    let conformed = Box::pin(RecordBatchStreamAdapter::new(Arc::clone(&shape), conformed));
    let counted = one_shot_plan("ingest", shape, conformed, Some(Arc::clone(&rows)))?;
    WriteBuilder::new(table.log_store(), Some(snapshot))
        .with_input_plan(counted)
        .with_save_mode(SaveMode::Append)
        .with_writer_properties(properties)
        .with_session_state(Arc::new(engine.context().state()))
        .await
        .map_err(|e| refusal(name, &e).unwrap_or_else(|| e.into()))?;
    Ok(rows.load(Ordering::Relaxed))
}

/// How every refusal of [`Conform`] starts.
const REFUSED: &str = "cannot append to table `";

/// How delta-rs starts the error of rows that break the table's CHECK constraints, invariants or
/// NOT NULL columns (it checks them while writing; delta-rs's sink did not).
const INVALID_DATA: &str = "Invalid data found: ";

/// The refusal that stopped the write, if one did: [`Conform::apply`]'s, or delta-rs's for rows
/// that break the table's constraints. delta-rs turns a stream's error into text behind its own
/// prefixes ("Generic DeltaTable error: External error: ..."); the user needs only the refusal's
/// words, as a bad-input error rather than an internal one.
fn refusal(table: &str, e: &deltalake::DeltaTableError) -> Option<Error> {
    let text = e.to_string();
    if let Some(at) = text.find(REFUSED) {
        return Some(Error::InvalidInput(text[at..].to_string()));
    }
    let at = text.find(INVALID_DATA)?;
    Some(Error::InvalidInput(format!(
        "{REFUSED}{table}`: rows break its constraints (its Delta CHECK constraints, invariants \
         or NOT NULL columns); nothing was written. {}",
        &text[at + INVALID_DATA.len()..]
    )))
}

/// `input` without the NULLs DataFusion's `INSERT` planner put in the generated columns the
/// statement did not name (`INSERT INTO t (k) VALUES (5)` plans `NULL AS g`): left out, the writer
/// computes them. Any other input is returned as it is.
fn without_unnamed_generated(input: LogicalPlan, table: &Schema) -> Result<LogicalPlan> {
    fn is_null(e: &Expr) -> bool {
        match e {
            Expr::Alias(a) => is_null(&a.expr),
            Expr::Cast(c) => is_null(&c.expr),
            Expr::Literal(value, _) => value.is_null(),
            _ => false,
        }
    }
    let LogicalPlan::Projection(projection) = &input else {
        return Ok(input);
    };
    let generated = |name: &str| table.field_with_name(name).is_ok_and(is_generated);
    let (kept, dropped): (Vec<_>, Vec<_>) = projection
        .expr
        .iter()
        .zip(projection.schema.fields())
        .partition(|(e, f)| !(is_null(e) && generated(f.name())));
    if dropped.is_empty() {
        return Ok(input);
    }
    LogicalPlanBuilder::from(projection.input.as_ref().clone())
        .project(kept.into_iter().map(|(e, _)| e.clone()))
        .and_then(|b| b.build())
        .map_err(Error::from_datafusion)
}

/// Whether `field` is a Delta generated column (its metadata holds its SQL expression).
fn is_generated(field: &Field) -> bool {
    field.metadata().contains_key("delta.generationExpression")
}

/// How the input's batches become the table's: per table column, the input column it comes from
/// (`None`: all NULL). A generated column the input lacks is left out, for the writer to compute.
struct Conform {
    table: String,
    /// The table's columns the batches carry.
    shape: SchemaRef,
    sources: Vec<Option<usize>>,
}

impl Conform {
    /// The plan for rows of `input` into a table of `shape`, or the error that refuses them.
    fn new(table: &str, input: &Schema, shape: &SchemaRef) -> Result<Self> {
        if let Some(extra) = input
            .fields()
            .iter()
            .find(|f| shape.field_with_name(f.name()).is_err())
        {
            let columns: Vec<&str> = shape.fields().iter().map(|f| f.name().as_str()).collect();
            return Err(Error::InvalidInput(format!(
                "{REFUSED}{table}`: it has no column `{}` (its columns: {}); \
                 nothing was written",
                extra.name(),
                columns.join(", ")
            )));
        }
        let mut sources = Vec::with_capacity(shape.fields().len());
        let mut fields = Vec::with_capacity(shape.fields().len());
        for field in shape.fields() {
            let source = input.index_of(field.name()).ok();
            if source.is_none() && is_generated(field) {
                // Left out: the writer computes it from its expression.
                continue;
            }
            if source.is_none() && !field.is_nullable() {
                return Err(Error::InvalidInput(format!(
                    "{REFUSED}{table}`: its column `{}` is NOT NULL and the rows do \
                     not have it; nothing was written",
                    field.name()
                )));
            }
            sources.push(source);
            fields.push(Arc::clone(field));
        }
        Ok(Self {
            table: table.to_string(),
            shape: Arc::new(Schema::new_with_metadata(fields, shape.metadata().clone())),
            sources,
        })
    }

    /// `batch` as a batch of the table's columns.
    fn apply(&self, batch: &RecordBatch) -> datafusion::error::Result<RecordBatch> {
        let refuse = |what: String| {
            DataFusionError::External(Box::new(Error::InvalidInput(format!(
                "{REFUSED}{}`: {what}; nothing was written",
                self.table
            ))))
        };
        let cast = CastOptions {
            safe: false,
            ..CastOptions::default()
        };
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.sources.len());
        for (field, source) in self.shape.fields().iter().zip(&self.sources) {
            let column = match source {
                Some(i) if batch.column(*i).data_type() == field.data_type() => {
                    Arc::clone(batch.column(*i))
                }
                Some(i) => {
                    cast_with_options(batch.column(*i), field.data_type(), &cast).map_err(|e| {
                        refuse(format!(
                            "column `{}` ({}) cannot take a value: {e}",
                            field.name(),
                            field.data_type()
                        ))
                    })?
                }
                None => new_null_array(field.data_type(), batch.num_rows()),
            };
            columns.push(column);
        }
        RecordBatch::try_new(Arc::clone(&self.shape), columns).map_err(|e| refuse(e.to_string()))
    }
}

/// The result of an append: its row count, as DataFusion's DML reports it (a `count` column).
pub(super) fn count_output(rows: u64) -> Result<Output> {
    let schema = Arc::new(Schema::new(vec![Field::new(
        "count",
        DataType::UInt64,
        false,
    )]));
    let batch = RecordBatch::try_new(schema, vec![Arc::new(UInt64Array::from(vec![rows]))])?;
    Ok(Output::Batch(batch))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use arrow::array::{Float64Array, Int32Array, Int64Array, StringArray};
    use bytes::Bytes;
    use futures::stream;

    use super::*;
    use crate::parquet_files::tests::{Kind, pages};
    use crate::{IfExists, IfMissing, IngestTarget};

    fn parquet_files(dir: &Path) -> Vec<std::path::PathBuf> {
        let mut out = vec![];
        for entry in std::fs::read_dir(dir).expect("table folder") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                out.extend(parquet_files(&path));
            } else if path.extension().is_some_and(|e| e == "parquet") {
                out.push(path);
            }
        }
        out
    }

    async fn count(engine: &Engine, sql: &str) -> i64 {
        let batches = engine
            .sql(sql)
            .await
            .expect("query")
            .collect()
            .await
            .expect("rows");
        batches[0]
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("a count")
            .value(0)
    }

    async fn ingest(engine: &Engine, batch: RecordBatch) -> Result<u64> {
        let target = IngestTarget {
            table: "events".into(),
            if_missing: IfMissing::Fail,
            if_exists: IfExists::Append,
        };
        let schema = batch.schema();
        let batches = Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&schema),
            stream::iter([Ok(batch)]),
        ));
        engine.ingest(&target, schema, batches).await
    }

    /// An engine on a new warehouse whose table `events` has `columns`.
    async fn engine_with_events(columns: &str) -> (tempfile::TempDir, Engine) {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = Engine::open(dir.path().to_str().expect("utf-8"))
            .await
            .expect("engine");
        engine
            .sql(&format!("CREATE TABLE events ({columns})"))
            .await
            .expect("create");
        (dir, engine)
    }

    #[tokio::test]
    async fn appended_rows_take_the_tables_shape_or_are_refused_whole() {
        let (_dir, engine) =
            engine_with_events("id BIGINT NOT NULL, kind VARCHAR, score DOUBLE").await;

        // Columns by name, cast (Int32 -> Int64), a missing nullable column is NULL.
        let ok = RecordBatch::try_from_iter([
            (
                "kind",
                Arc::new(StringArray::from(vec!["a", "b"])) as ArrayRef,
            ),
            ("id", Arc::new(Int32Array::from(vec![1, 2])) as _),
        ])
        .expect("batch");
        assert_eq!(ingest(&engine, ok).await.expect("append"), 2);
        assert_eq!(
            count(&engine, "SELECT count(*) FROM events WHERE score IS NULL").await,
            2
        );

        let refused = [
            (
                RecordBatch::try_from_iter([
                    ("id", Arc::new(Int64Array::from(vec![3])) as ArrayRef),
                    ("extra", Arc::new(Float64Array::from(vec![1.0])) as _),
                ]),
                "it has no column `extra` (its columns: id, kind, score)",
            ),
            (
                RecordBatch::try_from_iter([(
                    "kind",
                    Arc::new(StringArray::from(vec!["c"])) as ArrayRef,
                )]),
                "its column `id` is NOT NULL and the rows do not have it",
            ),
            (
                RecordBatch::try_from_iter([(
                    "id",
                    Arc::new(StringArray::from(vec!["4", "x"])) as ArrayRef,
                )]),
                "column `id` (Int64) cannot take a value: Cast error: Cannot cast string 'x'",
            ),
            (
                RecordBatch::try_from_iter([(
                    "id",
                    Arc::new(Int64Array::from(vec![Some(5), None])) as ArrayRef,
                )]),
                "Column 'id' is declared as non-nullable but contains null values",
            ),
        ];
        for (batch, message) in refused {
            let e = ingest(&engine, batch.expect("batch"))
                .await
                .expect_err("refused");
            let text = e.to_string();
            assert!(
                text.starts_with("cannot append to table `events`") && text.contains(message),
                "{text}"
            );
            assert!(text.contains("nothing was written"), "{text}");
        }
        assert_eq!(count(&engine, "SELECT count(*) FROM events").await, 2);
    }

    #[tokio::test]
    async fn inserted_and_ingested_rows_are_written_as_created_tables_are() {
        let (_dir, engine) = engine_with_events("id BIGINT, score DOUBLE").await;
        let inserted = engine
            .sql("INSERT INTO events SELECT value, random() FROM range(0, 200000)")
            .await
            .expect("insert");
        assert_eq!(inserted.row_count(), Some(200_000));

        // Bulk ingest's append: columns by name, in another order.
        let batch = RecordBatch::try_from_iter([
            (
                "score",
                Arc::new(Float64Array::from_iter_values(
                    (0..50_000).map(|i| f64::from(i) * 0.618_033_988_7 % 1.0),
                )) as _,
            ),
            (
                "id",
                Arc::new(Int64Array::from_iter_values(200_000..250_000)) as _,
            ),
        ])
        .expect("batch");
        assert_eq!(ingest(&engine, batch).await.expect("ingest"), 50_000);
        assert_eq!(count(&engine, "SELECT count(*) FROM events").await, 250_000);
        assert_eq!(
            count(
                &engine,
                "SELECT count(*) FROM events WHERE id >= 200000 AND score < 1"
            )
            .await,
            50_000
        );

        // Two appends, two files; in each the float column has no dictionary and V2 pages.
        let location = engine
            .registry()
            .table("events")
            .expect("registered")
            .location;
        let path = location.to_file_path().expect("a local table");
        let files = parquet_files(&path);
        assert_eq!(files.len(), 2, "{files:?}");
        for file in files {
            let bytes = Bytes::from(std::fs::read(&file).expect("data file"));
            let scores = pages(&bytes, 1);
            assert!(!scores.is_empty());
            assert!(
                scores.iter().all(|p| matches!(p, Kind::V2 { .. })),
                "{}: {scores:?}",
                file.display()
            );
        }
    }
}
