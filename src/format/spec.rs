//! Constants of the archive format, named as in `format-spec/FORMAT.md`. Nothing else lives here.

/// Format major version written by this build. A reader refuses other majors.
pub(crate) const FORMAT_MAJOR: u16 = 1;
/// Lowest format minor version this build writes (on request, `backup --format-minor`).
/// Readers accept any minor of their major.
pub(crate) const FORMAT_MINOR: u16 = 1;
/// Format minor version that defines messages stored in parts (dbox single-instance
/// attachments stored once as blobs).
pub(crate) const FORMAT_MINOR_ATTACHMENTS: u16 = 2;
/// Format minor version that defines MODSEQs (`modseq`, `highest_modseq`).
pub(crate) const FORMAT_MINOR_MODSEQ: u16 = 3;

/// Format minor version that defines the POINT frame (pages for point reads): the minor
/// this build writes unless asked for a lower one.
pub(crate) const FORMAT_MINOR_POINT: u16 = 4;

/// zstd frame magic number (little-endian on disk: `28 B5 2F FD`).
pub(crate) const ZSTD_FRAME_MAGIC: u32 = 0xFD2F_B528;
/// Lowest zstd skippable-frame magic number; skippable magics are `0x184D2A50..=0x184D2A5F`.
pub(crate) const SKIPPABLE_MAGIC_MIN: u32 = 0x184D_2A50;
/// Highest zstd skippable-frame magic number.
pub(crate) const SKIPPABLE_MAGIC_MAX: u32 = 0x184D_2A5F;

/// Skippable-frame magic of the HEADER frame (first frame of every archive).
pub(crate) const HEADER_FRAME_MAGIC: u32 = 0x184D_2A5B;
/// Skippable-frame magic of the INDEX frame.
pub(crate) const INDEX_FRAME_MAGIC: u32 = 0x184D_2A5C;
/// Skippable-frame magic of the FOOTER frame (last frame of every complete archive).
pub(crate) const FOOTER_FRAME_MAGIC: u32 = 0x184D_2A5D;

/// Skippable-frame magic of the POINT frame (1.4), just before the INDEX frame.
pub(crate) const POINT_FRAME_MAGIC: u32 = 0x184D_2A5A;
/// First 8 payload bytes of the POINT frame.
pub(crate) const POINT_MAGIC: &[u8; 8] = b"MDPOINT\0";
/// Last 8 bytes of the POINT frame (the end of its tail).
pub(crate) const POINT_TAIL: &[u8; 8] = b"MDPTAIL\0";
/// Length of the POINT frame's tail: head length, frame length, CRC-32, [`POINT_TAIL`].
pub(crate) const POINT_TAIL_LEN: usize = 28;

/// First 8 payload bytes of the HEADER frame.
pub(crate) const HEADER_MAGIC: &[u8; 8] = b"MAILDUMP";
/// Payload length of the HEADER frame.
pub(crate) const HEADER_PAYLOAD_LEN: usize = 16;
/// First 8 payload bytes of the INDEX frame.
pub(crate) const INDEX_MAGIC: &[u8; 8] = b"MDINDEX\0";
/// First 8 payload bytes of the FOOTER frame.
pub(crate) const FOOTER_MAGIC: &[u8; 8] = b"MDFOOTER";
/// Payload length of the FOOTER frame.
pub(crate) const FOOTER_PAYLOAD_LEN: usize = 64;
/// Length of a skippable frame's header (magic + size).
pub(crate) const SKIPPABLE_HEADER_LEN: usize = 8;
/// Total length of the FOOTER frame, which is the last bytes of the file.
pub(crate) const FOOTER_FRAME_LEN: usize = SKIPPABLE_HEADER_LEN + FOOTER_PAYLOAD_LEN;

/// A data frame is closed at the first member boundary after it holds this many bytes.
/// A point read (`cat`) decompresses its frame up to the message's last byte, on average
/// half a frame: 2 MiB frames made that 0.5-1 ms on the bench corpus, for an archive 0.8%
/// larger than with 8 MiB frames (4 MiB: 0.3%).
pub(crate) const FRAME_TARGET: usize = 2 << 20;
/// A data frame never holds more than this many decompressed bytes (large members are split).
pub(crate) const FRAME_MAX: usize = 16 << 20;
/// Readers refuse a data frame that declares or yields more than this (hostile-input limit).
pub(crate) const FRAME_LIMIT: u64 = 64 << 20;
/// Readers refuse an index larger than this.
pub(crate) const INDEX_LIMIT: u64 = 4 << 30;
/// Readers refuse a JSON metadata member or index part larger than this.
pub(crate) const JSON_LIMIT: u64 = 1 << 30;
/// Largest message the format stores (tar's 11 octal digits hold 8 GiB - 1).
pub const MESSAGE_LIMIT: u64 = (8 << 30) - 1;

/// tar block size.
pub(crate) const TAR_BLOCK: usize = 512;
/// Path of the manifest member, the first tar member of every archive.
pub(crate) const MANIFEST_MEMBER: &str = "MAILDUMP.json";
/// Top directory of per-user members.
pub(crate) const USERS_DIR: &str = "users";
/// Top directory of deleted-mail members (1.1): bytes kept by a merge, catalogs of mailboxes
/// that no longer exist.
pub(crate) const DELETED_DIR: &str = "deleted";
/// Top directory of blobs (1.2): attachments stored once, `blobs/<sha256>`.
pub(crate) const BLOBS_DIR: &str = "blobs";
/// Top directory of the data members of messages stored in parts (1.2): `parts/<sha256>`.
pub(crate) const PARTS_DIR: &str = "parts";
/// File name of a mailbox's metadata member inside its directory.
pub(crate) const MAILBOX_MEMBER: &str = "mailbox.json";
/// File name of a user's metadata member inside the user directory.
pub(crate) const USER_MEMBER: &str = "user.json";
/// Suffix of message members.
pub(crate) const MESSAGE_SUFFIX: &str = ".eml";
/// Maximum length of `from`, `subject` and `message_id` display fields.
pub use crate::mime::headers::FIELD_LIMIT as HEADER_FIELD_LIMIT;
