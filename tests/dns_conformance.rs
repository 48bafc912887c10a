//! DNS protocol conformance over real sockets, every behaviour checked on each of
//! the three answer paths: UDP fast path, UDP full path, TCP.

mod common;

use common::{
    PATHS, Path, addresses, ask, ask_raw, hickory_client, of_type, pops_of, query, query_edns,
    tcp_exchange, v4, v6, world,
};
use hickory_net::client::ClientHandle;
use hickory_proto::op::{Edns, Message, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};

/// The SOA's negative TTL: min(SOA TTL 3600, MINIMUM 300).
const NEGATIVE_TTL: u32 = 300;

fn assert_negative_soa(path: Path, reply: &Message) {
    let soas = of_type(&reply.authorities, RecordType::SOA);
    assert_eq!(soas.len(), 1, "{path:?}: one SOA in authority: {reply}");
    assert_eq!(
        soas[0].name,
        Name::from_ascii("cdn.test.").expect("name"),
        "{path:?}"
    );
    assert_eq!(soas[0].ttl, NEGATIVE_TTL, "{path:?}: negative TTL");
}

#[tokio::test]
async fn accelerated_a_and_aaaa_through_a_hickory_client() {
    for path in PATHS {
        let mut client = hickory_client(path).await;
        let name = Name::from_ascii("www.example.com.cdn.test.").expect("name");
        let reply = client
            .query(name.clone(), DNSClass::IN, RecordType::A)
            .await
            .expect("A answer");
        // 127.0.0.1 is in no database: the fallback POP, iad.
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::NoError,
            "{path:?}"
        );
        assert!(reply.metadata.authoritative, "{path:?}: AA");
        assert_eq!(addresses(&reply), [v4("203.0.113.40")], "{path:?}");
        assert!(
            reply.answers.iter().all(|r| r.ttl == 30 && r.name == name),
            "{path:?}"
        );
        let reply = client
            .query(name, DNSClass::IN, RecordType::AAAA)
            .await
            .expect("AAAA answer");
        assert_eq!(addresses(&reply), [v6("2001:db8:40::1")], "{path:?}");
    }
}

#[tokio::test]
async fn static_answers_are_authoritative() {
    for path in PATHS {
        let reply = ask(path, &query("mail.cdn.test.", RecordType::A)).await;
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::NoError,
            "{path:?}"
        );
        assert!(reply.metadata.authoritative, "{path:?}: AA");
        assert_eq!(addresses(&reply), [v4("192.0.2.25")], "{path:?}");
        assert_eq!(reply.answers[0].ttl, 3600, "{path:?}");
    }
}

#[tokio::test]
async fn nxdomain_and_nodata_carry_the_negative_soa() {
    for path in PATHS {
        let reply = ask(path, &query("nope.cdn.test.", RecordType::A)).await;
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::NXDomain,
            "{path:?}"
        );
        assert!(reply.metadata.authoritative, "{path:?}: AA on NXDOMAIN");
        assert!(reply.answers.is_empty(), "{path:?}");
        assert_negative_soa(path, &reply);

        let reply = ask(path, &query("mail.cdn.test.", RecordType::AAAA)).await;
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::NoError,
            "{path:?}"
        );
        assert!(reply.metadata.authoritative, "{path:?}: AA on NODATA");
        assert!(reply.answers.is_empty(), "{path:?}");
        assert_negative_soa(path, &reply);

        // Accelerated names have only A and AAAA.
        let reply = ask(path, &query("www.example.com.cdn.test.", RecordType::MX)).await;
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::NoError,
            "{path:?}"
        );
        assert!(
            reply.metadata.authoritative && reply.answers.is_empty(),
            "{path:?}"
        );
        assert_negative_soa(path, &reply);

        // No POP that may serve this domain has IPv6.
        let reply = ask(path, &query("cn.example.com.cdn.test.", RecordType::AAAA)).await;
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::NoError,
            "{path:?}"
        );
        assert!(reply.answers.is_empty(), "{path:?}");
        assert_negative_soa(path, &reply);
        let reply = ask(path, &query("cn.example.com.cdn.test.", RecordType::A)).await;
        assert_eq!(pops_of(&reply), ["pek"], "{path:?}");
    }
}

