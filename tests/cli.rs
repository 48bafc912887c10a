//! The `meridian` command line as a user runs it: the real binary, its output and its
//! exit codes, which scripts depend on. `explain` on the reference world, the
//! geodata builder against the checked-in sample databases, `serve` refusing a bad
//! config, and `--help`.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

/// The reference world, relative to the crate (the tests run from there).
const WORLD: &str = "examples/world/meridian.yaml";

/// How long a command that should fail at once may take before the test gives up
/// on it (a bound, not a synchronisation).
const DEADLINE: Duration = Duration::from_secs(30);

#[test]
fn explain_prints_the_choice_the_answer_and_the_scope() {
    let out = explain(&["182.34.212.0/24"]);
    // China Telecom in Beijing: sha, on its ISP, beats the nearer pek (China Unicom).
    assert_line(
        &out,
        "name:      www.example.com.cdn.test. A (domain www.example.com.)",
    );
    assert_line(&out, "client:    182.34.212.0/24 (EDNS Client Subnet)");
    assert_line(&out, "chosen:    sha (best score)");
    assert_line(&out, "answer:    192.0.2.3 198.51.100.3 ttl 30");
    assert_line(&out, "ecs scope: /22");
    // The scope is the longer of the City network (/22) and the block of the
    // client's ISP (/15).
    assert_contains(&out, "(city network 182.34.212.0/22, /22)");
    assert_contains(
        &out,
        "AS4134 Chinanet isp china-telecom (asn network 182.34.0.0/15, /15; same isp across /15)",
    );
    // The table: 26 POPs, the chosen one marked and first.
    let rows = table_rows(&out);
    assert_eq!(rows.len(), 26, "one row per POP:\n{out}");
    assert!(
        rows[0].starts_with("* sha "),
        "the chosen POP first and marked:\n{out}"
    );
    assert_eq!(
        rows.iter().filter(|r| r.starts_with('*')).count(),
        1,
        "{out}"
    );
}

#[test]
fn explain_json_parses_and_agrees_with_the_text() {
    let client = "182.34.212.0/24";
    let json: Value =
        serde_json::from_str(&explain(&["--json", client])).expect("`explain --json` prints JSON");
    let text = explain(&[client]);

    assert_eq!(json["chosen"], serde_json::json!(["sha"]), "{json}");
    assert_eq!(json["ecs_scope"], 22, "{json}");
    assert_eq!(json["ttl"], 30, "{json}");
    assert_eq!(json["qtype"], "A", "{json}");
    assert_eq!(json["name"], "www.example.com.cdn.test.", "{json}");
    assert_eq!(json["client"]["address"], "182.34.212.0", "{json}");
    assert_eq!(json["client"]["prefix"], 24, "{json}");
    assert_eq!(json["client"]["ecs"], true, "{json}");
    assert_eq!(json["location"]["isp"], "china-telecom", "{json}");
    let pops = json["pops"].as_array().expect("pops");
    assert_eq!(pops.len(), 26, "{json}");
    assert_eq!(pops[0]["id"], "sha", "best score first: {json}");

    // The text says the same.
    let chosen = field(&text, "chosen:");
    assert_eq!(chosen.split_whitespace().next(), json["chosen"][0].as_str());
    let answer = field(&text, "answer:");
    let addresses: Vec<&str> = json["addresses"]
        .as_array()
        .expect("addresses")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        answer,
        format!("{} ttl {}", addresses.join(" "), json["ttl"])
    );
    assert_eq!(
        field(&text, "ecs scope:"),
        format!("/{}", json["ecs_scope"])
    );
    // Every POP's score, in the same order. The columns are fixed-width and the
    // score is right-aligned under its header, wherever that column sits.
    let header = text
        .lines()
        .find(|l| l.starts_with("  pop "))
        .expect("table header");
    let score_end = header.find(" score").expect("score column") + " score".len();
    let rows = table_rows(&text);
    assert_eq!(rows.len(), pops.len(), "{text}");
    for (pop, row) in pops.iter().zip(rows) {
        let id = pop["id"].as_str().expect("id");
        let score = format!("{:.1}", pop["score"].as_f64().expect("score"));
        assert_eq!(row[2..].split_whitespace().next(), Some(id), "{row}");
        let under_header = row
            .get(..score_end)
            .and_then(|r| r.split_whitespace().last());
        assert_eq!(under_header, Some(score.as_str()), "{id}: {row}");
    }
}

