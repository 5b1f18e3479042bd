//! Dovecot dbox mail files (sdbox `u.N`, mdbox `m.N`) and single-instance
//! storage (SIS) attachment references.
//!
//! Layout (Dovecot 2.3, `dbox-file.h`):
//!
//! ```text
//! "2 M1e C<create stamp hex>\n"            file header
//! per message:
//!   01 02 'N' ' ' <8 spaces> ' ' <16 hex digits body size> '\n'   (30 bytes)
//!   <body: exactly `size` bytes>
//!   "\n\x01\x03\n"                         metadata magic
//!   "<key byte><value>\n" ...              metadata lines
//!   "\n"                                   end of metadata (Dovecot also accepts a line
//!                                          starting with ' ', written by dbox v1)
//! ```
//!
//! Dovecot 2.3 writes the metadata keys in this fixed order (`dbox-save.c`):
//! `Z` (only when the stored body differs from the message, i.e. SIS/compression),
//! `R`, `V`, `P` (if a POP3 UIDL is set), `O` (if a POP3 order is set, *decimal*),
//! `G`, `B` (mdbox only), `X` (if attachments were externalised). [`message_bytes`]
//! writes the given lines in the given order, so it reproduces Dovecot's bytes when
//! fed the keys of a parsed message in file order.
//!
//! Nothing here panics on malformed input: every offset is checked and every
//! parse error is an [`std::io::ErrorKind::InvalidData`] error naming the offset.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use std::io;

/// Result type of this module; parse errors are `io::ErrorKind::InvalidData`.
pub type Result<T> = std::io::Result<T>;

/// Magic bytes starting every message header.
pub(crate) const MAGIC_PRE: &[u8; 2] = b"\x01\x02";
/// Magic bytes starting every metadata block (the leading LF is not part of the body).
pub(crate) const MAGIC_POST: &[u8; 4] = b"\n\x01\x03\n";
/// Size of the message header Dovecot 2.x writes (`sizeof(struct dbox_message_header)`).
pub(crate) const MSG_HEADER_SIZE: u32 = 30;
/// The dbox file version Dovecot 2.x writes.
pub(crate) const DBOX_VERSION: u32 = 2;

/// Offset of the 16 hex digit body size inside the message header.
const MSG_SIZE_HEX_OFFSET: usize = 13;
/// Length of the body size field.
const MSG_SIZE_HEX_LEN: usize = 16;
/// Longest file header line we accept (Dovecot writes about 20 bytes).
const MAX_FILE_HEADER_LINE: usize = 4096;

fn invalid(what: &str, detail: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{what}: {detail}"))
}

/// Strict parse like Dovecot's `str_to_uintmax_hex` (radix 16) and `str_to_uoff` /
/// `str_to_uint` (radix 10): at least one digit, digits of the radix only, no sign, no
/// overflow.
fn parse_u64(s: &[u8], radix: u32) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for &c in s {
        let d = char::from(c).to_digit(radix)?;
        v = v.checked_mul(u64::from(radix))?.checked_add(u64::from(d))?;
    }
    Some(v)
}

/// [`parse_u64`] in hex.
fn parse_hex_u64(s: &[u8]) -> Option<u64> {
    parse_u64(s, 16)
}

/// [`parse_u64`] in decimal.
fn parse_dec_u64(s: &[u8]) -> Option<u64> {
    parse_u64(s, 10)
}

fn to_usize(v: u64, what: &str) -> Result<usize> {
    usize::try_from(v).map_err(|_| invalid(what, format_args!("{v} does not fit in memory")))
}

fn to_u64(v: usize) -> u64 {
    // usize is at most 64 bits on every supported target.
    u64::try_from(v).unwrap_or(u64::MAX)
}

// ---------------------------------------------------------------------------
// File header
// ---------------------------------------------------------------------------

/// File header "2 M1e C6b0ac8b3\n".
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FileHeader {
    /// dbox file version (1 or 2; Dovecot 2.x writes 2).
    pub version: u32,
    /// Size of each message header in bytes (`M`, hex; 0x1e = 30).
    pub msg_header_size: u32,
    /// File creation UNIX time (`C`, hex); 0 if absent.
    pub create_stamp: u64,
    /// Bytes of the header line including its LF; the first message starts here.
    pub len: usize,
}

/// Parse the file header line at the start of `data`.
///
/// Follows Dovecot's `dbox_file_parse_header`: a version digit (1 or 2), a space,
/// then space separated `<key><value>` fields; `M` (hex, required, non-zero) and
/// `C` (hex) are used, other keys (e.g. the v1 `A`) are ignored. Additionally a
/// message header size below 30 is refused since this module reads the fixed
/// Dovecot 2 header fields.
pub(crate) fn parse_file_header(data: &[u8]) -> Result<FileHeader> {
    const WHAT: &str = "dbox file header";
    let search = data
        .get(..MAX_FILE_HEADER_LINE.min(data.len()))
        .unwrap_or(data);
    let nl = search
        .iter()
        .position(|&c| c == b'\n')
        .ok_or_else(|| invalid(WHAT, "no LF-terminated header line at offset 0"))?;
    let line = data.get(..nl).unwrap_or_default();
    let (ver, rest) = match line {
        [v, b' ', rest @ ..] if v.is_ascii_digit() => (u32::from(v - b'0'), rest),
        [_, b' ', ..] => return Err(invalid(WHAT, "invalid version digit at offset 0")),
        _ => return Err(invalid(WHAT, "expected '<version> ' at offset 0")),
    };
    if ver != 1 && ver != DBOX_VERSION {
        return Err(invalid(
            WHAT,
            format_args!("unsupported version {ver} at offset 0"),
        ));
    }
    let mut msg_header_size: u32 = 0;
    let mut create_stamp: u64 = 0;
    let mut pos = 2usize;
    for field in rest.split(|&c| c == b' ') {
        match field.split_first() {
            Some((b'M', v)) => {
                msg_header_size = parse_hex_u64(v)
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| {
                        invalid(
                            WHAT,
                            format_args!("invalid message header size at offset {pos}"),
                        )
                    })?;
            }
            Some((b'C', v)) => {
                create_stamp = parse_hex_u64(v).ok_or_else(|| {
                    invalid(WHAT, format_args!("invalid create stamp at offset {pos}"))
                })?;
            }
            _ => {}
        }
        pos = pos.saturating_add(field.len()).saturating_add(1);
    }
    if msg_header_size == 0 {
        return Err(invalid(WHAT, "missing message header size (M)"));
    }
    if msg_header_size < MSG_HEADER_SIZE {
        return Err(invalid(
            WHAT,
            format_args!("message header size {msg_header_size} < {MSG_HEADER_SIZE}"),
        ));
    }
    Ok(FileHeader {
        version: ver,
        msg_header_size,
        create_stamp,
        len: nl.saturating_add(1),
    })
}

