//! Loki's push protocol, as `/loki/api/v1/push` speaks it: the protobuf messages of Loki's
//! `push.proto`, sent raw-Snappy compressed, and the JSON form stock clients may send instead.
//!
//! ```
//! use platform_core::loki::{self, Entry, PushRequest, Stream};
//!
//! let request = PushRequest {
//!     streams: vec![Stream {
//!         labels: loki::format_labels([("service", "app"), ("level", "info")]),
//!         entries: vec![Entry::new(1_700_000_000_000_000_000, "started".to_owned())],
//!         hash: 0,
//!     }],
//! };
//! let body = loki::encode(&request);
//! let decoded = loki::decode(&body, Some("application/x-protobuf"), None)?;
//! assert_eq!(decoded.streams[0].labels, r#"{level="info", service="app"}"#);
//! assert_eq!(decoded.streams[0].entries[0].line, "started");
//! # Ok::<(), platform_core::loki::PushError>(())
//! ```

use std::collections::BTreeMap;
use std::io::Read as _;

use prost::Message as _;

/// The body of one push: log streams, each a label set and its entries.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PushRequest {
    /// The streams, each with its own label set.
    #[prost(message, repeated, tag = "1")]
    pub streams: Vec<Stream>,
}

/// One stream: entries that share a label set.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Stream {
    /// The label set in Prometheus' selector form: `{service="app", level="info"}`.
    #[prost(string, tag = "1")]
    pub labels: String,
    /// The entries, oldest first.
    #[prost(message, repeated, tag = "2")]
    pub entries: Vec<Entry>,
    /// Unused by pushes (Loki fills it in internally); sent as 0.
    #[prost(uint64, tag = "3")]
    pub hash: u64,
}

/// One log line.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Entry {
    /// When the line was written.
    #[prost(message, optional, tag = "1")]
    pub timestamp: Option<Timestamp>,
    /// The line itself.
    #[prost(string, tag = "2")]
    pub line: String,
    /// Per-line metadata that is not a label (trace and request ids).
    #[prost(message, repeated, tag = "3")]
    pub structured_metadata: Vec<LabelPair>,
}

impl Entry {
    /// Makes an entry at `unix_nanos` nanoseconds since the Unix epoch, without metadata.
    pub fn new(unix_nanos: i128, line: String) -> Self {
        Self {
            timestamp: Some(Timestamp::from_unix_nanos(unix_nanos)),
            line,
            structured_metadata: Vec::new(),
        }
    }

    /// The entry's time in nanoseconds since the Unix epoch (0 when it has none).
    pub fn unix_nanos(&self) -> i128 {
        self.timestamp.map_or(0, |t| t.unix_nanos())
    }

    /// The bytes the entry accounts for in buffers: its line and metadata.
    pub fn size(&self) -> usize {
        self.line.len()
            + self.structured_metadata.iter().map(|p| p.name.len() + p.value.len()).sum::<usize>()
    }
}

/// A name and a value of structured metadata.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, prost::Message)]
pub struct LabelPair {
    /// The name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// The value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `google.protobuf.Timestamp`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, prost::Message)]
pub struct Timestamp {
    /// Whole seconds since the Unix epoch.
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    /// Nanoseconds within the second, 0 to 999,999,999.
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

impl Timestamp {
    /// Converts nanoseconds since the Unix epoch.
    pub fn from_unix_nanos(nanos: i128) -> Self {
        let seconds = nanos.div_euclid(1_000_000_000);
        let nanos = nanos.rem_euclid(1_000_000_000);
        Self {
            seconds: i64::try_from(seconds).unwrap_or(i64::MAX),
            nanos: i32::try_from(nanos).unwrap_or(0),
        }
    }

