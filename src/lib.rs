//! Meridian: an authoritative GeoDNS server that steers each client of a CDN to the
//! point of presence (POP) that suits it best.
//!
//! # Data flow
//!
//! A query arrives on UDP (`dns::udp`, a dedicated loop per socket) or TCP
//! (`dns::tcp`, hickory-server). `dns::wire` parses the header, the question and the
//! EDNS options, ECS included, strictly enough to pick the right rcode for anything
//! malformed. `dns::resolve` answers from one immutable [`snapshot::Snapshot`]:
//! static records from the zone files (`zone`), and for an accelerated name a
//! [`routing::Decision`]. The decision locates the client (`geo`: the ECS address,
//! else the resolver's), scores every eligible POP on distance and ISP match
//! (`routing`), and says how far the answer may be cached (the ECS scope). The
//! answer is written by `dns::encode`; on UDP the common case (one A/AAAA question
//! for an accelerated name) is written straight from pre-built records by
//! `dns::fast`, and every other query takes the full path through hickory-proto.
//!
//! The snapshot (validated `config`, zones, geodata and the routing tables) is
//! built off the answer path and published through one `ArcSwap`, so the answer
//! path never blocks, allocates little and does no I/O. `http` is the control
//! plane: `explain` and, later, health intake and metrics.

pub mod cli;
pub mod config;
pub mod demo;
pub mod dns;
pub mod explain;
pub mod geo;
pub mod http;
pub mod metrics;
pub mod routing;
pub mod server;
pub mod snapshot;
pub mod zone;
