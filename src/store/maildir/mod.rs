//! Dovecot Maildir stores (Maildir++ and `LAYOUT=fs`, mUTF-7 or UTF-8 folder names).
//!
//! [`MaildirReader`] lists a user's mailboxes and their messages from `dovecot-uidlist`,
//! `dovecot-keywords` and the file names in `cur/` and `new/` (one directory walk and one
//! `stat` per message; no body is read until [`StoreReader::open_body`]). Files renamed,
//! delivered or expunged while it reads are handled as Dovecot does (see `listing.rs`);
//! nothing below the mail root is read through a symlink (see `store::nofollow`).
//! [`MaildirWriter`] writes mailboxes back following Dovecot's rules (see `write.rs`).

mod index;
mod listing;
mod merge;
pub(crate) mod uidlist;
mod write;

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

pub use merge::MergeReport;
pub use write::MaildirWriter;

use super::location::{Layout, Location};
use super::nofollow::{DirFd, FileStat, Kind};
use super::{MailboxHandle, OpenedBody, StoreReader};
use crate::error::{Error, Result};
use crate::model::{
    Content, Flags, MailboxMeta, MaildirMessage, MessageMeta, Name, Owner, Timestamp, Uid,
};
use listing::{Found, MailboxDirs};
use uidlist::{UidRecord, parse_filename};

/// Reads one user's Maildir.
pub struct MaildirReader {
    loc: Location,
    root: PathBuf,
    /// The mail root, open: everything below it is opened relative to it.
    root_fd: DirFd,
    /// The mailbox whose bodies are being read, open.
    open: RefCell<Option<(PathBuf, Rc<MailboxDirs>)>>,
    /// Problems that did not stop a scan (a skipped file, a damaged index), for the
    /// backup's warnings.
    warnings: RefCell<Vec<String>>,
    expunged: RefCell<Vec<String>>,
    /// Debug lines for [`StoreReader::take_notes`].
    notes: RefCell<Vec<String>>,
    user: String,
}

/// Map a flag letter string to flags and keywords.
pub(crate) fn flags_from_info(info: &[u8], table: &[Name]) -> (Flags, Vec<Name>) {
    let mut f = Flags::empty();
    let mut kw_idx: Vec<usize> = Vec::new();
    for &c in info {
        match c {
            b'D' => f.insert(Flags::DRAFT),
            b'F' => f.insert(Flags::FLAGGED),
            b'R' => f.insert(Flags::ANSWERED),
            b'S' => f.insert(Flags::SEEN),
            b'T' => f.insert(Flags::DELETED),
            b'a'..=b'z' => {
                let i = usize::from(c - b'a');
                if table.get(i).is_some_and(|k| !k.is_empty()) {
                    kw_idx.push(i);
                }
            }
            _ => {}
        }
    }
    kw_idx.sort_unstable();
    kw_idx.dedup();
    (f, kw_idx.into_iter().map(|i| table[i].clone()).collect())
}

/// Dovecot's order for files it has not seen: leading seconds, then `M<usecs>`, then name.
fn dovecot_sort_key(base: &[u8]) -> (u64, u64, Vec<u8>) {
    let secs_end = base
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(base.len());
    let secs = std::str::from_utf8(&base[..secs_end])
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let usecs = base
        .get(secs_end..)
        .and_then(|r| r.strip_prefix(b".M"))
        .map(|r| {
            let e = r
                .iter()
                .position(|b| !b.is_ascii_digit())
                .unwrap_or(r.len());
            std::str::from_utf8(&r[..e])
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0)
        })
        .unwrap_or(0);
    (secs, usecs, base.to_vec())
}

impl MaildirReader {
    /// Open the Maildir of `user`.
    ///
    /// # Errors
    /// [`Error::NotFound`] when the user's mail root does not exist.
    pub fn open(loc: &Location, user: &str) -> Result<Self> {
        let root = loc.existing_root_of(user)?;
        let root_fd = DirFd::open_root(&root).map_err(|e| Error::io(&root, e))?;
        Ok(MaildirReader {
            loc: loc.clone(),
            root,
            root_fd,
            open: RefCell::new(None),
            warnings: RefCell::new(Vec::new()),
            expunged: RefCell::new(Vec::new()),
            notes: RefCell::new(Vec::new()),
            user: user.to_string(),
        })
    }