#[tokio::test]
async fn empty_non_terminals_are_nodata() {
    for path in PATHS {
        for name in ["b.ent.cdn.test.", "ent.cdn.test."] {
            let reply = ask(path, &query(name, RecordType::A)).await;
            assert_eq!(
                reply.metadata.response_code,
                ResponseCode::NoError,
                "{path:?} {name}"
            );
            assert!(reply.answers.is_empty(), "{path:?} {name}");
            assert_negative_soa(path, &reply);
        }
        let reply = ask(path, &query("a.b.ent.cdn.test.", RecordType::A)).await;
        assert_eq!(addresses(&reply), [v4("192.0.2.90")], "{path:?}");
    }
}

#[tokio::test]
async fn refused_outside_our_zones_and_class_in() {
    for path in PATHS {
        for name in ["example.com.", "test.", "cdn.test.example.", "."] {
            let reply = ask(path, &query(name, RecordType::A)).await;
            assert_eq!(
                reply.metadata.response_code,
                ResponseCode::Refused,
                "{path:?} {name}"
            );
            assert!(!reply.metadata.authoritative, "{path:?} {name}: no AA");
            assert!(
                reply.answers.is_empty() && reply.authorities.is_empty(),
                "{path:?}"
            );
        }
        let mut chaos = query("version.bind.", RecordType::TXT);
        chaos.queries[0].set_query_class(DNSClass::CH);
        let reply = ask(path, &chaos).await;
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::Refused,
            "{path:?}: CH"
        );
        let mut inside = query("mail.cdn.test.", RecordType::A);
        inside.queries[0].set_query_class(DNSClass::CH);
        let reply = ask(path, &inside).await;
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::Refused,
            "{path:?}: CH in zone"
        );
    }
}

#[tokio::test]
async fn transfers_refused_and_meta_types_formerr() {
    for path in PATHS {
        for qtype in [RecordType::AXFR, RecordType::IXFR] {
            let reply = ask(path, &query("cdn.test.", qtype)).await;
            assert_eq!(
                reply.metadata.response_code,
                ResponseCode::Refused,
                "{path:?} {qtype}"
            );
        }
        for qtype in [
            RecordType::OPT,
            RecordType::TSIG,
            RecordType::Unknown(254),
            RecordType::Unknown(253),
        ] {
            let reply = ask(path, &query("cdn.test.", qtype)).await;
            assert_eq!(
                reply.metadata.response_code,
                ResponseCode::FormErr,
                "{path:?} {qtype}"
            );
        }
    }
}

#[tokio::test]
async fn any_is_minimal() {
    for path in PATHS {
        let reply = ask(path, &query("cdn.test.", RecordType::ANY)).await;
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::NoError,
            "{path:?}"
        );
        assert!(!reply.answers.is_empty(), "{path:?}");
        let first = reply.answers[0].record_type();
        assert!(
            reply.answers.iter().all(|r| r.record_type() == first),
            "{path:?}: one RRset only (RFC 8482): {reply}"
        );
        let reply = ask(path, &query("www.example.com.cdn.test.", RecordType::ANY)).await;
        assert!(reply.metadata.authoritative, "{path:?}");
        assert_eq!(
            addresses(&reply),
            [v4("203.0.113.40")],
            "{path:?}: ANY answers A"
        );
        assert!(
            reply
                .answers
                .iter()
                .all(|r| r.record_type() == RecordType::A),
            "{path:?}"
        );
    }
}

#[tokio::test]
async fn badvers_for_edns_version_1() {
    for path in PATHS {
        let mut message = query_edns("www.example.com.cdn.test.", RecordType::A, 1232);
        if let Some(edns) = message.edns.as_mut() {
            edns.set_version(1);
        }
        let reply = ask(path, &message).await;
        // hickory-proto decodes extended rcode 16 as BADSIG, BADVERS's TSIG twin.
        assert_eq!(
            u16::from(reply.metadata.response_code),
            16,
            "{path:?}: BADVERS"
        );
        let edns = reply.edns.expect("OPT in a BADVERS reply");
        assert_eq!(edns.version(), 0, "{path:?}: our version");
        assert!(reply.answers.is_empty(), "{path:?}");
    }
}

