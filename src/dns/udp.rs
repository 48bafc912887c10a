//! DNS over UDP: per listen address, one socket per worker thread (SO_REUSEPORT lets
//! the kernel spread packets across them), each served by a blocking loop.
//!
//! No async runtime and no task per packet: receive a batch of datagrams into
//! buffers reused for the life of the thread, load the current snapshot, parse
//! the batch and start loading the lines its range lookups will read (their cache
//! misses overlap instead of each query waiting on its own), answer each (fast
//! path or full path), count it in the thread's own metric counters,
//! send the batch (`dns::batch`: one system call each way on Linux, and no wait
//! for a batch to fill). One snapshot load serves the batch. A short
//! read timeout lets the loop notice shutdown, and flushes the counters of a socket
//! gone quiet.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use crate::metrics::Metrics;
use crate::metrics::queries::{Reply, Trace, UdpRecorder};
use crate::snapshot::{Shared, Snapshot};

use super::batch::{BATCH, Inbox, Outbox};
use super::encode::{encode_or_servfail, udp_limit};
use super::fast::FastPath;
use super::resolve::{client, reject, resolve};
use super::wire::{self, ParseError};

/// How often a worker blocked on an idle socket checks for shutdown.
pub const READ_TIMEOUT: Duration = Duration::from_millis(200);
/// Receive buffer asked of the kernel per socket, to ride out bursts.
const RECEIVE_BUFFER: usize = 4 << 20;
/// Pause after an unexpected socket error, so a persistent one cannot spin a core.
const ERROR_BACKOFF: Duration = Duration::from_millis(10);

/// Binds `count` sockets to `addr` with SO_REUSEPORT. With port 0 the first socket
/// picks the port and the others join it.
pub fn bind(addr: SocketAddr, count: usize) -> io::Result<Vec<UdpSocket>> {
    let first = bind_one(addr)?;
    let addr = first.local_addr()?;
    let mut sockets = vec![first];
    for _ in 1..count.max(1) {
        sockets.push(bind_one(addr)?);
    }
    Ok(sockets)
}

fn bind_one(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // An IPv6 address serves IPv6 only, so `[::]:53` and `0.0.0.0:53` can both
        // be listed.
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_port(true)?;
    // Best effort: the kernel may cap it (net.core.rmem_max), which is not fatal.
    let _ = socket.set_recv_buffer_size(RECEIVE_BUFFER);
    socket.bind(&addr.into())?;
    socket.set_read_timeout(Some(READ_TIMEOUT))?;
    Ok(socket.into())
}

/// Starts one worker thread per socket; they run until `stop` is set.
pub fn spawn(
    sockets: Vec<UdpSocket>,
    shared: &Shared,
    metrics: &Metrics,
    stop: &Arc<AtomicBool>,
) -> io::Result<Vec<JoinHandle<()>>> {
    let mut threads = Vec::with_capacity(sockets.len());
    let workers = sockets.len();
    for (i, socket) in sockets.into_iter().enumerate() {
        let shared = Arc::clone(shared);
        let thread_stop = Arc::clone(stop);
        let recorder = metrics.udp_recorder();
        let thread = std::thread::Builder::new()
            .name(format!("meridian-udp-{i}"))
            .spawn(move || serve(&socket, &shared, recorder, &thread_stop, workers));
        match thread {
            Ok(thread) => threads.push(thread),
            Err(error) => {
                stop.store(true, Ordering::Release);
                return Err(error);
            }
        }
    }
    Ok(threads)
}

/// One worker's loop.
fn serve(
    socket: &UdpSocket,
    shared: &Shared,
    mut recorder: UdpRecorder,
    stop: &AtomicBool,
    workers: usize,
) {
    crate::geo::subnet_cache::enable_for_this_thread(workers);
    let mut inbox = Inbox::new();
    let mut outbox = Outbox::new();
    let mut fast = FastPath::new();
    while !stop.load(Ordering::Acquire) {
        let received = match inbox.receive(socket) {
            Ok(received) => received,
            Err(error) => {
                match error.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => recorder.idle(),
                    io::ErrorKind::Interrupted => {}
                    _ => {
                        tracing::warn!(%error, "UDP receive failed");
                        std::thread::sleep(ERROR_BACKOFF);
                    }
                }
                continue;
            }
        };
        recorder.busy();
        let snapshot = shared.load();
        // Parsed first, the batch's range lookups warmed together, then answered.
        let batch: Vec<_> = (0..received)
            .filter_map(|i| inbox.get(i))
            .map(|(packet, peer)| (wire::parse(packet), peer))
            .collect();
        warm(&snapshot, &batch);
        for (parsed, peer) in &batch {
            let mut trace = recorder.trace();
            let out = outbox.next_buffer();
            // Counted before it is sent: a client that has the answer sees it counted.
            if let Some(reply) =
                answer_parsed(&snapshot, parsed, peer.ip(), &mut fast, &mut trace, out)
            {
                recorder.record(&snapshot, &reply, &trace);
                outbox.push(*peer);
            }
        }
        outbox.send(socket);
    }
}

