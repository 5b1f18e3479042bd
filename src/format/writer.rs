//! [`ArchiveWriter`]: writes an archive sequentially to any `Write` (a file or a pipe).
//!
//! Order of calls: [`ArchiveWriter::new`] (HEADER frame and manifest member), then per user
//! [`ArchiveWriter::add_message`] for each message of a mailbox followed by
//! [`ArchiveWriter::add_mailbox`], then [`ArchiveWriter::add_user`]; last
//! [`ArchiveWriter::finish`] (tar end, INDEX, FOOTER). An archive whose `finish` was never
//! called has no footer, and readers report it as truncated.
//!
//! Memory: the current frame (<= [`FRAME_MAX`]), frames in flight in the compression pool,
//! a map of stored bodies (~120 B per distinct message) and the messages of the mailbox being
//! written. Mailbox catalogs are spooled to a temporary file, not kept in memory.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};

use sha2::{Digest, Sha256};

use super::frame::{CountingWriter, FramePipeline};
use super::index::{
    ArchiveStats, BlobEntry, ContentRef, Directory, Location, MailboxEntry, MailboxRecord,
    Manifest, MessageRecord, UserRecord,
};
use super::point::PointWriter;
use super::prepare::{BlobFacts, PrepareParams, Prepared, PreparedSplit};
use super::spec::*;
use super::tar::{EntryType, MemberHeader, encode_header, padding};
use crate::error::{Error, IoContext, Result, UNNAMED_ARCHIVE};
use crate::model::{Content, MailboxMeta, MessageMeta, Name, Uid, UserMeta};

/// Options that decide the bytes of an archive (so tests and vectors can be reproducible).
#[derive(Clone, Debug)]
pub struct WriterOptions {
    /// zstd level (1..=19; default 3).
    pub level: i32,
    /// Compression threads (1 = on the caller's thread).
    pub threads: usize,
    /// Close a data frame at the first member boundary past this many bytes
    /// (default [`FRAME_TARGET`]; small values make small frames, for tests).
    pub frame_target: usize,
    /// In a 1.2 or later archive, store a message read whole in parts when it has base64
    /// attachments of at least this many encoded bytes that re-encode exactly (spec 7.5
    /// "When"); 0 stores every such message whole. Default
    /// [`crate::mime::split::SPLIT_MIN`].
    pub split_min: usize,
    /// Entries per page of the POINT frame (1.4; default 64, `point::PAGE_ENTRIES`;
    /// small values make many pages, for tests and vectors).
    pub page_entries: usize,
}

/// The zstd level when none is given: 2. Mail compresses almost as well at 2 as at 3 once
/// attachments are stored decoded and once (the bench corpus's archive is 1.6% larger),
/// for a fifth less compression work: level 3 had maildump's full backup take 0.88-1.10x
/// the time of `tar | zstd -3`, level 2 takes 0.7-0.8x while the archive stays about
/// 0.74x the size of tar+zstd's (README, Benchmark). `--level 3` is the old default.
pub const DEFAULT_LEVEL: i32 = 2;

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            level: DEFAULT_LEVEL,
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            frame_target: FRAME_TARGET,
            split_min: crate::mime::split::SPLIT_MIN,
            page_entries: super::point::PAGE_ENTRIES,
        }
    }
}

/// Bodies up to this size are read once (into the frame, or into memory when the frame has
/// no room); larger ones are read twice, to hash and then to copy.
const INLINE_BODY: u64 = 16 << 20;

/// Capacity of a frame buffer: a frame never grows past [`FRAME_MAX`], so bodies read into
/// it never move.
const FRAME_BUF: usize = FRAME_MAX;

/// Where the facts of a message being added come from.
enum Facts {
    /// Computed from the bytes as they are read; the message may be stored in parts.
    Compute,
    /// Computed ahead ([`super::prepare`]).
    Given(Prepared),
    /// Computed as read; stored whole.
    Whole,
}

/// Writes one archive. See the module documentation for the order of calls.
pub struct ArchiveWriter<W: Write> {
    out: CountingWriter<W>,
    pipeline: FramePipeline,
    cur: Vec<u8>,
    cur_first: Option<u64>,
    manifest: Manifest,
    stored: HashMap<[u8; 32], (String, Location)>,
    chain: HashMap<[u8; 32], ContentRef>,
    /// Blobs stored in this archive (1.2).
    blobs: Vec<BlobEntry>,
    blob_stored: std::collections::HashSet<[u8; 32]>,
    /// Blobs the chain holds (an incremental does not store them again).
    chain_blobs: std::collections::HashSet<[u8; 32]>,
    /// Data members (1.2) stored in this archive: SHA-256 -> (member, location).
    parts_stored: HashMap<[u8; 32], (String, Location)>,
    users: Vec<UserMeta>,
    mailboxes: Vec<MailboxEntry>,
    gone: Vec<MailboxEntry>,
    spool: BufWriter<File>,
    spool_len: u64,
    /// The POINT frame being built (1.4 and later).
    point: Option<PointWriter>,
    stats: ArchiveStats,
    mtime: i64,
    scratch: Vec<u8>,
    frames_submitted: usize,
    frame_target: usize,
    /// The frame being filled holds an incompressible blob: it is written with raw blocks.
    cur_raw: bool,
    split_min: usize,
    /// Messages read whole and stored in parts, by the SHA-256 of the whole message: a
    /// second copy gets the same record without being split again.
    split_seen: HashMap<[u8; 32], MessageRecord>,
    /// Messages read whole and stored in parts.
    split_count: u64,
}

/// A message body: read once or twice (large bodies are hashed, then copied).
pub trait ReadSeek: Read + Seek {}

impl<T: Read + Seek + ?Sized> ReadSeek for T {}

