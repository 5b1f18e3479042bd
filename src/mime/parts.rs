//! Messages stored in parts (format 1.2, spec 6.8): a message is the concatenation of its
//! parts, each a range of its data member or a blob, blobs optionally base64-encoded in
//! lines. This module assembles messages and builds part lists; it does no I/O.

use crate::model::Part;

/// A blob's bytes as they appear in the message: as they are, or base64 in lines of
/// `line` characters joined by LF (CRLF with `crlf`), with no line end after the last.
///
/// # Errors
/// An unknown encoding or a zero line length (named in the text).
pub fn encode(part: &Part, blob: &[u8]) -> Result<Vec<u8>, String> {
    match part.encoding.as_deref() {
        None => Ok(blob.to_vec()),
        Some("base64") => base64_lines(blob, part.line, part.crlf),
        Some(other) => Err(format!("unknown part encoding {other:?}")),
    }
}

/// `data` in base64 (standard alphabet, padded), cut into lines of `line` characters (one
/// line without `line`) joined by LF, or CRLF with `crlf`; no line end after the last.
///
/// # Errors
/// A zero line length.
pub fn base64_lines(data: &[u8], line: Option<u32>, crlf: bool) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(data.len() / 3 * 4 + data.len() / 32 + 8);
    base64_lines_each(data, line, crlf, &mut |b| out.extend_from_slice(b))?;
    Ok(out)
}

/// Lines of base64 encoded per call of [`base64_lines_each`]'s callback (about 48 KiB of
/// text at 76 characters per line).
const LINES_PER_CHUNK: usize = 640;

/// [`base64_lines`] without holding the text: hands it to `f` in pieces of whole lines
/// (tens of KiB), so that checking or hashing an encoded attachment costs no allocation of
/// its size.
///
/// # Errors
/// A zero line length.
pub(crate) fn base64_lines_each(
    data: &[u8],
    line: Option<u32>,
    crlf: bool,
    f: &mut dyn FnMut(&[u8]),
) -> Result<(), String> {
    use base64_simd::STANDARD;
    let n = line.map_or(usize::MAX, |l| l as usize);
    if n == 0 {
        return Err("base64 line length 0".into());
    }
    let eol: &[u8] = if crlf { b"\r\n" } else { b"\n" };
    if !n.is_multiple_of(4) || n == usize::MAX {
        // Lines do not fall on 4-character groups (or there is one line): encode at once.
        let text = STANDARD.encode_to_string(data);
        for (i, chunk) in text.as_bytes().chunks(n).enumerate() {
            if i > 0 {
                f(eol);
            }
            f(chunk);
        }
        return Ok(());
    }
    // Each line of `n` characters is `n / 4 * 3` input bytes: encode whole lines at a time.
    let per_line = n / 4 * 3;
    let mut text = vec![0u8; LINES_PER_CHUNK * n];
    let mut out = Vec::with_capacity(LINES_PER_CHUNK * (n + eol.len()));
    for (c, chunk) in data.chunks(per_line * LINES_PER_CHUNK).enumerate() {
        let encoded = STANDARD.encode(chunk, base64_simd::Out::from_slice(&mut text));
        out.clear();
        for (i, l) in encoded.chunks(n).enumerate() {
            if c > 0 || i > 0 {
                out.extend_from_slice(eol);
            }
            out.extend_from_slice(l);
        }
        f(&out);
    }
    Ok(())
}

/// Put a message together from its data member and the bytes of its blobs (in the order
/// of the blob parts).
///
/// # Errors
/// A range outside the data member, a missing blob, a blob of the wrong length, an unknown
/// encoding (named in the text).
pub(crate) fn assemble(parts: &[Part], data: &[u8], blobs: &[Vec<u8>]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(data.len() + blobs.iter().map(Vec::len).sum::<usize>() * 2);
    each_piece(parts, data, blobs, &mut |b| out.extend_from_slice(b))?;
    Ok(out)
}

/// The SHA-256 (hex) and length of the message the parts put together, without holding
/// the whole message.
///
/// # Errors
/// As [`assemble`].
pub fn digest(parts: &[Part], data: &[u8], blobs: &[Vec<u8>]) -> Result<(String, u64), String> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let mut n = 0u64;
    each_piece(parts, data, blobs, &mut |b| {
        h.update(b);
        n += b.len() as u64;
    })?;
    Ok((hex::encode(h.finalize()), n))
}

/// Whether the parts put together give exactly `original` (compared piece by piece,
/// without building the message): a writer that hashed `original` needs no second hash.
pub fn matches(parts: &[Part], data: &[u8], blobs: &[Vec<u8>], original: &[u8]) -> bool {
    let mut at = 0usize;
    let mut same = true;
    let built = each_piece(parts, data, blobs, &mut |b| {
        if same {
            let end = at.saturating_add(b.len());
            same = original.get(at..end) == Some(b);
            at = end;
        }
    });
    built.is_ok() && same && at == original.len()
}

