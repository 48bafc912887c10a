//! EDNS Client Subnet (RFC 7871) over real sockets, on every answer path: the echo,
//! the scope, routing by the client's subnet, and FORMERR for malformed options.

mod common;

use std::net::IpAddr;

use common::{
    PATHS, Path, addresses, ask, ask_raw, pops_of, query, query_ecs, query_edns, reply_ecs, v4, v6,
};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use ipnet::IpNet;

const WWW: &str = "www.example.com.cdn.test.";

/// Asks for `WWW` with ECS `addr/source` and returns the reply, the POPs answering,
/// and the scope.
async fn routed(
    path: Path,
    qtype: RecordType,
    addr: IpAddr,
    source: u8,
) -> (Message, Vec<&'static str>, u8) {
    let reply = ask(path, &query_ecs(WWW, qtype, addr, source)).await;
    assert_eq!(
        reply.metadata.response_code,
        ResponseCode::NoError,
        "{path:?} {addr}/{source}"
    );
    let subnet =
        reply_ecs(&reply).unwrap_or_else(|| panic!("{path:?} {addr}/{source}: ECS echoed"));
    assert_eq!(subnet.addr(), addr, "{path:?}: address echoed");
    assert_eq!(subnet.source_prefix(), source, "{path:?}: source echoed");
    let pops = pops_of(&reply);
    let scope = subnet.scope_prefix();
    (reply, pops, scope)
}

#[tokio::test]
async fn echo_of_family_source_and_address() {
    for path in PATHS {
        for (addr, source) in [
            (v4("10.20.1.0"), 24),
            (v4("10.20.1.128"), 25),
            (v4("10.0.0.0"), 8),
            (v6("2001:db8:aa00:100::"), 56),
            (v6("2001:db8:aa00::"), 40),
        ] {
            let (reply, _, scope) = routed(path, RecordType::A, addr, source).await;
            assert!(scope <= source, "{path:?} {addr}/{source}: scope {scope}");
            let subnet = reply_ecs(&reply).expect("ECS");
            assert_eq!(
                subnet.addr().is_ipv4(),
                addr.is_ipv4(),
                "{path:?}: family echoed"
            );
        }
    }
}

#[tokio::test]
async fn scope_is_the_longest_database_network() {
    for path in PATHS {
        // City 10.20.0.0/16, isp-x's 10.20.0.0/20 (two ASes' /21s): scope 20.
        let (_, pops, scope) = routed(path, RecordType::A, v4("10.20.1.0"), 24).await;
        assert_eq!(scope, 20, "{path:?}");
        assert_eq!(pops, ["ams"], "{path:?}");
        // Tokyo: City /16 and ASN /16.
        let (_, pops, scope) = routed(path, RecordType::A, v4("10.10.7.0"), 24).await;
        assert_eq!(scope, 16, "{path:?}");
        assert_eq!(pops, ["nrt"], "{path:?}");
    }
}

#[tokio::test]
async fn ipv6_scope_is_the_isp_block() {
    for path in PATHS {
        // City 2001:db8:cc00::/40 (Frankfurt), isp-x's 2001:db8:cc00::/44 (two
        // ASes' /45s): scope 44, on isp-x's POP.
        let (_, pops, scope) = routed(path, RecordType::AAAA, v6("2001:db8:cc08:100::"), 56).await;
        assert_eq!(scope, 44, "{path:?}");
        assert_eq!(pops, ["ams"], "{path:?}");
        // isp-x's 2001:db8:cc10::/96 splits its /64: the ISP is read from the
        // ASN network, whose /96 the source /56 caps.
        let (_, pops, scope) = routed(path, RecordType::AAAA, v6("2001:db8:cc10::"), 56).await;
        assert_eq!(scope, 56, "{path:?}");
        assert_eq!(pops, ["ams"], "{path:?}");
    }
}

#[tokio::test]
async fn scope_never_exceeds_the_source_prefix() {
    for path in PATHS {
        // City network 10.30.1.0/24, client gives /16 and /20: the scope is theirs.
        let (_, _, scope) = routed(path, RecordType::A, v4("10.30.0.0"), 16).await;
        assert_eq!(scope, 16, "{path:?}");
        let (_, _, scope) = routed(path, RecordType::A, v4("10.20.0.0"), 18).await;
        assert_eq!(scope, 18, "{path:?}: ASN /20 capped at the source /18");
        // /32 is used as /24 (policy cap), so the scope is at most 24.
        let (_, pops, scope) = routed(path, RecordType::A, v4("10.30.1.5"), 32).await;
        assert_eq!(scope, 24, "{path:?}");
        assert_eq!(pops, ["iad"], "{path:?}: Washington goes to Ashburn");
    }
}

