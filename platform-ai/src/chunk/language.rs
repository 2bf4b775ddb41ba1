//! Languages by file name, and which of them are split along their syntax tree.

/// A file's language: those with a grammar are chunked along functions, types and classes; the
/// others by windows of lines. [`Language::name`] is what search filters by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Language {
    /// Rust (`.rs`).
    Rust,
    /// Python (`.py`, `.pyi`).
    Python,
    /// JavaScript (`.js`, `.mjs`, `.cjs`, `.jsx`).
    JavaScript,
    /// TypeScript (`.ts`, `.mts`, `.cts`).
    TypeScript,
    /// TypeScript with JSX (`.tsx`).
    Tsx,
    /// Go (`.go`).
    Go,
    /// Java (`.java`).
    Java,
    /// C (`.c`, `.h`).
    C,
    /// C++ (`.cc`, `.cpp`, `.cxx`, `.hpp`, `.hh`, `.hxx`).
    Cpp,
    /// Any other text, named by its extension's usual language (`markdown`, `yaml`, `text`).
    Text(&'static str),
}

impl Language {
    /// The language of the file at `path` (by its name; content is not inspected).
    pub fn of_path(path: &str) -> Self {
        let file = path.rsplit('/').next().unwrap_or(path);
        let lower = file.to_ascii_lowercase();
        match lower.as_str() {
            "dockerfile" | "containerfile" => return Self::Text("dockerfile"),
            "makefile" | "gnumakefile" => return Self::Text("makefile"),
            "cmakelists.txt" => return Self::Text("cmake"),
            _ => {}
        }
        let extension = match lower.rsplit_once('.') {
            Some((stem, extension)) if !stem.is_empty() => extension,
            _ => return Self::Text("text"),
        };
        match extension {
            "rs" => Self::Rust,
            "py" | "pyi" => Self::Python,
            "js" | "mjs" | "cjs" | "jsx" => Self::JavaScript,
            "ts" | "mts" | "cts" => Self::TypeScript,
            "tsx" => Self::Tsx,
            "go" => Self::Go,
            "java" => Self::Java,
            "c" | "h" => Self::C,
            "cc" | "cpp" | "cxx" | "c++" | "hpp" | "hh" | "hxx" | "h++" | "ipp" => Self::Cpp,
            "md" | "markdown" => Self::Text("markdown"),
            "rst" => Self::Text("restructuredtext"),
            "yml" | "yaml" => Self::Text("yaml"),
            "toml" => Self::Text("toml"),
            "json" => Self::Text("json"),
            "sh" | "bash" | "zsh" => Self::Text("shell"),
            "rb" => Self::Text("ruby"),
            "php" => Self::Text("php"),
            "cs" => Self::Text("csharp"),
            "kt" | "kts" => Self::Text("kotlin"),
            "swift" => Self::Text("swift"),
            "scala" => Self::Text("scala"),
            "sql" => Self::Text("sql"),
            "html" | "htm" => Self::Text("html"),
            "css" | "scss" | "sass" | "less" => Self::Text("css"),
            "xml" => Self::Text("xml"),
            "proto" => Self::Text("protobuf"),
            "lua" => Self::Text("lua"),
            "hs" => Self::Text("haskell"),
            "ex" | "exs" => Self::Text("elixir"),
            "erl" => Self::Text("erlang"),
            "zig" => Self::Text("zig"),
            "nix" => Self::Text("nix"),
            "tf" => Self::Text("terraform"),
            _ => Self::Text("text"),
        }
    }

    /// The lower-case name used in results and filters (`rust`, `python`, `cpp`, `markdown`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Rust => "rust",
            Self::Python => "python",
            Self::JavaScript => "javascript",
            Self::TypeScript | Self::Tsx => "typescript",
            Self::Go => "go",
            Self::Java => "java",
            Self::C => "c",
            Self::Cpp => "cpp",
            Self::Text(name) => name,
        }
    }

    /// The tree-sitter grammar, for the languages chunked along their syntax.
    pub(crate) fn grammar(self) -> Option<tree_sitter::Language> {
        let grammar = match self {
            Self::Rust => tree_sitter_rust::LANGUAGE,
            Self::Python => tree_sitter_python::LANGUAGE,
            Self::JavaScript => tree_sitter_javascript::LANGUAGE,
            Self::TypeScript => tree_sitter_typescript::LANGUAGE_TYPESCRIPT,
            Self::Tsx => tree_sitter_typescript::LANGUAGE_TSX,
            Self::Go => tree_sitter_go::LANGUAGE,
            Self::Java => tree_sitter_java::LANGUAGE,
            Self::C => tree_sitter_c::LANGUAGE,
            Self::Cpp => tree_sitter_cpp::LANGUAGE,
            Self::Text(_) => return None,
        };
        Some(grammar.into())
    }

    /// Line prefixes that make a line a comment or an annotation belonging to what follows it.
    pub(crate) fn leading_prefixes(self) -> &'static [&'static str] {
        match self {
            Self::Rust => &["///", "//!", "//", "#[", "/*", "*"],
            Self::Python => &["#", "@"],
            Self::JavaScript | Self::TypeScript | Self::Tsx => &["//", "/*", "*", "@"],
            Self::Go | Self::C | Self::Cpp => &["//", "/*", "*", "#pragma"],
            Self::Java => &["//", "/*", "*", "@"],
            Self::Text(_) => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Language;

    #[test]
    fn languages_come_from_file_names() {
        assert_eq!(Language::of_path("src/lib.rs"), Language::Rust);
        assert_eq!(Language::of_path("a/b/Main.JAVA"), Language::Java);
        assert_eq!(Language::of_path("web/app.tsx").name(), "typescript");
        assert_eq!(Language::of_path("include/x.hpp"), Language::Cpp);
        assert_eq!(Language::of_path("Dockerfile").name(), "dockerfile");
        assert_eq!(Language::of_path(".bashrc").name(), "text");
        assert_eq!(Language::of_path("README").name(), "text");
        assert_eq!(Language::of_path("docs/guide.md").name(), "markdown");
        assert!(Language::of_path("x.go").grammar().is_some());
        assert!(Language::of_path("x.yaml").grammar().is_none());
    }
}
