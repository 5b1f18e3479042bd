//! Encoding and decoding of tar (POSIX pax / ustar) headers over byte slices. No I/O.
//!
//! Ours, not the `tar` crate's `Header`: its `set_cksum` writes the checksum as seven digits
//! and NUL where the format's vectors (like GNU tar) hold six digits, NUL and space, and its
//! ustar `set_path` splits a long path at the longest prefix where ours takes the shortest,
//! so adopting it would change the bytes of every archive (format-spec/vectors).
//!
//! Writers emit ustar headers, preceded by a pax `x` header when a path or link target does
//! not fit ustar or is not ASCII. Readers accept ustar, pax `x`/`g` and GNU `L`/`K` headers,
//! check every header checksum and use checked arithmetic on every size.

use super::spec::TAR_BLOCK;

/// Member types this crate writes or understands.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum EntryType {
    /// Regular file (`0` or NUL).
    Regular,
    /// Hard link to an earlier member (`1`).
    Link,
    /// Directory (`5`).
    Directory,
    /// pax extended header for the next member (`x`).
    PaxLocal,
    /// pax global header (`g`), ignored.
    PaxGlobal,
    /// GNU long name for the next member (`L`).
    GnuLongName,
    /// GNU long link name for the next member (`K`).
    GnuLongLink,
    /// Anything else: skipped.
    Other(u8),
}

impl EntryType {
    fn from_byte(b: u8) -> Self {
        match b {
            b'0' | 0 => EntryType::Regular,
            b'1' => EntryType::Link,
            b'5' => EntryType::Directory,
            b'x' => EntryType::PaxLocal,
            b'g' => EntryType::PaxGlobal,
            b'L' => EntryType::GnuLongName,
            b'K' => EntryType::GnuLongLink,
            o => EntryType::Other(o),
        }
    }
    fn to_byte(self) -> u8 {
        match self {
            EntryType::Regular => b'0',
            EntryType::Link => b'1',
            EntryType::Directory => b'5',
            EntryType::PaxLocal => b'x',
            EntryType::PaxGlobal => b'g',
            EntryType::GnuLongName => b'L',
            EntryType::GnuLongLink => b'K',
            EntryType::Other(b) => b,
        }
    }
}

/// What a writer knows about a member before writing its header.
#[derive(Clone, Debug)]
pub(crate) struct MemberHeader<'a> {
    /// Member path (relative, `/`-separated).
    pub path: &'a str,
    /// Regular file or hard link.
    pub kind: EntryType,
    /// Link target for [`EntryType::Link`].
    pub link: Option<&'a str>,
    /// Data length (0 for links).
    pub size: u64,
    /// Modification time, Unix seconds.
    pub mtime: i64,
    /// Permission bits.
    pub mode: u32,
    /// Owner ids.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// Bytes of zero padding after `size` data bytes.
pub fn padding(size: u64) -> usize {
    let rem = (size % TAR_BLOCK as u64) as usize;
    if rem == 0 { 0 } else { TAR_BLOCK - rem }
}

fn put_octal(field: &mut [u8], value: u64) -> bool {
    // `len - 1` digits followed by NUL.
    let digits = field.len() - 1;
    let s = format!("{value:0digits$o}");
    if s.len() > digits {
        return false;
    }
    field[..digits].copy_from_slice(s.as_bytes());
    field[digits] = 0;
    true
}

#[allow(clippy::too_many_arguments)] // One argument per ustar field keeps the call sites readable.
fn ustar_block(
    name: &[u8],
    prefix: &[u8],
    kind: EntryType,
    link: &[u8],
    size: u64,
    mtime: i64,
    mode: u32,
    uid: u32,
    gid: u32,
) -> [u8; TAR_BLOCK] {
    let mut b = [0u8; TAR_BLOCK];
    b[..name.len()].copy_from_slice(name);
    put_octal(&mut b[100..108], u64::from(mode & 0o7777));
    // Ids too large for 7 octal digits are written as 0 (pax carries nothing for them).
    if !put_octal(&mut b[108..116], u64::from(uid)) {
        put_octal(&mut b[108..116], 0);
    }
    if !put_octal(&mut b[116..124], u64::from(gid)) {
        put_octal(&mut b[116..124], 0);
    }
    put_octal(&mut b[124..136], size);
    put_octal(&mut b[136..148], u64::try_from(mtime.max(0)).unwrap_or(0));
    b[156] = kind.to_byte();
    b[157..157 + link.len()].copy_from_slice(link);
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    b[345..345 + prefix.len()].copy_from_slice(prefix);
    b[148..156].copy_from_slice(b"        ");
    let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
    put_octal(&mut b[148..155], u64::from(sum));
    b[155] = b' ';
    b
}