#[tokio::test]
async fn ipv6_source_is_capped_at_56() {
    for path in PATHS {
        // City network 2001:db8:bb00:100::/64 (Frankfurt): a /64 source is used as
        // /56, so the scope is 56, not 64.
        let (_, pops, scope) = routed(path, RecordType::AAAA, v6("2001:db8:bb00:100::"), 64).await;
        assert_eq!(scope, 56, "{path:?}");
        assert_eq!(pops, ["fra"], "{path:?}");
        let (_, pops, scope) = routed(path, RecordType::AAAA, v6("2001:db8:aa00:500::"), 56).await;
        assert_eq!(scope, 40, "{path:?}: the City /40");
        assert_eq!(pops, ["nrt"], "{path:?}");
    }
}

#[tokio::test]
async fn source_zero_uses_the_resolver_address() {
    for path in PATHS {
        let (reply, pops, scope) = routed(path, RecordType::A, v4("0.0.0.0"), 0).await;
        assert_eq!(scope, 0, "{path:?}");
        let plain = ask(path, &query_edns(WWW, RecordType::A, 1232)).await;
        assert_eq!(
            addresses(&reply),
            addresses(&plain),
            "{path:?}: as if no ECS"
        );
        assert_eq!(
            pops,
            ["iad"],
            "{path:?}: 127.0.0.1 is unknown: the fallback"
        );
        let (_, _, scope) = routed(path, RecordType::AAAA, v6("::"), 0).await;
        assert_eq!(scope, 0, "{path:?}");
    }
}

#[tokio::test]
async fn override_networks_set_the_scope() {
    for path in PATHS {
        // Inside the 10.99.0.0/16 override: its prefix.
        let (_, pops, scope) = routed(path, RecordType::A, v4("10.99.5.0"), 24).await;
        assert_eq!(pops, ["nrt"], "{path:?}");
        assert_eq!(scope, 16, "{path:?}");
        // Next to it: long enough that the scope excludes the override network.
        let addr = v4("10.98.7.0");
        let (_, pops, scope) = routed(path, RecordType::A, addr, 24).await;
        assert_eq!(pops, ["iad"], "{path:?}");
        let cached = IpNet::new(addr, scope).expect("net").trunc();
        assert!(
            !cached.contains(&v4("10.99.0.0")),
            "{path:?}: {cached} takes in the override"
        );
        assert!(scope <= 24, "{path:?}");
    }
}

#[tokio::test]
async fn unknown_address_has_a_scope_when_the_database_is_more_specific() {
    for path in PATHS {
        let (_, pops, scope) = routed(path, RecordType::A, v4("10.40.0.0"), 24).await;
        assert_eq!(pops, ["iad"], "{path:?}: the fallback POP");
        assert!(
            scope > 0,
            "{path:?}: the miss holds only for its database network"
        );
        // Another address in the same miss network gets the same answer.
        let cached = IpNet::new(v4("10.40.0.0"), scope).expect("net").trunc();
        assert!(!cached.contains(&v4("10.20.0.0")) && !cached.contains(&v4("10.30.1.0")));
    }
}

#[tokio::test]
async fn routing_follows_the_subnet() {
    for path in PATHS {
        let (_, pops, _) = routed(path, RecordType::A, v4("10.10.1.0"), 24).await;
        assert_eq!(pops, ["nrt"], "{path:?}: Tokyo subnet");
        // Frankfurt, outside the isp-x ASN network: no ISP, the nearest POP.
        let (_, pops, _) = routed(path, RecordType::A, v4("10.20.200.0"), 24).await;
        assert_eq!(pops, ["fra"], "{path:?}: Frankfurt subnet");
        // Frankfurt on isp-x: Amsterdam, farther but on the client's ISP.
        let (_, pops, _) = routed(path, RecordType::A, v4("10.20.3.0"), 24).await;
        assert_eq!(pops, ["ams"], "{path:?}: ISP preference");
        let (_, pops, _) = routed(path, RecordType::AAAA, v4("10.20.3.0"), 24).await;
        assert_eq!(pops, ["ams"], "{path:?}: AAAA too");
    }
}