    /// Nanoseconds since the Unix epoch.
    pub fn unix_nanos(self) -> i128 {
        i128::from(self.seconds) * 1_000_000_000 + i128::from(self.nanos)
    }
}

/// Why a push body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// `Content-Encoding: gzip` but the body is not gzip.
    #[error("the body is not valid gzip")]
    Gzip(#[source] std::io::Error),
    /// A content encoding other than gzip (or none).
    #[error("unsupported Content-Encoding {0:?}: send gzip or nothing")]
    Encoding(String),
    /// The protobuf body is not raw Snappy.
    #[error("the protobuf body is not raw (unframed) Snappy")]
    Snappy(#[source] snap::Error),
    /// The body would decompress to more than [`MAX_DECODED_BYTES`].
    #[error("the body decompresses to more than {MAX_DECODED_BYTES} bytes")]
    TooLarge,
    /// The decompressed body is not a `PushRequest`.
    #[error("the body is not a Loki PushRequest")]
    Protobuf(#[source] prost::DecodeError),
    /// The JSON body is not Loki's JSON push form.
    #[error("the JSON body is not Loki's push form")]
    Json(#[source] serde_json::Error),
    /// A stream's labels are not `{name="value", ...}`.
    #[error("stream labels {labels:?}: {reason}")]
    Labels {
        /// The labels as sent (cut to 200 characters).
        labels: String,
        /// What is wrong with them.
        reason: &'static str,
    },
    /// A JSON entry's timestamp is not nanoseconds as a string.
    #[error("entry timestamp {0:?} is not nanoseconds since the Unix epoch")]
    Timestamp(String),
}

/// The most bytes a push body may decompress to.
pub const MAX_DECODED_BYTES: usize = 64 << 20;

/// Encodes a push as Loki expects it by default: protobuf, raw Snappy compressed.
pub fn encode(request: &PushRequest) -> Vec<u8> {
    let protobuf = request.encode_to_vec();
    snap::raw::Encoder::new()
        .compress_vec(&protobuf)
        .expect("Snappy compresses any input that fits in memory")
}

/// Decodes a push body by its `Content-Type` (`application/json` for JSON, protobuf + Snappy
/// otherwise, as Loki defaults) and `Content-Encoding` (gzip or none).
///
/// # Errors
///
/// [`PushError`] says which layer of the body is wrong.
pub fn decode(
    body: &[u8],
    content_type: Option<&str>,
    content_encoding: Option<&str>,
) -> Result<PushRequest, PushError> {
    let inflated;
    let body = match content_encoding.map(str::trim) {
        None | Some("" | "identity") => body,
        Some(encoding) if encoding.eq_ignore_ascii_case("gzip") => {
            let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(MAX_DECODED_BYTES));
            flate2::read::MultiGzDecoder::new(body)
                .take(MAX_DECODED_BYTES as u64 + 1)
                .read_to_end(&mut out)
                .map_err(PushError::Gzip)?;
            if out.len() > MAX_DECODED_BYTES {
                return Err(PushError::TooLarge);
            }
            inflated = out;
            &inflated
        }
        Some(other) => return Err(PushError::Encoding(other.to_owned())),
    };
    let is_json = content_type
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    if is_json {
        decode_json(body)
    } else {
        if snap::raw::decompress_len(body).map_err(PushError::Snappy)? > MAX_DECODED_BYTES {
            return Err(PushError::TooLarge);
        }
        let protobuf = snap::raw::Decoder::new().decompress_vec(body).map_err(PushError::Snappy)?;
        PushRequest::decode(protobuf.as_slice()).map_err(PushError::Protobuf)
    }
}

#[derive(serde::Deserialize)]
struct JsonPush {
    streams: Vec<JsonStream>,
}

#[derive(serde::Deserialize)]
struct JsonStream {
    #[serde(default)]
    stream: BTreeMap<String, String>,
    values: Vec<JsonValue>,
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum JsonValue {
    Plain(String, String),
    WithMetadata(String, String, BTreeMap<String, String>),
}

fn decode_json(body: &[u8]) -> Result<PushRequest, PushError> {
    let push: JsonPush = serde_json::from_slice(body).map_err(PushError::Json)?;
    let mut streams = Vec::with_capacity(push.streams.len());
    for stream in push.streams {
        let labels = format_labels(stream.stream.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let mut entries = Vec::with_capacity(stream.values.len());
        for value in stream.values {
            let (time, line, metadata) = match value {
                JsonValue::Plain(time, line) => (time, line, BTreeMap::new()),
                JsonValue::WithMetadata(time, line, metadata) => (time, line, metadata),
            };
            let nanos: i128 = time.parse().map_err(|_| PushError::Timestamp(time.clone()))?;
            entries.push(Entry {
                timestamp: Some(Timestamp::from_unix_nanos(nanos)),
                line,
                structured_metadata: metadata
                    .into_iter()
                    .map(|(name, value)| LabelPair { name, value })
                    .collect(),
            });
        }
        streams.push(Stream { labels, entries, hash: 0 });
    }
    Ok(PushRequest { streams })
}

/// Writes a label set in the selector form Loki expects, sorted by name:
/// `{level="info", service="app"}`. Values are escaped (`\\`, `\"`, `\n`).
pub fn format_labels<'a>(labels: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut sorted: Vec<(&str, &str)> = labels.into_iter().collect();
    sorted.sort_unstable();
    let mut out =
        String::with_capacity(2 + sorted.iter().map(|(k, v)| k.len() + v.len() + 5).sum::<usize>());
    out.push('{');
    for (i, (name, value)) in sorted.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(name);
        out.push_str("=\"");
        crate::aggregator::escape_label_value(&mut out, value);
        out.push('"');
    }
    out.push('}');
    out
}

/// Reads a label set written as `{name="value", ...}` into a sorted map.
///
/// # Errors
///
/// [`PushError::Labels`] when the text is not a non-empty label set of valid names.
pub fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, PushError> {
    let fail = |reason| PushError::Labels { labels: text.chars().take(200).collect(), reason };
    let inner = text
        .trim()
        .strip_prefix('{')
        .and_then(|rest| rest.strip_suffix('}'))
        .ok_or_else(|| fail("must be enclosed in { }"))?;
    let mut labels = BTreeMap::new();
    let mut rest = inner.trim_start();
    while !rest.is_empty() {
        let name_end =
            rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
        let name = &rest[..name_end];
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(fail("a label name must match [a-zA-Z_][a-zA-Z0-9_]*"));
        }
        rest = rest[name_end..].trim_start();
        rest = rest.strip_prefix('=').ok_or_else(|| fail("expected = after a label name"))?;
        rest = rest
            .trim_start()
            .strip_prefix('"')
            .ok_or_else(|| fail("a label value must be quoted"))?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err(fail("a label value is not closed")),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    _ => return Err(fail("unknown escape in a label value")),
                },
                Some((_, c)) => value.push(c),
            }
        };
        if labels.insert(name.to_owned(), value).is_some() {
            return Err(fail("a label name appears twice"));
        }
        rest = rest[end + 1..].trim_start();
        if let Some(after) = rest.strip_prefix(',') {
            rest = after.trim_start();
        } else if !rest.is_empty() {
            return Err(fail("expected , between labels"));
        }
    }
    if labels.is_empty() {
        return Err(fail("a stream needs at least one label"));
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip_with_escapes() {
        let text = format_labels([("service", "app"), ("note", "a \"b\"\\\nc")]);
        assert_eq!(text, r#"{note="a \"b\"\\\nc", service="app"}"#);
        let parsed = parse_labels(&text).expect("valid labels");
        assert_eq!(parsed["note"], "a \"b\"\\\nc");
        assert_eq!(parsed["service"], "app");
        assert_eq!(parse_labels("{a=\"1\",b=\"2\"}").expect("compact form").len(), 2);
    }

    #[test]
    fn malformed_labels_are_refused_with_the_reason() {
        for (text, reason) in [
            ("service=\"app\"", "enclosed"),
            ("{}", "at least one"),
            ("{1a=\"x\"}", "label name"),
            ("{a=x}", "quoted"),
            ("{a=\"x}", "not closed"),
            ("{a=\"x\" b=\"y\"}", "expected ,"),
            ("{a=\"x\", a=\"y\"}", "twice"),
        ] {
            let error = parse_labels(text).expect_err(text).to_string();
            assert!(error.contains(reason), "{text}: {error}");
        }
    }

    #[test]
    fn json_and_gzip_bodies_decode_like_protobuf() {
        let json = br#"{"streams":[{"stream":{"service":"app"},"values":[
            ["1700000000000000001","one"],["1700000000000000002","two",{"request_id":"r1"}]]}]}"#;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, json).expect("in memory");
        let gz = gz.finish().expect("in memory");
        let push =
            decode(&gz, Some("application/json; charset=utf-8"), Some("gzip")).expect("json");
        let stream = &push.streams[0];
        assert_eq!(stream.labels, r#"{service="app"}"#);
        assert_eq!(stream.entries[1].unix_nanos(), 1_700_000_000_000_000_002);
        assert_eq!(stream.entries[1].structured_metadata[0].value, "r1");

        let again = decode(&encode(&push), None, None).expect("protobuf");
        assert_eq!(again, push);
    }

    #[test]
    fn bad_bodies_say_which_layer_is_wrong() {
        assert!(matches!(decode(b"not snappy", None, None), Err(PushError::Snappy(_))));
        assert!(matches!(decode(b"x", None, Some("br")), Err(PushError::Encoding(_))));
        assert!(matches!(decode(b"x", None, Some("gzip")), Err(PushError::Gzip(_))));
        let bad_time = br#"{"streams":[{"stream":{"a":"b"},"values":[["soon","x"]]}]}"#;
        assert!(matches!(
            decode(bad_time, Some("application/json"), None),
            Err(PushError::Timestamp(_))
        ));
    }
}
