//! [`Archive`]: reading an archive file, through its index or, when the index is missing or
//! damaged, by scanning the frames ([`Archive::recover`]).
//!
//! Nothing read from the file is trusted: every length is checked against the limits in
//! [`super::spec`] before anything is allocated, every frame's zstd checksum is checked, and
//! damage is reported naming the frame, its offset and the items it holds.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::index::{
    Directory, FrameEntry, Location, MailboxEntry, MailboxRecord, Manifest, UserRecord,
};
use super::spec::*;
use super::tar::{EntryType, HeaderError, decode_header, parse_pax};
use super::version;
use crate::error::{Error, IoContext, Result};

/// Where the mailbox catalogs are.
enum Catalogs {
    /// In the file, from `base` (the catalog area of the INDEX payload) to `end` (the end
    /// of the INDEX frame).
    Index { base: u64, end: u64 },
    /// Rebuilt by scanning, in the order of [`Directory::mailboxes`].
    Memory(Vec<MailboxRecord>),
}

/// An opened archive file.
pub struct Archive {
    file: File,
    path: PathBuf,
    /// The index directory (read from the file, or rebuilt by a scan).
    pub dir: Directory,
    catalogs: Catalogs,
    /// Format version found in the HEADER frame.
    pub version: (u16, u16),
    /// Damage found while opening (only a recovering open reports any).
    pub damage: Vec<String>,
}

fn corrupt_at(off: u64, detail: impl Into<String>) -> Error {
    Error::corrupt(format!("offset {off}"), detail)
}

fn read_exact_at(file: &File, buf: &mut [u8], off: u64, what: &str) -> Result<()> {
    file.read_exact_at(buf, off).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            Error::corrupt(format!("{what} at offset {off}"), "archive is truncated")
        } else {
            Error::io("<archive>", e)
        }
    })
}

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}
fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// Decompress one zstd frame held in `comp`, refusing more than `limit` bytes. The
/// output buffer is reserved up front only for a declared size of at most [`FRAME_LIMIT`];
/// a frame that declares no size (or more) is decoded as a stream into a buffer that
/// grows with what it really yields.
fn decompress_bounded(comp: &[u8], limit: u64, what: &str) -> Result<Vec<u8>> {
    let declared = zstd::zstd_safe::get_frame_content_size(comp)
        .map_err(|_| Error::corrupt(what, "not a zstd frame"))?;
    let zstd_err = |e: io::Error| Error::corrupt(what, format!("zstd: {e}"));
    match declared {
        Some(n) if n > limit => Err(Error::corrupt(
            what,
            format!("declares {n} bytes, over the limit"),
        )),
        Some(n) if n <= FRAME_LIMIT => {
            let cap = usize::try_from(n).map_err(|_| Error::corrupt(what, "too large"))?;
            zstd::bulk::decompress(comp, cap).map_err(zstd_err)
        }
        _ => {
            let mut dec = zstd::stream::read::Decoder::with_buffer(comp)
                .map_err(zstd_err)?
                .single_frame();
            let mut out = Vec::new();
            (&mut dec)
                .take(limit.saturating_add(1))
                .read_to_end(&mut out)
                .map_err(zstd_err)?;
            if out.len() as u64 > limit {
                return Err(Error::corrupt(what, "decompresses to more than the limit"));
            }
            Ok(out)
        }
    }
}

/// Check the HEADER frame; returns the format version.
///
/// # Errors
/// Not an archive, or an unsupported major version.
pub fn check_header(first: &[u8]) -> Result<(u16, u16)> {
    let v = version::header_version(first)?;
    version::decide(v, None, None).map(|(v, _)| v)
}

/// The version of the FOOTER at the end of the file, when there is a valid one.
fn footer_version(file: &File, len: u64) -> Option<version::Version> {
    let off = len.checked_sub(FOOTER_FRAME_LEN as u64)?;
    let mut foot = [0u8; FOOTER_FRAME_LEN];
    file.read_exact_at(&mut foot, off).ok()?;
    version::footer_version(&foot)
}

/// The HEADER's version, whatever its major (checked against the other copies later).
fn header_of(file: &File) -> Result<version::Version> {
    let mut first = [0u8; SKIPPABLE_HEADER_LEN + HEADER_PAYLOAD_LEN];
    read_exact_at(file, &mut first, 0, "header frame")?;
    version::header_version(&first)
}

/// An unsupported-version error for a HEADER whose major this build does not read.
fn check_header_major<T>(header: version::Version) -> Result<T> {
    Err(Error::UnsupportedVersion {
        major: header.0,
        minor: header.1,
        supported: FORMAT_MAJOR,
    })
}

impl Archive {
    /// Open an archive through its index. `check_digest` also verifies the SHA-256 of the
    /// whole index (catalogs are zstd-checksummed either way).
    ///
    /// # Errors
    /// I/O errors, an unknown major version, or a missing or damaged footer/index.
    pub fn open(path: &Path, check_digest: bool) -> Result<Self> {
        Self::open_at(path, check_digest).map_err(|e| e.in_archive(path))
    }

    fn open_at(path: &Path, check_digest: bool) -> Result<Self> {
        let file = File::open(path).at(path)?;
        let len = file.metadata().at(path)?.len();
        let header = header_of(&file)?;
        let footer = footer_version(&file, len);
        version::check_early(header, footer)?;
        let (dir, base, end) = read_index(&file, len, check_digest)?;
        let m = (dir.manifest.format_major, dir.manifest.format_minor);
        let (version, damage) = version::decide(header, footer, Some(m))?;
        Ok(Archive {
            file,
            path: path.to_path_buf(),
            dir,
            catalogs: Catalogs::Index { base, end },
            version,
            damage: damage.into_iter().collect(),
        })
    }