/// Writing: the file header line for a new dbox file (`2 M1e C<hex stamp>\n`),
/// byte-identical to what Dovecot 2.3 writes.
pub(crate) fn file_header(create_stamp: u64) -> Vec<u8> {
    format!("{DBOX_VERSION} M{MSG_HEADER_SIZE:x} C{create_stamp:x}\n").into_bytes()
}

// ---------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------

/// One message inside a dbox file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DboxMessage {
    /// Offset of the 01 02 message header in the file.
    pub offset: u64,
    /// Bytes from the message header through the metadata block's final empty
    /// line (the mdbox map record `size`).
    pub size: u64,
    /// Offset of the first body byte.
    pub body_offset: u64,
    /// Body length from the message header.
    pub body_len: u64,
    /// Metadata lines in file order: key byte and value (without LF). Unknown
    /// keys and duplicates are kept.
    pub meta: Vec<(u8, Vec<u8>)>,
}

impl DboxMessage {
    /// First value for `key`, as Dovecot's `dbox_file_metadata_get` returns it.
    pub fn get(&self, key: u8) -> Option<&[u8]> {
        self.meta
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_slice())
    }

    fn get_hex(&self, key: u8) -> Option<u64> {
        self.get(key).and_then(parse_hex_u64)
    }

    /// Message GUID (`G`): 32 hex digits for Dovecot's own saves, otherwise
    /// whatever the source had (e.g. a maildir base name).
    pub fn guid(&self) -> Option<&[u8]> {
        self.get(b'G')
    }

    /// Received date / INTERNALDATE (`R`, UNIX time in hex). Dovecot writes
    /// `(unsigned long)time` with `%lx`, so values >= 2^63 are negative times.
    pub fn received(&self) -> Option<i64> {
        self.get_hex(b'R')
            .map(|v| i64::from_ne_bytes(v.to_ne_bytes()))
    }

    /// Save time (`S`, hex). Only dbox v1 wrote this key; Dovecot 2.3 never
    /// writes it (the save date lives in the index: the mdbox `mdbox` record
    /// extension, or for sdbox the index cache, falling back to the file ctime).
    /// `None` when absent, which is the normal case.
    #[cfg(test)] // used by the tests only (the store reads and writes without it)
    pub(crate) fn save_time(&self) -> Option<i64> {
        self.get_hex(b'S')
            .map(|v| i64::from_ne_bytes(v.to_ne_bytes()))
    }

    /// Virtual size (`V`, hex): the size with every LF counted as CRLF.
    pub(crate) fn virtual_size(&self) -> Option<u64> {
        self.get_hex(b'V')
    }

    /// Physical size of the full message (`Z`, hex). Only present when it
    /// differs from the body length (externalised attachments, compression).
    pub(crate) fn physical_size(&self) -> Option<u64> {
        self.get_hex(b'Z')
    }

    /// POP3 UIDL override (`P`).
    pub fn pop3_uidl(&self) -> Option<&[u8]> {
        self.get(b'P')
    }

    /// POP3 order (`O`). Dovecot writes and reads it as **decimal** (`%u`).
    pub fn pop3_order(&self) -> Option<u32> {
        self.get(b'O')
            .and_then(parse_dec_u64)
            .and_then(|v| u32::try_from(v).ok())
    }

    /// Externalised attachment references (`X`); empty if there is no `X` key.
    pub(crate) fn sis_parts(&self) -> Result<Vec<SisPart>> {
        match self.get(b'X') {
            None => Ok(Vec::new()),
            Some(v) => parse_x(v).map_err(|e| {
                invalid(
                    "dbox metadata",
                    format_args!("message at offset {}: {e}", self.offset),
                )
            }),
        }
    }

    /// The body slice of this message inside `data` (the file it was parsed from).
    pub fn body<'a>(&self, data: &'a [u8]) -> Result<&'a [u8]> {
        let start = to_usize(self.body_offset, "dbox body offset")?;
        let len = to_usize(self.body_len, "dbox body length")?;
        let end = start
            .checked_add(len)
            .ok_or_else(|| invalid("dbox body", "offset overflow"))?;
        data.get(start..end).ok_or_else(|| {
            invalid(
                "dbox body",
                format_args!("body at offset {start} len {len} outside data"),
            )
        })
    }
}

