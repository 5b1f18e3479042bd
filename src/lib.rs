//! maildump: backup and exact restore of Dovecot mail stores.
//!
//! The main types:
//! - [`store`]: reading and writing Dovecot stores, located with Dovecot's `mail_location`
//!   syntax ([`store::location::Location`]): Maildir ([`store::maildir::MaildirReader`],
//!   [`store::maildir::MaildirWriter`]) and sdbox/mdbox with single-instance attachments
//!   ([`store::dbox::DboxReader`], [`store::dbox::DboxWriter`]), behind
//!   [`store::StoreReader`] and [`store::StoreWriter`].
//! - [`format`](mod@format): the archive format: [`format::writer::ArchiveWriter`] writes an archive
//!   sequentially; [`format::reader::Archive`] reads one through its index, or recovers what
//!   it can by scanning a damaged one; [`chain::Chain`] reads full and incremental archives
//!   together.
//! - [`backup`], [`restore`], [`inspect`]: the operations behind the command line.
//!
//! ```no_run
//! use maildump::backup::{backup, BackupOptions};
//! use maildump::store::location::Location;
//!
//! let loc = Location::parse("maildir:~/Maildir", Some("/srv/mail/%u".into())).unwrap();
//! let opts = BackupOptions::new(loc);
//! let file = std::fs::File::create("/tmp/all.mdump").unwrap();
//! let stats = backup(&opts, &["alice".into()], file, &mut maildump::progress::NoProgress).unwrap();
//! println!("{} messages", stats.messages);
//! ```

pub mod backup;
pub mod chain;
pub mod continuity;
pub mod error;
pub mod estimate;
pub mod export;
pub mod format;
pub mod fuzzing;
pub mod headers;
pub mod inspect;
pub mod merge;
pub mod model;
pub mod output;
pub mod progress;
pub mod restore;
pub mod select;
pub mod sink;
pub mod statedir;
pub mod store;

pub use error::{Error, ErrorKind, Result};
