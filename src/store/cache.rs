//! Dovecot's `dovecot.index.cache`, for the one field maildump keeps of it: the save date
//! (`date.save`, IMAP SAVEDATE). Maildir and sdbox keep it nowhere else; without it
//! Dovecot shows a file's change time, which after a restore is the restore time.
//!
//! The cache is a disposable file that Dovecot may purge or rebuild at any time, so
//! reading it never fails a backup: [`save_dates`] gives the dates, or a text saying why
//! there are none (a foreign, stale or damaged cache). [`attach`] builds, for a restore, a
//! cache holding only the save dates, and the index extension pointing at it.
//!
//! Layout (Dovecot 2.3, `lib-index/mail-cache-private.h`; all integers little-endian as
//! the index): a 32-byte header `{u8 major=1, u8 sizeof(uoff_t)=8, u8 minor=1, u8 0,
//! u32 indexid, u32 file_seq, u32 continued_record_count, u32 record_count,
//! u32 used_file_size, u32 deleted_record_count, u32 field_header_offset}`; field headers
//! `{u32 next_offset, u32 size, u32 count, u32 last_used[count], u32 size[count],
//! u8 type[count], u8 decision[count], names NUL-terminated}` chained through
//! `next_offset` (the last one is current; offsets in headers are encoded 7 bits per byte);
//! records `{u32 prev_offset, u32 size, {u32 field, [u32 size if variable], data, padding
//! to 4}...}`. The index's `cache` extension holds each message's newest record offset,
//! and its reset id is the `file_seq` of the cache file those offsets belong to.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::model::{MessageMeta, Timestamp};
use crate::store::dbox::index::{MailIndex, NewExt, NewIndex};
use crate::store::nofollow::{DirFd, Kind};

/// The cache file of `dovecot.index`.
pub(crate) const FILE_NAME: &str = "dovecot.index.cache";
/// Name of the index extension holding record offsets into the cache.
const EXT_NAME: &str = "cache";
/// Name of the save date field.
const SAVE_DATE: &[u8] = b"date.save";
const MAJOR_VERSION: u8 = 1;
const MINOR_VERSION: u8 = 1;
/// `sizeof(uoff_t)` of the Dovecot that wrote the file (64-bit offsets).
const SIZEOF_UOFF_T: u8 = 8;
const HEADER_SIZE: usize = 32;
/// `MAIL_CACHE_FIELD_FIXED_SIZE`.
const TYPE_FIXED_SIZE: u8 = 0;
/// `MAIL_CACHE_DECISION_YES`: kept for all messages when Dovecot purges the cache.
const DECISION_YES: u8 = 2;
/// Size of a variable-size field, as the field header gives it.
const VARIABLE_SIZE: u32 = u32::MAX;
/// Largest field header or record read (Dovecot's own records stay far below: its
/// `mail_cache_record_max_size` is 64 KiB); larger ones count as damage.
const MAX_BLOCK: u32 = 16 * 1024 * 1024;

/// Save dates (unix seconds) by UID, as Dovecot's cache holds them for the messages of
/// `idx`, the index read from `dir`. Messages without a cached date are absent.
///
/// # Errors
/// Why there are no dates: [`Unused::Ignored`] when the cache belongs to another index,
/// is older than the index's offsets, or is damaged (any checked size or offset out of
/// range), as Dovecot itself would ignore it; [`Unused::Refused`] for a symlink or a
/// special file in its place.
pub(crate) fn save_dates(dir: &Path, idx: &MailIndex) -> Result<BTreeMap<u32, u32>, Unused> {
    let mut out = BTreeMap::new();
    let Some(ext) = idx.exts.iter().find(|x| x.name == EXT_NAME) else {
        return Ok(out);
    };
    let Some(file) = open(dir)? else {
        return Ok(out);
    };
    let cache = Cache::open(file, idx.indexid).map_err(Unused::Ignored)?;
    if cache.file_seq != ext.reset_id {
        return Err(Unused::Ignored(format!(
            "file_seq {} is not the index's {} (purged since)",
            cache.file_seq, ext.reset_id
        )));
    }
    let Some(field) = cache.field_of(SAVE_DATE).map_err(Unused::Ignored)? else {
        return Ok(out);
    };
    for r in &idx.records {
        let Some(off) = idx.ext_rec(r, EXT_NAME).and_then(le_u32_at(0)) else {
            continue;
        };
        if let Some(d) = cache.lookup(off, &field).map_err(Unused::Ignored)?
            && let Some(t) = le_u32_at(0)(&d)
            && t != 0
        {
            out.insert(r.uid, t);
        }
    }
    Ok(out)
}

