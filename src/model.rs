//! Domain types shared by the archive format and the stores: names, ids, flags and the metadata
//! of users, mailboxes and messages.
//!
//! This module does no I/O and knows neither archive bytes nor Dovecot file names. Everything
//! here is serialized into the archive's JSON metadata exactly as documented in
//! `format-spec/FORMAT.md`; unknown fields are ignored on reading (stored data is read
//! tolerantly, newer writers may add fields).

use std::fmt;

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A name made of raw bytes (user, mailbox, keyword, METADATA value): usually UTF-8, but
/// kept byte-exact when it is not.
///
/// In JSON it is a string when it is valid UTF-8, else `{"base64": "..."}`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Name(Vec<u8>);

impl Name {
    /// Wrap raw bytes.
    pub fn from_bytes(b: impl Into<Vec<u8>>) -> Self {
        Name(b.into())
    }
    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
    /// The name as UTF-8 text when it is valid UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }
    /// True when the name holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&str> for Name {
    fn from(s: &str) -> Self {
        Name(s.as_bytes().to_vec())
    }
}

impl From<String> for Name {
    fn from(s: String) -> Self {
        Name(s.into_bytes())
    }
}

impl fmt::Display for Name {
    /// Lossy display for messages to people; invalid bytes are shown as `\xNN`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            f.write_str(chunk.valid())?;
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

impl Serialize for Name {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.as_str() {
            Some(t) => s.serialize_str(t),
            None => {
                use serde::ser::SerializeMap;
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry(
                    "base64",
                    &base64::engine::general_purpose::STANDARD.encode(&self.0),
                )?;
                m.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Text(String),
            Bytes { base64: String },
        }
        match Repr::deserialize(d)? {
            Repr::Text(t) => Ok(Name(t.into_bytes())),
            Repr::Bytes { base64 } => base64::engine::general_purpose::STANDARD
                .decode(base64.as_bytes())
                .map(Name)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// A buffer capacity for `n` bytes announced by an archive or a store: at most 64 MiB, so a
/// hostile or damaged size cannot make an allocation fail (the buffer grows as needed).
pub fn capacity_hint(n: u64) -> usize {
    usize::try_from(n.min(64 << 20)).unwrap_or(0)
}

/// An IMAP message UID.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Uid(pub u32);

impl fmt::Display for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// IMAP system flags (`\Recent` is never stored, as in Dovecot).
#[derive(Clone, Copy, PartialEq, Eq, Default, Debug)]
pub struct Flags(u8);

impl Flags {
    /// `\Answered`
    pub(crate) const ANSWERED: Flags = Flags(1);
    /// `\Flagged`
    pub(crate) const FLAGGED: Flags = Flags(2);
    /// `\Deleted`
    pub(crate) const DELETED: Flags = Flags(4);
    /// `\Seen`
    pub const SEEN: Flags = Flags(8);
    /// `\Draft`
    pub(crate) const DRAFT: Flags = Flags(16);

    const ALL: [(Flags, &'static str); 5] = [
        (Flags::ANSWERED, "\\Answered"),
        (Flags::FLAGGED, "\\Flagged"),
        (Flags::DELETED, "\\Deleted"),
        (Flags::SEEN, "\\Seen"),
        (Flags::DRAFT, "\\Draft"),
    ];

    /// No flags.
    pub fn empty() -> Self {
        Flags(0)
    }
    /// The flags as Dovecot's index stores them (bits 0x01..0x10).
    pub fn bits(self) -> u8 {
        self.0
    }
    /// Flags from Dovecot's index bits; other bits (backend-internal) are dropped.
    pub(crate) fn from_bits(b: u8) -> Self {
        Flags(b & 0x1f)
    }
    /// True if every flag of `other` is set.
    pub fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }
    /// Set the flags of `other`.
    pub fn insert(&mut self, other: Flags) {
        self.0 |= other.0;
    }
    /// Flag names in IMAP spelling, in a fixed order.
    pub fn names(self) -> Vec<&'static str> {
        Flags::ALL
            .iter()
            .filter(|(f, _)| self.contains(*f))
            .map(|(_, n)| *n)
            .collect()
    }
    /// Parse one IMAP flag name (case-insensitive); `None` for unknown names.
    pub(crate) fn from_name(name: &str) -> Option<Flags> {
        Flags::ALL
            .iter()
            .find(|(_, n)| n.eq_ignore_ascii_case(name))
            .map(|(f, _)| *f)
    }
}

impl Serialize for Flags {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.names().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Flags {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let names = Vec::<String>::deserialize(d)?;
        let mut f = Flags::empty();
        for n in names {
            // Unknown system flags from a newer writer are ignored, as the spec says.
            if let Some(x) = Flags::from_name(&n) {
                f.insert(x);
            }
        }
        Ok(f)
    }
}

/// A point in time: Unix seconds plus nanoseconds (file mtimes keep their nanoseconds).
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize, Default,
)]
pub struct Timestamp {
    /// Seconds since 1970-01-01 UTC (may be negative).
    pub secs: i64,
    /// Nanoseconds, 0..1e9.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub nanos: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Timestamp {
    /// RFC 3339 text in UTC, seconds precision.
    pub fn to_rfc3339(self) -> String {
        match chrono::DateTime::from_timestamp(self.secs, 0) {
            Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            None => self.secs.to_string(),
        }
    }
}

/// Owner and permission bits of a file or directory.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct Owner {
    /// Numeric user id.
    pub uid: u32,
    /// Numeric group id.
    pub gid: u32,
    /// Permission bits (e.g. 0o600), without the file type.
    pub mode: u32,
}

