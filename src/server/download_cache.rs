//! A disk cache of encoded shard reads: a training set downloaded again is sent from a file.
//!
//! A shard read of a pinned table version (what `training_set` and `table` descriptors hand out)
//! always answers with the same rows, so its encoded answer, the gRPC body the client receives,
//! can be kept and sent again: a training job reads its training set once per epoch, per worker
//! and per trial of a sweep. A replay skips Parquet decoding and IPC framing: the server sends a
//! file's pages to the socket.
//!
//! - **Key.** The table's Delta id (a drop and a re-create give a new one, so an entry never
//!   outlives its table), the version, the shard, the shard count and the partition count, plus
//!   [`FORMAT`] (bumped whenever the bytes sent for the same rows change). A version whose data
//!   files are gone (vacuumed) is not answered from the cache: what was removed stays removed.
//! - **Recording.** The first read of a key is answered as usual, and its messages are also
//!   written, on a blocking thread, to a temporary file renamed into place once the whole answer
//!   was sent. An answer that fails, that the client abandons, or that outgrows the cache is not
//!   kept. A recording never holds its reader up for long: when the disk cannot take the bytes
//!   as fast as the client does (a large version fills the kernel's dirty-page limit, after which
//!   writes go at the disk's speed), the recording is given up once it has held the reader for
//!   [`HOLD_ALLOWANCE`] and a tenth of the answer's time ([`MAX_HOLD_SHARE`]), and tried again at
//!   the next read. A warming (no reader) always waits for the disk.
//! - **Entries** are the gRPC body followed by a 16-byte trailer (a magic number and the body's
//!   length); a file without a valid trailer (cut short by a crash, edited by hand) is removed and
//!   the read is answered live.
//! - **Size.** After each recording, the least recently used entries (by modification time,
//!   which a replay refreshes) are removed until the cache holds at most its byte budget, except
//!   the other shards of the same read (table version and shard count): when they alone fill
//!   the budget, the new entry is removed instead, and the read's shards not kept are answered
//!   live, without recording, while its kept ones stay (a read larger than the cache, read epoch
//!   after epoch, would otherwise evict each shard before its next read: no read would replay).
//!   An answer larger than the whole budget is not kept, nor tried again until the server
//!   restarts; one whose share of its version's data files is already more than a quarter over
//!   the budget ([`DownloadCache::expect_at_least`]) is not even tried.
//!   Several servers on one warehouse may share the folder: entries are immutable and renamed
//!   into place whole.
//! - **Warming.** A recording the server makes on its own ([`DownloadCache::lookup_to_warm`]:
//!   the warm action, or a training set just built) is waited for by a reader of the same entry,
//!   which then replays it instead of decoding the same files beside it; a warming waits for any
//!   recording of its entry. A reader never waits for another reader (a slow client would hold
//!   it up).

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, IoSlice, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::{mpsc, watch};
use tonic::Status;
use tracing::{debug, info, warn};

use super::messages::Message;

/// Version of the entry format and of the encoding it holds.
pub const FORMAT: u32 = 1;

/// Ends every entry: the magic number, then the body's length (little-endian u64).
const MAGIC: &[u8; 8] = b"FWDLC\x00\x00\x01";
const TRAILER_BYTES: u64 = 16;

/// Entry files end in this.
const EXTENSION: &str = "flight";

/// A replay sends the file in pieces of this size.
const CHUNK_BYTES: usize = 1024 * 1024;

/// Pieces mapped ahead of the socket during a replay, and messages queued for the recorder.
const QUEUE: usize = 8;

/// A reader's recording is given up once it held the reader this long in all ...
const HOLD_ALLOWANCE: Duration = Duration::from_millis(250);
/// ... and this share of the time since the answer started.
const MAX_HOLD_SHARE: f64 = 0.1;

/// Temporary files older than this, left by a crashed recording, are removed at start.
const STALE_TEMP: Duration = Duration::from_secs(3600);

/// Where the cache lives and how much it may hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadCacheOptions {
    /// The folder (`None`: `<warehouse>/_flywheel/download_cache` for a local warehouse).
    pub dir: Option<PathBuf>,
    /// The byte budget; 0 switches the cache off.
    pub max_bytes: u64,
}

impl DownloadCacheOptions {
    /// No cache.
    pub const OFF: Self = Self {
        dir: None,
        max_bytes: 0,
    };
}

impl Default for DownloadCacheOptions {
    /// Off: a server embedded in a program caches only when asked to.
    fn default() -> Self {
        Self::OFF
    }
}

/// What identifies one cached answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey {
    pub table_id: String,
    pub version: u64,
    pub shard: usize,
    pub shards: usize,
    pub partitions: usize,
}

impl CacheKey {
    /// The entry's file name; `None` when the table id holds characters unfit for one.
    fn file_name(&self) -> Option<String> {
        let safe = !self.table_id.is_empty()
            && self
                .table_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        safe.then(|| {
            format!(
                "f{FORMAT}-{}-v{}-s{}of{}-p{}.{EXTENSION}",
                self.table_id, self.version, self.shard, self.shards, self.partitions
            )
        })
    }

