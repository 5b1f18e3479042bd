//! The maildump archive format, version 1 (normative text: `format-spec/FORMAT.md`).
//!
//! An archive is a sequence of zstd frames that decompresses, with any zstd tool, to one
//! POSIX tar stream:
//!
//! ```text
//! HEADER   skippable frame 0x184D2A5B: "MAILDUMP", major u16, minor u16, reserved
//! DATA     zstd frames (checksummed, content size set) holding the tar stream:
//!            MAILDUMP.json                          manifest
//!            users/<u>/<mailbox...>/<uid>.eml       message bytes (duplicates: hard links)
//!            users/<u>/<mailbox...>/mailbox.json    mailbox and message metadata
//!            users/<u>/user.json                    subscriptions, server METADATA
//!            two zero blocks                        end of tar
//! INDEX    skippable frame 0x184D2A5C: "MDINDEX\0", u64 dir_len, directory (zstd JSON),
//!          catalogs (one zstd JSON frame per mailbox, with each message's frame and offset)
//! FOOTER   skippable frame 0x184D2A5D, 64-byte payload: "MDFOOTER", major, minor,
//!          reserved u32, index offset u64, index length u64, SHA-256 of the INDEX payload
//! ```
//!
//! All integers are little-endian. Data frames close at a member boundary once they hold
//! [`spec::FRAME_TARGET`] bytes and never exceed [`spec::FRAME_MAX`], so damage to one frame
//! loses only the members in it.

pub mod crypt;
pub(crate) mod frame;
pub mod index;
pub(crate) mod point;
pub(crate) mod prepare;
pub mod reader;
pub(crate) mod recover;
pub mod source;
pub mod spec;
pub mod split;
pub(crate) mod tables;
pub(crate) mod tar;
pub(crate) mod version;
pub mod writer;
