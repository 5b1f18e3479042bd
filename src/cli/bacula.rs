//! `maildump bacula ...`: maildump as a Bacula (or Bareos) bpipe plugin command.
//!
//! Bacula's bpipe runs one command to read a "file" at backup (its stdout is the file) and
//! one to write it back at restore (its stdin). It gives the backup command no level and no
//! since-time, so the FileSet's `Plugin` line is made by a director-side `|/bin/echo ...`,
//! which substitutes `%i` (job id) and `%l` (level) into the file name and both commands
//! (README, "Bacula"). Here:
//!
//! - `backup`: a full, or an incremental against the *committed* state of the newest job
//!   (Incremental) or of the newest Full (Differential), so that Bacula's own restore
//!   selection (last Full + last Differential + Incrementals since) is exactly the chain.
//!   It runs `maildump backup ... -o -` (this same binary), passes the archive to stdout and
//!   keeps a copy in `STATE/pending/`. The copy keeps only what a later `--base` reads (the
//!   header, the index and the footer: the message frames are punched out, so it takes the
//!   index's size on disk).
//! - `finish` (a client RunScript after the job, `FailJobOnError = yes`): commits the job's
//!   state when the backup exited 0 or 1, else fails the job with maildump's exit code and
//!   last message (bpipe alone would only say "Backup OK -- with warnings").
//! - `receive` (the bpipe writer of each archive at restore): spools it.
//! - `restore` (the bpipe writer of the `/@maildump/restore` trigger, which Bacula restores
//!   last, from the newest job selected): restores the chain that ends with that job's
//!   archive (followed through the archives' parent links) with `maildump restore`.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command as Process, ExitCode, Stdio};

use clap::{Args, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};

use maildump::error::Error;
use maildump::format::reader::Archive;

/// `.at(path)`: an I/O error naming the file it concerns.
pub(crate) trait At<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T, Error>;
}

impl<T> At<T> for io::Result<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T, Error> {
        self.map_err(|e| Error::io(path.as_ref(), e))
    }
}

/// A state file of this agent that does not parse: an I/O error of kind InvalidData.
fn damaged_state(path: &Path, e: serde_json::Error) -> Error {
    Error::io(path, io::Error::new(io::ErrorKind::InvalidData, e))
}

/// `maildump bacula` subcommands.
#[derive(Subcommand, Debug)]
pub enum BaculaCommand {
    /// bpipe reader: back up at the job's level and write the archive to stdout.
    Backup(BackupArgs),
    /// Client RunScript after the job: commit the job's state, or fail the job.
    Finish(FinishArgs),
    /// bpipe writer of an archive at restore: spool it.
    Receive(ReceiveArgs),
    /// bpipe writer of the `/@maildump/restore` trigger: restore the spooled chain.
    Restore(RestoreArgs),
}

/// Bacula's job levels (`%l`), as the director prints them (or their first letter).
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Level {
    /// A full backup.
    #[value(name = "Full", alias = "F", alias = "full")]
    Full,
    /// Against the newest committed job of any level.
    #[value(name = "Incremental", alias = "I", alias = "incremental")]
    Incremental,
    /// Against the newest committed Full.
    #[value(name = "Differential", alias = "D", alias = "differential")]
    Differential,
}

/// `maildump bacula backup`.
#[derive(Args, Debug)]
pub struct BackupArgs {
    /// Bacula's job id (`%i`).
    #[arg(long)]
    pub job: u64,
    /// Bacula's job level (`%l`): Full, Incremental or Differential.
    #[arg(long, value_enum)]
    pub level: Level,
    /// Where this agent keeps the committed jobs' states (index only) and pending runs.
    #[arg(long, value_name = "DIR")]
    pub state_dir: PathBuf,
    /// Options of `maildump backup` (the store and the users: --config, --location, --home,
    /// --all-users, --user ...), given as they are.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "BACKUP-OPTIONS"
    )]
    pub backup: Vec<String>,
}

/// `maildump bacula finish`.
#[derive(Args, Debug)]
pub struct FinishArgs {
    /// Bacula's job id (`%i`).
    #[arg(long)]
    pub job: u64,
    /// The state directory given to `bacula backup`.
    #[arg(long, value_name = "DIR")]
    pub state_dir: PathBuf,
}

/// `maildump bacula receive`.
#[derive(Args, Debug)]
pub struct ReceiveArgs {
    /// The job id of the backup the archive comes from (`%i` at backup time).
    #[arg(long)]
    pub job: u64,
    /// Where archives wait for the restore trigger.
    #[arg(long, value_name = "DIR")]
    pub spool: PathBuf,
}

