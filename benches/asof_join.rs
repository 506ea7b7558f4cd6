//! Criterion bench of the `ASOF JOIN` operator alone: 1M label rows against 10M feature rows over
//! 100k keys (the shape of `../shared/bench/gen_pit.py`), in memory, two partitions per side.
//!
//! `cargo bench --bench asof_join` (release profile; the data is generated from a fixed seed).

use std::sync::Arc;

use arrow::array::{Float64Array, Int64Array, RecordBatch, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use criterion::{Criterion, criterion_group, criterion_main};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties, common::collect};
use datafusion::prelude::SessionContext;
use flywheel::asof::{AsOfJoinExec, MatchOp};

const LABELS: usize = 1_000_000;
const FEATURES: usize = 10_000_000;
const KEYS: u64 = 100_000;
const BATCH: usize = 8192;
const SPAN_US: u64 = 90 * 24 * 3600 * 1_000_000;

/// A small deterministic generator (SplitMix64), so the data needs no extra crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn side(rows: usize, with_value: bool, rng: &mut Rng) -> (Arc<Schema>, Vec<Vec<RecordBatch>>) {
    let ts_type = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let mut fields = vec![
        Field::new("user_id", DataType::Int64, false),
        Field::new("ts", ts_type, false),
    ];
    if with_value {
        fields.push(Field::new("f0", DataType::Float64, false));
    }
    let schema = Arc::new(Schema::new(fields));
    let mut parts = vec![Vec::new(), Vec::new()];
    let mut start = 0;
    while start < rows {
        let n = BATCH.min(rows - start);
        let keys: Int64Array = (0..n).map(|_| (rng.next() % KEYS) as i64).collect();
        let ts = TimestampMicrosecondArray::from(
            (0..n)
                .map(|_| 1_767_225_600_000_000 + (rng.next() % SPAN_US) as i64)
                .collect::<Vec<i64>>(),
        )
        .with_timezone("UTC");
        let mut cols: Vec<arrow::array::ArrayRef> = vec![Arc::new(keys), Arc::new(ts)];
        if with_value {
            cols.push(Arc::new(
                (0..n)
                    .map(|_| (rng.next() % 1000) as f64)
                    .collect::<Float64Array>(),
            ));
        }
        let batch = RecordBatch::try_new(Arc::clone(&schema), cols).expect("batch");
        parts[(start / BATCH) % 2].push(batch);
        start += n;
    }
    (schema, parts)
}

fn bench(c: &mut Criterion) {
    let mut rng = Rng(51);
    let (fs, features) = side(FEATURES, true, &mut rng);
    let (ls, labels) = side(LABELS, false, &mut rng);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let ctx = SessionContext::new().task_ctx();
    let col = |name: &str, i: usize| Arc::new(Column::new(name, i)) as Arc<dyn PhysicalExpr>;
    let mut group = c.benchmark_group("asof_join");
    group.sample_size(10);
    group.bench_function("labels=1M/features=10M/keys=100k", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let left =
                    MemorySourceConfig::try_new_exec(&labels, Arc::clone(&ls), None).expect("left");
                let right = MemorySourceConfig::try_new_exec(&features, Arc::clone(&fs), None)
                    .expect("right");
                let exec: Arc<dyn ExecutionPlan> = Arc::new(
                    AsOfJoinExec::try_new(
                        left,
                        right,
                        vec![col("user_id", 0)],
                        vec![col("user_id", 0)],
                        col("ts", 1),
                        col("ts", 1),
                        MatchOp::AtOrBefore,
                    )
                    .expect("exec"),
                );
                let mut tasks = Vec::new();
                for p in 0..exec.output_partitioning().partition_count() {
                    let stream = exec.execute(p, Arc::clone(&ctx)).expect("execute");
                    tasks.push(tokio::spawn(collect(stream)));
                }
                let mut rows = 0;
                for t in tasks {
                    rows += t
                        .await
                        .expect("join")
                        .expect("collect")
                        .iter()
                        .map(|b| b.num_rows())
                        .sum::<usize>();
                }
                assert_eq!(rows, LABELS);
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