/// Why a cache gives no save dates.
#[derive(Debug)]
pub(crate) enum Unused {
    /// Dovecot would not use it either (of another index, purged since, damaged): worth
    /// a debug line, not a warning.
    Ignored(String),
    /// A symlink or a special file where the cache should be: never read, a warning.
    Refused(String),
}

impl Unused {
    /// Put this as a line naming `who` (user and mailbox) and the cache in `dir` on
    /// `notes` (ignored) or `warnings` (refused).
    pub(crate) fn report(
        self,
        who: &str,
        dir: &Path,
        notes: &mut Vec<String>,
        warnings: &mut Vec<String>,
    ) {
        let path = dir.join(FILE_NAME);
        let (to, why) = match self {
            Unused::Ignored(w) => (notes, w),
            Unused::Refused(w) => (warnings, w),
        };
        to.push(format!(
            "{who}: Dovecot's index cache {} is not used, so save dates are not in the backup: {why}",
            path.display()
        ));
    }
}

/// The cache file in `dir`, `None` when there is none; a symlink or a special file (a
/// FIFO would block the open) is refused without being opened.
fn open(dir: &Path) -> Result<Option<File>, Unused> {
    let d = DirFd::open_root(dir).map_err(|e| Unused::Ignored(e.to_string()))?;
    let name = FILE_NAME.as_bytes();
    match d.stat_at(name) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Unused::Ignored(e.to_string())),
        Ok(st) if st.kind == Kind::Symlink => {
            return Err(Unused::Refused(
                "a symbolic link; not followed (nothing below a mail root is read through a symlink)".into(),
            ));
        }
        Ok(st) if st.kind != Kind::File => {
            return Err(Unused::Refused("not a regular file; not read".into()));
        }
        Ok(_) => {}
    }
    let f = d.open_file(name).map_err(|e| match e {
        crate::error::Error::StoreDamaged { .. } => Unused::Refused(e.to_string()),
        e => Unused::Ignored(e.to_string()),
    })?;
    match f.metadata() {
        Ok(m) if m.is_file() => Ok(Some(f)),
        Ok(_) => Err(Unused::Refused("not a regular file; not read".into())),
        Err(e) => Err(Unused::Ignored(e.to_string())),
    }
}

/// Give each message of `msgs` its save date from `dates` (by UID).
pub(crate) fn set_saved(msgs: &mut [MessageMeta], dates: &BTreeMap<u32, u32>) {
    for m in msgs {
        if let Some(&t) = dates.get(&m.uid.0) {
            m.saved = Some(Timestamp {
                secs: i64::from(t),
                nanos: 0,
            });
        }
    }
}

/// The save date of each of `msgs` by UID, as the cache holds it (unix seconds that fit
/// in 32 bits, not 0), for [`attach`].
pub(crate) fn saved_of(msgs: &[MessageMeta]) -> impl Fn(u32) -> Option<u32> + use<> {
    let dates: std::collections::HashMap<u32, u32> = msgs
        .iter()
        .filter_map(|m| {
            let t = u32::try_from(m.saved?.secs).ok().filter(|&t| t != 0)?;
            Some((m.uid.0, t))
        })
        .collect();
    move |uid| dates.get(&uid).copied()
}

