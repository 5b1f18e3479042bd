//! Backup: read users' mail stores and write one archive.
//!
//! Per user: list mailboxes, scan each (metadata only), then stream every message body
//! into the [`ArchiveWriter`] (one read per distinct body: hashing, header sniffing and
//! compression happen on that single pass). A message file renamed since the scan (its
//! flags changed) is found under its new name and recorded with its new flags; one expunged
//! before its bytes were read is named in [`BackupStats::expunged`] and an
//! [`Event::Expunged`]: the store is live, that is normal, not damage. Every message left
//! out for another reason (a symlink, a duplicate, an unreadable or damaged file) is named
//! in [`BackupStats::warnings`].

pub(crate) mod incremental;

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, Read, Write};
use std::path::PathBuf;

use crate::chain::deleted_since;
use crate::error::{Context, Error, Result, Within};
use crate::format::index::{ContentRef, MailboxRecord, Manifest, MessageRecord, ParentRef, Source};
use crate::format::prepare::Preparer;
use crate::format::reader::Archive;
use crate::format::spec::{
    FORMAT_MAJOR, FORMAT_MINOR, FORMAT_MINOR_ATTACHMENTS, FORMAT_MINOR_MODSEQ, FORMAT_MINOR_POINT,
};
use crate::format::writer::{ArchiveWriter, WriterOptions};
use crate::model::{MailboxMeta, MessageMeta, Name, Timestamp, UserMeta};
use crate::progress::{Event, Progress};
use crate::store::location::Location;
use crate::store::location::check_user_name;
use crate::store::{MailboxHandle, StoreReader, open_reader, split_attributes};
use incremental::{UserBase, Verdict};

/// What to back up and how to write it.
#[derive(Clone, Debug)]
pub struct BackupOptions {
    /// Where the mail is.
    pub location: Location,
    /// Compression settings.
    pub writer: WriterOptions,
    /// Creation time to record (RFC 3339); `None` = now. Set for reproducible archives.
    pub created: Option<String>,
    /// Archive id to record; `None` = a random UUID. Set for reproducible archives.
    pub archive_id: Option<String>,
    /// Host name to record.
    pub host: Option<String>,
    /// Incremental against these archives, newest first (the first is the parent).
    pub bases: Vec<PathBuf>,
    /// Since-archive: store only bodies of message files changed after this time.
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// The users given are every user of the store (`--all-users`): in an incremental, a
    /// user of the parent's state who is no longer there is recorded as gone (each of their
    /// mailboxes gone, their mail deleted), not merely absent from the new state.
    pub all_users: bool,
    /// Write this format minor version instead of the newest, leaving out what it does not
    /// define (1 and 2: no modseqs); refused when the archive needs more (messages in
    /// parts need 2). For reproducing older test vectors.
    pub format_minor: Option<u16>,
}

impl BackupOptions {
    /// Defaults for `location`: level 2 ([`crate::format::writer::DEFAULT_LEVEL`]), all
    /// cores, current time, random id.
    pub fn new(location: Location) -> Self {
        BackupOptions {
            location,
            writer: WriterOptions::default(),
            created: None,
            archive_id: None,
            host: None,
            bases: Vec::new(),
            since: None,
            all_users: false,
            format_minor: None,
        }
    }
}

/// Counts and warnings of a finished backup.
#[derive(Clone, Debug, Default)]
pub struct BackupStats {
    /// Users backed up.
    pub users: u64,
    /// Mailboxes backed up.
    pub mailboxes: u64,
    /// Messages backed up.
    pub messages: u64,
    /// Bytes of all messages.
    pub bytes: u64,
    /// Distinct bodies stored.
    pub bodies: u64,
    /// Messages read whole and stored in parts, their base64 attachments taken out
    /// (spec 7.5 "When"); the others with attachments did not re-encode exactly or were
    /// too small, and are stored whole.
    pub split: u64,
    /// Attachments (blobs) stored in this archive, each once.
    pub blobs: u64,
    /// Messages recorded without reading their file (known from a base archive, or unchanged
    /// since `--since`).
    pub unread: u64,
    /// Messages whose bytes an earlier archive of the chain holds.
    pub referenced: u64,
    /// Records of deleted mail written.
    pub deleted: u64,
    /// Bytes of the message files read (what `maildump estimate` predicts): the messages
    /// neither known from a base nor shared with a message read before.
    pub read_bytes: u64,
    /// Items left out, each named (symlinks, duplicates, unreadable or damaged files and
    /// mailboxes): the run is partial (exit 1).
    pub warnings: Vec<String>,
    /// Messages expunged during the run (found by a scan, gone before their bytes were
    /// read), each named. Not in the archive; not damage.
    pub expunged: Vec<String>,
    /// Users of the parent's state no longer in the store, recorded as gone
    /// ([`BackupOptions::all_users`]).
    pub gone_users: Vec<String>,
}

impl BackupStats {
    /// The writer's counts of what this archive stores.
    fn take_counts<W: Write>(&mut self, w: &ArchiveWriter<W>) {
        let ws = w.stats();
        self.bodies = ws.bodies;
        self.split = w.split_messages();
        self.blobs = ws.blobs;
        self.referenced = ws.referenced;
        self.deleted = ws.deleted;
    }
}

/// Keeps a copy of the header block (up to the first empty line, at most [`SNIFF`] bytes) of
/// the bytes read through it, for `From`/`Subject`/`Message-ID`; the body is not copied.
struct Sniffer<'a> {
    inner: &'a mut dyn crate::store::Body,
    head: Vec<u8>,
    done: bool,
}

