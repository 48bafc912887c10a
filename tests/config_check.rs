//! `meridian check` and config validation: a minimal valid config passes, and each
//! rule, broken alone, is reported with the file, the exact line and the reason.
//!
//! Rules about the config text alone go through `Config::parse`; rules that need the
//! files a config names (zones, geo databases) go through `Config::load` and
//! `Snapshot::load` on a temporary directory; a representative set drives the real
//! binary, whose output and exit code are the contract scripts rely on.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use meridian::config::{Config, ConfigError, Overlay, Problem};
use meridian::snapshot::Snapshot;

/// The path config text is said to come from in `Config::parse` tests.
const CONFIG_PATH: &str = "/etc/meridian/meridian.yaml";

/// A minimal valid config: one zone, two ISPs, a POP in Frankfurt on no ISP and one
/// in Shanghai (mainland China) on China Telecom, one accelerated domain.
const GOOD: &str = "\
version: 1
zones:
  - origin: cdn.test.
    file: cdn.test.zone
cdn-suffix: cdn.test.
isps:
  telecom: [4134, 4809]
  unicom: [4837]
pops:
  - id: fra
    country: DE
    continent: EU
    latitude: 50.11
    longitude: 8.68
    addresses: [192.0.2.1, \"2001:db8::1\"]
  - id: sha
    country: CN
    continent: AS
    latitude: 31.23
    longitude: 121.47
    isp: telecom
    addresses: [192.0.2.2]
domains:
  - name: www.example.com
    origins:
      - host: origin.example.com
";

/// A valid zone for `cdn.test.`, with one static name.
const ZONE: &str = "\
$ORIGIN cdn.test.
$TTL 3600
@       IN SOA  ns1.cdn.test. hostmaster.cdn.test. 1 3600 600 1209600 60
        IN NS   ns1.cdn.test.
ns1     IN A    192.0.2.53
status  IN TXT  \"static\"
";

/// `GOOD` with `from` (which must occur exactly once) replaced by `to`.
fn good_with(from: &str, to: &str) -> String {
    replace_once(GOOD, from, to)
}

/// `GOOD` with lines added to the domain `www.example.com` (indented by the caller).
fn domain_with(lines: &str) -> String {
    good_with(
        "  - name: www.example.com\n",
        &format!("  - name: www.example.com\n{lines}"),
    )
}

fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "`{from}` must occur once in:\n{text}"
    );
    text.replacen(from, to, 1)
}

/// The 1-based line of the only line of `text` containing `needle`.
#[track_caller]
fn line_of(text: &str, needle: &str) -> u64 {
    let found = lines_of(text, needle);
    assert_eq!(
        found.len(),
        1,
        "`{needle}` must be on exactly one line of:\n{text}"
    );
    found[0]
}

/// The 1-based lines of `text` containing `needle`.
fn lines_of(text: &str, needle: &str) -> Vec<u64> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| line.contains(needle))
        .map(|(i, _)| i as u64 + 1)
        .collect()
}

/// The problems `Config::parse` finds in `text`; panics if it accepts it.
#[track_caller]
fn parse_problems(text: &str) -> Vec<Problem> {
    match Config::parse(text, Path::new(CONFIG_PATH)) {
        Ok(_) => panic!("accepted a config that should fail:\n{text}"),
        Err(e) => e.problems,
    }
}

/// Asserts exactly one problem, in `file` at `line`, whose message contains every phrase.
#[track_caller]
fn assert_one_in(problems: &[Problem], file: &Path, line: Option<u64>, phrases: &[&str]) {
    let all = ConfigError::from(problems.to_vec()).to_string();
    assert_eq!(problems.len(), 1, "expected one problem, got:\n{all}");
    let problem = &problems[0];
    assert_eq!(problem.file, file, "{all}");
    assert_eq!(problem.line, line, "{all}");
    for phrase in phrases {
        assert!(problem.message.contains(phrase), "`{phrase}` not in: {all}");
    }
}

/// Asserts that config text alone fails with one problem at `line`.
#[track_caller]
fn assert_parse_fails(text: &str, line: u64, phrases: &[&str]) {
    assert_one_in(
        &parse_problems(text),
        Path::new(CONFIG_PATH),
        Some(line),
        phrases,
    );
}

/// A config directory: `meridian.yaml` and a valid `cdn.test.zone`.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(config: &str) -> Self {
        let setup = Self {
            dir: tempfile::tempdir().expect("temporary directory"),
        };
        setup.write("meridian.yaml", config);
        setup.write("cdn.test.zone", ZONE);
        setup
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.path(name), text).expect("write a test file");
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn config(&self) -> PathBuf {
        self.path("meridian.yaml")
    }

    /// Loads as `serve` and `check` do: config, then zones and geo databases.
    fn load(&self) -> Result<Snapshot, ConfigError> {
        Snapshot::load(Config::load(&self.config(), &Overlay::default())?)
    }

    #[track_caller]
    fn problems(&self) -> Vec<Problem> {
        match self.load() {
            Ok(_) => panic!("a broken setup loaded"),
            Err(e) => e.problems,
        }
    }

    /// Runs `meridian check --config meridian.yaml`.
    fn check(&self) -> Output {
        check(&self.config())
    }
}

fn check(config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meridian"))
        .arg("check")
        .arg("--config")
        .arg(config)
        .env("MERIDIAN_LOG", "off")
        .output()
        .expect("run meridian")
}

