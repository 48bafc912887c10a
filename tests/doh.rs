//! DNS over HTTPS end to end: real HTTP requests (reqwest) to an instance of the
//! common world started in-process on port 0, on the control plane (plain HTTP)
//! and on the TLS listener (HTTP/2 and HTTP/1.1 with a certificate made here),
//! compared with the same messages sent over UDP.
//!
//! The instance trusts 127.0.0.2 as a proxy: a client bound to 127.0.0.2 sends
//! `X-Forwarded-For` or `Forwarded` that counts, one on 127.0.0.1 is ignored.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{TIMEOUT, pops_of, query, query_ecs, reply_ecs, udp_exchange, v4};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use meridian::config::{Config, Overlay};
use meridian::server::Server;
use reqwest::StatusCode;
use reqwest::header::{CACHE_CONTROL, CONTENT_TYPE};

const WWW: &str = "www.example.com.cdn.test.";
const DNS_MESSAGE: &str = "application/dns-message";
/// The proxy the instance trusts.
const PROXY: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// An instance of the common world with DoH over TLS, and its files.
struct Harness {
    dir: tempfile::TempDir,
    server: Server,
}

impl Harness {
    async fn start() -> Self {
        let dir = common::write_world();
        write_certificate(dir.path(), "cert.pem", "key.pem");
        let text = format!(
            "{}listen:\n  doh-tls: 127.0.0.1:0\ndoh:\n  trusted-proxies: [127.0.0.2/32]\ntls:\n  certificate: cert.pem\n  key: key.pem\n",
            common::config_text(true)
        );
        std::fs::write(dir.path().join("doh.yaml"), text).expect("config");
        let overlay = Overlay {
            dns_listen: vec![SocketAddr::from((Ipv4Addr::LOCALHOST, 0))],
            http_listen: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))),
            no_watch: true,
            ..Overlay::default()
        };
        let config = Config::load(&dir.path().join("doh.yaml"), &overlay).expect("config loads");
        let server = meridian::server::start(config).await.expect("starts");
        Self { dir, server }
    }

    fn url(&self) -> String {
        format!(
            "http://{}/dns-query",
            self.server.http_addr().expect("control plane")
        )
    }

    fn tls_url(&self) -> String {
        let port = self.server.doh_tls_addr().expect("TLS listener").port();
        format!("https://localhost:{port}/dns-query")
    }

    /// The same message over UDP, decoded.
    async fn udp(&self, message: &Message) -> Message {
        let reply = udp_exchange(
            self.server.dns_addrs()[0],
            &message.to_vec().expect("encodes"),
            TIMEOUT,
        )
        .await
        .expect("UDP reply");
        Message::from_vec(&reply).expect("decodes")
    }
}

/// A self-signed certificate for `localhost`, written as PEM; returns its DER.
fn write_certificate(dir: &std::path::Path, cert: &str, key: &str) -> Vec<u8> {
    let made =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
    std::fs::write(dir.join(cert), made.cert.pem()).expect("write certificate");
    std::fs::write(dir.join(key), made.key_pair.serialize_pem()).expect("write key");
    made.cert.der().to_vec()
}

/// A plain HTTP client, connecting from `local`.
fn client_from(local: IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(TIMEOUT)
        .local_address(local)
        .build()
        .expect("HTTP client")
}

fn client() -> reqwest::Client {
    client_from(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// A client trusting the certificates in `dir`'s PEM files.
fn tls_client(dir: &std::path::Path, certs: &[&str], http1: bool) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .use_rustls_tls()
        .tls_info(true);
    for cert in certs {
        let pem = std::fs::read(dir.join(cert)).expect("read certificate");
        builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("PEM"));
    }
    if http1 {
        builder = builder.http1_only();
    }
    builder.build().expect("TLS client")
}

/// A DoH GET of `message`.
async fn get(client: &reqwest::Client, url: &str, message: &Message) -> reqwest::Response {
    let encoded = URL_SAFE_NO_PAD.encode(message.to_vec().expect("encodes"));
    client
        .get(format!("{url}?dns={encoded}"))
        .header("accept", DNS_MESSAGE)
        .send()
        .await
        .expect("GET")
}

/// A DoH POST of `message`.
async fn post(client: &reqwest::Client, url: &str, message: &Message) -> reqwest::Response {
    client
        .post(url)
        .header(CONTENT_TYPE, DNS_MESSAGE)
        .body(message.to_vec().expect("encodes"))
        .send()
        .await
        .expect("POST")
}

/// The DNS message of a 200 DoH response, and its Cache-Control.
async fn decoded(response: reqwest::Response) -> (Message, String) {
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers().get(CONTENT_TYPE).expect("content type"),
        DNS_MESSAGE
    );
    let cache = response
        .headers()
        .get(CACHE_CONTROL)
        .expect("Cache-Control")
        .to_str()
        .expect("text")
        .to_string();
    let body = response.bytes().await.expect("body");
    (Message::from_vec(&body).expect("DNS message"), cache)
}

