//! maildump: backup and exact restore of Dovecot mail stores.
//!
//! The crate is layered; each layer knows only those below it:
//!
//! - [`model`]: mail as Dovecot sees it (users, mailboxes, messages, flags, keywords,
//!   METADATA), with the grammar every name from an archive must pass; [`mime`]: RFC 2047
//!   display headers and the MIME part layout of messages stored with their attachments
//!   apart (shared by stores and the format).
//! - [`format`](mod@format): the archive format (`format-spec/FORMAT.md`):
//!   [`ArchiveWriter`] writes one sequentially; [`Archive`] reads one through its index, or
//!   recovers what it can by scanning a damaged one. It never imports [`store`].
//! - [`store`]: Dovecot stores (Maildir, sdbox, mdbox, single-instance attachments),
//!   located with Dovecot's `mail_location` syntax ([`Location`]), behind
//!   [`StoreReader`] and [`StoreWriter`]. It never imports [`format`](mod@format).
//! - [`chain`]: full and incremental archives read together ([`Chain`]): the state at any
//!   archive, where each message's bytes are, and the mail deleted between states.
//! - [`ops`]: the operations behind the command line: [`backup()`], [`plan`] then
//!   [`restore()`], [`merge()`], [`export()`], `list`/`cat`/`verify` ([`ops::inspect`]) and
//!   the `--state-dir` schedule ([`StateDir`]).
//!
//! The library never prints: progress, warnings and expunged mail reach the caller as
//! [`Event`]s through a [`Progress`] sink, errors as [`Error`] (with an [`ErrorKind`] per
//! exit code). The `maildump` binary (feature `cli`, on by default) adds the command line.
//!
//! Reading an archive (one of the format's test vectors):
//!
//! ```
//! use std::path::Path;
//! use maildump::{Chain, ListFilter};
//!
//! let chain = Chain::open(&[Path::new("format-spec/vectors/v1/fixture.mdump")], false)?;
//! let at = chain.last();
//! let mut out = Vec::new();
//! let n = maildump::ops::inspect::list(&chain, at, &ListFilter::default(), true, &mut out)?;
//! assert_eq!(n as usize, String::from_utf8_lossy(&out).lines().count());
//! # Ok::<(), maildump::Error>(())
//! ```
//!
//! Backing up a user (needs a store, so not run here):
//!
//! ```no_run
//! use maildump::{BackupOptions, Location, NoProgress, backup};
//!
//! let loc = Location::parse("maildir:~/Maildir", Some("/srv/mail/%u".into()))?;
//! let opts = BackupOptions::new(loc);
//! let file = std::fs::File::create("/tmp/all.mdump").map_err(|e| maildump::Error::io("/tmp/all.mdump", e))?;
//! let stats = backup(&opts, &["alice".into()], file, &mut NoProgress)?;
//! println!("{} messages", stats.messages);
//! # Ok::<(), maildump::Error>(())
//! ```

pub mod chain;
pub mod error;
pub mod format;
#[doc(hidden)]
pub mod fuzzing;
pub mod mime;
pub mod model;
pub mod ops;
pub mod output;
pub mod progress;
pub mod remote;
pub mod store;

// The library's API: what the command line and other programs use.
pub use chain::{Chain, ListFilter, parse_duration, parse_time};
pub use error::{Error, ErrorKind, Result};
pub use format::reader::Archive;
pub use format::writer::{ArchiveWriter, WriterOptions};
pub use ops::backup::{BackupOptions, BackupStats, backup};
pub use ops::export::{ExportFormat, ExportOptions, ExportStats, export};
pub use ops::merge::{MergeOptions, MergeStats, merge};
pub use ops::restore::continuity::Continuity;
pub use ops::restore::select::{Selection, SeqSet, parse_restore_list};
pub use ops::restore::{Mode, RestoreOptions, RestorePlan, RestoreStats, plan, restore};
pub use ops::statedir::StateDir;
pub use progress::{Event, NoProgress, Progress};
pub use store::location::{Location, StoreFormat};
pub use store::{StoreReader, StoreWriter};