#[test]
fn explain_aaaa_answers_ipv6_addresses() {
    // IPv6 Tokyo: City 240f:33:5000::/37, ASN 240f::/23.
    let out = explain(&["--qtype", "AAAA", "240f:33:5000::/56"]);
    assert_line(
        &out,
        "name:      www.example.com.cdn.test. AAAA (domain www.example.com.)",
    );
    assert_line(&out, "chosen:    nrt (best score)");
    assert_line(&out, "answer:    2001:db8:7::1 ttl 30");
    assert_line(&out, "ecs scope: /37");
    // The qtype is the answer's family, not the client's.
    let out = explain(&["--qtype", "aaaa", "182.34.212.0/24"]);
    assert_line(&out, "chosen:    sha (best score)");
    assert_line(&out, "answer:    2001:db8:3::1 ttl 30");
}

#[test]
fn explain_names_another_domain() {
    for name in [
        "api.example.com",
        "api.example.com.cdn.test.",
        "API.Example.COM",
    ] {
        let out = explain(&["--name", name, "118.156.18.0/24"]);
        assert_line(
            &out,
            "name:      api.example.com.cdn.test. A (domain api.example.com.)",
        );
        assert_line(&out, "chosen:    nrt (best score)");
        assert_line(&out, "answer:    192.0.2.7 198.51.100.7 ttl 30");
        assert_line(&out, "ecs scope: /24");
    }
}

#[test]
fn explain_a_resolver_address_without_ecs() {
    // Loopback is in no database: the configured fallback, and no ECS scope.
    let out = explain(&["127.0.0.1"]);
    assert_line(&out, "client:    127.0.0.1/32 (resolver address)");
    assert_line(
        &out,
        "chosen:    iad (location unknown: configured fallback)",
    );
    assert_line(&out, "answer:    192.0.2.1 198.51.100.1 ttl 30");
    assert_line(&out, "ecs scope: - (no ECS in the query)");
}

#[test]
fn explain_refuses_what_it_cannot_answer() {
    for (args, says) in [
        (
            &["--name", "www.example.net", "118.156.18.0/24"][..],
            "www.example.net is not an accelerated name",
        ),
        (
            &["--name", "status.cdn.test", "118.156.18.0/24"][..],
            "status.cdn.test is not an accelerated name",
        ),
        (&["1.2.3.4/40"][..], "prefix /40 is longer than the address"),
        (
            &["2001:db8::/129"][..],
            "prefix /129 is longer than the address",
        ),
        (&["1.2.3"][..], "`1.2.3` is not an IP address or subnet"),
        (
            &["--qtype", "MX", "1.2.3.4"][..],
            "qtype `MX`: expected A or AAAA",
        ),
    ] {
        let output = meridian(&[&["explain", "--config", WORLD], args].concat());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(output.stdout.is_empty(), "{args:?}: printed an explanation");
        assert!(
            stderr.contains(&format!("meridian: {says}")),
            "{args:?}: `{says}` not in: {stderr}"
        );
    }
}

#[test]
fn explain_on_the_real_databases_agrees_with_the_sample() {
    let geodata = crate_dir().join("../shared/geodata");
    let (city, asn) = (geodata.join("GeoLite2-City.mmdb"), geodata.join("ASN.mmdb"));
    if !(city.is_file() && asn.is_file()) {
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            format!(
                "explain_on_the_real_databases_agrees_with_the_sample: skipped: ../shared/geodata not found ({})\n",
                geodata.display()
            )
            .as_bytes(),
        );
        return;
    }
    // Routing by ISP (China Telecom in Beijing: sha), the scope, and every POP's
    // score, on flags that override the config's databases.
    let client = "182.34.212.0/24";
    let real: Value = serde_json::from_str(&explain(&[
        "--city-db",
        city.to_str().expect("UTF-8 path"),
        "--asn-db",
        asn.to_str().expect("UTF-8 path"),
        "--json",
        client,
    ]))
    .expect("JSON");
    let sample: Value = serde_json::from_str(&explain(&["--json", client])).expect("JSON");
    assert_eq!(real["chosen"], serde_json::json!(["sha"]), "{real}");
    // China Telecom's block around the client is wider in the real database,
    // where its neighbours are China Telecom too (the sample holds only the
    // client's own network): /14 against the ASN network's /15.
    assert_eq!(real["location"]["asn_prefix"], 15, "{real}");
    assert_eq!(real["location"]["isp_prefix"], 14, "{real}");
    assert_eq!(sample["location"]["isp_prefix"], 15, "{sample}");
    // The scope is at least the sample's: in the real database the client's
    // neighbours with the same ranking and ISP widen it.
    let scope = |v: &Value| v["ecs_scope"].as_u64().expect("a scope");
    assert!(scope(&real) <= scope(&sample), "{real} {sample}");
    let mut real = real;
    real["location"]["isp_prefix"] = sample["location"]["isp_prefix"].clone();
    for key in ["location", "pops", "chosen", "addresses"] {
        assert_eq!(
            real[key], sample[key],
            "{key}: the sample was cut from the real databases"
        );
    }
}

