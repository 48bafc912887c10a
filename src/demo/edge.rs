//! The demo's edge: cache nodes for a few POPs of the reference world, each on a
//! loopback address of its own, and the world config rewritten so that those
//! POPs' IPv4 addresses ARE those loopback addresses. A `dig` answer is then an
//! address `curl` can fetch from.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

use super::DemoError;
use crate::cache::{CacheConfig, CacheNode};

/// The POPs that get a cache node, in the order they take loopback addresses.
pub const POPS: [&str; 4] = ["nrt", "fra", "gru", "iad"];

/// The domain the cache nodes accelerate (the reference world's first).
pub const DOMAIN: &str = "www.example.com";

/// The health token of the reference world that may report for every POP.
const HEALTH_TOKEN: &str = "example-token";

/// Memory for each node's cached objects: the demo's objects are small.
const MEMORY_BUDGET: u64 = 64 * 1024 * 1024;

/// One cache node of the demo.
#[derive(Debug, Clone, Copy)]
pub struct Edge {
    /// The POP it serves.
    pub pop: &'static str,
    /// Where it listens; its IP is the POP's IPv4 address in the world.
    pub listen: SocketAddr,
}

/// The cache nodes: consecutive addresses from `first`, all on `port`.
pub fn plan(first: Ipv4Addr, port: u16) -> Result<Vec<Edge>, DemoError> {
    let base = u32::from(first);
    POPS.iter()
        .zip(0u32..)
        .map(|(pop, i)| {
            let ip = base
                .checked_add(i)
                .map(Ipv4Addr::from)
                .filter(|ip| ip.is_loopback())
                .ok_or_else(|| {
                    DemoError::Edge(format!(
                        "{first}: the {} cache node addresses from it must all be loopback (127.0.0.0/8)",
                        POPS.len()
                    ))
                })?;
            Ok(Edge {
                pop,
                listen: SocketAddr::from((ip, port)),
            })
        })
        .collect()
}

/// The world config text with each edge POP's IPv4 addresses replaced by its
/// node's address. IPv6 addresses stay, so AAAA answers keep their shape.
///
/// The reference world is a file we ship, so a line-wise edit of its
/// `addresses:` lines is exact; a POP not found is an error, not a silent
/// no-op.
pub fn localize(world: &str, edges: &[Edge]) -> Result<String, DemoError> {
    let mut out = String::with_capacity(world.len());
    let mut current: Option<&str> = None;
    let mut done = Vec::new();
    for line in world.lines() {
        let trimmed = line.trim_start();
        if let Some(id) = trimmed.strip_prefix("- id:") {
            current = Some(id.trim());
        }
        let edge = current.and_then(|id| edges.iter().find(|e| e.pop == id));
        match (edge, trimmed.strip_prefix("addresses:")) {
            (Some(edge), Some(list)) if !done.contains(&edge.pop) => {
                let indent = &line[..line.len() - trimmed.len()];
                let mut addresses = vec![edge.listen.ip().to_string()];
                addresses.extend(
                    list.trim()
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .split(',')
                        .map(str::trim)
                        .filter(|a| a.contains(':'))
                        .map(str::to_string),
                );
                out.push_str(&format!("{indent}addresses: [{}]\n", addresses.join(", ")));
                done.push(edge.pop);
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    match edges.iter().find(|e| !done.contains(&e.pop)) {
        Some(missing) => Err(DemoError::Edge(format!(
            "the reference world has no addresses for POP `{}`",
            missing.pop
        ))),
        None => Ok(out),
    }
}

/// A cache node's config file, as an operator would write it.
pub fn node_yaml(edge: &Edge, origin: SocketAddr, control: SocketAddr) -> String {
    format!(
        "version: 1
listen: \"{listen}\"
pop: {pop}
memory-budget: {MEMORY_BUDGET}
domains:
  - name: {DOMAIN}
    origins:
      - {{ host: \"{origin_ip}\", port: {origin_port} }}
meridian:
  health-urls: [\"http://{control}/v1/health\"]
  token: {HEALTH_TOKEN}
  interval-seconds: 1
",
        listen = edge.listen,
        pop = edge.pop,
        origin_ip = origin.ip(),
        origin_port = origin.port(),
    )
}

/// Starts one cache node per edge, pushing health to the control plane at
/// `control`; each node's config is also written to `dir` for reference.
pub async fn start(
    edges: &[Edge],
    origin: SocketAddr,
    control: SocketAddr,
    dir: &Path,
) -> Result<Vec<CacheNode>, DemoError> {
    let mut nodes = Vec::with_capacity(edges.len());
    for edge in edges {
        let path = dir.join(format!("cache-{}.yaml", edge.pop));
        let text = node_yaml(edge, origin, control);
        std::fs::write(&path, &text).map_err(|source| DemoError::Write {
            path: path.clone(),
            source,
        })?;
        let config = CacheConfig::parse(&text, &path)?;
        let node = crate::cache::start(config)
            .await
            .map_err(|source| DemoError::Listen {
                what: format!("the {} cache node", edge.pop),
                addr: edge.listen,
                source,
            })?;
        nodes.push(node);
    }
    Ok(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WORLD: &str = include_str!("../../examples/world/meridian.yaml");

    #[test]
    fn localize_rewrites_exactly_the_edge_pops() {
        let edges = plan(Ipv4Addr::new(127, 0, 0, 11), 8081).expect("plan");
        let text = localize(WORLD, &edges).expect("localize");
        assert!(text.contains("    addresses: [127.0.0.11, \"2001:db8:7::1\"]\n"));
        assert!(text.contains("    addresses: [127.0.0.14, \"2001:db8:1::1\"]\n"));
        // Others untouched, and nothing else changed.
        assert!(text.contains("    addresses: [192.0.2.2, 198.51.100.2, \"2001:db8:2::1\"]\n"));
        assert_eq!(text.lines().count(), WORLD.lines().count());
        let changed = text
            .lines()
            .zip(WORLD.lines())
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(changed, POPS.len());
    }

    #[test]
    fn localize_refuses_a_world_without_an_edge_pop() {
        let edges = plan(Ipv4Addr::new(127, 0, 0, 11), 8081).expect("plan");
        let world = WORLD.replace("- id: gru", "- id: xyz");
        let error = localize(&world, &edges).expect_err("gru is missing");
        assert!(error.to_string().contains("`gru`"), "{error}");
    }

    #[test]
    fn plan_stays_on_loopback() {
        assert!(plan(Ipv4Addr::new(127, 255, 255, 254), 80).is_err());
        assert!(plan(Ipv4Addr::new(10, 0, 0, 1), 80).is_err());
        let edges = plan(Ipv4Addr::new(127, 1, 2, 3), 80).expect("plan");
        assert_eq!(edges[3].listen, "127.1.2.6:80".parse().unwrap());
    }

    #[test]
    fn node_configs_parse() {
        for edge in plan(Ipv4Addr::new(127, 0, 0, 11), 8081).expect("plan") {
            let text = node_yaml(
                &edge,
                "127.0.0.1:9000".parse().unwrap(),
                "127.0.0.1:8053".parse().unwrap(),
            );
            let config = CacheConfig::parse(&text, Path::new("demo.yaml")).expect("parses");
            assert_eq!(config.pop, edge.pop);
            assert_eq!(config.listen, edge.listen);
        }
    }
}
