//! Splitting files into the pieces that are embedded and searched.
//!
//! Code in a language with a grammar ([`Language`]) is split along its syntax tree with
//! `text-splitter`'s tree-sitter splitter: functions, types and classes that fit stay whole,
//! larger ones are split at their inner blocks. Comments and attributes that precede an item
//! travel with it, and a fragment too small to mean anything is merged into its neighbour. Other
//! text is cut into windows of whole lines. Files nobody searches for (binary, vendored,
//! generated, minified, lock files, oversized) are skipped with a [`Skip`] reason.

mod language;
mod skip;

use std::collections::HashMap;
use std::sync::Mutex;

use text_splitter::{ChunkConfig, CodeSplitter};

pub use language::Language;
pub use skip::Skip;

/// One piece of a file, with its 1-based inclusive line range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// First line.
    pub start_line: u32,
    /// Last line.
    pub end_line: u32,
    /// The text: whole lines, indentation kept.
    pub text: String,
}

/// A file's chunks and its language.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileChunks {
    /// The language, from the file's name.
    pub language: Language,
    /// The chunks in file order.
    pub chunks: Vec<Chunk>,
}

/// Limits of chunking.
#[derive(Clone, Copy, Debug)]
pub struct ChunkLimits {
    /// The most characters in a chunk (1,500 by default: about 400 tokens of code, of which
    /// a 256-token model reads the first; `scripts/bench.sh search` measured 800 characters,
    /// which fit the window, as no better overall and 1.3 times slower to index).
    pub max_chars: usize,
    /// Chunks shorter than this are merged into a neighbour when the result stays within
    /// `max_chars` and a half.
    pub min_chars: usize,
    /// The most lines in a window of text without a grammar.
    pub window_lines: usize,
    /// Files larger than this are skipped ([`Skip::TooLarge`]).
    pub max_file_bytes: usize,
}

impl Default for ChunkLimits {
    fn default() -> Self {
        Self { max_chars: 1_500, min_chars: 200, window_lines: 40, max_file_bytes: 384 * 1024 }
    }
}

/// Splits files; keeps one syntax splitter per language, built on first use.
#[derive(Debug)]
pub struct Chunker {
    limits: ChunkLimits,
    splitters: Mutex<HashMap<Language, std::sync::Arc<CodeSplitter<text_splitter::Characters>>>>,
}

impl Default for Chunker {
    fn default() -> Self {
        Self::new(ChunkLimits::default())
    }
}

impl Chunker {
    /// A chunker with these limits.
    pub fn new(limits: ChunkLimits) -> Self {
        Self { limits, splitters: Mutex::new(HashMap::new()) }
    }

    /// The limits in use.
    pub fn limits(&self) -> &ChunkLimits {
        &self.limits
    }

    /// Splits the file at `path` with contents `content`, or says why it is not indexed.
    pub fn chunk(&self, path: &str, content: &[u8]) -> Result<FileChunks, Skip> {
        let text = skip::check(path, content, self.limits.max_file_bytes)?;
        let language = Language::of_path(path);
        let pieces = match self.splitter(language) {
            Some(splitter) => {
                let pieces: Vec<(usize, usize)> = splitter
                    .chunk_indices(text)
                    .map(|(offset, piece)| (offset, offset + piece.len()))
                    .collect();
                let pieces = whole_lines(text, &pieces);
                let pieces = move_leading_lines(text, pieces, language.leading_prefixes());
                merge_small(text, pieces, self.limits.min_chars, self.limits.max_chars * 3 / 2)
            }
            None => line_windows(text, self.limits.window_lines, self.limits.max_chars),
        };
        let chunks = to_chunks(text, &pieces);
        if chunks.is_empty() {
            return Err(Skip::Empty);
        }
        Ok(FileChunks { language, chunks })
    }

    fn splitter(
        &self,
        language: Language,
    ) -> Option<std::sync::Arc<CodeSplitter<text_splitter::Characters>>> {
        let grammar = language.grammar()?;
        let mut splitters =
            self.splitters.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(splitter) = splitters.get(&language) {
            return Some(std::sync::Arc::clone(splitter));
        }
        // A grammar of an incompatible ABI would fail here; its files then fall back to windows.
        let splitter = CodeSplitter::new(grammar, ChunkConfig::new(self.limits.max_chars)).ok()?;
        let splitter = std::sync::Arc::new(splitter);
        splitters.insert(language, std::sync::Arc::clone(&splitter));
        Some(splitter)
    }
}

