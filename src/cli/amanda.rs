//! `maildump amanda COMMAND ...`: maildump as an Amanda application (the 3.x application
//! API of `Amanda/Application.pm`, as `amraw` and `ampgsql` speak it).
//!
//! Amanda runs `APPLICATION COMMAND --config C --host H --disk D --device DEV --level L ...`
//! and then every property of the application-tool as `--NAME VALUE`. Here:
//!
//! - `support`: the capabilities (levels 0-9, several estimates per call, index lines,
//!   messages on fd 3, `--record`, client estimates).
//! - `selfcheck`: `maildump selfcheck` with the properties' store options, its `OK`/`ERROR`
//!   lines passed on, plus the state directory writable.
//! - `estimate`: one `LEVEL KB 1` line per `--level`, from `maildump estimate --json`: a
//!   full for 0, else an incremental against the state recorded for level L-1 (`L -1 -1`
//!   when there is none).
//! - `backup`: level 0 = a full, level L = an incremental against the state of the newest
//!   recorded level L-1 dump, made by `maildump backup ... -o -` (this same binary), the
//!   archive on fd 1. With `--record` its state (the archive with its message frames punched
//!   out, as `maildump bacula` keeps it) becomes level L's and the states above L are
//!   dropped (a new level L supersedes them). Messages only on fd 3 (`| ` information,
//!   `? ` an item left out or damaged: a STRANGE dump, `sendbackup: error [...]` a failed
//!   one, `sendbackup: size KB`), never on stderr (Amanda fails a dump for any byte there).
//!   Index lines on fd 4: `/user/`, `/user/mailbox/`, `/user/mailbox/UID` and a marker
//!   `/user/mailbox/.maildump-level-L`, so that amrecover fetches the chain.
//! - `restore`: the image on stdin is spooled into the target (`--target`, else the current
//!   directory) as `maildump-amanda.SEQ.level-L.mdump`, in arrival order, with amrecover's
//!   selection (`./user/mailbox[/uid]` arguments) in `maildump-amanda.selection`; `maildump
//!   restore TARGET/maildump-amanda.*.mdump ...` then restores them (README, "Amanda").
//! - `validate`: `maildump verify -` of the image on stdin.
//! - `index`: the index lines of the image on stdin.
//!
//! Amanda 3.5.1 passes properties as `HASH(0x...)` to `restore` and `validate` from
//! `amfetchdump --extract` and `amcheckdump`: those two use none.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command as Process, ExitCode, Stdio};

use clap::Args;

use crate::cli::bacula::{At, keep_index_only, tee};
use maildump::error::Error;
use maildump::format::reader::Archive;

/// `maildump amanda` arguments: Amanda's command line, as it gives it.
#[derive(Args, Debug)]
pub struct AmandaArgs {
    /// support, selfcheck, estimate, backup, restore, validate or index.
    pub command: String,
    /// Amanda's options (`--config C --host H --disk D --device DEV --level L --index line
    /// --message line --record ...`) and the application-tool's properties as `--NAME
    /// VALUE`: `dovecot-config`, `location`, `home`, `attribute-dict`, `attachment-dir`,
    /// `user` (repeatable; default: every user), `state-dir` (required for levels above 0
    /// and `--record`).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "AMANDA-ARGS"
    )]
    pub args: Vec<String>,
}

const CAPABILITIES: &str = "CONFIG YES
HOST YES
DISK YES
MAX-LEVEL 9
INDEX-LINE YES
INDEX-XML NO
MESSAGE-LINE YES
MESSAGE-XML NO
RECORD YES
INCLUDE-FILE NO
INCLUDE-LIST NO
EXCLUDE-FILE NO
EXCLUDE-LIST NO
COLLECTION NO
MULTI-ESTIMATE YES
CALCSIZE NO
CLIENT-ESTIMATE YES
";

/// Options Amanda gives without a value.
const FLAGS: [&str; 2] = ["record", "calcsize"];

/// Amanda's options and properties, by name (`--NAME VALUE` or `--NAME=VALUE`), and the
/// words that are no option (amrecover's selection).
#[derive(Debug, Default)]
struct Opts {
    values: HashMap<String, Vec<String>>,
    words: Vec<String>,
}

