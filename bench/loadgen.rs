//! A DNS load generator for the side-by-side benchmark (`bench/run.sh`).
//!
//! `loadgen run` replays a query file (one query a line: `name qtype [ecs-subnet]`)
//! against a server over several UDP sockets, keeping many queries in flight on
//! each, for a bounded time, and reports queries/s, latency percentiles, timeouts
//! and rcodes. It sends and receives a batch per system call (`sendmmsg`,
//! `recvmmsg` on Linux, as Meridian's UDP workers do), so that its own core stays
//! further from being the limit than the server's. `loadgen generate` writes such a file from the networks of a
//! MaxMind-format ASN database: IPv4 /24s and IPv6 /56s from many countries and
//! operators, some queries with ECS and some without.
//!
//! ```sh
//! cargo run --release --example loadgen -- generate --asn-db ../shared/geodata/ASN.mmdb --out /tmp/q.txt
//! cargo run --release --example loadgen -- run --server 127.0.0.1:5353 --queries /tmp/q.txt --duration 10
//! ```

use std::io::{BufRead, BufWriter, Write};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{Name, RecordType};
use maxminddb::{Reader, WithinOptions};
use meridian::dns::batch::{BATCH, Inbox, Outbox};

#[path = "common/mod.rs"]
mod common;

#[derive(Parser)]
#[command(about = "DNS load generator for Meridian's benchmarks")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replay a query file against a server for a bounded time.
    Run {
        /// The server's address.
        #[arg(long)]
        server: SocketAddr,
        /// Query file: `name qtype [ecs-subnet]` per line.
        #[arg(long)]
        queries: PathBuf,
        /// Seconds to send for.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// UDP sockets, each on its own thread.
        #[arg(long, default_value_t = 4)]
        sockets: usize,
        /// Queries in flight per socket.
        #[arg(long, default_value_t = 64)]
        inflight: usize,
        /// Milliseconds after which an unanswered query counts as a timeout.
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
        /// One line of JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Also report answers, timeouts and p99 per window of this many
        /// milliseconds (by send time), to see a reload's effect; 0: no windows.
        #[arg(long, default_value_t = 0)]
        window_ms: u64,
    },
    /// Write the reference world's config with its POPs replaced by `pops` POPs
    /// around the same cities (as the `decide` benchmark builds it).
    World {
        /// POPs in the generated world.
        #[arg(long, default_value_t = 3200)]
        pops: usize,
        /// Where to write the config.
        #[arg(long)]
        out: PathBuf,
    },
    /// Write a query file from the networks of an ASN database.
    Generate {
        /// MaxMind-format ASN database.
        #[arg(long)]
        asn_db: PathBuf,
        /// Where to write the query file.
        #[arg(long)]
        out: PathBuf,
        /// Queries to write.
        #[arg(long, default_value_t = 100_000)]
        count: usize,
        /// The name asked for.
        #[arg(long, default_value = "www.example.com.cdn.test.")]
        name: String,
        /// Share of queries without ECS (located by the source address).
        #[arg(long, default_value_t = 0.0)]
        no_ecs_share: f64,
        /// Share of IPv6 (/56) subnets among the ECS ones.
        #[arg(long, default_value_t = 0.2)]
        v6_share: f64,
        /// Share of AAAA queries.
        #[arg(long, default_value_t = 0.2)]
        aaaa_share: f64,
    },
}

fn main() {
    let args = Args::parse();
    let result = match args.command {
        Command::Run {
            server,
            queries,
            duration,
            sockets,
            inflight,
            timeout_ms,
            json,
            window_ms,
        } => run(
            server,
            &queries,
            Duration::from_secs_f64(duration),
            sockets.max(1),
            inflight.clamp(1, 4096),
            Duration::from_millis(timeout_ms),
            json,
            window_ms,
        ),
        Command::World { pops, out } => {
            std::fs::write(&out, common::world_text(pops.max(1))).map_err(Error::from)
        }
        Command::Generate {
            asn_db,
            out,
            count,
            name,
            no_ecs_share,
            v6_share,
            aaaa_share,
        } => generate(
            &asn_db,
            &out,
            count,
            &name,
            no_ecs_share,
            v6_share,
            aaaa_share,
        ),
    };
    if let Err(error) = result {
        eprintln!("loadgen: {error}");
        std::process::exit(1);
    }
}

type Error = Box<dyn std::error::Error>;

/// SO_RCVBUF and SO_SNDBUF of each load-generator socket.
const CLIENT_BUFFER: usize = 1 << 20;

