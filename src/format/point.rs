//! The POINT frame (format 1.4, spec 3.4): what a point read (`cat`) needs, in pages, so
//! that reading one message costs the same whatever the size of the archive.
//!
//! Through the INDEX alone, `cat` must decompress the whole directory (its frame table
//! grows with the archive, its blob table with the attachments) and the whole catalog of
//! the mailbox (it grows with the mailbox): on the bench corpus, 0.9 MB of JSON for 5 KB
//! of mail, most of a `cat`'s time. The POINT frame sits just before the INDEX frame and
//! holds the same facts again, cut into small zstd frames: each mailbox's records in
//! pages of a few dozen UIDs, the frame table and the blob table in pages, and a head
//! that lists the mailboxes and where each page is. A point reader reads the head and one
//! page of each kind it needs. Everything in it is a copy of what the INDEX says (`verify`
//! checks that it is), and readers that do not know it skip it as any skippable frame.
//!
//! Payload (after the skippable frame's magic and size):
//!
//! ```text
//! "MDPOINT\0" | pages, back to back | head (zstd frame) | tail
//! tail: head_len u64 | frame_len u64 | crc32 u32 | "MDPTAIL\0"
//! ```
//!
//! The CRC-32 covers the frame from its magic to `frame_len`: `verify` checks it, so that
//! no changed byte goes unnoticed (zstd's checksums cover what a page decodes to, not
//! every bit of its frame; a changed tag hides the frame, which a scan then finds).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::index::{BlobEntry, FrameEntry, MailboxEntry, MailboxRecord, Manifest, MessageRecord};
use super::reader::{ArchiveFile, decompress_bounded, read_exact_at};
use super::spec::{
    FRAME_LIMIT, HEADER_PAYLOAD_LEN, JSON_LIMIT, POINT_FRAME_MAGIC, POINT_MAGIC, POINT_TAIL,
    POINT_TAIL_LEN, SKIPPABLE_HEADER_LEN,
};
use crate::error::{Error, IoContext, Result};
use crate::model::{MailboxMeta, Name};

/// Entries per page when the writer is not told otherwise: 64 message records (about 40 KB
/// of JSON), 64 frame entries or 64 blob entries.
pub const PAGE_ENTRIES: usize = 64;

/// How far before the INDEX frame a point reader reads at first: the tail and, nearly
/// always, the whole head.
const TAIL_READ: u64 = 16 << 10;

/// Where one page is: `offset` from the start of the page area, `len` compressed bytes.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Page {
    /// Offset of the page's zstd frame from the start of the page area.
    pub offset: u64,
    /// Compressed length of the page.
    pub len: u64,
}

/// A page of message records: the records of UIDs from `uid` up to the next page's.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct RecordPage {
    /// UID of the first record on the page.
    pub uid: u32,
    /// Where the page is.
    #[serde(flatten)]
    pub page: Page,
}

/// A page of the blob table (sorted by SHA-256): blobs from `sha256` up to the next page's.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct BlobPage {
    /// SHA-256 of the first blob on the page.
    pub sha256: String,
    /// Where the page is.
    #[serde(flatten)]
    pub page: Page,
}

/// One mailbox of the state: the directory's [`MailboxEntry`] (without its signature)
/// and, when its records are paged here, where they are.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct PointMailbox {
    /// The directory's entry; its `catalog_of` also says that the records are on that
    /// archive's pages (of its mailbox of the same user and name), not here.
    #[serde(flatten)]
    pub entry: MailboxEntry,
    /// The record pages, in UID order; absent when the records are only in the catalog.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pages: Option<Vec<RecordPage>>,
}

impl PointMailbox {
    /// The directory entry `e` (its signature left out), with `pages`.
    fn of(e: &MailboxEntry, pages: Option<Vec<RecordPage>>) -> Self {
        PointMailbox {
            entry: MailboxEntry {
                signature: None,
                ..e.clone()
            },
            pages,
        }
    }

    /// The directory entry this stands for (no signature: point reads do not need it).
    pub(crate) fn entry(&self) -> MailboxEntry {
        MailboxEntry {
            signature: None,
            ..self.entry.clone()
        }
    }
}

