//! The one public error type, its kinds and the exit-code table.
//!
//! Every error names the item it is about: a path, a user/mailbox/UID, or an archive offset.
//! Each [`ErrorKind`] maps to one documented exit code ([`ErrorKind::exit_code`]); README.md and
//! `maildump --help` carry the same table.
//!
//! This module must not print, nor depend on clap or anyhow.

use std::io;
use std::path::PathBuf;

/// The path of I/O errors on an archive raised where only the open file or the writer was
/// known; [`Error::in_archive`] and [`Error::name_archive`] put the real path in.
pub(crate) const UNNAMED_ARCHIVE: &str = "<archive>";

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Broad classes of failure. Each maps to one process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The command line or an option value was wrong (exit 2).
    Usage,
    /// Reading or writing a file failed for an operating-system reason (exit 3).
    Io,
    /// The archive is damaged, truncated or holds something hostile (exit 4).
    CorruptArchive,
    /// The archive was written in a format major version this build cannot read (exit 5).
    UnsupportedVersion,
    /// Restore refused to touch existing mail, or to write through a symbolic link planted
    /// in its target (exit 6).
    Conflict,
    /// The mail store being backed up is damaged or unreadable (exit 7).
    StoreDamaged,
    /// The selected user, mailbox or message is not in the archive or store (exit 8).
    NotFound,
    /// An item of the store is beyond a limit of the archive format, so no archive that
    /// readers accept can hold it (exit 9).
    Limit,
    /// A bug in maildump: an internal invariant did not hold (exit 70, `EX_SOFTWARE`).
    Internal,
    /// Stopped by SIGINT or SIGTERM; what the run had created is removed (the command
    /// then dies by the same signal: a shell sees 130 or 143).
    Interrupted,
}

impl ErrorKind {
    /// Process exit code for this kind. 0 is success and 1 means "finished, but some items
    /// were skipped or damaged"; those two are not errors and have no kind.
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorKind::Usage => 2,
            ErrorKind::Io => 3,
            ErrorKind::CorruptArchive => 4,
            ErrorKind::UnsupportedVersion => 5,
            ErrorKind::Conflict => 6,
            ErrorKind::StoreDamaged => 7,
            ErrorKind::NotFound => 8,
            ErrorKind::Limit => 9,
            ErrorKind::Internal => 70,
            ErrorKind::Interrupted => 130,
        }
    }
}

/// Exit code of a run that finished but skipped or lost some items (reported on stderr).
pub const EXIT_PARTIAL: u8 = 1;

