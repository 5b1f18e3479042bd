//! Restore: put mail from an archive (or a chain) back into a Maildir store.
//!
//! Three modes ([`Mode`]):
//! - **exact**: into mailboxes that do not exist yet, with their original UIDs, UIDVALIDITY,
//!   GUIDs, flags, keywords, dates, subscriptions and METADATA. A target mailbox that holds
//!   mail makes the whole restore fail with [`Error::Conflict`] before anything is written.
//! - **merge**: into existing, possibly live mailboxes: only messages not already there are
//!   added, with new UIDs from the mailbox's next UID on, under Dovecot's uidlist lock
//!   ([`crate::store::maildir::MaildirWriter::merge_mailbox`]); a mailbox that does not exist is created as in
//!   exact mode. Running the same restore twice adds nothing.
//! - **side-folder**: into a new folder tree (`Restored/<date>/<name>`, or `--into`), with a
//!   new mailbox GUID and UIDVALIDITY, so the user can look before moving anything.
//!
//! [`plan`] selects what to restore ([`Selection`]) and checks, before anything is written,
//! that the chain holds every selected message's bytes and (exact mode) that every target
//! is free. Messages whose bytes are damaged in the archive are skipped and counted in
//! [`RestoreStats::lost`]; everything else is restored.

pub mod continuity;
mod exec;
mod parallel;
mod plan;
pub mod select;

pub use exec::restore;
pub use plan::plan;

use std::collections::BTreeMap;

use crate::chain::Chain;
use crate::error::{Error, Result};
use crate::format::index::{MailboxRecord, MessageRecord};
use crate::format::reader::Archive;
use crate::model::{MailboxMeta, MailboxStatus, Name, UserMeta, grammar};
use crate::ops::restore::select::Selection;

use crate::store::Writer;
use crate::store::location::Location;
use continuity::Continuity;

/// How restored mail meets the mail already in the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    /// Only into mailboxes that do not exist yet; everything as it was.
    #[default]
    Exact,
    /// Add what is missing to existing mailboxes, with new UIDs.
    Merge,
    /// Into a new folder tree beside the user's mail.
    SideFolder,
}

/// What to restore, and where.
#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    /// Target store.
    pub location: Option<Location>,
    /// Which users, mailboxes and messages.
    pub selection: Selection,
    /// Restore into this user instead of the original one.
    pub to_user: Option<String>,
    /// Owner for everything written, instead of the archived owner.
    pub owner: Option<(u32, u32)>,
    /// Restore mode.
    pub mode: Mode,
    /// Side-folder prefix (default `Restored/<date of the archive>`).
    pub into: Option<String>,
    /// Also restore the chain's records of deleted mail (mail deleted between archives).
    pub deleted: bool,
    /// dbox targets: keep attachments inside the messages, even where the location has an
    /// attachment directory (for Dovecot 2.4, which no longer writes single-instance
    /// attachments).
    pub inline_attachments: bool,
    /// How mailboxes restored with their UIDs keep clear of UIDs and modseqs IMAP clients
    /// may hold (see [`crate::ops::restore::continuity`]).
    pub continuity: Continuity,
    /// Target users written at once, each by a thread of its own (users that share a
    /// directory, e.g. a mail root or an attachment directory, one after the other); 0:
    /// one per CPU, at most [`MAX_JOBS`]. The result does not depend on it.
    pub jobs: usize,
}

/// The most target users a restore writes at once by default (memory: each holds one
/// decompressed frame, one message and one catalog).
pub(crate) const MAX_JOBS: usize = 4;

impl RestoreOptions {
    fn location(&self) -> Result<&Location> {
        self.location
            .as_ref()
            .ok_or_else(|| Error::Usage("no target location".into()))
    }
}