const SNIFF: usize = 64 << 10;

impl std::io::Seek for Sniffer<'_> {
    fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
        // Only the first pass is sniffed (`done` is set by then).
        self.done = true;
        self.inner.seek(pos)
    }
}

impl Read for Sniffer<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if !self.done {
            let chunk = &buf[..n.min(SNIFF - self.head.len())];
            // The header ends at the first empty line (LF LF or CRLF CRLF).
            let from = self.head.len().saturating_sub(3);
            self.head.extend_from_slice(chunk);
            let end = self.head[from..]
                .windows(2)
                .position(|w| w == b"\n\n")
                .or_else(|| self.head[from..].windows(4).position(|w| w == b"\r\n\r\n"));
            if let Some(p) = end {
                self.head.truncate(from + p + 2);
                self.done = true;
            } else if self.head.len() >= SNIFF || n == 0 {
                self.done = true;
            }
        }
        Ok(n)
    }
}

/// What the bases hold: bytes by SHA-256 and where, and the SHA-256 of their blobs.
type ChainContent = (
    HashMap<[u8; 32], ContentRef>,
    std::collections::HashSet<[u8; 32]>,
);

/// The base archives of an incremental, opened.
pub(crate) struct Bases {
    archives: Vec<Archive>,
    /// Whether [`Bases::content`] was handed to the writer (done before the first file
    /// is read: a run that reads no file never parses the bases' catalogs for it).
    content_given: std::cell::Cell<bool>,
}

impl Bases {
    pub(crate) fn open(paths: &[PathBuf], progress: &mut dyn Progress) -> Result<Bases> {
        let mut archives = Vec::new();
        for p in paths {
            let a = Archive::open_or_recover(p)?;
            for d in &a.damage {
                progress.event(&Event::Warning {
                    message: format!("base {}: {d}", p.display()),
                });
            }
            archives.push(a);
        }
        Ok(Bases {
            archives,
            content_given: std::cell::Cell::new(false),
        })
    }

    /// Bytes any base holds, by SHA-256, and the blobs (1.2) the bases' current messages
    /// use that a base holds.
    fn content(&self) -> Result<ChainContent> {
        let archives = &self.archives;
        let mut content = HashMap::new();
        let mut used = std::collections::HashSet::new();
        // Only bytes of the bases' current messages (not of their deleted-mail records):
        // a merge of the chain up to a base holds exactly those, so a later incremental
        // never refers to bytes a synthetic full dropped. Oldest first, so that the newest
        // holder of equal bytes wins. The same goes for blobs.
        for a in archives.iter().rev() {
            for i in 0..a.dir.mailboxes.len() {
                let cat = a.catalog(i)?;
                for r in &cat.messages {
                    if let (Some(at), Ok(sha)) = (content_ref(a, r), sha_bytes(r)) {
                        content.insert(sha, at);
                    }
                    for p in &r.message.content.parts {
                        if let Some(b) = &p.blob {
                            used.insert(b.clone());
                        }
                    }
                }
            }
        }
        let mut blobs = std::collections::HashSet::new();
        for a in archives {
            for b in &a.dir.blobs {
                let mut sha = [0u8; 32];
                if used.contains(&b.sha256) && hex::decode_to_slice(&b.sha256, &mut sha).is_ok() {
                    blobs.insert(sha);
                }
            }
        }
        Ok((content, blobs))
    }

    pub(crate) fn parent(&self) -> &Archive {
        &self.archives[0]
    }

    /// The parent's catalogs of `user`'s mailboxes (its state, not its deleted mailboxes).
    pub(crate) fn parent_catalogs(&self, user: &Name) -> Result<Vec<MailboxRecord>> {
        let a = self.parent();
        let mut out = Vec::new();
        for (i, e) in a.dir.mailboxes.iter().enumerate() {
            if &e.user == user {
                out.push(a.catalog(i)?);
            }
        }
        Ok(out)
    }
}

/// Where the bytes of record `r` of archive `a` are, as a reference a child can record.
fn content_ref(a: &Archive, r: &MessageRecord) -> Option<ContentRef> {
    r.content_ref(&a.manifest().archive_id)
}

fn sha_bytes(r: &MessageRecord) -> std::result::Result<[u8; 32], ()> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(r.stored_content().0, &mut out).map_err(|_| ())?;
    Ok(out)
}