    /// Whether the entry file `name` holds a read of table `table_id`, in any format
    /// ([`CacheKey::file_name`]'s `f<FORMAT>-<table id>-v...`).
    fn names_table(name: &str, table_id: &str) -> bool {
        name.split_once('-')
            .and_then(|(_, rest)| rest.strip_prefix(table_id))
            .is_some_and(|rest| rest.starts_with("-v"))
    }
}

/// The cache: a folder of entries and its byte budget.
#[derive(Debug)]
pub struct DownloadCache {
    dir: PathBuf,
    max_bytes: u64,
    /// Makes temporary file names unique within the process.
    counter: AtomicU64,
    /// Entries found larger than the budget: not recorded again (each attempt would write the
    /// budget's worth before giving up).
    oversized: Mutex<HashSet<String>>,
    /// Reads ([`group_of`]) whose kept shards fill the budget, with the bytes they held then: their
    /// other shards are not recorded while the kept ones are all still there.
    full: Mutex<HashMap<String, u64>>,
    /// Recordings under way in this process, by entry name.
    underway: Mutex<HashMap<String, Underway>>,
    /// Delta ids of the tables dropped while this process ran (an id is never used again): a
    /// recording of one that finishes after the drop is not kept.
    dropped: Mutex<HashSet<String>>,
}

/// A recording under way.
#[derive(Debug)]
struct Underway {
    /// Tells it from a later recording of the same entry.
    id: u64,
    /// Made by the server on its own (warming), not for a reader.
    warming: bool,
    /// Closed when the recording ends, kept or not.
    done: watch::Receiver<()>,
}

/// Marks a recording as under way until dropped (the entry is in place, given up, or the answer
/// abandoned).
struct UnderwayMark {
    cache: Arc<DownloadCache>,
    name: String,
    id: u64,
    /// Dropped after the mark is removed: whoever waits then finds the entry on disk.
    _done: watch::Sender<()>,
}

impl Drop for UnderwayMark {
    fn drop(&mut self) {
        let mut underway = unpoisoned(&self.cache.underway);
        if underway.get(&self.name).is_some_and(|u| u.id == self.id) {
            underway.remove(&self.name);
        }
    }
}

