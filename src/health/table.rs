//! The health table: every POP's reports, anti-flap streaks, smoothed load,
//! admin drain and forced state, and the shed share that moves at a capped rate.
//! Keyed by POP id, not index, so that state survives a reload that reorders,
//! adds or removes POPs. Pure state and arithmetic: the time is always an
//! argument, the keeper (`super::Health`) owns the lock and the publishing.

use rustc_hash::FxHashMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::ewma::Ewma;
use super::view::{Forced, HealthStatus, LiveView, PopLive};
use super::{Accepted, Report, ReportError};
use crate::config::{AdminState, Config, HealthSettings, UnknownMeans};

/// Every POP that has been reported on or administered.
#[derive(Debug, Default)]
pub struct Table {
    /// Probed once per POP for every view: Fx hashing (keys are config POP ids).
    pops: FxHashMap<String, PopState>,
}

/// One POP's live state.
#[derive(Debug, Clone)]
pub struct PopState {
    /// Epoch and sequence number of the last accepted report.
    order: Option<(u64, u64)>,
    /// A report arrived within `expire-after`; false means unknown.
    fresh: bool,
    /// The anti-flapped health, meaningful while fresh.
    up: bool,
    /// Consecutive healthy reports, and consecutive unhealthy ones.
    good: u32,
    bad: u32,
    load: Ewma,
    last_report: Option<Instant>,
    reported: Reported,
    forced: Forced,
    drain: Option<Drain>,
    /// The effective shed share, and when it was last moved.
    shed: f64,
    shed_at: Instant,
}

/// What a POP reported beyond health and load, shown as last reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Reported {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bandwidth_mbps: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connections: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests_per_second: Option<f64>,
}

/// An operator's drain: the shed share rises at a steady rate of all the POP's
/// clients per `over`, from the share it already shed when the drain began.
#[derive(Debug, Clone, Copy)]
struct Drain {
    started: Instant,
    from: f64,
    over: Duration,
    /// The ramp as of the last update, shown so that it agrees with the shed.
    progress: f64,
}

impl Drain {
    /// The drained share at `now`, 0 to 1.
    fn ramp(&self, now: Instant) -> f64 {
        if self.over.is_zero() {
            return 1.0;
        }
        let elapsed = now.saturating_duration_since(self.started).as_secs_f64();
        (self.from + elapsed / self.over.as_secs_f64()).clamp(0.0, 1.0)
    }
}

/// A POP's state for `GET /v1/pops` and the admin API.
#[derive(Debug, Clone, Serialize)]
pub struct PopStatus {
    pub id: String,
    /// The config's admin state (an admin-down POP is never chosen).
    pub admin: AdminState,
    pub health: HealthStatus,
    pub forced: Forced,
    /// Whether the answer path may choose it.
    pub usable: bool,
    /// Smoothed load, share of capacity; None without a fresh report.
    pub load: Option<f64>,
    /// Effective share of its clients sent to the next-best POP.
    pub shed: f64,
    /// Answers from it get the degraded TTL.
    pub degraded: bool,
    /// Seconds since its last accepted report; None if it never reported.
    pub last_report_age_seconds: Option<f64>,
    pub epoch: Option<u64>,
    pub seq: Option<u64>,
    pub drain: DrainStatus,
    /// Extra figures from its last report.
    pub reported: Reported,
    /// Answers given with it first since start; filled in from the metrics.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answers: Option<u64>,
    /// Its share of all answers since start, 0 to 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer_share: Option<f64>,
}

/// Where a drain stands.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct DrainStatus {
    pub state: DrainState,
    /// The drained share now, 0 to 1.
    pub progress: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub over_seconds: Option<f64>,
}

/// Whether a POP is being drained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DrainState {
    None,
    Draining,
    Drained,
}

