//! The embedded online store: the latest row per entity key of each online feature view, in memory
//! for single-RPC lookups, persisted in the warehouse so a restart serves at once.
//!
//! A feature view created `WITH (online = true)` is loaded on every `CREATE` and `REFRESH`: its
//! latest value per key at the load's cut-off time is computed with the same `ASOF JOIN` training
//! sets use (so the two paths agree, ties included), written to
//! `_flywheel/online/<view>.arrow` (an Arrow IPC file, written aside and renamed into place), then
//! swapped in memory: a reader sees the old or the new snapshot, never a mix. A server that starts
//! without a snapshot in memory reads the file on first use.

mod lookup;
mod snapshot;
mod sql;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

pub use lookup::{LOOKUP_TICKET_TYPE, LookupRequest};
pub use snapshot::Snapshot;
pub use sql::{freshness_table, online_function};

use crate::{Error, Result};

/// All online snapshots of one warehouse.
#[derive(Debug)]
pub struct OnlineStore {
    /// `_flywheel/online/` of a local warehouse; `None` for object-store warehouses.
    dir: Option<PathBuf>,
    loaded: RwLock<HashMap<String, Arc<Snapshot>>>,
}

impl OnlineStore {
    /// The store of the warehouse rooted at `root`.
    pub fn new(root: &url::Url) -> Self {
        let dir = root
            .to_file_path()
            .ok()
            .map(|p| p.join("_flywheel").join("online"));
        Self {
            dir,
            loaded: RwLock::default(),
        }
    }

    fn file(&self, view: &str) -> Result<PathBuf> {
        let dir = self.dir.as_ref().ok_or_else(|| Error::Unsupported {
            what: "the embedded online store on an object-store warehouse".into(),
            hint: "use a local warehouse folder".into(),
        })?;
        Ok(dir.join(format!("{view}.arrow")))
    }

    /// Persists `snapshot`, then makes it the one readers see.
    pub fn publish(&self, snapshot: Snapshot) -> Result<Arc<Snapshot>> {
        let path = self.file(&snapshot.view)?;
        snapshot.write(&path)?;
        let snapshot = Arc::new(snapshot);
        self.loaded
            .write()
            .map_err(|_| Error::Invalid("online store lock poisoned".into()))?
            .insert(snapshot.view.clone(), Arc::clone(&snapshot));
        Ok(snapshot)
    }

    /// The snapshot of `view`, read from the warehouse if this server has not loaded it yet.
    pub fn get(&self, view: &str) -> Result<Option<Arc<Snapshot>>> {
        if let Some(s) = self
            .loaded
            .read()
            .map_err(|_| Error::Invalid("online store lock poisoned".into()))?
            .get(view)
        {
            return Ok(Some(Arc::clone(s)));
        }
        let path = self.file(view)?;
        if !path.exists() {
            return Ok(None);
        }
        let snapshot = Arc::new(Snapshot::read(&path)?);
        self.loaded
            .write()
            .map_err(|_| Error::Invalid("online store lock poisoned".into()))?
            .insert(view.to_string(), Arc::clone(&snapshot));
        Ok(Some(snapshot))
    }

    /// Forgets `view` (taken offline or dropped).
    pub fn remove(&self, view: &str) -> Result<()> {
        if let Ok(mut loaded) = self.loaded.write() {
            loaded.remove(view);
        }
        let path = self.file(view)?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
