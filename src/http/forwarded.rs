//! Who the HTTP client is: the connecting address, unless that is a trusted proxy
//! (`doh.trusted-proxies`), which may name the client in `Forwarded: for=` (RFC
//! 7239) or `X-Forwarded-For`, and the scheme it was reached by in
//! `X-Forwarded-Proto`. DoH and the 302 router both locate the client this way.
//!
//! Each proxy appends the address it was reached from, so the list is read from the
//! right: trusted proxies are skipped and the first address that is not one is the
//! client. Anything left of it was written by the client itself and is ignored; an
//! entry that is not an address (`unknown`, an obfuscated `_node`) stops the walk
//! at the last hop that could be trusted.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use axum::http::header::FORWARDED;
use ipnetwork::IpNetwork;

/// `X-Forwarded-For`, the de-facto header most proxies send.
const X_FORWARDED_FOR: &str = "x-forwarded-for";
/// `X-Forwarded-Proto`: `http` or `https`, as the client reached the proxy.
const X_FORWARDED_PROTO: &str = "x-forwarded-proto";

/// The client's address for a request from `peer`.
pub fn client_address(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpNetwork]) -> IpAddr {
    let peer = canonical(peer.ip());
    if !is_trusted(peer, trusted) {
        return peer;
    }
    let hops = forwarded_for(headers).or_else(|| x_forwarded_for(headers));
    let Some(hops) = hops else {
        return peer;
    };
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Some(addr) = hop else {
            return client;
        };
        client = canonical(*addr);
        if !is_trusted(client, trusted) {
            return client;
        }
    }
    // Every hop was a trusted proxy: the first of them is as close as we get.
    client
}

/// Whether a trusted proxy says the client reached it over TLS; false when the peer
/// is not trusted or says nothing usable.
pub fn forwarded_https(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpNetwork]) -> bool {
    if !is_trusted(canonical(peer.ip()), trusted) {
        return false;
    }
    let Some(value) = headers.get(X_FORWARDED_PROTO).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    // The leftmost value is the scheme the client itself used.
    value
        .split(',')
        .next()
        .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
}

fn is_trusted(addr: IpAddr, trusted: &[IpNetwork]) -> bool {
    trusted.iter().any(|network| network.contains(addr))
}

/// The `for=` of every element of every `Forwarded` header, in order; None if there
/// is no such header. An entry is None when it is not an address.
fn forwarded_for(headers: &HeaderMap) -> Option<Vec<Option<IpAddr>>> {
    let mut hops = Vec::new();
    let mut any = false;
    for value in headers.get_all(FORWARDED) {
        any = true;
        let Ok(value) = value.to_str() else {
            hops.push(None);
            continue;
        };
        for element in value.split(',') {
            let node = element.split(';').find_map(|pair| {
                let (key, value) = pair.split_once('=')?;
                key.trim().eq_ignore_ascii_case("for").then_some(value)
            });
            // An element without `for=` says nothing about the client.
            if let Some(node) = node {
                hops.push(parse_node(node));
            }
        }
    }
    (any && !hops.is_empty()).then_some(hops)
}

/// The entries of every `X-Forwarded-For` header, in order; None if there is none.
fn x_forwarded_for(headers: &HeaderMap) -> Option<Vec<Option<IpAddr>>> {
    let mut hops = Vec::new();
    for value in headers.get_all(X_FORWARDED_FOR) {
        match value.to_str() {
            Ok(value) => hops.extend(value.split(',').map(parse_node)),
            Err(_) => hops.push(None),
        }
    }
    (!hops.is_empty()).then_some(hops)
}

