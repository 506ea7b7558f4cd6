//! Property tests: [`AsOfJoinExec`] against a naive reference on random inputs (ties, NULL keys and
//! times, empty sides, skewed and sparse keys, several batches and partitions).

use std::sync::Arc;

use arrow::array::{Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties, common::collect};
use datafusion::prelude::SessionContext;
use proptest::prelude::*;

use super::{AsOfJoinExec, MatchOp};

/// One row of either side: (region key, int key, time). The row's id is its read order.
type Row = (Option<String>, Option<i64>, Option<i64>);

fn row_strategy(keys: i64, times: i64) -> impl Strategy<Value = Row> {
    (
        prop::option::weighted(
            0.9,
            prop::sample::select(vec!["eu".to_string(), "us".to_string()]),
        ),
        prop::option::weighted(0.9, 0..keys),
        prop::option::weighted(0.9, 0..times),
    )
}

fn schema(side: &str) -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new(format!("{side}_region"), DataType::Utf8, true),
        Field::new(format!("{side}_k"), DataType::Int64, true),
        Field::new(format!("{side}_t"), DataType::Int64, true),
        Field::new(format!("{side}_id"), DataType::Int64, false),
    ]))
}

/// Splits rows into `parts` partitions of batches of at most `batch` rows; ids follow read order.
fn partitions(side: &str, rows: &[Row], parts: usize, batch: usize) -> Vec<Vec<RecordBatch>> {
    let schema = schema(side);
    let per_part = rows.len().div_ceil(parts.max(1)).max(1);
    let mut out = vec![Vec::new(); parts.max(1)];
    for (p, chunk) in rows.chunks(per_part).enumerate() {
        let base = p * per_part;
        for (b, rows) in chunk.chunks(batch.max(1)).enumerate() {
            let start = base + b * batch.max(1);
            let region: StringArray = rows.iter().map(|r| r.0.clone()).collect();
            let k: Int64Array = rows.iter().map(|r| r.1).collect();
            let t: Int64Array = rows.iter().map(|r| r.2).collect();
            let id: Int64Array = (start..start + rows.len())
                .map(|i| Some(i as i64))
                .collect();
            let batch = RecordBatch::try_new(
                Arc::clone(&schema),
                vec![Arc::new(region), Arc::new(k), Arc::new(t), Arc::new(id)],
            )
            .expect("batch");
            out[p].push(batch);
        }
    }
    out
}

