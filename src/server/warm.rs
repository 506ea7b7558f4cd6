//! The `flywheel.warm_download_cache` action: records the shards of a training-set or table read
//! into the [download cache](super::download_cache) before any reader asks, so that a training
//! job's first read is already a replay.
//!
//! The action's body is the `FlightDescriptor` a reader passes to `GetFlightInfo` (a path:
//! `["training_set", NAME, "version=V"?, "shards=N"?]` or `["table", ...]`), serialized as
//! protobuf. The server makes the same endpoints and, one shard after the other, runs each read not
//! yet cached and records it, sending the rows nowhere. One result per shard, as each finishes, with
//! a JSON body: `{"shard": 0, "shards": 4, "version": 3, "cached": "recorded", "bytes": 1234}`
//! (`cached`: `recorded`, `already`, or `not kept` when the answer is larger than the cache).
//!
//! The server also warms, on its own, every training set built through it
//! ([`warm_built_training_sets`]), in the shard counts its readers asked for ([`AskedShards`]).

use std::sync::Arc;

use arrow_flight::sql::Any;
use arrow_flight::{ActionType, FlightDescriptor};
use bytes::Bytes;
use futures::future::ready;
use futures::stream::{self, BoxStream};
use futures::{StreamExt, TryStreamExt};
use prost::Message as _;
use serde::Serialize;
use tonic::Status;
use tracing::{debug, info, warn};

use super::do_get::batch_messages;
use super::download_cache::{CacheKey, DownloadCache, Lookup, unpoisoned};
use super::service::FlywheelFlightSqlService;
use super::shards::{self, DatasetRequest, SHARD_TICKET_TYPE};
use super::to_status;

/// The action's type.
pub const ACTION: &str = "flywheel.warm_download_cache";

/// How `ListActions` describes the action.
pub fn action_type() -> ActionType {
    ActionType {
        r#type: ACTION.into(),
        description: "Records every shard of a training_set or table path descriptor (the body, a \
                      serialized FlightDescriptor) into the download cache; one result per shard"
            .into(),
    }
}

/// What one shard's result says.
#[derive(Debug, Serialize)]
struct Warmed {
    shard: usize,
    shards: usize,
    version: u64,
    cached: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes: Option<u64>,
}

/// Runs the action: checks the request now, then warms the shards as the results are read.
pub async fn warm(
    service: FlywheelFlightSqlService,
    body: &[u8],
) -> Result<BoxStream<'static, Result<arrow_flight::Result, Status>>, Status> {
    let cache = service.download_cache().cloned().ok_or_else(|| {
        Status::failed_precondition(
            "the download cache is off: set download_cache_size (and download_cache_dir when the \
             warehouse is not a local folder)",
        )
    })?;
    let descriptor = FlightDescriptor::decode(body).map_err(|e| {
        Status::invalid_argument(format!(
            "the body of {ACTION} must be a serialized FlightDescriptor: {e}"
        ))
    })?;
    let shards = warm_descriptor(service, cache, descriptor).await?;
    Ok(shards
        .map(|warmed| {
            let body = serde_json::to_vec(&warmed?)
                .map_err(|e| Status::internal(format!("internal error: {e}")))?;
            Ok(arrow_flight::Result { body: body.into() })
        })
        .boxed())
}

/// Makes the endpoints `descriptor` asks for, then warms one shard after the other as the
/// stream is read.
async fn warm_descriptor(
    service: FlywheelFlightSqlService,
    cache: Arc<DownloadCache>,
    descriptor: FlightDescriptor,
) -> Result<BoxStream<'static, Result<Warmed, Status>>, Status> {
    let request = DatasetRequest::from_path(&descriptor.path).map_err(to_status)?;
    if matches!(request, DatasetRequest::Sql { .. }) {
        return Err(Status::invalid_argument(
            "only training_set and table reads are cached: a query's answer may change",
        ));
    }
    let info = shards::flight_info(service.engine(), request, descriptor)
        .await
        .map_err(to_status)?;
    let tickets = info
        .endpoint
        .iter()
        .map(|endpoint| {
            let ticket = endpoint.ticket.as_ref().map(|t| t.ticket.clone());
            let any = ticket.and_then(|t| Any::decode(t).ok());
            match any {
                Some(any) if any.type_url == SHARD_TICKET_TYPE => Ok(any.value),
                _ => Err(Status::internal(
                    "internal error: an endpoint without a shard ticket",
                )),
            }
        })
        .collect::<Result<Vec<Bytes>, Status>>()?;
    let service = Arc::new(service);
    Ok(stream::iter(tickets)
        .then(move |ticket| warm_shard(Arc::clone(&service), Arc::clone(&cache), ticket))
        .boxed())
}

