//! The browsing layer against git itself, on a repository the real `git` made
//! (tests/fixtures/browse-history.sh): merges, renames, deletions, binary files, symlinks, a
//! submodule, non-UTF-8 names, an empty commit. Every commit's changes, history per path,
//! blame, tree listings and archives must equal what git prints.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use gix::bstr::{BStr, BString, ByteSlice};
use platform_git::browse::{ArchiveFormat, ChangeStatus, Limits, LogQuery, Repo};

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/browse-history.sh");
    let status = Command::new("bash").arg(script).arg(dir.path()).status().expect("bash runs");
    assert!(status.success(), "the fixture script failed");
    let path = dir.path().join("history.git");
    // Packed, as a pushed repository is after gc: the reads must work on packs, not only on
    // loose objects.
    git(&path, &["repack", "-adq"]);
    Fixture { _dir: dir, path }
}

fn git(repo: &Path, args: &[&str]) -> Vec<u8> {
    let output = Command::new("git").arg("-C").arg(repo).args(args).output().expect("git runs");
    assert!(output.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    output.stdout
}

fn all_commits(repo: &Path) -> Vec<String> {
    String::from_utf8(git(repo, &["rev-list", "--all"]))
        .expect("hex")
        .lines()
        .map(str::to_owned)
        .collect()
}

fn open(path: &Path) -> Repo {
    Repo::open(path, Limits::default()).expect("the repository opens")
}

fn id(hex: &str) -> gix::ObjectId {
    gix::ObjectId::from_hex(hex.as_bytes()).expect("an id")
}

/// `git diff-tree -r -M -z <format>` of `commit` against its first parent (or the empty tree).
fn diff_tree(repo: &Path, commit: &str, format: &str) -> Vec<u8> {
    let parents = git(repo, &["rev-list", "--parents", "-n1", commit]);
    let parent = parents.to_str().expect("hex").split_whitespace().nth(1).map(str::to_owned);
    let mut args = vec!["diff-tree", "-r", "-M", format, "-z", "--no-commit-id"];
    match &parent {
        Some(parent) => args.extend([parent.as_str(), commit]),
        None => args.extend(["--root", commit]),
    }
    git(repo, &args)
}

/// `git diff-tree -r -M --name-status -z` against the first parent (or the empty tree),
/// as (status letter, old path, new path).
fn git_name_status(repo: &Path, commit: &str) -> BTreeSet<(char, BString, BString)> {
    let output = diff_tree(repo, commit, "--name-status");
    let mut fields = output.split(|&b| b == 0).filter(|field| !field.is_empty());
    let mut out = BTreeSet::new();
    while let Some(status) = fields.next() {
        let letter = char::from(status[0]);
        let first: BString = fields.next().expect("a path").into();
        if letter == 'R' || letter == 'C' {
            let second: BString = fields.next().expect("a path").into();
            out.insert((letter, first, second));
        } else {
            out.insert((letter, first.clone(), first));
        }
    }
    out
}

/// `git diff-tree --numstat -z` as path → (additions, deletions); binary files are `None`.
fn git_numstat(repo: &Path, commit: &str) -> BTreeSet<(BString, Option<(u32, u32)>)> {
    let output = diff_tree(repo, commit, "--numstat");
    let mut fields = output.split(|&b| b == 0).peekable();
    let mut out = BTreeSet::new();
    while let Some(field) = fields.next() {
        if field.is_empty() {
            continue;
        }
        let mut parts = field.splitn(3, |&b| b == b'\t');
        let added = parts.next().expect("added");
        let deleted = parts.next().expect("deleted");
        let mut path: BString = parts.next().expect("a path").into();
        if path.is_empty() {
            // A rename: the old and new paths follow as their own fields.
            let _old = fields.next();
            path = fields.next().expect("the new path").into();
        }
        let counts = if added == b"-" {
            None
        } else {
            Some((
                added
                    .to_str()
                    .expect("as the fixture has it")
                    .parse()
                    .expect("as the fixture has it"),
                deleted
                    .to_str()
                    .expect("as the fixture has it")
                    .parse()
                    .expect("as the fixture has it"),
            ))
        };
        out.insert((path, counts));
    }
    out
}

#[test]
fn every_commits_changes_equal_git_diff_tree() {
    let fixture = fixture();
    let repo = open(&fixture.path);
    let commits = all_commits(&fixture.path);
    assert!(commits.len() > 30);
    let mut statuses = BTreeSet::new();
    for hex in &commits {
        let info = repo.commit_info(id(hex)).expect("a commit");
        let diff = repo.commit_diff(&info, true).expect("a diff");
        assert!(!diff.truncated());
        let ours: BTreeSet<(char, BString, BString)> = diff
            .files
            .iter()
            .map(|file| {
                statuses.insert(file.status);
                let old = file.previous_path.clone().unwrap_or_else(|| file.path.clone());
                (file.status.letter(), old, file.path.clone())
            })
            .collect();
        assert_eq!(ours, git_name_status(&fixture.path, hex), "changed files of {hex}");
        let counts: BTreeSet<(BString, Option<(u32, u32)>)> = diff
            .files
            .iter()
            .map(|file| {
                (file.path.clone(), (!file.binary).then_some((file.additions, file.deletions)))
            })
            .collect();
        assert_eq!(counts, git_numstat(&fixture.path, hex), "line counts of {hex}");
    }
    for status in [
        ChangeStatus::Added,
        ChangeStatus::Removed,
        ChangeStatus::Modified,
        ChangeStatus::Renamed,
        ChangeStatus::Changed,
    ] {
        assert!(statuses.contains(&status), "the fixture has no {status:?} change");
    }
}

#[test]
fn a_commits_patch_applies_like_gits() {
    let fixture = fixture();
    let repo = open(&fixture.path);
    // Every text change of every commit: our patch's hunks equal git's (same algorithm, same
    // slider heuristics, same context).
    for hex in all_commits(&fixture.path) {
        let info = repo.commit_info(id(&hex)).expect("a commit");
        let diff = repo.commit_diff(&info, true).expect("a diff");
        let mut ours = Vec::new();
        repo.write_diff(&diff, &mut ours).expect("a diff");
        let parent = info.parents.first().map(ToString::to_string);
        let mut args = vec!["diff", "-M", "--no-color", "--no-ext-diff", "--full-index"];
        let empty_tree = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";
        let from = parent.as_deref().unwrap_or(empty_tree);
        args.extend([from, hex.as_str()]);
        let theirs = git(&fixture.path, &args);
        // git --full-index prints whole ids; ours prints 7 digits: compare the hunks only.
        let hunks = |text: &[u8]| -> Vec<BString> {
            // git adds the enclosing function's line after a hunk's header; we do not.
            let header_only = |line: &[u8]| -> BString {
                match line.strip_prefix(b"@@ ").and_then(|rest| rest.find(b" @@")) {
                    Some(end) => line[..end + 6].into(),
                    None => line.into(),
                }
            };
            text.lines().filter(|line| !line.starts_with(b"index ")).map(header_only).collect()
        };
        assert_eq!(hunks(&ours), hunks(&theirs), "the diff of {hex}");
    }
}

#[test]
fn history_of_a_path_equals_git_log() {
    let fixture = fixture();
    let repo = open(&fixture.path);
    let tree = git(&fixture.path, &["ls-tree", "-r", "-t", "-z", "--name-only", "main"]);
    let mut paths: Vec<BString> =
        tree.split(|&b| b == 0).filter(|p| !p.is_empty()).map(BString::from).collect();
    paths.extend(
        ["LICENSE", "src/util.rs", "assets/logo.png", "legacy", "nothing/here"].map(BString::from),
    );
    for branch in ["main", "feature", "release/1.x"] {
        let start = repo.resolve(branch).expect("a branch").id;
        let everything =
            repo.log(&LogQuery { limit: 10_000, ..LogQuery::from(start) }).expect("a log");
        let expected = String::from_utf8(git(&fixture.path, &["log", "--format=%H", branch]))
            .expect("as the fixture has it");
        let ours: Vec<String> =
            everything.commits.iter().map(|commit| commit.id.to_string()).collect();
        assert_eq!(ours, expected.lines().collect::<Vec<_>>(), "git log {branch}");
        for path in &paths {
            let query =
                LogQuery { path: Some(path.clone()), limit: 10_000, ..LogQuery::from(start) };
            let ours: Vec<String> =
                repo.log(&query).expect("a log").commits.iter().map(|c| c.id.to_string()).collect();
            let mut args: Vec<&[u8]> = vec![b"log", b"--format=%H", branch.as_bytes(), b"--"];
            args.push(path.as_slice());
            let output = Command::new("git")
                .arg("-C")
                .arg(&fixture.path)
                .args(args.iter().map(|a| {
                    use std::os::unix::ffi::OsStrExt;
                    std::ffi::OsStr::from_bytes(a)
                }))
                .output()
                .expect("git log");
            let expected = String::from_utf8(output.stdout).expect("as the fixture has it");
            assert_eq!(ours, expected.lines().collect::<Vec<_>>(), "git log {branch} -- {path}");
        }
    }
    // Pages: the second page of 5 is the 6th to 10th commit.
    let start = repo.resolve("main").expect("as the fixture has it").id;
    let all = repo
        .log(&LogQuery { limit: 100, ..LogQuery::from(start) })
        .expect("as the fixture has it")
        .commits;
    let page = repo
        .log(&LogQuery { skip: 5, limit: 5, ..LogQuery::from(start) })
        .expect("as the fixture has it");
    assert_eq!(page.commits, all[5..10]);
    assert!(page.more);
}

#[test]
fn blame_equals_git_blame_line_for_line() {
    let fixture = fixture();
    let repo = open(&fixture.path);
    let at = repo.resolve("main").expect("as the fixture has it").id;
    for path in ["blame.txt", "src/lib.rs", "src/core/util.rs", "COPYING", "README.md"] {
        let blame = repo.blame(at, BStr::new(path)).expect("a blame");
        let mut ours = Vec::new();
        for range in &blame.ranges {
            for offset in 0..range.lines {
                ours.push((
                    range.commit.to_string(),
                    range.original_start_line + offset,
                    range.start_line + offset,
                ));
            }
        }
        let porcelain =
            String::from_utf8(git(&fixture.path, &["blame", "--porcelain", "main", "--", path]))
                .expect("as the fixture has it");
        let theirs: Vec<(String, u32, u32)> = porcelain
            .lines()
            .filter_map(|line| {
                let mut parts = line.split(' ');
                let commit = parts.next()?;
                if commit.len() != 40 || !commit.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return None;
                }
                Some((commit.to_owned(), parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
            })
            .collect();
        assert_eq!(ours, theirs, "git blame {path}");
    }
    assert!(
        repo.blame(at, BStr::new("blame.txt")).expect("as the fixture has it").commits.len() > 5
    );
}

#[test]
fn tree_listings_equal_git_ls_tree() {
    let fixture = fixture();
    let repo = open(&fixture.path);
    for hex in all_commits(&fixture.path) {
        let tree = repo.commit_info(id(&hex)).expect("as the fixture has it").tree;
        for (recursive, flags) in [(false, "-l"), (true, "-rtl")] {
            let listing = repo.tree(tree, BStr::new(""), recursive).expect("a tree");
            let ours: Vec<BString> = listing
                .entries
                .iter()
                .map(|entry| {
                    let size = entry.size.map_or("-".to_owned(), |size| size.to_string());
                    let mut line = BString::from(format!(
                        "{:06o} {} {} {size:>7}\t",
                        entry.kind.mode(),
                        entry.kind.object_type(),
                        entry.id
                    ));
                    line.extend_from_slice(&entry.path);
                    line
                })
                .collect();
            let theirs: Vec<BString> = git(&fixture.path, &["ls-tree", flags, "-z", &hex])
                .split(|&b| b == 0)
                .filter(|l| !l.is_empty())
                .map(BString::from)
                .collect();
            assert_eq!(ours, theirs, "git ls-tree {flags} {hex}");
        }
    }
    let main = repo
        .commit_info(repo.resolve("main").expect("as the fixture has it").id)
        .expect("as the fixture has it")
        .tree;
    let small = Repo::open(&fixture.path, Limits { tree_entries: 3, ..Limits::default() })
        .expect("as the fixture has it");
    let cut = small.tree(main, BStr::new(""), true).expect("as the fixture has it");
    assert!(cut.truncated);
    assert_eq!(cut.entries.len(), 3);
    assert!(matches!(
        repo.tree(main, BStr::new("nothing"), false),
        Err(platform_git::browse::BrowseError::NotFound { .. })
    ));
}

fn unpack(tar_gz: &[u8]) -> BTreeSet<(BString, Vec<u8>)> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(tar_gz));
    let mut out = BTreeSet::new();
    for entry in archive.entries().expect("a tar") {
        let mut entry = entry.expect("an entry");
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() || kind.is_pax_local_extensions() {
            continue;
        }
        let path: BString = entry.path_bytes().into_owned().into();
        let mut content = Vec::new();
        if kind.is_symlink() {
            content.extend_from_slice(b"-> ");
            content.extend_from_slice(&entry.link_name_bytes().expect("a target"));
        } else if kind.is_file() {
            std::io::Read::read_to_end(&mut entry, &mut content).expect("content");
            let mode = entry.header().mode().expect("a mode");
            content.extend_from_slice(format!(" mode {:o}", mode & 0o111).as_bytes());
        } else {
            continue;
        }
        out.insert((path, content));
    }
    out
}

