//! Per-domain access control, checked before any cache lookup or origin contact:
//! client address lists (CIDR), Referer lists (with `*.example.com` wildcards)
//! and signed URLs with an expiry. A refused request gets 403 with the reason and
//! `X-Cache: DENIED`.
//!
//! # Signed URLs (Meridian URL signing, version 1)
//!
//! A signed URL carries two query parameters:
//!
//! - `expires`: the Unix time (seconds) after which the URL is refused;
//! - `sig`: hex of HMAC-SHA256(secret, `PATH:EXPIRES`), where `PATH` is the
//!   request path exactly as sent (percent-encoding and all, no query) and
//!   `EXPIRES` the `expires` value as written.
//!
//! The `:` keeps the two apart: without it the last digits of a path could be
//! moved into `expires` and a signature for `/v1` would open `/v` for centuries.
//! Both parameters leave the cache key and the origin request, so every signed URL
//! for one object shares one cache entry. Signing in a shell:
//!
//! ```sh
//! printf '%s:%s' "$path" "$expires" | openssl dgst -sha256 -hmac "$secret" -r | cut -d' ' -f1
//! ```

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::time::SystemTime;

use axum::extract::ConnectInfo;
use axum::http::header::{self, HeaderName, HeaderValue};
use axum::http::{StatusCode, Uri, request};
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;
use subtle::ConstantTimeEq;

use super::proxy::X_CACHE;

/// The query parameter with the expiry of a signed URL.
pub const EXPIRES_PARAM: &str = "expires";
/// The query parameter with the signature of a signed URL.
pub const SIGNATURE_PARAM: &str = "sig";

/// Marks a request the node makes itself (a prefetch): it has no client to check.
/// Only code inside the node can put it on a request.
#[derive(Debug, Clone, Copy)]
pub struct Internal;

/// A domain's access rules; the default lets everyone in.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Who may connect, by address.
    pub client_ip: Option<IpRules>,
    /// Which pages may link to the domain's objects.
    pub referer: Option<RefererRules>,
    /// When set, every URL must be signed.
    pub signing: Option<UrlSigning>,
}

/// Client address lists: a listed `deny` refuses; a non-empty `allow` refuses
/// everyone it does not list.
#[derive(Debug, Clone, Default)]
pub struct IpRules {
    /// When not empty, the only networks let in.
    pub allow: Vec<IpNet>,
    /// Networks refused, whatever `allow` says.
    pub deny: Vec<IpNet>,
}

/// Referer lists, by the host of the Referer URL.
#[derive(Debug, Clone)]
pub struct RefererRules {
    /// When not empty, the only Referer hosts let in.
    pub allow: Vec<HostPattern>,
    /// Referer hosts refused, whatever `allow` says.
    pub deny: Vec<HostPattern>,
    /// Whether a request with no (or an empty) Referer is let in: browsers leave
    /// it out for typed URLs, bookmarks and many privacy settings.
    pub allow_empty: bool,
}

/// A host name, or `*.example.com`: every name below example.com, not the name
/// itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Exact(String),
    /// The suffix with its leading dot (`.example.com`).
    Below(String),
}

/// Verifies signed URLs with the domain's secret.
#[derive(Clone)]
pub struct UrlSigning {
    key: ring::hmac::Key,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("client address not allowed")]
    ClientIp,
    #[error("referer not allowed")]
    Referer,
    #[error("URL is not signed")]
    Unsigned,
    #[error("URL signature is invalid")]
    BadSignature,
    #[error("URL signature has expired")]
    Expired,
}

impl std::fmt::Debug for UrlSigning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UrlSigning(..)")
    }
}

impl Access {
    /// Whether the request may be served: address first, then Referer, then
    /// signature. Requests marked [`Internal`] are not checked.
    pub fn check(&self, request: &request::Parts, now: SystemTime) -> Result<(), Denied> {
        if request.extensions.get::<Internal>().is_some() {
            return Ok(());
        }
        if let Some(rules) = &self.client_ip {
            let peer = request
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(peer)| peer.ip().to_canonical());
            // No known peer with address rules in force: refuse rather than guess.
            if !peer.is_some_and(|ip| rules.allows(ip)) {
                return Err(Denied::ClientIp);
            }
        }
        if let Some(rules) = &self.referer {
            let referer = request
                .headers
                .get(header::REFERER)
                .map(|v| v.to_str().unwrap_or("?"));
            if !rules.allows(referer) {
                return Err(Denied::Referer);
            }
        }
        if let Some(signing) = &self.signing {
            let unix = now
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            signing.verify(&request.uri, unix)?;
        }
        Ok(())
    }

    /// The query without the signing parameters when this domain signs URLs: what
    /// the cache key and the origin see.
    pub fn strip_signature<'a>(&self, query: Option<&'a str>) -> Option<Cow<'a, str>> {
        let query = query?;
        if self.signing.is_none() {
            return Some(query.into());
        }
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| {
                let name = param_name(pair);
                name != EXPIRES_PARAM && name != SIGNATURE_PARAM
            })
            .collect();
        (!kept.is_empty()).then(|| kept.join("&").into())
    }
}

