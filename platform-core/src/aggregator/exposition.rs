//! Reading a target's exposition and writing it back with the target's labels.
//!
//! The parser is ours rather than a crate's: the Rust parsers of the text format either build an
//! owned map per sample (an allocation per label, where the aggregator only needs to copy each
//! sample through with two labels added), read only one of the two formats our targets speak
//! (prometheus-client writes OpenMetrics, other exporters the 0.0.4 text format), or have not
//! been released in years. This one reads both formats line by line, borrows every name and
//! value from the body, validates what Prometheus would refuse (names, quoting, escapes,
//! duplicate labels, values, timestamps), and writes each sample once into its family's text.
//!
//! The output is the Prometheus text format 0.0.4, which every scraper reads: OpenMetrics
//! counters regain their `_total` family name, `info` becomes a `_info` gauge, and `_created`
//! samples and exemplars (which 0.0.4 cannot carry) are left out.

use std::fmt::Write as _;

/// Why a target's exposition was refused; the whole scrape fails with it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExpositionError {
    /// A line is not a comment, a sample or empty.
    #[error("line {line}: {reason}")]
    Syntax {
        /// The line's number, from 1.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// The target exposes more samples than the limit.
    #[error("more than {limit} samples")]
    SampleLimit {
        /// The limit.
        limit: usize,
    },
}

/// A metric family's type, as written in the 0.0.4 format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Untyped,
}

impl Kind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
            Self::Summary => "summary",
            Self::Untyped => "untyped",
        }
    }
}

/// One family of a target, its samples already written with the target's labels.
#[derive(Debug)]
pub(crate) struct Family {
    /// The family's name in the output format.
    pub(crate) name: String,
    pub(crate) kind: Kind,
    /// The help text, escaped as 0.0.4 escapes it.
    pub(crate) help: Option<String>,
    /// Sample lines, each ending in a newline.
    pub(crate) lines: String,
}

/// A target's whole exposition, rewritten.
#[derive(Debug, Default)]
pub(crate) struct Exposition {
    pub(crate) families: Vec<Family>,
    pub(crate) samples: usize,
}

/// What a target's samples get: `service` and `instance`, and a timestamp when they have none.
pub(crate) struct TargetLabels {
    /// `service="…",instance="…"`, escaped.
    prefix: String,
    timestamp_ms: i64,
}

impl TargetLabels {
    pub(crate) fn new(service: &str, instance: &str, timestamp_ms: i64) -> Self {
        let mut prefix = String::with_capacity(service.len() + instance.len() + 24);
        prefix.push_str("service=\"");
        escape_label_value(&mut prefix, service);
        prefix.push_str("\",instance=\"");
        escape_label_value(&mut prefix, instance);
        prefix.push('"');
        Self { prefix, timestamp_ms }
    }

    /// `service="…",instance="…"`, for series the aggregator makes itself.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }
}

pub(crate) fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// How a sample relates to the family it follows.
enum Membership {
    Member,
    /// Part of the family but not expressible in 0.0.4 (`_created`).
    Skip,
    Foreign,
}

struct Current {
    family: Family,
    /// The name the input used in `# TYPE`, which sample names extend.
    input_name: String,
    open_metrics_counter: bool,
    open_metrics_info: bool,
}

impl Current {
    /// A family known only by a name so far: untyped until a `# TYPE` says otherwise.
    fn untyped(name: &str) -> Self {
        Self {
            family: Family {
                name: name.to_owned(),
                kind: Kind::Untyped,
                help: None,
                lines: String::new(),
            },
            input_name: name.to_owned(),
            open_metrics_counter: false,
            open_metrics_info: false,
        }
    }

    fn membership(&self, sample: &str) -> Membership {
        let base = self.input_name.as_str();
        let Some(suffix) = sample.strip_prefix(base) else { return Membership::Foreign };
        let kind = self.family.kind;
        match suffix {
            "" if !self.open_metrics_counter && !self.open_metrics_info => Membership::Member,
            "_total" if self.open_metrics_counter => Membership::Member,
            "_info" if self.open_metrics_info => Membership::Member,
            "_bucket" | "_gsum" | "_gcount" if kind == Kind::Histogram => Membership::Member,
            "_sum" | "_count" if matches!(kind, Kind::Histogram | Kind::Summary) => {
                Membership::Member
            }
            "_created" if matches!(kind, Kind::Counter | Kind::Histogram | Kind::Summary) => {
                Membership::Skip
            }
            _ => Membership::Foreign,
        }
    }
}