/// `maildump bacula restore`.
#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The job id of the newest backup restored (`%i` at backup time).
    #[arg(long)]
    pub job: u64,
    /// The spool directory given to `bacula receive`.
    #[arg(long, value_name = "DIR")]
    pub spool: PathBuf,
    /// Options of `maildump restore` given by the FileSet (e.g. `--config FILE`) and `--`,
    /// then the restore's `where` (`%w`): its first word is the target (`/`: the configured
    /// homes; a directory: `--home DIR/%u`), the rest `maildump restore` options (`--user
    /// alice --mailbox INBOX --uid 6`, `--mode merge`, ...).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "OPTIONS-AND-WHERE",
        required = true
    )]
    pub rest: Vec<String>,
}

/// What `backup` leaves for `finish`.
#[derive(Serialize, Deserialize)]
struct Pending {
    level: Level,
    /// `maildump backup`'s exit code (3 when it could not run or its output failed).
    code: u8,
    /// Its last line on stderr.
    last_error: Option<String>,
}

/// Run one `maildump bacula` subcommand.
///
/// # Errors
/// Usage, I/O and not-found errors, with their exit codes.
pub fn run(cmd: BaculaCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BaculaCommand::Backup(a) => backup(&a),
        BaculaCommand::Finish(a) => finish(&a),
        BaculaCommand::Receive(a) => receive(&a),
        BaculaCommand::Restore(a) => restore(&a),
    }
}

fn pending_dir(state: &Path) -> PathBuf {
    state.join("pending")
}

fn committed_dir(state: &Path) -> PathBuf {
    state.join("committed")
}

/// The committed jobs: (job id, level), oldest first.
fn committed(state: &Path) -> anyhow::Result<Vec<(u64, Level)>> {
    let dir = committed_dir(state);
    let mut out = Vec::new();
    for e in fs::read_dir(&dir).at(&dir)? {
        let name = e.at(&dir)?.file_name();
        let Some(id) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".json"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        let p = dir.join(&name);
        let level: Level =
            serde_json::from_slice(&fs::read(&p).at(&p)?).map_err(|e| damaged_state(&p, e))?;
        out.push((id, level));
    }
    out.sort_unstable_by_key(|(id, _)| *id);
    Ok(out)
}

/// The committed job an incremental or a differential at `level` is made against.
fn parent_of(state: &Path, level: Level) -> anyhow::Result<Option<u64>> {
    let jobs = committed(state)?;
    Ok(match level {
        Level::Full => None,
        Level::Incremental => jobs.last().map(|(id, _)| *id),
        Level::Differential => jobs
            .iter()
            .rev()
            .find(|(_, l)| *l == Level::Full)
            .map(|(id, _)| *id),
    })
}

/// Write `value` as JSON to `path` through a temporary file and a rename.
fn write_json<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_vec(value).map_err(|e| Error::Usage(e.to_string()))?;
    let mut f = File::create(&tmp).at(&tmp)?;
    f.write_all(&text).at(&tmp)?;
    f.sync_all().at(&tmp)?;
    fs::rename(&tmp, path).at(path)?;
    Ok(())
}

/// [`backup_job`], and a failure before the backup ran recorded for `finish` too.
fn backup(a: &BackupArgs) -> anyhow::Result<ExitCode> {
    let (pending, committed) = (pending_dir(&a.state_dir), committed_dir(&a.state_dir));
    for d in [&pending, &committed] {
        fs::create_dir_all(d).at(d)?;
    }
    backup_job(a, &pending, &committed).inspect_err(|e| {
        let state = Pending {
            level: a.level,
            code: e
                .downcast_ref::<Error>()
                .map_or(3, |e| e.kind().exit_code()),
            last_error: Some(format!("maildump: error: {}", super::error_text(e))),
        };
        let _ = write_json(&pending.join(format!("{}.json", a.job)), &state);
    })
}

/// The backup options without their `--encrypt-to`s, and those recipients: the agent
/// encrypts what it passes on itself ([`tee`]), so that the copy it keeps is in clear and a
/// later `--base` needs no identity on this host.
pub fn split_encrypt_to(args: &[String]) -> (Vec<String>, Vec<String>) {
    let (mut rest, mut to) = (Vec::new(), Vec::new());
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--encrypt-to" {
            to.extend(it.next().cloned());
        } else if let Some(v) = a.strip_prefix("--encrypt-to=") {
            to.push(v.to_string());
        } else {
            rest.push(a.clone());
        }
    }
    (rest, to)
}