/// Records one shard unless it is cached already.
async fn warm_shard(
    service: Arc<FlywheelFlightSqlService>,
    cache: Arc<DownloadCache>,
    ticket: Bytes,
) -> Result<Warmed, Status> {
    let (key, share): (CacheKey, u64) =
        service.shard_cache_key(&ticket).await?.ok_or_else(|| {
            Status::failed_precondition("the version's data files are gone; it cannot be cached")
        })?;
    cache.expect_at_least(&key, share);
    let (cached, bytes) = match cache.lookup_to_warm(&key).await {
        Lookup::Hit(_) => ("already", None),
        Lookup::NoRoom => ("not kept", None),
        Lookup::Miss(recorder) => {
            let (schema, batches) = service.shard_batches(&ticket).await?;
            let (messages, writer) = recorder.tee_joined(batch_messages(schema, batches, None));
            let bytes = messages
                .try_fold(0u64, |n, message| {
                    ready(Ok(n + message.iter().map(|p| p.len() as u64).sum::<u64>()))
                })
                .await?;
            let kept = writer.await.unwrap_or(false);
            (if kept { "recorded" } else { "not kept" }, Some(bytes))
        }
        Lookup::Uncached => {
            return Err(Status::internal(
                "the download cache cannot be read; the server log says why",
            ));
        }
    };
    Ok(Warmed {
        shard: key.shard,
        shards: key.shards,
        version: key.version,
        cached,
        bytes,
    })
}

/// How many distinct shard counts are remembered per training set.
const REMEMBERED_COUNTS: usize = 3;

/// The shard counts readers of each training set asked for most recently (`None`: the default,
/// one shard per data file): a new version is warmed for each, so that workers reading it in
/// `shards=N` find their shards recorded.
#[derive(Debug, Default)]
pub(super) struct AskedShards(
    std::sync::Mutex<std::collections::HashMap<String, Vec<Option<usize>>>>,
);

impl AskedShards {
    /// Notes that a reader asked for training set `name` in `shards` shards.
    pub(super) fn asked(&self, name: &str, shards: Option<usize>) {
        let mut asked = unpoisoned(&self.0);
        let counts = asked.entry(name.to_owned()).or_default();
        counts.retain(|c| *c != shards);
        counts.insert(0, shards);
        counts.truncate(REMEMBERED_COUNTS);
    }

    /// The shard counts to warm training set `name` for (the default when nobody asked yet).
    fn counts(&self, name: &str) -> Vec<Option<usize>> {
        let asked = unpoisoned(&self.0);
        asked.get(name).cloned().unwrap_or_else(|| vec![None])
    }
}

/// Warms the download cache with every training set the service's engine builds from now on
/// (`CREATE` or `REFRESH TRAINING SET` through this server), in the background, one after the
/// other: a training job's first read of the new version is then a replay. Sets built again while
/// waiting are warmed once, at their latest version. Shard counts: those the set's readers asked
/// this server for most recently ([`AskedShards`]), else the default (one shard per data file).
/// The server aborts the returned task when it stops; a recording cut short is not kept.
pub(super) fn warm_built_training_sets(
    service: FlywheelFlightSqlService,
    cache: Arc<DownloadCache>,
) -> tokio::task::JoinHandle<()> {
    let (built, mut waiting) = tokio::sync::mpsc::unbounded_channel::<String>();
    service
        .engine()
        .on_training_set_built(Arc::new(move |name: &str| {
            // Fails only once the server stopped, when nothing is warmed any more.
            let _ = built.send(name.to_owned());
        }));
    tokio::spawn(async move {
        while let Some(name) = waiting.recv().await {
            let mut names = vec![name];
            while let Ok(more) = waiting.try_recv() {
                if !names.contains(&more) {
                    names.push(more);
                }
            }
            for name in names {
                for shards in service.asked_shards().counts(&name) {
                    warm_training_set(&service, &cache, &name, shards).await;
                }
            }
        }
    })
}

/// Warms the latest version of training set `name` in `shards` shards and logs what it did.
async fn warm_training_set(
    service: &FlywheelFlightSqlService,
    cache: &Arc<DownloadCache>,
    name: &str,
    shards: Option<usize>,
) {
    let started = std::time::Instant::now();
    let mut path = vec!["training_set".to_owned(), name.to_owned()];
    path.extend(shards.map(|n| format!("shards={n}")));
    let descriptor = FlightDescriptor::new_path(path);
    let warmed: Result<Vec<Warmed>, Status> =
        match warm_descriptor(service.clone(), Arc::clone(cache), descriptor).await {
            Ok(shards) => shards.try_collect().await,
            Err(e) => Err(e),
        };
    match warmed {
        Ok(shards) => {
            let count = |what: &str| shards.iter().filter(|w| w.cached == what).count();
            info!(
                training_set = %name,
                version = shards.first().map(|w| w.version),
                shards = shards.len(),
                recorded = count("recorded"),
                not_kept = count("not kept"),
                bytes = shards.iter().filter_map(|w| w.bytes).sum::<u64>(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "download cache warmed with the training set's new version"
            );
        }
        // Dropped (or replaced by a table) before its turn came.
        Err(e) if e.code() == tonic::Code::NotFound => {
            debug!(training_set = %name, error = %e.message(), "training set gone before it was warmed");
        }
        Err(e) => warn!(
            training_set = %name,
            error = %e.message(),
            "cannot warm the download cache with the training set's new version; its first read \
             decodes the data files instead"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_recently_asked_shard_counts_are_warmed() {
        let asked = AskedShards::default();
        assert_eq!(asked.counts("t"), vec![None], "nobody asked: the default");
        for shards in [Some(4), None, Some(8), Some(4), Some(2)] {
            asked.asked("t", shards);
        }
        assert_eq!(asked.counts("t"), vec![Some(2), Some(4), Some(8)]);
        assert_eq!(asked.counts("other"), vec![None]);
    }
}
