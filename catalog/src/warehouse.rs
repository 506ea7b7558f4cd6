//! [`Warehouse`]: where a Flywheel deployment keeps its Delta tables.
//!
//! Layout under the root:
//! - `tables/<name>/`: managed tables (created by `CREATE TABLE`);
//! - `_flywheel/registry/`: the registry, itself a Delta table.

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

    /// Where the managed table `name` lives.
    pub fn managed_table_location(&self, name: &str) -> Result<Url> {
        self.join(&format!("tables/{name}/"))
    }

    /// Where the registry table lives.
    pub fn registry_location(&self) -> Result<Url> {
        self.join("_flywheel/registry/")
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
    /// snapshots loaded of it are forgotten in any case.
    pub fn remove_table_files(&self, location: &Url) -> Result<()> {
        crate::snapshots::forget(location);
        if location.scheme() != "file" || !location.as_str().starts_with(self.root.as_str()) {
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
        let t = wh.managed_table_location("events").expect("url");
        assert!(t.as_str().ends_with("/tables/events/"), "{t}");
    }
}
