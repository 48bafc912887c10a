//! `meridian demo` as a newcomer runs it: the real binary, the whole CDN on
//! loopback, checked the way its printed guide says: DNS sends a client in Tokyo
//! to nrt's cache node, which serves a MISS then a HIT, and the nodes' health
//! reaches Meridian. Ctrl-C stops it cleanly.
//!
//! The demo runs on a loopback /24 of its own (127.x.y.0, from the process id),
//! so its fixed ports cannot collide with another test or a demo already running.

mod common;

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{addresses, query_ecs};
use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;
use reqwest::StatusCode;
use serde_json::Value;

/// How long the demo may take to come up, or to stop (a bound, not a
/// synchronisation).
const DEADLINE: Duration = Duration::from_secs(30);

/// A client in Tokyo, as the demo's guide has it.
const TOKYO: &str = "118.156.18.0";

/// The demo running as a child process, killed if a test fails half way.
struct Demo {
    child: Child,
    stdout: Option<JoinHandle<String>>,
    stderr: Option<JoinHandle<String>>,
    /// The loopback /24 the demo runs on: 127.x.y.0.
    net: [u8; 3],
}

impl Demo {
    fn start() -> Self {
        let pid = std::process::id();
        let net = [127, 100 + (pid % 100) as u8, (pid / 100 % 256) as u8];
        let ip = |last: u8| Ipv4Addr::new(net[0], net[1], net[2], last);
        let mut child = Command::new(env!("CARGO_BIN_EXE_meridian"))
            .args(["demo", "--dns-listen"])
            .arg(format!("{}:5353", ip(1)))
            .arg("--http-listen")
            .arg(format!("{}:8053", ip(1)))
            .arg("--http-router-listen")
            .arg(format!("{}:8080", ip(1)))
            .arg("--cache-first-address")
            .arg(ip(11).to_string())
            .args(["--cache-port", "8081"])
            .env_remove("MERIDIAN_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run meridian demo");
        // Drained on threads so a full pipe never blocks the demo.
        let drain = |mut pipe: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = pipe.read_to_string(&mut text);
                text
            })
        };
        let stdout = drain(Box::new(child.stdout.take().expect("stdout")));
        let stderr = drain(Box::new(child.stderr.take().expect("stderr")));
        Self {
            child,
            stdout: Some(stdout),
            stderr: Some(stderr),
            net,
        }
    }

    fn ip(&self, last: u8) -> Ipv4Addr {
        Ipv4Addr::new(self.net[0], self.net[1], self.net[2], last)
    }

    /// Sends SIGINT, as Ctrl-C does, and waits for the exit; returns the status,
    /// stdout and stderr.
    fn interrupt(mut self) -> (ExitStatus, String, String) {
        let sent = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -INT failed");
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for the demo") {
                break status;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "the demo did not stop on SIGINT"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let join = |h: Option<JoinHandle<String>>| h.map(|h| h.join().unwrap_or_default());
        let stdout = join(self.stdout.take()).unwrap_or_default();
        let stderr = join(self.stderr.take()).unwrap_or_default();
        (status, stdout, stderr)
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One A query with ECS over UDP; `None` if nothing answers in time (the demo
/// may not be listening yet).
async fn ask(dns: SocketAddr, subnet: Ipv4Addr) -> Option<Message> {
    let packet = query_ecs(
        "www.example.com.cdn.test.",
        RecordType::A,
        IpAddr::V4(subnet),
        24,
    )
    .to_vec()
    .expect("query encodes");
    let socket = tokio::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("client socket");
    socket.send_to(&packet, dns).await.ok()?;
    let mut buf = vec![0; 65_535];
    let (len, _) = tokio::time::timeout(Duration::from_millis(500), socket.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    Message::from_vec(&buf[..len]).ok()
}

/// The POPs whose pushed health Meridian shows as up.
async fn pushed_up(http: &reqwest::Client, control: SocketAddr) -> Vec<String> {
    let Ok(response) = http.get(format!("http://{control}/v1/pops")).send().await else {
        return Vec::new();
    };
    let Ok(pops) = response.json::<Value>().await else {
        return Vec::new();
    };
    pops["pops"]
        .as_array()
        .map(|pops| {
            pops.iter()
                .filter(|p| p["health"] == "up" && p["seq"].as_u64().is_some())
                .filter_map(|p| p["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn demo_routes_tokyo_to_its_cache_node_which_serves_a_miss_then_a_hit() {
    let demo = Demo::start();
    let (dns, control) = (
        SocketAddr::from((demo.ip(1), 5353)),
        SocketAddr::from((demo.ip(1), 8053)),
    );
    let nrt = SocketAddr::from((demo.ip(11), 8081));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("HTTP client");

    // Up once every cache node's health push has been accepted.
    let start = Instant::now();
    loop {
        let mut up = pushed_up(&http, control).await;
        up.sort();
        if up == ["fra", "gru", "iad", "nrt"] {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "pushed health never reached Meridian for every node (up: {up:?})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // DNS sends a client in Tokyo to nrt's cache node, and only there.
    let reply = ask(dns, TOKYO.parse().expect("subnet"))
        .await
        .expect("a DNS answer");
    assert_eq!(addresses(&reply), [IpAddr::V4(demo.ip(11))]);

    // There, the first GET goes to the origin and the second is served cached.
    let mut seen = Vec::new();
    for _ in 0..2 {
        let response = http
            .get(format!("http://{nrt}/hello.txt"))
            .header("Host", "www.example.com")
            .send()
            .await
            .expect("GET from nrt's cache node");
        assert_eq!(response.status(), StatusCode::OK);
        let x_cache = response.headers()["x-cache"]
            .to_str()
            .expect("X-Cache")
            .to_string();
        let body = response.text().await.expect("body");
        assert_eq!(body, "Hello from the Meridian demo origin.\n");
        seen.push(x_cache);
    }
    assert_eq!(seen, ["MISS", "HIT"]);

    let (status, stdout, stderr) = demo.interrupt();
    assert!(status.success(), "demo exit {status:?}: {stderr}");
    // The guide printed the commands this test just ran.
    assert!(
        stdout.contains(&format!(
            "dig @{} -p 5353 www.example.com.cdn.test A +subnet={TOKYO}/24 +short",
            dns.ip()
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "curl -si -H 'Host: www.example.com' http://{nrt}/hello.txt"
        )),
        "{stdout}"
    );
}