/// Asserts `meridian check` failed with exit code 1, reporting exactly the given
/// problems as `file:line:` lines (in order), each with its phrase, and the count.
#[track_caller]
fn assert_check_fails(output: &Output, expected: &[(&Path, Option<u64>, &str)]) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr:\n{stderr}");
    assert!(
        output.stdout.is_empty(),
        "stdout: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), expected.len() + 1, "stderr:\n{stderr}");
    for (got, (file, line, phrase)) in lines.iter().zip(expected) {
        let place = match line {
            Some(line) => format!("{}:{line}:", file.display()),
            None => format!("{}: ", file.display()),
        };
        assert!(
            got.starts_with(&place),
            "`{got}` does not start with `{place}`"
        );
        assert!(got.contains(phrase), "`{phrase}` not in `{got}`");
    }
    let plural = if expected.len() == 1 { "" } else { "s" };
    assert_eq!(
        lines[expected.len()],
        format!("meridian: {} problem{plural} found", expected.len())
    );
}

// A good config.

#[test]
fn good_config_passes_check() {
    let setup = Setup::new(GOOD);
    let output = setup.check();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "stderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        stdout.trim(),
        format!(
            "{}: ok (1 zones, 2 POPs, 1 domains)",
            setup.config().display()
        )
    );
}

#[test]
fn good_config_loads_as_written() {
    let snapshot = Setup::new(GOOD).load().expect("the good config loads");
    let config = &snapshot.config;
    assert_eq!(config.pops.len(), 2);
    assert_eq!(config.isps.len(), 2);
    assert_eq!(
        config.domains[0].served.to_string(),
        "www.example.com.cdn.test."
    );
    assert_eq!(config.domains[0].ttl, meridian::config::DEFAULT_TTL);
    assert_eq!(
        config.dns.max_udp_payload,
        meridian::config::DEFAULT_MAX_UDP_PAYLOAD
    );
}

#[test]
fn world_example_passes_check() {
    // Needs the sample geodata in geodata/ to be real databases.
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/world/meridian.yaml");
    let output = check(&config);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "stderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains(": ok (1 zones, 26 POPs, 3 domains)"),
        "stdout: {stdout}"
    );
}

// The file as a whole.

#[test]
fn yaml_syntax_error_names_its_line() {
    let text = good_with("latitude: 50.11", "latitude: 50.11: north");
    let setup = Setup::new(&text);
    let line = line_of(&text, "50.11: north");
    assert_check_fails(
        &setup.check(),
        &[(
            &setup.config(),
            Some(line),
            "mapping values are not allowed",
        )],
    );
}

#[test]
fn misspelt_key_in_a_pop_is_rejected_at_its_line() {
    let text = good_with("    latitude: 50.11", "    latitud: 50.11");
    let setup = Setup::new(&text);
    let line = line_of(&text, "latitud:");
    assert_check_fails(
        &setup.check(),
        &[(
            &setup.config(),
            Some(line),
            "unknown field `latitud`, expected one of",
        )],
    );
}

#[test]
fn unknown_keys_are_rejected_anywhere() {
    let cases = [
        good_with("cdn-suffix:", "cdn-sufix: x\ncdn-suffix:"),
        good_with(
            "    file: cdn.test.zone",
            "    file: cdn.test.zone\n    notify: yes",
        ),
        good_with(
            "      - host: origin.example.com",
            "      - host: origin.example.com\n        proto: h2",
        ),
        domain_with("    answers: 2\n"),
        format!("{GOOD}ecs:\n  max-prefix-v4: 24\n"),
        format!("{GOOD}overrides:\n  nets: []\n"),
    ];
    for (text, key) in cases.iter().zip([
        "cdn-sufix",
        "notify",
        "proto",
        "answers",
        "max-prefix-v4",
        "nets",
    ]) {
        let needle = format!("{key}:");
        assert_parse_fails(
            text,
            line_of(text, &needle),
            &[&format!("unknown field `{key}`")],
        );
    }
}

#[test]
fn a_value_of_the_wrong_type_names_the_key_and_what_was_expected() {
    let text = domain_with("    ttl: 30s\n");
    assert_parse_fails(
        &text,
        line_of(&text, "ttl: 30s"),
        &["`ttl`: expected a whole number", "found `30s`"],
    );
    let text = format!("{GOOD}ecs:\n  max-source-prefix-v4: 300\n");
    assert_parse_fails(
        &text,
        line_of(&text, "max-source-prefix-v4"),
        &["`max-source-prefix-v4`: expected a whole number from 0 to 255, found `300`"],
    );
}

#[test]
fn missing_version_is_reported() {
    let problems = parse_problems(&good_with("version: 1\n", ""));
    assert_one_in(
        &problems,
        Path::new(CONFIG_PATH),
        None,
        &["version: missing", "`version: 1`"],
    );
}

#[test]
fn unsupported_version_is_rejected() {
    let setup = Setup::new(&good_with("version: 1", "version: 2"));
    assert_check_fails(
        &setup.check(),
        &[(
            &setup.config(),
            Some(1),
            "unsupported config version 2: expected 1",
        )],
    );
}