    /// Open through the index, or when that fails for damage, rebuild the index by scanning
    /// the whole archive. Damage found is listed in [`Archive::damage`].
    ///
    /// # Errors
    /// I/O errors, an unknown major version, or an archive with nothing recoverable.
    pub fn open_or_recover(path: &Path) -> Result<Self> {
        match Archive::open(path, true) {
            Ok(a) => Ok(a),
            Err(e @ Error::Corrupt { .. }) => {
                let mut a = Archive::recover(path)?;
                a.damage
                    .insert(0, format!("index unusable ({e}); rebuilt by scanning"));
                Ok(a)
            }
            Err(e) => Err(e),
        }
    }

    /// Rebuild the directory and catalogs by scanning every frame.
    ///
    /// # Errors
    /// I/O errors, or an archive whose header frame is wrong.
    pub fn recover(path: &Path) -> Result<Self> {
        Self::recover_at(path).map_err(|e| e.in_archive(path))
    }

    fn recover_at(path: &Path) -> Result<Self> {
        let file = File::open(path).at(path)?;
        let len = file.metadata().at(path)?.len();
        let header = header_of(&file)?;
        let footer = footer_version(&file, len);
        version::check_early(header, footer)?;
        let scan = scan(&file, None)?;
        let (dir, cats, mut damage) = match scan.rebuild() {
            Ok(r) => r,
            // Nothing this build can read, and the HEADER says why.
            Err(_) if header.0 != FORMAT_MAJOR => return check_header_major(header),
            Err(e) => return Err(e),
        };
        let m = (dir.manifest.format_major, dir.manifest.format_minor);
        let (version, vdamage) = version::decide(header, footer, Some(m))?;
        damage.splice(0..0, scan.damage.iter().cloned());
        damage.splice(0..0, vdamage);
        Ok(Archive {
            file,
            path: path.to_path_buf(),
            dir,
            catalogs: Catalogs::Memory(cats),
            version,
            damage,
        })
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.dir.manifest
    }

    /// The archive's file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The catalog of one mailbox of [`Directory::mailboxes`].
    ///
    /// # Errors
    /// A damaged catalog.
    pub fn catalog(&self, i: usize) -> Result<MailboxRecord> {
        let entry: &MailboxEntry = self
            .dir
            .mailboxes
            .get(i)
            .ok_or_else(|| Error::NotFound(format!("mailbox #{i}")))?;
        self.read_catalog(entry, i)
    }

    /// The catalog of one mailbox of [`Directory::gone`] (deleted since the parent).
    ///
    /// # Errors
    /// A damaged catalog.
    pub fn gone_catalog(&self, j: usize) -> Result<MailboxRecord> {
        let entry: &MailboxEntry = self
            .dir
            .gone
            .get(j)
            .ok_or_else(|| Error::NotFound(format!("deleted mailbox #{j}")))?;
        self.read_catalog(entry, self.dir.mailboxes.len() + j)
    }

    /// The compressed bytes of one mailbox catalog, as stored (for copying into a child
    /// archive); `None` for an archive whose index was rebuilt by scanning.
    ///
    /// # Errors
    /// I/O errors, an oversized entry.
    pub fn raw_catalog(&self, i: usize) -> Result<Option<Vec<u8>>> {
        let Catalogs::Index { base, end } = &self.catalogs else {
            return Ok(None);
        };
        let entry = self
            .dir
            .mailboxes
            .get(i)
            .ok_or_else(|| Error::NotFound(format!("mailbox #{i}")))?;
        self.catalog_bytes(*base, *end, entry).map(Some)
    }

    /// The compressed catalog of `entry`, read from the catalog area at `base`, which ends
    /// at `end`: its extent is checked before anything is allocated for it.
    fn catalog_bytes(&self, base: u64, end: u64, entry: &MailboxEntry) -> Result<Vec<u8>> {
        let what = format!("index catalog of {}/{}", entry.user, entry.name);
        let off = base
            .checked_add(entry.catalog_offset)
            .ok_or_else(|| Error::corrupt(&what, "offset overflow"))?;
        let stop = off.checked_add(entry.catalog_len);
        if stop.is_none_or(|s| s > end) || entry.catalog_len > JSON_LIMIT {
            return Err(Error::corrupt(
                what,
                format!(
                    "extends past the end of the index (catalog at offset {off}, {} bytes; the index ends at {end})",
                    entry.catalog_len
                ),
            ));
        }
        let mut comp = vec![0u8; usize::try_from(entry.catalog_len).unwrap_or(0)];
        read_exact_at(&self.file, &mut comp, off, &what)?;
        Ok(comp)
    }

    fn read_catalog(&self, entry: &MailboxEntry, i: usize) -> Result<MailboxRecord> {
        match &self.catalogs {
            Catalogs::Memory(v) => v
                .get(i)
                .cloned()
                .ok_or_else(|| Error::NotFound(format!("mailbox #{i}"))),
            Catalogs::Index { base, end } => {
                let what = format!("index catalog of {}/{}", entry.user, entry.name);
                let comp = self.catalog_bytes(*base, *end, entry)?;
                let json = decompress_bounded(&comp, JSON_LIMIT, &what)?;
                let mut rec: MailboxRecord = serde_json::from_slice(&json)
                    .map_err(|e| Error::corrupt(&what, e.to_string()))?;
                check_sizes(&rec).map_err(|e| Error::corrupt(&what, e))?;
                if let Some(of) = &entry.catalog_of {
                    // A catalog copied from the archive that wrote it: its bytes are there.
                    rec.deleted.clear();
                    for m in &mut rec.messages {
                        m.refer_to(of);
                    }
                }
                fill_derived(&mut rec);
                Ok(rec)
            }
        }
    }

