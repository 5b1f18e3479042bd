//! Mail stores: reading a user's mailboxes for backup and writing them back on restore.
//!
//! [`StoreReader`] and [`StoreWriter`] are the interfaces backup and restore use; Maildir is
//! the first implementation, sdbox and mdbox come behind the same traits. This module knows
//! nothing of the archive format. Names that come from an archive reach the file system only
//! through [`safe_component`], which refuses `..`, `/`, NUL and empty names.

pub(crate) mod cache;
pub mod config;
pub mod dbox;
pub(crate) mod dovecot;
pub mod location;
pub mod maildir;
pub(crate) mod mutf7;
pub(crate) mod nofollow;
pub(crate) mod stage;
pub(crate) mod target;
pub(crate) mod template;
pub(crate) mod uidvalidity;
pub mod userdb;
pub(crate) mod writeback;

use std::io::{Read, Seek};
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::model::{Attribute, AttributeScope, MailboxMeta, MessageMeta, Name, Owner};

/// A mailbox found in a store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailboxHandle {
    /// IMAP name (UTF-8, `/` separator).
    pub name: Name,
    /// Its directory.
    pub dir: PathBuf,
}

/// Readable and seekable message bytes.
pub trait Body: Read + Seek {}

impl<T: Read + Seek + ?Sized> Body for T {}

/// A message's bytes opened for reading.
pub struct OpenedBody {
    /// The bytes: an open file, or a message rebuilt from a dbox file and its attachments.
    pub file: Box<dyn Body>,
    /// Its path (for error messages).
    pub path: PathBuf,
    /// Its length when opened.
    pub len: u64,
    /// When the file had been renamed since the scan: its new name and whether it is in `new/`.
    pub renamed_to: Option<(Name, bool)>,
    /// dbox single-instance storage: the message as Dovecot stored it (without the
    /// attachments' encoded text), the parts that put it back together with the
    /// attachments, and each attachment's stored bytes, in order (format 1.2). `file` is
    /// the complete message.
    pub split: Option<InParts>,
}

/// A message as Dovecot stored it with its attachments outside (format 1.2 parts).
pub struct InParts {
    /// The message without the attachments' encoded text (the dbox body).
    pub data: Vec<u8>,
    /// The parts that put the message together from `data` and the attachments. Blob
    /// parts may leave their SHA-256 empty: the archive writer fills it in.
    pub parts: Vec<crate::model::Part>,
    /// Each attachment's stored bytes, in part order.
    pub blobs: Vec<Vec<u8>>,
}

