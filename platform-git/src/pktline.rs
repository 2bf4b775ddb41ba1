//! Git's pkt-line framing: what the smart HTTP handlers read and write themselves.
//!
//! A pkt-line is four hexadecimal digits giving the line's length (the four included) and the
//! payload; `0000` is a flush, `0001` a delimiter and `0002` a response end (protocol v2).

/// The error returned for a stream that is not valid pkt-lines.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PktLineError {
    /// The length prefix is not four hexadecimal digits, or names an impossible length.
    #[error("invalid pkt-line length {0:?}")]
    InvalidLength(String),
    /// The input ended inside a pkt-line.
    #[error("the request ended inside a pkt-line")]
    Truncated,
    /// A ref-update command is not `<old-id> <new-id> <ref>`.
    #[error("invalid ref update command {0:?}")]
    InvalidCommand(String),
    /// The push carries a certificate (`push-cert`): never advertised, so never accepted, as
    /// git would take ref updates from inside it.
    #[error("signed pushes are not supported: push without --signed")]
    PushCertificate,
}

/// One framed item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet<'a> {
    /// `0000`.
    Flush,
    /// `0001`.
    Delimiter,
    /// `0002`.
    ResponseEnd,
    /// A line's payload.
    Data(&'a [u8]),
}

/// The largest pkt-line git writes: 65520 bytes, prefix included.
pub const MAX_PKT_LEN: usize = 65520;

/// Reads the pkt-line at the start of `input`: the packet and how many bytes it took, or `None`
/// when `input` holds only part of it.
///
/// # Errors
///
/// [`PktLineError::InvalidLength`] when the prefix is not a valid length.
pub fn parse(input: &[u8]) -> Result<Option<(Packet<'_>, usize)>, PktLineError> {
    let Some(prefix) = input.get(..4) else {
        return Ok(None);
    };
    let invalid = || PktLineError::InvalidLength(String::from_utf8_lossy(prefix).into_owned());
    let text = std::str::from_utf8(prefix).map_err(|_| invalid())?;
    if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid());
    }
    let length = usize::from_str_radix(text, 16).map_err(|_| invalid())?;
    match length {
        0 => Ok(Some((Packet::Flush, 4))),
        1 => Ok(Some((Packet::Delimiter, 4))),
        2 => Ok(Some((Packet::ResponseEnd, 4))),
        3 => Err(invalid()),
        _ if length > MAX_PKT_LEN => Err(invalid()),
        _ => Ok(input.get(4..length).map(|data| (Packet::Data(data), length))),
    }
}

/// Checks that `input` is entirely well-formed pkt-lines (an upload-pack request).
///
/// # Errors
///
/// The first framing error, or [`PktLineError::Truncated`] when the input ends mid-line.
pub fn validate(mut input: &[u8]) -> Result<(), PktLineError> {
    while !input.is_empty() {
        let (_, used) = parse(input)?.ok_or(PktLineError::Truncated)?;
        input = &input[used..];
    }
    Ok(())
}

/// Writes `payload` as one pkt-line into `out`.
pub fn write(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(format!("{:04x}", payload.len() + 4).as_bytes());
    out.extend_from_slice(payload);
}

/// The largest command list a push may send before its pack, in bytes (4 MiB: tens of
/// thousands of ref updates).
pub const MAX_COMMANDS_BYTES: usize = 4 << 20;

/// One ref update a push asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefUpdate {
    /// The id the ref has now (all zeros when it is created).
    pub old: String,
    /// The id it should get (all zeros when it is deleted).
    pub new: String,
    /// The full ref name, such as `refs/heads/main`.
    pub name: String,
}

impl RefUpdate {
    /// Returns whether the update creates the ref.
    pub fn is_create(&self) -> bool {
        is_zero(&self.old)
    }

    /// Returns whether the update deletes the ref.
    pub fn is_delete(&self) -> bool {
        is_zero(&self.new)
    }

    /// Returns the branch name for `refs/heads/...`, else `None`.
    pub fn branch(&self) -> Option<&str> {
        self.name.strip_prefix("refs/heads/")
    }
}

fn is_zero(id: &str) -> bool {
    id.bytes().all(|b| b == b'0')
}