    /// Copy the `size` bytes of the member whose data starts at `loc` to `out`, checking
    /// them against `sha256` (hex). The member's own tar header must say `size`, so that
    /// not a byte outside the member is read; content of up to [`VERIFY_BEFORE_WRITE`]
    /// bytes is checked before the first byte is written.
    ///
    /// # Errors
    /// Damaged frames, a size or hash mismatch (`item` names the message), write errors on
    /// `out`.
    pub fn copy_content(
        &self,
        cursor: &mut FrameCursor,
        loc: Location,
        size: u64,
        sha256: &str,
        item: &str,
        out: &mut dyn Write,
    ) -> Result<()> {
        let held = self.member_size(cursor, loc, item)?;
        if held != size {
            return Err(Error::corrupt(
                item,
                format!("the record says {size} bytes, its member holds {held}"),
            ));
        }
        if size > VERIFY_BEFORE_WRITE {
            return self.read_content(cursor, loc, size, sha256, item, out);
        }
        let mut buf = Vec::with_capacity(crate::model::capacity_hint(size));
        self.read_content(cursor, loc, size, sha256, item, &mut buf)?;
        out.write_all(&buf).map_err(|e| Error::io("<output>", e))
    }

    /// The length of the regular tar member whose data starts at `loc`, from its header
    /// (the 512 bytes before `loc`, which may end the frame before).
    fn member_size(&self, cursor: &mut FrameCursor, loc: Location, item: &str) -> Result<u64> {
        let lost = |e: Error| Error::corrupt(item, format!("content lost: {e}"));
        let mut block = [0u8; TAR_BLOCK];
        let mut need = TAR_BLOCK;
        let mut frame = loc.frame;
        let mut end = usize::try_from(loc.offset).unwrap_or(usize::MAX);
        loop {
            let data = cursor
                .frame(&self.file, &self.dir.frames, frame)
                .map_err(lost)?;
            let before = data.get(..end).ok_or_else(|| {
                Error::corrupt(
                    item,
                    format!("location {} is past the end of frame {frame}", loc.offset),
                )
            })?;
            let take = need.min(before.len());
            block[need - take..need].copy_from_slice(&before[before.len() - take..]);
            need -= take;
            if need == 0 {
                break;
            }
            frame = frame
                .checked_sub(1)
                .ok_or_else(|| Error::corrupt(item, "no tar header before its location"))?;
            end = usize::MAX;
        }
        match decode_header(&block) {
            Ok(h) if h.kind == EntryType::Regular => Ok(h.size),
            _ => Err(Error::corrupt(
                item,
                format!(
                    "no tar member starts at frame {} offset {}",
                    loc.frame, loc.offset
                ),
            )),
        }
    }

    /// Copy `size` bytes from `loc` on to `out`, then check their SHA-256.
    fn read_content(
        &self,
        cursor: &mut FrameCursor,
        loc: Location,
        size: u64,
        sha256: &str,
        item: &str,
        out: &mut dyn Write,
    ) -> Result<()> {
        let mut hasher = Sha256::new();
        let mut frame = loc.frame;
        let mut off = loc.offset;
        let mut left = size;
        while left > 0 {
            let data = cursor
                .frame(&self.file, &self.dir.frames, frame)
                .map_err(|e| Error::corrupt(item, format!("content lost: {e}")))?;
            let start = usize::try_from(off).unwrap_or(usize::MAX);
            let avail = data.get(start..).ok_or_else(|| {
                Error::corrupt(
                    item,
                    format!("location {off} is past the end of frame {frame}"),
                )
            })?;
            let n = avail.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            hasher.update(&avail[..n]);
            out.write_all(&avail[..n])
                .map_err(|e| Error::io("<output>", e))?;
            left -= n as u64;
            frame = frame
                .checked_add(1)
                .ok_or_else(|| Error::corrupt(item, "frame number overflow"))?;
            off = 0;
        }
        let got = hex::encode(hasher.finalize());
        if got != sha256 {
            return Err(Error::corrupt(
                item,
                format!("SHA-256 mismatch: stored {sha256}, read {got}"),
            ));
        }
        Ok(())
    }
}

/// Content up to this length is read and checked whole before any of it is written.
pub const VERIFY_BEFORE_WRITE: u64 = 16 << 20;

/// Every size of a catalog's records within the format's limit (spec 6.2, MESSAGE_LIMIT),
/// so that nothing is summed or allocated by a size over it.
///
/// # Errors
/// The first record with a size over the limit, named by UID.
pub fn check_sizes(rec: &MailboxRecord) -> std::result::Result<(), String> {
    for m in rec.messages.iter().chain(&rec.deleted) {
        let c = &m.message.content;
        let sizes = std::iter::once(c.size)
            .chain(c.data.as_ref().map(|d| d.size))
            .chain(c.parts.iter().map(|p| p.size));
        for n in sizes {
            if n > MESSAGE_LIMIT {
                return Err(format!(
                    "UID {}: size {n} is over the format's limit of {MESSAGE_LIMIT} bytes",
                    m.message.uid
                ));
            }
        }
    }
    Ok(())
}