/// The head of the POINT frame.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct PointHead {
    /// The manifest, as in the directory.
    pub manifest: Manifest,
    /// The directory's `mailboxes`, in the same order.
    pub mailboxes: Vec<PointMailbox>,
    /// The directory's `gone` mailboxes (1.1), in the same order, never paged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gone: Vec<PointMailbox>,
    /// Data frames in the directory's frame table.
    pub frame_count: u64,
    /// Frame entries per frame page (every page but the last holds this many).
    pub frames_per_page: u64,
    /// The frame table in pages: page `k` holds entries `k * frames_per_page` on.
    pub frame_pages: Vec<Page>,
    /// The blob table sorted by SHA-256, in pages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blob_pages: Vec<BlobPage>,
}

/// A page of records as written: a MailboxRecord with some of the messages and no
/// deleted mail (same JSON as [`MailboxRecord`]).
#[derive(Serialize)]
struct RecordPageOut<'a> {
    user: &'a Name,
    mailbox: &'a MailboxMeta,
    messages: &'a [MessageRecord],
}

/// Builds the POINT frame while an archive is written: record pages are spooled to a
/// temporary file as each mailbox is finished.
pub(crate) struct PointWriter {
    spool: BufWriter<File>,
    spool_len: u64,
    per_page: usize,
    mailboxes: Vec<PointMailbox>,
}

fn spool_err() -> &'static str {
    "<temporary point spool>"
}

/// Compress one page (or the head): a zstd frame with checksum and content size.
fn compress(json: &[u8]) -> Result<Vec<u8>> {
    super::frame::compress_frame(3, json).at("<point page>")
}

impl PointWriter {
    /// A builder for pages of `per_page` entries (at least 1).
    ///
    /// # Errors
    /// The temporary spool cannot be created.
    pub(crate) fn new(per_page: usize) -> Result<Self> {
        Ok(PointWriter {
            spool: BufWriter::new(tempfile::tempfile().at(spool_err())?),
            spool_len: 0,
            per_page: per_page.max(1),
            mailboxes: Vec::new(),
        })
    }

    fn spool_page(&mut self, json: &[u8]) -> Result<Page> {
        let comp = compress(json)?;
        self.spool.write_all(&comp).at(spool_err())?;
        let page = Page {
            offset: self.spool_len,
            len: comp.len() as u64,
        };
        self.spool_len += page.len;
        Ok(page)
    }

    /// A mailbox of the state whose catalog `rec` was written as `entry`: its records are
    /// paged.
    ///
    /// # Errors
    /// Write errors on the spool.
    pub(crate) fn add_mailbox(&mut self, entry: &MailboxEntry, rec: &MailboxRecord) -> Result<()> {
        let mut pages = Vec::new();
        for chunk in rec.messages.chunks(self.per_page) {
            let out = RecordPageOut {
                user: &rec.user,
                mailbox: &rec.mailbox,
                messages: chunk,
            };
            let page = self.spool_page(&to_json(&out)?)?;
            pages.push(RecordPage {
                uid: chunk[0].message.uid.0,
                page,
            });
        }
        self.push(entry, Some(pages));
        Ok(())
    }

    /// A mailbox whose catalog was copied from another archive (`entry.catalog_of`): its
    /// records are on that archive's pages.
    pub(crate) fn add_copied(&mut self, entry: &MailboxEntry) {
        self.push(entry, None);
    }

    fn push(&mut self, e: &MailboxEntry, pages: Option<Vec<RecordPage>>) {
        self.mailboxes.push(PointMailbox::of(e, pages));
    }