impl Table {
    /// An empty table: every POP unknown.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks a report's order against the POP's last (a higher epoch starts a new
    /// sequence: the reporter restarted).
    pub fn check_order(&self, report: &Report) -> Result<(), ReportError> {
        let Some((epoch, seq)) = self.pops.get(&report.pop).and_then(|p| p.order) else {
            return Ok(());
        };
        if report.epoch < epoch || (report.epoch == epoch && report.seq <= seq) {
            return Err(ReportError::OutOfOrder {
                pop: report.pop.clone(),
                epoch: report.epoch,
                seq: report.seq,
                last_epoch: epoch,
                last_seq: seq,
            });
        }
        Ok(())
    }

    /// Takes a checked report in.
    pub fn observe(&mut self, report: &Report, settings: &HealthSettings, now: Instant) {
        self.entry(&report.pop, settings, now)
            .observe(report, settings, now);
    }

    /// Drains a POP over `over` (zero: at once), from the share it already sheds.
    pub fn drain(&mut self, pop: &str, over: Duration, settings: &HealthSettings, now: Instant) {
        let state = self.entry(pop, settings, now);
        let from = state.shed.clamp(0.0, 1.0);
        state.drain = Some(Drain {
            started: now,
            from,
            over,
            progress: from,
        });
    }

    /// Ends a drain; the shed share falls back at the capped rate.
    pub fn undrain(&mut self, pop: &str, settings: &HealthSettings, now: Instant) {
        self.entry(pop, settings, now).drain = None;
    }

    /// Sets a POP's forced state.
    pub fn force(&mut self, pop: &str, forced: Forced, settings: &HealthSettings, now: Instant) {
        self.entry(pop, settings, now).forced = forced;
    }

    /// Moves every POP on to `now`: expires stale reports and moves shed shares
    /// towards their targets, no faster than `max-shift-per-second`.
    pub fn advance(&mut self, settings: &HealthSettings, now: Instant) {
        for state in self.pops.values_mut() {
            state.advance(settings, now);
        }
    }

    /// The answer path's view of `config`'s POPs.
    pub fn view(&self, config: &Config) -> LiveView {
        let settings = &config.health;
        LiveView::new(
            config
                .pops
                .iter()
                .map(|pop| {
                    self.pops
                        .get(&pop.id)
                        .map_or_else(|| unknown(settings), |s| s.live(settings))
                })
                .collect(),
        )
    }

    /// Every POP of `config`, for the control plane.
    pub fn status(&self, config: &Config, now: Instant) -> Vec<PopStatus> {
        config
            .pops
            .iter()
            .map(|pop| {
                let fallback;
                let state = match self.pops.get(&pop.id) {
                    Some(state) => state,
                    None => {
                        fallback = PopState::new(&config.health, now);
                        &fallback
                    }
                };
                state.status(&pop.id, pop.admin, &config.health, now)
            })
            .collect()
    }

    /// What a report just accepted for `pop` led to.
    pub fn accepted(&self, pop: &str, settings: &HealthSettings) -> Accepted {
        let fallback;
        let state = match self.pops.get(pop) {
            Some(state) => state,
            None => {
                fallback = PopState::new(settings, Instant::now());
                &fallback
            }
        };
        Accepted {
            pop: pop.to_string(),
            health: state.health(),
            usable: state.usable(settings),
            load: state.smoothed_load(),
            shed: state.shed,
        }
    }

    /// A POP's state, if it was ever reported on or administered.
    pub fn get(&self, pop: &str) -> Option<&PopState> {
        self.pops.get(pop)
    }

    fn entry(&mut self, pop: &str, settings: &HealthSettings, now: Instant) -> &mut PopState {
        self.pops
            .entry(pop.to_string())
            .or_insert_with(|| PopState::new(settings, now))
    }
}

/// The view of a POP never reported on nor administered.
fn unknown(settings: &HealthSettings) -> PopLive {
    PopLive {
        usable: settings.unknown_means == UnknownMeans::Static,
        ..PopLive::default()
    }
}