/// Parse the message whose header starts at `offset` in `data` (a whole dbox
/// file in memory).
pub(crate) fn parse_message_at(data: &[u8], hdr: &FileHeader, offset: u64) -> Result<DboxMessage> {
    const WHAT: &str = "dbox message";
    let off = to_usize(offset, WHAT)?;
    let head = data.get(off..).ok_or_else(|| {
        invalid(
            WHAT,
            format_args!("offset {off} past the end of the file ({})", data.len()),
        )
    })?;
    let (body_start, body_len) = parse_message_header(head, hdr, offset)?;
    let body_end = to_usize(body_len, WHAT)
        .ok()
        .and_then(|l| body_start.checked_add(l))
        .and_then(|e| e.checked_add(off))
        .filter(|&e| e <= data.len())
        .ok_or_else(|| {
            invalid(
                WHAT,
                format_args!(
                    "truncated body at offset {off}: body of {body_len} bytes at {} exceeds file size {}",
                    off.saturating_add(body_start),
                    data.len()
                ),
            )
        })?;
    let (meta, meta_len) =
        parse_metadata(data.get(body_end..).unwrap_or_default(), offset, body_end)?;
    Ok(DboxMessage {
        offset,
        size: to_u64(body_end.saturating_add(meta_len).saturating_sub(off)),
        body_offset: to_u64(off.saturating_add(body_start)),
        body_len,
        meta,
    })
}

/// Parse a message from two pieces read separately, without its body: `head`, the bytes
/// from the message header at `offset` on (at least the message header), and `tail`, the
/// bytes from the end of its body on (the metadata block). Returns the message and where
/// its body starts and ends (file offsets), so a reader can read the metadata of large
/// messages without reading their bodies.
pub(crate) fn parse_message_split(
    head: &[u8],
    tail: &[u8],
    hdr: &FileHeader,
    offset: u64,
) -> Result<DboxMessage> {
    const WHAT: &str = "dbox message";
    let (body_start, body_len) = parse_message_header(head, hdr, offset)?;
    let body_offset = offset
        .checked_add(to_u64(body_start))
        .ok_or_else(|| invalid(WHAT, "offset overflow"))?;
    let body_end = body_offset
        .checked_add(body_len)
        .ok_or_else(|| invalid(WHAT, "offset overflow"))?;
    let (meta, meta_len) = parse_metadata(tail, offset, to_usize(body_end, WHAT)?)?;
    Ok(DboxMessage {
        offset,
        size: body_end
            .saturating_add(to_u64(meta_len))
            .saturating_sub(offset),
        body_offset,
        body_len,
        meta,
    })
}

/// The message header at the start of `h` (the message at file offset `offset`): the
/// header's length and the body's length.
pub(crate) fn parse_message_header(
    h: &[u8],
    hdr: &FileHeader,
    offset: u64,
) -> Result<(usize, u64)> {
    const WHAT: &str = "dbox message";
    let hsz = usize::try_from(hdr.msg_header_size)
        .map_err(|_| invalid(WHAT, "message header size too large"))?;
    if hsz < MSG_HEADER_SIZE as usize {
        return Err(invalid(
            WHAT,
            format_args!("message header size {hsz} < 30"),
        ));
    }
    let h = h.get(..hsz).ok_or_else(|| {
        invalid(
            WHAT,
            format_args!("truncated message header at offset {offset}"),
        )
    })?;
    if h.get(..2) != Some(MAGIC_PRE.as_slice()) {
        return Err(invalid(
            WHAT,
            format_args!("bad header magic at offset {offset}"),
        ));
    }
    if h.last() != Some(&b'\n') {
        return Err(invalid(
            WHAT,
            format_args!("message header at offset {offset} does not end with LF"),
        ));
    }
    let size_hex = h
        .get(MSG_SIZE_HEX_OFFSET..MSG_SIZE_HEX_OFFSET + MSG_SIZE_HEX_LEN)
        .unwrap_or_default();
    let body_len = parse_hex_u64(size_hex).ok_or_else(|| {
        invalid(
            WHAT,
            format_args!("invalid body size in header at offset {offset}"),
        )
    })?;
    Ok((hsz, body_len))
}

/// Metadata lines of a message: key byte and value.
type MetaLines = Vec<(u8, Vec<u8>)>;

/// The metadata block at the start of `t` (the bytes right after a body that ends at file
/// offset `body_end`, of the message at `offset`): its lines and its length.
fn parse_metadata(t: &[u8], offset: u64, body_end: usize) -> Result<(MetaLines, usize)> {
    const WHAT: &str = "dbox message";
    if t.get(..MAGIC_POST.len()) != Some(MAGIC_POST.as_slice()) {
        return Err(invalid(
            WHAT,
            format_args!("message at offset {offset}: missing metadata magic at offset {body_end}"),
        ));
    }
    let mut meta = Vec::new();
    let mut pos = MAGIC_POST.len();
    loop {
        let rest = t.get(pos..).unwrap_or_default();
        let nl = rest.iter().position(|&c| c == b'\n').ok_or_else(|| {
            invalid(
                WHAT,
                format_args!(
                    "message at offset {offset}: missing end-of-metadata line after offset {}",
                    body_end.saturating_add(pos)
                ),
            )
        })?;
        let line = rest.get(..nl).unwrap_or_default();
        pos = pos.saturating_add(nl).saturating_add(1);
        match line.split_first() {
            None | Some((b' ', _)) => break,
            Some((&k, v)) => meta.push((k, v.to_vec())),
        }
    }
    Ok((meta, pos))
}

/// All messages of a file in order (mdbox `m.N`; for sdbox exactly one).
/// A truncated or corrupt message is an error naming its offset; a file with
/// only a header yields an empty list.
pub(crate) fn parse_all(data: &[u8]) -> Result<(FileHeader, Vec<DboxMessage>)> {
    let hdr = parse_file_header(data)?;
    let mut msgs = Vec::new();
    let mut pos = hdr.len;
    while pos < data.len() {
        let m = parse_message_at(data, &hdr, to_u64(pos))?;
        let next = to_usize(m.size, "dbox message")
            .ok()
            .and_then(|s| pos.checked_add(s))
            .filter(|&n| n > pos)
            .ok_or_else(|| invalid("dbox message", format_args!("no progress at offset {pos}")))?;
        msgs.push(m);
        pos = next;
    }
    Ok((hdr, msgs))
}