impl Opts {
    fn parse(args: &[String]) -> Opts {
        let mut o = Opts::default();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let Some(opt) = a.strip_prefix("--") else {
                o.words.push(a.clone());
                continue;
            };
            let (name, value) = match opt.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (opt, None),
            };
            let name = name.to_ascii_lowercase().replace('_', "-");
            let value = match value {
                Some(v) => v,
                None if FLAGS.contains(&name.as_str()) => String::new(),
                None => it.next().cloned().unwrap_or_default(),
            };
            o.values.entry(name).or_default().push(value);
        }
        o
    }

    fn all(&self, name: &str) -> &[String] {
        self.values.get(name).map_or(&[], Vec::as_slice)
    }

    /// The last value of `name` (properties come after Amanda's own options).
    fn one(&self, name: &str) -> Option<&str> {
        self.all(name).last().map(String::as_str)
    }

    fn has(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    /// `maildump backup`'s store and user options from the properties.
    fn store_args(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (prop, opt) in [
            ("dovecot-config", "--config"),
            ("location", "--location"),
            ("home", "--home"),
            ("attribute-dict", "--attribute-dict"),
            ("attachment-dir", "--attachment-dir"),
        ] {
            if let Some(v) = self.one(prop) {
                out.extend([opt.to_string(), v.to_string()]);
            }
        }
        let users = self.all("user");
        if users.is_empty() {
            out.push("--all-users".into());
        }
        for u in users {
            out.extend(["--user".into(), u.clone()]);
        }
        out
    }

    fn state_dir(&self) -> anyhow::Result<PathBuf> {
        self.one("state-dir").map(PathBuf::from).ok_or_else(|| {
            Error::Usage(
                "the application-tool has no property \"state-dir\" (where maildump keeps each level's state)"
                    .into(),
            )
            .into()
        })
    }

    /// The levels asked for (`--level`, repeated for a multi-estimate; 0 when none).
    fn levels(&self) -> anyhow::Result<Vec<u32>> {
        let mut out = Vec::new();
        for l in self.all("level") {
            let n: u32 = l
                .parse()
                .ok()
                .filter(|n| *n <= 9)
                .ok_or_else(|| Error::Usage(format!("--level {l:?}: expected 0 to 9")))?;
            out.push(n);
        }
        if out.is_empty() {
            out.push(0);
        }
        Ok(out)
    }
}

/// Run one `maildump amanda` command.
///
/// # Errors
/// Usage and I/O errors, with their exit codes (`backup` reports on fd 3 instead).
pub fn run(a: &AmandaArgs) -> anyhow::Result<ExitCode> {
    let o = Opts::parse(&a.args);
    match a.command.to_ascii_lowercase().as_str() {
        "support" => {
            print!("{CAPABILITIES}");
            Ok(ExitCode::SUCCESS)
        }
        "selfcheck" => selfcheck(&o),
        "estimate" => estimate(&o),
        "backup" => backup(&o),
        "restore" => restore(&o),
        "validate" => validate(),
        "index" => index_of_stdin(),
        other => Err(Error::Usage(format!(
            "amanda: unknown command {other:?} (support, selfcheck, estimate, backup, restore, validate, index)"
        ))
        .into()),
    }
}

fn exe() -> anyhow::Result<PathBuf> {
    Ok(std::env::current_exe().map_err(|e| Error::io("the maildump executable", e))?)
}

/// The state file of `level` in `dir`.
fn level_state(dir: &Path, level: u32) -> PathBuf {
    dir.join(format!("level-{level}.mdump"))
}

/// The `--base` a level-`level` dump is made against: none for 0, else the recorded state
/// of level - 1, which must exist.
fn base_for(o: &Opts, level: u32) -> anyhow::Result<Option<PathBuf>> {
    if level == 0 {
        return Ok(None);
    }
    let dir = o.state_dir()?;
    let p = level_state(&dir, level - 1);
    if !p.exists() {
        return Err(Error::NotFound(format!(
            "level {level}: no level {} dump recorded in {} (a level 0 with `record yes` comes first)",
            level - 1,
            dir.display()
        ))
        .into());
    }
    Ok(Some(p))
}

