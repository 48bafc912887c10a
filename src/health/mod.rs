//! Live POP health and load: reports pushed by POPs over the control plane, admin
//! drains and forced states, turned into the small [`LiveView`] the answer path
//! reads.
//!
//! One writer: the [`Health`] keeper holds the table behind a mutex that only the
//! control plane and a one-second tick ever take, never the answer path. After
//! every accepted report, admin change and tick it recomputes the view of the
//! current snapshot and stores it in that snapshot's `live` swap, so a query reads
//! a consistent view with one atomic load. A reload calls [`Health::attach`] on the
//! new snapshot before publishing it; the table is keyed by POP id, so state
//! survives reloads that reorder POPs.
//!
//! From reports to answers: health flips only after `down-after` / `up-after`
//! consecutive reports (anti-flap); load is smoothed (EWMA, `load-half-life`);
//! between the watermarks a POP sheds a growing share of its clients, and the
//! share moves no faster than `max-shift-per-second`. A POP with no report for
//! `expire-after` is unknown, which `unknown-means` turns into "as configured" or
//! down.

mod ewma;
mod table;
mod view;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rustc_hash::FxHashSet;
use serde::{Deserialize, Serialize};

pub use ewma::Ewma;
pub use table::{DrainState, DrainStatus, PopStatus, Reported};
pub use view::{Forced, HealthStatus, LiveView, PopLive};

use crate::config::{Config, TokenScope};
use crate::metrics::{Metrics, ReportOutcome};
use crate::snapshot::{Shared, Snapshot};
use table::Table;

/// How often the keeper expires stale reports and moves shed shares on.
pub const TICK: Duration = Duration::from_secs(1);
/// Longest drain an operator may ask for (one day).
pub const MAX_DRAIN: Duration = Duration::from_secs(86_400);
/// Most characters of a client-sent POP id quoted back in an error.
const ECHO_LIMIT: usize = 64;

/// One health report, as a POP (or the cache node in it) sends it.
#[derive(Debug, Clone, Deserialize)]
pub struct Report {
    /// The POP's id, as in the config.
    pub pop: String,
    /// Rises with every report of one epoch; a report not above the last is refused.
    pub seq: u64,
    /// Rises when the reporter restarts and starts `seq` over.
    #[serde(default)]
    pub epoch: u64,
    pub healthy: bool,
    /// Share of the POP's capacity in use, 0 to 1.
    pub load: f64,
    #[serde(default)]
    pub bandwidth_mbps: Option<f64>,
    #[serde(default)]
    pub connections: Option<u64>,
    #[serde(default)]
    pub requests_per_second: Option<f64>,
}

/// Why one report was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReportError {
    /// A value out of range.
    #[error("{0}")]
    Invalid(String),
    #[error("unknown pop `{0}`")]
    UnknownPop(String),
    #[error("this token may not report for pop `{0}`")]
    Forbidden(String),
    #[error(
        "pop `{pop}`: epoch {epoch} seq {seq} is not after the last accepted report (epoch {last_epoch} seq {last_seq})"
    )]
    OutOfOrder {
        pop: String,
        epoch: u64,
        seq: u64,
        last_epoch: u64,
        last_seq: u64,
    },
}

impl ReportError {
    /// The outcome counted in the metrics.
    pub fn outcome(&self) -> ReportOutcome {
        match self {
            ReportError::Invalid(_) => ReportOutcome::Malformed,
            ReportError::UnknownPop(_) => ReportOutcome::UnknownPop,
            ReportError::Forbidden(_) => ReportOutcome::Forbidden,
            ReportError::OutOfOrder { .. } => ReportOutcome::OutOfOrder,
        }
    }
}

/// A request without a valid bearer token for what it asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("missing or unknown bearer token")]
pub struct Unauthorized;

/// An admin request for a POP the config does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown pop `{0}`")]
pub struct UnknownPop(pub String);

/// What an accepted report led to.
#[derive(Debug, Clone, Serialize)]
pub struct Accepted {
    pub pop: String,
    pub health: HealthStatus,
    pub usable: bool,
    /// Smoothed load.
    pub load: Option<f64>,
    /// Effective shed share.
    pub shed: f64,
}

/// The keeper of live health: the one writer of every snapshot's [`LiveView`].
pub struct Health {
    shared: Shared,
    metrics: Metrics,
    inner: Mutex<Inner>,
}

struct Inner {
    table: Table,
    /// POP ids whose gauges are published, to remove those a reload dropped.
    published: Vec<String>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health").finish_non_exhaustive()
    }
}