/// Reading one user's mail.
pub trait StoreReader {
    /// The user's mailboxes, INBOX first, then sorted by name.
    ///
    /// # Errors
    /// Unreadable directories.
    fn mailboxes(&self) -> Result<Vec<MailboxHandle>>;
    /// A mailbox's metadata and its messages' metadata (no body is read).
    ///
    /// # Errors
    /// Damaged index files (uidlist), unreadable directories.
    fn scan(&self, mb: &MailboxHandle) -> Result<(MailboxMeta, Vec<MessageMeta>)>;
    /// Open a message's bytes, finding it under a new name when it was renamed.
    ///
    /// # Errors
    /// The file vanished (expunged) or cannot be read.
    fn open_body(&self, mb: &MailboxHandle, msg: &MessageMeta) -> Result<OpenedBody>;
    /// Update flags/keywords after a rename found by [`StoreReader::open_body`].
    fn reflag(&self, table: &[Name], msg: &mut MessageMeta, filename: Name, new: bool);
    /// Subscribed mailbox names (IMAP names).
    ///
    /// # Errors
    /// An unreadable subscriptions file.
    fn subscriptions(&self) -> Result<Vec<Name>>;
    /// Owner and mode of the mail root.
    ///
    /// # Errors
    /// An unreadable root.
    fn root_owner(&self) -> Result<Owner>;
    /// A digest that changes whenever anything an archive records of the mailbox may have
    /// changed, computed without opening message files (see each store's notes).
    ///
    /// # Errors
    /// Unreadable directories or files.
    fn signature(&self, mb: &MailboxHandle) -> Result<String>;
    /// Problems met since the last call that did not stop the scan (a damaged message
    /// left out, naming it), for the backup's warnings.
    fn take_warnings(&self) -> Vec<String> {
        Vec::new()
    }
    /// Messages found by a scan that were expunged before their bytes were read, since
    /// the last call, each named (normal life of a live store, not damage).
    fn take_expunged(&self) -> Vec<String> {
        Vec::new()
    }
    /// Debug lines since the last call (e.g. Dovecot's index cache ignored, so save dates
    /// are absent): neither damage nor loss, see [`crate::progress::Event::Debug`].
    fn take_notes(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Open the store reader of `user` for the location's format.
///
/// # Errors
/// [`Error::NotFound`] when the user's mail root does not exist.
pub fn open_reader(loc: &location::Location, user: &str) -> Result<Box<dyn StoreReader>> {
    Ok(match loc.kind {
        location::StoreFormat::Maildir => Box::new(maildir::MaildirReader::open(loc, user)?),
        location::StoreFormat::Sdbox | location::StoreFormat::Mdbox => {
            Box::new(dbox::DboxReader::open(loc, user)?)
        }
    })
}

/// Writing one user's mail (exact mode: mailboxes that do not exist yet).
pub trait StoreWriter {
    /// Check that a mailbox can be created (it does not exist or holds no mail).
    ///
    /// # Errors
    /// [`Error::Conflict`] when it holds mail.
    fn check_free(&self, name: &Name) -> Result<()>;
    /// Write a whole mailbox: metadata, then each message from `next_body`, then the
    /// uidlist and keywords, made visible at once where the layout allows.
    ///
    /// # Errors
    /// I/O errors; nothing half-written stays visible.
    fn write_mailbox(
        &mut self,
        meta: &MailboxMeta,
        messages: &[MessageMeta],
        bodies: &mut dyn FnMut(usize, &mut dyn std::io::Write) -> Result<bool>,
    ) -> Result<WriteStats>;
    /// Merge subscriptions into the user's subscription file.
    ///
    /// # Errors
    /// I/O errors.
    fn add_subscriptions(&mut self, names: &[Name]) -> Result<()>;
    /// Merge METADATA entries into the user's dictionary. `Some(why)` when the target
    /// cannot take them (no dictionary is known): nothing is written, and the caller
    /// names the entries as not restored (a warning, not an error).
    ///
    /// # Errors
    /// I/O errors; a symlink in the way.
    fn add_attributes(&mut self, entries: &[(Name, Name)]) -> Result<Option<String>>;
    /// Make everything written visible (renames a staged mail root into place).
    ///
    /// # Errors
    /// I/O errors, or the target root appeared meanwhile.
    fn commit(&mut self) -> Result<()>;
}

/// The writer for a location's format.
pub enum Writer {
    /// Maildir (also merges into live mailboxes).
    Maildir(maildir::MaildirWriter),
    /// sdbox or mdbox.
    Dbox(dbox::DboxWriter),
}

impl Writer {
    /// Open the writer of `user` for the location's format. `inline_attachments` keeps
    /// dbox attachments inside the messages (see [`dbox::DboxWriter::new`]).
    ///
    /// # Errors
    /// A location that needs a home template without one.
    pub fn open(
        loc: &location::Location,
        user: &str,
        owner: Option<(u32, u32)>,
        inline_attachments: bool,
    ) -> Result<Self> {
        Ok(match loc.kind {
            location::StoreFormat::Maildir => {
                Writer::Maildir(maildir::MaildirWriter::new(loc, user, owner)?)
            }
            location::StoreFormat::Sdbox | location::StoreFormat::Mdbox => {
                Writer::Dbox(dbox::DboxWriter::new(loc, user, owner, inline_attachments)?)
            }
        })
    }

    /// Whether a mailbox exists in the store.
    ///
    /// # Errors
    /// A symlink at the mailbox, on its way or in it ([`Error::UnsafeTarget`]); I/O errors.
    pub(crate) fn mailbox_exists(&self, name: &Name) -> Result<bool> {
        match self {
            Writer::Maildir(w) => w.mailbox_exists(name),
            Writer::Dbox(w) => w.mailbox_exists(name),
        }
    }

    /// Refuse, before anything is written, a symlink planted where the restore writes the
    /// user's control files (`subscriptions`, the UIDVALIDITY counter, the METADATA
    /// dictionary) or its top directories (dbox `mailboxes/`, `storage/`).
    ///
    /// # Errors
    /// [`Error::UnsafeTarget`] naming the link; I/O errors.
    pub(crate) fn check_root(&self) -> Result<()> {
        match self {
            Writer::Maildir(w) => w.check_root(),
            Writer::Dbox(w) => w.check_root(),
        }
    }

    /// UIDVALIDITY, UIDNEXT and HIGHESTMODSEQ of the mailbox as it is in the target now
    /// (what IMAP clients last saw of it), if it exists there.
    ///
    /// # Errors
    /// A damaged uidlist; unreadable files.
    pub(crate) fn live_state(&self, name: &Name) -> Result<Option<crate::model::MailboxStatus>> {
        match self {
            Writer::Maildir(w) => w.live_state(name),
            Writer::Dbox(w) => w.live_state(name),
        }
    }

    /// Everything [`StoreWriter::commit`] writes before a staged mail root is renamed into
    /// place (an mdbox's map index); then [`Writer::staged_in`] tells where a `syncfs`
    /// makes the staged root durable, and [`Writer::commit_synced`] renames it. A restore
    /// commits many users with one `syncfs` this way.
    ///
    /// # Errors
    /// I/O errors.
    pub(crate) fn finish_writes(&mut self) -> Result<()> {
        match self {
            Writer::Maildir(_) => Ok(()),
            Writer::Dbox(w) => w.finish_writes(),
        }
    }

    fn stage(&mut self) -> &mut stage::Stage {
        match self {
            Writer::Maildir(w) => &mut w.st,
            Writer::Dbox(w) => w.stage(),
        }
    }

    /// The directory a staged mail root is renamed in, if the root is staged.
    pub(crate) fn staged_in(&mut self) -> Option<&nofollow::DirFd> {
        self.stage().staged_in()
    }

    /// Rename a staged root into place after [`Writer::finish_writes`] and a `syncfs` of
    /// [`Writer::staged_in`]'s file system; the caller makes the rename durable (another
    /// `syncfs`).
    ///
    /// # Errors
    /// As [`StoreWriter::commit`].
    pub(crate) fn commit_synced(&mut self) -> Result<()> {
        self.finish_writes()?;
        self.stage().commit_synced(false)
    }

    fn inner(&mut self) -> &mut dyn StoreWriter {
        match self {
            Writer::Maildir(w) => w,
            Writer::Dbox(w) => w,
        }
    }
}

impl StoreWriter for Writer {
    fn check_free(&self, name: &Name) -> Result<()> {
        match self {
            Writer::Maildir(w) => w.check_free(name),
            Writer::Dbox(w) => w.check_free(name),
        }
    }
    fn write_mailbox(
        &mut self,
        meta: &MailboxMeta,
        messages: &[MessageMeta],
        bodies: &mut dyn FnMut(usize, &mut dyn std::io::Write) -> Result<bool>,
    ) -> Result<WriteStats> {
        self.inner().write_mailbox(meta, messages, bodies)
    }
    fn add_subscriptions(&mut self, names: &[Name]) -> Result<()> {
        self.inner().add_subscriptions(names)
    }
    fn add_attributes(&mut self, entries: &[(Name, Name)]) -> Result<Option<String>> {
        self.inner().add_attributes(entries)
    }
    fn commit(&mut self) -> Result<()> {
        self.inner().commit()
    }
}

/// The refusal of an exact restore into mailbox `name` of `user`, which `is_there` at `dir`
/// (e.g. "already exists and holds mail").
pub(crate) fn occupied(user: &str, name: &Name, is_there: &str, dir: &std::path::Path) -> Error {
    Error::Conflict(format!(
        "user {user} mailbox {name} {is_there} ({}); restore into another location or user, or remove it first",
        dir.display()
    ))
}

/// What [`StoreWriter::write_mailbox`] did.
#[derive(Clone, Copy, Debug, Default)]
pub struct WriteStats {
    /// Messages written.
    pub messages: u64,
    /// Messages whose bytes could not be read from the archive (not written).
    pub lost: u64,
    /// Bytes written.
    pub bytes: u64,
}

/// Owner and permission bits of a file's metadata.
pub(crate) fn owner_of(md: &std::fs::Metadata) -> Owner {
    use std::os::unix::fs::MetadataExt;
    Owner {
        uid: md.uid(),
        gid: md.gid(),
        mode: md.mode() & 0o7777,
    }
}

/// The subscribed mailbox names of a mail root (`<root>/subscriptions`, the same file in
/// Maildir and dbox), as IMAP names; none when the file does not exist.
///
/// # Errors
/// An unreadable subscriptions file.
pub(crate) fn read_subscriptions(
    loc: &location::Location,
    root: &std::path::Path,
) -> Result<Vec<Name>> {
    let p = root.join("subscriptions");
    let data = match std::fs::read(&p) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(p, e)),
    };
    Ok(dovecot::parse_subscriptions(&data)
        .into_iter()
        .map(|n| loc.decode_name(&n))
        .collect())
}

