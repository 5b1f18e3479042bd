//! Dovecot Maildir stores (Maildir++ and `LAYOUT=fs`, mUTF-7 or UTF-8 folder names).
//!
//! [`MaildirReader`] lists a user's mailboxes and their messages from `dovecot-uidlist`,
//! `dovecot-keywords` and the file names in `cur/` and `new/` (one directory walk and one
//! `stat` per message; no body is read until [`StoreReader::open_body`]).
//! [`MaildirWriter`] writes mailboxes back following Dovecot's rules (see `write.rs`).

mod index;
mod merge;
pub mod uidlist;
mod write;

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub use merge::MergeReport;
pub use write::MaildirWriter;

use super::location::{Layout, Location};
use super::{MailboxHandle, OpenedBody, StoreReader, owner_of};
use crate::error::{Error, IoContext, Result};
use crate::model::{
    Content, Flags, MailboxMeta, MaildirMessage, MessageMeta, Name, Owner, Timestamp, Uid,
};
use uidlist::{UidRecord, parse_filename};

/// Reads one user's Maildir.
pub struct MaildirReader {
    loc: Location,
    root: PathBuf,
    user: String,
    /// Problems that did not stop a scan (a damaged index), for the backup's warnings.
    warnings: std::cell::RefCell<Vec<String>>,
}