impl PopState {
    fn new(settings: &HealthSettings, now: Instant) -> Self {
        Self {
            order: None,
            fresh: false,
            up: starts_up(settings),
            good: 0,
            bad: 0,
            load: Ewma::new(),
            last_report: None,
            reported: Reported::default(),
            forced: Forced::Auto,
            drain: None,
            shed: 0.0,
            // The shed share starts moving from the first event on the POP, so a
            // first report of overload sheds nothing until time has passed.
            shed_at: now,
        }
    }

    fn observe(&mut self, report: &Report, settings: &HealthSettings, now: Instant) {
        if !self.fresh {
            // Back from unknown: anti-flap starts from what unknown means.
            self.fresh = true;
            self.up = starts_up(settings);
            self.good = 0;
            self.bad = 0;
        }
        self.order = Some((report.epoch, report.seq));
        if report.healthy {
            self.good = self.good.saturating_add(1);
            self.bad = 0;
            if !self.up && self.good >= settings.up_after {
                self.up = true;
            }
        } else {
            self.bad = self.bad.saturating_add(1);
            self.good = 0;
            if self.up && self.bad >= settings.down_after {
                self.up = false;
            }
        }
        self.load.update(report.load, now, settings.load_half_life);
        self.last_report = Some(self.last_report.map_or(now, |at| at.max(now)));
        self.reported = Reported {
            bandwidth_mbps: report.bandwidth_mbps,
            connections: report.connections,
            requests_per_second: report.requests_per_second,
        };
    }

    fn advance(&mut self, settings: &HealthSettings, now: Instant) {
        let expired = self
            .last_report
            .is_some_and(|at| now.saturating_duration_since(at) >= settings.expire_after);
        if self.fresh && expired {
            // Sticky until the next report: a tick with an earlier `now` must not
            // make stale reports fresh again.
            self.fresh = false;
            self.up = starts_up(settings);
            self.good = 0;
            self.bad = 0;
            self.load.reset();
        }
        let dt = now.saturating_duration_since(self.shed_at).as_secs_f64();
        let step = settings.max_shift_per_second * dt;
        let target = self.load_shed(settings);
        let limited = self.shed + (target - self.shed).clamp(-step, step);
        let drained = match &mut self.drain {
            Some(drain) => {
                drain.progress = drain.progress.max(drain.ramp(now));
                drain.progress
            }
            None => 0.0,
        };
        self.shed = limited.max(drained).clamp(0.0, 1.0);
        self.shed_at = self.shed_at.max(now);
    }

    /// The share load alone asks to shed: nothing up to the low watermark, all at
    /// the high one, linear between.
    fn load_shed(&self, settings: &HealthSettings) -> f64 {
        let Some(load) = self.smoothed_load() else {
            return 0.0;
        };
        let span = settings.high_watermark - settings.low_watermark;
        if span <= 0.0 {
            return if load >= settings.high_watermark {
                1.0
            } else {
                0.0
            };
        }
        ((load - settings.low_watermark) / span).clamp(0.0, 1.0)
    }

    fn smoothed_load(&self) -> Option<f64> {
        self.load.value().filter(|_| self.fresh)
    }

    fn health(&self) -> HealthStatus {
        match (self.fresh, self.up) {
            (false, _) => HealthStatus::Unknown,
            (true, true) => HealthStatus::Up,
            (true, false) => HealthStatus::Down,
        }
    }

    fn usable(&self, settings: &HealthSettings) -> bool {
        match self.forced {
            Forced::Up => true,
            Forced::Down => false,
            Forced::Auto if self.fresh => self.up,
            Forced::Auto => settings.unknown_means == UnknownMeans::Static,
        }
    }

    fn degraded(&self, settings: &HealthSettings) -> bool {
        self.smoothed_load()
            .is_some_and(|l| l > settings.low_watermark)
            || self.shed > 0.0
            || self.drain.is_some()
    }

    fn live(&self, settings: &HealthSettings) -> PopLive {
        PopLive {
            usable: self.usable(settings),
            shed: self.shed as f32,
            degraded: self.degraded(settings),
            health: self.health(),
            forced: self.forced,
            load: self.smoothed_load().map(|l| l as f32),
        }
    }

