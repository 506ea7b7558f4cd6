//! The online store: the latest row per entity key of each online feature view, in memory for
//! single-RPC lookups, persisted so a restart serves at once.
//!
//! A feature view created `WITH (online = true)` is loaded on every `CREATE` and `REFRESH`: its
//! latest value per key at the load's cut-off time is computed with the same `ASOF JOIN` training
//! sets use (so the two paths agree, ties included) and published as a [`Snapshot`]. Readers see
//! the old or the new snapshot of a view, never a mix. Two backends keep the published snapshots:
//!
//! - **embedded** (default): `_flywheel/online/<view>.arrow` in the warehouse (an Arrow IPC file
//!   written aside and renamed into place); a server that has not loaded a view reads the file on
//!   first use.
//! - **Redis** (`online_store = "redis://..."`), for several servers: the snapshot's bytes under
//!   fresh keys, then a pointer key swapped to them. Each lookup checks the pointer (one small
//!   `GET`) and reloads when another server published a newer snapshot, so every server answers
//!   from the latest load ([`redis_backend`]).

mod lookup;
mod redis_backend;
mod snapshot;
mod sql;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use redis_backend::RedisBackend;

pub use lookup::{LOOKUP_TICKET_TYPE, LookupRequest};
pub use snapshot::Snapshot;
pub use sql::{freshness_table, online_function};

use crate::{Error, Result};

/// Where published snapshots live.
enum Backend {
    /// `_flywheel/online/` of a local warehouse; `None` for object-store warehouses.
    Embedded(Option<PathBuf>),
    Redis(Box<RedisBackend>),
}

/// All online snapshots of one warehouse.
pub struct OnlineStore {
    backend: Backend,
    /// What this server serves: per view, the snapshot and its id in the backend.
    loaded: RwLock<HashMap<String, (String, Arc<Snapshot>)>>,
    /// Plans of recent lookups.
    plans: lookup::LookupPlans,
    /// Per view, held while its snapshot is fetched from Redis: lookups that find a newer one
    /// published wait for one fetch instead of each fetching it (a view can be gigabytes).
    fetching: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The most keys one lookup may ask for.
    max_keys: usize,
}

/// Default of the most keys one lookup may ask for (`max_lookup_keys`).
pub const DEFAULT_MAX_LOOKUP_KEYS: usize = 100_000;

impl std::fmt::Debug for OnlineStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let backend = match &self.backend {
            Backend::Embedded(dir) => format!("embedded {dir:?}"),
            Backend::Redis(r) => format!("redis {}", r.prefix),
        };
        f.debug_struct("OnlineStore")
            .field("backend", &backend)
            .finish_non_exhaustive()
    }
}

fn poisoned() -> Error {
    Error::InvalidInput("online store lock poisoned".into())
}

/// The snapshot in an embedded store's file, if there is one.
fn read_file(path: &Path) -> Result<Option<Snapshot>> {
    if !path.exists() {
        return Ok(None);
    }
    Snapshot::read(path).map(Some)
}

/// Runs `work` (reading, decoding, building and indexing a snapshot of millions of keys) off the async
/// threads.
pub(crate) async fn off_thread<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Transport(format!("work on an online snapshot stopped: {e}")))?
}

impl OnlineStore {
    /// The store of the warehouse rooted at `root`; `location` is `None`/`"embedded"` or a
    /// `redis://` URL.
    pub fn new(root: &url::Url, location: Option<&str>) -> Result<Self> {
        let backend = match location {
            None | Some("") | Some("embedded") => Backend::Embedded(
                root.to_file_path()
                    .ok()
                    .map(|p| p.join("_flywheel").join("online")),
            ),
            Some(url) if url.starts_with("redis://") || url.starts_with("rediss://") => {
                Backend::Redis(Box::new(RedisBackend::new(url, root)?))
            }
            Some(other) => {
                return Err(Error::Config(format!(
                    "online_store `{other}`: use \"embedded\" or a redis:// URL"
                )));
            }
        };
        Ok(Self {
            backend,
            loaded: RwLock::default(),
            fetching: std::sync::Mutex::default(),
            plans: lookup::LookupPlans::default(),
            max_keys: DEFAULT_MAX_LOOKUP_KEYS,
        })
    }