#[tokio::test]
async fn notimp_for_other_opcodes() {
    for path in PATHS {
        for opcode in [OpCode::Notify, OpCode::Update, OpCode::Status] {
            let mut message = query("cdn.test.", RecordType::SOA);
            message.metadata.op_code = opcode;
            let reply = ask(path, &message).await;
            assert_eq!(
                reply.metadata.response_code,
                ResponseCode::NotImp,
                "{path:?} {opcode}"
            );
            assert_eq!(reply.metadata.op_code, opcode, "{path:?}: opcode echoed");
            assert_eq!(reply.metadata.id, message.metadata.id, "{path:?}");
        }
    }
}

#[tokio::test]
async fn formerr_for_question_counts_and_garbage() {
    for path in PATHS {
        // QDCOUNT 0: a bare header.
        let header = [0xAB, 0xCD, 0x01, 0x00, 0, 0, 0, 0, 0, 0, 0, 0];
        let reply = Message::from_vec(&ask_raw(path, &header).await).expect("decodes");
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::FormErr,
            "{path:?}: QDCOUNT 0"
        );
        assert_eq!(reply.metadata.id, 0xABCD, "{path:?}");
        assert!(reply.metadata.recursion_desired, "{path:?}: RD copied");

        // QDCOUNT 2.
        let mut message = query("mail.cdn.test.", RecordType::A);
        message.add_query(hickory_proto::op::Query::query(
            Name::from_ascii("ns1.cdn.test.").expect("name"),
            RecordType::A,
        ));
        let reply = ask(path, &message).await;
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::FormErr,
            "{path:?}: QDCOUNT 2"
        );
        assert_eq!(reply.metadata.id, message.metadata.id, "{path:?}");
        assert!(reply.answers.is_empty(), "{path:?}");

        // QDCOUNT 1 followed by garbage, and a question cut short.
        for tail in [&[0x80, 0xFF, 0x13, 0x37, 0x00][..], &[0x03, b'a', b'b']] {
            let mut packet = vec![0x12, 0x34, 0x00, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
            packet.extend_from_slice(tail);
            let reply = Message::from_vec(&ask_raw(path, &packet).await).expect("decodes");
            assert_eq!(
                reply.metadata.response_code,
                ResponseCode::FormErr,
                "{path:?}: {tail:?}"
            );
            assert_eq!(reply.metadata.id, 0x1234, "{path:?}");
        }

        // A compression pointer in the question.
        let packet = [
            0x12, 0x35, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 0x0C, 0, 1, 0, 1,
        ];
        let reply = Message::from_vec(&ask_raw(path, &packet).await).expect("decodes");
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::FormErr,
            "{path:?}: pointer"
        );
    }
}

#[tokio::test]
async fn responses_and_runts_get_no_reply() {
    // A response (QR=1) and a runt, then a real query from the same socket or
    // connection: the first reply that comes back must be the real query's.
    let mut response = query("mail.cdn.test.", RecordType::A);
    response.metadata.message_type = hickory_proto::op::MessageType::Response;
    let response = response.to_vec().expect("encodes");
    let real = query("mail.cdn.test.", RecordType::A);
    let real_bytes = real.to_vec().expect("encodes");
    for path in [Path::UdpFast, Path::UdpFull] {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("socket");
        let addr = world().addr(path);
        socket.send_to(&response, addr).await.expect("send");
        socket.send_to(&[1, 2, 3], addr).await.expect("send");
        socket.send_to(&real_bytes, addr).await.expect("send");
        let mut buf = vec![0; 4096];
        let (len, _) = tokio::time::timeout(common::TIMEOUT, socket.recv_from(&mut buf))
            .await
            .expect("a reply in time")
            .expect("receive");
        let reply = Message::from_vec(&buf[..len]).expect("decodes");
        assert_eq!(
            reply.metadata.id, real.metadata.id,
            "{path:?}: only the real query answered"
        );
    }
    // The response gets no reply, so the first reply on the connection is the query's.
    let replies = tcp_exchange(world().addr(Path::Tcp), &[&response, &real_bytes], 1).await;
    let reply = Message::from_vec(&replies[0]).expect("decodes");
    assert_eq!(reply.metadata.id, real.metadata.id);
}

