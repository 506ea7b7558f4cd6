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
//! The rows stream from the input plan through a one-shot source that counts them (the count is the
//! statement's result). `WriteBuilder` matches columns by name and casts them to the table's types;
//! a column the input lacks is NULL, a column the table lacks is refused. `INSERT INTO` already
//! hands it the table's columns in order, cast by DataFusion's planner; bulk ingest hands it the
//! client's batches as they came.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{RecordBatch, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{DmlStatement, LogicalPlan, WriteOp};
use deltalake::operations::write::WriteBuilder;
use deltalake::protocol::SaveMode;
use flywheel_catalog::load_table;

use super::{Engine, Output, ddl, ingest, parquet_files};
use crate::{Error, Result};

/// The warehouse table and the input rows of `plan`, when it is an `INSERT INTO` (append) of a
/// table this module writes; `None` for any other plan (it runs as DataFusion plans it).
pub(super) fn target(engine: &Engine, plan: &LogicalPlan) -> Option<(String, LogicalPlan)> {
    let LogicalPlan::Dml(DmlStatement {
        table_name,
        op: WriteOp::Insert(InsertOp::Append),
        input,
        ..
    }) = plan
    else {
        return None;
    };
    let name = ddl::warehouse_name(table_name)?;
    engine.registry().table(&name)?;
    Some((name, input.as_ref().clone()))
}

/// Appends the rows of `input` to the warehouse table `name` as one commit; returns how many.
pub(super) async fn append(engine: &Engine, name: &str, input: LogicalPlan) -> Result<u64> {
    let entry =
        engine
            .registry()
            .table(name)
            .ok_or_else(|| flywheel_catalog::Error::TableNotFound {
                name: name.to_string(),
            })?;
    let table = load_table(&entry, None).await?;
    let snapshot = table.snapshot()?.snapshot().clone();
    let properties =
        parquet_files::writer_properties(snapshot.arrow_schema().fields(), engine.data_pages);
    let rows = Arc::new(AtomicU64::new(0));
    let stream = engine
        .context()
        .execute_logical_plan(input)
        .await
        .map_err(Error::from_datafusion)?
        .execute_stream()
        .await
        .map_err(Error::from_datafusion)?;
    let counted = ingest::one_shot_plan(stream.schema(), stream, Arc::clone(&rows))?;
    WriteBuilder::new(table.log_store(), Some(snapshot))
        .with_input_plan(counted)
        .with_save_mode(SaveMode::Append)
        .with_writer_properties(properties)
        .with_session_state(Arc::new(engine.context().state()))
        .await?;
    Ok(rows.load(Ordering::Relaxed))
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

    use arrow::array::{Float64Array, Int64Array};
    use bytes::Bytes;
    use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
    use futures::stream;

    use super::*;
    use crate::engine::parquet_files::tests::{Kind, pages};
    use crate::engine::{IfExists, IfMissing, IngestTarget};

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

    #[tokio::test]
    async fn inserted_and_ingested_rows_are_written_as_created_tables_are() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = Engine::open(dir.path().to_str().expect("utf-8"))
            .await
            .expect("engine");
        engine
            .sql("CREATE TABLE events (id BIGINT, score DOUBLE)")
            .await
            .expect("create");
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
        let ingested = engine
            .ingest(&target, schema, batches)
            .await
            .expect("ingest");
        assert_eq!(ingested, 50_000);
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