/// `selfcheck`: maildump's checks as `OK`/`ERROR` lines, and the state directory.
fn selfcheck(o: &Opts) -> anyhow::Result<ExitCode> {
    let out = Process::new(exe()?)
        .arg("selfcheck")
        .args(o.store_args())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::io("maildump selfcheck", e))?;
    let mut stdout = io::stdout().lock();
    stdout.write_all(&out.stdout).at("stdout")?;
    for l in String::from_utf8_lossy(&out.stderr).lines() {
        if !l.trim().is_empty() {
            writeln!(stdout, "ERROR {l}").at("stdout")?;
        }
    }
    match o.state_dir() {
        Ok(dir) => match writable(&dir) {
            Ok(()) => writeln!(stdout, "OK state dir {} writable", dir.display()),
            Err(e) => writeln!(stdout, "ERROR state dir: {e}"),
        },
        Err(e) => writeln!(stdout, "ERROR {e}"),
    }
    .at("stdout")?;
    Ok(ExitCode::SUCCESS)
}

/// `dir` exists (or can be made) and this user can create a file in it.
fn writable(dir: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(dir).at(dir)?;
    let probe = dir.join(format!(".maildump-selfcheck.{}", std::process::id()));
    File::create(&probe).at(dir)?;
    fs::remove_file(&probe).at(&probe)?;
    Ok(())
}

/// `estimate`: `LEVEL KB 1` per level; `LEVEL -1 -1` and an `ERROR` line on stderr (the
/// protocol's place for it) for a level that cannot be estimated.
fn estimate(o: &Opts) -> anyhow::Result<ExitCode> {
    let mut stdout = io::stdout().lock();
    for level in o.levels()? {
        match estimate_kb(o, level) {
            Ok(kb) => writeln!(stdout, "{level} {kb} 1"),
            Err(e) => {
                eprintln!(
                    "ERROR maildump: level {level}: {}",
                    crate::cli::error_text(&e)
                );
                writeln!(stdout, "{level} -1 -1")
            }
        }
        .at("stdout")?;
        stdout.flush().at("stdout")?;
    }
    Ok(ExitCode::SUCCESS)
}

fn estimate_kb(o: &Opts, level: u32) -> anyhow::Result<u64> {
    let mut cmd = Process::new(exe()?);
    cmd.arg("estimate").args(o.store_args()).arg("--json");
    cmd.args(crate::cli::identity_args());
    if let Some(b) = base_for(o, level)? {
        cmd.arg("--base").arg(b);
    }
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::io("maildump estimate", e))?;
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && out.status.code() != Some(1) {
        let last = err.lines().last().unwrap_or("(no message)");
        let last = last.strip_prefix("maildump: error: ").unwrap_or(last);
        return Err(Error::Usage(format!(
            "estimate failed (exit {}): {last}",
            out.status.code().unwrap_or(3)
        ))
        .into());
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| Error::Usage(format!("maildump estimate printed no JSON: {e}")))?;
    let bytes = v["write_bytes"].as_u64().unwrap_or(0);
    Ok(bytes.div_ceil(1024).max(1))
}

/// Amanda's message stream (fd 3) or index stream (fd 4).
fn amanda_fd(n: u32) -> anyhow::Result<File> {
    let p = format!("/dev/fd/{n}");
    Ok(fs::OpenOptions::new().append(true).open(&p).at(&p)?)
}

/// `backup`: see the module doc. Exit 0 for a good or STRANGE dump, 1 for a failed one.
fn backup(o: &Opts) -> anyhow::Result<ExitCode> {
    let mut mesg = amanda_fd(3)?;
    let encrypt_to = o.all("encrypt-to");
    match crate::cli::set_recipient_list(encrypt_to).and_then(|()| backup_level(o, &mut mesg)) {
        Ok(code) => Ok(code),
        Err(e) => {
            let text = format!("maildump: error: {}", crate::cli::error_text(&e));
            // The message stream is all Amanda reads: a write failing here has no other
            // place to go.
            let _ = writeln!(mesg, "? {text}");
            let _ = writeln!(mesg, "sendbackup: error [{text}]");
            Ok(ExitCode::from(1))
        }
    }
}

