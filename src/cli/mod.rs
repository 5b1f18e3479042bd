//! The `maildump` command line: argument definitions ([`args`]), one module per command
//! (each turns its arguments into library options, calls the library and prints), and what
//! they share: the store location, opening archives, writing an archive to its destination.

pub mod agent;
pub mod amanda;
pub mod args;
pub mod backup;
pub mod bacula;
pub mod docs;
pub mod events;
pub mod export;
pub mod inspect;
pub mod merge;
pub mod progress;
pub mod restore;
pub mod sink;

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use maildump::error::EXIT_PARTIAL;
use maildump::ops::statedir::Namespace;
use maildump::remote::{S3Url, Upload};
use maildump::store::userdb::{self, Userdb};
use maildump::{Chain, Error, Location, StoreFormat};

use args::{Command, StoreArgs};
use maildump::format::crypt::Recipients;
use sink::write_behind;

/// The store location from `--config` (Dovecot 2.3 or 2.4, [`maildump::store::config`]) or
/// `--location`, with `--home`, `--attribute-dict` and `--attachment-dir` taking precedence.
pub fn location(s: &StoreArgs) -> anyhow::Result<Location> {
    Ok(location_and_userdb(s)?.0)
}

/// [`location`], and the userdb of `--config` ([`Userdb::Absent`] without one), read once:
/// its homes are in the location, its users are for [`users`].
pub fn location_and_userdb(s: &StoreArgs) -> anyhow::Result<(Location, Userdb)> {
    let mut loc = match (&s.config, &s.location) {
        (Some(conf), _) => maildump::store::config::read(conf)?.location,
        (None, Some(l)) => Location::parse(l, None)?,
        (None, None) => return Err(Error::Usage("give --config or --location".into()).into()),
    };
    if s.home.is_some() {
        loc.home = s.home.clone();
    }
    if s.attribute_dict.is_some() {
        loc.attribute_dict = s.attribute_dict.clone();
    }
    if loc.attribute_dict.is_none() && loc.home.is_some() {
        loc.attribute_dict = Some("file:%h/dovecot-attributes".into());
    }
    if loc.kind == StoreFormat::Maildir {
        // Dovecot ignores mail_attachment_dir for Maildir (it never takes attachments out
        // of Maildir messages); so does maildump when the config sets it.
        loc.attachment_dir = None;
    }
    if s.attachment_dir.is_some() {
        loc.attachment_dir = s.attachment_dir.clone();
    }
    if loc.attachment_dir.is_some() && loc.kind == StoreFormat::Maildir {
        return Err(Error::Usage(
            "mail_attachment_dir (--attachment-dir) applies to sdbox and mdbox stores only".into(),
        )
        .into());
    }
    // Users the userdb gives a home of their own are read and written there.
    let userdb = match &s.config {
        Some(conf) => userdb::read(conf)?,
        None => Userdb::Absent,
    };
    if let Userdb::Users(list) = &userdb {
        for u in list {
            if let Some(h) = &u.home {
                loc.homes.insert(u.name.clone(), h.clone());
            }
        }
    }
    loc.check_templates()?;
    Ok((loc, userdb))
}

/// The users a run works on: those given, or with `--all-users` the users of the userdb
/// that have a mail store, or (no userdb, or one that cannot be listed: said on stderr
/// unless `quiet`) the users found at the home template's user position.
///
/// # Errors
/// No user found; an unreadable store root.
pub fn users(
    loc: &Location,
    userdb: Userdb,
    all_users: bool,
    given: &[String],
    quiet: bool,
) -> anyhow::Result<Vec<String>> {
    let users = if !all_users {
        given.to_vec()
    } else {
        match userdb {
            Userdb::Absent => loc.discover_users()?,
            Userdb::Unlisted(why) => {
                if !quiet {
                    eprintln!(
                        "maildump: note: users found by scanning the home template, not from the userdb: {why}"
                    );
                }
                loc.discover_users()?
            }
            Userdb::Users(list) => with_store(loc, list, quiet)?,
        }
    };
    if users.is_empty() {
        return Err(Error::NotFound("no users found".into()).into());
    }
    Ok(users)
}