/// Back up `users` into an archive written to `out`.
///
/// With [`BackupOptions::bases`] the archive is an incremental: it records the complete
/// state but stores only bytes no base holds, reads no file of a message the parent already
/// knew (same mailbox GUID, UIDVALIDITY, UID and file base), and records mail deleted since
/// the parent. With [`BackupOptions::since`] it is a since-archive: bytes only of message
/// files changed after that time.
///
/// # Errors
/// Unreadable stores or base archives, or a failing output. Per-message problems (a
/// vanished file) do not fail the backup; they are listed in [`BackupStats::warnings`].
pub fn backup<W: Write>(
    opts: &BackupOptions,
    users: &[String],
    out: W,
    progress: &mut dyn Progress,
) -> Result<BackupStats> {
    let created = opts
        .created
        .clone()
        .unwrap_or_else(|| chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    let bases = if opts.bases.is_empty() {
        None
    } else {
        Some(Bases::open(&opts.bases, progress)?)
    };
    if let Some(b) = &bases {
        for a in &b.archives {
            let src = &a.manifest().source;
            if src.location != opts.location.spec || src.home != opts.location.home {
                progress.event(&Event::Warning {
                    message: format!(
                        "base {} was made from location {} (home {}), this backup reads {} (home {}); messages are matched by mailbox GUID, so nothing wrong is recorded, but fewer may be reused",
                        a.path().display(),
                        src.location,
                        src.home.as_deref().unwrap_or("-"),
                        opts.location.spec,
                        opts.location.home.as_deref().unwrap_or("-")
                    ),
                });
            }
        }
    }
    let refs: Vec<ParentRef> = bases
        .iter()
        .flat_map(|b| b.archives.iter())
        .map(|a| ParentRef {
            archive_id: a.manifest().archive_id.clone(),
            created: a.manifest().created.clone(),
        })
        .collect();
    let minor = format_minor(opts, bases.as_ref())?;
    let manifest = Manifest {
        format: "maildump".into(),
        format_major: FORMAT_MAJOR,
        format_minor: minor,
        writer: format!("maildump {}", env!("CARGO_PKG_VERSION")),
        created: created.clone(),
        archive_id: opts
            .archive_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        parent: refs.first().cloned(),
        bases: refs,
        since: opts
            .since
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        replaces: Vec::new(),
        source: Source {
            store: opts.location.format.clone(),
            location: opts.location.spec.clone(),
            home: opts.location.home.clone(),
            host: opts.host.clone(),
        },
    };
    let archive_id = manifest.archive_id.clone();
    // An incremental's parent state is the best estimate of what this run will hold.
    let parent_stats = bases.as_ref().map(|b| &b.parent().dir.stats);
    progress.event(&Event::Start {
        operation: "backup".into(),
        archive_id: Some(archive_id.clone()),
        messages: parent_stats.map(|s| s.messages),
        bytes: parent_stats.map(|s| s.message_bytes),
    });
    let mut w = ArchiveWriter::new(out, manifest, &opts.writer)?;
    let mut stats = BackupStats::default();
    let ctx = Ctx {
        opts,
        bases: bases.as_ref(),
        created: &created,
        minor,
        ahead: std::cell::RefCell::new(Preparer::new(w.prepare_params(), opts.writer.threads)),
    };
    backup_users(&ctx, users, &mut w, &mut stats, progress)?;
    // Users of the parent's state that the store no longer has: each of their mailboxes is
    // recorded gone, with its mail as deleted (spec 6.7.5), so that `list --deleted` and
    // `restore --deleted` find it. Only a list of every user tells who is gone.
    if let (true, None, Some(b)) = (opts.all_users, opts.since, &bases) {
        let parent = b.parent();
        let now: std::collections::HashSet<&str> = users.iter().map(String::as_str).collect();
        let gone_users: Vec<Name> = parent
            .dir
            .users
            .iter()
            .map(|u| u.name.clone())
            .filter(|n| !now.contains(n.to_string().as_str()))
            .collect();
        for name in gone_users {
            let prev = b.parent_catalogs(&name)?;
            let (_, gone) = deleted_since(
                &prev,
                &parent.manifest().archive_id,
                &[],
                &parent.manifest().created,
                &created,
            );
            for (meta, deleted) in gone {
                w.add_gone(&name, meta, deleted)?;
            }
            stats.gone_users.push(name.to_string());
        }
    }
    stats.take_counts(&w);
    w.finish()?;
    progress.event(&Event::Done {
        archive_id: Some(archive_id),
        read_bytes: Some(stats.read_bytes),
        messages: stats.messages,
        bytes: stats.bytes,
        warnings: stats.warnings.len() as u64,
        expunged: stats.expunged.len() as u64,
    });
    Ok(stats)
}

/// The format minor version to write: the newest, or the one asked for when the archive
/// needs no more (attachments stored apart, also in a base, need 1.2).
///
/// # Errors
/// [`Error::Usage`] for a minor this build does not write or one too low for the store.
fn format_minor(opts: &BackupOptions, bases: Option<&Bases>) -> Result<u16> {
    let Some(want) = opts.format_minor else {
        return Ok(FORMAT_MINOR_POINT);
    };
    if !(FORMAT_MINOR..=FORMAT_MINOR_POINT).contains(&want) {
        return Err(Error::Usage(format!(
            "--format-minor {want}: this version writes format 1.{FORMAT_MINOR} to 1.{FORMAT_MINOR_POINT}"
        )));
    }
    let split = opts.location.attachment_dir.is_some()
        && opts.location.kind != crate::store::location::StoreFormat::Maildir;
    let parts_in_base = bases.is_some_and(|b| {
        b.archives
            .iter()
            .any(|a| a.manifest().format_minor >= FORMAT_MINOR_ATTACHMENTS)
    });
    if want < FORMAT_MINOR_ATTACHMENTS && (split || parts_in_base) {
        return Err(Error::Usage(format!(
            "--format-minor {want}: attachments stored apart (dbox with an attachment directory, or a base archive of format 1.2 or later) need format 1.2"
        )));
    }
    Ok(want)
}

/// A parent mailbox to copy: its index in the parent's directory and its catalog bytes.
type Unchanged = (usize, Vec<u8>);

/// For each mailbox of `user` (in `handles` order), the parent's mailbox of the same name
/// whose recorded signature equals `sigs`, with its catalog as stored: the mailbox did not
/// change, so its catalog can be copied and none of its files need reading.
fn unchanged_mailboxes(
    parent: &Archive,
    user: &Name,
    handles: &[crate::store::MailboxHandle],
    sigs: &[String],
) -> Result<Vec<Option<Unchanged>>> {
    let mut out = Vec::with_capacity(handles.len());
    for (h, sig) in handles.iter().zip(sigs) {
        out.push(match unchanged_in(parent, user, &h.name, sig) {
            Some(i) => parent.raw_catalog(i)?.map(|raw| (i, raw)),
            None => None,
        });
    }
    Ok(out)
}

/// The parent's mailbox `name` of `user` whose recorded signature is `sig` (not empty):
/// the mailbox did not change since the parent.
pub(crate) fn unchanged_in(parent: &Archive, user: &Name, name: &Name, sig: &str) -> Option<usize> {
    parent.dir.mailboxes.iter().position(|e| {
        &e.user == user && &e.name == name && !sig.is_empty() && e.signature.as_deref() == Some(sig)
    })
}

/// The user's parent state ([`UserBase`]) from the bases.
///
/// # Errors
/// A damaged catalog of the parent.
pub(crate) fn user_base(b: &Bases, user: &Name) -> Result<UserBase> {
    Ok(UserBase::from_parent(
        b.parent_catalogs(user)?,
        &b.parent().manifest().archive_id,
        &b.parent().manifest().created,
    ))
}

/// [`signatures`] for `location`'s store, as `maildump estimate` takes them.
///
/// # Errors
/// As [`signatures`].
pub(crate) fn mailbox_signatures(
    location: &Location,
    reader: &dyn StoreReader,
    user: &str,
    handles: &[MailboxHandle],
) -> Result<(Option<Vec<u8>>, Vec<String>)> {
    signatures(reader, handles, location, user)
}

/// Record mailbox `i` of the parent by copying its catalog (see
/// [`ArchiveWriter::copy_mailbox`]); returns its name and message count.
fn copy_from_parent<W: Write>(
    w: &mut ArchiveWriter<W>,
    parent: &Archive,
    i: usize,
    raw: &[u8],
) -> Result<(Name, u64)> {
    let e = &parent.dir.mailboxes[i];
    let of = e
        .catalog_of
        .clone()
        .unwrap_or_else(|| parent.manifest().archive_id.clone());
    w.copy_mailbox(e, raw, of)?;
    Ok((e.name.clone(), e.messages))
}

/// Record a warning and tell the progress sink.
fn warn(stats: &mut BackupStats, progress: &mut dyn Progress, text: String) {
    progress.event(&Event::Warning {
        message: text.clone(),
    });
    stats.warnings.push(text);
}

/// Record a message expunged during the run and tell the progress sink.
fn expunged(
    stats: &mut BackupStats,
    progress: &mut dyn Progress,
    user: &str,
    mailbox: &Name,
    text: String,
) {
    progress.event(&Event::Expunged {
        user: user.to_string(),
        mailbox: mailbox.to_string(),
        message: text.clone(),
    });
    stats.expunged.push(text);
}

/// Metadata of a mailbox left out (its index could not be read).
fn empty_mailbox(name: &Name) -> MailboxMeta {
    MailboxMeta::named(name.clone())
}

struct Ctx<'a> {
    opts: &'a BackupOptions,
    bases: Option<&'a Bases>,
    created: &'a str,
    /// The archive's format minor version (fields of newer ones are left out).
    minor: u16,
    /// Prepares the messages read ahead (hash, split) on other threads.
    ahead: std::cell::RefCell<Preparer>,
}

