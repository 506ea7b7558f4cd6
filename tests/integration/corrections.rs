//! Corrections win: a source row written again in a later commit, with the same keys and event
//! time, replaces the older one in training sets and online lookups, through incremental
//! refreshes and full rebuilds alike.

use flywheel::Engine;

use crate::common::{engine_with, sql_rows as rows};

async fn expect(engine: &Engine, one: f64, two: f64, when: &str) {
    assert_eq!(
        rows(engine, "SELECT user_id, amount FROM train").await,
        vec![format!("1,{one:.1}"), format!("2,{two:.1}")],
        "training set, {when}"
    );
    for (user, amount) in [(1, one), (2, two)] {
        assert_eq!(
            rows(
                engine,
                &format!("SELECT amount FROM online('spend', {user})")
            )
            .await,
            vec![format!("{amount:.1}")],
            "online lookup of user {user}, {when}"
        );
    }
}

#[tokio::test]
async fn corrections_in_a_later_commit_win_in_training_sets_and_online_lookups() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine_with(
        dir.path(),
        &[
        "CREATE ENTITY user (user_id BIGINT)",
        "CREATE TABLE tx (user_id BIGINT, ts TIMESTAMP, amount DOUBLE)",
        "INSERT INTO tx VALUES (1, '2026-01-01T10:00:00', 10.0), (2, '2026-01-01T10:00:00', 20.0)",
        "CREATE FEATURE VIEW spend ENTITY user EVENT TIME ts WITH (online = true) AS SELECT user_id, ts, amount FROM tx",
        "CREATE TABLE cb (user_id BIGINT, ts TIMESTAMP, y BOOLEAN)",
        "INSERT INTO cb VALUES (1, '2026-01-05T00:00:00', true), (2, '2026-01-05T00:00:00', false)",
        "CREATE LABEL fraud ENTITY user EVENT TIME ts FROM cb",
        "CREATE TRAINING SET train LABEL fraud FEATURES spend",
        ],
    )
    .await;
    expect(&engine, 10.0, 20.0, "before any correction").await;

    // Each round corrects both rows (same keys, same event time) in a new commit.
    for round in 1..=6 {
        let (one, two) = (10.0 + f64::from(round), 20.0 + f64::from(round));
        rows(
            &engine,
            &format!(
                "INSERT INTO tx VALUES (1, '2026-01-01T10:00:00', {one:.1}), \
                 (2, '2026-01-01T10:00:00', {two:.1})"
            ),
        )
        .await;
        rows(&engine, "REFRESH TRAINING SET train").await;
        expect(&engine, one, two, &format!("after correction {round}")).await;
    }

    // A full rebuild of the view keeps the corrections after what they correct.
    rows(&engine, "REFRESH FEATURE VIEW spend FULL").await;
    rows(&engine, "REFRESH TRAINING SET train FULL").await;
    expect(&engine, 16.0, 26.0, "after a full refresh").await;
    rows(
        &engine,
        "CREATE OR REPLACE FEATURE VIEW spend ENTITY user EVENT TIME ts WITH (online = true) \
         AS SELECT user_id, ts, amount FROM tx WHERE amount > 0",
    )
    .await;
    rows(&engine, "REFRESH TRAINING SET train").await;
    expect(&engine, 16.0, 26.0, "after the view was re-created").await;
}
