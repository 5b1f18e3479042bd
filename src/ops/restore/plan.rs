//! Planning a restore: what to restore from an archive's state (and, with `--deleted`, the
//! chain's deleted mail), checked before anything is written: every selected message's
//! bytes are in the chain, names are safe and fit the target's layout, target mailboxes
//! are free (exact mode) or mergeable.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::{Mode, PlannedMailbox, RestoreOptions, RestorePlan, TargetDirs};
use super::{
    check_control_fields, check_layout, check_user_fields, selected_messages, side_name,
    state_catalog,
};
use crate::chain::Chain;
use crate::error::{Error, Result};
use crate::format::index::{MailboxRecord, MessageRecord};
use crate::format::reader::Archive;
use crate::model::Name;
use crate::store::Writer;
use crate::store::location::{Location, StoreFormat, check_user_name};
use crate::store::{StoreWriter, check_mailbox_name};

/// Select what to restore from the state of archive `at` of `chain`, check that the chain
/// holds every selected message's bytes, and check the target.
///
/// # Errors
/// [`Error::NotFound`] for an unknown user or mailbox or for bytes no archive given holds
/// (naming the archives to add), [`Error::Corrupt`] for hostile names, [`Error::Conflict`]
/// when an exact-mode target mailbox holds mail.
pub fn plan(chain: &Chain, at: usize, opts: &RestoreOptions) -> Result<RestorePlan> {
    let archive: &Archive = &chain.archives[at];
    let sel = &opts.selection;
    let mut st = Planning {
        chain,
        at,
        opts,
        loc: opts.location()?,
        prefix: String::new(),
        plan: RestorePlan {
            whole_users: sel.mailboxes.is_empty()
                && sel.whole_mailboxes()
                && opts.mode == Mode::Exact,
            ..Default::default()
        },
        users: HashSet::new(),
        users_checked: HashSet::new(),
        missing: Vec::new(),
        missing_ids: BTreeMap::new(),
        writers: BTreeMap::new(),
        live_guids: BTreeMap::new(),
        dirs: TargetDirs::new(),
    };
    check_user_known(chain, at, opts)?;
    st.prefix = opts.into.clone().unwrap_or_else(|| {
        let day = archive
            .manifest()
            .created
            .get(..10)
            .unwrap_or("unknown")
            .to_string();
        format!("Restored/{day}")
    });
    for (catalog, mut cat) in candidates(chain, at, opts)? {
        if let Some(i) = catalog {
            cat.messages = archive.catalog(i)?.messages;
        }
        st.mailbox(catalog, cat)?;
    }
    if !st.missing.is_empty() {
        return Err(missing_error(&st.missing, &st.missing_ids));
    }
    if st.users.len() > 1 && opts.to_user.is_some() {
        return Err(Error::Usage(
            "--to-user needs --user when the archive holds several users".into(),
        ));
    }
    if st.plan.mailboxes.is_empty() {
        return Err(Error::NotFound(match (&sel.user, sel.mailboxes.first()) {
            (Some(u), Some(b)) => {
                format!(
                    "nothing to restore: no mailbox {b} of user {u} (or no message selected) in the archive"
                )
            }
            (None, Some(b)) => {
                format!(
                    "nothing to restore: no mailbox {b} (or no message selected) in the archive"
                )
            }
            _ => "nothing to restore: no mailbox or message selected in the archive".into(),
        }));
    }
    Ok(st.plan)
}

/// `--user` must name a user of the state (or, with `--deleted`, one gone from the store
/// who still has deleted mail).
fn check_user_known(chain: &Chain, at: usize, opts: &RestoreOptions) -> Result<()> {
    let Some(u) = &opts.selection.user else {
        return Ok(());
    };
    let archive = &chain.archives[at];
    let known = archive
        .dir
        .users
        .iter()
        .any(|m| m.name.as_bytes() == u.as_bytes())
        || archive
            .dir
            .mailboxes
            .iter()
            .any(|m| m.user.as_bytes() == u.as_bytes())
        // A user no longer in the state (gone from the store) still has deleted mail.
        || opts.deleted
            && chain.archives[..=at]
                .iter()
                .any(|a| a.dir.gone.iter().any(|m| m.user.as_bytes() == u.as_bytes()));
    if !known {
        return Err(Error::NotFound(format!("user {u} is not in the archive")));
    }
    Ok(())
}