#[test]
fn archives_unpack_to_git_archives_files() {
    let fixture = fixture();
    let repo = open(&fixture.path);
    for name in ["main", "v0.1", "v1.0", "feature"] {
        let at = repo.resolve(name).expect("as the fixture has it").id;
        let mut ours = std::io::Cursor::new(Vec::new());
        repo.archive(at, "history-x", ArchiveFormat::TarGz, &mut ours).expect("an archive");
        let theirs =
            git(&fixture.path, &["archive", "--format=tar.gz", "--prefix=history-x/", name]);
        let ours = unpack(ours.get_ref());
        assert!(!ours.is_empty());
        assert_eq!(ours, unpack(&theirs), "git archive {name}");
        assert!(!ours.iter().any(|(path, _)| path.ends_with(b"docs/secret.txt")), "export-ignore");
    }
    let mut zip = std::io::Cursor::new(Vec::new());
    // Zip holds only UTF-8 names: v0.1 precedes the non-UTF-8 ones.
    repo.archive(
        repo.resolve("v0.1").expect("as the fixture has it").id,
        "history-v0.1",
        ArchiveFormat::Zip,
        &mut zip,
    )
    .expect("as the fixture has it");
    assert_eq!(&zip.get_ref()[..2], b"PK");
}

#[test]
fn refs_resolve_as_on_github() {
    let fixture = fixture();
    let repo = open(&fixture.path);
    let main = String::from_utf8(git(&fixture.path, &["rev-parse", "main"]))
        .expect("as the fixture has it")
        .trim()
        .to_owned();
    assert_eq!(repo.resolve("main").expect("as the fixture has it").id.to_string(), main);
    assert!(!repo.resolve("main").expect("as the fixture has it").immutable);
    assert!(repo.resolve(&main).expect("as the fixture has it").immutable);
    assert_eq!(repo.resolve(&main[..10]).expect("as the fixture has it").id.to_string(), main);
    assert_eq!(
        repo.resolve("refs/heads/main").expect("as the fixture has it").id.to_string(),
        main
    );
    let v1 = String::from_utf8(git(&fixture.path, &["rev-parse", "v1.0^{commit}"]))
        .expect("as the fixture has it")
        .trim()
        .to_owned();
    assert_eq!(repo.resolve("v1.0").expect("as the fixture has it").id.to_string(), v1);
    let tag = repo.tag("v1.0").expect("as the fixture has it");
    assert!(tag.annotated.as_ref().expect("as the fixture has it").message.contains("Release 1.0"));
    assert!(repo.tag("v0.1").expect("as the fixture has it").annotated.is_none());
    assert!(
        repo.branches()
            .expect("as the fixture has it")
            .iter()
            .any(|branch| branch.name == "release/1.x")
    );
    for bad in ["main..x", "a b", "x~1", "-x"] {
        assert!(
            matches!(repo.resolve(bad), Err(platform_git::browse::BrowseError::Malformed { .. })),
            "{bad}"
        );
    }
    assert!(matches!(
        repo.resolve("no-such-branch"),
        Err(platform_git::browse::BrowseError::NotFound { .. })
    ));
    let base = repo
        .merge_base(
            repo.resolve("feature").expect("as the fixture has it").id,
            repo.resolve("main").expect("as the fixture has it").id,
        )
        .expect("as the fixture has it");
    let theirs = String::from_utf8(git(&fixture.path, &["merge-base", "feature", "main"]))
        .expect("as the fixture has it");
    assert_eq!(base.expect("as the fixture has it").to_string(), theirs.trim());
}