#[test]
fn several_problems_are_reported_at_once_in_file_order() {
    let text = domain_with("    ttl: 90000\n    answer:\n      pops: 3\n");
    let text = replace_once(&text, "latitude: 31.23", "latitude: 131.23");
    let text = replace_once(&text, "isp: telecom", "isp: mobile");
    let text = replace_once(&text, "[4837]", "[]");
    let setup = Setup::new(&text);
    let file = setup.config();
    assert_check_fails(
        &setup.check(),
        &[
            (
                &file,
                Some(line_of(&text, "unicom:")),
                "isp unicom lists no ASNs",
            ),
            (
                &file,
                Some(line_of(&text, "131.23")),
                "latitude 131.23 is outside -90..90",
            ),
            (
                &file,
                Some(line_of(&text, "isp: mobile")),
                "isp `mobile` is not defined",
            ),
            (
                &file,
                Some(line_of(&text, "ttl: 90000")),
                "ttl 90000 is above 86400",
            ),
            (
                &file,
                Some(line_of(&text, "pops: 3")),
                "answer.pops must be 1 or 2, not 3",
            ),
        ],
    );
    assert_eq!(parse_problems(&text).len(), 5);
}

// Zones and the CDN suffix.

#[test]
fn no_zones_is_rejected() {
    let text = good_with(
        "zones:\n  - origin: cdn.test.\n    file: cdn.test.zone\n",
        "zones: []\n",
    );
    assert_parse_fails(
        &text,
        line_of(&text, "zones:"),
        &["at least one zone is needed"],
    );
}

#[test]
fn duplicate_zone_is_rejected() {
    let text = good_with(
        "    file: cdn.test.zone\n",
        "    file: cdn.test.zone\n  - origin: CDN.test\n    file: other.zone\n",
    );
    assert_parse_fails(
        &text,
        line_of(&text, "origin: CDN.test"),
        &["zone cdn.test. is listed twice (first on line 3)"],
    );
}

#[test]
fn invalid_zone_origin_is_rejected() {
    let text = good_with("origin: cdn.test.", "origin: cdn..test.");
    assert_parse_fails(
        &text,
        line_of(&text, "cdn..test."),
        &["zone origin `cdn..test.` is not a valid domain name"],
    );
}

#[test]
fn cdn_suffix_outside_every_zone_is_rejected() {
    let text = good_with("cdn-suffix: cdn.test.", "cdn-suffix: cdn.example.");
    assert_parse_fails(
        &text,
        line_of(&text, "cdn-suffix:"),
        &[
            "cdn-suffix cdn.example. is not inside any configured zone",
            "cdn.test.",
        ],
    );
}

#[test]
fn missing_zone_file_is_named() {
    let setup = Setup::new(&good_with("file: cdn.test.zone", "file: missing.zone"));
    let missing = setup.path("missing.zone");
    assert_one_in(
        &setup.problems(),
        &missing,
        None,
        &["cannot read zone file"],
    );
    assert_check_fails(&setup.check(), &[(&missing, None, "cannot read zone file")]);
}

#[test]
fn zone_syntax_error_names_the_zone_file_and_line() {
    let setup = Setup::new(GOOD);
    let zone = format!("{ZONE}broken  IN A    192.0.2.300\n");
    setup.write("cdn.test.zone", &zone);
    let path = setup.path("cdn.test.zone");
    let line = line_of(&zone, "broken");
    assert_one_in(&setup.problems(), &path, Some(line), &[]);
    assert_check_fails(&setup.check(), &[(&path, Some(line), "")]);
}

#[test]
fn geo_routed_name_with_static_records_is_a_conflict() {
    let setup = Setup::new(GOOD);
    let zone = format!("{ZONE}www.example.com IN A 192.0.2.80\n");
    setup.write("cdn.test.zone", &zone);
    let zone_line = line_of(&zone, "www.example.com");
    assert_one_in(
        &setup.problems(),
        &setup.config(),
        Some(line_of(GOOD, "name: www.example.com")),
        &[
            "www.example.com.cdn.test. also has static records",
            &format!("line {zone_line}"),
            "either geo-routed or static",
        ],
    );
}

#[test]
fn geo_routed_name_below_a_zone_cut_is_a_conflict() {
    let setup = Setup::new(GOOD);
    let zone = format!("{ZONE}example.com IN NS ns.elsewhere.example.\n");
    setup.write("cdn.test.zone", &zone);
    let zone_line = line_of(&zone, "example.com IN NS");
    assert_one_in(
        &setup.problems(),
        &setup.config(),
        Some(line_of(GOOD, "name: www.example.com")),
        &[
            "lies below a zone cut",
            &format!("line {zone_line}"),
            "delegated zone",
        ],
    );
}

#[test]
fn wildcard_domain_over_static_names_is_a_conflict() {
    let text = GOOD.replace(
        "  - name: www.example.com\n",
        "  - name: \"*.example.com\"\n",
    );
    let setup = Setup::new(&text);
    let zone = format!("{ZONE}static.example.com IN A 192.0.2.80\n");
    setup.write("cdn.test.zone", &zone);
    let zone_line = line_of(&zone, "static.example.com");
    assert_one_in(
        &setup.problems(),
        &setup.config(),
        Some(line_of(&text, "name: \"*.example.com\"")),
        &[
            "static names below example.com.cdn.test.",
            &format!("line {zone_line}"),
            "would never be routed",
        ],
    );
}

#[test]
fn missing_geo_database_is_reported_at_its_line() {
    let text = format!("{GOOD}geodata:\n  city: missing-city.mmdb\n");
    let setup = Setup::new(&text);
    let line = line_of(&text, "missing-city.mmdb");
    assert_one_in(
        &setup.problems(),
        &setup.config(),
        Some(line),
        &["missing-city.mmdb"],
    );
    assert_check_fails(
        &setup.check(),
        &[(&setup.config(), Some(line), "missing-city.mmdb")],
    );
}

// POPs.