fn backup_level(o: &Opts, mesg: &mut File) -> anyhow::Result<ExitCode> {
    let level = *o.levels()?.first().unwrap_or(&0);
    let base = base_for(o, level)?;
    let record = o.has("record");
    let state = if record || level > 0 {
        Some(o.state_dir()?)
    } else {
        o.state_dir().ok()
    };
    let spool = match &state {
        Some(d) => {
            fs::create_dir_all(d).at(d)?;
            d.join(format!(".pending-{level}.{}.mdump", std::process::id()))
        }
        None => std::env::temp_dir().join(format!(".maildump-amanda.{}.mdump", std::process::id())),
    };
    let mut args: Vec<String> = vec!["backup".into()];
    args.extend(o.store_args());
    if let Some(b) = &base {
        args.extend(["--base".into(), b.display().to_string()]);
    }
    args.extend(["--progress".into(), "none".into(), "-o".into(), "-".into()]);
    let result = run_backup(&args, &spool, mesg);
    let (code, last) = match result {
        Ok(x) => x,
        Err(e) => {
            let _ = fs::remove_file(&spool);
            return Err(e);
        }
    };
    if code > 1 {
        let _ = fs::remove_file(&spool);
        return Err(Error::Usage(format!(
            "maildump backup exited {code}: {}",
            last.as_deref().unwrap_or("(no message)")
        ))
        .into());
    }
    let finished = finish_backup(o, level, &spool, state.as_deref(), record, mesg);
    let _ = fs::remove_file(&spool);
    finished?;
    Ok(ExitCode::SUCCESS)
}

/// After a good backup: the index on fd 4, the size, and with `record` the level's state.
fn finish_backup(
    o: &Opts,
    level: u32,
    spool: &Path,
    state: Option<&Path>,
    record: bool,
    mesg: &mut File,
) -> anyhow::Result<()> {
    if o.has("index") {
        let mut index = io::BufWriter::new(amanda_fd(4)?);
        write_index(spool, Some(level), &mut index)?;
        index.flush().at("/dev/fd/4")?;
    }
    let size = fs::metadata(spool).at(spool)?.len();
    if let (true, Some(dir)) = (record, state) {
        keep_index_only(spool);
        fs::rename(spool, level_state(dir, level)).at(dir)?;
        for above in level + 1..=9 {
            let p = level_state(dir, above);
            if p.exists() {
                fs::remove_file(&p).at(&p)?;
            }
        }
        writeln!(
            mesg,
            "| maildump: recorded as level {level} in {}",
            dir.display()
        )
        .at("/dev/fd/3")?;
    }
    writeln!(mesg, "sendbackup: size {}", size.div_ceil(1024).max(1)).at("/dev/fd/3")?;
    Ok(())
}

/// Run this binary with `args`: its stdout copied to ours and to `copy`, each line of its
/// stderr to `mesg` (`? ` for warnings and errors, `| ` for the rest). Its exit code (3
/// when our stdout failed) and last error line.
fn run_backup(
    args: &[String],
    copy: &Path,
    mesg: &mut File,
) -> anyhow::Result<(u8, Option<String>)> {
    let exe = exe()?;
    let mut child = Process::new(&exe)
        .args(args)
        .args(crate::cli::identity_args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::io(&exe, e))?;
    let stderr = child.stderr.take();
    let mesg2 = mesg.try_clone().at("/dev/fd/3")?;
    let lines = std::thread::spawn(move || messages(stderr, mesg2));
    let copied = match child.stdout.take() {
        Some(mut out) => tee(&mut out, copy),
        None => Ok(()),
    };
    if copied.is_err() {
        let _ = child.kill();
    }
    let status = child.wait().map_err(|e| Error::io(&exe, e))?;
    let last = lines.join().unwrap_or(None);
    copied?;
    let code = status
        .code()
        .and_then(|c| u8::try_from(c).ok())
        .unwrap_or(3);
    Ok((code, last))
}

