//! [`Archive`]: reading an archive file through its index or, when the index is missing or
//! damaged, by scanning the frames (`Archive::recover`, with `super::recover`).
//!
//! Nothing read from the file is trusted: every length is checked against the limits in
//! [`super::spec`] before anything is allocated, every frame's zstd checksum is checked, and
//! damage is reported naming the frame, its offset and the items it holds.

use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use super::index::{
    BlobEntry, Directory, FrameEntry, Location, MailboxEntry, MailboxRecord, Manifest,
};
use super::point::{self, PointTables};
pub use super::recover::{Scan, ScannedMember, scan};
use super::source::{self, Source};
use super::spec::*;
use super::tables::{self, RawTables};
use super::tar::{EntryType, decode_header};
use super::version;
use crate::error::{Error, IoContext, Result, UNNAMED_ARCHIVE};

/// Where the mailbox catalogs are.
enum Catalogs {
    /// In the file, from `base` (the catalog area of the INDEX payload) to `end` (the end
    /// of the INDEX frame).
    Index { base: u64, end: u64 },
    /// Rebuilt by scanning, in the order of [`Directory::mailboxes`].
    Memory(Vec<MailboxRecord>),
}

/// The tables of an archive opened for point reads.
enum Tables {
    /// The directory's frame and blob tables, not parsed yet.
    Raw(RawTables),
    /// The POINT frame (1.4): its head, and its pages when asked for.
    Point(Box<PointTables>),
}

/// An opened archive file.
pub struct Archive {
    file: ArchiveFile,
    path: PathBuf,
    /// The index directory (read from the file, or rebuilt by a scan).
    pub dir: Directory,
    catalogs: Catalogs,
    /// Opened for point reads: the frame and blob tables, not parsed yet, or the POINT
    /// frame (`dir`'s tables are empty; [`Archive::frame_entry`], [`Archive::blob_entries`]).
    tables: Option<Tables>,
    /// Format version found in the HEADER frame.
    pub version: (u16, u16),
    /// Damage found while opening (only a recovering open reports any).
    pub damage: Vec<String>,
}

fn corrupt_at(off: u64, detail: impl Into<String>) -> Error {
    Error::corrupt(format!("offset {off}"), detail)
}

/// The archive file, shared with the frames being decompressed ([`FrameCursor`]), and the
/// count of bytes read from it through the index (not by a recovering scan).
#[derive(Clone)]
pub(crate) struct ArchiveFile {
    file: Arc<dyn Source>,
    read: Arc<AtomicU64>,
}

impl ArchiveFile {
    fn new(file: Arc<dyn Source>) -> Self {
        ArchiveFile {
            file,
            read: Arc::new(AtomicU64::new(0)),
        }
    }

    /// `read_at`, counted.
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        let n = self.file.read_at(buf, off)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

pub(super) fn read_exact_at(
    file: &ArchiveFile,
    buf: &mut [u8],
    off: u64,
    what: &str,
) -> Result<()> {
    let counted = file.file.read_exact_at(buf, off);
    if counted.is_ok() {
        file.read.fetch_add(buf.len() as u64, Ordering::Relaxed);
    }
    counted.map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            Error::corrupt(format!("{what} at offset {off}"), "archive is truncated")
        } else {
            Error::io(UNNAMED_ARCHIVE, e)
        }
    })
}

pub(super) fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}
fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// The catalog `text` (a MailboxRecord's JSON) with only the message records of UID `uid`
/// kept. Records are found by a binary search over their UIDs (a catalog lists them in UID
/// order), checked by a linear search when it misses; only the UIDs of the records probed
/// are parsed.
fn records_of_uid(text: &str, uid: u32) -> serde_json::Result<String> {
    use serde_json::value::RawValue;
    #[derive(serde::Deserialize)]
    struct Outline<'a> {
        #[serde(borrow, default)]
        messages: Vec<&'a RawValue>,
    }
    #[derive(serde::Deserialize)]
    struct Probe {
        message: ProbeMeta,
    }
    #[derive(serde::Deserialize)]
    struct ProbeMeta {
        uid: u32,
    }
    let outline: Outline<'_> = serde_json::from_str(text)?;
    let (Some(first), Some(last)) = (outline.messages.first(), outline.messages.last()) else {
        return Ok(text.to_string());
    };
    let uid_of = |r: &RawValue| serde_json::from_str::<Probe>(r.get()).map(|p| p.message.uid);
    let mut hits = Vec::new();
    let (mut lo, mut hi) = (0, outline.messages.len());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match uid_of(outline.messages[mid])?.cmp(&uid) {
            std::cmp::Ordering::Less => lo = mid + 1,
            std::cmp::Ordering::Greater => hi = mid,
            std::cmp::Ordering::Equal => {
                hits.push(outline.messages[mid]);
                break;
            }
        }
    }
    if hits.is_empty() {
        for r in &outline.messages {
            if uid_of(r)? == uid {
                hits.push(r);
            }
        }
    }
    // Where the records sit in `text`: they are slices of it.
    let at = |r: &RawValue| r.get().as_ptr() as usize - text.as_ptr() as usize;
    let (start, end) = (at(first), at(last) + last.get().len());
    let kept: Vec<&str> = hits.iter().map(|r| r.get()).collect();
    Ok(format!(
        "{}{}{}",
        &text[..start],
        kept.join(","),
        &text[end..]
    ))
}

