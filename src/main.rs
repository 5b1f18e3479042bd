//! The `maildump` command: parses the command line, calls the library, prints, and maps
//! errors to the exit codes documented in README.md and `--help`.

mod agent;
mod amanda;
mod bacula;
mod cli;
mod events;

use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use clap::Parser;

use cli::{Cli, Command, ProgressMode, StoreArgs};
use maildump::backup::{BackupOptions, BackupStats, backup};
use maildump::chain::{Chain, parse_time};
use maildump::error::{EXIT_PARTIAL, Error};
use maildump::export::{ExportFormat, ExportOptions, export};
use maildump::inspect::{self, ListFilter, MessageKey};
use maildump::merge::{MergeOptions, merge};
use maildump::progress::{Event, NoProgress, Progress};
use maildump::restore::{self, Mode, RestoreOptions};
use maildump::select::{Selection, SeqSet, parse_restore_list};
use maildump::sink::write_behind;
use maildump::statedir::{Next, StateDir, StateEntry, parse_duration};
use maildump::store::location::{Location, StoreFormat};

/// The signal (SIGINT or SIGTERM) that asked this run to stop, 0 while none did.
static STOP: OnceLock<Arc<AtomicUsize>> = OnceLock::new();

/// SIGINT and SIGTERM ask the run to stop (it removes what it created, see
/// [`Progress::interrupted`]); a second one ends the process at once.
fn install_signal_handlers() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let which = STOP.get_or_init(|| Arc::new(AtomicUsize::new(0)));
    let seen = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        // The shutdown is registered before the flag is set, so it acts on a second signal.
        let installed =
            signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, seen.clone())
                .and_then(|_| signal_hook::flag::register(sig, seen.clone()))
                .and_then(|_| {
                    signal_hook::flag::register_usize(
                        sig,
                        which.clone(),
                        usize::try_from(sig).unwrap_or(0),
                    )
                });
        if let Err(e) = installed {
            eprintln!(
                "maildump: warning: signal {sig} not handled ({e}): stopping the run may leave its partial files"
            );
        }
    }
}

fn stop_signal() -> usize {
    STOP.get().map(|s| s.load(Ordering::SeqCst)).unwrap_or(0)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    install_signal_handlers();
    let json = match &cli.command {
        Command::Backup(a) => a.write.progress == ProgressMode::Json,
        Command::Merge(a) => a.write.progress == ProgressMode::Json,
        Command::Restore(a) => a.progress == ProgressMode::Json,
        _ => false,
    };
    if json {
        // Errors before the run starts (a missing archive, a bad option) are events too.
        events::json_mode();
    }
    match run(cli) {
        Ok(code) => {
            // ExitCode cannot be read back; it is one of the documented codes.
            let n = (0..=u8::MAX)
                .find(|n| ExitCode::from(*n) == code)
                .unwrap_or(0);
            events::finish_json(n);
            code
        }
        Err(e) if matches!(e.downcast_ref::<Error>(), Some(Error::Interrupted)) => {
            let sig = stop_signal();
            eprintln!("maildump: {e}");
            events::json_error(&e.to_string(), u8::try_from(128 + sig).unwrap_or(130));
            // Die by the same signal, as a shell or a service manager expects.
            let sig = i32::try_from(sig).unwrap_or(0);
            // Only returns when it could not (then the exit code says the same).
            let _ = signal_hook::low_level::emulate_default_handler(sig);
            ExitCode::from(u8::try_from(128 + sig).unwrap_or(130))
        }
        Err(e) => {
            if let Some(Error::Io { source, .. }) = e.downcast_ref::<Error>()
                && source.kind() == io::ErrorKind::BrokenPipe
            {
                return ExitCode::SUCCESS;
            }
            if let Some(ioe) = e.downcast_ref::<io::Error>()
                && ioe.kind() == io::ErrorKind::BrokenPipe
            {
                return ExitCode::SUCCESS;
            }
            let text = error_text(&e);
            eprintln!("maildump: error: {text}");
            let code = e
                .downcast_ref::<Error>()
                .map(|e| e.kind().exit_code())
                .unwrap_or(3);
            events::json_error(&text, code);
            ExitCode::from(code)
        }
    }
}

