//! `maildump estimate` and `maildump selfcheck`: what backup software asks an agent before
//! a backup (the library's [`maildump::estimate`]; the checks here).

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use crate::cli::args::{AgentArgs, StoreArgs};
use maildump::error::{EXIT_PARTIAL, Error};
use maildump::ops::estimate::{Estimate, estimate};
use maildump::ops::statedir::Namespace;
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
    #[command(flatten)]
    /// Shard and agent, as the backup's.
    pub agent: AgentArgs,
    /// Print one JSON object (`messages` and `bytes`: what will be read; `write_bytes`:
    /// roughly the archive's size; ...).
    #[arg(long)]
    pub json: bool,
}

/// The base an incremental of namespace `ns` at `state_dir` would be made against (none:
/// a full).
pub fn state_dir_base(dir: &Path, ns: &Namespace) -> anyhow::Result<Option<PathBuf>> {
    Ok(maildump::ops::statedir::newest_archive(dir, ns)?.map(PathBuf::from))
}

/// `--agent` names a namespace of a state directory: refused without `--state-dir`.
fn agent_needs_state_dir(agent: &AgentArgs, state_dir: Option<&Path>) -> anyhow::Result<()> {
    if agent.agent.is_some() && state_dir.is_none() {
        return Err(Error::Usage(
            "--agent works with --state-dir only (it names an agent's chain there)".into(),
        )
        .into());
    }
    Ok(())
}

/// The estimate `a` asks for.
fn estimate_of(a: &EstimateArgs) -> anyhow::Result<Estimate> {
    let (loc, userdb) = crate::cli::location_and_userdb(&a.store)?;
    agent_needs_state_dir(&a.agent, a.state_dir.as_deref())?;
    let users = crate::cli::users(&loc, userdb, a.users.all_users, &a.users.users, true)?;
    let users = crate::cli::in_shard(&a.agent, users, false)?;
    let bases = match &a.state_dir {
        Some(d) => state_dir_base(d, &crate::cli::namespace(&a.agent)?)?
            .into_iter()
            .collect(),
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

/// `selfcheck` arguments.
#[derive(Args, Debug)]
pub struct SelfcheckArgs {
    #[command(flatten)]
    /// Store.
    pub store: StoreArgs,
    #[command(flatten)]
    /// Users.
    pub users: UserArgs,
    /// The archive a backup would write (`-`: stdout, nothing to check): its directory must
    /// be writable and hold the estimate.
    #[arg(short = 'o', long = "output", value_name = "PATH")]
    pub output: Option<String>,
    /// The `backup --state-dir` directory: writable, room for the next run's estimate.
    #[arg(long, value_name = "DIR", conflicts_with = "output")]
    pub state_dir: Option<PathBuf>,
    #[command(flatten)]
    /// Shard and agent, as the backup's.
    pub agent: AgentArgs,
}

/// The outcome of the checks: lines printed, the exit code of the first failure.
#[derive(Default)]
struct Checks {
    failed: Option<u8>,
}

impl Checks {
    fn ok(&mut self, text: &str) {
        println!("OK {text}");
    }

    fn error(&mut self, text: &str, e: &anyhow::Error) {
        // maildump's own errors already name their cause (`{:#}` would repeat it).
        match e.downcast_ref::<Error>() {
            Some(own) => println!("ERROR {text}: {own}"),
            None => println!("ERROR {text}: {}", crate::cli::error_text(e)),
        }
        self.failed.get_or_insert(exit_code(e));
    }
}

fn exit_code(e: &anyhow::Error) -> u8 {
    e.downcast_ref::<Error>()
        .map_or(3, |e| e.kind().exit_code())
}

/// `maildump selfcheck`: one `OK ...` or `ERROR ...` line per check on stdout; exit 0 when
/// all passed, else the exit code of the first failed check's error.
///
/// # Errors
/// Only a failing stdout: every check's failure is a line.
pub fn run_selfcheck(a: &SelfcheckArgs) -> anyhow::Result<ExitCode> {
    agent_needs_state_dir(&a.agent, a.state_dir.as_deref())?;
    let mut c = Checks::default();
    if let Some(conf) = &a.store.config {
        check_doveconf(&mut c, conf);
    }
    let (loc, userdb) = match crate::cli::location_and_userdb(&a.store) {
        Ok((loc, userdb)) => {
            let from = a.store.config.as_ref().map_or_else(
                || "--location".to_string(),
                |p| format!("config {}", p.display()),
            );
            c.ok(&format!(
                "{from}: mail location {} (home {})",
                loc.spec,
                loc.home.as_deref().unwrap_or("-")
            ));
            (loc, userdb)
        }
        Err(e) => {
            c.error("mail location", &e);
            return Ok(c.exit());
        }
    };
    let users = match crate::cli::users(&loc, userdb, a.users.all_users, &a.users.users, true)
        .and_then(|u| crate::cli::in_shard(&a.agent, u, false))
    {
        Ok(u) => u,
        Err(e) => {
            c.error("users", &e);
            return Ok(c.exit());
        }
    };
    for u in &users {
        match check_user(&loc, u) {
            Ok(text) => c.ok(&text),
            Err(e) => c.error(&format!("user {u}"), &e),
        }
    }
    let target = match (&a.output, &a.state_dir) {
        (Some(o), _) if o != "-" => Some(
            Path::new(o)
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_path_buf(),
        ),
        (_, Some(d)) => Some(d.clone()),
        _ => None,
    };
    let bases = match crate::cli::namespace(&a.agent).and_then(|ns| {
        a.state_dir
            .as_deref()
            .map(|d| state_dir_base(d, &ns))
            .transpose()
    }) {
        Ok(b) => b.flatten().into_iter().collect::<Vec<_>>(),
        Err(e) => {
            c.error("state dir", &e);
            Vec::new()
        }
    };
    let est = match estimate(&loc, &users, &bases) {
        Ok(est) => {
            c.ok(&format!("estimate: {}", describe(&est)));
            Some(est)
        }
        Err(e) => {
            c.error("estimate", &e.into());
            None
        }
    };
    if let Some(dir) = target {
        check_target(&mut c, &dir, est.as_ref());
    }
    Ok(c.exit())
}

impl Checks {
    fn exit(&self) -> ExitCode {
        ExitCode::from(self.failed.unwrap_or(0))
    }
}

/// `doveconf` on PATH reads `conf` (maildump asks it for the settings it needs).
fn check_doveconf(c: &mut Checks, conf: &Path) {
    let found = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("doveconf"))
            .find(|f| f.is_file())
    });
    let Some(doveconf) = found else {
        let e = Error::NotFound(format!(
            "not found in PATH ({}); without it maildump parses {} itself (no defaults, no includes through doveconf)",
            std::env::var("PATH").unwrap_or_default(),
            conf.display()
        ));
        c.error("doveconf", &e.into());
        return;
    };
    let out = std::process::Command::new(&doveconf)
        .arg("-c")
        .arg(conf)
        .arg("-n")
        .stdin(std::process::Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => {
            c.ok(&format!(
                "doveconf: {} reads {}",
                doveconf.display(),
                conf.display()
            ));
        }
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr);
            let first = err.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            let e = Error::Usage(format!(
                "{} -c {} fails ({}): {first}",
                doveconf.display(),
                conf.display(),
                o.status
            ));
            c.error("doveconf", &e.into());
        }
        Err(e) => c.error("doveconf", &Error::io(&doveconf, e).into()),
    }
}