    /// Write the POINT frame to `out`: the spooled record pages, then the frame and blob
    /// tables in pages, the head (listing the `gone` mailboxes too) and the tail. Nothing is written when the frame would
    /// exceed a skippable frame's 4 GiB (readers then use the INDEX, as for any archive
    /// without one). Returns the bytes written.
    ///
    /// # Errors
    /// Write errors.
    pub(crate) fn finish(
        mut self,
        out: &mut dyn Write,
        manifest: &Manifest,
        gone: &[MailboxEntry],
        frames: &[FrameEntry],
        blobs: &[BlobEntry],
    ) -> Result<u64> {
        let gone: Vec<PointMailbox> = gone.iter().map(|e| PointMailbox::of(e, None)).collect();
        let mut frame_pages = Vec::new();
        for chunk in frames.chunks(self.per_page) {
            frame_pages.push(self.spool_page(&to_json(&chunk)?)?);
        }
        let mut sorted: Vec<&BlobEntry> = blobs.iter().collect();
        sorted.sort_by(|a, b| a.sha256.cmp(&b.sha256));
        let mut blob_pages = Vec::new();
        for chunk in sorted.chunks(self.per_page) {
            let page = self.spool_page(&to_json(&chunk)?)?;
            blob_pages.push(BlobPage {
                sha256: chunk[0].sha256.clone(),
                page,
            });
        }
        let head = PointHead {
            manifest: manifest.clone(),
            mailboxes: std::mem::take(&mut self.mailboxes),
            gone,
            frame_count: frames.len() as u64,
            frames_per_page: self.per_page as u64,
            frame_pages,
            blob_pages,
        };
        let head = compress(&to_json(&head)?)?;
        let payload =
            POINT_MAGIC.len() as u64 + self.spool_len + head.len() as u64 + POINT_TAIL_LEN as u64;
        let Ok(size) = u32::try_from(payload) else {
            return Ok(0);
        };
        let frame_len = payload + SKIPPABLE_HEADER_LEN as u64;
        let mut spool = self
            .spool
            .into_inner()
            .map_err(|e| Error::io(spool_err(), e.into_error()))?;
        spool.seek(SeekFrom::Start(0)).at(spool_err())?;
        let mut crc = crc32fast::Hasher::new();
        let mut w = |out: &mut dyn Write, b: &[u8]| {
            crc.update(b);
            out.write_all(b).at(crate::error::UNNAMED_ARCHIVE)
        };
        w(out, &POINT_FRAME_MAGIC.to_le_bytes())?;
        w(out, &size.to_le_bytes())?;
        w(out, POINT_MAGIC)?;
        let mut buf = vec![0u8; 1 << 16];
        let mut left = self.spool_len;
        while left > 0 {
            let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            spool.read_exact(&mut buf[..n]).at(spool_err())?;
            w(out, &buf[..n])?;
            left -= n as u64;
        }
        w(out, &head)?;
        w(out, &(head.len() as u64).to_le_bytes())?;
        w(out, &frame_len.to_le_bytes())?;
        let mut tail = crc.finalize().to_le_bytes().to_vec();
        tail.extend_from_slice(POINT_TAIL);
        out.write_all(&tail).at(crate::error::UNNAMED_ARCHIVE)?;
        Ok(frame_len)
    }
}

/// `v` as JSON (a failure would be a bug in one of our types).
fn to_json<T: Serialize + ?Sized>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::corrupt("point frame", e.to_string()))
}

/// The POINT frame of an archive, opened: its head, parsed, and the pages read so far.
pub(crate) struct PointTables {
    /// The parsed head.
    pub head: PointHead,
    /// The tail's CRC-32 of the frame up to the end of `frame_len`.
    crc: u32,
    /// File offset of the page area.
    area: u64,
    /// Length of the page area.
    area_len: u64,
    /// File offset of the POINT frame: every data frame ends at or before it.
    start: u64,
    /// Frame pages read so far.
    frames: Mutex<HashMap<usize, Vec<FrameEntry>>>,
    /// Blob pages read so far.
    blobs: Mutex<HashMap<usize, Vec<BlobEntry>>>,
}

/// Damage in the POINT frame.
fn corrupt(detail: impl Into<String>) -> Error {
    Error::corrupt("point frame", detail)
}

/// Open the POINT frame that ends at `index_offset`, if the archive has one.
///
/// # Errors
/// A POINT frame whose tail is there but whose head is damaged; I/O errors.
pub(crate) fn open(file: &ArchiveFile, index_offset: u64) -> Result<Option<PointTables>> {
    let min = (SKIPPABLE_HEADER_LEN + POINT_MAGIC.len() + POINT_TAIL_LEN) as u64;
    // The frame lies after the HEADER.
    let first_frame = (SKIPPABLE_HEADER_LEN + HEADER_PAYLOAD_LEN) as u64;
    if index_offset < first_frame + min {
        return Ok(None);
    }
    let n = TAIL_READ.min(index_offset - first_frame);
    let mut buf = vec![0u8; usize::try_from(n).unwrap_or(0)];
    read_exact_at(file, &mut buf, index_offset - n, "point frame")?;
    let tail = &buf[buf.len() - POINT_TAIL_LEN..];
    if &tail[20..] != POINT_TAIL {
        return Ok(None);
    }
    let crc = u32::from_le_bytes(tail[16..20].try_into().unwrap_or_default());
    let head_len = u64::from_le_bytes(tail[..8].try_into().unwrap_or_default());
    let frame_len = u64::from_le_bytes(tail[8..16].try_into().unwrap_or_default());
    if frame_len > index_offset - first_frame || frame_len < min || head_len > frame_len - min {
        return Err(corrupt("its tail gives lengths out of range"));
    }
    if head_len > JSON_LIMIT {
        return Err(corrupt("its head is over the limit"));
    }
    let start = index_offset - frame_len;
    let head_end = index_offset - POINT_TAIL_LEN as u64;
    let head_start = head_end - head_len;
    let comp = if head_start >= index_offset - n {
        let from = usize::try_from(head_start - (index_offset - n)).unwrap_or(0);
        buf[from..from + usize::try_from(head_len).unwrap_or(0)].to_vec()
    } else {
        let mut v = vec![0u8; usize::try_from(head_len).unwrap_or(0)];
        read_exact_at(file, &mut v, head_start, "point frame head")?;
        v
    };
    let json = decompress_bounded(&comp, JSON_LIMIT, "point frame head")?;
    let head: PointHead =
        serde_json::from_slice(&json).map_err(|e| corrupt(format!("head: {e}")))?;
    let area = start + (SKIPPABLE_HEADER_LEN + POINT_MAGIC.len()) as u64;
    let t = PointTables {
        head,
        crc,
        area,
        area_len: head_start - area,
        start,
        frames: Mutex::new(HashMap::new()),
        blobs: Mutex::new(HashMap::new()),
    };
    t.check_head()?;
    Ok(Some(t))
}

