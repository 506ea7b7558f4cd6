//! Folders under `tables/` that no table refers to: what a crash between writing a table and
//! registering it leaves behind.
//!
//! Every `CREATE` writes a new table into a folder of its own and registers it last, so a process
//! killed in between leaves an unregistered folder. It blocks no name (folders are named by ids),
//! but holds disk space. [`Registry::remove_orphan_folders`] removes such folders once nothing has
//! been written in them for a grace period: another server's `CREATE` still writing its table
//! keeps touching its folder, so a folder idle for the grace period (a day, by default) is not one
//! being written. Only local warehouses are swept.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use url::Url;

use crate::{Error, Registry, Result};

/// How long an unregistered folder must have been left alone before it is removed.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(24 * 3600);

impl Registry {
    /// Removes the folders directly under the warehouse's `tables/` that no live table's location
    /// is, and in which nothing was written for `grace`; returns them.
    pub fn remove_orphan_folders(&self, grace: Duration) -> Result<Vec<PathBuf>> {
        let warehouse = self.warehouse();
        let Ok(root) = warehouse.root().to_file_path() else {
            return Ok(Vec::new());
        };
        let tables = root.join("tables");
        let entries = match std::fs::read_dir(&tables) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(Error::Io {
                    path: tables.display().to_string(),
                    source,
                });
            }
        };
        let live: Vec<Url> = self
            .table_names()
            .iter()
            .filter_map(|n| self.table(n))
            .map(|t| t.location)
            .collect();
        let now = SystemTime::now();
        let mut removed = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            let Ok(url) = Url::from_directory_path(&path) else {
                continue;
            };
            if live.contains(&url) || !warehouse.owns_table_folder(&url) {
                continue;
            }
            let idle = newest_write(&path)
                .and_then(|t| now.duration_since(t).ok())
                .unwrap_or_default();
            if idle < grace {
                continue;
            }
            warehouse.remove_table_files(&url)?;
            tracing::info!(folder = %path.display(), idle_hours = idle.as_secs() / 3600,
                "removed a table folder no table refers to (left by a statement that stopped \
                 before registering it)");
            removed.push(path);
        }
        Ok(removed)
    }
}

/// The latest modification time of `dir` and everything in it.
fn newest_write(dir: &Path) -> Option<SystemTime> {
    let mut newest = std::fs::metadata(dir).and_then(|m| m.modified()).ok();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                pending.push(entry.path());
            }
            if let Ok(t) = meta.modified() {
                newest = Some(newest.map_or(t, |n| n.max(t)));
            }
        }
    }
    newest
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{TableEntry, TableKind, Warehouse};

    fn age(path: &Path, by: Duration) {
        let then = SystemTime::now() - by;
        let mut pending = vec![path.to_path_buf()];
        while let Some(p) = pending.pop() {
            if p.is_dir() {
                pending.extend(
                    std::fs::read_dir(&p)
                        .expect("lists")
                        .flatten()
                        .map(|e| e.path()),
                );
            }
            std::fs::File::open(&p)
                .and_then(|f| f.set_modified(then))
                .expect("sets the time");
        }
    }

    #[tokio::test]
    async fn only_unregistered_folders_left_alone_for_the_grace_period_are_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wh = Warehouse::open(dir.path().to_str().expect("utf8")).expect("warehouse");
        let registry = Registry::open(wh.clone()).await.expect("registry");
        let registered = wh.new_table_location().expect("location");
        let orphan = wh.new_table_location().expect("location");
        let recent = wh.new_table_location().expect("location");
        for url in [&registered, &orphan, &recent] {
            let path = url.to_file_path().expect("path");
            std::fs::create_dir_all(path.join("_delta_log")).expect("mkdir");
            std::fs::write(path.join("part-0.parquet"), b"x").expect("writes");
        }
        registry
            .create_table(&TableEntry {
                name: "kept".into(),
                location: registered.clone(),
                kind: TableKind::Managed,
            })
            .await
            .expect("registers");
        for url in [&registered, &orphan] {
            age(
                &url.to_file_path().expect("path"),
                Duration::from_secs(48 * 3600),
            );
        }
        let removed = registry
            .remove_orphan_folders(ORPHAN_GRACE)
            .expect("sweeps");
        assert_eq!(removed, vec![orphan.to_file_path().expect("path")]);
        assert!(registered.to_file_path().expect("path").exists());
        assert!(
            recent.to_file_path().expect("path").exists(),
            "still being written, maybe"
        );
    }
}
