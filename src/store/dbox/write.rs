//! Writing sdbox and mdbox mailboxes (restore, exact mode) with hand-written index files.
//!
//! A `force-resync` of bare message files loses flags, keywords, UIDVALIDITY and the mailbox
//! GUID (and, in mdbox, copies and UIDs), so the restore writes the index files Dovecot
//! needs itself: per mailbox a self-contained `dovecot.index` (UIDVALIDITY, next UID,
//! mailbox GUID, keywords, one record per message with its flags), and for mdbox the
//! `storage/dovecot.map.index` (map UID to file, offset, size and reference count). No
//! `.log` or `.cache` is written; Dovecot creates them on first access.
//!
//! sdbox: a new mailbox is built in a hidden directory of the mail root and renamed into
//! `mailboxes/` once its files are durable. mdbox: the storage files and the map are shared
//! by all mailboxes of a user, so an mdbox restore builds a new mail root (the target user
//! must have no mdbox storage yet) and [`StoreWriter::commit`] writes the map and renames
//! the root into place. A message copied to several mailboxes is stored once and referenced
//! from each, as Dovecot does.
//!
//! Single-instance attachments: with an attachment directory (and without
//! `--inline-attachments`) a message's attachments are taken out again exactly where
//! Dovecot had taken them out, written once per content under Dovecot's names and linked
//! from `hashes/` (`attach.rs`; Dovecot 2.3: a 2.4 target gets no `hashes/`, as 2.4 writes them). Without one they stay inside the message, which Dovecot
//! reads the same.
//!
//! Everything is written relative to open directory handles, never through a symlink
//! (`store::target`); a symlink in a mailbox's way is refused before anything is written.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;

use super::attach::AttachmentDir;
use super::index::{NewExt, NewIndex, NewRecord};
use super::{MAILS_DIR, STORAGE_DIR, file, sis_part};
use crate::error::{Error, IoContext, Result};
use crate::model::{MailboxMeta, MessageMeta, Name, Owner};
use crate::store::location::{Location, StoreFormat};
use crate::store::nofollow::DirFd;
use crate::store::stage::Stage;
use crate::store::target::{Durable, Perms, set_owner};
use crate::store::{StoreWriter, WriteStats, check_mailbox_name, occupied};

/// Largest mdbox storage file written (Dovecot's default `mdbox_rotate_size` is 10 MiB).
const MDBOX_ROTATE: u64 = 10 << 20;

/// Writes mailboxes into one user's sdbox or mdbox store.
pub struct DboxWriter {
    st: Stage,
    kind: StoreFormat,
    attachments: Option<AttachmentDir>,
    inline: bool,
    seq: u32,
    mdbox: Option<Box<Mdbox>>,
}

/// The mdbox storage being built.
struct Mdbox {
    map_uid_validity: u32,
    /// Map records in map UID order (map UID = index + 1).
    entries: Vec<MapRecord>,
    /// Messages already stored: (SHA-256, GUID) -> map UID. A copy Dovecot made shares
    /// one stored message (same GUID); two deliveries of the same bytes do not.
    by_sha: HashMap<(String, Vec<u8>), u32>,
    file_id: u32,
    /// `storage/` of the root being written.
    storage: DirFd,
    file: Option<(File, PathBuf, u64)>,
}

struct MapRecord {
    file_id: u32,
    offset: u32,
    size: u32,
    refs: u16,
}

/// The current time as Dovecot stamps new files and index ids (never a UIDVALIDITY).
pub(crate) fn now() -> u32 {
    u32::try_from(chrono::Utc::now().timestamp()).unwrap_or(1)
}

/// The mailbox GUID as 16 bytes: the archived one, or a new random one when the archive
/// has none (a mailbox Dovecot never opened).
fn guid_bytes(g: Option<&str>) -> [u8; 16] {
    let mut out = [0u8; 16];
    match g
        .and_then(|g| hex::decode(g).ok())
        .filter(|b| b.len() == 16)
    {
        Some(b) => out.copy_from_slice(&b),
        None => out.copy_from_slice(uuid::Uuid::new_v4().as_bytes()),
    }
    out
}

