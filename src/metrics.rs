//! Prometheus metrics. Every name is a constant here; handles are registered once
//! per instance (its own `Registry`, so several instances in one process, as in
//! tests, never mix), and the answer path only increments handles resolved ahead of
//! time (`queries`: how, and how UDP workers count locally and flush).

pub mod queries;

use std::sync::Arc;

use prometheus::{
    Encoder, GaugeVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

use queries::{QueryMetrics, TcpRecorder, UdpRecorder};

use crate::snapshot::Snapshot;

/// Build information, always 1: `meridian_build_info{version="..."}`.
pub const BUILD_INFO: &str = "meridian_build_info";
/// Health reports by result: accepted, or rejected with a reason.
pub const HEALTH_REPORTS: &str = "meridian_health_reports_total";
/// Answers given from the nearest POPs although every eligible one was down.
pub const FAIL_OPEN_ANSWERS: &str = "meridian_fail_open_answers_total";
/// Config reloads by result (success, failure).
pub const CONFIG_RELOADS: &str = "meridian_config_reloads_total";
/// Per POP: 1 healthy, 0 down, -1 unknown (no fresh report).
pub const POP_HEALTHY: &str = "meridian_pop_healthy";
/// Per POP: smoothed load, the share of capacity in use.
pub const POP_LOAD: &str = "meridian_pop_load";
/// Per POP: seconds since the last accepted report (-1: never reported).
pub const POP_REPORT_AGE: &str = "meridian_pop_report_age_seconds";
/// DNS queries answered, by `transport` (udp, tcp), `qtype` and `rcode`.
pub const DNS_QUERIES: &str = "meridian_dns_queries_total";
/// Routed answers, by the `pop` the client was sent to.
pub const DNS_ANSWERS: &str = "meridian_dns_answers_total";
/// DNS queries answered, by whether they carried EDNS Client Subnet (`ecs`: present,
/// absent), so that the share with ECS is a ratio of two series.
pub const DNS_ECS_QUERIES: &str = "meridian_dns_ecs_queries_total";
/// Histogram of the ECS SCOPE PREFIX-LENGTH returned, by `family` (ipv4, ipv6).
pub const ECS_SCOPE: &str = "meridian_dns_ecs_scope_prefix_length";
/// Histogram of the time one routing decision takes.
pub const DECISION_DURATION: &str = "meridian_decision_duration_seconds";
/// Routed queries whose client the geo databases could not place.
pub const GEO_MISSES: &str = "meridian_geo_misses_total";
/// DoH requests refused before a DNS answer, by `reason`.
pub const DOH_ERRORS: &str = "meridian_doh_errors_total";
/// 302 redirects given by the HTTP router, by the `pop` the client was sent to.
pub const HTTP_REDIRECTS: &str = "meridian_http_redirects_total";
/// HTTP router requests answered with an error, by `reason`.
pub const HTTP_REDIRECT_ERRORS: &str = "meridian_http_redirect_errors_total";

/// Why a health report was turned away (or that it was not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportOutcome {
    Accepted,
    Unauthorized,
    Forbidden,
    UnknownPop,
    Malformed,
    OutOfOrder,
    TooLarge,
}

impl ReportOutcome {
    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            ReportOutcome::Accepted => "accepted",
            ReportOutcome::Unauthorized => "unauthorized",
            ReportOutcome::Forbidden => "forbidden",
            ReportOutcome::UnknownPop => "unknown_pop",
            ReportOutcome::Malformed => "malformed",
            ReportOutcome::OutOfOrder => "out_of_order",
            ReportOutcome::TooLarge => "too_large",
        }
    }
}