/// Hash everything `r` still yields; returns the byte count.
fn hash_stream(
    r: &mut dyn Read,
    hasher: &mut Sha256,
    source_name: &std::path::Path,
) -> Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut n_total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(n_total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(source_name, e)),
        };
        hasher.update(&buf[..n]);
        n_total += n as u64;
    }
}

/// Percent-encode one name component for use in a tar member path.
///
/// Control bytes, `%`, `/`, `\` and bytes of invalid UTF-8 become `%XX`; a component that is
/// empty, starts with `.`, or ends with `.eml` or `.json` gets its first byte encoded, so it
/// can never collide with a message or metadata member.
pub fn encode_component(name: &[u8]) -> String {
    if name.is_empty() {
        return "%".to_string() + "empty";
    }
    let valid = std::str::from_utf8(name).is_ok();
    let reserved =
        name[0] == b'.' || name.ends_with(MESSAGE_SUFFIX.as_bytes()) || name.ends_with(b".json");
    // Bytes of the first character, all escaped when the component is reserved.
    let first_len = if reserved {
        std::str::from_utf8(name)
            .ok()
            .and_then(|s| s.chars().next())
            .map_or(1, char::len_utf8)
    } else {
        0
    };
    let mut out = String::with_capacity(name.len());
    let mut i = 0;
    while i < name.len() {
        let b = name[i];
        let must = b < 0x20 || b == 0x7f || b == b'%' || b == b'/' || b == b'\\';
        if i < first_len || must || (!valid && b >= 0x80) {
            out.push_str(&format!("%{b:02X}"));
            i += 1;
        } else if b < 0x80 {
            out.push(b as char);
            i += 1;
        } else {
            // Valid UTF-8 and `i` is on a character boundary: copy the whole character.
            match std::str::from_utf8(&name[i..])
                .ok()
                .and_then(|s| s.chars().next())
            {
                Some(c) => {
                    out.push(c);
                    i += c.len_utf8();
                }
                None => {
                    out.push_str(&format!("%{b:02X}"));
                    i += 1;
                }
            }
        }
    }
    out
}

/// Tar member of a message: `users/<user>/<mailbox...>/<uid>.eml`.
pub fn message_member(user: &Name, mailbox: &Name, uid: Uid) -> String {
    format!("{}/{}{MESSAGE_SUFFIX}", mailbox_dir(user, mailbox), uid.0)
}

/// The `mailbox.json` member: the mailbox record with one message per line, leaving out
/// what follows from elsewhere (the member path, the location, and the display headers
/// `from`, `subject`, `message_id`, which come from the message bytes and are kept in the
/// index for `list`).
fn mailbox_member_json(rec: &MailboxRecord) -> Result<Vec<u8>> {
    let mut out = b"{\"user\":".to_vec();
    serde_json::to_writer(&mut out, &rec.user).map_err(json_err)?;
    out.extend_from_slice(b",\"mailbox\":");
    serde_json::to_writer(&mut out, &rec.mailbox).map_err(json_err)?;
    out.extend_from_slice(b",\"messages\":[");
    for (i, m) in rec.messages.iter().enumerate() {
        out.extend_from_slice(if i == 0 { b"\n" } else { b",\n" });
        serde_json::to_writer(&mut out, &lean(m)).map_err(json_err)?;
    }
    out.extend_from_slice(b"\n]");
    if !rec.deleted.is_empty() {
        out.extend_from_slice(b",\"deleted\":[");
        for (i, m) in rec.deleted.iter().enumerate() {
            out.extend_from_slice(if i == 0 { b"\n" } else { b",\n" });
            serde_json::to_writer(&mut out, &lean(m)).map_err(json_err)?;
        }
        out.extend_from_slice(b"\n]");
    }
    out.extend_from_slice(b"}\n");
    Ok(out)
}

/// Tar member of the kept bytes of a deleted message:
/// `deleted/<user>/<mailbox...>/<uidvalidity>.<uid>.eml`.
pub fn deleted_member(user: &Name, mailbox: &Name, uidvalidity: u32, uid: Uid) -> String {
    format!(
        "{DELETED_DIR}/{}/{uidvalidity}.{}{MESSAGE_SUFFIX}",
        &mailbox_dir(user, mailbox)[USERS_DIR.len() + 1..],
        uid.0
    )
}

fn lean(m: &MessageRecord) -> MessageRecord {
    let mut lean = m.clone();
    lean.member.clear();
    lean.loc = None;
    lean.message.from = None;
    lean.message.subject = None;
    lean.message.message_id = None;
    lean
}

/// Tar directory of a mailbox: `users/<user>/<component>/<component>...`.
pub fn mailbox_dir(user: &Name, mailbox: &Name) -> String {
    let mut s = format!("{USERS_DIR}/{}", encode_component(user.as_bytes()));
    for c in mailbox.as_bytes().split(|&b| b == b'/') {
        s.push('/');
        s.push_str(&encode_component(c));
    }
    s
}

fn json_err(e: serde_json::Error) -> Error {
    Error::io("<json>", io::Error::other(e))
}

fn skippable(magic: u32, payload_len: usize) -> Result<[u8; SKIPPABLE_HEADER_LEN]> {
    let len = u32::try_from(payload_len).map_err(|_| Error::Limit {
        item: "index".into(),
        detail: format!("{payload_len} bytes is too large for a skippable frame"),
    })?;
    let mut h = [0u8; SKIPPABLE_HEADER_LEN];
    h[..4].copy_from_slice(&magic.to_le_bytes());
    h[4..].copy_from_slice(&len.to_le_bytes());
    Ok(h)
}