/// Rewrites `body` for one target. `open_metrics` says the body is OpenMetrics (its
/// `Content-Type`, or a final `# EOF`), whose timestamps are seconds rather than milliseconds.
pub(crate) fn rewrite(
    body: &str,
    open_metrics: bool,
    target: &TargetLabels,
    sample_limit: usize,
) -> Result<Exposition, ExpositionError> {
    let mut out = Exposition::default();
    let mut current: Option<Current> = None;
    let mut ended = false;
    let mut scratch = Vec::new();
    for (index, raw_line) in body.split('\n').enumerate() {
        let line_number = index + 1;
        let syntax = |reason| ExpositionError::Syntax { line: line_number, reason };
        let line = raw_line.strip_suffix('\r').unwrap_or(raw_line);
        if ended {
            if line.is_empty() {
                continue;
            }
            return Err(syntax("text after # EOF"));
        }
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let comment = comment.trim_start();
            if comment == "EOF" {
                ended = true;
            } else if let Some(rest) = comment.strip_prefix("HELP ") {
                let (name, help) =
                    split_name(rest).ok_or_else(|| syntax("HELP without a metric name"))?;
                let help = if open_metrics { help.replace("\\\"", "\"") } else { help.to_owned() };
                start_family(&mut out, &mut current, name, None, open_metrics).family.help =
                    Some(help);
            } else if let Some(rest) = comment.strip_prefix("TYPE ") {
                let (name, kind) =
                    split_name(rest).ok_or_else(|| syntax("TYPE without a metric name"))?;
                start_family(&mut out, &mut current, name, Some(kind.trim()), open_metrics);
            }
            continue;
        }

        let (name, rest) =
            sample_name(line).ok_or_else(|| syntax("a sample must start with a metric name"))?;
        let membership = current.as_ref().map_or(Membership::Foreign, |c| c.membership(name));
        match membership {
            Membership::Skip => continue,
            Membership::Member => {}
            Membership::Foreign => {
                finish(&mut out, current.take());
                current = Some(Current::untyped(name));
            }
        }
        out.samples += 1;
        if out.samples > sample_limit {
            return Err(ExpositionError::SampleLimit { limit: sample_limit });
        }
        let family = &mut current.as_mut().expect("a family was just ensured").family;
        write_sample(&mut family.lines, name, rest, open_metrics, target, &mut scratch)
            .map_err(syntax)?;
    }
    if open_metrics && !ended {
        return Err(ExpositionError::Syntax {
            line: body.lines().count(),
            reason: "OpenMetrics must end with # EOF",
        });
    }
    finish(&mut out, current.take());
    Ok(out)
}

fn split_name(rest: &str) -> Option<(&str, &str)> {
    let rest = rest.trim_start();
    let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
    is_metric_name(name).then_some((name, text))
}

fn start_family<'a>(
    out: &mut Exposition,
    current: &'a mut Option<Current>,
    name: &str,
    kind: Option<&str>,
    open_metrics: bool,
) -> &'a mut Current {
    let same = current.as_ref().is_some_and(|c| c.input_name == name);
    if !same {
        finish(out, current.take());
        *current = Some(Current::untyped(name));
    }
    let current = current.as_mut().expect("set above");
    if let Some(kind) = kind {
        let family = &mut current.family;
        family.kind = match kind {
            "counter" => Kind::Counter,
            "gauge" | "stateset" => Kind::Gauge,
            "info" if open_metrics => Kind::Gauge,
            "histogram" => Kind::Histogram,
            "summary" => Kind::Summary,
            _ => Kind::Untyped,
        };
        if open_metrics && kind == "counter" {
            current.open_metrics_counter = true;
            family.name = format!("{name}_total");
        }
        if open_metrics && kind == "info" {
            current.open_metrics_info = true;
            family.name = format!("{name}_info");
        }
    }
    current
}

