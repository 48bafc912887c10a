//! The answer path's metrics: queries by transport, qtype and rcode, answers per
//! POP, ECS use and scopes, decision latency and geo misses.
//!
//! Every handle is resolved before the query it counts: label sets are indexes into
//! arrays (transport, qtype, rcode), per-POP counters are built once per snapshot
//! and found again by pointer. TCP tasks increment the shared handles. A UDP worker
//! counts into prometheus' thread-local counters ([`UdpRecorder`]) so that workers
//! never bounce a shared cache line per query, and flushes them every
//! [`FLUSH_EVERY`] queries, whenever its socket goes idle, and when a reader asks:
//! `dns` asks every second, and a scrape asks and waits, so what it shows is exact.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use prometheus::core::Collector;
use prometheus::local::{LocalHistogram, LocalIntCounter};
use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts};
use tokio::sync::Notify;

use crate::config::PopId;
use crate::dns::resolve::Response;
use crate::dns::wire::{ClientSubnet, Query};
use crate::routing::{Basis, Client, Decision, Family};
use crate::snapshot::{DomainId, Snapshot};

use super::{
    DECISION_DURATION, DNS_ANSWERS, DNS_ECS_QUERIES, DNS_QUERIES, ECS_SCOPE, GEO_MISSES, Metrics,
};

/// Queries a UDP worker counts locally before it flushes to the shared counters
/// regardless: bounds what a scrape misses should a flush request go unanswered.
pub const FLUSH_EVERY: u32 = 1024;
/// One decision in this many is timed on UDP. Measured on the 2-core CI machine
/// (release build, `dns::udp::answer` on fast-path ECS queries, best of 30 runs):
/// an answer takes ~520 ns; timing every decision (two `Instant::now()`, vDSO
/// `clock_gettime` on the TSC) adds ~50 ns, 10%; the whole recorder with one
/// decision in 64 timed adds ~20 ns, 4%. Sampling keeps the latency distribution at
/// a fraction of the cost. TCP answers cost microseconds in hickory-server, so every
/// TCP decision is timed.
pub const DECISION_SAMPLE_EVERY: u32 = 64;
/// Longest a scrape waits for UDP workers to flush: a worker blocked on an idle
/// socket answers at its next read timeout (`dns::udp::READ_TIMEOUT`, 200 ms).
pub const FLUSH_WAIT: Duration = Duration::from_millis(500);

/// Upper bounds of the decision latency buckets: 100 ns to 1 ms, a decision being
/// a geo lookup and one score per POP.
const DECISION_BUCKETS: [f64; 13] = [
    1e-7, 2.5e-7, 5e-7, 1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3,
];
/// Upper bounds of the ECS scope buckets: every common IPv4 and IPv6 cut, and 0 on
/// its own (answers that hold for every client).
const SCOPE_BUCKETS: [f64; 13] = [
    0.0, 8.0, 16.0, 20.0, 24.0, 28.0, 32.0, 40.0, 48.0, 56.0, 64.0, 96.0, 128.0,
];

/// The `transport` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Udp,
    Tcp,
    /// DNS over HTTPS (RFC 8484), on the control plane or the TLS listener.
    Doh,
}

impl Transport {
    const ALL: [Transport; 3] = [Transport::Udp, Transport::Tcp, Transport::Doh];

    /// The label value.
    fn label(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Doh => "doh",
        }
    }
}

/// qtypes with a `qtype` label of their own, the common ones first (they are looked
/// up in order); any other is `OTHER`, and a query whose question could not be read
/// is `NONE`.
const QTYPES: [(u16, &str); 15] = [
    (1, "A"),
    (28, "AAAA"),
    (65, "HTTPS"),
    (255, "ANY"),
    (5, "CNAME"),
    (6, "SOA"),
    (2, "NS"),
    (15, "MX"),
    (16, "TXT"),
    (12, "PTR"),
    (33, "SRV"),
    (64, "SVCB"),
    (257, "CAA"),
    (43, "DS"),
    (48, "DNSKEY"),
];
const QTYPE_LABELS: usize = QTYPES.len() + 2;