#[test]
fn duplicate_pop_id_names_the_first() {
    let text = good_with("id: sha", "id: fra");
    let first = line_of(GOOD, "id: fra");
    let lines = lines_of(&text, "id: fra");
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0], first);
    assert_parse_fails(
        &text,
        lines[1],
        &[&format!(
            "duplicate pop id `fra` (first defined on line {first})"
        )],
    );
}

#[test]
fn pop_without_addresses_is_rejected() {
    let text = good_with("addresses: [192.0.2.2]", "addresses: []");
    assert_parse_fails(
        &text,
        line_of(&text, "id: sha"),
        &["pop sha has no addresses", "`addresses`"],
    );
}

#[test]
fn bad_pop_address_is_rejected() {
    let text = good_with("[192.0.2.2]", "[192.0.2.2, 192.0.2.300]");
    assert_parse_fails(
        &text,
        line_of(&text, "192.0.2.300"),
        &["pop sha: `192.0.2.300` is not an IP address"],
    );
}

#[test]
fn latitude_out_of_range_is_rejected() {
    let text = good_with("latitude: 50.11", "latitude: 90.5");
    assert_parse_fails(
        &text,
        line_of(&text, "90.5"),
        &["pop fra: latitude 90.5 is outside -90..90"],
    );
}

#[test]
fn longitude_out_of_range_is_rejected() {
    let text = good_with("longitude: 121.47", "longitude: -181");
    assert_parse_fails(
        &text,
        line_of(&text, "-181"),
        &["pop sha: longitude -181 is outside -180..180"],
    );
}

#[test]
fn pop_on_an_undefined_isp_is_rejected() {
    let text = good_with("isp: telecom", "isp: mobile");
    let setup = Setup::new(&text);
    let line = line_of(&text, "isp: mobile");
    assert_check_fails(
        &setup.check(),
        &[(
            &setup.config(),
            Some(line),
            "pop sha: isp `mobile` is not defined under isps",
        )],
    );
}

#[test]
fn bad_admin_state_is_rejected() {
    let text = good_with("    isp: telecom\n", "    isp: telecom\n    admin: drain\n");
    assert_parse_fails(
        &text,
        line_of(&text, "admin:"),
        &["pop sha: admin `drain`: expected up or down"],
    );
}

#[test]
fn bad_region_is_rejected() {
    let text = good_with(
        "    isp: telecom\n",
        "    isp: telecom\n    region: china\n",
    );
    assert_parse_fails(
        &text,
        line_of(&text, "region:"),
        &["pop sha: region `china`: expected mainland-china or global"],
    );
}

#[test]
fn bad_country_code_is_rejected() {
    let text = good_with("country: DE", "country: DEU");
    assert_parse_fails(
        &text,
        line_of(&text, "DEU"),
        &["country `DEU` is not a two-letter ISO 3166 code"],
    );
}

#[test]
fn bad_continent_is_rejected() {
    let text = good_with("continent: EU", "continent: XX");
    assert_parse_fails(
        &text,
        line_of(&text, "continent: XX"),
        &["continent `XX`: expected one of AF AN AS EU NA OC SA"],
    );
}

// ISPs.

#[test]
fn asn_under_two_isps_is_rejected_where_listed_second() {
    let text = good_with("unicom: [4837]", "unicom: [4837, 4809]");
    assert_parse_fails(
        &text,
        line_of(&text, "unicom:"),
        &["AS4809 is listed under both isp telecom and isp unicom"],
    );
    // Where the second listing sorts first by name, it is still the one reported.
    let text = good_with("unicom: [4837]", "alpha: [4134]");
    assert_parse_fails(
        &text,
        line_of(&text, "alpha:"),
        &["AS4134 is listed under both isp telecom and isp alpha"],
    );
}

#[test]
fn isp_without_asns_is_rejected() {
    let text = good_with("unicom: [4837]", "unicom: []");
    assert_parse_fails(
        &text,
        line_of(&text, "unicom:"),
        &["isp unicom lists no ASNs"],
    );
}

// Domains.

#[test]
fn duplicate_domain_ignores_case_and_trailing_dot() {
    let text = format!(
        "{GOOD}  - name: WWW.example.com.\n    origins:\n      - host: other.example.net\n"
    );
    let first = line_of(&text, "name: www.example.com");
    assert_parse_fails(
        &text,
        line_of(&text, "WWW.example.com."),
        &[&format!(
            "duplicate domain www.example.com. (first defined on line {first})"
        )],
    );
}

#[test]
fn origin_host_equal_to_the_domain_is_a_loop() {
    let text = good_with("host: origin.example.com", "host: WWW.Example.com.");
    assert_parse_fails(
        &text,
        line_of(&text, "host:"),
        &["origin host www.example.com is the accelerated domain itself (a resolution loop)"],
    );
}

#[test]
fn origin_host_equal_to_the_served_name_is_a_loop() {
    let text = good_with("host: origin.example.com", "host: www.example.com.cdn.test");
    assert_parse_fails(
        &text,
        line_of(&text, "host:"),
        &["origin host www.example.com.cdn.test is the accelerated domain itself"],
    );
}

#[test]
fn origin_host_answered_by_the_served_wildcard_is_a_loop() {
    let text = good_with("name: www.example.com", "name: \"*.example.com\"");
    let text = replace_once(
        &text,
        "host: origin.example.com",
        "host: img.example.com.cdn.test",
    );
    assert_parse_fails(
        &text,
        line_of(&text, "host:"),
        &["origin host img.example.com.cdn.test is the accelerated domain itself"],
    );
}