fn backup_job(a: &BackupArgs, pending: &Path, committed: &Path) -> anyhow::Result<ExitCode> {
    let mut args: Vec<String> = vec!["backup".into()];
    args.extend(split_encrypt_to(&a.backup).0);
    if a.level != Level::Full {
        let Some(parent) = parent_of(&a.state_dir, a.level)? else {
            return Err(Error::NotFound(format!(
                "job {}: no committed {} in {} to base this {:?} on; run a Full job",
                a.job,
                if a.level == Level::Differential {
                    "Full"
                } else {
                    "job"
                },
                committed.display(),
                a.level
            ))
            .into());
        };
        args.push("--base".into());
        args.push(
            committed
                .join(format!("{parent}.mdump"))
                .display()
                .to_string(),
        );
    }
    args.extend(["-o".into(), "-".into()]);
    let copy = pending.join(format!("{}.mdump", a.job));
    let (code, last_error) = run_tee(&args, &copy)?;
    if code <= 1 {
        keep_index_only(&copy);
    }
    let state = Pending {
        level: a.level,
        code,
        last_error,
    };
    write_json(&pending.join(format!("{}.json", a.job)), &state)?;
    Ok(ExitCode::from(code))
}

/// Run this binary with `args`, its stdout copied to ours and to `copy`, its stderr passed
/// through; its exit code (3 when our stdout failed) and last stderr line.
fn run_tee(args: &[String], copy: &Path) -> anyhow::Result<(u8, Option<String>)> {
    let exe = std::env::current_exe().map_err(|e| Error::io("the maildump executable", e))?;
    let mut child = Process::new(&exe)
        .args(args)
        .args(super::identity_args())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::io(&exe, e))?;
    let stderr = child.stderr.take();
    let last = std::thread::spawn(move || pass_stderr(stderr));
    let mut out = child.stdout.take();
    let copied = match out.as_mut() {
        Some(o) => tee(o, copy),
        None => Ok(()),
    };
    drop(out);
    if copied.is_err() {
        let _ = child.kill();
    }
    let status = child.wait().map_err(|e| Error::io(&exe, e))?;
    let mut last_error = last.join().unwrap_or(None);
    let code = match copied {
        Err(e) => {
            let text = format!("maildump: error: {}", super::error_text(&e));
            eprintln!("{text}");
            last_error = Some(text);
            3
        }
        Ok(()) => status
            .code()
            .and_then(|c| u8::try_from(c).ok())
            .unwrap_or(3),
    };
    Ok((code, last_error))
}

/// Copy the child's stderr to ours, line by line; its last line.
fn pass_stderr(stderr: Option<std::process::ChildStderr>) -> Option<String> {
    let mut last = None;
    for line in BufReader::new(stderr?).lines() {
        let Ok(line) = line else { break };
        eprintln!("{line}");
        if !line.trim().is_empty() {
            last = Some(line);
        }
    }
    last
}

/// Copy `from` to stdout and to the file `copy`; what goes to stdout is encrypted to the
/// run's recipients when there are any ([`super::recipients`]), the copy stays in clear.
pub(crate) fn tee(from: &mut impl Read, copy: &Path) -> anyhow::Result<()> {
    let mut file = File::create(copy).at(copy)?;
    let stdout = io::stdout();
    match super::recipients() {
        None => {
            let mut out = stdout.lock();
            copy_both(from, &mut out, &mut file, copy)?;
            out.flush().at("stdout")?;
        }
        Some(r) => {
            let mut out = r.wrap(stdout.lock()).at("stdout")?;
            copy_both(from, &mut out, &mut file, copy)?;
            out.finish().and_then(|mut o| o.flush()).at("stdout")?;
        }
    }
    file.sync_all().at(copy)?;
    Ok(())
}

/// Copy `from` to `out` and to `file` (at `copy`).
fn copy_both(
    from: &mut impl Read,
    out: &mut impl Write,
    file: &mut File,
    copy: &Path,
) -> anyhow::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = from.read(&mut buf).at("the backup's output")?;
        if n == 0 {
            return Ok(());
        }
        out.write_all(&buf[..n]).at("stdout")?;
        file.write_all(&buf[..n]).at(copy)?;
    }
}