/// Split `path` into ustar (prefix, name) when it fits and is plain ASCII.
fn ustar_split(path: &str) -> Option<(&[u8], &[u8])> {
    let p = path.as_bytes();
    if !p.is_ascii() {
        return None;
    }
    if p.len() <= 100 {
        return Some((&[], p));
    }
    // Split at a '/' so that prefix <= 155 and name <= 100.
    let mut best = None;
    for (i, &c) in p.iter().enumerate() {
        if c == b'/' && i <= 155 && p.len() - i - 1 <= 100 && i > 0 {
            best = Some(i);
            break;
        }
    }
    best.map(|i| (&p[..i], &p[i + 1..]))
}

fn pax_record(out: &mut Vec<u8>, key: &str, value: &str) {
    // "<len> <key>=<value>\n" where len counts the whole record including its own digits.
    let body = key.len() + value.len() + 3; // ' ' '=' '\n'
    let mut digits = 1;
    while (body + digits).to_string().len() != digits {
        digits += 1;
    }
    let len = body + digits;
    out.extend_from_slice(format!("{len} {key}={value}\n").as_bytes());
}

/// Encode the header block(s) of one member (pax header included when needed) into `out`.
/// Returns false when the size cannot be encoded.
pub(crate) fn encode_header(h: &MemberHeader<'_>, out: &mut Vec<u8>) -> bool {
    if h.size > super::spec::MESSAGE_LIMIT {
        return false;
    }
    let link = h.link.unwrap_or("");
    let path_split = ustar_split(h.path);
    let link_ok = link.is_ascii() && link.len() <= 100;
    let (prefix, name) = match path_split {
        Some(pn) if link_ok => pn,
        _ => {
            let mut pax = Vec::new();
            pax_record(&mut pax, "path", h.path);
            if !link.is_empty() {
                pax_record(&mut pax, "linkpath", link);
            }
            let pname = b"PaxHeader";
            out.extend_from_slice(&ustar_block(
                pname,
                &[],
                EntryType::PaxLocal,
                &[],
                pax.len() as u64,
                h.mtime,
                0o644,
                0,
                0,
            ));
            let pad = padding(pax.len() as u64);
            out.extend_from_slice(&pax);
            out.resize(out.len() + pad, 0);
            // The ustar fallback name is a truncated, still-safe version of the path.
            let p = truncate_ascii(h.path, 100);
            out.extend_from_slice(&ustar_block(
                p,
                &[],
                h.kind,
                truncate_ascii(link, 100),
                h.size,
                h.mtime,
                h.mode,
                h.uid,
                h.gid,
            ));
            return true;
        }
    };
    out.extend_from_slice(&ustar_block(
        name,
        prefix,
        h.kind,
        link.as_bytes(),
        h.size,
        h.mtime,
        h.mode,
        h.uid,
        h.gid,
    ));
    true
}

fn truncate_ascii(s: &str, max: usize) -> &[u8] {
    let b = s.as_bytes();
    let mut end = b.len().min(max);
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    &b[..end]
}

/// A decoded header block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RawHeader {
    /// Member type.
    pub kind: EntryType,
    /// Path from the ustar name and prefix fields (pax/GNU overrides are applied by the caller).
    pub path: Vec<u8>,
    /// Link target from the ustar field.
    pub link: Vec<u8>,
    /// Data length.
    pub size: u64,
    /// Modification time.
    pub mtime: u64,
}

/// Why a header block could not be decoded.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HeaderError {
    /// The block is all zeros (end-of-archive marker).
    Zero,
    /// The checksum does not match.
    Checksum,
    /// A numeric field is not octal.
    Number(&'static str),
}

fn parse_octal(field: &[u8], what: &'static str) -> Result<u64, HeaderError> {
    let mut v: u64 = 0;
    let mut seen = false;
    for &c in field {
        match c {
            b'0'..=b'7' => {
                v = v
                    .checked_mul(8)
                    .and_then(|v| v.checked_add(u64::from(c - b'0')))
                    .ok_or(HeaderError::Number(what))?;
                seen = true;
            }
            b' ' if !seen => {}
            0 | b' ' => break,
            _ => return Err(HeaderError::Number(what)),
        }
    }
    Ok(v)
}

fn cstr(field: &[u8]) -> &[u8] {
    match field.iter().position(|&c| c == 0) {
        Some(n) => &field[..n],
        None => field,
    }
}

/// Decode one 512-byte header block.
///
/// # Errors
/// [`HeaderError`] for a zero block, a bad checksum or a non-octal number.
pub(crate) fn decode_header(b: &[u8; TAR_BLOCK]) -> Result<RawHeader, HeaderError> {
    if b.iter().all(|&x| x == 0) {
        return Err(HeaderError::Zero);
    }
    let want = parse_octal(&b[148..156], "checksum")?;
    let sum: u64 = b
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(x)
            }
        })
        .sum();
    if sum != want {
        return Err(HeaderError::Checksum);
    }
    let size = parse_octal(&b[124..136], "size")?;
    let mtime = parse_octal(&b[136..148], "mtime")?;
    let name = cstr(&b[0..100]);
    let prefix = if &b[257..262] == b"ustar" {
        cstr(&b[345..500])
    } else {
        &[]
    };
    let mut path = Vec::with_capacity(prefix.len() + name.len() + 1);
    if !prefix.is_empty() {
        path.extend_from_slice(prefix);
        path.push(b'/');
    }
    path.extend_from_slice(name);
    Ok(RawHeader {
        kind: EntryType::from_byte(b[156]),
        path,
        link: cstr(&b[157..257]).to_vec(),
        size,
        mtime,
    })
}