/// rcodes with an `rcode` label of their own; any other is `OTHER`.
const RCODES: [(u16, &str); 7] = [
    (0, "NOERROR"),
    (3, "NXDOMAIN"),
    (5, "REFUSED"),
    (1, "FORMERR"),
    (2, "SERVFAIL"),
    (4, "NOTIMP"),
    (16, "BADVERS"),
];
const RCODE_LABELS: usize = RCODES.len() + 1;
/// Label sets of `meridian_dns_queries_total` per transport.
const QUERY_LABELS: usize = QTYPE_LABELS * RCODE_LABELS;

fn qtype_index(qtype: Option<u16>) -> usize {
    match qtype {
        None => QTYPES.len() + 1,
        Some(qtype) => QTYPES
            .iter()
            .position(|(value, _)| *value == qtype)
            .unwrap_or(QTYPES.len()),
    }
}

fn qtype_label(index: usize) -> &'static str {
    match QTYPES.get(index) {
        Some((_, label)) => label,
        None if index == QTYPES.len() => "OTHER",
        None => "NONE",
    }
}

fn rcode_index(rcode: u16) -> usize {
    RCODES
        .iter()
        .position(|(value, _)| *value == rcode)
        .unwrap_or(RCODES.len())
}

fn rcode_label(index: usize) -> &'static str {
    RCODES.get(index).map_or("OTHER", |(_, label)| label)
}

/// Index of a (qtype, rcode) label set within one transport.
fn query_index(reply: &Reply) -> usize {
    qtype_index(reply.qtype) * RCODE_LABELS + rcode_index(reply.rcode)
}

/// Index of the `family` label of the scope histogram.
fn family_index(addr: IpAddr) -> usize {
    usize::from(addr.is_ipv6())
}

/// What the answer path did for one query beyond the response itself: the
/// decision, and how long it took when timed. Filled by `dns::fast` and
/// `dns::resolve`, read by the recorders.
#[derive(Debug, Clone, Copy, Default)]
pub struct Trace {
    /// Time the decision, if one is made (set by the recorder: sampling).
    pub time_decision: bool,
    /// The decision the answer came from (after CNAMEs, the last one).
    pub decision: Option<Decision>,
    /// How long the decision took (geo lookup and scoring), when timed.
    pub decision_time: Option<Duration>,
}

impl Trace {
    /// A trace that times the decision, if `time_decision`.
    pub fn new(time_decision: bool) -> Self {
        Self {
            time_decision,
            ..Self::default()
        }
    }

    /// Routes one query through the snapshot, noting the decision and, if asked,
    /// its duration.
    pub fn decide(
        &mut self,
        snapshot: &Snapshot,
        id: DomainId,
        family: Family,
        client: &Client,
    ) -> Decision {
        let decision = if self.time_decision {
            let start = Instant::now();
            let decision = snapshot.decide(id, family, client);
            self.decision_time = Some(start.elapsed());
            decision
        } else {
            snapshot.decide(id, family, client)
        };
        self.decision = Some(decision);
        decision
    }
}

/// A response as its metrics see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// QTYPE of the question, if one could be read.
    pub qtype: Option<u16>,
    /// RCODE sent, extended rcodes included.
    pub rcode: u16,
    /// The Client Subnet the response echoes, with our scope.
    pub ecs: Option<ClientSubnet>,
}

impl Reply {
    /// What a full-path response says.
    pub fn of(response: &Response<'_>) -> Self {
        Self {
            qtype: response.question.map(|q| q.qtype),
            rcode: u16::from(response.rcode),
            ecs: response.edns.and_then(|e| e.client_subnet),
        }
    }

    /// What the fast path answered: NOERROR, the ECS echoed with the decision's scope.
    pub fn fast(query: &Query<'_>, trace: &Trace) -> Self {
        let scope = trace.decision.map_or(0, |d| d.scope);
        Self {
            qtype: Some(query.question.qtype),
            rcode: 0,
            ecs: query
                .edns
                .and_then(|e| e.client_subnet)
                .map(|subnet| ClientSubnet {
                    scope_prefix: scope,
                    ..subnet
                }),
        }
    }
}

/// The families and the handles resolved ahead of the queries they count.
pub(super) struct QueryMetrics {
    queries: IntCounterVec,
    /// Per transport, per (qtype, rcode): created on first use, so that the export
    /// lists the label sets seen rather than every combination.
    query_handles: Box<[OnceLock<IntCounter>]>,
    answers: IntCounterVec,
    /// Per-POP answer counters of the snapshot last served.
    pop_handles: ArcSwapOption<PopCounters>,
    ecs_family: IntCounterVec,
    /// Absent, present.
    ecs: [IntCounter; 2],
    scope_family: HistogramVec,
    /// IPv4, IPv6.
    scope: [Histogram; 2],
    decision: Histogram,
    geo_misses: IntCounter,
    pub(super) flush: Arc<FlushControl>,
}