/// The 128-bit form of a message GUID that Dovecot keeps in an mdbox mailbox index's `guid`
/// extension (`mail_generate_guid_128_hash`): the GUID itself when it is 32 hex digits,
/// else the last 16 bytes of the SHA-1 of the GUID text. mdbox decrements a message's
/// reference count on expunge only when this extension holds the message's GUID.
pub(crate) fn guid_128(guid: &[u8]) -> [u8; 16] {
    use sha1::{Digest, Sha1};
    let mut out = [0u8; 16];
    if guid.len() == 32
        && guid.iter().all(u8::is_ascii_hexdigit)
        && hex::decode_to_slice(guid, &mut out).is_ok()
    {
        return out;
    }
    out.copy_from_slice(&Sha1::digest(guid)[4..]);
    out
}

/// Virtual size (CRLF line ends) of message bytes.
fn virtual_size(b: &[u8]) -> u64 {
    let mut n = b.len() as u64;
    let mut prev = 0u8;
    for &c in b {
        if c == b'\n' && prev != b'\r' {
            n += 1;
        }
        prev = c;
    }
    n
}

/// What a restore writes in a dbox mailbox's `dbox-Mails/` besides the message files
/// (each refused when it is a symlink).
const MAILS_ENTRIES: [&str; 4] = [
    "dovecot.index",
    "dovecot.index.log",
    "dovecot.index.log.2",
    "dovecot.index.cache",
];

impl DboxWriter {
    /// Prepare to write into `user`'s dbox store at `loc`. `inline` keeps attachments inside
    /// the messages even when the location has an attachment directory.
    ///
    /// # Errors
    /// A location that needs a home template without one.
    pub fn new(
        loc: &Location,
        user: &str,
        owner: Option<(u32, u32)>,
        inline: bool,
    ) -> Result<Self> {
        Ok(DboxWriter {
            st: Stage::new(loc, user, owner)?,
            kind: loc.kind,
            attachments: loc
                .attachment_dir_of(user)?
                .map(|d| AttachmentDir::new(d, loc.attachment_layout)),
            inline,
            seq: 0,
            mdbox: None,
        })
    }

    /// The directory components of a mailbox (`mailboxes/<name>`) below the root.
    fn mailbox_comps(&self, name: &Name) -> Vec<Vec<u8>> {
        self.st.loc.mailbox_dir_components(name)
    }

    /// The existing `dbox-Mails/` of mailbox `name`, checked: a symlink at the mailbox
    /// directory, on its way, at `dbox-Mails` or at an index file in it is refused. `None`
    /// when the root, the mailbox or its `dbox-Mails/` does not exist.
    ///
    /// # Errors
    /// [`Error::UnsafeTarget`] naming a symlink; I/O errors.
    fn existing_mails(&self, name: &Name) -> Result<Option<DirFd>> {
        let Some(root) = self.st.existing_root()? else {
            return Ok(None);
        };
        let Some(dir) = root.try_open_comps(&self.mailbox_comps(name))? else {
            return Ok(None);
        };
        let Some(mails) = dir.try_open_dir(MAILS_DIR.as_bytes())? else {
            return Ok(None);
        };
        for e in MAILS_ENTRIES {
            mails.refuse_symlink(e.as_bytes())?;
        }
        Ok(Some(mails))
    }

    /// See [`crate::store::Writer::live_state`]: from the mailbox's index.
    ///
    /// # Errors
    /// A damaged index; a symlink in the way.
    pub(crate) fn live_state(&self, name: &Name) -> Result<Option<crate::model::MailboxStatus>> {
        let Some(mails) = self.existing_mails(name)? else {
            return Ok(None);
        };
        let ix = match crate::store::stage::read_index_at(&mails, "dovecot.index")? {
            Some(r) => Some(r.map_err(|e| Error::store_from(mails.join(b"dovecot.index"), e))?),
            None => None,
        };
        Ok(ix.map(|i| crate::model::MailboxStatus {
            uidvalidity: i.uid_validity,
            uidnext: i.next_uid,
            highest_modseq: (i.highest_modseq > 0).then_some(i.highest_modseq),
        }))
    }

