//! Dovecot dbox stores: sdbox (one `u.<UID>` file per message) and mdbox (messages in shared
//! `storage/m.<N>` files found through `dovecot.map.index`), with alternate storage (`ALT=`)
//! and single-instance attachments (`mail_attachment_dir`).
//!
//! In dbox the mail files hold only the bytes and a few metadata lines (GUID, received date,
//! sizes, POP3 UIDL, attachment references); UIDs, flags, keywords, UIDVALIDITY and the
//! mailbox GUID live only in the index. [`DboxReader`] therefore reads each mailbox's
//! `dovecot.index` and replays `dovecot.index.log` on top of it ([`index`]), then reads the
//! metadata of each message from its dbox file (`file`). Messages whose attachments
//! Dovecot stored apart are rebuilt byte for byte from the attachment files; a missing
//! attachment is an error naming the message, never a message with a hole in it.
//! [`DboxWriter`] writes mailboxes back with hand-written index files (see `write.rs`).

mod attach;
pub(crate) mod file;
pub mod index;
pub(crate) mod write;

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Cursor};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

pub use write::DboxWriter;

use super::location::{Location, StoreFormat};
use super::nofollow::{DirFd, symlink_refused};
use super::{InParts, MailboxHandle, OpenedBody, StoreReader, owner_of};
use crate::error::{Error, IoContext, Result};
use crate::model::{
    AttachmentRef, Content, DboxFacts, Flags, MailboxMeta, MessageMeta, Name, Owner, Timestamp, Uid,
};
use index::MailIndex;

/// Directory of a mailbox's files below its directory under `mailboxes/`.
pub(crate) const MAILS_DIR: &str = "dbox-Mails";
/// Directory of mailboxes below the mail root.
pub(crate) const MAILBOXES_DIR: &str = "mailboxes";
/// mdbox storage directory below the mail root (and below the alternate root).
pub(crate) const STORAGE_DIR: &str = "storage";

/// Metadata keys modelled in [`MessageMeta`] (everything else is kept in [`DboxFacts::other`]).
const MODELLED_KEYS: &[u8] = b"GRVZXPO";

/// Reads one user's sdbox or mdbox store.
pub struct DboxReader {
    loc: Location,
    root: PathBuf,
    alt: Option<PathBuf>,
    attachments: Option<PathBuf>,
    /// mdbox: the map index, read on first use.
    map: RefCell<Option<Map>>,
    /// What the scan of each mailbox learnt that reading bodies needs again.
    scanned: RefCell<HashMap<PathBuf, Scanned>>,
    user: String,
    warnings: RefCell<Vec<String>>,
    expunged: RefCell<Vec<String>>,
    /// Debug lines for [`StoreReader::take_notes`].
    notes: RefCell<Vec<String>>,
    /// The mail file read last (an mdbox `m.N` holds many messages in a row): open once,
    /// its header parsed once.
    last_file: RefCell<Option<std::rc::Rc<OpenMailFile>>>,
}

/// A dbox file, open, with its metadata and parsed file header.
struct OpenMailFile {
    rel: PathBuf,
    path: PathBuf,
    file: File,
    md: fs::Metadata,
    hdr: file::FileHeader,
}

#[derive(Default)]
struct Scanned {
    guid: Option<String>,
    /// Where each message's body is: file (relative to the root), offset, length.
    bodies: HashMap<u32, (PathBuf, u64, u64)>,
    /// mdbox: each message's map UID (to find it again after a purge moved it).
    map_uids: HashMap<u32, u32>,
}

/// What mdbox's `dovecot.map.index` says about one map UID.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MapEntry {
    pub(crate) file_id: u32,
    pub(crate) offset: u32,
    pub(crate) size: u32,
}

struct Map {
    entries: HashMap<u32, MapEntry>,
}

/// An index-format or dbox-format error as a store error naming `path` (the error its
/// source).
fn damaged(path: &Path, e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::InvalidData {
        Error::store_from(path, e)
    } else {
        Error::io(path, e)
    }
}

/// Tries before a message whose file moved counts as lost (as Dovecot's readers retry).
const RETRIES: usize = 10;