/// Parse pax records; returns (path, linkpath) overrides found.
pub(crate) fn parse_pax(data: &[u8]) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    let mut path = None;
    let mut link = None;
    let mut rest = data;
    while !rest.is_empty() {
        let Some(sp) = rest.iter().position(|&c| c == b' ') else {
            break;
        };
        let Some(len) = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
        else {
            break;
        };
        let Some(rec) = rest.get(..len) else { break };
        let Some(kv) = rec.get(sp + 1..len.saturating_sub(1)) else {
            break;
        };
        if let Some(eq) = kv.iter().position(|&c| c == b'=') {
            match &kv[..eq] {
                b"path" => path = Some(kv[eq + 1..].to_vec()),
                b"linkpath" => link = Some(kv[eq + 1..].to_vec()),
                _ => {}
            }
        }
        rest = &rest[len..];
    }
    (path, link)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(path: &str, link: Option<&str>) -> (RawHeader, Vec<u8>) {
        let mut out = Vec::new();
        let h = MemberHeader {
            path,
            kind: if link.is_some() {
                EntryType::Link
            } else {
                EntryType::Regular
            },
            link,
            size: 1234,
            mtime: 1_700_000_000,
            mode: 0o600,
            uid: 5000,
            gid: 5000,
        };
        assert!(encode_header(&h, &mut out));
        assert_eq!(out.len() % TAR_BLOCK, 0);
        let first: [u8; TAR_BLOCK] = out[..TAR_BLOCK].try_into().unwrap();
        (decode_header(&first).unwrap(), out)
    }

    #[test]
    fn short_ascii_path_is_plain_ustar() {
        let (h, out) = roundtrip("users/alice/INBOX/1.eml", None);
        assert_eq!(out.len(), TAR_BLOCK);
        assert_eq!(h.path, b"users/alice/INBOX/1.eml");
        assert_eq!(h.size, 1234);
        assert_eq!(h.kind, EntryType::Regular);
    }

    #[test]
    fn non_ascii_path_gets_pax_header() {
        let p = "users/alice/Ünï Box/3.eml";
        let (h, out) = roundtrip(p, None);
        assert_eq!(h.kind, EntryType::PaxLocal);
        let pax = &out[TAR_BLOCK..TAR_BLOCK + h.size as usize];
        assert_eq!(parse_pax(pax).0.unwrap(), p.as_bytes());
    }

    #[test]
    fn long_path_and_link() {
        // Fits ustar's prefix + name split.
        let long = format!("users/{}/7.eml", "x".repeat(120));
        let (h, _) = roundtrip(&long, None);
        assert_eq!(h.kind, EntryType::Regular);
        assert_eq!(h.path, long.as_bytes());
        // Does not fit: pax.
        let long = format!("users/alice/{}/7.eml", "x".repeat(150));
        let (h, out) = roundtrip(&long, None);
        assert_eq!(h.kind, EntryType::PaxLocal);
        assert_eq!(
            parse_pax(&out[TAR_BLOCK..TAR_BLOCK + h.size as usize])
                .0
                .unwrap(),
            long.as_bytes()
        );
        let (h, out) = roundtrip(
            "users/a/INBOX/2.eml",
            Some(&format!("users/a/{}/1.eml", "y".repeat(120))),
        );
        assert_eq!(h.kind, EntryType::PaxLocal);
        let (_, l) = parse_pax(&out[TAR_BLOCK..TAR_BLOCK + h.size as usize]);
        assert!(l.unwrap().ends_with(b"/1.eml"));
    }

    #[test]
    fn checksum_is_checked() {
        let (_, mut out) = roundtrip("a", None);
        out[10] ^= 1;
        let b: [u8; TAR_BLOCK] = out[..TAR_BLOCK].try_into().unwrap();
        assert_eq!(decode_header(&b), Err(HeaderError::Checksum));
        assert_eq!(decode_header(&[0u8; TAR_BLOCK]), Err(HeaderError::Zero));
    }

    #[test]
    fn pax_record_length_counts_itself() {
        let mut v = Vec::new();
        pax_record(&mut v, "path", "abc");
        assert_eq!(v, b"12 path=abc\n");
        let mut v = Vec::new();
        pax_record(&mut v, "path", &"a".repeat(93));
        let s = String::from_utf8(v).unwrap();
        let n: usize = s.split(' ').next().unwrap().parse().unwrap();
        assert_eq!(n, s.len());
    }
}