/// Fill in what the writer left out because it is derivable: member paths and GUIDs equal
/// to the Maildir file name's base.
fn fill_derived(rec: &mut MailboxRecord) {
    for m in &mut rec.messages {
        m.message.fill_derived_guid();
        if m.member.is_empty() && !m.is_external() {
            m.member = match &m.message.content.data {
                Some(d) => format!("{PARTS_DIR}/{}", d.sha256),
                None => super::writer::message_member(&rec.user, &rec.mailbox.name, m.message.uid),
            };
        }
    }
    for m in &mut rec.deleted {
        m.message.fill_derived_guid();
        if m.member.is_empty() && !m.is_external() {
            if let Some(d) = &m.message.content.data {
                m.member = format!("{PARTS_DIR}/{}", d.sha256);
                continue;
            }
            m.member = super::writer::deleted_member(
                &rec.user,
                &rec.mailbox.name,
                rec.mailbox.uidvalidity,
                m.message.uid,
            );
        }
    }
}

/// Read the footer and index; returns the directory and the file offsets where the
/// catalog area starts and the INDEX frame ends. The versions are checked by the caller
/// ([`version::decide`]).
fn read_index(file: &File, len: u64, check_digest: bool) -> Result<(Directory, u64, u64)> {
    let fl = FOOTER_FRAME_LEN as u64;
    if len < fl + (SKIPPABLE_HEADER_LEN + HEADER_PAYLOAD_LEN) as u64 {
        return Err(corrupt_at(len, "archive is truncated: no footer"));
    }
    let foot_off = len - fl;
    let mut foot = [0u8; FOOTER_FRAME_LEN];
    read_exact_at(file, &mut foot, foot_off, "footer")?;
    if le_u32(&foot) != FOOTER_FRAME_MAGIC
        || le_u32(&foot[4..]) as usize != FOOTER_PAYLOAD_LEN
        || &foot[8..16] != FOOTER_MAGIC
    {
        return Err(corrupt_at(
            foot_off,
            "archive is truncated or damaged: no valid footer at its end",
        ));
    }
    let p = &foot[SKIPPABLE_HEADER_LEN..];
    let idx_off = le_u64(&p[16..24]);
    let idx_len = le_u64(&p[24..32]);
    let digest = &p[32..64];
    let idx_end = idx_off
        .checked_add(idx_len)
        .filter(|&e| e == foot_off)
        .ok_or_else(|| corrupt_at(foot_off, "footer points outside the file"))?;
    if idx_len > INDEX_LIMIT || idx_len < (SKIPPABLE_HEADER_LEN + 16) as u64 {
        return Err(corrupt_at(idx_off, "index length out of range"));
    }
    let mut ih = [0u8; SKIPPABLE_HEADER_LEN + 16];
    read_exact_at(file, &mut ih, idx_off, "index")?;
    if le_u32(&ih) != INDEX_FRAME_MAGIC
        || u64::from(le_u32(&ih[4..])) + SKIPPABLE_HEADER_LEN as u64 != idx_len
        || &ih[8..16] != INDEX_MAGIC
    {
        return Err(corrupt_at(idx_off, "index frame header is damaged"));
    }
    let dir_len = le_u64(&ih[16..24]);
    let head = (SKIPPABLE_HEADER_LEN + 16) as u64;
    if dir_len > JSON_LIMIT || dir_len > idx_len - head {
        return Err(corrupt_at(idx_off, "index directory length out of range"));
    }
    let cat_off = idx_off + head + dir_len;
    if check_digest {
        let mut hasher = Sha256::new();
        hasher.update(&ih[8..]);
        let mut left = idx_len - head;
        let mut pos = idx_off + head;
        let mut buf = vec![0u8; (1usize << 20).min(usize::try_from(left).unwrap_or(0))];
        while left > 0 {
            let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            read_exact_at(file, &mut buf[..n], pos, "index")?;
            hasher.update(&buf[..n]);
            left -= n as u64;
            pos += n as u64;
        }
        if hasher.finalize().as_slice() != digest {
            return Err(corrupt_at(
                idx_off,
                "index SHA-256 does not match the footer",
            ));
        }
    }
    let mut comp = vec![0u8; usize::try_from(dir_len).unwrap_or(0)];
    read_exact_at(file, &mut comp, idx_off + head, "index directory")?;
    let json = decompress_bounded(&comp, JSON_LIMIT, "index directory")?;
    let dir: Directory = serde_json::from_slice(&json)
        .map_err(|e| Error::corrupt("index directory", e.to_string()))?;
    // Sanity of the frame table: inside the file, in order.
    let mut prev_end = 0u64;
    for (i, f) in dir.frames.iter().enumerate() {
        let end = f.offset.checked_add(f.csize);
        if f.offset < prev_end || end.is_none_or(|e| e > idx_off) || f.usize > FRAME_LIMIT {
            return Err(Error::corrupt(
                format!("index frame table entry {i}"),
                "out of range",
            ));
        }
        prev_end = end.unwrap_or(0);
    }
    Ok((dir, cat_off, idx_end))
}

/// Keeps the most recently decompressed data frame, for sequential reads of many contents.
#[derive(Default)]
pub struct FrameCursor {
    cached: Option<(u32, Vec<u8>)>,
}

impl FrameCursor {
    /// A cursor with nothing cached.
    pub fn new() -> Self {
        FrameCursor::default()
    }