impl QueryMetrics {
    pub(super) fn new() -> Self {
        let queries = counter_vec(
            DNS_QUERIES,
            "DNS queries answered, by transport, qtype and rcode.",
            &["transport", "qtype", "rcode"],
        );
        let answers = counter_vec(
            DNS_ANSWERS,
            "Routed answers, by the POP the client was sent to (the first POP of the answer).",
            &["pop"],
        );
        let ecs_family = counter_vec(
            DNS_ECS_QUERIES,
            "DNS queries answered, by whether they carried EDNS Client Subnet.",
            &["ecs"],
        );
        let ecs = ["absent", "present"].map(|label| ecs_family.with_label_values(&[label]));
        let scope_family = HistogramVec::new(
            HistogramOpts::new(
                ECS_SCOPE,
                "ECS SCOPE PREFIX-LENGTH of responses that echo Client Subnet, by address family.",
            )
            .buckets(SCOPE_BUCKETS.to_vec()),
            &["family"],
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let scope = ["ipv4", "ipv6"].map(|label| scope_family.with_label_values(&[label]));
        let decision = Histogram::with_opts(
            HistogramOpts::new(
                DECISION_DURATION,
                "Time to route one query (geo lookup and scoring); UDP samples one decision in 64.",
            )
            .buckets(DECISION_BUCKETS.to_vec()),
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let geo_misses = IntCounter::new(
            GEO_MISSES,
            "Routed queries whose client the geo databases could not place (answered from unknown-location).",
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        Self {
            queries,
            query_handles: (0..Transport::ALL.len() * QUERY_LABELS)
                .map(|_| OnceLock::new())
                .collect(),
            answers,
            pop_handles: ArcSwapOption::empty(),
            ecs_family,
            ecs,
            scope_family,
            scope,
            decision,
            geo_misses,
            flush: Arc::new(FlushControl::default()),
        }
    }

    /// The collectors to register.
    pub(super) fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.queries.clone()),
            Box::new(self.answers.clone()),
            Box::new(self.ecs_family.clone()),
            Box::new(self.scope_family.clone()),
            Box::new(self.decision.clone()),
            Box::new(self.geo_misses.clone()),
        ]
    }

    /// The counter of one (transport, qtype, rcode), made on first use.
    fn query_counter(&self, transport: Transport, index: usize) -> Option<&IntCounter> {
        let slot = self
            .query_handles
            .get(transport as usize * QUERY_LABELS + index)?;
        Some(slot.get_or_init(|| {
            self.queries.with_label_values(&[
                transport.label(),
                qtype_label(index / RCODE_LABELS),
                rcode_label(index % RCODE_LABELS),
            ])
        }))
    }

    /// Builds the per-POP answer counters of `snapshot` ahead of its first query.
    /// Best effort: a query still served from the previous snapshot before the
    /// swap (TCP counts into the shared handles) puts that one's back, and the
    /// first query on `snapshot` builds them again.
    pub(super) fn prepare(&self, snapshot: &Arc<Snapshot>) {
        self.pop_counters(snapshot);
    }

    /// The per-POP answer counters of `snapshot`, built on its first query.
    fn pop_counters(&self, snapshot: &Arc<Snapshot>) -> Arc<PopCounters> {
        if let Some(cached) = &*self.pop_handles.load()
            && cached.is_for(snapshot)
        {
            return Arc::clone(cached);
        }
        let fresh = Arc::new(PopCounters::new(&self.answers, snapshot));
        self.pop_handles.store(Some(Arc::clone(&fresh)));
        fresh
    }

    /// Answers per POP, as flushed so far.
    pub(super) fn pop_answer_counts(&self) -> std::collections::HashMap<String, u64> {
        self.answers
            .collect()
            .iter()
            .flat_map(|family| family.get_metric())
            .filter_map(|metric| {
                let pop = metric.get_label().iter().find(|l| l.name() == "pop")?;
                Some((
                    pop.value().to_string(),
                    metric.get_counter().get_value() as u64,
                ))
            })
            .collect()
    }
}