/// A burst larger than one receive batch, from several clients, of every kind
/// (accelerated, static, NXDOMAIN, REFUSED, and responses that get no reply), all
/// queued before the server reads any: each client gets, in order, exactly the
/// replies its queries get when asked one at a time.
#[tokio::test]
async fn a_burst_from_many_clients_is_answered_to_each() {
    let mut response = query("mail.cdn.test.", RecordType::A);
    response.metadata.message_type = hickory_proto::op::MessageType::Response;
    let kinds = [
        query("www.example.com.cdn.test.", RecordType::A),
        query_edns("www.example.com.cdn.test.", RecordType::AAAA, 1232),
        query("mail.cdn.test.", RecordType::A),
        query("nope.cdn.test.", RecordType::A),
        query("example.com.", RecordType::A),
        response,
    ];
    let kinds: Vec<Vec<u8>> = kinds.iter().map(|m| m.to_vec().expect("encodes")).collect();
    for path in [Path::UdpFast, Path::UdpFull] {
        let addr = world().addr(path);
        // What each kind gets alone (the response: nothing), id aside.
        let mut alone = Vec::new();
        for packet in &kinds[..kinds.len() - 1] {
            alone.push(ask_raw(path, packet).await[2..].to_vec());
        }
        let mut clients = Vec::new();
        for _ in 0..4 {
            let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
                .await
                .expect("socket");
            clients.push(socket);
        }
        // 4 clients x 12 datagrams: more than one batch, interleaved by client.
        for round in 0..12_u16 {
            for (client, socket) in clients.iter().enumerate() {
                let mut packet = kinds[usize::from(round) % kinds.len()].clone();
                let id = (client as u16) << 8 | round;
                packet[..2].copy_from_slice(&id.to_be_bytes());
                socket.send_to(&packet, addr).await.expect("send");
            }
        }
        // Then one last query each: its reply must come right after the others, so
        // nothing was answered twice, nor the responses at all.
        let last = query("mail.cdn.test.", RecordType::A);
        let last_bytes = last.to_vec().expect("encodes");
        for socket in &clients {
            socket.send_to(&last_bytes, addr).await.expect("send");
        }
        let mut buf = vec![0; 4096];
        for (client, socket) in clients.iter().enumerate() {
            for round in (0..12_u16).filter(|r| usize::from(*r) % kinds.len() != kinds.len() - 1) {
                let (len, _) = tokio::time::timeout(common::TIMEOUT, socket.recv_from(&mut buf))
                    .await
                    .expect("a reply in time")
                    .expect("receive");
                let id = (client as u16) << 8 | round;
                assert_eq!(
                    buf[..2],
                    id.to_be_bytes(),
                    "{path:?}: client {client}, in order"
                );
                assert_eq!(
                    buf[2..len],
                    alone[usize::from(round) % kinds.len()][..],
                    "{path:?}: client {client}, query {round} as if asked alone"
                );
            }
            let (len, _) = tokio::time::timeout(common::TIMEOUT, socket.recv_from(&mut buf))
                .await
                .expect("a reply in time")
                .expect("receive");
            let reply = Message::from_vec(&buf[..len]).expect("decodes");
            assert_eq!(
                reply.metadata.id, last.metadata.id,
                "{path:?}: client {client}"
            );
        }
    }
}