impl Report {
    /// Checks the values a well-formed report may still get wrong.
    pub(crate) fn validate(&self) -> Result<(), ReportError> {
        if !(0.0..=1.0).contains(&self.load) {
            return Err(ReportError::Invalid(format!(
                "load {} is outside 0..=1 (the share of capacity in use)",
                self.load
            )));
        }
        for (name, value) in [
            ("bandwidth_mbps", self.bandwidth_mbps),
            ("requests_per_second", self.requests_per_second),
        ] {
            if let Some(v) = value
                && !(v.is_finite() && v >= 0.0)
            {
                return Err(ReportError::Invalid(format!(
                    "{name} {v}: expected a number, 0 or more"
                )));
            }
        }
        Ok(())
    }
}

impl Health {
    /// A keeper for the snapshots published through `shared`, with every POP
    /// unknown.
    pub fn new(shared: Shared, metrics: Metrics) -> Self {
        Self {
            shared,
            metrics,
            inner: Mutex::new(Inner {
                table: Table::new(),
                published: Vec::new(),
            }),
        }
    }

    /// Fills a snapshot's view from the table. A reload calls this on the new
    /// snapshot before publishing it. A report accepted between this call and the
    /// swap reaches the new snapshot at the next tick, within [`TICK`].
    pub fn attach(&self, snapshot: &Snapshot) {
        let mut inner = self.lock();
        self.publish(&mut inner, snapshot);
    }

    /// Takes reports in, authorised by a report `token`; each report is accepted or
    /// refused on its own, in order. Nothing is counted in the metrics here: the
    /// caller knows the outcomes of the whole request.
    pub fn report(
        &self,
        token: &[u8],
        reports: &[Report],
        now: Instant,
    ) -> Result<Vec<Result<Accepted, ReportError>>, Unauthorized> {
        let snapshot = self.shared.load_full();
        let config = &snapshot.config;
        let scope = report_scope(config, token).ok_or(Unauthorized)?;
        let mut inner = self.lock();
        let checked: Vec<Result<&str, ReportError>> = reports
            .iter()
            .map(|report| {
                report.validate()?;
                let id = config
                    .pop_by_name(&report.pop)
                    .ok_or_else(|| ReportError::UnknownPop(echo(&report.pop)))?;
                if !scope.admits(id) {
                    return Err(ReportError::Forbidden(report.pop.clone()));
                }
                inner.table.check_order(report)?;
                inner.table.observe(report, &config.health, now);
                Ok(report.pop.as_str())
            })
            .collect();
        inner.table.advance(&config.health, now);
        self.publish(&mut inner, &snapshot);
        Ok(checked
            .into_iter()
            .map(|result| result.map(|pop| inner.table.accepted(pop, &config.health)))
            .collect())
    }

    /// Checks a report token, before the body is read.
    pub fn authorize_report(&self, token: &[u8]) -> Result<(), Unauthorized> {
        report_scope(&self.shared.load().config, token)
            .map(|_| ())
            .ok_or(Unauthorized)
    }

    /// Checks an admin token.
    pub fn authorize_admin(&self, token: &[u8]) -> Result<(), Unauthorized> {
        let snapshot = self.shared.load();
        let mut found = false;
        for candidate in &snapshot.config.health.admin_tokens {
            found |= candidate.matches(token);
        }
        if found { Ok(()) } else { Err(Unauthorized) }
    }

    /// Drains a POP over `over` (zero: at once): its shed share ramps to 1, so no
    /// new client gets it while a runner-up exists.
    pub fn drain(&self, pop: &str, over: Duration, now: Instant) -> Result<PopStatus, UnknownPop> {
        let over = over.min(MAX_DRAIN);
        let status = self.administer(pop, now, |table, config| {
            table.drain(pop, over, &config.health, now);
        })?;
        tracing::info!(pop, over_seconds = over.as_secs_f64(), "admin: drain");
        Ok(status)
    }

    /// Ends a drain; clients return at the capped rate.
    pub fn undrain(&self, pop: &str, now: Instant) -> Result<PopStatus, UnknownPop> {
        let status = self.administer(pop, now, |table, config| {
            table.undrain(pop, &config.health, now);
        })?;
        tracing::info!(pop, "admin: undrain");
        Ok(status)
    }