/// An address as a proxy writes it: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`,
/// `[2001:db8::1]`, `[2001:db8::1]:4711`, quoted or not.
fn parse_node(text: &str) -> Option<IpAddr> {
    let text = text.trim().trim_matches('"');
    if let Ok(addr) = text.parse::<IpAddr>() {
        return Some(addr);
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    text.strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .and_then(|t| t.parse().ok())
}

/// An IPv4-mapped IPv6 peer is the IPv4 client it stands for.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().expect("header value"));
        }
        map
    }

    fn peer(text: &str) -> SocketAddr {
        SocketAddr::new(text.parse().expect("address"), 40000)
    }

    fn trusted() -> Vec<IpNetwork> {
        vec![
            "127.0.0.0/8".parse().expect("network"),
            "10.0.0.0/8".parse().expect("network"),
        ]
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("address")
    }

    #[test]
    fn untrusted_peers_are_the_client_whatever_they_send() {
        let h = headers(&[
            ("x-forwarded-for", "198.51.100.7"),
            ("forwarded", "for=1.2.3.4"),
        ]);
        assert_eq!(
            client_address(peer("192.0.2.1"), &h, &trusted()),
            ip("192.0.2.1")
        );
        assert_eq!(client_address(peer("192.0.2.1"), &h, &[]), ip("192.0.2.1"));
    }

    #[test]
    fn the_rightmost_untrusted_entry_is_the_client() {
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.1.1.1")]);
        assert_eq!(
            client_address(peer("127.0.0.1"), &h, &trusted()),
            ip("198.51.100.7")
        );
        // Several header lines are one list.
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "198.51.100.8"),
        ]);
        assert_eq!(
            client_address(peer("127.0.0.1"), &h, &trusted()),
            ip("198.51.100.8")
        );
        // All trusted: the leftmost.
        let h = headers(&[("x-forwarded-for", "10.2.2.2, 10.1.1.1")]);
        assert_eq!(
            client_address(peer("127.0.0.1"), &h, &trusted()),
            ip("10.2.2.2")
        );
        // Garbage on the right: the last trusted hop.
        let h = headers(&[("x-forwarded-for", "198.51.100.7, nonsense")]);
        assert_eq!(
            client_address(peer("127.0.0.1"), &h, &trusted()),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn forwarded_wins_over_x_forwarded_for_and_reads_every_form() {
        let h = headers(&[
            (
                "forwarded",
                "for=\"[2001:db8:cafe::17]:4711\";proto=https, For=10.1.1.1",
            ),
            ("x-forwarded-for", "198.51.100.9"),
        ]);
        assert_eq!(
            client_address(peer("127.0.0.1"), &h, &trusted()),
            ip("2001:db8:cafe::17")
        );
        let h = headers(&[("forwarded", "by=10.0.0.1;for=192.0.2.43:47011")]);
        assert_eq!(
            client_address(peer("127.0.0.1"), &h, &trusted()),
            ip("192.0.2.43")
        );
        let h = headers(&[("forwarded", "for=unknown")]);
        assert_eq!(
            client_address(peer("127.0.0.1"), &h, &trusted()),
            ip("127.0.0.1")
        );
        // A Forwarded header without `for=` says nothing about the client:
        // X-Forwarded-For does.
        let h = headers(&[
            ("forwarded", "proto=https"),
            ("x-forwarded-for", "198.51.100.9"),
        ]);
        assert_eq!(
            client_address(peer("127.0.0.1"), &h, &trusted()),
            ip("198.51.100.9")
        );
    }

    #[test]
    fn mapped_peers_and_entries_are_ipv4() {
        let h = headers(&[("x-forwarded-for", "::ffff:198.51.100.7")]);
        assert_eq!(
            client_address(peer("::ffff:127.0.0.1"), &h, &trusted()),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn the_scheme_comes_only_from_trusted_proxies() {
        let h = headers(&[("x-forwarded-proto", "HTTPS, http")]);
        assert!(forwarded_https(peer("127.0.0.1"), &h, &trusted()));
        assert!(!forwarded_https(peer("192.0.2.1"), &h, &trusted()));
        let h = headers(&[("x-forwarded-proto", "http")]);
        assert!(!forwarded_https(peer("127.0.0.1"), &h, &trusted()));
    }
}
