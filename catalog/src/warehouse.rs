//! [`Warehouse`]: where a Flywheel deployment keeps its Delta tables.
//!
//! Layout under the root:
//! - `tables/<id>/`: managed tables (created by `CREATE TABLE`, and the tables of feature views,
//!   labels and training sets). The folder's name is a fresh id per `CREATE`, never the table's
//!   name: a name is an identifier, so no name (`..`, `a/b`, `../../etc`) can point a write or a
//!   clean-up outside the warehouse, and two statements creating one name at the same moment
//!   write to different folders (the registry lets one of them have the name). Warehouses written
//!   before this layout keep their `tables/<name>/` folders; the registry records every table's
//!   location, so they stay readable.
//! - `_flywheel/`: Flywheel's own state: the registry (`_flywheel/registry/`, a Delta table), the
//!   refresh history (`_flywheel/refresh_history/`) and the scheduler's leases
//!   (`_flywheel/refresh_leases/`), both Delta tables, the embedded online store, the download
//!   cache.
//!
//! Only folders directly under `tables/` are ever removed ([`Warehouse::remove_table_files`]).

use std::path::Path;

use url::Url;

use crate::{Error, Result};

/// The root of a warehouse: a local folder or any object-store URL deltalake supports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warehouse {
    root: Url,
}

impl Warehouse {
    /// A warehouse at `location`: a URL (`file:///...`, `s3://...`) or a local path, relative paths
    /// being taken from the current directory. A local folder is created if missing.
    pub fn open(location: &str) -> Result<Self> {
        let root = resolve_location(location)?;
        if root.scheme() == "file" {
            let path = root.to_file_path().map_err(|()| Error::InvalidLocation {
                location: location.to_string(),
                reason: "not a valid local path".into(),
            })?;
            std::fs::create_dir_all(&path).map_err(|source| Error::Io {
                path: path.display().to_string(),
                source,
            })?;
        }
        Ok(Self { root })
    }

    /// The root URL, ending in `/`.
    pub fn root(&self) -> &Url {
        &self.root
    }

    /// A fresh folder for a new managed table: `tables/<random id>/`. Each `CREATE` writes to a
    /// folder of its own, so a failed or losing `CREATE` removes only what it wrote.
    pub fn new_table_location(&self) -> Result<Url> {
        self.join(&format!("{TABLES_DIR}/{}/", uuid::Uuid::new_v4().simple()))
    }

    /// Whether `location` is a folder directly under the warehouse's `tables/` (a managed table's
    /// folder), the only kind of folder Flywheel deletes.
    pub fn owns_table_folder(&self, location: &Url) -> bool {
        let Some(rest) = location.as_str().strip_prefix(self.root.as_str()) else {
            return false;
        };
        let Some(folder) = rest
            .strip_prefix(TABLES_DIR)
            .and_then(|r| r.strip_prefix('/'))
        else {
            return false;
        };
        let folder = folder.strip_suffix('/').unwrap_or(folder);
        if folder.is_empty() || folder.contains(['/', '\\', '?', '#']) {
            return false;
        }
        if location.scheme() != "file" {
            return folder != "." && folder != "..";
        }
        // A local folder: its decoded path must be one plain component under `tables/`.
        let (Ok(path), Ok(root)) = (location.to_file_path(), self.root.to_file_path()) else {
            return false;
        };
        let mut components = path.components();
        let last = components.next_back();
        matches!(last, Some(std::path::Component::Normal(_)))
            && components.as_path() == root.join(TABLES_DIR)
    }

    /// Whether `location` is inside the folders Flywheel keeps for itself (`tables/`,
    /// `_flywheel/`): clients never read or write files there except through tables.
    pub fn is_reserved(&self, location: &Url) -> bool {
        let Some(rest) = location.as_str().strip_prefix(self.root.as_str()) else {
            return false;
        };
        RESERVED_FOLDERS
            .iter()
            .any(|dir| rest == *dir || rest.starts_with(&format!("{dir}/")))
    }

    /// Where the registry table lives.
    pub fn registry_location(&self) -> Result<Url> {
        self.join(&format!("{FLYWHEEL_DIR}/registry/"))
    }

    /// Where the refresh history table lives.
    pub fn refresh_history_location(&self) -> Result<Url> {
        self.join(&format!("{FLYWHEEL_DIR}/refresh_history/"))
    }

    /// Where the scheduler's refresh leases live.
    pub fn refresh_leases_location(&self) -> Result<Url> {
        self.join(&format!("{FLYWHEEL_DIR}/refresh_leases/"))
    }

    fn join(&self, rel: &str) -> Result<Url> {
        self.root.join(rel).map_err(|e| Error::InvalidLocation {
            location: format!("{}{rel}", self.root),
            reason: e.to_string(),
        })
    }

