//! A strict parser for DNS queries as they arrive on the wire, shared by every
//! transport.
//!
//! hickory-proto decodes a whole `Message` into owned names and records, which costs
//! several microseconds a query; an authoritative server needs only the header, the
//! one question and the OPT record. This parser reads those straight from the packet,
//! allocates nothing, and is stricter than a general decoder where the rcode depends
//! on it: a compression pointer in the question, a misplaced or repeated OPT, and
//! every malformation of EDNS Client Subnet that RFC 7871 section 7.1.1 answers with
//! FORMERR. A failure keeps what was read before it (header, question, OPT header) so
//! the error response can echo it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::op::ResponseCode;

/// Length of the fixed DNS header.
pub const HEADER_LEN: usize = 12;
/// Longest domain name in wire form, root label included (RFC 1035 section 2.3.4).
pub const MAX_NAME_LEN: usize = 255;

/// Record type A.
pub const TYPE_A: u16 = 1;
/// Record type AAAA.
pub const TYPE_AAAA: u16 = 28;
/// Record type OPT (RFC 6891).
pub const TYPE_OPT: u16 = 41;
/// Class IN.
pub const CLASS_IN: u16 = 1;
/// EDNS option code of Client Subnet (RFC 7871).
pub const OPTION_ECS: u16 = 8;
/// ECS address family IPv4 (IANA address family numbers).
pub const FAMILY_IPV4: u16 = 1;
/// ECS address family IPv6.
pub const FAMILY_IPV6: u16 = 2;

/// Header fields a response echoes or depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub id: u16,
    /// The 4-bit OPCODE.
    pub opcode: u8,
    /// TC, which no query should carry.
    pub truncated: bool,
    /// RD, copied to the response.
    pub recursion_desired: bool,
    /// CD, copied to the response.
    pub checking_disabled: bool,
    pub question_count: u16,
    pub answer_count: u16,
    pub authority_count: u16,
    pub additional_count: u16,
}

/// The one question of a query.
#[derive(Debug, Clone, Copy)]
pub struct Question<'a> {
    /// The whole entry as received: name, type and class.
    pub entry: &'a [u8],
    /// The name in wire form as received, case preserved.
    pub name: &'a [u8],
    /// The name in lower-case wire form, the key for lookups.
    pub lower: LowerName,
    pub qtype: u16,
    pub qclass: u16,
}

/// A domain name in lower-case wire form, kept on the stack.
#[derive(Clone, Copy)]
pub struct LowerName {
    bytes: [u8; MAX_NAME_LEN],
    len: u8,
}

impl LowerName {
    /// The wire form: length-prefixed labels, root label last.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl std::fmt::Debug for LowerName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("LowerName").field(&self.as_bytes()).finish()
    }
}

/// The OPT record of a query (RFC 6891).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edns {
    pub version: u8,
    /// DO, copied to the response (RFC 3225 section 3).
    pub dnssec_ok: bool,
    /// The requester's UDP payload size as sent (values below 512 mean 512).
    pub udp_size: u16,
    /// A well-formed Client Subnet option. Options are read only for version 0: a
    /// later version may lay them out differently, and gets BADVERS anyway.
    pub client_subnet: Option<ClientSubnet>,
}

/// An EDNS Client Subnet option as received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientSubnet {
    /// The address, bits past `source_prefix` zero (checked).
    pub addr: IpAddr,
    pub source_prefix: u8,
    /// SCOPE PREFIX-LENGTH, which a query should leave at 0 and the answer ignores.
    pub scope_prefix: u8,
}

impl ClientSubnet {
    /// ADDRESS octets on the wire: just enough for the source prefix.
    pub fn address_len(&self) -> usize {
        usize::from(self.source_prefix).div_ceil(8)
    }

    /// FAMILY on the wire.
    pub fn family(&self) -> u16 {
        match self.addr {
            IpAddr::V4(_) => FAMILY_IPV4,
            IpAddr::V6(_) => FAMILY_IPV6,
        }
    }
}

/// A query that parsed: header, one question, and the OPT record if any.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    pub header: Header,
    pub question: Question<'a>,
    pub edns: Option<Edns>,
}