    /// The decompressed bytes of frame `i`.
    ///
    /// # Errors
    /// A damaged frame, naming its number and offset.
    pub fn frame(&mut self, file: &File, frames: &[FrameEntry], i: u32) -> Result<&[u8]> {
        if self.cached.as_ref().is_none_or(|(n, _)| *n != i) {
            self.cached = None;
            let fe = frames
                .get(i as usize)
                .ok_or_else(|| Error::corrupt(format!("frame {i}"), "not in the frame table"))?;
            let what = format!("frame {i} at offset {}", fe.offset);
            if fe.csize > FRAME_LIMIT * 2 || fe.usize > FRAME_LIMIT {
                return Err(Error::corrupt(what, "size out of range"));
            }
            let mut comp = vec![0u8; usize::try_from(fe.csize).unwrap_or(0)];
            read_exact_at(file, &mut comp, fe.offset, &what)?;
            if fe.crc32.is_some_and(|c| c != crc32fast::hash(&comp)) {
                return Err(Error::corrupt(
                    what,
                    "CRC-32 of the compressed frame does not match the index",
                ));
            }
            let data = decompress_bounded(&comp, fe.usize, &what)?;
            if data.len() as u64 != fe.usize {
                return Err(Error::corrupt(
                    what,
                    "decompressed length differs from the index",
                ));
            }
            self.cached = Some((i, data));
        }
        Ok(self
            .cached
            .as_ref()
            .map(|(_, d)| d.as_slice())
            .unwrap_or(&[]))
    }
}

/// One tar member seen by a scan.
#[derive(Clone, Debug)]
pub struct ScannedMember {
    /// Member path.
    pub path: Vec<u8>,
    /// Regular or link (others are not recorded).
    pub kind: EntryType,
    /// Link target.
    pub link: Vec<u8>,
    /// Where its data starts.
    pub loc: Location,
    /// Data length.
    pub size: u64,
    /// SHA-256 of the data, when all of it was read intact.
    pub sha256: Option<[u8; 32]>,
    /// The data of a `.json` member, when intact.
    pub json: Option<Vec<u8>>,
}

/// Result of scanning every frame of an archive.
pub struct Scan {
    /// Data frames found, in order.
    pub frames: Vec<FrameEntry>,
    /// Members found.
    pub members: Vec<ScannedMember>,
    /// Descriptions of damage (frame, offset, what was lost).
    pub damage: Vec<String>,
    /// Whether a valid tar end marker was seen.
    pub tar_end: bool,
    /// Offset of the INDEX frame, when seen.
    pub index_at: Option<u64>,
    /// Whether the FOOTER frame was seen.
    pub footer: bool,
}

enum TarState {
    Header,
    Data {
        member: Box<ScannedMember>,
        left: u64,
        hasher: Sha256,
        pad: u64,
    },
    Skip {
        left: u64,
    },
    Lost,
    End,
}

struct TarScanner {
    state: TarState,
    block: Vec<u8>,
    pax_path: Option<Vec<u8>>,
    pax_link: Option<Vec<u8>>,
    aux: Option<(EntryType, Vec<u8>, u64)>,
    members: Vec<ScannedMember>,
    damage: Vec<String>,
}

impl TarScanner {
    fn feed(&mut self, frame: u32, data: &[u8]) {
        let mut pos = 0usize;
        if matches!(self.state, TarState::Lost) {
            // Resynchronise at the first valid header block of this frame.
            let mut p = 0;
            loop {
                let Some(b) = data.get(p..p + TAR_BLOCK) else {
                    return;
                };
                let blk: &[u8; TAR_BLOCK] = b.try_into().unwrap_or(&[0u8; TAR_BLOCK]);
                if &blk[257..262] == b"ustar" && decode_header(blk).is_ok() {
                    break;
                }
                p += TAR_BLOCK;
            }
            pos = p;
            self.state = TarState::Header;
            self.block.clear();
            self.pax_path = None;
            self.pax_link = None;
            self.aux = None;
        }
        while pos < data.len() {
            match &mut self.state {
                TarState::End | TarState::Lost => return,
                TarState::Skip { left } => {
                    let n = (data.len() - pos).min(usize::try_from(*left).unwrap_or(usize::MAX));
                    if let Some((_, buf, _)) = &mut self.aux
                        && (buf.len() as u64) < JSON_LIMIT
                    {
                        buf.extend_from_slice(&data[pos..pos + n]);
                    }
                    pos += n;
                    *left -= n as u64;
                    if *left == 0 {
                        self.state = TarState::Header;
                        if let Some((kind, buf, size)) = self.aux.take() {
                            let body = &buf[..usize::try_from(size).unwrap_or(0).min(buf.len())];
                            match kind {
                                EntryType::PaxLocal => {
                                    let (p, l) = parse_pax(body);
                                    self.pax_path = p;
                                    self.pax_link = l;
                                }
                                EntryType::GnuLongName => {
                                    self.pax_path = Some(cstr(body).to_vec());
                                }
                                EntryType::GnuLongLink => {
                                    self.pax_link = Some(cstr(body).to_vec());
                                }
                                _ => {}
                            }
                        }
                    }
                }
                TarState::Data {
                    member,
                    left,
                    hasher,
                    pad,
                } => {
                    let n = (data.len() - pos).min(usize::try_from(*left).unwrap_or(usize::MAX));
                    let chunk = &data[pos..pos + n];
                    hasher.update(chunk);
                    if let Some(j) = &mut member.json {
                        j.extend_from_slice(chunk);
                    }
                    pos += n;
                    *left -= n as u64;
                    if *left == 0 {
                        let pad = *pad;
                        let st = std::mem::replace(&mut self.state, TarState::Skip { left: pad });
                        if let TarState::Data {
                            mut member, hasher, ..
                        } = st
                        {
                            member.sha256 = Some(hasher.finalize().into());
                            self.members.push(*member);
                        }
                        if pad == 0 {
                            self.state = TarState::Header;
                        }
                    }
                }
                TarState::Header => {
                    let need = TAR_BLOCK - self.block.len();
                    let n = need.min(data.len() - pos);
                    self.block.extend_from_slice(&data[pos..pos + n]);
                    pos += n;
                    if self.block.len() < TAR_BLOCK {
                        continue;
                    }
                    let data_off = pos as u64;
                    let blk: [u8; TAR_BLOCK] =
                        self.block.as_slice().try_into().unwrap_or([0u8; TAR_BLOCK]);
                    self.block.clear();
                    self.header(
                        blk,
                        Location {
                            frame,
                            offset: data_off,
                        },
                    );
                }
            }
        }
    }

