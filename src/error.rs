//! The one public error type, its kinds and the exit-code table.
//!
//! Every error names the item it is about: a path, a user/mailbox/UID, or an archive offset.
//! Each [`ErrorKind`] maps to one documented exit code ([`ErrorKind::exit_code`]); README.md and
//! `maildump --help` carry the same table.
//!
//! Where an error comes from another one (an I/O error, a JSON or index parse error, an
//! error of a step inside a user's or a mailbox's work), that one is its
//! [`source`](std::error::Error::source), once: an error's text shows its source's text
//! once, and the command line, walking the chain, leaves out a cause already shown. An
//! operation that fails for one user, mailbox or message adds what it was working on
//! ([`Context`], [`Error::within`]), naming only what the error's own text does not
//! name yet.
//!
//! This module must not print, nor depend on clap or anyhow.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::model::{Name, Uid};

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
    /// An encrypted archive that none of the identities given opens, or no identity was
    /// given (exit 10).
    CannotDecrypt,
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
            ErrorKind::CannotDecrypt => 10,
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
    #[error("corrupt archive: {item}: {}", with_source(detail, source.as_deref()))]
    Corrupt {
        /// What is damaged: an offset, a member path, a user/mailbox/UID.
        item: String,
        /// What is wrong with it.
        detail: String,
        /// The error that found the damage (a JSON or a MIME parse error), if any.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
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
    #[error("damaged mail store: {}: {}", path.display(), with_source(detail, source.as_deref()))]
    StoreDamaged {
        /// The damaged file or directory.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
        /// The error that found the damage (an index or dbox parse error), if any.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
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
    /// An encrypted archive that none of the identities given opens.
    #[error("cannot decrypt {}: {detail}", path.display())]
    CannotDecrypt {
        /// The archive.
        path: PathBuf,
        /// Why: no identity given, or none matches.
        detail: String,
    },
    /// An internal invariant did not hold: a bug in maildump.
    #[error("internal error (a bug in maildump, please report it): {0}")]
    Internal(String),
    /// Stopped by a signal before the end.
    #[error("interrupted by a signal; what this run created was removed")]
    Interrupted,
    /// An error of the work on one user, mailbox or message, which it names
    /// ([`Error::within`]); its kind is its source's.
    #[error("{}", within_text(context, source))]
    Within {
        /// What the operation was working on.
        context: Box<Context>,
        /// The error.
        #[source]
        source: Box<Error>,
    },
}

/// `detail`, then the source's text when there is one and `detail` does not show it yet.
fn with_source(detail: &str, source: Option<&(dyn std::error::Error + Send + Sync)>) -> String {
    match source.map(ToString::to_string) {
        Some(s) if detail.is_empty() => s,
        Some(s) if !detail.contains(&s) => format!("{detail}: {s}"),
        _ => detail.to_string(),
    }
}

/// The source's text, after the parts of `context` it does not name yet.
fn within_text(context: &Context, source: &Error) -> String {
    let inner = source.to_string();
    let named = context.not_named_in(&inner);
    if named.is_empty() {
        inner
    } else {
        format!("{named}: {inner}")
    }
}

/// What an error is about: the user, mailbox, message UID and file an operation was
/// working on, as far as they are known. Shown as `user U mailbox M UID N (file F)`, the
/// form every message of maildump uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Context {
    /// The user (in a restore, the target user).
    pub user: Option<Name>,
    /// The mailbox.
    pub mailbox: Option<Name>,
    /// The message's UID.
    pub uid: Option<Uid>,
    /// The file.
    pub file: Option<PathBuf>,
}

impl Context {
    /// Work on `user`.
    pub fn user(user: impl Into<Name>) -> Context {
        Context {
            user: Some(user.into()),
            ..Context::default()
        }
    }

    /// Work on `user`'s `mailbox`.
    pub fn mailbox(user: impl Into<Name>, mailbox: &Name) -> Context {
        Context {
            mailbox: Some(mailbox.clone()),
            ..Context::user(user)
        }
    }

    /// The same, on the message `uid`.
    #[must_use]
    pub fn uid(mut self, uid: Uid) -> Context {
        self.uid = Some(uid);
        self
    }

    /// The same, on the file at `path`.
    #[must_use]
    pub fn file(mut self, path: impl Into<PathBuf>) -> Context {
        self.file = Some(path.into());
        self
    }