/// The error type of every fallible maildump operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bad option or argument.
    #[error("{0}")]
    Usage(String),
    /// An I/O error on a named file or stream.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file, directory or stream (`-` is stdin/stdout).
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The archive is damaged at a named place.
    #[error("corrupt archive: {item}: {detail}")]
    Corrupt {
        /// What is damaged: an offset, a member path, a user/mailbox/UID.
        item: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The archive's format major version is unknown to this reader.
    #[error(
        "unsupported archive format version {major}.{minor}: this maildump reads format {supported}.x; use a newer maildump"
    )]
    UnsupportedVersion {
        /// Major version found in the archive.
        major: u16,
        /// Minor version found in the archive.
        minor: u16,
        /// Major version this build reads.
        supported: u16,
    },
    /// Restore would overwrite or merge into existing mail.
    #[error("refused: {0}")]
    Conflict(String),
    /// A restore or export target holds something it must not write through or over
    /// (a symbolic link below the target's root): nothing is written there.
    #[error("refused: {}: {detail}", path.display())]
    UnsafeTarget {
        /// The entry refused.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// The source mail store is damaged.
    #[error("damaged mail store: {}: {detail}", path.display())]
    StoreDamaged {
        /// The damaged file or directory.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// A selected item does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// An item is beyond a limit of the archive format.
    #[error("over the archive format's limits: {item}: {detail}")]
    Limit {
        /// The item: a message member, a mailbox's catalog, the index.
        item: String,
        /// Which limit.
        detail: String,
    },
    /// An internal invariant did not hold: a bug in maildump.
    #[error("internal error (a bug in maildump, please report it): {0}")]
    Internal(String),
    /// Stopped by a signal before the end.
    #[error("interrupted by a signal; what this run created was removed")]
    Interrupted,
}

impl Error {
    /// Name the archive `path` in an I/O error on it raised where only the open file or
    /// the writer was known (an [`crate::ArchiveWriter`] writes to any `Write`: its
    /// caller knows the destination). Other errors are returned unchanged.
    pub fn name_archive(self, path: &std::path::Path) -> Error {
        match self {
            Error::Io { path: p, source } if p.as_os_str() == UNNAMED_ARCHIVE => Error::Io {
                path: path.to_path_buf(),
                source,
            },
            e => e,
        }
    }

    /// The kind of this error, which decides the exit code.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Usage(_) => ErrorKind::Usage,
            Error::Io { .. } => ErrorKind::Io,
            Error::Corrupt { .. } => ErrorKind::CorruptArchive,
            Error::UnsupportedVersion { .. } => ErrorKind::UnsupportedVersion,
            Error::Conflict(_) | Error::UnsafeTarget { .. } => ErrorKind::Conflict,
            Error::StoreDamaged { .. } => ErrorKind::StoreDamaged,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::Limit { .. } => ErrorKind::Limit,
            Error::Internal(_) => ErrorKind::Internal,
            Error::Interrupted => ErrorKind::Interrupted,
        }
    }

    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Damage at `item` of the archive.
    pub fn corrupt(item: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::Corrupt {
            item: item.into(),
            detail: detail.into(),
        }
    }

    /// The same error, naming the archive file at `path` when it is damage that does not
    /// name it yet (several archives may be given: the message must say which), or an
    /// I/O error on it raised where only the open file was known ([`Error::name_archive`]).
    #[must_use]
    pub fn in_archive(self, path: &std::path::Path) -> Self {
        match self {
            Error::Corrupt { item, detail } => {
                let shown = path.display().to_string();
                let item = if item.contains(&shown) {
                    item
                } else {
                    format!("{shown}: {item}")
                };
                Error::Corrupt { item, detail }
            }
            e => e.name_archive(path),
        }
    }

    /// Damage in the mail store at `path`.
    pub fn store(path: impl Into<PathBuf>, detail: impl Into<String>) -> Self {
        Error::StoreDamaged {
            path: path.into(),
            detail: detail.into(),
        }
    }
}

/// Attach a path to an `io::Result`.
pub(crate) trait IoContext<T> {
    /// Map the error to [`Error::Io`] naming `path`.
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn every_kind_has_its_own_exit_code() {
        let kinds = [
            ErrorKind::Usage,
            ErrorKind::Io,
            ErrorKind::CorruptArchive,
            ErrorKind::UnsupportedVersion,
            ErrorKind::Conflict,
            ErrorKind::StoreDamaged,
            ErrorKind::NotFound,
            ErrorKind::Limit,
            ErrorKind::Internal,
            ErrorKind::Interrupted,
        ];
        let codes: std::collections::HashSet<u8> = kinds.iter().map(|k| k.exit_code()).collect();
        assert_eq!(codes.len(), kinds.len());
        assert!(!codes.contains(&0) && !codes.contains(&EXIT_PARTIAL));
        let limit = Error::Limit {
            item: "user a mailbox B".into(),
            detail: "too many".into(),
        };
        assert_eq!(limit.kind().exit_code(), 9);
        assert_eq!(Error::Internal("x".into()).kind().exit_code(), 70);
    }

    #[test]
    fn in_archive_names_the_file_once() {
        let e = Error::corrupt("header frame at offset 0", "truncated")
            .in_archive(Path::new("a.mdump"));
        assert_eq!(
            e.to_string(),
            "corrupt archive: a.mdump: header frame at offset 0: truncated"
        );
        let io = Error::io("<archive>", io::Error::from(io::ErrorKind::UnexpectedEof));
        let named = io.in_archive(Path::new("a.mdump")).to_string();
        assert!(named.starts_with("a.mdump: "), "{named}");
    }
}