/// Answer counters indexed by [`PopId`], for one snapshot.
struct PopCounters {
    /// Which snapshot: compared by address. A `Weak` keeps the allocation, so the
    /// address cannot be reused by a later snapshot, without keeping the snapshot's
    /// zones and geo databases alive.
    snapshot: Weak<Snapshot>,
    counters: Box<[IntCounter]>,
}

impl PopCounters {
    fn new(answers: &IntCounterVec, snapshot: &Arc<Snapshot>) -> Self {
        Self {
            snapshot: Arc::downgrade(snapshot),
            counters: snapshot
                .config
                .pops
                .iter()
                .map(|pop| answers.with_label_values(&[&pop.id]))
                .collect(),
        }
    }

    fn is_for(&self, snapshot: &Arc<Snapshot>) -> bool {
        std::ptr::eq(self.snapshot.as_ptr(), Arc::as_ptr(snapshot))
    }

    fn get(&self, pop: PopId) -> Option<&IntCounter> {
        self.counters.get(pop.index())
    }
}

/// How readers get UDP workers to flush their local counters: a reader bumps
/// `requested`, each worker notices at its next query or read timeout, flushes and
/// acknowledges in its own slot. A worker idle on its socket has nothing unflushed
/// and says so ([`IDLE`]), so a reader never waits on it.
#[derive(Default)]
pub(super) struct FlushControl {
    requested: Padded<AtomicU64>,
    slots: Mutex<Vec<Arc<Padded<AtomicU64>>>>,
    acknowledged: Notify,
}

/// A slot value: the worker is idle and everything it counted is flushed.
const IDLE: u64 = u64::MAX;

/// On a cache line of its own (128 bytes covers adjacent-line prefetch), so that a
/// worker's writes never slow down another's reads.
#[derive(Default)]
#[repr(align(128))]
struct Padded<T>(T);

impl FlushControl {
    /// Asks every UDP worker to flush, without waiting.
    pub(super) fn request(&self) -> u64 {
        self.requested.0.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Asks every UDP worker to flush and waits until each has, or is idle, at most
    /// [`FLUSH_WAIT`]. False if some worker did not answer in time.
    pub(super) async fn flush(&self) -> bool {
        let target = self.request();
        let deadline = tokio::time::Instant::now() + FLUSH_WAIT;
        loop {
            let notified = self.acknowledged.notified();
            tokio::pin!(notified);
            // Registered before the check, so an acknowledgement in between wakes us.
            notified.as_mut().enable();
            if self.flushed(target) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.flushed(target);
            }
        }
    }

    fn flushed(&self, target: u64) -> bool {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots
            .iter()
            .all(|slot| slot.0.load(Ordering::Acquire) >= target)
    }

    fn register(&self) -> Arc<Padded<AtomicU64>> {
        let slot = Arc::new(Padded(AtomicU64::new(IDLE)));
        self.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::clone(&slot));
        slot
    }

    fn deregister(&self, slot: &Arc<Padded<AtomicU64>>) {
        self.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|s| !Arc::ptr_eq(s, slot));
    }
}

/// Counts a UDP worker's queries in thread-local counters. One per worker thread.
pub struct UdpRecorder {
    metrics: Metrics,
    /// Per (qtype, rcode), made on first use.
    queries: Box<[Option<LocalIntCounter>]>,
    /// Absent, present.
    ecs: [LocalIntCounter; 2],
    /// IPv4, IPv6.
    scope: [LocalHistogram; 2],
    decision: LocalHistogram,
    geo_misses: LocalIntCounter,
    pops: Option<LocalPopCounters>,
    /// Queries counted since the last flush.
    unflushed: u32,
    /// Decisions until the next timed one.
    until_sample: u32,
    slot: Arc<Padded<AtomicU64>>,
    /// The last flush request honoured.
    seen: u64,
    idle: bool,
}

/// Thread-local answer counters for one snapshot, as [`PopCounters`].
struct LocalPopCounters {
    snapshot: Weak<Snapshot>,
    counters: Vec<LocalIntCounter>,
}

