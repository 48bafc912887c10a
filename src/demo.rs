//! `meridian demo`: the whole CDN on loopback, on the sample geodata built into
//! the binary, so a newcomer sees routing and caching work with one command and no
//! files. Meridian serves the reference world; a local origin serves a few
//! objects; cache nodes for a few POPs (`edge`) listen on loopback addresses that
//! the world gives as those POPs' addresses, and push their health to Meridian.
//! So `dig` sends a client to a POP's address and `curl` there gets a MISS, then
//! a HIT.
//!
//! The embedded files are written to a fresh temporary directory (the world with
//! the edge POPs' addresses rewritten) and served from there exactly as
//! `meridian serve` would serve them.

mod edge;
mod origin;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use crate::cache::CacheNode;
use crate::config::{Config, Overlay};

/// The first cache node's address when the command line does not say; the others
/// follow it (127.0.0.11 to 127.0.0.14). Linux routes all of 127.0.0.0/8 to the
/// loopback interface, so each node has an address of its own.
pub const DEFAULT_CACHE_FIRST_ADDRESS: &str = "127.0.0.11";

/// The cache nodes' port when the command line does not say. Not 80, which needs
/// root and is often taken, so the demo runs the same for everyone; `--cache-port
/// 80` makes the printed URLs plain.
pub const DEFAULT_CACHE_PORT: &str = "8081";

/// Where the demo listens.
#[derive(Debug, Clone, Copy)]
pub struct Listen {
    /// Meridian's DNS (UDP and TCP).
    pub dns: SocketAddr,
    /// Meridian's control plane.
    pub http: SocketAddr,
    /// Meridian's HTTP 302 router.
    pub router: SocketAddr,
    /// The first cache node's address; the others take the next ones.
    pub cache_first_address: Ipv4Addr,
    /// Every cache node's port.
    pub cache_port: u16,
}

/// The files of the demo, at their paths relative to the repository root.
const FILES: [(&str, &[u8]); 4] = [
    (
        "examples/world/meridian.yaml",
        include_bytes!("../examples/world/meridian.yaml"),
    ),
    (
        "zones/cdn.test.zone",
        include_bytes!("../zones/cdn.test.zone"),
    ),
    (
        "geodata/sample-city.mmdb",
        include_bytes!("../geodata/sample-city.mmdb"),
    ),
    (
        "geodata/sample-asn.mmdb",
        include_bytes!("../geodata/sample-asn.mmdb"),
    ),
];

/// Sample clients worth a `dig`: what they are and the subnet to send as ECS.
const CLIENTS: [(&str, &str); 6] = [
    ("a client in Tokyo: nrt", "118.156.18.0/24"),
    ("a client in Frankfurt: fra", "84.191.16.0/24"),
    (
        "a client in Munich, where there is no POP: the nearest, fra",
        "46.244.225.0/24",
    ),
    (
        "a China Telecom client in Beijing: sha, on its own ISP",
        "182.34.212.0/24",
    ),
    ("a China Unicom client in Beijing: pek", "211.94.252.0/24"),
    ("a client in Sao Paulo: gru", "152.249.2.0/24"),
];

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot write the demo files to {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Start(#[from] crate::server::StartError),
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot listen on {addr} for {what}: {source}")]
    Listen {
        what: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Edge(String),
}

/// Writes the embedded files under `dir` and returns the config's path.
pub fn materialize(dir: &Path) -> Result<PathBuf, DemoError> {
    for (relative, bytes) in FILES {
        let path = dir.join(relative);
        let write = || -> std::io::Result<()> {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&path, bytes)
        };
        write().map_err(|source| DemoError::Write {
            path: path.clone(),
            source,
        })?;
    }
    Ok(dir.join(FILES[0].0))
}

/// Runs the demo until interrupted.
pub async fn run(listen: Listen) -> Result<(), DemoError> {
    let edges = edge::plan(listen.cache_first_address, listen.cache_port)?;
    let dir = DemoDir::create()?;
    let config_path = materialize(&dir.0)?;
    let world = edge::localize(&String::from_utf8_lossy(FILES[0].1), &edges)?;
    std::fs::write(&config_path, world).map_err(|source| DemoError::Write {
        path: config_path.clone(),
        source,
    })?;
    let overlay = Overlay {
        dns_listen: vec![listen.dns],
        http_listen: Some(listen.http),
        http_router_listen: Some(listen.router),
        ..Overlay::default()
    };
    let config = Config::load(&config_path, &overlay)?;
    let server = crate::server::start(config).await?;
    server.log_listening();
    let http = server.http_addr().unwrap_or(listen.http);
    // The origin shares Meridian's loopback address, on a port of its own.
    let origin_listen = SocketAddr::new(reachable(http.ip()), 0);
    let origin = origin::start(origin_listen)
        .await
        .map_err(|source| DemoError::Listen {
            what: "the demo origin".into(),
            addr: origin_listen,
            source,
        })?;
    let control = SocketAddr::new(reachable(http.ip()), http.port());
    let nodes = edge::start(&edges, origin, control, &dir.0).await?;
    print_guide(
        server.dns_addrs()[0],
        http,
        server.http_router_addr(),
        &config_path,
    );
    print_cdn_guide(server.dns_addrs()[0], control, origin, &nodes, &edges);
    server.run_until_signal().await;
    for node in nodes {
        if let Err(e) = node.stop().await {
            tracing::warn!(error = %e, "cache node did not stop cleanly");
        }
    }
    Ok(())
}

/// An address to reach a listener bound to `ip`: loopback for a wildcard.
fn reachable(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => Ipv4Addr::LOCALHOST.into(),
        IpAddr::V6(v6) if v6.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    }
}

