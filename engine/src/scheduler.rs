//! The scheduler: refreshes objects whose schedule came due ([`super::schedules`]), inside
//! `flywheel serve`.
//!
//! Each [`Scheduler::pass`] takes the time as an argument (tests give it any clock) and looks at
//! every scheduled object, inputs before the objects that read them:
//! - a timed schedule is due when its latest tick at or before now is later than the tick it last
//!   ran for (or than when it was set or resumed): after downtime it runs **once** for the latest
//!   missed tick, not once per missed tick;
//! - an `on change` schedule is due when the object is stale (an input has a newer Delta version
//!   than its latest build read); inputs are polled every `poll_interval` (default 5 s).
//!
//! **Several servers on one warehouse** run each due refresh once: before refreshing, a server
//! takes the object's lease ([`super::leases`], a small Delta table changed by compare-and-swap):
//! of two servers taking it for the same tick, one commit wins and the other sees the lease taken
//! and moves on. The holder renews the lease while the refresh runs and releases it after; a
//! server that died holding one loses it when it expires (`lease_timeout`, default 5 minutes).
//!
//! A refresh that fails is recorded in `flywheel.refresh_history` like any other; a timed schedule
//! tries again at its next tick, an `on change` one after [`ON_CHANGE_RETRY`].

use std::time::Duration;

use chrono::{DateTime, Utc};
use flywheel_catalog::lineage;

use super::Engine;
use super::leases::{self, Lease, last_tick};
use super::lineage::staleness;
use super::refresh::RefreshScope;
use super::refresh_history::Trigger;
use super::schedules::{self, Schedule, last_run_us};
use crate::{Error, Result};

/// How long an `on change` object whose refresh failed waits before the next try.
pub const ON_CHANGE_RETRY: Duration = Duration::from_secs(60);

/// How often a server re-reads the leases and tries again when another server changed them
/// between its read and its write (each try re-checks that the lease is still free).
const SWAP_ATTEMPTS: usize = 10;

/// How the scheduler runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerOptions {
    /// How often `on change` objects' inputs are polled.
    pub poll_interval: Duration,
    /// How long a lease lasts unless its holder renews it.
    pub lease_timeout: Duration,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(5),
            lease_timeout: Duration::from_secs(300),
        }
    }
}

/// One refresh a pass ran.
#[derive(Debug)]
pub struct ScheduledRun {
    pub name: String,
    pub trigger: Trigger,
    /// The tick it ran for (an `on change` run: when it started).
    pub tick: DateTime<Utc>,
    /// `Err(message)` when it failed (also recorded in `flywheel.refresh_history`).
    pub outcome: std::result::Result<(), String>,
}

/// Runs due refreshes; one per server.
pub struct Scheduler {
    engine: Engine,
    options: SchedulerOptions,
    /// Who this scheduler is, in leases.
    holder: String,
    last_poll: Option<DateTime<Utc>>,
}

