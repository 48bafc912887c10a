//! The answer to a query, whatever the transport: rcode, flags, records and the EDNS
//! reply. UDP's full path and TCP encode this; the UDP fast path writes the same
//! answer for the common case directly, and a unit test holds the two together.
//!
//! Order of checks, each answered before the next is looked at: opcode (NOTIMP),
//! EDNS version (BADVERS), class (REFUSED), meta and transfer qtypes (FORMERR,
//! REFUSED), then the name: an accelerated domain is answered from a routing
//! decision, anything else from the zones, and a name in no zone is REFUSED.

use std::net::IpAddr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

use crate::config::{Domain, Pop, PopId};
use crate::metrics::queries::Trace;
use crate::routing::{Client, Decision, Family};
use crate::snapshot::{DomainId, Snapshot};
use crate::zone::Lookup;

use super::wire::{self, ClientSubnet, Header, Malformed, ParseError, Query, Question};

/// Most CNAMEs followed for one answer, as in common authoritative servers: enough
/// for any sane chain, and a bound on work for a looping one.
pub const MAX_CNAME_HOPS: usize = 8;

/// qtypes that exist only as meta-types or obsolete mailbox queries (RFC 6895
/// section 3.1: OPT, TKEY, TSIG, MAILB, MAILA and the reserved meta range).
fn is_meta_qtype(qtype: u16) -> bool {
    qtype == wire::TYPE_OPT || ((128..=254).contains(&qtype) && !is_transfer_qtype(qtype))
}

/// AXFR (252) and IXFR (251): Meridian does not transfer zones.
fn is_transfer_qtype(qtype: u16) -> bool {
    matches!(qtype, 251 | 252)
}

/// A response before encoding.
#[derive(Debug, Clone)]
pub struct Response<'q> {
    pub id: u16,
    pub opcode: u8,
    pub rcode: ResponseCode,
    pub authoritative: bool,
    pub recursion_desired: bool,
    pub checking_disabled: bool,
    /// The question to echo (as received, case preserved).
    pub question: Option<Question<'q>>,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub additionals: Vec<Record>,
    /// Present iff the query had an OPT record that could be read.
    pub edns: Option<EdnsReply>,
}

/// Our OPT record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdnsReply {
    /// Our UDP payload size.
    pub udp_size: u16,
    /// The requester's UDP payload size, which bounds a UDP response.
    pub requester_udp_size: u16,
    /// DO copied from the query.
    pub dnssec_ok: bool,
    /// The query's Client Subnet: family, source and address as received, scope ours.
    pub client_subnet: Option<ClientSubnet>,
}

impl<'q> Response<'q> {
    /// An empty NOERROR reply to `header`, with an OPT record iff the query had one.
    fn reply(
        snapshot: &Snapshot,
        header: &Header,
        question: Option<Question<'q>>,
        edns: Option<&wire::Edns>,
    ) -> Self {
        Self {
            id: header.id,
            opcode: header.opcode,
            rcode: ResponseCode::NoError,
            authoritative: false,
            recursion_desired: header.recursion_desired,
            checking_disabled: header.checking_disabled,
            question,
            answers: Vec::new(),
            authorities: Vec::new(),
            additionals: Vec::new(),
            edns: edns.map(|e| EdnsReply {
                udp_size: snapshot.config.dns.max_udp_payload,
                requester_udp_size: e.udp_size,
                dnssec_ok: e.dnssec_ok,
                client_subnet: e.client_subnet.map(|subnet| ClientSubnet {
                    scope_prefix: 0,
                    ..subnet
                }),
            }),
        }
    }

    /// This reply as SERVFAIL with no records: what goes out when it cannot be encoded.
    pub fn servfail(&self) -> Self {
        Self {
            rcode: ResponseCode::ServFail,
            authoritative: false,
            answers: Vec::new(),
            authorities: Vec::new(),
            additionals: Vec::new(),
            ..*self
        }
    }

    /// Sets the ECS SCOPE PREFIX-LENGTH of the reply, if it carries ECS.
    fn set_scope(&mut self, scope: u8) {
        if let Some(subnet) = self.edns.as_mut().and_then(|e| e.client_subnet.as_mut()) {
            subnet.scope_prefix = scope;
        }
    }
}

/// Parses and answers a packet; None if it gets no response at all.
pub fn respond<'q>(
    snapshot: &Snapshot,
    packet: &'q [u8],
    source: IpAddr,
    trace: &mut Trace,
) -> Option<Response<'q>> {
    match wire::parse(packet) {
        Ok(query) => Some(resolve(snapshot, &query, source, trace)),
        Err(ParseError::Malformed(malformed)) => Some(reject(snapshot, &malformed)),
        Err(ParseError::Drop(_)) => None,
    }
}