/// Back up one user: signatures, the wholly unchanged user, the scan, deleted mail,
/// METADATA, then each mailbox ([`write_mailbox`]) and the user record.
fn backup_user<W: Write>(
    ctx: &Ctx<'_>,
    user: &str,
    pre: Option<Result<Signed>>,
    w: &mut ArchiveWriter<W>,
    stats: &mut BackupStats,
    progress: &mut dyn Progress,
) -> Result<()> {
    let opts = ctx.opts;
    let reader = open_reader(&opts.location, user)?;
    let reader = reader.as_ref();
    let handles = reader.mailboxes()?;
    let user_name = Name::from(user);
    let (dict, sigs) = match pre {
        Some(Ok(p)) if p.handles == handles => (p.dict, p.sigs),
        _ => signatures(reader, &handles, &opts.location, user)?,
    };
    let mut copies = match (ctx.bases, opts.since) {
        (Some(b), None) => unchanged_mailboxes(b.parent(), &user_name, &handles, &sigs)?,
        _ => vec![None; handles.len()],
    };
    if let Some(b) = ctx.bases
        && copy_unchanged_user(b, reader, &user_name, handles.len(), &copies, w, stats)?
    {
        return Ok(());
    }
    let ub = match ctx.bases {
        Some(b) => user_base(b, &user_name)?,
        None => UserBase::default(),
    };
    let mut scan = scan_mailboxes(ctx, reader, &handles, &copies, &ub, user, stats, progress)?;
    // Damaged mailboxes whose parent state is kept: their mail is neither read nor deleted.
    let kept_names: HashSet<Name> = scan
        .kept
        .iter()
        .map(|(mi, _)| handles[*mi].name.clone())
        .collect();
    for (mi, raw) in std::mem::take(&mut scan.kept) {
        copies[mi] = Some(raw);
    }
    let (mut deleted_live, gone) = match ctx.bases {
        Some(_) => ub.deletions(&scan.scanned, &kept_names, ctx.created),
        None => (HashMap::new(), Vec::new()),
    };
    let (server_attributes, raw_attributes) = attach_metadata(dict.as_deref(), &mut scan.scanned);
    if ctx.minor < FORMAT_MINOR_MODSEQ {
        for (meta, msgs) in &mut scan.scanned {
            meta.highest_modseq = None;
            msgs.iter_mut().for_each(|m| m.modseq = None);
        }
    }
    let mut names = Vec::new();
    let mut shared: HashMap<u64, MessageRecord> = HashMap::new();
    for (mi, (h, mailbox)) in handles.iter().zip(scan.scanned).enumerate() {
        if let (Some((i, raw)), Some(b)) = (&copies[mi], ctx.bases) {
            let (name, n) = copy_from_parent(w, b.parent(), *i, raw)?;
            names.push(name);
            stats.mailboxes += 1;
            stats.messages += n;
            stats.unread += n;
            continue;
        }
        if scan.skipped.contains(&mi) {
            continue;
        }
        let mb = MailboxJob {
            ctx,
            reader,
            handle: h,
            user,
            ub: &ub,
        };
        let (meta, records) = write_messages(&mb, mailbox, w, &mut shared, stats, progress)
            .within(Context::mailbox(user, &h.name))?;
        names.push(meta.name.clone());
        let deleted = deleted_live.remove(&mi).unwrap_or_default();
        let sig = sigs.get(mi).filter(|s| !s.is_empty()).cloned();
        w.add_mailbox(&user_name, meta, records, deleted, sig)?;
        stats.mailboxes += 1;
    }
    for (meta, deleted) in gone {
        w.add_gone(&user_name, meta, deleted)?;
    }
    let subscriptions = match reader.subscriptions() {
        Ok(s) => s,
        Err(e @ Error::StoreDamaged { .. }) => {
            let text = format!("user {user}: subscriptions left out: {e}");
            warn(stats, progress, text);
            Vec::new()
        }
        Err(e) => return Err(e),
    };
    let owner = Some(reader.root_owner()?);
    let meta = UserMeta {
        name: user_name,
        subscriptions,
        server_attributes,
        raw_attributes,
        owner,
    };
    w.add_user(meta, names)
}

