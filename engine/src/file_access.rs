//! Which files a statement may read or write besides the warehouse's tables.
//!
//! Two statements name files: `COPY ... TO '<path>'` writes one, `CREATE EXTERNAL TABLE ...
//! LOCATION '<path>'` registers a Delta table to read and append to. A server's clients are not the
//! server's user: with [`FileAccess::Restricted`] (what `flywheel serve` uses), a path must be inside
//! the warehouse or inside one of the folders the configuration's `allowed_paths` lists, so a client
//! cannot write `/etc/...` or read another warehouse's tables. The local `flywheel sql` shell runs as
//! its user and has [`FileAccess::Unrestricted`]. In both, Flywheel's own folders of the warehouse
//! (`tables/`, `_flywheel/`: the tables' files and the registry) are never a `COPY` target or an
//! external table's location: writing there directly would bypass the registry (an `INSERT` into an
//! external table over a feature view's folder, a `COPY` into a `_delta_log`).
//!
//! Local paths are compared after resolving `.`, `..` and symbolic links of the folders that exist,
//! so neither `allowed/../../etc` nor a link inside an allowed folder leads out of it.

use std::path::{Path, PathBuf};

use flywheel_catalog::{RESERVED_FOLDERS, Warehouse, resolve_location};
use url::Url;

use crate::{Error, Result};

/// What clients of an engine may touch outside its tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileAccess {
    /// Only the warehouse (outside Flywheel's own folders) and these folders or URL prefixes.
    Restricted { allowed: Vec<Url> },
    /// Any path the process's user can reach (the local shell); Flywheel's own folders still not.
    Unrestricted,
}

impl Default for FileAccess {
    /// Restricted to the warehouse: an engine serving clients must say what else they may touch.
    fn default() -> Self {
        FileAccess::Restricted {
            allowed: Vec::new(),
        }
    }
}

/// What a statement wants to do with a path, for the error message.
#[derive(Debug, Clone, Copy)]
pub(super) enum Use {
    /// `COPY ... TO`.
    CopyTo,
    /// `CREATE EXTERNAL TABLE ... LOCATION`.
    ExternalTable,
}

impl Use {
    fn what(self) -> &'static str {
        match self {
            Use::CopyTo => "COPY TO",
            Use::ExternalTable => "an external table's LOCATION",
        }
    }
}