impl Denied {
    /// 403 with the reason, never stored by anyone.
    pub fn response(self) -> Response {
        (
            StatusCode::FORBIDDEN,
            [
                (
                    HeaderName::from_static(X_CACHE),
                    HeaderValue::from_static("DENIED"),
                ),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
            format!("{self}\n"),
        )
            .into_response()
    }
}

impl IpRules {
    fn allows(&self, ip: IpAddr) -> bool {
        !self.deny.iter().any(|net| net.contains(&ip))
            && (self.allow.is_empty() || self.allow.iter().any(|net| net.contains(&ip)))
    }
}

impl RefererRules {
    /// `referer` is the header's value, if sent.
    fn allows(&self, referer: Option<&str>) -> bool {
        let referer = referer.map(str::trim).filter(|r| !r.is_empty());
        let Some(referer) = referer else {
            return self.allow_empty;
        };
        // A Referer that names no host matches no pattern.
        let host = referer.parse::<Uri>().ok().and_then(|uri| {
            uri.host()
                .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
        });
        let listed = |patterns: &[HostPattern]| {
            host.as_deref()
                .is_some_and(|host| patterns.iter().any(|p| p.matches(host)))
        };
        !listed(&self.deny) && (self.allow.is_empty() || listed(&self.allow))
    }
}

impl HostPattern {
    /// Whether a lower-case host name matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            Self::Exact(name) => host == name,
            Self::Below(suffix) => host.len() > suffix.len() && host.ends_with(suffix.as_str()),
        }
    }
}

impl std::str::FromStr for HostPattern {
    type Err = String;

    /// Reads `www.example.com` or `*.example.com`, in any case.
    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim().trim_end_matches('.').to_ascii_lowercase();
        let (below, name) = match text.strip_prefix("*.") {
            Some(name) => (true, name),
            None => (false, text.as_str()),
        };
        let valid = !name.is_empty()
            && name
                .split('.')
                .all(|label| !label.is_empty() && label.bytes().all(is_host_byte));
        if !valid {
            return Err(format!(
                "`{text}` is not a host name or `*.` followed by one"
            ));
        }
        Ok(match below {
            true => Self::Below(format!(".{name}")),
            false => Self::Exact(name.to_string()),
        })
    }
}

impl UrlSigning {
    /// A verifier for URLs signed with `secret`.
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret),
        }
    }

    /// Checks the signature (in constant time), then the expiry.
    fn verify(&self, uri: &Uri, now: u64) -> Result<(), Denied> {
        let (mut expires, mut signature) = (None, None);
        for pair in uri.query().unwrap_or("").split('&') {
            let Some((name, value)) = pair.split_once('=') else {
                continue;
            };
            let slot = match name {
                EXPIRES_PARAM => &mut expires,
                SIGNATURE_PARAM => &mut signature,
                _ => continue,
            };
            // Twice is ambiguous: which one did the signer mean?
            if slot.replace(value).is_some() {
                return Err(Denied::BadSignature);
            }
        }
        let (Some(expires), Some(signature)) = (expires, signature) else {
            return Err(Denied::Unsigned);
        };
        let expected = self.signature(uri.path(), expires);
        let offered = signature.to_ascii_lowercase();
        if !bool::from(expected.as_bytes().ct_eq(offered.as_bytes())) {
            return Err(Denied::BadSignature);
        }
        match expires.parse::<u64>() {
            Ok(expires) if expires >= now => Ok(()),
            Ok(_) => Err(Denied::Expired),
            Err(_) => Err(Denied::BadSignature),
        }
    }

    /// Lower-case hex of HMAC-SHA256(secret, `path:expires`).
    fn signature(&self, path: &str, expires: &str) -> String {
        use std::fmt::Write;
        let message = format!("{path}:{expires}");
        let tag = ring::hmac::sign(&self.key, message.as_bytes());
        tag.as_ref()
            .iter()
            .fold(String::with_capacity(64), |mut hex, byte| {
                let _ = write!(hex, "{byte:02x}");
                hex
            })
    }
}

/// Letters, digits, `-` and `_` (seen in real host names, if not in RFC 1123).
fn is_host_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_'
}