    fn header(&mut self, blk: [u8; TAR_BLOCK], loc: Location) {
        let h = match decode_header(&blk) {
            Ok(h) => h,
            Err(HeaderError::Zero) => {
                self.state = TarState::End;
                return;
            }
            Err(e) => {
                self.damage.push(format!(
                    "tar header before frame {} offset {} is damaged ({e:?}); skipping to the next frame",
                    loc.frame, loc.offset
                ));
                self.state = TarState::Lost;
                return;
            }
        };
        let pad = super::tar::padding(h.size) as u64;
        match h.kind {
            EntryType::PaxLocal | EntryType::GnuLongName | EntryType::GnuLongLink
                if h.size <= JSON_LIMIT =>
            {
                self.aux = Some((h.kind, Vec::new(), h.size));
                self.state = TarState::Skip { left: h.size + pad };
                if h.size + pad == 0 {
                    self.state = TarState::Header;
                }
            }
            EntryType::Regular | EntryType::Link => {
                let path = self.pax_path.take().unwrap_or(h.path);
                let link = self.pax_link.take().unwrap_or(h.link);
                let size = if h.kind == EntryType::Link { 0 } else { h.size };
                let json = (path.ends_with(b".json") && size <= JSON_LIMIT).then(Vec::new);
                let member = ScannedMember {
                    path,
                    kind: h.kind,
                    link,
                    loc,
                    size,
                    sha256: None,
                    json,
                };
                if size == 0 {
                    let mut m = member;
                    m.sha256 = Some(Sha256::digest([]).into());
                    self.members.push(m);
                    self.state = TarState::Header;
                } else {
                    self.state = TarState::Data {
                        member: Box::new(member),
                        left: size,
                        hasher: Sha256::new(),
                        pad,
                    };
                }
            }
            _ => {
                self.pax_path = None;
                self.pax_link = None;
                let left = h.size.saturating_add(pad);
                self.state = if left == 0 {
                    TarState::Header
                } else {
                    TarState::Skip { left }
                };
            }
        }
    }

    /// The current frame was lost: drop any member in progress.
    fn frame_lost(&mut self) {
        if let TarState::Data { member, .. } = &self.state {
            self.damage.push(format!(
                "member {} lost (data started in frame {} at offset {})",
                String::from_utf8_lossy(&member.path),
                member.loc.frame,
                member.loc.offset
            ));
        }
        if !matches!(self.state, TarState::End) {
            self.state = TarState::Lost;
        }
    }
}

fn cstr(b: &[u8]) -> &[u8] {
    match b.iter().position(|&c| c == 0) {
        Some(n) => &b[..n],
        None => b,
    }
}

/// Find the next plausible frame start at or after `from` (zstd or skippable magic).
fn resync(file: &File, from: u64, len: u64) -> Option<u64> {
    let mut pos = from;
    let mut buf =
        vec![0u8; (1usize << 20).min(usize::try_from(len.saturating_sub(from)).unwrap_or(0))];
    while pos + 4 <= len {
        let n = buf
            .len()
            .min(usize::try_from(len - pos).unwrap_or(usize::MAX));
        if file.read_exact_at(&mut buf[..n], pos).is_err() {
            return None;
        }
        for i in 0..n.saturating_sub(3) {
            let m = le_u32(&buf[i..]);
            if m == ZSTD_FRAME_MAGIC || m == INDEX_FRAME_MAGIC || m == FOOTER_FRAME_MAGIC {
                return Some(pos + i as u64);
            }
        }
        pos += (n - 3) as u64;
    }
    None
}