impl DownloadCache {
    /// Opens (creating) the cache folder and removes temporary files left by crashed recordings.
    pub fn open(dir: PathBuf, max_bytes: u64) -> io::Result<Self> {
        fs::create_dir_all(&dir)?;
        let now = SystemTime::now();
        for entry in fs::read_dir(&dir)?.flatten() {
            let stale = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age > STALE_TEMP);
            if is_temp(&entry.path()) && stale {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(Self {
            dir,
            max_bytes,
            counter: AtomicU64::new(0),
            oversized: Mutex::default(),
            full: Mutex::default(),
            underway: Mutex::default(),
            dropped: Mutex::default(),
        })
    }

    /// What to do with a read of `key`: replay its entry, or answer live and record. Waits for a
    /// warming of the same entry under way.
    pub async fn lookup(self: &Arc<Self>, key: &CacheKey) -> Lookup {
        self.lookup_as(key, false).await
    }

    /// [`DownloadCache::lookup`] for a recording the server makes on its own, which readers of
    /// the entry wait for; waits for any recording of the entry under way.
    pub async fn lookup_to_warm(self: &Arc<Self>, key: &CacheKey) -> Lookup {
        self.lookup_as(key, true).await
    }

    async fn lookup_as(self: &Arc<Self>, key: &CacheKey, warming: bool) -> Lookup {
        let Some(name) = key.file_name() else {
            return Lookup::Uncached;
        };
        let wait = unpoisoned(&self.underway)
            .get(&name)
            .filter(|u| warming || u.warming)
            .map(|u| u.done.clone());
        if let Some(mut done) = wait {
            // Returns once the recording's sender is gone, whether it kept the entry or not.
            let _ = done.changed().await;
        }
        if unpoisoned(&self.oversized).contains(&name) {
            return Lookup::NoRoom;
        }
        let path = self.dir.join(&name);
        let group = group_of(&name);
        let full_at = group
            .as_ref()
            .and_then(|g| unpoisoned(&self.full).get(g).copied());
        let dir = self.dir.clone();
        let opened = tokio::task::spawn_blocking(move || {
            let opened = open_entry(&path)?;
            // A full read gets room again only when some of its kept shards left.
            let room = match (&opened, full_at, &group) {
                (None, Some(held), Some(group)) => group_bytes(&dir, group)? < held,
                _ => true,
            };
            io::Result::Ok((opened, room))
        })
        .await;
        match opened {
            Ok(Ok((Some((file, len)), _))) => Lookup::Hit(Entry { name, file, len }),
            Ok(Ok((None, false))) => Lookup::NoRoom,
            Ok(Ok((None, true))) => Lookup::Miss(Recorder {
                _mark: self.mark_underway(&name, warming),
                cache: Arc::clone(self),
                name,
                warming,
            }),
            Ok(Err(e)) => {
                warn!(entry = %name, error = %e, "download cache: cannot read an entry; answering live");
                Lookup::Uncached
            }
            Err(_) => Lookup::Uncached,
        }
    }

    /// Notes that the answer of `key` holds about `share` bytes or more (its share of the version's
    /// data files; Arrow is as large as Parquet or larger). One that surely cannot fit, more than a
    /// quarter over the budget, is not recorded: trying would write the budget's worth first.
    pub fn expect_at_least(&self, key: &CacheKey, share: u64) {
        if share > self.max_bytes.saturating_add(self.max_bytes / 4)
            && let Some(name) = key.file_name()
            && unpoisoned(&self.oversized).insert(name.clone())
        {
            info!(entry = %name, share, budget = self.max_bytes,
                "download cache: an answer larger than the cache is not kept; raise \
                 download_cache_size to cache it");
        }
    }

    /// Marks a recording of entry `name` as under way.
    fn mark_underway(self: &Arc<Self>, name: &str, warming: bool) -> UnderwayMark {
        let id = self.counter.fetch_add(1, Ordering::Relaxed);
        let (tx, done) = watch::channel(());
        unpoisoned(&self.underway).insert(name.to_owned(), Underway { id, warming, done });
        UnderwayMark {
            cache: Arc::clone(self),
            name: name.to_owned(),
            id,
            _done: tx,
        }
    }

    fn temp_path(&self, name: &str) -> PathBuf {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        self.dir
            .join(format!("{name}.tmp-{}-{n}", std::process::id()))
    }

    /// Removes every entry of the table whose Delta id is `table_id` (dropped: no read can ask
    /// for it again). Entries of any format count; failures are logged, the LRU budget still holds.
    pub fn forget_table(&self, table_id: &str) {
        // Held while removing: a recording of the table either is in place before (and is
        // removed here) or sees the mark (and is not put in place).
        let mut dropped = unpoisoned(&self.dropped);
        dropped.insert(table_id.to_owned());
        unpoisoned(&self.full).retain(|group, _| !CacheKey::names_table(group, table_id));
        let Ok(listing) = fs::read_dir(&self.dir) else {
            return;
        };
        let mut removed = 0;
        for entry in listing.flatten() {
            let path = entry.path();
            let of_table = path.extension().is_some_and(|e| e == EXTENSION)
                && path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| CacheKey::names_table(n, table_id));
            if of_table {
                match fs::remove_file(&path) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => {
                        warn!(entry = %path.display(), error = %e, "download cache: cannot remove an entry of a dropped table");
                    }
                }
            }
        }
        if removed > 0 {
            info!(
                table_id,
                entries = removed,
                "download cache: forgot a dropped table"
            );
        }
    }

    /// Removes entries until the cache fits its budget, after `newest` was put in place: first
    /// the least recently used entries of other reads, then `newest` itself rather than the
    /// other shards of its read (which is then marked full), then those, least recently used
    /// first (only when the budget shrank below them). Whether `newest` is kept.
    fn evict(&self, newest: &str) -> io::Result<bool> {
        let group = group_of(newest);
        let mut entries = Vec::new();
        for entry in fs::read_dir(&self.dir)?.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == EXTENSION)
                && let Ok(meta) = entry.metadata()
            {
                let name = entry.file_name().to_string_lossy().into_owned();
                // The order of removal: other reads, the newest entry, its read's other shards.
                let rank = if name == newest {
                    1
                } else if group.is_some() && group_of(&name) == group {
                    2
                } else {
                    0
                };
                let used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                entries.push((rank, used, meta.len(), path, name));
            }
        }
        let mut total: u64 = entries.iter().map(|(_, _, len, _, _)| len).sum();
        // What the read's other shards hold, should it be marked full.
        let siblings: u64 = entries
            .iter()
            .filter(|(rank, ..)| *rank == 2)
            .map(|(_, _, len, _, _)| len)
            .sum();
        entries.sort();
        let mut kept = true;
        for (rank, _, len, path, name) in entries {
            if total <= self.max_bytes {
                break;
            }
            match fs::remove_file(&path) {
                Ok(()) => debug!(entry = %path.display(), "download cache: evicted"),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            total = total.saturating_sub(len);
            if name == newest {
                kept = false;
            }
            if rank == 1
                && let Some(group) = &group
            {
                unpoisoned(&self.full).insert(group.clone(), siblings);
            }
        }
        Ok(kept)
    }
}

/// The read an entry file belongs to: its name without the shard number (every shard of one
/// table version in one shard count: `f1-<table id>-v3-s0of4-p4.flight` -> `f1-<table
/// id>-v3-of4-p4`). `None` for a name not made by [`CacheKey::file_name`].
fn group_of(name: &str) -> Option<String> {
    let stem = name.strip_suffix(&format!(".{EXTENSION}"))?;
    // The table id may hold `-s`; what follows the last one is `<shard>of<shards>-p<partitions>`.
    let (read, shard_part) = stem.rsplit_once("-s")?;
    let (shard, rest) = shard_part.split_once("of")?;
    (!shard.is_empty() && shard.bytes().all(|b| b.is_ascii_digit()))
        .then(|| format!("{read}-of{rest}"))
}

