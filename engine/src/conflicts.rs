//! Delta commit conflicts between writers.
//!
//! Delta's optimistic concurrency lets two writers (two servers on one warehouse, or two
//! statements of one) prepare commits to one table at the same time; the second to commit finds
//! the first's and delta-rs checks whether they conflict (an overwrite read the whole table that
//! the other one changed). A conflicting statement here is one whose work does not depend on what
//! the other wrote (a refresh, a replacement): [`retry`] runs it again over the new version a few
//! times. Past that, the error becomes [`Error::Conflict`]: the client is told what conflicted and
//! that the statement can be run again (`ABORTED`), never that the server broke.

use std::future::Future;
use std::time::Duration;

use flywheel_catalog::is_commit_race;

use crate::{Error, Result};

/// How often a conflicting write is tried in all.
const ATTEMPTS: u32 = 5;

/// Runs `write` (which loads the table's latest version and commits to it) until it commits, at
/// most [`ATTEMPTS`] times while it fails on another writer's commit.
pub(super) async fn retry<T, F, Fut>(table: &str, mut write: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match write().await {
            Err(e) if is_conflict(&e) => {
                if attempt >= ATTEMPTS {
                    return Err(conflict(table, attempt, &e));
                }
                tracing::info!(
                    table,
                    attempt,
                    "commit conflicted with another writer; retrying"
                );
                let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0] % 50);
                tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt) + jitter)).await;
            }
            other => return other,
        }
    }
}

/// Whether `e` is a commit that lost a race with another writer's commit.
pub(crate) fn is_conflict(e: &Error) -> bool {
    match e {
        Error::Delta(d) | Error::Catalog(flywheel_catalog::Error::Delta(d)) => is_commit_race(d),
        _ => false,
    }
}

/// The error a client gets when `table`'s commit kept conflicting.
fn conflict(table: &str, attempts: u32, e: &Error) -> Error {
    Error::Conflict(format!(
        "the commit to table `{table}` conflicted with other writers' commits {attempts} times \
         in a row ({}); nothing was committed by this statement, run it again",
        e.user_message()
    ))
}