/// The warning for a symlink to a directory where a mailbox could be: it is not followed.
pub(crate) fn symlinked_mailbox(path: &std::path::Path) -> String {
    format!(
        "{}: is a symbolic link to a directory; not followed, a mailbox there is not in the backup",
        path.display()
    )
}

/// Mailboxes kept as a directory tree (Maildir `LAYOUT=fs`, dbox `mailboxes/`): every
/// directory below `dir` not `skip`ped is one name component (decoded as the location
/// says), and a mailbox where `is_mailbox` says so. Depth first, sorted by name bytes.
/// A missing `dir` holds no mailboxes. Symlinks to directories are not followed: each is
/// named in `symlinks`.
///
/// # Errors
/// Unreadable directories.
pub(crate) fn walk_mailbox_tree(
    loc: &location::Location,
    dir: &std::path::Path,
    prefix: &[u8],
    skip: &dyn Fn(&[u8]) -> bool,
    is_mailbox: &dyn Fn(&std::path::Path) -> bool,
    out: &mut Vec<MailboxHandle>,
    symlinks: &mut Vec<String>,
) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut entries: Vec<(Vec<u8>, PathBuf)> = Vec::new();
    for e in rd {
        let e = e.map_err(|err| Error::io(dir, err))?;
        let name = e.file_name().as_bytes().to_vec();
        let ft = e.file_type().map_err(|err| Error::io(e.path(), err))?;
        if skip(&name) {
            continue;
        }
        if ft.is_dir() {
            entries.push((name, e.path()));
        } else if ft.is_symlink() && std::fs::metadata(e.path()).is_ok_and(|m| m.is_dir()) {
            symlinks.push(symlinked_mailbox(&e.path()));
        }
    }
    entries.sort();
    for (name, path) in entries {
        let mut full = prefix.to_vec();
        if !full.is_empty() {
            full.push(b'/');
        }
        full.extend_from_slice(&loc.decode_component(&name));
        if is_mailbox(&path) {
            out.push(MailboxHandle {
                name: Name::from_bytes(full.clone()),
                dir: path.clone(),
            });
        }
        walk_mailbox_tree(loc, &path, &full, skip, is_mailbox, out, symlinks)?;
    }
    Ok(())
}