#[test]
fn divergence_of_every_pair_of_refs_equals_git_rev_list() {
    let fixture = fixture();
    let repo = open(&fixture.path);
    let names = ["main", "feature", "topic2", "trivial", "release/1.x", "v0.1", "v1.0"];
    for base in names {
        for head in names {
            let divergence = repo
                .divergence(
                    repo.resolve(base).expect("a ref").id,
                    repo.resolve(head).expect("a ref").id,
                    1000,
                )
                .expect("a divergence");
            let counts = String::from_utf8(git(
                &fixture.path,
                &["rev-list", "--left-right", "--count", &format!("{base}...{head}")],
            ))
            .expect("numbers");
            let counts: Vec<usize> =
                counts.split_whitespace().map(|n| n.parse().expect("a number")).collect();
            assert_eq!(
                (divergence.behind, divergence.ahead),
                (counts[0], counts[1]),
                "{base}...{head}"
            );
            let theirs = String::from_utf8(git(
                &fixture.path,
                &["rev-list", "--reverse", &format!("{base}..{head}")],
            ))
            .expect("ids");
            let ours: BTreeSet<String> =
                divergence.commits.iter().map(|c| c.id.to_string()).collect();
            assert_eq!(ours, theirs.lines().map(str::to_owned).collect(), "{base}..{head}");
        }
    }
}