/// The bytes held by the entries of read `group` ([`group_of`]) in `dir`.
fn group_bytes(dir: &Path, group: &str) -> io::Result<u64> {
    let mut bytes = 0;
    for entry in fs::read_dir(dir)?.flatten() {
        let name = entry.file_name();
        if group_of(&name.to_string_lossy()).as_deref() == Some(group)
            && let Ok(meta) = entry.metadata()
        {
            bytes += meta.len();
        }
    }
    Ok(bytes)
}

fn is_temp(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.contains(&format!(".{EXTENSION}.tmp-")))
}

/// Locks `mutex`, also after a panic while it was held: the cache's sets and maps are only
/// bookkeeping, each left whole by any change.
pub(super) fn unpoisoned<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The outcome of [`DownloadCache::lookup`].
pub enum Lookup {
    /// A valid entry, opened (nothing read yet).
    Hit(Entry),
    /// No entry yet: answer live through this recorder.
    Miss(Recorder),
    /// The answer is larger than the cache, or the other shards of its read fill it: answer
    /// live, without recording.
    NoRoom,
    /// Not cacheable, or the cache could not be read.
    Uncached,
}

/// Opens a valid entry: the file and its body's length. `Ok(None)` when there is none (an
/// invalid one is removed).
fn open_entry(path: &Path) -> io::Result<Option<(File, u64)>> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let mut trailer = [0u8; TRAILER_BYTES as usize];
    let valid = len >= TRAILER_BYTES && {
        file.seek(SeekFrom::Start(len - TRAILER_BYTES))?;
        file.read_exact(&mut trailer)?;
        let (magic, body) = trailer.split_at(8);
        let body = u64::from_le_bytes(body.try_into().unwrap_or_default());
        magic == MAGIC && body == len - TRAILER_BYTES
    };
    if !valid {
        warn!(entry = %path.display(), "download cache: removing an invalid entry");
        fs::remove_file(path)?;
        return Ok(None);
    }
    file.seek(SeekFrom::Start(0))?;
    // The last use, for eviction.
    if let Err(e) = file.set_modified(SystemTime::now()) {
        debug!(entry = %path.display(), error = %e, "download cache: cannot touch an entry");
    }
    Ok(Some((file, len - TRAILER_BYTES)))
}

/// An opened entry.
pub struct Entry {
    name: String,
    file: File,
    /// The body's length (without the trailer).
    len: u64,
}

impl Entry {
    /// The entry's messages, mapped ahead on a blocking thread.
    pub fn replay(self) -> BoxStream<'static, Result<Message, Status>> {
        debug!(entry = %self.name, bytes = self.len, "download cache: replaying");
        replay(self.file, self.len)
    }
}