#[test]
fn geodata_build_reproduces_the_sample_databases() {
    let dir = tempfile::tempdir().expect("temp dir");
    let city = dir.path().join("city.mmdb");
    let asn = dir.path().join("asn.mmdb");
    let output = meridian(&[
        "geodata",
        "build",
        "--source",
        "geodata/sample.yaml",
        "--city",
        city.to_str().expect("UTF-8 path"),
        "--asn",
        asn.to_str().expect("UTF-8 path"),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("wrote {} and {}\n", city.display(), asn.display())
    );
    for (built, shipped) in [
        (city, "geodata/sample-city.mmdb"),
        (asn, "geodata/sample-asn.mmdb"),
    ] {
        let built_bytes = std::fs::read(&built).expect("built database");
        let shipped_bytes = std::fs::read(crate_dir().join(shipped)).expect("shipped database");
        // Not assert_eq: a dump of two databases helps nobody.
        assert!(
            built_bytes == shipped_bytes,
            "{shipped} differs from what `geodata build` makes of geodata/sample.yaml \
             ({} vs {} bytes): rebuild it",
            shipped_bytes.len(),
            built_bytes.len()
        );
    }
}

#[test]
fn geodata_build_refuses_a_bad_source() {
    let dir = tempfile::tempdir().expect("temp dir");
    let source = dir.path().join("source.yaml");
    std::fs::write(
        &source,
        "cities:\n  - network: 192.0.2.0/24\n    country: JP\n    continent: AS\n    town: Tokyo\n",
    )
    .expect("source");
    let city = dir.path().join("city.mmdb");
    let asn = dir.path().join("asn.mmdb");
    let output = meridian(&[
        "geodata",
        "build",
        "--source",
        source.to_str().expect("UTF-8 path"),
        "--city",
        city.to_str().expect("UTF-8 path"),
        "--asn",
        asn.to_str().expect("UTF-8 path"),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("town"), "names the bad key: {stderr}");
    assert!(stderr.contains("line 5"), "names the line: {stderr}");
    assert!(!city.exists() && !asn.exists(), "wrote databases anyway");
}

#[test]
fn serve_refuses_a_bad_config_with_every_problem_and_its_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    // The reference world with its files named absolutely, and two mistakes: a POP id
    // used twice and a fallback naming no POP.
    let text = std::fs::read_to_string(crate_dir().join(WORLD))
        .expect("reference world")
        .replace("../../", &format!("{}/", crate_dir().display()));
    let text = replace_once(&text, "  - id: ord\n", "  - id: jfk\n");
    let text = replace_once(&text, "  pops: [iad]\n", "  pops: [xyz]\n");
    let config = dir.path().join("meridian.yaml");
    std::fs::write(&config, &text).expect("config");

    let (status, stdout, stderr) = run_with_deadline(&[
        "serve",
        "--config",
        config.to_str().expect("UTF-8 path"),
        "--dns-listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    let fallback = format!("{}:{}:", config.display(), line_of(&text, "pops: [xyz]"));
    let duplicate = format!("{}:{}:", config.display(), lines_of(&text, "- id: jfk")[1]);
    for (prefix, says) in [(fallback, "xyz"), (duplicate, "duplicate pop id `jfk`")] {
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with(&prefix) && l.contains(says)),
            "no `{prefix}...{says}` line in:\n{stderr}"
        );
    }
    assert!(stderr.contains("meridian: 2 problems found"), "{stderr}");

    // A config that cannot be read is a problem of the same shape.
    let missing = dir.path().join("missing.yaml");
    let (status, _, stderr) =
        run_with_deadline(&["serve", "--config", missing.to_str().expect("UTF-8 path")]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with(&format!("{}: cannot read", missing.display())),
        "{stderr}"
    );
}

#[test]
fn check_accepts_the_reference_world() {
    let output = meridian(&["check", "--config", WORLD]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("{WORLD}: ok (1 zones, 26 POPs, 3 domains)\n")
    );
}

#[test]
fn check_refuses_swapped_geo_databases() {
    let output = meridian(&[
        "check",
        "--config",
        WORLD,
        "--city-db",
        "geodata/sample-asn.mmdb",
        "--asn-db",
        "geodata/sample-city.mmdb",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "geodata/sample-asn.mmdb: is a GeoLite2-ASN database; expected a City database"
        ),
        "{stderr}"
    );
}

#[test]
fn help_lists_every_command() {
    let output = meridian(&["--help"]);
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for command in ["serve", "check", "explain", "demo", "geodata"] {
        assert!(
            help.lines()
                .any(|l| l.split_whitespace().next() == Some(command)),
            "`{command}` not in:\n{help}"
        );
    }
    // And no command at all is a usage error, not a panic.
    let output = meridian(&[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("Usage: meridian"));
}

/// The crate's directory, where the tests run the binary.
fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the binary from the crate's directory, to completion.
fn meridian(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(args)
        .current_dir(crate_dir())
        .env_remove("MERIDIAN_LOG")
        .output()
        .expect("run meridian")
}

/// `meridian explain --config WORLD ARGS...`, which must succeed; its stdout.
#[track_caller]
fn explain(args: &[&str]) -> String {
    let output = meridian(&[&["explain", "--config", WORLD], args].concat());
    assert!(
        output.status.success(),
        "explain {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

/// Runs a command that should exit by itself, killing it if it outlives
/// `DEADLINE` (`serve` with a config it accepts would serve forever).
fn run_with_deadline(args: &[&str]) -> (ExitStatus, String, String) {
    let mut child: Child = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(args)
        .current_dir(crate_dir())
        .env_remove("MERIDIAN_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run meridian");
    // stderr closes when the process exits; read it on a thread so the wait is bounded.
    let mut stderr = child.stderr.take().expect("stderr");
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        let _ = sender.send(text);
    });
    let stderr = match receiver.recv_timeout(DEADLINE) {
        Ok(text) => text,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("meridian {args:?} still running after {DEADLINE:?}");
        }
    };
    let status = child.wait().expect("wait for meridian");
    let mut stdout = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_string(&mut stdout);
    }
    (status, stdout, stderr)
}