/// The name of a `name=value` query pair.
fn param_name(pair: &str) -> &str {
    pair.split_once('=').map_or(pair, |(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, referer: Option<&str>, peer: Option<&str>) -> request::Parts {
        let mut builder = axum::http::Request::builder().uri(uri);
        if let Some(referer) = referer {
            builder = builder.header(header::REFERER, referer);
        }
        let (mut parts, ()) = builder.body(()).expect("request").into_parts();
        if let Some(peer) = peer {
            let peer: SocketAddr = peer.parse().expect("address");
            parts.extensions.insert(ConnectInfo(peer));
        }
        parts
    }

    fn at(unix: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(unix)
    }

    #[test]
    fn host_patterns() {
        let below: HostPattern = "*.Example.com.".parse().expect("pattern");
        assert_eq!(below, HostPattern::Below(".example.com".into()));
        assert!(below.matches("a.example.com"));
        assert!(below.matches("a.b.example.com"));
        assert!(!below.matches("example.com"));
        assert!(!below.matches("badexample.com"));
        let exact: HostPattern = "www.example.com".parse().expect("pattern");
        assert!(exact.matches("www.example.com"));
        assert!(!exact.matches("a.www.example.com"));
        for bad in [
            "", "*.", "a..b", "http://x", "a/b", "*x.com", "a.*.com", "x:80",
        ] {
            assert!(bad.parse::<HostPattern>().is_err(), "{bad}");
        }
    }

    #[test]
    fn referer_lists() {
        let rules = RefererRules {
            allow: vec!["*.example.com".parse().expect("pattern")],
            deny: vec!["bad.example.com".parse().expect("pattern")],
            allow_empty: false,
        };
        assert!(rules.allows(Some("https://www.example.com/page")));
        assert!(rules.allows(Some("http://WWW.EXAMPLE.COM.:8080/")));
        assert!(!rules.allows(Some("https://bad.example.com/")));
        assert!(!rules.allows(Some("https://example.org/")));
        assert!(!rules.allows(Some("not a url")));
        assert!(!rules.allows(None));
        assert!(!rules.allows(Some(" ")));
        let open = RefererRules {
            allow: Vec::new(),
            deny: vec!["bad.example.com".parse().expect("pattern")],
            allow_empty: true,
        };
        assert!(open.allows(None));
        assert!(open.allows(Some("https://example.org/")));
        assert!(!open.allows(Some("https://bad.example.com/x")));
    }

    #[test]
    fn client_ip_lists() {
        let access = Access {
            client_ip: Some(IpRules {
                allow: vec!["192.0.2.0/24".parse().expect("net")],
                deny: vec!["192.0.2.66/32".parse().expect("net")],
            }),
            ..Access::default()
        };
        let now = at(0);
        assert_eq!(
            access.check(&parts("/", None, Some("192.0.2.1:5")), now),
            Ok(())
        );
        // An IPv4 client on a dual-stack listener arrives IPv4-mapped.
        let mapped = parts("/", None, Some("[::ffff:192.0.2.1]:5"));
        assert_eq!(access.check(&mapped, now), Ok(()));
        for refused in ["192.0.2.66:5", "198.51.100.1:5", "[2001:db8::1]:5"] {
            let request = parts("/", None, Some(refused));
            assert_eq!(
                access.check(&request, now),
                Err(Denied::ClientIp),
                "{refused}"
            );
        }
        assert_eq!(
            access.check(&parts("/", None, None), now),
            Err(Denied::ClientIp)
        );
        let mut internal = parts("/", None, None);
        internal.extensions.insert(Internal);
        assert_eq!(access.check(&internal, now), Ok(()));
    }

    #[test]
    fn signed_urls() {
        // The reference value: printf '/a/b.jpg:1700000000' | openssl dgst -sha256 -hmac k3y
        let signing = UrlSigning::new(b"k3y");
        let sig = signing.signature("/a/b.jpg", "1700000000");
        assert_eq!(
            sig,
            "76877d6f83b7add5cd8d613733979aa15f868124091ce9b8cef97bd4c82151dd"
        );
        let access = Access {
            signing: Some(signing),
            ..Access::default()
        };
        let check = |uri: &str, now| access.check(&parts(uri, None, None), at(now));
        let good = format!("/a/b.jpg?v=1&expires=1700000000&sig={sig}");
        assert_eq!(check(&good, 1_700_000_000), Ok(()));
        assert_eq!(check(&good.replace(&sig, &sig.to_uppercase()), 1), Ok(()));
        assert_eq!(check(&good, 1_700_000_001), Err(Denied::Expired));
        let other_path = good.replace("/a/b.jpg", "/a/c.jpg");
        assert_eq!(check(&other_path, 1), Err(Denied::BadSignature));
        let later = good.replace("1700000000", "1800000000");
        assert_eq!(check(&later, 1), Err(Denied::BadSignature));
        assert_eq!(
            check("/a/b.jpg?expires=1700000000", 1),
            Err(Denied::Unsigned)
        );
        assert_eq!(check("/a/b.jpg", 1), Err(Denied::Unsigned));
        let twice = format!("{good}&sig={sig}");
        assert_eq!(check(&twice, 1), Err(Denied::BadSignature));
        assert_eq!(
            access.strip_signature(Some(&good[9..])).as_deref(),
            Some("v=1")
        );
        assert_eq!(access.strip_signature(Some("expires=1&sig=2")), None);
        assert_eq!(
            Access::default()
                .strip_signature(Some("expires=1"))
                .as_deref(),
            Some("expires=1")
        );
    }
}