fn finish(out: &mut Exposition, current: Option<Current>) {
    if let Some(current) = current {
        out.families.push(current.family);
    }
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn sample_name(line: &str) -> Option<(&str, &str)> {
    let end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    let name = &line[..end];
    is_metric_name(name).then(|| (name, &line[end..]))
}

/// Writes `name{target labels, sample labels} value timestamp` for one sample line's `rest`
/// (what follows the name).
fn write_sample<'b>(
    out: &mut String,
    name: &str,
    rest: &'b str,
    open_metrics: bool,
    target: &TargetLabels,
    scratch: &mut Vec<(&'b str, &'b str)>,
) -> Result<(), &'static str> {
    out.push_str(name);
    out.push('{');
    out.push_str(&target.prefix);
    let mut rest = rest;
    if let Some(labels) = rest.strip_prefix('{') {
        rest = copy_labels(out, labels, scratch)?;
    }
    out.push('}');

    let rest = rest.strip_prefix([' ', '\t']).ok_or("expected a space before the value")?;
    let rest = rest.trim_start();
    let (value, rest) = rest.split_once([' ', '\t']).unwrap_or((rest, ""));
    if !is_sample_value(value) {
        return Err("the value is not a number");
    }
    out.push(' ');
    out.push_str(value);
    let rest = rest.trim_start();
    let (timestamp, rest) = match rest.split_once([' ', '\t']) {
        Some((t, r)) if !t.starts_with('#') => (Some(t), r),
        None if !rest.is_empty() && !rest.starts_with('#') => (Some(rest), ""),
        _ => (None, rest),
    };
    let timestamp_ms = match timestamp {
        None => target.timestamp_ms,
        Some(t) if open_metrics => {
            let seconds: f64 = t.parse().map_err(|_| "the timestamp is not a number")?;
            if !seconds.is_finite() {
                return Err("the timestamp is not a number");
            }
            (seconds * 1000.0).round() as i64
        }
        Some(t) => t.parse().map_err(|_| "the timestamp is not whole milliseconds")?,
    };
    let rest = rest.trim_start();
    if !(rest.is_empty() || open_metrics && rest.starts_with('#')) {
        return Err("unexpected text after the value");
    }
    let _ = write!(out, " {timestamp_ms}");
    out.push('\n');
    Ok(())
}

fn is_sample_value(value: &str) -> bool {
    matches!(value, "NaN" | "+Inf" | "-Inf" | "Inf")
        || (value
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'))
            && value.parse::<f64>().is_ok())
}

