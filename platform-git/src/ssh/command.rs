//! The one command line an SSH client may send: a git program and a repository path.

/// What git asked to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct GitCommand {
    pub(super) program: Program,
    pub(super) owner: String,
    pub(super) repo: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Program {
    UploadPack,
    ReceivePack,
    UploadArchive,
}

impl GitCommand {
    /// Parses `git-upload-pack '/owner/name.git'` (or `git upload-pack ...`) as git sends it.
    pub(super) fn parse(data: &[u8]) -> Result<Self, String> {
        let refused =
            "only git-upload-pack, git-receive-pack and git-upload-archive are served here";
        let text = std::str::from_utf8(data).map_err(|_| refused.to_owned())?.trim();
        let (program, rest) = [
            ("git-upload-pack ", Program::UploadPack),
            ("git upload-pack ", Program::UploadPack),
            ("git-receive-pack ", Program::ReceivePack),
            ("git receive-pack ", Program::ReceivePack),
            ("git-upload-archive ", Program::UploadArchive),
            ("git upload-archive ", Program::UploadArchive),
        ]
        .into_iter()
        .find_map(|(prefix, program)| text.strip_prefix(prefix).map(|rest| (program, rest)))
        .ok_or_else(|| refused.to_owned())?;
        let path = unquote(rest.trim()).ok_or_else(|| "malformed repository path".to_owned())?;
        let path = path.trim_start_matches('/');
        let mut parts = path.split('/');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(owner), Some(repo), None)
                if !owner.is_empty()
                    && !repo.is_empty()
                    && !path.contains(|c: char| c.is_control() || c == '\\') =>
            {
                Ok(Self { program, owner: owner.to_owned(), repo: repo.to_owned() })
            }
            _ => Err(format!("'{path}' is not a repository path; use owner/name.git")),
        }
    }
}

/// Undoes git's shell quoting of one argument (`'it'\''s'`), or takes a bare word as it is.
fn unquote(argument: &str) -> Option<String> {
    if !argument.starts_with('\'') {
        return (!argument.contains(char::is_whitespace)).then(|| argument.to_owned());
    }
    let mut out = String::new();
    let mut chars = argument.chars().peekable();
    loop {
        // Outside quotes: either a quoted run or an escaped character.
        match chars.next() {
            None => return Some(out),
            Some('\'') => loop {
                match chars.next()? {
                    '\'' => break,
                    c => out.push(c),
                }
            },
            Some('\\') => out.push(chars.next()?),
            Some(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_parsed_as_git_sends_them() {
        let parsed = GitCommand::parse(b"git-upload-pack '/ada/engine.git'").expect("valid");
        assert_eq!(parsed.program, Program::UploadPack);
        assert_eq!((parsed.owner.as_str(), parsed.repo.as_str()), ("ada", "engine.git"));
        let parsed = GitCommand::parse(b"git receive-pack 'ada/engine'").expect("valid");
        assert_eq!(parsed.program, Program::ReceivePack);
        assert_eq!(parsed.repo, "engine");
        let parsed = GitCommand::parse(b"git-upload-archive ada/engine.git").expect("valid");
        assert_eq!(parsed.program, Program::UploadArchive);
        assert_eq!(unquote(r"'it'\''s'").as_deref(), Some("it's"));
    }

    #[test]
    fn anything_else_is_refused() {
        for command in [
            &b"rm -rf /"[..],
            b"git-upload-pack '/ada/engine.git'; rm -rf /",
            b"git-upload-pack '../../etc'",
            b"git-upload-pack '/a/b/c'",
            b"sh -c 'git-upload-pack x/y'",
            b"git-upload-pack",
            b"\xff\xfe",
            b"git-upload-pack 'ada/engine\0.git'",
            b"git-receive-pack 'ada\0/engine.git'",
            b"git-upload-pack 'ada/engine\n.git'",
        ] {
            assert!(GitCommand::parse(command).is_err(), "{}", String::from_utf8_lossy(command));
        }
    }
}