/// A `u32` at `off` of a byte slice, little-endian.
fn le_u32_at(off: usize) -> impl Fn(&[u8]) -> Option<u32> {
    move |b| {
        b.get(off..off.checked_add(4)?)
            .and_then(|s| s.try_into().ok())
            .map(u32::from_le_bytes)
    }
}

/// `mail_index_offset_to_uint32`: an offset stored 7 bits per byte (high bits set).
fn decode_offset(v: u32) -> u32 {
    let b = u32::from_be_bytes(v.to_le_bytes());
    if b & 0x8080_8080 != 0x8080_8080 {
        return 0;
    }
    ((b & 0x7f)
        | ((b & 0x7f00) >> 8 << 7)
        | ((b & 0x7f_0000) >> 16 << 14)
        | ((b & 0x7f00_0000) >> 24 << 21))
        << 2
}

/// `mail_index_uint32_to_offset`, for offsets below 2^30 that are multiples of 4.
fn encode_offset(off: u32) -> u32 {
    let o = off >> 2;
    let v = 0x80
        | (o & 0x7f)
        | 0x8000
        | (((o & 0x3f80) >> 7) << 8)
        | 0x80_0000
        | (((o & 0x1f_c000) >> 14) << 16)
        | 0x8000_0000
        | (((o & 0x0fe0_0000) >> 21) << 24);
    u32::from_le_bytes(v.to_be_bytes())
}

/// An open cache file whose header matched the index.
struct Cache {
    file: File,
    len: u64,
    file_seq: u32,
    field_header_offset: u32,
}

/// One field of the current field header.
struct Field {
    /// Its number in records.
    idx: u32,
    /// Sizes of all fields (to step over the others).
    sizes: Vec<u32>,
}

impl Cache {
    fn open(file: File, indexid: u32) -> Result<Cache, String> {
        let len = file.metadata().map_err(|e| e.to_string())?.len();
        let mut c = Cache {
            file,
            len,
            file_seq: 0,
            field_header_offset: 0,
        };
        let h = c.read(0, HEADER_SIZE as u32, "header")?;
        if h[0] != MAJOR_VERSION || h[1] != SIZEOF_UOFF_T {
            return Err(format!("unsupported version {}/{}", h[0], h[1]));
        }
        let at = |o| le_u32_at(o)(&h).unwrap_or(0);
        if at(4) != indexid {
            return Err(format!("indexid {} is not the index's {indexid}", at(4)));
        }
        c.file_seq = at(8);
        if c.file_seq == 0 {
            return Err("file_seq is 0".into());
        }
        c.field_header_offset = decode_offset(at(28));
        Ok(c)
    }

    /// `size` bytes at `off`, checked against the file's size.
    fn read(&self, off: u32, size: u32, what: &str) -> Result<Vec<u8>, String> {
        let end = u64::from(off) + u64::from(size);
        if end > self.len || size > MAX_BLOCK {
            return Err(format!(
                "{what} of {size} bytes at offset {off} is outside the file ({} bytes)",
                self.len
            ));
        }
        let mut buf = vec![0u8; size as usize];
        self.file
            .read_exact_at(&mut buf, u64::from(off))
            .map_err(|e: io::Error| format!("{what} at offset {off}: {e}"))?;
        Ok(buf)
    }

