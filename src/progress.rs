//! Progress reporting through a caller-supplied [`Progress`]; the library never prints.

use serde::Serialize;

/// Something worth telling the caller while a long operation runs.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The operation starts; its totals when they are known beforehand (a restore counts
    /// what it selected; an incremental backup takes its parent's state as the estimate).
    Start {
        /// `backup`, `restore` or `merge`.
        operation: String,
        /// The archive being written (backup, merge).
        #[serde(skip_serializing_if = "Option::is_none")]
        archive_id: Option<String>,
        /// Messages expected.
        #[serde(skip_serializing_if = "Option::is_none")]
        messages: Option<u64>,
        /// Message bytes expected.
        #[serde(skip_serializing_if = "Option::is_none")]
        bytes: Option<u64>,
    },
    /// Starting on a user.
    User {
        /// User name.
        user: String,
    },
    /// Starting on a mailbox.
    Mailbox {
        /// User name.
        user: String,
        /// Mailbox name.
        mailbox: String,
        /// Messages in it.
        messages: u64,
    },
    /// Bytes processed so far, and messages.
    Bytes {
        /// Message bytes processed.
        bytes: u64,
        /// Messages processed.
        messages: u64,
    },
    /// A non-fatal problem: the item is skipped and the exit code will say so.
    Warning {
        /// What happened, naming the item.
        message: String,
    },
    /// Detail for troubleshooting that is neither damage nor loss (e.g. Dovecot's
    /// disposable index cache was ignored because it belongs to an older index): it does
    /// not change the exit code; the command line shows it with `--verbose`.
    Debug {
        /// What happened, naming the item.
        message: String,
    },
    /// A message the backup found was expunged before its bytes were read (or while its
    /// mailbox was read): it is not in the archive. Normal life of a live store, not damage:
    /// it does not change the exit code.
    Expunged {
        /// User name.
        user: String,
        /// Mailbox name.
        mailbox: String,
        /// What was expunged: UID and file, or what is known of it.
        message: String,
    },
    /// Finished.
    Done {
        /// The archive written (backup, merge).
        #[serde(skip_serializing_if = "Option::is_none")]
        archive_id: Option<String>,
        /// Messages processed.
        messages: u64,
        /// Bytes processed.
        bytes: u64,
        /// Message bytes read from the store (backup: what an estimate predicts).
        #[serde(skip_serializing_if = "Option::is_none")]
        read_bytes: Option<u64>,
        /// Warnings reported.
        warnings: u64,
        /// Messages expunged during the run (backup only; see [`Event::Expunged`]).
        #[serde(skip_serializing_if = "is_zero")]
        expunged: u64,
    },
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Receives [`Event`]s, and tells long operations to stop.
pub trait Progress {
    /// Called for every event.
    fn event(&mut self, e: &Event);
    /// Whether the caller wants the operation stopped (e.g. on SIGINT or SIGTERM): backup,
    /// restore and merge check it between messages and return [`crate::Error::Interrupted`]
    /// after removing what they created.
    fn interrupted(&self) -> bool {
        false
    }
}

/// [`crate::Error::Interrupted`] when `progress` says so.
///
/// # Errors
/// [`crate::Error::Interrupted`].
pub fn check(progress: &dyn Progress) -> crate::Result<()> {
    if progress.interrupted() {
        return Err(crate::Error::Interrupted);
    }
    Ok(())
}

/// Ignores everything.
pub struct NoProgress;

impl Progress for NoProgress {
    fn event(&mut self, _e: &Event) {}
}

/// Writes each event as one JSON line to the given writer (for backup software).
pub struct JsonLines<W: std::io::Write>(pub W);

impl<W: std::io::Write> Progress for JsonLines<W> {
    fn event(&mut self, e: &Event) {
        if let Ok(s) = serde_json::to_string(e) {
            // Progress output is best-effort: a closed stderr must not fail the backup.
            let _ = writeln!(self.0, "{s}");
        }
    }
}
