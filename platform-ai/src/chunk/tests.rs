use super::{ChunkLimits, Chunker, Language, Skip};

fn small() -> Chunker {
    Chunker::new(ChunkLimits { max_chars: 300, min_chars: 60, ..ChunkLimits::default() })
}

/// The chunk whose text contains `needle`.
fn chunk_with<'a>(chunks: &'a [super::Chunk], needle: &str) -> &'a super::Chunk {
    chunks
        .iter()
        .find(|chunk| chunk.text.contains(needle))
        .unwrap_or_else(|| panic!("no chunk contains {needle:?}: {chunks:#?}"))
}

fn rust_source() -> String {
    let mut source = String::from("use std::fmt;\n\n");
    for name in ["alpha", "beta", "gamma"] {
        source.push_str(&format!(
            "/// Computes the {name} value.\n#[inline]\npub fn {name}(input: u32) -> u32 {{\n"
        ));
        for step in 0..4 {
            source.push_str(&format!("    let step_{step} = input.wrapping_mul({step}) + 17;\n"));
        }
        source.push_str("    input\n}\n\n");
    }
    source
}

#[test]
fn rust_functions_stay_whole_with_their_docs_and_attributes() {
    let source = rust_source();
    let file = small().chunk("src/lib.rs", source.as_bytes()).expect("chunked");
    assert_eq!(file.language, Language::Rust);
    for name in ["alpha", "beta", "gamma"] {
        let chunk = chunk_with(&file.chunks, &format!("pub fn {name}("));
        assert!(
            chunk.text.contains(&format!("/// Computes the {name} value.\n#[inline]\npub fn")),
            "doc and attribute travel with {name}: {chunk:#?}"
        );
        assert!(chunk.text.trim_end().ends_with('}'), "{name} is whole: {chunk:#?}");
    }
    // Line numbers point at the source lines.
    let lines: Vec<&str> = source.lines().collect();
    for chunk in &file.chunks {
        let first = lines[chunk.start_line as usize - 1];
        let last = lines[chunk.end_line as usize - 1];
        assert!(chunk.text.starts_with(first), "{chunk:#?} starts at line {}", chunk.start_line);
        assert!(chunk.text.ends_with(last), "{chunk:#?} ends at line {}", chunk.end_line);
    }
}

#[test]
fn indentation_is_kept_when_a_large_item_is_split() {
    let mut source = String::from("impl Big {\n");
    for index in 0..20 {
        source.push_str(&format!(
            "    fn method_{index}(&self) -> u32 {{\n        self.value + {index}\n    }}\n\n"
        ));
    }
    source.push_str("}\n");
    let file = small().chunk("big.rs", source.as_bytes()).expect("chunked");
    assert!(file.chunks.len() > 2, "{file:#?}");
    let method = chunk_with(&file.chunks, "fn method_7(");
    assert!(method.text.contains("    fn method_7(&self)"), "indented: {method:#?}");
    // No chunk is a mere fragment: every one holds at least one whole method or the header.
    for chunk in &file.chunks {
        assert!(chunk.text.trim().len() >= 10, "{chunk:#?}");
    }
}

#[test]
fn every_structured_language_is_split_along_its_definitions() {
    let cases: [(&str, &str, &str); 8] = [
        (
            "a.py",
            "def handler_{i}(request):\n    \"\"\"Handle {i}.\"\"\"\n    return request.value * {i} + compute(request, {i})\n\n\n",
            "def handler_",
        ),
        (
            "a.js",
            "function handler_{i}(request) {\n  return request.value * {i} + compute(request, {i});\n}\n\n",
            "function handler_",
        ),
        (
            "a.ts",
            "export function handler_{i}(request: Request): number {\n  return request.value * {i} + compute(request, {i});\n}\n\n",
            "function handler_",
        ),
        (
            "a.go",
            "func handler_{i}(request *Request) int {\n\treturn request.Value * {i} + compute(request, {i})\n}\n\n",
            "func handler_",
        ),
        (
            "A.java",
            "class Handler_{i} {\n    int handle(Request request) {\n        return request.value * {i} + compute(request, {i});\n    }\n}\n\n",
            "class Handler_",
        ),
        (
            "a.c",
            "int handler_{i}(struct request *request) {\n    return request->value * {i} + compute(request, {i});\n}\n\n",
            "int handler_",
        ),
        (
            "a.cpp",
            "namespace ns_{i} {\nint handler(const Request& request) {\n    return request.value * {i} + compute(request, {i});\n}\n}\n\n",
            "namespace ns_",
        ),
        (
            "a.tsx",
            "export function View_{i}(props: Props) {\n  return <div className=\"x\">{props.value * {i}}</div>;\n}\n\n",
            "function View_",
        ),
    ];
    for (path, template, marker) in cases {
        let source: String = (0..12).map(|i| template.replace("{i}", &i.to_string())).collect();
        let file = small().chunk(path, source.as_bytes()).expect(path);
        assert!(file.language.grammar().is_some(), "{path}");
        assert!(file.chunks.len() >= 3, "{path} gives several chunks: {file:#?}");
        for chunk in &file.chunks {
            // Each definition starts a chunk or sits wholly inside one: no chunk starts in the
            // middle of a definition.
            let first = chunk.text.lines().next().unwrap_or_default();
            assert!(
                first.trim_start().starts_with(marker)
                    || first.trim_start().starts_with("export")
                    || first.trim_start().starts_with("\"\"\""),
                "{path}: chunk starts mid-definition: {chunk:#?}"
            );
        }
        for i in 0..12 {
            let needle = format!("{marker}{i}");
            let needle = if marker == "namespace ns_" { format!("ns_{i} {{") } else { needle };
            assert!(file.chunks.iter().any(|chunk| chunk.text.contains(&needle)), "{path}: {i}");
        }
    }
}

#[test]
fn text_without_a_grammar_is_cut_into_line_windows() {
    let source: String = (1..=100).map(|line| format!("line {line} of the guide\n")).collect();
    let chunker = Chunker::new(ChunkLimits { window_lines: 40, ..ChunkLimits::default() });
    let file = chunker.chunk("docs/guide.md", source.as_bytes()).expect("chunked");
    assert_eq!(file.language.name(), "markdown");
    let ranges: Vec<(u32, u32)> =
        file.chunks.iter().map(|chunk| (chunk.start_line, chunk.end_line)).collect();
    assert_eq!(ranges, [(1, 40), (41, 80), (81, 100)]);
    assert!(file.chunks[1].text.starts_with("line 41 of"));
}

#[test]
fn skipped_files_say_why() {
    let chunker = Chunker::default();
    assert_eq!(chunker.chunk("Cargo.lock", b"version = 3"), Err(Skip::Lock));
    assert_eq!(chunker.chunk("x.rs", b"   \n\n"), Err(Skip::Empty));
    assert_eq!(chunker.chunk("x.bin", b"\x7fELF\x02\x01\x01\0\0"), Err(Skip::Binary));
}