/// Everything of `user`'s store a backup reads is readable by this process: the mailboxes
/// and their signatures (as the backup takes them), and every directory (listable) and file
/// (readable) below the mail root and the alternate storage. Never follows a symlink.
fn check_user(loc: &Location, user: &str) -> anyhow::Result<String> {
    let reader = maildump::store::open_reader(loc, user)?;
    let handles = reader.mailboxes()?;
    for h in &handles {
        reader.signature(h)?;
    }
    let root = loc.root_of(user)?;
    let mut files = 0u64;
    let mut roots = vec![root.clone()];
    roots.extend(loc.alt_of(user)?.filter(|p| p.exists()));
    for r in &roots {
        files += readable_tree(r)?;
    }
    Ok(format!(
        "user {user}: {} mailboxes, {files} files readable under {}",
        handles.len(),
        root.display()
    ))
}

/// Count the files below `dir`; the first directory that cannot be listed or file that
/// cannot be read is the error.
fn readable_tree(dir: &Path) -> anyhow::Result<u64> {
    use rustix::fs::{Access, access};
    let mut files = 0u64;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).map_err(|e| Error::io(&d, e))? {
            let e = e.map_err(|e| Error::io(&d, e))?;
            let p = e.path();
            let t = e.file_type().map_err(|e| Error::io(&p, e))?;
            if t.is_dir() {
                todo.push(p);
            } else if t.is_file() {
                access(&p, Access::READ_OK).map_err(|e| Error::io(&p, e.into()))?;
                files += 1;
            }
        }
    }
    Ok(files)
}

/// The directory a backup writes into is writable and has room for the estimate.
fn check_target(c: &mut Checks, dir: &Path, est: Option<&Estimate>) {
    if maildump::remote::is_remote(dir) {
        match maildump::ops::statedir::probe_write(dir) {
            Ok(()) => c.ok(&format!(
                "target {} writable (object storage: no space to check)",
                dir.display()
            )),
            Err(e) => c.error("target", &e.into()),
        }
        return;
    }
    let probe = dir.join(format!(".maildump-selfcheck.{}", std::process::id()));
    let made = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(|e| Error::io(dir, e));
    match made {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            c.ok(&format!("target {} writable", dir.display()));
        }
        Err(e) => {
            c.error("target", &e.into());
            return;
        }
    }
    let free = match rustix::fs::statvfs(dir) {
        Ok(s) => s.f_bavail.saturating_mul(s.f_frsize),
        Err(e) => {
            c.error("space", &Error::io(dir, e.into()).into());
            return;
        }
    };
    let Some(est) = est else { return };
    if free >= est.write_bytes {
        c.ok(&format!(
            "space: {free} bytes free in {}, the backup writes about {}",
            dir.display(),
            est.write_bytes
        ));
    } else {
        let e = Error::io(
            dir,
            io::Error::new(
                io::ErrorKind::StorageFull,
                format!(
                    "{free} bytes free, the backup writes about {} bytes",
                    est.write_bytes
                ),
            ),
        );
        c.error("space", &e.into());
    }
}