impl UdpRecorder {
    pub(super) fn new(metrics: &Metrics) -> Self {
        let shared = &metrics.queries;
        let flush = &shared.flush;
        Self {
            metrics: metrics.clone(),
            queries: (0..QUERY_LABELS).map(|_| None).collect(),
            ecs: shared.ecs.each_ref().map(IntCounter::local),
            scope: shared.scope.each_ref().map(Histogram::local),
            decision: shared.decision.local(),
            geo_misses: shared.geo_misses.local(),
            pops: None,
            unflushed: 0,
            until_sample: 0,
            slot: flush.register(),
            seen: flush.requested.0.load(Ordering::Acquire),
            idle: true,
        }
    }

    /// A trace for the next query: times its decision if it is the sampled one.
    pub fn trace(&self) -> Trace {
        Trace::new(self.until_sample == 0)
    }

    /// A datagram arrived: from now on a reader must wait for this worker's flush.
    pub fn busy(&mut self) {
        if self.idle {
            self.idle = false;
            self.slot.0.store(self.seen, Ordering::Release);
        }
    }

    /// Counts one answered query.
    pub fn record(&mut self, snapshot: &Arc<Snapshot>, reply: &Reply, trace: &Trace) {
        let index = query_index(reply);
        if let Some(slot) = self.queries.get_mut(index) {
            if slot.is_none() {
                *slot = self
                    .metrics
                    .queries
                    .query_counter(Transport::Udp, index)
                    .map(IntCounter::local);
            }
            if let Some(counter) = slot {
                counter.inc();
            }
        }
        self.ecs[usize::from(reply.ecs.is_some())].inc();
        if let Some(subnet) = reply.ecs {
            self.scope[family_index(subnet.addr)].observe(f64::from(subnet.scope_prefix));
        }
        if let Some(decision) = trace.decision {
            if let Some(time) = trace.decision_time {
                self.decision.observe(time.as_secs_f64());
            }
            self.until_sample = self
                .until_sample
                .checked_sub(1)
                .unwrap_or(DECISION_SAMPLE_EVERY - 1);
            if decision.basis == Basis::Fallback {
                self.geo_misses.inc();
            }
            if let Some(pop) = decision.first
                && let Some(counter) = self.pop_counters(snapshot).get(pop.index())
            {
                counter.inc();
            }
            // Rare (every eligible POP down), so straight to the shared counter.
            if decision.fail_open {
                self.metrics.fail_open();
            }
        }
        self.unflushed += 1;
        let requested = self
            .metrics
            .queries
            .flush
            .requested
            .0
            .load(Ordering::Relaxed);
        if requested != self.seen || self.unflushed >= FLUSH_EVERY {
            self.flush();
            self.acknowledge(requested);
        }
    }

    /// The socket has been quiet for a read timeout: flush, and tell readers not to
    /// wait for this worker.
    pub fn idle(&mut self) {
        self.flush();
        self.seen = self
            .metrics
            .queries
            .flush
            .requested
            .0
            .load(Ordering::Acquire);
        if !self.idle {
            self.idle = true;
            self.slot.0.store(IDLE, Ordering::Release);
            self.metrics.queries.flush.acknowledged.notify_waiters();
        }
    }

    fn acknowledge(&mut self, requested: u64) {
        let asked = requested != self.seen;
        self.seen = requested;
        self.slot.0.store(requested, Ordering::Release);
        if asked {
            self.metrics.queries.flush.acknowledged.notify_waiters();
        }
    }

    /// Moves everything counted locally to the shared counters.
    fn flush(&mut self) {
        for counter in self.queries.iter().flatten() {
            counter.flush();
        }
        for counter in &self.ecs {
            counter.flush();
        }
        for histogram in &self.scope {
            histogram.flush();
        }
        self.decision.flush();
        self.geo_misses.flush();
        if let Some(pops) = &self.pops {
            for counter in &pops.counters {
                counter.flush();
            }
        }
        self.unflushed = 0;
    }

    /// This worker's answer counters for `snapshot`, rebuilt (after flushing the
    /// previous snapshot's) when the snapshot changed.
    fn pop_counters(&mut self, snapshot: &Arc<Snapshot>) -> &[LocalIntCounter] {
        let current = self
            .pops
            .as_ref()
            .is_some_and(|p| std::ptr::eq(p.snapshot.as_ptr(), Arc::as_ptr(snapshot)));
        if !current {
            if let Some(old) = &self.pops {
                for counter in &old.counters {
                    counter.flush();
                }
            }
            let shared = self.metrics.queries.pop_counters(snapshot);
            self.pops = Some(LocalPopCounters {
                snapshot: Arc::downgrade(snapshot),
                counters: shared.counters.iter().map(IntCounter::local).collect(),
            });
        }
        self.pops.as_ref().map_or(&[], |p| &p.counters)
    }
}