/// Copies `name="value",…}` after the target's labels, renaming a sample's own `service` and
/// `instance` to `exported_…` (again while that name is taken too), as Prometheus does. Returns
/// what follows the closing brace. `labels` is scratch space, reused between samples.
fn copy_labels<'b>(
    out: &mut String,
    mut rest: &'b str,
    labels: &mut Vec<(&'b str, &'b str)>,
) -> Result<&'b str, &'static str> {
    labels.clear();
    let after = loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix('}') {
            break after;
        }
        let end =
            rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
        let name = &rest[..end];
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            return Err("a label name must match [a-zA-Z_][a-zA-Z0-9_]*");
        }
        if labels.iter().any(|&(n, _)| n == name) {
            return Err("a label appears twice");
        }
        rest = rest[end..].trim_start().strip_prefix('=').ok_or("expected = after a label name")?;
        rest = rest.trim_start().strip_prefix('"').ok_or("a label value must be quoted")?;
        let bytes = rest.as_bytes();
        let mut i = 0;
        let close = loop {
            match bytes.get(i) {
                None => return Err("a label value is not closed"),
                Some(b'"') => break i,
                Some(b'\\') => {
                    if !matches!(bytes.get(i + 1), Some(b'\\' | b'"' | b'n')) {
                        return Err("unknown escape in a label value");
                    }
                    i += 2;
                }
                Some(_) => i += 1,
            }
        };
        labels.push((name, &rest[..close]));
        rest = rest[close + 1..].trim_start();
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return Err("expected , or } after a label");
        }
    };
    for &(name, value) in labels.iter() {
        out.push(',');
        if name == "service" || name == "instance" {
            let mut candidate = format!("exported_{name}");
            while labels.iter().any(|&(n, _)| n == candidate) {
                candidate.insert_str(0, "exported_");
            }
            out.push_str(&candidate);
        } else {
            out.push_str(name);
        }
        out.push_str("=\"");
        out.push_str(value);
        out.push('"');
    }
    Ok(after)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> TargetLabels {
        TargetLabels::new("app", "10.0.0.5:3000", 1_700_000_000_000)
    }

    fn render(exposition: &Exposition) -> String {
        let mut out = String::new();
        for family in &exposition.families {
            let _ = writeln!(out, "# TYPE {} {}", family.name, family.kind.as_str());
            out.push_str(&family.lines);
        }
        out
    }

    #[test]
    fn open_metrics_from_prometheus_client_becomes_0_0_4_with_target_labels() {
        let body = "# HELP http_requests HTTP requests answered.\n\
                    # TYPE http_requests counter\n\
                    http_requests_total{method=\"GET\",route=\"/a\",status=\"200\"} 3\n\
                    http_requests_created{method=\"GET\",route=\"/a\",status=\"200\"} 1.7e9\n\
                    # TYPE service info\n\
                    service_info{service=\"app\",version=\"0.1.0\"} 1\n\
                    # TYPE latency histogram\n\
                    latency_bucket{le=\"0.1\"} 1 # {trace_id=\"x\"} 0.05 1700000000.5\n\
                    latency_bucket{le=\"+Inf\"} 2\n\
                    latency_sum 0.3\n\
                    latency_count 2\n\
                    # EOF\n";
        let out = rewrite(body, true, &target(), 100).expect("valid");
        assert_eq!(out.samples, 6);
        assert_eq!(
            render(&out),
            "# TYPE http_requests_total counter\n\
             http_requests_total{service=\"app\",instance=\"10.0.0.5:3000\",method=\"GET\",route=\"/a\",status=\"200\"} 3 1700000000000\n\
             # TYPE service_info gauge\n\
             service_info{service=\"app\",instance=\"10.0.0.5:3000\",exported_service=\"app\",version=\"0.1.0\"} 1 1700000000000\n\
             # TYPE latency histogram\n\
             latency_bucket{service=\"app\",instance=\"10.0.0.5:3000\",le=\"0.1\"} 1 1700000000000\n\
             latency_bucket{service=\"app\",instance=\"10.0.0.5:3000\",le=\"+Inf\"} 2 1700000000000\n\
             latency_sum{service=\"app\",instance=\"10.0.0.5:3000\"} 0.3 1700000000000\n\
             latency_count{service=\"app\",instance=\"10.0.0.5:3000\"} 2 1700000000000\n"
        );
        assert_eq!(out.families[0].help.as_deref(), Some("HTTP requests answered."));
    }

    #[test]
    fn text_0_0_4_keeps_its_names_timestamps_and_untyped_samples() {
        let body = "# TYPE jobs_total counter\njobs_total 7 1699999999000\nloose{a=\"x\\\"y\"} -Inf\n\
                    # TYPE rpc summary\nrpc{quantile=\"0.5\"} 1\nrpc_sum 2\nrpc_count 3\n";
        let out = rewrite(body, false, &target(), 100).expect("valid");
        let text = render(&out);
        assert!(
            text.contains(
                "jobs_total{service=\"app\",instance=\"10.0.0.5:3000\"} 7 1699999999000\n"
            ),
            "{text}"
        );
        assert!(text.contains("# TYPE loose untyped\nloose{service=\"app\",instance=\"10.0.0.5:3000\",a=\"x\\\"y\"} -Inf"), "{text}");
        assert!(text.contains("# TYPE rpc summary\nrpc{"), "{text}");
        assert_eq!(out.families.len(), 3);
    }

    #[test]
    fn colliding_labels_are_renamed_as_prometheus_does() {
        let body = "m{instance=\"a\",exported_instance=\"b\",service=\"c\"} 1\n";
        let text = render(&rewrite(body, false, &target(), 10).expect("valid"));
        assert!(
            text.contains(
                ",exported_exported_instance=\"a\",exported_instance=\"b\",exported_service=\"c\"}"
            ),
            "{text}"
        );
    }

    #[test]
    fn garbage_and_limits_fail_the_whole_scrape() {
        let t = target();
        for (body, open_metrics, expected) in [
            ("<html>oops</html>\n", false, "metric name"),
            ("m{a=\"1\" 1\n", false, "expected , or }"),
            ("m{a=\"1\",a=\"2\"} 1\n", false, "twice"),
            ("m one\n", false, "not a number"),
            ("m 1 soon\n", false, "milliseconds"),
            ("m{a=\"\\q\"} 1\n", false, "escape"),
            ("# TYPE m gauge\nm 1\n", true, "# EOF"),
            ("m 1\n# EOF\nm 2\n", true, "after # EOF"),
        ] {
            let error = rewrite(body, open_metrics, &t, 10).expect_err(body).to_string();
            assert!(error.contains(expected), "{body:?}: {error}");
        }
        let many: String = (0..11).map(|i| format!("m{{i=\"{i}\"}} 1\n")).collect();
        assert_eq!(
            rewrite(&many, false, &t, 10).expect_err("over the limit"),
            ExpositionError::SampleLimit { limit: 10 }
        );
        assert_eq!(rewrite(&many, false, &t, 11).expect("within").samples, 11);
    }
}