/// Decompress one zstd frame held in `comp`, refusing more than `limit` bytes. The
/// output buffer is reserved up front only for a declared size of at most [`FRAME_LIMIT`];
/// a frame that declares no size (or more) is decoded as a stream into a buffer that
/// grows with what it really yields.
pub(super) fn decompress_bounded(comp: &[u8], limit: u64, what: &str) -> Result<Vec<u8>> {
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

/// A frame table: entry `i`, `None` past its end.
pub(crate) trait FrameTable {
    /// Entry `i`.
    ///
    /// # Errors
    /// A damaged table.
    fn frame_entry(&self, i: u32) -> Result<Option<FrameEntry>>;
}

impl FrameTable for [FrameEntry] {
    fn frame_entry(&self, i: u32) -> Result<Option<FrameEntry>> {
        Ok(self.get(i as usize).cloned())
    }
}

impl FrameTable for Vec<FrameEntry> {
    fn frame_entry(&self, i: u32) -> Result<Option<FrameEntry>> {
        self.as_slice().frame_entry(i)
    }
}

impl FrameTable for Archive {
    fn frame_entry(&self, i: u32) -> Result<Option<FrameEntry>> {
        match &self.tables {
            Some(Tables::Raw(t)) => t.frame(i).map_err(|e| e.name_archive(&self.path)),
            Some(Tables::Point(t)) => t
                .frame(&self.file, i)
                .map_err(|e| e.name_archive(&self.path)),
            None => self.dir.frames.frame_entry(i),
        }
    }
}

/// The version of the FOOTER at the end of the file, when there is a valid one.
fn footer_version(file: &ArchiveFile, len: u64) -> Option<version::Version> {
    let off = len.checked_sub(FOOTER_FRAME_LEN as u64)?;
    let mut foot = [0u8; FOOTER_FRAME_LEN];
    read_exact_at(file, &mut foot, off, "footer").ok()?;
    version::footer_version(&foot)
}

/// The HEADER's version, whatever its major (checked against the other copies later).
fn header_of(file: &ArchiveFile) -> Result<version::Version> {
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
        Archive::open_unnamed(path, check_digest).map_err(|e| e.in_archive(path))
    }

    /// [`Archive::open`] of an archive read from `src` (an encrypted one is read through
    /// its plaintext, [`source::decrypting`]); `path` names it.
    ///
    /// # Errors
    /// As [`Archive::open`].
    pub fn open_source(src: Arc<dyn Source>, path: &Path, check_digest: bool) -> Result<Self> {
        source::decrypting(src, path)
            .and_then(|src| Archive::open_from(src, path, check_digest))
            .map_err(|e| e.in_archive(path))
    }

    /// [`Archive::open`] for point reads (`cat`): the directory's frame and blob tables are
    /// not parsed, only the entries asked for ([`super::tables`]); `dir.frames` and
    /// `dir.blobs` stay empty, so the archive is only for [`Archive::copy_content`] and the
    /// catalogs. With a POINT frame (1.4) the directory is not read at all: `dir` holds
    /// the manifest and the mailbox lists from the POINT head, and no users or stats.
    ///
    /// # Errors
    /// As [`Archive::open`].
    pub(crate) fn open_for_point_reads(path: &Path) -> Result<Self> {
        source::open(path)
            .and_then(|src| Archive::open_with(src, path, false, true))
            .map_err(|e| e.in_archive(path))
    }

    /// [`Archive::open`], its errors not yet naming the archive.
    fn open_unnamed(path: &Path, check_digest: bool) -> Result<Self> {
        Archive::open_from(source::open(path)?, path, check_digest)
    }

    /// [`Archive::open_unnamed`] from an opened source.
    fn open_from(src: Arc<dyn Source>, path: &Path, check_digest: bool) -> Result<Self> {
        Archive::open_with(src, path, check_digest, false)
    }

    /// [`Archive::open_from`], with the tables left unparsed when `point`.
    fn open_with(
        src: Arc<dyn Source>,
        path: &Path,
        check_digest: bool,
        point: bool,
    ) -> Result<Self> {
        let file = ArchiveFile::new(src);
        let len = file.file.len().at(path)?;
        let header = header_of(&file)?;
        let footer = footer_version(&file, len);
        version::check_early(header, footer)?;
        let (dir, tables, base, end) = read_index(&file, len, check_digest, point)?;
        let m = (dir.manifest.format_major, dir.manifest.format_minor);
        let (version, damage) = version::decide(header, footer, Some(m))?;
        Ok(Archive {
            file,
            path: path.to_path_buf(),
            dir,
            catalogs: Catalogs::Index { base, end },
            tables,
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
        match Archive::open_unnamed(path, true) {
            Ok(a) => Ok(a),
            Err(e @ Error::Corrupt { .. }) => {
                let mut a = Archive::recover(path)?;
                a.damage
                    .insert(0, format!("index unusable ({e}); rebuilt by scanning"));
                Ok(a)
            }
            Err(e) => Err(e.in_archive(path)),
        }
    }

    /// Rebuild the directory and catalogs by scanning every frame.
    ///
    /// # Errors
    /// I/O errors, or an archive whose header frame is wrong.
    pub fn recover(path: &Path) -> Result<Self> {
        Archive::recover_unnamed(path).map_err(|e| e.in_archive(path))
    }

    /// [`Archive::recover`], its errors not yet naming the archive.
    fn recover_unnamed(path: &Path) -> Result<Self> {
        let file = ArchiveFile::new(source::open(path)?);
        let len = file.file.len().at(path)?;
        let header = header_of(&file)?;
        let footer = footer_version(&file, len);
        version::check_early(header, footer)?;
        let scan = scan(&*file.file, None)?;
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
            tables: None,
            version,
            damage,
        })
    }

    /// The blobs this archive stores ([`Directory::blobs`]; parsed now for an archive
    /// opened for point reads).
    ///
    /// # Errors
    /// A damaged blob table.
    pub(crate) fn blob_entries(&self) -> Result<std::borrow::Cow<'_, [BlobEntry]>> {
        match &self.tables {
            Some(Tables::Raw(t)) => t.blobs().map(std::borrow::Cow::Owned),
            Some(Tables::Point(t)) => t.all_blobs(&self.file).map(std::borrow::Cow::Owned),
            None => Ok(std::borrow::Cow::Borrowed(&self.dir.blobs)),
        }
    }

    /// Whether this archive was opened for point reads with its POINT frame (1.4).
    pub(crate) fn has_point(&self) -> bool {
        matches!(self.tables, Some(Tables::Point(_)))
    }

    /// Where this archive stores the blob `sha256`, found in one page of its POINT frame;
    /// `None` for an archive without one (use [`Archive::blob_entries`]).
    ///
    /// # Errors
    /// A damaged page.
    pub(crate) fn point_blob(&self, sha256: &str) -> Option<Result<Option<BlobEntry>>> {
        let Some(Tables::Point(t)) = &self.tables else {
            return None;
        };
        Some(
            t.blob(&self.file, sha256)
                .map_err(|e| e.name_archive(&self.path)),
        )
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.dir.manifest
    }

    /// The archive's file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes read from the archive file so far through the index: footer, index, catalogs
    /// and data frames (not those read by a recovering scan when it was opened).
    pub fn bytes_read(&self) -> u64 {
        self.file.read.load(Ordering::Relaxed)
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

    /// The catalog of mailbox `i` with only its records of UID `uid` (none when it has no
    /// such message): the other records are skipped over, not parsed, which is most of the
    /// work of reading a catalog (a point read: `cat`, spec 6.4).
    ///
    /// # Errors
    /// As [`Archive::catalog`].
    pub(crate) fn catalog_for_uid(&self, i: usize, uid: u32) -> Result<MailboxRecord> {
        let entry: &MailboxEntry = self
            .dir
            .mailboxes
            .get(i)
            .ok_or_else(|| Error::NotFound(format!("mailbox #{i}")))?;
        if let Some(rec) = self.paged_for_uid(i, uid, None)? {
            return Ok(rec);
        }
        let Catalogs::Index { base, end } = &self.catalogs else {
            let mut cat = self.read_catalog(entry, i)?;
            cat.messages.retain(|r| r.message.uid.0 == uid);
            return Ok(cat);
        };
        let what = format!("index catalog of {}/{}", entry.user, entry.name);
        let comp = self.catalog_bytes(*base, *end, entry)?;
        let json = decompress_bounded(&comp, JSON_LIMIT, &what)?;
        let corrupt = |e: String| Error::corrupt(&what, e);
        let text = std::str::from_utf8(&json).map_err(|e| corrupt(e.to_string()))?;
        let only = records_of_uid(text, uid).map_err(|e| corrupt(e.to_string()))?;
        let mut rec: MailboxRecord =
            serde_json::from_str(&only).map_err(|e| corrupt(e.to_string()))?;
        check_sizes(&rec).map_err(corrupt)?;
        if let Some(of) = &entry.catalog_of {
            rec.deleted.clear();
            for m in &mut rec.messages {
                m.refer_to(of);
            }
        }
        fill_derived(&mut rec);
        Ok(rec)
    }

    /// Mailbox `i`'s records of UID `uid` from the POINT frame's pages (1.4): `None` when
    /// this archive was not opened for point reads, has no POINT frame, or does not page
    /// that mailbox. With `copy_of`, the records are those of a mailbox whose catalog is a
    /// copy of this one's, in the archive of that id: they are read as its catalog would
    /// be (spec 6.4 step 1). The result has no records when the mailbox has none of `uid`.
    ///
    /// # Errors
    /// A damaged page.
    pub(crate) fn paged_for_uid(
        &self,
        i: usize,
        uid: u32,
        copy_of: Option<&str>,
    ) -> Result<Option<MailboxRecord>> {
        let Some(Tables::Point(t)) = &self.tables else {
            return Ok(None);
        };
        let Some(k) = t.page_of_uid(i, uid) else {
            return Ok(None);
        };
        let named = |e: Error| e.name_archive(&self.path);
        let mut rec = match k {
            Some(k) => t.record_page(&self.file, i, k).map_err(named)?,
            // A UID below the first page's (or a mailbox without records): the catalog
            // says for certain.
            None => return Ok(None),
        };
        rec.messages.retain(|r| r.message.uid.0 == uid);
        let what = || format!("point page of {}/{}", rec.user, rec.mailbox.name);
        check_sizes(&rec).map_err(|e| Error::corrupt(what(), e))?;
        if let Some(of) = copy_of {
            for m in &mut rec.messages {
                m.refer_to(of);
            }
        }
        fill_derived(&mut rec);
        Ok(Some(rec))
    }

    /// Fields of the HEADER and FOOTER frames that readers ignore but that an archive of a
    /// minor this build knows must have as the spec says (`verify`): the HEADER's
    /// Frame_Size (16) and both reserved fields (zero). A flipped bit there changes no
    /// reading, but it is a changed byte, and `verify` names every changed byte it can.
    ///
    /// # Errors
    /// I/O errors.
    pub(crate) fn frame_field_damage(&self) -> Result<Vec<String>> {
        if self.version.1 > FORMAT_MINOR_POINT {
            return Ok(Vec::new());
        }
        let mut bad = Vec::new();
        let mut head = [0u8; SKIPPABLE_HEADER_LEN + HEADER_PAYLOAD_LEN];
        read_exact_at(&self.file, &mut head, 0, "header frame")?;
        if le_u32(&head[4..]) as usize != HEADER_PAYLOAD_LEN || le_u32(&head[20..]) != 0 {
            bad.push("header frame at offset 0: its size or reserved field is damaged".into());
        }
        if let Catalogs::Index { end, .. } = &self.catalogs {
            let mut foot = [0u8; FOOTER_FRAME_LEN];
            read_exact_at(&self.file, &mut foot, *end, "footer")?;
            if le_u32(&foot[20..]) != 0 {
                bad.push(format!(
                    "footer at offset {end}: its reserved field is damaged"
                ));
            }
        }
        Ok(bad)
    }

    /// What the POINT frame (1.4) says that the INDEX does not say, each difference named
    /// (`verify`): the POINT frame is a copy of facts of the INDEX, outside the FOOTER's
    /// digest. An archive without a POINT frame has nothing to report, unless a scan of
    /// its frames saw one at `scanned` that cannot be opened (its tail damaged). Returns
    /// the frame too, opened, for [`Archive::point_records_damage`] to check each paged
    /// mailbox against the catalog the caller reads anyway.
    ///
    /// # Errors
    /// I/O errors.
    pub(crate) fn point_damage(
        &self,
        scanned: Option<u64>,
    ) -> Result<(Vec<String>, Option<PointTables>)> {
        let Catalogs::Index { end, .. } = &self.catalogs else {
            return Ok((Vec::new(), None));
        };
        let mut foot = [0u8; FOOTER_FRAME_LEN];
        read_exact_at(&self.file, &mut foot, *end, "footer")?;
        let at = le_u64(&foot[SKIPPABLE_HEADER_LEN + 16..]);
        let t = match point::open(&self.file, at) {
            Ok(Some(t)) => t,
            Ok(None) => {
                let bad = scanned
                    .map(|at| format!("point frame at offset {at}: its tail is damaged"))
                    .into_iter()
                    .collect();
                return Ok((bad, None));
            }
            Err(e @ Error::Corrupt { .. }) => return Ok((vec![e.to_string()], None)),
            Err(e) => return Err(e),
        };
        let mut bad = Vec::new();
        let mut start = [0u8; SKIPPABLE_HEADER_LEN + 8];
        read_exact_at(&self.file, &mut start, t.start(), "point frame")?;
        if le_u32(&start) != POINT_FRAME_MAGIC
            || u64::from(le_u32(&start[4..])) + SKIPPABLE_HEADER_LEN as u64 != at - t.start()
            || &start[8..] != POINT_MAGIC
        {
            bad.push(format!(
                "point frame at offset {}: its header is damaged",
                t.start()
            ));
        }
        if !t.crc_matches(&self.file, at)? {
            bad.push(format!(
                "point frame at offset {}: its bytes do not match its CRC-32",
                t.start()
            ));
        }
        let mut differs = |what: &str, same: Result<bool>| match same {
            Ok(true) => {}
            Ok(false) => bad.push(format!("point frame: its {what} differs from the index's")),
            Err(e) => bad.push(format!("point frame: {what}: {e}")),
        };
        differs("manifest", Ok(t.head.manifest == self.dir.manifest));
        let entries: Vec<MailboxEntry> = t.head.mailboxes.iter().map(|m| m.entry()).collect();
        let unsigned = |v: &[MailboxEntry]| {
            let mut v = v.to_vec();
            v.iter_mut().for_each(|e| e.signature = None);
            v
        };
        differs("mailbox list", Ok(entries == unsigned(&self.dir.mailboxes)));
        let gone: Vec<MailboxEntry> = t.head.gone.iter().map(|m| m.entry()).collect();
        differs(
            "list of gone mailboxes",
            Ok(gone == unsigned(&self.dir.gone)),
        );
        differs(
            "frame table",
            t.all_frames(&self.file).map(|f| f == self.dir.frames),
        );
        let mut blobs = self.dir.blobs.clone();
        blobs.sort_by(|a, b| a.sha256.cmp(&b.sha256));
        differs("blob table", t.all_blobs(&self.file).map(|b| b == blobs));
        Ok((bad, Some(t)))
    }

    /// What the record pages of mailbox `i` in the POINT frame `t` (from
    /// [`Archive::point_damage`]) say that its catalog `cat` does not: `None` when they
    /// hold the catalog's records, each page starting at the UID the head gives.
    pub(crate) fn point_records_damage(
        &self,
        t: &PointTables,
        i: usize,
        cat: &MailboxRecord,
    ) -> Option<String> {
        let m = t.head.mailboxes.get(i)?;
        let pages = m.pages.as_ref()?;
        let what = format!("point frame: records of {}/{}", m.entry.user, m.entry.name);
        let mut got = Vec::with_capacity(cat.messages.len());
        for (k, p) in pages.iter().enumerate() {
            let page = match t.record_page(&self.file, i, k) {
                Ok(page) => page,
                Err(e) => return Some(format!("{what}: {e}")),
            };
            let first = page.messages.first().map(|r| r.message.uid.0);
            if first != Some(p.uid) || page.mailbox != cat.mailbox || page.user != cat.user {
                return Some(format!("{what}: page {k} is not the catalog's"));
            }
            got.extend(page.messages);
        }
        let mut got = MailboxRecord {
            user: cat.user.clone(),
            mailbox: cat.mailbox.clone(),
            messages: got,
            deleted: Vec::new(),
        };
        fill_derived(&mut got);
        (got.messages != cat.messages).then(|| format!("{what}: they differ from the index's"))
    }

    /// The catalog of one mailbox of [`Directory::gone`] (deleted since the parent).
    ///
    /// # Errors
    /// A damaged catalog.
    pub(crate) fn gone_catalog(&self, j: usize) -> Result<MailboxRecord> {
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
    pub(crate) fn raw_catalog(&self, i: usize) -> Result<Option<Vec<u8>>> {
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
        read_exact_at(&self.file, &mut comp, off, &what).map_err(|e| e.name_archive(&self.path))?;
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
    pub(crate) fn copy_content(
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
                .bytes(&self.file, self, frame, end)
                .map_err(|e| e.name_archive(&self.path))
                .map_err(lost)?;
            // The whole frame before the one where the data starts (`end` is `usize::MAX`).
            let before = if end == usize::MAX {
                Some(data)
            } else {
                data.get(..end)
            };
            let before = before.ok_or_else(|| {
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
            let start = usize::try_from(off).unwrap_or(usize::MAX);
            let upto = start.saturating_add(usize::try_from(left).unwrap_or(usize::MAX));
            let data = cursor
                .bytes(&self.file, self, frame, upto)
                .map_err(|e| e.name_archive(&self.path))
                .map_err(|e| Error::corrupt(item, format!("content lost: {e}")))?;
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
pub(crate) const VERIFY_BEFORE_WRITE: u64 = 16 << 20;

/// Every size of a catalog's records within the format's limit (spec 6.2, MESSAGE_LIMIT),
/// so that nothing is summed or allocated by a size over it.
///
/// # Errors
/// The first record with a size over the limit, named by UID.
pub(crate) fn check_sizes(rec: &MailboxRecord) -> std::result::Result<(), String> {
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
pub(super) fn fill_derived(rec: &mut MailboxRecord) {
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

/// Read the footer and index; returns the directory (its frame and blob tables left
/// unparsed, in [`RawTables`], when `point`; when `point` and the archive has a POINT
/// frame, the directory is not read at all, its mailboxes come from the POINT head) and
/// the file offsets where the catalog area starts and the INDEX frame ends. The versions
/// are checked by the caller ([`version::decide`]).
fn read_index(
    file: &ArchiveFile,
    len: u64,
    check_digest: bool,
    point: bool,
) -> Result<(Directory, Option<Tables>, u64, u64)> {
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
    let minor = u16::from_le_bytes([p[10], p[11]]);
    let head = (SKIPPABLE_HEADER_LEN + 16) as u64;
    if dir_len > JSON_LIMIT || dir_len > idx_len - head {
        return Err(corrupt_at(idx_off, "index directory length out of range"));
    }
    let cat_off = idx_off + head + dir_len;
    if point
        && minor >= FORMAT_MINOR_POINT
        && let Some(t) = point::open(file, idx_off)?
    {
        let dir = Directory {
            manifest: t.head.manifest.clone(),
            frames: Vec::new(),
            users: Vec::new(),
            mailboxes: t.head.mailboxes.iter().map(|m| m.entry()).collect(),
            gone: t.head.gone.iter().map(|m| m.entry()).collect(),
            blobs: Vec::new(),
            stats: Default::default(),
        };
        return Ok((dir, Some(Tables::Point(Box::new(t))), cat_off, idx_end));
    }
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
    if point {
        let (dir, tables) = tables::parse_head(json, idx_off)?;
        return Ok((dir, Some(Tables::Raw(tables)), cat_off, idx_end));
    }
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
    Ok((dir, None, cat_off, idx_end))
}

/// Compressed bytes are read from the file in pieces of this size (zstd's recommended
/// input buffer is 128 KiB), so a point read takes about this much more than it needs.
const FRAME_READ_BUF: usize = 128 << 10;

/// Decompressed bytes are produced in steps of at least this size.
const FRAME_STEP: usize = 64 << 10;

/// The compressed bytes of one data frame, read from the file as the decoder asks for them,
/// with their CRC-32 computed on the way (checked once the whole frame has been read).
struct FrameBytes {
    file: ArchiveFile,
    pos: u64,
    end: u64,
    crc: crc32fast::Hasher,
}

impl Read for FrameBytes {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = usize::try_from(self.end.saturating_sub(self.pos)).unwrap_or(usize::MAX);
        let want = buf.len().min(left);
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        self.crc.update(&buf[..n]);
        self.pos += n as u64;
        Ok(n)
    }
}

type FrameDecoder = zstd::stream::read::Decoder<'static, BufReader<FrameBytes>>;

/// One data frame, decompressed only as far as reads have needed.
struct OpenFrame {
    number: u32,
    what: String,
    /// The frame's bytes: allocated zeroed (fresh pages from the kernel, not written
    /// twice), decompressed into as far as `filled`.
    data: Vec<u8>,
    filled: usize,
    /// The declared decompressed length (from the frame table).
    size: usize,
    crc32: Option<u32>,
    /// `None` once the whole frame is decompressed and checked.
    decoder: Option<FrameDecoder>,
}

impl OpenFrame {
    /// Frame `i`'s table entry, its sizes within the limits, and how errors name it.
    fn entry(frames: &dyn FrameTable, i: u32) -> Result<(FrameEntry, String)> {
        let fe = frames
            .frame_entry(i)?
            .ok_or_else(|| Error::corrupt(format!("frame {i}"), "not in the frame table"))?;
        let what = format!("frame {i} at offset {}", fe.offset);
        if fe.csize > FRAME_LIMIT * 2 || fe.usize > FRAME_LIMIT {
            return Err(Error::corrupt(what, "size out of range"));
        }
        Ok((fe, what))
    }

    /// Frame `i`, to be read and decompressed as a stream ([`OpenFrame::fill`]).
    fn open(file: &ArchiveFile, frames: &dyn FrameTable, i: u32) -> Result<Self> {
        let (fe, what) = OpenFrame::entry(frames, i)?;
        let end = fe
            .offset
            .checked_add(fe.csize)
            .ok_or_else(|| Error::corrupt(&what, "size out of range"))?;
        let bytes = FrameBytes {
            file: file.clone(),
            pos: fe.offset,
            end,
            crc: crc32fast::Hasher::new(),
        };
        let decoder = zstd::stream::read::Decoder::with_buffer(BufReader::with_capacity(
            FRAME_READ_BUF,
            bytes,
        ))
        .map_err(|e| Error::corrupt(&what, format!("zstd: {e}")))?
        .single_frame();
        let size = usize::try_from(fe.usize).map_err(|_| Error::corrupt(&what, "too large"))?;
        Ok(OpenFrame {
            number: i,
            what,
            data: vec![0; size],
            filled: 0,
            size,
            crc32: fe.crc32,
            decoder: Some(decoder),
        })
    }

    /// Frame `i` read and decompressed whole: its CRC-32 checked before it is decompressed,
    /// its zstd checksum and length after.
    fn whole(file: &ArchiveFile, frames: &dyn FrameTable, i: u32) -> Result<Self> {
        let (fe, what) = OpenFrame::entry(frames, i)?;
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
        Ok(OpenFrame {
            number: i,
            what,
            size: data.len(),
            filled: data.len(),
            data,
            crc32: fe.crc32,
            decoder: None,
        })
    }

    /// Decompress until at least `upto` bytes (or the whole frame) are out. A frame read
    /// to its end is checked: its zstd checksum (by the decoder), its length and the CRC-32
    /// of its compressed bytes.
    fn fill(&mut self, upto: usize) -> Result<()> {
        let target = upto.min(self.size);
        let what = &self.what;
        let zstd_err = |e: io::Error| match e.kind() {
            io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData | io::ErrorKind::Other => {
                Error::corrupt(what, format!("zstd: {e}"))
            }
            _ => Error::io(UNNAMED_ARCHIVE, e),
        };
        let Some(dec) = self.decoder.as_mut() else {
            return Ok(());
        };
        while self.filled < target {
            let have = self.filled;
            let step = (target - have).max(FRAME_STEP).min(self.size - have);
            let n = dec
                .read(&mut self.data[have..have + step])
                .map_err(zstd_err)?;
            self.filled += n;
            if n == 0 {
                return Err(Error::corrupt(
                    what,
                    "decompressed length differs from the index",
                ));
            }
        }
        if self.filled < self.size {
            return Ok(());
        }
        // The whole frame is out: nothing may follow, and its end checks its zstd checksum.
        let mut probe = [0u8; 1];
        if dec.read(&mut probe).map_err(zstd_err)? != 0 {
            return Err(Error::corrupt(
                what,
                "decompressed length differs from the index",
            ));
        }
        let bytes = dec.get_mut();
        io::copy(bytes, &mut io::sink()).map_err(|e| Error::io(UNNAMED_ARCHIVE, e))?;
        let crc = bytes.get_ref().crc.clone().finalize();
        if self.crc32.is_some_and(|c| c != crc) {
            return Err(Error::corrupt(
                what,
                "CRC-32 of the compressed frame does not match the index",
            ));
        }
        self.decoder = None;
        Ok(())
    }
}

/// Keeps the data frame read last. Sequential reads of many contents (restore, merge,
/// export: [`FrameCursor::new`]) read and decompress each frame whole, once, its CRC-32
/// checked before it is decompressed; a point read (`cat`: [`FrameCursor::for_point_reads`])
/// reads and decompresses a frame only up to the last byte it wants.
#[derive(Default)]
pub struct FrameCursor {
    open: Option<OpenFrame>,
    point: bool,
}

impl FrameCursor {
    /// A cursor with nothing cached, for sequential reads: frames are read whole.
    pub fn new() -> Self {
        FrameCursor::default()
    }

    /// A cursor with nothing cached, for point reads: a frame is read and decompressed as
    /// a stream, only as far as the reads need (spec 6.4, *Point reads*); the bytes taken
    /// are checked by the caller against the record's SHA-256.
    pub(crate) fn for_point_reads() -> Self {
        FrameCursor {
            open: None,
            point: true,
        }
    }

    /// The decompressed bytes of frame `i` from its start to at least `upto` (fewer only
    /// when the frame is shorter; `usize::MAX` for the whole frame, checked).
    ///
    /// # Errors
    /// A damaged frame, naming its number and offset. The frame is read again by the next
    /// call.
    fn bytes(
        &mut self,
        file: &ArchiveFile,
        frames: &dyn FrameTable,
        i: u32,
        upto: usize,
    ) -> Result<&[u8]> {
        if self.open.as_ref().is_none_or(|f| f.number != i) {
            self.open = None;
            self.open = Some(if self.point {
                OpenFrame::open(file, frames, i)?
            } else {
                OpenFrame::whole(file, frames, i)?
            });
        }
        let Some(frame) = self.open.as_mut() else {
            return Ok(&[]);
        };
        if let Err(e) = frame.fill(upto) {
            self.open = None;
            return Err(e);
        }
        Ok(self
            .open
            .as_ref()
            .and_then(|f| f.data.get(..f.filled))
            .unwrap_or(&[]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A point read keeps only the records of one UID, found by binary search in a sorted
    /// catalog and by a linear search in one that is not; the rest of the catalog is kept.
    #[test]
    fn records_of_one_uid_are_cut_out_of_a_catalog() {
        let rec =
            |u: u32| format!(r#"{{"member":"m{u}","message":{{"uid":{u},"owner":{{"uid":7}}}}}}"#);
        let cat = |uids: &[u32]| {
            let recs: Vec<String> = uids.iter().map(|&u| rec(u)).collect();
            format!(
                r#"{{"name":"INBOX","messages":[{}],"deleted":[]}}"#,
                recs.join(",")
            )
        };
        let sorted: Vec<u32> = (1..=40).map(|u| u * 3).collect();
        for u in [3, 60, 120] {
            let got = records_of_uid(&cat(&sorted), u).unwrap();
            assert_eq!(got, cat(&[u]));
        }
        assert_eq!(records_of_uid(&cat(&sorted), 7).unwrap(), cat(&[]));
        // Not in UID order (damage, or a writer that did not sort): still found.
        assert_eq!(records_of_uid(&cat(&[9, 2, 5, 1]), 5).unwrap(), cat(&[5]));
        assert_eq!(records_of_uid(&cat(&[]), 5).unwrap(), cat(&[]));
        assert!(records_of_uid(r#"{"messages":[{"message":{}}]}"#, 1).is_err());
    }

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

    fn vector(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("format-spec/vectors/v1/{name}.mdump"))
    }

    /// A copy of a vector in a temporary directory, to damage.
    fn copy_of(name: &str) -> (tempfile::TempDir, PathBuf, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let bytes = std::fs::read(vector(name)).unwrap();
        let path = dir.path().join("a.mdump");
        std::fs::write(&path, &bytes).unwrap();
        (dir, path, bytes)
    }

    #[test]
    fn the_index_gives_catalogs_and_bytes_that_match_their_hashes() {
        let a = Archive::open(&vector("fixture"), true).unwrap();
        assert!(a.damage.is_empty(), "{:?}", a.damage);
        assert_eq!(a.dir.mailboxes.len(), 7);
        let mut cursor = FrameCursor::new();
        let mut n = 0;
        for i in 0..a.dir.mailboxes.len() {
            let cat = a.catalog(i).unwrap();
            assert_eq!(cat.mailbox.name, a.dir.mailboxes[i].name);
            for r in cat.messages.iter().filter(|r| !r.is_external()) {
                let (sha, size) = r.stored_content();
                let mut out = Vec::new();
                let loc = r.loc.unwrap();
                a.copy_content(&mut cursor, loc, size, sha, "t", &mut out)
                    .unwrap();
                assert_eq!(out.len() as u64, size);
                n += 1;
            }
        }
        assert_eq!(n, 12);
        // A size the member does not hold is refused, naming the item.
        let cat = a.catalog(0).unwrap();
        let r = &cat.messages[0];
        let (sha, size) = r.stored_content();
        let e = a
            .copy_content(
                &mut cursor,
                r.loc.unwrap(),
                size + 1,
                sha,
                "the item",
                &mut Vec::new(),
            )
            .unwrap_err();
        assert!(e.to_string().contains("the item"), "{e}");
    }

    #[test]
    fn a_truncated_archive_is_named_and_recovered_by_scanning() {
        let (_dir, path, bytes) = copy_of("fixture");
        let cut = bytes.len() - 100;
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let Err(e) = Archive::open(&path, true) else {
            panic!("a truncated archive opened")
        };
        assert_eq!(e.kind(), crate::ErrorKind::CorruptArchive);
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        let a = Archive::open_or_recover(&path).unwrap();
        assert!(a.damage[0].starts_with("index unusable"), "{:?}", a.damage);
        // The data frames are intact: every mailbox and message is found again.
        assert_eq!(a.dir.mailboxes.len(), 7);
        let msgs: usize = (0..7).map(|i| a.catalog(i).unwrap().messages.len()).sum();
        assert_eq!(msgs, 12);
    }

    #[test]
    fn a_flipped_byte_in_the_index_is_refused_naming_the_archive() {
        let (_dir, path, mut bytes) = copy_of("fixture");
        // The FOOTER's payload (its last 64 bytes) holds the index offset at 16..24; the
        // directory's zstd frame starts 24 bytes into the INDEX frame.
        let payload = &bytes[bytes.len() - 64..];
        let index_off = u64::from_le_bytes(payload[16..24].try_into().unwrap()) as usize;
        bytes[index_off + 28] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        for digest in [true, false] {
            let Err(e) = Archive::open(&path, digest) else {
                panic!("a damaged index was read")
            };
            assert_eq!(e.kind(), crate::ErrorKind::CorruptArchive, "{e}");
            assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        }
    }

    /// A file `name` in `dir` holding one zstd frame of 1 MiB of text that compresses to
    /// about half, damaged by `damage`; the frame table entry of the undamaged frame.
    fn one_frame(
        dir: &Path,
        name: &str,
        damage: impl FnOnce(&mut Vec<u8>),
    ) -> (ArchiveFile, FrameEntry, Vec<u8>) {
        let mut data = Vec::new();
        let mut x = 7u64;
        while data.len() < 1 << 20 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            data.extend_from_slice(format!("{:x}\n", x >> 20).as_bytes());
        }
        data.truncate(1 << 20);
        let mut comp = crate::format::frame::compress_frame(3, &data).unwrap();
        let entry = FrameEntry {
            offset: 0,
            csize: comp.len() as u64,
            usize: data.len() as u64,
            first: None,
            crc32: Some(crc32fast::hash(&comp)),
        };
        damage(&mut comp);
        let path = dir.join(name);
        std::fs::write(&path, &comp).unwrap();
        (ArchiveFile::new(source::open(&path).unwrap()), entry, data)
    }

    /// Issue 17: a frame is read and decompressed only as far as a read needs (its bytes
    /// are then checked by the message's SHA-256); read to its end, it is checked whole.
    #[test]
    fn a_frame_is_read_only_as_far_as_needed_and_checked_when_read_to_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let (file, entry, data) = one_frame(dir.path(), "good", |_| {});
        assert!(entry.csize > 4 * FRAME_READ_BUF as u64, "{}", entry.csize);
        let frames = vec![entry.clone()];
        let mut cursor = FrameCursor::for_point_reads();
        let got = cursor.bytes(&file, &frames, 0, 1000).unwrap();
        assert!(got.len() >= 1000 && got.len() < 4 * FRAME_READ_BUF);
        assert_eq!(got, &data[..got.len()]);
        let partial = file.read.load(Ordering::Relaxed);
        assert!(partial <= 2 * FRAME_READ_BUF as u64, "read {partial} bytes");
        assert_eq!(cursor.bytes(&file, &frames, 0, usize::MAX).unwrap(), data);
        assert_eq!(file.read.load(Ordering::Relaxed), entry.csize);
        // Damage at the end of the frame (its zstd checksum), a wrong CRC-32 or length in
        // the table: the start still reads (the SHA-256 of what is taken decides), the
        // whole frame is refused.
        let last = |c: &mut Vec<u8>| *c.last_mut().unwrap() ^= 1;
        let (file, _, _) = one_frame(dir.path(), "damaged", last);
        let (crc, long, short) = (
            FrameEntry {
                crc32: Some(1),
                ..entry.clone()
            },
            FrameEntry {
                usize: entry.usize + 512,
                ..entry.clone()
            },
            FrameEntry {
                usize: entry.usize - 512,
                ..entry.clone()
            },
        );
        let (good, _, _) = one_frame(dir.path(), "good", |_| {});
        for (f, table, why) in [
            (&file, &entry, "zstd"),
            (&good, &crc, "CRC-32"),
            (&good, &long, "length differs"),
            (&good, &short, "length differs"),
        ] {
            let frames = vec![table.clone()];
            let mut cursor = FrameCursor::for_point_reads();
            assert_eq!(
                cursor.bytes(f, &frames, 0, 1000).unwrap()[..1000],
                data[..1000]
            );
            let e = cursor
                .bytes(f, &frames, 0, usize::MAX)
                .map(<[u8]>::len)
                .unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::CorruptArchive, "{e}");
            assert!(e.to_string().contains(why), "{why}: {e}");
            // Read whole (sequential reads), the frame is refused before a byte of it is used.
            let e = FrameCursor::new()
                .bytes(f, &frames, 0, 1000)
                .map(<[u8]>::len)
                .unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::CorruptArchive, "{e}");
        }
    }
}
