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
//! from `hashes/`. Without one they stay inside the message, which Dovecot reads the same.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::index::{NewExt, NewIndex, NewRecord};
use super::{MAILS_DIR, STORAGE_DIR, file, sis_part};
use crate::error::{Error, IoContext, Result};
use crate::model::{MailboxMeta, MessageMeta, Name, Owner};
use crate::store::location::{Location, StoreFormat};
use crate::store::stage::{Stage, sync_dir};
use crate::store::{StoreWriter, WriteStats, check_mailbox_name};

/// Largest mdbox storage file written (Dovecot's default `mdbox_rotate_size` is 10 MiB).
const MDBOX_ROTATE: u64 = 10 << 20;

/// Writes mailboxes into one user's sdbox or mdbox store.
pub struct DboxWriter {
    st: Stage,
    kind: StoreFormat,
    attachments: Option<PathBuf>,
    inline: bool,
    seq: u32,
    mdbox: Option<Mdbox>,
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
    file: Option<(File, PathBuf, u64)>,
    written: Vec<PathBuf>,
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
            attachments: loc.attachment_dir_of(user)?,
            inline,
            seq: 0,
            mdbox: None,
        })
    }

    /// Directory of a mailbox (`mailboxes/<name>`) under `root`.
    fn mailbox_dir(&self, root: &Path, name: &Name) -> PathBuf {
        let mut p = root.to_path_buf();
        for c in self.st.loc.mailbox_dir_components(name) {
            p.push(std::ffi::OsStr::from_bytes(&c));
        }
        p
    }

    /// See [`crate::store::Writer::live_state`]: from the mailbox's index.
    ///
    /// # Errors
    /// A damaged index.
    pub(crate) fn live_state(&self, name: &Name) -> Result<Option<crate::continuity::Known>> {
        let dir = self.mailbox_dir(&self.st.root, name).join(MAILS_DIR);
        let ix = super::index::MailIndex::read(&dir, "dovecot.index")
            .map_err(|e| Error::store(dir.join("dovecot.index"), e.to_string()))?;
        Ok(ix.map(|i| crate::continuity::Known {
            uidvalidity: i.uid_validity,
            uidnext: i.next_uid,
            highest_modseq: (i.highest_modseq > 0).then_some(i.highest_modseq),
        }))
    }

    /// Whether a mailbox exists (has its `dbox-Mails` directory).
    pub fn mailbox_exists(&self, name: &Name) -> bool {
        self.mailbox_dir(&self.st.root, name)
            .join(MAILS_DIR)
            .is_dir()
    }

    fn start_mdbox(&mut self, owner: Option<Owner>) -> Result<()> {
        if self.mdbox.is_some() {
            return Ok(());
        }
        let storage = self.st.root.join(STORAGE_DIR);
        let taken = ["dovecot.map.index", "dovecot.map.index.log"]
            .iter()
            .any(|f| storage.join(f).exists());
        if taken {
            return Err(Error::Conflict(format!(
                "user {}: the mdbox store at {} already has storage; restoring into an existing mdbox store is not supported yet: restore into a new location (or use --mode side-folder on a Maildir or sdbox store)",
                self.st.user,
                self.st.root.display()
            )));
        }
        let root = self.st.work_root(owner)?;
        self.st.mkdir(&root.join(STORAGE_DIR), owner)?;
        // Any non-zero value will do for the map (Dovecot takes the clock); the root's
        // counter gives one that is not.
        let map_uid_validity = self.st.next_uidvalidity()?;
        self.mdbox = Some(Mdbox {
            map_uid_validity,
            entries: Vec::new(),
            by_sha: HashMap::new(),
            file_id: 0,
            file: None,
            written: Vec::new(),
        });
        Ok(())
    }

    /// Write a new file (not synced; the caller syncs a batch).
    fn create_file(&self, path: &Path, data: &[u8], owner: Option<Owner>) -> Result<()> {
        let mode = owner
            .map(|o| o.mode & 0o7777)
            .filter(|m| *m != 0)
            .unwrap_or(0o600);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .at(path)?;
        f.write_all(data).at(path)?;
        drop(f);
        self.st.chown(path, owner)
    }

    /// Take a message's attachments out into the attachment directory (written once per
    /// content, linked from `hashes/`). Returns the dbox body, or `None` to keep the
    /// message whole.
    fn externalise(
        &self,
        full: &[u8],
        msg: &MessageMeta,
        mailbox_guid: &str,
        uid: u32,
        owner: Option<Owner>,
    ) -> Result<Option<Vec<u8>>> {
        let Some(dir) = self.attachments.as_ref().filter(|_| !self.inline) else {
            return Ok(None);
        };
        let refs = msg.dbox_attachments();
        let parts: Option<Vec<file::SisPart>> = refs.iter().map(sis_part).collect();
        let Some(parts) = parts.filter(|p| !p.is_empty()) else {
            return Ok(None);
        };
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
        for (p, data) in parts.iter().zip(&stored) {
            let name = if self.kind == StoreFormat::Sdbox {
                file::sdbox_attachment_name(&p.path, mailbox_guid, uid)
            } else {
                p.path.clone()
            };
            let dest = dir.join(&name);
            // Directories as Dovecot makes them: the mail owner's, 0700, every level.
            let dir_owner = owner.map(|o| Owner { mode: 0o700, ..o });
            if let Some(parent) = dest.parent() {
                self.st.mkdir_all(parent, dir_owner)?;
            }
            let link = file::hash_link_path(&p.path).map(|l| dir.join(l));
            // Already there with the same bytes (an earlier message or restore): keep it.
            if let Ok(existing) = fs::read(&dest) {
                if &existing == data {
                    continue;
                }
                return Err(Error::Conflict(format!(
                    "attachment {} exists with other content; not overwritten",
                    dest.display()
                )));
            }
            let same = link
                .as_ref()
                .filter(|l| fs::read(l).is_ok_and(|d| &d == data));
            match same {
                Some(l) => fs::hard_link(l, &dest).at(&dest)?,
                None => {
                    self.create_file(&dest, data, owner.map(|o| Owner { mode: 0o600, ..o }))?;
                    File::open(&dest).and_then(|f| f.sync_all()).at(&dest)?;
                    if let Some(l) = &link {
                        if let Some(parent) = l.parent() {
                            self.st.mkdir_all(parent, dir_owner)?;
                        }
                        if !l.exists() {
                            fs::hard_link(&dest, l).at(l)?;
                        }
                    }
                }
            }
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
        let root = self.st.work_root(owner)?;
        let mode_owner = owner.map(|o| Owner { mode: 0o600, ..o });
        let can_chown = self.st.can_chown;
        let ids = self.st.owner_override.or(owner.map(|o| (o.uid, o.gid)));
        let md = self
            .mdbox
            .as_mut()
            .ok_or_else(|| Error::Usage("mdbox not started".into()))?;
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
            md.file_id += 1;
            let path = root.join(STORAGE_DIR).join(format!("m.{}", md.file_id));
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode_owner.map(|o| o.mode).unwrap_or(0o600))
                .open(&path)
                .at(&path)?;
            let hdr = file::file_header(u64::from(now()));
            f.write_all(&hdr).at(&path)?;
            if can_chown && let Some((u, g)) = ids {
                std::os::unix::fs::lchown(&path, Some(u), Some(g)).at(&path)?;
            }
            md.written.push(path.clone());
            md.file = Some((f, path, hdr.len() as u64));
        }
        let Some((f, path, len)) = md.file.as_mut() else {
            return Err(Error::Usage("mdbox storage file not open".into()));
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

impl StoreWriter for DboxWriter {
    fn check_free(&self, name: &Name) -> Result<()> {
        check_mailbox_name(name, &format!("mailbox {name}"))?;
        let dir = self.mailbox_dir(&self.st.root, name).join(MAILS_DIR);
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(dir, e)),
        };
        for e in rd {
            let n = e.at(&dir)?.file_name();
            let n = n.as_bytes();
            if n.starts_with(b"u.") || n.starts_with(b"dovecot.index") {
                return Err(Error::Conflict(format!(
                    "user {} mailbox {name} already exists ({}); restore into another location or user, or remove it first",
                    self.st.user,
                    dir.display()
                )));
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
        let final_dir = self.mailbox_dir(&root, &meta.name);
        let staged = self.st.staging_root.is_none();
        let work = if staged {
            let n = self.next_seq();
            let w = root.join(format!(".maildump-restore-{}-{n}", std::process::id()));
            if w.exists() {
                fs::remove_dir_all(&w).at(&w)?;
            }
            self.st.track(&w);
            self.st.mkdir(&w, dir_owner)?;
            w
        } else {
            self.st.mkdir_all(&final_dir, dir_owner)?;
            final_dir.clone()
        };
        let mails = work.join(MAILS_DIR);
        self.st.mkdir(&mails, dir_owner)?;
        let guid = guid_bytes(meta.guid.as_deref());
        let guid_hex = hex::encode(guid);
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
            let owner = msg.owner.or(dir_owner);
            let stub = self.externalise(&full, msg, &guid_hex, msg.uid.0, owner)?;
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
                let path = mails.join(format!("u.{}", msg.uid.0));
                self.create_file(&path, &data, owner)?;
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
        if let Some(md) = self.mdbox.as_mut()
            && let Some((f, path, _)) = md.file.as_mut()
        {
            f.flush().at(&*path)?;
        }
        // Message files durable before the index that makes them visible.
        let d = File::open(&work).at(&work)?;
        rustix::fs::syncfs(&d).map_err(|e| Error::io(&work, io::Error::from(e)))?;
        let uidvalidity = if meta.uidvalidity == 0 {
            self.st.next_uidvalidity()?
        } else {
            self.st.raise_uidvalidity(meta.uidvalidity)?;
            meta.uidvalidity
        };
        let next_uid = meta.uidnext.max(last_uid.saturating_add(1)).max(1);
        let mut hdr = Vec::with_capacity(24);
        if self.kind == StoreFormat::Mdbox {
            let uv = self.mdbox.as_ref().map(|m| m.map_uid_validity).unwrap_or(0);
            hdr.extend_from_slice(&uv.to_le_bytes());
        } else {
            hdr.extend_from_slice(&0u32.to_le_bytes());
        }
        hdr.extend_from_slice(&guid);
        hdr.extend_from_slice(&[0u8; 4]);
        let mut exts = vec![NewExt {
            name: if self.kind == StoreFormat::Mdbox {
                "mdbox-hdr".into()
            } else {
                "dbox-hdr".into()
            },
            hdr,
            record_size: 0,
            record_align: 0,
            reset_id: 0,
        }];
        if self.kind == StoreFormat::Mdbox {
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
        let mut new = NewIndex {
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
        };
        // sdbox keeps save dates only in Dovecot's index cache (mdbox: in its records).
        let cache = if self.kind == StoreFormat::Mdbox {
            None
        } else {
            crate::store::cache::attach(&mut new, &crate::store::cache::saved_of(messages))
        };
        self.st
            .write_index_files(&mails, "dovecot.index", &new, cache.as_deref(), dir_owner)?;
        sync_dir(&mails)?;
        if staged {
            self.st.publish(&work, &final_dir, dir_owner)?;
            self.st.untrack(&work);
        }
        Ok(stats)
    }

    fn add_subscriptions(&mut self, names: &[Name]) -> Result<()> {
        self.st.add_subscriptions(names)
    }

    fn add_attributes(&mut self, entries: &[(Name, Name)]) -> Result<()> {
        self.st.add_attributes(entries)
    }

    fn commit(&mut self) -> Result<()> {
        if let Some(mut md) = self.mdbox.take() {
            if let Some((f, path, _)) = md.file.take() {
                f.sync_all().at(&path)?;
            }
            let root = self.st.work_root(None)?;
            let storage = root.join(STORAGE_DIR);
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
            let owner = fs::metadata(&storage).ok().map(|m| {
                use std::os::unix::fs::MetadataExt;
                Owner {
                    uid: m.uid(),
                    gid: m.gid(),
                    mode: 0o600,
                }
            });
            self.st
                .write_index_files(&storage, "dovecot.map.index", &new, None, owner)?;
            sync_dir(&storage)?;
        }
        self.st.commit()
    }
}
