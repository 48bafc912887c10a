//! The UDP fast path: the common query (one A or AAAA question for an accelerated
//! name, plain QUERY, class IN, EDNS version 0 or none) answered by copying bytes.
//!
//! The response is the query's header and question, the answer records from tables
//! built once per snapshot (one pre-encoded block of records per POP and family,
//! owner a compression pointer to the question), the TTL patched in, and our OPT
//! with the ECS scope. No `Message`, no `Name`, no allocation. Anything else, or
//! anything this path is not sure about (NODATA, a response that would need
//! truncation, a query with TC set), is left to the full path, which gives the same
//! answer for everything this path handles: the tests below compare the two.

use std::net::IpAddr;
use std::sync::{Arc, Weak};

use crate::config::Pop;
use crate::metrics::queries::Trace;
use crate::routing::Family;
use crate::snapshot::Snapshot;

use super::encode::udp_limit;
use super::resolve::{address_cap, answer_pops, client};
use super::wire::{self, Query};

/// Owner (pointer to offset 12, the question name), type, class, TTL, RDLENGTH.
const RECORD_FIXED_LEN: usize = 2 + 2 + 2 + 4 + 2;
/// Offset of the TTL within a record.
const TTL_OFFSET: usize = 6;
/// An A record with a compressed owner.
const A_RECORD_LEN: usize = RECORD_FIXED_LEN + 4;
/// An AAAA record with a compressed owner.
const AAAA_RECORD_LEN: usize = RECORD_FIXED_LEN + 16;
/// OPT record without options: root owner, type, class, TTL, RDLENGTH.
const OPT_FIXED_LEN: usize = 1 + 2 + 2 + 4 + 2;
/// Client Subnet option without its address: code, length, family, source, scope.
const ECS_FIXED_LEN: usize = 2 + 2 + 2 + 1 + 1;
/// Offset of the question in a message: the header's length. Fits a compression
/// pointer (0xC000 | 12).
const QUESTION_OFFSET: u16 = wire::HEADER_LEN as u16;

/// One worker's fast-path state: the record tables of the snapshot it last served.
#[derive(Debug, Default)]
pub struct FastPath {
    tables: Option<Tables>,
}

/// Pre-encoded answer records, valid for one snapshot.
#[derive(Debug)]
struct Tables {
    /// Which snapshot: compared by address. A `Weak` keeps the allocation, so the
    /// address cannot be reused by a later snapshot, without keeping the snapshot's
    /// contents alive: the worker must not be the one that frees a replaced
    /// snapshot (the reloader does, off the answer path).
    snapshot: Weak<Snapshot>,
    /// Indexed by `PopId`.
    pops: Vec<PopRecords>,
}

/// A POP's addresses as answer records, TTL zero, in configured order.
#[derive(Debug)]
struct PopRecords {
    a: Box<[u8]>,
    aaaa: Box<[u8]>,
}

impl PopRecords {
    fn new(pop: &Pop) -> Self {
        let mut a = Vec::with_capacity(pop.ipv4.len() * A_RECORD_LEN);
        for addr in &pop.ipv4 {
            push_record_head(&mut a, wire::TYPE_A, 4);
            a.extend_from_slice(&addr.octets());
        }
        let mut aaaa = Vec::with_capacity(pop.ipv6.len() * AAAA_RECORD_LEN);
        for addr in &pop.ipv6 {
            push_record_head(&mut aaaa, wire::TYPE_AAAA, 16);
            aaaa.extend_from_slice(&addr.octets());
        }
        Self {
            a: a.into_boxed_slice(),
            aaaa: aaaa.into_boxed_slice(),
        }
    }

    /// The first `cap` records of a family, and the length of one.
    fn records(&self, family: Family, cap: usize) -> (&[u8], usize) {
        let (block, len) = match family {
            Family::V4 => (&self.a, A_RECORD_LEN),
            Family::V6 => (&self.aaaa, AAAA_RECORD_LEN),
        };
        let count = (block.len() / len).min(cap);
        (&block[..count * len], len)
    }
}

fn push_record_head(out: &mut Vec<u8>, rtype: u16, rdlength: u16) {
    out.extend_from_slice(&(0xC000 | QUESTION_OFFSET).to_be_bytes());
    out.extend_from_slice(&rtype.to_be_bytes());
    out.extend_from_slice(&wire::CLASS_IN.to_be_bytes());
    out.extend_from_slice(&0_u32.to_be_bytes());
    out.extend_from_slice(&rdlength.to_be_bytes());
}

