//! A directory's README, with Markdown rendered to HTML that is safe to show on any page.

use gix::ObjectId;
use gix::bstr::{BStr, ByteSlice};

use super::tree::{Contents, EntryKind, TreeEntry};
use super::{BrowseError, Repo, Result, display_path};

/// A README found in a directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Readme {
    /// The file.
    pub entry: TreeEntry,
    /// Its bytes (none when larger than [`Limits::inline_bytes`](super::Limits::inline_bytes)).
    pub content: Option<Vec<u8>>,
    /// The content as sanitized HTML: Markdown rendered (GitHub's extensions: tables, task
    /// lists, strikethrough, footnotes), anything else in a `<pre>`. Scripts, event handlers,
    /// styles and `javascript:` links are removed.
    pub html: Option<String>,
}

/// README names, best first: GitHub prefers Markdown.
const EXTENSIONS: [&str; 7] = [".md", ".markdown", ".mdown", ".mkdn", "", ".txt", ".rst"];

fn rank(name: &BStr) -> Option<usize> {
    let name = name.to_str().ok()?.to_ascii_lowercase();
    let rest = name.strip_prefix("readme")?;
    EXTENSIONS.iter().position(|extension| rest == *extension)
}

/// Renders Markdown to HTML and keeps only what is safe to show.
pub fn render_markdown(markdown: &str) -> String {
    use pulldown_cmark::{Options, Parser, html};
    let options = Options::ENABLE_TABLES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_FOOTNOTES;
    let mut rendered = String::with_capacity(markdown.len() * 3 / 2);
    html::push_html(&mut rendered, Parser::new_ext(markdown, options));
    ammonia::Builder::default()
        .link_rel(Some("nofollow noopener noreferrer"))
        .clean(&rendered)
        .to_string()
}

fn render(name: &BStr, content: &[u8]) -> String {
    let text = content.to_str_lossy();
    let markdown = rank(name).is_some_and(|rank| rank < 4);
    if markdown {
        render_markdown(&text)
    } else {
        format!("<pre>{}</pre>", ammonia::clean_text(&text))
    }
}

impl Repo {
    /// Finds the README of directory `dir` of tree `root`.
    ///
    /// # Errors
    ///
    /// [`BrowseError::NotFound`] when the directory has none (or is no directory).
    pub fn readme(&self, root: ObjectId, dir: &BStr) -> Result<Readme> {
        let Contents::Dir { entries, .. } = self.contents(root, dir)? else {
            return Err(BrowseError::not_found("directory", display_path(dir)));
        };
        let best = entries
            .into_iter()
            .filter(|entry| matches!(entry.kind, EntryKind::File | EntryKind::Executable))
            .filter_map(|entry| rank(entry.name.as_bstr()).map(|rank| (rank, entry)))
            .min_by_key(|(rank, _)| *rank)
            .map(|(_, entry)| entry)
            .ok_or_else(|| BrowseError::not_found("README", display_path(dir)))?;
        let small = best.size.is_some_and(|size| size <= self.limits.inline_bytes);
        let content = if small { Some(self.blob(best.id)?) } else { None };
        let html = content.as_deref().map(|content| render(best.name.as_bstr(), content));
        Ok(Readme { entry: best, content, html })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_is_rendered_and_scripts_are_removed() {
        let html = render_markdown(
            "# Title\n\n<script>alert(1)</script>\n\n[x](javascript:alert(1)) <img src=x onerror=alert(1)>\n\n| a |\n|---|\n| b |\n",
        );
        assert!(html.contains("<h1>Title</h1>"), "{html}");
        assert!(html.contains("<table>"), "{html}");
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("javascript:"), "{html}");
        assert!(!html.contains("onerror"), "{html}");
    }

    #[test]
    fn markdown_readmes_win_over_plain_ones() {
        assert!(rank(BStr::new("README.md")) < rank(BStr::new("README")));
        assert!(rank(BStr::new("readme.txt")).is_some());
        assert_eq!(rank(BStr::new("READMEX")), None);
    }
}