/// maildump's stderr lines as Amanda messages; the last warning or error line.
fn messages(stderr: Option<std::process::ChildStderr>, mut mesg: File) -> Option<String> {
    let mut last = None;
    for line in BufReader::new(stderr?).lines() {
        let Ok(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        let bad = line.starts_with("maildump: warning:") || line.starts_with("maildump: error:");
        let _ = writeln!(mesg, "{} {line}", if bad { '?' } else { '|' });
        if bad {
            last = Some(line);
        }
    }
    last
}

/// A name as one index path component: control characters (a newline would end the
/// line) as `?`.
fn component(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// The index lines of the archive at `path`: every user and mailbox as a directory, every
/// message as `/user/mailbox/UID`, and with `level` the marker of that level in each
/// mailbox.
fn write_index(path: &Path, level: Option<u32>, out: &mut impl Write) -> anyhow::Result<()> {
    let a = Archive::open_or_recover(path)?;
    let mut users: Vec<String> = a
        .dir
        .users
        .iter()
        .map(|u| component(&u.name.to_string()))
        .collect();
    users.sort();
    for u in &users {
        writeln!(out, "/{u}/").at("the index")?;
    }
    for i in 0..a.dir.mailboxes.len() {
        let cat = a.catalog(i)?;
        let user = component(&cat.user.to_string());
        let mailbox: Vec<String> = cat
            .mailbox
            .name
            .to_string()
            .split('/')
            .map(component)
            .collect();
        let mut dir = format!("/{user}");
        for part in &mailbox {
            dir.push('/');
            dir.push_str(part);
            writeln!(out, "{dir}/").at("the index")?;
        }
        if let Some(l) = level {
            writeln!(out, "{dir}/.maildump-level-{l}").at("the index")?;
        }
        for m in &cat.messages {
            writeln!(out, "{dir}/{}", m.message.uid.0).at("the index")?;
        }
    }
    Ok(())
}

/// `index`: the index lines of the image on stdin.
fn index_of_stdin() -> anyhow::Result<ExitCode> {
    let tmp = tempfile::NamedTempFile::new().map_err(|e| Error::io("$TMPDIR", e))?;
    let mut f = tmp.reopen().at(tmp.path())?;
    io::copy(&mut io::stdin().lock(), &mut f).at("stdin")?;
    let mut out = io::BufWriter::new(io::stdout().lock());
    write_index(tmp.path(), None, &mut out)?;
    out.flush().at("stdout")?;
    Ok(ExitCode::SUCCESS)
}

/// `validate`: `maildump verify -` of the image on stdin; its report only when it fails.
fn validate() -> anyhow::Result<ExitCode> {
    let exe = exe()?;
    let out = Process::new(&exe)
        .args(["verify", "-", "--quiet"])
        .args(crate::cli::identity_args())
        .stdin(Stdio::inherit())
        .output()
        .map_err(|e| Error::io(&exe, e))?;
    if out.status.success() {
        return Ok(ExitCode::SUCCESS);
    }
    io::stderr().write_all(&out.stdout).at("stderr")?;
    io::stderr().write_all(&out.stderr).at("stderr")?;
    Ok(ExitCode::from(1))
}

/// `restore`: spool the image on stdin into the target directory, after the ones already
/// there, and keep amrecover's selection.
fn restore(o: &Opts) -> anyhow::Result<ExitCode> {
    let dir = match o.one("target").or(o.one("directory")) {
        Some(t) => PathBuf::from(t),
        None => std::env::current_dir().at(".")?,
    };
    let level = *o.levels()?.first().unwrap_or(&0);
    let seq = fs::read_dir(&dir)
        .at(&dir)?
        .filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.starts_with("maildump-amanda.") && n.ends_with(".mdump")
        })
        .count();
    let name = format!("maildump-amanda.{seq:03}.level-{level}.mdump");
    let dest = dir.join(&name);
    let part = dir.join(format!(".{name}.part"));
    let mut f = File::create(&part).at(&part)?;
    let mut stdin = io::stdin().lock();
    io::copy(&mut stdin, &mut f).at("stdin")?;
    f.sync_all().at(&part)?;
    fs::rename(&part, &dest).at(&dest)?;
    let selection: Vec<&String> = o.words.iter().filter(|w| w.starts_with("./")).collect();
    if !selection.is_empty() {
        let p = dir.join("maildump-amanda.selection");
        let mut s = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .at(&p)?;
        for w in selection {
            writeln!(s, "{w}").at(&p)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