/// A METADATA entry (RFC 5464) of a mailbox or of the server.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Attribute {
    /// `private` or `shared`.
    pub scope: AttributeScope,
    /// Entry name without the `/private/` or `/shared/` prefix, e.g. `comment`.
    pub name: Name,
    /// The value, byte-exact.
    pub value: Name,
}

/// Scope of a METADATA entry.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum AttributeScope {
    /// `/private/...`
    Private,
    /// `/shared/...`
    Shared,
}

/// Where a message's bytes live, as found in the store or as placed in the archive.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, Default)]
pub struct Content {
    /// SHA-256 of the message bytes, lowercase hex.
    pub sha256: String,
    /// Length of the message bytes.
    pub size: u64,
    /// Format 1.2, a message stored in parts: hash and length of its data member (the
    /// message without the parts stored as blobs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<DataRef>,
    /// Format 1.2: the message as an ordered list of parts (ranges of the data member and
    /// blobs); their concatenation is the message. Empty for a message stored whole.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<Part>,
}

impl Content {
    /// The SHA-256 of each blob part (format 1.2), in part order; none for a message stored
    /// whole.
    pub(crate) fn blob_shas(&self) -> impl Iterator<Item = &String> {
        self.parts.iter().filter_map(|p| p.blob.as_ref())
    }
}

/// Hash and length of a data member (format 1.2).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct DataRef {
    /// SHA-256 of the data member's bytes, lowercase hex.
    pub sha256: String,
    /// Their length.
    pub size: u64,
}

/// One part of a message stored in parts (format 1.2): a range of the message's data
/// member, or a blob (an attachment stored once per archive chain, `blobs/<sha256>`).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Part {
    /// A range of the data member: where it starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// A blob: the SHA-256 of its bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob: Option<String>,
    /// Length of the range, or of the blob's bytes.
    pub size: u64,
    /// A blob whose bytes appear in the message encoded: `base64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    /// With `base64`: characters per line (the last line may be shorter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// With `base64`: lines end with CRLF instead of LF (no line end after the last line).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub crlf: bool,
}

/// Maildir-specific facts of a message, kept so a Maildir restore is byte-exact.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, Default)]
pub struct MaildirMessage {
    /// The file name on disk, including `:2,` and the flag letters.
    pub filename: Name,
    /// `true` when the file was in `new/` (not yet seen by a client), `false` for `cur/`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub new: bool,
    /// uidlist extension fields other than G, S, W, P, O, verbatim (e.g. `X123`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub uidlist_ext: Vec<Name>,
    /// uidlist `S` field (physical size), when the uidlist had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_ext: Option<u64>,
    /// uidlist `W` field (virtual size), when the uidlist had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsize_ext: Option<u64>,
}

impl MaildirMessage {
    /// The file name's base: the text before the last `:` (Dovecot's default GUID).
    pub fn base(&self) -> &[u8] {
        let f = self.filename.as_bytes();
        match f.iter().rposition(|&b| b == b':') {
            Some(c) => &f[..c],
            None => f,
        }
    }
}

/// dbox-specific facts of a message (sdbox and mdbox), kept so a dbox restore is exact.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, Default)]
pub struct DboxFacts {
    /// Attachments Dovecot had stored outside the message (single-instance storage), in
    /// message order. The archived message bytes are always complete.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<AttachmentRef>,
    /// Metadata lines other than those modelled elsewhere (`G R V Z X P O`), verbatim: a
    /// one-byte key and its value (e.g. `B` = mailbox first saved to, in mdbox).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other: Vec<(Name, Name)>,
}