    /// The directories of mailbox `mb`, open (the last one is kept for reading bodies).
    fn dirs(&self, mb: &MailboxHandle) -> Result<Rc<MailboxDirs>> {
        if let Some((p, d)) = self.open.borrow().as_ref()
            && p == &mb.dir
        {
            return Ok(d.clone());
        }
        let rel = mb.dir.strip_prefix(&self.root).unwrap_or(Path::new(""));
        let d = Rc::new(MailboxDirs::open(&self.root_fd, rel)?);
        *self.open.borrow_mut() = Some((mb.dir.clone(), d.clone()));
        Ok(d)
    }

    /// The mail root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A directory Dovecot treats as a selectable mailbox. Empty `cur/`/`new/` may be
    /// missing (e.g. in a git checkout); Dovecot recreates them.
    fn is_mailbox_dir(p: &Path) -> bool {
        ["cur", "new", "tmp", "dovecot-uidlist"]
            .iter()
            .any(|s| p.join(s).exists())
    }

    /// The user's mailboxes by mailbox GUID (from the first line of each `dovecot-uidlist`;
    /// mailboxes without one are left out). No message file is touched.
    ///
    /// # Errors
    /// Unreadable directories or uidlists.
    pub(crate) fn mailboxes_by_guid(&self) -> Result<HashMap<String, Name>> {
        let mut out = HashMap::new();
        if !self.root.is_dir() {
            return Ok(out);
        }
        for h in self.mailboxes()? {
            let p = h.dir.join("dovecot-uidlist");
            let Some(data) = Self::read_optional(&p)? else {
                continue;
            };
            let first = data.split(|&b| b == b'\n').next().unwrap_or_default();
            if let Ok(ul) = uidlist::parse(first)
                && let Some(g) = ul.guid
            {
                out.insert(g, h.name);
            }
        }
        Ok(out)
    }

    /// See [`StoreReader::signature`]: the names in `new/` and `cur/` (names carry flags,
    /// keyword letters and sizes), `dovecot-uidlist` (UIDs, GUIDs, UIDVALIDITY, next UID,
    /// mailbox GUID) and `dovecot-keywords` byte for byte, and the directory's owner and
    /// mode, with no `stat` of message files; and what Dovecot's index alone holds
    /// (HIGHESTMODSEQ, the keyword list), which changes with every change Dovecot makes. A
    /// message file's own mtime, owner or mode changed without a rename is not seen:
    /// Maildir files are immutable once delivered.
    fn signature_of(&self, mb: &MailboxHandle) -> Result<String> {
        use sha2::{Digest, Sha256};
        let dirs = MailboxDirs::open(&self.root_fd, self.rel(mb))?;
        let mut h = Sha256::new();
        h.update(b"maildump-maildir-signature-1\0");
        for (sub, d) in [("new", &dirs.new), ("cur", &dirs.cur)] {
            let mut names: Vec<Vec<u8>> = match d {
                Some(d) => d
                    .entries()?
                    .into_iter()
                    .map(|(n, _)| n)
                    .filter(|n| n.first() != Some(&b'.'))
                    .collect(),
                None => Vec::new(),
            };
            names.sort_unstable();
            h.update(sub.as_bytes());
            h.update((names.len() as u64).to_le_bytes());
            for n in names {
                h.update((n.len() as u64).to_le_bytes());
                h.update(&n);
            }
        }
        for f in ["dovecot-uidlist", "dovecot-keywords"] {
            let data = dirs.dir.read_optional(f.as_bytes())?.unwrap_or_default();
            h.update(f.as_bytes());
            h.update((data.len() as u64).to_le_bytes());
            h.update(&data);
        }
        h.update(index::signature(&mb.dir));
        let md = dirs.dir.stat()?;
        h.update(md.uid.to_le_bytes());
        h.update(md.gid.to_le_bytes());
        h.update((md.mode | 0o40000).to_le_bytes());
        h.update(mb.name.as_bytes());
        Ok(hex::encode(h.finalize()))
    }