/// Hand each piece of the message to `f`, in order.
fn each_piece(
    parts: &[Part],
    data: &[u8],
    blobs: &[Vec<u8>],
    f: &mut dyn FnMut(&[u8]),
) -> Result<(), String> {
    let mut next = blobs.iter();
    for (i, p) in parts.iter().enumerate() {
        match (&p.blob, p.offset) {
            (None, Some(off)) => {
                let start = usize::try_from(off).map_err(|_| format!("part {i}: offset"))?;
                let end = usize::try_from(p.size)
                    .ok()
                    .and_then(|n| start.checked_add(n))
                    .ok_or_else(|| format!("part {i}: range overflows"))?;
                let r = data.get(start..end).ok_or_else(|| {
                    format!(
                        "part {i}: range {start}..{end} outside the data member ({} bytes)",
                        data.len()
                    )
                })?;
                f(r);
            }
            (Some(sha), None) => {
                let b = next
                    .next()
                    .ok_or_else(|| format!("part {i}: blob {sha} missing"))?;
                if b.len() as u64 != p.size {
                    return Err(format!(
                        "part {i}: blob {sha} is {} bytes, the part says {}",
                        b.len(),
                        p.size
                    ));
                }
                match p.encoding.as_deref() {
                    None => f(b),
                    Some("base64") => base64_lines_each(b, p.line, p.crlf, f)
                        .map_err(|e| format!("part {i}: {e}"))?,
                    Some(other) => {
                        return Err(format!("part {i}: unknown part encoding {other:?}"));
                    }
                }
            }
            _ => return Err(format!("part {i}: neither a range nor a blob")),
        }
    }
    Ok(())
}

/// Check a part list against what it will be put together from, without the bytes: each
/// range inside the data member of `data_size` bytes, each blob part as long as its blob
/// (`blob_size` gives the length of a blob the archive holds, `None` for one it does not),
/// known encodings. What [`assemble`] would refuse, `verify` reports this way.
///
/// # Errors
/// The first part that does not fit, named.
pub(crate) fn check_layout(
    parts: &[Part],
    data_size: u64,
    blob_size: &dyn Fn(&str) -> Option<u64>,
) -> Result<(), String> {
    for (i, p) in parts.iter().enumerate() {
        match (&p.blob, p.offset) {
            (None, Some(off)) => {
                if off.checked_add(p.size).is_none_or(|end| end > data_size) {
                    return Err(format!(
                        "part {i}: range {off}+{} outside the data member ({data_size} bytes)",
                        p.size
                    ));
                }
            }
            (Some(sha), None) => {
                if let Some(n) = blob_size(sha).filter(|&n| n != p.size) {
                    return Err(format!(
                        "part {i}: blob {sha} is {n} bytes, the part says {}",
                        p.size
                    ));
                }
                match (p.encoding.as_deref(), p.line) {
                    (None, _) | (Some("base64"), None) => {}
                    (Some("base64"), Some(l)) if l > 0 => {}
                    (e, l) => return Err(format!("part {i}: encoding {e:?} line {l:?}")),
                }
            }
            _ => return Err(format!("part {i}: neither a range nor a blob")),
        }
    }
    Ok(())
}

/// A range part of the data member.
pub fn range(offset: u64, size: u64) -> Part {
    Part {
        offset: Some(offset),
        blob: None,
        size,
        encoding: None,
        line: None,
        crlf: false,
    }
}

/// A blob part.
pub fn blob(sha256: String, size: u64, base64_line: Option<u32>, crlf: bool) -> Part {
    Part {
        offset: None,
        blob: Some(sha256),
        size,
        encoding: base64_line.map(|_| "base64".to_string()),
        line: base64_line,
        crlf: base64_line.is_some() && crlf,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assemble_ranges_and_encoded_blobs() {
        let data = b"head\nTAIL";
        let parts = vec![
            range(0, 5),
            blob("x".into(), 6, Some(4), true),
            range(5, 4),
            blob("y".into(), 2, None, false),
        ];
        let got = assemble(&parts, data, &[b"abcdef".to_vec(), b"zz".to_vec()]).unwrap();
        assert_eq!(got, b"head\nYWJj\r\nZGVmTAILzz");
        // A wrong blob length, a range past the end and a missing blob are refused.
        assert!(assemble(&parts, data, &[b"abc".to_vec(), b"zz".to_vec()]).is_err());
        assert!(assemble(&[range(3, 10)], data, &[]).is_err());
        assert!(assemble(&parts, data, &[b"abcdef".to_vec()]).is_err());
        let bad = Part {
            encoding: Some("uuencode".into()),
            ..blob("z".into(), 1, None, false)
        };
        assert!(assemble(&[bad], data, &[b"a".to_vec()]).is_err());
        let (sha, n) = digest(&parts, data, &[b"abcdef".to_vec(), b"zz".to_vec()]).unwrap();
        assert_eq!(n, got.len() as u64);
        assert_eq!(
            sha,
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&got))
        );
    }
}