/// One mailbox to restore.
#[derive(Clone, Debug)]
pub struct PlannedMailbox {
    /// Index in the state archive's mailbox list, when the mailbox is in the state.
    pub catalog: Option<usize>,
    /// Mailbox metadata (from the state, or as last seen for a deleted mailbox).
    pub meta: MailboxMeta,
    /// Records of deleted mail to restore too (`--deleted`).
    pub deleted: Vec<MessageRecord>,
    /// User in the archive.
    pub source_user: Name,
    /// User to write to.
    pub target_user: String,
    /// Name to write to.
    pub target_name: Name,
    /// Messages selected.
    pub messages: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Whether the target mailbox exists (merge and side-folder modes merge into it).
    pub exists: bool,
}

/// Everything a restore will do, checked against the target before writing.
#[derive(Clone, Debug, Default)]
pub struct RestorePlan {
    /// Mailboxes in archive order.
    pub mailboxes: Vec<PlannedMailbox>,
    /// Whether whole users are restored in exact mode (then subscriptions and server
    /// METADATA are too).
    pub whole_users: bool,
}

/// Counts of a finished restore.
#[derive(Clone, Debug, Default)]
pub struct RestoreStats {
    /// Mailboxes written.
    pub mailboxes: u64,
    /// Messages written.
    pub messages: u64,
    /// Messages skipped because the target already had them (merge).
    pub present: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Messages whose bytes were damaged in the archive (not written).
    pub lost: u64,
    /// Named problems (damage found in the archive, lost messages).
    pub warnings: Vec<String>,
    /// One line per message or mailbox: what was (or, in a dry run, would be) done.
    pub report: Vec<String>,
}

fn selected_messages<'a>(
    sel: &'a Selection,
    cat: &'a MailboxRecord,
) -> impl Iterator<Item = &'a MessageRecord> + 'a {
    cat.messages
        .iter()
        .filter(move |r| sel.message_matches(&cat.user, &cat.mailbox.name, &r.message))
}

/// Catalog `i` of `archive` as state: the archive's own records of deleted mail are history
/// and are dropped; only `--deleted` brings deleted mail back (from the whole chain).
fn state_catalog(archive: &Archive, i: usize) -> Result<MailboxRecord> {
    let mut c = archive.catalog(i)?;
    c.deleted.clear();
    Ok(c)
}

/// Check the archived metadata of mailbox `cat` and of `records` that a restore or an
/// export writes into Dovecot's control files against their grammar
/// ([`crate::model::grammar`]), before anything is written.
///
/// # Errors
/// [`Error::Corrupt`] naming the mailbox or message and the value.
pub(crate) fn check_control_fields<'a>(
    cat: &MailboxRecord,
    records: impl IntoIterator<Item = &'a MessageRecord>,
) -> Result<()> {
    let mailbox = || format!("user {} mailbox {}", cat.user, cat.mailbox.name);
    grammar::check_mailbox(&cat.mailbox).map_err(|e| Error::corrupt(mailbox(), e))?;
    for r in records {
        grammar::check_message(&r.message)
            .map_err(|e| Error::corrupt(crate::chain::record_item(cat, r), e))?;
    }
    Ok(())
}

/// [`check_control_fields`] for a user's own metadata (subscriptions, server METADATA).
///
/// # Errors
/// [`Error::Corrupt`] naming the user and the value.
pub(crate) fn check_user_fields(u: &UserMeta) -> Result<()> {
    grammar::check_user(u).map_err(|e| Error::corrupt(format!("user {}", u.name), e))
}

fn side_name(prefix: &str, name: &Name) -> Name {
    let mut n = prefix.trim_end_matches('/').as_bytes().to_vec();
    n.push(b'/');
    n.extend_from_slice(name.as_bytes());
    Name::from_bytes(n)
}

/// The target directory of each mailbox planned so far, per target user.
type TargetDirs = BTreeMap<(String, Vec<Vec<u8>>), Name>;