/// Why a packet got no ordinary answer.
#[derive(Debug, Clone)]
pub enum ParseError<'a> {
    /// Not to be answered at all.
    Drop(DropReason),
    /// Answered with an error rcode, echoing what was read. Boxed: it holds a
    /// question, and malformed queries are rare enough to allocate for.
    Malformed(Box<Malformed<'a>>),
}

/// Packets that get no response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DropReason {
    /// Shorter than a header: there is no id to answer with.
    #[error("shorter than a DNS header")]
    Short,
    /// QR set: answering responses invites reflection loops.
    #[error("a response, not a query")]
    Response,
}

/// A query that cannot be answered normally, and what was read of it.
#[derive(Debug, Clone, Copy)]
pub struct Malformed<'a> {
    pub header: Header,
    /// The question, if it was read before the fault and there is exactly one.
    pub question: Option<Question<'a>>,
    /// The OPT header, if it was read before the fault (its options may be what failed).
    pub edns: Option<Edns>,
    pub fault: Fault,
}

impl Malformed<'_> {
    /// The rcode to answer with: NOTIMP for an opcode we do not serve whatever its
    /// content (an UPDATE need not be a well-formed query), else FORMERR.
    pub fn rcode(&self) -> ResponseCode {
        if self.header.opcode != 0 {
            ResponseCode::NotImp
        } else {
            ResponseCode::FormErr
        }
    }
}

/// What is wrong with a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    #[error("QDCOUNT is {0}, not 1")]
    QuestionCount(u16),
    #[error("the message ends inside a field")]
    Truncated,
    #[error("a compression pointer in the question name")]
    CompressionInQuestion,
    #[error("a label type other than a plain label or pointer")]
    LabelType,
    #[error("a name longer than 255 octets")]
    NameTooLong,
    #[error("bytes after the last record")]
    TrailingBytes,
    #[error("an OPT record outside the additional section")]
    MisplacedOpt,
    #[error("more than one OPT record")]
    DuplicateOpt,
    #[error("an OPT record whose owner is not the root")]
    OptOwner,
    #[error("an EDNS option that overruns the OPT record")]
    OptionOverrun,
    #[error("more than one Client Subnet option")]
    DuplicateClientSubnet,
    #[error("a Client Subnet option shorter than its fixed fields")]
    ClientSubnetShort,
    #[error("Client Subnet family {0} is neither IPv4 (1) nor IPv6 (2)")]
    ClientSubnetFamily(u16),
    #[error("Client Subnet source prefix {0} is longer than the address")]
    ClientSubnetPrefix(u8),
    #[error("Client Subnet address has {got} octets where the source prefix needs {expected}")]
    ClientSubnetAddressLength { got: usize, expected: usize },
    #[error("Client Subnet address has bits set past the source prefix")]
    ClientSubnetHostBits,
}

/// Parses a query. Never panics, whatever the bytes.
pub fn parse(packet: &[u8]) -> Result<Query<'_>, ParseError<'_>> {
    let header = read_header(packet).map_err(ParseError::Drop)?;
    let malformed = |fault, question, edns| {
        ParseError::Malformed(Box::new(Malformed {
            header,
            question,
            edns,
            fault,
        }))
    };
    if header.question_count != 1 {
        return Err(malformed(
            Fault::QuestionCount(header.question_count),
            None,
            None,
        ));
    }
    let (parsed, mut pos) =
        read_question(packet, HEADER_LEN).map_err(|fault| malformed(fault, None, None))?;
    let question = Some(parsed);

    for _ in 0..u32::from(header.answer_count) + u32::from(header.authority_count) {
        let record = read_record(packet, pos).map_err(|f| malformed(f, question, None))?;
        if record.rtype == TYPE_OPT {
            return Err(malformed(Fault::MisplacedOpt, question, None));
        }
        pos = record.end;
    }
    let mut edns: Option<Edns> = None;
    for _ in 0..header.additional_count {
        let record = read_record(packet, pos).map_err(|f| malformed(f, question, edns))?;
        pos = record.end;
        if record.rtype != TYPE_OPT {
            continue;
        }
        if edns.is_some() {
            return Err(malformed(Fault::DuplicateOpt, question, None));
        }
        if record.owner != [0] {
            return Err(malformed(Fault::OptOwner, question, None));
        }
        let mut opt = Edns {
            version: (record.ttl >> 16) as u8,
            dnssec_ok: record.ttl & 0x8000 != 0,
            udp_size: record.class,
            client_subnet: None,
        };
        if opt.version == 0 {
            opt.client_subnet =
                read_options(record.rdata).map_err(|f| malformed(f, question, Some(opt)))?;
        }
        edns = Some(opt);
    }
    if pos != packet.len() {
        return Err(malformed(Fault::TrailingBytes, question, edns));
    }
    Ok(Query {
        header,
        question: parsed,
        edns,
    })
}

