//! The archive's metadata documents: manifest, index directory, per-mailbox catalogs.
//!
//! These are serde types; their JSON form is specified in `format-spec/FORMAT.md`. Readers
//! ignore unknown fields (a newer minor version may add some). Costs: the directory holds one
//! entry per data frame (~60 B per 8 MiB of mail) and per mailbox; a mailbox catalog holds
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
    /// Archive this one is an increment of (reserved for incremental archives; absent in full ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentRef>,
    /// What was backed up.
    pub source: Source,
}

/// Reference to a parent archive (reserved for incremental archives).
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
    /// Store format: `maildir` (later `sdbox`, `mdbox`).
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
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
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
    /// The message's metadata.
    pub message: MessageMeta,
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
}

/// A user record: the `user.json` member.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct UserRecord {
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
}