/// Byte ranges widened to whole lines (the splitter trims), ordered, disjoint and contiguous:
/// the whitespace between two pieces goes to the earlier one.
fn whole_lines(text: &str, pieces: &[(usize, usize)]) -> Vec<(usize, usize)> {
    let mut lines: Vec<(usize, usize)> = Vec::with_capacity(pieces.len());
    for &(start, end) in pieces {
        let start = text[..start].rfind('\n').map_or(0, |newline| newline + 1);
        let end = text[end..].find('\n').map_or(text.len(), |newline| end + newline + 1);
        match lines.last_mut() {
            // Two pieces on one line (a short statement after a brace) share it: the earlier
            // keeps the line.
            Some(last) if start < last.1 => last.1 = last.1.max(end),
            Some(last) => {
                last.1 = start;
                lines.push((start, end));
            }
            None => lines.push((start, end)),
        }
    }
    lines
}

/// Moves the comment, doc and attribute lines that end a piece (before any blank lines) to the
/// start of the next piece, so documentation stays with the item it documents.
fn move_leading_lines(
    text: &str,
    mut pieces: Vec<(usize, usize)>,
    prefixes: &[&str],
) -> Vec<(usize, usize)> {
    if prefixes.is_empty() {
        return pieces;
    }
    for index in 0..pieces.len().saturating_sub(1) {
        let (start, end) = pieces[index];
        let mut cut = None;
        let mut seen_content = false;
        let mut line_end = end;
        while line_end > start {
            let body = &text[start..line_end];
            let body = body.strip_suffix('\n').unwrap_or(body);
            let line_start = start + body.rfind('\n').map_or(0, |newline| newline + 1);
            let trimmed = text[line_start..line_end].trim();
            if trimmed.is_empty() {
                if seen_content {
                    break;
                }
            } else if prefixes.iter().any(|prefix| trimmed.starts_with(prefix)) {
                seen_content = true;
                cut = Some(line_start);
            } else {
                break;
            }
            line_end = line_start;
        }
        if let Some(cut) = cut.filter(|&cut| cut > start) {
            pieces[index].1 = cut;
            pieces[index + 1].0 = cut;
        }
    }
    pieces
}

/// Merges pieces shorter than `min` into the following piece (or the previous, for the last)
/// when the merged piece stays within `max`.
fn merge_small(
    text: &str,
    pieces: Vec<(usize, usize)>,
    min: usize,
    max: usize,
) -> Vec<(usize, usize)> {
    let size = |(start, end): (usize, usize)| text[start..end].trim().chars().count();
    let mut merged: Vec<(usize, usize)> = Vec::with_capacity(pieces.len());
    for piece in pieces {
        match merged.last_mut() {
            Some(last)
                if last.1 == piece.0
                    && (size(*last) < min || size(piece) < min)
                    && size((last.0, piece.1)) <= max =>
            {
                last.1 = piece.1;
            }
            _ => merged.push(piece),
        }
    }
    merged
}

/// Windows of whole lines: at most `lines` lines and, where a line allows, `max_chars`
/// characters.
fn line_windows(text: &str, lines: usize, max_chars: usize) -> Vec<(usize, usize)> {
    let mut windows = Vec::new();
    let (mut start, mut count, mut chars) = (0, 0, 0);
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let length = line.chars().count();
        if count > 0 && (count >= lines || chars + length > max_chars) {
            windows.push((start, offset));
            (start, count, chars) = (offset, 0, 0);
        }
        offset += line.len();
        count += 1;
        chars += length;
    }
    if offset > start {
        windows.push((start, offset));
    }
    windows
}

/// Chunks with line numbers; pieces of only whitespace are dropped.
fn to_chunks(text: &str, pieces: &[(usize, usize)]) -> Vec<Chunk> {
    let mut chunks = Vec::with_capacity(pieces.len());
    let mut line = 1u32;
    let mut counted = 0;
    for &(start, end) in pieces {
        line += count_lines(&text[counted..start]);
        counted = start;
        let body = text[start..end].trim_end();
        if body.trim().is_empty() {
            continue;
        }
        // Leading blank lines are not part of the chunk's range.
        let leading = body.len() - body.trim_start_matches(['\n', '\r']).len();
        let body = &body[leading..];
        let start_line = line + count_lines(&text[start..start + leading]);
        let end_line = start_line + count_lines(body);
        chunks.push(Chunk { start_line, end_line, text: body.to_owned() });
    }
    chunks
}

fn count_lines(text: &str) -> u32 {
    u32::try_from(text.bytes().filter(|&byte| byte == b'\n').count()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests;