    /// Whether a mailbox exists (has its `dbox-Mails` directory).
    ///
    /// # Errors
    /// A symlink in the way ([`Error::UnsafeTarget`]); I/O errors.
    pub(crate) fn mailbox_exists(&self, name: &Name) -> Result<bool> {
        Ok(self.existing_mails(name)?.is_some())
    }

    /// Refuse, before anything is written, a symlink where the user's control files are
    /// written and at `mailboxes/` and `storage/`.
    ///
    /// # Errors
    /// [`Error::UnsafeTarget`] naming the link; I/O errors.
    pub(crate) fn check_root(&self) -> Result<()> {
        self.st
            .check_root(&[super::MAILBOXES_DIR.as_bytes(), STORAGE_DIR.as_bytes()])
    }

    fn start_mdbox(&mut self, owner: Option<Owner>) -> Result<()> {
        if self.mdbox.is_some() {
            return Ok(());
        }
        let storage = match self.st.existing_root()? {
            Some(r) => r.try_open_dir(STORAGE_DIR.as_bytes())?,
            None => None,
        };
        if let Some(s) = storage {
            let mut taken = false;
            for f in [b"dovecot.map.index".as_slice(), b"dovecot.map.index.log"] {
                taken |= s.refuse_symlink(f)?;
            }
            if taken {
                return Err(Error::Conflict(format!(
                    "user {}: the mdbox store at {} already has storage; restoring into an existing mdbox store is not supported yet: restore into a new location (or use --mode side-folder on a Maildir or sdbox store)",
                    self.st.user,
                    self.st.root.display()
                )));
            }
        }
        let root = self.st.work_root(owner)?;
        let storage = root.mkdir(STORAGE_DIR.as_bytes(), self.st.dir_perms(owner))?;
        // Any non-zero value will do for the map (Dovecot takes the clock); the root's
        // counter gives one that is not.
        let map_uid_validity = self.st.next_uidvalidity()?;
        self.mdbox = Some(Box::new(Mdbox {
            map_uid_validity,
            entries: Vec::new(),
            by_sha: HashMap::new(),
            file_id: 0,
            storage,
            file: None,
        }));
        Ok(())
    }

    /// Write the new file `name` in `dir` (not synced; the caller syncs a batch).
    fn create_file(&self, dir: &DirFd, name: &[u8], data: &[u8], perms: Perms) -> Result<()> {
        let path = dir.join(name);
        let mut f = dir.create(name, perms.mode)?;
        f.write_all(data).at(&path)?;
        set_owner(&f, &path, perms.ids)?;
        self.st.written(f, data.len() as u64);
        Ok(())
    }

    /// Take a message's attachments out into the attachment directory (written once per
    /// content, linked from `hashes/`). Returns the dbox body, or `None` to keep the
    /// message whole.
    fn externalise(
        &mut self,
        full: &[u8],
        msg: &MessageMeta,
        mailbox_guid: &str,
        uid: u32,
        owner: Option<Owner>,
    ) -> Result<Option<Vec<u8>>> {
        if self.inline {
            return Ok(None);
        }
        let refs = msg.dbox_attachments();
        let parts: Option<Vec<file::SisPart>> = refs.iter().map(sis_part).collect();
        let Some(parts) = parts.filter(|p| !p.is_empty()) else {
            return Ok(None);
        };
        if self.attachments.is_none() {
            return Ok(None);
        }
        for p in &parts {
            if p.path
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
            {
                return Err(Error::corrupt(
                    format!("UID {uid}"),
                    format!("attachment path {:?} refused", p.path),
                ));
            }
        }
        // Bytes that do not re-encode exactly stay inside the message.
        let Ok((body, stored)) = file::extract(full, &parts) else {
            return Ok(None);
        };
        // Directories as Dovecot makes them: the mail owner's, 0700, every level.
        let ids = self.st.ids(owner);
        let perms = (Perms::new(0o700, ids), Perms::new(0o600, ids));
        let sdbox = self.kind == StoreFormat::Sdbox;
        let Some(att) = self.attachments.as_mut() else {
            return Ok(None);
        };
        for (p, data) in parts.iter().zip(&stored) {
            let (name, link) =
                file::attachment_names(att.layout(), sdbox, &p.path, mailbox_guid, uid);
            att.store(&name, link.as_deref(), data, perms)?;
        }
        Ok(Some(body))
    }

