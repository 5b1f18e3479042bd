//! Reader and writer for Dovecot's mail index files.
//!
//! A Dovecot mail index consists of `dovecot.index` (a snapshot: base header, extension
//! headers and fixed-size message records) and `dovecot.index.log` (a transaction log whose
//! records are replayed on top of the snapshot; `dovecot.index.log.2` is the previous, rotated
//! log). The same format is used for the mdbox map index `storage/dovecot.map.index`.
//!
//! [`MailIndex::read`] loads the snapshot (if any) and replays the log(s) the way Dovecot 2.3
//! does, producing the current UID list, flags, keywords, extension data and modseqs.
//! `write_index` produces a fresh, self-contained `dovecot.index` (no log, no cache) that
//! Dovecot accepts as is.
//!
//! All integers are little-endian; files without the little-endian compat flag are refused.
//! No input can make this module panic: malformed input gives an `InvalidData` error, or the
//! replay stops at the point where Dovecot itself would stop (an unfinished transaction or a
//! zero-sized record at the end of the log).
//!
//! The module is split by job: `read.rs` parses `dovecot.index` (base header, extension
//! headers, keyword names, records) and turns the replayed state into a [`MailIndex`];
//! `log.rs` parses `dovecot.index.log` and replays its records on that state (one method
//! per record kind); `write.rs` writes what a restore needs (a fresh `dovecot.index` and the
//! empty log that goes with it). This file holds the types they share.

use std::fmt::Display;
use std::io;

mod log;
mod read;
mod write;

pub(crate) use write::{write_index, write_log_header};

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

/// `\Deleted`.
const FLAG_DELETED: u8 = 0x04;
/// `\Seen`.
const FLAG_SEEN: u8 = 0x08;

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
pub(crate) struct NewIndex {
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
pub(crate) struct NewExt {
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
pub(crate) struct NewRecord {
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
}
