//! Meridian: an authoritative GeoDNS server that steers each client of a CDN to the
//! point of presence (POP) that suits it best.
//!
//! # Data flow
//!
//! A query arrives on UDP (`dns::udp`, a dedicated loop per socket taking
//! datagrams in batches, `dns::batch`, and loading ahead the lines a batch's
//! range lookups will read) or TCP
//! (`dns::tcp`, hickory-server). `dns::wire` parses the header, the question and the
//! EDNS options, ECS included, strictly enough to pick the right rcode for anything
//! malformed. `dns::resolve` answers from one immutable [`snapshot::Snapshot`]:
//! static records from the zone files (`zone`), and for an accelerated name a
//! [`routing::Decision`]. The decision locates the client (`geo`: the ECS address,
//! else the resolver's; from tables compiled when the databases are opened,
//! `geo::table` and `geo::table6`; the few IPv6 subnets they leave out by walking
//! the trees, a UDP worker remembering recent walks in `geo::subnet_cache`), scores every eligible and usable POP on distance and ISP
//! match (in practice reading a ranking compiled per snapshot for the client's
//! address range, `routing::range_rankings`, or cached per City record,
//! `routing::cache`, and applying live health to it), sends a share of a loaded
//! POP's client subnets to the runner-up
//! (`routing`), and says how far and how long the answer may be cached (the ECS
//! scope, the TTL). The
//! answer is written by `dns::encode`; on UDP the common case (one A/AAAA question
//! for an accelerated name) is written straight from pre-built records by
//! `dns::fast`, and every other query takes the full path through hickory-proto.
//!
//! The snapshot (validated `config`, zones, geodata and the routing tables) is
//! built off the answer path and published through one `ArcSwap`, so the answer
//! path never blocks, allocates little and does no I/O. `http` is the control
//! plane: `explain`, health intake, `/metrics`, `/live` and `/ready`. Every answer
//! is counted (`metrics`): UDP workers in thread-local counters, flushed when a
//! scrape asks, so counting costs the answer path no shared cache line.
//!
//! The same engine answers two more ways in (`http`): DNS over HTTPS, whose
//! messages take the TCP path (`wire`, `resolve`, `encode`) with the HTTP client's
//! address as the resolver's, and the 302 router, which asks the snapshot for a
//! decision on the client's address and redirects to the POP (a cache node in it
//! chosen by rendezvous hashing of the path).
//!
//! Health in: POPs push reports to `POST /v1/health`, operators drain or force
//! POPs through the admin API. The `health` keeper, the one writer, turns them
//! into a small `LiveView` (per POP: usable, shed share, degraded) stored in the
//! current snapshot's own swap, so the answer path reads it with one atomic load
//! and never waits for the control plane.
//!
//! Reload: SIGHUP, or a change to the config, a zone file or a geo database
//! (`reload`, a file watcher), builds a whole new snapshot on a low-priority thread
//! (`background`), reusing unchanged geo databases; the health keeper fills its live
//! view, and one swap publishes it. The replaced snapshot is freed off the answer
//! path too. A snapshot that does not build changes nothing.

pub mod background;
pub mod cache;
pub mod cli;
pub mod config;
pub mod demo;
pub mod dns;
pub mod explain;
pub mod geo;
pub mod health;
pub mod http;
pub mod metrics;
pub mod reload;
pub mod routing;
pub mod server;
pub mod snapshot;
pub mod zone;