/// The `error` of a JSON error body.
async fn reason(response: reqwest::Response) -> String {
    let body: serde_json::Value = response.json().await.expect("JSON error body");
    body["error"].as_str().expect("error").to_string()
}

#[tokio::test]
async fn get_and_post_answer_as_udp_does_with_the_same_ecs() {
    let h = Harness::start().await;
    for (subnet, prefix, pop) in [
        ("10.10.0.0", 24, "nrt"),
        ("10.20.200.0", 24, "fra"),
        ("10.30.1.0", 24, "iad"),
    ] {
        let message = query_ecs(WWW, RecordType::A, v4(subnet), prefix);
        let udp = h.udp(&message).await;
        assert_eq!(pops_of(&udp), [pop]);
        for response in [
            get(&client(), &h.url(), &message).await,
            post(&client(), &h.url(), &message).await,
        ] {
            let (doh, cache) = decoded(response).await;
            assert_eq!(doh.metadata.id, message.metadata.id, "the id is echoed");
            assert_eq!(doh.answers, udp.answers, "{subnet}");
            assert_eq!(reply_ecs(&doh), reply_ecs(&udp), "{subnet}: same ECS scope");
            assert_eq!(cache, "max-age=30");
        }
    }
}

#[tokio::test]
async fn without_ecs_the_http_client_is_located() {
    let h = Harness::start().await;
    let message = query(WWW, RecordType::A);
    // 127.0.0.1 is nowhere: the fallback (iad); its forwarded header is ignored.
    let response = client()
        .get(format!(
            "{}?dns={}",
            h.url(),
            URL_SAFE_NO_PAD.encode(message.to_vec().expect("encodes"))
        ))
        .header("x-forwarded-for", "10.10.0.5")
        .send()
        .await
        .expect("GET");
    let (doh, _) = decoded(response).await;
    assert_eq!(pops_of(&doh), ["iad"]);
    assert!(reply_ecs(&doh).is_none(), "no ECS asked, none answered");

    // From the trusted proxy, the forwarded client counts.
    let proxy = client_from(PROXY);
    for (name, value, pop) in [
        ("x-forwarded-for", "6.6.6.6, 10.10.0.5", "nrt"),
        ("forwarded", "for=10.20.200.1", "fra"),
        ("forwarded", "for=\"10.30.1.9:4711\"", "iad"),
    ] {
        let response = proxy
            .post(h.url())
            .header(CONTENT_TYPE, DNS_MESSAGE)
            .header(name, value)
            .body(message.to_vec().expect("encodes"))
            .send()
            .await
            .expect("POST");
        let (doh, _) = decoded(response).await;
        assert_eq!(pops_of(&doh), [pop], "{name}: {value}");
    }
    // ECS in the message wins over the forwarded address.
    let with_ecs = query_ecs(WWW, RecordType::A, v4("10.20.200.0"), 24);
    let response = proxy
        .post(h.url())
        .header(CONTENT_TYPE, DNS_MESSAGE)
        .header("x-forwarded-for", "10.10.0.5")
        .body(with_ecs.to_vec().expect("encodes"))
        .send()
        .await
        .expect("POST");
    assert_eq!(pops_of(&decoded(response).await.0), ["fra"]);
}

#[tokio::test]
async fn cache_control_follows_the_answer_ttl_or_the_negative_ttl() {
    let h = Harness::start().await;
    let cases = [
        ("two.example.com.cdn.test.", RecordType::A, "max-age=60"),
        ("target.cdn.test.", RecordType::A, "max-age=3600"),
        // NXDOMAIN and NODATA: min(SOA TTL 3600, MINIMUM 300).
        ("nothing.cdn.test.", RecordType::A, "max-age=300"),
        (WWW, RecordType::MX, "max-age=300"),
        // REFUSED: nothing to cache.
        ("www.example.net.", RecordType::A, "max-age=0"),
    ];
    for (name, qtype, expected) in cases {
        let (_, cache) = decoded(get(&client(), &h.url(), &query(name, qtype)).await).await;
        assert_eq!(cache, expected, "{name} {qtype}");
    }
}