#[tokio::test]
async fn truncation_over_udp_and_not_over_tcp() {
    for path in PATHS {
        // 40 A records: 12 + 18 + 40 * 16 octets, over 512.
        let reply = ask(path, &query("many.cdn.test.", RecordType::A)).await;
        if path == Path::Tcp {
            assert!(!reply.metadata.truncation, "TCP is never truncated");
            assert_eq!(reply.answers.len(), 40);
        } else {
            assert!(
                reply.metadata.truncation,
                "{path:?}: TC over 512 without EDNS"
            );
            assert!(
                reply.answers.is_empty(),
                "{path:?}: header and question only"
            );
            assert_eq!(reply.queries.len(), 1, "{path:?}: question kept");
        }
        // With EDNS 1232 the same answer fits.
        let reply = ask(path, &query_edns("many.cdn.test.", RecordType::A, 1232)).await;
        assert!(!reply.metadata.truncation, "{path:?}");
        assert_eq!(reply.answers.len(), 40, "{path:?}");

        // Four TXT records of 200 octets: fit 1232, not 600.
        let reply = ask(path, &query_edns("big.cdn.test.", RecordType::TXT, 600)).await;
        if path == Path::Tcp {
            assert!(!reply.metadata.truncation);
            assert_eq!(reply.answers.len(), 4);
        } else {
            assert!(reply.metadata.truncation, "{path:?}: TC over the EDNS size");
            assert!(reply.answers.is_empty(), "{path:?}");
            assert!(reply.edns.is_some(), "{path:?}: OPT kept when truncated");
        }
        let reply = ask(path, &query_edns("big.cdn.test.", RecordType::TXT, 1232)).await;
        assert!(!reply.metadata.truncation, "{path:?}");
        assert_eq!(reply.answers.len(), 4, "{path:?}");
        // A requester size below 512 counts as 512.
        let reply = ask(path, &query_edns("mail.cdn.test.", RecordType::A, 100)).await;
        assert!(!reply.metadata.truncation, "{path:?}");
        assert_eq!(
            reply.edns.map(|e| e.max_payload()),
            Some(1232),
            "{path:?}: our size"
        );
    }
}

#[tokio::test]
async fn pipelined_tcp_queries_are_all_answered() {
    let names = [
        "www.example.com.cdn.test.",
        "mail.cdn.test.",
        "nope.cdn.test.",
        "many.cdn.test.",
        "a.b.example.org.cdn.test.",
        "example.com.",
    ];
    let messages: Vec<Message> = names.iter().map(|n| query(n, RecordType::A)).collect();
    let packets: Vec<Vec<u8>> = messages
        .iter()
        .map(|m| m.to_vec().expect("encodes"))
        .collect();
    let slices: Vec<&[u8]> = packets.iter().map(Vec::as_slice).collect();
    let replies = tcp_exchange(world().addr(Path::Tcp), &slices, slices.len()).await;
    assert_eq!(replies.len(), names.len(), "one reply per query");
    let mut ids: Vec<u16> = replies
        .iter()
        .map(|r| Message::from_vec(r).expect("decodes").metadata.id)
        .collect();
    let mut expected: Vec<u16> = messages.iter().map(|m| m.metadata.id).collect();
    ids.sort_unstable();
    expected.sort_unstable();
    assert_eq!(ids, expected);
    for reply in &replies {
        let reply = Message::from_vec(reply).expect("decodes");
        let name = reply.queries[0].name().to_string();
        let rcode = reply.metadata.response_code;
        match name.as_str() {
            "nope.cdn.test." => assert_eq!(rcode, ResponseCode::NXDomain),
            "example.com." => assert_eq!(rcode, ResponseCode::Refused),
            _ => assert!(
                rcode == ResponseCode::NoError && !reply.answers.is_empty(),
                "{name}"
            ),
        }
    }
}

#[tokio::test]
async fn query_name_case_is_preserved() {
    for path in PATHS {
        for (name, qtype) in [
            ("WwW.ExAmPlE.CoM.cdn.test.", RecordType::A),
            ("WwW.ExAmPlE.CoM.CDN.test.", RecordType::AAAA),
            ("MaIl.CdN.TeSt.", RecordType::A),
            ("A.B.eXample.ORG.cdn.test.", RecordType::A),
        ] {
            let reply = ask(path, &query(name, qtype)).await;
            assert_eq!(
                reply.queries[0].name().to_string(),
                name,
                "{path:?}: question"
            );
            assert!(!reply.answers.is_empty(), "{path:?} {name}");
            for record in &reply.answers {
                assert_eq!(record.name.to_string(), name, "{path:?}: answer owner");
            }
        }
    }
}