/// Encodes every query of the file once; the id is patched per send.
fn load_queries(path: &PathBuf) -> Result<Vec<Vec<u8>>, Error> {
    let file = std::io::BufReader::new(std::fs::File::open(path)?);
    let mut packets = Vec::new();
    for (number, line) in file.lines().enumerate() {
        let line = line?;
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() || fields[0].starts_with('#') {
            continue;
        }
        let bad = |what: &str| format!("{}:{}: {what}", path.display(), number + 1);
        let name = Name::from_ascii(fields[0]).map_err(|_| bad("bad name"))?;
        let qtype: RecordType = fields
            .get(1)
            .copied()
            .unwrap_or("A")
            .parse()
            .map_err(|_| bad("bad qtype"))?;
        let mut message = Message::query();
        message.add_query(Query::query(name, qtype));
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        if let Some(subnet) = fields.get(2) {
            let (addr, prefix) = subnet.split_once('/').ok_or_else(|| bad("bad subnet"))?;
            let addr: IpAddr = addr.parse().map_err(|_| bad("bad subnet"))?;
            let prefix: u8 = prefix.parse().map_err(|_| bad("bad subnet"))?;
            edns.options_mut()
                .insert(EdnsOption::Subnet(ClientSubnet::new(addr, prefix, 0)));
        }
        message.set_edns(edns);
        packets.push(message.to_vec()?);
    }
    if packets.is_empty() {
        return Err(format!("{}: no queries", path.display()).into());
    }
    Ok(packets)
}

/// What one socket's thread saw.
#[derive(Default)]
struct Tally {
    sent: u64,
    answered: u64,
    timeouts: u64,
    /// Latencies in microseconds.
    latencies: Vec<u32>,
    /// Milliseconds from the start to the send of each answered query (with
    /// `latencies`), and of each query that timed out.
    answered_at: Vec<u32>,
    timed_out_at: Vec<u32>,
    rcodes: [u64; 16],
}

fn run(
    server: SocketAddr,
    queries: &PathBuf,
    duration: Duration,
    sockets: usize,
    inflight: usize,
    timeout: Duration,
    json: bool,
    window_ms: u64,
) -> Result<(), Error> {
    let packets = Arc::new(load_queries(queries)?);
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    // For lining windows up with events outside (bench/run.sh's reloads).
    let start_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let threads: Vec<_> = (0..sockets)
        .map(|i| {
            let packets = Arc::clone(&packets);
            let stop = Arc::clone(&stop);
            // Each socket starts at a different place in the file.
            let offset = i * packets.len() / sockets;
            std::thread::spawn(move || {
                worker(server, &packets, offset, inflight, timeout, &stop, start)
            })
        })
        .collect();
    std::thread::sleep(duration);
    stop.store(true, Ordering::Release);
    let mut total = Tally::default();
    for thread in threads {
        let tally = thread.join().map_err(|_| "worker panicked")??;
        total.sent += tally.sent;
        total.answered += tally.answered;
        total.timeouts += tally.timeouts;
        total.latencies.extend(tally.latencies);
        total.answered_at.extend(tally.answered_at);
        total.timed_out_at.extend(tally.timed_out_at);
        for (all, one) in total.rcodes.iter_mut().zip(tally.rcodes) {
            *all += one;
        }
    }
    let elapsed = start
        .elapsed()
        .as_secs_f64()
        .min(duration.as_secs_f64() + 0.001);
    let windows = match windows(&total, window_ms) {
        w if w.is_empty() => w,
        w => format!(",\"start_unix_ms\":{start_unix_ms}{w}"),
    };
    total.latencies.sort_unstable();
    let percentile = |p: f64| -> f64 {
        if total.latencies.is_empty() {
            return 0.0;
        }
        let index = ((total.latencies.len() as f64 - 1.0) * p).round() as usize;
        f64::from(total.latencies[index]) / 1000.0
    };
    let qps = total.answered as f64 / duration.as_secs_f64().min(elapsed);
    let rcodes: Vec<String> = total
        .rcodes
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(code, n)| format!("\"{}\":{n}", rcode_name(code)))
        .collect();
    if json {
        println!(
            "{{\"qps\":{qps:.0},\"sent\":{},\"answered\":{},\"timeouts\":{},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"p999_ms\":{:.3},\"rcodes\":{{{}}}{windows}}}",
            total.sent,
            total.answered,
            total.timeouts,
            percentile(0.5),
            percentile(0.99),
            percentile(0.999),
            rcodes.join(",")
        );
    } else {
        println!(
            "queries/s {qps:.0}  sent {}  answered {}  timeouts {}  latency ms p50 {:.3} p99 {:.3} p999 {:.3}  rcodes {{{}}}",
            total.sent,
            total.answered,
            total.timeouts,
            percentile(0.5),
            percentile(0.99),
            percentile(0.999),
            rcodes.join(",")
        );
    }
    Ok(())
}