/// Back up each user in turn, their signatures taken ahead ([`signatures_ahead`]).
fn backup_users<W: Write>(
    ctx: &Ctx<'_>,
    users: &[String],
    w: &mut ArchiveWriter<W>,
    stats: &mut BackupStats,
    progress: &mut dyn Progress,
) -> Result<()> {
    std::thread::scope(|s| {
        let ahead = signatures_ahead(s, &ctx.opts.location, users);
        for user in users {
            check_user_name(user.as_bytes()).map_err(|e| Error::Usage(e.to_string()))?;
            progress.event(&Event::User { user: user.clone() });
            let pre = ahead.recv().ok();
            backup_user(ctx, user, pre, w, stats, progress).within(Context::user(user.as_str()))?;
            stats.users += 1;
        }
        Ok(())
    })
}

/// A user's mailboxes as listed, with their signatures and METADATA dictionary
/// ([`signatures`]), taken ahead on another thread.
struct Signed {
    handles: Vec<MailboxHandle>,
    dict: Option<Vec<u8>>,
    sigs: Vec<String>,
}

/// Take each user's signatures on a thread of `scope`, in order, at most two users ahead
/// of the receiver: listing a store's directories is most of an unchanged incremental's
/// work, and it goes on while the previous user is written. The receiver lists the user's
/// mailboxes again and takes the signatures itself when the lists differ (or this failed).
/// Signatures are still taken before the user's scan.
fn signatures_ahead<'s>(
    scope: &'s std::thread::Scope<'s, '_>,
    location: &'s Location,
    users: &'s [String],
) -> std::sync::mpsc::Receiver<Result<Signed>> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    scope.spawn(move || {
        for user in users {
            let signed = (|| {
                check_user_name(user.as_bytes()).map_err(|e| Error::Usage(e.to_string()))?;
                let reader = open_reader(location, user)?;
                let handles = reader.mailboxes()?;
                let (dict, sigs) = signatures(reader.as_ref(), &handles, location, user)?;
                Ok(Signed {
                    handles,
                    dict,
                    sigs,
                })
            })();
            if tx.send(signed).is_err() {
                return; // the backup stopped
            }
        }
    });
    rx
}

/// The user's METADATA dictionary (if any) and each mailbox's signature (empty when it
/// cannot be taken: the scan then names what is wrong with the mailbox).
///
/// The dictionary names mailboxes by GUID; its bytes are part of every mailbox's
/// signature. Signatures are taken before the scan, so that a change during the backup
/// makes the next incremental read the mailbox again.
fn signatures(
    reader: &dyn StoreReader,
    handles: &[MailboxHandle],
    location: &Location,
    user: &str,
) -> Result<(Option<Vec<u8>>, Vec<String>)> {
    let dict_path = location.attribute_file_of(user)?;
    let dict = match &dict_path {
        Some(p) => match std::fs::read(p) {
            Ok(d) => Some(d),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io(p, e)),
        },
        None => None,
    };
    let dict_hash = {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(dict.as_deref().unwrap_or_default());
        hex::encode(h.finalize())
    };
    let mut sigs = Vec::with_capacity(handles.len());
    for h in handles {
        // A mailbox whose signature cannot be taken (a symlink, a damaged uidlist, deleted
        // meanwhile) is read by the scan, which names what is wrong with it.
        sigs.push(match reader.signature(h) {
            Ok(sig) => format!("{sig}.{dict_hash}"),
            Err(Error::StoreDamaged { .. }) => String::new(),
            // Deleted since it was listed: the scan says so.
            Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                String::new()
            }
            Err(e) => return Err(e),
        });
    }
    Ok((dict, sigs))
}

