//! Prometheus metrics as the tests read them: `/metrics` scraped, parsed strictly, and
//! summed by name and labels.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::otlp::wait_http_ok;

/// Sample values by metric name and labels.
pub type Samples = BTreeMap<(String, BTreeMap<String, String>), f64>;

/// Parses Prometheus/OpenMetrics text strictly: every line is a comment of a known kind
/// or a sample `name{label="value",...} number`; the samples, keyed by name and labels.
pub fn parse_metrics(text: &str) -> Samples {
    let is_name = |n: &str| {
        !n.is_empty()
            && n.chars()
                .enumerate()
                .all(|(i, c)| c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit()))
    };
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if line == "# EOF" {
            continue;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            let mut words = comment.splitn(3, ' ');
            let kind = words.next().unwrap();
            assert!(matches!(kind, "HELP" | "TYPE" | "UNIT"), "unknown comment: {line}");
            assert!(is_name(words.next().unwrap_or("")), "bad metric name: {line}");
            if kind == "TYPE" {
                let ty = words.next().unwrap_or("");
                assert!(
                    matches!(
                        ty,
                        "counter" | "gauge" | "histogram" | "summary" | "unknown" | "info" | "stateset" | "gaugehistogram"
                    ),
                    "bad type: {line}"
                );
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value: {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels: {line:?}"));
                let mut labels = BTreeMap::new();
                for pair in body.split(',').filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once('=').unwrap_or_else(|| panic!("bad label: {line:?}"));
                    assert!(is_name(k), "bad label name: {line:?}");
                    let v = v
                        .strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .unwrap_or_else(|| panic!("unquoted label value: {line:?}"));
                    labels.insert(k.to_owned(), v.to_owned());
                }
                (name, labels)
            }
        };
        assert!(is_name(name), "bad sample name: {line:?}");
        samples.insert((name.to_owned(), labels), value);
    }
    assert!(text.trim_end().ends_with("# EOF"), "OpenMetrics text ends with # EOF");
    samples
}

/// The sum of the samples of `name` whose labels include `with`.
pub fn total(samples: &Samples, name: &str, with: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|((n, labels), _)| n == name && with.iter().all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v)))
        .map(|(_, v)| *v)
        .sum()
}

/// How many connector tables (whole or delta) the front at `http` has taken from the deciders.
pub fn connector_updates(http: SocketAddr, prefix: &str) -> f64 {
    total(&scrape(http), &format!("{prefix}_connector_updates_total"), &[])
}

/// Waits until the front at `http` has taken a connector table after the `before`-th: a
/// change an admin just made (a pause, a mode) has reached it, and the verdicts it
/// remembered are dropped. Fronts hear of changes a moment after they commit.
pub fn wait_for_connector_update(http: SocketAddr, prefix: &str, before: f64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while connector_updates(http, prefix) <= before {
        assert!(
            std::time::Instant::now() < deadline,
            "the front at {http} never heard of the change"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// GET /metrics from `addr` (waiting up to 10 s for it to answer), parsed.
pub fn scrape(addr: SocketAddr) -> Samples {
    parse_metrics(&wait_http_ok(addr, "/metrics", Duration::from_secs(10)))
}