#[test]
fn domain_without_origins_is_rejected() {
    let text = good_with("    origins:\n      - host: origin.example.com\n", "");
    assert_parse_fails(
        &text,
        line_of(&text, "name: www.example.com"),
        &["domain www.example.com. has no origins", "`origins`"],
    );
}

#[test]
fn bad_origin_scheme_is_rejected() {
    let text = good_with(
        "      - host: origin.example.com\n",
        "      - host: origin.example.com\n        scheme: ftp\n",
    );
    assert_parse_fails(
        &text,
        line_of(&text, "host:"),
        &["origin scheme `ftp`: expected http or https"],
    );
}

#[test]
fn unknown_coverage_is_rejected() {
    let text = domain_with("    coverage: china\n");
    assert_parse_fails(
        &text,
        line_of(&text, "coverage:"),
        &["coverage `china`: expected global, mainland-china or global-excluding-mainland-china"],
    );
}

#[test]
fn coverage_with_no_pop_in_its_region_is_rejected() {
    let text = replace_once(
        &domain_with("    coverage: mainland-china\n"),
        "country: CN",
        "country: HK",
    );
    assert_parse_fails(
        &text,
        line_of(&text, "coverage:"),
        &[
            "coverage mainland-china: no POP can serve it",
            "in mainland China",
        ],
    );
}

#[test]
fn ttl_above_a_day_is_rejected() {
    let text = domain_with("    ttl: 86401\n");
    assert_parse_fails(&text, line_of(&text, "ttl:"), &["ttl 86401 is above 86400"]);
    assert!(Config::parse(&domain_with("    ttl: 86400\n"), Path::new(CONFIG_PATH)).is_ok());
}

#[test]
fn three_answer_pops_are_rejected() {
    let text = domain_with("    answer:\n      pops: 3\n");
    assert_parse_fails(
        &text,
        line_of(&text, "pops: 3"),
        &["answer.pops must be 1 or 2, not 3"],
    );
}

#[test]
fn star_only_as_the_first_label() {
    let text = good_with("name: www.example.com", "name: www.*.example.com");
    assert_parse_fails(
        &text,
        line_of(&text, "name:"),
        &["`*` may only be the first label"],
    );
    assert!(
        Config::parse(
            &good_with("name: www.example.com", "name: \"*.example.com\""),
            Path::new(CONFIG_PATH)
        )
        .is_ok()
    );
}

// Overrides.

fn with_network_overrides(entries: &str) -> String {
    format!("{GOOD}overrides:\n  networks:\n{entries}")
}

#[test]
fn override_naming_an_unknown_pop_is_rejected() {
    let text =
        with_network_overrides("    - network: 198.51.100.0/24\n      pops: [fra, nowhere]\n");
    assert_parse_fails(
        &text,
        line_of(&text, "network:"),
        &["override 198.51.100.0/24: unknown pop `nowhere`"],
    );
}

#[test]
fn override_network_with_host_bits_is_rejected() {
    let text = with_network_overrides("    - network: 198.51.100.1/24\n      pops: [fra]\n");
    assert_parse_fails(
        &text,
        line_of(&text, "network:"),
        &["198.51.100.1/24 has host bits set (did you mean 198.51.100.0/24?)"],
    );
}

#[test]
fn override_network_listed_twice_is_rejected() {
    let text = with_network_overrides(
        "    - network: 198.51.100.0/24\n      pops: [fra]\n    - network: 198.51.100.0/24\n      pops: [sha]\n",
    );
    let lines = lines_of(&text, "network: 198.51.100.0/24");
    assert_eq!(lines.len(), 2);
    assert_parse_fails(
        &text,
        lines[1],
        &["overrides.networks: 198.51.100.0/24 is listed twice"],
    );
}

#[test]
fn bad_override_country_is_rejected() {
    let text = format!("{GOOD}overrides:\n  countries:\n    USA: [fra]\n");
    assert_parse_fails(
        &text,
        line_of(&text, "USA:"),
        &["overrides.countries: `USA` is not a two-letter code"],
    );
}

#[test]
fn bad_override_continent_is_rejected() {
    let text = format!("{GOOD}overrides:\n  continents:\n    Europe: [fra]\n");
    assert_parse_fails(
        &text,
        line_of(&text, "Europe:"),
        &["overrides.continents: `Europe`: expected one of AF AN AS EU NA OC SA"],
    );
}

// Unknown location, ECS, DNS.

#[test]
fn unknown_location_with_two_kinds_is_rejected() {
    let text = format!("{GOOD}unknown-location:\n  pops: [fra]\n  country: DE\n");
    assert_parse_fails(
        &text,
        line_of(&text, "pops: [fra]"),
        &[
            "unknown-location: give exactly one of `pops`, `country`, or `latitude` with `longitude`",
        ],
    );
}

#[test]
fn unknown_location_naming_an_unknown_pop_is_rejected() {
    let text = format!("{GOOD}unknown-location:\n  pops: [nowhere]\n");
    assert_parse_fails(
        &text,
        line_of(&text, "nowhere"),
        &["unknown-location: unknown pop `nowhere`"],
    );
}