impl FileAccess {
    /// Restricted to the warehouse and `allowed` (local paths or URLs, as the configuration gives
    /// them).
    pub fn restricted_to(allowed: &[String]) -> Result<Self> {
        let allowed = allowed
            .iter()
            .map(|p| {
                resolve_location(p).map_err(|e| {
                    Error::Config(format!(
                        "allowed_paths entry `{p}` is not a path or URL: {e}"
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(FileAccess::Restricted { allowed })
    }

    /// The URL of `location` when a statement may use it as `purpose` says; otherwise an error
    /// naming the rule and the setting that changes it.
    pub(super) fn check(&self, warehouse: &Warehouse, location: &str, purpose: Use) -> Result<Url> {
        let url = resolve_location(location)?;
        let real = real_url(&url);
        let root = real_url(warehouse.root());
        if warehouse.is_reserved(&url) || reserved_under(&root, &real) {
            return Err(Error::PermissionDenied(format!(
                "{} `{location}` is inside the warehouse's own folders (`tables/`, `_flywheel/`), \
                 which only Flywheel writes; use a table by its name, or a folder elsewhere",
                purpose.what()
            )));
        }
        let allowed = match self {
            FileAccess::Unrestricted => return Ok(url),
            FileAccess::Restricted { allowed } => allowed,
        };
        if inside(&real, &root) || allowed.iter().any(|a| inside(&real, &real_url(a))) {
            return Ok(url);
        }
        let listed = if allowed.is_empty() {
            "allowed_paths is empty".to_string()
        } else {
            let list: Vec<String> = allowed.iter().map(|a| format!("`{a}`")).collect();
            format!("allowed_paths = {}", list.join(", "))
        };
        Err(Error::PermissionDenied(format!(
            "{} `{location}` is outside the folders this server lets clients use (the warehouse \
             `{}`; {listed}); add its folder to allowed_paths in the server's configuration",
            purpose.what(),
            warehouse.root()
        )))
    }
}

/// Whether `url` is `folder` or inside it (both end in `/` when they are folders).
fn inside(url: &Url, folder: &Url) -> bool {
    let folder = folder.as_str();
    let folder = folder.strip_suffix('/').unwrap_or(folder);
    let url = url.as_str();
    url == folder || url.strip_prefix(folder).is_some_and(|r| r.starts_with('/'))
}

/// Whether `url` (resolved) is inside the reserved folders of the warehouse at `root` (resolved).
fn reserved_under(root: &Url, url: &Url) -> bool {
    RESERVED_FOLDERS.iter().any(|dir| {
        root.join(&format!("{dir}/"))
            .is_ok_and(|reserved| inside(url, &reserved))
    })
}

/// `url` with the symbolic links of its existing leading folders resolved (local paths only).
fn real_url(url: &Url) -> Url {
    if url.scheme() != "file" {
        return url.clone();
    }
    let Ok(path) = url.to_file_path() else {
        return url.clone();
    };
    let real = real_path(&path);
    let folder = url.as_str().ends_with('/');
    let resolved = if folder {
        Url::from_directory_path(&real)
    } else {
        Url::from_file_path(&real)
    };
    resolved.unwrap_or_else(|()| url.clone())
}

/// The longest existing ancestor of `path` canonicalized, with the rest appended.
fn real_path(path: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut current = path.to_path_buf();
    loop {
        if let Ok(real) = current.canonicalize() {
            return rest
                .iter()
                .rev()
                .fold(real, |p, c: &std::ffi::OsString| p.join(c));
        }
        match (current.file_name(), current.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name.to_os_string());
                current = parent.to_path_buf();
            }
            _ => return path.to_path_buf(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, Warehouse) {
        let dir = tempfile::tempdir().expect("tempdir");
        let wh = Warehouse::open(dir.path().join("wh").to_str().expect("utf8")).expect("opens");
        (dir, wh)
    }

    #[test]
    fn restricted_access_allows_the_warehouse_and_the_listed_folders_only() {
        let (dir, wh) = setup();
        let exports = dir.path().join("exports");
        std::fs::create_dir_all(&exports).expect("mkdir");
        let access =
            FileAccess::restricted_to(&[exports.display().to_string()]).expect("restricted");
        let ok = |p: &Path| access.check(&wh, p.to_str().expect("utf8"), Use::CopyTo);
        assert!(ok(&exports.join("a.csv")).is_ok());
        assert!(ok(&dir.path().join("wh").join("out").join("a.csv")).is_ok());
        for refused in [
            dir.path().join("exportsX").join("a.csv"),
            exports.join("..").join("..").join("etc").join("passwd"),
            PathBuf::from("/etc/passwd"),
        ] {
            let e = ok(&refused).expect_err("outside");
            assert!(e.to_string().contains("allowed_paths"), "{e}");
        }
        let e = FileAccess::default()
            .check(&wh, "/tmp/anything.csv", Use::CopyTo)
            .expect_err("nothing allowed");
        assert!(e.to_string().contains("allowed_paths is empty"), "{e}");
    }

    #[test]
    fn links_out_of_an_allowed_folder_are_followed() {
        let (dir, wh) = setup();
        let allowed = dir.path().join("allowed");
        let secret = dir.path().join("secret");
        std::fs::create_dir_all(&allowed).expect("mkdir");
        std::fs::create_dir_all(&secret).expect("mkdir");
        std::os::unix::fs::symlink(&secret, allowed.join("link")).expect("symlink");
        let access =
            FileAccess::restricted_to(&[allowed.display().to_string()]).expect("restricted");
        let through = allowed.join("link").join("x.csv");
        assert!(
            access
                .check(&wh, through.to_str().expect("utf8"), Use::CopyTo)
                .is_err()
        );
    }

    #[test]
    fn flywheel_folders_are_refused_even_to_the_shell() {
        let (_dir, wh) = setup();
        for rel in [
            "tables/abc/_delta_log/00.json",
            "_flywheel/registry",
            "tables",
        ] {
            let path = wh
                .root()
                .join(rel)
                .expect("url")
                .to_file_path()
                .expect("path");
            let e = FileAccess::Unrestricted
                .check(&wh, path.to_str().expect("utf8"), Use::ExternalTable)
                .expect_err("reserved");
            assert!(e.to_string().contains("own folders"), "{e}");
        }
        assert!(
            FileAccess::Unrestricted
                .check(&wh, "/tmp/anything.csv", Use::CopyTo)
                .is_ok()
        );
    }
}
