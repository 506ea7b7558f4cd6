//! A process-wide cache of loaded Delta table snapshots, so that reading a table again does not
//! replay its whole log.
//!
//! Loading a table replays its `_delta_log` from the last checkpoint: on a training set refreshed
//! a few dozen times that took 15 to 20 ms in a release build, and a sharded download loaded the
//! same version several times per `GetFlightInfo` and again for every shard. A table version never
//! changes once committed, so a loaded snapshot can be handed out again (a clone shares its data).
//!
//! - **A pinned version** is answered from the cache after one check that its commit file is still
//!   the one the snapshot was loaded from (same size, modification time and entity tag): a table
//!   dropped and created again at the same location writes new commit files, so a stale snapshot
//!   is never handed out. A version whose commit file is gone (log cleanup) is loaded, not kept.
//! - **The latest version** costs a listing of the log: when it moved on, the newest cached
//!   snapshot of the table (checked as above) is brought forward by applying only the new commits.
//! - At most [`CAPACITY`] snapshots are kept, [`PER_TABLE`] of one table; the least recently used
//!   leave first.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, MutexGuard};

use deltalake::logstore::commit_uri_from_version;
use deltalake::logstore::object_store::ObjectStoreExt as _;
use deltalake::{DeltaTable, ObjectMeta};
use url::Url;

/// Snapshots kept, over all tables and versions.
pub const CAPACITY: usize = 64;

/// Snapshots kept of one table: a table appended to every second would otherwise fill the cache
/// with its versions (each holds the table's list of files).
pub const PER_TABLE: usize = 4;

/// What identifies one commit file: a re-created table's commit of the same number differs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CommitStamp {
    size: u64,
    last_modified: chrono::DateTime<chrono::Utc>,
    e_tag: Option<String>,
}

impl From<ObjectMeta> for CommitStamp {
    fn from(meta: ObjectMeta) -> Self {
        Self {
            size: meta.size,
            last_modified: meta.last_modified,
            e_tag: meta.e_tag,
        }
    }
}

struct Cached {
    table: DeltaTable,
    stamp: CommitStamp,
    /// The tick of its last use, for eviction.
    used: u64,
}

#[derive(Default)]
struct Cache {
    entries: HashMap<(String, u64), Cached>,
    tick: u64,
}

static CACHE: LazyLock<Mutex<Cache>> = LazyLock::new(Mutex::default);

fn cache() -> MutexGuard<'static, Cache> {
    // Only a memo: a panic while holding it leaves it usable.
    CACHE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The cache's name of a table location (with or without its trailing slash).
fn location_key(location: &Url) -> String {
    location.as_str().trim_end_matches('/').to_owned()
}

/// The stamp of `table`'s commit `version`; `None` when it cannot be read (log cleanup).
async fn stamp(table: &DeltaTable, version: u64) -> Option<CommitStamp> {
    let path = commit_uri_from_version(Some(version));
    table.object_store().head(&path).await.ok().map(Into::into)
}

/// The cached snapshot of `location` at `version`, if its commit file is unchanged.
pub async fn at_version(location: &Url, version: u64) -> Option<DeltaTable> {
    let key = (location_key(location), version);
    let (table, expected) = {
        let mut cache = cache();
        cache.tick += 1;
        let tick = cache.tick;
        let cached = cache.entries.get_mut(&key)?;
        cached.used = tick;
        (cached.table.clone(), cached.stamp.clone())
    };
    if stamp(&table, version).await.as_ref() == Some(&expected) {
        Some(table)
    } else {
        cache().entries.remove(&key);
        None
    }
}

/// The latest version of `location` from a cached snapshot of it, brought forward over new
/// commits; `None` when nothing usable is cached (the caller loads the table).
pub async fn latest(location: &Url) -> Option<DeltaTable> {
    let name = location_key(location);
    let newest = {
        let cache = cache();
        cache
            .entries
            .iter()
            .filter(|((loc, _), _)| *loc == name)
            .max_by_key(|((_, version), _)| *version)
            .map(|((_, version), _)| *version)
    }?;
    let base = at_version(location, newest).await?;
    let latest = base.get_latest_version().await.ok()?;
    if latest == newest {
        return Some(base);
    }
    if latest < newest {
        // Fewer commits than before: the table was created again.
        forget(location);
        return None;
    }
    let mut table = base;
    table.update_incremental(Some(latest)).await.ok()?;
    keep(&table).await;
    Some(table)
}