impl PointTables {
    /// Every page the head lists lies in the page area, and the frame pages are as many
    /// as the frame count needs.
    fn check_head(&self) -> Result<()> {
        let h = &self.head;
        let mut pages = h
            .frame_pages
            .iter()
            .chain(h.blob_pages.iter().map(|b| &b.page));
        let mut records = h.mailboxes.iter().flat_map(|m| m.pages.iter().flatten());
        if h.gone.iter().any(|m| m.pages.is_some()) {
            return Err(corrupt("a gone mailbox has pages"));
        }
        let inside = |p: &Page| {
            p.offset
                .checked_add(p.len)
                .is_some_and(|e| e <= self.area_len)
        };
        if !pages.all(inside) || !records.all(|r| inside(&r.page)) {
            return Err(corrupt("a page lies outside the frame"));
        }
        let per = h.frames_per_page.max(1);
        if h.frames_per_page == 0 || h.frame_count.div_ceil(per) != h.frame_pages.len() as u64 {
            return Err(corrupt("the frame pages do not match the frame count"));
        }
        Ok(())
    }

    /// The compressed bytes of `page`, decompressed.
    fn page_json(&self, file: &ArchiveFile, page: Page, what: &str) -> Result<Vec<u8>> {
        if page.len > JSON_LIMIT {
            return Err(corrupt(format!("{what}: over the limit")));
        }
        let mut comp = vec![0u8; usize::try_from(page.len).unwrap_or(0)];
        read_exact_at(file, &mut comp, self.area + page.offset, what)?;
        decompress_bounded(&comp, JSON_LIMIT, what)
    }

    /// `page`, decompressed and parsed as a JSON list.
    fn parse_page<T: serde::de::DeserializeOwned>(
        &self,
        file: &ArchiveFile,
        page: Page,
        what: &str,
    ) -> Result<Vec<T>> {
        let json = self.page_json(file, page, what)?;
        serde_json::from_slice(&json).map_err(|e| corrupt(format!("{what}: {e}")))
    }