/// All of an instance's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    health_reports: IntCounterVec,
    fail_open: IntCounter,
    reloads: IntCounterVec,
    pop_healthy: IntGaugeVec,
    pop_load: GaugeVec,
    pop_report_age: GaugeVec,
    queries: Arc<QueryMetrics>,
    doh_errors: IntCounterVec,
    redirects: IntCounterVec,
    redirect_errors: IntCounterVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric in a fresh registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let build_info = IntGaugeVec::new(
            Opts::new(BUILD_INFO, "Meridian build information; always 1."),
            &["version"],
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let health_reports = counter_vec(
            HEALTH_REPORTS,
            "Health reports received, by result (accepted, or the reason for rejection).",
            &["result", "reason"],
        );
        let fail_open = IntCounter::new(
            FAIL_OPEN_ANSWERS,
            "Answers given from the nearest POPs although every eligible POP was down.",
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let reloads = counter_vec(CONFIG_RELOADS, "Config reloads, by result.", &["result"]);
        let pop_healthy = IntGaugeVec::new(
            Opts::new(POP_HEALTHY, "POP health: 1 healthy, 0 down, -1 unknown."),
            &["pop"],
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let pop_load = gauge_vec(POP_LOAD, "Smoothed POP load, share of capacity in use.");
        let pop_report_age = gauge_vec(
            POP_REPORT_AGE,
            "Seconds since the POP's last accepted report; -1 if it never reported.",
        );
        let metrics = Self {
            registry,
            health_reports,
            fail_open,
            reloads,
            pop_healthy,
            pop_load,
            pop_report_age,
            queries: Arc::new(QueryMetrics::new()),
            doh_errors: counter_vec(
                DOH_ERRORS,
                "DoH requests refused before a DNS answer, by reason.",
                &["reason"],
            ),
            redirects: counter_vec(
                HTTP_REDIRECTS,
                "302 redirects given by the HTTP router, by the POP the client was sent to.",
                &["pop"],
            ),
            redirect_errors: counter_vec(
                HTTP_REDIRECT_ERRORS,
                "HTTP router requests answered with an error, by reason.",
                &["reason"],
            ),
        };
        metrics.register(Box::new(build_info));
        metrics.register(Box::new(metrics.health_reports.clone()));
        metrics.register(Box::new(metrics.fail_open.clone()));
        metrics.register(Box::new(metrics.reloads.clone()));
        metrics.register(Box::new(metrics.pop_healthy.clone()));
        metrics.register(Box::new(metrics.pop_load.clone()));
        metrics.register(Box::new(metrics.pop_report_age.clone()));
        metrics.register(Box::new(metrics.doh_errors.clone()));
        metrics.register(Box::new(metrics.redirects.clone()));
        metrics.register(Box::new(metrics.redirect_errors.clone()));
        for collector in metrics.queries.collectors() {
            metrics.register(collector);
        }
        metrics
    }

    fn register(&self, collector: Box<dyn prometheus::core::Collector>) {
        if let Err(e) = self.registry.register(collector) {
            unreachable!("metric registered twice: {e}");
        }
    }

    /// Counts a health report by its outcome.
    pub fn health_report(&self, outcome: ReportOutcome) {
        let result = if outcome == ReportOutcome::Accepted {
            "accepted"
        } else {
            "rejected"
        };
        self.health_reports
            .with_label_values(&[result, outcome.label()])
            .inc();
    }

    /// Counts an answer given by failing open.
    pub fn fail_open(&self) {
        self.fail_open.inc();
    }

    /// Counts a config reload.
    pub fn reload(&self, ok: bool) {
        self.reloads
            .with_label_values(&[if ok { "success" } else { "failure" }])
            .inc();
    }

    /// Publishes one POP's live state.
    pub fn set_pop_state(
        &self,
        pop: &str,
        healthy: Option<bool>,
        load: f64,
        report_age: Option<f64>,
    ) {
        self.pop_healthy
            .with_label_values(&[pop])
            .set(healthy.map_or(-1, i64::from));
        self.pop_load.with_label_values(&[pop]).set(load);
        self.pop_report_age
            .with_label_values(&[pop])
            .set(report_age.unwrap_or(-1.0));
    }

    /// Forgets a POP that left the config.
    pub fn remove_pop(&self, pop: &str) {
        let _ = self.pop_healthy.remove_label_values(&[pop]);
        let _ = self.pop_load.remove_label_values(&[pop]);
        let _ = self.pop_report_age.remove_label_values(&[pop]);
    }

    /// Resolves the per-POP answer counters of a snapshot about to be published,
    /// so that the UDP worker that serves it first finds them ready: with
    /// thousands of POPs, resolving them is milliseconds that queries would wait.
    pub fn prepare(&self, snapshot: &Arc<Snapshot>) {
        self.queries.prepare(snapshot);
    }

    /// A recorder for one UDP worker thread.
    pub fn udp_recorder(&self) -> UdpRecorder {
        UdpRecorder::new(self)
    }

    /// A recorder for TCP queries.
    pub fn tcp_recorder(&self) -> TcpRecorder {
        TcpRecorder::new(self)
    }

    /// A recorder for DoH queries (`transport="doh"`).
    pub fn doh_recorder(&self) -> TcpRecorder {
        TcpRecorder::doh(self)
    }

    /// Counts a DoH request refused before a DNS answer (`reason`: a fixed label).
    pub fn doh_error(&self, reason: &'static str) {
        self.doh_errors.with_label_values(&[reason]).inc();
    }

    /// Counts a 302 to `pop`.
    pub fn redirect(&self, pop: &str) {
        self.redirects.with_label_values(&[pop]).inc();
    }

    /// Counts an HTTP router error (`reason`: a fixed label).
    pub fn redirect_error(&self, reason: &'static str) {
        self.redirect_errors.with_label_values(&[reason]).inc();
    }

    /// Asks the UDP workers to flush their local counters and waits until they have
    /// (a bounded wait: a worker idle on its socket answers within a read timeout).
    /// Scrapes call this first, so that they show every query answered before them.
    pub async fn flush(&self) {
        if !self.queries.flush.flush().await {
            tracing::debug!("a UDP worker did not flush in time; metrics may lag");
        }
    }

    /// Asks the UDP workers to flush, without waiting: they do at their next query.
    pub fn request_flush(&self) {
        self.queries.flush.request();
    }

    /// Routed answers per POP name since start, as flushed so far (workers flush at
    /// least every second while busy and whenever idle; [`Metrics::flush`] first
    /// makes the counts exact). POPs that left the config keep their last count.
    pub fn pop_answer_counts(&self) -> std::collections::HashMap<String, u64> {
        self.request_flush();
        self.queries.pop_answer_counts()
    }

    /// The registry, for collectors added elsewhere.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Everything in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"))
}

fn gauge_vec(name: &str, help: &str) -> GaugeVec {
    GaugeVec::new(Opts::new(name, help), &["pop"])
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"))
}
