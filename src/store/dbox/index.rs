//! Reader and writer for Dovecot's mail index files.
//!
//! A Dovecot mail index consists of `dovecot.index` (a snapshot: base header, extension
//! headers and fixed-size message records) and `dovecot.index.log` (a transaction log whose
//! records are replayed on top of the snapshot; `dovecot.index.log.2` is the previous, rotated
//! log). The same format is used for the mdbox map index `storage/dovecot.map.index`.
//!
//! [`MailIndex::read`] loads the snapshot (if any) and replays the log(s) the way Dovecot 2.3
//! does, producing the current UID list, flags, keywords, extension data and modseqs.
//! [`write_index`] produces a fresh, self-contained `dovecot.index` (no log, no cache) that
//! Dovecot accepts as is.
//!
//! All integers are little-endian; files without the little-endian compat flag are refused.
//! No input can make this module panic: malformed input gives an `InvalidData` error, or the
//! replay stops at the point where Dovecot itself would stop (an unfinished transaction or a
//! zero-sized record at the end of the log).

use std::fmt::Display;
use std::io;
use std::path::Path;

/// Result type of this module. Format errors are `io::ErrorKind::InvalidData` errors whose
/// message names the file and the offset of the problem.
pub type Result<T> = std::io::Result<T>;

/// Size of the base header written by Dovecot 2.3 (and the minimum accepted).
const BASE_HEADER_SIZE: usize = 120;
/// Smallest index record: `u32 uid` + `u8 flags`; extension data may start here.
const RECORD_MIN_SIZE: u32 = 5;
/// Size of the index record without extensions, as written (`uid`, `flags`, padding).
const RECORD_BASE_SIZE: u32 = 8;
/// `compat_flags` bit for little-endian files.
const COMPAT_LITTLE_ENDIAN: u8 = 1;
/// Largest extension header accepted from a log ext-intro (garbage protection).
const MAX_EXT_HDR_SIZE: u32 = 16 * 1024 * 1024;

/// Offset of `uid_validity` in the base header.
const HDR_UID_VALIDITY: usize = 24;
/// Offset of `next_uid` in the base header.
const HDR_NEXT_UID: usize = 28;

/// Whether `typ` (with its flag bits) is a record type Dovecot 2.3 writes.
fn known_record_type(typ: u32) -> bool {
    matches!(
        typ & TYPE_MASK & !0x2000_0000,
        T_EXPUNGE
            | T_EXPUNGE_PROT
            | T_APPEND
            | T_FLAG_UPDATE
            | T_HEADER_UPDATE
            | T_EXT_INTRO
            | T_EXT_RESET
            | T_EXT_HDR_UPDATE
            | T_EXT_REC_UPDATE
            | T_KEYWORD_UPDATE
            | T_KEYWORD_RESET
            | T_EXT_ATOMIC_INC
            | T_EXPUNGE_GUID
            | T_EXPUNGE_GUID_PROT
            | T_MODSEQ_UPDATE
            | T_EXT_HDR_UPDATE32
            | T_INDEX_DELETED
            | T_INDEX_UNDELETED
            | T_BOUNDARY
            | T_ATTRIBUTE_UPDATE
    )
}

// Log record types (after masking with TYPE_MASK).
const TYPE_MASK: u32 = 0x0fff_ffff;
const T_EXTERNAL: u32 = 0x1000_0000;
const T_EXPUNGE: u32 = 0x0001;
const T_EXPUNGE_PROT: u32 = 0x0001 | 0xcd90;
const T_APPEND: u32 = 0x0002;
const T_FLAG_UPDATE: u32 = 0x0004;
const T_HEADER_UPDATE: u32 = 0x0020;
const T_EXT_INTRO: u32 = 0x0040;
const T_EXT_RESET: u32 = 0x0080;
const T_EXT_HDR_UPDATE: u32 = 0x0100;
const T_EXT_REC_UPDATE: u32 = 0x0200;
const T_KEYWORD_UPDATE: u32 = 0x0400;
const T_KEYWORD_RESET: u32 = 0x0800;
const T_EXT_ATOMIC_INC: u32 = 0x1000;
const T_EXPUNGE_GUID: u32 = 0x2000;
const T_EXPUNGE_GUID_PROT: u32 = 0x2000 | 0xcd90;
const T_MODSEQ_UPDATE: u32 = 0x8000;
const T_EXT_HDR_UPDATE32: u32 = 0x1_0000;
const T_INDEX_DELETED: u32 = 0x2_0000;
const T_INDEX_UNDELETED: u32 = 0x4_0000;
const T_BOUNDARY: u32 = 0x8_0000;
const T_ATTRIBUTE_UPDATE: u32 = 0x10_0000;

/// Flag bits that count as a real (modseq-raising) flag change.
const FLAGS_MASK: u8 = 0x3f;
/// `\Deleted`.
const FLAG_DELETED: u8 = 0x04;
/// `\Seen`.
const FLAG_SEEN: u8 = 0x08;
/// ext-intro flag: do not shrink an existing extension.
const EXT_INTRO_NO_SHRINK: u16 = 0x01;

const EXT_KEYWORDS: &str = "keywords";
const EXT_MODSEQ: &str = "modseq";

/// One extension as known after reading (index header order = ext_id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ext {
    /// Extension name, e.g. `dbox-hdr`, `keywords`, `map`, `ref`.
    pub name: String,
    /// Extension header data (`hdr_size` bytes).
    pub hdr: Vec<u8>,
    /// Offset of this extension's data inside an index record (0 when `record_size` is 0).
    pub record_offset: u16,
    /// Size of this extension's per-record data (0 = header-only extension).
    pub record_size: u16,
    /// Alignment of the per-record data.
    pub record_align: u16,
    /// Reset id: for the `cache` extension, the `file_seq` of the cache file its
    /// record offsets point into.
    pub reset_id: u32,
}

/// One message record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Message UID.
    pub uid: u32,
    /// Raw flag byte; callers mask 0x1f (0x01 Answered, 0x02 Flagged, 0x04 Deleted,
    /// 0x08 Seen, 0x10 Draft).
    pub flags: u8,
    /// Keyword indexes (into [`MailIndex::keywords`]), sorted.
    pub keywords: Vec<u32>,
    /// Modseq of the last change (0 when unknown).
    pub modseq: u64,
    /// Per ext_id record data. After reading, every extension with `record_size > 0` has
    /// `Some` data of exactly `record_size` bytes; header-only extensions have `None`.
    ext: Vec<Option<Vec<u8>>>,
}

/// The state of an index after replaying the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailIndex {
    /// Index id (creation time); index and log must agree on it.
    pub indexid: u32,
    /// UIDVALIDITY of the mailbox (or of the map, for `dovecot.map.index`).
    pub uid_validity: u32,
    /// Next UID to be assigned.
    pub next_uid: u32,
    /// Highest modseq as Dovecot reports it (0 when modseqs are not tracked).
    pub highest_modseq: u64,
    /// Extensions, in ext_id order.
    pub exts: Vec<Ext>,
    /// Keyword names in index order.
    pub keywords: Vec<Vec<u8>>,
    /// Records sorted by uid, expunged ones removed.
    pub records: Vec<Record>,
}

/// What to write as a fresh, self-contained dovecot.index (no log, no cache).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewIndex {
    /// UIDVALIDITY to store.
    pub uid_validity: u32,
    /// Next UID; must be greater than every record's uid.
    pub next_uid: u32,
    /// Index id, e.g. the current unix time.
    pub indexid: u32,
    /// Extensions, written in this order (the `keywords` extension is added by the writer
    /// after them when `keywords` is non-empty; it must not be listed here).
    pub exts: Vec<NewExt>,
    /// Keyword names; a record's keyword `i` refers to `keywords[i]`.
    pub keywords: Vec<Vec<u8>>,
    /// Records; must be sorted by uid, strictly increasing, uid > 0 (error otherwise).
    pub records: Vec<NewRecord>,
    /// HIGHESTMODSEQ: when set, the `modseq` extension is written (header and each
    /// record's [`NewRecord::modseq`]), and the empty log to write with the index
    /// ([`write_log_header`]) starts at this modseq.
    pub highest_modseq: Option<u64>,
}

/// One extension to write.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewExt {
    /// Extension name (non-empty, unique, not `keywords`).
    pub name: String,
    /// Header data.
    pub hdr: Vec<u8>,
    /// Per-record data size (0 = header only).
    pub record_size: u16,
    /// Per-record alignment (1, 2, 4 or 8 when `record_size > 0`; `record_size` must be a
    /// multiple of it). Ignored when `record_size` is 0.
    pub record_align: u16,
    /// Reset id (the `cache` extension: the cache file's `file_seq`; 0 otherwise).
    pub reset_id: u32,
}

/// One record to write.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewRecord {
    /// Message UID (> 0).
    pub uid: u32,
    /// Raw flag byte (normally only bits 0x1f).
    pub flags: u8,
    /// Keyword indexes into [`NewIndex::keywords`].
    pub keywords: Vec<u32>,
    /// Per [`NewExt`], same order; each length must equal its `record_size` (empty when
    /// `record_size` is 0).
    pub ext: Vec<Vec<u8>>,
    /// MODSEQ, written when [`NewIndex::highest_modseq`] is set (0: the highest).
    pub modseq: u64,
}

// ---------------------------------------------------------------------------------------
// small helpers

fn bad(file: &str, msg: impl Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{file}: {msg}"))
}

fn get_u16(buf: &[u8], off: usize) -> Option<u16> {
    let b = buf.get(off..off.checked_add(2)?)?;
    Some(u16::from_le_bytes([b[0], b[1]]))
}