/// The selected mailboxes of the state (their catalog index, without messages: those are
/// read again one mailbox at a time, so memory stays bounded by one catalog), then (with
/// `--deleted`) the chain's selected deleted mail, added to its mailbox or in one of its own.
fn candidates(
    chain: &Chain,
    at: usize,
    opts: &RestoreOptions,
) -> Result<Vec<(Option<usize>, MailboxRecord)>> {
    let archive = &chain.archives[at];
    let sel = &opts.selection;
    let mut cands: Vec<(Option<usize>, MailboxRecord)> = Vec::new();
    for (i, m) in archive.dir.mailboxes.iter().enumerate() {
        if !sel.user_matches(&m.user) || !sel.mailbox_matches(&m.user, &m.name) {
            continue;
        }
        let mut cat = state_catalog(archive, i)?;
        cat.messages = Vec::new();
        cands.push((Some(i), cat));
    }
    if !opts.deleted {
        return Ok(cands);
    }
    let filter = crate::chain::ListFilter::default();
    for (cat, rec) in crate::chain::deleted_in_chain(chain, &filter)? {
        if !sel.user_matches(&cat.user) || !sel.mailbox_matches(&cat.user, &cat.mailbox.name) {
            continue;
        }
        if !sel.message_matches(&cat.user, &cat.mailbox.name, &rec.message) {
            continue;
        }
        let slot = cands.iter_mut().find(|(_, c)| {
            c.user == cat.user
                && (c.mailbox.name == cat.mailbox.name
                    || (c.mailbox.guid.is_some() && c.mailbox.guid == cat.mailbox.guid))
        });
        match slot {
            Some((_, c)) => c.deleted.push(rec),
            None => {
                let mut c = cat.clone();
                c.messages.clear();
                c.deleted = vec![rec];
                cands.push((None, c));
            }
        }
    }
    Ok(cands)
}

/// The error for selected messages whose bytes no archive given holds: how many, which
/// archives to add, and the first few.
fn missing_error(missing: &[String], missing_ids: &BTreeMap<String, u64>) -> Error {
    let total: u64 = missing_ids.values().sum();
    let ids: Vec<String> = missing_ids
        .iter()
        .filter(|(k, _)| k.as_str() != "?")
        .map(|(k, n)| format!("{k} ({n} messages)"))
        .collect();
    Error::NotFound(format!(
        "{total} messages' bytes are in no archive given{}; nothing was written. First: {}",
        if ids.is_empty() {
            String::new()
        } else {
            format!(" (add archive {})", ids.join(", "))
        },
        missing.join("; ")
    ))
}

/// A plan being made: the plan so far and what its checks remember across mailboxes.
struct Planning<'a> {
    chain: &'a Chain,
    at: usize,
    opts: &'a RestoreOptions,
    loc: &'a Location,
    /// Side-folder prefix (`--into`, else `Restored/<day of the archive>`).
    prefix: String,
    plan: RestorePlan,
    users: HashSet<Name>,
    users_checked: HashSet<Name>,
    /// The first few messages whose bytes are in no archive given.
    missing: Vec<String>,
    /// Messages whose bytes are missing, per archive id that holds them (`?`: unknown).
    missing_ids: BTreeMap<String, u64>,
    writers: BTreeMap<String, Writer>,
    /// Per target user, its live Maildir mailboxes by GUID (merge mode).
    live_guids: BTreeMap<String, HashMap<String, Name>>,
    dirs: TargetDirs,
}