#[tokio::test]
async fn malformed_dns_is_answered_in_dns_and_unanswerable_requests_get_4xx() {
    let h = Harness::start().await;
    let http = client();
    // QDCOUNT 0 is a DNS problem: FORMERR, over HTTP 200.
    let mut no_question = query(WWW, RecordType::A).to_vec().expect("encodes");
    no_question[4..6].copy_from_slice(&[0, 0]);
    no_question.truncate(12);
    let response = http
        .post(h.url())
        .header(CONTENT_TYPE, DNS_MESSAGE)
        .body(no_question)
        .send()
        .await
        .expect("POST");
    assert_eq!(
        decoded(response).await.0.metadata.response_code,
        ResponseCode::FormErr
    );

    let url = h.url();
    let cases: Vec<(reqwest::RequestBuilder, StatusCode, &str)> = vec![
        (
            http.get(&url),
            StatusCode::BAD_REQUEST,
            "missing query parameter `dns`",
        ),
        (
            http.get(format!("{url}?dns=")),
            StatusCode::BAD_REQUEST,
            "missing query parameter `dns`",
        ),
        (
            http.get(format!("{url}?dns=!!!")),
            StatusCode::BAD_REQUEST,
            "base64url",
        ),
        (
            http.get(format!("{url}?dns=AAAA")),
            StatusCode::BAD_REQUEST,
            "not a DNS message",
        ),
        (
            http.get(format!(
                "{url}?dns={}",
                URL_SAFE_NO_PAD.encode(response_bytes())
            )),
            StatusCode::BAD_REQUEST,
            "not a DNS query",
        ),
        (
            http.post(&url)
                .header(CONTENT_TYPE, "application/json")
                .body("{}"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/dns-message",
        ),
        (
            http.post(&url)
                .body(query(WWW, RecordType::A).to_vec().expect("encodes")),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type",
        ),
        (
            http.post(&url)
                .header(CONTENT_TYPE, DNS_MESSAGE)
                .body(vec![0_u8; 70_000]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body over 65536 bytes",
        ),
        (
            http.put(&url).body("x"),
            StatusCode::METHOD_NOT_ALLOWED,
            "GET or POST",
        ),
        (
            http.delete(&url),
            StatusCode::METHOD_NOT_ALLOWED,
            "GET or POST",
        ),
    ];
    for (request, status, phrase) in cases {
        let response = request.send().await.expect("request");
        assert_eq!(response.status(), status, "{phrase}");
        let reason = reason(response).await;
        assert!(reason.contains(phrase), "`{phrase}` not in `{reason}`");
    }
    // Counted under transport="doh", errors by reason.
    let metrics = client()
        .get(format!(
            "http://{}/metrics",
            h.server.http_addr().expect("control plane")
        ))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains(
            r#"meridian_dns_queries_total{qtype="NONE",rcode="FORMERR",transport="doh"} 1"#
        ),
        "{metrics}"
    );
    for reason in [
        "missing_parameter",
        "bad_base64",
        "malformed",
        "unsupported_media_type",
        "too_large",
        "method_not_allowed",
    ] {
        assert!(
            metrics.contains(&format!("meridian_doh_errors_total{{reason=\"{reason}\"}}")),
            "{reason}: {metrics}"
        );
    }
}

/// A DNS response (QR set): not something to answer.
fn response_bytes() -> Vec<u8> {
    let mut bytes = query(WWW, RecordType::A).to_vec().expect("encodes");
    bytes[2] |= 0x80;
    bytes
}

#[tokio::test]
async fn tls_serves_http2_and_http1_and_reloads_its_certificate() {
    let h = Harness::start().await;
    let message = query_ecs(WWW, RecordType::A, v4("10.10.0.0"), 24);
    let udp = h.udp(&message).await;
    for http1 in [false, true] {
        let response = post(
            &tls_client(h.dir.path(), &["cert.pem"], http1),
            &h.tls_url(),
            &message,
        )
        .await;
        let expected = if http1 {
            reqwest::Version::HTTP_11
        } else {
            reqwest::Version::HTTP_2
        };
        assert_eq!(response.version(), expected);
        let (doh, cache) = decoded(response).await;
        assert_eq!(doh.answers, udp.answers);
        assert_eq!(reply_ecs(&doh), reply_ecs(&udp));
        assert_eq!(cache, "max-age=30");
    }
    // The control plane's routes are not on the TLS listener.
    let port = h.server.doh_tls_addr().expect("TLS").port();
    let response = tls_client(h.dir.path(), &["cert.pem"], false)
        .get(format!("https://localhost:{port}/v1/pops"))
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    // A new certificate in place of the old one is served after a reload.
    std::fs::rename(h.dir.path().join("cert.pem"), h.dir.path().join("old.pem")).expect("keep");
    let new = write_certificate(h.dir.path(), "cert.pem", "key.pem");
    h.server.reload().await.expect("reloads");
    let client = tls_client(h.dir.path(), &["cert.pem", "old.pem"], false);
    let response = get(&client, &h.tls_url(), &message).await;
    let served = response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .expect("peer certificate")
        .to_vec();
    assert_eq!(served, new, "the reloaded certificate is served");
    assert_eq!(decoded(response).await.0.answers, udp.answers);
}
