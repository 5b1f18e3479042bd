//! The archive's metadata documents: manifest, index directory, per-mailbox catalogs.
//!
//! These are serde types; their JSON form is specified in `format-spec/FORMAT.md`. Readers
//! ignore unknown fields (a newer minor version may add some). Costs: the directory holds one
//! entry per data frame (~60 B, ~14 B compressed, per 2 MiB of mail) and per mailbox; a mailbox catalog holds
//! ~300-400 B per message and is decompressed only when that mailbox is needed.

use serde::{Deserialize, Serialize};

use crate::model::{MailboxMeta, MessageMeta, Name, UserMeta};

/// The manifest: first member of the tar stream and first field of the index directory.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    /// Always `"maildump"`.
    pub format: String,
    /// Format major version.
    pub format_major: u16,
    /// Format minor version.
    pub format_minor: u16,
    /// The program that wrote the archive, e.g. `maildump 0.1.0`.
    pub writer: String,
    /// Creation time, RFC 3339 UTC.
    pub created: String,
    /// Unique id of this archive (UUID text).
    pub archive_id: String,
    /// Archive this one is an increment of (absent in full and since-archives).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentRef>,
    /// Every archive the writer was given as a base, newest first (the parent first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bases: Vec<ParentRef>,
    /// A since-archive: bodies of messages whose files changed after this time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// A merged synthetic full: the archives it was built from, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replaces: Vec<ParentRef>,
    /// What was backed up.
    pub source: Source,
}

/// Reference to another archive: its id and creation time.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ParentRef {
    /// The parent's `archive_id`.
    pub archive_id: String,
    /// The parent's `created`.
    pub created: String,
}

/// Description of the backed-up store.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Source {
    /// Store format: `maildir`, `sdbox` or `mdbox`.
    pub store: String,
    /// Dovecot mail_location used, as given.
    pub location: String,
    /// Home template used, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home: Option<String>,
    /// Host name of the machine that ran the backup, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// One data frame in the table of the index directory.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FrameEntry {
    /// Offset of the frame in the archive file.
    pub offset: u64,
    /// Compressed length of the frame.
    pub csize: u64,
    /// Decompressed length.
    pub usize: u64,
    /// Offset (in the decompressed frame) of the first tar header that starts in this frame,
    /// absent when the frame only continues a member begun earlier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first: Option<u64>,
    /// CRC-32 (ISO-HDLC, as zlib's `crc32`) of the compressed frame bytes: detects damage
    /// that zstd's content checksum cannot see (e.g. in a frame header). Message bytes are
    /// protected by their SHA-256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crc32: Option<u32>,
}

/// Where a tar member's data starts: data frame number and offset in its decompressed bytes.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    /// Index into [`Directory::frames`].
    pub frame: u32,
    /// Offset in the decompressed frame; data may run on into the following frames.
    pub offset: u64,
}

/// A message as recorded in a mailbox catalog.
///
/// In JSON a message stored in parts (1.2) has no `loc` or `archive_loc`: the location of
/// its data member is `data_loc` (spec 5.5), so that older readers never take a data member
/// for a message. In memory it is kept in `loc` or `archive_loc` like any stored bytes.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(from = "WireRecord", into = "WireRecord")]
pub struct MessageRecord {
    /// The tar member for this message (`users/<u>/<mailbox>/<uid>.eml`). Index only: in a
    /// `mailbox.json` member it is left out, as it follows from user, mailbox and UID
    /// ([`super::writer::message_member`]).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub member: String,
    /// When the bytes are stored under another member (this member is a hard link), that member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// Where the bytes start (index only; absent in `mailbox.json` members).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loc: Option<Location>,
    /// The archive (`archive_id`) holding the bytes, when they are not in this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<String>,
    /// Where the bytes start in [`MessageRecord::archive`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_loc: Option<Location>,
    /// Deleted records only: creation time of the newest archive whose state still held
    /// this message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
    /// Deleted records only: creation time of the first archive whose state no longer held
    /// this message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_by: Option<String>,
    /// The message's metadata.
    pub message: MessageMeta,
}

