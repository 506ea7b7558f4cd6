//! sqllogictest runner: every `tests/slt/*.slt` file against a fresh warehouse in a temp dir.
//!
//! `cargo test --test slt` runs them all; `cargo test --test slt -- NAME` runs the files whose name
//! contains NAME. Each file may use `${WAREHOUSE}` (the warehouse folder of that file's run) and
//! `${EXTERNAL}` (a Delta table of four rows `(user_id BIGINT, kind VARCHAR)` outside the warehouse,
//! written by delta-rs, in a folder the engine's clients may use). Other files outside the
//! warehouse are out of bounds, as for a server's clients.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, RecordBatch};
use arrow::datatypes::DataType;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use async_trait::async_trait;
use flywheel::engine::FileAccess;
use flywheel::{Engine, EngineOptions};
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType};

#[derive(Debug)]
struct SltError(String);

impl std::fmt::Display for SltError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SltError {}

struct FlywheelDb {
    engine: Engine,
}

fn column_type(t: &DataType) -> DefaultColumnType {
    if t.is_integer() {
        DefaultColumnType::Integer
    } else if t.is_floating() || matches!(t, DataType::Decimal128(..) | DataType::Decimal256(..)) {
        DefaultColumnType::FloatingPoint
    } else {
        DefaultColumnType::Text
    }
}

fn rows_of(batches: &[RecordBatch]) -> Result<Vec<Vec<String>>, SltError> {
    let options = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for batch in batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| SltError(e.to_string()))?;
        for row in 0..batch.num_rows() {
            let mut cells = Vec::with_capacity(formatters.len());
            for (f, col) in formatters.iter().zip(batch.columns()) {
                let cell = if col.is_null(row) {
                    "NULL".to_string()
                } else {
                    f.value(row).to_string()
                };
                cells.push(if cell.is_empty() {
                    "(empty)".to_string()
                } else {
                    cell
                });
            }
            rows.push(cells);
        }
    }
    Ok(rows)
}

#[async_trait]
impl AsyncDB for FlywheelDb {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<Self::ColumnType>, Self::Error> {
        let output = self
            .engine
            .sql(sql)
            .await
            .map_err(|e| SltError(e.user_message()))?;
        let was_query = output.is_query();
        let count = output.row_count();
        let schema = output.schema();
        let batches = output
            .collect()
            .await
            .map_err(|e| SltError(e.user_message()))?;
        if !was_query && schema.fields().is_empty() {
            return Ok(DBOutput::StatementComplete(0));
        }
        if let (false, Some(n)) = (was_query, count) {
            return Ok(DBOutput::StatementComplete(n));
        }
        Ok(DBOutput::Rows {
            types: schema
                .fields()
                .iter()
                .map(|f| column_type(f.data_type()))
                .collect(),
            rows: rows_of(&batches)?,
        })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "flywheel"
    }

    async fn sleep(dur: std::time::Duration) {
        tokio::time::sleep(dur).await;
    }
}

async fn run_file(path: &Path) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let warehouse = dir.path().join("warehouse");
    let location = warehouse.display().to_string();
    let external = dir.path().join("data").join("events");
    write_external_table(&external).await?;
    let options = EngineOptions {
        file_access: FileAccess::restricted_to(&[dir.path().join("data").display().to_string()])
            .map_err(|e| e.to_string())?,
        ..EngineOptions::default()
    };
    let engine = Engine::open_with(&location, &options)
        .await
        .map_err(|e| e.to_string())?;
    let shared = Arc::new(engine);
    let mut runner = sqllogictest::Runner::new(move || {
        let engine = (*shared).clone();
        async move { Ok(FlywheelDb { engine }) }
    });
    runner.set_var("WAREHOUSE".into(), location);
    runner.set_var("EXTERNAL".into(), external.display().to_string());
    runner.with_column_validator(|actual, expected| actual == expected);
    runner
        .run_file_async(path)
        .await
        .map_err(|e| e.display(false).to_string())
}

/// A Delta table written by delta-rs (not by Flywheel) at `path`.
async fn write_external_table(path: &Path) -> Result<(), String> {
    use arrow::array::{Int64Array, StringArray};
    std::fs::create_dir_all(path).map_err(|e| e.to_string())?;
    let batch = RecordBatch::try_from_iter([
        (
            "user_id",
            Arc::new(Int64Array::from(vec![1, 2, 3, 4])) as arrow::array::ArrayRef,
        ),
        (
            "kind",
            Arc::new(StringArray::from(vec!["view", "view", "buy", "view"])) as _,
        ),
    ])
    .map_err(|e| e.to_string())?;
    let url = url::Url::from_directory_path(path).map_err(|()| "not a path".to_string())?;
    deltalake::DeltaTable::try_from_url(url)
        .await
        .map_err(|e| e.to_string())?
        .write(vec![batch])
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

fn slt_files(filter: Option<&str>) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "slt"));
    if let Some(f) = filter {
        files.retain(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().contains(f))
        });
    }
    files.sort();
    files
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // Flags that cargo/nextest pass to test binaries (`--nocapture`, `--list`, ...) are ignored.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let files = slt_files(filter.as_deref());
    let (mut passed, mut failed) = (0, 0);
    for file in &files {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        match run_file(file).await {
            Ok(()) => {
                passed += 1;
                println!("slt {name} ... ok");
            }
            Err(e) => {
                failed += 1;
                println!("slt {name} ... FAILED\n{e}");
            }
        }
    }
    println!("\nslt: {passed} passed, {failed} failed");
    if failed > 0 || files.is_empty() {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}