    /// Forces a POP up or down whatever reports say, or back to `auto`.
    pub fn force(&self, pop: &str, forced: Forced, now: Instant) -> Result<PopStatus, UnknownPop> {
        let status = self.administer(pop, now, |table, config| {
            table.force(pop, forced, &config.health, now);
        })?;
        tracing::info!(pop, state = forced.as_str(), "admin: force");
        Ok(status)
    }

    /// Expires stale reports and moves shed shares on to `now`, then publishes.
    /// The background task calls it every [`TICK`]; tests call it with explicit
    /// instants instead of sleeping.
    pub fn tick(&self, now: Instant) {
        let snapshot = self.shared.load_full();
        let mut inner = self.lock();
        inner.table.advance(&snapshot.config.health, now);
        self.publish(&mut inner, &snapshot);
    }

    /// Every POP of the current config, in config order.
    pub fn pops(&self, now: Instant) -> Vec<PopStatus> {
        let snapshot = self.shared.load_full();
        let mut pops = self.lock().table.status(&snapshot.config, now);
        // Counted by the answer path per POP id since start; UDP workers flush
        // within a second, so the share may lag that much.
        let counts = self.metrics.pop_answer_counts();
        let count = |id: &str| counts.get(id).copied().unwrap_or(0);
        let total: u64 = pops.iter().map(|p| count(&p.id)).sum();
        for pop in &mut pops {
            let answers = count(&pop.id);
            pop.answers = Some(answers);
            pop.answer_share = Some(if total == 0 {
                0.0
            } else {
                answers as f64 / total as f64
            });
        }
        pops
    }

    /// Ticks every [`TICK`] until `stop` resolves.
    pub async fn run(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        let mut interval = tokio::time::interval(TICK);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = interval.tick() => self.tick(Instant::now()),
            }
        }
    }

    fn administer(
        &self,
        pop: &str,
        now: Instant,
        change: impl FnOnce(&mut Table, &Config),
    ) -> Result<PopStatus, UnknownPop> {
        let snapshot = self.shared.load_full();
        let config = &snapshot.config;
        let index = config
            .pop_by_name(pop)
            .ok_or_else(|| UnknownPop(echo(pop)))?;
        let mut inner = self.lock();
        change(&mut inner.table, config);
        inner.table.advance(&config.health, now);
        self.publish(&mut inner, &snapshot);
        let mut status = inner.table.status(config, now);
        Ok(status.swap_remove(index.index()))
    }

    /// Stores the view of `snapshot`; called with the lock held, so views are
    /// stored in the order the table changed. The per-POP gauges are not set here
    /// but when scraped ([`Health::export_gauges`]): three labelled gauges per POP
    /// (a hash and a lock each) are too much work for every report and tick at
    /// thousands of POPs.
    fn publish(&self, inner: &mut Inner, snapshot: &Snapshot) {
        snapshot
            .live
            .store(Arc::new(inner.table.view(&snapshot.config)));
    }

    /// Sets the per-POP gauges (health, load, report age) from the table for the
    /// current config's POPs, and removes those of POPs a reload dropped. Called
    /// for each scrape of `/metrics`, off the async runtime.
    pub fn export_gauges(&self, now: Instant) {
        let snapshot = self.shared.load_full();
        let mut inner = self.lock();
        let current = &snapshot.config.pops;
        for pop in current {
            match inner.table.get(&pop.id) {
                Some(state) => self.metrics.set_pop_state(
                    &pop.id,
                    state.healthy(),
                    state.gauge_load(),
                    state.report_age(now),
                ),
                None => self.metrics.set_pop_state(&pop.id, None, 0.0, None),
            }
        }
        let ids: FxHashSet<&str> = current.iter().map(|p| p.id.as_str()).collect();
        for gone in inner
            .published
            .iter()
            .filter(|id| !ids.contains(id.as_str()))
        {
            self.metrics.remove_pop(gone);
        }
        inner.published = current.iter().map(|p| p.id.clone()).collect();
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The table is consistent after every step a panic could interrupt, so a
        // poisoned lock is still good.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The POPs a report token may speak for; None if it is no report token. Every
/// token is compared, so the time taken does not say which one matched.
fn report_scope<'c>(config: &'c Config, token: &[u8]) -> Option<&'c TokenScope> {
    let mut scope = None;
    for candidate in &config.health.tokens {
        if candidate.token.matches(token) && scope.is_none() {
            scope = Some(&candidate.pops);
        }
    }
    scope
}

/// A client-sent POP id, shortened for quoting back.
fn echo(pop: &str) -> String {
    pop.chars().take(ECHO_LIMIT).collect()
}