#[tokio::test]
async fn rd_and_cd_copied_ra_clear() {
    for path in PATHS {
        for name in [
            "www.example.com.cdn.test.",
            "mail.cdn.test.",
            "nope.cdn.test.",
            "example.com.",
        ] {
            for (rd, cd) in [(false, false), (true, false), (false, true), (true, true)] {
                let mut message = query_edns(name, RecordType::A, 1232);
                message.metadata.recursion_desired = rd;
                message.metadata.checking_disabled = cd;
                let reply = ask(path, &message).await;
                assert_eq!(reply.metadata.recursion_desired, rd, "{path:?} {name}: RD");
                assert_eq!(reply.metadata.checking_disabled, cd, "{path:?} {name}: CD");
                assert!(!reply.metadata.recursion_available, "{path:?} {name}: RA");
                assert!(!reply.metadata.truncation, "{path:?} {name}: TC");
                assert_eq!(reply.metadata.id, message.metadata.id, "{path:?}");
            }
        }
    }
}

#[tokio::test]
async fn dnssec_ok_is_copied() {
    for path in PATHS {
        for dnssec_ok in [false, true] {
            let mut message = query_edns("www.example.com.cdn.test.", RecordType::A, 1232);
            if let Some(edns) = message.edns.as_mut() {
                edns.set_dnssec_ok(dnssec_ok);
            }
            let reply = ask(path, &message).await;
            let edns = reply.edns.expect("OPT");
            assert_eq!(edns.flags().dnssec_ok, dnssec_ok, "{path:?}");
        }
        let reply = ask(path, &query("www.example.com.cdn.test.", RecordType::A)).await;
        assert!(
            reply.edns.is_none(),
            "{path:?}: no OPT without one in the query"
        );
    }
}

#[tokio::test]
async fn static_records_served_as_written() {
    for path in PATHS {
        let reply = ask(path, &query("cdn.test.", RecordType::SOA)).await;
        let soa = reply.answers.iter().find_map(|r| match &r.data {
            RData::SOA(soa) => Some(soa.clone()),
            _ => None,
        });
        let soa = soa.expect("SOA answer");
        assert_eq!(soa.mname.to_string(), "ns1.cdn.test.", "{path:?}");
        assert_eq!(soa.rname.to_string(), "hostmaster.cdn.test.", "{path:?}");
        assert_eq!(
            (soa.serial, soa.refresh, soa.retry, soa.expire, soa.minimum),
            (2024010101, 7200, 900, 1209600, 300),
            "{path:?}"
        );
        assert_eq!(reply.answers[0].ttl, 3600, "{path:?}");

        let reply = ask(path, &query("cdn.test.", RecordType::NS)).await;
        let mut ns: Vec<String> = reply
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::NS(ns) => Some(ns.0.to_string()),
                _ => None,
            })
            .collect();
        ns.sort();
        assert_eq!(ns, ["ns1.cdn.test.", "ns2.cdn.test."], "{path:?}");

        let reply = ask(path, &query("cdn.test.", RecordType::MX)).await;
        let mx = match &reply.answers[0].data {
            RData::MX(mx) => (mx.preference, mx.exchange.to_string()),
            other => panic!("{path:?}: MX expected, got {other:?}"),
        };
        assert_eq!(mx, (10, "mail.cdn.test.".to_string()), "{path:?}");

        let reply = ask(path, &query("cdn.test.", RecordType::TXT)).await;
        let txt = match &reply.answers[0].data {
            RData::TXT(txt) => txt.to_string(),
            other => panic!("{path:?}: TXT expected, got {other:?}"),
        };
        assert_eq!(txt, "v=spf1 -all", "{path:?}");

        let reply = ask(path, &query("ns2.cdn.test.", RecordType::AAAA)).await;
        assert_eq!(addresses(&reply), [v6("2001:db8::54")], "{path:?}");
    }
}