/// One externalised attachment of a dbox message (Dovecot `X` metadata).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct AttachmentRef {
    /// Offset of the attachment's encoded text in the complete message.
    pub start: u64,
    /// Length of the encoded text in the complete message.
    pub size: u64,
    /// Dovecot's encoding options: `-` (stored as is) or `B<n>` base64 lines of n
    /// characters, with `C` before it for CRLF line ends (`CB76`).
    pub options: String,
    /// Path of the stored attachment relative to the attachment directory (as in `X`).
    pub path: Name,
}

impl MessageMeta {
    /// The dbox facts (sdbox or mdbox), if any.
    pub fn dbox(&self) -> Option<&DboxFacts> {
        self.sdbox.as_ref().or(self.mdbox.as_ref())
    }

    /// The dbox attachments stored outside the message by Dovecot, if any.
    pub(crate) fn dbox_attachments(&self) -> &[AttachmentRef] {
        self.dbox()
            .map(|d| d.attachments.as_slice())
            .unwrap_or_default()
    }

    /// Drop the GUID when it is derivable from the Maildir file name (for storage).
    pub(crate) fn omit_derived_guid(&mut self) {
        if self
            .maildir
            .as_ref()
            .is_some_and(|m| m.base() == self.guid.as_bytes())
        {
            self.guid = Name::default();
        }
    }

    /// Fill in a GUID left out by [`MessageMeta::omit_derived_guid`].
    pub(crate) fn fill_derived_guid(&mut self) {
        if self.guid.is_empty()
            && let Some(m) = &self.maildir
        {
            self.guid = Name::from_bytes(m.base());
        }
    }
}

/// Everything known about one message except its bytes.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct MessageMeta {
    /// IMAP UID in its mailbox.
    pub uid: Uid,
    /// Dovecot's message GUID (`fetch guid`). In the archive's JSON it is left out when it
    /// equals the Maildir file name's base, which is Dovecot's own default
    /// ([`MaildirMessage::base`]); readers fill it back in.
    #[serde(default, skip_serializing_if = "Name::is_empty")]
    pub guid: Name,
    /// System flags.
    pub flags: Flags,
    /// Keywords, in the mailbox's keyword-table order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keywords: Vec<Name>,
    /// INTERNALDATE (Maildir: the file's mtime).
    pub received: Timestamp,
    /// Save date where the store keeps one (mdbox: its index record; Maildir and sdbox:
    /// Dovecot's index cache).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saved: Option<Timestamp>,
    /// Format 1.3: the message's MODSEQ (RFC 7162) as Dovecot reports it, where the store
    /// keeps modseqs (its index).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modseq: Option<u64>,
    /// Physical size as Dovecot reports it (`size.physical`).
    pub size_physical: u64,
    /// Virtual size with CRLF line endings (`size.virtual`), where recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_virtual: Option<u64>,
    /// POP3 UIDL where the store records one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pop3_uidl: Option<Name>,
    /// POP3 order where the store records one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pop3_order: Option<u32>,
    /// Owner and mode of the message file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
    /// Maildir facts (file name, cur/new).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maildir: Option<MaildirMessage>,
    /// sdbox facts (single-instance attachments, other metadata lines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdbox: Option<DboxFacts>,
    /// mdbox facts, as for sdbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mdbox: Option<DboxFacts>,
    /// `From:` header, decoded for display (at most 256 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// `Subject:` header, decoded for display (at most 256 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// `Message-ID:` header (at most 256 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// Hash and size of the message bytes.
    pub content: Content,
    /// When the message's file last changed (Maildir: the later of its ctime and mtime), as
    /// seen by the scan; used by `backup --since`, never stored.
    #[serde(skip)]
    pub changed: Option<Timestamp>,
    /// The store's own identity of the stored message, when the store shares one stored
    /// message between mailboxes (mdbox map UID, sdbox file inode): a backup reads such a
    /// message once. Never stored.
    #[serde(skip)]
    pub storage_key: Option<u64>,
}

/// Everything known about one mailbox except its messages.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct MailboxMeta {
    /// IMAP name, UTF-8, hierarchy separator `/` (`INBOX`, `Work/Sub`, `Ünï Box`).
    pub name: Name,
    /// Mailbox GUID, 32 lowercase hex digits, where the store has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guid: Option<String>,
    /// UIDVALIDITY.
    pub uidvalidity: u32,
    /// UIDNEXT (the next UID Dovecot will assign).
    pub uidnext: u32,
    /// Format 1.3: HIGHESTMODSEQ (RFC 7162) as Dovecot reports it, where the store keeps
    /// modseqs (its index).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub highest_modseq: Option<u64>,
    /// Keyword table in index order (Maildir: letter `a` + index).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keywords: Vec<Name>,
    /// METADATA entries of this mailbox.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<Attribute>,
    /// Owner and mode of the mailbox directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
    /// uidlist header fields other than V, N, G, verbatim (Maildir).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub uidlist_header_ext: Vec<Name>,
}

