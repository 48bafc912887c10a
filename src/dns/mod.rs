//! The DNS data plane: UDP and TCP listeners answering from the current snapshot.
//!
//! Why two paths: hickory-server answers about 120-165k UDP queries a second on one
//! core, where NSD and gdnsd reach 250-300k; a full hickory-proto decode and encode
//! alone costs 5-7 µs a query against a budget near 1 µs. So UDP has its own loop
//! (`udp`: a blocking thread per SO_REUSEPORT socket, no task per packet), its own
//! strict parser (`wire`), and for the common question, one A or AAAA for an
//! accelerated name, a writer that copies pre-built records (`fast`). Everything
//! else is answered by `resolve` and encoded by hickory-proto (`encode`). TCP is
//! rarer and stateful, so hickory-server carries it (`tcp`), on the same `wire`
//! parse and `resolve`.

/// Public for the load generator (`bench/loadgen.rs`), which sends and receives
/// the same way.
pub mod batch;
pub mod encode;
pub mod fast;
pub mod resolve;
pub mod tcp;
#[cfg(test)]
pub(crate) mod testing;
pub mod udp;
pub mod wire;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crate::metrics::Metrics;
use crate::snapshot::Shared;

/// Tries at binding UDP and TCP to one free port when the configured port is 0: the
/// port UDP picked may be taken for TCP.
const BIND_ATTEMPTS: usize = 16;
/// How often busy UDP workers are asked to flush their local metric counters, so
/// that readers such as `/v1/pops` are never further behind.
const FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// The running DNS listeners.
pub struct DnsServer {
    /// Addresses bound, one per configured address, the actual port filled in (UDP
    /// and TCP share it).
    pub addrs: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
    udp_threads: Vec<JoinHandle<()>>,
    tcp: hickory_server::Server<tcp::Handler>,
    flush_ticker: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for DnsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsServer")
            .field("addrs", &self.addrs)
            .field("udp_threads", &self.udp_threads.len())
            .finish_non_exhaustive()
    }
}

/// Binds UDP and TCP on each address and starts serving from `shared`, counting
/// into `metrics`. Must be called inside a tokio runtime (TCP runs on it).
pub async fn start(
    addrs: &[SocketAddr],
    shared: Shared,
    metrics: Metrics,
) -> io::Result<DnsServer> {
    let threads = match shared.load().config.dns.udp_threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    // Bind everything before starting anything, so a failure leaves nothing running.
    let mut bound = Vec::with_capacity(addrs.len());
    for addr in addrs {
        bound.push(bind_pair(*addr, threads)?);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut server = DnsServer {
        addrs: Vec::with_capacity(addrs.len()),
        stop: Arc::clone(&stop),
        udp_threads: Vec::new(),
        tcp: hickory_server::Server::new(tcp::Handler::new(
            Arc::clone(&shared),
            metrics.tcp_recorder(),
        )),
        flush_ticker: tokio::spawn(flush_ticker(metrics.clone())),
    };
    for (addr, udp_sockets, listener) in bound {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        server
            .tcp
            .register_listener(listener, tcp::IDLE_TIMEOUT, tcp::RESPONSE_QUEUE);
        // On error `server` is dropped, which stops the threads already started.
        server
            .udp_threads
            .extend(udp::spawn(udp_sockets, &shared, &metrics, &stop)?);
        server.addrs.push(addr);
    }
    Ok(server)
}

impl DnsServer {
    /// Stops the listeners and waits for the UDP threads (at most one read timeout)
    /// and the TCP tasks to finish.
    pub async fn shutdown(mut self) {
        self.stop.store(true, Ordering::Release);
        self.flush_ticker.abort();
        if let Err(error) = self.tcp.shutdown_gracefully().await {
            tracing::warn!(%error, "TCP listener ended with an error");
        }
        let threads = std::mem::take(&mut self.udp_threads);
        let joined = tokio::task::spawn_blocking(move || {
            for thread in threads {
                if thread.join().is_err() {
                    tracing::error!("a UDP worker panicked");
                }
            }
        });
        if let Err(error) = joined.await {
            tracing::error!(%error, "joining UDP workers failed");
        }
    }
}

impl Drop for DnsServer {
    /// Dropped without `shutdown`: the UDP threads still stop (hickory-server aborts
    /// its tasks on drop).
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.flush_ticker.abort();
    }
}

/// Asks the UDP workers to flush every [`FLUSH_INTERVAL`]; a busy worker does at
/// its next query (an idle one has already flushed).
async fn flush_ticker(metrics: Metrics) {
    let mut interval = tokio::time::interval(FLUSH_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        metrics.request_flush();
    }
}

/// Binds UDP sockets and a TCP listener on the same address and port.
fn bind_pair(
    addr: SocketAddr,
    threads: usize,
) -> io::Result<(SocketAddr, Vec<std::net::UdpSocket>, std::net::TcpListener)> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let udp = udp::bind(addr, threads)?;
        let local = match udp.first() {
            Some(socket) => socket.local_addr()?,
            None => return Err(io::Error::other("no UDP socket bound")),
        };
        match tcp::bind(local) {
            Ok(listener) => return Ok((local, udp, listener)),
            Err(error)
                if addr.port() == 0
                    && error.kind() == io::ErrorKind::AddrInUse
                    && attempt < BIND_ATTEMPTS =>
            {
                continue;
            }
            Err(error) => return Err(error),
        }
    }
}