/// `,"windows":[[start_ms,answered,timeouts,p99_ms],...]` for windows of
/// `window_ms` by send time, or nothing.
fn windows(tally: &Tally, window_ms: u64) -> String {
    if window_ms == 0 {
        return String::new();
    }
    let window = |at: u32| (u64::from(at) / window_ms) as usize;
    let count = tally
        .answered_at
        .iter()
        .chain(&tally.timed_out_at)
        .map(|at| window(*at) + 1)
        .max()
        .unwrap_or(0);
    let mut latencies = vec![Vec::new(); count];
    let mut timeouts = vec![0_u64; count];
    for (at, latency) in tally.answered_at.iter().zip(&tally.latencies) {
        latencies[window(*at)].push(*latency);
    }
    for at in &tally.timed_out_at {
        timeouts[window(*at)] += 1;
    }
    let rows: Vec<String> = latencies
        .iter_mut()
        .zip(&timeouts)
        .enumerate()
        .map(|(i, (window, timeouts))| {
            window.sort_unstable();
            let p99 = window
                .get(((window.len() as f64 - 1.0) * 0.99).round() as usize)
                .map_or(0.0, |l| f64::from(*l) / 1000.0);
            format!(
                "[{},{},{timeouts},{p99:.3}]",
                i as u64 * window_ms,
                window.len()
            )
        })
        .collect();
    format!(",\"windows\":[{}]", rows.join(","))
}

fn rcode_name(code: usize) -> &'static str {
    match code {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        _ => "OTHER",
    }
}

/// One socket: keeps `inflight` queries outstanding, ids as slot numbers, until
/// told to stop; then waits for the stragglers up to the timeout.
fn worker(
    server: SocketAddr,
    packets: &[Vec<u8>],
    mut next: usize,
    inflight: usize,
    timeout: Duration,
    stop: &AtomicBool,
    start: Instant,
) -> Result<Tally, String> {
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().expect("address")
    } else {
        "[::]:0".parse().expect("address")
    };
    let socket = UdpSocket::bind(bind).map_err(|e| e.to_string())?;
    // Room for every answer of the window even while this thread is descheduled:
    // the OS default (about 200 KiB) drops answers from about 150 in flight on, and
    // those drops would be counted as the server's timeouts. Best effort (capped by
    // net.core.rmem_max).
    let buffers = socket2::SockRef::from(&socket);
    let _ = buffers.set_recv_buffer_size(CLIENT_BUFFER);
    let _ = buffers.set_send_buffer_size(CLIENT_BUFFER);
    socket.connect(server).map_err(|e| e.to_string())?;
    socket
        .set_read_timeout(Some(Duration::from_millis(1)))
        .map_err(|e| e.to_string())?;
    // Slot i holds the send time of the query with id i; ids are recycled only once
    // answered or timed out. `generation` tells a late answer from a fresh one.
    let mut sent_at: Vec<Option<Instant>> = vec![None; inflight];
    let mut generation: Vec<u8> = vec![0; inflight];
    let mut free: Vec<u16> = (0..inflight as u16).rev().collect();
    let mut tally = Tally {
        latencies: Vec::with_capacity(1 << 20),
        answered_at: Vec::with_capacity(1 << 20),
        ..Tally::default()
    };
    let mut inbox = Inbox::new();
    let mut outbox = Outbox::new();
    let mut last_sweep = Instant::now();
    let mut draining_since: Option<Instant> = None;
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        if stopping {
            let since = *draining_since.get_or_insert_with(Instant::now);
            if free.len() == inflight || since.elapsed() > timeout {
                break;
            }
        }
        // Fill the window, a batch per system call.
        while !stopping && !free.is_empty() {
            while let Some(slot) = (outbox.len() < BATCH).then(|| free.pop()).flatten() {
                let packet = outbox.next_buffer();
                packet.clear();
                packet.extend_from_slice(&packets[next]);
                next = (next + 1) % packets.len();
                generation[usize::from(slot)] = generation[usize::from(slot)].wrapping_add(1);
                // Id: generation in the top bits, slot below (inflight <= 4096).
                let id = (u16::from(generation[usize::from(slot)] & 0x0f) << 12) | slot;
                packet[..2].copy_from_slice(&id.to_be_bytes());
                outbox.push(server);
                sent_at[usize::from(slot)] = Some(Instant::now());
                tally.sent += 1;
            }
            outbox.send(&socket);
        }
        // Then take every answer already queued (waiting up to the read timeout for
        // the first).
        let received = inbox.receive(&socket).unwrap_or(0);
        let now = Instant::now();
        for (answer, _) in (0..received).filter_map(|i| inbox.get(i)) {
            if answer.len() < 12 {
                continue;
            }
            let id = u16::from_be_bytes([answer[0], answer[1]]);
            let slot = usize::from(id & 0x0fff);
            let current = slot < inflight
                && (generation[slot] & 0x0f) == (id >> 12) as u8
                && sent_at[slot].is_some();
            if current && let Some(at) = sent_at[slot].take() {
                let micros = now.duration_since(at).as_micros().min(u128::from(u32::MAX));
                tally.latencies.push(micros as u32);
                tally.answered_at.push(since(start, at));
                tally.answered += 1;
                tally.rcodes[usize::from(answer[3] & 0x0f)] += 1;
                free.push(slot as u16);
            }
        }
        // Sweeping every slot is cheap at a few hundred in flight, every millisecond.
        let now = Instant::now();
        if now.duration_since(last_sweep) >= Duration::from_millis(1) {
            last_sweep = now;
            for (slot, at) in sent_at.iter_mut().enumerate() {
                if let Some(sent) = *at
                    && now.duration_since(sent) > timeout
                {
                    *at = None;
                    tally.timeouts += 1;
                    tally.timed_out_at.push(since(start, sent));
                    free.push(slot as u16);
                }
            }
        }
    }
    // Still unanswered at the end: timeouts.
    for sent in sent_at.iter().flatten() {
        tally.timeouts += 1;
        tally.timed_out_at.push(since(start, *sent));
    }
    Ok(tally)
}