    /// The parts as shown: `user U`, `mailbox M`, `UID N`, and the file's path.
    fn parts(&self) -> Vec<(String, bool)> {
        let mut parts = Vec::new();
        if let Some(u) = &self.user {
            parts.push((format!("user {u}"), false));
        }
        if let Some(m) = &self.mailbox {
            parts.push((format!("mailbox {m}"), false));
        }
        if let Some(n) = self.uid {
            parts.push((format!("UID {n}"), false));
        }
        if let Some(f) = &self.file {
            parts.push((f.display().to_string(), true));
        }
        parts
    }

    /// The parts that `text` does not name yet (a part counts as named where it stands
    /// between word boundaries).
    fn not_named_in(&self, text: &str) -> String {
        let mut out = String::new();
        for (part, is_file) in self.parts() {
            if mentions(text, &part) {
                continue;
            }
            match (out.is_empty(), is_file) {
                (true, _) => out.push_str(&part),
                (false, true) => out.push_str(&format!(" ({part})")),
                (false, false) => {
                    out.push(' ');
                    out.push_str(&part);
                }
            }
        }
        out
    }

    /// Fill what `self` does not know from `outer` (an error crossing two boundaries is
    /// named once, by the union of both).
    fn fill_from(&mut self, outer: Context) {
        self.user = self.user.take().or(outer.user);
        self.mailbox = self.mailbox.take().or(outer.mailbox);
        self.uid = self.uid.or(outer.uid);
        self.file = self.file.take().or(outer.file);
    }
}

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.not_named_in(""))
    }
}

/// Whether `text` holds `word` between word boundaries (`user a` is not in `user ab`).
fn mentions(text: &str, word: &str) -> bool {
    let is_word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    text.match_indices(word).any(|(i, _)| {
        !is_word(text[..i].chars().next_back()) && !is_word(text[i + word.len()..].chars().next())
    })
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
            Error::CannotDecrypt { .. } => ErrorKind::CannotDecrypt,
            Error::Internal(_) => ErrorKind::Internal,
            Error::Interrupted => ErrorKind::Interrupted,
            Error::Within { source, .. } => source.kind(),
        }
    }

    /// The error itself, without the [`Context`]s added around it ([`Error::within`]):
    /// the one to match on.
    pub fn root(&self) -> &Error {
        match self {
            Error::Within { source, .. } => source.root(),
            e => e,
        }
    }

    /// The same error, naming what the operation was working on (`context`), where its
    /// text does not name it yet. An interruption and a usage error name nothing: they
    /// are about the run and its command line, not about an item.
    #[must_use]
    pub fn within(self, context: Context) -> Error {
        match self {
            e @ (Error::Interrupted | Error::Usage(_)) => e,
            Error::Within {
                context: mut inner,
                source,
            } => {
                inner.fill_from(context);
                Error::Within {
                    context: inner,
                    source,
                }
            }
            source => Error::Within {
                context: Box::new(context),
                source: Box::new(source),
            },
        }
    }

    /// An I/O error on `path`; damage that decrypting an archive found
    /// ([`crate::format::crypt::Damaged`], carried in an I/O error through readers that
    /// know only those) is [`Error::Corrupt`] at the chunk's offset.
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        if let Some(d) = source
            .get_ref()
            .and_then(|e| e.downcast_ref::<crate::format::crypt::Damaged>())
        {
            let item = d.item();
            let item = if path.as_os_str() == UNNAMED_ARCHIVE {
                item
            } else {
                format!("{}: {item}", path.display())
            };
            return Error::corrupt(item, d.detail.clone());
        }
        Error::Io { path, source }
    }

    /// Damage at `item` of the archive.
    pub fn corrupt(item: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::Corrupt {
            item: item.into(),
            detail: detail.into(),
            source: None,
        }
    }

    /// Damage at `item` of the archive, found by the error `source`.
    pub(crate) fn corrupt_from(
        item: impl Into<String>,
        detail: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Error::Corrupt {
            item: item.into(),
            detail: detail.into(),
            source: Some(source.into()),
        }
    }

    /// The same error, naming the archive file at `path` when it is damage that does not
    /// name it yet (several archives may be given: the message must say which), or an
    /// I/O error on it raised where only the open file was known ([`Error::name_archive`]).
    #[must_use]
    pub(crate) fn in_archive(self, path: &std::path::Path) -> Self {
        match self {
            Error::Corrupt {
                item,
                detail,
                source,
            } => {
                let shown = path.display().to_string();
                let item = if item.contains(&shown) {
                    item
                } else {
                    format!("{shown}: {item}")
                };
                Error::Corrupt {
                    item,
                    detail,
                    source,
                }
            }
            e => e.name_archive(path),
        }
    }

    /// Damage in the mail store at `path`.
    pub fn store(path: impl Into<PathBuf>, detail: impl Into<String>) -> Self {
        Error::StoreDamaged {
            path: path.into(),
            detail: detail.into(),
            source: None,
        }
    }

    /// Damage in the mail store at `path`, found by the error `source` (its text is the
    /// detail).
    pub fn store_from(
        path: impl Into<PathBuf>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Error::StoreDamaged {
            path: path.into(),
            detail: String::new(),
            source: Some(source.into()),
        }
    }
}