/// [`MessageRecord`] as written in JSON.
#[derive(Clone, Serialize, Deserialize)]
struct WireRecord {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    member: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    link: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    loc: Option<Location>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    data_loc: Option<Location>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    archive: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    archive_loc: Option<Location>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_seen: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    deleted_by: Option<String>,
    message: MessageMeta,
}

impl From<WireRecord> for MessageRecord {
    fn from(w: WireRecord) -> Self {
        let (mut loc, mut archive_loc) = (w.loc, w.archive_loc);
        if w.message.content.data.is_some() {
            match &w.archive {
                Some(_) => archive_loc = w.data_loc,
                None => loc = w.data_loc,
            }
        }
        MessageRecord {
            member: w.member,
            link: w.link,
            loc,
            archive: w.archive,
            archive_loc,
            last_seen: w.last_seen,
            deleted_by: w.deleted_by,
            message: w.message,
        }
    }
}

impl From<MessageRecord> for WireRecord {
    fn from(r: MessageRecord) -> Self {
        let parts = r.message.content.data.is_some();
        WireRecord {
            member: r.member,
            link: r.link,
            loc: r.loc.filter(|_| !parts),
            data_loc: if parts { r.loc.or(r.archive_loc) } else { None },
            archive: r.archive,
            archive_loc: r.archive_loc.filter(|_| !parts),
            last_seen: r.last_seen,
            deleted_by: r.deleted_by,
            message: r.message,
        }
    }
}

/// Where bytes already held by an archive of a chain are: its id and the location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContentRef {
    /// `archive_id` of the archive holding the bytes.
    pub archive: String,
    /// Where the bytes start in that archive.
    pub loc: Location,
}

impl MessageRecord {
    /// Where this record's bytes are, as a reference another archive can record: in the
    /// archive `own_id` that holds the record (its `loc`), or where its `archive` and
    /// `archive_loc` say. `None` for an unread record, or bytes lost.
    pub(crate) fn content_ref(&self, own_id: &str) -> Option<ContentRef> {
        match (&self.archive, self.archive_loc, self.loc) {
            (Some(id), Some(loc), _) => Some(ContentRef {
                archive: id.clone(),
                loc,
            }),
            (None, _, Some(loc)) if !self.is_external() => Some(ContentRef {
                archive: own_id.to_string(),
                loc,
            }),
            _ => None,
        }
    }

    /// Make the record say its bytes are in another archive, as [`Self::content_ref`]
    /// gives them (`own_id` is the archive whose record this was): no `loc`, member or
    /// link of its own.
    pub(crate) fn refer_to(&mut self, own_id: &str) {
        if let Some(r) = self.content_ref(own_id) {
            self.archive = Some(r.archive);
            self.archive_loc = Some(r.loc);
        }
        self.loc = None;
        self.member.clear();
        self.link = None;
    }

    /// A record whose bytes are held by another archive, as `r` says.
    pub(crate) fn referring(message: MessageMeta, r: ContentRef) -> Self {
        MessageRecord {
            archive: Some(r.archive),
            archive_loc: Some(r.loc),
            ..MessageRecord::bare(message)
        }
    }

    /// A record with no bytes anywhere yet (filled in by the writer or a resolver).
    pub(crate) fn bare(message: MessageMeta) -> Self {
        MessageRecord::bare_at(String::new(), message)
    }

    /// SHA-256 and length of the bytes stored for the record at `loc` (or `archive_loc`):
    /// the data member of a message stored in parts (1.2), else the message's own.
    pub(crate) fn stored_content(&self) -> (&str, u64) {
        let c = &self.message.content;
        match &c.data {
            Some(d) => (&d.sha256, d.size),
            None => (&c.sha256, c.size),
        }
    }

    /// True for a message stored in parts (format 1.2).
    pub(crate) fn in_parts(&self) -> bool {
        self.message.content.data.is_some()
    }