    /// This store, refusing lookups of more than `max_keys` keys.
    pub fn with_max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys.max(1);
        self
    }

    fn file(dir: &Option<PathBuf>, view: &str) -> Result<PathBuf> {
        let dir = dir.as_ref().ok_or_else(|| Error::Unsupported {
            what: "the embedded online store on an object-store warehouse".into(),
            hint: "use a local warehouse folder, or online_store = \"redis://...\"".into(),
        })?;
        Ok(dir.join(format!("{view}.arrow")))
    }

    fn remember(&self, id: String, snapshot: Arc<Snapshot>) -> Result<()> {
        self.loaded
            .write()
            .map_err(|_| poisoned())?
            .insert(snapshot.view.clone(), (id, snapshot));
        Ok(())
    }

    /// Persists `snapshot`, then makes it the one readers see.
    pub async fn publish(&self, snapshot: Snapshot) -> Result<Arc<Snapshot>> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let snapshot = Arc::new(snapshot);
        let id = match &self.backend {
            Backend::Embedded(dir) => {
                snapshot.write(&Self::file(dir, &snapshot.view)?)?;
                id
            }
            // What the view's pointer now holds.
            Backend::Redis(r) => r.publish(&snapshot.view, &id, &snapshot.encode()?).await?,
        };
        self.remember(id, Arc::clone(&snapshot))?;
        Ok(snapshot)
    }

    /// Reads the published snapshots of `views` into memory, so that a restarted server's first
    /// lookups do not wait for them (a view of 3M keys takes about a quarter of a second). A view
    /// that cannot be read is logged and read again by the lookup that needs it.
    pub async fn preload(self: Arc<Self>, views: Vec<String>) {
        let started = std::time::Instant::now();
        let mut loaded = 0;
        for view in views {
            match self.get(&view).await {
                Ok(Some(_)) => loaded += 1,
                Ok(None) => {}
                Err(e) => tracing::warn!(view = %view, error = %e, "online store: cannot preload"),
            }
        }
        tracing::info!(views = loaded, elapsed = ?started.elapsed(), "online store: snapshots preloaded");
    }

    /// The snapshot of `view` this server serves, without asking the backend (for SQL).
    pub fn cached(&self, view: &str) -> Result<Option<Arc<Snapshot>>> {
        if let Some(held) = self.held(view)? {
            return Ok(Some(held));
        }
        match &self.backend {
            Backend::Embedded(dir) => self.remember_file(read_file(&Self::file(dir, view)?)?),
            Backend::Redis(_) => Ok(None),
        }
    }

    /// The snapshot of `view` this server holds, whichever it is.
    fn held(&self, view: &str) -> Result<Option<Arc<Snapshot>>> {
        Ok(self
            .loaded
            .read()
            .map_err(|_| poisoned())?
            .get(view)
            .map(|(_, s)| Arc::clone(s)))
    }

    /// Holds a snapshot read from the embedded store's file.
    fn remember_file(&self, read: Option<Snapshot>) -> Result<Option<Arc<Snapshot>>> {
        let Some(snapshot) = read else {
            return Ok(None);
        };
        let snapshot = Arc::new(snapshot);
        self.remember("file".into(), Arc::clone(&snapshot))?;
        Ok(Some(snapshot))
    }

    /// The latest published snapshot of `view` (with Redis: reloaded when another server
    /// published a newer one).
    pub async fn get(&self, view: &str) -> Result<Option<Arc<Snapshot>>> {
        let r = match &self.backend {
            Backend::Redis(r) => r,
            Backend::Embedded(dir) => {
                if let Some(held) = self.held(view)? {
                    return Ok(Some(held));
                }
                let path = Self::file(dir, view)?;
                return self.remember_file(off_thread(move || read_file(&path)).await?);
            }
        };
        let Some(id) = r.current(view).await? else {
            if let Ok(mut loaded) = self.loaded.write() {
                loaded.remove(view);
            }
            return Ok(None);
        };
        if let Some(current) = self.loaded_as(view, &id)? {
            return Ok(Some(current));
        }
        // One fetch at a time per view; whoever waited finds it done.
        let fetch = Arc::clone(
            self.fetching
                .lock()
                .map_err(|_| poisoned())?
                .entry(view.to_string())
                .or_default(),
        );
        let _fetching = fetch.lock().await;
        if let Some(current) = self.loaded_as(view, &id)? {
            return Ok(Some(current));
        }
        let (Some(bytes), named) = r.bytes(view, &id).await? else {
            // Replaced between the two reads: the next lookup sees the newer one.
            return self.cached(view);
        };
        let snapshot = Arc::new(off_thread(move || Snapshot::decode(bytes, &named)).await?);
        self.remember(id, Arc::clone(&snapshot))?;
        Ok(Some(snapshot))
    }

    /// The snapshot of `view` this server holds, when it is the one published as `id`.
    fn loaded_as(&self, view: &str, id: &str) -> Result<Option<Arc<Snapshot>>> {
        Ok(self
            .loaded
            .read()
            .map_err(|_| poisoned())?
            .get(view)
            .filter(|(have, _)| have == id)
            .map(|(_, s)| Arc::clone(s)))
    }

    /// Forgets `view` (taken offline or dropped).
    pub async fn remove(&self, view: &str) -> Result<()> {
        if let Ok(mut loaded) = self.loaded.write() {
            loaded.remove(view);
        }
        match &self.backend {
            Backend::Embedded(dir) => {
                let Ok(path) = Self::file(dir, view) else {
                    return Ok(());
                };
                match std::fs::remove_file(&path) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(e.into()),
                }
            }
            Backend::Redis(r) => r.remove(view).await,
        }
    }
}