fn read_header(packet: &[u8]) -> Result<Header, DropReason> {
    let Some(h) = packet.first_chunk::<HEADER_LEN>() else {
        return Err(DropReason::Short);
    };
    if h[2] & 0x80 != 0 {
        return Err(DropReason::Response);
    }
    Ok(Header {
        id: u16::from_be_bytes([h[0], h[1]]),
        opcode: (h[2] >> 3) & 0x0F,
        truncated: h[2] & 0x02 != 0,
        recursion_desired: h[2] & 0x01 != 0,
        checking_disabled: h[3] & 0x10 != 0,
        question_count: u16::from_be_bytes([h[4], h[5]]),
        answer_count: u16::from_be_bytes([h[6], h[7]]),
        authority_count: u16::from_be_bytes([h[8], h[9]]),
        additional_count: u16::from_be_bytes([h[10], h[11]]),
    })
}

/// Reads the question entry at `start`; returns it and the offset past it.
fn read_question(packet: &[u8], start: usize) -> Result<(Question<'_>, usize), Fault> {
    let mut lower = LowerName {
        bytes: [0; MAX_NAME_LEN],
        len: 0,
    };
    let mut pos = start;
    loop {
        let len = usize::from(*packet.get(pos).ok_or(Fault::Truncated)?);
        match len & 0xC0 {
            0x00 => {}
            0xC0 => return Err(Fault::CompressionInQuestion),
            _ => return Err(Fault::LabelType),
        }
        let used = pos - start;
        if used + 1 + len > MAX_NAME_LEN {
            return Err(Fault::NameTooLong);
        }
        let label = packet.get(pos..pos + 1 + len).ok_or(Fault::Truncated)?;
        for (to, from) in lower.bytes[used..used + 1 + len].iter_mut().zip(label) {
            *to = from.to_ascii_lowercase();
        }
        pos += 1 + len;
        if len == 0 {
            break;
        }
    }
    let name_end = pos;
    let fixed = packet.get(pos..pos + 4).ok_or(Fault::Truncated)?;
    let question = Question {
        entry: &packet[start..pos + 4],
        name: &packet[start..name_end],
        lower: LowerName {
            len: (name_end - start) as u8,
            ..lower
        },
        qtype: u16::from_be_bytes([fixed[0], fixed[1]]),
        qclass: u16::from_be_bytes([fixed[2], fixed[3]]),
    };
    Ok((question, pos + 4))
}

/// A resource record, read only as far as needed to skip it or use it as OPT.
struct RawRecord<'a> {
    /// The owner as it appears (possibly ending in a pointer).
    owner: &'a [u8],
    rtype: u16,
    class: u16,
    ttl: u32,
    rdata: &'a [u8],
    end: usize,
}

fn read_record(packet: &[u8], start: usize) -> Result<RawRecord<'_>, Fault> {
    let owner_end = skip_name(packet, start)?;
    let fixed = packet
        .get(owner_end..owner_end + 10)
        .ok_or(Fault::Truncated)?;
    let rdlength = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
    let rdata_start = owner_end + 10;
    let rdata = packet
        .get(rdata_start..rdata_start + rdlength)
        .ok_or(Fault::Truncated)?;
    Ok(RawRecord {
        owner: &packet[start..owner_end],
        rtype: u16::from_be_bytes([fixed[0], fixed[1]]),
        class: u16::from_be_bytes([fixed[2], fixed[3]]),
        ttl: u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]),
        rdata,
        end: rdata_start + rdlength,
    })
}