/// One message (header + body + `"\n\x01\x03\n"` + meta lines + `"\n"`) as
/// Dovecot 2.3 writes it. The lines are written in the given order; pass a
/// parsed message's `meta` to reproduce its bytes. Values must not contain LF
/// and keys must not be LF or space, or the result will not
/// parse back.
pub(crate) fn message_bytes(body: &[u8], meta: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let meta_len: usize = meta.iter().fold(0usize, |a, (_, v)| {
        a.saturating_add(v.len()).saturating_add(2)
    });
    let mut out = Vec::with_capacity(
        body.len()
            .saturating_add(meta_len)
            .saturating_add(MSG_HEADER_SIZE as usize + 5),
    );
    out.extend_from_slice(MAGIC_PRE);
    out.extend_from_slice(b"N          ");
    out.extend_from_slice(format!("{:016X}\n", to_u64(body.len())).as_bytes());
    out.extend_from_slice(body);
    out.extend_from_slice(MAGIC_POST);
    for (k, v) in meta {
        out.push(*k);
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    out.push(b'\n');
    out
}

// ---------------------------------------------------------------------------
// SIS
// ---------------------------------------------------------------------------

/// One externalised attachment reference (`X` metadata 4-tuple).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SisPart {
    /// Offset in the reconstructed full message where the encoded text begins.
    pub start: u64,
    /// Length of the encoded text in the full message (without the line end
    /// after the last base64 line, which stays in the dbox body).
    pub size: u64,
    /// `B<n>`: stored decoded, re-encode as base64 with `n` chars per line
    /// (a positive multiple of 4). `None`: stored verbatim.
    pub base64_line_len: Option<u32>,
    /// `C`: base64 lines are joined with CRLF instead of LF (ignored without base64).
    pub crlf: bool,
    /// Path as in `X`, relative to `mail_attachment_dir` (sdbox adds a suffix on disk,
    /// see [`sdbox_attachment_name`]).
    pub path: String,
}

fn parse_x_options(s: &[u8]) -> Option<(Option<u32>, bool)> {
    // Mirrors index-attachment.c parse_extref_decode_options: "-" alone, or any
    // sequence of 'C' and 'B<digits>' (last B wins); an empty field means none.
    if s.first() == Some(&b'-') {
        return (s.len() == 1).then_some((None, false));
    }
    let mut b64 = None;
    let mut crlf = false;
    let mut i = 0usize;
    while let Some(&c) = s.get(i) {
        match c {
            b'C' => {
                crlf = true;
                i += 1;
            }
            b'B' => {
                i += 1;
                let digits = s
                    .get(i..)
                    .unwrap_or_default()
                    .iter()
                    .take_while(|c| c.is_ascii_digit())
                    .count();
                let num = parse_dec_u64(s.get(i..i + digits).unwrap_or_default())
                    .and_then(|n| u32::try_from(n).ok())?;
                if num == 0 || !num.is_multiple_of(4) {
                    return None;
                }
                b64 = Some(num);
                i += digits;
            }
            _ => return None,
        }
    }
    Some((b64, crlf))
}

/// Parse an `X` metadata value: one or more `<start> <size> <options> <path>`
/// tuples separated by single spaces (Dovecot's `index_attachment_parse_extrefs`).
/// Parts must not overlap (`start` >= previous `start + size`). Stricter than
/// Dovecot only in refusing an empty or non-UTF-8 path and numeric overflow.
pub(crate) fn parse_x(value: &[u8]) -> Result<Vec<SisPart>> {
    const WHAT: &str = "SIS X metadata";
    let fields: Vec<&[u8]> = value.split(|&c| c == b' ').collect();
    if !fields.len().is_multiple_of(4) {
        return Err(invalid(
            WHAT,
            format_args!("{} fields, not a multiple of 4", fields.len()),
        ));
    }
    let mut parts = Vec::with_capacity(fields.len() / 4);
    let mut last_end: u64 = 0;
    for (i, t) in fields.chunks_exact(4).enumerate() {
        let [start, size, opts, path] = t else {
            return Err(invalid(WHAT, format_args!("tuple {i}: incomplete")));
        };
        let start = parse_dec_u64(start)
            .ok_or_else(|| invalid(WHAT, format_args!("tuple {i}: invalid start offset")))?;
        let size = parse_dec_u64(size)
            .ok_or_else(|| invalid(WHAT, format_args!("tuple {i}: invalid size")))?;
        if start < last_end {
            return Err(invalid(
                WHAT,
                format_args!("tuple {i}: start {start} before end of previous part {last_end}"),
            ));
        }
        last_end = start
            .checked_add(size)
            .ok_or_else(|| invalid(WHAT, format_args!("tuple {i}: start + size overflows")))?;
        let (base64_line_len, crlf) = parse_x_options(opts)
            .ok_or_else(|| invalid(WHAT, format_args!("tuple {i}: invalid options")))?;
        let path = std::str::from_utf8(path)
            .map_err(|_| invalid(WHAT, format_args!("tuple {i}: path is not UTF-8")))?;
        if path.is_empty() || path.contains(['\n', '\0']) {
            return Err(invalid(
                WHAT,
                format_args!("tuple {i}: empty path or path with LF/NUL"),
            ));
        }
        parts.push(SisPart {
            start,
            size,
            base64_line_len,
            crlf,
            path: path.to_owned(),
        });
    }
    Ok(parts)
}