impl Scheduler {
    pub fn new(engine: Engine, options: SchedulerOptions) -> Self {
        let holder = format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple());
        Self {
            engine,
            options,
            holder,
            last_poll: None,
        }
    }

    /// Runs every refresh due at `now`, inputs first; returns what ran.
    pub async fn pass(&mut self, now: DateTime<Utc>) -> Result<Vec<ScheduledRun>> {
        let registry = self.engine.registry();
        registry.refresh().await?;
        // Passes come about once a second, a little late or early: a poll due within a tenth of
        // the interval runs now rather than a whole pass later.
        let due_after = self.options.poll_interval * 9 / 10;
        let poll = self
            .last_poll
            .is_none_or(|last| (now - last).to_std().unwrap_or_default() >= due_after);
        if poll {
            self.last_poll = Some(now);
        }
        let scheduled: Vec<_> = lineage::all_in_order(registry)
            .into_iter()
            .filter_map(|(kind, name)| {
                let entry = schedules::entry(registry, &name)
                    .filter(|e| e.object_kind == kind && !e.suspended)?;
                Some((kind, name, entry))
            })
            .collect();
        let mut runs = Vec::new();
        // A warehouse without schedules costs a pass nothing more (no lease table to read).
        if scheduled.is_empty() {
            return Ok(runs);
        }
        let mut leases = leases::read(registry).await?;
        for (kind, name, entry) in scheduled {
            let schedule = entry.schedule();
            let current = leases.1.get(&name).cloned();
            let held = current
                .as_ref()
                .is_some_and(|l| !l.released && l.expires_us > now.timestamp_micros());
            if held {
                continue;
            }
            let due = match &schedule {
                Schedule::Every(_) | Schedule::Cron { .. } => {
                    let last = last_run_us(&entry, last_tick(&leases, &name));
                    schedule
                        .latest_tick(now)
                        .filter(|t| t.timestamp_micros() > last)
                        .map(|t| {
                            let tick_us = t.timestamp_micros();
                            (t, Trigger::Schedule { tick_us })
                        })
                }
                Schedule::OnChange => {
                    let retry_after = current
                        .as_ref()
                        .filter(|l| l.failed)
                        .map(|l| l.tick_us.saturating_add(ON_CHANGE_RETRY.as_micros() as i64));
                    let waiting = retry_after.is_some_and(|t| now.timestamp_micros() < t);
                    if poll && !waiting && self.is_stale(kind, &name).await {
                        Some((now, Trigger::OnChange))
                    } else {
                        None
                    }
                }
                Schedule::Manual => None,
            };
            let Some((tick, trigger)) = due else {
                continue;
            };
            let Some(taken) = self.take(&name, current, tick, now).await? else {
                leases = leases::read(registry).await?;
                continue;
            };
            // Another server may have refreshed it between the check and the lease.
            if matches!(trigger, Trigger::OnChange) && !self.is_stale(kind, &name).await {
                self.release(&name, taken, false).await;
                leases = leases::read(registry).await?;
                continue;
            }
            let outcome = self.run_holding(&name, trigger, taken.clone(), now).await;
            let failed = outcome.is_err();
            self.release(&name, taken, failed).await;
            leases = leases::read(registry).await?;
            runs.push(ScheduledRun {
                name,
                trigger,
                tick,
                outcome,
            });
        }
        Ok(runs)
    }

    async fn is_stale(&self, kind: &str, name: &str) -> bool {
        match staleness(self.engine.registry(), kind, name).await {
            Ok(s) => s != super::lineage::Staleness::Fresh,
            Err(e) => {
                tracing::warn!(object = name, error = %e, "could not tell whether it is stale");
                false
            }
        }
    }

    /// Takes the lease of `name` for `tick`, if it is still as the pass saw it (`seen`); `None`
    /// when another server changed it first.
    async fn take(
        &self,
        name: &str,
        seen: Option<Lease>,
        tick: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Option<Lease>> {
        let lease = Lease {
            holder: self.holder.clone(),
            tick_us: tick.timestamp_micros(),
            expires_us: now.timestamp_micros() + self.options.lease_timeout.as_micros() as i64,
            released: false,
            failed: false,
        };
        let taken = self
            .change(name, |current| {
                (current == seen.as_ref()).then(|| lease.clone())
            })
            .await?;
        Ok(taken.then_some(lease))
    }

    /// Sets the lease of `name` to what `update` makes of the current one (`None`: leave it, the
    /// change is refused), re-reading and trying again when another server wrote in between.
    /// Whether the change was made.
    async fn change(
        &self,
        name: &str,
        update: impl Fn(Option<&Lease>) -> Option<Lease>,
    ) -> Result<bool> {
        let registry = self.engine.registry();
        for _ in 0..SWAP_ATTEMPTS {
            let (version, mut all) = leases::read(registry).await?;
            let Some(new) = update(all.get(name)) else {
                return Ok(false);
            };
            all.insert(name.to_string(), new);
            if leases::swap(registry, version, &all).await? {
                return Ok(true);
            }
            let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0] % 50);
            tokio::time::sleep(Duration::from_millis(10 + jitter)).await;
        }
        Err(Error::Conflict(format!(
            "the refresh leases kept changing while this server changed the lease of `{name}`"
        )))
    }

    /// Refreshes `name` while holding its lease (`held`, renewed as it runs).
    async fn run_holding(
        &self,
        name: &str,
        trigger: Trigger,
        mut held: Lease,
        now: DateTime<Utc>,
    ) -> std::result::Result<(), String> {
        let scope = RefreshScope::Objects {
            names: vec![name.to_string()],
            only: false,
        };
        let refresh = self.engine.refresh(scope, trigger, false, |_| {});
        tokio::pin!(refresh);
        let started = std::time::Instant::now();
        let mut renew = tokio::time::interval(self.options.lease_timeout / 3);
        renew.tick().await;
        loop {
            tokio::select! {
                done = &mut refresh => {
                    return done.map(|_| ()).map_err(|e| e.to_string());
                }
                _ = renew.tick() => {
                    let elapsed = chrono::Duration::from_std(started.elapsed()).unwrap_or_default();
                    let mut renewed = held.clone();
                    renewed.expires_us = (now + elapsed).timestamp_micros()
                        + self.options.lease_timeout.as_micros() as i64;
                    let ours = held.clone();
                    match self.change(name, |current| (current == Some(&ours)).then(|| renewed.clone())).await {
                        Ok(true) => held = renewed,
                        Ok(false) => tracing::warn!(object = name, "the refresh lease was taken over while renewing it"),
                        Err(e) => tracing::warn!(object = name, error = %e, "could not renew the refresh lease"),
                    }
                }
            }
        }
    }

    /// Releases this scheduler's lease on `name` (`held`, as last taken or renewed).
    async fn release(&self, name: &str, held: Lease, failed: bool) {
        let released = Lease {
            released: true,
            failed,
            ..held.clone()
        };
        let ours = |current: Option<&Lease>| {
            current
                .is_some_and(|c| c.holder == held.holder && c.tick_us == held.tick_us)
                .then(|| released.clone())
        };
        if let Err(e) = self.change(name, ours).await {
            tracing::warn!(object = name, error = %e, "could not release the refresh lease; it lapses by itself");
        }
    }

    /// Runs passes until `shutdown` completes: every second for timed schedules, polling `on
    /// change` inputs every `poll_interval`.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let step = self.options.poll_interval.min(Duration::from_secs(1));
        let mut ticks = tokio::time::interval(step);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = ticks.tick() => {}
            }
            match self.pass(Utc::now()).await {
                Ok(runs) => {
                    for run in runs {
                        match &run.outcome {
                            Ok(()) => {
                                tracing::info!(object = %run.name, trigger = run.trigger.as_str(), "scheduled refresh done")
                            }
                            Err(e) => {
                                tracing::warn!(object = %run.name, trigger = run.trigger.as_str(), error = %e, "scheduled refresh failed")
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "scheduler pass failed"),
            }
        }
    }
}