    /// The metadata lines of a message as Dovecot writes them.
    fn metadata(
        &self,
        msg: &MessageMeta,
        full: &[u8],
        external: bool,
        mailbox: &Name,
        guid: &[u8],
    ) -> Vec<(u8, Vec<u8>)> {
        // Dovecot's order: Z R V P O G B X, then anything else it had.
        let mut meta: Vec<(u8, Vec<u8>)> = Vec::new();
        let d = msg.dbox();
        if external {
            meta.push((b'Z', format!("{:x}", full.len()).into_bytes()));
        }
        meta.push((b'R', format!("{:x}", msg.received.secs.max(0)).into_bytes()));
        let vsize = msg.size_virtual.unwrap_or_else(|| virtual_size(full));
        meta.push((b'V', format!("{vsize:x}").into_bytes()));
        if let Some(u) = &msg.pop3_uidl {
            meta.push((b'P', u.as_bytes().to_vec()));
        }
        if let Some(o) = msg.pop3_order {
            meta.push((b'O', o.to_string().into_bytes()));
        }
        meta.push((b'G', guid.to_vec()));
        let other = d.map(|d| d.other.as_slice()).unwrap_or_default();
        let orig = other.iter().find(|(k, _)| k.as_bytes() == b"B");
        if self.kind == StoreFormat::Mdbox {
            let b = orig
                .map(|(_, v)| v.as_bytes())
                .unwrap_or(mailbox.as_bytes());
            meta.push((b'B', b.to_vec()));
        }
        if external && let Some(d) = d {
            let parts: Vec<file::SisPart> = d.attachments.iter().filter_map(sis_part).collect();
            meta.push((b'X', file::format_x(&parts)));
        }
        for (k, v) in other {
            let Some(&k) = k.as_bytes().first() else {
                continue;
            };
            if k != b'B' {
                meta.push((k, v.as_bytes().to_vec()));
            }
        }
        meta
    }

    /// Append one message to the current mdbox storage file; returns its map UID.
    fn mdbox_append(
        &mut self,
        bytes: &[u8],
        sha: &str,
        guid: &[u8],
        owner: Option<Owner>,
    ) -> Result<u32> {
        let key = (sha.to_string(), guid.to_vec());
        let ids = self.st.ids(owner);
        let md = self
            .mdbox
            .as_mut()
            .ok_or_else(|| Error::Internal("mdbox storage written before it was started".into()))?;
        if let Some(&m) = md.by_sha.get(&key).filter(|_| !sha.is_empty()) {
            if let Some(r) = md.entries.get_mut(m as usize - 1) {
                r.refs = r.refs.saturating_add(1);
            }
            return Ok(m);
        }
        let full = md
            .file
            .as_ref()
            .is_some_and(|(_, _, len)| *len > 0 && len + bytes.len() as u64 > MDBOX_ROTATE);
        if md.file.is_none() || full {
            if let Some((f, _, len)) = md.file.take() {
                self.st.written(f, len);
            }
            md.file_id += 1;
            let name = format!("m.{}", md.file_id).into_bytes();
            let path = md.storage.join(&name);
            let mut f = md.storage.create(&name, 0o600)?;
            let hdr = file::file_header(u64::from(now()));
            f.write_all(&hdr).at(&path)?;
            set_owner(&f, &path, ids)?;
            md.file = Some((f, path, hdr.len() as u64));
        }
        let Some((f, path, len)) = md.file.as_mut() else {
            return Err(Error::Internal("mdbox storage file not open".into()));
        };
        let offset = *len;
        f.write_all(bytes).at(&*path)?;
        *len += bytes.len() as u64;
        let too_big = |v: u64| {
            u32::try_from(v).map_err(|_| Error::store(&*path, "storage file larger than 4 GiB"))
        };
        md.entries.push(MapRecord {
            file_id: md.file_id,
            offset: too_big(offset)?,
            size: too_big(bytes.len() as u64)?,
            refs: 1,
        });
        let map_uid = u32::try_from(md.entries.len()).unwrap_or(u32::MAX);
        if !sha.is_empty() {
            md.by_sha.insert(key, map_uid);
        }
        Ok(map_uid)
    }