    /// True when this archive holds no bytes for the record: they are in another archive
    /// of the chain (`archive`), or were not read (a since-archive's unchanged message).
    pub(crate) fn is_external(&self) -> bool {
        self.archive.is_some() || self.message.content.sha256.is_empty()
    }

    /// A record for tar member `member`, with no location yet.
    pub(crate) fn bare_at(member: String, message: MessageMeta) -> Self {
        MessageRecord {
            member,
            link: None,
            loc: None,
            archive: None,
            archive_loc: None,
            last_seen: None,
            deleted_by: None,
            message,
        }
    }
}

/// A mailbox with all its messages: the `mailbox.json` member and an index catalog.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MailboxRecord {
    /// Owner of the mailbox.
    pub user: Name,
    /// Mailbox metadata.
    pub mailbox: MailboxMeta,
    /// Messages in UID order.
    pub messages: Vec<MessageRecord>,
    /// Records of deleted mail: messages an earlier archive held in this mailbox that are
    /// gone (neither here nor moved elsewhere in the user's state).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deleted: Vec<MessageRecord>,
}

/// A user record: the `user.json` member.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct UserRecord {
    /// User metadata.
    pub user: UserMeta,
    /// Names of the user's mailboxes in this archive, in archive order.
    pub mailboxes: Vec<Name>,
}

/// A mailbox entry of the index directory.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MailboxEntry {
    /// Owner.
    pub user: Name,
    /// IMAP name.
    pub name: Name,
    /// Number of messages.
    pub messages: u64,
    /// Offset of this mailbox's catalog (a zstd frame of [`MailboxRecord`] JSON) from the
    /// start of the catalog area, which follows the directory in the INDEX payload.
    pub catalog_offset: u64,
    /// Compressed length of the catalog.
    pub catalog_len: u64,
    /// Digest of the store's view of the mailbox when it was backed up (Maildir: file names,
    /// uidlist, keywords, directory owner and mode; see the store docs). An incremental
    /// whose store view has the same digest copies this entry's catalog instead of reading
    /// the mailbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// The catalog is a byte-for-byte copy of a catalog written by archive `catalog_of`: its
    /// records' `loc` values are locations in that archive (readers treat them as the
    /// record's `archive` and `archive_loc`), and its records of deleted mail belong to that
    /// archive's history, not this one's (readers drop them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog_of: Option<String>,
}

/// A blob (format 1.2): an attachment stored once per archive chain, the member
/// `blobs/<sha256>`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BlobEntry {
    /// SHA-256 (hex) of the blob's bytes.
    pub sha256: String,
    /// Their length.
    pub size: u64,
    /// Where they start.
    pub loc: Location,
}

/// The index directory: the first part of the INDEX payload.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Directory {
    /// Same as the manifest member.
    pub manifest: Manifest,
    /// Data frames in file order.
    pub frames: Vec<FrameEntry>,
    /// Users in archive order.
    pub users: Vec<UserMeta>,
    /// Mailboxes in archive order (by user, then as written).
    pub mailboxes: Vec<MailboxEntry>,
    /// Mailboxes that were deleted since the parent: catalogs holding only `deleted` records.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gone: Vec<MailboxEntry>,
    /// Blobs stored in this archive (1.2), in archive order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blobs: Vec<BlobEntry>,
    /// Summary counts.
    pub stats: ArchiveStats,
}

/// Counts recorded in the index.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct ArchiveStats {
    /// Messages recorded.
    pub messages: u64,
    /// Distinct message bodies stored.
    pub bodies: u64,
    /// Bytes of all messages (before deduplication).
    pub message_bytes: u64,
    /// Bytes of distinct bodies stored.
    pub stored_bytes: u64,
    /// Message records whose bytes are in another archive of the chain.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub referenced: u64,
    /// Records of deleted mail.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub deleted: u64,
    /// Blobs stored (1.2).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub blobs: u64,
    /// Bytes of the blobs stored (1.2).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub blob_bytes: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}