/// The reference: scan every right row; keep the greatest time that satisfies the condition, the
/// later row on ties.
fn naive(left: &[Row], right: &[Row], keys: usize, op: MatchOp) -> Vec<(i64, Option<i64>)> {
    left.iter()
        .enumerate()
        .map(|(i, l)| {
            let mut best: Option<(i64, usize)> = None;
            for (j, r) in right.iter().enumerate() {
                let keys_equal = keys == 0
                    || match (l.1, r.1) {
                        (Some(a), Some(b)) => a == b,
                        _ => false,
                    } && (keys < 2
                        || match (&l.0, &r.0) {
                            (Some(a), Some(b)) => a == b,
                            _ => false,
                        });
                let (Some(lt), Some(rt)) = (l.2, r.2) else {
                    continue;
                };
                let ok = match op {
                    MatchOp::AtOrBefore => rt <= lt,
                    MatchOp::StrictlyBefore => rt < lt,
                };
                if keys_equal && ok && best.is_none_or(|(bt, _)| rt >= bt) {
                    best = Some((rt, j));
                }
            }
            (i as i64, best.map(|(_, j)| j as i64))
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn run(
    left: &[Row],
    right: &[Row],
    keys: usize,
    op: MatchOp,
    left_parts: usize,
    right_parts: usize,
    batch: usize,
) -> Vec<(i64, Option<i64>)> {
    run_limited(left, right, keys, op, left_parts, right_parts, batch, None).expect("join")
}

/// `run` under a memory limit (bytes) for the session.
#[allow(clippy::too_many_arguments)]
fn run_limited(
    left: &[Row],
    right: &[Row],
    keys: usize,
    op: MatchOp,
    left_parts: usize,
    right_parts: usize,
    batch: usize,
    memory_limit: Option<usize>,
) -> datafusion::common::Result<Vec<(i64, Option<i64>)>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let l = MemorySourceConfig::try_new_exec(
            &partitions("l", left, left_parts, batch),
            schema("l"),
            None,
        )
        .expect("left");
        let r = MemorySourceConfig::try_new_exec(
            &partitions("r", right, right_parts, batch),
            schema("r"),
            None,
        )
        .expect("right");
        let col = |name: &str, i: usize| Arc::new(Column::new(name, i)) as Arc<dyn PhysicalExpr>;
        let (mut lk, mut rk) = (Vec::new(), Vec::new());
        if keys >= 1 {
            lk.push(col("l_k", 1));
            rk.push(col("r_k", 1));
        }
        if keys == 2 {
            lk.push(col("l_region", 0));
            rk.push(col("r_region", 0));
        }
        let exec =
            AsOfJoinExec::try_new(l, r, lk, rk, col("l_t", 2), col("r_t", 2), op).expect("exec");
        let exec: Arc<dyn ExecutionPlan> = Arc::new(exec);
        let ctx = match memory_limit {
            None => SessionContext::new(),
            Some(limit) => {
                let runtime = RuntimeEnvBuilder::new()
                    .with_memory_limit(limit, 1.0)
                    .build_arc()
                    .expect("runtime env");
                SessionContext::new_with_config_rt(Default::default(), runtime)
            }
        }
        .task_ctx();
        let mut out = Vec::new();
        for p in 0..exec.output_partitioning().partition_count() {
            let batches = collect(exec.execute(p, Arc::clone(&ctx))?).await?;
            for b in batches {
                let lid = b
                    .column(3)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .expect("l_id");
                let rid = b
                    .column(7)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .expect("r_id");
                for i in 0..b.num_rows() {
                    out.push((lid.value(i), rid.is_valid(i).then(|| rid.value(i))));
                }
            }
        }
        out.sort();
        Ok(out)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn matches_the_naive_reference(
        left in prop::collection::vec(row_strategy(4, 12), 0..40),
        right in prop::collection::vec(row_strategy(4, 12), 0..60),
        keys in 0usize..3,
        strict in any::<bool>(),
        left_parts in 1usize..4,
        right_parts in 1usize..4,
        batch in 1usize..8,
        sparse in any::<bool>(),
    ) {
        let op = if strict { MatchOp::StrictlyBefore } else { MatchOp::AtOrBefore };
        // Sparse keys take the hashed path, dense ones the subtraction.
        let spread = |rows: Vec<Row>| -> Vec<Row> {
            if !sparse {
                return rows;
            }
            rows.into_iter()
                .map(|(r, k, t)| (r, k.map(|k| k * 1_000_000_007 - 4_000_000_000_000_000), t))
                .collect()
        };
        let (left, right) = (spread(left), spread(right));
        let got = run(&left, &right, keys, op, left_parts, right_parts, batch);
        let want = naive(&left, &right, keys, op);
        prop_assert_eq!(got, want);
    }

    #[test]
    fn one_key_many_rows_and_many_keys_one_row(
        many in prop::collection::vec(0i64..1000, 0..300),
        probes in prop::collection::vec(0i64..1100, 0..50),
        spread in any::<bool>(),
    ) {
        // Either one key with many rows, or every row its own key.
        let right: Vec<Row> = many.iter().enumerate()
            .map(|(i, &t)| (Some("eu".into()), Some(if spread { i as i64 } else { 7 }), Some(t)))
            .collect();
        let left: Vec<Row> = probes.iter().enumerate()
            .map(|(i, &t)| (Some("eu".into()), Some(if spread { i as i64 } else { 7 }), Some(t)))
            .collect();
        let got = run(&left, &right, 1, MatchOp::AtOrBefore, 2, 3, 64);
        prop_assert_eq!(got, naive(&left, &right, 1, MatchOp::AtOrBefore));
    }
}

/// Rows over `keys` keys with times in 0..1000, from a fixed seed.
fn spread_rows(n: usize, keys: i64, seed: u64) -> Vec<Row> {
    let mut state = seed;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as i64
    };
    (0..n)
        .map(|_| {
            (
                Some("eu".to_string()),
                Some(next() % keys),
                Some(next() % 1000),
            )
        })
        .collect()
}

/// A one-key, at-or-before join of `parts` partitions a side under a memory limit of `limit` bytes.
fn under_limit(
    left: &[Row],
    right: &[Row],
    parts: usize,
    limit: usize,
) -> datafusion::common::Result<Vec<(i64, Option<i64>)>> {
    let op = MatchOp::AtOrBefore;
    run_limited(left, right, 1, op, parts, parts, 1024, Some(limit))
}

#[test]
fn a_right_side_over_the_memory_limit_is_matched_in_passes() {
    // About 1 MB of right batches and entries against a 256 kB limit: one pass is refused, several
    // passes each hold a share of the keys and give the same answer.
    let right = spread_rows(20_000, 500, 3);
    let left = spread_rows(2_000, 500, 4);
    let want = naive(&left, &right, 1, MatchOp::AtOrBefore);
    let got = under_limit(&left, &right, 2, 256 << 10).expect("joins in passes");
    assert_eq!(got, want);
}

#[test]
fn a_right_side_that_cannot_be_split_reports_the_memory_limit() {
    // One key: no pass can hold less than all of it.
    let right = spread_rows(20_000, 1, 5);
    let left = spread_rows(100, 1, 6);
    let err = under_limit(&left, &right, 1, 64 << 10).expect_err("over the limit");
    let message = err.to_string();
    assert!(message.contains("memory limit"), "{message}");
    assert!(message.contains("raise memory_limit"), "{message}");
}

#[test]
fn a_left_side_over_the_memory_limit_is_refused_by_name() {
    let left = spread_rows(20_000, 500, 7);
    let right = spread_rows(100, 500, 8);
    let err = under_limit(&left, &right, 1, 64 << 10).expect_err("over the limit");
    let message = err.to_string();
    assert!(message.contains("the left side (20000 rows"), "{message}");
    assert!(message.contains("raise memory_limit"), "{message}");
}