    /// Creates the folder of a local location (deltalake requires local table folders to exist).
    pub fn ensure_dir(location: &Url) -> Result<()> {
        if location.scheme() == "file"
            && let Ok(path) = location.to_file_path()
        {
            std::fs::create_dir_all(&path).map_err(|source| Error::Io {
                path: path.display().to_string(),
                source,
            })?;
        }
        Ok(())
    }

    /// Removes the files of a managed table. Only local warehouses delete files; on object stores
    /// the data stays until a vacuum (the registry no longer points at it either way). The
    /// snapshots loaded of it are forgotten in any case. A location that is not a folder
    /// directly under `tables/` ([`Warehouse::owns_table_folder`]) is never deleted.
    pub fn remove_table_files(&self, location: &Url) -> Result<()> {
        crate::snapshots::forget(location);
        if location.scheme() != "file" {
            return Ok(());
        }
        if !self.owns_table_folder(location) {
            tracing::warn!(%location, "not removing files outside the warehouse's table folders");
            return Ok(());
        }
        if let Ok(path) = location.to_file_path() {
            match std::fs::remove_dir_all(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(Error::Io {
                        path: path.display().to_string(),
                        source,
                    });
                }
            }
        }
        Ok(())
    }
}

/// The folder of managed tables, under the root.
const TABLES_DIR: &str = "tables";
/// The folder of Flywheel's own state, under the root.
const FLYWHEEL_DIR: &str = "_flywheel";
/// The folders under the root that only Flywheel writes ([`Warehouse::is_reserved`]).
pub const RESERVED_FOLDERS: [&str; 2] = [TABLES_DIR, FLYWHEEL_DIR];

/// Turns a user-given location (URL or local path) into a URL that ends in `/`.
pub fn resolve_location(location: &str) -> Result<Url> {
    let invalid = |reason: String| Error::InvalidLocation {
        location: location.to_string(),
        reason,
    };
    let mut url = match Url::parse(location) {
        // A one-letter scheme is a Windows drive, not a URL.
        Ok(url) if url.scheme().len() > 1 => url,
        _ => {
            let path = Path::new(location);
            let abs = if path.is_absolute() {
                path.to_path_buf()
            } else {
                std::env::current_dir()
                    .map_err(|e| invalid(format!("cannot read the current directory: {e}")))?
                    .join(path)
            };
            let abs = normalize(&abs);
            Url::from_directory_path(&abs).map_err(|()| invalid("not an absolute path".into()))?
        }
    };
    if !url.path().ends_with('/') {
        let p = format!("{}/", url.path());
        url.set_path(&p);
    }
    Ok(url)
}

/// Removes `.` and `..` components without touching the file system (the path may not exist yet).
fn normalize(path: &Path) -> std::path::PathBuf {
    use std::path::Component;
    let mut out = std::path::PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_become_absolute_directory_urls() {
        let url = resolve_location("./wh/../warehouse").expect("resolves");
        assert_eq!(url.scheme(), "file");
        assert!(url.path().ends_with("/warehouse/"), "{url}");
    }

    #[test]
    fn urls_are_kept() {
        let url = resolve_location("s3://bucket/wh").expect("resolves");
        assert_eq!(url.as_str(), "s3://bucket/wh/");
    }

    #[test]
    fn layout() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wh = Warehouse::open(dir.path().to_str().expect("utf8")).expect("opens");
        let a = wh.new_table_location().expect("url");
        let b = wh.new_table_location().expect("url");
        assert_ne!(a, b, "every CREATE gets a folder of its own");
        assert!(
            a.as_str().starts_with(&format!("{}tables/", wh.root())),
            "{a}"
        );
        assert!(wh.owns_table_folder(&a) && wh.is_reserved(&a));
    }

    #[test]
    fn only_folders_directly_under_tables_are_owned() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wh = Warehouse::open(dir.path().to_str().expect("utf8")).expect("opens");
        let url = |rel: &str| wh.root().join(rel).expect("joins");
        assert!(wh.owns_table_folder(&url("tables/events/")));
        for not_owned in [
            "tables/..",
            "tables/../",
            "tables/",
            "tables/a/b/",
            "_flywheel/registry/",
            "elsewhere/",
            "",
        ] {
            assert!(!wh.owns_table_folder(&url(not_owned)), "{not_owned}");
        }
        let outside = Url::parse("file:///etc/").expect("url");
        assert!(!wh.owns_table_folder(&outside) && !wh.is_reserved(&outside));
        assert!(wh.is_reserved(&url("_flywheel/registry/_delta_log/")));
        assert!(!wh.is_reserved(&url("exports/a.csv")));
    }

    #[test]
    fn removing_a_folder_outside_tables_deletes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wh = Warehouse::open(dir.path().to_str().expect("utf8")).expect("opens");
        std::fs::write(dir.path().join("keep"), b"x").expect("writes");
        for rel in ["tables/..", "tables/../", "."] {
            let target = wh.root().join(rel).expect("joins");
            wh.remove_table_files(&target).expect("no error");
            assert!(
                dir.path().join("keep").exists(),
                "{rel} removed the warehouse"
            );
        }
    }
}