/// Punch the message frames out of the state copy at `path` (same offsets, holes where
/// the frames were): a later `--base` reads only the header, the index and the footer.
/// Where that fails (a file system without holes), the whole copy stays.
pub(crate) fn keep_index_only(path: &Path) {
    // An encrypted copy's frames are not at their plaintext offsets: it stays whole.
    let mut head = [0u8; maildump::format::crypt::AGE_MAGIC.len()];
    let encrypted = File::open(path).and_then(|mut f| f.read_exact(&mut head));
    if encrypted.is_err() || head == maildump::format::crypt::AGE_MAGIC {
        return;
    }
    let Ok(a) = Archive::open(path, false) else {
        return;
    };
    let frames = &a.dir.frames;
    let (Some(first), Some(last)) = (frames.first(), frames.last()) else {
        return;
    };
    let end = last.offset.saturating_add(last.csize);
    let Ok(f) = fs::OpenOptions::new().write(true).open(path) else {
        return;
    };
    use rustix::fs::{FallocateFlags, fallocate};
    let flags = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
    let _ = fallocate(&f, flags, first.offset, end.saturating_sub(first.offset));
}

fn finish(a: &FinishArgs) -> anyhow::Result<ExitCode> {
    let pending = pending_dir(&a.state_dir);
    let json = pending.join(format!("{}.json", a.job));
    let archive = pending.join(format!("{}.mdump", a.job));
    let state: Pending = match fs::read(&json) {
        Ok(t) => serde_json::from_slice(&t).map_err(|e| damaged_state(&json, e))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let _ = fs::remove_file(&archive);
            return Err(Error::NotFound(format!(
                "job {}: the backup command did not run (nothing in {}); the job's archive is not usable",
                a.job,
                pending.display()
            ))
            .into());
        }
        Err(e) => return Err(Error::io(&json, e).into()),
    };
    if state.code > 1 {
        let _ = fs::remove_file(&archive);
        let _ = fs::remove_file(&json);
        eprintln!(
            "maildump: job {} failed (exit {}): {}",
            a.job,
            state.code,
            state.last_error.as_deref().unwrap_or("(no message)")
        );
        return Ok(ExitCode::from(state.code));
    }
    let committed = committed_dir(&a.state_dir);
    let dest = committed.join(format!("{}.mdump", a.job));
    fs::rename(&archive, &dest).at(&dest)?;
    write_json(&committed.join(format!("{}.json", a.job)), &state.level)?;
    let _ = fs::remove_file(&json);
    prune(&a.state_dir)?;
    Ok(ExitCode::SUCCESS)
}

/// Keep the committed states a later job can be based on: the newest Full and the newest
/// job.
fn prune(state: &Path) -> anyhow::Result<()> {
    let jobs = committed(state)?;
    let newest = jobs.last().map(|(id, _)| *id);
    let full = jobs
        .iter()
        .rev()
        .find(|(_, l)| *l == Level::Full)
        .map(|(id, _)| *id);
    let dir = committed_dir(state);
    for (id, _) in jobs {
        if Some(id) != newest && Some(id) != full {
            for ext in ["mdump", "json"] {
                let p = dir.join(format!("{id}.{ext}"));
                fs::remove_file(&p).at(&p)?;
            }
        }
    }
    Ok(())
}

fn receive(a: &ReceiveArgs) -> anyhow::Result<ExitCode> {
    fs::create_dir_all(&a.spool).at(&a.spool)?;
    let dest = a.spool.join(format!("{}.mdump", a.job));
    let tmp = a.spool.join(format!(".{}.mdump.part", a.job));
    let mut f = File::create(&tmp).at(&tmp)?;
    io::copy(&mut io::stdin().lock(), &mut f).at("stdin")?;
    f.sync_all().at(&tmp)?;
    fs::rename(&tmp, &dest).at(&dest)?;
    Ok(ExitCode::SUCCESS)
}

fn restore(a: &RestoreArgs) -> anyhow::Result<ExitCode> {
    // The trigger's own bytes (empty) are read and dropped.
    io::copy(&mut io::stdin().lock(), &mut io::sink()).at("stdin")?;
    let chain = spooled_chain(&a.spool, a.job)?;
    let (options, target, selection) = split_where(&a.rest)?;
    let mut args: Vec<String> = vec!["restore".into()];
    args.extend(chain.iter().map(|p| p.display().to_string()));
    args.extend(options.iter().cloned());
    if target != "/" {
        args.extend([
            "--home".into(),
            format!("{}/%u", target.trim_end_matches('/')),
        ]);
    }
    args.extend(selection.iter().cloned());
    let exe = std::env::current_exe().map_err(|e| Error::io("the maildump executable", e))?;
    let status = Process::new(&exe)
        .args(&args)
        .args(super::identity_args())
        .status()
        .map_err(|e| Error::io(&exe, e))?;
    for p in &chain {
        let _ = fs::remove_file(p);
    }
    let code = status
        .code()
        .and_then(|c| u8::try_from(c).ok())
        .unwrap_or(3);
    Ok(ExitCode::from(code))
}

