//! `meridian demo`: the reference world on loopback, on the sample geodata built
//! into the binary, so a newcomer sees routing work with one command and no files.
//! The embedded files are written to a fresh temporary directory and served from
//! there exactly as `meridian serve` would serve them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::config::{Config, Overlay};

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
pub async fn run(dns: SocketAddr, http: SocketAddr, router: SocketAddr) -> Result<(), DemoError> {
    let dir = DemoDir::create()?;
    let config_path = materialize(&dir.0)?;
    let overlay = Overlay {
        dns_listen: vec![dns],
        http_listen: Some(http),
        http_router_listen: Some(router),
        ..Overlay::default()
    };
    let config = Config::load(&config_path, &overlay)?;
    let server = crate::server::start(config).await?;
    server.log_listening();
    print_guide(
        server.dns_addrs()[0],
        server.http_addr().unwrap_or(http),
        server.http_router_addr(),
        &config_path,
    );
    server.run_until_signal().await;
    Ok(())
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
    println!("\nCtrl-C stops the demo.");
}