#[tokio::test]
async fn no_ecs_in_replies_to_queries_without_it() {
    for path in PATHS {
        for name in [WWW, "mail.cdn.test.", "nope.cdn.test."] {
            let reply = ask(path, &query_edns(name, RecordType::A, 1232)).await;
            assert!(reply.edns.is_some(), "{path:?}");
            assert!(reply_ecs(&reply).is_none(), "{path:?} {name}");
        }
    }
}

#[tokio::test]
async fn static_answers_have_scope_zero() {
    for path in PATHS {
        let reply = ask(
            path,
            &query_ecs("mail.cdn.test.", RecordType::A, v4("10.20.1.0"), 24),
        )
        .await;
        let subnet = reply_ecs(&reply).expect("ECS echoed");
        assert_eq!(
            subnet.scope_prefix(),
            0,
            "{path:?}: the same for every client"
        );
        // A CNAME to an accelerated name: the decision's scope.
        let reply = ask(
            path,
            &query_ecs("geo.cdn.test.", RecordType::A, v4("10.20.1.0"), 24),
        )
        .await;
        assert_eq!(
            reply_ecs(&reply).expect("ECS").scope_prefix(),
            20,
            "{path:?}"
        );
        assert_eq!(pops_of(&reply), ["ams"], "{path:?}");
    }
}

/// A query for `WWW`/A whose OPT carries exactly `option`.
fn with_option(option: &[u8]) -> Vec<u8> {
    let mut packet = query(WWW, RecordType::A).to_vec().expect("encodes");
    packet[11] = 1; // ARCOUNT
    packet.extend_from_slice(&[0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0]);
    packet.extend_from_slice(&(option.len() as u16).to_be_bytes());
    packet.extend_from_slice(option);
    packet
}

fn ecs_option(family: u16, source: u8, scope: u8, address: &[u8]) -> Vec<u8> {
    let mut option = vec![0, 8];
    option.extend_from_slice(&((4 + address.len()) as u16).to_be_bytes());
    option.extend_from_slice(&family.to_be_bytes());
    option.extend_from_slice(&[source, scope]);
    option.extend_from_slice(address);
    option
}

#[tokio::test]
async fn malformed_ecs_is_formerr() {
    let cases = [
        ("family 3", ecs_option(3, 24, 0, &[10, 1, 2])),
        ("IPv4 prefix 33", ecs_option(1, 33, 0, &[10, 1, 2, 3, 4])),
        ("IPv6 prefix 129", ecs_option(2, 129, 0, &[0x20; 17])),
        (
            "address longer than the prefix needs",
            ecs_option(1, 16, 0, &[10, 1, 2]),
        ),
        (
            "address shorter than the prefix needs",
            ecs_option(1, 24, 0, &[10, 1]),
        ),
        ("bits past the prefix", ecs_option(1, 20, 0, &[10, 1, 0x0F])),
        (
            "IPv6 bits past the prefix",
            ecs_option(2, 33, 0, &[0x20, 1, 0xd, 0xb8, 0x40]),
        ),
        (
            "option overruns the OPT record",
            vec![0, 8, 0, 20, 0, 1, 24, 0],
        ),
    ];
    for path in PATHS {
        for (what, option) in &cases {
            let packet = with_option(option);
            let reply = Message::from_vec(&ask_raw(path, &packet).await).expect("decodes");
            assert_eq!(
                reply.metadata.response_code,
                ResponseCode::FormErr,
                "{path:?}: {what}"
            );
            assert_eq!(
                reply.metadata.id,
                u16::from_be_bytes([packet[0], packet[1]]),
                "{path:?}"
            );
            assert!(reply.answers.is_empty(), "{path:?}: {what}");
            assert!(
                reply_ecs(&reply).is_none(),
                "{path:?}: {what}: no ECS echoed"
            );
        }
        // A well-formed option in the same frame is answered, with a non-zero
        // SCOPE in the query ignored.
        let reply = Message::from_vec(
            &ask_raw(path, &with_option(&ecs_option(1, 24, 9, &[10, 10, 1]))).await,
        )
        .expect("decodes");
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::NoError,
            "{path:?}"
        );
        assert_eq!(pops_of(&reply), ["nrt"], "{path:?}");
        assert_eq!(
            reply_ecs(&reply).expect("ECS").scope_prefix(),
            16,
            "{path:?}"
        );
    }
}
