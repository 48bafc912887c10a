//! Answering one A query with ECS for a geo-routed name, parse to bytes out: on the
//! UDP fast path (pre-encoded records patched per query) and on the full path
//! (`resolve`, then hickory-proto's encoder). The decision is the same on both,
//! so the difference is the cost of the full path's message building and encoding.
//!
//! `cargo bench --bench encode`

#[path = "common/mod.rs"]
mod common;

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{Criterion, criterion_group, criterion_main};
use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{Name, RecordType};
use meridian::dns::encode::{encode, udp_limit};
use meridian::dns::fast::FastPath;
use meridian::dns::resolve::resolve;
use meridian::dns::wire;
use meridian::metrics::queries::Trace;

/// An A query for the reference world's geo-routed name, ECS /24 (a Frankfurt
/// network in the real databases).
fn packet() -> Vec<u8> {
    let mut message = Message::query();
    message.metadata.id = 0x4242;
    message.add_query(Query::query(
        Name::from_ascii("www.example.com.cdn.test.").expect("name"),
        RecordType::A,
    ));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    edns.options_mut()
        .insert(EdnsOption::Subnet(ClientSubnet::new(
            IpAddr::V4(Ipv4Addr::new(185, 232, 23, 0)),
            24,
            0,
        )));
    message.set_edns(edns);
    message.to_vec().expect("encodes")
}

fn answer(c: &mut Criterion) {
    let (geo, kind) = common::geo();
    let snapshot = common::snapshot(26, &geo);
    let packet = packet();
    let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
    let mut out = Vec::with_capacity(1500);
    let mut group = c.benchmark_group(format!("answer-{kind}-geodata"));

    let mut fast = FastPath::new();
    group.bench_function("fast-path", |b| {
        b.iter(|| {
            let query = wire::parse(black_box(&packet)).expect("parses");
            let mut trace = Trace::default();
            assert!(fast.answer(&snapshot, &query, source, &mut trace, &mut out));
            black_box(out.len())
        })
    });
    group.bench_function("full-path", |b| {
        b.iter(|| {
            let query = wire::parse(black_box(&packet)).expect("parses");
            let mut trace = Trace::default();
            let response = resolve(&snapshot, &query, source, &mut trace);
            let limit = udp_limit(
                snapshot.config.dns.max_udp_payload,
                query.edns.map(|e| e.udp_size),
            );
            encode(&response, limit, &mut out).expect("encodes");
            black_box(out.len())
        })
    });
    group.finish();
}

criterion_group!(benches, answer);
criterion_main!(benches);