/// The rows of the POP table: the lines after its header, up to the blank line.
fn table_rows(out: &str) -> Vec<&str> {
    out.lines()
        .skip_while(|l| !l.starts_with("  pop "))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .collect()
}

/// Asserts that `out` has `line` as one of its lines, exactly.
#[track_caller]
fn assert_line(out: &str, line: &str) {
    assert!(
        out.lines().any(|l| l == line),
        "no line `{line}` in:\n{out}"
    );
}

#[track_caller]
fn assert_contains(out: &str, text: &str) {
    assert!(out.contains(text), "`{text}` not in:\n{out}");
}

/// The rest of the line starting with `label`, trimmed.
#[track_caller]
fn field<'a>(out: &'a str, label: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(label))
        .unwrap_or_else(|| panic!("no `{label}` line in:\n{out}"))
        .trim()
}

#[track_caller]
fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(text.matches(from).count(), 1, "`{from}` must occur once");
    text.replacen(from, to, 1)
}

/// The 1-based line of the only line of `text` containing `needle`.
#[track_caller]
fn line_of(text: &str, needle: &str) -> usize {
    let lines = lines_of(text, needle);
    assert_eq!(lines.len(), 1, "`{needle}` must be on one line");
    lines[0]
}

/// The 1-based lines of `text` containing `needle`.
fn lines_of(text: &str, needle: &str) -> Vec<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.contains(needle))
        .map(|(i, _)| i + 1)
        .collect()
}