    /// The field named `name` in the current (last) field header, if registered.
    fn field_of(&self, name: &[u8]) -> Result<Option<Field>, String> {
        let mut off = self.field_header_offset;
        if off == 0 {
            return Err("no field header".into());
        }
        loop {
            let next =
                decode_offset(le_u32_at(0)(&self.read(off, 4, "field header")?).unwrap_or(0));
            if next == 0 {
                break;
            }
            if next <= off {
                return Err(format!("field header at {off} links back to {next}"));
            }
            off = next;
        }
        let fixed = self.read(off, 12, "field header")?;
        let size = le_u32_at(4)(&fixed).unwrap_or(0);
        let count = le_u32_at(8)(&fixed).unwrap_or(0);
        let names_at = count
            .checked_mul(10)
            .and_then(|n| n.checked_add(12))
            .filter(|&n| n <= size)
            .ok_or_else(|| format!("field header at {off}: {count} fields in {size} bytes"))?;
        let hdr = self.read(off, size, "field header")?;
        let n = count as usize;
        let sizes: Vec<u32> = (0..n)
            .map(|i| le_u32_at(12 + 4 * n + 4 * i)(&hdr).unwrap_or(0))
            .collect();
        let types = hdr.get(12 + 8 * n..12 + 9 * n).unwrap_or(&[]);
        let names = hdr.get(names_at as usize..).unwrap_or(&[]);
        let found = names.split(|&b| b == 0).take(n).position(|nm| nm == name);
        let Some(i) = found else {
            return Ok(None);
        };
        if types.get(i) != Some(&TYPE_FIXED_SIZE) || sizes.get(i) != Some(&4) {
            return Err(format!(
                "field {} is not a 4-byte fixed-size field",
                String::from_utf8_lossy(name)
            ));
        }
        Ok(Some(Field {
            idx: i as u32,
            sizes,
        }))
    }

    /// The data of `field` in the record chain starting at `off` (newest record first,
    /// as Dovecot looks it up), if any record holds it.
    fn lookup(&self, mut off: u32, field: &Field) -> Result<Option<Vec<u8>>, String> {
        // Each record is read once: a chain longer than the file is a loop.
        let mut seen: u64 = 0;
        while off != 0 {
            if !off.is_multiple_of(4) {
                return Err(format!("record offset {off} is not aligned"));
            }
            let head = self.read(off, 8, "record")?;
            let size = le_u32_at(4)(&head).unwrap_or(0);
            if size < 8 {
                return Err(format!("record at {off}: size {size}"));
            }
            seen += u64::from(size);
            if seen > self.len {
                return Err(format!("record chain through {off} loops"));
            }
            let rec = self.read(off, size, "record")?;
            if let Some(d) = find_field(&rec, field).map_err(|e| format!("record at {off}: {e}"))? {
                return Ok(Some(d));
            }
            off = le_u32_at(0)(&head).unwrap_or(0);
        }
        Ok(None)
    }
}

/// The data of `field` in one record, stepping over the other fields.
fn find_field(rec: &[u8], field: &Field) -> Result<Option<Vec<u8>>, String> {
    let mut pos = 8usize;
    while pos + 4 <= rec.len() {
        let f = le_u32_at(pos)(rec).unwrap_or(u32::MAX);
        pos += 4;
        let mut size = *field
            .sizes
            .get(f as usize)
            .ok_or_else(|| format!("field {f} is not in the field header"))?;
        if size == VARIABLE_SIZE {
            size = le_u32_at(pos)(rec).ok_or("variable field without size")?;
            pos += 4;
        }
        let end = pos
            .checked_add(size as usize)
            .filter(|&e| e <= rec.len())
            .ok_or_else(|| format!("field {f} of {size} bytes ends outside the record"))?;
        if f == field.idx {
            return Ok(rec.get(pos..end).map(<[u8]>::to_vec));
        }
        pos = end.next_multiple_of(4);
    }
    if pos != rec.len() {
        return Err("size is not a multiple of 4".into());
    }
    Ok(None)
}