/// Open the file `rel` below `root` without following a symlink.
fn open_below(root: &Path, rel: &Path) -> Result<File> {
    let d = DirFd::open_root(root).map_err(|e| Error::io(root, e))?;
    let name = rel.file_name().map(|n| n.as_bytes()).unwrap_or_default();
    d.open_rel(rel.parent().unwrap_or(Path::new("")))?
        .open_file(name)
}

/// Read an index and replay its log while Dovecot may be writing them: when the index
/// file or a log was replaced meanwhile (rewritten, rotated), read again, so that index and
/// logs are of one moment. A log appended to meanwhile is fine: the replay stops where
/// Dovecot's own readers would (an unfinished transaction). A symlink is refused.
pub(crate) fn read_index(dir: &Path, base: &str) -> Result<Option<MailIndex>> {
    let names = [
        base.to_string(),
        format!("{base}.log"),
        format!("{base}.log.2"),
    ];
    let ident = || -> Result<Vec<Option<(u64, u64)>>> {
        let mut v = Vec::new();
        for n in &names {
            let p = dir.join(n);
            v.push(match fs::symlink_metadata(&p) {
                Ok(m) if m.file_type().is_symlink() => return Err(symlink_refused(&p)),
                Ok(m) => Some((m.dev(), m.ino())),
                Err(_) => None,
            });
        }
        Ok(v)
    };
    let mut tries = 0;
    loop {
        let before = ident()?;
        let r = MailIndex::read(dir, base);
        tries += 1;
        if ident()? == before || tries >= RETRIES {
            return r.map_err(|e| damaged(&dir.join(base), e));
        }
    }
}

fn hex_guid(b: &[u8]) -> Option<String> {
    (b.len() == 16 && b.iter().any(|&x| x != 0)).then(|| hex::encode(b))
}

impl DboxReader {
    /// Open the dbox store of `user`.
    ///
    /// # Errors
    /// [`Error::NotFound`] when the user's mail root does not exist.
    pub fn open(loc: &Location, user: &str) -> Result<Self> {
        let root = loc.existing_root_of(user)?;
        Ok(DboxReader {
            loc: loc.clone(),
            root,
            alt: loc.alt_of(user)?,
            attachments: loc.attachment_dir_of(user)?,
            map: RefCell::new(None),
            scanned: RefCell::new(HashMap::new()),
            user: user.to_string(),
            warnings: RefCell::new(Vec::new()),
            expunged: RefCell::new(Vec::new()),
            notes: RefCell::new(Vec::new()),
            last_file: RefCell::new(None),
        })
    }

    fn is_mdbox(&self) -> bool {
        self.loc.kind == StoreFormat::Mdbox
    }

    /// Open a mail file, from the primary root or else the alternate root.
    /// Never through a symlink below either root (see `store::nofollow`).
    fn open_mail_file(&self, rel: &Path) -> Result<(File, PathBuf)> {
        let primary = self.root.join(rel);
        match open_below(&self.root, rel) {
            Ok(f) => return Ok((f, primary)),
            Err(Error::Io { source, .. })
                if source.kind() == io::ErrorKind::NotFound && self.alt.is_some() => {}
            Err(e) => return Err(e),
        }
        let alt_root = self.alt.clone().unwrap_or_default();
        let f = open_below(&alt_root, rel)?;
        Ok((f, alt_root.join(rel)))
    }