/// Offset past a name that may end in a compression pointer (not followed: the
/// records it appears in are skipped, not used).
fn skip_name(packet: &[u8], start: usize) -> Result<usize, Fault> {
    let mut pos = start;
    loop {
        let len = usize::from(*packet.get(pos).ok_or(Fault::Truncated)?);
        match len & 0xC0 {
            0x00 if len == 0 => return Ok(pos + 1),
            0x00 => {}
            0xC0 => {
                packet.get(pos + 1).ok_or(Fault::Truncated)?;
                return Ok(pos + 2);
            }
            _ => return Err(Fault::LabelType),
        }
        if pos - start + 1 + len > MAX_NAME_LEN {
            return Err(Fault::NameTooLong);
        }
        pos += 1 + len;
    }
}

/// Reads the options of a version-0 OPT record: the Client Subnet option strictly,
/// every other option only as far as to skip it.
fn read_options(mut rdata: &[u8]) -> Result<Option<ClientSubnet>, Fault> {
    let mut subnet = None;
    while !rdata.is_empty() {
        let Some((head, rest)) = rdata.split_first_chunk::<4>() else {
            return Err(Fault::OptionOverrun);
        };
        let code = u16::from_be_bytes([head[0], head[1]]);
        let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
        if rest.len() < len {
            return Err(Fault::OptionOverrun);
        }
        let (data, rest) = rest.split_at(len);
        if code == OPTION_ECS {
            if subnet.is_some() {
                return Err(Fault::DuplicateClientSubnet);
            }
            subnet = Some(read_client_subnet(data)?);
        }
        rdata = rest;
    }
    Ok(subnet)
}