    /// The health gauge: Some(true) up, Some(false) down, None unknown.
    pub fn healthy(&self) -> Option<bool> {
        self.fresh.then_some(self.up)
    }

    /// Smoothed load for the gauge (0 while unknown).
    pub fn gauge_load(&self) -> f64 {
        self.smoothed_load().unwrap_or(0.0)
    }

    /// Seconds since the last accepted report.
    pub fn report_age(&self, now: Instant) -> Option<f64> {
        self.last_report
            .map(|at| now.saturating_duration_since(at).as_secs_f64())
    }

    fn status(
        &self,
        id: &str,
        admin: AdminState,
        settings: &HealthSettings,
        now: Instant,
    ) -> PopStatus {
        let drain = match self.drain {
            None => DrainStatus {
                state: DrainState::None,
                progress: 0.0,
                over_seconds: None,
            },
            Some(drain) => {
                let progress = drain.progress;
                DrainStatus {
                    state: if progress >= 1.0 {
                        DrainState::Drained
                    } else {
                        DrainState::Draining
                    },
                    progress,
                    over_seconds: Some(drain.over.as_secs_f64()),
                }
            }
        };
        PopStatus {
            id: id.to_string(),
            admin,
            health: self.health(),
            forced: self.forced,
            usable: self.usable(settings),
            load: self.smoothed_load(),
            shed: self.shed,
            degraded: self.degraded(settings),
            last_report_age_seconds: self.report_age(now),
            epoch: self.order.map(|o| o.0),
            seq: self.order.map(|o| o.1),
            drain,
            reported: self.reported,
            answers: None,
            answer_share: None,
        }
    }
}