/// The response to a query that could not be parsed: FORMERR (or NOTIMP for another
/// opcode), echoing the question and OPT if they were read. The Client Subnet is not
/// echoed: it may be what was wrong.
pub fn reject<'q>(snapshot: &Snapshot, malformed: &Malformed<'q>) -> Response<'q> {
    let mut response = Response::reply(
        snapshot,
        &malformed.header,
        malformed.question,
        malformed.edns.as_ref(),
    );
    response.rcode = malformed.rcode();
    if let Some(edns) = response.edns.as_mut() {
        edns.client_subnet = None;
    }
    response
}

/// Answers a parsed query. `source` is the address the query came from (the resolver);
/// the routing decision, if one is made, is noted in `trace`.
pub fn resolve<'q>(
    snapshot: &Snapshot,
    query: &Query<'q>,
    source: IpAddr,
    trace: &mut Trace,
) -> Response<'q> {
    let question = &query.question;
    let mut response = Response::reply(
        snapshot,
        &query.header,
        Some(*question),
        query.edns.as_ref(),
    );
    if query.header.opcode != 0 {
        response.rcode = ResponseCode::NotImp;
        return response;
    }
    if let Some(edns) = &query.edns
        && edns.version > 0
    {
        // RFC 6891 section 6.1.3: BADVERS, in an OPT of the version we do speak.
        response.rcode = ResponseCode::BADVERS;
        return response;
    }
    if question.qclass != wire::CLASS_IN {
        response.rcode = ResponseCode::Refused;
        return response;
    }
    if is_meta_qtype(question.qtype) {
        response.rcode = ResponseCode::FormErr;
        return response;
    }
    if is_transfer_qtype(question.qtype) {
        response.rcode = ResponseCode::Refused;
        return response;
    }
    let Ok(qname) = Name::read(&mut BinDecoder::new(question.name)) else {
        // The parser accepted it, so this cannot happen; answer as if malformed.
        response.rcode = ResponseCode::FormErr;
        return response;
    };
    let client = client(
        snapshot,
        query.edns.as_ref().and_then(|e| e.client_subnet.as_ref()),
        source,
    );
    let qtype = RecordType::from(question.qtype);

    if let Some(id) = snapshot.domain_by_wire(question.lower.as_bytes()) {
        response.authoritative = true;
        let (records, scope) = accelerated(snapshot, id, &qname, qtype, &client, trace);
        response.set_scope(scope);
        if records.is_empty() {
            add_negative_soa(snapshot, &qname, &mut response.authorities);
        }
        response.answers = records;
        return response;
    }
    let Some(zone) = snapshot.zone_for(&qname) else {
        response.rcode = ResponseCode::Refused;
        return response;
    };
    response.authoritative = true;
    match zone.lookup(&qname, qtype) {
        Lookup::Answer(records) => {
            response.answers = with_owner(records.into_owned(), &qname);
        }
        Lookup::Cname(record) => {
            let mut record = record.into_owned();
            record.name = qname.clone();
            let scope = chase(snapshot, record, qtype, &client, trace, &mut response);
            response.set_scope(scope);
        }
        Lookup::NoData => response.authorities.push(zone.negative_soa().clone()),
        Lookup::NxDomain => {
            response.rcode = ResponseCode::NXDomain;
            response.authorities.push(zone.negative_soa().clone());
        }
        Lookup::Delegation { ns, glue } => {
            // A referral: the child zone's servers are authoritative, not us.
            response.authoritative = false;
            response.authorities = ns.to_vec();
            response.additionals = glue;
        }
    }
    response
}

/// The client a decision is made for (see `Client::for_query`).
pub fn client(snapshot: &Snapshot, subnet: Option<&ClientSubnet>, source: IpAddr) -> Client {
    Client::for_query(
        subnet.map(|s| (s.addr, s.source_prefix)),
        source,
        &snapshot.config.ecs,
    )
}

/// The addresses a decision answers with, in order: the first POP's, then the
/// second's when the domain asks for two, each capped at `max_addresses`.
pub fn decision_addresses<'s>(
    snapshot: &'s Snapshot,
    domain: &'s Domain,
    decision: &Decision,
    family: Family,
) -> impl Iterator<Item = IpAddr> + 's {
    let cap = address_cap(domain);
    answer_pops(domain, decision)
        .into_iter()
        .flatten()
        .flat_map(move |id| pop_addresses(snapshot.config.pop(id), family).take(cap))
}

/// The POPs whose addresses answer: the first, and the runner-up if the domain asks
/// for two.
pub fn answer_pops(domain: &Domain, decision: &Decision) -> [Option<PopId>; 2] {
    let second = if domain.answer_pops >= 2 && decision.second != decision.first {
        decision.second
    } else {
        None
    };
    [decision.first, second]
}