impl Tables {
    fn new(snapshot: &Arc<Snapshot>) -> Self {
        Self {
            snapshot: Arc::downgrade(snapshot),
            pops: snapshot.config.pops.iter().map(PopRecords::new).collect(),
        }
    }
}

impl FastPath {
    /// A fast path with no tables yet; they are built for the first snapshot served.
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes the response to `query` into `out` and returns true, or returns false
    /// (leaving `out` unspecified) if the full path must answer. The decision is
    /// noted in `trace`.
    pub fn answer(
        &mut self,
        snapshot: &Arc<Snapshot>,
        query: &Query<'_>,
        source: IpAddr,
        trace: &mut Trace,
        out: &mut Vec<u8>,
    ) -> bool {
        let header = &query.header;
        let question = &query.question;
        if header.opcode != 0 || header.truncated || question.qclass != wire::CLASS_IN {
            return false;
        }
        let family = match question.qtype {
            wire::TYPE_A => Family::V4,
            wire::TYPE_AAAA => Family::V6,
            _ => return false,
        };
        if query.edns.is_some_and(|e| e.version != 0) {
            return false;
        }
        let Some(id) = snapshot.domain_by_wire(question.lower.as_bytes()) else {
            return false;
        };
        let subnet = query.edns.and_then(|e| e.client_subnet);
        let decision = trace.decide(
            snapshot,
            id,
            family,
            &client(snapshot, subnet.as_ref(), source),
        );
        let domain = snapshot.domain(id);
        let tables = self.tables_for(snapshot);

        let cap = address_cap(domain);
        let mut blocks: [(&[u8], usize); 2] = [(&[], A_RECORD_LEN); 2];
        for (slot, pop) in blocks.iter_mut().zip(answer_pops(domain, &decision)) {
            if let Some(records) = pop.and_then(|pop| tables.pops.get(pop.index())) {
                *slot = records.records(family, cap);
            }
        }
        let answer_len: usize = blocks.iter().map(|(block, _)| block.len()).sum();
        let answer_count: usize = blocks.iter().map(|(block, len)| block.len() / len).sum();
        if answer_count == 0 {
            return false;
        }
        let ecs_len = subnet.map_or(0, |s| ECS_FIXED_LEN + s.address_len());
        let opt_len = query.edns.map_or(0, |_| OPT_FIXED_LEN + ecs_len);
        let size = wire::HEADER_LEN + question.entry.len() + answer_len + opt_len;
        let limit = udp_limit(
            snapshot.config.dns.max_udp_payload,
            query.edns.map(|e| e.udp_size),
        );
        if size > usize::from(limit) {
            return false;
        }
        let Ok(answer_count) = u16::try_from(answer_count) else {
            return false;
        };

        out.clear();
        out.extend_from_slice(&header.id.to_be_bytes());
        // QR, OPCODE 0, AA, RD as asked; RA, Z and AD clear, CD as asked, NOERROR.
        out.push(0x80 | 0x04 | u8::from(header.recursion_desired));
        out.push(if header.checking_disabled { 0x10 } else { 0 });
        out.extend_from_slice(&1_u16.to_be_bytes());
        out.extend_from_slice(&answer_count.to_be_bytes());
        out.extend_from_slice(&0_u16.to_be_bytes());
        out.extend_from_slice(&u16::from(query.edns.is_some()).to_be_bytes());
        out.extend_from_slice(question.entry);
        let ttl = decision.ttl.to_be_bytes();
        for (block, len) in blocks {
            let start = out.len();
            out.extend_from_slice(block);
            for record in out[start..].chunks_exact_mut(len) {
                record[TTL_OFFSET..TTL_OFFSET + 4].copy_from_slice(&ttl);
            }
        }
        if let Some(edns) = &query.edns {
            out.push(0);
            out.extend_from_slice(&wire::TYPE_OPT.to_be_bytes());
            out.extend_from_slice(&snapshot.config.dns.max_udp_payload.to_be_bytes());
            // Extended rcode 0, version 0, DO as asked.
            out.extend_from_slice(&[0, 0, if edns.dnssec_ok { 0x80 } else { 0 }, 0]);
            out.extend_from_slice(&(ecs_len as u16).to_be_bytes());
            if let Some(subnet) = &subnet {
                let address_len = subnet.address_len();
                out.extend_from_slice(&wire::OPTION_ECS.to_be_bytes());
                out.extend_from_slice(&((ECS_FIXED_LEN - 4 + address_len) as u16).to_be_bytes());
                out.extend_from_slice(&subnet.family().to_be_bytes());
                out.push(subnet.source_prefix);
                out.push(decision.scope);
                match subnet.addr {
                    IpAddr::V4(a) => out.extend_from_slice(&a.octets()[..address_len]),
                    IpAddr::V6(a) => out.extend_from_slice(&a.octets()[..address_len]),
                }
            }
        }
        debug_assert_eq!(out.len(), size);
        true
    }