/// The users of `users` in `--shard` (all without it); none: [`Error::NotFound`]. `talk`:
/// say how many on stderr.
pub fn in_shard(
    agent: &args::AgentArgs,
    users: Vec<String>,
    talk: bool,
) -> anyhow::Result<Vec<String>> {
    let Some(shard) = &agent.shard else {
        return Ok(users);
    };
    let all = users.len();
    let mine: Vec<String> = users.into_iter().filter(|u| shard.holds(u)).collect();
    if mine.is_empty() {
        return Err(Error::NotFound(format!(
            "none of the {all} users falls in shard {shard} (nothing to back up)"
        ))
        .into());
    }
    if talk {
        eprintln!("maildump: shard {shard}: {} of {all} users", mine.len());
    }
    Ok(mine)
}

/// The namespace of a `--state-dir` run: `--agent`, else `shard-I-of-N` with `--shard`,
/// else the default one.
pub fn namespace(agent: &args::AgentArgs) -> anyhow::Result<Namespace> {
    Ok(match (&agent.agent, &agent.shard) {
        (Some(name), _) => Namespace::named(name)?,
        (None, Some(shard)) => shard.namespace(),
        (None, None) => Namespace::default(),
    })
}

/// The userdb users of `list` that have a mail store; the others are named in one note.
fn with_store(loc: &Location, list: Vec<userdb::User>, quiet: bool) -> anyhow::Result<Vec<String>> {
    let mut users = Vec::new();
    let mut no_store = Vec::new();
    for u in list {
        match loc.existing_root_of(&u.name) {
            Ok(_) => users.push(u.name),
            Err(Error::NotFound(_)) => no_store.push(u.name),
            Err(e) => return Err(e.into()),
        }
    }
    if !no_store.is_empty() && !quiet {
        eprintln!(
            "maildump: note: {} users of the userdb have no mail store yet (nothing to back up): {}",
            no_store.len(),
            no_store.join(", ")
        );
    }
    Ok(users)
}

/// An error and its causes, each cause once: a cause whose text the message already holds
/// (an I/O error that names its OS error) is not repeated. Archives spooled from stdin
/// are named by their place in the stream.
pub fn error_text(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !text.contains(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
    }
    for (p, name) in STDIN_NAMES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
    {
        text = text.replace(&p.display().to_string(), name);
    }
    text
}

/// Names of the archives spooled from stdin, by their temporary path: "stdin" or "stdin
/// (archive N of the stream)", the name messages give them.
static STDIN_NAMES: std::sync::Mutex<Vec<(PathBuf, String)>> = std::sync::Mutex::new(Vec::new());

/// How messages name the archive at `path`: its path, or its place on stdin.
pub fn shown(path: &Path) -> String {
    let names = STDIN_NAMES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    names
        .iter()
        .find(|(p, _)| p == path)
        .map_or_else(|| path.display().to_string(), |(_, n)| n.clone())
}

/// The archive files an argument names: itself, or for `-` every archive of the stream on
/// stdin (one, or a chain sent concatenated: `cat full.mdump inc.mdump | maildump restore -`),
/// each spooled to `stdin.N.mdump` in a temporary directory that lives as long as the
/// returned guard.
pub fn archive_paths(arg: &str) -> anyhow::Result<(Vec<PathBuf>, Option<tempfile::TempDir>)> {
    if arg != "-" {
        return Ok((vec![PathBuf::from(arg)], None));
    }
    let dir = tempfile::Builder::new()
        .prefix("maildump-stdin.")
        .tempdir()
        .map_err(|e| Error::io("a temporary directory for stdin ($TMPDIR)", e))?;
    let mut paths = Vec::new();
    let mut input = stdin_plaintext()?;
    let split = maildump::format::split::split(&mut input, "stdin", |i| {
        let p = dir.path().join(format!("stdin.{}.mdump", i + 1));
        let f = std::fs::File::create(&p).map_err(|e| Error::io(&p, e))?;
        paths.push(p);
        Ok(io::BufWriter::with_capacity(1 << 20, f))
    })?;
    let mut names = STDIN_NAMES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for (i, p) in paths.iter().enumerate() {
        let name = if split.archives == 1 {
            "stdin".to_string()
        } else {
            format!("stdin (archive {} of the stream)", i + 1)
        };
        names.push((p.clone(), name));
    }
    if split.truncated {
        eprintln!(
            "maildump: warning: stdin: archive {} of the stream ends without its FOOTER (truncated); what it holds is recovered by scanning",
            split.archives
        );
    }
    Ok((paths, Some(dir)))
}

