//! Keeps the server's paths out of what git tells a client.
//!
//! Git names files by their absolute path in some messages (`'..' is outside repository at
//! '/srv/repos/owner/name.git/.'`, `Unable to create '/srv/repos/owner/name.git/./refs/heads/main.lock'`),
//! and the transports pass git's messages on. A [`Redactor`] replaces the repository's path
//! with its public name (`owner/name.git`) and the server's own directories with nothing;
//! [`copy_sideband`] applies it to the messages in git's output (pkt-lines outside band 1, and
//! side-band 2 and 3), leaving data (band 1) as it is.

use std::borrow::Cow;
use std::io;
use std::path::Path;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use crate::pktline::MAX_PKT_LEN;

/// What to replace in git's messages, longest first.
#[derive(Clone, Debug, Default)]
pub struct Redactor {
    replacements: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Redactor {
    /// Replaces `repository` (as given and as resolved) with `public_name`, and each of
    /// `server_dirs` (followed by `/`) with nothing.
    pub fn new(repository: &Path, public_name: &str, server_dirs: &[&Path]) -> Self {
        let mut replacements = Vec::new();
        let forms = |path: &Path| {
            let mut forms = vec![path.to_string_lossy().into_owned()];
            if let Ok(resolved) = path.canonicalize() {
                forms.push(resolved.to_string_lossy().into_owned());
            }
            forms
        };
        for form in forms(repository) {
            replacements.push((form.into_bytes(), public_name.as_bytes().to_vec()));
        }
        for dir in server_dirs {
            for form in forms(dir) {
                replacements
                    .push((format!("{}/", form.trim_end_matches('/')).into_bytes(), Vec::new()));
            }
        }
        replacements.retain(|(needle, _)| needle.len() > 1);
        replacements.sort_by_key(|(needle, _)| std::cmp::Reverse(needle.len()));
        replacements.dedup();
        Self { replacements }
    }

    /// `text` with every replacement made.
    pub fn apply<'a>(&self, text: &'a [u8]) -> Cow<'a, [u8]> {
        let mut text = Cow::Borrowed(text);
        for (needle, replacement) in &self.replacements {
            if let Some(replaced) = replace_all(&text, needle, replacement) {
                text = Cow::Owned(replaced);
            }
        }
        text
    }
}

fn replace_all(haystack: &[u8], needle: &[u8], replacement: &[u8]) -> Option<Vec<u8>> {
    let first = find(haystack, needle)?;
    let mut out = Vec::with_capacity(haystack.len());
    out.extend_from_slice(&haystack[..first]);
    let mut rest = &haystack[first..];
    while let Some(at) = find(rest, needle) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(replacement);
        rest = &rest[at + needle.len()..];
    }
    out.extend_from_slice(rest);
    Some(out)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

/// Copies git's pkt-line output from `reader` to `writer`, redacting every message: payloads
/// of side-band 2 (progress, errors) and 3 (fatal errors), and pkt-lines that are not side-band
/// data (`NACK <reason>`, `ng <ref> <reason>`). Band 1 passes unchanged. Output that stops
/// being pkt-lines (a pack sent without side-band) is passed on unchanged from there.
///
/// # Errors
///
/// Fails when reading or writing fails.
pub async fn copy_sideband<R, W>(
    mut reader: R,
    mut writer: W,
    redactor: &Redactor,
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut payload = vec![0_u8; MAX_PKT_LEN];
    loop {
        let mut header = [0_u8; 4];
        let got = read_full(&mut reader, &mut header).await?;
        if got < header.len() {
            writer.write_all(&header[..got]).await?;
            return writer.flush().await;
        }
        let length = std::str::from_utf8(&header)
            .ok()
            .filter(|text| text.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|text| usize::from_str_radix(text, 16).ok())
            .filter(|&length| length != 3 && length <= MAX_PKT_LEN);
        let Some(length) = length else {
            writer.write_all(&header).await?;
            tokio::io::copy(&mut reader, &mut writer).await?;
            return writer.flush().await;
        };
        if length < 4 {
            writer.write_all(&header).await?;
            writer.flush().await?;
            continue;
        }
        let data = &mut payload[..length - 4];
        reader.read_exact(data).await?;
        let redacted = match data.first() {
            Some(1) => Cow::Borrowed(&data[..]),
            Some(band @ (2 | 3)) => {
                let band = *band;
                match redactor.apply(&data[1..]) {
                    Cow::Borrowed(_) => Cow::Borrowed(&data[..]),
                    Cow::Owned(message) => Cow::Owned([&[band][..], &message].concat()),
                }
            }
            _ => redactor.apply(data),
        };
        writer.write_all(format!("{:04x}", redacted.len() + 4).as_bytes()).await?;
        writer.write_all(&redacted).await?;
        if redacted.first() != Some(&1) {
            writer.flush().await?;
        }
    }
}