/// RFC 7871 section 6 and 7.1.1: every malformation is FORMERR.
fn read_client_subnet(data: &[u8]) -> Result<ClientSubnet, Fault> {
    let Some((fixed, address)) = data.split_first_chunk::<4>() else {
        return Err(Fault::ClientSubnetShort);
    };
    let family = u16::from_be_bytes([fixed[0], fixed[1]]);
    let (source_prefix, scope_prefix) = (fixed[2], fixed[3]);
    let max_prefix = match family {
        FAMILY_IPV4 => 32,
        FAMILY_IPV6 => 128,
        other => return Err(Fault::ClientSubnetFamily(other)),
    };
    if source_prefix > max_prefix {
        return Err(Fault::ClientSubnetPrefix(source_prefix));
    }
    let expected = usize::from(source_prefix).div_ceil(8);
    if address.len() != expected {
        return Err(Fault::ClientSubnetAddressLength {
            got: address.len(),
            expected,
        });
    }
    let spare_bits = source_prefix % 8;
    if spare_bits != 0
        && address
            .last()
            .is_some_and(|last| last & (0xFF >> spare_bits) != 0)
    {
        return Err(Fault::ClientSubnetHostBits);
    }
    let addr = if family == FAMILY_IPV4 {
        let mut octets = [0; 4];
        octets[..expected].copy_from_slice(address);
        IpAddr::V4(Ipv4Addr::from(octets))
    } else {
        let mut octets = [0; 16];
        octets[..expected].copy_from_slice(address);
        IpAddr::V6(Ipv6Addr::from(octets))
    };
    Ok(ClientSubnet {
        addr,
        source_prefix,
        scope_prefix,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds queries byte by byte, so tests can break them in chosen places.
    struct Packet(Vec<u8>);

    impl Packet {
        fn new(qdcount: u16, ancount: u16, nscount: u16, arcount: u16) -> Self {
            let mut bytes = vec![0x12, 0x34, 0x01, 0x00];
            for count in [qdcount, ancount, nscount, arcount] {
                bytes.extend_from_slice(&count.to_be_bytes());
            }
            Packet(bytes)
        }

        fn name(mut self, name: &str) -> Self {
            for label in name.split('.').filter(|l| !l.is_empty()) {
                self.0.push(label.len() as u8);
                self.0.extend_from_slice(label.as_bytes());
            }
            self.0.push(0);
            self
        }

        fn bytes(mut self, bytes: &[u8]) -> Self {
            self.0.extend_from_slice(bytes);
            self
        }

        fn question(self, name: &str, qtype: u16) -> Self {
            self.name(name)
                .bytes(&qtype.to_be_bytes())
                .bytes(&CLASS_IN.to_be_bytes())
        }

        /// An OPT record with root owner, version 0, DO clear.
        fn opt(self, udp_size: u16, options: &[u8]) -> Self {
            self.opt_full(udp_size, 0, false, options)
        }

        fn opt_full(self, udp_size: u16, version: u8, dnssec_ok: bool, options: &[u8]) -> Self {
            let ttl = (u32::from(version) << 16) | if dnssec_ok { 0x8000 } else { 0 };
            self.bytes(&[0])
                .bytes(&TYPE_OPT.to_be_bytes())
                .bytes(&udp_size.to_be_bytes())
                .bytes(&ttl.to_be_bytes())
                .bytes(&(options.len() as u16).to_be_bytes())
                .bytes(options)
        }
    }

    /// An ECS option: code, length, family, source, scope, address octets.
    fn ecs(family: u16, source: u8, scope: u8, address: &[u8]) -> Vec<u8> {
        let mut out = OPTION_ECS.to_be_bytes().to_vec();
        out.extend_from_slice(&((4 + address.len()) as u16).to_be_bytes());
        out.extend_from_slice(&family.to_be_bytes());
        out.extend_from_slice(&[source, scope]);
        out.extend_from_slice(address);
        out
    }

    fn fault(packet: &[u8]) -> Fault {
        match parse(packet) {
            Err(ParseError::Malformed(m)) => m.fault,
            other => panic!("expected a malformed query, got {other:?}"),
        }
    }

    fn subnet(packet: &[u8]) -> Option<ClientSubnet> {
        match parse(packet) {
            Ok(query) => query.edns.and_then(|e| e.client_subnet),
            Err(e) => panic!("expected a query, got {e:?}"),
        }
    }

    #[test]
    fn plain_query() {
        let packet = Packet::new(1, 0, 0, 0)
            .question("WwW.ExAmPlE.CoM", TYPE_A)
            .0;
        let query = parse(&packet).expect("parses");
        assert_eq!(query.header.id, 0x1234);
        assert!(query.header.recursion_desired);
        assert_eq!(query.header.opcode, 0);
        assert_eq!(query.question.name, b"\x03WwW\x07ExAmPlE\x03CoM\x00");
        assert_eq!(
            query.question.lower.as_bytes(),
            b"\x03www\x07example\x03com\x00"
        );
        assert_eq!(query.question.entry.len(), query.question.name.len() + 4);
        assert_eq!(
            (query.question.qtype, query.question.qclass),
            (TYPE_A, CLASS_IN)
        );
        assert!(query.edns.is_none());
    }

    #[test]
    fn root_question() {
        let packet = Packet::new(1, 0, 0, 0).question("", 2).0;
        let query = parse(&packet).expect("parses");
        assert_eq!(query.question.lower.as_bytes(), b"\x00");
    }

    #[test]
    fn short_packets_and_responses_are_dropped() {
        for len in 0..HEADER_LEN {
            let packet = vec![0; len];
            assert!(matches!(
                parse(&packet),
                Err(ParseError::Drop(DropReason::Short))
            ));
        }
        let mut packet = Packet::new(1, 0, 0, 0).question("a.test", TYPE_A).0;
        packet[2] |= 0x80;
        assert!(matches!(
            parse(&packet),
            Err(ParseError::Drop(DropReason::Response))
        ));
    }

    #[test]
    fn every_truncation_of_a_query_is_malformed_not_a_panic() {
        let packet = Packet::new(1, 0, 0, 1)
            .question("www.example.com", TYPE_AAAA)
            .opt(1232, &ecs(FAMILY_IPV4, 24, 0, &[192, 0, 2]))
            .0;
        assert!(parse(&packet).is_ok());
        for len in HEADER_LEN..packet.len() {
            match parse(&packet[..len]) {
                Err(ParseError::Malformed(m)) => assert_eq!(m.rcode(), ResponseCode::FormErr),
                other => panic!("length {len}: {other:?}"),
            }
        }
    }

    #[test]
    fn question_count_must_be_one() {
        let packet = Packet::new(0, 0, 0, 0).0;
        assert_eq!(fault(&packet), Fault::QuestionCount(0));
        let packet = Packet::new(2, 0, 0, 0)
            .question("a.test", TYPE_A)
            .question("b.test", TYPE_A)
            .0;
        assert_eq!(fault(&packet), Fault::QuestionCount(2));
        let Err(ParseError::Malformed(m)) = parse(&packet) else {
            panic!("malformed expected");
        };
        assert!(m.question.is_none());
        assert_eq!(m.header.id, 0x1234);
    }

    #[test]
    fn compression_pointer_in_question() {
        let packet = Packet::new(1, 0, 0, 0).bytes(&[0xC0, 0x0C, 0, 1, 0, 1]).0;
        assert_eq!(fault(&packet), Fault::CompressionInQuestion);
        let packet = Packet::new(1, 0, 0, 0)
            .bytes(&[1, b'a', 0xC0, 0x0C, 0, 1, 0, 1])
            .0;
        assert_eq!(fault(&packet), Fault::CompressionInQuestion);
        let packet = Packet::new(1, 0, 0, 0)
            .bytes(&[0x41, b'a', 0, 0, 1, 0, 1])
            .0;
        assert_eq!(fault(&packet), Fault::LabelType);
    }

    #[test]
    fn name_length_limits() {
        // 4 labels of 63 octets: 256 octets with the root, one too many.
        let label = "a".repeat(63);
        let long = [label.as_str(); 4].join(".");
        let packet = Packet::new(1, 0, 0, 0).question(&long, TYPE_A).0;
        assert_eq!(fault(&packet), Fault::NameTooLong);
        // 3 x 63 + 61: exactly 255 with the root.
        let fits = format!(
            "{long3}.{tail}",
            long3 = [label.as_str(); 3].join("."),
            tail = "b".repeat(61)
        );
        let packet = Packet::new(1, 0, 0, 0).question(&fits, TYPE_A).0;
        assert_eq!(
            parse(&packet)
                .expect("fits")
                .question
                .lower
                .as_bytes()
                .len(),
            255
        );
    }

    #[test]
    fn garbage_after_header_and_trailing_bytes() {
        let packet = Packet::new(1, 0, 0, 0).bytes(&[0x80, 0xFE, 0x01]).0;
        assert_eq!(fault(&packet), Fault::LabelType);
        let packet = Packet::new(1, 0, 0, 0).bytes(&[5, b'a']).0;
        assert_eq!(fault(&packet), Fault::Truncated);
        let packet = Packet::new(1, 0, 0, 0)
            .question("a.test", TYPE_A)
            .bytes(&[0])
            .0;
        let Err(ParseError::Malformed(m)) = parse(&packet) else {
            panic!("malformed expected");
        };
        assert_eq!(m.fault, Fault::TrailingBytes);
        assert!(m.question.is_some(), "the question is echoed");
    }

    #[test]
    fn records_in_answer_and_authority_are_skipped() {
        // An answer whose owner is a pointer to the question, then an authority record.
        let a_record = [0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1];
        let packet = Packet::new(1, 1, 1, 0)
            .question("a.test", TYPE_A)
            .bytes(&a_record)
            .name("b.test")
            .bytes(&[0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 2])
            .0;
        assert!(parse(&packet).is_ok());
        // Fewer records than counted.
        let packet = Packet::new(1, 2, 0, 0)
            .question("a.test", TYPE_A)
            .bytes(&a_record)
            .0;
        assert_eq!(fault(&packet), Fault::Truncated);
        // RDLENGTH past the end.
        let mut broken = a_record;
        broken[11] = 5;
        let packet = Packet::new(1, 1, 0, 0)
            .question("a.test", TYPE_A)
            .bytes(&broken)
            .0;
        assert_eq!(fault(&packet), Fault::Truncated);
    }

    #[test]
    fn opt_placement() {
        let opt = Packet::new(0, 0, 0, 0).opt(1232, &[]).0[HEADER_LEN..].to_vec();
        let packet = Packet::new(1, 1, 0, 0)
            .question("a.test", TYPE_A)
            .bytes(&opt)
            .0;
        assert_eq!(fault(&packet), Fault::MisplacedOpt);
        let packet = Packet::new(1, 0, 1, 0)
            .question("a.test", TYPE_A)
            .bytes(&opt)
            .0;
        assert_eq!(fault(&packet), Fault::MisplacedOpt);
        let packet = Packet::new(1, 0, 0, 2)
            .question("a.test", TYPE_A)
            .bytes(&opt)
            .bytes(&opt)
            .0;
        assert_eq!(fault(&packet), Fault::DuplicateOpt);
        // Owner `a.` instead of the root.
        let packet = Packet::new(1, 0, 0, 1)
            .question("a.test", TYPE_A)
            .bytes(&[1, b'a'])
            .bytes(&opt)
            .0;
        assert_eq!(fault(&packet), Fault::OptOwner);
        // OPT after another additional record is fine.
        let packet = Packet::new(1, 0, 0, 2)
            .question("a.test", TYPE_A)
            .name("ns.test")
            .bytes(&[0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 2])
            .bytes(&opt)
            .0;
        assert!(parse(&packet).expect("parses").edns.is_some());
    }

    #[test]
    fn opt_header_fields() {
        let packet = Packet::new(1, 0, 0, 1)
            .question("a.test", TYPE_A)
            .opt_full(4096, 0, true, &[])
            .0;
        let edns = parse(&packet).expect("parses").edns.expect("edns");
        assert_eq!(
            edns,
            Edns {
                version: 0,
                dnssec_ok: true,
                udp_size: 4096,
                client_subnet: None,
            }
        );
        // Version 1: options are not read (they may not be ours to understand).
        let packet = Packet::new(1, 0, 0, 1)
            .question("a.test", TYPE_A)
            .opt_full(1232, 1, false, &[0, 8, 0, 1, 0xFF])
            .0;
        assert_eq!(
            parse(&packet).expect("parses").edns.expect("edns").version,
            1
        );
    }

    #[test]
    fn option_overruns() {
        for options in [
            &[0, 10][..],
            &[0, 10, 0, 8, 1, 2],
            &[0, 8, 0, 9, 0, 1, 24, 0, 1],
        ] {
            let packet = Packet::new(1, 0, 0, 1)
                .question("a.test", TYPE_A)
                .opt(1232, options)
                .0;
            let Err(ParseError::Malformed(m)) = parse(&packet) else {
                panic!("{options:?}: malformed expected");
            };
            assert_eq!(m.fault, Fault::OptionOverrun, "{options:?}");
            assert!(m.edns.is_some(), "the OPT header is kept for the reply");
        }
    }

    #[test]
    fn other_options_are_skipped() {
        let mut options = vec![0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]; // COOKIE
        options.extend(ecs(FAMILY_IPV4, 24, 0, &[198, 51, 100]));
        options.extend([0, 12, 0, 0]); // empty PADDING
        let packet = Packet::new(1, 0, 0, 1)
            .question("a.test", TYPE_A)
            .opt(1232, &options)
            .0;
        assert_eq!(
            subnet(&packet),
            Some(ClientSubnet {
                addr: "198.51.100.0".parse().expect("address"),
                source_prefix: 24,
                scope_prefix: 0
            })
        );
    }

    fn with_ecs(option: &[u8]) -> Vec<u8> {
        Packet::new(1, 0, 0, 1)
            .question("a.test", TYPE_A)
            .opt(1232, option)
            .0
    }

    #[test]
    fn ecs_well_formed() {
        let v6 = subnet(&with_ecs(&ecs(
            FAMILY_IPV6,
            56,
            0,
            &[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0x01],
        )))
        .expect("subnet");
        assert_eq!(
            v6.addr,
            "2001:db8:0:100::".parse::<IpAddr>().expect("address")
        );
        assert_eq!(v6.address_len(), 7);
        let zero = subnet(&with_ecs(&ecs(FAMILY_IPV4, 0, 0, &[]))).expect("subnet");
        assert_eq!(
            (zero.source_prefix, zero.addr),
            (0, IpAddr::V4(Ipv4Addr::UNSPECIFIED))
        );
        let odd = subnet(&with_ecs(&ecs(FAMILY_IPV4, 17, 0, &[10, 1, 0x80]))).expect("subnet");
        assert_eq!(odd.addr, "10.1.128.0".parse::<IpAddr>().expect("address"));
        let full = subnet(&with_ecs(&ecs(FAMILY_IPV4, 32, 0, &[10, 1, 2, 3]))).expect("subnet");
        assert_eq!(full.address_len(), 4);
        // A non-zero SCOPE in a query is tolerated and kept as sent.
        let scoped = subnet(&with_ecs(&ecs(FAMILY_IPV4, 24, 16, &[10, 1, 2]))).expect("subnet");
        assert_eq!(scoped.scope_prefix, 16);
    }

    #[test]
    fn ecs_malformed() {
        let cases: [(Vec<u8>, Fault); 10] = [
            (ecs(3, 24, 0, &[10, 1, 2]), Fault::ClientSubnetFamily(3)),
            (ecs(0, 0, 0, &[]), Fault::ClientSubnetFamily(0)),
            (
                ecs(FAMILY_IPV4, 33, 0, &[10, 1, 2, 3, 4]),
                Fault::ClientSubnetPrefix(33),
            ),
            (
                ecs(FAMILY_IPV6, 129, 0, &[0; 17]),
                Fault::ClientSubnetPrefix(129),
            ),
            (
                ecs(FAMILY_IPV4, 24, 0, &[10, 1, 2, 3]),
                Fault::ClientSubnetAddressLength {
                    got: 4,
                    expected: 3,
                },
            ),
            (
                ecs(FAMILY_IPV4, 24, 0, &[10, 1]),
                Fault::ClientSubnetAddressLength {
                    got: 2,
                    expected: 3,
                },
            ),
            (
                ecs(FAMILY_IPV6, 0, 0, &[0x20]),
                Fault::ClientSubnetAddressLength {
                    got: 1,
                    expected: 0,
                },
            ),
            (
                ecs(FAMILY_IPV4, 23, 0, &[10, 1, 3]),
                Fault::ClientSubnetHostBits,
            ),
            (
                ecs(FAMILY_IPV6, 60, 0, &[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0x01]),
                Fault::ClientSubnetHostBits,
            ),
            ([0, 8, 0, 3, 0, 1, 24].to_vec(), Fault::ClientSubnetShort),
        ];
        for (option, expected) in cases {
            let packet = with_ecs(&option);
            let Err(ParseError::Malformed(m)) = parse(&packet) else {
                panic!("{option:?}: malformed expected");
            };
            assert_eq!(m.fault, expected, "{option:?}");
            assert_eq!(m.rcode(), ResponseCode::FormErr);
            assert!(m.question.is_some() && m.edns.is_some());
        }
        let mut twice = ecs(FAMILY_IPV4, 24, 0, &[10, 1, 2]);
        twice.extend(ecs(FAMILY_IPV4, 24, 0, &[10, 1, 2]));
        assert_eq!(fault(&with_ecs(&twice)), Fault::DuplicateClientSubnet);
    }

    #[test]
    fn other_opcodes_fail_as_notimp() {
        let mut packet = Packet::new(0, 0, 0, 0).0;
        packet[2] = 4 << 3; // NOTIFY
        let Err(ParseError::Malformed(m)) = parse(&packet) else {
            panic!("malformed expected");
        };
        assert_eq!(m.rcode(), ResponseCode::NotImp);
        let mut packet = Packet::new(1, 0, 0, 0).question("a.test", 6).0;
        packet[2] = 5 << 3; // UPDATE
        assert_eq!(parse(&packet).expect("parses").header.opcode, 5);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap deterministic fuzz: mutate a full query at every position.
        let base = Packet::new(1, 1, 0, 1)
            .question("www.example.com", TYPE_A)
            .bytes(&[0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1])
            .opt(
                1232,
                &ecs(FAMILY_IPV6, 56, 0, &[0x20, 1, 0xd, 0xb8, 0, 0, 1]),
            )
            .0;
        for i in 0..base.len() {
            for value in [0x00, 0x01, 0x3F, 0x40, 0x80, 0xC0, 0xFF] {
                let mut packet = base.clone();
                packet[i] = value;
                let _ = parse(&packet);
            }
        }
    }
}