impl Planning<'_> {
    /// Plan one candidate mailbox (`catalog`: its index in the state, `None` for one that
    /// holds only deleted mail).
    fn mailbox(&mut self, catalog: Option<usize>, cat: MailboxRecord) -> Result<()> {
        let (opts, loc) = (self.opts, self.loc);
        let chosen: Vec<&MessageRecord> = selected_messages(&opts.selection, &cat)
            .chain(cat.deleted.iter())
            .collect();
        if chosen.is_empty() && !opts.selection.whole_mailboxes() {
            return Ok(());
        }
        self.check_bytes(&cat, &chosen);
        self.users.insert(cat.user.clone());
        let target = match &opts.to_user {
            Some(t) => t.clone(),
            None => check_user_name(cat.user.as_bytes())?.to_string(),
        };
        check_user_name(target.as_bytes()).map_err(|e| Error::Usage(e.to_string()))?;
        let item = format!("user {} mailbox {}", cat.user, cat.mailbox.name);
        check_mailbox_name(&cat.mailbox.name, &item)?;
        let target_name = if opts.mode == Mode::SideFolder {
            side_name(&self.prefix, &cat.mailbox.name)
        } else {
            cat.mailbox.name.clone()
        };
        check_mailbox_name(&target_name, &item)?;
        check_layout(loc, &target, &target_name, &mut self.dirs)?;
        check_control_fields(&cat, chosen.iter().copied())?;
        let archive = &self.chain.archives[self.at];
        if !self.users_checked.contains(&cat.user)
            && let Some(u) = archive.dir.users.iter().find(|u| u.name == cat.user)
        {
            check_user_fields(u)?;
            self.users_checked.insert(cat.user.clone());
        }
        let (target_name, exists) = self.target(&target, target_name, &cat)?;
        self.plan.mailboxes.push(PlannedMailbox {
            catalog,
            meta: cat.mailbox.clone(),
            deleted: cat.deleted.clone(),
            source_user: cat.user.clone(),
            target_user: target,
            target_name,
            messages: chosen.len() as u64,
            bytes: chosen
                .iter()
                .fold(0u64, |b, r| b.saturating_add(r.message.content.size)),
            exists,
        });
        Ok(())
    }

    /// Bytes must be in the chain before anything is written. Bytes this archive should
    /// hold but lost to damage (a frame lost, no index) are not missing from the chain:
    /// those messages are restored as lost, and named.
    fn check_bytes(&mut self, cat: &MailboxRecord, chosen: &[&MessageRecord]) {
        let chain = self.chain;
        let damaged = !chain.archives[self.at].damage.is_empty();
        for r in chosen {
            let lost_here = damaged && !r.is_external();
            if !lost_here && chain.resolve(self.at, cat, r).is_none() {
                if self.missing.len() < 5 {
                    self.missing.push(format!(
                        "user {} mailbox {} UID {}: {}",
                        cat.user,
                        cat.mailbox.name,
                        r.message.uid,
                        chain.missing_reason(r)
                    ));
                }
                *self
                    .missing_ids
                    .entry(r.archive.clone().unwrap_or_else(|| "?".into()))
                    .or_default() += 1;
            }
        }
    }

    /// The target mailbox's name and whether it exists, after checking the target user's
    /// root, that an exact-mode target is free, and that a merge target can be merged.
    fn target(
        &mut self,
        target: &str,
        mut target_name: Name,
        cat: &MailboxRecord,
    ) -> Result<(Name, bool)> {
        let (opts, loc) = (self.opts, self.loc);
        if !self.writers.contains_key(target) {
            let w = Writer::open(loc, target, opts.owner, opts.inline_attachments)?;
            w.check_root()?;
            self.writers.insert(target.to_string(), w);
        }
        let mut exists = match self.writers.get(target) {
            Some(w) => w.mailbox_exists(&target_name)?,
            None => false,
        };
        // Merge: a mailbox renamed since the backup keeps its GUID; merge into it under its
        // new name rather than recreate the old name with copies of its mail.
        if opts.mode == Mode::Merge && !exists && loc.kind == StoreFormat::Maildir {
            if !self.live_guids.contains_key(target) {
                let r = crate::store::maildir::MaildirReader::open(loc, target)?;
                self.live_guids
                    .insert(target.to_string(), r.mailboxes_by_guid()?);
            }
            if let Some(now) = cat
                .mailbox
                .guid
                .as_ref()
                .and_then(|g| self.live_guids.get(target).and_then(|m| m.get(g)))
            {
                target_name = now.clone();
                exists = true;
            }
        }
        if opts.mode == Mode::Exact
            && let Some(w) = self.writers.get(target)
        {
            w.check_free(&target_name)?;
        }
        if exists && opts.mode != Mode::Exact && loc.kind != StoreFormat::Maildir {
            return Err(Error::Usage(format!(
                "user {target} mailbox {target_name}: merging into an existing {} mailbox is not supported yet; restore into a new location, or into a mailbox that does not exist (--mode side-folder --into PREFIX)",
                loc.format
            )));
        }
        Ok((target_name, exists))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::ops::restore::continuity::Continuity;
    use crate::ops::restore::select::Selection;

    fn fixture() -> Chain {
        let v = Path::new(env!("CARGO_MANIFEST_DIR")).join("format-spec/vectors/v1/fixture.mdump");
        Chain::open(&[v.as_path()], true).unwrap()
    }

    /// Options restoring into an empty Maildir store below `root`.
    fn opts(root: &Path, mode: Mode, selection: Selection) -> RestoreOptions {
        let home = format!("{}/%u", root.display());
        RestoreOptions {
            location: Some(Location::parse("maildir:~/Maildir", Some(home)).unwrap()),
            selection,
            to_user: None,
            owner: None,
            mode,
            into: None,
            deleted: false,
            inline_attachments: false,
            continuity: Continuity::Margin(0),
            jobs: 0,
        }
    }

    fn user(u: &str) -> Selection {
        Selection {
            user: Some(u.into()),
            ..Selection::default()
        }
    }

    #[test]
    fn a_whole_user_is_planned_mailbox_by_mailbox() {
        let dir = tempfile::tempdir().unwrap();
        let chain = fixture();
        let p = plan(&chain, 0, &opts(dir.path(), Mode::Exact, user("alice"))).unwrap();
        assert!(p.whole_users);
        let names: Vec<String> = p
            .mailboxes
            .iter()
            .map(|m| m.target_name.to_string())
            .collect();
        assert!(names.contains(&"INBOX".to_string()) && names.contains(&"Work/Sub".to_string()));
        assert!(
            p.mailboxes
                .iter()
                .all(|m| m.target_user == "alice" && !m.exists)
        );
        let inbox = p
            .mailboxes
            .iter()
            .find(|m| m.target_name.as_bytes() == b"INBOX");
        assert_eq!(inbox.map(|m| m.messages), Some(4));
        assert!(!dir.path().join("alice").exists(), "planning wrote nothing");
    }

    #[test]
    fn side_folders_go_below_the_day_of_the_archive() {
        let dir = tempfile::tempdir().unwrap();
        let chain = fixture();
        let sel = Selection {
            mailboxes: vec!["INBOX".into()],
            ..user("alice")
        };
        let p = plan(&chain, 0, &opts(dir.path(), Mode::SideFolder, sel)).unwrap();
        assert_eq!(p.mailboxes.len(), 1);
        assert_eq!(
            p.mailboxes[0].target_name.to_string(),
            "Restored/2026-01-01/INBOX"
        );
        assert!(!p.whole_users);
    }

    #[test]
    fn unknown_users_and_mailboxes_are_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let chain = fixture();
        let Err(e) = plan(&chain, 0, &opts(dir.path(), Mode::Exact, user("nobody"))) else {
            panic!("planned a user the archive does not hold")
        };
        assert_eq!(
            e.to_string(),
            "not found: user nobody is not in the archive"
        );
        let sel = Selection {
            mailboxes: vec!["Nope".into()],
            ..user("alice")
        };
        let Err(e) = plan(&chain, 0, &opts(dir.path(), Mode::Exact, sel)) else {
            panic!("planned a mailbox the archive does not hold")
        };
        assert_eq!(e.kind(), crate::ErrorKind::NotFound, "{e}");
    }
}
