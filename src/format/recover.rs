//! Recovery by scanning: every frame of a damaged archive (or one without its index) is
//! decompressed in turn, the tar stream in it followed member by member ([`scan`]), and a
//! directory and catalogs rebuilt from the JSON members found ([`Scan::rebuild`]). Damage
//! is recorded, naming the frame, its offset and the items lost, never a panic.

use std::collections::HashMap;
use std::io::{self, BufReader, Read, Seek};

use sha2::{Digest, Sha256};

use super::index::{
    Directory, FrameEntry, Location, MailboxEntry, MailboxRecord, Manifest, UserRecord,
};
use super::reader::{check_sizes, decompress_bounded, fill_derived, le_u32};
use super::source::{Source, SourceReader};
use super::spec::*;
use super::tar::{EntryType, HeaderError, decode_header, parse_pax};
use crate::error::{Error, IoContext, Result, UNNAMED_ARCHIVE};

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
    /// Offset of the last POINT frame (1.4) seen, if any.
    pub point_at: Option<u64>,
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

impl Scan {
    /// Note a skippable frame of magic `m` and payload `size` at `pos` (the INDEX, POINT
    /// and FOOTER frames) in a file of `len` bytes; returns where the next frame starts.
    fn skippable(&mut self, m: u32, size: u64, pos: u64, len: u64) -> u64 {
        match m {
            INDEX_FRAME_MAGIC => self.index_at = Some(pos),
            POINT_FRAME_MAGIC => self.point_at = Some(pos),
            FOOTER_FRAME_MAGIC if pos + 8 + size == len => self.footer = true,
            _ => {}
        }
        pos.saturating_add(8 + size)
    }
}

/// Find the next plausible frame start at or after `from` (zstd or skippable magic).
fn resync(file: &dyn Source, from: u64, len: u64) -> Option<u64> {
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
pub fn scan(file: &dyn Source, table: Option<&[FrameEntry]>) -> Result<Scan> {
    let len = file.len().at(UNNAMED_ARCHIVE)?;
    let mut pos = (SKIPPABLE_HEADER_LEN + HEADER_PAYLOAD_LEN) as u64;
    let mut out = Scan {
        frames: Vec::new(),
        members: Vec::new(),
        damage: Vec::new(),
        tar_end: false,
        index_at: None,
        point_at: None,
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
            pos = out.skippable(m, u64::from(le_u32(&magic[4..])), pos, len);
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
        let (result, end) = read_frame(
            file,
            pos,
            known.as_ref(),
            frame_no,
            &mut dctx,
            &mut out.damage,
        )?;
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

/// Read and decompress the data frame at `pos`: with its index entry (`known`) in one read,
/// its CRC-32 checked (a mismatch is noted in `damage`); else with a streaming decoder that
/// finds where it ends. Returns the frame's bytes (or what is wrong with it) and its end.
///
/// # Errors
/// Only I/O errors opening or seeking the file.
fn read_frame(
    file: &dyn Source,
    pos: u64,
    known: Option<&FrameEntry>,
    frame_no: u32,
    dctx: &mut zstd::zstd_safe::DCtx<'static>,
    damage: &mut Vec<String>,
) -> Result<(std::result::Result<Vec<u8>, String>, u64)> {
    // With an intact index the frame is read once: its SHA-256 is checked and the same
    // bytes are decompressed. Without one, a streaming decoder finds where it ends.
    let (result, end) = match known.filter(|k| k.csize <= FRAME_LIMIT * 2) {
        Some(k) => {
            let mut comp = vec![0u8; usize::try_from(k.csize).unwrap_or(0)];
            let r = file.read_exact_at(&mut comp, pos).map_err(|e| e.to_string()).and_then(|()| {
                if k.crc32.is_some_and(|c| c != crc32fast::hash(&comp)) {
                    damage.push(format!(
                        "frame {frame_no} at offset {pos}: CRC-32 of the compressed bytes does not match the index"
                    ));
                }
                decompress_bounded(&comp, FRAME_LIMIT, "frame").map_err(|e| e.to_string())
            });
            (r, pos + k.csize)
        }
        None => {
            let mut reader = BufReader::with_capacity(1 << 16, SourceReader::new(file, pos));
            let r = (|| -> io::Result<Vec<u8>> {
                dctx.reset(zstd::zstd_safe::ResetDirective::SessionOnly)
                    .map_err(|c| io::Error::other(zstd::zstd_safe::get_error_name(c)))?;
                let mut dec =
                    zstd::stream::read::Decoder::with_context(&mut reader, dctx).single_frame();
                let mut data = Vec::new();
                (&mut dec).take(FRAME_LIMIT + 1).read_to_end(&mut data)?;
                if data.len() as u64 > FRAME_LIMIT {
                    return Err(io::Error::other("frame larger than the format allows"));
                }
                Ok(data)
            })()
            .map_err(|e| e.to_string());
            let end = reader.stream_position().at(UNNAMED_ARCHIVE)?;
            (r, end)
        }
    };
    Ok((result, end))
}

impl Scan {
    /// Rebuild a directory and catalogs from the JSON members found. Returns damage found
    /// in the process (mailboxes whose metadata member was lost, messages whose bytes were lost).
    ///
    /// # Errors
    /// When not even the manifest can be found.
    pub(crate) fn rebuild(&self) -> Result<(Directory, Vec<MailboxRecord>, Vec<String>)> {
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
        let mut stats = archive_stats(cats.iter().chain(gone_cats.iter()));
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
        let blobs = self.blobs(&mut stats, &mut damage);
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

    /// The blobs (1.2): each intact `blobs/<sha256>` member, counted in `stats`; the others
    /// are named in `damage`.
    fn blobs(
        &self,
        stats: &mut super::index::ArchiveStats,
        damage: &mut Vec<String>,
    ) -> Vec<super::index::BlobEntry> {
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
        blobs
    }
}

/// Counts of the rebuilt directory, from the catalogs found.
fn archive_stats<'a>(cats: impl Iterator<Item = &'a MailboxRecord>) -> super::index::ArchiveStats {
    let mut stats = super::index::ArchiveStats::default();
    let mut data_members = std::collections::HashSet::new();
    for c in cats {
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
    stats
}
