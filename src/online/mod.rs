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
//!   latest load. Pointers and snapshots travel on two connections, so a large load never queues
//!   lookups behind it. A connection that breaks (Redis restarted, failed over) is replaced on the
//!   next call, and a read that found it broken is tried once more on the new one; while Redis is
//!   unreachable, calls fail with [`Error::Unavailable`].

mod lookup;
mod snapshot;
mod sql;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use redis::aio::MultiplexedConnection;

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
    /// Pointer keys: small and quick (lookups wait on them).
    pointers: Mutex<Option<MultiplexedConnection>>,
    /// Snapshot bytes: as large as a view.
    snapshots: Mutex<Option<MultiplexedConnection>>,
    /// Key prefix: one Redis can serve several warehouses.
    prefix: String,
}

/// Which of the two Redis connections a command takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    Pointers,
    Snapshots,
}

/// How long a connection attempt may take before Redis counts as unreachable.
const REDIS_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a pointer command may wait for its answer.
const REDIS_POINTER_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a snapshot's bytes may take to travel (a view of many millions of keys is gigabytes).
const REDIS_SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(600);

impl RedisBackend {
    fn slot(&self, lane: Lane) -> &Mutex<Option<MultiplexedConnection>> {
        match lane {
            Lane::Pointers => &self.pointers,
            Lane::Snapshots => &self.snapshots,
        }
    }

    /// The lane's connection, connecting when there is none.
    async fn connection(&self, lane: Lane) -> Result<MultiplexedConnection> {
        if let Some(c) = self.slot(lane).lock().map_err(|_| poisoned())?.clone() {
            return Ok(c);
        }
        let response = match lane {
            Lane::Pointers => REDIS_POINTER_TIMEOUT,
            Lane::Snapshots => REDIS_SNAPSHOT_TIMEOUT,
        };
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(REDIS_CONNECT_TIMEOUT))
            .set_response_timeout(Some(response));
        let c = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(redis_error)?;
        *self.slot(lane).lock().map_err(|_| poisoned())? = Some(c.clone());
        Ok(c)
    }

    /// Runs `command` on `lane`. When the connection turns out broken it is dropped (the next call
    /// connects again), and a command that may safely run twice (`repeatable`: reads, deletes) runs
    /// once more on a new connection.
    async fn query<T: redis::FromRedisValue>(
        &self,
        lane: Lane,
        command: &redis::Cmd,
        repeatable: bool,
    ) -> Result<T> {
        let mut retried = false;
        loop {
            let mut conn = self.connection(lane).await?;
            match command.query_async::<T>(&mut conn).await {
                Ok(value) => return Ok(value),
                Err(e) if is_broken(&e) => {
                    if let Ok(mut slot) = self.slot(lane).lock() {
                        *slot = None;
                    }
                    if repeatable && !retried {
                        tracing::info!(error = %e, "online store (Redis): connection lost; reconnecting");
                        retried = true;
                        continue;
                    }
                    return Err(redis_error(e));
                }
                Err(e) => return Err(redis_error(e)),
            }
        }
    }
}

/// Whether `e` means the connection is gone (rather than a refused command).
fn is_broken(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_timeout() || e.is_unrecoverable_error()
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
    if is_broken(&e) || e.is_connection_refusal() {
        Error::Unavailable(format!(
            "the online store (Redis) cannot be reached: {e}; the server reconnects by itself once \
             it is back"
        ))
    } else {
        Error::Transport(format!("online store (Redis): {e}"))
    }
}

/// The Redis key of snapshot `id` of the view whose pointer key is `pointer`.
fn snapshot_key(pointer: &str, id: &str) -> String {
    format!("{pointer}:{id}")
}

/// Deletes the snapshot a view's pointer named before it moved or went (`old`), if it named one.
async fn delete_snapshot(redis: &RedisBackend, pointer: &str, old: Option<String>) -> Result<()> {
    if let Some(old) = old {
        let mut del = redis::cmd("DEL");
        del.arg(snapshot_key(pointer, &old));
        redis.query::<()>(Lane::Snapshots, &del, true).await?;
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
                    pointers: Mutex::default(),
                    snapshots: Mutex::default(),
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

    fn redis(&self) -> Option<&RedisBackend> {
        match &self.backend {
            Backend::Redis(r) => Some(r),
            Backend::Embedded(_) => None,
        }
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
            Backend::Redis(r) => {
                let pointer = format!("{}{}", r.prefix, snapshot.view);
                let mut set = redis::cmd("SET");
                set.arg(snapshot_key(&pointer, &id)).arg(snapshot.encode()?);
                r.query::<()>(Lane::Snapshots, &set, true).await?;
                // Not repeated: a swap whose answer was lost would delete the new snapshot.
                let mut swap = redis::cmd("SET");
                swap.arg(&pointer).arg(&id).arg("GET");
                let old: Option<String> = r.query(Lane::Pointers, &swap, false).await?;
                delete_snapshot(r, &pointer, old).await?;
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
        let Some(r) = self.redis() else {
            return self.cached(view);
        };
        let pointer = format!("{}{view}", r.prefix);
        let mut get = redis::cmd("GET");
        get.arg(&pointer);
        let id: Option<String> = r.query(Lane::Pointers, &get, true).await?;
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
        let mut get = redis::cmd("GET");
        get.arg(snapshot_key(&pointer, &id));
        let bytes: Option<Vec<u8>> = r.query(Lane::Snapshots, &get, true).await?;
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
            Backend::Redis(r) => {
                let pointer = format!("{}{view}", r.prefix);
                let mut take = redis::cmd("GETDEL");
                take.arg(&pointer);
                let id: Option<String> = r.query(Lane::Pointers, &take, false).await?;
                delete_snapshot(r, &pointer, id).await
            }
        }
    }
}
