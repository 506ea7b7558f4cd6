//! The Redis backend of the online store: published snapshots shared by several servers.
//!
//! Keys (all under a prefix naming the warehouse, so one Redis serves several):
//! - `<prefix><view>`: the view's *pointer*, naming its current snapshot: `<id>+<pieces>`;
//! - `<prefix><view>:<id>:<i>`: piece `i` of that snapshot's bytes (an Arrow IPC file cut in
//!   pieces of at most [`PIECE_BYTES`]: Redis refuses a value over 512 MiB by default, and a view of
//!   ten million keys is larger). A pointer without `+` (written by earlier versions) names one
//!   piece stored at `<prefix><view>:<id>`.
//!
//! Publishing writes the pieces, then swaps the pointer and deletes the snapshot it named, so a
//! reader sees the old or the new snapshot, never a mix (a reader that finds a piece gone has
//! raced a newer publish and takes the next one).
//!
//! Pointers and pieces travel on two connections, so a large load never holds lookups up behind
//! it. A connection that breaks (Redis restarted, failed over) is dropped, and the next call
//! connects again; a command that may run twice (reads, deletes, writes of a fresh key) runs once
//! more on the new connection. While Redis is unreachable, calls fail with [`Error::Unavailable`].

use std::sync::Mutex;
use std::time::Duration;

use redis::aio::MultiplexedConnection;

use super::poisoned;
use crate::{Error, Result};

/// The most bytes one Redis value holds (Redis's own limit is 512 MiB).
pub const PIECE_BYTES: usize = 64 << 20;

/// How long a connection attempt may take before Redis counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a pointer command may wait for its answer.
const POINTER_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a piece may take to travel.
const PIECE_TIMEOUT: Duration = Duration::from_secs(120);

/// Which of the two connections a command takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    Pointers,
    Pieces,
}

/// A Redis server holding the snapshots of one warehouse.
pub(super) struct RedisBackend {
    client: redis::Client,
    pointers: Mutex<Option<MultiplexedConnection>>,
    pieces: Mutex<Option<MultiplexedConnection>>,
    /// Key prefix: one Redis can serve several warehouses.
    pub(super) prefix: String,
    piece_bytes: usize,
}

/// What a view's pointer names: a snapshot id and its number of pieces (`None`: the one-value
/// form of earlier versions).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pointed {
    id: String,
    pieces: Option<usize>,
}

impl Pointed {
    fn parse(value: &str) -> Self {
        match value.split_once('+') {
            Some((id, n)) if n.parse::<usize>().is_ok() => Self {
                id: id.to_string(),
                pieces: n.parse().ok(),
            },
            _ => Self {
                id: value.to_string(),
                pieces: None,
            },
        }
    }

    /// The pointer's value naming this snapshot ([`Pointed::parse`] reads it back).
    fn value(&self) -> String {
        match self.pieces {
            Some(n) => format!("{}+{n}", self.id),
            None => self.id.clone(),
        }
    }

    fn keys(&self, pointer: &str) -> Vec<String> {
        match self.pieces {
            None => vec![format!("{pointer}:{}", self.id)],
            Some(n) => (0..n)
                .map(|i| format!("{pointer}:{}:{i}", self.id))
                .collect(),
        }
    }
}