/// Answers one datagram into `out` and says what was answered; None if it gets no
/// response. The routing decision, if any, is noted in `trace`.
pub fn answer(
    snapshot: &Arc<Snapshot>,
    packet: &[u8],
    source: IpAddr,
    fast: &mut FastPath,
    trace: &mut Trace,
    out: &mut Vec<u8>,
) -> Option<Reply> {
    answer_parsed(snapshot, &wire::parse(packet), source, fast, trace, out)
}

/// Starts loading the lines each query's range lookup will read, for the whole
/// batch at once: the lookups then find them in the cache instead of each
/// waiting on its own misses in turn (`RangeRankings::warm`).
fn warm(snapshot: &Snapshot, batch: &[(Parsed<'_>, SocketAddr)]) {
    let Some(ranges) = snapshot.rankings.by_range() else {
        return;
    };
    let mut clients = [IpAddr::from([0, 0, 0, 0]); BATCH];
    let queries = batch
        .iter()
        .filter_map(|(parsed, peer)| Some((parsed.as_ref().ok()?, peer)));
    let mut count = 0;
    for ((query, peer), slot) in queries.zip(&mut clients) {
        let subnet = query.edns.and_then(|e| e.client_subnet);
        *slot = client(snapshot, subnet.as_ref(), peer.ip()).addr;
        count += 1;
    }
    ranges.warm(&clients[..count]);
}

/// What parsing a datagram gives.
type Parsed<'a> = Result<wire::Query<'a>, ParseError<'a>>;

/// [`answer`] for a datagram already parsed.
fn answer_parsed(
    snapshot: &Arc<Snapshot>,
    parsed: &Parsed<'_>,
    source: IpAddr,
    fast: &mut FastPath,
    trace: &mut Trace,
    out: &mut Vec<u8>,
) -> Option<Reply> {
    let max_udp_payload = snapshot.config.dns.max_udp_payload;
    match parsed {
        Ok(query) => {
            if snapshot.config.dns.fast_path && fast.answer(snapshot, query, source, trace, out) {
                return Some(Reply::fast(query, trace));
            }
            let response = resolve(snapshot, query, source, trace);
            let limit = udp_limit(max_udp_payload, query.edns.map(|e| e.udp_size));
            encode_or_servfail(&response, limit, out).then(|| Reply::of(&response))
        }
        Err(ParseError::Malformed(malformed)) => {
            let response = reject(snapshot, malformed);
            let limit = udp_limit(max_udp_payload, malformed.edns.map(|e| e.udp_size));
            encode_or_servfail(&response, limit, out).then(|| Reply::of(&response))
        }
        Err(ParseError::Drop(_)) => None,
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use hickory_proto::op::{Edns, Message, Query};
    use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
    use hickory_proto::rr::{Name, RecordType};

    use super::*;
    use crate::dns::testing::snapshot;

    fn packet(name: &str, qtype: RecordType) -> Vec<u8> {
        let mut message = Message::query();
        message.add_query(Query::query(Name::from_ascii(name).expect("name"), qtype));
        let mut edns = Edns::new();
        edns.options_mut()
            .insert(EdnsOption::Subnet(ClientSubnet::new(
                IpAddr::V4(Ipv4Addr::new(100, 65, 1, 0)),
                24,
                0,
            )));
        message.set_edns(edns);
        message.to_vec().expect("encodes")
    }

    /// Every single-byte corruption of a few queries is answered or dropped, never
    /// a panic, on both paths; every answer decodes and echoes the id.
    #[test]
    fn corrupted_queries_never_panic() {
        let (_dir, snapshot) = snapshot();
        let mut fast = FastPath::new();
        let mut out = Vec::new();
        let source = IpAddr::V4(Ipv4Addr::new(100, 64, 3, 4));
        let bases = [
            packet("www.example.com.cdn.test.", RecordType::A),
            packet("a.b.example.org.cdn.test.", RecordType::AAAA),
            packet("ns1.cdn.test.", RecordType::ANY),
            packet("nothing.cdn.test.", RecordType::MX),
        ];
        for base in &bases {
            for i in 0..base.len() {
                for value in [0x00, 0x01, 0x07, 0x29, 0x3F, 0x40, 0x80, 0xC0, 0xFF] {
                    let mut corrupted = base.clone();
                    corrupted[i] = value;
                    for truncated in [&corrupted[..], &corrupted[..corrupted.len() - 1]] {
                        let mut trace = Trace::default();
                        if answer(
                            &snapshot, truncated, source, &mut fast, &mut trace, &mut out,
                        )
                        .is_some()
                        {
                            let reply = Message::from_vec(&out).expect("replies decode");
                            assert_eq!(
                                reply.metadata.id.to_be_bytes(),
                                [truncated[0], truncated[1]]
                            );
                        }
                    }
                }
            }
        }
    }
}