#[tokio::test]
async fn cname_chains_are_followed() {
    for path in PATHS {
        let reply = ask(path, &query("Chain.cdn.test.", RecordType::A)).await;
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::NoError,
            "{path:?}"
        );
        assert!(reply.metadata.authoritative, "{path:?}");
        let owners: Vec<String> = reply.answers.iter().map(|r| r.name.to_string()).collect();
        assert_eq!(
            owners,
            ["Chain.cdn.test.", "alias.cdn.test.", "target.cdn.test."],
            "{path:?}"
        );
        assert_eq!(addresses(&reply), [v4("192.0.2.80")], "{path:?}");

        // Into an accelerated name: the decision answers the last step.
        let reply = ask(path, &query("geo.cdn.test.", RecordType::AAAA)).await;
        assert_eq!(
            of_type(&reply.answers, RecordType::CNAME).len(),
            1,
            "{path:?}"
        );
        assert_eq!(addresses(&reply), [v6("2001:db8:40::1")], "{path:?}");
        assert_eq!(reply.answers[1].ttl, 30, "{path:?}: the domain's TTL");

        // A loop ends with what was found, NOERROR.
        let reply = ask(path, &query("loop1.cdn.test.", RecordType::A)).await;
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::NoError,
            "{path:?}"
        );
        assert_eq!(
            of_type(&reply.answers, RecordType::CNAME).len(),
            2,
            "{path:?}"
        );

        // Out of our zones: the CNAME alone; the resolver follows it.
        let reply = ask(path, &query("outside.cdn.test.", RecordType::A)).await;
        assert_eq!(reply.answers.len(), 1, "{path:?}");
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::NoError,
            "{path:?}"
        );

        // To a type the target lacks: NODATA after the chain.
        let reply = ask(path, &query("alias.cdn.test.", RecordType::AAAA)).await;
        assert_eq!(reply.answers.len(), 1, "{path:?}");
        assert_negative_soa(path, &reply);

        // Asking for the CNAME itself does not follow it.
        let reply = ask(path, &query("alias.cdn.test.", RecordType::CNAME)).await;
        assert_eq!(reply.answers.len(), 1, "{path:?}");
    }
}

#[tokio::test]
async fn wildcard_and_multi_pop_domains() {
    for path in PATHS {
        for name in ["a.b.example.org.cdn.test.", "x.example.org.cdn.test."] {
            let reply = ask(path, &query(name, RecordType::A)).await;
            assert!(reply.metadata.authoritative, "{path:?} {name}");
            assert_eq!(addresses(&reply), [v4("203.0.113.40")], "{path:?} {name}");
            assert!(
                reply
                    .answers
                    .iter()
                    .all(|r| r.ttl == 45 && r.name.to_string() == name)
            );
        }
        // The wildcard's base name itself is not covered by it.
        let reply = ask(path, &query("example.org.cdn.test.", RecordType::A)).await;
        assert!(reply.answers.is_empty(), "{path:?}");

        // Two POPs, at most one address each.
        let reply = ask(path, &query("two.example.com.cdn.test.", RecordType::A)).await;
        let pops = pops_of(&reply);
        assert_eq!(pops.len(), 2, "{path:?}: {reply}");
        assert_eq!(
            pops,
            ["iad", "fra"],
            "{path:?}: the fallback list, in order"
        );
        assert_eq!(reply.answers.len(), 2, "{path:?}");
        assert!(reply.answers.iter().all(|r| r.ttl == 60), "{path:?}");
    }
}

#[tokio::test]
async fn delegations_are_referrals() {
    for path in PATHS {
        for name in ["sub.cdn.test.", "www.sub.cdn.test."] {
            let reply = ask(path, &query(name, RecordType::A)).await;
            assert_eq!(
                reply.metadata.response_code,
                ResponseCode::NoError,
                "{path:?} {name}"
            );
            assert!(
                !reply.metadata.authoritative,
                "{path:?} {name}: no AA on a referral"
            );
            assert!(reply.answers.is_empty(), "{path:?} {name}");
            let ns: Vec<String> = reply
                .authorities
                .iter()
                .filter_map(|r| match &r.data {
                    RData::NS(ns) => Some(ns.0.to_string()),
                    _ => None,
                })
                .collect();
            assert_eq!(ns, ["ns.sub.cdn.test."], "{path:?} {name}");
            assert_eq!(
                addresses_in(&reply.additionals),
                [v4("192.0.2.99")],
                "{path:?}: glue"
            );
        }
    }
}