/// Where anti-flap starts for a POP with no fresh report: up if unknown means
/// "trust the config", down if it means down.
fn starts_up(settings: &HealthSettings) -> bool {
    settings.unknown_means == UnknownMeans::Static
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> HealthSettings {
        HealthSettings {
            load_half_life: Duration::ZERO,
            ..HealthSettings::default()
        }
    }

    fn report(seq: u64, healthy: bool, load: f64) -> Report {
        Report {
            pop: "nrt".into(),
            seq,
            epoch: 0,
            healthy,
            load,
            bandwidth_mbps: None,
            connections: None,
            requests_per_second: None,
        }
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    /// Takes a report in at `now` and moves the table on, as the keeper does.
    fn feed(table: &mut Table, settings: &HealthSettings, r: &Report, now: Instant) {
        table.check_order(r).expect("in order");
        table.observe(r, settings, now);
        table.advance(settings, now);
    }

    fn nrt(table: &Table) -> &PopState {
        table.get("nrt").expect("nrt in the table")
    }

    #[test]
    fn goes_down_only_after_n_bad_reports_and_up_after_n_good() {
        let s = settings();
        let t0 = Instant::now();
        let mut table = Table::new();
        feed(&mut table, &s, &report(1, true, 0.1), t0);
        assert_eq!(nrt(&table).health(), HealthStatus::Up);
        for seq in 2..=3 {
            feed(&mut table, &s, &report(seq, false, 0.1), t0);
            assert!(nrt(&table).usable(&s), "down after {} bad", seq - 1);
        }
        feed(&mut table, &s, &report(4, false, 0.1), t0);
        assert_eq!(nrt(&table).health(), HealthStatus::Down);
        assert!(!nrt(&table).usable(&s));
        // A good report between bad ones resets the count, both ways.
        feed(&mut table, &s, &report(5, true, 0.1), t0);
        feed(&mut table, &s, &report(6, true, 0.1), t0);
        feed(&mut table, &s, &report(7, false, 0.1), t0);
        feed(&mut table, &s, &report(8, true, 0.1), t0);
        feed(&mut table, &s, &report(9, true, 0.1), t0);
        assert_eq!(nrt(&table).health(), HealthStatus::Down);
        feed(&mut table, &s, &report(10, true, 0.1), t0);
        assert_eq!(nrt(&table).health(), HealthStatus::Up);
    }

    #[test]
    fn unknown_means_down_starts_down() {
        let s = HealthSettings {
            unknown_means: UnknownMeans::Down,
            up_after: 2,
            ..settings()
        };
        let t0 = Instant::now();
        let mut table = Table::new();
        assert!(!table.view_of_one(&s).usable);
        feed(&mut table, &s, &report(1, true, 0.1), t0);
        assert_eq!(nrt(&table).health(), HealthStatus::Down);
        feed(&mut table, &s, &report(2, true, 0.1), t0);
        assert_eq!(nrt(&table).health(), HealthStatus::Up);
    }

    #[test]
    fn reports_expire_and_anti_flap_starts_over() {
        let s = settings();
        let t0 = Instant::now();
        let mut table = Table::new();
        for seq in 1..=3 {
            feed(&mut table, &s, &report(seq, false, 0.9), t0);
        }
        assert_eq!(nrt(&table).health(), HealthStatus::Down);
        table.advance(&s, t0 + s.expire_after - secs(0.001));
        assert_eq!(nrt(&table).health(), HealthStatus::Down);
        table.advance(&s, t0 + s.expire_after);
        assert_eq!(nrt(&table).health(), HealthStatus::Unknown);
        // Unknown means static: served, and the stale load is forgotten.
        assert!(nrt(&table).usable(&s));
        assert_eq!(nrt(&table).smoothed_load(), None);
        // An earlier instant does not bring the stale reports back.
        table.advance(&s, t0);
        assert_eq!(nrt(&table).health(), HealthStatus::Unknown);
        // One bad report after the silence is not enough to go down again.
        feed(&mut table, &s, &report(4, false, 0.1), t0 + s.expire_after);
        assert_eq!(nrt(&table).health(), HealthStatus::Up);
        // The sequence survives expiry.
        assert!(table.check_order(&report(4, true, 0.1)).is_err());
    }

    #[test]
    fn order_is_per_epoch() {
        let s = settings();
        let t0 = Instant::now();
        let mut table = Table::new();
        feed(&mut table, &s, &report(17, true, 0.1), t0);
        assert!(table.check_order(&report(17, true, 0.1)).is_err());
        assert!(table.check_order(&report(3, true, 0.1)).is_err());
        assert!(table.check_order(&report(18, true, 0.1)).is_ok());
        let restarted = Report {
            epoch: 1,
            ..report(1, true, 0.1)
        };
        assert!(table.check_order(&restarted).is_ok());
        feed(&mut table, &s, &restarted, t0);
        assert!(table.check_order(&report(99, true, 0.1)).is_err());
    }

    #[test]
    fn shed_follows_load_between_the_watermarks() {
        let s = HealthSettings {
            max_shift_per_second: 1e9,
            ..settings()
        };
        let t0 = Instant::now();
        let mut table = Table::new();
        let at = |table: &mut Table, seq: u64, load: f64| {
            let now = t0 + secs(seq as f64);
            feed(table, &s, &report(seq, true, load), now);
            nrt(table).shed
        };
        assert_eq!(at(&mut table, 1, 0.5), 0.0);
        assert_eq!(at(&mut table, 2, 0.75), 0.0);
        assert!((at(&mut table, 3, 0.85) - 0.5).abs() < 1e-9);
        assert_eq!(at(&mut table, 4, 0.95), 1.0);
        assert_eq!(at(&mut table, 5, 1.0), 1.0);
        assert_eq!(at(&mut table, 6, 0.1), 0.0);
    }

    #[test]
    fn rate_limit_caps_how_far_the_shed_moves() {
        let s = HealthSettings {
            expire_after: secs(3600.0),
            ..settings()
        };
        let t0 = Instant::now();
        let mut table = Table::new();
        // One report of full overload sheds nothing at once...
        feed(&mut table, &s, &report(1, true, 1.0), t0);
        assert_eq!(nrt(&table).shed, 0.0);
        assert!(nrt(&table).degraded(&s), "loaded past the low watermark");
        // ...then 5% a second, however the time is cut up.
        table.advance(&s, t0 + secs(2.0));
        assert!((nrt(&table).shed - 0.10).abs() < 1e-9);
        for tenth in 21..=60 {
            table.advance(&s, t0 + secs(f64::from(tenth) / 10.0));
        }
        assert!((nrt(&table).shed - 0.30).abs() < 1e-9);
        table.advance(&s, t0 + secs(100.0));
        assert_eq!(nrt(&table).shed, 1.0);
        // Back down at the same rate.
        feed(&mut table, &s, &report(2, true, 0.0), t0 + secs(100.0));
        table.advance(&s, t0 + secs(104.0));
        assert!((nrt(&table).shed - 0.80).abs() < 1e-9);
        // Time running backwards moves nothing.
        table.advance(&s, t0);
        assert!((nrt(&table).shed - 0.80).abs() < 1e-9);
    }

    #[test]
    fn drain_ramps_and_undrain_falls_back_at_the_capped_rate() {
        let s = settings();
        let t0 = Instant::now();
        let mut table = Table::new();
        table.drain("nrt", secs(60.0), &s, t0);
        table.advance(&s, t0);
        let state = nrt(&table);
        assert_eq!(state.shed, 0.0);
        assert!(state.degraded(&s), "draining is degraded");
        assert_eq!(
            state.status("nrt", AdminState::Up, &s, t0).drain.state,
            DrainState::Draining
        );
        table.advance(&s, t0 + secs(15.0));
        assert!((nrt(&table).shed - 0.25).abs() < 1e-9);
        table.advance(&s, t0 + secs(60.0));
        assert_eq!(nrt(&table).shed, 1.0);
        let status = nrt(&table).status("nrt", AdminState::Up, &s, t0 + secs(60.0));
        assert_eq!(status.drain.state, DrainState::Drained);
        // Draining again over a longer time carries on from where it is.
        table.drain("nrt", secs(600.0), &s, t0 + secs(60.0));
        table.advance(&s, t0 + secs(61.0));
        assert_eq!(nrt(&table).shed, 1.0);
        table.undrain("nrt", &s, t0 + secs(61.0));
        table.advance(&s, t0 + secs(65.0));
        assert!((nrt(&table).shed - 0.80).abs() < 1e-9);
        // At once.
        table.drain("nrt", Duration::ZERO, &s, t0 + secs(65.0));
        table.advance(&s, t0 + secs(65.0));
        assert_eq!(nrt(&table).shed, 1.0);
    }

    #[test]
    fn forced_state_beats_reports() {
        let s = settings();
        let t0 = Instant::now();
        let mut table = Table::new();
        for seq in 1..=3 {
            feed(&mut table, &s, &report(seq, false, 0.1), t0);
        }
        assert!(!nrt(&table).usable(&s));
        table.force("nrt", Forced::Up, &s, t0);
        assert!(nrt(&table).usable(&s));
        assert_eq!(nrt(&table).health(), HealthStatus::Down);
        table.force("nrt", Forced::Auto, &s, t0);
        assert!(!nrt(&table).usable(&s));
        table.force("nrt", Forced::Down, &s, t0);
        feed(&mut table, &s, &report(4, true, 0.1), t0);
        feed(&mut table, &s, &report(5, true, 0.1), t0);
        feed(&mut table, &s, &report(6, true, 0.1), t0);
        assert_eq!(nrt(&table).health(), HealthStatus::Up);
        assert!(!nrt(&table).usable(&s));
    }

    impl Table {
        /// The view of `nrt` alone, known or not.
        fn view_of_one(&self, settings: &HealthSettings) -> PopLive {
            self.pops
                .get("nrt")
                .map_or_else(|| unknown(settings), |s| s.live(settings))
        }
    }
}