/// Stdin as archives: an encrypted stream (an age file) is decrypted as it is read.
fn stdin_plaintext() -> anyhow::Result<Box<dyn io::Read>> {
    use io::Read as _;
    let magic = maildump::format::crypt::AGE_MAGIC;
    let mut stdin = io::stdin().lock();
    let mut head = Vec::with_capacity(magic.len());
    (&mut stdin)
        .take(magic.len() as u64)
        .read_to_end(&mut head)
        .map_err(|e| Error::io("stdin", e))?;
    let whole = io::Cursor::new(head.clone()).chain(stdin);
    if head != magic {
        return Ok(Box::new(whole));
    }
    let r = io::BufReader::with_capacity(1 << 16, whole);
    Ok(maildump::format::crypt::decrypt_stream(
        r,
        Path::new("stdin"),
    )?)
}

/// Refuse `-` (stdin) given more than once.
pub fn stdin_once(args: &[String]) -> anyhow::Result<()> {
    if args.iter().filter(|a| *a == "-").count() > 1 {
        return Err(Error::Usage("`-` (stdin) can be given only once".into()).into());
    }
    Ok(())
}

/// Open the archives of a chain (oldest first); `-` (stdin, at most once) stands for the
/// archives of the stream on stdin.
pub fn open_chain(
    args: &[String],
    require_links: bool,
) -> anyhow::Result<(Chain, Option<tempfile::TempDir>)> {
    let (paths, tmp) = chain_paths(args)?;
    let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    let chain = Chain::open(&refs, require_links)?;
    warn_damage(&chain);
    Ok((chain, tmp))
}

/// The archive files of a chain given as arguments (oldest first); `-` (stdin, at most
/// once) stands for the archives of the stream on stdin, spooled as [`archive_paths`] says.
pub fn chain_paths(args: &[String]) -> anyhow::Result<(Vec<PathBuf>, Option<tempfile::TempDir>)> {
    stdin_once(args)?;
    let mut tmp = None;
    let mut paths = Vec::with_capacity(args.len());
    for a in args {
        let (p, t) = archive_paths(a)?;
        paths.extend(p);
        if t.is_some() {
            tmp = t;
        }
    }
    Ok((paths, tmp))
}

/// Print, as warnings, the damage found when the archives of `chain` were opened.
pub fn warn_damage(chain: &Chain) {
    for a in &chain.archives {
        for d in &a.damage {
            eprintln!("maildump: warning: {}: {d}", shown(a.path()));
        }
    }
}

/// A byte count for people: `1.5 GiB`, `320.0 KiB`, `12 bytes` (exact numbers are in the
/// JSON events).
pub fn human(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} bytes");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// The archive whose state a command works on: the last, or `--as-of`.
pub fn state_of(chain: &Chain, as_of: Option<&str>) -> anyhow::Result<usize> {
    Ok(match as_of {
        Some(s) => chain.as_of(s)?,
        None => chain.last(),
    })
}

/// Exit 0 when `clean`, else 1 (finished, but items skipped or damaged).
pub fn exit_if(clean: bool) -> ExitCode {
    if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_PARTIAL)
    }
}

/// Whether any archive of the chain was found damaged when opened.
pub fn chain_damaged(chain: &Chain) -> bool {
    chain.archives.iter().any(|a| !a.damage.is_empty())
}

/// The recipients the archives of this run are encrypted to (`--encrypt-to` of `backup`
/// and `merge`), set once before the command runs ([`set_recipients`]).
static RECIPIENTS: std::sync::OnceLock<Recipients> = std::sync::OnceLock::new();

/// Parse the `--encrypt-to` of the command, if it writes archives, for [`write_output`]
/// (and for the archives the Bacula agent passes on: [`bacula::tee`]).
///
/// # Errors
/// A value that is not a recipient or a readable recipients file.
pub fn set_recipients(cmd: &Command) -> anyhow::Result<()> {
    match cmd {
        Command::Backup(a) => set_recipient_list(&a.write.encrypt_to),
        Command::Merge(a) => set_recipient_list(&a.write.encrypt_to),
        Command::Bacula(bacula::BaculaCommand::Backup(a)) => {
            set_recipient_list(&bacula::split_encrypt_to(&a.backup).1)
        }
        _ => Ok(()),
    }
}