fn addresses_in(records: &[hickory_proto::rr::Record]) -> Vec<std::net::IpAddr> {
    records
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(std::net::IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(std::net::IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn edns_reply_present_iff_query_had_opt() {
    for path in PATHS {
        let reply = ask(path, &query_edns("nope.cdn.test.", RecordType::A, 4096)).await;
        let edns: Edns = reply.edns.expect("OPT in reply");
        assert_eq!(edns.max_payload(), 1232, "{path:?}: our payload size");
        assert_eq!(edns.version(), 0, "{path:?}");
        let reply = ask(path, &query("nope.cdn.test.", RecordType::A)).await;
        assert!(reply.edns.is_none(), "{path:?}");
    }
}

#[tokio::test]
async fn udp_paths_agree_byte_for_byte_on_accelerated_answers() {
    // The fast path's answer must be exactly the full path's, ids aside.
    for name in [
        "www.example.com.cdn.test.",
        "WWW.example.com.cdn.test.",
        "two.example.com.cdn.test.",
    ] {
        for qtype in [RecordType::A, RecordType::AAAA] {
            let message = query_edns(name, qtype, 1232);
            let packet = message.to_vec().expect("encodes");
            let fast = ask_raw(Path::UdpFast, &packet).await;
            let full = ask_raw(Path::UdpFull, &packet).await;
            assert_eq!(fast, full, "{name} {qtype}");
        }
    }
}

#[tokio::test]
async fn listeners_share_a_port_follow_reloads_and_shut_down() {
    use std::net::{Ipv4Addr, SocketAddr};
    use std::sync::Arc;

    use meridian::snapshot::Snapshot;

    let dir = common::write_world();
    let snapshot = Snapshot::load(common::load_config(dir.path(), true)).expect("snapshot");
    let shared = Arc::new(arc_swap::ArcSwap::from_pointee(snapshot));
    let any_port = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let metrics = meridian::metrics::Metrics::new();
    let server = meridian::dns::start(&[any_port, any_port], Arc::clone(&shared), metrics)
        .await
        .expect("starts");
    assert_eq!(server.addrs.len(), 2);
    assert!(server.addrs.iter().all(|a| a.port() != 0));
    assert_ne!(server.addrs[0].port(), server.addrs[1].port());

    let packet = query("www.example.com.cdn.test.", RecordType::A)
        .to_vec()
        .expect("encodes");
    for addr in &server.addrs {
        for path in [Path::UdpFast, Path::Tcp] {
            let reply = common::exchange_raw(path, *addr, &packet, common::TIMEOUT)
                .await
                .unwrap_or_else(|| panic!("{path:?} {addr}: a reply"));
            let reply = Message::from_vec(&reply).expect("decodes");
            assert_eq!(reply.answers[0].ttl, 30, "{path:?} {addr}");
        }
    }

    // A new snapshot is answered from at once, fast-path tables included.
    let text = common::config_text(true).replace("ttl: 30", "ttl: 99");
    std::fs::write(dir.path().join("fast.yaml"), text).expect("config");
    let reloaded = Snapshot::load(common::load_config(dir.path(), true)).expect("snapshot");
    shared.store(Arc::new(reloaded));
    for path in [Path::UdpFast, Path::Tcp] {
        let reply = common::exchange_raw(path, server.addrs[0], &packet, common::TIMEOUT)
            .await
            .expect("a reply");
        let reply = Message::from_vec(&reply).expect("decodes");
        assert_eq!(reply.answers[0].ttl, 99, "{path:?}: the new snapshot");
    }

    let addr = server.addrs[0];
    let started = std::time::Instant::now();
    server.shutdown().await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "shutdown is prompt"
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "TCP closed"
    );
    // The port is free again for both protocols.
    assert!(std::net::UdpSocket::bind(addr).is_ok(), "UDP released");
}