    /// Entry `i` of the frame table, checked to lie before the POINT frame; `None` past
    /// its end.
    ///
    /// # Errors
    /// A damaged page.
    pub(crate) fn frame(&self, file: &ArchiveFile, i: u32) -> Result<Option<FrameEntry>> {
        let h = &self.head;
        if u64::from(i) >= h.frame_count {
            return Ok(None);
        }
        let k = usize::try_from(u64::from(i) / h.frames_per_page).unwrap_or(usize::MAX);
        let at = usize::try_from(u64::from(i) % h.frames_per_page).unwrap_or(usize::MAX);
        let mut cache = self.frames.lock().unwrap_or_else(|e| e.into_inner());
        let page = match cache.entry(k) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let what = format!("point frame page {k}");
                let page = *h.frame_pages.get(k).ok_or_else(|| corrupt(&what))?;
                e.insert(self.parse_page(file, page, &what)?)
            }
        };
        let f = page.get(at).cloned();
        let f = f.ok_or_else(|| corrupt(format!("frame page {k} is short of entry {i}")))?;
        let end = f.offset.checked_add(f.csize);
        if end.is_none_or(|e| e > self.start) || f.usize > FRAME_LIMIT {
            return Err(Error::corrupt(
                format!("point frame table entry {i}"),
                "out of range",
            ));
        }
        Ok(Some(f))
    }

    /// Where the blob `sha256` is stored, if this archive stores it.
    ///
    /// # Errors
    /// A damaged page.
    pub(crate) fn blob(&self, file: &ArchiveFile, sha256: &str) -> Result<Option<BlobEntry>> {
        let pages = &self.head.blob_pages;
        let k = pages.partition_point(|p| p.sha256.as_str() <= sha256);
        let Some(k) = k.checked_sub(1) else {
            return Ok(None);
        };
        let mut cache = self.blobs.lock().unwrap_or_else(|e| e.into_inner());
        let page = match cache.entry(k) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let what = format!("point blob page {k}");
                e.insert(self.parse_page(file, pages[k].page, &what)?)
            }
        };
        Ok(page.iter().find(|b| b.sha256 == sha256).cloned())
    }

    /// Every page of a table, in order, parsed (for `verify` and whole-table readers).
    ///
    /// # Errors
    /// A damaged page.
    pub(crate) fn all_frames(&self, file: &ArchiveFile) -> Result<Vec<FrameEntry>> {
        let mut v = Vec::new();
        for (k, p) in self.head.frame_pages.iter().enumerate() {
            v.append(&mut self.parse_page(file, *p, &format!("point frame page {k}"))?);
        }
        Ok(v)
    }

    /// The whole blob table, sorted by SHA-256.
    ///
    /// # Errors
    /// A damaged page.
    pub(crate) fn all_blobs(&self, file: &ArchiveFile) -> Result<Vec<BlobEntry>> {
        let mut v = Vec::new();
        for (k, p) in self.head.blob_pages.iter().enumerate() {
            v.append(&mut self.parse_page(file, p.page, &format!("point blob page {k}"))?);
        }
        Ok(v)
    }

    /// Page `k` of mailbox `i`'s records, parsed as the catalog is, before the
    /// `catalog_of` rule (the caller applies it).
    ///
    /// # Errors
    /// A damaged page, or one of another mailbox.
    pub(crate) fn record_page(
        &self,
        file: &ArchiveFile,
        i: usize,
        k: usize,
    ) -> Result<MailboxRecord> {
        let m = self
            .head
            .mailboxes
            .get(i)
            .ok_or_else(|| corrupt("no such mailbox"))?;
        let pages = m.pages.as_deref().unwrap_or_default();
        let p = pages.get(k).ok_or_else(|| corrupt("no such page"))?;
        let what = format!("point page {k} of {}/{}", m.entry.user, m.entry.name);
        let json = self.page_json(file, p.page, &what)?;
        let rec: MailboxRecord =
            serde_json::from_slice(&json).map_err(|e| Error::corrupt(&what, e.to_string()))?;
        if rec.user != m.entry.user || rec.mailbox.name != m.entry.name || !rec.deleted.is_empty() {
            return Err(Error::corrupt(&what, "holds records of another mailbox"));
        }
        Ok(rec)
    }

    /// The page of mailbox `i` that would hold UID `uid`: `None` when the mailbox is not
    /// paged, `Some(None)` when it is and no page can hold the UID.
    pub(crate) fn page_of_uid(&self, i: usize, uid: u32) -> Option<Option<usize>> {
        let pages = self.head.mailboxes.get(i)?.pages.as_ref()?;
        Some(pages.partition_point(|p| p.uid <= uid).checked_sub(1))
    }

    /// File offset of the POINT frame.
    pub(crate) fn start(&self) -> u64 {
        self.start
    }

    /// Whether the frame's bytes up to the end of `frame_len` have the tail's CRC-32.
    ///
    /// # Errors
    /// I/O errors.
    pub(crate) fn crc_matches(&self, file: &ArchiveFile, index_offset: u64) -> Result<bool> {
        // Up to the end of `frame_len`, the tail's first 16 bytes.
        let end = index_offset - POINT_TAIL_LEN as u64 + 16;
        let mut crc = crc32fast::Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut pos = self.start;
        while pos < end {
            let n = usize::try_from(end - pos)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            read_exact_at(file, &mut buf[..n], pos, "point frame")?;
            crc.update(&buf[..n]);
            pos += n as u64;
        }
        Ok(crc.finalize() == self.crc)
    }
}
