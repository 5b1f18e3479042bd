//! Backup: read users' mail stores and write one archive.
//!
//! Per user: list mailboxes, scan each (metadata only), then stream every message body
//! into the [`ArchiveWriter`] (one read per distinct body: hashing, header sniffing and
//! compression happen on that single pass). A message file that vanishes during the backup
//! (expunged) is reported as a warning; one that was renamed (its flags changed) is found
//! under its new name and recorded with its new flags.

use std::collections::HashMap;
use std::io::{self, Read, Write};

use crate::error::{Error, Result};
use crate::format::index::{Manifest, Source};
use crate::format::spec::{FORMAT_MAJOR, FORMAT_MINOR};
use crate::format::writer::{ArchiveWriter, WriterOptions};
use crate::model::{Name, UserMeta};
use crate::progress::{Event, Progress};
use crate::store::location::Location;
use crate::store::maildir::MaildirReader;
use crate::store::{StoreReader, split_attributes};

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
}

impl BackupOptions {
    /// Defaults for `location`: level 3, all cores, current time, random id.
    pub fn new(location: Location) -> Self {
        BackupOptions {
            location,
            writer: WriterOptions::default(),
            created: None,
            archive_id: None,
            host: None,
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
    /// Items skipped, each named (vanished files, unreadable mailboxes).
    pub warnings: Vec<String>,
}

/// Keeps a copy of the header block (up to the first empty line, at most [`SNIFF`] bytes) of
/// the bytes read through it, for `From`/`Subject`/`Message-ID`; the body is not copied.
struct Sniffer<'a> {
    inner: &'a mut std::fs::File,
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

/// Back up `users` into an archive written to `out`.
///
/// # Errors
/// Unreadable stores or a failing output. Per-message problems (a vanished file) do not
/// fail the backup; they are listed in [`BackupStats::warnings`].
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
    let manifest = Manifest {
        format: "maildump".into(),
        format_major: FORMAT_MAJOR,
        format_minor: FORMAT_MINOR,
        writer: format!("maildump {}", env!("CARGO_PKG_VERSION")),
        created,
        archive_id: opts
            .archive_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        parent: None,
        source: Source {
            store: opts.location.format.clone(),
            location: opts.location.spec.clone(),
            home: opts.location.home.clone(),
            host: opts.host.clone(),
        },
    };
    let mut w = ArchiveWriter::new(out, manifest, &opts.writer)?;
    let mut stats = BackupStats::default();
    for user in users {
        crate::store::location::check_user_name(user.as_bytes())
            .map_err(|e| Error::Usage(e.to_string()))?;
        progress.event(&Event::User { user: user.clone() });
        backup_user(opts, user, &mut w, &mut stats, progress)?;
        stats.users += 1;
    }
    w.finish()?;
    progress.event(&Event::Done {
        messages: stats.messages,
        bytes: stats.bytes,
        warnings: stats.warnings.len() as u64,
    });
    Ok(stats)
}

fn backup_user<W: Write>(
    opts: &BackupOptions,
    user: &str,
    w: &mut ArchiveWriter<W>,
    stats: &mut BackupStats,
    progress: &mut dyn Progress,
) -> Result<()> {
    let reader = MaildirReader::open(&opts.location, user)?;
    let handles = reader.mailboxes()?;
    let mut scanned = Vec::with_capacity(handles.len());
    for h in &handles {
        scanned.push(reader.scan(h)?);
    }
    // METADATA: the dictionary names mailboxes by GUID.
    let mut guids: HashMap<String, usize> = HashMap::new();
    for (i, (m, _)) in scanned.iter().enumerate() {
        if let Some(g) = &m.guid {
            guids.insert(g.clone(), i);
        }
    }
    let mut server_attributes = Vec::new();
    let mut raw_attributes = Vec::new();
    if let Some(path) = opts.location.attribute_file_of(user) {
        match std::fs::read(&path) {
            Ok(data) => {
                let (per_mb, server, raw) =
                    split_attributes(crate::store::dovecot::parse_dict(&data), &guids);
                for (i, a) in per_mb {
                    scanned[i].0.attributes.push(a);
                }
                server_attributes = server;
                raw_attributes = raw;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(path, e)),
        }
    }
    let user_name = Name::from(user);
    let mut names = Vec::new();
    for (h, (meta, msgs)) in handles.iter().zip(scanned) {
        progress.event(&Event::Mailbox {
            user: user.to_string(),
            mailbox: meta.name.to_string(),
            messages: msgs.len() as u64,
        });
        let mut records = Vec::with_capacity(msgs.len());
        for mut msg in msgs {
            let mut body = match reader.open_body(h, &msg) {
                Ok(b) => b,
                Err(Error::Io { path, source }) if source.kind() == io::ErrorKind::NotFound => {
                    let text = format!(
                        "user {user} mailbox {} UID {}: message file vanished during backup (expunged?): {}",
                        meta.name,
                        msg.uid,
                        path.display()
                    );
                    progress.event(&Event::Warning {
                        message: text.clone(),
                    });
                    stats.warnings.push(text);
                    continue;
                }
                Err(e) => return Err(e),
            };
            if let Some((fname, new)) = body.renamed_to.take() {
                reader.reflag(&meta.keywords, &mut msg, fname, new);
            }
            let mut sniff = Sniffer {
                inner: &mut body.file,
                head: Vec::new(),
                done: false,
            };
            let mut rec = w.add_message(
                &user_name, &meta.name, msg, &mut sniff, body.len, &body.path,
            )?;
            let hdr = crate::headers::parse(&sniff.head);
            rec.message.from = hdr.from;
            rec.message.subject = hdr.subject;
            rec.message.message_id = hdr.message_id;
            stats.messages += 1;
            stats.bytes += rec.message.content.size;
            if stats.messages % 256 == 0 {
                progress.event(&Event::Bytes {
                    bytes: stats.bytes,
                    messages: stats.messages,
                });
            }
            records.push(rec);
        }
        names.push(meta.name.clone());
        w.add_mailbox(&user_name, meta, records)?;
        stats.mailboxes += 1;
    }
    let subscriptions = reader.subscriptions()?;
    let owner = Some(reader.root_owner()?);
    w.add_user(
        UserMeta {
            name: user_name,
            subscriptions,
            server_attributes,
            raw_attributes,
            owner,
        },
        names,
    )?;
    stats.bodies = w.stats().bodies;
    Ok(())
}