/// The demo's private directory, removed however the demo ends.
struct DemoDir(PathBuf);

impl DemoDir {
    /// A fresh directory: `create_dir` fails rather than reuse a path someone else
    /// made in the shared temporary directory.
    fn create() -> Result<Self, DemoError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path =
            std::env::temp_dir().join(format!("meridian-demo-{}-{nanos:08x}", std::process::id()));
        std::fs::create_dir(&path).map_err(|source| DemoError::Write {
            path: path.clone(),
            source,
        })?;
        Ok(Self(path))
    }
}

impl Drop for DemoDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn print_guide(dns: SocketAddr, http: SocketAddr, router: Option<SocketAddr>, config: &Path) {
    let (host, port) = (dns.ip(), dns.port());
    println!("Meridian demo: the reference world (26 POPs) on sample geodata.");
    println!("config: {}\n", config.display());
    println!("Try (each client sent as EDNS Client Subnet, as a resolver would):");
    for (what, subnet) in CLIENTS {
        println!("  # {what}");
        println!("  dig @{host} -p {port} www.example.com.cdn.test A +subnet={subnet}");
    }
    println!(
        "  # no ECS: the resolver's own address (loopback: unknown, sent to the fallback POP)"
    );
    println!("  dig @{host} -p {port} www.example.com.cdn.test AAAA");
    println!("  # over TCP, and the static records of the zone");
    println!("  dig @{host} -p {port} +tcp cdn.test SOA");
    println!("\nWhy a client gets its POP:");
    println!(
        "  curl 'http://{http}/v1/explain?client={}&name=www.example.com'",
        CLIENTS[3].1
    );
    println!("\nThe same decision as DNS over HTTPS (RFC 8484), on the control plane:");
    println!(
        "  curl -s 'http://{http}/dns-query?dns=AAABAAABAAAAAAAAA3d3dwdleGFtcGxlA2NvbQNjZG4EdGVzdAAAAQAB' | xxd | head"
    );
    if let Some(router) = router {
        println!("\nHTTP 302 routing (download.example.com); loopback is a trusted proxy here,");
        println!("so X-Forwarded-For plays a client in Tokyo:");
        println!(
            "  curl -si -H 'Host: download.example.com' -H 'X-Forwarded-For: 118.156.18.1' http://{router}/app.apk"
        );
    }
}

/// The part of the guide that goes through the cache nodes.
fn print_cdn_guide(
    dns: SocketAddr,
    control: SocketAddr,
    origin: SocketAddr,
    nodes: &[CacheNode],
    edges: &[edge::Edge],
) {
    let (host, port) = (dns.ip(), dns.port());
    println!("\nThe CDN: an origin at http://{origin} and a cache node per POP below,");
    println!("each on the address the world gives its POP, pushing health to Meridian:");
    for (node, edge) in nodes.iter().zip(edges) {
        println!("  {}  http://{}", edge.pop, node.addr());
    }
    let (tokyo, nrt) = (CLIENTS[0].1, nodes[0].addr());
    println!(
        "\nA client in Tokyo asks for {} and is sent to nrt's cache node:",
        edge::DOMAIN
    );
    println!(
        "  dig @{host} -p {port} {}.cdn.test A +subnet={tokyo} +short",
        edge::DOMAIN
    );
    println!("then fetches an object there twice: X-Cache says MISS, then HIT");
    println!("(the origin logs one request):");
    println!(
        "  curl -si -H 'Host: {}' http://{nrt}/hello.txt",
        edge::DOMAIN
    );
    println!(
        "  curl -si -H 'Host: {}' http://{nrt}/hello.txt",
        edge::DOMAIN
    );
    println!("The health and load the cache nodes push:");
    println!("  curl -s http://{control}/v1/pops");
    println!("\nCtrl-C stops the demo.");
}
