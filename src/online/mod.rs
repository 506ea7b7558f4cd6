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
//! - **Redis** (`online_store = "redis://..."`), for several servers: the snapshot's bytes under a
//!   fresh key, then a pointer key swapped to it. Each lookup checks the pointer (one small `GET`)
//!   and reloads when another server published a newer snapshot, so every server answers from the
//!   latest load.

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

/// Where published snapshots live.
enum Backend {
    /// `_flywheel/online/` of a local warehouse; `None` for object-store warehouses.
    Embedded(Option<PathBuf>),
    Redis(Box<RedisBackend>),
}

struct RedisBackend {
    client: redis::Client,
    connection: tokio::sync::OnceCell<redis::aio::MultiplexedConnection>,
    /// Key prefix: one Redis can serve several warehouses.
    prefix: String,
}

/// All online snapshots of one warehouse.
pub struct OnlineStore {
    backend: Backend,
    /// What this server serves: per view, the snapshot and its id in the backend.
    loaded: RwLock<HashMap<String, (String, Arc<Snapshot>)>>,
    /// Plans of recent lookups.
    plans: lookup::LookupPlans,
}

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
    Error::Invalid("online store lock poisoned".into())
}

fn redis_error(e: redis::RedisError) -> Error {
    Error::Transport(format!("online store (Redis): {e}"))
}

/// The Redis key of snapshot `id` of the view whose pointer key is `pointer`.
fn snapshot_key(pointer: &str, id: &str) -> String {
    format!("{pointer}:{id}")
}

/// Deletes the snapshot a view's pointer named before it moved or went (`old`), if it named one.
async fn delete_snapshot(
    conn: &mut redis::aio::MultiplexedConnection,
    pointer: &str,
    old: Option<String>,
) -> Result<()> {
    if let Some(old) = old {
        redis::cmd("DEL")
            .arg(snapshot_key(pointer, &old))
            .query_async::<()>(conn)
            .await
            .map_err(redis_error)?;
    }
    Ok(())
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
                Backend::Redis(Box::new(RedisBackend {
                    client: redis::Client::open(url).map_err(|e| {
                        Error::Config(format!("online_store `{url}` is not a Redis URL: {e}"))
                    })?,
                    connection: tokio::sync::OnceCell::new(),
                    prefix: format!("flywheel:{root}:online:"),
                }))
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
            plans: lookup::LookupPlans::default(),
        })
    }

    fn file(dir: &Option<PathBuf>, view: &str) -> Result<PathBuf> {
        let dir = dir.as_ref().ok_or_else(|| Error::Unsupported {
            what: "the embedded online store on an object-store warehouse".into(),
            hint: "use a local warehouse folder, or online_store = \"redis://...\"".into(),
        })?;
        Ok(dir.join(format!("{view}.arrow")))
    }

    async fn redis(&self) -> Result<Option<(redis::aio::MultiplexedConnection, &str)>> {
        let Backend::Redis(r) = &self.backend else {
            return Ok(None);
        };
        let conn = r
            .connection
            .get_or_try_init(|| r.client.get_multiplexed_async_connection())
            .await
            .map_err(redis_error)?;
        Ok(Some((conn.clone(), r.prefix.as_str())))
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
        match &self.backend {
            Backend::Embedded(dir) => snapshot.write(&Self::file(dir, &snapshot.view)?)?,
            Backend::Redis(_) => {
                let Some((mut conn, prefix)) = self.redis().await? else {
                    return Err(Error::Invalid("online store backend changed".into()));
                };
                let pointer = format!("{prefix}{}", snapshot.view);
                let data = snapshot_key(&pointer, &id);
                redis::cmd("SET")
                    .arg(&data)
                    .arg(snapshot.encode()?)
                    .query_async::<()>(&mut conn)
                    .await
                    .map_err(redis_error)?;
                let old: Option<String> = redis::cmd("SET")
                    .arg(&pointer)
                    .arg(&id)
                    .arg("GET")
                    .query_async(&mut conn)
                    .await
                    .map_err(redis_error)?;
                delete_snapshot(&mut conn, &pointer, old).await?;
            }
        }
        self.remember(id, Arc::clone(&snapshot))?;
        Ok(snapshot)
    }

    /// The snapshot of `view` this server serves, without asking the backend (for SQL).
    pub fn cached(&self, view: &str) -> Result<Option<Arc<Snapshot>>> {
        if let Some((_, s)) = self.loaded.read().map_err(|_| poisoned())?.get(view) {
            return Ok(Some(Arc::clone(s)));
        }
        match &self.backend {
            Backend::Embedded(dir) => {
                let path = Self::file(dir, view)?;
                if !path.exists() {
                    return Ok(None);
                }
                let snapshot = Arc::new(Snapshot::read(&path)?);
                self.remember("file".into(), Arc::clone(&snapshot))?;
                Ok(Some(snapshot))
            }
            Backend::Redis(_) => Ok(None),
        }
    }

    /// The latest published snapshot of `view` (with Redis: reloaded when another server
    /// published a newer one).
    pub async fn get(&self, view: &str) -> Result<Option<Arc<Snapshot>>> {
        let Some((mut conn, prefix)) = self.redis().await? else {
            return self.cached(view);
        };
        let pointer = format!("{prefix}{view}");
        let id: Option<String> = redis::cmd("GET")
            .arg(&pointer)
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        let Some(id) = id else {
            if let Ok(mut loaded) = self.loaded.write() {
                loaded.remove(view);
            }
            return Ok(None);
        };
        if let Some((have, s)) = self.loaded.read().map_err(|_| poisoned())?.get(view)
            && *have == id
        {
            return Ok(Some(Arc::clone(s)));
        }
        let bytes: Option<Vec<u8>> = redis::cmd("GET")
            .arg(snapshot_key(&pointer, &id))
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        let Some(bytes) = bytes else {
            // Replaced between the two reads: the next lookup sees the newer one.
            return self.cached(view);
        };
        let snapshot = Arc::new(Snapshot::decode(
            &bytes,
            &format!("`{}`", snapshot_key(&pointer, &id)),
        )?);
        self.remember(id, Arc::clone(&snapshot))?;
        Ok(Some(snapshot))
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
            Backend::Redis(_) => {
                let Some((mut conn, prefix)) = self.redis().await? else {
                    return Ok(());
                };
                let pointer = format!("{prefix}{view}");
                let id: Option<String> = redis::cmd("GETDEL")
                    .arg(&pointer)
                    .query_async(&mut conn)
                    .await
                    .map_err(redis_error)?;
                delete_snapshot(&mut conn, &pointer, id).await
            }
        }
    }
}
