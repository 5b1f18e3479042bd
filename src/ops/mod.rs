//! The operations behind the command line, each built on [`crate::format`] (archives),
//! [`crate::chain`] (state across archives) and [`crate::store`] (Dovecot stores):
//!
//! - [`backup`]: stores into an archive, full or incremental;
//! - [`restore`]: a selection of an archive's state into a store (plan, then write);
//! - [`merge`]: a chain into one full archive;
//! - [`export`]: mail as mbox, `.eml` or a plain Maildir;
//! - [`inspect`]: `list`, `cat` and `verify`;
//! - [`statedir`]: the `--state-dir` schedule of full and incremental archives, per agent;
//! - [`shard`]: which users the agent of `--shard I/N` backs up.

pub mod backup;
pub mod estimate;
pub mod export;
pub mod inspect;
pub mod merge;
pub mod restore;
pub mod shard;
pub mod statedir;