/// Milliseconds from `start` to `at`.
fn since(start: Instant, at: Instant) -> u32 {
    at.duration_since(start)
        .as_millis()
        .min(u128::from(u32::MAX)) as u32
}

/// Writes `count` queries drawn evenly over the ASN database's networks.
fn generate(
    asn_db: &PathBuf,
    out: &PathBuf,
    count: usize,
    name: &str,
    no_ecs_share: f64,
    v6_share: f64,
    aaaa_share: f64,
) -> Result<(), Error> {
    let reader = Reader::open_readfile(asn_db)?;
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for (cidr, list) in [("0.0.0.0/0", &mut v4), ("2000::/3", &mut v6)] {
        for network in reader.within(cidr.parse()?, WithinOptions::default())? {
            let network = network?.network()?;
            list.push(network.ip());
        }
    }
    if v4.is_empty() {
        return Err("no IPv4 networks in the ASN database".into());
    }
    let mut state = 0x6c6f_6164_u64;
    let mut draw = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let unit = |x: u64| (x >> 11) as f64 / (1_u64 << 53) as f64;
    let mut file = BufWriter::new(std::fs::File::create(out)?);
    for _ in 0..count {
        let qtype = if unit(draw()) < aaaa_share {
            "AAAA"
        } else {
            "A"
        };
        if unit(draw()) < no_ecs_share {
            writeln!(file, "{name} {qtype}")?;
            continue;
        }
        let subnet = if !v6.is_empty() && unit(draw()) < v6_share {
            let base = match v6[(draw() % v6.len() as u64) as usize] {
                IpAddr::V6(a) => u128::from(a),
                IpAddr::V4(_) => unreachable!("IPv6 list"),
            };
            let addr = std::net::Ipv6Addr::from(base & !((1_u128 << 72) - 1));
            format!("{addr}/56")
        } else {
            let base = match v4[(draw() % v4.len() as u64) as usize] {
                IpAddr::V4(a) => u32::from(a),
                IpAddr::V6(_) => unreachable!("IPv4 list"),
            };
            let addr = std::net::Ipv4Addr::from(base & 0xffff_ff00);
            format!("{addr}/24")
        };
        writeln!(file, "{name} {qtype} {subnet}")?;
    }
    file.flush()?;
    eprintln!(
        "loadgen: wrote {count} queries to {} from {} IPv4 and {} IPv6 networks",
        out.display(),
        v4.len(),
        v6.len()
    );
    Ok(())
}