/// A wholly unchanged user (every mailbox unchanged, none added or removed): no catalog of
/// the parent is even parsed, and the user record is the parent's with the subscriptions
/// and root owner read again. Returns whether the user was written this way.
fn copy_unchanged_user<W: Write>(
    b: &Bases,
    reader: &dyn StoreReader,
    user: &Name,
    mailboxes: usize,
    copies: &[Option<Unchanged>],
    w: &mut ArchiveWriter<W>,
    stats: &mut BackupStats,
) -> Result<bool> {
    let parent = b.parent();
    let theirs = parent
        .dir
        .mailboxes
        .iter()
        .filter(|e| &e.user == user)
        .count();
    let meta = parent.dir.users.iter().find(|u| &u.name == user);
    let Some(meta) = meta else { return Ok(false) };
    if theirs != mailboxes || !copies.iter().all(Option::is_some) {
        return Ok(false);
    }
    let mut meta = meta.clone();
    let mut names = Vec::with_capacity(copies.len());
    for (i, raw) in copies.iter().flatten() {
        let (name, n) = copy_from_parent(w, parent, *i, raw)?;
        names.push(name);
        stats.mailboxes += 1;
        stats.messages += n;
        stats.unread += n;
    }
    meta.subscriptions = reader.subscriptions()?;
    meta.owner = Some(reader.root_owner()?);
    w.add_user(meta, names)?;
    Ok(true)
}

/// What the scan of a user's mailboxes found, in `handles` order.
struct Scan {
    /// Each mailbox's metadata and messages (an empty mailbox for one left out).
    scanned: Vec<(MailboxMeta, Vec<MessageMeta>)>,
    /// Mailboxes left out (damaged, or deleted during the backup).
    skipped: HashSet<usize>,
    /// Damaged mailboxes whose parent state is kept: index and the parent's catalog.
    kept: Vec<(usize, Unchanged)>,
}

/// Scan each mailbox (metadata only); an unchanged one takes the parent's catalog.
#[allow(clippy::too_many_arguments)] // the user's context, passed down from backup_user
fn scan_mailboxes(
    ctx: &Ctx<'_>,
    reader: &dyn StoreReader,
    handles: &[MailboxHandle],
    copies: &[Option<Unchanged>],
    ub: &UserBase,
    user: &str,
    stats: &mut BackupStats,
    progress: &mut dyn Progress,
) -> Result<Scan> {
    let mut scan = Scan {
        scanned: Vec::with_capacity(handles.len()),
        skipped: HashSet::new(),
        kept: Vec::new(),
    };
    for (h, copy) in handles.iter().zip(copies) {
        crate::progress::check(progress)?;
        let from_parent = copy
            .as_ref()
            .and_then(|_| ub.parent.iter().find(|c| c.mailbox.name == h.name));
        match from_parent {
            Some(c) => scan.scanned.push((
                c.mailbox.clone(),
                c.messages.iter().map(|r| r.message.clone()).collect(),
            )),
            None => match reader.scan(h) {
                Ok(x) => scan.scanned.push(x),
                Err(e @ Error::StoreDamaged { .. }) => {
                    damaged_mailbox(ctx, h, user, e, &mut scan, stats, progress)?;
                }
                // Deleted since the mailboxes were listed: as if the run had started later.
                Err(Error::Io { source, path }) if source.kind() == io::ErrorKind::NotFound => {
                    let text = format!(
                        "user {user} mailbox {}: deleted during the backup ({})",
                        h.name,
                        path.display()
                    );
                    expunged(stats, progress, user, &h.name, text);
                    scan.skipped.insert(scan.scanned.len());
                    scan.scanned.push((empty_mailbox(&h.name), Vec::new()));
                }
                Err(e) => return Err(e),
            },
        }
        for text in reader.take_warnings() {
            warn(stats, progress, text);
        }
        for text in reader.take_expunged() {
            expunged(stats, progress, user, &h.name, text);
        }
        for message in reader.take_notes() {
            progress.event(&Event::Debug { message });
        }
    }
    Ok(scan)
}

/// A mailbox whose index is damaged is named, and the rest of the user's mail is backed
/// up. In an incremental it keeps its state of the parent (copied like an unchanged
/// mailbox), so that a restore of the chain does not lose it and its mail is not recorded
/// as deleted; else it is left out.
fn damaged_mailbox(
    ctx: &Ctx<'_>,
    h: &MailboxHandle,
    user: &str,
    e: Error,
    scan: &mut Scan,
    stats: &mut BackupStats,
    progress: &mut dyn Progress,
) -> Result<()> {
    let user_name = Name::from(user);
    let parent = match (ctx.bases, ctx.opts.since) {
        (Some(b), None) => b
            .parent()
            .dir
            .mailboxes
            .iter()
            .position(|m| m.user == user_name && m.name == h.name),
        _ => None,
    };
    let raw = match (parent, ctx.bases) {
        (Some(i), Some(b)) => b.parent().raw_catalog(i)?.map(|raw| (i, raw)),
        _ => None,
    };
    let what = match (&raw, ctx.bases) {
        (Some(_), Some(b)) => format!(
            "kept as the archive this is an incremental of ({}) recorded it",
            b.parent().manifest().created
        ),
        _ => "left out".to_string(),
    };
    let text = format!("user {user} mailbox {}: {what}: {e}", h.name);
    warn(stats, progress, text);
    if let Some(raw) = raw {
        scan.kept.push((scan.scanned.len(), raw));
    }
    scan.skipped.insert(scan.scanned.len());
    scan.scanned.push((empty_mailbox(&h.name), Vec::new()));
    Ok(())
}