    fn next_seq(&mut self) -> u32 {
        self.seq += 1;
        self.seq
    }
}

impl DboxWriter {
    /// Write the messages of mailbox `meta` (UID order, one per UID) into `mails` (sdbox
    /// `u.N` files) or the mdbox storage, and make up their index records; returns them
    /// with the last UID written.
    fn write_messages(
        &mut self,
        meta: &MailboxMeta,
        messages: &[MessageMeta],
        (mails, guid_hex): (&DirFd, &str),
        bodies: &mut dyn FnMut(usize, &mut dyn Write) -> Result<bool>,
    ) -> Result<(WriteStats, Vec<NewRecord>, u32)> {
        let mut stats = WriteStats::default();
        let mut records = Vec::with_capacity(messages.len());
        let mut sorted: Vec<usize> = (0..messages.len()).collect();
        sorted.sort_by_key(|&i| messages[i].uid);
        let mut last_uid = 0;
        for i in sorted {
            let msg = &messages[i];
            if msg.uid.0 <= last_uid {
                continue;
            }
            let mut full = Vec::with_capacity(crate::model::capacity_hint(msg.content.size));
            if !bodies(i, &mut full)? {
                stats.lost += 1;
                continue;
            }
            last_uid = msg.uid.0;
            let owner = msg.owner.or(meta.owner);
            let stub = self.externalise(&full, msg, guid_hex, msg.uid.0, owner)?;
            // A message without a GUID gets one, as Dovecot's save would give it.
            let msg_guid = if msg.guid.is_empty() {
                uuid::Uuid::new_v4().simple().to_string().into_bytes()
            } else {
                msg.guid.as_bytes().to_vec()
            };
            let meta_lines = self.metadata(msg, &full, stub.is_some(), &meta.name, &msg_guid);
            let body = stub.as_deref().unwrap_or(&full);
            let one = file::message_bytes(body, &meta_lines);
            let mut ext = Vec::new();
            if self.kind == StoreFormat::Mdbox {
                let map_uid = self.mdbox_append(&one, &msg.content.sha256, &msg_guid, owner)?;
                let saved = msg
                    .saved
                    .map(|t| u32::try_from(t.secs).unwrap_or(0))
                    .unwrap_or_else(now);
                let mut rec = map_uid.to_le_bytes().to_vec();
                rec.extend_from_slice(&saved.to_le_bytes());
                ext.push(Vec::new());
                ext.push(rec);
                ext.push(guid_128(&msg_guid).to_vec());
            } else {
                let mut data = file::file_header(u64::try_from(msg.received.secs).unwrap_or(0));
                data.extend_from_slice(&one);
                let name = format!("u.{}", msg.uid.0).into_bytes();
                self.create_file(mails, &name, &data, self.st.file_perms(owner))?;
                ext.push(Vec::new());
            }
            stats.messages += 1;
            stats.bytes += msg.content.size;
            let keywords = msg
                .keywords
                .iter()
                .filter_map(|k| meta.keywords.iter().position(|t| t == k))
                .map(|p| u32::try_from(p).unwrap_or(u32::MAX))
                .collect();
            records.push(NewRecord {
                uid: msg.uid.0,
                flags: msg.flags.bits(),
                keywords,
                ext,
                modseq: msg.modseq.unwrap_or(0),
            });
        }
        Ok((stats, records, last_uid))
    }