/// Map a flag letter string to flags and keywords.
pub fn flags_from_info(info: &[u8], table: &[Name]) -> (Flags, Vec<Name>) {
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

struct DirEntry {
    name: Vec<u8>,
    new: bool,
}

fn list_messages(dir: &Path) -> Result<HashMap<Vec<u8>, DirEntry>> {
    let mut map: HashMap<Vec<u8>, DirEntry> = HashMap::new();
    for (sub, new) in [("new", true), ("cur", false)] {
        let d = dir.join(sub);
        let rd = match fs::read_dir(&d) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(d, e)),
        };
        for e in rd {
            let e = e.at(&d)?;
            let name = e.file_name().as_bytes().to_vec();
            if name.first() == Some(&b'.') {
                continue;
            }
            let base = parse_filename(&name).base.to_vec();
            // cur/ wins over new/ when both hold the same base (Dovecot prefers cur/).
            map.insert(base, DirEntry { name, new });
        }
    }
    Ok(map)
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
        Ok(MaildirReader {
            loc: loc.clone(),
            root,
            user: user.to_string(),
            warnings: std::cell::RefCell::default(),
        })
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
    pub fn mailboxes_by_guid(&self) -> Result<HashMap<String, Name>> {
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
        let mut h = Sha256::new();
        h.update(b"maildump-maildir-signature-1\0");
        for sub in ["new", "cur"] {
            let d = mb.dir.join(sub);
            let mut names: Vec<Vec<u8>> = match fs::read_dir(&d) {
                Ok(rd) => {
                    let mut v = Vec::new();
                    for e in rd {
                        let n = e.at(&d)?.file_name().as_bytes().to_vec();
                        if n.first() != Some(&b'.') {
                            v.push(n);
                        }
                    }
                    v
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(Error::io(d, e)),
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
            let data = Self::read_optional(&mb.dir.join(f))?.unwrap_or_default();
            h.update(f.as_bytes());
            h.update((data.len() as u64).to_le_bytes());
            h.update(&data);
        }
        h.update(index::signature(&mb.dir));
        let md = fs::metadata(&mb.dir).at(&mb.dir)?;
        h.update(md.uid().to_le_bytes());
        h.update(md.gid().to_le_bytes());
        h.update(md.mode().to_le_bytes());
        h.update(mb.name.as_bytes());
        Ok(hex::encode(h.finalize()))
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
            )?,
            Layout::MaildirPlusPlus => {
                let mut found = Vec::new();
                for e in fs::read_dir(&self.root).at(&self.root)? {
                    let e = e.at(&self.root)?;
                    let name = e.file_name().as_bytes().to_vec();
                    if name.len() < 2 || name[0] != b'.' || name == b".." {
                        continue;
                    }
                    // Maildir++ lists every `.name` directory as a mailbox, as Dovecot does.
                    if !e.file_type().at(e.path())?.is_dir() {
                        continue;
                    }
                    let full: Vec<Vec<u8>> = name[1..]
                        .split(|&b| b == b'.')
                        .map(|c| self.loc.decode_component(c))
                        .collect();
                    found.push(MailboxHandle {
                        name: Name::from_bytes(full.join(&b'/')),
                        dir: e.path(),
                    });
                }
                found.sort_by(|a, b| a.name.cmp(&b.name));
                out.extend(found);
            }
        }
        Ok(out)
    }

    fn scan(&self, mb: &MailboxHandle) -> Result<(MailboxMeta, Vec<MessageMeta>)> {
        let ul_path = mb.dir.join("dovecot-uidlist");
        let ul = match Self::read_optional(&ul_path)? {
            Some(d) => Some(uidlist::parse(&d).map_err(|e| Error::store(&ul_path, e))?),
            None => None,
        };
        let kw_path = mb.dir.join("dovecot-keywords");
        let table = Self::read_optional(&kw_path)?
            .map(|d| uidlist::parse_keywords(&d))
            .unwrap_or_default();
        let mut files = list_messages(&mb.dir)?;
        let mut msgs = Vec::new();
        let mut records: Vec<UidRecord> = Vec::new();
        let (uidvalidity, mut next_uid, guid, header_ext) = match &ul {
            Some(ul) => (
                ul.uidvalidity,
                ul.effective_next_uid(),
                ul.guid.clone(),
                ul.header_other.clone(),
            ),
            None => (0, 1, None, Vec::new()),
        };
        if let Some(ul) = ul {
            records = ul.records;
        }
        // Records whose file is gone were expunged: Dovecot drops them too.
        let mut known: Vec<(UidRecord, DirEntry)> = Vec::new();
        for r in records {
            if let Some(e) = files.remove(&r.base) {
                known.push((r, e));
            }
        }
        // Files Dovecot has not seen yet get UIDs the way Dovecot would assign them.
        let mut unseen: Vec<(Vec<u8>, DirEntry)> = files.into_iter().collect();
        unseen.sort_by_key(|(b, _)| dovecot_sort_key(b));
        for (base, e) in unseen {
            known.push((
                UidRecord {
                    uid: next_uid,
                    base,
                    ..Default::default()
                },
                e,
            ));
            next_uid = next_uid.saturating_add(1);
        }
        for (r, e) in known {
            let path = mb
                .dir
                .join(if e.new { "new" } else { "cur" })
                .join(std::ffi::OsStr::from_bytes(&e.name));
            let md = match fs::symlink_metadata(&path) {
                Ok(md) => md,
                // Renamed (flag change) or expunged between listing and stat: skip here;
                // open_body finds renamed files, and an expunge is what Dovecot would see.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(err) => return Err(Error::io(path, err)),
            };
            if !md.is_file() {
                continue;
            }
            msgs.push(message_meta(&r, &e, &md, &table));
        }
        let md = fs::metadata(&mb.dir).at(&mb.dir)?;
        let mut meta = MailboxMeta {
            name: mb.name.clone(),
            guid,
            uidvalidity,
            uidnext: next_uid,
            highest_modseq: None,
            keywords: table,
            attributes: Vec::new(),
            owner: Some(owner_of(&md)),
            uidlist_header_ext: header_ext.into_iter().map(Name::from_bytes).collect(),
        };
        if let Err(e) = index::complete(&mb.dir, &mut meta, &mut msgs) {
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
        let sub = if md.new { "new" } else { "cur" };
        let path = mb
            .dir
            .join(sub)
            .join(std::ffi::OsStr::from_bytes(md.filename.as_bytes()));
        match File::open(&path) {
            Ok(f) => {
                // Maildir files never change after delivery; the scan's stat gave the size.
                let len = msg.content.size;
                return Ok(OpenedBody {
                    file: Box::new(f),
                    path,
                    len,
                    renamed_to: None,
                    split: None,
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(path, e)),
        }
        // The file was renamed (flags changed) or moved new/ -> cur/: find it by its base.
        let base = parse_filename(md.filename.as_bytes()).base.to_vec();
        let files = list_messages(&mb.dir)?;
        if let Some(e) = files.get(&base) {
            let p = mb
                .dir
                .join(if e.new { "new" } else { "cur" })
                .join(std::ffi::OsStr::from_bytes(&e.name));
            if let Ok(f) = File::open(&p) {
                let len = f.metadata().at(&p)?.len();
                return Ok(OpenedBody {
                    file: Box::new(f),
                    path: p,
                    len,
                    renamed_to: Some((Name::from_bytes(e.name.clone()), e.new)),
                    split: None,
                });
            }
        }
        Err(Error::io(
            path,
            io::Error::new(
                io::ErrorKind::NotFound,
                "message file vanished during backup",
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
        Ok(owner_of(&fs::metadata(&self.root).at(&self.root)?))
    }

    fn signature(&self, mb: &MailboxHandle) -> Result<String> {
        self.signature_of(mb)
    }

    fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut *self.warnings.borrow_mut())
    }
}

fn message_meta(r: &UidRecord, e: &DirEntry, md: &fs::Metadata, table: &[Name]) -> MessageMeta {
    let fname = parse_filename(&e.name);
    let (flags, keywords) = flags_from_info(fname.info, table);
    let guid = r.guid.clone().unwrap_or_else(|| fname.base.to_vec());
    let mtime_nanos = u32::try_from(md.mtime_nsec()).unwrap_or(0);
    MessageMeta {
        uid: Uid(r.uid),
        guid: Name::from_bytes(guid),
        flags,
        keywords,
        received: Timestamp {
            secs: md.mtime(),
            nanos: mtime_nanos,
        },
        // The file ctime changes on every rename, link or chmod, so it is not a save date;
        // Maildir keeps the real one only in the (cache) index, which is not read.
        saved: None,
        modseq: None,
        size_physical: fname.size.or(r.size).unwrap_or(md.len()),
        size_virtual: fname.vsize.or(r.vsize),
        pop3_uidl: r.pop3_uidl.clone().map(Name::from_bytes),
        pop3_order: r.pop3_order,
        owner: Some(owner_of(md)),
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
            size: md.len(),
            ..Content::default()
        },
        changed: Some(Timestamp {
            secs: md.ctime().max(md.mtime()),
            nanos: 0,
        }),
        storage_key: None,
    }
}