impl<W: Write> ArchiveWriter<W> {
    /// Start an archive: writes the HEADER frame and the manifest member.
    ///
    /// # Errors
    /// Write errors on `out` or on the temporary spool file.
    pub fn new(out: W, manifest: Manifest, opts: &WriterOptions) -> Result<Self> {
        let mtime = chrono::DateTime::parse_from_rfc3339(&manifest.created)
            .map(|t| t.timestamp())
            .unwrap_or(0);
        let spool = tempfile::tempfile().at("<temporary index spool>")?;
        let mut w = ArchiveWriter {
            out: CountingWriter::new(out),
            pipeline: FramePipeline::new(opts.level, opts.threads.max(1)),
            cur: Vec::with_capacity(FRAME_BUF),
            cur_first: None,
            manifest,
            stored: HashMap::new(),
            chain: HashMap::new(),
            blobs: Vec::new(),
            blob_stored: std::collections::HashSet::new(),
            chain_blobs: std::collections::HashSet::new(),
            parts_stored: HashMap::new(),
            users: Vec::new(),
            mailboxes: Vec::new(),
            gone: Vec::new(),
            spool: BufWriter::new(spool),
            spool_len: 0,
            point: None,
            stats: ArchiveStats::default(),
            mtime,
            scratch: Vec::new(),
            frames_submitted: 0,
            frame_target: opts.frame_target.clamp(TAR_BLOCK, FRAME_MAX),
            cur_raw: false,
            split_min: opts.split_min,
            split_seen: HashMap::new(),
            split_count: 0,
        };
        if w.manifest.format_minor >= FORMAT_MINOR_POINT {
            w.point = Some(PointWriter::new(opts.page_entries)?);
        }
        let mut payload = [0u8; HEADER_PAYLOAD_LEN];
        payload[..8].copy_from_slice(HEADER_MAGIC);
        payload[8..10].copy_from_slice(&FORMAT_MAJOR.to_le_bytes());
        payload[10..12].copy_from_slice(&w.manifest.format_minor.to_le_bytes());
        w.out
            .write_all(&skippable(HEADER_FRAME_MAGIC, HEADER_PAYLOAD_LEN)?)
            .at(UNNAMED_ARCHIVE)?;
        w.out.write_all(&payload).at(UNNAMED_ARCHIVE)?;
        let json = serde_json::to_vec_pretty(&w.manifest).map_err(json_err)?;
        w.add_json_member(MANIFEST_MEMBER, &json)?;
        Ok(w)
    }

    /// Location of the next byte pushed (`push` never leaves the frame full).
    fn here(&self) -> Location {
        let frame = u32::try_from(self.frames_submitted).unwrap_or(u32::MAX);
        Location {
            frame,
            offset: self.cur.len() as u64,
        }
    }

    fn begin_member(&mut self) {
        if self.cur_first.is_none() {
            self.cur_first = Some(self.cur.len() as u64);
        }
    }

    fn end_member(&mut self) -> Result<()> {
        if self.cur.len() >= self.frame_target {
            self.flush_frame()?;
        }
        Ok(())
    }

    fn flush_frame(&mut self) -> Result<()> {
        if self.cur.is_empty() {
            return Ok(());
        }
        let next = self.pipeline.buffer(FRAME_BUF);
        let data = std::mem::replace(&mut self.cur, next);
        let first = self.cur_first.take();
        self.frames_submitted += 1;
        self.pipeline
            .submit(data, first, self.cur_raw, &mut self.out)
            .at(UNNAMED_ARCHIVE)
    }