    /// The mailbox index of `meta` with `records`.
    fn mailbox_index(
        &self,
        meta: &MailboxMeta,
        records: Vec<NewRecord>,
        (uidvalidity, next_uid): (u32, u32),
        guid: &[u8; 16],
    ) -> NewIndex {
        let mdbox = self.kind == StoreFormat::Mdbox;
        let mut hdr = Vec::with_capacity(24);
        let map_uv = self.mdbox.as_ref().map(|m| m.map_uid_validity).unwrap_or(0);
        hdr.extend_from_slice(&(if mdbox { map_uv } else { 0 }).to_le_bytes());
        hdr.extend_from_slice(guid);
        hdr.extend_from_slice(&[0u8; 4]);
        let mut exts = vec![NewExt {
            name: if mdbox { "mdbox-hdr" } else { "dbox-hdr" }.into(),
            hdr,
            record_size: 0,
            record_align: 0,
            reset_id: 0,
        }];
        if mdbox {
            exts.push(NewExt {
                name: "mdbox".into(),
                hdr: Vec::new(),
                record_size: 8,
                record_align: 4,
                reset_id: 0,
            });
            exts.push(NewExt {
                name: "guid".into(),
                hdr: Vec::new(),
                record_size: 16,
                record_align: 1,
                reset_id: 0,
            });
        }
        NewIndex {
            uid_validity: uidvalidity,
            next_uid,
            indexid: now(),
            exts,
            keywords: meta
                .keywords
                .iter()
                .map(|k| k.as_bytes().to_vec())
                .collect(),
            records,
            highest_modseq: meta.highest_modseq,
        }
    }
}

impl StoreWriter for DboxWriter {
    fn check_free(&self, name: &Name) -> Result<()> {
        check_mailbox_name(name, &format!("mailbox {name}"))?;
        let Some(mails) = self.existing_mails(name)? else {
            return Ok(());
        };
        for (n, _) in mails.entries()? {
            if n.starts_with(b"u.") || n.starts_with(b"dovecot.index") {
                let what = "already exists";
                return Err(occupied(&self.st.user, name, what, mails.path()));
            }
        }
        Ok(())
    }

    fn write_mailbox(
        &mut self,
        meta: &MailboxMeta,
        messages: &[MessageMeta],
        bodies: &mut dyn FnMut(usize, &mut dyn Write) -> Result<bool>,
    ) -> Result<WriteStats> {
        self.check_free(&meta.name)?;
        let dir_owner = meta.owner;
        if self.kind == StoreFormat::Mdbox {
            self.start_mdbox(dir_owner)?;
        }
        let root = self.st.work_root(dir_owner)?;
        let perms = self.st.dir_perms(dir_owner);
        let comps = self.mailbox_comps(&meta.name);
        // In an existing root, a mailbox is built aside and renamed into place.
        let aside = if self.st.is_staging() {
            None
        } else {
            let n = self.next_seq();
            Some(format!(".maildump-restore-{}-{n}", std::process::id()).into_bytes())
        };
        let work = match &aside {
            Some(name) => {
                root.remove_tree(name)?;
                self.st.track(&root, name);
                root.mkdir(name, perms)?
            }
            None => root.mkdir_comps(&comps, perms)?,
        };
        let mails = work.mkdir(MAILS_DIR.as_bytes(), perms)?;
        let guid = guid_bytes(meta.guid.as_deref());
        let guid_hex = hex::encode(guid);
        let (stats, records, last_uid) =
            self.write_messages(meta, messages, (&mails, &guid_hex), bodies)?;
        if let Some(md) = self.mdbox.as_mut()
            && let Some((f, path, _)) = md.file.as_mut()
        {
            f.flush().at(&*path)?;
        }
        // Everything here is hidden from Dovecot (a new root built aside, or a mailbox built
        // aside): made durable by one `syncfs` before the rename that shows it
        // (`Stage::publish`, `Stage::commit`), not file by file.
        let when = Durable::Later;
        let uidvalidity = if meta.uidvalidity == 0 {
            self.st.next_uidvalidity()?
        } else {
            self.st.raise_uidvalidity(meta.uidvalidity)?;
            meta.uidvalidity
        };
        let next_uid = meta.uidnext.max(last_uid.saturating_add(1)).max(1);
        let mut new = self.mailbox_index(meta, records, (uidvalidity, next_uid), &guid);
        // sdbox keeps save dates only in Dovecot's index cache (mdbox: in its records).
        let cache = if self.kind == StoreFormat::Mdbox {
            None
        } else {
            crate::store::cache::attach(&mut new, &crate::store::cache::saved_of(messages))
        };
        self.st.write_index_files(
            &mails,
            "dovecot.index",
            &new,
            cache.as_deref(),
            (dir_owner, when),
        )?;
        if let Some(name) = &aside {
            self.st.publish((&root, name), &root, &comps, dir_owner)?;
            self.st.untrack(name);
        }
        Ok(stats)
    }