/// Decode every frame of the file in order, parsing the tar stream and hashing each member.
/// When `table` is given (from an intact index), damaged frames are skipped using it;
/// otherwise the next frame is found by searching for a frame magic.
///
/// # Errors
/// Only I/O errors; damage is recorded in [`Scan::damage`].
pub fn scan(file: &File, table: Option<&[FrameEntry]>) -> Result<Scan> {
    let len = file.metadata().at("<archive>")?.len();
    let mut pos = (SKIPPABLE_HEADER_LEN + HEADER_PAYLOAD_LEN) as u64;
    let mut out = Scan {
        frames: Vec::new(),
        members: Vec::new(),
        damage: Vec::new(),
        tar_end: false,
        index_at: None,
        footer: false,
    };
    let mut tar = TarScanner {
        state: TarState::Header,
        block: Vec::new(),
        pax_path: None,
        pax_link: None,
        aux: None,
        members: Vec::new(),
        damage: Vec::new(),
    };
    let mut frame_no: u32 = 0;
    // One decompression context for every frame (creating one costs more than decoding
    // a small frame).
    let mut dctx = zstd::zstd_safe::DCtx::create();
    while pos < len {
        let mut magic = [0u8; 8];
        let have = (len - pos).min(8) as usize;
        if file.read_exact_at(&mut magic[..have], pos).is_err() || have < 8 {
            out.damage.push(format!(
                "offset {pos}: archive is truncated (partial frame header)"
            ));
            tar.frame_lost();
            break;
        }
        let m = le_u32(&magic);
        if (SKIPPABLE_MAGIC_MIN..=SKIPPABLE_MAGIC_MAX).contains(&m) {
            let size = u64::from(le_u32(&magic[4..]));
            if m == INDEX_FRAME_MAGIC {
                out.index_at = Some(pos);
            }
            if m == FOOTER_FRAME_MAGIC && pos + 8 + size == len {
                out.footer = true;
            }
            pos = pos.saturating_add(8 + size);
            continue;
        }
        if m != ZSTD_FRAME_MAGIC {
            out.damage.push(format!(
                "offset {pos}: no frame starts here; searching for the next frame"
            ));
            tar.frame_lost();
            match resync(file, pos + 1, len) {
                Some(p) => {
                    pos = p;
                    continue;
                }
                None => break,
            }
        }
        // Where the table says this frame ends, when we have a table.
        let known = table.and_then(|t| t.iter().find(|f| f.offset == pos).cloned());
        // With an intact index the frame is read once: its SHA-256 is checked and the same
        // bytes are decompressed. Without one, a streaming decoder finds where it ends.
        let (result, end) = match known.as_ref().filter(|k| k.csize <= FRAME_LIMIT * 2) {
            Some(k) => {
                let mut comp = vec![0u8; usize::try_from(k.csize).unwrap_or(0)];
                let r = file.read_exact_at(&mut comp, pos).map_err(|e| e.to_string()).and_then(|()| {
                    if k.crc32.is_some_and(|c| c != crc32fast::hash(&comp)) {
                        out.damage.push(format!(
                            "frame {frame_no} at offset {pos}: CRC-32 of the compressed bytes does not match the index"
                        ));
                    }
                    decompress_bounded(&comp, FRAME_LIMIT, "frame").map_err(|e| e.to_string())
                });
                (r, pos + k.csize)
            }
            None => {
                let mut reader = {
                    let mut f = file.try_clone().at("<archive>")?;
                    f.seek(SeekFrom::Start(pos)).at("<archive>")?;
                    BufReader::with_capacity(1 << 16, f)
                };
                let r = (|| -> io::Result<Vec<u8>> {
                    dctx.reset(zstd::zstd_safe::ResetDirective::SessionOnly)
                        .map_err(|c| io::Error::other(zstd::zstd_safe::get_error_name(c)))?;
                    let mut dec = zstd::stream::read::Decoder::with_context(&mut reader, &mut dctx)
                        .single_frame();
                    let mut data = Vec::new();
                    (&mut dec).take(FRAME_LIMIT + 1).read_to_end(&mut data)?;
                    if data.len() as u64 > FRAME_LIMIT {
                        return Err(io::Error::other("frame larger than the format allows"));
                    }
                    Ok(data)
                })()
                .map_err(|e| e.to_string());
                let end = reader.stream_position().at("<archive>")?;
                (r, end)
            }
        };
        match result {
            Ok(data) => {
                let csize = end - pos;
                let first = match tar.state {
                    TarState::Header if tar.block.is_empty() => Some(0),
                    _ => None,
                };
                out.frames.push(FrameEntry {
                    offset: pos,
                    csize,
                    usize: data.len() as u64,
                    first,
                    crc32: None,
                });
                tar.feed(frame_no, &data);
                frame_no += 1;
                pos = end;
            }
            Err(e) => {
                out.damage
                    .push(format!("frame {frame_no} at offset {pos} is damaged: {e}"));
                tar.frame_lost();
                // Keep frame numbering aligned with the writer's: a lost frame still counts.
                out.frames.push(FrameEntry {
                    offset: pos,
                    csize: known.as_ref().map(|k| k.csize).unwrap_or(0),
                    usize: 0,
                    first: None,
                    crc32: None,
                });
                frame_no += 1;
                let next = match known {
                    Some(k) => Some(pos + k.csize),
                    None => resync(file, pos + 1, len),
                };
                match next {
                    Some(p) => pos = p,
                    None => break,
                }
            }
        }
    }
    if matches!(tar.state, TarState::End) {
        out.tar_end = true;
    } else {
        tar.frame_lost();
        out.damage
            .push("the tar stream has no end marker (archive truncated)".into());
    }
    if !out.footer {
        out.damage
            .push("no footer at the end of the archive (truncated?)".into());
    }
    out.members = std::mem::take(&mut tar.members);
    out.damage.append(&mut tar.damage);
    Ok(out)
}