/// Most addresses of one POP in an answer.
pub fn address_cap(domain: &Domain) -> usize {
    match domain.max_addresses {
        0 => usize::MAX,
        n => usize::from(n),
    }
}

fn pop_addresses(pop: &Pop, family: Family) -> impl Iterator<Item = IpAddr> + '_ {
    let (v4, v6) = match family {
        Family::V4 => (&pop.ipv4[..], &[][..]),
        Family::V6 => (&[][..], &pop.ipv6[..]),
    };
    let v4 = v4.iter().map(|a| IpAddr::V4(*a));
    v4.chain(v6.iter().map(|a| IpAddr::V6(*a)))
}

/// The records for an accelerated name and the ECS scope they hold for. A and AAAA
/// come from the decision; ANY gets the A records (RFC 8482 minimal ANY); any other
/// type has none (NODATA), the same for every client, so scope 0.
fn accelerated(
    snapshot: &Snapshot,
    id: DomainId,
    owner: &Name,
    qtype: RecordType,
    client: &Client,
    trace: &mut Trace,
) -> (Vec<Record>, u8) {
    let family = match qtype {
        RecordType::A | RecordType::ANY => Family::V4,
        RecordType::AAAA => Family::V6,
        _ => return (Vec::new(), 0),
    };
    let domain = snapshot.domain(id);
    let decision = trace.decide(snapshot, id, family, client);
    let records = decision_addresses(snapshot, domain, &decision, family)
        .map(|addr| {
            let data = match addr {
                IpAddr::V4(a) => RData::A(A(a)),
                IpAddr::V6(a) => RData::AAAA(AAAA(a)),
            };
            Record::from_rdata(owner.clone(), decision.ttl, data)
        })
        .collect();
    (records, decision.scope)
}

/// Follows a CNAME through our own data, accelerated names included, adding each
/// step to the answer. Returns the ECS scope of the final answer (non-zero only if
/// the chain ends at an accelerated name). The rcode and authority follow the last
/// name of the chain (RFC 6604, RFC 2308 section 2.1-2.2).
fn chase(
    snapshot: &Snapshot,
    first: Record,
    qtype: RecordType,
    client: &Client,
    trace: &mut Trace,
    response: &mut Response<'_>,
) -> u8 {
    let mut target = cname_target(&first);
    response.answers.push(first);
    // ANY at a CNAME is answered by the CNAME alone (the minimal answer).
    if qtype == RecordType::ANY {
        return 0;
    }
    for _ in 0..MAX_CNAME_HOPS {
        let Some(name) = target.take() else {
            return 0;
        };
        // Every name followed so far owns a CNAME in the answer: meeting one again
        // is a loop, and what is in the answer is all there is.
        if response.answers.iter().any(|r| r.name == name) {
            return 0;
        }
        if let Some(id) = snapshot.domain_for(&name) {
            let (records, scope) = accelerated(snapshot, id, &name, qtype, client, trace);
            if records.is_empty() {
                add_negative_soa(snapshot, &name, &mut response.authorities);
            }
            response.answers.extend(records);
            return scope;
        }
        // Out of our zones: the resolver follows the rest itself.
        let Some(zone) = snapshot.zone_for(&name) else {
            return 0;
        };
        match zone.lookup(&name, qtype) {
            Lookup::Answer(records) => response.answers.extend(records.into_owned()),
            Lookup::Cname(record) => {
                let record = record.into_owned();
                target = cname_target(&record);
                response.answers.push(record);
            }
            Lookup::NoData => response.authorities.push(zone.negative_soa().clone()),
            Lookup::NxDomain => {
                response.rcode = ResponseCode::NXDomain;
                response.authorities.push(zone.negative_soa().clone());
            }
            Lookup::Delegation { ns, glue } => {
                response.authorities.extend(ns.iter().cloned());
                response.additionals.extend(glue);
            }
        }
    }
    0
}

fn cname_target(record: &Record) -> Option<Name> {
    match &record.data {
        RData::CNAME(cname) => Some(cname.0.clone()),
        _ => None,
    }
}

/// The SOA that goes with NODATA for a name, from the zone holding it.
fn add_negative_soa(snapshot: &Snapshot, name: &Name, authorities: &mut Vec<Record>) {
    if let Some(zone) = snapshot.zone_for(name) {
        authorities.push(zone.negative_soa().clone());
    }
}

/// Gives records owned by the query name the name's case as asked.
fn with_owner(mut records: Vec<Record>, qname: &Name) -> Vec<Record> {
    for record in &mut records {
        if record.name == *qname {
            record.name = qname.clone();
        }
    }
    records
}