#[test]
fn unknown_location_country_without_pops_is_rejected() {
    let text = format!("{GOOD}unknown-location:\n  country: BR\n");
    assert_parse_fails(
        &text,
        line_of(&text, "country: BR"),
        &["unknown-location: country BR has no POP and no entry under overrides.countries"],
    );
    // A country with a POP, or with an override, is fine.
    assert!(
        Config::parse(
            &format!("{GOOD}unknown-location:\n  country: DE\n"),
            Path::new(CONFIG_PATH)
        )
        .is_ok()
    );
    let with_override = format!(
        "{GOOD}unknown-location:\n  country: BR\noverrides:\n  countries:\n    BR: [fra]\n"
    );
    assert!(Config::parse(&with_override, Path::new(CONFIG_PATH)).is_ok());
}

#[test]
fn ecs_prefix_caps_longer_than_an_address_are_rejected() {
    let text = format!("{GOOD}ecs:\n  max-source-prefix-v4: 33\n  max-source-prefix-v6: 129\n");
    let problems = parse_problems(&text);
    assert_eq!(problems.len(), 2, "{}", ConfigError::from(problems.clone()));
    assert_eq!(problems[0].line, Some(line_of(&text, "v4: 33")));
    assert!(
        problems[0]
            .message
            .contains("ecs.max-source-prefix-v4 33 is longer than an address (32 bits)")
    );
    assert_eq!(problems[1].line, Some(line_of(&text, "v6: 129")));
    assert!(
        problems[1]
            .message
            .contains("ecs.max-source-prefix-v6 129 is longer than an address (128 bits)")
    );
    let ok = format!("{GOOD}ecs:\n  max-source-prefix-v4: 32\n  max-source-prefix-v6: 128\n");
    assert!(Config::parse(&ok, Path::new(CONFIG_PATH)).is_ok());
}

#[test]
fn udp_payload_below_512_is_rejected() {
    let text = format!("{GOOD}dns:\n  max-udp-payload: 511\n");
    assert_parse_fails(
        &text,
        line_of(&text, "511"),
        &["dns.max-udp-payload 511 is below the DNS minimum of 512"],
    );
}

// Live health (`health:`).

/// `GOOD` with a `health:` section of these (indented) lines.
fn with_health(lines: &str) -> String {
    format!("{GOOD}health:\n{lines}")
}