/// Copies text (git's standard error) from `reader` to `writer` a line at a time, redacted.
///
/// # Errors
///
/// Fails when reading or writing fails.
pub async fn copy_text<R, W>(reader: R, mut writer: W, redactor: &Redactor) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    use tokio::io::AsyncBufReadExt as _;
    let mut reader = tokio::io::BufReader::new(reader);
    let mut line = Vec::new();
    loop {
        line.clear();
        // Progress ends its lines with `\r`; any line break ends a piece here.
        let read = reader.read_until(b'\n', &mut line).await?;
        if read == 0 {
            return writer.flush().await;
        }
        writer.write_all(&redactor.apply(&line)).await?;
        writer.flush().await?;
    }
}

/// Reads until `buf` is full or the input ends; returns how much was read.
async fn read_full<R: AsyncRead + Unpin>(reader: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let read = reader.read(&mut buf[filled..]).await?;
        if read == 0 {
            break;
        }
        filled += read;
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn messages_lose_server_paths_and_data_is_untouched() {
        let redactor = Redactor::new(
            Path::new("/srv/repos/ada/engine.git"),
            "ada/engine.git",
            &[Path::new("/srv/state")],
        );
        let mut input = Vec::new();
        crate::pktline::write(
            &mut input,
            b"NACK '..' is outside repository at '/srv/repos/ada/engine.git/.'\n",
        );
        input.extend_from_slice(b"0000");
        crate::pktline::write(&mut input, b"\x01data /srv/repos/ada/engine.git stays");
        crate::pktline::write(&mut input, b"\x02error: cannot run /srv/state/hooks/pre-receive\n");
        crate::pktline::write(
            &mut input,
            b"\x03fatal: /srv/repos/ada/engine.git/./refs/heads/main.lock\n",
        );
        input.extend_from_slice(b"0000PACK\x00\x00/srv/repos/ada/engine.git");
        let mut output = Vec::new();
        copy_sideband(&input[..], &mut output, &redactor).await.expect("copied");
        let mut expected = Vec::new();
        crate::pktline::write(
            &mut expected,
            b"NACK '..' is outside repository at 'ada/engine.git/.'\n",
        );
        expected.extend_from_slice(b"0000");
        crate::pktline::write(&mut expected, b"\x01data /srv/repos/ada/engine.git stays");
        crate::pktline::write(&mut expected, b"\x02error: cannot run hooks/pre-receive\n");
        crate::pktline::write(&mut expected, b"\x03fatal: ada/engine.git/./refs/heads/main.lock\n");
        expected.extend_from_slice(b"0000PACK\x00\x00/srv/repos/ada/engine.git");
        assert_eq!(String::from_utf8_lossy(&output), String::from_utf8_lossy(&expected));

        let mut text = Vec::new();
        copy_text(&b"fatal: '/srv/repos/ada/engine.git' is busy\nok\n"[..], &mut text, &redactor)
            .await
            .expect("copied");
        assert_eq!(text, b"fatal: 'ada/engine.git' is busy\nok\n");
    }
}