    /// Append raw member bytes, splitting frames at [`FRAME_MAX`].
    fn push(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            let room = FRAME_MAX - self.cur.len();
            let n = room.min(data.len());
            self.cur.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.cur.len() >= FRAME_MAX {
                self.flush_frame()?;
            }
        }
        Ok(())
    }

    fn header(&mut self, h: &MemberHeader<'_>) -> Result<()> {
        self.begin_member();
        let mut hb = Vec::with_capacity(TAR_BLOCK * 3);
        if !encode_header(h, &mut hb) {
            return Err(Error::Limit {
                item: h.path.to_string(),
                detail: "too large for a tar member header".into(),
            });
        }
        self.push(&hb)
    }

    fn pad(&mut self, size: u64) -> Result<()> {
        let zeros = [0u8; TAR_BLOCK];
        self.push(&zeros[..padding(size)])
    }

    fn add_json_member(&mut self, path: &str, json: &[u8]) -> Result<()> {
        self.add_data_member(path, json, 0o644).map(|_| ())
    }

    /// Store one message of `mailbox` of `user`, reading its bytes from `body`.
    ///
    /// Computes the SHA-256 and size into `meta.content`. A body already stored in this
    /// archive is not stored again: the member becomes a hard link to the first copy.
    /// Bodies up to 16 MiB are read once, straight into the frame being filled when it has
    /// room (else into memory); larger ones are read twice (hash, then copy, checking the
    /// hash again), which costs a second read from the page cache instead of a temporary copy.
    ///
    /// # Errors
    /// Read errors of `body` (named `source_name`), a body that changed between the two
    /// reads ([`Error::StoreDamaged`]), write errors.
    pub fn add_message(
        &mut self,
        user: &Name,
        mailbox: &Name,
        meta: MessageMeta,
        body: &mut dyn ReadSeek,
        size_hint: u64,
        source_name: &std::path::Path,
    ) -> Result<MessageRecord> {
        let member = message_member(user, mailbox, meta.uid);
        self.add_message_as(member, meta, body, size_hint, source_name, Facts::Compute)
    }

    /// [`ArchiveWriter::add_message`] for a message read whole into `bytes` (at most 16 MiB),
    /// whose facts were computed ahead ([`super::prepare::prepare`] with
    /// [`ArchiveWriter::prepare_params`]): the same archive, without hashing or splitting
    /// on this thread.
    ///
    /// # Errors
    /// Write errors.
    pub(crate) fn add_prepared(
        &mut self,
        user: &Name,
        mailbox: &Name,
        meta: MessageMeta,
        bytes: &[u8],
        facts: Prepared,
        source_name: &std::path::Path,
    ) -> Result<MessageRecord> {
        let member = message_member(user, mailbox, meta.uid);
        let mut body = std::io::Cursor::new(bytes);
        let size = bytes.len() as u64;
        // The writer reads larger bodies twice (hash, then copy): it hashes them itself.
        let facts = match size <= INLINE_BODY {
            true => Facts::Given(facts),
            false => Facts::Compute,
        };
        self.add_message_as(member, meta, &mut body, size, source_name, facts)
    }

    /// The settings the facts of [`ArchiveWriter::add_prepared`] must be computed with.
    pub(crate) fn prepare_params(&self) -> PrepareParams {
        let splits = self.manifest.format_minor >= FORMAT_MINOR_ATTACHMENTS;
        PrepareParams {
            split_min: if splits { self.split_min } else { 0 },
        }
    }

    // One pass over a message body (hash, deduplicate, frame, compress, record) in the
    // order the format requires; split, the single-pass invariant would span functions.
    #[allow(clippy::too_many_lines)]
    fn add_message_as(
        &mut self,
        member: String,
        mut meta: MessageMeta,
        body: &mut dyn ReadSeek,
        size_hint: u64,
        source_name: &std::path::Path,
        facts: Facts,
    ) -> Result<MessageRecord> {
        let may_split = !matches!(facts, Facts::Whole);
        let (ahead, split_ahead) = match facts {
            Facts::Given(f) => (Some(f.digest), Some(f.split)),
            _ => (None, None),
        };
        let (mode, uid, gid) = meta
            .owner
            .map(|o| (o.mode, o.uid, o.gid))
            .unwrap_or((0o600, 0, 0));
        let mut h = MemberHeader {
            path: &member,
            kind: EntryType::Regular,
            link: None,
            size: size_hint.min(MESSAGE_LIMIT),
            mtime: meta.received.secs,
            mode,
            uid,
            gid,
        };
        let mut hb = Vec::with_capacity(TAR_BLOCK * 3);
        if !encode_header(&h, &mut hb) {
            return Err(Error::Limit {
                item: member.clone(),
                detail: "too large for a tar member header".into(),
            });
        }
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        // Where the body sits in the current frame when it was read straight into it.
        let mut in_frame = None;
        let start = self.cur.len();
        // Room for the body when the whole member (header, body, padding) stays below
        // FRAME_MAX, so `push` would not have split it: the frames are the same either way.
        let room = FRAME_MAX.saturating_sub(start + hb.len() + TAR_BLOCK);
        self.scratch.clear();
        if size_hint <= INLINE_BODY && size_hint < room as u64 {
            // The common case: read the body into the frame after room for its header, so
            // its bytes are copied once. The header is filled in once the size is known.
            self.cur.resize(start + hb.len(), 0);
            let at = self.cur.len();
            let mut limited = (&mut *body).take(room as u64 + 1);
            let read = limited.read_to_end(&mut self.cur);
            if let Err(e) = read {
                self.cur.truncate(start);
                return Err(Error::io(source_name, e));
            }
            size = (self.cur.len() - at) as u64;
            if ahead.is_none() {
                hasher.update(&self.cur[at..]);
            }
            if self.cur.len() - at <= room {
                in_frame = Some(at);
            } else {
                // The file grew past the room: what was read moves to memory, the rest
                // follows it there.
                self.scratch.extend_from_slice(&self.cur[at..]);
                self.cur.truncate(start);
            }
        }
        if in_frame.is_none() && size_hint <= INLINE_BODY {
            let had = self.scratch.len();
            let mut limited = (&mut *body).take((INLINE_BODY + 1).saturating_sub(had as u64));
            limited.read_to_end(&mut self.scratch).at(source_name)?;
            size = self.scratch.len() as u64;
            if ahead.is_none() {
                hasher.update(&self.scratch[had..]);
            }
        }
        let large = in_frame.is_none() && (size > INLINE_BODY || size_hint > INLINE_BODY);
        if large {
            // First pass: hash the rest; the bytes are copied by a second pass if needed.
            self.scratch.clear();
            size += hash_stream(body, &mut hasher, source_name)?;
        }
        let digest: [u8; 32] = match ahead {
            Some(d) if !large => d,
            _ => hasher.finalize().into(),
        };
        meta.content = Content {
            sha256: hex::encode(digest),
            size,
            ..Content::default()
        };
        self.stats.messages += 1;
        self.stats.message_bytes += size;

        let known = self.stored.get(&digest).cloned();
        let in_chain = self.chain.get(&digest).cloned();
        let seen = self.split_seen.get(&digest).cloned();
        if in_frame.is_some() && (known.is_some() || in_chain.is_some() || seen.is_some()) {
            self.cur.truncate(start);
        }
        if let Some(prev) = seen {
            // The same bytes, read whole and stored in parts before: the same record.
            self.split_count += 1;
            if prev.is_external() {
                self.stats.referenced += 1;
            }
            meta.content = prev.message.content.clone();
            return Ok(MessageRecord {
                message: meta,
                ..prev
            });
        }
        if let Some((target, loc)) = known {
            return self.add_link(member, target, Some(loc), meta);
        }
        if let Some(r) = in_chain {
            // Held by an earlier archive of the chain: recorded, not stored again (the
            // message is already counted above).
            self.stats.referenced += 1;
            return Ok(MessageRecord::referring(meta, r));
        }
        if size > MESSAGE_LIMIT {
            return Err(Error::store(source_name, "message larger than 8 GiB"));
        }
        if may_split && !large {
            let bytes = match in_frame {
                Some(at) => &self.cur[at..],
                None => &self.scratch[..],
            };
            let split = match split_ahead {
                Some(s) => s,
                None => self.split_message(bytes).map(|split| PreparedSplit {
                    split,
                    blobs: Vec::new(),
                }),
            };
            if let Some(PreparedSplit { split, blobs }) = split {
                self.split_count += 1;
                if in_frame.is_some() {
                    self.cur.truncate(start);
                }
                let facts = (!blobs.is_empty()).then_some(&blobs[..]);
                let rec = self.put_parts(
                    meta,
                    &split.data,
                    split.parts,
                    &split.blobs,
                    facts,
                    source_name,
                )?;
                self.split_seen.insert(digest, rec.clone());
                return Ok(rec);
            }
        }
        h.size = size;
        hb.clear();
        if !encode_header(&h, &mut hb) {
            return Err(Error::Limit {
                item: member.clone(),
                detail: "too large for a tar member header".into(),
            });
        }
        let loc = match in_frame {
            Some(at) => {
                if self.cur_first.is_none() {
                    self.cur_first = Some(start as u64);
                }
                if hb.len() == at - start {
                    self.cur[start..at].copy_from_slice(&hb);
                } else {
                    self.cur.splice(start..at, hb.iter().copied());
                }
                Location {
                    frame: u32::try_from(self.frames_submitted).unwrap_or(u32::MAX),
                    offset: (start + hb.len()) as u64,
                }
            }
            None => {
                self.begin_member();
                self.push(&hb)?;
                let loc = self.here();
                if large {
                    self.copy_second_pass(body, size, &digest, source_name)?;
                } else {
                    let data = std::mem::take(&mut self.scratch);
                    self.push(&data)?;
                    self.scratch = data;
                }
                loc
            }
        };
        self.pad(size)?;
        self.end_member()?;
        self.stored.insert(digest, (member.clone(), loc));
        self.stats.bodies += 1;
        self.stats.stored_bytes += size;
        Ok(MessageRecord {
            loc: Some(loc),
            ..MessageRecord::bare_at(member, meta)
        })
    }

    /// Store a message in parts (format 1.2, spec 6.8): the archive stores `data` (the
    /// message without its blob parts) as the member `parts/<sha256>`, and each blob of
    /// `parts` (whose bytes `blobs` holds, in order) as `blobs/<sha256>`, each at most once
    /// per archive chain. A blob part whose SHA-256 is empty gets it filled in; one that
    /// names a SHA-256 must match its bytes. The message is put together from its parts once, for its SHA-256;
    /// when `meta.content` already names a size (and a hash), the result must match them.
    ///
    /// # Errors
    /// Parts that do not give the message back ([`Error::StoreDamaged`] naming
    /// `source_name`), write errors.
    pub fn add_message_in_parts(
        &mut self,
        mut meta: MessageMeta,
        data: &[u8],
        parts: Vec<crate::model::Part>,
        blobs: &[Vec<u8>],
        source_name: &std::path::Path,
    ) -> Result<MessageRecord> {
        let (full_sha, size) = crate::mime::parts::digest(&parts, data, blobs)
            .map_err(|e| Error::store(source_name, format!("message parts: {e}")))?;
        let want = &meta.content;
        if (want.size != 0 && want.size != size)
            || (!want.sha256.is_empty() && want.sha256 != full_sha)
        {
            return Err(Error::store(
                source_name,
                format!(
                    "the message put together from its parts ({size} bytes) is not the message recorded ({} bytes)",
                    want.size
                ),
            ));
        }
        meta.content = Content {
            sha256: full_sha,
            size,
            ..Content::default()
        };
        self.stats.messages += 1;
        self.stats.message_bytes += size;
        self.put_parts(meta, data, parts, blobs, None, source_name)
    }

    /// The parts of a message read whole (`bytes`) when it has base64 attachments worth
    /// storing apart and this archive may hold messages in parts (1.2); checked to give
    /// `bytes` back exactly (spec 7.5 "Checks before writing": `bytes` is what was hashed
    /// for the record, so equal bytes have its length and SHA-256).
    fn split_message(&self, bytes: &[u8]) -> Option<crate::mime::split::Split> {
        super::prepare::split_checked(bytes, self.prepare_params().split_min)
    }

    /// Store the blobs and the data member of a message whose `meta.content` names the
    /// whole message (already counted), and return its record (spec 7.5 "Members").
    fn put_parts(
        &mut self,
        mut meta: MessageMeta,
        data: &[u8],
        mut parts: Vec<crate::model::Part>,
        blobs: &[Vec<u8>],
        facts: Option<&[BlobFacts]>,
        source_name: &std::path::Path,
    ) -> Result<MessageRecord> {
        let mut blob_bytes = blobs.iter().enumerate();
        for p in &mut parts {
            let Some(sha) = &mut p.blob else { continue };
            let Some((i, b)) = blob_bytes.next() else {
                break;
            };
            let known = facts.and_then(|f| f.get(i));
            let digest: [u8; 32] = match known {
                Some(f) => f.digest,
                None => Sha256::digest(b).into(),
            };
            if sha.is_empty() {
                *sha = hex::encode(digest);
            } else if hex::decode(&*sha).ok().as_deref() != Some(&digest[..]) {
                return Err(Error::store(
                    source_name,
                    format!("blob {sha}: wrong SHA-256"),
                ));
            }
            let sha = &*sha;
            if self.blob_stored.contains(&digest) || self.chain_blobs.contains(&digest) {
                continue;
            }
            let path = format!("{BLOBS_DIR}/{sha}");
            let raw = known.map_or_else(|| super::frame::incompressible(b), |f| f.raw);
            let loc = if raw {
                self.add_raw_member(&path, b)?
            } else {
                self.add_data_member(&path, b, 0o600)?
            };
            self.blob_stored.insert(digest);
            self.blobs.push(BlobEntry {
                sha256: sha.clone(),
                size: b.len() as u64,
                loc,
            });
            self.stats.blobs += 1;
            self.stats.blob_bytes += b.len() as u64;
        }
        let digest: [u8; 32] = Sha256::digest(data).into();
        let data_sha = hex::encode(digest);
        meta.content.data = Some(crate::model::DataRef {
            sha256: data_sha.clone(),
            size: data.len() as u64,
        });
        meta.content.parts = parts;
        let member = format!("{PARTS_DIR}/{data_sha}");
        // Only a `parts/` member is reused, so that the member of a record in parts can
        // always be derived from its data hash (spec 5.5, 6.5).
        if let Some((target, loc)) = self.parts_stored.get(&digest).cloned() {
            return Ok(MessageRecord {
                loc: Some(loc),
                ..MessageRecord::bare_at(target, meta)
            });
        }
        if let Some(r) = self.chain.get(&digest).cloned() {
            self.stats.referenced += 1;
            return Ok(MessageRecord::referring(meta, r));
        }
        let loc = self.add_data_member(&member, data, 0o600)?;
        self.parts_stored.insert(digest, (member.clone(), loc));
        // A later message stored whole with these very bytes may link to it (4.3).
        self.stored.entry(digest).or_insert((member.clone(), loc));
        self.stats.bodies += 1;
        self.stats.stored_bytes += data.len() as u64;
        Ok(MessageRecord {
            loc: Some(loc),
            ..MessageRecord::bare_at(member, meta)
        })
    }

    /// Write a blob member whose bytes do not compress in frames of its own, made of raw
    /// blocks (spec 3.2 "Where frames are closed"): the frame being filled is closed before
    /// it and the member's last frame after it.
    fn add_raw_member(&mut self, path: &str, data: &[u8]) -> Result<Location> {
        self.flush_frame()?;
        self.cur_raw = true;
        let loc = self.add_data_member(path, data, 0o600);
        let flushed = self.flush_frame();
        self.cur_raw = false;
        flushed?;
        loc
    }

    /// Write a regular member holding `data` (a blob, a data member, a JSON document) with
    /// the archive's time and owner 0:0; returns where its bytes start.
    fn add_data_member(&mut self, path: &str, data: &[u8], mode: u32) -> Result<Location> {
        let h = MemberHeader {
            path,
            kind: EntryType::Regular,
            link: None,
            size: data.len() as u64,
            mtime: self.mtime,
            mode,
            uid: 0,
            gid: 0,
        };
        self.header(&h)?;
        let loc = self.here();
        self.push(data)?;
        self.pad(data.len() as u64)?;
        self.end_member()?;
        Ok(loc)
    }

    /// Record a message whose bytes are those of `prev`, a record this archive made earlier
    /// (a message the store shares between mailboxes: an mdbox copy, an sdbox hard link),
    /// without reading them again: a hard-link member to `prev`'s member, the same data
    /// member for a message in parts, or the same reference.
    ///
    /// # Errors
    /// Write errors.
    pub(crate) fn add_copy(
        &mut self,
        user: &Name,
        mailbox: &Name,
        mut meta: MessageMeta,
        prev: &MessageRecord,
    ) -> Result<MessageRecord> {
        meta.content = prev.message.content.clone();
        meta.from.clone_from(&prev.message.from);
        meta.subject.clone_from(&prev.message.subject);
        meta.message_id.clone_from(&prev.message.message_id);
        self.stats.messages += 1;
        self.stats.message_bytes += meta.content.size;
        if prev.is_external() {
            self.stats.referenced += 1;
            return Ok(MessageRecord {
                archive: prev.archive.clone(),
                archive_loc: prev.archive_loc,
                ..MessageRecord::bare(meta)
            });
        }
        if prev.in_parts() {
            return Ok(MessageRecord {
                loc: prev.loc,
                ..MessageRecord::bare_at(prev.member.clone(), meta)
            });
        }
        let member = message_member(user, mailbox, meta.uid);
        let target = prev.link.clone().unwrap_or_else(|| prev.member.clone());
        self.add_link(member, target, prev.loc, meta)
    }

    /// A hard-link member `member` to `target` (whose bytes start at `loc`), and its record.
    fn add_link(
        &mut self,
        member: String,
        target: String,
        loc: Option<Location>,
        meta: MessageMeta,
    ) -> Result<MessageRecord> {
        let (mode, uid, gid) = meta
            .owner
            .map(|o| (o.mode, o.uid, o.gid))
            .unwrap_or((0o600, 0, 0));
        let h = MemberHeader {
            path: &member,
            kind: EntryType::Link,
            link: Some(&target),
            size: 0,
            mtime: meta.received.secs,
            mode,
            uid,
            gid,
        };
        self.header(&h)?;
        self.end_member()?;
        Ok(MessageRecord {
            link: Some(target),
            loc,
            ..MessageRecord::bare_at(member, meta)
        })
    }

    /// Bytes known to be held by other archives of a chain, by SHA-256: a message with such
    /// bytes is recorded with a reference instead of being stored ([`Self::add_message`]).
    /// `blobs`: the blobs (1.2) the chain holds, by SHA-256; they are not stored again.
    pub(crate) fn set_chain_content(
        &mut self,
        chain: HashMap<[u8; 32], ContentRef>,
        blobs: std::collections::HashSet<[u8; 32]>,
    ) {
        self.chain = chain;
        self.chain_blobs = blobs;
    }

    /// Record a message whose bytes another archive holds (`meta.content` must be filled
    /// in). No tar member is written.
    pub(crate) fn add_reference(&mut self, meta: MessageMeta, r: ContentRef) -> MessageRecord {
        self.stats.messages += 1;
        self.stats.message_bytes += meta.content.size;
        self.stats.referenced += 1;
        MessageRecord::referring(meta, r)
    }

    /// Record a message whose bytes this archive does not hold and whose holder is not known
    /// (a since-archive's unchanged message; `meta.content.sha256` may be empty).
    pub(crate) fn add_unread(&mut self, meta: MessageMeta) -> MessageRecord {
        self.stats.messages += 1;
        self.stats.message_bytes += meta.content.size;
        self.stats.referenced += 1;
        MessageRecord::bare(meta)
    }

    /// Store the bytes of a record of deleted mail (`merge --keep-deleted`), under the
    /// member `deleted/<user>/<mailbox>/<uidvalidity>.<uid>.eml` (4.4's encoding), or as a
    /// link when this archive already holds them. Does not count as a message of the state.
    ///
    /// # Errors
    /// As [`Self::add_message`].
    pub(crate) fn add_deleted_body(
        &mut self,
        user: &Name,
        mailbox: &Name,
        uidvalidity: u32,
        meta: MessageMeta,
        body: &mut dyn ReadSeek,
        source_name: &std::path::Path,
    ) -> Result<MessageRecord> {
        let size = meta.content.size;
        let member = deleted_member(user, mailbox, uidvalidity, meta.uid);
        let before = self.stats;
        let saved = std::mem::take(&mut self.chain);
        // Kept deleted records are always stored whole (spec 7.5 "Merge").
        let rec = self.add_message_as(member, meta, body, size, source_name, Facts::Whole);
        self.chain = saved;
        let rec = rec?;
        self.stats.messages = before.messages;
        self.stats.message_bytes = before.message_bytes;
        Ok(rec)
    }

    /// Second pass over a large body: copy exactly `size` bytes into the archive and check
    /// they still hash to `digest`.
    fn copy_second_pass(
        &mut self,
        body: &mut dyn ReadSeek,
        size: u64,
        digest: &[u8; 32],
        source_name: &std::path::Path,
    ) -> Result<()> {
        body.seek(SeekFrom::Start(0)).at(source_name)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut left = size;
        while left > 0 {
            let want = buf.len().min(usize::try_from(left).unwrap_or(buf.len()));
            body.read_exact(&mut buf[..want]).map_err(|e| {
                Error::store(
                    source_name,
                    format!("message file shrank during backup: {e}"),
                )
            })?;
            hasher.update(&buf[..want]);
            self.push(&buf[..want])?;
            left -= want as u64;
        }
        if hasher.finalize().as_slice() != digest {
            return Err(Error::store(
                source_name,
                "message file changed during backup",
            ));
        }
        Ok(())
    }

    /// Finish a mailbox: writes its `mailbox.json` member and spools its index catalog.
    ///
    /// # Errors
    /// Write errors.
    pub fn add_mailbox(
        &mut self,
        user: &Name,
        mailbox: MailboxMeta,
        messages: Vec<MessageRecord>,
        deleted: Vec<MessageRecord>,
        signature: Option<String>,
    ) -> Result<()> {
        let mut entry = self.write_mailbox_record(user, mailbox, messages, deleted, false)?;
        entry.signature = signature;
        self.mailboxes.push(entry);
        Ok(())
    }

    /// Record an unchanged mailbox by copying a catalog of another archive byte for byte
    /// (`raw`, compressed, as [`super::reader::Archive::raw_catalog`] gives it): no
    /// `mailbox.json` member is written, and the entry says which archive wrote the catalog
    /// (`catalog_of`; for a catalog that was itself a copy, the archive that first wrote
    /// it). Counts every message as referenced.
    ///
    /// # Errors
    /// Write errors on the temporary spool.
    pub(crate) fn copy_mailbox(
        &mut self,
        from: &MailboxEntry,
        raw: &[u8],
        catalog_of: String,
    ) -> Result<()> {
        self.spool.write_all(raw).at("<temporary index spool>")?;
        let entry = MailboxEntry {
            user: from.user.clone(),
            name: from.name.clone(),
            messages: from.messages,
            catalog_offset: self.spool_len,
            catalog_len: raw.len() as u64,
            signature: from.signature.clone(),
            catalog_of: Some(catalog_of),
        };
        if let Some(p) = &mut self.point {
            p.add_copied(&entry);
        }
        self.mailboxes.push(entry);
        self.spool_len += raw.len() as u64;
        self.stats.messages += from.messages;
        self.stats.referenced += from.messages;
        Ok(())
    }

    /// Record a mailbox that no longer exists, with the records of its deleted mail.
    ///
    /// # Errors
    /// Write errors.
    pub(crate) fn add_gone(
        &mut self,
        user: &Name,
        mailbox: MailboxMeta,
        deleted: Vec<MessageRecord>,
    ) -> Result<()> {
        let entry = self.write_mailbox_record(user, mailbox, Vec::new(), deleted, true)?;
        self.gone.push(entry);
        Ok(())
    }

    fn write_mailbox_record(
        &mut self,
        user: &Name,
        mailbox: MailboxMeta,
        messages: Vec<MessageRecord>,
        deleted: Vec<MessageRecord>,
        gone: bool,
    ) -> Result<MailboxEntry> {
        let mut rec = MailboxRecord {
            user: user.clone(),
            mailbox,
            messages,
            deleted,
        };
        self.stats.deleted += rec.deleted.len() as u64;
        for m in rec.messages.iter_mut().chain(rec.deleted.iter_mut()) {
            m.message.omit_derived_guid();
        }
        let dir = if gone {
            format!(
                "{DELETED_DIR}/{}",
                &mailbox_dir(user, &rec.mailbox.name)[USERS_DIR.len() + 1..]
            )
        } else {
            mailbox_dir(user, &rec.mailbox.name)
        };
        let path = format!("{dir}/{MAILBOX_MEMBER}");
        self.add_json_member(&path, &mailbox_member_json(&rec)?)?;
        let json = serde_json::to_vec(&rec).map_err(json_err)?;
        if json.len() as u64 > JSON_LIMIT {
            // Readers refuse larger catalogs; failing here beats writing an unreadable archive.
            return Err(Error::Limit {
                item: format!("user {user} mailbox {}", rec.mailbox.name),
                detail: format!(
                    "{} messages make a catalog over the format's {JSON_LIMIT}-byte limit",
                    rec.messages.len()
                ),
            });
        }
        let comp = super::frame::compress_frame(3, &json).at("<index catalog>")?;
        self.spool.write_all(&comp).at("<temporary index spool>")?;
        let entry = MailboxEntry {
            user: user.clone(),
            name: rec.mailbox.name.clone(),
            messages: rec.messages.len() as u64,
            catalog_offset: self.spool_len,
            catalog_len: comp.len() as u64,
            signature: None,
            catalog_of: None,
        };
        self.spool_len += comp.len() as u64;
        if let Some(p) = self.point.as_mut().filter(|_| !gone) {
            p.add_mailbox(&entry, &rec)?;
        }
        Ok(entry)
    }

    /// Finish a user: writes its `user.json` member.
    ///
    /// # Errors
    /// Write errors.
    pub fn add_user(&mut self, user: UserMeta, mailboxes: Vec<Name>) -> Result<()> {
        let rec = UserRecord { user, mailboxes };
        let json = serde_json::to_vec_pretty(&rec).map_err(json_err)?;
        let path = format!(
            "{USERS_DIR}/{}/{USER_MEMBER}",
            encode_component(rec.user.name.as_bytes())
        );
        self.add_json_member(&path, &json)?;
        self.users.push(rec.user);
        Ok(())
    }

    /// Messages read whole ([`Self::add_message`]) and stored in parts so far, their
    /// base64 attachments taken out (not counted in [`ArchiveStats`], which the archive
    /// records).
    pub(crate) fn split_messages(&self) -> u64 {
        self.split_count
    }

    /// Counts so far.
    pub fn stats(&self) -> ArchiveStats {
        self.stats
    }

    /// Write the tar end marker, the INDEX and the FOOTER; return the sink.
    ///
    /// # Errors
    /// Write errors.
    pub fn finish(mut self) -> Result<W> {
        let zeros = [0u8; TAR_BLOCK * 2];
        self.push(&zeros)?;
        self.flush_frame()?;
        self.pipeline.flush_all(&mut self.out).at(UNNAMED_ARCHIVE)?;
        if let Some(p) = self.point.take() {
            p.finish(
                &mut self.out,
                &self.manifest,
                &self.gone,
                &self.pipeline.frames,
                &self.blobs,
            )?;
        }
        let dir = Directory {
            manifest: self.manifest.clone(),
            frames: std::mem::take(&mut self.pipeline.frames),
            users: std::mem::take(&mut self.users),
            mailboxes: std::mem::take(&mut self.mailboxes),
            gone: std::mem::take(&mut self.gone),
            blobs: std::mem::take(&mut self.blobs),
            stats: self.stats,
        };
        let dir_json = serde_json::to_vec(&dir).map_err(json_err)?;
        let dir_comp = super::frame::compress_frame(3, &dir_json).at("<index directory>")?;
        // INDEX payload: magic, u64 directory length, directory frame, catalogs.
        let head_len = INDEX_MAGIC.len() + 8;
        let payload_len =
            head_len + dir_comp.len() + usize::try_from(self.spool_len).unwrap_or(usize::MAX);
        let mut spool = self
            .spool
            .into_inner()
            .map_err(|e| Error::io("<temporary index spool>", e.into_error()))?;
        spool
            .seek(SeekFrom::Start(0))
            .at("<temporary index spool>")?;
        let index_offset = self.out.position();
        let mut hasher = Sha256::new();
        let mut head = Vec::with_capacity(head_len);
        head.extend_from_slice(INDEX_MAGIC);
        head.extend_from_slice(&(dir_comp.len() as u64).to_le_bytes());
        self.out
            .write_all(&skippable(INDEX_FRAME_MAGIC, payload_len)?)
            .at(UNNAMED_ARCHIVE)?;
        for part in [&head[..], &dir_comp[..]] {
            hasher.update(part);
            self.out.write_all(part).at(UNNAMED_ARCHIVE)?;
        }
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = spool.read(&mut buf).at("<temporary index spool>")?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            self.out.write_all(&buf[..n]).at(UNNAMED_ARCHIVE)?;
        }
        let index_len = (SKIPPABLE_HEADER_LEN + payload_len) as u64;
        let mut footer = [0u8; FOOTER_PAYLOAD_LEN];
        footer[..8].copy_from_slice(FOOTER_MAGIC);
        footer[8..10].copy_from_slice(&FORMAT_MAJOR.to_le_bytes());
        footer[10..12].copy_from_slice(&self.manifest.format_minor.to_le_bytes());
        footer[16..24].copy_from_slice(&index_offset.to_le_bytes());
        footer[24..32].copy_from_slice(&index_len.to_le_bytes());
        footer[32..64].copy_from_slice(&hasher.finalize());
        self.out
            .write_all(&skippable(FOOTER_FRAME_MAGIC, FOOTER_PAYLOAD_LEN)?)
            .at(UNNAMED_ARCHIVE)?;
        self.out.write_all(&footer).at(UNNAMED_ARCHIVE)?;
        self.out.flush().at(UNNAMED_ARCHIVE)?;
        Ok(self.out.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::encode_component;

    #[test]
    fn components_are_safe_and_distinct() {
        assert_eq!(encode_component(b"Work"), "Work");
        assert_eq!(encode_component(b"\xc3\x9cn\xc3\xaf Box"), "Ünï Box");
        assert_eq!(encode_component(b".."), "%2E.");
        assert_eq!(encode_component(b"a/b%c"), "a%2Fb%25c");
        assert_eq!(encode_component(b"12.eml"), "%312.eml");
        assert_eq!(encode_component(b""), "%empty");
        assert_eq!(encode_component(b"\xff\xfe"), "%FF%FE");
        // A reserved name starting with a non-ASCII character: the whole character is escaped.
        assert_eq!(encode_component("Ü.eml".as_bytes()), "%C3%9C.eml");
        assert_ne!(
            encode_component("Ü.eml".as_bytes()),
            encode_component("Ý.eml".as_bytes())
        );
    }
}