    /// The message `uid` (map UID `map_uid` in mdbox), read without its body, found again
    /// when it moved: a file gone means the message was expunged (the mailbox index read
    /// again no longer has it: `Ok(None)`), moved by a purge (the map read again says
    /// where to) or moved to or from the alternate storage (looked for again).
    ///
    /// # Errors
    /// The message is still in the index but its file cannot be found or read.
    fn locate(
        &self,
        mb: &MailboxHandle,
        uid: u32,
        map_uid: Option<u32>,
    ) -> Result<Option<(file::DboxMessage, std::rc::Rc<OpenMailFile>)>> {
        let mut fresh = false;
        let mut last = None;
        for _ in 0..RETRIES {
            match self.message_of(mb, uid, map_uid, fresh) {
                Ok(x) => return Ok(Some(x)),
                Err(Error::Io { source, path }) if source.kind() == io::ErrorKind::NotFound => {
                    let idx = self.index_of(mb)?;
                    if idx.as_ref().is_none_or(|i| i.record(uid).is_none()) {
                        return Ok(None);
                    }
                    last = Some(Error::store(
                        path,
                        format!(
                            "mailbox {} UID {uid}: the index lists it, but its file is gone: {source}",
                            mb.name
                        ),
                    ));
                    fresh = true;
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::store(&mb.dir, format!("UID {uid}: not found"))))
    }

    /// Where map UID `map_uid` is, from the map index (mdbox). The map is read once and
    /// read again when it does not know `map_uid` (saved since) or when `fresh` (a
    /// `doveadm purge` may have moved the message to another `m.N` since).
    fn map_entry(&self, map_uid: u32, fresh: bool) -> Result<Option<MapEntry>> {
        let known = || {
            self.map
                .borrow()
                .as_ref()
                .and_then(|m| m.entries.get(&map_uid).copied())
        };
        if !fresh && let Some(e) = known() {
            return Ok(Some(e));
        }
        let dir = self.root.join(STORAGE_DIR);
        let idx = read_index(&dir, "dovecot.map.index")?;
        let mut entries = HashMap::new();
        if let Some(idx) = idx {
            for r in &idx.records {
                if let Some(m) = idx.ext_rec(r, "map")
                    && m.len() >= 12
                {
                    let f = |i: usize| u32::from_le_bytes([m[i], m[i + 1], m[i + 2], m[i + 3]]);
                    entries.insert(
                        r.uid,
                        MapEntry {
                            file_id: f(0),
                            offset: f(4),
                            size: f(8),
                        },
                    );
                }
            }
        }
        *self.map.borrow_mut() = Some(Map { entries });
        Ok(known())
    }

    /// Read the metadata of the message whose header is at `offset` in `f` and whose
    /// bytes end at `end`, without reading its body (two small reads).
    fn read_message(
        f: &File,
        path: &Path,
        hdr: &file::FileHeader,
        offset: u64,
        end: u64,
    ) -> Result<file::DboxMessage> {
        let item = |e: &dyn std::fmt::Display| {
            Error::store(path, format!("message at offset {offset}: {e}"))
        };
        let span = end
            .checked_sub(offset)
            .ok_or_else(|| item(&"ends before it starts"))?;
        let mut head = vec![0u8; usize::try_from(span.min(4096)).unwrap_or(4096)];
        f.read_exact_at(&mut head, offset).map_err(|e| item(&e))?;
        if span <= head.len() as u64 {
            // Small: all of it is in hand.
            let mut m = file::parse_message_at(&head, hdr, 0).map_err(|e| item(&e))?;
            m.offset += offset;
            m.body_offset += offset;
            return Ok(m);
        }
        // The body length is in the header; the metadata follows the body.
        let (hsz, body_len) =
            file::parse_message_header(&head, hdr, offset).map_err(|e| item(&e))?;
        let body_end = offset
            .checked_add(hsz as u64)
            .and_then(|b| b.checked_add(body_len))
            .ok_or_else(|| item(&"body length overflows"))?;
        if body_end > end {
            return Err(item(&format!(
                "truncated: its body runs to offset {body_end}, past the end of its data at {end}"
            )));
        }
        let mut tail = vec![0u8; usize::try_from(end - body_end).unwrap_or(0)];
        f.read_exact_at(&mut tail, body_end).map_err(|e| item(&e))?;
        file::parse_message_split(&head, &tail, hdr, offset).map_err(|e| item(&e))
    }

    /// The dbox message of a record, read without its body, and its open file.
    fn message_of(
        &self,
        mb: &MailboxHandle,
        uid: u32,
        map_uid: Option<u32>,
        fresh: bool,
    ) -> Result<(file::DboxMessage, std::rc::Rc<OpenMailFile>)> {
        let (rel, range) = match map_uid {
            Some(m) => {
                let Some(e) = self.map_entry(m, fresh)? else {
                    // Expunged and purged since the mailbox index was read, or damage: the
                    // caller reads the mailbox index again to tell.
                    return Err(Error::io(
                        self.root.join(STORAGE_DIR).join("dovecot.map.index"),
                        io::Error::new(
                            io::ErrorKind::NotFound,
                            format!(
                                "mailbox {} UID {uid}: map UID {m} is not in the map",
                                mb.name
                            ),
                        ),
                    ));
                };
                (
                    Path::new(STORAGE_DIR).join(format!("m.{}", e.file_id)),
                    Some((u64::from(e.offset), u64::from(e.offset) + u64::from(e.size))),
                )
            }
            None => (
                mb.dir
                    .strip_prefix(&self.root)
                    .unwrap_or(&mb.dir)
                    .join(MAILS_DIR)
                    .join(format!("u.{uid}")),
                None,
            ),
        };
        let mut of = self.mail_file(&rel)?;
        // An m.N kept open since an earlier message may have been appended to since.
        if range.is_some_and(|(_, end)| end > of.md.len()) {
            *self.last_file.borrow_mut() = None;
            of = self.mail_file(&rel)?;
        }
        let (f, path, md, hdr) = (&of.file, &of.path, &of.md, &of.hdr);
        // sdbox: the one message runs from the file header to the end of the file.
        let (offset, end) = range.unwrap_or((hdr.len as u64, md.len()));
        if end > md.len() || offset >= end {
            return Err(Error::store(
                path,
                format!(
                    "mailbox {} UID {uid}: the map places the message at {offset}..{end}, outside the file ({} bytes)",
                    mb.name,
                    md.len()
                ),
            ));
        }
        let msg = Self::read_message(f, path, hdr, offset, end)?;
        Ok((msg, of))
    }

    /// The mail file at `rel` (primary or alternate root), open with its header parsed;
    /// the last one is kept open.
    fn mail_file(&self, rel: &Path) -> Result<std::rc::Rc<OpenMailFile>> {
        if let Some(of) = self.last_file.borrow().as_ref().filter(|of| of.rel == rel) {
            return Ok(of.clone());
        }
        let (file, path) = self.open_mail_file(rel)?;
        let md = file.metadata().at(&path)?;
        let mut head = vec![0u8; usize::try_from(md.len().min(64)).unwrap_or(64)];
        file.read_exact_at(&mut head, 0).at(&path)?;
        let hdr = file::parse_file_header(&head).map_err(|e| damaged(&path, e))?;
        let of = std::rc::Rc::new(OpenMailFile {
            rel: rel.to_path_buf(),
            path,
            file,
            md,
            hdr,
        });
        *self.last_file.borrow_mut() = Some(of.clone());
        Ok(of)
    }

    /// The attachment file of one part: sdbox adds `-<mailbox GUID>-<UID>` to the name.
    fn attachment_bytes(
        &self,
        part: &file::SisPart,
        mailbox_guid: Option<&str>,
        uid: u32,
    ) -> io::Result<Vec<u8>> {
        let Some(dir) = &self.attachments else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "attachment {} is stored outside the message, but no mail_attachment_dir is known (give --attachment-dir or --config)",
                    part.path
                ),
            ));
        };
        if !file::is_safe_relative_path(&part.path) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("attachment path {:?} refused", part.path),
            ));
        }
        let mut candidates = Vec::new();
        if !self.is_mdbox()
            && let Some(g) = mailbox_guid
        {
            candidates.push(dir.join(file::sdbox_attachment_name(&part.path, g, uid)));
        }
        candidates.push(dir.join(&part.path));
        for c in &candidates {
            match fs::read(c) {
                Ok(d) => return Ok(d),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", c.display()))),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "attachment file missing: {}",
                candidates
                    .first()
                    .map(|c| c.display().to_string())
                    .unwrap_or_default()
            ),
        ))
    }

    fn index_of(&self, mb: &MailboxHandle) -> Result<Option<MailIndex>> {
        read_index(&mb.dir.join(MAILS_DIR), "dovecot.index")
    }
}