/// Sends an entry's body a piece at a time, mapped ahead of the socket on a blocking thread: the
/// pieces are the file's own pages ([`crate::file_pages`]; entries are never changed once renamed
/// into place), or read copies where the kernel refuses a mapping.
fn replay(mut file: File, len: u64) -> BoxStream<'static, Result<Message, Status>> {
    let (tx, rx) = mpsc::channel::<Result<Message, Status>>(QUEUE);
    tokio::task::spawn_blocking(move || {
        let mut start = 0;
        while start < len {
            let range = start..len.min(start + CHUNK_BYTES as u64);
            start = range.end;
            let piece = crate::file_pages::mapped(&file, &range)
                .or_else(|_| crate::file_pages::read_range(&mut file, &range))
                .map(|piece| vec![piece])
                .map_err(|e| {
                    Status::internal(format!(
                        "internal error: cannot read a download cache entry: {e}"
                    ))
                });
            let failed = piece.is_err();
            // The client hung up, or the read failed: stop.
            if tx.blocking_send(piece).is_err() || failed {
                break;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx).boxed()
}

/// Records one live answer into a new entry.
pub struct Recorder {
    cache: Arc<DownloadCache>,
    name: String,
    /// Made by the server on its own: no reader to hold up, so it always waits for the disk.
    warming: bool,
    /// Dropped with the recorder, after the entry is in place or given up.
    _mark: UnderwayMark,
}

/// How long a reader's recording has held the reader up (waiting for the recording thread).
struct Hold {
    started: Instant,
    held: Duration,
}

impl Hold {
    /// Whether the recording has held its reader up too long to go on.
    fn too_long(&self) -> bool {
        self.held > HOLD_ALLOWANCE
            && self.held.as_secs_f64() > self.started.elapsed().as_secs_f64() * MAX_HOLD_SHARE
    }
}

/// What the answer's stream tells the recording thread.
enum Record {
    Message(Message),
    /// The whole answer was sent.
    Done,
}

impl Recorder {
    /// `messages`, also written to the entry; the entry is kept only if they all succeed.
    pub fn tee(
        self,
        messages: BoxStream<'static, Result<Message, Status>>,
    ) -> BoxStream<'static, Result<Message, Status>> {
        self.tee_joined(messages).0
    }

    /// [`Recorder::tee`], and the recording thread, which ends once the entry is in place
    /// (`true`) or given up.
    pub fn tee_joined(
        self,
        messages: BoxStream<'static, Result<Message, Status>>,
    ) -> (
        BoxStream<'static, Result<Message, Status>>,
        tokio::task::JoinHandle<bool>,
    ) {
        let (tx, rx) = mpsc::channel::<Record>(QUEUE);
        let name = self.name.clone();
        // A warming has no reader to hold up.
        let hold = (!self.warming).then(|| Hold {
            started: Instant::now(),
            held: Duration::ZERO,
        });
        let writer = tokio::task::spawn_blocking(move || self.write(rx));
        let messages = futures::stream::unfold(
            (messages, Some(tx), hold, name),
            |(mut messages, mut tx, mut hold, name)| async move {
                match messages.next().await {
                    Some(Ok(message)) => {
                        if let Some(sender) = &tx
                            && !send_or_give_up(sender, &message, hold.as_mut(), &name).await
                        {
                            // Dropping the sender without `Done` discards the recording; the
                            // answer goes on.
                            tx = None;
                        }
                        Some((Ok(message), (messages, tx, hold, name)))
                    }
                    Some(Err(status)) => Some((Err(status), (messages, None, hold, name))),
                    None => {
                        if let Some(sender) = tx {
                            let _ = sender.send(Record::Done).await;
                        }
                        None
                    }
                }
            },
        )
        .boxed();
        (messages, writer)
    }

    /// The recording thread: writes messages until `Done`, then puts the entry in place;
    /// whether it did.
    fn write(self, mut rx: mpsc::Receiver<Record>) -> bool {
        let temp = self.cache.temp_path(&self.name);
        let result = self.record(&temp, &mut rx);
        let kept = match result {
            Ok(Some(bytes)) => {
                let kept = self.put_in_place(&temp)
                    && match self.cache.evict(&self.name) {
                        Ok(true) => true,
                        Ok(false) => {
                            info!(entry = %self.name, bytes, budget = self.cache.max_bytes,
                                "download cache: not kept, the other shards of its read fill the \
                                 cache; its shards not kept are answered live until some kept \
                                 ones leave (raise download_cache_size to keep them all)");
                            false
                        }
                        Err(e) => {
                            warn!(error = %e, "download cache: cannot evict old entries");
                            true
                        }
                    };
                if kept {
                    info!(entry = %self.name, bytes, "download cache: recorded");
                }
                kept
            }
            Ok(None) => false,
            Err(e) => {
                warn!(entry = %self.name, error = %e, "download cache: cannot record an entry");
                false
            }
        };
        if !kept {
            let _ = fs::remove_file(&temp);
        }
        kept
    }

    /// Renames the finished entry into place, unless its table was dropped while it was being
    /// recorded (the drop's [`DownloadCache::forget_table`] came before the entry was there).
    fn put_in_place(&self, temp: &Path) -> bool {
        let dropped = unpoisoned(&self.cache.dropped);
        if dropped
            .iter()
            .any(|table_id| CacheKey::names_table(&self.name, table_id))
        {
            debug!(entry = %self.name, "download cache: not kept, its table was dropped");
            return false;
        }
        match fs::rename(temp, self.cache.dir.join(&self.name)) {
            Ok(()) => true,
            Err(e) => {
                warn!(entry = %self.name, error = %e, "download cache: cannot keep an entry");
                false
            }
        }
    }

    /// Writes the entry to `temp`: `Some(body bytes)` when complete, `None` when abandoned.
    fn record(&self, temp: &Path, rx: &mut mpsc::Receiver<Record>) -> io::Result<Option<u64>> {
        // The folder may have been removed by hand to empty the cache.
        fs::create_dir_all(&self.cache.dir)?;
        let mut out = File::create(temp)?;
        let mut len: u64 = 0;
        while let Some(record) = rx.blocking_recv() {
            match record {
                Record::Message(message) => {
                    len += message.iter().map(|piece| piece.len() as u64).sum::<u64>();
                    if len + TRAILER_BYTES > self.cache.max_bytes {
                        info!(entry = %self.name, budget = self.cache.max_bytes,
                            "download cache: an answer larger than the cache is not kept; \
                             raise download_cache_size to cache it");
                        unpoisoned(&self.cache.oversized).insert(self.name.clone());
                        return Ok(None);
                    }
                    write_pieces(&mut out, &message)?;
                }
                Record::Done => {
                    let mut trailer = [0u8; TRAILER_BYTES as usize];
                    trailer[..MAGIC.len()].copy_from_slice(MAGIC);
                    trailer[MAGIC.len()..].copy_from_slice(&len.to_le_bytes());
                    out.write_all(&trailer)?;
                    return Ok(Some(len));
                }
            }
        }
        // The answer stopped before its end.
        Ok(None)
    }
}

/// Hands `message` to the recording thread; `false` when the recording is over: it gave up (too
/// large, a disk error), or, for a reader's recording (`hold`), it has held the reader up too long
/// waiting for the disk ([`Hold::too_long`]).
async fn send_or_give_up(
    sender: &mpsc::Sender<Record>,
    message: &Message,
    hold: Option<&mut Hold>,
    name: &str,
) -> bool {
    let record = Record::Message(message.clone());
    let Some(hold) = hold else {
        return sender.send(record).await.is_ok();
    };
    match sender.try_send(record) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Closed(_)) => false,
        Err(mpsc::error::TrySendError::Full(record)) => {
            let waiting = Instant::now();
            let sent = sender.send(record).await.is_ok();
            hold.held += waiting.elapsed();
            if sent && hold.too_long() {
                info!(entry = %name, held_ms = hold.held.as_millis() as u64,
                    "download cache: recording given up, the disk is slower than the reader; \
                     tried again at the next read");
                return false;
            }
            sent
        }
    }
}

