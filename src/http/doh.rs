//! DNS over HTTPS (RFC 8484): `GET /dns-query?dns=<base64url>` and `POST
//! /dns-query` with `Content-Type: application/dns-message`, on the control plane
//! and on the TLS listener (`tls`).
//!
//! A DoH message takes exactly the path a TCP query takes: `wire::parse`, then
//! `resolve::resolve` with a `Trace`, then `encode` with no size limit; so a DoH
//! answer is the DNS answer. The client is the ECS subnet in the message if it has
//! one, else the HTTP client (`forwarded`: the connecting address, or the address
//! a trusted proxy forwarded), which unlike a resolver is the end user itself.
//!
//! Statuses: 200 with the DNS message (FORMERR, REFUSED and the like are DNS
//! answers too); 400 when there is no message to answer (missing or undecodable
//! `dns` parameter, shorter than a DNS header, a response rather than a query); 413
//! body over [`MAX_BODY`]; 415 another content type; 405 another method. Every
//! error has a `{"error": "..."}` body saying why and is counted by reason.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use hickory_proto::rr::RData;

use super::{AppState, error, forwarded};
use crate::dns::resolve::{self, Response as DnsResponse};
use crate::dns::wire::{self, ParseError};
use crate::dns::{encode, wire::HEADER_LEN};
use crate::metrics::queries::Reply;

/// The path RFC 8484 suggests and clients default to.
pub const PATH: &str = "/dns-query";
/// The media type of a DNS message in either direction.
pub const CONTENT_TYPE: &str = "application/dns-message";
/// Largest POST body accepted: no DNS message is longer than 65535 octets.
pub const MAX_BODY: usize = 64 * 1024;

/// base64url: RFC 8484 says without padding; padding is tolerated as some clients
/// send it.
const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The DoH route, for the control plane and the TLS listener alike.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            PATH,
            get(get_query).post(post_query).fallback(method_not_allowed),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

/// `GET /dns-query?dns=...`.
async fn get_query(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let Some(encoded) = query.as_deref().and_then(dns_parameter) else {
        return refuse(
            &state,
            StatusCode::BAD_REQUEST,
            "missing_parameter",
            "missing query parameter `dns`",
        );
    };
    let message = match BASE64URL.decode(encoded) {
        Ok(message) => message,
        Err(e) => {
            return refuse(
                &state,
                StatusCode::BAD_REQUEST,
                "bad_base64",
                &format!("`dns` is not base64url: {e}"),
            );
        }
    };
    answer(&state, peer, &headers, &message)
}

/// `POST /dns-query` with the message as the body.
async fn post_query(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if !is_dns_message(&headers) {
        return refuse(
            &state,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            &format!("Content-Type must be {CONTENT_TYPE}"),
        );
    }
    match body {
        Ok(body) => answer(&state, peer, &headers, &body),
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => refuse(
            &state,
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            &format!("body over {MAX_BODY} bytes"),
        ),
        Err(rejection) => refuse(
            &state,
            rejection.status(),
            "malformed",
            &rejection.body_text(),
        ),
    }
}

/// Any other method.
async fn method_not_allowed(State(state): State<AppState>) -> Response {
    let mut response = refuse(
        &state,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "DoH takes GET or POST",
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, POST"));
    response
}

/// Answers one DNS message as UDP and TCP would, with no size limit.
fn answer(state: &AppState, peer: SocketAddr, headers: &HeaderMap, message: &[u8]) -> Response {
    let snapshot = state.shared.load_full();
    let source = forwarded::client_address(peer, headers, &snapshot.config.doh.trusted_proxies);
    let recorder = state.metrics.doh_recorder();
    let mut trace = recorder.trace();
    let response = match wire::parse(message) {
        Ok(query) => resolve::resolve(&snapshot, &query, source, &mut trace),
        Err(ParseError::Malformed(malformed)) => resolve::reject(&snapshot, &malformed),
        Err(ParseError::Drop(reason)) => {
            let reason = if message.len() < HEADER_LEN {
                format!("not a DNS message: {reason}")
            } else {
                format!("not a DNS query: {reason}")
            };
            return refuse(state, StatusCode::BAD_REQUEST, "malformed", &reason);
        }
    };
    recorder.record(&snapshot, &Reply::of(&response), &trace);
    let mut out = Vec::with_capacity(512);
    if !encode::encode_or_servfail(&response, u16::MAX, &mut out) {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the answer cannot be encoded",
        );
    }
    let cache_control = format!("max-age={}", max_age(&response));
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_str(&cache_control)
                    .unwrap_or_else(|_| HeaderValue::from_static("max-age=0")),
            ),
        ],
        out,
    )
        .into_response()
}

/// How long an HTTP cache may keep the answer (RFC 8484 section 5.1): the smallest
/// TTL in the answer section; with no answer, the negative-caching TTL of the SOA
/// in the authority section (RFC 2308: the smaller of its TTL and MINIMUM); with
/// neither (errors, referrals), the smallest authority TTL, else 0.
pub fn max_age(response: &DnsResponse<'_>) -> u32 {
    if let Some(ttl) = response.answers.iter().map(|r| r.ttl).min() {
        return ttl;
    }
    let soa = response.authorities.iter().find_map(|r| match &r.data {
        RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
        _ => None,
    });
    soa.or_else(|| response.authorities.iter().map(|r| r.ttl).min())
        .unwrap_or(0)
}

/// The value of the first `dns=` in a query string.
fn dns_parameter(query: &str) -> Option<&str> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("dns="))
        .filter(|value| !value.is_empty())
}

/// Whether the request says its body is a DNS message (parameters and case aside).
fn is_dns_message(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(CONTENT_TYPE))
}

/// An error response, counted by `reason`.
fn refuse(state: &AppState, status: StatusCode, reason: &'static str, message: &str) -> Response {
    state.metrics.doh_error(reason);
    error(status, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dns_parameter_is_found_among_others() {
        assert_eq!(dns_parameter("dns=AAAB"), Some("AAAB"));
        assert_eq!(dns_parameter("ct=x&dns=AAAB&x=1"), Some("AAAB"));
        assert_eq!(dns_parameter("dns="), None);
        assert_eq!(dns_parameter("xdns=AAAB"), None);
        assert_eq!(dns_parameter(""), None);
    }

    #[test]
    fn base64url_with_and_without_padding() {
        assert_eq!(BASE64URL.decode("-_8").expect("decodes"), vec![0xfb, 0xff]);
        assert_eq!(BASE64URL.decode("-_8=").expect("decodes"), vec![0xfb, 0xff]);
        assert!(
            BASE64URL.decode("+/8").is_err(),
            "standard alphabet refused"
        );
    }

    #[test]
    fn content_types() {
        let mut headers = HeaderMap::new();
        assert!(!is_dns_message(&headers));
        for (value, expected) in [
            ("application/dns-message", true),
            ("Application/DNS-Message; charset=binary", true),
            ("application/json", false),
            ("application/dns-message-x", false),
        ] {
            headers.insert(header::CONTENT_TYPE, value.parse().expect("header"));
            assert_eq!(is_dns_message(&headers), expected, "{value}");
        }
    }
}