fn mailbox_guid(idx: &MailIndex) -> Option<String> {
    let h = idx
        .ext_hdr("dbox-hdr")
        .or_else(|| idx.ext_hdr("mdbox-hdr"))?;
    hex_guid(h.get(4..20)?)
}

/// Message metadata from a dbox message and its index record.
/// What a mailbox index record says of a message.
struct IndexFacts<'a> {
    uid: u32,
    flags: u8,
    keywords: Vec<Name>,
    /// mdbox save date.
    saved: Option<u32>,
    /// mdbox `guid` extension.
    guid: Option<&'a [u8]>,
    /// The message's modseq, where the index tracks them.
    modseq: Option<u64>,
}

fn message_meta(
    ix: IndexFacts<'_>,
    msg: &file::DboxMessage,
    md: &fs::Metadata,
    mdbox: bool,
) -> Result<MessageMeta, io::Error> {
    let IndexFacts {
        uid,
        flags,
        keywords,
        saved,
        guid: index_guid,
        modseq,
    } = ix;
    let f = Flags::from_bits(flags);
    let guid = match msg.guid() {
        Some(g) => Name::from_bytes(g),
        None => index_guid
            .and_then(hex_guid)
            .map(Name::from)
            .unwrap_or_default(),
    };
    let parts = msg.sis_parts()?;
    let size = msg.physical_size().unwrap_or(msg.body_len);
    let mut other = Vec::new();
    for (k, v) in &msg.meta {
        if !MODELLED_KEYS.contains(k) {
            other.push((Name::from_bytes(vec![*k]), Name::from_bytes(v.clone())));
        }
    }
    let received = msg.received().unwrap_or_else(|| md.mtime());
    let facts = DboxFacts {
        attachments: parts
            .iter()
            .map(|p| AttachmentRef {
                start: p.start,
                size: p.size,
                options: options_text(p),
                path: Name::from(p.path.as_str()),
            })
            .collect(),
        other,
    };
    Ok(MessageMeta {
        uid: Uid(uid),
        guid,
        flags: f,
        keywords,
        received: Timestamp {
            secs: received,
            nanos: 0,
        },
        saved: saved.filter(|&s| s != 0).map(|s| Timestamp {
            secs: i64::from(s),
            nanos: 0,
        }),
        modseq,
        size_physical: size,
        size_virtual: msg.virtual_size(),
        pop3_uidl: msg.pop3_uidl().map(Name::from_bytes),
        pop3_order: msg.pop3_order(),
        owner: Some(owner_of(md)),
        maildir: None,
        sdbox: (!mdbox).then(|| facts.clone()),
        mdbox: mdbox.then_some(facts),
        from: None,
        subject: None,
        message_id: None,
        content: Content {
            sha256: String::new(),
            size,
            ..Content::default()
        },
        changed: Some(Timestamp {
            secs: md.ctime().max(md.mtime()),
            nanos: 0,
        }),
        storage_key: None,
    })
}