fn get_u32(buf: &[u8], off: usize) -> Option<u32> {
    let b = buf.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn get_u64(buf: &[u8], off: usize) -> Option<u64> {
    let b = buf.get(off..off.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Some(u64::from_le_bytes(a))
}

fn put_u32(buf: &mut [u8], off: usize, v: u32) {
    if let Some(b) = off.checked_add(4).and_then(|end| buf.get_mut(off..end)) {
        b.copy_from_slice(&v.to_le_bytes());
    }
}

fn align_up(v: usize, to: usize) -> Option<usize> {
    if to <= 1 {
        return Some(v);
    }
    let rem = v % to;
    if rem == 0 {
        Some(v)
    } else {
        v.checked_add(to - rem)
    }
}

/// Decode the size field of a log record header: the 4 bytes read as a big-endian u32 `v`
/// must have all of 0x80808080 set; the size is the 4 remaining 7-bit groups shifted left by
/// 2. Returns 0 (= end of data) when the marker bits are missing.
pub fn decode_log_record_size(raw: [u8; 4]) -> u32 {
    let v = u32::from_be_bytes(raw);
    if v & 0x8080_8080 != 0x8080_8080 {
        return 0;
    }
    ((v & 0x7f) | ((v >> 8) & 0x7f) << 7 | ((v >> 16) & 0x7f) << 14 | ((v >> 24) & 0x7f) << 21) << 2
}

/// Encode a log record size (a multiple of 4, below 2^30) into its on-disk bytes; the
/// inverse of [`decode_log_record_size`]. Returns `None` for sizes that cannot be encoded.
pub fn encode_log_record_size(size: u32) -> Option<[u8; 4]> {
    if !size.is_multiple_of(4) || size >= 1 << 30 {
        return None;
    }
    let s = size >> 2;
    let v = 0x8080_8080
        | (s & 0x7f)
        | ((s >> 7) & 0x7f) << 8
        | ((s >> 14) & 0x7f) << 16
        | ((s >> 21) & 0x7f) << 24;
    Some(v.to_be_bytes())
}

/// Compute record offsets the way Dovecot does (largest alignment first, filling holes),
/// starting after `uid` + `flags`. Returns the resulting record size. `items` holds
/// `(record_size, record_align)`; offsets are written to `out` (0 for size-0 entries).
fn layout_records(items: &[(u16, u16)], out: &mut [u16]) -> Option<u32> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by(|&a, &b| {
        let aa = items.get(a).map_or(0, |i| i.1);
        let ab = items.get(b).map_or(0, |i| i.1);
        ab.cmp(&aa)
    });
    let mut placed = vec![false; items.len()];
    let mut offset: u32 = RECORD_MIN_SIZE;
    let mut max_align: u32 = 4;
    loop {
        let mut min_align: u32 = u32::MAX;
        let mut chosen = None;
        for &i in &order {
            let (size, align) = *items.get(i)?;
            let align = u32::from(align.max(1));
            max_align = max_align.max(align);
            if size == 0 || *placed.get(i)? {
                continue;
            }
            if offset.is_multiple_of(align) {
                chosen = Some(i);
                break;
            }
            min_align = min_align.min(align);
        }
        match chosen {
            Some(i) => {
                *placed.get_mut(i)? = true;
                *out.get_mut(i)? = u16::try_from(offset).ok()?;
                offset = offset.checked_add(u32::from(items.get(i)?.0))?;
            }
            None if min_align == u32::MAX => break,
            None => offset = offset.checked_add(min_align - offset % min_align)?,
        }
        if offset >= u32::from(u16::MAX) {
            return None;
        }
    }
    for (i, &(size, _)) in items.iter().enumerate() {
        if size == 0 {
            *out.get_mut(i)? = 0;
        }
    }
    let offset = offset.max(RECORD_BASE_SIZE);
    let rem = offset % max_align;
    let size = if rem == 0 {
        offset
    } else {
        offset.checked_add(max_align - rem)?
    };
    if size > u32::from(u16::MAX) {
        return None;
    }
    Some(size)
}

/// Serialize the `keywords` extension header.
fn keywords_hdr(keywords: &[Vec<u8>]) -> Vec<u8> {
    let mut hdr = Vec::new();
    hdr.extend_from_slice(&(keywords.len() as u32).to_le_bytes());
    let mut name_off: u32 = 0;
    for k in keywords {
        hdr.extend_from_slice(&0u32.to_le_bytes());
        hdr.extend_from_slice(&name_off.to_le_bytes());
        name_off = name_off.wrapping_add(k.len() as u32).wrapping_add(1);
    }
    for k in keywords {
        hdr.extend_from_slice(k);
        hdr.push(0);
    }
    hdr
}

/// Parse the `keywords` extension header into names.
fn parse_keywords_hdr(file: &str, hdr: &[u8]) -> Result<Vec<Vec<u8>>> {
    if hdr.is_empty() {
        return Ok(Vec::new());
    }
    let count = get_u32(hdr, 0).ok_or_else(|| bad(file, "keywords header too short"))?;
    let names_start = (count as usize)
        .checked_mul(8)
        .and_then(|v| v.checked_add(4))
        .filter(|&v| v <= hdr.len())
        .ok_or_else(|| bad(file, format!("keywords header: count {count} too large")))?;
    let names = hdr.get(names_start..).unwrap_or(&[]);
    let mut out = Vec::with_capacity(count as usize);
    for i in 0..count as usize {
        let off = get_u32(hdr, 4 + i * 8 + 4).unwrap_or(u32::MAX) as usize;
        let rest = names.get(off..).ok_or_else(|| {
            bad(
                file,
                format!("keywords header: name {i} offset {off} out of range"),
            )
        })?;
        let end = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| bad(file, format!("keywords header: name {i} not terminated")))?;
        out.push(rest.get(..end).unwrap_or(&[]).to_vec());
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// reader state

#[derive(Debug, Clone)]
struct ExtState {
    name: String,
    reset_id: u32,
    hdr: Vec<u8>,
    record_offset: u16,
    record_size: u16,
    record_align: u16,
}

/// The extension selected by the last ext-intro.
#[derive(Debug, Clone, Copy)]
enum CurExt {
    None,
    /// Broken or refused intro: ignore updates.
    Broken,
    Ext {
        idx: usize,
        rec_size: u16,
        ignore: bool,
    },
}

struct State {
    base: Vec<u8>,
    indexid: u32,
    exts: Vec<ExtState>,
    keywords: Vec<Vec<u8>>,
    records: Vec<Record>,
    highest_modseq: u64,
    layout_dirty: bool,
    cur: CurExt,
    /// The `modseq` extension exists: per-message modseqs are tracked.
    modseq_ext: bool,
}

/// Index file name used in error messages when none is known.
const DEFAULT_BASE: &str = "dovecot.index";

impl State {
    fn new_empty(indexid: u32) -> State {
        let mut base = vec![0u8; BASE_HEADER_SIZE];
        base[0] = 7;
        base[1] = 3;
        base[2..4].copy_from_slice(&(BASE_HEADER_SIZE as u16).to_le_bytes());
        base[12] = COMPAT_LITTLE_ENDIAN;
        put_u32(&mut base, 16, indexid);
        put_u32(&mut base, HDR_NEXT_UID, 1);
        State {
            base,
            indexid,
            exts: Vec::new(),
            keywords: Vec::new(),
            records: Vec::new(),
            highest_modseq: 0,
            layout_dirty: false,
            cur: CurExt::None,
            modseq_ext: false,
        }
    }

    fn next_uid(&self) -> u32 {
        get_u32(&self.base, HDR_NEXT_UID).unwrap_or(0)
    }

    /// Parse a dovecot.index file. Returns the state and `(log_file_seq, log_file_head_offset)`.
    // Parses dovecot.index in file order (base header, extension headers, keyword names,
    // records), every offset checked where it is used; split, the offsets would scatter.
    #[allow(clippy::too_many_lines)]
    fn from_index(file: &str, buf: &[u8]) -> Result<(State, u32, u32)> {
        let e = |m: String| bad(file, m);
        if buf.len() < BASE_HEADER_SIZE {
            return Err(e(format!("file too short ({} bytes)", buf.len())));
        }
        if buf[0] != 7 {
            return Err(e(format!(
                "unsupported major version {} at offset 0",
                buf[0]
            )));
        }
        if buf[12] & COMPAT_LITTLE_ENDIAN == 0 {
            return Err(e("compat_flags at offset 12 lack little-endian".into()));
        }
        let base_size = usize::from(get_u16(buf, 2).unwrap_or(0));
        let header_size = get_u32(buf, 4).unwrap_or(0) as usize;
        let record_size = get_u32(buf, 8).unwrap_or(0) as usize;
        let messages = get_u32(buf, 32).unwrap_or(0) as usize;
        if base_size < BASE_HEADER_SIZE || base_size > header_size {
            return Err(e(format!("bad base_header_size {base_size} at offset 2")));
        }
        if header_size > buf.len() {
            return Err(e(format!(
                "header_size {header_size} at offset 4 exceeds file size {}",
                buf.len()
            )));
        }
        if record_size < RECORD_BASE_SIZE as usize || record_size > usize::from(u16::MAX) {
            return Err(e(format!("bad record_size {record_size} at offset 8")));
        }
        let records_end = messages
            .checked_mul(record_size)
            .and_then(|v| v.checked_add(header_size))
            .filter(|&v| v <= buf.len())
            .ok_or_else(|| {
                e(format!(
                    "{messages} records of {record_size} bytes do not fit in {} bytes",
                    buf.len()
                ))
            })?;
        let indexid = get_u32(buf, 16).unwrap_or(0);
        let mut st = State::new_empty(indexid);
        st.base = buf.get(..base_size).unwrap_or(&[]).to_vec();

        // extension headers
        let mut off = align_up(base_size, 8).unwrap_or(usize::MAX);
        while off < header_size {
            let eh = buf
                .get(off..off.saturating_add(16))
                .filter(|_| off + 16 <= header_size)
                .ok_or_else(|| e(format!("truncated extension header at offset {off}")))?;
            let hdr_size = get_u32(eh, 0).unwrap_or(0) as usize;
            let reset_id = get_u32(eh, 4).unwrap_or(0);
            let rec_off = get_u16(eh, 8).unwrap_or(0);
            let rec_size = get_u16(eh, 10).unwrap_or(0);
            let rec_align = get_u16(eh, 12).unwrap_or(0);
            let name_size = usize::from(get_u16(eh, 14).unwrap_or(0));
            let name_start = off + 16;
            let name = buf
                .get(name_start..name_start + name_size)
                .filter(|_| name_start + name_size <= header_size && name_size > 0)
                .ok_or_else(|| e(format!("bad extension name at offset {name_start}")))?;
            let name = String::from_utf8_lossy(name).into_owned();
            let data_start = align_up(name_start + name_size, 8).unwrap_or(usize::MAX);
            let data_end = data_start
                .checked_add(hdr_size)
                .filter(|&v| v <= header_size)
                .ok_or_else(|| {
                    e(format!(
                        "extension {name:?} header data ({hdr_size} bytes at offset {data_start}) exceeds header_size"
                    ))
                })?;
            let hdr = buf.get(data_start..data_end).unwrap_or(&[]).to_vec();
            if rec_size > 0
                && (rec_align == 0
                    || usize::from(rec_off) < RECORD_MIN_SIZE as usize
                    || usize::from(rec_off) + usize::from(rec_size) > record_size)
            {
                return Err(e(format!(
                    "extension {name:?} at offset {off}: record offset {rec_off} size {rec_size} align {rec_align} invalid for record_size {record_size}"
                )));
            }
            st.exts.push(ExtState {
                name,
                reset_id,
                hdr,
                record_offset: if rec_size > 0 { rec_off } else { 0 },
                record_size: rec_size,
                record_align: rec_align,
            });
            off = align_up(data_end, 8).unwrap_or(usize::MAX);
        }

        // keywords
        st.modseq_ext = st.exts.iter().any(|x| x.name == EXT_MODSEQ);
        let kw_idx = st.exts.iter().position(|x| x.name == EXT_KEYWORDS);
        if let Some(k) = kw_idx {
            st.keywords = parse_keywords_hdr(file, &st.exts[k].hdr)?;
        }

        // records
        let recs = buf.get(header_size..records_end).unwrap_or(&[]);
        let mut prev_uid = 0u32;
        st.records.reserve(messages);
        for (i, r) in recs.chunks_exact(record_size).enumerate() {
            let uid = get_u32(r, 0).unwrap_or(0);
            if uid <= prev_uid {
                return Err(e(format!(
                    "record {i} at offset {}: uid {uid} not above previous uid {prev_uid}",
                    header_size + i * record_size
                )));
            }
            prev_uid = uid;
            let flags = r.get(4).copied().unwrap_or(0);
            let mut ext = Vec::with_capacity(st.exts.len());
            for x in &st.exts {
                if x.record_size == 0 {
                    ext.push(None);
                } else {
                    let s = usize::from(x.record_offset);
                    ext.push(r.get(s..s + usize::from(x.record_size)).map(<[u8]>::to_vec));
                }
            }
            let mut keywords = Vec::new();
            if let Some(k) = kw_idx
                && let Some(Some(bits)) = ext.get(k)
            {
                for (byte_i, &b) in bits.iter().enumerate() {
                    for bit in 0..8 {
                        if b & (1 << bit) != 0 {
                            let kw = (byte_i * 8 + bit) as u32;
                            if (kw as usize) < st.keywords.len() {
                                keywords.push(kw);
                            }
                        }
                    }
                }
            }
            st.records.push(Record {
                uid,
                flags,
                keywords,
                modseq: 0,
                ext,
            });
        }
        if prev_uid >= st.next_uid() {
            put_u32(&mut st.base, HDR_NEXT_UID, prev_uid.saturating_add(1));
        }
        let log_seq = get_u32(buf, 60).unwrap_or(0);
        let head_off = get_u32(buf, 68).unwrap_or(0);
        Ok((st, log_seq, head_off))
    }

    /// Index range of records with uid in `uid1..=uid2`.
    fn range(&self, uid1: u32, uid2: u32) -> std::ops::Range<usize> {
        let (a, b) = if uid1 <= uid2 {
            (uid1, uid2)
        } else {
            (uid2, uid1)
        };
        let start = self.records.partition_point(|r| r.uid < a);
        let end = self.records.partition_point(|r| r.uid <= b);
        start..end.max(start)
    }

    fn find(&self, uid: u32) -> Option<usize> {
        self.records.binary_search_by_key(&uid, |r| r.uid).ok()
    }

    /// Replay one log file. Records before `apply_from` are only used for modseq accounting.
    /// Per-message modseqs are tracked only while the `modseq` extension exists (as Dovecot).
    fn replay_log(&mut self, file: &str, log: &[u8], apply_from: usize) -> Result<()> {
        let lh = LogHeader::parse(file, log)?;
        let mut modseq = lh.initial_modseq;
        let track = lh.initial_modseq != 0;
        let mut pos = lh.hdr_size;
        if apply_from > log.len() {
            return Err(bad(
                file,
                format!(
                    "index points at offset {apply_from}, past the end of the log ({} bytes)",
                    log.len()
                ),
            ));
        }
        while let Some(raw) = log.get(pos..pos.saturating_add(4)) {
            let size = decode_log_record_size([raw[0], raw[1], raw[2], raw[3]]) as usize;
            if size == 0 {
                // The end of the data: zeros (space written ahead, or a write cut short).
                // Anything else here is damage, which must not silently end the replay.
                if log[pos..].iter().all(|&b| b == 0) {
                    break;
                }
                return Err(bad(
                    file,
                    format!("record at offset {pos}: not a record (damaged log)"),
                ));
            }
            if size < 8 {
                return Err(bad(
                    file,
                    format!("record at offset {pos}: size {size} too small"),
                ));
            }
            let typ = get_u32(log, pos + 4).unwrap_or(0);
            if let Some(t) = log.get(pos + 4..pos + 8)
                && !known_record_type(get_u32(t, 0).unwrap_or(0))
            {
                return Err(bad(
                    file,
                    format!(
                        "record at offset {pos}: unknown record type {:#x} (damaged log)",
                        get_u32(t, 0).unwrap_or(0)
                    ),
                ));
            }
            let Some(end) = pos.checked_add(size).filter(|&e| e <= log.len()) else {
                break; // the last record, partially written
            };
            let data = log.get(pos + 8..end).unwrap_or(&[]);
            let t = typ & TYPE_MASK;
            if t == T_BOUNDARY {
                let bsize = get_u32(data, 0)
                    .ok_or_else(|| bad(file, format!("boundary at offset {pos} too short")))?;
                if pos
                    .checked_add(bsize as usize)
                    .is_none_or(|e| e > log.len())
                {
                    break; // unfinished transaction
                }
            }
            if track {
                modseq = modseq_after(file, pos, typ, data, modseq)?;
            }
            // records before `apply_from` are already contained in dovecot.index (including
            // the per-message modseqs of its `modseq` extension); they only count for modseq
            if pos >= apply_from {
                self.apply(file, pos, typ, data, modseq)?;
            }
            pos = end;
        }
        if track {
            self.highest_modseq = self.highest_modseq.max(modseq);
        }
        Ok(())
    }

    fn modseq_update(&mut self, data: &[u8]) {
        for c in data.chunks_exact(12) {
            let uid = get_u32(c, 0).unwrap_or(0);
            let m =
                u64::from(get_u32(c, 4).unwrap_or(0)) | u64::from(get_u32(c, 8).unwrap_or(0)) << 32;
            if let Some(i) = self.find(uid) {
                let rec = &mut self.records[i];
                rec.modseq = rec.modseq.max(m);
            }
        }
    }

    fn cur_ext(&self, file: &str, pos: usize, what: &str) -> Result<Option<(usize, u16)>> {
        match self.cur {
            CurExt::None => Err(bad(
                file,
                format!("{what} at offset {pos} without ext-intro"),
            )),
            CurExt::Broken | CurExt::Ext { ignore: true, .. } => Ok(None),
            CurExt::Ext {
                idx,
                rec_size,
                ignore: false,
            } => Ok(Some((idx, rec_size))),
        }
    }

    fn check_multiple(file: &str, pos: usize, data: &[u8], unit: usize, what: &str) -> Result<()> {
        if !data.len().is_multiple_of(unit) {
            return Err(bad(
                file,
                format!(
                    "{what} at offset {pos}: data size {} not a multiple of {unit}",
                    data.len()
                ),
            ));
        }
        Ok(())
    }

    /// Apply one log record of type `typ` (at offset `pos` of `file`) to the state: one
    /// method per record kind.
    fn apply(&mut self, file: &str, pos: usize, typ: u32, data: &[u8], modseq: u64) -> Result<()> {
        let external = typ & T_EXTERNAL != 0;
        match typ & TYPE_MASK {
            T_APPEND => self.append(file, pos, data, modseq),
            T_EXPUNGE | T_EXPUNGE_PROT => self.expunge(file, pos, data, external),
            T_EXPUNGE_GUID | T_EXPUNGE_GUID_PROT => self.expunge_guid(file, pos, data, external),
            T_FLAG_UPDATE => self.flag_update(file, pos, data, modseq),
            T_HEADER_UPDATE => self.header_update(file, pos, data),
            T_EXT_INTRO => self.ext_intros(file, pos, data, modseq),
            T_EXT_RESET => self.ext_reset(file, pos, data),
            t @ (T_EXT_HDR_UPDATE | T_EXT_HDR_UPDATE32) => {
                self.ext_hdr_update(file, pos, data, t == T_EXT_HDR_UPDATE32)
            }
            T_EXT_REC_UPDATE => self.ext_rec_update(file, pos, data),
            T_EXT_ATOMIC_INC => self.ext_atomic_inc(file, pos, data),
            T_KEYWORD_UPDATE => self.keyword_update(file, pos, data, modseq),
            T_KEYWORD_RESET => self.keyword_reset(file, pos, data, modseq),
            T_MODSEQ_UPDATE => self.modseq_update_record(file, pos, data),
            T_INDEX_DELETED | T_INDEX_UNDELETED | T_BOUNDARY | T_ATTRIBUTE_UPDATE => Ok(()),
            other => Err(bad(
                file,
                format!("unknown record type {other:#x} at offset {pos}"),
            )),
        }
    }

    /// Append: new message records (UID and flags).
    fn append(&mut self, file: &str, pos: usize, data: &[u8], modseq: u64) -> Result<()> {
        Self::check_multiple(file, pos, data, 8, "append")?;
        for c in data.chunks_exact(8) {
            let uid = get_u32(c, 0).unwrap_or(0);
            let last = self.records.last().map_or(0, |r| r.uid);
            if uid == 0 || uid < self.next_uid() || uid <= last {
                continue; // Dovecot treats this as corruption and skips it
            }
            self.records.push(Record {
                uid,
                flags: c.get(4).copied().unwrap_or(0),
                keywords: Vec::new(),
                modseq: if self.modseq_ext { modseq } else { 0 },
                ext: vec![None; self.exts.len()],
            });
            put_u32(&mut self.base, HDR_NEXT_UID, uid.saturating_add(1));
        }
        Ok(())
    }

    /// Expunge: UID ranges removed (acted on only when `external`).
    fn expunge(&mut self, file: &str, pos: usize, data: &[u8], external: bool) -> Result<()> {
        Self::check_multiple(file, pos, data, 8, "expunge")?;
        if external {
            let mut gone = vec![false; self.records.len()];
            for c in data.chunks_exact(8) {
                let r = self.range(get_u32(c, 0).unwrap_or(0), get_u32(c, 4).unwrap_or(0));
                for g in gone.get_mut(r).unwrap_or(&mut []) {
                    *g = true;
                }
            }
            let mut it = gone.into_iter();
            self.records.retain(|_| !it.next().unwrap_or(false));
        }
        Ok(())
    }

    /// Expunge-guid: UIDs (with GUIDs) removed (acted on only when `external`).
    fn expunge_guid(&mut self, file: &str, pos: usize, data: &[u8], external: bool) -> Result<()> {
        Self::check_multiple(file, pos, data, 20, "expunge-guid")?;
        if external {
            let mut gone = vec![false; self.records.len()];
            for c in data.chunks_exact(20) {
                if let Some(i) = self.find(get_u32(c, 0).unwrap_or(0))
                    && let Some(g) = gone.get_mut(i)
                {
                    *g = true;
                }
            }
            let mut it = gone.into_iter();
            self.records.retain(|_| !it.next().unwrap_or(false));
        }
        Ok(())
    }

    /// Flag-update: flags added and removed on UID ranges.
    fn flag_update(&mut self, file: &str, pos: usize, data: &[u8], modseq: u64) -> Result<()> {
        Self::check_multiple(file, pos, data, 12, "flag-update")?;
        for c in data.chunks_exact(12) {
            let add = c.get(8).copied().unwrap_or(0);
            let remove = c.get(9).copied().unwrap_or(0);
            let internal = flag_update_is_internal(c);
            let r = self.range(get_u32(c, 0).unwrap_or(0), get_u32(c, 4).unwrap_or(0));
            for rec in self.records.get_mut(r).unwrap_or(&mut []) {
                rec.flags = (rec.flags & !remove) | add;
                if !internal && self.modseq_ext {
                    rec.modseq = modseq;
                }
            }
        }
        Ok(())
    }

    /// Header-update: bytes of the base header replaced (next UID never lowered).
    fn header_update(&mut self, file: &str, pos: usize, data: &[u8]) -> Result<()> {
        let mut i = 0usize;
        while i < data.len() {
            let off = get_u16(data, i);
            let size = get_u16(data, i + 2);
            let (Some(off), Some(size)) = (off, size) else {
                return Err(bad(
                    file,
                    format!("header-update at offset {pos}: truncated"),
                ));
            };
            let (off, size) = (usize::from(off), usize::from(size));
            let src = data.get(i + 4..i + 4 + size).ok_or_else(|| {
                bad(
                    file,
                    format!("header-update at offset {pos}: data past record end"),
                )
            })?;
            if off + size > self.base.len() {
                return Err(bad(
                    file,
                    format!("header-update at offset {pos}: {off}+{size} outside base header"),
                ));
            }
            let old_next = self.next_uid();
            if let Some(dst) = self.base.get_mut(off..off + size) {
                dst.copy_from_slice(src);
            }
            if self.next_uid() < old_next {
                put_u32(&mut self.base, HDR_NEXT_UID, old_next);
            }
            i = align_up(i + 4 + size, 4).unwrap_or(usize::MAX);
        }
        Ok(())
    }

    /// Ext-intro: the extensions the following ext records refer to.
    fn ext_intros(&mut self, file: &str, pos: usize, data: &[u8], modseq: u64) -> Result<()> {
        let mut i = 0usize;
        while i.saturating_add(20) <= data.len() {
            let ext_id = get_u32(data, i).unwrap_or(0);
            let reset_id = get_u32(data, i + 4).unwrap_or(0);
            let hdr_size = get_u32(data, i + 8).unwrap_or(0);
            let rec_size = get_u16(data, i + 12).unwrap_or(0);
            let rec_align = get_u16(data, i + 14).unwrap_or(0);
            let flags = get_u16(data, i + 16).unwrap_or(0);
            let name_size = usize::from(get_u16(data, i + 18).unwrap_or(0));
            let name = data.get(i + 20..i + 20 + name_size).ok_or_else(|| {
                bad(
                    file,
                    format!("ext-intro at offset {pos}: name past record end"),
                )
            })?;
            self.ext_intro(
                file, pos, ext_id, reset_id, hdr_size, rec_size, rec_align, flags, name, modseq,
            )?;
            i = align_up(i + 20 + name_size, 4).unwrap_or(usize::MAX);
        }
        Ok(())
    }

    /// Ext-reset: the current extension's reset id, its data cleared unless preserved.
    fn ext_reset(&mut self, file: &str, pos: usize, data: &[u8]) -> Result<()> {
        let new_reset_id = get_u32(data, 0)
            .ok_or_else(|| bad(file, format!("ext-reset at offset {pos}: too short")))?;
        let preserve = data.get(4).copied().unwrap_or(0) != 0;
        match self.cur {
            CurExt::None => {
                return Err(bad(
                    file,
                    format!("ext-reset at offset {pos} without ext-intro"),
                ));
            }
            CurExt::Broken => {}
            CurExt::Ext { idx, .. } => {
                if let Some(x) = self.exts.get_mut(idx) {
                    x.reset_id = new_reset_id;
                    if !preserve {
                        x.hdr.iter_mut().for_each(|b| *b = 0);
                        for rec in &mut self.records {
                            if let Some(d) = rec.ext.get_mut(idx) {
                                *d = None;
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Ext-hdr-update (`wide`: the 32-bit form): bytes of the current extension's header replaced.
    fn ext_hdr_update(&mut self, file: &str, pos: usize, data: &[u8], wide: bool) -> Result<()> {
        let hl = if wide { 8 } else { 4 };
        let mut i = 0usize;
        while i < data.len() {
            let (off, size) = if wide {
                (
                    get_u32(data, i).map(|v| v as usize),
                    get_u32(data, i + 4).map(|v| v as usize),
                )
            } else {
                (
                    get_u16(data, i).map(usize::from),
                    get_u16(data, i + 2).map(usize::from),
                )
            };
            let (Some(off), Some(size)) = (off, size) else {
                return Err(bad(
                    file,
                    format!("ext-hdr-update at offset {pos}: truncated"),
                ));
            };
            let src = (i + hl)
                .checked_add(size)
                .and_then(|e| data.get(i + hl..e))
                .ok_or_else(|| {
                    bad(
                        file,
                        format!("ext-hdr-update at offset {pos}: data past record end"),
                    )
                })?;
            if let Some((idx, _)) = self.cur_ext(file, pos, "ext-hdr-update")? {
                let hdr = self.exts.get_mut(idx).map(|x| &mut x.hdr);
                let dst = hdr.and_then(|h| {
                    let e = off.checked_add(size)?;
                    h.get_mut(off..e)
                });
                match dst {
                    Some(d) => d.copy_from_slice(src),
                    None => {
                        return Err(bad(
                            file,
                            format!(
                                "ext-hdr-update at offset {pos}: {off}+{size} outside extension header"
                            ),
                        ));
                    }
                }
            }
            i = align_up(i + hl + size, 4).unwrap_or(usize::MAX);
        }
        Ok(())
    }

    /// Ext-rec-update: the current extension's data of single messages.
    fn ext_rec_update(&mut self, file: &str, pos: usize, data: &[u8]) -> Result<()> {
        if let Some((idx, rec_size)) = self.cur_ext(file, pos, "ext-rec-update")? {
            let stride = align_up(4 + usize::from(rec_size), 4).unwrap_or(4);
            Self::check_multiple(file, pos, data, stride, "ext-rec-update")?;
            let ext_size = self.exts.get(idx).map_or(0, |x| usize::from(x.record_size));
            for c in data.chunks_exact(stride) {
                let uid = get_u32(c, 0).unwrap_or(0);
                if uid == 0 || uid >= self.next_uid() {
                    return Err(bad(
                        file,
                        format!("ext-rec-update at offset {pos}: invalid uid {uid}"),
                    ));
                }
                let src = c.get(4..4 + usize::from(rec_size)).unwrap_or(&[]);
                if let Some(i) = self.find(uid)
                    && let Some(slot) = self.records[i].ext.get_mut(idx)
                {
                    let mut v = vec![0u8; ext_size];
                    let n = ext_size.min(src.len());
                    v[..n].copy_from_slice(&src[..n]);
                    *slot = Some(v);
                }
            }
        }
        Ok(())
    }

    /// Ext-atomic-inc: a number in the current extension's data of single messages changed.
    fn ext_atomic_inc(&mut self, file: &str, pos: usize, data: &[u8]) -> Result<()> {
        Self::check_multiple(file, pos, data, 8, "ext-atomic-inc")?;
        if let Some((idx, rec_size)) = self.cur_ext(file, pos, "ext-atomic-inc")? {
            let n = usize::from(rec_size);
            if !matches!(n, 1 | 2 | 4 | 8) {
                return Err(bad(
                    file,
                    format!("ext-atomic-inc at offset {pos}: invalid size {n}"),
                ));
            }
            let ext_size = self.exts.get(idx).map_or(0, |x| usize::from(x.record_size));
            for c in data.chunks_exact(8) {
                let uid = get_u32(c, 0).unwrap_or(0);
                let diff = i64::from(get_u32(c, 4).unwrap_or(0) as i32);
                if uid == 0 || uid >= self.next_uid() {
                    return Err(bad(
                        file,
                        format!("ext-atomic-inc at offset {pos}: invalid uid {uid}"),
                    ));
                }
                let Some(i) = self.find(uid) else { continue };
                let Some(slot) = self.records[i].ext.get_mut(idx) else {
                    continue;
                };
                let mut v = slot.take().unwrap_or_default();
                v.resize(ext_size.max(n), 0);
                let mut num = [0u8; 8];
                num[..n].copy_from_slice(&v[..n]);
                let orig = u64::from_le_bytes(num);
                let max = if n == 8 {
                    u64::MAX
                } else {
                    (1u64 << (n * 8)) - 1
                };
                let new = i128::from(orig) + i128::from(diff);
                if new < 0 || new > i128::from(max) {
                    return Err(bad(
                        file,
                        format!(
                            "ext-atomic-inc at offset {pos}: uid {uid} value {orig} {diff:+} out of range"
                        ),
                    ));
                }
                let bytes = (new as u64).to_le_bytes();
                v[..n].copy_from_slice(&bytes[..n]);
                v.truncate(ext_size);
                *slot = Some(v);
            }
        }
        Ok(())
    }

    /// Keyword-update: one keyword added to or removed from UID ranges (registered when new).
    fn keyword_update(&mut self, file: &str, pos: usize, data: &[u8], modseq: u64) -> Result<()> {
        let modify = data.first().copied();
        let name_size = get_u16(data, 2).map(usize::from);
        let (Some(modify), Some(name_size)) = (modify, name_size) else {
            return Err(bad(
                file,
                format!("keyword-update at offset {pos}: truncated"),
            ));
        };
        let name = data.get(4..4 + name_size).ok_or_else(|| {
            bad(
                file,
                format!("keyword-update at offset {pos}: name past record end"),
            )
        })?;
        let start = align_up(4 + name_size, 4).unwrap_or(usize::MAX);
        let uids = data.get(start..).unwrap_or(&[]);
        if start > data.len() || uids.len() % 8 != 0 {
            return Err(bad(
                file,
                format!("keyword-update at offset {pos}: bad uid list size"),
            ));
        }
        if name.is_empty() || name.contains(&0) {
            return Err(bad(
                file,
                format!("keyword-update at offset {pos}: invalid keyword name"),
            ));
        }
        let add = modify == 0;
        let kw = match self.keywords.iter().position(|k| k == name) {
            Some(k) => k as u32,
            None if !add => return Ok(()),
            None => {
                // Dovecot registers the keywords extension when the first keyword
                // appears: it takes the next extension id, which later ext-intro
                // records of the log refer to.
                self.keywords_ext();
                self.keywords.push(name.to_vec());
                (self.keywords.len() - 1) as u32
            }
        };
        for c in uids.chunks_exact(8) {
            let r = self.range(get_u32(c, 0).unwrap_or(0), get_u32(c, 4).unwrap_or(0));
            for rec in self.records.get_mut(r).unwrap_or(&mut []) {
                match (rec.keywords.binary_search(&kw), add) {
                    (Err(p), true) => rec.keywords.insert(p, kw),
                    (Ok(p), false) => {
                        rec.keywords.remove(p);
                    }
                    _ => {}
                }
                if self.modseq_ext {
                    rec.modseq = modseq;
                }
            }
        }
        Ok(())
    }

    /// Keyword-reset: all keywords removed from UID ranges.
    fn keyword_reset(&mut self, file: &str, pos: usize, data: &[u8], modseq: u64) -> Result<()> {
        Self::check_multiple(file, pos, data, 8, "keyword-reset")?;
        for c in data.chunks_exact(8) {
            let r = self.range(get_u32(c, 0).unwrap_or(0), get_u32(c, 4).unwrap_or(0));
            for rec in self.records.get_mut(r).unwrap_or(&mut []) {
                rec.keywords.clear();
                if self.modseq_ext {
                    rec.modseq = modseq;
                }
            }
        }
        Ok(())
    }

    /// Modseq-update: modseqs raised.
    fn modseq_update_record(&mut self, file: &str, pos: usize, data: &[u8]) -> Result<()> {
        Self::check_multiple(file, pos, data, 12, "modseq-update")?;
        self.modseq_update(data);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn ext_intro(
        &mut self,
        file: &str,
        pos: usize,
        ext_id: u32,
        reset_id: u32,
        hdr_size: u32,
        rec_size: u16,
        rec_align: u16,
        flags: u16,
        name: &[u8],
        modseq: u64,
    ) -> Result<()> {
        self.cur = CurExt::Broken;
        let idx = if ext_id != u32::MAX {
            if ext_id as usize >= self.exts.len() {
                return Err(bad(
                    file,
                    format!("ext-intro at offset {pos}: unknown ext id {ext_id}"),
                ));
            }
            Some(ext_id as usize)
        } else {
            if name.is_empty() {
                return Err(bad(
                    file,
                    format!("ext-intro at offset {pos}: no id and no name"),
                ));
            }
            self.exts.iter().position(|x| x.name.as_bytes() == name)
        };
        let is_keywords = match idx {
            Some(i) => self.exts.get(i).is_some_and(|x| x.name == EXT_KEYWORDS),
            None => name == EXT_KEYWORDS.as_bytes(),
        };
        if is_keywords {
            return Ok(()); // keywords are maintained through keyword records only
        }
        if hdr_size > MAX_EXT_HDR_SIZE
            || (rec_size > 0 && (rec_align == 0 || !rec_size.is_multiple_of(rec_align)))
        {
            return Err(bad(
                file,
                format!(
                    "ext-intro at offset {pos}: invalid sizes hdr {hdr_size} record {rec_size}/{rec_align}"
                ),
            ));
        }
        let no_shrink = flags & EXT_INTRO_NO_SHRINK != 0;
        match idx {
            Some(i) => {
                let Some(x) = self.exts.get_mut(i) else {
                    return Ok(());
                };
                let ignore = x.reset_id != reset_id;
                if !ignore {
                    let new_hdr = hdr_size as usize;
                    if new_hdr > x.hdr.len() || !no_shrink {
                        x.hdr.resize(new_hdr, 0);
                    }
                    if x.record_align < rec_align || (x.record_align > rec_align && !no_shrink) {
                        x.record_align = rec_align;
                        self.layout_dirty = true;
                    }
                    if x.record_size < rec_size || (x.record_size > rec_size && !no_shrink) {
                        x.record_size = rec_size;
                        self.layout_dirty = true;
                        let n = usize::from(rec_size);
                        for rec in &mut self.records {
                            if let Some(Some(d)) = rec.ext.get_mut(i) {
                                d.resize(n, 0);
                            }
                        }
                    }
                }
                self.cur = CurExt::Ext {
                    idx: i,
                    rec_size,
                    ignore,
                };
            }
            None => {
                self.exts.push(ExtState {
                    name: String::from_utf8_lossy(name).into_owned(),
                    reset_id,
                    hdr: vec![0; hdr_size as usize],
                    record_offset: 0,
                    record_size: rec_size,
                    record_align: rec_align,
                });
                for rec in &mut self.records {
                    rec.ext.push(None);
                }
                if name == EXT_MODSEQ.as_bytes() && !self.modseq_ext {
                    // modseqs just got enabled: existing messages get the current highest
                    self.modseq_ext = true;
                    for rec in &mut self.records {
                        rec.modseq = modseq;
                    }
                }
                self.layout_dirty = true;
                self.cur = CurExt::Ext {
                    idx: self.exts.len() - 1,
                    rec_size,
                    ignore: false,
                };
            }
        }
        Ok(())
    }

    /// The index of the `keywords` extension, registered (with an empty slot in every
    /// record) when missing.
    fn keywords_ext(&mut self) -> usize {
        if let Some(i) = self.exts.iter().position(|x| x.name == EXT_KEYWORDS) {
            return i;
        }
        self.exts.push(ExtState {
            name: EXT_KEYWORDS.to_string(),
            reset_id: 0,
            hdr: Vec::new(),
            record_offset: 0,
            record_size: 0,
            record_align: 1,
        });
        for rec in &mut self.records {
            rec.ext.push(None);
        }
        self.exts.len() - 1
    }

    fn finish(mut self) -> MailIndex {
        // keywords extension mirrors the keyword list and per-record keyword sets
        let has_ext = self.exts.iter().any(|x| x.name == EXT_KEYWORDS);
        if !self.keywords.is_empty() || has_ext {
            let idx = self.keywords_ext();
            let need = self.keywords.len().div_ceil(8);
            if let Some(x) = self.exts.get_mut(idx) {
                x.hdr = keywords_hdr(&self.keywords);
                if usize::from(x.record_size) < need {
                    x.record_size = u16::try_from(need).unwrap_or(u16::MAX);
                    x.record_align = 1;
                    self.layout_dirty = true;
                }
                let size = usize::from(x.record_size);
                for rec in &mut self.records {
                    let mut bits = vec![0u8; size];
                    for &k in &rec.keywords {
                        if let Some(b) = bits.get_mut(k as usize / 8) {
                            *b |= 1 << (k % 8);
                        }
                    }
                    if let Some(slot) = rec.ext.get_mut(idx) {
                        *slot = if size > 0 { Some(bits) } else { None };
                    }
                }
            }
        }
        // every record gets data of exactly record_size bytes for each record extension
        for (i, x) in self.exts.iter().enumerate() {
            let n = usize::from(x.record_size);
            for rec in &mut self.records {
                if let Some(slot) = rec.ext.get_mut(i) {
                    if n == 0 {
                        *slot = None;
                    } else {
                        let mut v = slot.take().unwrap_or_default();
                        v.resize(n, 0);
                        *slot = Some(v);
                    }
                }
            }
        }
        // modseq extension: per-message modseqs up to the index snapshot; a zero there means
        // "not set yet" and reads as the extension header's highest_modseq. Without the
        // extension Dovecot does not track per-message modseqs: report 0 (unknown).
        match self.exts.iter().position(|x| x.name == EXT_MODSEQ) {
            Some(mi) => {
                let hdr_highest = self
                    .exts
                    .get(mi)
                    .and_then(|x| get_u64(&x.hdr, 0))
                    .unwrap_or(0);
                self.highest_modseq = self.highest_modseq.max(hdr_highest);
                let rec_ext = self.exts.get(mi).is_some_and(|x| x.record_size == 8);
                for rec in &mut self.records {
                    let slot = rec
                        .ext
                        .get_mut(mi)
                        .and_then(Option::as_mut)
                        .filter(|_| rec_ext);
                    if let Some(d) = slot {
                        let mut v = get_u64(d, 0).unwrap_or(0);
                        if v == 0 {
                            v = hdr_highest;
                        }
                        rec.modseq = rec.modseq.max(v);
                        d.copy_from_slice(&rec.modseq.to_le_bytes());
                    }
                }
            }
            None => self.records.iter_mut().for_each(|r| r.modseq = 0),
        }
        if self.layout_dirty {
            let items: Vec<(u16, u16)> = self
                .exts
                .iter()
                .map(|x| (x.record_size, x.record_align))
                .collect();
            let mut offs = vec![0u16; items.len()];
            if layout_records(&items, &mut offs).is_some() {
                for (x, o) in self.exts.iter_mut().zip(offs) {
                    x.record_offset = o;
                }
            }
        }
        MailIndex {
            indexid: self.indexid,
            uid_validity: get_u32(&self.base, HDR_UID_VALIDITY).unwrap_or(0),
            next_uid: self.next_uid(),
            highest_modseq: self.highest_modseq,
            exts: self
                .exts
                .into_iter()
                .map(|x| Ext {
                    name: x.name,
                    hdr: x.hdr,
                    record_offset: x.record_offset,
                    record_size: x.record_size,
                    record_align: x.record_align,
                    reset_id: x.reset_id,
                })
                .collect(),
            keywords: self.keywords,
            records: self.records,
        }
    }
}

/// A flag-update entry (12 bytes) that only touches internal bits does not raise modseq.
fn flag_update_is_internal(c: &[u8]) -> bool {
    let add = c.get(8).copied().unwrap_or(0);
    let remove = c.get(9).copied().unwrap_or(0);
    let inc = c.get(10).copied().unwrap_or(0);
    (add | remove) & FLAGS_MASK == 0 && inc == 0
}

/// Modseq after applying one log record (section 6.4 accounting).
fn modseq_after(file: &str, pos: usize, typ: u32, data: &[u8], cur: u64) -> Result<u64> {
    let external = typ & T_EXTERNAL != 0;
    Ok(match typ & TYPE_MASK {
        T_EXPUNGE | T_EXPUNGE_PROT | T_EXPUNGE_GUID | T_EXPUNGE_GUID_PROT if !external => cur,
        T_EXPUNGE | T_EXPUNGE_PROT | T_EXPUNGE_GUID | T_EXPUNGE_GUID_PROT | T_APPEND
        | T_KEYWORD_UPDATE | T_KEYWORD_RESET | T_ATTRIBUTE_UPDATE => cur.saturating_add(1),
        T_FLAG_UPDATE => {
            if data.chunks_exact(12).any(|c| !flag_update_is_internal(c)) {
                cur.saturating_add(1)
            } else {
                cur
            }
        }
        T_MODSEQ_UPDATE => {
            if !data.len().is_multiple_of(12) {
                return Err(bad(
                    file,
                    format!("modseq-update at offset {pos}: bad size {}", data.len()),
                ));
            }
            data.chunks_exact(12).fold(cur, |m, c| {
                let v = u64::from(get_u32(c, 4).unwrap_or(0))
                    | u64::from(get_u32(c, 8).unwrap_or(0)) << 32;
                m.max(v)
            })
        }
        _ => cur,
    })
}

/// The parts of a log file header this module uses.
struct LogHeader {
    hdr_size: usize,
    indexid: u32,
    file_seq: u32,
    prev_file_seq: u32,
    prev_file_offset: u32,
    initial_modseq: u64,
}

impl LogHeader {
    fn parse(file: &str, log: &[u8]) -> Result<LogHeader> {
        if log.len() < 40 {
            return Err(bad(
                file,
                format!("log file too short ({} bytes)", log.len()),
            ));
        }
        if log[0] != 1 {
            return Err(bad(
                file,
                format!("unsupported log major version {} at offset 0", log[0]),
            ));
        }
        let hdr_size = usize::from(get_u16(log, 2).unwrap_or(0));
        if hdr_size < 40 || hdr_size > log.len() {
            return Err(bad(
                file,
                format!("bad log hdr_size {hdr_size} at offset 2"),
            ));
        }
        if log[32] & COMPAT_LITTLE_ENDIAN == 0 {
            return Err(bad(file, "compat_flags at offset 32 lack little-endian"));
        }
        Ok(LogHeader {
            hdr_size,
            indexid: get_u32(log, 4).unwrap_or(0),
            file_seq: get_u32(log, 8).unwrap_or(0),
            prev_file_seq: get_u32(log, 12).unwrap_or(0),
            prev_file_offset: get_u32(log, 16).unwrap_or(0),
            initial_modseq: get_u64(log, 24).unwrap_or(0),
        })
    }
}

fn read_opt(path: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    }
}

impl MailIndex {
    /// Read `<dir>/<base>` (e.g. base = "dovecot.index" or "dovecot.map.index") and replay
    /// `<dir>/<base>.log` (and `.log.2` when needed) per section 6.0. Ok(None) when neither the
    /// index nor the log exists. A missing index with an existing log is normal.
    pub fn read(dir: &Path, base: &str) -> Result<Option<MailIndex>> {
        let index = read_opt(&dir.join(base))?;
        let log = read_opt(&dir.join(format!("{base}.log")))?;
        if index.is_none() && log.is_none() {
            return Ok(None);
        }
        let log2 = if log.is_some() {
            read_opt(&dir.join(format!("{base}.log.2")))?
        } else {
            None
        };
        Self::from_bytes_named(base, index.as_deref(), log.as_deref(), log2.as_deref()).map(Some)
    }

    /// Same from bytes (index may be None; log2 may be None) - used by read() and by tests.
    pub fn from_bytes(
        index: Option<&[u8]>,
        log: Option<&[u8]>,
        log2: Option<&[u8]>,
    ) -> Result<MailIndex> {
        Self::from_bytes_named(DEFAULT_BASE, index, log, log2)
    }

    /// Like [`MailIndex::from_bytes`], naming the files `<base>`, `<base>.log`, `<base>.log.2`
    /// in error messages.
    pub fn from_bytes_named(
        base: &str,
        index: Option<&[u8]>,
        log: Option<&[u8]>,
        log2: Option<&[u8]>,
    ) -> Result<MailIndex> {
        let log_name = format!("{base}.log");
        let log2_name = format!("{base}.log.2");
        let lh = match log {
            Some(l) => Some(LogHeader::parse(&log_name, l)?),
            None => None,
        };
        let l2h = match log2 {
            Some(l) => LogHeader::parse(&log2_name, l).ok(),
            None => None,
        };
        let mut st = match index {
            Some(buf) => {
                let (mut st, seq, head) = State::from_index(base, buf)?;
                if let (Some(log), Some(lh)) = (log, &lh) {
                    if lh.indexid != st.indexid {
                        return Err(bad(
                            &log_name,
                            format!(
                                "indexid {} differs from the index's {}",
                                lh.indexid, st.indexid
                            ),
                        ));
                    }
                    if lh.file_seq == seq {
                        st.replay_log(&log_name, log, head as usize)?;
                    } else if lh.prev_file_seq == seq
                        && let (Some(l2), Some(l2h)) = (log2, &l2h)
                        && l2h.file_seq == seq
                        && l2h.indexid == st.indexid
                    {
                        st.replay_log(&log2_name, l2, head as usize)?;
                        st.replay_log(&log_name, log, 0)?;
                    } else if lh.prev_file_seq == seq && lh.prev_file_offset == head {
                        // the log was rotated exactly where the index ends (or the previous
                        // log never existed, as after a hand-written index): nothing in .log.2
                        st.replay_log(&log_name, log, 0)?;
                    } else if lh.file_seq > seq {
                        return Err(bad(
                            &log_name,
                            format!(
                                "log file_seq {} (prev {}) does not continue the index's log_file_seq {seq}",
                                lh.file_seq, lh.prev_file_seq
                            ),
                        ));
                    }
                    // a log older than the index holds nothing new
                }
                st
            }
            None => {
                let (Some(log), Some(lh)) = (log, &lh) else {
                    return Err(bad(base, "neither index nor log given"));
                };
                let mut st = State::new_empty(lh.indexid);
                if let (Some(l2), Some(l2h)) = (log2, &l2h)
                    && lh.prev_file_seq != 0
                    && l2h.file_seq == lh.prev_file_seq
                    && l2h.prev_file_seq == 0
                    && l2h.indexid == lh.indexid
                {
                    st.replay_log(&log2_name, l2, 0)?;
                }
                st.replay_log(&log_name, log, 0)?;
                st
            }
        };
        st.cur = CurExt::None;
        Ok(st.finish())
    }

    /// The ext_id of the extension named `name`.
    pub fn ext_id(&self, name: &str) -> Option<usize> {
        self.exts.iter().position(|x| x.name == name)
    }

    /// Header data of the extension named `name`.
    pub fn ext_hdr(&self, name: &str) -> Option<&[u8]> {
        self.exts
            .iter()
            .find(|x| x.name == name)
            .map(|x| x.hdr.as_slice())
    }

    /// Record data of extension `name` for `rec` (None if that ext has no data for it).
    pub fn ext_rec<'a>(&self, rec: &'a Record, name: &str) -> Option<&'a [u8]> {
        let id = self.ext_id(name)?;
        rec.ext_data(id)
    }

    /// The record with this uid.
    pub fn record(&self, uid: u32) -> Option<&Record> {
        self.records
            .binary_search_by_key(&uid, |r| r.uid)
            .ok()
            .and_then(|i| self.records.get(i))
    }

    /// The MODSEQ Dovecot reports for a record: its own where the index tracks per-message
    /// modseqs (the `modseq` extension), else the highest (as Dovecot does); `None` when the
    /// index tracks no modseqs at all (a log without `initial_modseq`).
    pub fn modseq_of(&self, rec: &Record) -> Option<u64> {
        match (rec.modseq, self.highest_modseq) {
            (_, 0) => None,
            (0, h) => Some(h),
            (m, _) => Some(m),
        }
    }

    /// Keyword names of a record (keyword indexes resolved through [`MailIndex::keywords`]).
    pub fn keyword_names<'a>(&'a self, rec: &Record) -> Vec<&'a [u8]> {
        rec.keywords
            .iter()
            .filter_map(|&k| self.keywords.get(k as usize).map(Vec::as_slice))
            .collect()
    }
}

impl Record {
    /// Record data of the extension with this ext_id (None for header-only extensions).
    pub fn ext_data(&self, ext_id: usize) -> Option<&[u8]> {
        self.ext.get(ext_id).and_then(|d| d.as_deref())
    }
}

// ---------------------------------------------------------------------------------------
// writer

/// Sequence number of the log written with a new index. Not 1: a log that names no
/// previous log (`prev_file_seq` 0) tells Dovecot to reset the index when it starts
/// reading at its beginning, so the log is written as the successor of a log 1 that the
/// index has read to its end.
const LOG_FILE_SEQ: u32 = 2;
/// Size of a transaction log header as Dovecot 2.3 writes it.
const LOG_HEADER_SIZE: usize = 40;

/// A `dovecot.index.log` holding only its header, to be written with the index
/// [`write_index`] made with the same `indexid`: Dovecot appends to it, and its
/// `initial_modseq` (the index's HIGHESTMODSEQ, at least 1) is where modseqs go on from.
/// Without it Dovecot makes a log of its own whose position the index's `modseq` header
/// does not name, and then sets every message's modseq to the highest.
pub fn write_log_header(indexid: u32, initial_modseq: u64) -> Vec<u8> {
    let mut v = vec![0u8; LOG_HEADER_SIZE];
    v[0] = 1; // major
    v[1] = 3; // minor
    v[2..4].copy_from_slice(&(LOG_HEADER_SIZE as u16).to_le_bytes());
    put_u32(&mut v, 4, indexid);
    put_u32(&mut v, 8, LOG_FILE_SEQ);
    put_u32(&mut v, 12, LOG_FILE_SEQ - 1); // prev_file_seq
    put_u32(&mut v, 16, LOG_HEADER_SIZE as u32); // prev_file_offset
    put_u32(&mut v, 20, indexid); // create_stamp
    v[24..32].copy_from_slice(&initial_modseq.max(1).to_le_bytes());
    v[32] = COMPAT_LITTLE_ENDIAN;
    v
}

/// Serialize a NewIndex into dovecot.index bytes.
// Writes dovecot.index in file order (validation, base header, extension headers,
// records), mirroring `State::from_index`; split, the layout would no longer read as one.
#[allow(clippy::too_many_lines)]
pub fn write_index(new: &NewIndex) -> Result<Vec<u8>> {
    const F: &str = DEFAULT_BASE;
    // validate
    let mut prev = 0u32;
    for (i, r) in new.records.iter().enumerate() {
        if r.uid <= prev {
            return Err(bad(
                F,
                format!("record {i}: uid {} not above previous uid {prev}", r.uid),
            ));
        }
        prev = r.uid;
        if r.ext.len() != new.exts.len() {
            return Err(bad(
                F,
                format!(
                    "record uid {}: {} ext entries, expected {}",
                    r.uid,
                    r.ext.len(),
                    new.exts.len()
                ),
            ));
        }
        for (x, d) in new.exts.iter().zip(&r.ext) {
            if d.len() != usize::from(x.record_size) {
                return Err(bad(
                    F,
                    format!(
                        "record uid {}: ext {:?} data is {} bytes, expected {}",
                        r.uid,
                        x.name,
                        d.len(),
                        x.record_size
                    ),
                ));
            }
        }
        if let Some(&k) = r
            .keywords
            .iter()
            .find(|&&k| k as usize >= new.keywords.len())
        {
            return Err(bad(
                F,
                format!("record uid {}: keyword index {k} out of range", r.uid),
            ));
        }
    }
    if new.next_uid <= prev {
        return Err(bad(
            F,
            format!("next_uid {} not above highest uid {prev}", new.next_uid),
        ));
    }
    for (i, k) in new.keywords.iter().enumerate() {
        if k.is_empty() || k.contains(&0) || new.keywords[..i].contains(k) {
            return Err(bad(F, format!("invalid or duplicate keyword {i}")));
        }
    }
    let mut exts: Vec<(String, Vec<u8>, u16, u16, u32)> = Vec::new();
    for (i, x) in new.exts.iter().enumerate() {
        if x.name.is_empty()
            || x.name.len() > usize::from(u16::MAX)
            || x.name == EXT_KEYWORDS
            || new.exts[..i].iter().any(|y| y.name == x.name)
        {
            return Err(bad(
                F,
                format!("invalid or duplicate extension name {:?}", x.name),
            ));
        }
        if x.hdr.len() > MAX_EXT_HDR_SIZE as usize {
            return Err(bad(F, format!("extension {:?} header too large", x.name)));
        }
        let align = if x.record_size == 0 {
            0
        } else {
            x.record_align
        };
        if x.record_size > 0 && (!matches!(align, 1 | 2 | 4 | 8) || x.record_size % align != 0) {
            return Err(bad(
                F,
                format!(
                    "extension {:?}: bad record size/align {}/{}",
                    x.name, x.record_size, x.record_align
                ),
            ));
        }
        exts.push((
            x.name.clone(),
            x.hdr.clone(),
            x.record_size,
            align,
            x.reset_id,
        ));
    }
    let modseq_ext = new.highest_modseq.map(|h| {
        let mut hdr = h.to_le_bytes().to_vec();
        hdr.extend_from_slice(&LOG_FILE_SEQ.to_le_bytes());
        hdr.extend_from_slice(&(LOG_HEADER_SIZE as u32).to_le_bytes());
        exts.push((EXT_MODSEQ.to_string(), hdr, 8, 8, 0));
        (exts.len() - 1, h)
    });
    let kw_size = new.keywords.len().div_ceil(8);
    if !new.keywords.is_empty() {
        let size = u16::try_from(kw_size).map_err(|_| bad(F, "too many keywords"))?;
        exts.push((
            EXT_KEYWORDS.to_string(),
            keywords_hdr(&new.keywords),
            size,
            1,
            0,
        ));
    }
    let items: Vec<(u16, u16)> = exts.iter().map(|x| (x.2, x.3)).collect();
    let mut offs = vec![0u16; items.len()];
    let record_size = layout_records(&items, &mut offs)
        .ok_or_else(|| bad(F, "extension records too large"))? as usize;

    // header
    let mut out = vec![0u8; BASE_HEADER_SIZE];
    for (i, (name, hdr, size, align, reset_id)) in exts.iter().enumerate() {
        let start = out.len();
        out.extend_from_slice(&(hdr.len() as u32).to_le_bytes());
        out.extend_from_slice(&reset_id.to_le_bytes());
        out.extend_from_slice(&offs.get(i).copied().unwrap_or(0).to_le_bytes());
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&align.to_le_bytes());
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.resize(align_up(out.len(), 8).unwrap_or(out.len()), 0);
        out.extend_from_slice(hdr);
        out.resize(align_up(out.len(), 8).unwrap_or(out.len()), 0);
        debug_assert!(out.len() > start);
    }
    let header_size = u32::try_from(out.len()).map_err(|_| bad(F, "header too large"))?;
    let messages = u32::try_from(new.records.len()).map_err(|_| bad(F, "too many records"))?;
    let seen = new
        .records
        .iter()
        .filter(|r| r.flags & FLAG_SEEN != 0)
        .count() as u32;
    let deleted = new
        .records
        .iter()
        .filter(|r| r.flags & FLAG_DELETED != 0)
        .count() as u32;
    let first_unseen = new
        .records
        .iter()
        .find(|r| r.flags & FLAG_SEEN == 0)
        .map_or(new.next_uid, |r| r.uid);
    let first_deleted = new
        .records
        .iter()
        .find(|r| r.flags & FLAG_DELETED != 0)
        .map_or(new.next_uid, |r| r.uid);
    out[0] = 7;
    out[1] = 3;
    out[2..4].copy_from_slice(&(BASE_HEADER_SIZE as u16).to_le_bytes());
    put_u32(&mut out, 4, header_size);
    put_u32(&mut out, 8, record_size as u32);
    out[12] = COMPAT_LITTLE_ENDIAN;
    put_u32(&mut out, 16, new.indexid);
    put_u32(&mut out, HDR_UID_VALIDITY, new.uid_validity);
    put_u32(&mut out, HDR_NEXT_UID, new.next_uid);
    put_u32(&mut out, 32, messages);
    put_u32(&mut out, 40, seen);
    put_u32(&mut out, 44, deleted);
    put_u32(&mut out, 48, new.next_uid); // first_recent_uid: nothing is recent
    put_u32(&mut out, 52, first_unseen);
    put_u32(&mut out, 56, first_deleted);
    // The log written with the index ([`write_log_header`]) holds nothing yet: the index
    // has seen it up to its end.
    put_u32(&mut out, 60, LOG_FILE_SEQ);
    put_u32(&mut out, 64, LOG_HEADER_SIZE as u32); // log_file_tail_offset
    put_u32(&mut out, 68, LOG_HEADER_SIZE as u32); // log_file_head_offset

    // records
    let kw_ext = if new.keywords.is_empty() {
        None
    } else {
        Some(exts.len() - 1)
    };
    out.reserve(record_size.saturating_mul(new.records.len()));
    for r in &new.records {
        let start = out.len();
        out.resize(start + record_size, 0);
        let rec = &mut out[start..];
        rec[..4].copy_from_slice(&r.uid.to_le_bytes());
        rec[4] = r.flags;
        for (i, d) in r.ext.iter().enumerate() {
            let o = usize::from(offs.get(i).copied().unwrap_or(0));
            if let Some(dst) = rec.get_mut(o..o + d.len()) {
                dst.copy_from_slice(d);
            }
        }
        if let Some((m, h)) = modseq_ext {
            let o = usize::from(offs.get(m).copied().unwrap_or(0));
            let v = if r.modseq == 0 { h } else { r.modseq.min(h) };
            if let Some(dst) = rec.get_mut(o..o + 8) {
                dst.copy_from_slice(&v.to_le_bytes());
            }
        }
        if let Some(k) = kw_ext {
            let o = usize::from(offs.get(k).copied().unwrap_or(0));
            for &kw in &r.keywords {
                if let Some(b) = rec.get_mut(o + kw as usize / 8) {
                    *b |= 1 << (kw % 8);
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Build a log file: header + records `(type, data)`.
    fn log(initial_modseq: u64, recs: &[(u32, Vec<u8>)]) -> Vec<u8> {
        let mut v = vec![0u8; 40];
        v[0] = 1;
        v[1] = 3;
        v[2] = 40;
        put_u32(&mut v, 4, 777); // indexid
        put_u32(&mut v, 8, 1); // file_seq
        v[24..32].copy_from_slice(&initial_modseq.to_le_bytes());
        v[32] = 1;
        for (t, d) in recs {
            let size = (8 + d.len()) as u32;
            v.extend_from_slice(&encode_log_record_size(size).unwrap());
            v.extend_from_slice(&t.to_le_bytes());
            v.extend_from_slice(d);
        }
        v
    }

    fn le(words: &[u32]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    fn append(uids: &[u32]) -> (u32, Vec<u8>) {
        (
            T_APPEND | T_EXTERNAL,
            uids.iter().flat_map(|&u| le(&[u, 0])).collect(),
        )
    }

    fn kw_update(add: bool, name: &str, u1: u32, u2: u32) -> (u32, Vec<u8>) {
        let mut d = vec![if add { 0 } else { 1 }, 0];
        d.extend_from_slice(&(name.len() as u16).to_le_bytes());
        d.extend_from_slice(name.as_bytes());
        while d.len() % 4 != 0 {
            d.push(0);
        }
        d.extend(le(&[u1, u2]));
        (T_KEYWORD_UPDATE, d)
    }

    fn intro(ext_id: u32, name: &str, hdr: u32, rs: u16, ra: u16) -> (u32, Vec<u8>) {
        let mut d = le(&[ext_id, 0, hdr]);
        for x in [rs, ra, 0, name.len() as u16] {
            d.extend_from_slice(&x.to_le_bytes());
        }
        d.extend_from_slice(name.as_bytes());
        while !d.len().is_multiple_of(4) {
            d.push(0);
        }
        (T_EXT_INTRO, d)
    }

    #[test]
    fn size_encoding() {
        assert_eq!(decode_log_record_size([0x80, 0x80, 0x80, 0x88]), 32);
        assert_eq!(decode_log_record_size([0x80, 0x80, 0x80, 0x85]), 20);
        assert_eq!(decode_log_record_size([0x00, 0x80, 0x80, 0x88]), 0);
        assert_eq!(decode_log_record_size([0, 0, 0, 0]), 0);
        for s in [4u32, 8, 12, 508, 512, 65532, 65536, 1 << 20, (1 << 30) - 4] {
            assert_eq!(
                decode_log_record_size(encode_log_record_size(s).unwrap()),
                s
            );
        }
        assert!(encode_log_record_size(6).is_none());
        assert_eq!(encode_log_record_size(32), Some([0x80, 0x80, 0x80, 0x88]));
    }

    #[test]
    fn replay_basic() {
        let mut hu = vec![];
        hu.extend_from_slice(&24u16.to_le_bytes());
        hu.extend_from_slice(&4u16.to_le_bytes());
        hu.extend(le(&[4242]));
        let l = log(
            1,
            &[
                (T_HEADER_UPDATE, hu),
                append(&[1, 2, 3, 5]),
                (T_FLAG_UPDATE, [le(&[1, 2]), vec![0x08, 0, 0, 0]].concat()),
                (
                    T_FLAG_UPDATE,
                    [le(&[2, 2]), vec![0x04, 0xff, 0, 0]].concat(),
                ),
                kw_update(true, "foo", 1, 3),
                kw_update(true, "bar", 3, 3),
                kw_update(false, "foo", 2, 2),
                kw_update(false, "nothere", 1, 5),
                (T_EXPUNGE_PROT, le(&[3, 3])), // request only
                (T_EXPUNGE_PROT | T_EXTERNAL, le(&[5, 9])), // real
                intro(u32::MAX, "ref", 0, 2, 2),
                (T_EXT_REC_UPDATE, le(&[1, 7])),
                (T_EXT_ATOMIC_INC, le(&[1, 3, 2, 1])),
                intro(u32::MAX, "hdrx", 8, 0, 0),
                (T_EXT_HDR_UPDATE, vec![2, 0, 2, 0, 0xab, 0xcd, 0, 0]),
                (
                    T_EXT_HDR_UPDATE32,
                    [le(&[4, 1]), vec![0xee, 0, 0, 0]].concat(),
                ),
            ],
        );
        let ix = MailIndex::from_bytes(None, Some(&l), None).unwrap();
        assert_eq!(ix.uid_validity, 4242);
        assert_eq!(ix.next_uid, 6);
        assert_eq!(ix.indexid, 777);
        let uids: Vec<u32> = ix.records.iter().map(|r| r.uid).collect();
        assert_eq!(uids, [1, 2, 3]);
        assert_eq!(ix.record(1).unwrap().flags, 0x08);
        assert_eq!(ix.record(2).unwrap().flags, 0x04);
        assert_eq!(ix.keywords, [b"foo".to_vec(), b"bar".to_vec()]);
        assert_eq!(ix.record(1).unwrap().keywords, [0]);
        assert!(ix.record(2).unwrap().keywords.is_empty());
        assert_eq!(ix.record(3).unwrap().keywords, [0, 1]);
        // modseq: 1 + append + 2 flag updates + 3 effective kw updates + remove-unknown kw
        // update (still counted) + external expunge = 9
        assert_eq!(ix.highest_modseq, 9);
        assert_eq!(
            ix.ext_rec(ix.record(1).unwrap(), "ref"),
            Some(&[10u8, 0][..])
        );
        assert_eq!(
            ix.ext_rec(ix.record(2).unwrap(), "ref"),
            Some(&[1u8, 0][..])
        );
        assert_eq!(
            ix.ext_rec(ix.record(3).unwrap(), "ref"),
            Some(&[0u8, 0][..])
        );
        assert_eq!(
            ix.ext_hdr("hdrx"),
            Some(&[0, 0, 0xab, 0xcd, 0xee, 0, 0, 0][..])
        );
        assert_eq!(ix.ext_rec(ix.record(1).unwrap(), "hdrx"), None);
        // no modseq extension: per-message modseqs unknown
        assert!(ix.records.iter().all(|r| r.modseq == 0));
        // keywords ext synthesized
        assert_eq!(
            ix.ext_rec(ix.record(3).unwrap(), "keywords"),
            Some(&[3u8][..])
        );

        // resize "ref" to 4 bytes through an intro by id: data kept, zero extended
        let mut recs = vec![
            append(&[1]),
            intro(u32::MAX, "ref", 0, 2, 2),
            (T_EXT_REC_UPDATE, le(&[1, 0x0505])),
        ];
        recs.push(intro(0, "", 0, 4, 4));
        let ix = MailIndex::from_bytes(None, Some(&log(1, &recs)), None).unwrap();
        let x = &ix.exts[0];
        assert_eq!((x.record_size, x.record_align, x.record_offset), (4, 4, 8));
        assert_eq!(ix.ext_rec(&ix.records[0], "ref"), Some(&[5u8, 5, 0, 0][..]));
    }

    #[test]
    fn unfinished_transaction_and_truncation() {
        let mut bound = le(&[0]);
        let recs = [
            append(&[1]),
            (T_BOUNDARY, bound.clone()),
            append(&[2]),
            append(&[3]),
        ];
        // boundary size covers boundary + the two appends = 12 + 16 + 16
        bound = le(&[44]);
        let full = log(
            1,
            &[
                recs[0].clone(),
                (T_BOUNDARY, bound),
                recs[2].clone(),
                recs[3].clone(),
            ],
        );
        let ix = MailIndex::from_bytes(None, Some(&full), None).unwrap();
        assert_eq!(ix.records.len(), 3);
        assert_eq!(ix.highest_modseq, 4);
        // cut inside the transaction: stops before the boundary, not an error
        for cut in 40 + 16..full.len() {
            let ix = MailIndex::from_bytes(None, Some(&full[..cut]), None).unwrap();
            let n = if cut == full.len() { 3 } else { 1 };
            assert_eq!(ix.records.len(), n, "cut {cut}");
        }
        // trailing zeros are the end of the log
        let mut z = full.clone();
        z.extend_from_slice(&[0; 64]);
        assert_eq!(
            MailIndex::from_bytes(None, Some(&z), None)
                .unwrap()
                .records
                .len(),
            3
        );
        // header-only / short logs
        assert!(MailIndex::from_bytes(None, Some(&full[..39]), None).is_err());
        assert_eq!(
            MailIndex::from_bytes(None, Some(&full[..40]), None)
                .unwrap()
                .records
                .len(),
            0
        );
        // big-endian compat flag refused
        let mut be = full.clone();
        be[32] = 0;
        assert!(MailIndex::from_bytes(None, Some(&be), None).is_err());
    }

    fn sample_new() -> NewIndex {
        let mut hdr = vec![0u8; 24];
        hdr[4..20].copy_from_slice(&[7; 16]);
        NewIndex {
            uid_validity: 99,
            next_uid: 20,
            indexid: 777,
            exts: vec![
                NewExt {
                    name: "dbox-hdr".into(),
                    hdr,
                    record_size: 0,
                    record_align: 0,
                    reset_id: 0,
                },
                NewExt {
                    name: "mdbox".into(),
                    hdr: vec![],
                    record_size: 8,
                    record_align: 4,
                    reset_id: 0,
                },
                NewExt {
                    name: "ref".into(),
                    hdr: vec![1, 2, 3],
                    record_size: 2,
                    record_align: 2,
                    reset_id: 0,
                },
            ],
            keywords: (0..9).map(|i| format!("k{i}").into_bytes()).collect(),
            records: (1..6)
                .map(|u| NewRecord {
                    uid: u * 3,
                    flags: (u as u8) & 0x1f,
                    keywords: vec![u % 9, 8],
                    ext: vec![vec![], le(&[u, u * 100]), vec![u as u8, 0]],
                    modseq: u64::from(u) * 10,
                })
                .collect(),
            highest_modseq: None,
        }
    }

    #[test]
    fn written_index_and_log_read_back_with_modseqs() {
        let mut new = sample_new();
        new.highest_modseq = Some(77);
        let idx = write_index(&new).unwrap();
        let log = write_log_header(new.indexid, 77);
        let ix = MailIndex::from_bytes(Some(&idx), Some(&log), None).unwrap();
        assert_eq!(ix.highest_modseq, 77);
        let got: Vec<u64> = ix.records.iter().map(|r| r.modseq).collect();
        assert_eq!(got, [10, 20, 30, 40, 50]);
        assert_eq!(ix.ext_hdr("modseq").map(<[u8]>::len), Some(16));
        // The log continues a log 1 the index read to its end: no reset, nothing to replay.
        let lh = LogHeader::parse("log", &log).unwrap();
        assert_eq!(
            (lh.file_seq, lh.prev_file_seq, lh.prev_file_offset),
            (2, 1, 40)
        );
        assert_eq!((get_u32(&idx, 60), get_u32(&idx, 68)), (Some(2), Some(40)));
        // A record modseq of 0 reads as the highest; none is above it.
        new.records[0].modseq = 0;
        new.records[1].modseq = 500;
        let ix =
            MailIndex::from_bytes(Some(&write_index(&new).unwrap()), Some(&log), None).unwrap();
        assert_eq!((ix.records[0].modseq, ix.records[1].modseq), (77, 77));
    }

    #[test]
    fn write_roundtrip() {
        let new = sample_new();
        let bytes = write_index(&new).unwrap();
        // layout: keywords @5 (2), mdbox @8 (8), ref @16 (2), padded to 4 -> 20
        assert_eq!(get_u32(&bytes, 8), Some(20));
        let ix = MailIndex::from_bytes(Some(&bytes), None, None).unwrap();
        assert_eq!((ix.uid_validity, ix.next_uid, ix.indexid), (99, 20, 777));
        assert_eq!(ix.keywords, new.keywords);
        assert_eq!(ix.ext_hdr("dbox-hdr"), Some(&new.exts[0].hdr[..]));
        assert_eq!(ix.ext_hdr("ref"), Some(&[1u8, 2, 3][..]));
        assert_eq!(ix.exts.last().unwrap().name, "keywords");
        for (r, n) in ix.records.iter().zip(&new.records) {
            assert_eq!((r.uid, r.flags), (n.uid, n.flags));
            let mut k = n.keywords.clone();
            k.sort();
            k.dedup();
            assert_eq!(r.keywords, k);
            assert_eq!(ix.ext_rec(r, "mdbox"), Some(&n.ext[1][..]));
            assert_eq!(ix.ext_rec(r, "ref"), Some(&n.ext[2][..]));
        }
        // seen/deleted counts and first_recent_uid
        let seen = new.records.iter().filter(|r| r.flags & 8 != 0).count() as u32;
        assert_eq!(get_u32(&bytes, 40), Some(seen));
        assert_eq!(get_u32(&bytes, 48), Some(20));
        assert_eq!(get_u32(&bytes, 60), Some(2));
        assert_eq!(bytes[12], 1);

        // errors
        let mut bad_order = sample_new();
        bad_order.records.swap(0, 1);
        assert!(write_index(&bad_order).is_err());
        let mut bad_len = sample_new();
        bad_len.records[0].ext[1].pop();
        assert!(write_index(&bad_len).is_err());
        let mut bad_next = sample_new();
        bad_next.next_uid = 15;
        assert!(write_index(&bad_next).is_err());
        let mut bad_kw = sample_new();
        bad_kw.records[0].keywords.push(9);
        assert!(write_index(&bad_kw).is_err());
    }

    /// Tiny deterministic PRNG for the mutation test.
    fn rng(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    /// Truncations and bit flips must never panic.
    pub(crate) fn mutate_all(index: Option<&[u8]>, log: Option<&[u8]>, rounds: usize) {
        let mut s = 0x1234_5678_9abc_def0u64;
        for (which, buf) in [(0, index), (1, log)] {
            let Some(buf) = buf else { continue };
            for cut in 0..buf.len() {
                let b = &buf[..cut];
                let _ = if which == 0 {
                    MailIndex::from_bytes(Some(b), log, None)
                } else {
                    MailIndex::from_bytes(index, Some(b), None)
                };
            }
            for _ in 0..rounds {
                let mut m = buf.to_vec();
                for _ in 0..1 + rng(&mut s) % 4 {
                    let i = (rng(&mut s) % m.len().max(1) as u64) as usize;
                    if let Some(x) = m.get_mut(i) {
                        *x ^= 1 << (rng(&mut s) % 8);
                        if rng(&mut s).is_multiple_of(4) {
                            *x = rng(&mut s) as u8;
                        }
                    }
                }
                let _ = if which == 0 {
                    MailIndex::from_bytes(Some(&m), log, None)
                } else {
                    MailIndex::from_bytes(index, Some(&m), None)
                };
            }
        }
    }

    #[test]
    fn garbage_never_panics() {
        let idx = write_index(&sample_new()).unwrap();
        let mut l = log(
            1,
            &[
                append(&[30, 31]),
                kw_update(true, "x", 30, 31),
                intro(u32::MAX, "ref", 0, 2, 2),
            ],
        );
        l[4..8].copy_from_slice(&777u32.to_le_bytes());
        mutate_all(Some(&idx), Some(&l), 3000);
        let mut s = 42u64;
        for n in 0..500 {
            let v: Vec<u8> = (0..n).map(|_| rng(&mut s) as u8).collect();
            let _ = MailIndex::from_bytes(Some(&v), Some(&v), Some(&v));
            let _ = MailIndex::from_bytes(None, Some(&v), None);
        }
    }

    /// One method per log record kind ([`State::apply`]), each tested alone on a fresh
    /// state (modseq 5 for every record).
    mod record_kinds {
        use super::*;

        fn state(recs: &[(u32, Vec<u8>)]) -> Result<State> {
            let mut st = State::new_empty(1);
            for (pos, (t, d)) in recs.iter().enumerate() {
                st.apply("t", pos, *t, d, 5)?;
            }
            Ok(st)
        }

        fn uids(st: &State) -> Vec<u32> {
            st.records.iter().map(|r| r.uid).collect()
        }

        #[test]
        fn append_takes_rising_uids_and_skips_the_rest() {
            let st = state(&[append(&[1, 2, 5]), append(&[3, 0, 6])]).unwrap();
            assert_eq!(uids(&st), [1, 2, 5, 6]);
            assert_eq!(st.next_uid(), 7);
            assert!(
                state(&[(T_APPEND, vec![1, 0, 0])]).is_err(),
                "size not a multiple of 8"
            );
        }

        #[test]
        fn expunge_acts_only_when_external() {
            let base = append(&[1, 2, 3, 4]);
            let st = state(&[base.clone(), (T_EXPUNGE, le(&[2, 3]))]).unwrap();
            assert_eq!(uids(&st), [1, 2, 3, 4]);
            let st = state(&[base, (T_EXPUNGE | T_EXTERNAL, le(&[3, 2]))]).unwrap();
            assert_eq!(uids(&st), [1, 4]);
        }

        #[test]
        fn expunge_guid_removes_single_uids() {
            let mut d = le(&[2]);
            d.extend([0xaa; 16]);
            let st = state(&[append(&[1, 2, 3]), (T_EXPUNGE_GUID | T_EXTERNAL, d.clone())]);
            assert_eq!(uids(&st.unwrap()), [1, 3]);
            let st = state(&[append(&[1, 2, 3]), (T_EXPUNGE_GUID, d)]).unwrap();
            assert_eq!(uids(&st), [1, 2, 3]);
        }

        #[test]
        fn flag_update_adds_and_removes_on_a_range() {
            let set = (T_FLAG_UPDATE, [le(&[1, 2]), vec![0x09, 0, 0, 0]].concat());
            let clear = (T_FLAG_UPDATE, [le(&[2, 3]), vec![0, 0x08, 0, 0]].concat());
            let st = state(&[append(&[1, 2, 3]), set, clear]).unwrap();
            let flags: Vec<u8> = st.records.iter().map(|r| r.flags).collect();
            assert_eq!(flags, [0x09, 0x01, 0]);
        }

        #[test]
        fn header_update_writes_the_base_header_but_never_lowers_next_uid() {
            let mut uv = [24u16.to_le_bytes(), 4u16.to_le_bytes()].concat();
            uv.extend(le(&[4242]));
            let mut next = [(HDR_NEXT_UID as u16).to_le_bytes(), 4u16.to_le_bytes()].concat();
            next.extend(le(&[2]));
            let st = state(&[
                append(&[1, 7]),
                (T_HEADER_UPDATE, uv),
                (T_HEADER_UPDATE, next),
            ])
            .unwrap();
            assert_eq!(get_u32(&st.base, 24), Some(4242));
            assert_eq!(st.next_uid(), 8);
            let outside = [(4096u16).to_le_bytes(), 4u16.to_le_bytes()].concat();
            assert!(state(&[(T_HEADER_UPDATE, [outside, le(&[0])].concat())]).is_err());
        }

        #[test]
        fn ext_intro_registers_an_extension_for_the_records_after_it() {
            let st = state(&[append(&[1]), intro(u32::MAX, "ref", 8, 2, 2)]).unwrap();
            assert_eq!(st.exts.len(), 1);
            assert_eq!(st.exts[0].name, "ref");
            assert_eq!(st.exts[0].hdr, [0; 8]);
            assert!(matches!(st.cur, CurExt::Ext { idx: 0, .. }));
        }

        #[test]
        fn ext_records_without_an_intro_are_errors() {
            for t in [
                T_EXT_REC_UPDATE,
                T_EXT_ATOMIC_INC,
                T_EXT_HDR_UPDATE,
                T_EXT_RESET,
            ] {
                assert!(state(&[append(&[1]), (t, le(&[1, 1]))]).is_err(), "{t:#x}");
            }
        }

        #[test]
        fn ext_rec_update_and_atomic_inc_change_one_message() {
            let st = state(&[
                append(&[1, 2]),
                intro(u32::MAX, "ref", 0, 2, 2),
                (T_EXT_REC_UPDATE, le(&[2, 7])),
                (T_EXT_ATOMIC_INC, le(&[2, 3, 1, 1])),
            ])
            .unwrap();
            assert_eq!(st.records[0].ext[0], Some(vec![1, 0]));
            assert_eq!(st.records[1].ext[0], Some(vec![10, 0]));
            let under = (T_EXT_ATOMIC_INC, le(&[1, u32::MAX]));
            let intro = intro(u32::MAX, "ref", 0, 2, 2);
            assert!(
                state(&[append(&[1]), intro.clone(), under]).is_err(),
                "below zero"
            );
            let bad_uid = (T_EXT_REC_UPDATE, le(&[9, 7]));
            assert!(
                state(&[append(&[1]), intro, bad_uid]).is_err(),
                "uid past next_uid"
            );
        }

        #[test]
        fn ext_hdr_update_in_both_widths() {
            let st = state(&[
                intro(u32::MAX, "hdrx", 8, 0, 0),
                (T_EXT_HDR_UPDATE, vec![2, 0, 2, 0, 0xab, 0xcd, 0, 0]),
                (
                    T_EXT_HDR_UPDATE32,
                    [le(&[6, 1]), vec![0xee, 0, 0, 0]].concat(),
                ),
            ])
            .unwrap();
            assert_eq!(st.exts[0].hdr, [0, 0, 0xab, 0xcd, 0, 0, 0xee, 0]);
            let past = (T_EXT_HDR_UPDATE, vec![7, 0, 2, 0, 1, 2, 0, 0]);
            assert!(state(&[intro(u32::MAX, "hdrx", 8, 0, 0), past]).is_err());
        }

        #[test]
        fn ext_reset_clears_data_unless_preserved() {
            let recs = |preserve: u8| {
                vec![
                    append(&[1]),
                    intro(u32::MAX, "ref", 4, 2, 2),
                    (T_EXT_HDR_UPDATE, vec![0, 0, 1, 0, 9, 0, 0, 0]),
                    (T_EXT_REC_UPDATE, le(&[1, 7])),
                    (T_EXT_RESET, [le(&[3]), vec![preserve, 0, 0, 0]].concat()),
                ]
            };
            let st = state(&recs(0)).unwrap();
            assert_eq!(st.exts[0].reset_id, 3);
            assert_eq!(
                (st.exts[0].hdr.as_slice(), &st.records[0].ext[0]),
                (&[0u8; 4][..], &None)
            );
            let st = state(&recs(1)).unwrap();
            assert_eq!(st.exts[0].hdr, [9, 0, 0, 0]);
            assert_eq!(st.records[0].ext[0], Some(vec![7, 0]));
        }

        #[test]
        fn keyword_update_registers_names_and_keyword_reset_clears() {
            let st = state(&[
                append(&[1, 2, 3]),
                kw_update(true, "work", 1, 3),
                kw_update(false, "work", 2, 2),
                kw_update(false, "never", 1, 3),
            ])
            .unwrap();
            assert_eq!(st.keywords, [b"work".to_vec()]);
            assert!(st.exts.iter().any(|x| x.name == EXT_KEYWORDS));
            let kws: Vec<&[u32]> = st.records.iter().map(|r| r.keywords.as_slice()).collect();
            assert_eq!(kws, [&[0][..], &[], &[0]]);
            let st = state(&[
                append(&[1, 2]),
                kw_update(true, "work", 1, 2),
                (T_KEYWORD_RESET, le(&[2, 2])),
            ])
            .unwrap();
            assert_eq!(st.records[0].keywords, [0]);
            assert!(st.records[1].keywords.is_empty());
            assert!(state(&[kw_update(true, "", 1, 1)]).is_err(), "empty name");
        }

        #[test]
        fn modseq_update_only_raises() {
            let mut st = state(&[append(&[1, 2])]).unwrap();
            st.records[1].modseq = 50;
            st.apply("t", 9, T_MODSEQ_UPDATE, &le(&[1, 40, 0, 2, 9, 0]), 5)
                .unwrap();
            assert_eq!((st.records[0].modseq, st.records[1].modseq), (40, 50));
            assert!(st.apply("t", 9, T_MODSEQ_UPDATE, &le(&[1, 2]), 5).is_err());
        }

        #[test]
        fn ignored_kinds_pass_and_unknown_kinds_fail() {
            for t in [
                T_INDEX_DELETED,
                T_INDEX_UNDELETED,
                T_BOUNDARY,
                T_ATTRIBUTE_UPDATE,
            ] {
                assert!(state(&[(t, vec![1, 2, 3])]).is_ok(), "{t:#x}");
            }
            assert!(state(&[(0x40_0000, vec![])]).is_err());
        }
    }
}
