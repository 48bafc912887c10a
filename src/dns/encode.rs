//! Turns a [`Response`] into wire bytes with hickory-proto's encoder (the "full
//! path"), applying the UDP size limit.
//!
//! A UDP response may be as large as the requester's EDNS payload size allows
//! (RFC 6891 section 6.2.5), capped by our own `dns.max-udp-payload`, and 512 octets
//! without EDNS (RFC 1035 section 4.2.1). One that does not fit is sent as header,
//! question and OPT only, with TC set, so the resolver retries over TCP (RFC 2181
//! section 9 allows partial RRsets, but an empty truncated answer is never mistaken
//! for a complete one).

use hickory_proto::ProtoError;
use hickory_proto::op::{Edns, MessageType, Metadata, OpCode, Query, emit_message_parts};
use hickory_proto::rr::rdata::opt::{self, EdnsOption};
use hickory_proto::rr::{DNSClass, Name, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncoder, DecodeError};

use super::resolve::{EdnsReply, Response};
use super::wire::Question;

/// The UDP payload every DNS implementation accepts (RFC 1035 section 4.2.1).
pub const MIN_UDP_PAYLOAD: u16 = 512;

/// Why a response could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("question name: {0}")]
    Question(#[from] DecodeError),
    #[error("message: {0}")]
    Message(#[from] ProtoError),
}

/// Largest UDP response for a query: min(ours, max(512, the requester's EDNS
/// payload size)) with EDNS, 512 without.
pub fn udp_limit(max_udp_payload: u16, requester: Option<u16>) -> u16 {
    match requester {
        Some(size) => size.max(MIN_UDP_PAYLOAD).min(max_udp_payload),
        None => MIN_UDP_PAYLOAD,
    }
}

/// Encodes `response` into `out` (cleared first); if it exceeds `limit` octets, the
/// truncated form instead. TCP passes `u16::MAX`.
pub fn encode(response: &Response<'_>, limit: u16, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let mut metadata = metadata(response);
    let query = response.question.as_ref().map(query).transpose()?;
    let edns = response.edns.as_ref().map(edns);
    emit(
        &metadata,
        query.as_ref(),
        &response.answers,
        &response.authorities,
        &response.additionals,
        edns.as_ref(),
        out,
    )?;
    if out.len() > usize::from(limit) {
        metadata.truncation = true;
        emit(&metadata, query.as_ref(), &[], &[], &[], edns.as_ref(), out)?;
    }
    Ok(())
}

/// Encodes `response`, or SERVFAIL if it cannot be (which would be a bug in the zone
/// data or here); false if not even that could be encoded.
pub fn encode_or_servfail(response: &Response<'_>, limit: u16, out: &mut Vec<u8>) -> bool {
    match encode(response, limit, out) {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(%error, id = response.id, "cannot encode response; answering SERVFAIL");
            encode(&response.servfail(), limit, out).is_ok()
        }
    }
}

/// The response header, counts aside.
pub fn metadata(response: &Response<'_>) -> Metadata {
    let mut metadata = Metadata::new(
        response.id,
        MessageType::Response,
        OpCode::from_u8(response.opcode),
    );
    metadata.authoritative = response.authoritative;
    metadata.recursion_desired = response.recursion_desired;
    metadata.checking_disabled = response.checking_disabled;
    metadata.response_code = response.rcode;
    metadata
}

/// Our OPT record as hickory-proto's `Edns` (the extended rcode is filled in when
/// the message is emitted).
pub fn edns(reply: &EdnsReply) -> Edns {
    let mut edns = Edns::new();
    edns.set_max_payload(reply.udp_size)
        .set_version(0)
        .set_dnssec_ok(reply.dnssec_ok);
    if let Some(subnet) = &reply.client_subnet {
        edns.options_mut()
            .insert(EdnsOption::Subnet(opt::ClientSubnet::new(
                subnet.addr,
                subnet.source_prefix,
                subnet.scope_prefix,
            )));
    }
    edns
}

/// The question as hickory-proto's `Query`, name case preserved.
pub fn query(question: &Question<'_>) -> Result<Query, DecodeError> {
    let name = Name::read(&mut BinDecoder::new(question.name))?;
    let mut query = Query::query(name, RecordType::from(question.qtype));
    query.set_query_class(DNSClass::from(question.qclass));
    Ok(query)
}

