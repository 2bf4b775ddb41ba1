//! The lexical half of hybrid search: code-aware terms and their BM25 weights as sparse vectors.
//!
//! Identifiers are kept whole (so `parse_config` and `parseConfig` are found exactly) and also
//! split at snake_case and camelCase boundaries (so `config` finds both); everything is lower
//! case. A document's sparse vector holds each term's BM25 term-frequency part; the store
//! multiplies in the inverse document frequency at query time (Qdrant's IDF modifier), so the
//! weights stay correct as the corpus changes. Terms are indexed by a stable 32-bit hash.

use std::collections::HashMap;

/// BM25's term-frequency saturation.
const K1: f32 = 1.2;
/// BM25's length normalisation.
const B: f32 = 0.75;
/// The document length (in terms) BM25 normalises against; code chunks of about 1,500
/// characters hold about this many.
const AVERAGE_TERMS: f32 = 200.0;

/// Terms shorter than this (after splitting) carry no meaning on their own.
const MIN_TERM: usize = 2;
/// Longer runs are hashes, base64 or data, not words.
const MAX_TERM: usize = 64;

/// A sparse vector: sorted unique term indices and their weights.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SparseVector {
    /// Term indices, ascending.
    pub indices: Vec<u32>,
    /// The weight of each index.
    pub values: Vec<f32>,
}

impl SparseVector {
    /// True when no term survived tokenizing.
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }
}

/// The terms of `text`, in order, with repeats.
pub fn terms(text: &str) -> Vec<String> {
    let mut terms = Vec::new();
    for word in text.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
        let word = word.trim_matches('_');
        if word.len() > MAX_TERM || word.is_empty() {
            continue;
        }
        let parts = split_identifier(word);
        let whole = word.to_lowercase();
        if whole.chars().count() >= MIN_TERM && !is_number(&whole) {
            terms.push(whole.clone());
        }
        if parts.len() > 1 {
            for part in parts {
                let part = part.to_lowercase();
                if part.chars().count() >= MIN_TERM && !is_number(&part) && part != whole {
                    terms.push(part);
                }
            }
        }
    }
    terms
}

/// The sparse vector of a document (a chunk): BM25's saturated, length-normalised term
/// frequency for each term.
pub fn document_vector(text: &str) -> SparseVector {
    let terms = terms(text);
    let length = terms.len() as f32;
    let mut counts: HashMap<u32, f32> = HashMap::new();
    for term in &terms {
        *counts.entry(term_index(term)).or_default() += 1.0;
    }
    let norm = K1 * (1.0 - B + B * length / AVERAGE_TERMS);
    from_weights(counts.into_iter().map(|(index, tf)| (index, tf * (K1 + 1.0) / (tf + norm))))
}

/// The sparse vector of a query: each distinct term once, weight 1 (the store applies IDF).
pub fn query_vector(text: &str) -> SparseVector {
    from_weights(terms(text).iter().map(|term| (term_index(term), 1.0)))
}

fn from_weights(weights: impl Iterator<Item = (u32, f32)>) -> SparseVector {
    let mut pairs: Vec<(u32, f32)> = weights.collect();
    pairs.sort_by_key(|&(index, _)| index);
    pairs.dedup_by_key(|&mut (index, _)| index);
    SparseVector {
        indices: pairs.iter().map(|&(index, _)| index).collect(),
        values: pairs.iter().map(|&(_, value)| value).collect(),
    }
}

/// FNV-1a of the term: stable across processes, releases and machines, as an index must be.
fn term_index(term: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in term.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

fn is_number(term: &str) -> bool {
    term.chars().all(|c| c.is_ascii_digit())
}

/// `parse_HTTPResponse2Json` → `parse`, `HTTP`, `Response`, `2`, `Json`.
fn split_identifier(word: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    for piece in word.split('_').filter(|piece| !piece.is_empty()) {
        let chars: Vec<(usize, char)> = piece.char_indices().collect();
        let mut start = 0;
        for position in 1..chars.len() {
            let (offset, current) = chars[position];
            let previous = chars[position - 1].1;
            let next = chars.get(position + 1).map(|&(_, next)| next);
            let boundary = (previous.is_lowercase() && current.is_uppercase())
                || (previous.is_uppercase()
                    && current.is_uppercase()
                    && next.is_some_and(char::is_lowercase))
                || (previous.is_alphabetic() != current.is_alphabetic());
            if boundary {
                parts.push(&piece[start..offset]);
                start = offset;
            }
        }
        parts.push(&piece[start..]);
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::{document_vector, query_vector, split_identifier, terms};

    #[test]
    fn identifiers_split_at_case_and_underscores() {
        assert_eq!(split_identifier("parseConfig"), ["parse", "Config"]);
        assert_eq!(
            split_identifier("parse_HTTPResponse2Json"),
            ["parse", "HTTP", "Response", "2", "Json"]
        );
        assert_eq!(split_identifier("XMLHttpRequest"), ["XML", "Http", "Request"]);
        assert_eq!(split_identifier("plain"), ["plain"]);
    }

    #[test]
    fn terms_keep_the_whole_identifier_and_its_parts() {
        assert_eq!(terms("fn parseConfig(x: u8)"), ["fn", "parseconfig", "parse", "config", "u8"]);
        assert_eq!(terms("ERR_TOO_LONG: 42"), ["err_too_long", "err", "too", "long"]);
        assert!(terms(&"a".repeat(100)).is_empty());
    }

    #[test]
    fn a_query_term_matches_the_same_term_in_a_document() {
        let document = document_vector("fn expire_sessions(now: Instant) { sessions.retain(..) }");
        let query = query_vector("expire sessions");
        let shared = query.indices.iter().filter(|index| document.indices.contains(index)).count();
        assert_eq!(shared, 2);
        // Repeats saturate: the weight of a term grows with its count but stays below k1 + 1.
        let once = document_vector("session");
        let often = document_vector("session session session session");
        assert!(often.values[0] > once.values[0] && often.values[0] < 2.2);
    }
}