/// Keeps a loaded snapshot (its version's commit file stamped).
pub async fn keep(table: &DeltaTable) {
    let Some(version) = table.version() else {
        return;
    };
    let Some(stamp) = stamp(table, version).await else {
        return;
    };
    let table_key = location_key(table.table_url());
    let mut cache = cache();
    cache.tick += 1;
    let used = cache.tick;
    cache.entries.insert(
        (table_key.clone(), version),
        Cached {
            table: table.clone(),
            stamp,
            used,
        },
    );
    let of_table = |key: &(String, u64)| key.0 == table_key;
    while cache.entries.keys().filter(|key| of_table(key)).count() > PER_TABLE {
        cache.evict_oldest(of_table);
    }
    while cache.entries.len() > CAPACITY {
        cache.evict_oldest(|_| true);
    }
}

impl Cache {
    /// Removes the least recently used entry among those `which` selects.
    fn evict_oldest(&mut self, which: impl Fn(&(String, u64)) -> bool) {
        let oldest = self
            .entries
            .iter()
            .filter(|(key, _)| which(key))
            .min_by_key(|(_, cached)| cached.used)
            .map(|(key, _)| key.clone());
        if let Some(key) = oldest {
            self.entries.remove(&key);
        }
    }
}

/// Forgets every snapshot of `location` (its files are being removed).
pub fn forget(location: &Url) {
    let name = location_key(location);
    cache().entries.retain(|(loc, _), _| *loc != name);
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};
    use deltalake::protocol::SaveMode;

    use super::*;

    fn batch(values: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(values.to_vec()))])
            .expect("batch")
    }

    /// Writes `values` as a new version of the table at `url` (creating it).
    async fn write(url: &Url, values: &[i64]) -> DeltaTable {
        let mut table = DeltaTable::try_from_url(url.clone()).await.expect("table");
        let table = match table.load().await {
            Ok(()) => table,
            Err(_) => DeltaTable::try_from_url(url.clone()).await.expect("table"),
        };
        table
            .write([batch(values)])
            .with_save_mode(SaveMode::Append)
            .await
            .expect("writes")
    }

    /// The number of rows of the version `table` holds, from its log (no data files read).
    fn rows(table: &DeltaTable) -> i64 {
        table
            .snapshot()
            .expect("loaded")
            .log_data()
            .into_iter()
            .filter_map(|file| file.num_records())
            .sum::<usize>() as i64
    }

    fn url_of(dir: &std::path::Path) -> Url {
        Url::from_directory_path(dir).expect("url")
    }

    #[tokio::test]
    async fn the_latest_version_is_brought_forward_and_versions_are_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = url_of(&dir.path().join("t"));
        std::fs::create_dir_all(dir.path().join("t")).expect("folder");
        let first = write(&url, &[1, 2]).await;
        keep(&first).await;
        write(&url, &[3]).await;
        let now = latest(&url).await.expect("brought forward");
        assert_eq!((now.version(), rows(&now)), (Some(1), 3));
        let cached = at_version(&url, 0).await.expect("kept");
        assert_eq!((cached.version(), rows(&cached)), (Some(0), 2));
        assert!(
            at_version(&url, 1).await.is_some(),
            "the new version is kept too"
        );
        forget(&url);
        assert!(at_version(&url, 0).await.is_none() && latest(&url).await.is_none());
    }

    #[tokio::test]
    async fn a_table_keeps_its_most_recently_used_versions_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("t")).expect("folder");
        let url = url_of(&dir.path().join("t"));
        for v in 0..6 {
            keep(&write(&url, &[v]).await).await;
        }
        for v in 0..6 {
            let kept = at_version(&url, v as u64).await.is_some();
            assert_eq!(kept, v >= 6 - PER_TABLE as i64, "version {v}");
        }
    }

    #[tokio::test]
    async fn a_table_created_again_at_the_same_place_is_not_answered_from_its_old_snapshots() {
        let dir = tempfile::tempdir().expect("tempdir");
        let folder = dir.path().join("t");
        std::fs::create_dir_all(&folder).expect("folder");
        let url = url_of(&folder);
        keep(&write(&url, &[1, 2, 3]).await).await;
        keep(&write(&url, &[4]).await).await;
        // Another process drops the table and creates it again: one commit, then two.
        std::fs::remove_dir_all(&folder).expect("removes");
        std::fs::create_dir_all(&folder).expect("folder");
        write(&url, &[9]).await;
        assert!(
            at_version(&url, 0).await.is_none(),
            "stale version 0 handed out"
        );
        assert!(latest(&url).await.is_none(), "stale latest handed out");
        write(&url, &[8, 7]).await;
        assert!(
            at_version(&url, 1).await.is_none(),
            "stale version 1 handed out"
        );
        assert!(latest(&url).await.is_none(), "stale latest handed out");
    }
}
