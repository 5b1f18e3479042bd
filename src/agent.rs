//! `maildump estimate` and `maildump selfcheck`: what backup software asks an agent before
//! a backup (the library's [`maildump::estimate`]; the checks here).

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use crate::cli::StoreArgs;
use maildump::error::{EXIT_PARTIAL, Error};
use maildump::estimate::{Estimate, estimate};
use maildump::statedir::State;
use maildump::store::location::Location;

/// Which users (as `backup` takes them).
#[derive(Args, Debug, Clone)]
pub struct UserArgs {
    /// User (repeatable).
    #[arg(
        long = "user",
        value_name = "NAME",
        required_unless_present = "all_users"
    )]
    pub users: Vec<String>,
    /// Every user found at the %u position of the home (or location) template.
    #[arg(long, conflicts_with = "users")]
    pub all_users: bool,
}

/// `estimate` arguments.
#[derive(Args, Debug)]
pub struct EstimateArgs {
    #[command(flatten)]
    /// Store.
    pub store: StoreArgs,
    #[command(flatten)]
    /// Users.
    pub users: UserArgs,
    /// Estimate an incremental against this archive (the parent; repeat for older archives
    /// of the chain, newest first), as `backup --base` would make it. Without --base or
    /// --state-dir: a full backup.
    #[arg(long = "base", value_name = "ARCHIVE")]
    pub bases: Vec<PathBuf>,
    /// Estimate the next run of `backup --state-dir DIR`: an incremental against the newest
    /// archive recorded there (a full when there is none). The lock is not taken.
    #[arg(long, value_name = "DIR", conflicts_with = "bases")]
    pub state_dir: Option<PathBuf>,
    /// Print one JSON object (`messages` and `bytes`: what will be read; `write_bytes`:
    /// roughly the archive's size; ...).
    #[arg(long)]
    pub json: bool,
}

/// The users of `u` in the store at `loc`.
pub fn users_of(loc: &Location, u: &UserArgs) -> anyhow::Result<Vec<String>> {
    let users = if u.all_users {
        loc.discover_users()?
    } else {
        u.users.clone()
    };
    if users.is_empty() {
        return Err(Error::NotFound("no users found".into()).into());
    }
    Ok(users)
}

/// The base an incremental at `state_dir` would be made against (none: a full).
pub fn state_dir_base(dir: &Path) -> anyhow::Result<Option<PathBuf>> {
    let state = State::read(dir)?;
    let Some(newest) = state.archives.last() else {
        return Ok(None);
    };
    let p = dir.join(&newest.file);
    if !p.exists() {
        return Err(Error::NotFound(format!(
            "{} is recorded in {} as the newest archive, but the file is gone",
            p.display(),
            dir.join(maildump::statedir::STATE_FILE).display()
        ))
        .into());
    }
    Ok(Some(p))
}

/// The estimate `a` asks for.
fn estimate_of(a: &EstimateArgs) -> anyhow::Result<Estimate> {
    let loc = crate::location(&a.store)?;
    let users = users_of(&loc, &a.users)?;
    let bases = match &a.state_dir {
        Some(d) => state_dir_base(d)?.into_iter().collect(),
        None => a.bases.clone(),
    };
    Ok(estimate(&loc, &users, &bases)?)
}

/// `maildump estimate`: prints the estimate; exit 1 when a mailbox could not be scanned.
///
/// # Errors
/// As the backup's: usage, an unreadable store or base.
pub fn run_estimate(a: &EstimateArgs) -> anyhow::Result<ExitCode> {
    let est = estimate_of(a)?;
    for u in &est.unreadable {
        eprintln!("maildump: warning: {u}: not estimated (the backup names it too)");
    }
    let mut out = io::stdout().lock();
    if a.json {
        let text = serde_json::to_string(&est).map_err(|e| Error::Usage(e.to_string()))?;
        writeln!(out, "{text}").map_err(|e| Error::io("stdout", e))?;
    } else {
        writeln!(out, "{}", describe(&est)).map_err(|e| Error::io("stdout", e))?;
    }
    Ok(if est.unreadable.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_PARTIAL)
    })
}

/// One line for people.
fn describe(e: &Estimate) -> String {
    let what = match &e.base {
        Some(b) => format!("an incremental against {}", b.display()),
        None => "a full backup".to_string(),
    };
    format!(
        "{what} reads {} messages ({} bytes) and records {} messages in {} mailboxes ({} unchanged) of {} users; it writes about {} bytes",
        e.messages,
        e.bytes,
        e.total_messages,
        e.mailboxes,
        e.mailboxes_unchanged,
        e.users,
        e.write_bytes
    )
}