/// `--all-users`: with `--config`, the users of Dovecot's userdb that have a mail store
/// (their homes from the userdb); otherwise, or when a userdb cannot be listed (said on
/// stderr), the users found at the home template's user position.
fn all_users(
    loc: &mut Location,
    config: Option<&Path>,
    quiet: bool,
) -> anyhow::Result<Vec<String>> {
    use maildump::store::userdb::{self, Userdb};
    let Some(conf) = config else {
        return Ok(loc.discover_users()?);
    };
    match userdb::read(conf)? {
        Userdb::Absent => Ok(loc.discover_users()?),
        Userdb::Unlisted(why) => {
            if !quiet {
                eprintln!(
                    "maildump: note: users found by scanning the home template, not from the userdb: {why}"
                );
            }
            Ok(loc.discover_users()?)
        }
        Userdb::Users(list) => {
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
    }
}

/// Write the man page of `cmd` (named `name`) and of each of its subcommands into `dir`;
/// how many.
fn write_man(cmd: &clap::Command, name: &str, dir: &Path) -> anyhow::Result<usize> {
    let path = dir.join(format!("{name}.1"));
    let page = cmd
        .clone()
        .display_name(name.to_string())
        .bin_name(name.replace('-', " "));
    let mut out = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut out)
        .map_err(|e| Error::io(&path, e))?;
    std::fs::write(&path, out).map_err(|e| Error::io(&path, e))?;
    let mut n = 1;
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        n += write_man(sub, &format!("{name}-{}", sub.get_name()), dir)?;
    }
    Ok(n)
}

/// An error and its causes, each cause once: a cause whose text the message already holds
/// (an I/O error that names its OS error) is not repeated.
fn error_text(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !text.contains(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
    }
    // Archives spooled from stdin are named by their place in the stream.
    for (p, name) in STDIN_NAMES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
    {
        text = text.replace(&p.display().to_string(), name);
    }
    text
}

/// Prints warnings, and with `notes` messages expunged during a backup.
struct Warnings {
    notes: bool,
}

impl Progress for Warnings {
    fn event(&mut self, e: &Event) {
        match e {
            Event::Warning { message } => eprintln!("maildump: warning: {message}"),
            Event::Expunged { message, .. } if self.notes => {
                eprintln!("maildump: note: {message}")
            }
            Event::Debug { message } => eprintln!("maildump: debug: {message}"),
            _ => {}
        }
    }
}

/// A progress sink that also reports a stop signal; debug events reach it only when
/// `.1` (`--verbose`).
struct Stoppable(Box<dyn Progress>, bool);

impl Progress for Stoppable {
    fn event(&mut self, e: &Event) {
        if self.1 || !matches!(e, Event::Debug { .. }) {
            self.0.event(e)
        }
    }
    fn interrupted(&self) -> bool {
        stop_signal() != 0
    }
}

/// The progress display of a run that writes `output` (an archive path or `-`), if any.
fn progress_for(
    mode: ProgressMode,
    quiet: bool,
    verbose: bool,
    output: Option<String>,
) -> Box<dyn Progress> {
    Box::new(Stoppable(progress_sink(mode, quiet, output), verbose))
}

fn progress_sink(mode: ProgressMode, quiet: bool, output: Option<String>) -> Box<dyn Progress> {
    let tty = io::stderr().is_terminal();
    match mode {
        ProgressMode::Json => Box::new(events::JsonEvents::new(output)),
        ProgressMode::None => Box::new(Warnings { notes: !quiet }),
        _ if quiet => Box::new(Warnings { notes: false }),
        ProgressMode::Bar => Box::new(events::Bar::new(true)),
        ProgressMode::Auto if tty => Box::new(events::Bar::new(false)),
        ProgressMode::Auto => Box::new(Warnings { notes: true }),
    }
}