/// Dovecot's option text of a part (`-`, `B76`, `CB76`).
pub(crate) fn options_text(p: &file::SisPart) -> String {
    match p.base64_line_len {
        None => "-".into(),
        Some(n) => format!("{}B{n}", if p.crlf { "C" } else { "" }),
    }
}

/// The inverse of [`options_text`] (with the start, size and path of `r`).
pub(crate) fn sis_part(r: &AttachmentRef) -> Option<file::SisPart> {
    let o = r.options.as_str();
    let (base64_line_len, crlf) = if o == "-" {
        (None, false)
    } else {
        let crlf = o.contains('C');
        let n: String = o.chars().filter(char::is_ascii_digit).collect();
        (Some(n.parse().ok()?), crlf)
    };
    Some(file::SisPart {
        start: r.start,
        size: r.size,
        base64_line_len,
        crlf,
        path: r.path.as_str()?.to_string(),
    })
}

impl StoreReader for DboxReader {
    fn mailboxes(&self) -> Result<Vec<MailboxHandle>> {
        let base = self.root.join(MAILBOXES_DIR);
        let mut all = Vec::new();
        super::walk_mailbox_tree(
            &self.loc,
            &base,
            b"",
            &|name| name == MAILS_DIR.as_bytes(),
            &|p| p.join(MAILS_DIR).is_dir(),
            &mut all,
            &mut self.warnings.borrow_mut(),
        )?;
        // INBOX first, then sorted by name.
        let (mut inbox, rest): (Vec<_>, Vec<_>) =
            all.into_iter().partition(|h| h.name.as_bytes() == b"INBOX");
        inbox.extend(rest);
        Ok(inbox)
    }

