//! Languages of a tree: bytes of code per language, by file name, as GitHub's languages list
//! shows them. Only programming and markup languages count (no prose, no data), and vendored or
//! generated files are skipped.

use std::collections::BTreeMap;

use gix::ObjectId;
use gix::bstr::{BStr, ByteSlice};

use super::tree::EntryKind;
use super::{Repo, Result};

/// Bytes per language name.
pub type Languages = BTreeMap<String, u64>;

/// Extensions (lowercase, without the dot) and their language.
const EXTENSIONS: &[(&str, &str)] = &[
    ("rs", "Rust"),
    ("py", "Python"),
    ("pyi", "Python"),
    ("js", "JavaScript"),
    ("mjs", "JavaScript"),
    ("cjs", "JavaScript"),
    ("jsx", "JavaScript"),
    ("ts", "TypeScript"),
    ("mts", "TypeScript"),
    ("tsx", "TSX"),
    ("go", "Go"),
    ("c", "C"),
    ("h", "C"),
    ("cc", "C++"),
    ("cpp", "C++"),
    ("cxx", "C++"),
    ("hpp", "C++"),
    ("hh", "C++"),
    ("hxx", "C++"),
    ("java", "Java"),
    ("kt", "Kotlin"),
    ("kts", "Kotlin"),
    ("swift", "Swift"),
    ("rb", "Ruby"),
    ("php", "PHP"),
    ("cs", "C#"),
    ("fs", "F#"),
    ("scala", "Scala"),
    ("sh", "Shell"),
    ("bash", "Shell"),
    ("zsh", "Shell"),
    ("ps1", "PowerShell"),
    ("pl", "Perl"),
    ("pm", "Perl"),
    ("lua", "Lua"),
    ("r", "R"),
    ("m", "Objective-C"),
    ("mm", "Objective-C++"),
    ("hs", "Haskell"),
    ("ml", "OCaml"),
    ("mli", "OCaml"),
    ("ex", "Elixir"),
    ("exs", "Elixir"),
    ("erl", "Erlang"),
    ("clj", "Clojure"),
    ("dart", "Dart"),
    ("zig", "Zig"),
    ("nim", "Nim"),
    ("jl", "Julia"),
    ("groovy", "Groovy"),
    ("html", "HTML"),
    ("htm", "HTML"),
    ("css", "CSS"),
    ("scss", "SCSS"),
    ("sass", "Sass"),
    ("less", "Less"),
    ("vue", "Vue"),
    ("svelte", "Svelte"),
    ("tf", "HCL"),
    ("nix", "Nix"),
    ("el", "Emacs Lisp"),
    ("vim", "Vim Script"),
    ("asm", "Assembly"),
    ("s", "Assembly"),
    ("f90", "Fortran"),
    ("cmake", "CMake"),
    ("mk", "Makefile"),
    ("sql", "SQL"),
    ("proto", "Protocol Buffer"),
];

/// Whole file names and their language.
const FILE_NAMES: &[(&str, &str)] = &[
    ("makefile", "Makefile"),
    ("gnumakefile", "Makefile"),
    ("dockerfile", "Dockerfile"),
    ("cmakelists.txt", "CMake"),
    ("rakefile", "Ruby"),
    ("gemfile", "Ruby"),
    ("justfile", "Just"),
];

/// Directories whose contents are someone else's code or build output.
const SKIPPED_DIRS: &[&str] = &[
    "vendor",
    "vendors",
    "node_modules",
    "third_party",
    "thirdparty",
    "bower_components",
    "dist",
    "build",
    "target",
];

/// Generated files, by name suffix.
const GENERATED: &[&str] =
    &[".min.js", ".min.css", ".pb.go", "_pb2.py", ".designer.cs", ".map", "-lock.json"];

/// The language of `path`, unless it is vendored or generated.
pub fn language_of(path: &BStr) -> Option<&'static str> {
    let path = path.to_str().ok()?;
    let mut segments: Vec<&str> = path.split('/').collect();
    let name = segments.pop()?.to_ascii_lowercase();
    if segments.iter().any(|dir| {
        SKIPPED_DIRS.contains(&dir.to_ascii_lowercase().as_str()) || dir.starts_with('.')
    }) {
        return None;
    }
    if GENERATED.iter().any(|suffix| name.ends_with(suffix)) {
        return None;
    }
    if let Some((_, language)) = FILE_NAMES.iter().find(|(file, _)| *file == name) {
        return Some(language);
    }
    let (_, extension) = name.rsplit_once('.')?;
    EXTENSIONS.iter().find(|(known, _)| *known == extension).map(|(_, language)| *language)
}

impl Repo {
    /// Counts the bytes per language of tree `root` (its first
    /// [`Limits::tree_entries`](super::Limits::tree_entries) entries).
    ///
    /// # Errors
    ///
    /// [`BrowseError::NotFound`](super::BrowseError::NotFound) when `root` is no tree.
    pub fn languages(&self, root: ObjectId) -> Result<Languages> {
        let listing = self.tree(root, BStr::new(""), true)?;
        let mut languages = Languages::new();
        for entry in listing.entries {
            if !matches!(entry.kind, EntryKind::File | EntryKind::Executable) {
                continue;
            }
            if let Some(language) = language_of(entry.path.as_bstr()) {
                *languages.entry(language.to_owned()).or_default() += entry.size.unwrap_or(0);
            }
        }
        Ok(languages)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendored_and_generated_files_are_skipped() {
        assert_eq!(language_of(BStr::new("src/main.rs")), Some("Rust"));
        assert_eq!(language_of(BStr::new("Makefile")), Some("Makefile"));
        assert_eq!(language_of(BStr::new("vendor/dep/lib.js")), None);
        assert_eq!(language_of(BStr::new("web/app.min.js")), None);
        assert_eq!(language_of(BStr::new("README.md")), None);
        assert_eq!(language_of(BStr::new(".github/x.sh")), None);
    }
}