/// The store location from `--config` (Dovecot 2.3 or 2.4, [`maildump::store::config`]) or
/// `--location`, with `--home`, `--attribute-dict` and `--attachment-dir` taking precedence.
fn location(s: &StoreArgs) -> anyhow::Result<Location> {
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
    if let Some(conf) = &s.config
        && let maildump::store::userdb::Userdb::Users(list) = maildump::store::userdb::read(conf)?
    {
        for u in list {
            if let Some(h) = u.home {
                loc.homes.insert(u.name, h);
            }
        }
    }
    loc.check_templates()?;
    Ok(loc)
}

/// Names of the archives spooled from stdin, by their temporary path: "stdin" or "stdin
/// (archive N of the stream)", the name messages give them.
static STDIN_NAMES: std::sync::Mutex<Vec<(PathBuf, String)>> = std::sync::Mutex::new(Vec::new());

/// How messages name the archive at `path`: its path, or its place on stdin.
fn shown(path: &Path) -> String {
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
fn archive_paths(arg: &str) -> anyhow::Result<(Vec<PathBuf>, Option<tempfile::TempDir>)> {
    if arg != "-" {
        return Ok((vec![PathBuf::from(arg)], None));
    }
    let dir = tempfile::Builder::new()
        .prefix("maildump-stdin.")
        .tempdir()
        .map_err(|e| Error::io("a temporary directory for stdin ($TMPDIR)", e))?;
    let mut paths = Vec::new();
    let split = maildump::format::split::split(&mut io::stdin().lock(), "stdin", |i| {
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

/// Open the archives of a chain (oldest first); `-` (stdin, at most once) stands for the
/// archives of the stream on stdin.
fn open_chain(
    args: &[String],
    require_links: bool,
) -> anyhow::Result<(Chain, Option<tempfile::TempDir>)> {
    if args.iter().filter(|a| *a == "-").count() > 1 {
        return Err(Error::Usage("`-` (stdin) can be given only once".into()).into());
    }
    let mut tmp = None;
    let mut paths = Vec::with_capacity(args.len());
    for a in args {
        let (p, t) = archive_paths(a)?;
        paths.extend(p);
        if t.is_some() {
            tmp = t;
        }
    }
    let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    let chain = Chain::open(&refs, require_links)?;
    for a in &chain.archives {
        for d in &a.damage {
            eprintln!("maildump: warning: {}: {d}", shown(a.path()));
        }
    }
    Ok((chain, tmp))
}

/// The archive whose state a command works on: the last, or `--as-of`.
fn state_of(chain: &Chain, as_of: Option<&str>) -> anyhow::Result<usize> {
    Ok(match as_of {
        Some(s) => chain.as_of(s)?,
        None => chain.last(),
    })
}

fn chain_damaged(chain: &Chain) -> bool {
    chain.archives.iter().any(|a| !a.damage.is_empty())
}

/// Write an archive to stdout (`-`) or to a file that appears, synced, only when complete
/// (a device or FIFO is written in place, a symbolic link refused: `maildump::output`).
/// The bytes are written by a thread of their own (`maildump::sink::write_behind`), so a
/// `write` the kernel makes wait does not stall reading and compressing.
///
/// A reader that closes the pipe before the end is an error here (the archive it got is
/// incomplete), unlike for `list` or `cat`.
fn write_output<T>(
    output: &str,
    f: impl FnOnce(&mut dyn Write) -> maildump::Result<T>,
) -> anyhow::Result<T> {
    if output == "-" {
        let mut out = io::stdout();
        let (r, written) = write_behind(&mut out, f);
        written.map_err(|e| {
            let e = if e.kind() == io::ErrorKind::BrokenPipe {
                io::Error::other("the reader closed the pipe; the archive it got is incomplete")
            } else {
                e
            };
            Error::io("<stdout>", e)
        })?;
        return Ok(r?);
    }
    let dest = PathBuf::from(output);
    let mut out = maildump::output::OutputFile::open(&dest, true)?;
    let (r, written) = write_behind(out.file(), f);
    written.map_err(|e| Error::io(&dest, e))?;
    let r = r?;
    out.finish()?;
    Ok(r)
}

/// A byte count for people: `1.5 GiB`, `320.0 KiB`, `12 bytes` (exact numbers are in the
/// JSON events).
fn human(n: u64) -> String {
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

fn backup_summary(stats: &BackupStats) -> String {
    // `bytes` is the size of all the mail the archive's state holds (a full's or an
    // incremental's alike), not what this run stored.
    let mut s = format!(
        "maildump: backed up {} users, {} mailboxes, {} messages ({} of mail; {} distinct bodies stored in this archive",
        stats.users,
        stats.mailboxes,
        stats.messages,
        human(stats.bytes),
        stats.bodies
    );
    if stats.referenced > 0 || stats.unread > 0 {
        s.push_str(&format!(
            "; {} held by earlier archives, {} files not read, {} read",
            stats.referenced,
            stats.unread,
            human(stats.read_bytes)
        ));
    }
    if stats.deleted > 0 {
        s.push_str(&format!("; {} deleted messages recorded", stats.deleted));
    }
    s.push(')');
    if !stats.gone_users.is_empty() {
        s.push_str(&format!(
            "; users no longer in the store, recorded as gone: {}",
            stats.gone_users.join(", ")
        ));
    }
    if !stats.expunged.is_empty() {
        s.push_str(&format!(
            "; {} messages expunged during the backup, not in the archive (normal for a live store)",
            stats.expunged.len()
        ));
    }
    if !stats.warnings.is_empty() {
        s.push_str(&format!(
            "; {} items left out or damaged (named above): exit 1",
            stats.warnings.len()
        ));
    }
    s
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Backup(a) => {
            // (clap's `requires` does not fire for these: checked here.)
            if a.state_dir.is_none() && (a.full_every.is_some() || a.keep_chains.is_some()) {
                return Err(Error::Usage(
                    "--full-every and --keep-chains work with --state-dir only (they decide what a state directory keeps)".into(),
                )
                .into());
            }
            let mut loc = location(&a.store)?;
            let users = if a.all_users {
                all_users(&mut loc, a.store.config.as_deref(), a.write.quiet)?
            } else {
                a.users.clone()
            };
            if users.is_empty() {
                return Err(Error::NotFound("no users found".into()).into());
            }
            let mut opts = BackupOptions::new(loc);
            opts.writer.level = a.write.level;
            if let Some(t) = a.write.threads {
                opts.writer.threads = t.max(1);
            }
            if let Some(f) = a.frame_target {
                opts.writer.frame_target = f;
            }
            opts.created = a.created.clone();
            opts.archive_id = a.archive_id.clone();
            if let Some(since) = &a.since {
                opts.since = Some(parse_time(since)?);
            }
            opts.bases = a.bases.clone();
            opts.all_users = a.all_users;
            opts.format_minor = a.format_minor;
            let mut progress = progress_for(
                a.write.progress,
                a.write.quiet,
                a.write.verbose,
                a.output.clone(),
            );
            let stats = match &a.state_dir {
                None => {
                    let output = a.output.as_deref().unwrap_or("-");
                    write_output(output, |out| backup(&opts, &users, out, progress.as_mut()))?
                }
                Some(dir) => {
                    let mut sd = StateDir::open(dir)?;
                    for p in &sd.removed_partials {
                        if !a.write.quiet && a.write.progress != ProgressMode::Json {
                            eprintln!(
                                "maildump: removed {} (left by a run that did not finish)",
                                p.display()
                            );
                        }
                    }
                    let every = a.full_every.as_deref().map(parse_duration).transpose()?;
                    let now = chrono::Utc::now();
                    let created = opts
                        .created
                        .clone()
                        .unwrap_or_else(|| now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
                    opts.created = Some(created.clone());
                    let id = opts
                        .archive_id
                        .clone()
                        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
                    opts.archive_id = Some(id.clone());
                    let (kind, chain) = match sd.next(every, now)? {
                        Next::Full => ("full", id.clone()),
                        Next::Incremental { base, chain } => {
                            opts.bases = vec![base];
                            ("incremental", chain)
                        }
                    };
                    let dest = sd.new_path(&created, if kind == "full" { "full" } else { "inc" });
                    events::set_output(&dest.to_string_lossy());
                    let stats = write_output(&dest.to_string_lossy(), |out| {
                        backup(&opts, &users, out, progress.as_mut())
                    })?;
                    sd.record(StateEntry {
                        file: dest
                            .file_name()
                            .map(|f| f.to_string_lossy().into_owned())
                            .unwrap_or_default(),
                        archive_id: id,
                        created,
                        kind: kind.into(),
                        chain,
                    })?;
                    if !a.write.quiet && a.write.progress != ProgressMode::Json {
                        eprintln!("maildump: wrote {} backup {}", kind, dest.display());
                    }
                    if let Some(k) = a.keep_chains {
                        for p in sd.prune(k as usize)? {
                            if !a.write.quiet && a.write.progress != ProgressMode::Json {
                                eprintln!("maildump: removed {} (older chain)", p.display());
                            }
                        }
                    }
                    stats
                }
            };
            if !a.write.quiet && a.write.progress != ProgressMode::Json {
                eprintln!("{}", backup_summary(&stats));
            }
            Ok(if stats.warnings.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_PARTIAL)
            })
        }
        Command::Restore(a) => {
            let loc = location(&a.store)?;
            let owner = match &a.owner {
                None => None,
                Some(s) => {
                    let (u, g) = s
                        .split_once(':')
                        .and_then(|(u, g)| Some((u.parse::<u32>().ok()?, g.parse::<u32>().ok()?)))
                        .ok_or_else(|| {
                            Error::Usage(format!("--owner {s:?}: expected numeric UID:GID"))
                        })?;
                    Some((u, g))
                }
            };
            let (chain, _tmp) = open_chain(&a.archives, true)?;
            let at = state_of(&chain, a.as_of.as_deref())?;
            let mut selection = Selection {
                user: a.user,
                mailboxes: a.mailboxes,
                recursive: a.recursive,
                uids: a.uid.as_deref().map(SeqSet::parse).transpose()?,
                guids: a.guids,
                message_ids: a.message_ids,
                received_since: a
                    .received_since
                    .as_deref()
                    .map(|t| parse_time(t).map(|t| t.timestamp()))
                    .transpose()?,
                received_before: a
                    .received_before
                    .as_deref()
                    .map(|t| parse_time(t).map(|t| t.timestamp()))
                    .transpose()?,
                list: None,
            };
            if let Some(f) = &a.restore_list {
                let text = std::fs::read_to_string(f).map_err(|e| Error::io(f, e))?;
                selection.list = Some(parse_restore_list(&text)?);
            }
            let mode = match (a.mode, &a.into, a.deleted) {
                (Some(cli::ModeArg::Exact), Some(_), _) => {
                    return Err(Error::Usage("--into needs --mode side-folder".into()).into());
                }
                (Some(cli::ModeArg::Exact), _, _) => Mode::Exact,
                (Some(cli::ModeArg::Merge), _, _) => Mode::Merge,
                (Some(cli::ModeArg::SideFolder), _, _) | (None, Some(_), _) => Mode::SideFolder,
                (None, None, true) => Mode::Merge,
                (None, None, false) => Mode::Exact,
            };
            let opts = RestoreOptions {
                location: Some(loc),
                selection,
                to_user: a.to_user,
                owner,
                mode,
                into: a.into,
                deleted: a.deleted,
                inline_attachments: a.inline_attachments,
                continuity: if a.new_uidvalidity {
                    maildump::continuity::Continuity::NewUidvalidity
                } else {
                    maildump::continuity::Continuity::Margin(a.uid_margin)
                },
            };
            let plan = restore::plan(&chain, at, &opts)?;
            if a.dry_run {
                let mut out = io::stdout().lock();
                if opts.mode == Mode::Exact {
                    for l in restore::describe(&plan, &opts) {
                        writeln!(out, "{l}")?;
                    }
                } else {
                    let stats = restore::restore(&chain, at, &plan, &opts, true, &mut NoProgress)?;
                    for l in &stats.report {
                        writeln!(out, "{l}")?;
                    }
                }
                return Ok(ExitCode::SUCCESS);
            }
            let mut progress = progress_for(a.progress, a.quiet, false, None);
            let stats = restore::restore(&chain, at, &plan, &opts, false, progress.as_mut())?;
            if !a.quiet && a.progress != ProgressMode::Json {
                eprintln!(
                    "maildump: restored {} mailboxes, {} messages ({}){}{}",
                    stats.mailboxes,
                    stats.messages,
                    human(stats.bytes),
                    if stats.present > 0 {
                        format!("; {} already there, skipped", stats.present)
                    } else {
                        String::new()
                    },
                    if stats.lost > 0 {
                        format!("; {} messages lost to archive damage", stats.lost)
                    } else {
                        String::new()
                    }
                );
            }
            // Every warning names something not restored as it was (a lost message, a
            // keyword the target could not take, METADATA without a dictionary).
            Ok(
                if stats.lost == 0 && stats.warnings.is_empty() && !chain_damaged(&chain) {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(EXIT_PARTIAL)
                },
            )
        }
        Command::List(a) => {
            let (chain, _tmp) = open_chain(&a.archives, false)?;
            let at = state_of(&chain, a.as_of.as_deref())?;
            let filter = ListFilter {
                user: a.user,
                mailbox: a.mailbox,
            };
            let mut out = io::BufWriter::new(io::stdout().lock());
            if a.deleted {
                inspect::list_deleted(&chain, &filter, a.json, &mut out)?;
            } else {
                inspect::list(&chain, at, &filter, a.json, &mut out)?;
            }
            out.flush()?;
            Ok(if !chain_damaged(&chain) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_PARTIAL)
            })
        }
        Command::Cat(a) => {
            let (chain, _tmp) = open_chain(&a.archives, false)?;
            let at = state_of(&chain, a.as_of.as_deref())?;
            let key = match (a.uid, a.guid) {
                (Some(u), _) => MessageKey::Uid(u),
                (None, Some(g)) => MessageKey::Guid(g),
                (None, None) => return Err(Error::Usage("give --uid or --guid".into()).into()),
            };
            let (cat, rec) = inspect::find(&chain, at, &a.user, a.mailbox.as_deref(), &key)?;
            let mut out = io::stdout().lock();
            inspect::cat(&chain, at, &cat, &rec, &mut out)?;
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify(a) => {
            if a.archives.iter().filter(|x| *x == "-").count() > 1 {
                return Err(Error::Usage("`-` (stdin) can be given only once".into()).into());
            }
            let mut problems = 0usize;
            let mut paths = Vec::new();
            let mut _tmps = Vec::new();
            let mut all = Vec::new();
            for arg in &a.archives {
                let (p, tmp) = archive_paths(arg)?;
                all.extend(p);
                _tmps.push(tmp);
            }
            let several = all.len() > 1;
            for path in all {
                let rep = inspect::verify(&path)?;
                let prefix = if several {
                    format!("{}: ", shown(&path))
                } else {
                    String::new()
                };
                for d in &rep.damage {
                    println!("DAMAGED: {prefix}{d}");
                }
                problems += rep.damage.len();
                if rep.damage.is_empty() && !a.quiet {
                    println!(
                        "OK: {prefix}{} data frames, {} messages, {} distinct bodies{} verified{}",
                        rep.frames,
                        rep.messages,
                        rep.bodies,
                        if rep.blobs > 0 {
                            format!(", {} attachments (blobs)", rep.blobs)
                        } else {
                            String::new()
                        },
                        if rep.referenced > 0 {
                            format!(
                                "; {} messages have their bytes in other archives of the chain",
                                rep.referenced
                            )
                        } else {
                            String::new()
                        }
                    );
                }
                paths.push(path);
            }
            if paths.len() > 1 {
                let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
                match Chain::open(&refs, true) {
                    Ok(chain) => {
                        let (checked, damage) = inspect::verify_references(&chain)?;
                        for d in &damage {
                            println!("DAMAGED: {d}");
                        }
                        problems += damage.len();
                        if damage.is_empty() && !a.quiet {
                            println!(
                                "OK: chain of {} archives: all {checked} references to bytes in other archives found",
                                paths.len()
                            );
                        }
                    }
                    Err(e) => {
                        println!("DAMAGED: chain: {e}");
                        problems += 1;
                    }
                }
            }
            if problems == 0 {
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("maildump: verify: {problems} problems found");
                Ok(ExitCode::from(
                    maildump::ErrorKind::CorruptArchive.exit_code(),
                ))
            }
        }
        Command::Bacula(c) => bacula::run(c),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "maildump", &mut io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { dir } => {
            std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
            let cmd = <Cli as clap::CommandFactory>::command();
            let n = write_man(&cmd, "maildump", &dir)?;
            eprintln!("maildump: wrote {n} man pages to {}", dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Estimate(a) => agent::run_estimate(&a),
        Command::Selfcheck(a) => agent::run_selfcheck(&a),
        Command::Amanda(a) => amanda::run(&a),
        Command::Export(a) => {
            let (chain, _tmp) = open_chain(&a.archives, false)?;
            let at = state_of(&chain, a.as_of.as_deref())?;
            let opts = ExportOptions {
                user: a.user,
                mailbox: a.mailbox,
                format: match a.format {
                    cli::ExportFormatArg::Mbox => ExportFormat::Mbox,
                    cli::ExportFormatArg::Eml => ExportFormat::Eml,
                    cli::ExportFormatArg::Maildir => ExportFormat::Maildir,
                },
                output: a.output.clone(),
            };
            let stats = export(&chain, at, &opts)?;
            if !a.quiet {
                eprintln!(
                    "maildump: exported {} mailboxes, {} messages to {}",
                    stats.mailboxes,
                    stats.messages,
                    a.output.display()
                );
            }
            Ok(if chain_damaged(&chain) {
                ExitCode::from(EXIT_PARTIAL)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Merge(a) => {
            let (chain, _tmp) = open_chain(&a.archives, true)?;
            let mut opts = MergeOptions {
                keep_deleted: a.keep_deleted.as_deref().map(parse_duration).transpose()?,
                ..Default::default()
            };
            opts.writer.level = a.write.level;
            if let Some(t) = a.write.threads {
                opts.writer.threads = t.max(1);
            }
            let mut progress = progress_for(
                a.write.progress,
                a.write.quiet,
                a.write.verbose,
                Some(a.output.clone()),
            );
            let stats = write_output(&a.output, |out| {
                merge(&chain, &opts, out, progress.as_mut())
            })?;
            for w in &stats.warnings {
                eprintln!("maildump: warning: {w}");
            }
            if !a.write.quiet && a.write.progress != ProgressMode::Json {
                eprintln!(
                    "maildump: merged {} archives: {} messages, {} distinct bodies, {} deleted messages kept",
                    chain.archives.len(),
                    stats.messages,
                    stats.bodies,
                    stats.deleted
                );
            }
            Ok(if stats.warnings.is_empty() && !chain_damaged(&chain) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_PARTIAL)
            })
        }
    }
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