impl MailboxMeta {
    /// A mailbox with only a name: no GUID, UIDVALIDITY 0, UIDNEXT 1, nothing else (e.g.
    /// one left out of a backup because its index could not be read).
    pub fn named(name: Name) -> MailboxMeta {
        MailboxMeta {
            name,
            guid: None,
            uidvalidity: 0,
            uidnext: 1,
            highest_modseq: None,
            keywords: Vec::new(),
            attributes: Vec::new(),
            owner: None,
            uidlist_header_ext: Vec::new(),
        }
    }
}

/// What is known of a mailbox's UIDs and modseqs, as IMAP clients see them: what a
/// restore must stay above (the live mailbox in a target, or the newest archived state).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MailboxStatus {
    /// Its UIDVALIDITY.
    pub uidvalidity: u32,
    /// Its UIDNEXT.
    pub uidnext: u32,
    /// Its HIGHESTMODSEQ, where known.
    pub highest_modseq: Option<u64>,
}

/// Per-user facts that do not belong to one mailbox.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, Default)]
pub struct UserMeta {
    /// The user name (`%u`).
    pub name: Name,
    /// Subscribed mailbox names (IMAP names, `/` separator), in file order. May name
    /// mailboxes that do not exist.
    #[serde(default)]
    pub subscriptions: Vec<Name>,
    /// Server METADATA (`/private/vendor/vendor.dovecot/...` entries set with `-s`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub server_attributes: Vec<Attribute>,
    /// dovecot-attributes entries whose key names no mailbox of this backup, verbatim
    /// (key, value), written back unchanged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub raw_attributes: Vec<(Name, Name)>,
    /// Owner and mode of the mail root directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
}

/// Checks of the strings and numbers of archived metadata that a restore writes into
/// Dovecot's control files (`dovecot-uidlist`, `dovecot-keywords`, dbox metadata lines, the
/// `subscriptions` file, `dovecot-attributes`), against each file's grammar, so that a
/// value read from an archive can never add a line or a field to one of them. Each error
/// text names the field and shows the value.
pub mod grammar {
    use super::{AttributeScope, MailboxMeta, MessageMeta, Name, UserMeta};

    fn shown(b: &[u8]) -> String {
        format!("{:?}", Name::from_bytes(b).to_string())
    }

    /// An IMAP atom as Dovecot accepts for a keyword: 1 or more bytes 0x21..0x7e, none of
    /// `( ) { % * " \ ]` (RFC 3501 atom-specials; Dovecot also refuses 8-bit keywords).
    pub(crate) fn is_keyword(k: &[u8]) -> bool {
        !k.is_empty()
            && k.iter()
                .all(|&b| (0x21..0x7f).contains(&b) && !b"(){%*\"\\]".contains(&b))
    }

    /// A space-separated field of `dovecot-uidlist` or a dbox metadata value: no ASCII
    /// control byte (CR, LF, NUL, TAB, ...) and no space.
    pub(crate) fn is_token(t: &[u8]) -> bool {
        t.iter().all(|&b| b > 0x20 && b != 0x7f)
    }

    /// Text that ends at a line end in its file: no CR, LF or NUL.
    pub(crate) fn is_line_text(t: &[u8]) -> bool {
        !t.iter().any(|&b| matches!(b, b'\r' | b'\n' | 0))
    }

    fn need(ok: bool, what: &str, value: &[u8], rule: &str) -> Result<(), String> {
        if ok {
            Ok(())
        } else {
            Err(format!("{what} {} {rule}", shown(value)))
        }
    }