/// Make `given` (`--encrypt-to` values) the recipients of the archives this run writes.
///
/// # Errors
/// As [`Recipients::parse`].
pub fn set_recipient_list(given: &[String]) -> anyhow::Result<()> {
    let _ = RECIPIENTS.set(Recipients::parse(given)?);
    Ok(())
}

/// The recipients of the archives this run writes, if any.
pub fn recipients() -> Option<&'static Recipients> {
    RECIPIENTS.get().filter(|r| !r.is_empty())
}

/// `--identity FILE` for each identity of this run, for the maildump commands an agent
/// runs (they read the archives this one does).
pub fn identity_args() -> Vec<std::ffi::OsString> {
    maildump::format::crypt::identity_files()
        .iter()
        .flat_map(|f| ["--identity".into(), f.clone().into_os_string()])
        .collect()
}

/// Run `f` writing to `dest` through [`write_behind`], encrypted to the run's recipients
/// when there are any (on the writing thread, so that encrypting runs beside compressing).
fn write_sealed<T>(
    dest: &mut (dyn Write + Send),
    f: impl FnOnce(&mut dyn Write) -> maildump::Result<T>,
) -> (maildump::Result<T>, io::Result<()>) {
    match recipients() {
        None => write_behind(dest, f),
        Some(r) => {
            let mut sealed = match r.wrap(dest) {
                Ok(s) => s,
                Err(e) => return (Err(Error::io("the archive's age header", e)), Ok(())),
            };
            let (r, written) = write_behind(&mut sealed, f);
            // The last chunk only after a complete archive: an unfinished one reads as
            // truncated, and is never made visible anyway.
            let written = match (&r, written) {
                (Ok(_), Ok(())) => sealed.finish().and_then(|d| d.flush()),
                (_, w) => w,
            };
            (r, written)
        }
    }
}

/// Refuse an `s3://` address where only a local path works yet (`option` names where).
pub fn local_only(option: &str, path: &Path) -> anyhow::Result<()> {
    if maildump::remote::is_remote(path) {
        return Err(Error::Usage(format!(
            "{option} {}: object storage is not supported here yet (archives only: backup/merge -o, and the archives read)",
            path.display()
        ))
        .into());
    }
    Ok(())
}

/// Write an archive to stdout (`-`) or to a file that appears, synced, only when complete
/// (a device or FIFO is written in place, a symbolic link refused: `maildump::output`).
/// The bytes are written by a thread of their own ([`sink::write_behind`]), so a
/// `write` the kernel makes wait does not stall reading and compressing.
///
/// A reader that closes the pipe before the end is an error here (the archive it got is
/// incomplete), unlike for `list` or `cat`.
pub fn write_output<T>(
    output: &str,
    f: impl FnOnce(&mut dyn Write) -> maildump::Result<T>,
) -> anyhow::Result<T> {
    if output == "-" {
        let mut out = io::stdout();
        let (r, written) = write_sealed(&mut out, f);
        written.map_err(|e| {
            let e = if e.kind() == io::ErrorKind::BrokenPipe {
                io::Error::other("the reader closed the pipe; the archive it got is incomplete")
            } else {
                e
            };
            Error::io("<stdout>", e)
        })?;
        return Ok(r.map_err(|e| e.name_archive(Path::new("<stdout>")))?);
    }
    let dest = PathBuf::from(output);
    if let Some(url) = S3Url::parse(&dest) {
        // A multipart upload: the object appears at `finish`; dropped before (an error, a
        // stop signal) it is aborted.
        let url = url.map_err(Error::Usage)?;
        let mut up = Upload::new(&url)?;
        let (r, written) = write_sealed(&mut up, f);
        written.map_err(|e| maildump::remote::io_error(&dest, e))?;
        let r = r.map_err(|e| e.name_archive(&dest))?;
        up.finish()?;
        return Ok(r);
    }
    let mut out = maildump::output::OutputFile::open(&dest, true)?;
    let (r, written) = write_sealed(out.file(), f);
    written.map_err(|e| Error::io(&dest, e))?;
    let r = r.map_err(|e| e.name_archive(&dest))?;
    out.finish()?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_for_people() {
        assert_eq!(super::human(12), "12 bytes");
        assert_eq!(super::human(1536), "1.5 KiB");
        assert_eq!(super::human(46_944_884), "44.8 MiB");
        assert_eq!(super::human(3 << 40), "3.0 TiB");
    }
}