/// Whether `e` means the connection is gone (rather than a refused command).
fn is_broken(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_timeout() || e.is_unrecoverable_error()
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

impl RedisBackend {
    /// The backend at `url` for the warehouse rooted at `root`.
    pub(super) fn new(url: &str, root: &url::Url) -> Result<Self> {
        Ok(Self {
            client: redis::Client::open(url).map_err(|e| {
                Error::Config(format!("online_store `{url}` is not a Redis URL: {e}"))
            })?,
            pointers: Mutex::default(),
            pieces: Mutex::default(),
            prefix: format!("flywheel:{root}:online:"),
            piece_bytes: PIECE_BYTES,
        })
    }

    fn slot(&self, lane: Lane) -> &Mutex<Option<MultiplexedConnection>> {
        match lane {
            Lane::Pointers => &self.pointers,
            Lane::Pieces => &self.pieces,
        }
    }

    /// The lane's connection, connecting when there is none.
    async fn connection(&self, lane: Lane) -> Result<MultiplexedConnection> {
        if let Some(c) = self.slot(lane).lock().map_err(|_| poisoned())?.clone() {
            return Ok(c);
        }
        let response = match lane {
            Lane::Pointers => POINTER_TIMEOUT,
            Lane::Pieces => PIECE_TIMEOUT,
        };
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(response));
        let c = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(redis_error)?;
        *self.slot(lane).lock().map_err(|_| poisoned())? = Some(c.clone());
        Ok(c)
    }

    /// Runs `command` on `lane`; see the module docs for what happens when the connection broke
    /// (`repeatable`: the command may run twice).
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

    fn pointer_key(&self, view: &str) -> String {
        format!("{}{view}", self.prefix)
    }

    /// Stores `bytes` as snapshot `id` of `view` and points the view at it; returns the pointer's
    /// value (what [`RedisBackend::current`] answers while it stays current).
    pub(super) async fn publish(&self, view: &str, id: &str, bytes: &[u8]) -> Result<String> {
        let pointer = self.pointer_key(view);
        let pieces = bytes.chunks(self.piece_bytes.max(1)).collect::<Vec<_>>();
        let named = Pointed {
            id: id.to_string(),
            pieces: Some(pieces.len()),
        };
        for (key, piece) in named.keys(&pointer).iter().zip(pieces) {
            let mut set = redis::cmd("SET");
            set.arg(key).arg(piece);
            self.query::<()>(Lane::Pieces, &set, true).await?;
        }
        let value = named.value();
        // Not repeated: a swap whose answer was lost would delete the new snapshot.
        let mut swap = redis::cmd("SET");
        swap.arg(&pointer).arg(&value).arg("GET");
        let old: Option<String> = self.query(Lane::Pointers, &swap, false).await?;
        self.delete(&pointer, old).await?;
        Ok(value)
    }

    /// The pointer's value of `view`: which snapshot is current (`None`: not online).
    pub(super) async fn current(&self, view: &str) -> Result<Option<String>> {
        let mut get = redis::cmd("GET");
        get.arg(self.pointer_key(view));
        self.query(Lane::Pointers, &get, true).await
    }

    /// The bytes of the snapshot `value` (a pointer's value) names; `None` when a newer publish
    /// deleted it meanwhile. Also returns the keys, to name them in errors.
    pub(super) async fn bytes(&self, view: &str, value: &str) -> Result<(Option<Vec<u8>>, String)> {
        let keys = Pointed::parse(value).keys(&self.pointer_key(view));
        if keys.is_empty() {
            // `<id>+0`: no snapshot names no pieces (not something Flywheel writes).
            return Ok((None, String::new()));
        }
        let mut bytes = Vec::new();
        for key in &keys {
            let mut get = redis::cmd("GET");
            get.arg(key);
            let piece: Option<Vec<u8>> = self.query(Lane::Pieces, &get, true).await?;
            match piece {
                Some(piece) if bytes.is_empty() => bytes = piece,
                Some(piece) => bytes.extend_from_slice(&piece),
                None => return Ok((None, String::new())),
            }
        }
        let named = match keys.as_slice() {
            [one] => format!("`{one}`"),
            many => format!("`{}` and {} more pieces", keys[0], many.len() - 1),
        };
        Ok((Some(bytes), named))
    }

    /// Takes `view` offline: removes its pointer and snapshot.
    pub(super) async fn remove(&self, view: &str) -> Result<()> {
        let pointer = self.pointer_key(view);
        let mut take = redis::cmd("GETDEL");
        take.arg(&pointer);
        let old: Option<String> = self.query(Lane::Pointers, &take, false).await?;
        self.delete(&pointer, old).await
    }

    /// Deletes the snapshot a pointer named before it moved or went (`old`), if it named one.
    async fn delete(&self, pointer: &str, old: Option<String>) -> Result<()> {
        if let Some(old) = old {
            let mut del = redis::cmd("DEL");
            for key in Pointed::parse(&old).keys(pointer) {
                del.arg(key);
            }
            self.query::<()>(Lane::Pieces, &del, true).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_name_their_pieces() {
        let p = Pointed::parse("abc+3");
        assert_eq!(p.keys("v"), ["v:abc:0", "v:abc:1", "v:abc:2"]);
        assert_eq!(p.value(), "abc+3");
        // Earlier versions: one value under the id.
        assert_eq!(Pointed::parse("abc").keys("v"), ["v:abc"]);
        assert_eq!(Pointed::parse("a+b").keys("v"), ["v:a+b"]);
    }

    /// A real `redis-server` (scripts/test.sh installs it) on a free port, killed on drop.
    struct Server(std::process::Child, u16);

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    async fn redis_server() -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server runs (scripts/test.sh installs the Debian package)");
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Server(child, port)
    }

    #[tokio::test]
    async fn snapshots_larger_than_a_piece_are_stored_in_pieces_and_read_whole() {
        let server = redis_server().await;
        let root = url::Url::parse("file:///warehouse/").expect("url");
        let mut redis =
            RedisBackend::new(&format!("redis://127.0.0.1:{}", server.1), &root).expect("client");
        redis.piece_bytes = 1000;
        let bytes: Vec<u8> = (0..4500u32).map(|i| (i % 251) as u8).collect();
        let first = redis.publish("v", "one", &bytes).await.expect("publish");
        assert_eq!(first, "one+5");
        assert_eq!(redis.current("v").await.expect("get"), Some(first.clone()));
        let (read, named) = redis.bytes("v", &first).await.expect("read");
        assert_eq!(read.as_deref(), Some(bytes.as_slice()));
        assert!(named.contains("4 more pieces"), "{named}");
        assert_eq!(redis.bytes("v", "zero+0").await.expect("read").0, None);

        // A new publish replaces every piece of the old snapshot.
        let second = redis
            .publish("v", "two", &bytes[..10])
            .await
            .expect("publish");
        assert_eq!(second, "two+1");
        assert_eq!(redis.bytes("v", &first).await.expect("read").0, None);
        let mut conn = redis.connection(Lane::Pieces).await.expect("conn");
        let left: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}v:*", redis.prefix))
            .query_async(&mut conn)
            .await
            .expect("keys");
        assert_eq!(left, [format!("{}v:two:0", redis.prefix)]);

        redis.remove("v").await.expect("remove");
        assert_eq!(redis.current("v").await.expect("get"), None);
        let left: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}v*", redis.prefix))
            .query_async(&mut conn)
            .await
            .expect("keys");
        assert!(left.is_empty(), "{left:?}");
    }
}