    /// A mailbox's metadata: UIDVALIDITY 0 only without a GUID; GUID of 32 hex digits; keyword table of
    /// IMAP atoms (empty entries are gaps); uidlist header fields and METADATA names are
    /// tokens, METADATA values hold no NUL.
    ///
    /// # Errors
    /// The first field that breaks its file's grammar, named with its value.
    pub(crate) fn check_mailbox(m: &MailboxMeta) -> Result<(), String> {
        if m.uidvalidity == 0 && m.guid.is_some() {
            // 0 stands for "not assigned yet" (a Maildir Dovecot never opened: restored
            // without a uidlist, Dovecot assigns both); such a mailbox has no GUID either.
            return Err("UIDVALIDITY 0 with a mailbox GUID (0 means \"never assigned\")".into());
        }
        if let Some(g) = &m.guid {
            let hex = g.len() == 32 && g.bytes().all(|b| b.is_ascii_hexdigit());
            need(hex, "mailbox GUID", g.as_bytes(), "is not 32 hex digits")?;
        }
        for k in &m.keywords {
            let ok = k.is_empty() || is_keyword(k.as_bytes());
            need(ok, "keyword", k.as_bytes(), "is not an IMAP atom")?;
        }
        for f in &m.uidlist_header_ext {
            let ok = !f.is_empty() && is_token(f.as_bytes());
            need(ok, "uidlist header field", f.as_bytes(), "is not one token")?;
        }
        for a in &m.attributes {
            check_attribute(a.scope, &a.name, &a.value)?;
        }
        Ok(())
    }

    fn check_attribute(_scope: AttributeScope, name: &Name, value: &Name) -> Result<(), String> {
        let n = name.as_bytes();
        need(
            !n.is_empty() && is_line_text(n),
            "METADATA entry",
            n,
            "is empty or holds CR, LF or NUL",
        )?;
        need(
            !value.as_bytes().contains(&0),
            "value of METADATA entry",
            n,
            "holds NUL",
        )
    }

    /// A message's metadata: UID not 0; GUID, POP3 UIDL and uidlist extension fields are
    /// tokens; keywords are IMAP atoms; the Maildir file name holds no `/`, CR, LF or NUL;
    /// dbox metadata lines and attachment references are tokens.
    ///
    /// # Errors
    /// The first field that breaks its file's grammar, named with its value.
    pub(crate) fn check_message(m: &MessageMeta) -> Result<(), String> {
        if m.uid.0 == 0 {
            return Err("not a valid UID (IMAP UIDs start at 1)".into());
        }
        for k in &m.keywords {
            need(
                is_keyword(k.as_bytes()),
                "keyword",
                k.as_bytes(),
                "is not an IMAP atom",
            )?;
        }
        if let Some(u) = &m.pop3_uidl {
            need(
                is_token(u.as_bytes()),
                "POP3 UIDL",
                u.as_bytes(),
                "is not one token",
            )?;
        }
        if let Some(md) = &m.maildir {
            let f = md.filename.as_bytes();
            let ok =
                !f.is_empty() && f != b"." && f != b".." && is_line_text(f) && !f.contains(&b'/');
            need(ok, "Maildir file name", f, "is not one file name")?;
            for x in &md.uidlist_ext {
                // Dovecot keeps extension fields whose key is A..Z only.
                let ok = is_token(x.as_bytes())
                    && x.as_bytes().first().is_some_and(u8::is_ascii_uppercase);
                need(
                    ok,
                    "uidlist field",
                    x.as_bytes(),
                    "is not one token starting with A-Z",
                )?;
            }
        }
        need(
            is_token(m.guid.as_bytes()),
            "GUID",
            m.guid.as_bytes(),
            "is not one token",
        )?;
        if let Some(d) = m.dbox() {
            for (k, v) in &d.other {
                let ok = k.as_bytes().len() == 1 && is_token(k.as_bytes());
                need(ok, "dbox metadata key", k.as_bytes(), "is not one letter")?;
                need(
                    is_line_text(v.as_bytes()),
                    "dbox metadata value",
                    v.as_bytes(),
                    "holds CR, LF or NUL",
                )?;
            }
            for a in &d.attachments {
                need(
                    is_token(a.options.as_bytes()),
                    "attachment options",
                    a.options.as_bytes(),
                    "are not one token",
                )?;
                need(
                    is_token(a.path.as_bytes()),
                    "attachment path",
                    a.path.as_bytes(),
                    "is not one token",
                )?;
            }
        }
        Ok(())
    }

    /// A user's metadata: subscriptions are not empty and hold no NUL (the file escapes CR, LF and TAB);
    /// METADATA names and dictionary keys hold no CR, LF or NUL, values no NUL.
    ///
    /// # Errors
    /// The first field that breaks its file's grammar, named with its value.
    pub fn check_user(u: &UserMeta) -> Result<(), String> {
        for s in &u.subscriptions {
            need(
                !s.is_empty() && !s.as_bytes().contains(&0),
                "subscription",
                s.as_bytes(),
                "is empty or holds NUL",
            )?;
        }
        for a in &u.server_attributes {
            check_attribute(a.scope, &a.name, &a.value)?;
        }
        for (k, v) in &u.raw_attributes {
            check_attribute(AttributeScope::Private, k, v)?;
        }
        Ok(())
    }
}