fn emit(
    metadata: &Metadata,
    query: Option<&Query>,
    answers: &[Record],
    authorities: &[Record],
    additionals: &[Record],
    edns: Option<&Edns>,
    out: &mut Vec<u8>,
) -> Result<(), ProtoError> {
    out.clear();
    let mut encoder = BinEncoder::new(out);
    emit_message_parts(
        metadata,
        &mut query.into_iter(),
        &mut answers.iter(),
        &mut authorities.iter(),
        &mut additionals.iter(),
        edns,
        None,
        &mut encoder,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::str::FromStr;

    use hickory_proto::op::{Message, ResponseCode};
    use hickory_proto::rr::rdata::{A, TXT};
    use hickory_proto::rr::{DNSClass, RData};

    use super::*;
    use crate::dns::wire::{self, ClientSubnet};

    /// A query for `name`/TXT, with an OPT of `udp_size` if given.
    fn query_bytes(name: &str, udp_size: Option<u16>) -> Vec<u8> {
        let mut message = Message::query();
        message.metadata.id = 77;
        message.metadata.recursion_desired = true;
        message.add_query(Query::query(
            Name::from_ascii(name).expect("name"),
            RecordType::TXT,
        ));
        if let Some(size) = udp_size {
            let mut edns = Edns::new();
            edns.set_max_payload(size);
            edns.options_mut()
                .insert(EdnsOption::Subnet(opt::ClientSubnet::new(
                    IpAddr::V4(Ipv4Addr::new(192, 0, 2, 0)),
                    24,
                    0,
                )));
            message.set_edns(edns);
        }
        message.to_vec().expect("encodes")
    }

    /// A response to `packet` with `count` TXT records of 100 octets each.
    fn response<'q>(query: &wire::Query<'q>, count: usize) -> Response<'q> {
        let name = Name::from_str("Big.Example.").expect("name");
        let text = "x".repeat(100);
        Response {
            id: query.header.id,
            opcode: 0,
            rcode: ResponseCode::NoError,
            authoritative: true,
            recursion_desired: query.header.recursion_desired,
            checking_disabled: false,
            question: Some(query.question),
            answers: (0..count)
                .map(|_| {
                    Record::from_rdata(name.clone(), 300, RData::TXT(TXT::new(vec![text.clone()])))
                })
                .collect(),
            authorities: Vec::new(),
            additionals: vec![Record::from_rdata(
                Name::from_str("ns.example.").expect("name"),
                300,
                RData::A(A::new(192, 0, 2, 53)),
            )],
            edns: query.edns.map(|e| EdnsReply {
                udp_size: 1232,
                requester_udp_size: e.udp_size,
                dnssec_ok: e.dnssec_ok,
                client_subnet: e.client_subnet.map(|s| ClientSubnet {
                    scope_prefix: 20,
                    ..s
                }),
            }),
        }
    }

    fn encoded(response: &Response<'_>, limit: u16) -> (Vec<u8>, Message) {
        let mut out = Vec::new();
        encode(response, limit, &mut out).expect("encodes");
        let message = Message::from_vec(&out).expect("decodes");
        (out, message)
    }

    #[test]
    fn limits() {
        assert_eq!(udp_limit(1232, None), 512);
        assert_eq!(udp_limit(1232, Some(0)), 512);
        assert_eq!(udp_limit(1232, Some(800)), 800);
        assert_eq!(udp_limit(1232, Some(4096)), 1232);
        assert_eq!(udp_limit(4096, Some(65535)), 4096);
    }

    #[test]
    fn fits_and_keeps_everything() {
        let packet = query_bytes("BiG.example.", None);
        let query = wire::parse(&packet).expect("parses");
        let (bytes, message) = encoded(&response(&query, 3), 512);
        assert!(bytes.len() <= 512);
        assert!(!message.metadata.truncation);
        assert_eq!(message.answers.len(), 3);
        assert_eq!(message.additionals.len(), 1);
        assert_eq!(message.metadata.id, 77);
        assert!(message.metadata.authoritative && message.metadata.recursion_desired);
        assert!(!message.metadata.recursion_available);
        // The question is echoed as asked, case included.
        assert_eq!(message.queries[0].name().to_string(), "BiG.example.");
        assert_eq!(message.queries[0].query_class(), DNSClass::IN);
    }

    #[test]
    fn truncates_at_512_without_edns() {
        let packet = query_bytes("big.example.", None);
        let query = wire::parse(&packet).expect("parses");
        let full = response(&query, 6);
        let (bytes, _) = encoded(&full, u16::MAX);
        assert!(
            bytes.len() > 512,
            "the test needs an answer over 512: {}",
            bytes.len()
        );
        let (bytes, message) = encoded(&full, 512);
        assert!(message.metadata.truncation);
        assert!(message.answers.is_empty() && message.additionals.is_empty());
        assert_eq!(message.queries.len(), 1);
        assert!(message.edns.is_none());
        assert_eq!(bytes.len(), wire::HEADER_LEN + query.question.entry.len());
    }

    #[test]
    fn truncates_at_the_edns_size_and_keeps_opt() {
        let packet = query_bytes("big.example.", Some(700));
        let query = wire::parse(&packet).expect("parses");
        let limit = udp_limit(1232, query.edns.map(|e| e.udp_size));
        assert_eq!(limit, 700);
        // 5 TXT records fit in 700 octets, 7 do not.
        let (_, message) = encoded(&response(&query, 5), limit);
        assert!(!message.metadata.truncation);
        let (bytes, message) = encoded(&response(&query, 7), limit);
        assert!(bytes.len() <= 700);
        assert!(message.metadata.truncation);
        assert!(message.answers.is_empty());
        let edns = message.edns.expect("OPT kept in a truncated response");
        assert_eq!(edns.max_payload(), 1232);
        let Some(EdnsOption::Subnet(subnet)) = edns.option(opt::EdnsCode::Subnet) else {
            panic!("ECS kept in a truncated response");
        };
        assert_eq!(subnet.scope_prefix(), 20);
        // Over TCP nothing is cut.
        let (_, message) = encoded(&response(&query, 7), u16::MAX);
        assert!(!message.metadata.truncation);
        assert_eq!(message.answers.len(), 7);
    }

    #[test]
    fn badvers_goes_in_the_opt_record() {
        let packet = query_bytes("big.example.", Some(1232));
        let query = wire::parse(&packet).expect("parses");
        let mut response = response(&query, 0);
        response.rcode = ResponseCode::BADVERS;
        let (bytes, message) = encoded(&response, 512);
        assert_eq!(bytes[3] & 0x0F, 0, "low bits of BADVERS are 0");
        // hickory-proto decodes 16 as BADSIG, its TSIG twin.
        assert_eq!(u16::from(message.metadata.response_code), 16);
        assert_eq!(message.edns.expect("OPT").version(), 0);
    }
}