#[test]
fn health_defaults_apply_without_a_section_and_values_load_as_written() {
    use meridian::config::{TokenScope, UnknownMeans};
    use std::time::Duration;
    let config = Config::parse(GOOD, Path::new(CONFIG_PATH)).expect("good config");
    let health = &config.health;
    assert!(health.tokens.is_empty() && health.admin_tokens.is_empty());
    assert_eq!(health.expire_after, Duration::from_secs(30));
    assert_eq!(health.unknown_means, UnknownMeans::Static);
    assert_eq!((health.down_after, health.up_after), (3, 3));
    assert_eq!(health.load_half_life, Duration::from_secs(10));
    assert_eq!((health.low_watermark, health.high_watermark), (0.75, 0.95));
    assert_eq!(health.max_shift_per_second, 0.05);
    assert_eq!(health.degraded_ttl, 10);

    let text = with_health(
        "  tokens:
    - { token: all-token, pops: [\"*\"] }
    - { token: sha-token, pops: [sha] }
  admin-tokens: [admin-token]
  expire-after: 5.5
  unknown-means: down
  down-after: 2
  up-after: 4
  load-half-life: 0
  low-watermark: 0.5
  high-watermark: 0.9
  max-shift-per-second: 0.2
  degraded-ttl: 3
",
    );
    let config = Config::parse(&text, Path::new(CONFIG_PATH)).expect("health config");
    let health = &config.health;
    assert_eq!(health.tokens.len(), 2);
    assert_eq!(health.tokens[0].pops, TokenScope::All);
    assert_eq!(
        health.tokens[1].pops,
        TokenScope::Only(vec![config.pop_by_name("sha").expect("sha")])
    );
    assert!(health.tokens[1].token.matches(b"sha-token"));
    assert!(!health.tokens[1].token.matches(b"sha-tokem"));
    assert!(health.admin_tokens[0].matches(b"admin-token"));
    // Tokens never show in a debug print of the config.
    assert!(!format!("{config:?}").contains("admin-token"));
    assert_eq!(health.expire_after, Duration::from_millis(5_500));
    assert_eq!(health.unknown_means, UnknownMeans::Down);
    assert_eq!((health.down_after, health.up_after), (2, 4));
    assert_eq!(health.load_half_life, Duration::ZERO);
    assert_eq!((health.low_watermark, health.high_watermark), (0.5, 0.9));
    assert_eq!(health.max_shift_per_second, 0.2);
    assert_eq!(health.degraded_ttl, 3);
}

#[test]
fn health_misspelt_key_is_rejected_at_its_line() {
    let text = with_health("  expire-afer: 30\n");
    let problems = parse_problems(&text);
    assert_eq!(problems.len(), 1, "{}", ConfigError::from(problems.clone()));
    assert_eq!(problems[0].line, Some(line_of(&text, "expire-afer")));
    assert!(
        problems[0].message.contains("expire-afer"),
        "{}",
        problems[0]
    );
}

#[test]
fn health_token_for_an_unknown_pop_is_rejected_at_its_line() {
    let text =
        with_health("  tokens:\n    - token: t1\n      pops:\n        - fra\n        - nrt\n");
    assert_parse_fails(
        &text,
        line_of(&text, "- nrt"),
        &["health.tokens: unknown pop `nrt`"],
    );
}

#[test]
fn health_token_without_pops_is_rejected() {
    let text = with_health("  tokens:\n    - token: t1\n      pops: []\n");
    assert_parse_fails(
        &text,
        line_of(&text, "pops: []"),
        &["health.tokens: `pops` is empty", "[\"*\"]"],
    );
}

#[test]
fn health_star_with_other_pops_is_rejected() {
    let text = with_health("  tokens:\n    - token: t1\n      pops: [\"*\", fra]\n");
    assert_parse_fails(
        &text,
        line_of(&text, "pops: [\"*\", fra]"),
        &["`*` already means every POP: list it alone"],
    );
}

#[test]
fn health_token_that_cannot_be_sent_as_a_bearer_token_is_rejected() {
    for bad in ["\"two words\"", "\"\"", "\"t\u{e9}\"", "\"=\""] {
        let text = with_health(&format!(
            "  tokens:\n    - token: {bad}\n      pops: [fra]\n"
        ));
        assert_parse_fails(
            &text,
            line_of(&text, "token: "),
            &["health.tokens: a token must be letters, digits and `-._~+/`"],
        );
    }
    let text = with_health("  admin-tokens: [\"a b\"]\n");
    assert_parse_fails(
        &text,
        line_of(&text, "admin-tokens"),
        &["health.admin-tokens: a token must be"],
    );
    // Padding at the end is part of the syntax.
    let ok = with_health("  admin-tokens: [\"YWRtaW4=\", a.b_c~d+e/f-0]\n");
    assert!(Config::parse(&ok, Path::new(CONFIG_PATH)).is_ok());
}

#[test]
fn health_token_given_twice_is_rejected_where_repeated() {
    let text = with_health(
        "  tokens:\n    - token: same\n      pops: [fra]\n  admin-tokens:\n    - same\n",
    );
    assert_parse_fails(
        &text,
        line_of(&text, "- same"),
        &[&format!(
            "this token is already given on line {}",
            line_of(&text, "token: same")
        )],
    );
}

#[test]
fn health_durations_must_be_seconds_in_range() {
    for (line, phrase) in [
        (
            "  expire-after: 0\n",
            "health.expire-after: expected seconds, above 0",
        ),
        ("  expire-after: -3\n", "health.expire-after"),
        ("  expire-after: 86401\n", "health.expire-after"),
        (
            "  load-half-life: -1\n",
            "health.load-half-life: expected seconds, 0 to",
        ),
        ("  load-half-life: .nan\n", "health.load-half-life"),
    ] {
        let text = with_health(line);
        assert_parse_fails(&text, line_of(&text, line.trim()), &[phrase]);
    }
}

#[test]
fn health_unknown_means_is_static_or_down() {
    let text = with_health("  unknown-means: maybe\n");
    assert_parse_fails(
        &text,
        line_of(&text, "maybe"),
        &["health.unknown-means `maybe`: expected static or down"],
    );
}

#[test]
fn health_streaks_are_1_to_1000_reports() {
    for line in ["  down-after: 0\n", "  up-after: 1001\n"] {
        let text = with_health(line);
        assert_parse_fails(
            &text,
            line_of(&text, line.trim()),
            &["expected a number of reports from 1 to 1000"],
        );
    }
}

#[test]
fn health_watermarks_are_shares_low_below_high() {
    let text = with_health("  low-watermark: 1.5\n");
    assert_parse_fails(
        &text,
        line_of(&text, "1.5"),
        &["health.low-watermark: expected a share of capacity from 0 to 1, not 1.5"],
    );
    let text = with_health("  low-watermark: 0.9\n  high-watermark: 0.8\n");
    assert_parse_fails(
        &text,
        line_of(&text, "high-watermark"),
        &["low-watermark 0.9 must be below high-watermark 0.8"],
    );
    // Against the default high watermark (0.95), at the low one's line.
    let text = with_health("  low-watermark: 0.95\n");
    assert_parse_fails(&text, line_of(&text, "low-watermark"), &["must be below"]);
}

#[test]
fn health_max_shift_must_be_above_zero() {
    let text = with_health("  max-shift-per-second: 0\n");
    assert_parse_fails(
        &text,
        line_of(&text, "max-shift"),
        &["health.max-shift-per-second: expected a share above 0"],
    );
}

#[test]
fn health_degraded_ttl_is_at_most_a_day() {
    let text = with_health("  degraded-ttl: 86401\n");
    assert_parse_fails(
        &text,
        line_of(&text, "degraded-ttl"),
        &["health.degraded-ttl 86401 is above 86400"],
    );
}

#[test]
fn unknown_means_down_needs_a_reporter_for_every_pop() {
    let text =
        with_health("  tokens:\n    - token: t1\n      pops: [fra]\n  unknown-means: down\n");
    assert_parse_fails(
        &text,
        line_of(&text, "unknown-means"),
        &["no token may report for pop sha: it would never be up"],
    );
    // An admin-down POP needs none.
    let text = text.replace("    isp: telecom\n", "    isp: telecom\n    admin: down\n");
    assert!(Config::parse(&text, Path::new(CONFIG_PATH)).is_ok());
}

#[test]
fn check_reports_health_problems_with_their_lines() {
    let text =
        with_health("  tokens:\n    - token: t1\n      pops: [fra, ord]\n  high-watermark: 2\n");
    let setup = Setup::new(&text);
    let config = setup.config();
    assert_check_fails(
        &setup.check(),
        &[
            (
                &config,
                Some(line_of(&text, "pops: [fra, ord]")),
                "unknown pop `ord`",
            ),
            (
                &config,
                Some(line_of(&text, "high-watermark")),
                "health.high-watermark",
            ),
        ],
    );
}

/// `GOOD` with a top-level section appended.
fn good_and(section: &str) -> String {
    format!("{GOOD}{section}")
}

#[test]
fn routing_mode_keys_are_accepted() {
    let text = domain_with("    routing: http\n")
        .replace(
            "    addresses: [192.0.2.1, \"2001:db8::1\"]\n",
            "    addresses: [192.0.2.1, \"2001:db8::1\"]\n    redirect-host: fra.cdn.example\n    cache-nodes: [a.fra.example, \"[2001:db8::2]\", 192.0.2.9]\n",
        );
    let text = format!(
        "{text}listen:\n  http-router: 127.0.0.1:8080\n  doh-tls: \"[::1]:8443\"\ndoh:\n  trusted-proxies: [127.0.0.1, 10.0.0.0/8, \"2001:db8::/32\"]\ntls:\n  certificate: cert.pem\n  key: key.pem\n"
    );
    let config = Config::parse(&text, Path::new(CONFIG_PATH)).expect("valid");
    assert_eq!(
        config.domains[0].routing,
        meridian::config::RoutingMode::Http
    );
    let fra = &config.pops[0];
    assert_eq!(fra.redirect_host.as_deref(), Some("fra.cdn.example"));
    assert_eq!(
        fra.cache_nodes,
        ["a.fra.example", "[2001:db8::2]", "192.0.2.9"]
    );
    assert_eq!(config.pops[1].redirect_host, None);
    assert_eq!(config.doh.trusted_proxies.len(), 3);
    assert_eq!(
        config.listen.http_router,
        Some("127.0.0.1:8080".parse().expect("address"))
    );
    let tls = config.tls.expect("tls");
    assert_eq!(tls.certificate, Path::new("/etc/meridian/cert.pem"));
    assert_eq!(tls.key, Path::new("/etc/meridian/key.pem"));
}

#[test]
fn listen_http_router_must_be_an_address() {
    let text = good_and("listen:\n  http-router: localhost:80\n");
    assert_parse_fails(
        &text,
        line_of(&text, "http-router"),
        &["listen.http-router: `localhost:80` is not an address:port"],
    );
}

#[test]
fn listen_doh_tls_must_be_an_address() {
    let text = good_and("listen:\n  doh-tls: 8443\ntls: { certificate: c.pem, key: k.pem }\n");
    assert_parse_fails(
        &text,
        line_of(&text, "doh-tls"),
        &["listen.doh-tls: `8443` is not an address:port"],
    );
}

#[test]
fn listen_doh_tls_needs_a_tls_section() {
    let text = good_and("listen:\n  doh-tls: 127.0.0.1:8443\n");
    assert_parse_fails(
        &text,
        line_of(&text, "doh-tls"),
        &["listen.doh-tls: no `tls:` section"],
    );
}

#[test]
fn tls_needs_certificate_and_key() {
    let text = good_and("tls:\n  certificate: cert.pem\n");
    let problems = parse_problems(&text);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].message.contains("key"), "{problems:?}");
    // serde-saphyr places a missing field in the mapping that lacks it.
    assert_eq!(
        problems[0].line,
        Some(line_of(&text, "certificate: cert.pem"))
    );
}