/// Format parts as an `X` value (inverse of [`parse_x`]); byte-identical to
/// Dovecot's `index_attachment_append_extrefs`: options are `C` then `B<n>`, or
/// `-` when neither applies. Only parts accepted by [`validate_parts`] round-trip.
pub(crate) fn format_x(parts: &[SisPart]) -> Vec<u8> {
    let mut s = String::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(&format!("{} {} ", p.start, p.size));
        let mut opts = String::new();
        if p.crlf {
            opts.push('C');
        }
        if let Some(n) = p.base64_line_len {
            opts.push_str(&format!("B{n}"));
        }
        if opts.is_empty() {
            opts.push('-');
        }
        s.push_str(&opts);
        s.push(' ');
        s.push_str(&p.path);
    }
    s.into_bytes()
}

/// Check parts as [`parse_x`] would: ordered and non-overlapping, valid line
/// lengths, non-empty paths without spaces or LF.
pub(crate) fn validate_parts(parts: &[SisPart]) -> Result<()> {
    const WHAT: &str = "SIS parts";
    let mut last_end = 0u64;
    for (i, p) in parts.iter().enumerate() {
        if p.start < last_end {
            return Err(invalid(
                WHAT,
                format_args!(
                    "part {i}: start {} overlaps previous part ending at {last_end}",
                    p.start
                ),
            ));
        }
        last_end = p
            .start
            .checked_add(p.size)
            .ok_or_else(|| invalid(WHAT, format_args!("part {i}: start + size overflows")))?;
        if let Some(n) = p.base64_line_len
            && (n == 0 || !n.is_multiple_of(4))
        {
            return Err(invalid(
                WHAT,
                format_args!("part {i}: invalid base64 line length {n}"),
            ));
        }
        if p.path.is_empty() || p.path.contains([' ', '\n', '\0']) {
            return Err(invalid(
                WHAT,
                format_args!("part {i}: invalid path {:?}", p.path),
            ));
        }
    }
    Ok(())
}