impl Drop for UdpRecorder {
    /// A worker that stops flushes what it counted and leaves the readers' list.
    fn drop(&mut self) {
        self.flush();
        self.slot.0.store(IDLE, Ordering::Release);
        self.metrics.queries.flush.deregister(&self.slot);
        self.metrics.queries.flush.acknowledged.notify_waiters();
    }
}

impl std::fmt::Debug for UdpRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpRecorder")
            .field("unflushed", &self.unflushed)
            .field("idle", &self.idle)
            .finish_non_exhaustive()
    }
}

/// Counts TCP (and DoH) queries straight into the shared counters: both are rare
/// next to UDP, and their tasks move between threads.
#[derive(Clone)]
pub struct TcpRecorder {
    metrics: Metrics,
    transport: Transport,
}

impl TcpRecorder {
    pub(super) fn new(metrics: &Metrics) -> Self {
        Self {
            metrics: metrics.clone(),
            transport: Transport::Tcp,
        }
    }

    /// The same, counting under `transport="doh"`.
    pub(super) fn doh(metrics: &Metrics) -> Self {
        Self {
            metrics: metrics.clone(),
            transport: Transport::Doh,
        }
    }

    /// A trace for the next query: TCP times every decision.
    pub fn trace(&self) -> Trace {
        Trace::new(true)
    }

    /// Counts one answered query.
    pub fn record(&self, snapshot: &Arc<Snapshot>, reply: &Reply, trace: &Trace) {
        let shared = &self.metrics.queries;
        if let Some(counter) = shared.query_counter(self.transport, query_index(reply)) {
            counter.inc();
        }
        shared.ecs[usize::from(reply.ecs.is_some())].inc();
        if let Some(subnet) = reply.ecs {
            shared.scope[family_index(subnet.addr)].observe(f64::from(subnet.scope_prefix));
        }
        if let Some(decision) = trace.decision {
            if let Some(time) = trace.decision_time {
                shared.decision.observe(time.as_secs_f64());
            }
            if decision.basis == Basis::Fallback {
                shared.geo_misses.inc();
            }
            if let Some(pop) = decision.first
                && let Some(counter) = shared.pop_counters(snapshot).get(pop)
            {
                counter.inc();
            }
            if decision.fail_open {
                self.metrics.fail_open();
            }
        }
    }
}

impl std::fmt::Debug for TcpRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpRecorder").finish_non_exhaustive()
    }
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_indexes_round_trip() {
        for (value, label) in QTYPES {
            assert_eq!(qtype_label(qtype_index(Some(value))), label);
        }
        assert_eq!(qtype_label(qtype_index(Some(99))), "OTHER");
        assert_eq!(qtype_label(qtype_index(None)), "NONE");
        for (value, label) in RCODES {
            assert_eq!(rcode_label(rcode_index(value)), label);
        }
        assert_eq!(rcode_label(rcode_index(9)), "OTHER");
        let last = Reply {
            qtype: None,
            rcode: 9,
            ecs: None,
        };
        assert_eq!(query_index(&last), QUERY_LABELS - 1);
    }

    #[test]
    fn local_counts_reach_the_shared_counters_on_request() {
        let metrics = Metrics::new();
        let (_dir, snapshot) = crate::dns::testing::snapshot();
        let mut recorder = UdpRecorder::new(&metrics);
        let reply = Reply {
            qtype: Some(1),
            rcode: 0,
            ecs: None,
        };
        let line = "meridian_dns_queries_total{qtype=\"A\",rcode=\"NOERROR\",transport=\"udp\"}";
        recorder.busy();
        recorder.record(&snapshot, &reply, &Trace::default());
        assert!(
            metrics.render().contains(&format!("{line} 0\n")),
            "not flushed yet"
        );
        metrics.request_flush();
        recorder.record(&snapshot, &reply, &Trace::default());
        assert!(metrics.render().contains(&format!("{line} 2\n")));
        recorder.record(&snapshot, &reply, &Trace::default());
        recorder.idle();
        assert!(metrics.render().contains(&format!("{line} 3\n")));
    }
}