/// Writes a message's pieces as they are, in as few `writev` calls as the kernel takes (a
/// buffered writer would copy every column once more).
fn write_pieces(out: &mut File, pieces: &[Bytes]) -> io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = pieces
        .iter()
        .filter(|piece| !piece.is_empty())
        .map(|piece| IoSlice::new(piece))
        .collect();
    let mut slices = &mut slices[..];
    while !slices.is_empty() {
        match out.write_vectored(slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use futures::TryStreamExt;
    use futures::stream;

    use super::*;

    fn key(shard: usize) -> CacheKey {
        CacheKey {
            table_id: "0f8e-42".into(),
            version: 3,
            shard,
            shards: 2,
            partitions: 2,
        }
    }

    fn messages(pieces: &[&'static [u8]]) -> BoxStream<'static, Result<Message, Status>> {
        let messages: Vec<Result<Message, Status>> = pieces
            .iter()
            .map(|p| Ok(vec![Bytes::from_static(p), Bytes::from_static(b"|")]))
            .collect();
        stream::iter(messages).boxed()
    }

    async fn body(messages: BoxStream<'static, Result<Message, Status>>) -> Vec<u8> {
        let messages: Vec<Message> = messages.try_collect().await.expect("messages");
        messages.into_iter().flatten().flatten().collect()
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Records `pieces` under `key` and waits until the entry is in place (or not kept).
    async fn record(cache: &Arc<DownloadCache>, key: &CacheKey, pieces: &[&'static [u8]]) {
        let Lookup::Miss(recorder) = cache.lookup(key).await else {
            panic!("expected a miss");
        };
        let (sent, writer) = recorder.tee_joined(messages(pieces));
        assert_eq!(
            body(sent).await,
            body(messages(pieces)).await,
            "the live answer is unchanged"
        );
        writer.await.expect("the recording thread ends");
    }

    #[tokio::test]
    async fn a_recorded_answer_is_replayed_byte_for_byte() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = Arc::new(DownloadCache::open(dir.path().into(), 1 << 20).expect("opens"));
        record(&cache, &key(0), &[b"schema", b"batch one", b"batch two"]).await;
        let Lookup::Hit(entry) = cache.lookup(&key(0)).await else {
            panic!("expected a hit");
        };
        assert_eq!(body(entry.replay()).await, b"schema|batch one|batch two|");
        assert!(
            matches!(cache.lookup(&key(1)).await, Lookup::Miss(_)),
            "another shard is another entry"
        );
    }

    #[tokio::test]
    async fn two_first_reads_at_once_leave_one_valid_entry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = Arc::new(DownloadCache::open(dir.path().into(), 1 << 20).expect("opens"));
        let (Lookup::Miss(a), Lookup::Miss(b)) =
            (cache.lookup(&key(0)).await, cache.lookup(&key(0)).await)
        else {
            panic!("expected two misses");
        };
        let pieces: &[&'static [u8]] = &[b"schema", b"batch"];
        let ((sent_a, writer_a), (sent_b, writer_b)) = (
            a.tee_joined(messages(pieces)),
            b.tee_joined(messages(pieces)),
        );
        let (body_a, body_b) = futures::join!(body(sent_a), body(sent_b));
        assert_eq!(body_a, body_b);
        assert!(writer_a.await.expect("a") && writer_b.await.expect("b"));
        assert_eq!(entries(dir.path()).len(), 1, "{:?}", entries(dir.path()));
        let Lookup::Hit(entry) = cache.lookup(&key(0)).await else {
            panic!("expected a hit");
        };
        assert_eq!(body(entry.replay()).await, body_a);
    }

    #[tokio::test]
    async fn a_reader_waits_for_a_warming_of_its_entry_and_replays_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = Arc::new(DownloadCache::open(dir.path().into(), 1 << 20).expect("opens"));
        let Lookup::Miss(warming) = cache.lookup_to_warm(&key(0)).await else {
            panic!("expected a miss");
        };
        // The warming's answer arrives piece by piece, as a slow decode would.
        let (tx, rx) = mpsc::channel::<Result<Message, Status>>(4);
        let (sent, writer) =
            warming.tee_joined(tokio_stream::wrappers::ReceiverStream::new(rx).boxed());
        let drained = tokio::spawn(body(sent));
        let reader = tokio::spawn({
            let cache = Arc::clone(&cache);
            async move { cache.lookup(&key(0)).await }
        });
        // Another shard is not held up; a reader of a reader's recording is not either.
        assert!(matches!(cache.lookup(&key(1)).await, Lookup::Miss(_)));
        tx.send(Ok(vec![Bytes::from_static(b"schema|")]))
            .await
            .expect("sends");
        tokio::task::yield_now().await;
        assert!(
            !reader.is_finished(),
            "the reader went live beside the warming"
        );
        tx.send(Ok(vec![Bytes::from_static(b"batch|")]))
            .await
            .expect("sends");
        drop(tx);
        assert_eq!(drained.await.expect("drains"), b"schema|batch|");
        assert!(writer.await.expect("records"));
        let Lookup::Hit(entry) = reader.await.expect("looks up") else {
            panic!("the reader did not replay the warmed entry");
        };
        assert_eq!(body(entry.replay()).await, b"schema|batch|");

        // A warming that is not kept lets its reader go live.
        let Lookup::Miss(warming) = cache.lookup_to_warm(&key(1)).await else {
            panic!("expected a miss");
        };
        let reader = tokio::spawn({
            let cache = Arc::clone(&cache);
            async move { cache.lookup(&key(1)).await }
        });
        tokio::task::yield_now().await;
        drop(warming);
        assert!(matches!(reader.await.expect("looks up"), Lookup::Miss(_)));
    }

    #[tokio::test]
    async fn a_cache_emptied_by_removing_its_folder_keeps_working() {
        let dir = tempfile::tempdir().expect("tempdir");
        let folder = dir.path().join("cache");
        let cache = Arc::new(DownloadCache::open(folder.clone(), 1 << 20).expect("opens"));
        record(&cache, &key(0), &[b"schema"]).await;
        fs::remove_dir_all(&folder).expect("removes the folder");
        assert!(matches!(cache.lookup(&key(0)).await, Lookup::Miss(_)));
        record(&cache, &key(0), &[b"schema"]).await;
        assert!(matches!(cache.lookup(&key(0)).await, Lookup::Hit(_)));
    }

    #[tokio::test]
    async fn a_failed_answer_is_not_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = Arc::new(DownloadCache::open(dir.path().into(), 1 << 20).expect("opens"));
        let Lookup::Miss(recorder) = cache.lookup(&key(0)).await else {
            panic!("expected a miss");
        };
        let failing = messages(&[b"schema"])
            .chain(stream::iter([Err(Status::internal("disk on fire"))]))
            .boxed();
        let (sent, writer) = recorder.tee_joined(failing);
        let sent: Vec<_> = sent.collect().await;
        assert!(sent.last().is_some_and(|r| r.is_err()));
        assert!(!writer.await.expect("the recording thread ends"));
        assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));
        assert!(matches!(cache.lookup(&key(0)).await, Lookup::Miss(_)));
    }

    #[tokio::test]
    async fn an_entry_cut_short_is_removed_and_answered_live() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = Arc::new(DownloadCache::open(dir.path().into(), 1 << 20).expect("opens"));
        record(&cache, &key(0), &[b"schema", b"batch"]).await;
        let [name] = &entries(dir.path())[..] else {
            panic!("one entry expected: {:?}", entries(dir.path()));
        };
        let path = dir.path().join(name);
        let bytes = fs::read(&path).expect("entry");
        fs::write(&path, &bytes[..bytes.len() - 1]).expect("truncates");
        assert!(matches!(cache.lookup(&key(0)).await, Lookup::Miss(_)));
        assert!(!path.exists(), "the invalid entry is removed");
    }

    #[tokio::test]
    async fn the_least_recently_used_entries_leave_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let piece: &'static [u8] = &[7u8; 400];
        // Room for two entries of ~420 bytes, not three.
        let cache = Arc::new(DownloadCache::open(dir.path().into(), 1000).expect("opens"));
        record(&cache, &key(0), &[piece]).await;
        record(&cache, &key(1), &[piece]).await;
        // Make entry 1 the older one, then use entry 0.
        let old = SystemTime::now() - Duration::from_secs(60);
        for name in entries(dir.path()) {
            let file = File::options()
                .write(true)
                .open(dir.path().join(&name))
                .expect("entry");
            file.set_modified(old).expect("touch");
        }
        assert!(matches!(cache.lookup(&key(0)).await, Lookup::Hit(_)));
        let third = CacheKey {
            version: 4,
            ..key(0)
        };
        record(&cache, &third, &[piece]).await;
        let left = entries(dir.path());
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(left.iter().all(|n| !n.contains("-v3-s1of2")), "{left:?}");
    }

    #[tokio::test]
    async fn a_read_larger_than_the_cache_keeps_its_first_shards() {
        let dir = tempfile::tempdir().expect("tempdir");
        let piece: &'static [u8] = &[7u8; 400];
        // Room for two entries of ~420 bytes, not three.
        let cache = Arc::new(DownloadCache::open(dir.path().into(), 1000).expect("opens"));
        let shard = |shard| CacheKey {
            shards: 3,
            partitions: 3,
            ..key(shard)
        };
        for k in 0..3 {
            record(&cache, &shard(k), &[piece]).await;
        }
        // The next epoch replays the two kept shards (least-recently-used eviction would have
        // removed shard 0 for shard 2, then shard 1 for shard 0, ...: no read would replay).
        assert!(matches!(cache.lookup(&shard(0)).await, Lookup::Hit(_)));
        assert!(matches!(cache.lookup(&shard(1)).await, Lookup::Hit(_)));
        assert!(
            matches!(cache.lookup(&shard(2)).await, Lookup::NoRoom),
            "the shard that did not fit is answered live without recording"
        );
        assert_eq!(
            group_of("f1-0f8e-42-v3-s2of3-p3.flight").as_deref(),
            Some("f1-0f8e-42-v3-of3-p3")
        );

        // Another read's recording takes the least recently used of them; then there is room.
        record(
            &cache,
            &CacheKey {
                version: 4,
                ..key(0)
            },
            &[piece],
        )
        .await;
        let left = entries(dir.path());
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(left.iter().all(|n| !n.contains("-v3-s0of3")), "{left:?}");
        assert!(matches!(cache.lookup(&shard(2)).await, Lookup::Miss(_)));
    }

    #[tokio::test]
    async fn a_recording_that_holds_its_reader_up_is_given_up_a_warming_waits() {
        let (tx, mut rx) = mpsc::channel::<Record>(1);
        let message: Message = vec![Bytes::from_static(b"rows")];
        let mut hold = Hold {
            started: Instant::now(),
            held: Duration::ZERO,
        };
        // The recording thread keeps up: the reader is not held.
        assert!(send_or_give_up(&tx, &message, Some(&mut hold), "e").await);
        assert_eq!(hold.held, Duration::ZERO);
        // Then it takes a message every 300 ms only, as a disk at its dirty-page limit would.
        let drain = tokio::spawn(async move {
            let mut taken = 0;
            loop {
                tokio::time::sleep(Duration::from_millis(300)).await;
                if rx.recv().await.is_none() {
                    return taken;
                }
                taken += 1;
            }
        });
        // Held a moment in a long answer: goes on.
        let mut long = Hold {
            started: Instant::now() - Duration::from_secs(60),
            held: Duration::ZERO,
        };
        assert!(send_or_give_up(&tx, &message, Some(&mut long), "e").await);
        assert!(long.held >= Duration::from_millis(250), "{:?}", long.held);
        // Held for most of a short answer: given up.
        assert!(!send_or_give_up(&tx, &message, Some(&mut hold), "e").await);
        // A warming has no reader: it waits.
        assert!(send_or_give_up(&tx, &message, None, "e").await);
        drop(tx);
        assert_eq!(drain.await.expect("drains"), 4);
    }

    #[tokio::test]
    async fn an_answer_over_the_budget_is_not_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = Arc::new(DownloadCache::open(dir.path().into(), 100).expect("opens"));
        record(&cache, &key(0), &[&[1u8; 200]]).await;
        assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));
        assert!(
            matches!(cache.lookup(&key(0)).await, Lookup::NoRoom),
            "not recorded again"
        );
        assert!(matches!(cache.lookup(&key(1)).await, Lookup::Miss(_)));
    }

    #[tokio::test]
    async fn an_answer_whose_files_alone_exceed_the_budget_is_not_tried() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = Arc::new(DownloadCache::open(dir.path().into(), 100).expect("opens"));
        cache.expect_at_least(&key(0), 126);
        assert!(matches!(cache.lookup(&key(0)).await, Lookup::NoRoom));
        // Within a quarter of the budget the answer may still fit (Parquet and Arrow sizes differ).
        cache.expect_at_least(&key(1), 125);
        assert!(matches!(cache.lookup(&key(1)).await, Lookup::Miss(_)));
    }

    #[tokio::test]
    async fn a_dropped_tables_entries_are_forgotten_and_no_other() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = Arc::new(DownloadCache::open(dir.path().into(), 1 << 20).expect("opens"));
        let keyed = |table_id: &str, shard| CacheKey {
            table_id: table_id.into(),
            ..key(shard)
        };
        for k in [
            keyed("t1", 0),
            keyed("t1", 1),
            keyed("t10", 0),
            keyed("other", 0),
        ] {
            record(&cache, &k, &[b"rows"]).await;
        }
        assert_eq!(entries(dir.path()).len(), 4);
        cache.forget_table("t1");
        let left = entries(dir.path());
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(left.iter().all(|e| !e.contains("-t1-")), "{left:?}");
        assert!(matches!(
            cache.lookup(&keyed("t10", 0)).await,
            Lookup::Hit(_)
        ));

        // A recording of a dropped table that finishes after the drop is not kept.
        let Lookup::Miss(late) = cache.lookup(&keyed("t2", 0)).await else {
            panic!("expected a miss");
        };
        let (tx, rx) = mpsc::channel::<Result<Message, Status>>(4);
        let (sent, writer) =
            late.tee_joined(tokio_stream::wrappers::ReceiverStream::new(rx).boxed());
        let drained = tokio::spawn(body(sent));
        tx.send(Ok(vec![Bytes::from_static(b"rows")]))
            .await
            .expect("sends");
        cache.forget_table("t2");
        drop(tx);
        drained.await.expect("drains");
        assert!(!writer.await.expect("ends"), "kept after the drop");
        assert!(matches!(
            cache.lookup(&keyed("t2", 0)).await,
            Lookup::Miss(_)
        ));
    }

    #[test]
    fn table_ids_unfit_for_file_names_are_not_cached() {
        let mut k = key(0);
        k.table_id = "../../etc".into();
        assert_eq!(k.file_name(), None);
        assert_eq!(
            key(0).file_name().as_deref(),
            Some("f1-0f8e-42-v3-s0of2-p2.flight")
        );
    }
}