/// Name what an operation was working on in its error ([`Error::within`]).
pub(crate) trait Within<T> {
    /// Map the error to [`Error::within`] `context`.
    fn within(self, context: Context) -> Result<T>;
}

impl<T> Within<T> for Result<T> {
    fn within(self, context: Context) -> Result<T> {
        self.map_err(|e| e.within(context))
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
    fn within_names_what_the_text_does_not_name_yet() {
        let ctx = || Context::mailbox("alice", &Name::from("INBOX")).uid(Uid(7));
        let e = Error::io("m/1.eml", io::Error::from(io::ErrorKind::PermissionDenied));
        let e = e.within(ctx().file("m/1.eml"));
        assert_eq!(
            e.to_string(),
            "user alice mailbox INBOX UID 7: m/1.eml: permission denied"
        );
        assert_eq!(e.kind(), ErrorKind::Io);
        assert!(matches!(e.root(), Error::Io { .. }));
        // the source is the error itself, once
        let src = std::error::Error::source(&e).unwrap().to_string();
        assert_eq!(src, "m/1.eml: permission denied");
        // already named by the message: nothing added ("user al" is not "user alice")
        let named = Error::NotFound("user alice mailbox INBOX: no message with UID 7".into());
        assert_eq!(
            named.within(ctx()).to_string(),
            "not found: user alice mailbox INBOX: no message with UID 7"
        );
        let other = Error::NotFound("user alicia has no mail".into());
        assert_eq!(
            other.within(Context::user("alice")).to_string(),
            "user alice: not found: user alicia has no mail"
        );
        // two boundaries: named once, by the union
        let twice = Error::Conflict("locked".into())
            .within(Context::mailbox("bob", &Name::from("Work")))
            .within(Context::user("bob"));
        assert_eq!(twice.to_string(), "user bob mailbox Work: refused: locked");
        assert_eq!(twice.kind(), ErrorKind::Conflict);
        // an interruption is about the run, a usage error about the command line
        let stop = Error::Interrupted.within(Context::user("bob"));
        assert!(matches!(stop, Error::Interrupted));
        let usage = Error::Usage("give --home".into()).within(Context::user("bob"));
        assert_eq!(usage.to_string(), "give --home");
        assert_eq!(
            Context::default().file("x/y").to_string(),
            "x/y",
            "a file alone is shown bare"
        );
    }

    #[test]
    fn damage_keeps_the_error_that_found_it() {
        let json = serde_json::from_str::<u32>("x").unwrap_err();
        let shown = json.to_string();
        let e = Error::corrupt_from("state.json", "", json);
        assert_eq!(
            e.to_string(),
            format!("corrupt archive: state.json: {shown}")
        );
        let src = std::error::Error::source(&e).unwrap();
        assert_eq!(src.to_string(), shown);
        let bad = io::Error::new(io::ErrorKind::InvalidData, "dovecot.index: bad record_size");
        let e = Error::store_from("/m/dovecot.index", bad);
        assert_eq!(
            e.to_string(),
            "damaged mail store: /m/dovecot.index: dovecot.index: bad record_size"
        );
        assert!(std::error::Error::source(&e).is_some());
        assert!(std::error::Error::source(&Error::store("/m", "x")).is_none());
        assert_eq!(e.kind(), ErrorKind::StoreDamaged);
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