/// True if an `X` path is a plain relative path that stays inside
/// `mail_attachment_dir` (no absolute path, no `.`/`..`/empty components, no NUL).
/// Dovecot itself does not check this; a backup tool should before opening files.
pub(crate) fn is_safe_relative_path(path: &str) -> bool {
    !path.is_empty()
        && !path.contains('\0')
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

/// Encode an attachment's stored (decoded) bytes as they appear in the full
/// message: base64 in lines of `n` chars joined by LF (or CRLF with `C`), with no
/// terminator after the last line; or verbatim when the options are `-`.
/// The result must be exactly `part.size` bytes, else an error.
pub(crate) fn encode_part(part: &SisPart, stored: &[u8]) -> Result<Vec<u8>> {
    let out = match part.base64_line_len {
        None => stored.to_vec(),
        Some(n) => {
            if n == 0 || !n.is_multiple_of(4) {
                return Err(invalid(
                    "SIS part",
                    format_args!("invalid base64 line length {n}"),
                ));
            }
            crate::mime::parts::base64_lines(stored, Some(n), part.crlf)
                .map_err(|e| invalid("SIS part", e))?
        }
    };
    if to_u64(out.len()) != part.size {
        return Err(invalid(
            "SIS part",
            format_args!(
                "{}: encoded size {} != expected {} (stored {} bytes)",
                part.path,
                out.len(),
                part.size,
                stored.len()
            ),
        ));
    }
    Ok(out)
}

/// Decode a part's text from the full message back to its stored bytes, and
/// check that [`encode_part`] reproduces the text bit-exactly.
pub(crate) fn decode_part(part: &SisPart, text: &[u8]) -> Result<Vec<u8>> {
    let stored = match part.base64_line_len {
        None => text.to_vec(),
        Some(_) => {
            let compact: Vec<u8> = text
                .iter()
                .copied()
                .filter(|&c| c != b'\n' && c != b'\r')
                .collect();
            B64.decode(&compact).map_err(|e| {
                invalid(
                    "SIS part",
                    format_args!("{}: invalid base64: {e}", part.path),
                )
            })?
        }
    };
    let again = encode_part(part, &stored)?;
    if again != text {
        return Err(invalid(
            "SIS part",
            format_args!(
                "{}: text does not re-encode bit-exactly with its options",
                part.path
            ),
        ));
    }
    Ok(stored)
}

/// The parts (format 1.2) of a message Dovecot stored with its attachments outside: ranges
/// of the dbox body (`body_len` bytes) between the attachments, and the attachments as
/// blobs with their stored lengths and SHA-256 (`blobs`, in part order).
///
/// # Errors
/// Overlapping or malformed parts, a part that starts beyond the body.
pub fn layout(
    parts: &[SisPart],
    body_len: u64,
    blobs: impl IntoIterator<Item = (String, u64)>,
) -> Result<Vec<crate::model::Part>> {
    use crate::mime::parts::{blob, range};
    validate_parts(parts)?;
    let mut out = Vec::with_capacity(parts.len() * 2 + 1);
    let (mut data_off, mut full_off) = (0u64, 0u64);
    for (p, (sha, len)) in parts.iter().zip(blobs) {
        let gap = p.start.saturating_sub(full_off);
        if gap > 0 {
            out.push(range(data_off, gap));
            data_off += gap;
        }
        if data_off > body_len {
            return Err(invalid(
                "SIS parts",
                format_args!(
                    "{}: start {} beyond the end of the body ({body_len} bytes)",
                    p.path, p.start
                ),
            ));
        }
        out.push(blob(sha, len, p.base64_line_len, p.crlf));
        full_off = p.start + p.size;
    }
    if body_len > data_off {
        out.push(range(data_off, body_len - data_off));
    }
    Ok(out)
}

/// Rebuild the full message from the dbox body and the attachments
/// (`fetch(part)` returns the stored file bytes), through [`layout`] and the archive's own
/// assembly ([`crate::mime::parts::assemble`]). Writes to `out`; returns the bytes
/// written, which equal the body plus each part's `size`, as Dovecot counted them.
///
/// # Errors
/// Malformed parts, a stored attachment whose text is not `size` bytes, `fetch` and
/// write errors.
#[cfg(test)] // used by the tests only (the store reads and writes without it)
pub(crate) fn rebuild(
    body: &[u8],
    parts: &[SisPart],
    fetch: &mut dyn FnMut(&SisPart) -> Result<Vec<u8>>,
    out: &mut dyn std::io::Write,
) -> Result<u64> {
    let blobs = parts.iter().map(&mut *fetch).collect::<Result<Vec<_>>>()?;
    let lay = layout(
        parts,
        to_u64(body.len()),
        blobs.iter().map(|b| (String::new(), to_u64(b.len()))),
    )?;
    let full =
        crate::mime::parts::assemble(&lay, body, &blobs).map_err(|e| invalid("SIS rebuild", e))?;
    let want = parts
        .iter()
        .fold(to_u64(body.len()), |a, p| a.saturating_add(p.size));
    if to_u64(full.len()) != want {
        return Err(invalid(
            "SIS rebuild",
            format_args!(
                "the attachments give {} bytes, their references {want}",
                full.len()
            ),
        ));
    }
    out.write_all(&full)?;
    Ok(to_u64(full.len()))
}

/// Inverse of [`rebuild`], for restoring into a SIS store: given the full
/// message and the parts, return the dbox body (encoded part text removed) and
/// each part's stored (decoded) bytes. Errors if a part lies outside the message
/// or its text does not re-encode bit-exactly with its options.
pub fn extract(full: &[u8], parts: &[SisPart]) -> Result<(Vec<u8>, Vec<Vec<u8>>)> {
    validate_parts(parts)?;
    let total: u64 = parts.iter().fold(0u64, |a, p| a.saturating_add(p.size));
    let mut body = Vec::with_capacity(
        full.len()
            .saturating_sub(usize::try_from(total).unwrap_or(0)),
    );
    let mut stored = Vec::with_capacity(parts.len());
    let mut pos = 0usize;
    for p in parts {
        let start = to_usize(p.start, "SIS extract")?;
        let end = to_usize(p.size, "SIS extract")
            .ok()
            .and_then(|s| start.checked_add(s))
            .filter(|&e| e <= full.len() && start >= pos)
            .ok_or_else(|| {
                invalid(
                    "SIS extract",
                    format_args!(
                        "{}: part {}+{} outside message of {} bytes",
                        p.path,
                        p.start,
                        p.size,
                        full.len()
                    ),
                )
            })?;
        body.extend_from_slice(full.get(pos..start).unwrap_or_default());
        stored.push(decode_part(p, full.get(start..end).unwrap_or_default())?);
        pos = end;
    }
    body.extend_from_slice(full.get(pos..).unwrap_or_default());
    Ok((body, stored))
}

/// SIS file name on disk: sdbox appends `-<mailbox guid hex>-<uid>` to the `X`
/// path; mdbox uses the `X` path as is.
pub(crate) fn sdbox_attachment_name(path: &str, mailbox_guid: &str, uid: u32) -> String {
    format!("{path}-{mailbox_guid}-{uid}")
}

/// The `hashes/<hash>` link path for an `X` path (e.g. `52/12/5212a6…-<guid>` →
/// `52/12/hashes/5212a6…`), as fs-sis computes it: the directory of the path plus
/// `hashes/` plus the file name up to its first `-`. `None` if the file name has
/// no `-` or an empty hash. Works on sdbox on-disk names too (the suffix follows
/// a later `-`).
pub(crate) fn hash_link_path(path: &str) -> Option<String> {
    let (dir, fname) = match path.rfind('/') {
        Some(i) => (path.get(..i)?, path.get(i + 1..)?),
        None => ("", path),
    };
    let hash = fname.get(..fname.find('-')?)?;
    if hash.is_empty() {
        return None;
    }
    Some(if dir.is_empty() {
        format!("hashes/{hash}")
    } else {
        format!("{dir}/hashes/{hash}")
    })
}

/// Where a restore writes the attachment whose `X` path is `path` (of message `uid` in the
/// mailbox `mailbox_guid`) below the attachment directory, and the `hashes/` link it also
/// makes: sdbox appends `-<mailbox guid>-<uid>` ([`sdbox_attachment_name`]); Dovecot 2.3
/// links each file from `hashes/` ([`hash_link_path`]), 2.4 does not.
pub(crate) fn attachment_names(
    layout: crate::store::location::AttachmentLayout,
    sdbox: bool,
    path: &str,
    mailbox_guid: &str,
    uid: u32,
) -> (String, Option<String>) {
    use crate::store::location::AttachmentLayout;
    let name = if sdbox {
        sdbox_attachment_name(path, mailbox_guid, uid)
    } else {
        path.to_string()
    };
    let link = match layout {
        AttachmentLayout::Dovecot23 => hash_link_path(path),
        AttachmentLayout::Dovecot24 => None,
    };
    (name, link)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachment_names_per_layout() {
        use crate::store::location::AttachmentLayout::{Dovecot23, Dovecot24};
        let x = "e9/dd/e9dd00-0011";
        assert_eq!(
            attachment_names(Dovecot23, true, x, "mb", 7),
            (
                "e9/dd/e9dd00-0011-mb-7".to_string(),
                Some("e9/dd/hashes/e9dd00".to_string())
            )
        );
        assert_eq!(
            attachment_names(Dovecot24, true, x, "mb", 7),
            ("e9/dd/e9dd00-0011-mb-7".to_string(), None)
        );
        assert_eq!(
            attachment_names(Dovecot24, false, x, "mb", 7),
            (x.to_string(), None)
        );
    }

    fn sample_file() -> Vec<u8> {
        let mut f = file_header(0x6b0ac8b3);
        f.extend(message_bytes(
            b"Subject: a\n\nbody\n",
            &[
                (b'R', b"65928d25".to_vec()),
                (b'V', b"13".to_vec()),
                (b'G', b"abc".to_vec()),
            ],
        ));
        f.extend(message_bytes(
            b"x",
            &[
                (b'Z', b"1187".to_vec()),
                (b'R', b"1".to_vec()),
                (b'O', b"26".to_vec()),
                (b'X', b"1 4 B4 52/12/5212-aa".to_vec()),
                (b'Q', b"unknown".to_vec()),
            ],
        ));
        f
    }

    #[test]
    fn header_roundtrip() {
        let h = file_header(0x6b0ac8b3);
        assert_eq!(h, b"2 M1e C6b0ac8b3\n");
        let p = parse_file_header(&h).unwrap();
        assert_eq!(
            p,
            FileHeader {
                version: 2,
                msg_header_size: 30,
                create_stamp: 0x6b0ac8b3,
                len: 16
            }
        );
        assert!(parse_file_header(b"2 C1\n").is_err());
        assert!(parse_file_header(b"3 M1e\n").is_err());
        assert!(parse_file_header(b"2 M1e C1").is_err());
        assert!(parse_file_header(b"2 M1g\n").is_err());
        assert!(parse_file_header(b"2 M1d\n").is_err());
        assert_eq!(parse_file_header(b"1 A0 M1e\n").unwrap().version, 1);
    }

    #[test]
    fn parse_sample() {
        let f = sample_file();
        let (h, msgs) = parse_all(&f).unwrap();
        assert_eq!(h.len, 16);
        assert_eq!(msgs.len(), 2);
        let m = &msgs[0];
        assert_eq!(m.offset, 16);
        assert_eq!(m.body_offset, 46);
        assert_eq!(m.body(&f).unwrap(), b"Subject: a\n\nbody\n");
        assert_eq!(m.received(), Some(0x65928d25));
        assert_eq!(m.virtual_size(), Some(0x13));
        assert_eq!(m.guid(), Some(&b"abc"[..]));
        assert_eq!(m.save_time(), None);
        assert_eq!(m.physical_size(), None);
        assert!(m.sis_parts().unwrap().is_empty());
        let m2 = &msgs[1];
        assert_eq!(m2.offset, m.offset + m.size);
        assert_eq!(m2.offset + m2.size, f.len() as u64);
        assert_eq!(m2.pop3_order(), Some(26));
        assert_eq!(m2.physical_size(), Some(0x1187));
        assert_eq!(m2.get(b'Q'), Some(&b"unknown"[..]));
        assert_eq!(m2.sis_parts().unwrap().len(), 1);
        // message_bytes reproduces every message
        for m in &msgs {
            let o = m.offset as usize;
            assert_eq!(
                message_bytes(m.body(&f).unwrap(), &m.meta),
                &f[o..o + m.size as usize]
            );
        }
    }

    #[test]
    fn space_terminated_metadata() {
        let mut f = file_header(1);
        let mut m = message_bytes(b"ab", &[(b'G', b"x".to_vec())]);
        m.pop();
        m.extend_from_slice(b"   \n");
        f.extend(&m);
        let (_, msgs) = parse_all(&f).unwrap();
        assert_eq!(msgs[0].size as usize, m.len());
    }

    #[test]
    fn truncation_never_panics() {
        let f = sample_file();
        let (_, msgs) = parse_all(&f).unwrap();
        let boundaries: Vec<usize> = std::iter::once(16)
            .chain(msgs.iter().map(|m| (m.offset + m.size) as usize))
            .collect();
        for n in 0..f.len() {
            let r = parse_all(&f[..n]);
            if boundaries.contains(&n) {
                assert!(r.is_ok(), "cut at {n}");
            } else {
                let e = r.unwrap_err();
                assert_eq!(e.kind(), io::ErrorKind::InvalidData, "cut at {n}");
            }
        }
    }

    #[test]
    fn bitflips_never_panic() {
        let f = sample_file();
        for i in 0..f.len() {
            for bit in 0..8 {
                let mut g = f.clone();
                g[i] ^= 1 << bit;
                if let Ok((h, ms)) = parse_all(&g) {
                    for m in &ms {
                        let _ = m.sis_parts();
                        let _ = m.received();
                        let _ = m.body(&g);
                        let _ = parse_message_at(&g, &h, m.offset.wrapping_add(7));
                    }
                }
            }
        }
        // arbitrary offsets
        let h = parse_file_header(&f).unwrap();
        for off in [0, 1, 15, 17, u64::MAX, u64::MAX - 3, f.len() as u64] {
            assert!(parse_message_at(&f, &h, off).is_err());
        }
        let huge = FileHeader {
            version: 2,
            msg_header_size: u32::MAX,
            create_stamp: 0,
            len: 16,
        };
        assert!(parse_message_at(&f, &huge, 16).is_err());
    }

    #[test]
    fn huge_size_field() {
        let mut f = file_header(1);
        f.extend_from_slice(b"\x01\x02N          FFFFFFFFFFFFFFFF\n");
        assert!(parse_all(&f).is_err());
        let mut g = file_header(1);
        g.extend_from_slice(b"\x01\x02N          00000000000000zz\n");
        assert!(parse_all(&g).is_err());
    }

    #[test]
    fn x_grammar() {
        let v = b"424 4052 B76 52/12/5212a6-4e04 5000 10 - 61/ce/61ce-1 6000 8 CB72 aa/bb/aabb-2";
        let p = parse_x(v).unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(
            p[0],
            SisPart {
                start: 424,
                size: 4052,
                base64_line_len: Some(76),
                crlf: false,
                path: "52/12/5212a6-4e04".into()
            }
        );
        assert_eq!(p[1].base64_line_len, None);
        assert!(!p[1].crlf);
        assert_eq!(p[2].base64_line_len, Some(72));
        assert!(p[2].crlf);
        assert_eq!(format_x(&p), v.to_vec());
        // Dovecot accepts B before C and repeated options, formats C first.
        let q = parse_x(b"0 5 B8C p-1").unwrap();
        assert_eq!(format_x(&q), b"0 5 CB8 p-1".to_vec());
        assert_eq!(parse_x(&format_x(&q)).unwrap(), q);
        // C alone round-trips
        let c = parse_x(b"0 5 C p-1").unwrap();
        assert_eq!(c[0].base64_line_len, None);
        assert!(c[0].crlf);
        assert_eq!(format_x(&c), b"0 5 C p-1".to_vec());
        // empty options field is "no options" in Dovecot
        assert_eq!(parse_x(b"0 5  p-1").unwrap()[0].base64_line_len, None);
        // touching parts are fine
        assert!(parse_x(b"0 5 - a-1 5 5 - b-1").is_ok());
        for bad in [
            &b""[..],
            b"1 2 B76",
            b"1 2 B76 p 3",
            b"x 2 - p",
            b"1 -2 - p",
            b"+1 2 - p",
            b"1 2 B0 p",
            b"1 2 B75 p",
            b"1 2 B p",
            b"1 2 -- p",
            b"1 2 -B4 p",
            b"1 2 Q p",
            b"1 2 B99999999999 p",
            b"1 2 - ",
            b"10 5 - a 12 1 - b",
            b"18446744073709551615 1 - a",
            b"18446744073709551616 1 - a",
            b"1 2 - p\n",
            b"1 2 - \xff",
            b"1 2 - p ",
        ] {
            assert!(parse_x(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn encode_rebuild_extract() {
        let data: Vec<u8> = (0..1001u32).map(|i| (i * 7 % 251) as u8).collect();
        for (n, crlf) in [
            (76u32, false),
            (76, true),
            (64, false),
            (4, true),
            (2000, false),
        ] {
            let sep = if crlf { "\r\n" } else { "\n" };
            let enc = B64.encode(&data);
            let lines: Vec<&str> = enc
                .as_bytes()
                .chunks(n as usize)
                .map(|c| std::str::from_utf8(c).unwrap())
                .collect();
            let text = lines.join(sep);
            let prefix = b"Header: x\n\n--b\nContent-Type: a/b\n\n".to_vec();
            let mut full = prefix.clone();
            full.extend_from_slice(text.as_bytes());
            full.extend_from_slice(b"\n--b--\n");
            let part = SisPart {
                start: prefix.len() as u64,
                size: text.len() as u64,
                base64_line_len: Some(n),
                crlf,
                path: "aa/bb/aabb-1".into(),
            };
            let (body, stored) = extract(&full, std::slice::from_ref(&part)).unwrap();
            assert_eq!(stored[0], data);
            assert_eq!(body.len() + text.len(), full.len());
            let mut out = Vec::new();
            let w = rebuild(
                &body,
                std::slice::from_ref(&part),
                &mut |_| Ok(data.clone()),
                &mut out,
            )
            .unwrap();
            assert_eq!(out, full);
            assert_eq!(w as usize, full.len());
            // wrong options -> extract refuses
            let wrong = SisPart {
                crlf: !crlf,
                ..part.clone()
            };
            if lines.len() > 1 {
                assert!(extract(&full, std::slice::from_ref(&wrong)).is_err());
            }
            // wrong stored data size -> rebuild refuses
            assert!(
                rebuild(
                    &body,
                    std::slice::from_ref(&part),
                    &mut |_| Ok(data[3..].to_vec()),
                    &mut Vec::new()
                )
                .is_err()
            );
        }
        // raw part
        let full = b"abcdefghij".to_vec();
        let part = SisPart {
            start: 2,
            size: 3,
            base64_line_len: None,
            crlf: false,
            path: "x-1".into(),
        };
        let (body, stored) = extract(&full, std::slice::from_ref(&part)).unwrap();
        assert_eq!(body, b"abfghij");
        assert_eq!(stored[0], b"cde");
        let mut out = Vec::new();
        rebuild(
            &body,
            std::slice::from_ref(&part),
            &mut |_| Ok(b"cde".to_vec()),
            &mut out,
        )
        .unwrap();
        assert_eq!(out, full);
        // part beyond the body / message
        let far = SisPart {
            start: 100,
            ..part.clone()
        };
        assert!(
            rebuild(
                &body,
                std::slice::from_ref(&far),
                &mut |_| Ok(b"cde".to_vec()),
                &mut Vec::new()
            )
            .is_err()
        );
        assert!(extract(&full, &[far]).is_err());
        // non-canonical base64 (trailing bits) is refused
        let p = SisPart {
            start: 0,
            size: 4,
            base64_line_len: Some(76),
            crlf: false,
            path: "x-1".into(),
        };
        assert!(extract(b"QQ==", std::slice::from_ref(&p)).is_ok());
        assert!(extract(b"QR==", &[p]).is_err());
    }

    #[test]
    fn names() {
        assert_eq!(
            sdbox_attachment_name("52/12/abc-def", "0011", 3),
            "52/12/abc-def-0011-3"
        );
        assert_eq!(
            hash_link_path("52/12/5212a6-4e04").as_deref(),
            Some("52/12/hashes/5212a6")
        );
        assert_eq!(
            hash_link_path("52/12/5212a6-4e04-0011-3").as_deref(),
            Some("52/12/hashes/5212a6")
        );
        assert_eq!(hash_link_path("abc-1").as_deref(), Some("hashes/abc"));
        assert_eq!(hash_link_path("52/12/nodash"), None);
        assert_eq!(hash_link_path("52/12/-x"), None);
        assert!(is_safe_relative_path("52/12/abc-1"));
        assert!(!is_safe_relative_path("../x"));
        assert!(!is_safe_relative_path("/etc/passwd"));
        assert!(!is_safe_relative_path("a//b"));
    }
}