impl Scan {
    /// Rebuild a directory and catalogs from the JSON members found. Returns damage found
    /// in the process (mailboxes whose metadata member was lost, messages whose bytes were lost).
    ///
    /// # Errors
    /// When not even the manifest can be found.
    pub fn rebuild(&self) -> Result<(Directory, Vec<MailboxRecord>, Vec<String>)> {
        let mut damage = Vec::new();
        let mut by_path: HashMap<&[u8], &ScannedMember> = HashMap::new();
        for m in &self.members {
            by_path.insert(&m.path, m);
        }
        let manifest: Manifest = by_path
            .get(MANIFEST_MEMBER.as_bytes())
            .and_then(|m| m.json.as_ref())
            .and_then(|j| serde_json::from_slice(j).ok())
            .ok_or_else(|| {
                Error::corrupt(
                    MANIFEST_MEMBER,
                    "manifest member lost; nothing can be recovered",
                )
            })?;
        let mut users = Vec::new();
        let mut mailboxes = Vec::new();
        let mut cats = Vec::new();
        let mut gone = Vec::new();
        let mut gone_cats = Vec::new();
        let mut listed: Vec<(crate::model::Name, Vec<crate::model::Name>)> = Vec::new();
        let locate = |msg: &mut super::index::MessageRecord| {
            let data = msg.link.as_deref().unwrap_or(&msg.member);
            msg.loc = by_path
                .get(data.as_bytes())
                .filter(|d| d.kind == EntryType::Regular)
                .map(|d| d.loc);
        };
        for m in &self.members {
            let Some(json) = &m.json else { continue };
            let name = String::from_utf8_lossy(&m.path);
            if m.path.ends_with(format!("/{USER_MEMBER}").as_bytes()) {
                match serde_json::from_slice::<UserRecord>(json) {
                    Ok(u) => {
                        listed.push((u.user.name.clone(), u.mailboxes));
                        users.push(u.user);
                    }
                    Err(e) => damage.push(format!("{name}: unreadable ({e})")),
                }
            } else if m.path.ends_with(format!("/{MAILBOX_MEMBER}").as_bytes()) {
                let rec = serde_json::from_slice::<MailboxRecord>(json)
                    .map_err(|e| e.to_string())
                    .and_then(|r| check_sizes(&r).map(|()| r));
                let mut rec = match rec {
                    Ok(r) => r,
                    Err(e) => {
                        damage.push(format!("{name}: unreadable ({e})"));
                        continue;
                    }
                };
                fill_derived(&mut rec);
                for msg in rec.messages.iter_mut().chain(rec.deleted.iter_mut()) {
                    if msg.is_external() {
                        continue;
                    }
                    locate(msg);
                    if msg.loc.is_none() {
                        damage.push(format!(
                            "{}/{} UID {}: message bytes lost (member {})",
                            rec.user,
                            rec.mailbox.name,
                            msg.message.uid,
                            msg.link.as_deref().unwrap_or(&msg.member)
                        ));
                    }
                }
                let entry = MailboxEntry {
                    user: rec.user.clone(),
                    name: rec.mailbox.name.clone(),
                    messages: rec.messages.len() as u64,
                    catalog_offset: 0,
                    catalog_len: 0,
                    signature: None,
                    catalog_of: None,
                };
                if m.path.starts_with(format!("{DELETED_DIR}/").as_bytes()) {
                    gone.push(entry);
                    gone_cats.push(rec);
                } else {
                    mailboxes.push(entry);
                    cats.push(rec);
                }
            }
        }
        let mut stats = super::index::ArchiveStats::default();
        let mut data_members = std::collections::HashSet::new();
        for c in cats.iter().chain(gone_cats.iter()) {
            stats.deleted += c.deleted.len() as u64;
            for m in &c.messages {
                stats.messages += 1;
                stats.message_bytes = stats.message_bytes.saturating_add(m.message.content.size);
                if m.is_external() {
                    stats.referenced += 1;
                } else if let Some(d) = &m.message.content.data {
                    // A data member (1.2) is stored once, whatever refers to it.
                    if data_members.insert(d.sha256.clone()) {
                        stats.bodies += 1;
                        stats.stored_bytes = stats.stored_bytes.saturating_add(d.size);
                    }
                } else if m.link.is_none() {
                    stats.bodies += 1;
                    stats.stored_bytes = stats.stored_bytes.saturating_add(m.message.content.size);
                }
            }
        }
        // Mailboxes a user record lists without a mailbox.json: lost with their frame, or
        // (1.1) copied catalogs of an incremental, which live only in the index.
        for (user, names) in &listed {
            for n in names {
                if !mailboxes.iter().any(|e| &e.user == user && &e.name == n) {
                    damage.push(format!(
                        "user {user} mailbox {n}: its state is not in the tar stream (lost with a damaged frame, or, in an incremental, a mailbox unchanged since the parent whose catalog only the index held); it is left out"
                    ));
                }
            }
        }
        cats.extend(gone_cats);
        // Blobs (1.2): each intact `blobs/<sha256>` member.
        let prefix = format!("{BLOBS_DIR}/");
        let mut blobs = Vec::new();
        for m in &self.members {
            let Some(name) = m.path.strip_prefix(prefix.as_bytes()) else {
                continue;
            };
            let name = String::from_utf8_lossy(name).into_owned();
            match m.sha256 {
                Some(h) if m.kind == EntryType::Regular && hex::encode(h) == name => {
                    stats.blobs += 1;
                    stats.blob_bytes = stats.blob_bytes.saturating_add(m.size);
                    blobs.push(super::index::BlobEntry {
                        sha256: name,
                        size: m.size,
                        loc: m.loc,
                    });
                }
                _ => damage.push(format!("{prefix}{name}: blob lost or damaged")),
            }
        }
        let dir = Directory {
            manifest,
            frames: self.frames.clone(),
            users,
            mailboxes,
            gone,
            blobs,
            stats,
        };
        Ok((dir, cats, damage))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 13 item 6: a frame that declares no content size is decoded as a stream; its
    /// buffer grows with what it yields instead of reserving the whole limit (1 GiB for
    /// the index directory).
    #[test]
    fn a_frame_without_a_declared_size_does_not_reserve_the_limit() {
        let data = b"{\"json\": true}".repeat(100);
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        enc.include_contentsize(false).unwrap();
        std::io::Write::write_all(&mut enc, &data).unwrap();
        let comp = enc.finish().unwrap();
        assert_eq!(
            zstd::zstd_safe::get_frame_content_size(&comp).unwrap(),
            None
        );
        let out = decompress_bounded(&comp, JSON_LIMIT, "test").unwrap();
        assert_eq!(out, data);
        assert!(
            out.capacity() < 1 << 20,
            "reserved {} bytes",
            out.capacity()
        );
        // Over the limit: refused, declared or not.
        assert!(decompress_bounded(&comp, 100, "test").is_err());
        let declared = zstd::bulk::compress(&data, 3).unwrap();
        assert!(decompress_bounded(&declared, 100, "test").is_err());
        assert_eq!(
            decompress_bounded(&declared, JSON_LIMIT, "t").unwrap(),
            data
        );
    }
}