/// Refuse a target name the location's layout cannot hold, or one whose directory is that
/// of another mailbox planned for the same user (`a.b` and `a/b` into Maildir++): Dovecot
/// would show one mailbox with the mail of both.
///
/// # Errors
/// [`Error::Usage`] naming the mailbox(es) and why.
fn check_layout(loc: &Location, user: &str, name: &Name, dirs: &mut TargetDirs) -> Result<()> {
    let comps = loc.mailbox_dir_components(name);
    let shown = String::from_utf8_lossy(&comps.join(&b'/')).into_owned();
    if let Some(other) = dirs.get(&(user.to_string(), comps.clone())) {
        return Err(Error::Usage(format!(
            "user {user}: mailboxes {other} and {name} would both be stored in {} of the target ({}), so Dovecot would show one mailbox with the mail of both; nothing was written. Restore them into a location that holds both (Maildir LAYOUT=fs, sdbox, mdbox), or one of them at a time with --mailbox",
            if shown.is_empty() {
                "the mail root"
            } else {
                &shown
            },
            loc.spec
        )));
    }
    if let Some(why) = loc.unholdable_mailbox_name(name) {
        return Err(Error::Usage(format!(
            "user {user}: mailbox {name} cannot be restored into {}: {why}, and Dovecot refuses the name; nothing was written. Restore it into a location of another layout, or leave it out with --mailbox",
            loc.spec
        )));
    }
    dirs.insert((user.to_string(), comps), name.clone());
    Ok(())
}

/// What the newest archive of `chain` after `at` records of `user`'s mailbox `mb` (the same
/// name or GUID, its catalog read): what the restored state may be older than.
///
/// # Errors
/// A damaged catalog.
fn newest_state(
    chain: &Chain,
    at: usize,
    user: &Name,
    mb: &MailboxMeta,
) -> Result<Option<MailboxStatus>> {
    for a in chain
        .archives
        .get(at + 1..)
        .unwrap_or_default()
        .iter()
        .rev()
    {
        let Some(i) = a
            .dir
            .mailboxes
            .iter()
            .position(|e| &e.user == user && e.name == mb.name)
        else {
            continue;
        };
        let m = a.catalog(i)?.mailbox;
        if mb.guid.is_some() && m.guid != mb.guid {
            continue;
        }
        return Ok(Some(MailboxStatus {
            uidvalidity: m.uidvalidity,
            uidnext: m.uidnext,
            highest_modseq: m.highest_modseq,
        }));
    }
    Ok(None)
}

/// Set UIDNEXT, HIGHESTMODSEQ and MODSEQs of mailbox `m`, about to be written with its
/// UIDs, clear of what IMAP clients may hold ([`continuity::apply`], given the live
/// mailbox of the target and the chain's newest state); what was raised, for the report.
///
/// # Errors
/// A damaged live uidlist or index, a damaged catalog.
fn keep_clear(
    chain: &Chain,
    at: usize,
    policy: Continuity,
    w: &Writer,
    m: &PlannedMailbox,
    meta: &mut MailboxMeta,
    messages: &mut [crate::model::MessageMeta],
) -> Result<Option<String>> {
    let live = w.live_state(&meta.name)?;
    let newest = newest_state(chain, at, &m.source_user, &m.meta)?;
    Ok(
        match continuity::apply(policy, meta, messages, live, newest) {
            continuity::Outcome::Raised {
                uidnext,
                highest_modseq,
            } => Some(format!(
                "UIDNEXT {uidnext}, HIGHESTMODSEQ {highest_modseq} (above what IMAP clients may hold)"
            )),
            _ => None,
        },
    )
}

/// Describe a plan, one line per mailbox (for `--dry-run` of exact mode).
pub fn describe(p: &RestorePlan, opts: &RestoreOptions) -> Vec<String> {
    p.mailboxes
        .iter()
        .map(|m| {
            let root = opts
                .location
                .as_ref()
                .and_then(|l| l.root_of(&m.target_user).ok())
                .map(|r| r.display().to_string())
                .unwrap_or_default();
            format!(
                "restore {} / {} ({} messages) -> user {} mailbox {} in {}",
                m.source_user, m.meta.name, m.messages, m.target_user, m.target_name, root
            )
        })
        .collect()
}