    // The scan of one dbox mailbox: open it without following symlinks, read its index,
    // match records to files; each step works on the previous one's open handles.
    #[allow(clippy::too_many_lines)]
    fn scan(&self, mb: &MailboxHandle) -> Result<(MailboxMeta, Vec<MessageMeta>)> {
        let dir = mb.dir.join(MAILS_DIR);
        // Neither the mailbox directory nor its dbox-Mails may be a symlink.
        let rel = mb.dir.strip_prefix(&self.root).unwrap_or(Path::new(""));
        match DirFd::open_root(&self.root)
            .map_err(|e| Error::io(&self.root, e))
            .and_then(|d| d.open_rel(&rel.join(MAILS_DIR)))
        {
            Ok(_) => {}
            Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let dmd = fs::metadata(&mb.dir).at(&mb.dir)?;
        let idx = self.index_of(mb)?;
        let Some(idx) = idx else {
            // Never opened by Dovecot: no index, so no UIDVALIDITY and, for Dovecot, no mail
            // (until a `doveadm force-resync`, which would give new UIDVALIDITY and flags).
            let files = fs::read_dir(&dir)
                .map(|rd| {
                    rd.flatten()
                        .filter(|e| e.file_name().as_bytes().starts_with(b"u."))
                        .count()
                })
                .unwrap_or(0);
            if files > 0 {
                self.warnings.borrow_mut().push(format!(
                    "user {} mailbox {}: {files} message files but no dovecot.index or dovecot.index.log; Dovecot shows the mailbox empty until `doveadm force-resync`, so its mail is not in the backup ({})",
                    self.user,
                    mb.name,
                    dir.display()
                ));
            }
            return Ok((
                MailboxMeta {
                    owner: Some(owner_of(&dmd)),
                    ..MailboxMeta::named(mb.name.clone())
                },
                Vec::new(),
            ));
        };
        let table: Vec<Name> = idx.keywords.iter().cloned().map(Name::from_bytes).collect();
        let mut msgs = Vec::with_capacity(idx.records.len());
        let guid = mailbox_guid(&idx);
        let mut seen = Scanned {
            guid: guid.clone(),
            ..Scanned::default()
        };
        for r in &idx.records {
            let mut kws: Vec<u32> = r.keywords.clone();
            kws.sort_unstable();
            let keywords = kws
                .iter()
                .filter_map(|&k| table.get(k as usize).cloned())
                .collect();
            let (map_uid, saved) = match idx.ext_rec(r, "mdbox") {
                Some(m) if m.len() >= 8 => (
                    Some(u32::from_le_bytes([m[0], m[1], m[2], m[3]])),
                    Some(u32::from_le_bytes([m[4], m[5], m[6], m[7]])),
                ),
                _ if self.is_mdbox() => {
                    return Err(Error::store(
                        dir.join("dovecot.index"),
                        format!("mailbox {} UID {}: no map UID in the index", mb.name, r.uid),
                    ));
                }
                _ => (None, None),
            };
            // A damaged message file is left out and named; the rest of the mailbox is
            // backed up.
            let found = match self.locate(mb, r.uid, map_uid) {
                Ok(Some(x)) => Ok(x),
                Ok(None) => {
                    self.expunged.borrow_mut().push(format!(
                        "user {} mailbox {} UID {}: expunged while the mailbox was read",
                        self.user, mb.name, r.uid
                    ));
                    continue;
                }
                Err(e) => Err(e),
            };
            let found = found.and_then(|(msg, of)| {
                let (path, md) = (&of.path, &of.md);
                seen.bodies
                    .insert(r.uid, (of.rel.clone(), msg.body_offset, msg.body_len));
                if let Some(m) = map_uid {
                    seen.map_uids.insert(r.uid, m);
                }
                // One stored message shared by mailboxes: the map UID (mdbox), the
                // inode of a hard-linked u.N file (sdbox).
                let key = match map_uid {
                    Some(m) => Some(u64::from(m)),
                    None => (md.nlink() > 1).then(|| md.ino()),
                };
                message_meta(
                    IndexFacts {
                        uid: r.uid,
                        flags: r.flags,
                        keywords,
                        saved,
                        guid: idx.ext_rec(r, "guid"),
                        modseq: idx.modseq_of(r),
                    },
                    &msg,
                    md,
                    self.is_mdbox(),
                )
                .map(|mut m| {
                    m.storage_key = key;
                    m
                })
                .map_err(|e| Error::store_from(path, e))
            });
            match found {
                Ok(meta) => msgs.push(meta),
                Err(e @ (Error::StoreDamaged { .. } | Error::Io { .. })) => {
                    self.warnings.borrow_mut().push(format!(
                        "user {} mailbox {} UID {}: left out: {e}",
                        self.user, mb.name, r.uid
                    ));
                }
                Err(e) => return Err(e),
            }
        }
        self.scanned.borrow_mut().insert(mb.dir.clone(), seen);
        if !self.is_mdbox() {
            // sdbox keeps save dates only in the index cache.
            match crate::store::cache::save_dates(&dir, &idx) {
                Ok(dates) => crate::store::cache::set_saved(&mut msgs, &dates),
                Err(u) => u.report(
                    &format!("user {} mailbox {}", self.user, mb.name),
                    &dir,
                    &mut self.notes.borrow_mut(),
                    &mut self.warnings.borrow_mut(),
                ),
            }
        }
        let meta = MailboxMeta {
            name: mb.name.clone(),
            guid,
            uidvalidity: idx.uid_validity,
            uidnext: idx.next_uid,
            highest_modseq: (idx.highest_modseq > 0).then_some(idx.highest_modseq),
            keywords: table,
            attributes: Vec::new(),
            owner: Some(owner_of(&dmd)),
            uidlist_header_ext: Vec::new(),
        };
        Ok((meta, msgs))
    }

    fn open_body(&self, mb: &MailboxHandle, msg: &MessageMeta) -> Result<OpenedBody> {
        if !self.scanned.borrow().contains_key(&mb.dir) {
            self.scan(mb)?;
        }
        let (guid, at) = {
            let s = self.scanned.borrow();
            let s = s.get(&mb.dir);
            (
                s.and_then(|s| s.guid.clone()),
                s.and_then(|s| s.bodies.get(&msg.uid.0).cloned()),
            )
        };
        let Some((rel, offset, len)) = at else {
            return Err(Error::io(
                mb.dir.join(MAILS_DIR),
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("UID {} was not found by the scan", msg.uid),
                ),
            ));
        };
        // Usually still open from the scan (mdbox: the same m.N for many messages). Gone
        // since: moved by a purge or to the alternate storage, or expunged.
        let (of, offset, len) = match self.mail_file(&rel) {
            Ok(of) => (of, offset, len),
            Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                let map_uid = self
                    .scanned
                    .borrow()
                    .get(&mb.dir)
                    .and_then(|s| s.map_uids.get(&msg.uid.0).copied());
                match self.locate(mb, msg.uid.0, map_uid)? {
                    Some((m, of)) => (of, m.body_offset, m.body_len),
                    None => {
                        return Err(Error::io(
                            self.root.join(&rel),
                            io::Error::new(
                                io::ErrorKind::NotFound,
                                "message expunged during the backup",
                            ),
                        ));
                    }
                }
            }
            Err(e) => return Err(e),
        };
        let path = of.path.clone();
        let mut body = vec![0u8; usize::try_from(len).unwrap_or(0)];
        of.file.read_exact_at(&mut body, offset).map_err(|e| {
            Error::store(
                &path,
                format!(
                    "mailbox {} UID {}: body cannot be read: {e}",
                    mb.name, msg.uid
                ),
            )
        })?;
        let refs = msg.dbox_attachments();
        if refs.is_empty() {
            return Ok(OpenedBody {
                len: body.len() as u64,
                file: Box::new(Cursor::new(body)),
                path,
                renamed_to: None,
                split: None,
            });
        }
        let item = |e: &dyn std::fmt::Display| {
            Error::store(&path, format!("mailbox {} UID {}: {e}", mb.name, msg.uid))
        };
        let parts: Vec<file::SisPart> = refs
            .iter()
            .map(sis_part)
            .collect::<Option<_>>()
            .ok_or_else(|| item(&"bad attachment reference"))?;
        // Dovecot's own account of the full size: the body plus each attachment's text.
        let full = len + parts.iter().map(|p| p.size).sum::<u64>();
        if full != msg.content.size {
            return Err(item(&format!(
                "attachment references give {full} bytes, Dovecot recorded {}",
                msg.content.size
            )));
        }
        let mut blobs = Vec::with_capacity(parts.len());
        for p in &parts {
            blobs.push(
                self.attachment_bytes(p, guid.as_deref(), msg.uid.0)
                    .map_err(|e| item(&e))?,
            );
        }
        // The blobs' SHA-256 are left for the archive writer to fill in, and the complete
        // message is put together by it: each is hashed once, there.
        let shas = blobs.iter().map(|b| (String::new(), b.len() as u64));
        let layout = file::layout(&parts, len, shas).map_err(|e| item(&e))?;
        Ok(OpenedBody {
            file: Box::new(Cursor::new(Vec::new())),
            path,
            len: full,
            renamed_to: None,
            split: Some(InParts {
                data: body,
                parts: layout,
                blobs,
            }),
        })
    }

    fn reflag(&self, _table: &[Name], _msg: &mut MessageMeta, _filename: Name, _new: bool) {}

    fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut *self.warnings.borrow_mut())
    }

    fn take_notes(&self) -> Vec<String> {
        std::mem::take(&mut *self.notes.borrow_mut())
    }

    fn take_expunged(&self) -> Vec<String> {
        std::mem::take(&mut *self.expunged.borrow_mut())
    }

    fn subscriptions(&self) -> Result<Vec<Name>> {
        super::read_subscriptions(&self.loc, &self.root)
    }

    fn root_owner(&self) -> Result<Owner> {
        Ok(owner_of(&fs::metadata(&self.root).at(&self.root)?))
    }

    /// The mailbox's index and log files byte for byte (UIDs, flags, keywords, UIDVALIDITY,
    /// GUIDs: everything the index holds), the names of its `u.<UID>` files (sdbox) and the
    /// directory's owner and mode. dbox message files never change once written; mdbox
    /// storage files are only ever appended to or purged of expunged messages, which the
    /// index records.
    fn signature(&self, mb: &MailboxHandle) -> Result<String> {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"maildump-dbox-signature-1\0");
        let dir = mb.dir.join(MAILS_DIR);
        let mut names: Vec<Vec<u8>> = Vec::new();
        for e in fs::read_dir(&dir).at(&dir)? {
            let n = e.at(&dir)?.file_name().as_bytes().to_vec();
            if n.starts_with(b"u.") || n.starts_with(b"dovecot.index") && !n.ends_with(b".cache") {
                names.push(n);
            }
        }
        names.sort_unstable();
        for n in names {
            h.update((n.len() as u64).to_le_bytes());
            h.update(&n);
            if n.starts_with(b"dovecot.index") {
                let p = dir.join(std::ffi::OsStr::from_bytes(&n));
                let data = match fs::read(&p) {
                    Ok(d) => d,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
                    Err(e) => return Err(Error::io(p, e)),
                };
                h.update((data.len() as u64).to_le_bytes());
                h.update(&data);
            }
        }
        let md = fs::metadata(&mb.dir).at(&mb.dir)?;
        h.update(md.uid().to_le_bytes());
        h.update(md.gid().to_le_bytes());
        h.update(md.mode().to_le_bytes());
        h.update(mb.name.as_bytes());
        Ok(hex::encode(h.finalize()))
    }
}