/// Split `[OPTIONS... --] TARGET SELECTION...`: the FileSet's options for `maildump
/// restore`, then the restore's `where` (its target and selection).
fn split_where(rest: &[String]) -> anyhow::Result<(&[String], &str, &[String])> {
    let (options, place) = match rest.iter().position(|w| w == "--") {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (&rest[..0], rest),
    };
    let (target, selection) = place.split_first().ok_or_else(|| {
        Error::Usage("bacula restore: no target: the restore's `where` (%w) is empty".into())
    })?;
    if !target.starts_with('/') {
        return Err(Error::Usage(format!(
            "bacula restore: the target {target:?} (the first word of the restore's `where`) is not an absolute path; FileSet options go before `--`"
        ))
        .into());
    }
    Ok((options, target, selection))
}

/// The spooled archives of the chain that ends with job `job`'s archive, oldest first.
fn spooled_chain(spool: &Path, job: u64) -> anyhow::Result<Vec<PathBuf>> {
    let mut by_id = std::collections::HashMap::new();
    for e in fs::read_dir(spool).at(spool)? {
        let p = e.at(spool)?.path();
        if p.extension().is_some_and(|x| x == "mdump") {
            let a = Archive::open_or_recover(&p)?;
            let m = a.manifest();
            by_id.insert(
                m.archive_id.clone(),
                (p, m.parent.as_ref().map(|r| r.archive_id.clone())),
            );
        }
    }
    let last = spool.join(format!("{job}.mdump"));
    let mut at = by_id
        .iter()
        .find(|(_, (p, _))| *p == last)
        .map(|(id, _)| id.clone())
        .ok_or_else(|| {
            Error::NotFound(format!(
                "job {job}: its archive did not reach {} (select the job's archive file too)",
                spool.display()
            ))
        })?;
    let mut chain = Vec::new();
    loop {
        let Some((p, parent)) = by_id.remove(&at) else {
            return Err(Error::NotFound(format!(
                "archive {at}, a parent of job {job}'s archive, did not reach {}: select the whole chain (restore ... current select, or before=...)",
                spool.display()
            ))
            .into());
        };
        chain.push(p);
        match parent {
            Some(id) => at = id,
            None => break,
        }
    }
    chain.reverse();
    Ok(chain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn where_splits_into_options_target_and_selection() {
        let w = words("--config /etc/d.conf --uid-margin 0 -- /srv/r --user alice --uid 6");
        let (o, t, s) = split_where(&w).unwrap();
        assert_eq!((o, t, s), (&w[..4], "/srv/r", &w[6..]));
        let w = words("/srv/r");
        assert_eq!(split_where(&w).unwrap(), (&w[..0], "/srv/r", &w[1..]));
        for bad in ["--config /x --", "--config /x", "relative --user a", ""] {
            let e = split_where(&words(bad)).unwrap_err().to_string();
            assert!(e.contains("target"), "{bad}: {e}");
        }
    }

    #[test]
    fn levels_find_their_parent_and_prune_keeps_what_they_need() {
        let dir = tempfile::tempdir().unwrap();
        let c = committed_dir(dir.path());
        fs::create_dir_all(&c).unwrap();
        assert_eq!(parent_of(dir.path(), Level::Incremental).unwrap(), None);
        for (id, level) in [
            (3, Level::Full),
            (5, Level::Incremental),
            (8, Level::Differential),
        ] {
            write_json(&c.join(format!("{id}.json")), &level).unwrap();
            fs::write(c.join(format!("{id}.mdump")), b"x").unwrap();
        }
        assert_eq!(parent_of(dir.path(), Level::Full).unwrap(), None);
        assert_eq!(parent_of(dir.path(), Level::Incremental).unwrap(), Some(8));
        assert_eq!(parent_of(dir.path(), Level::Differential).unwrap(), Some(3));
        prune(dir.path()).unwrap();
        let kept: Vec<u64> = committed(dir.path()).unwrap().iter().map(|j| j.0).collect();
        assert_eq!(kept, [3, 8]);
        assert!(!c.join("5.mdump").exists());
    }
}