/// For a restore: give `new` (an index about to be written) a `cache` extension whose
/// records point into a fresh cache file holding `saved(uid)` of each record that has one,
/// and return that file's bytes (to write as [`FILE_NAME`] beside the index). `None`, and
/// `new` unchanged, when no record has a save date. The cache's `file_seq` is the index's
/// `indexid` (Dovecot uses the creation time for both); its `date.save` decision is "yes",
/// so that Dovecot keeps the dates when it purges the cache.
pub(crate) fn attach(new: &mut NewIndex, saved: &dyn Fn(u32) -> Option<u32>) -> Option<Vec<u8>> {
    let dates: Vec<Option<u32>> = new.records.iter().map(|r| saved(r.uid)).collect();
    let count = dates.iter().flatten().count();
    if count == 0 {
        return None;
    }
    let file_seq = new.indexid.max(1);
    let mut out = vec![0u8; HEADER_SIZE];
    // The field header: one field.
    let fh = out.len();
    let mut names = SAVE_DATE.to_vec();
    names.push(0);
    let fh_size = 12 + 10 + names.len();
    for v in [0, fh_size as u32, 1, new.indexid, 4] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&[TYPE_FIXED_SIZE, DECISION_YES]);
    out.extend_from_slice(&names);
    out.resize(out.len().next_multiple_of(4), 0);
    let mut offsets = Vec::with_capacity(dates.len());
    for d in &dates {
        let Some(t) = d else {
            offsets.push(0u32);
            continue;
        };
        offsets.push(u32::try_from(out.len()).unwrap_or(0));
        for v in [0u32, 16, 0, *t] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    let len = u32::try_from(out.len()).ok().filter(|&l| l < 0x4000_0000)?;
    out[0] = MAJOR_VERSION;
    out[1] = SIZEOF_UOFF_T;
    out[2] = MINOR_VERSION;
    let hdr = [
        new.indexid,
        file_seq,
        0,
        u32::try_from(count).ok()?,
        len,
        0,
        encode_offset(fh as u32),
    ];
    for (i, v) in hdr.iter().enumerate() {
        out[4 + 4 * i..8 + 4 * i].copy_from_slice(&v.to_le_bytes());
    }
    new.exts.push(NewExt {
        name: EXT_NAME.into(),
        hdr: Vec::new(),
        record_size: 4,
        record_align: 4,
        reset_id: file_seq,
    });
    for (r, o) in new.records.iter_mut().zip(offsets) {
        r.ext.push(o.to_le_bytes().to_vec());
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::dbox::index::{NewRecord, write_index};

    #[test]
    fn offsets_encode_as_dovecot_does() {
        // Dovecot's own file: field header at 32 stored as 80 80 80 88.
        assert_eq!(encode_offset(32).to_le_bytes(), [0x80, 0x80, 0x80, 0x88]);
        for off in [0u32, 4, 32, 508, 512, 65_536, 0x3fff_fffc] {
            assert_eq!(decode_offset(encode_offset(off)), off);
        }
        assert_eq!(decode_offset(0x1234), 0);
    }

    /// A cache written by [`attach`] reads back through the index written with it.
    #[test]
    fn attach_then_read() {
        let mut new = NewIndex {
            uid_validity: 5,
            next_uid: 9,
            indexid: 1_700_000_000,
            records: [3u32, 4, 8]
                .iter()
                .map(|&uid| NewRecord {
                    uid,
                    ..NewRecord::default()
                })
                .collect(),
            ..NewIndex::default()
        };
        let dates = |uid: u32| (uid != 4).then_some(1_000_000 + uid);
        let bytes = attach(&mut new, &dates).expect("dates");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("dovecot.index"),
            write_index(&new).expect("index"),
        )
        .expect("write");
        std::fs::write(dir.path().join(FILE_NAME), &bytes).expect("write");
        let idx = MailIndex::read(dir.path(), "dovecot.index")
            .expect("read")
            .expect("index");
        let got = save_dates(dir.path(), &idx).expect("dates");
        assert_eq!(got, BTreeMap::from([(3, 1_000_003), (8, 1_000_008)]));
        // Every truncation and every flipped byte gives dates or a reason, never a panic.
        for cut in 0..bytes.len() {
            std::fs::write(dir.path().join(FILE_NAME), &bytes[..cut]).expect("write");
            let _ = save_dates(dir.path(), &idx);
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0xff;
            std::fs::write(dir.path().join(FILE_NAME), &b).expect("write");
            let _ = save_dates(dir.path(), &idx);
        }
    }
}