    fn add_subscriptions(&mut self, names: &[Name]) -> Result<()> {
        self.st.add_subscriptions(names)
    }

    fn add_attributes(&mut self, entries: &[(Name, Name)]) -> Result<Option<String>> {
        self.st.add_attributes(entries)
    }

    fn commit(&mut self) -> Result<()> {
        self.finish_writes()?;
        self.st.commit()
    }
}

impl DboxWriter {
    /// What a commit writes before the root is renamed into place: an mdbox's map index.
    ///
    /// # Errors
    /// I/O errors.
    pub(crate) fn finish_writes(&mut self) -> Result<()> {
        if let Some(mut md) = self.mdbox.take() {
            let when = self.st.durable();
            if let Some((f, path, _)) = md.file.take()
                && when == Durable::Now
            {
                f.sync_all().at(&path)?;
            }
            let mut hdr = md.file_id.to_le_bytes().to_vec();
            hdr.extend_from_slice(&0u32.to_le_bytes());
            let records = md
                .entries
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let mut m = r.file_id.to_le_bytes().to_vec();
                    m.extend_from_slice(&r.offset.to_le_bytes());
                    m.extend_from_slice(&r.size.to_le_bytes());
                    NewRecord {
                        uid: u32::try_from(i + 1).unwrap_or(u32::MAX),
                        flags: 0,
                        keywords: Vec::new(),
                        ext: vec![m, r.refs.to_le_bytes().to_vec()],
                        modseq: 0,
                    }
                })
                .collect();
            let new = NewIndex {
                uid_validity: md.map_uid_validity,
                next_uid: u32::try_from(md.entries.len() + 1).unwrap_or(u32::MAX),
                indexid: now(),
                exts: vec![
                    NewExt {
                        name: "map".into(),
                        hdr,
                        record_size: 12,
                        record_align: 4,
                        reset_id: 0,
                    },
                    NewExt {
                        name: "ref".into(),
                        hdr: Vec::new(),
                        record_size: 2,
                        record_align: 2,
                        reset_id: 0,
                    },
                ],
                keywords: Vec::new(),
                records,
                highest_modseq: None,
            };
            let owner = Some(md.storage.stat()?.owner());
            self.st.write_index_files(
                &md.storage,
                "dovecot.map.index",
                &new,
                None,
                (owner, when),
            )?;
            if when == Durable::Now {
                md.storage.sync()?;
            }
        }
        Ok(())
    }

    /// The user's mail root, being written.
    pub(crate) fn stage(&mut self) -> &mut Stage {
        &mut self.st
    }
}
