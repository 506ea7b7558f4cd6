//! The classic fraud-detection flywheel, end to end, in a temp dir: transactions and chargebacks are
//! generated, users and merchants become entities, their feature views are declared in SQL, the
//! chargebacks become a label, and a training set joins them point-in-time correctly. The example
//! asserts that the training set equals an independently computed expectation.
//!
//! `cargo run --example fraud`

use arrow::util::pretty::pretty_format_batches;
use flywheel::Engine;

/// A small deterministic generator (no extra crate needed).
struct Rng(u64);

impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

async fn run(engine: &Engine, sql: &str) -> flywheel::Result<Vec<arrow::array::RecordBatch>> {
    engine.sql(sql).await?.collect().await
}

/// The rows of a query as sorted table lines.
async fn rows(engine: &Engine, sql: &str) -> flywheel::Result<Vec<String>> {
    let text = pretty_format_batches(&run(engine, sql).await?)?.to_string();
    let mut lines: Vec<String> = text
        .lines()
        .skip(3)
        .filter(|l| !l.starts_with('+'))
        .map(str::to_string)
        .collect();
    lines.sort();
    Ok(lines)
}

#[tokio::main]
async fn main() -> flywheel::Result<()> {
    let dir = tempfile::tempdir()?;
    let engine = Engine::open(&dir.path().join("warehouse").display().to_string()).await?;

    // Collect: what happened in the product. Transactions are 97 minutes apart, so no key has two
    // rows at one time (ties have their own tests).
    let mut rng = Rng(7);
    let txns: Vec<String> = (0..400u64)
        .map(|i| {
            let (user, merchant, amount) = (rng.next(20), rng.next(5), 5 + rng.next(500));
            let minutes = i * 97;
            format!(
                "({user}, 'm{merchant}', TIMESTAMP '2026-02-01T00:00:00' + INTERVAL '{minutes} minutes', {amount}.0)"
            )
        })
        .collect();
    let cbs: Vec<String> = (0..60)
        .map(|_| {
            let (user, merchant, day) = (rng.next(22), rng.next(5), 1 + rng.next(28));
            let fraud = rng.next(2) == 1;
            format!("({user}, 'm{merchant}', TIMESTAMP '2026-02-{day:02}T12:00:00', {fraud})")
        })
        .collect();
    for sql in [
        "CREATE TABLE transactions (user_id BIGINT, merchant_id VARCHAR, ts TIMESTAMP, amount DOUBLE)".to_string(),
        format!("INSERT INTO transactions VALUES {}", txns.join(", ")),
        "CREATE TABLE chargebacks (user_id BIGINT, merchant_id VARCHAR, ts TIMESTAMP, is_fraud BOOLEAN)".to_string(),
        format!("INSERT INTO chargebacks VALUES {}", cbs.join(", ")),
        // Organize: entities, feature views and a label, all in SQL.
        "CREATE ENTITY user (user_id BIGINT)".into(),
        "CREATE ENTITY merchant (merchant_id VARCHAR)".into(),
        "CREATE FEATURE VIEW user_txn ENTITY user EVENT TIME ts TTL INTERVAL '7 days' \
         AS SELECT user_id, ts, amount AS last_amount FROM transactions"
            .into(),
        "CREATE FEATURE VIEW merchant_txn ENTITY merchant EVENT TIME ts \
         AS SELECT merchant_id, ts, amount AS merchant_last_amount FROM transactions"
            .into(),
        "CREATE LABEL is_fraud ENTITY user EVENT TIME ts \
         FROM (SELECT user_id, merchant_id, ts, is_fraud FROM chargebacks)"
            .into(),
        // Learn: the training set, point-in-time correct.
        "CREATE TRAINING SET fraud_train LABEL is_fraud FEATURES user_txn, merchant_txn".into(),
    ] {
        run(&engine, &sql).await?;
    }
    let mut got = rows(&engine, "SELECT * FROM fraud_train").await?;
    got.dedup();

    // The expectation, computed independently with window functions over the raw tables.
    let expected = rows(
        &engine,
        "WITH u AS (
           SELECT c.user_id, c.merchant_id, c.ts, c.is_fraud,
             CASE WHEN t.ts >= c.ts - INTERVAL '7 days' THEN t.amount END AS last_amount,
             ROW_NUMBER() OVER (PARTITION BY c.user_id, c.merchant_id, c.ts, c.is_fraud ORDER BY t.ts DESC NULLS LAST) AS rn
           FROM chargebacks c LEFT JOIN transactions t ON t.user_id = c.user_id AND t.ts <= c.ts),
         m AS (
           SELECT c.user_id, c.merchant_id, c.ts, c.is_fraud, t.amount AS merchant_last_amount,
             ROW_NUMBER() OVER (PARTITION BY c.user_id, c.merchant_id, c.ts, c.is_fraud ORDER BY t.ts DESC NULLS LAST) AS rn
           FROM chargebacks c LEFT JOIN transactions t ON t.merchant_id = c.merchant_id AND t.ts <= c.ts)
         SELECT DISTINCT u.user_id, u.merchant_id, u.ts, u.is_fraud, u.last_amount, m.merchant_last_amount
         FROM u JOIN m ON u.user_id = m.user_id AND u.merchant_id = m.merchant_id AND u.ts = m.ts
           AND u.is_fraud = m.is_fraud AND m.rn = 1
         WHERE u.rn = 1",
    )
    .await?;
    let labels = rows(&engine, "SELECT count(*) FROM chargebacks").await?;
    let train_rows = rows(&engine, "SELECT count(*) FROM fraud_train").await?;
    assert_eq!(train_rows, labels, "one training row per label row");
    assert_eq!(
        got, expected,
        "training set differs from the window-function expectation"
    );
    let present = rows(
        &engine,
        "SELECT count(last_amount), count(merchant_last_amount) FROM fraud_train",
    )
    .await?;
    println!(
        "fraud_train: {} distinct rows, equal to the independent expectation",
        got.len()
    );
    println!("features present (user, merchant): {}", present.join(" "));
    println!(
        "{}",
        pretty_format_batches(&run(&engine, "SELECT * FROM flywheel.lineage").await?)?
    );
    Ok(())
}