/// Split the METADATA dictionary (it names mailboxes by GUID) into each scanned mailbox's
/// attributes; returns the server attributes and the entries kept raw.
fn attach_metadata(
    dict: Option<&[u8]>,
    scanned: &mut [(MailboxMeta, Vec<MessageMeta>)],
) -> (Vec<crate::model::Attribute>, Vec<(Name, Name)>) {
    let Some(data) = dict else {
        return (Vec::new(), Vec::new());
    };
    let mut guids: HashMap<String, usize> = HashMap::new();
    for (i, (m, _)) in scanned.iter().enumerate() {
        if let Some(g) = &m.guid {
            guids.insert(g.clone(), i);
        }
    }
    let (per_mb, server, raw) = split_attributes(crate::store::dovecot::parse_dict(data), &guids);
    for (i, a) in per_mb {
        scanned[i].0.attributes.push(a);
    }
    (server, raw)
}

/// One mailbox being written: where its messages come from.
struct MailboxJob<'a> {
    ctx: &'a Ctx<'a>,
    reader: &'a dyn StoreReader,
    handle: &'a MailboxHandle,
    user: &'a str,
    ub: &'a UserBase,
}

/// Messages read ahead at most (and their bytes): the memory a mailbox's read-ahead holds.
const AHEAD_MESSAGES: usize = 64;
const AHEAD_BYTES: usize = 64 << 20;

/// A message whose bytes were read and are being prepared ([`Preparer`]), waiting for its
/// turn to be written.
struct Queued {
    /// Its place among the mailbox's records.
    slot: usize,
    msg: MessageMeta,
    path: PathBuf,
}

/// One mailbox's messages being added to the archive, in order: records made now, and
/// messages read ahead whose records are made when their facts are ready.
struct Writing<'a, 'p, W: Write> {
    w: &'a mut ArchiveWriter<W>,
    shared: &'a mut HashMap<u64, MessageRecord>,
    stats: &'a mut BackupStats,
    progress: &'p mut dyn Progress,
    records: Vec<Option<MessageRecord>>,
    queue: VecDeque<Queued>,
}

impl<W: Write> Writing<'_, '_, W> {
    /// Count a message written, and report progress now and then.
    fn account(&mut self, rec: &MessageRecord, read: bool) {
        let stats = &mut *self.stats;
        stats.messages += 1;
        stats.bytes = stats.bytes.saturating_add(rec.message.content.size);
        if read && stats.messages.is_multiple_of(256) {
            self.progress.event(&Event::Bytes {
                bytes: stats.bytes,
                messages: stats.messages,
            });
        }
    }

    /// A message read now (or shared with one read before): remembered for its copies.
    fn read(&mut self, rec: MessageRecord) {
        if let Some(k) = rec.message.storage_key {
            self.shared.insert(k, rec.clone());
        }
        self.account(&rec, true);
        self.records.push(Some(rec));
    }

    /// Write the oldest message read ahead.
    fn write_next(&mut self, mb: &MailboxJob<'_>, mailbox: &Name) -> Result<()> {
        let Some(q) = self.queue.pop_front() else {
            return Ok(());
        };
        let mut ahead = mb.ctx.ahead.borrow_mut();
        let Some((bytes, facts)) = ahead.take()? else {
            return Err(Error::Internal("a message read ahead went missing".into()));
        };
        drop(ahead);
        let (user, uid, slot) = (Name::from(mb.user), q.msg.uid, q.slot);
        let mut rec = self
            .w
            .add_prepared(&user, mailbox, q.msg, &bytes, facts, &q.path)
            .within(Context::mailbox(mb.user, mailbox).uid(uid))?;
        sniffed(&mut rec, &bytes[..bytes.len().min(SNIFF)]);
        self.stats.read_bytes = self
            .stats
            .read_bytes
            .saturating_add(rec.message.content.size);
        if let Some(k) = rec.message.storage_key {
            self.shared.insert(k, rec.clone());
        }
        self.account(&rec, true);
        self.records[slot] = Some(rec);
        Ok(())
    }

    /// Write messages read ahead until at most `messages` (and [`AHEAD_BYTES`]) wait.
    fn write_ahead(&mut self, mb: &MailboxJob<'_>, mailbox: &Name, messages: usize) -> Result<()> {
        while !self.queue.is_empty()
            && (self.queue.len() > messages
                || mb.ctx.ahead.borrow().in_flight_bytes() > AHEAD_BYTES)
        {
            self.write_next(mb, mailbox)?;
        }
        Ok(())
    }
}

/// Set a record's display headers from the message's first bytes.
fn sniffed(rec: &mut MessageRecord, head: &[u8]) {
    let hdr = crate::mime::headers::parse(head);
    rec.message.from = hdr.from;
    rec.message.subject = hdr.subject;
    rec.message.message_id = hdr.message_id;
}