    /// The tables for `snapshot`, rebuilt if the snapshot changed since last time.
    fn tables_for(&mut self, snapshot: &Arc<Snapshot>) -> &Tables {
        let current = self
            .tables
            .as_ref()
            .is_some_and(|t| std::ptr::eq(t.snapshot.as_ptr(), Arc::as_ptr(snapshot)));
        if !current {
            self.tables = Some(Tables::new(snapshot));
        }
        self.tables.get_or_insert_with(|| Tables::new(snapshot))
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use hickory_proto::op::{Edns, Message, Query as HickoryQuery};
    use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
    use hickory_proto::rr::{Name, RecordType};

    use super::*;
    use crate::dns::encode::encode;
    use crate::dns::resolve::resolve;
    use crate::dns::testing::snapshot;

    /// A query as a resolver would send it.
    fn query(
        name: &str,
        qtype: RecordType,
        edns: Option<(u16, bool, Option<ClientSubnet>)>,
    ) -> Vec<u8> {
        let mut message = Message::query();
        message.metadata.id = 4242;
        message.metadata.recursion_desired = name.len().is_multiple_of(2);
        message.metadata.checking_disabled = name.len().is_multiple_of(3);
        message.add_query(HickoryQuery::query(
            Name::from_ascii(name).expect("name"),
            qtype,
        ));
        if let Some((size, dnssec_ok, subnet)) = edns {
            let mut edns = Edns::new();
            edns.set_max_payload(size).set_dnssec_ok(dnssec_ok);
            if let Some(subnet) = subnet {
                edns.options_mut().insert(EdnsOption::Subnet(subnet));
            }
            message.set_edns(edns);
        }
        message.to_vec().expect("encodes")
    }

    fn full_path(snapshot: &Snapshot, packet: &[u8], source: IpAddr) -> Vec<u8> {
        let query = wire::parse(packet).expect("parses");
        let response = resolve(snapshot, &query, source, &mut Trace::default());
        let limit = udp_limit(
            snapshot.config.dns.max_udp_payload,
            query.edns.map(|e| e.udp_size),
        );
        let mut out = Vec::new();
        encode(&response, limit, &mut out).expect("encodes");
        out
    }

    #[test]
    fn fast_and_full_paths_agree() {
        let (_dir, snapshot) = snapshot();
        let mut fast = FastPath::new();
        let names = [
            "www.example.com.cdn.test.",
            "WwW.ExAmPlE.CoM.cdn.test.",
            "two.example.com.cdn.test.",
            "a.example.org.cdn.test.",
            "A.b.Example.org.cdn.test.",
        ];
        let subnets = [
            None,
            Some(ClientSubnet::new(
                IpAddr::V4(Ipv4Addr::new(10, 2, 0, 0)),
                16,
                0,
            )),
            Some(ClientSubnet::new(
                IpAddr::V4(Ipv4Addr::new(10, 1, 2, 0)),
                24,
                0,
            )),
            Some(ClientSubnet::new(
                IpAddr::V4(Ipv4Addr::new(10, 1, 128, 0)),
                17,
                0,
            )),
            Some(ClientSubnet::new(
                IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)),
                32,
                5,
            )),
            Some(ClientSubnet::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0, 0)),
            Some(ClientSubnet::new(
                IpAddr::V6("2001:db8:ff::".parse::<Ipv6Addr>().expect("v6")),
                56,
                0,
            )),
            Some(ClientSubnet::new(
                IpAddr::V6("2001:db8:fe::".parse::<Ipv6Addr>().expect("v6")),
                48,
                0,
            )),
            // Located by the geo databases: Tokyo on isp-y, Frankfurt with and
            // without isp-x, and a miss next to them.
            Some(ClientSubnet::new(
                IpAddr::V4(Ipv4Addr::new(100, 64, 1, 0)),
                24,
                0,
            )),
            Some(ClientSubnet::new(
                IpAddr::V4(Ipv4Addr::new(100, 65, 2, 0)),
                24,
                0,
            )),
            Some(ClientSubnet::new(
                IpAddr::V4(Ipv4Addr::new(100, 65, 200, 0)),
                22,
                0,
            )),
            Some(ClientSubnet::new(
                IpAddr::V4(Ipv4Addr::new(100, 66, 0, 0)),
                15,
                0,
            )),
            Some(ClientSubnet::new(
                IpAddr::V6("2001:db8:aa00:100::".parse::<Ipv6Addr>().expect("v6")),
                56,
                0,
            )),
        ];
        let sources: [IpAddr; 2] = [
            IpAddr::V4(Ipv4Addr::new(10, 1, 9, 9)),
            IpAddr::V6("2001:db8:ff::53".parse().expect("v6")),
        ];
        let mut handled = 0;
        let mut answers = std::collections::HashSet::new();
        let mut scopes = std::collections::BTreeSet::new();
        for name in names {
            for qtype in [RecordType::A, RecordType::AAAA] {
                for source in sources {
                    let mut variants =
                        vec![None, Some((512, false, None)), Some((4096, true, None))];
                    variants.extend(subnets.iter().map(|s| Some((1232, false, *s))));
                    for edns in variants {
                        let packet = query(name, qtype, edns);
                        let parsed = wire::parse(&packet).expect("parses");
                        let mut out = Vec::new();
                        let expected = full_path(&snapshot, &packet, source);
                        if !fast.answer(&snapshot, &parsed, source, &mut Trace::default(), &mut out)
                        {
                            continue;
                        }
                        handled += 1;
                        let fast_message = Message::from_vec(&out).expect("fast path decodes");
                        let full_message = Message::from_vec(&expected).expect("full path decodes");
                        assert_eq!(
                            fast_message, full_message,
                            "{name} {qtype} {edns:?} from {source}"
                        );
                        assert_eq!(out, expected, "{name} {qtype} {edns:?}: identical bytes");
                        let scope = fast_message
                            .edns
                            .as_ref()
                            .and_then(|e| e.option(hickory_proto::rr::rdata::opt::EdnsCode::Subnet))
                            .map(|o| match o {
                                EdnsOption::Subnet(s) => s.scope_prefix(),
                                _ => 0,
                            });
                        answers.insert(format!("{:?}", fast_message.answers));
                        scopes.insert(scope);
                    }
                }
            }
        }
        // Every combination here has an answer the fast path can write, and they
        // cover many decisions and scopes.
        assert_eq!(handled, names.len() * 2 * 2 * (3 + subnets.len()));
        assert!(answers.len() >= 10, "{} distinct answers", answers.len());
        assert!(scopes.len() >= 5, "scopes seen: {scopes:?}");
    }

    /// The same with live health in play: a POP shedding half its clients, one
    /// down, one degraded. Both paths must move the same subnets and give the same
    /// shortened TTLs.
    #[test]
    fn fast_and_full_paths_agree_while_shedding() {
        use crate::health::{LiveView, PopLive};
        let (_dir, snapshot) = snapshot();
        let by_id = |id: &str| snapshot.config.pop_by_name(id).expect("pop").index();
        let mut pops = vec![PopLive::default(); snapshot.config.pops.len()];
        pops[by_id("fra")] = PopLive {
            shed: 0.5,
            degraded: true,
            ..PopLive::default()
        };
        pops[by_id("nrt")].usable = false;
        pops[by_id("ams")].degraded = true;
        snapshot.live.store(Arc::new(LiveView::new(pops)));

        let mut fast = FastPath::new();
        let source = IpAddr::V4(Ipv4Addr::new(10, 1, 9, 9));
        let mut subnets: Vec<Option<ClientSubnet>> = vec![None];
        for third in (16..=255).step_by(3) {
            subnets.push(Some(ClientSubnet::new(
                IpAddr::V4(Ipv4Addr::new(100, 65, third, 0)),
                24,
                0,
            )));
        }
        for (addr, prefix) in [
            ([100, 64, 1, 0], 24),
            ([100, 65, 1, 0], 24),
            ([10, 9, 0, 0], 16),
        ] {
            subnets.push(Some(ClientSubnet::new(
                IpAddr::V4(Ipv4Addr::from(addr)),
                prefix,
                0,
            )));
        }
        let (mut moved, mut stayed) = (0, 0);
        let mut ttls = std::collections::BTreeSet::new();
        for name in [
            "www.example.com.cdn.test.",
            "two.example.com.cdn.test.",
            "a.example.org.cdn.test.",
        ] {
            for qtype in [RecordType::A, RecordType::AAAA] {
                for subnet in &subnets {
                    let packet = query(name, qtype, Some((1232, false, *subnet)));
                    let parsed = wire::parse(&packet).expect("parses");
                    let mut trace = Trace::default();
                    let expected = {
                        let response = resolve(&snapshot, &parsed, source, &mut trace);
                        let mut out = Vec::new();
                        encode(&response, 1232, &mut out).expect("encodes");
                        out
                    };
                    let mut out = Vec::new();
                    assert!(
                        fast.answer(&snapshot, &parsed, source, &mut Trace::default(), &mut out),
                        "{name} {qtype} {subnet:?}"
                    );
                    assert_eq!(out, expected, "{name} {qtype} {subnet:?}: identical bytes");
                    match trace.decision.and_then(|d| d.shed) {
                        Some(shed) if shed.moved => moved += 1,
                        Some(_) => stayed += 1,
                        None => {}
                    }
                    let message = Message::from_vec(&out).expect("decodes");
                    ttls.extend(message.answers.iter().map(|r| r.ttl));
                }
            }
        }
        assert!(moved > 20 && stayed > 20, "moved {moved}, stayed {stayed}");
        // The degraded TTL, and the domains' own where no degraded POP answers.
        assert!(
            ttls.contains(&crate::config::DEFAULT_DEGRADED_TTL),
            "{ttls:?}"
        );
        assert!(
            ttls.iter()
                .any(|t| *t > crate::config::DEFAULT_DEGRADED_TTL),
            "{ttls:?}"
        );
    }

    #[test]
    fn declines_what_it_does_not_handle() {
        let (_dir, snapshot) = snapshot();
        let mut fast = FastPath::new();
        let source = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 99));
        let mut out = Vec::new();
        let mut declines = |packet: Vec<u8>| {
            let parsed = wire::parse(&packet).expect("parses");
            assert!(!fast.answer(&snapshot, &parsed, source, &mut Trace::default(), &mut out));
        };
        // Not A/AAAA, not accelerated, a static name.
        declines(query("www.example.com.cdn.test.", RecordType::TXT, None));
        declines(query("www.example.com.cdn.test.", RecordType::ANY, None));
        declines(query("ns1.cdn.test.", RecordType::A, None));
        declines(query("nowhere.test.", RecordType::A, None));
        // NODATA: no mainland-China POP has IPv6.
        declines(query("cn.example.com.cdn.test.", RecordType::AAAA, None));
        // An answer that does not fit the requester's 512 octets.
        declines(query(
            "many.example.com.cdn.test.",
            RecordType::AAAA,
            Some((512, false, None)),
        ));
        let mut packet = query("www.example.com.cdn.test.", RecordType::A, None);
        packet[2] |= 0x02; // TC in a query
        declines(packet);
        let mut packet = query("www.example.com.cdn.test.", RecordType::A, None);
        packet[2] |= 4 << 3; // NOTIFY
        declines(packet);
    }

    /// Tables are rebuilt for a new snapshot, and never keep one alive: a UDP worker
    /// must not be left to free a replaced snapshot.
    #[test]
    fn tables_follow_the_snapshot() {
        let (_dir, first) = snapshot();
        let (_dir2, second) = snapshot();
        let mut fast = FastPath::new();
        let packet = query("www.example.com.cdn.test.", RecordType::A, None);
        let parsed = wire::parse(&packet).expect("parses");
        let source = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 99));
        let mut out = Vec::new();
        assert!(fast.answer(&first, &parsed, source, &mut Trace::default(), &mut out));
        assert!(
            fast.tables
                .as_ref()
                .is_some_and(|t| std::ptr::eq(t.snapshot.as_ptr(), Arc::as_ptr(&first)))
        );
        assert_eq!(Arc::strong_count(&first), 1);
        assert!(fast.answer(&second, &parsed, source, &mut Trace::default(), &mut out));
        assert!(
            fast.tables
                .as_ref()
                .is_some_and(|t| std::ptr::eq(t.snapshot.as_ptr(), Arc::as_ptr(&second)))
        );
        assert_eq!(Arc::strong_count(&second), 1);
    }
}