fn is_object_id(id: &str) -> bool {
    matches!(id.len(), 40 | 64) && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Reads the command list at the start of a receive-pack request: the ref updates, and how
/// many bytes of `input` they took (through the closing flush), or `None` when `input` does
/// not yet hold the whole list.
///
/// # Errors
///
/// Framing errors, and commands that are not `<old-id> <new-id> <ref>`.
pub fn parse_commands(input: &[u8]) -> Result<Option<(Vec<RefUpdate>, usize)>, PktLineError> {
    let mut updates = Vec::new();
    let mut at = 0;
    loop {
        let Some((packet, used)) = parse(&input[at..])? else {
            return Ok(None);
        };
        at += used;
        let data = match packet {
            Packet::Flush => return Ok(Some((updates, at))),
            Packet::Data(data) => data,
            Packet::Delimiter | Packet::ResponseEnd => {
                return Err(PktLineError::InvalidCommand("unexpected delimiter".to_owned()));
            }
        };
        // Capabilities follow the first command after a NUL; a shallow client first lists its
        // shallow roots.
        let line = data.split(|&b| b == 0).next().unwrap_or_default();
        let line = String::from_utf8_lossy(line);
        let line = line.trim_end_matches('\n');
        if line.starts_with("push-cert") {
            return Err(PktLineError::PushCertificate);
        }
        if line.starts_with("shallow ") {
            continue;
        }
        let mut fields = line.splitn(3, ' ');
        let (Some(old), Some(new), Some(name)) = (fields.next(), fields.next(), fields.next())
        else {
            return Err(PktLineError::InvalidCommand(line.chars().take(200).collect()));
        };
        // Git refuses such names too, but only after pre-receive has seen them; a control
        // character could also break the verdict lines the hook reads.
        let plausible_name = name.starts_with("refs/")
            && name.bytes().all(|b| b > b' ' && b != 0x7f && !b"~^:?*[\\".contains(&b));
        if !is_object_id(old) || !is_object_id(new) || !plausible_name {
            return Err(PktLineError::InvalidCommand(line.chars().take(200).collect()));
        }
        updates.push(RefUpdate { old: old.to_owned(), new: new.to_owned(), name: name.to_owned() });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "1111111111111111111111111111111111111111";
    const Z: &str = "0000000000000000000000000000000000000000";

    #[test]
    fn commands_are_read_up_to_the_flush_and_capabilities_are_ignored() {
        let mut input = Vec::new();
        write(
            &mut input,
            format!("{Z} {A} refs/heads/main\0report-status side-band-64k").as_bytes(),
        );
        write(&mut input, format!("{A} {Z} refs/heads/old\n").as_bytes());
        input.extend_from_slice(b"0000PACK...");
        let (updates, used) = parse_commands(&input).expect("valid").expect("complete");
        assert_eq!(&input[used..], b"PACK...");
        assert_eq!(updates.len(), 2);
        assert!(updates[0].is_create());
        assert_eq!(updates[0].branch(), Some("main"));
        assert!(updates[1].is_delete());
        assert_eq!(parse_commands(&input[..10]), Ok(None));
    }

    #[test]
    fn push_certificates_and_names_git_would_refuse_are_refused() {
        let mut input = Vec::new();
        write(&mut input, b"push-cert\0report-status\n");
        write(&mut input, b"certificate version 0.1\n");
        write(&mut input, format!("{A} {Z} refs/heads/main\n").as_bytes());
        write(&mut input, b"push-cert-end\n");
        input.extend_from_slice(b"0000");
        assert_eq!(parse_commands(&input), Err(PktLineError::PushCertificate));
        // A certificate after an ordinary command is refused as well.
        let mut input = Vec::new();
        write(&mut input, format!("{Z} {A} refs/heads/topic\0report-status").as_bytes());
        write(&mut input, b"push-cert\n");
        assert_eq!(parse_commands(&input), Err(PktLineError::PushCertificate));
        for name in ["refs/heads/a\nallow", "refs/heads/a\tb", "refs/heads/a b", "refs/heads/a~1"] {
            let mut input = Vec::new();
            write(&mut input, format!("{Z} {A} {name}").as_bytes());
            input.extend_from_slice(b"0000");
            assert!(
                matches!(parse_commands(&input), Err(PktLineError::InvalidCommand(_))),
                "{name:?}"
            );
        }
    }

    #[test]
    fn garbage_is_refused() {
        assert!(parse_commands(b"zzzzgarbage").is_err());
        assert!(parse_commands(b"0009nope\n0000").is_err());
        assert!(validate(b"0003").is_err());
        assert_eq!(validate(b"000aabc"), Err(PktLineError::Truncated));
        assert_eq!(validate(b"0009done\n0000"), Ok(()));
    }
}