/// Check one component of a name from an archive before it reaches the file system.
///
/// # Errors
/// [`Error::Corrupt`] naming `what` for `..`, `.`, empty names, `/`, NUL.
pub fn safe_component<'a>(c: &'a [u8], what: &str) -> Result<&'a [u8]> {
    if c.is_empty() || c == b"." || c == b".." || c.contains(&b'/') || c.contains(&0) {
        return Err(Error::corrupt(
            what,
            format!(
                "hostile name component {:?} refused",
                String::from_utf8_lossy(c)
            ),
        ));
    }
    Ok(c)
}

/// Check a whole mailbox name (components split at `/`).
///
/// # Errors
/// See [`safe_component`]; also names with a leading `.` component, which Maildir++ can't hold.
pub fn check_mailbox_name(name: &Name, what: &str) -> Result<()> {
    for c in name.as_bytes().split(|&b| b == b'/') {
        safe_component(c, what)?;
        if c.contains(&b'\n') || c.contains(&b'\r') {
            return Err(Error::corrupt(what, "line break in mailbox name refused"));
        }
    }
    Ok(())
}

/// dovecot-attributes entries sorted out: (mailbox index, entry), server entries, others.
pub type SplitAttributes = (Vec<(usize, Attribute)>, Vec<Attribute>, Vec<(Name, Name)>);

/// Split dovecot-attributes entries into per-mailbox, server and unrecognized entries.
/// `guids` maps mailbox GUID (hex) to the index of the mailbox.
pub fn split_attributes(
    entries: Vec<(Name, Name)>,
    guids: &std::collections::HashMap<String, usize>,
) -> SplitAttributes {
    let mut per_mb = Vec::new();
    let mut server = Vec::new();
    let mut raw = Vec::new();
    for (k, v) in entries {
        let kb = k.as_bytes();
        let (scope, rest) = if let Some(r) = kb.strip_prefix(b"priv/") {
            (AttributeScope::Private, r)
        } else if let Some(r) = kb.strip_prefix(b"shared/") {
            (AttributeScope::Shared, r)
        } else {
            raw.push((k, v));
            continue;
        };
        let Some(slash) = rest.iter().position(|&b| b == b'/') else {
            raw.push((k, v));
            continue;
        };
        let guid = String::from_utf8_lossy(&rest[..slash]).into_owned();
        let name = &rest[slash + 1..];
        let Some(&idx) = guids.get(&guid) else {
            raw.push((k, v));
            continue;
        };
        if let Some(sname) = name.strip_prefix(dovecot::SERVER_ATTR_PREFIX) {
            server.push(Attribute {
                scope,
                name: Name::from_bytes(sname),
                value: v,
            });
        } else {
            per_mb.push((
                idx,
                Attribute {
                    scope,
                    name: Name::from_bytes(name),
                    value: v,
                },
            ));
        }
    }
    (per_mb, server, raw)
}

/// Dict key of a mailbox attribute.
pub fn attribute_key(guid: &str, a: &Attribute, server: bool) -> Name {
    let scope: &[u8] = match a.scope {
        AttributeScope::Private => b"priv/",
        AttributeScope::Shared => b"shared/",
    };
    let mut k = scope.to_vec();
    k.extend_from_slice(guid.as_bytes());
    k.push(b'/');
    if server {
        k.extend_from_slice(dovecot::SERVER_ATTR_PREFIX);
    }
    k.extend_from_slice(a.name.as_bytes());
    Name::from_bytes(k)
}