/// Add the messages of one scanned mailbox to the archive, each as the incremental logic
/// says ([`UserBase::verdict`]): carried over from the parent, recorded unread, a copy of
/// a message already read (shared storage), or read now. Messages read whole are read
/// ahead and prepared on other threads ([`Writing`]); records keep the scan's order.
fn write_messages<W: Write>(
    mb: &MailboxJob<'_>,
    (meta, msgs): (MailboxMeta, Vec<MessageMeta>),
    w: &mut ArchiveWriter<W>,
    shared: &mut HashMap<u64, MessageRecord>,
    stats: &mut BackupStats,
    progress: &mut dyn Progress,
) -> Result<(MailboxMeta, Vec<MessageRecord>)> {
    progress.event(&Event::Mailbox {
        user: mb.user.to_string(),
        mailbox: meta.name.to_string(),
        messages: msgs.len() as u64,
    });
    let since = mb.ctx.opts.since.map(|t| Timestamp {
        secs: t.timestamp(),
        nanos: 0,
    });
    let mut wr = Writing {
        w,
        shared,
        stats,
        progress,
        records: Vec::with_capacity(msgs.len()),
        queue: VecDeque::new(),
    };
    let known = mb.ub.mailbox(&meta);
    for mut msg in msgs {
        crate::progress::check(wr.progress)?;
        let uid = msg.uid;
        match mb.ub.verdict(known, &msg, since) {
            Verdict::Known(k) => {
                let k = k.clone();
                msg.content = k.content;
                msg.from = k.from;
                msg.subject = k.subject;
                msg.message_id = k.message_id;
                wr.stats.unread += 1;
                let rec = match k.at {
                    Some(at) => wr.w.add_reference(msg, at),
                    None => wr.w.add_unread(msg),
                };
                wr.account(&rec, false);
                wr.records.push(Some(rec));
            }
            Verdict::Unchanged => {
                wr.stats.unread += 1;
                let rec = wr.w.add_unread(msg);
                wr.account(&rec, false);
                wr.records.push(Some(rec));
            }
            // A stored message the store shares between mailboxes (mdbox copy, sdbox hard
            // link) is read once per backup: a copy of one read ahead waits for it.
            Verdict::Read => {
                if let Some(k) = msg.storage_key
                    && wr.queue.iter().any(|q| q.msg.storage_key == Some(k))
                {
                    wr.write_ahead(mb, &meta.name, 0)?;
                }
                if let Some(prev) = msg.storage_key.and_then(|k| wr.shared.get(&k)) {
                    let rec = wr.w.add_copy(&Name::from(mb.user), &meta.name, msg, prev)?;
                    wr.account(&rec, false);
                    wr.records.push(Some(rec));
                    continue;
                }
                read_message(mb, &meta, msg, &mut wr)
                    .within(Context::mailbox(mb.user, &meta.name).uid(uid))?;
                wr.write_ahead(mb, &meta.name, AHEAD_MESSAGES)?;
            }
        }
    }
    wr.write_ahead(mb, &meta.name, 0)?;
    Ok((meta, wr.records.into_iter().flatten().collect()))
}

/// Read one message's bytes into the archive (sniffing its display headers on the way), or
/// read them whole and queue them to be prepared; nothing when it was expunged meanwhile or
/// cannot be read (named, left out).
fn read_message<W: Write>(
    mb: &MailboxJob<'_>,
    meta: &MailboxMeta,
    mut msg: MessageMeta,
    wr: &mut Writing<'_, '_, W>,
) -> Result<()> {
    let user = mb.user;
    if let Some(b) = mb.ctx.bases
        && !b.content_given.get()
    {
        let (content, blobs) = b.content()?;
        wr.w.set_chain_content(content, blobs);
        b.content_given.set(true);
    }
    let mut body = match mb.reader.open_body(mb.handle, &msg) {
        Ok(b) => b,
        Err(Error::Io { path, source }) if source.kind() == io::ErrorKind::NotFound => {
            let text = format!(
                "user {user} mailbox {} UID {}: expunged during the backup: {}",
                meta.name,
                msg.uid,
                path.display()
            );
            expunged(wr.stats, wr.progress, user, &meta.name, text);
            return Ok(());
        }
        // One message that cannot be read (a symlink, a damaged or unreadable file)
        // is named and left out; the rest is backed up.
        Err(e @ (Error::StoreDamaged { .. } | Error::Io { .. })) => {
            let text = format!(
                "user {user} mailbox {} UID {}: left out: {e}",
                meta.name, msg.uid
            );
            warn(wr.stats, wr.progress, text);
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    if let Some((fname, new)) = body.renamed_to.take() {
        mb.reader.reflag(&meta.keywords, &mut msg, fname, new);
    }
    // On one thread, the writer reads the body itself, straight into its frame.
    if body.split.is_none() && body.len <= READ_AHEAD_MAX && mb.ctx.opts.writer.threads > 1 {
        let mut bytes = Vec::with_capacity(usize::try_from(body.len).unwrap_or(0));
        body.file
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io(&body.path, e))?;
        mb.ctx.ahead.borrow_mut().give(bytes);
        wr.queue.push_back(Queued {
            slot: wr.records.len(),
            msg,
            path: body.path,
        });
        wr.records.push(None);
        return Ok(());
    }
    // A message in the store's own parts, or a large one: written now, after those read ahead.
    wr.write_ahead(mb, &meta.name, 0)?;
    let (mut rec, head) = match &body.split {
        Some(p) => {
            let head = p.data[..p.data.len().min(SNIFF)].to_vec();
            let rec =
                wr.w.add_message_in_parts(msg, &p.data, p.parts.clone(), &p.blobs, &body.path)?;
            (rec, head)
        }
        None => {
            let mut sniff = Sniffer {
                inner: &mut body.file,
                head: Vec::new(),
                done: false,
            };
            let user_name = Name::from(user);
            let rec = wr.w.add_message(
                &user_name, &meta.name, msg, &mut sniff, body.len, &body.path,
            )?;
            (rec, sniff.head)
        }
    };
    sniffed(&mut rec, &head);
    wr.stats.read_bytes = wr.stats.read_bytes.saturating_add(rec.message.content.size);
    wr.read(rec);
    Ok(())
}

/// Messages up to this size are read whole and prepared ahead (the writer reads larger ones
/// itself, twice: to hash, then to copy).
const READ_AHEAD_MAX: u64 = 16 << 20;

#[cfg(test)]
mod tests;