    /// `mb`'s directory relative to the mail root.
    fn rel<'a>(&self, mb: &'a MailboxHandle) -> &'a Path {
        mb.dir.strip_prefix(&self.root).unwrap_or(Path::new(""))
    }

    fn read_optional(path: &Path) -> Result<Option<Vec<u8>>> {
        match fs::read(path) {
            Ok(d) => Ok(Some(d)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }
}

impl StoreReader for MaildirReader {
    fn mailboxes(&self) -> Result<Vec<MailboxHandle>> {
        // INBOX always exists for Dovecot (it is created on first access).
        let mut out = vec![MailboxHandle {
            name: Name::from("INBOX"),
            dir: self.root.clone(),
        }];
        match self.loc.layout {
            // A directory is a mailbox; `cur`/`new`/`tmp` and hidden ones are not.
            Layout::Fs => super::walk_mailbox_tree(
                &self.loc,
                &self.root,
                b"",
                &|name| name.first() == Some(&b'.') || matches!(name, b"cur" | b"new" | b"tmp"),
                &Self::is_mailbox_dir,
                &mut out,
                &mut self.warnings.borrow_mut(),
            )?,
            Layout::MaildirPlusPlus => {
                let mut found = Vec::new();
                for (name, kind) in self.root_fd.entries()? {
                    if name.len() < 2 || name[0] != b'.' || name == b".." {
                        continue;
                    }
                    let path = self.root_fd.join(&name);
                    // Maildir++ lists every `.name` directory as a mailbox, as Dovecot does.
                    match kind {
                        Kind::Dir => {}
                        Kind::Symlink if fs::metadata(&path).is_ok_and(|m| m.is_dir()) => {
                            self.warnings
                                .borrow_mut()
                                .push(super::symlinked_mailbox(&path));
                            continue;
                        }
                        _ => continue,
                    }
                    let full: Vec<Vec<u8>> = name[1..]
                        .split(|&b| b == b'.')
                        .map(|c| self.loc.decode_component(c))
                        .collect();
                    found.push(MailboxHandle {
                        name: Name::from_bytes(full.join(&b'/')),
                        dir: path,
                    });
                }
                found.sort_by(|a, b| a.name.cmp(&b.name));
                out.extend(found);
            }
        }
        Ok(out)
    }

    fn scan(&self, mb: &MailboxHandle) -> Result<(MailboxMeta, Vec<MessageMeta>)> {
        let dirs = self.dirs(mb)?;
        let ul = read_uidlist(&dirs.dir)?;
        let table = dirs
            .dir
            .read_optional(b"dovecot-keywords")?
            .map(|d| uidlist::parse_keywords(&d))
            .unwrap_or_default();
        let (uidvalidity, uidnext, guid, header_ext) = match &ul {
            Some(ul) => (
                ul.uidvalidity,
                ul.effective_next_uid(),
                ul.guid.clone(),
                ul.header_other.clone(),
            ),
            None => (0, 1, None, Vec::new()),
        };
        let records = ul.map(|u| u.records).unwrap_or_default();
        let wanted: HashSet<&[u8]> = records.iter().map(|r| r.base.as_slice()).collect();
        let mut snap = listing::snapshot(&dirs, &wanted)?;
        let item = |uid: Option<u32>| match uid {
            Some(u) => format!("user {} mailbox {} UID {u}", self.user, mb.name),
            None => format!("user {} mailbox {}", self.user, mb.name),
        };
        for text in snap.skipped.drain(..) {
            self.warnings
                .borrow_mut()
                .push(format!("{}: {text}", item(None)));
        }
        for base in &snap.vanished {
            let uid = records.iter().find(|r| &r.base == base).map(|r| r.uid);
            self.expunged.borrow_mut().push(format!(
                "{}: {} expunged while the mailbox was read",
                item(uid),
                String::from_utf8_lossy(base)
            ));
        }
        let (known, uidnext) =
            assign_uids(&dirs.dir, uidnext, records, &mut snap.files, uidvalidity)?;
        let mut msgs: Vec<MessageMeta> = known
            .iter()
            .map(|(r, f)| message_meta(r, f, &table))
            .collect();
        let md = dirs.dir.stat()?;
        let mut meta = MailboxMeta {
            name: mb.name.clone(),
            guid,
            uidvalidity,
            uidnext,
            highest_modseq: None,
            keywords: table,
            attributes: Vec::new(),
            owner: Some(md.owner()),
            uidlist_header_ext: header_ext.into_iter().map(Name::from_bytes).collect(),
        };
        let mut unused = None;
        let done = index::complete(&mb.dir, &mut meta, &mut msgs, &mut unused);
        if let Some(u) = unused {
            u.report(
                &format!("user {} mailbox {}", self.user, mb.name),
                &mb.dir,
                &mut self.notes.borrow_mut(),
                &mut self.warnings.borrow_mut(),
            );
        }
        if let Err(e) = done {
            self.warnings.borrow_mut().push(format!(
                "user {} mailbox {}: Dovecot's index is damaged, so keywords beyond the 26 of dovecot-keywords and MODSEQs are not in the backup: {e}",
                self.user, mb.name
            ));
        }
        Ok((meta, msgs))
    }

    fn open_body(&self, mb: &MailboxHandle, msg: &MessageMeta) -> Result<OpenedBody> {
        let Some(md) = &msg.maildir else {
            return Err(Error::store(
                &mb.dir,
                format!("UID {}: no Maildir file name", msg.uid),
            ));
        };
        let dirs = self.dirs(mb)?;
        let name = md.filename.as_bytes();
        if let Some(d) = dirs.sub(md.new) {
            match d.open_file(name) {
                // Maildir files never change after delivery; the scan's stat gave the size.
                Ok(f) => {
                    return Ok(OpenedBody {
                        file: Box::new(f),
                        path: d.join(name),
                        len: msg.content.size,
                        renamed_to: None,
                        split: None,
                    });
                }
                Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        // Renamed (flags changed) or moved from new/ to cur/ since the scan, or expunged:
        // looked up again by its base name, as Dovecot does.
        let base = parse_filename(name).base.to_vec();
        for _ in 0..listing::RETRIES {
            let names = match listing::lookup(&dirs, &base)? {
                listing::Lookup::Names(n) => n,
                listing::Lookup::Refused(text) => return Err(Error::store(&mb.dir, text)),
                listing::Lookup::Gone => break,
                listing::Lookup::Unsure => continue,
            };
            for (fname, new) in names {
                let Some(d) = dirs.sub(new) else { continue };
                match d.open_file(&fname) {
                    Ok(f) => {
                        let len = f
                            .metadata()
                            .map_err(|e| Error::io(d.join(&fname), e))?
                            .len();
                        return Ok(OpenedBody {
                            file: Box::new(f),
                            path: d.join(&fname),
                            len,
                            renamed_to: Some((Name::from_bytes(fname), new)),
                            split: None,
                        });
                    }
                    Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Err(Error::io(
            dirs.sub(md.new).map(|d| d.join(name)).unwrap_or_default(),
            io::Error::new(
                io::ErrorKind::NotFound,
                "message file expunged during the backup (not found under any name)",
            ),
        ))
    }

    fn reflag(&self, table: &[Name], msg: &mut MessageMeta, filename: Name, new: bool) {
        let (flags, kws) = flags_from_info(parse_filename(filename.as_bytes()).info, table);
        msg.flags = flags;
        msg.keywords = kws;
        if let Some(md) = &mut msg.maildir {
            md.filename = filename;
            md.new = new;
        }
    }

    fn subscriptions(&self) -> Result<Vec<Name>> {
        super::read_subscriptions(&self.loc, &self.root)
    }

    fn root_owner(&self) -> Result<Owner> {
        Ok(self.root_fd.stat()?.owner())
    }

    fn signature(&self, mb: &MailboxHandle) -> Result<String> {
        self.signature_of(mb)
    }

    fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut *self.warnings.borrow_mut())
    }

    fn take_notes(&self) -> Vec<String> {
        std::mem::take(&mut *self.notes.borrow_mut())
    }

    fn take_expunged(&self) -> Vec<String> {
        std::mem::take(&mut *self.expunged.borrow_mut())
    }
}

/// The uidlist of a mailbox, if it has one.
///
/// # Errors
/// A damaged uidlist ([`Error::StoreDamaged`]), a symlink, I/O errors.
pub(super) fn read_uidlist(dir: &DirFd) -> Result<Option<uidlist::Uidlist>> {
    match dir.read_optional(b"dovecot-uidlist")? {
        Some(d) => uidlist::parse(&d)
            .map(Some)
            .map_err(|e| Error::store(dir.join(b"dovecot-uidlist"), e)),
        None => Ok(None),
    }
}

/// Pair the uidlist's records with the files found, and give files Dovecot has not seen
/// yet UIDs. A file that got its UID from Dovecot after the uidlist was read (delivered
/// meanwhile) keeps that UID: the uidlist is read again when there are such files. Others
/// get UIDs the way Dovecot would assign them. Returns the messages in UID order and the
/// next UID.
///
/// # Errors
/// A damaged uidlist.
fn assign_uids(
    dir: &DirFd,
    uidnext: u32,
    records: Vec<UidRecord>,
    files: &mut HashMap<Vec<u8>, Found>,
    uidvalidity: u32,
) -> Result<(Vec<(UidRecord, Found)>, u32)> {
    let mut known: Vec<(UidRecord, Found)> = Vec::new();
    // Records whose file is gone were expunged: Dovecot drops them too.
    for r in records {
        if let Some(f) = files.remove(&r.base) {
            known.push((r, f));
        }
    }
    let mut later: Vec<UidRecord> = Vec::new();
    let mut header_next = 0;
    if !files.is_empty()
        && let Some(ul) = read_uidlist(dir)?
        && ul.uidvalidity == uidvalidity
    {
        header_next = ul.effective_next_uid();
        let taken: HashSet<u32> = known.iter().map(|(r, _)| r.uid).collect();
        later = ul
            .records
            .into_iter()
            .filter(|r| files.contains_key(&r.base) && !taken.contains(&r.uid))
            .collect();
    }
    for r in later {
        if let Some(f) = files.remove(&r.base) {
            known.push((r, f));
        }
    }
    let mut next_uid = uidnext.max(header_next).max(
        known
            .iter()
            .map(|(r, _)| r.uid.saturating_add(1))
            .max()
            .unwrap_or(1),
    );
    // Files Dovecot has not seen yet get UIDs the way Dovecot would assign them.
    let mut unseen: Vec<(Vec<u8>, Found)> = files.drain().collect();
    unseen.sort_by_key(|(b, _)| dovecot_sort_key(b));
    for (base, f) in unseen {
        known.push((
            UidRecord {
                uid: next_uid,
                base,
                ..Default::default()
            },
            f,
        ));
        next_uid = next_uid.saturating_add(1);
    }
    known.sort_by_key(|(r, _)| r.uid);
    Ok((known, next_uid))
}

fn message_meta(r: &UidRecord, e: &Found, table: &[Name]) -> MessageMeta {
    let md: &FileStat = &e.st;
    let fname = parse_filename(&e.name);
    let (flags, keywords) = flags_from_info(fname.info, table);
    let guid = r.guid.clone().unwrap_or_else(|| fname.base.to_vec());
    let mtime_nanos = md.mtime_nsec;
    MessageMeta {
        uid: Uid(r.uid),
        guid: Name::from_bytes(guid),
        flags,
        keywords,
        received: Timestamp {
            secs: md.mtime,
            nanos: mtime_nanos,
        },
        // The file ctime changes on every rename, link or chmod, so it is not a save date;
        // Maildir keeps the real one only in the (cache) index, which is not read.
        saved: None,
        modseq: None,
        size_physical: fname.size.or(r.size).unwrap_or(md.len),
        size_virtual: fname.vsize.or(r.vsize),
        pop3_uidl: r.pop3_uidl.clone().map(Name::from_bytes),
        pop3_order: r.pop3_order,
        owner: Some(md.owner()),
        maildir: Some(MaildirMessage {
            filename: Name::from_bytes(e.name.clone()),
            new: e.new,
            uidlist_ext: r.other.iter().cloned().map(Name::from_bytes).collect(),
            size_ext: r.size,
            vsize_ext: r.vsize,
        }),
        sdbox: None,
        mdbox: None,
        from: None,
        subject: None,
        message_id: None,
        content: Content {
            sha256: String::new(),
            size: md.len,
            ..Content::default()
        },
        changed: Some(Timestamp {
            secs: md.ctime.max(md.mtime),
            nanos: 0,
        }),
        storage_key: None,
    }
}