#[test]
fn doh_trusted_proxies_must_be_networks() {
    let text = good_and("doh:\n  trusted-proxies:\n    - 10.0.0.0/8\n    - proxy.example\n");
    assert_parse_fails(
        &text,
        line_of(&text, "proxy.example"),
        &["doh.trusted-proxies: `proxy.example` is not an address or network"],
    );
}

#[test]
fn doh_trusted_proxies_have_no_host_bits() {
    let text = good_and("doh:\n  trusted-proxies: [10.1.2.3/8]\n");
    assert_parse_fails(
        &text,
        line_of(&text, "10.1.2.3/8"),
        &["10.1.2.3/8 has host bits set (did you mean 10.0.0.0/8?)"],
    );
}

#[test]
fn domain_routing_is_dns_or_http() {
    let text = domain_with("    routing: 302\n");
    assert_parse_fails(
        &text,
        line_of(&text, "routing: 302"),
        &["domain www.example.com.: routing `302`: expected dns or http"],
    );
}

#[test]
fn pop_redirect_host_must_be_a_host_or_address() {
    let text = good_with(
        "    isp: telecom\n",
        "    isp: telecom\n    redirect-host: \"sha cdn\"\n",
    );
    assert_parse_fails(
        &text,
        line_of(&text, "redirect-host"),
        &["pop sha: redirect-host `sha cdn` is neither a host name nor an IP address"],
    );
}

#[test]
fn pop_cache_nodes_must_be_hosts() {
    let text = good_with(
        "    isp: telecom\n",
        "    isp: telecom\n    cache-nodes:\n      - a.sha.example\n      - http://b.sha.example\n",
    );
    assert_parse_fails(
        &text,
        line_of(&text, "http://b.sha"),
        &["pop sha: cache node `http://b.sha.example` is neither a host name nor an IP address"],
    );
}

#[test]
fn pop_cache_nodes_are_listed_once() {
    let text = good_with(
        "    isp: telecom\n",
        "    isp: telecom\n    cache-nodes:\n      - a.sha.example\n      - A.sha.example.\n",
    );
    assert_parse_fails(
        &text,
        line_of(&text, "A.sha.example."),
        &[&format!(
            "pop sha: cache node a.sha.example is listed twice (first on line {})",
            line_of(&text, "- a.sha.example")
        )],
    );
}
