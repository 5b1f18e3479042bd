//! Command-line definitions (clap): the arguments of every subcommand.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The exit-code table every `--help` ends with.
macro_rules! exit_codes {
    () => {
        "\
Exit codes:
  0  success (a backup also when messages were expunged while it ran: each is
     named on stderr and in the summary, and is not in the archive)
  1  finished, but some items were skipped or damaged (each is named on stderr),
     e.g. a symlink, a duplicate, an unreadable or damaged message or mailbox of
     the store left out of a backup
  2  usage error
  3  I/O error (reading the store or writing the archive/target failed); the
     object store refused the credentials or could not be reached
  4  corrupt archive (damaged, truncated, hostile content); verify found damage
  5  unsupported archive format version
  6  restore refused: a target mailbox already holds mail; or another run holds
     the --state-dir lock
  7  the mail store changed or broke in a way that stops the backup
  8  user, mailbox or message not found; an archive of a chain is missing or out
     of order; an s3:// bucket or key does not exist
  9  an item of the store is beyond a limit of the archive format (named)
  10 cannot decrypt an encrypted archive: no --identity given, or none matches
  70 internal error: a bug in maildump (please report it)
  SIGINT/SIGTERM: the run removes what it created (partial archive, temporary
     files, hidden build directories) and dies by the signal (shell: 130, 143)"
    };
}

const EXIT_CODES: &str = exit_codes!();

/// `Examples:` followed by `$text`, then the exit codes.
macro_rules! examples {
    ($text:literal) => {
        concat!("Examples:\n", $text, "\n\n", exit_codes!())
    };
}

/// Backup and exact restore of Dovecot mail stores.
#[derive(Parser, Debug)]
#[command(name = "maildump", version, about, after_help = EXIT_CODES)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Identity to open encrypted archives with (repeatable): an age identity file
    /// (`AGE-SECRET-KEY-1...` lines, `#` comments) or an unencrypted ssh private key
    /// (ed25519, rsa). Any command that reads archives uses it.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "MAILDUMP_IDENTITY",
        hide_env_values = true
    )]
    pub identity: Vec<PathBuf>,
    /// Where `s3://bucket/key` archives are.
    #[command(flatten)]
    pub s3: S3Args,
}

/// Object storage: archives named `s3://bucket/key` (credentials and region from the
/// environment, as S3 tools take them: README "Object storage").
#[derive(Args, Debug, Clone, Default)]
pub struct S3Args {
    /// The S3-compatible endpoint (e.g. `http://127.0.0.1:3900`; else `AWS_ENDPOINT_URL_S3`,
    /// `AWS_ENDPOINT_URL`, or AWS's for `AWS_REGION`). Addressed path-style.
    #[arg(
        long,
        global = true,
        value_name = "URL",
        help_heading = "Object storage"
    )]
    pub s3_endpoint: Option<String>,
    /// Address a custom endpoint's buckets as `BUCKET.HOST` (virtual-hosted) instead of
    /// `HOST/BUCKET` (path-style).
    #[arg(long, global = true, help_heading = "Object storage")]
    pub s3_virtual_hosted: bool,
    /// At the end, print on stderr the requests made to the object store and the bytes
    /// fetched and sent.
    #[arg(long, global = true, help_heading = "Object storage")]
    pub s3_stats: bool,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Back up users' mail into one archive (a file, or stdout with `-o -`).
    #[command(after_help = examples!("  maildump backup --config /etc/dovecot/dovecot.conf --all-users -o /backup/mail.mdump
  maildump backup --location 'maildir:~/Maildir' --home '/srv/mail/%u' --user alice -o - > alice.mdump
  maildump backup --config /etc/dovecot/dovecot.conf --all-users --base /backup/mail.mdump -o /backup/inc1.mdump
  maildump backup --config /etc/dovecot/dovecot.conf --all-users --state-dir /backup/mail --full-every 7d --keep-chains 4 --quiet
  maildump backup --config /etc/dovecot/dovecot.conf --all-users --shard 2/4 --state-dir /backup/mail --full-every 7d --quiet"))]
    Backup(BackupArgs),
    /// Restore mail from an archive or a chain: into new mailboxes (exact), into live ones
    /// (merge), or beside them (side-folder).
    #[command(after_help = examples!("  maildump restore mail.mdump --config /etc/dovecot/dovecot.conf --home '/srv/restore/%u' --dry-run
  maildump restore full.mdump inc1.mdump --config /etc/dovecot/dovecot.conf --user alice --mailbox INBOX --mode merge
  maildump restore mail.mdump --config /etc/dovecot/dovecot.conf --user alice --to-user alice-old
  cat full.mdump inc1.mdump | maildump restore - --location 'maildir:~/Maildir' --home '/tmp/r/%u'
  maildump restore --state-dir /backup/mail --user alice --config /etc/dovecot/dovecot.conf"))]
    Restore(RestoreArgs),
    /// List the messages in an archive, one per line.
    #[command(after_help = examples!("  maildump list mail.mdump --user alice --mailbox INBOX
  maildump list full.mdump inc1.mdump --deleted --json
  maildump list mail.mdump --user alice > restore.list   # edit, then restore --restore-list
  maildump list /backup/mail     # a --state-dir: every archive of every agent and chain"))]
    List(ListArgs),
    /// Write one message, byte-exact, to stdout.
    #[command(after_help = examples!("  maildump cat mail.mdump --user alice --mailbox INBOX --uid 4711 > m.eml
  maildump cat full.mdump inc1.mdump --user alice --guid 1795868817.M139148P6938.vm"))]
    Cat(CatArgs),
    /// Read the whole archive and recheck every checksum; name each damaged item.
    #[command(after_help = examples!("  maildump verify /backup/mail.mdump
  maildump verify full.mdump inc1.mdump inc2.mdump     # each archive, and the links between them
  cat full.mdump inc1.mdump | maildump verify -"))]
    Verify(VerifyArgs),
    /// Build one full archive from a chain (full + incrementals), without the mail store.
    #[command(after_help = examples!("  maildump merge full.mdump inc1.mdump inc2.mdump -o synthetic-full.mdump
  maildump merge full.mdump inc1.mdump --keep-deleted 30d -o full2.mdump"))]
    Merge(MergeArgs),
    /// Write one user's mail as mbox, .eml files or a plain Maildir, for people and other
    /// systems.
    #[command(after_help = examples!("  maildump export mail.mdump --user alice --mailbox INBOX --format mbox -o inbox.mbox
  maildump export mail.mdump --user alice --format eml -o /tmp/alice-eml
  maildump export mail.mdump --user alice --format maildir -o /tmp/alice-Maildir"))]
    Export(ExportArgs),
    /// maildump as a Bacula/Bareos bpipe plugin command (README, "Bacula").
    #[command(subcommand, after_help = examples!("  (as bpipe commands in a FileSet; README \"Bacula\")
  maildump bacula backup --job %i --level %l --state-dir /var/lib/maildump/bacula --config /etc/dovecot/dovecot.conf --all-users
  maildump bacula finish --job %i --state-dir /var/lib/maildump/bacula"))]
    Bacula(super::bacula::BaculaCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    #[command(after_help = "\
Examples:
  maildump completions bash > /etc/bash_completion.d/maildump
  maildump completions zsh > /usr/local/share/zsh/site-functions/_maildump
  maildump completions fish > ~/.config/fish/completions/maildump.fish")]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages (maildump.1, maildump-backup.1, ...) into DIR.
    #[command(after_help = "\
Examples:
  maildump man /usr/local/share/man/man1 && mandb -q
  maildump man /tmp/m && man -l /tmp/m/maildump-restore.1")]
    Man {
        /// Directory to write the pages to (created if missing).
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// What a backup (full, or incremental against --base/--state-dir) would read and
    /// roughly write, without reading a message file.
    #[command(after_help = examples!("  maildump estimate --config /etc/dovecot/dovecot.conf --all-users
  maildump estimate --config /etc/dovecot/dovecot.conf --all-users --state-dir /backup/mail --json"))]
    Estimate(crate::cli::agent::EstimateArgs),
    /// Check what a backup needs: the config and doveconf, every user's store readable by
    /// this user, the target writable with room for the estimate. One line per check.
    #[command(after_help = examples!("  maildump selfcheck --config /etc/dovecot/dovecot.conf --all-users --state-dir /backup/mail
  sudo -u backup maildump selfcheck --config /etc/dovecot/dovecot.conf --all-users -o /backup/mail.mdump"))]
    Selfcheck(crate::cli::agent::SelfcheckArgs),
    /// maildump as an Amanda application (README, "Amanda").
    #[command(after_help = examples!("  (run by Amanda as an application; README \"Amanda\")
  maildump amanda support
  maildump amanda estimate --config CONF --host mailhost --disk /srv/mail --level 0 --level 1 --dovecot-config /etc/dovecot/dovecot.conf"))]
    Amanda(crate::cli::amanda::AmandaArgs),
}

/// Where the mail store is.
#[derive(Args, Debug, Clone)]
#[command(group(clap::ArgGroup::new("store_from").args(["config", "location"]).required(true)))]
pub struct StoreArgs {
    /// dovecot.conf to read mail_location, mail_attribute_dict (and mail_home) from.
    #[arg(long, value_name = "DOVECOT_CONF", conflicts_with = "location")]
    pub config: Option<PathBuf>,
    /// Mail location in Dovecot syntax, e.g. `maildir:~/Maildir` or `maildir:/srv/mail/%u:LAYOUT=fs`.
    #[arg(long, value_name = "LOCATION")]
    pub location: Option<String>,
    /// Home directory template, e.g. `/srv/mail/%u` (`~` in the location is the home).
    #[arg(long, value_name = "TEMPLATE")]
    pub home: Option<String>,
    /// METADATA dictionary, e.g. `file:%h/dovecot-attributes` (default: from --config, else
    /// `file:%h/dovecot-attributes` when a home template is known).
    #[arg(long, value_name = "DICT")]
    pub attribute_dict: Option<String>,
    /// Single-instance attachment directory of a dbox store (Dovecot's `mail_attachment_dir`,
    /// e.g. `/srv/attachments` or `~/attachments`; default: from --config).
    #[arg(long, value_name = "DIR")]
    pub attachment_dir: Option<String>,
}

/// How progress is shown.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressMode {
    /// A progress bar when stderr is a terminal, else nothing.
    Auto,
    /// Always a progress bar.
    Bar,
    /// JSON Lines events on stderr, for backup software.
    Json,
    /// Nothing.
    None,
}

/// How an archive is written and progress shown (`backup`, `merge`).
#[derive(Args, Debug)]
pub struct WriteArgs {
    /// zstd compression level (3: archives about 1.5% smaller for a fifth more compression
    /// work).
    #[arg(long, default_value_t = maildump::format::writer::DEFAULT_LEVEL, value_parser = clap::value_parser!(i32).range(1..=19))]
    pub level: i32,
    /// Compression threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print nothing but warnings (items skipped or damaged) and errors.
    #[arg(short, long)]
    pub quiet: bool,
    /// Also print debug lines (e.g. a Dovecot index cache that was ignored).
    #[arg(short, long, conflicts_with = "quiet")]
    pub verbose: bool,
    /// Progress display.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
    /// Encrypt the archive to this recipient (repeatable): an age key (`age1...`), an ssh
    /// public key (`ssh-ed25519 ...`, `ssh-rsa ...`), or `@FILE` with one per line (`#`
    /// comments). The whole archive becomes an age file; reading it takes --identity.
    #[arg(long, value_name = "RECIPIENT|@FILE")]
    pub encrypt_to: Vec<String>,
}

/// `backup` arguments.
#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("who").args(["users", "all_users"]).required(true)))]
#[command(group(clap::ArgGroup::new("to").args(["output", "state_dir"]).required(true)))]
pub struct BackupArgs {
    #[command(flatten)]
    /// Store.
    pub store: StoreArgs,
    /// User to back up (repeatable).
    #[arg(long = "user", value_name = "NAME")]
    pub users: Vec<String>,
    /// Back up every user found at the %u position of the home (or location) template.
    #[arg(long, conflicts_with = "users")]
    pub all_users: bool,
    /// Archive to write, or `-` for stdout. A file appears only when complete.
    #[arg(short = 'o', long = "output", value_name = "PATH")]
    pub output: Option<String>,
    /// Incremental against this archive (full or incremental); repeat for older archives
    /// of the chain, newest first. Only bytes none of them holds are stored.
    #[arg(long = "base", value_name = "ARCHIVE")]
    pub bases: Vec<PathBuf>,
    /// Since-archive: store the bytes of message files changed after TIME (a date, RFC
    /// 3339, Unix seconds... as --received-since) and record the complete state.
    #[arg(long, value_name = "TIME", conflicts_with = "bases")]
    pub since: Option<String>,
    /// For cron: keep archives and their chain in DIR (first run full, then incremental
    /// against the newest); a lock keeps two runs from overlapping.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["bases", "since", "output"])]
    pub state_dir: Option<PathBuf>,
    /// With --state-dir: start a new chain with a full backup when the current chain's
    /// full is this old (e.g. `7d`, `12h`, `1w`; plain numbers are seconds).
    #[arg(long, value_name = "DURATION", requires = "state_dir")]
    pub full_every: Option<String>,
    /// With --state-dir: after a successful run, delete the archives of all but the newest N
    /// chains (a chain = a full and its incrementals).
    #[arg(long, value_name = "N", requires = "state_dir", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep_chains: Option<u32>,
    #[command(flatten)]
    /// Shard and agent.
    pub agent: AgentArgs,
    /// With --state-dir in object storage: remove a lock left by a run that died (the
    /// error naming the lock says its host, pid and start time). A local DIR's lock is
    /// freed when its holder dies; this changes nothing there.
    #[arg(long)]
    pub break_lock: bool,
    #[command(flatten)]
    /// Compression and progress.
    pub write: WriteArgs,
    /// Record this creation time (RFC 3339) instead of now, for reproducible archives.
    #[arg(long, hide = true)]
    pub created: Option<String>,
    /// Close data frames past this many bytes (tests use small frames).
    #[arg(long, hide = true)]
    pub frame_target: Option<usize>,
    /// Record this archive id instead of a random one, for reproducible archives.
    #[arg(long, hide = true)]
    pub archive_id: Option<String>,
    /// Write this format minor version (1..=4) instead of the newest (test vectors).
    #[arg(long, hide = true)]
    pub format_minor: Option<u16>,
    /// Entries per page of the POINT frame (tests and vectors use small pages).
    #[arg(long, hide = true)]
    pub page_entries: Option<usize>,
}

/// Which agent of several a run is (`backup`, `estimate`, `selfcheck`).
#[derive(Args, Debug, Clone)]
pub struct AgentArgs {
    /// Only the users of shard I of N (1 <= I <= N): those whose SHA-256 of the
    /// name, first 8 bytes as a big-endian number, mod N is I-1. With --state-dir, the
    /// namespace `shard-I-of-N` unless --agent names one.
    #[arg(long, value_name = "I/N", value_parser = parse_shard)]
    pub shard: Option<maildump::ops::shard::Shard>,
    /// With --state-dir: this agent's namespace in DIR (e.g. the Dovecot backend's name):
    /// its own chain, state file, lock and retention, so several agents can write into
    /// one DIR at once. Default: none (`state.json`, as without agents).
    #[arg(long, value_name = "NAME")]
    pub agent: Option<String>,
}

/// `--shard I/N`.
fn parse_shard(s: &str) -> Result<maildump::ops::shard::Shard, String> {
    maildump::ops::shard::Shard::parse(s).map_err(|e| e.to_string())
}

/// `restore` arguments.
#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Archive file, or `-` for stdin (spooled to a temporary file first); for a chain,
    /// the full and then its incrementals, oldest first.
    #[arg(required_unless_present = "state_dir", value_name = "ARCHIVE")]
    pub archives: Vec<String>,
    /// Restore from the newest chain (or --as-of's) of a `backup --state-dir` DIR: with
    /// --user, the chain of whichever agent's namespace holds the user (the newest if
    /// several do); without, the only namespace's (or --agent's).
    #[arg(long, value_name = "DIR", conflicts_with = "archives")]
    pub state_dir: Option<PathBuf>,
    /// With --state-dir: the namespace to restore from (`--agent NAME` of the backup, or
    /// `shard-I-of-N`).
    #[arg(long, value_name = "NAME", requires = "state_dir")]
    pub agent: Option<String>,
    /// Restore the state of an earlier archive of the chain: its archive id, or a time
    /// (a date, a date and time in UTC, RFC 3339, Unix seconds or `7d` back: the newest
    /// archive made at or before it).
    #[arg(long, value_name = "ARCHIVE_ID|TIME")]
    pub as_of: Option<String>,
    #[command(flatten)]
    /// Target store.
    pub store: StoreArgs,
    /// Only this user.
    #[arg(long)]
    pub user: Option<String>,
    /// Only this mailbox: exact name (`/` separator, e.g. `Work/Sub`) or an IMAP pattern
    /// (`*` matches anything, `%` anything but `/`); repeatable.
    #[arg(long = "mailbox", value_name = "NAME|PATTERN")]
    pub mailboxes: Vec<String>,
    /// With --mailbox: also the sub-folders of each mailbox matched.
    #[arg(long)]
    pub recursive: bool,
    /// Restore into this user instead of the original one.
    #[arg(long)]
    pub to_user: Option<String>,
    /// exact: only into mailboxes that do not exist yet, with the original UIDs; merge: add
    /// what is missing to existing (live) mailboxes with new UIDs, under Dovecot's lock;
    /// side-folder: into a new folder tree (see --into). Default: exact.
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,
    /// Side-folder prefix (default `Restored/<date of the archive>`); implies
    /// `--mode side-folder`.
    #[arg(long, value_name = "PREFIX")]
    pub into: Option<String>,
    /// Only these UIDs: an IMAP sequence set such as `1:5,9,20:*`.
    #[arg(long, value_name = "SET")]
    pub uid: Option<String>,
    /// Only the message with this GUID (repeatable).
    #[arg(long = "guid", value_name = "GUID")]
    pub guids: Vec<String>,
    /// Only the message with this Message-ID (repeatable; with or without `<>`).
    #[arg(long = "message-id", value_name = "ID")]
    pub message_ids: Vec<String>,
    /// Only messages received at or after TIME (`2026-11-01`, `2026-11-01 03:00` UTC, RFC
    /// 3339, Unix seconds, or `7d` back from now).
    #[arg(long, value_name = "TIME")]
    pub received_since: Option<String>,
    /// Only messages received before TIME (same forms as --received-since).
    #[arg(long, value_name = "TIME")]
    pub received_before: Option<String>,
    /// Also restore the chain's records of deleted mail; implies `--mode merge` unless a
    /// mode is given. Mail already in the live mailbox is skipped.
    #[arg(long)]
    pub deleted: bool,
    /// Only the messages listed in FILE (the output of `maildump list`, edited: lines
    /// starting with `;` are ignored).
    #[arg(long, value_name = "FILE")]
    pub restore_list: Option<PathBuf>,
    /// sdbox/mdbox targets: keep attachments inside the messages instead of writing them
    /// to the attachment directory (for Dovecot 2.4, which no longer writes
    /// single-instance attachments).
    #[arg(long)]
    pub inline_attachments: bool,
    /// Mailboxes restored with their UIDs and UIDVALIDITY: raise UIDNEXT by N (and
    /// HIGHESTMODSEQ by 10 N) above the newest state known, unless the target's live
    /// mailbox tells what IMAP clients saw; 0 when the archive (or the chain's newest
    /// archive) is the last state any client saw.
    #[arg(long, value_name = "N", default_value_t = maildump::ops::restore::continuity::DEFAULT_UID_MARGIN)]
    pub uid_margin: u32,
    /// Mailboxes restored with their UIDs get a new UIDVALIDITY (from the mail root's
    /// counter) instead of a UIDNEXT margin: IMAP clients then drop what they cached.
    #[arg(long)]
    pub new_uidvalidity: bool,
    /// Print what would be written and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Restore N users at once (default: one per CPU, at most 4); users sharing a directory
    /// are restored one after the other. The result is the same whatever N.
    #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true)]
    pub jobs: usize,
    /// Owner of everything written, as numeric `UID:GID` (default when root: the owner of
    /// the existing mail root; for a new root, the owner the archive recorded).
    #[arg(long, value_name = "UID:GID")]
    pub owner: Option<String>,
    /// Print nothing but warnings (items skipped or damaged) and errors.
    #[arg(short, long)]
    pub quiet: bool,
    /// Progress display.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
    /// Encrypt the archive to this recipient (repeatable): an age key (`age1...`), an ssh
    /// public key (`ssh-ed25519 ...`, `ssh-rsa ...`), or `@FILE` with one per line (`#`
    /// comments). The whole archive becomes an age file; reading it takes --identity.
    #[arg(long, value_name = "RECIPIENT|@FILE")]
    pub encrypt_to: Vec<String>,
}

/// Restore modes.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModeArg {
    /// Only into mailboxes that do not exist yet; everything as it was.
    Exact,
    /// Add what is missing to existing mailboxes, with new UIDs.
    Merge,
    /// Into a new folder tree beside the user's mail.
    SideFolder,
}

/// `list` arguments.
#[derive(Args, Debug)]
pub struct ListArgs {
    /// Archive file, or `-` for stdin; for a chain, oldest first (the last one's state is
    /// listed). A `--state-dir` directory: its archives, every agent's (`--json`: one
    /// object per archive).
    #[arg(required = true, value_name = "ARCHIVE")]
    pub archives: Vec<String>,
    /// List the state of an earlier archive of the chain (archive id or time).
    #[arg(long, value_name = "ARCHIVE_ID|TIME")]
    pub as_of: Option<String>,
    /// List deleted mail instead: messages an archive held that a later one no longer
    /// holds, with when they were last seen.
    #[arg(long)]
    pub deleted: bool,
    /// Print a restore list (the text format, for `restore --restore-list`): comment out or
    /// delete lines, keep the ones to restore.
    #[arg(long, conflicts_with = "json")]
    pub restore_list: bool,
    /// Only this user.
    #[arg(long)]
    pub user: Option<String>,
    /// Only this mailbox.
    #[arg(long)]
    pub mailbox: Option<String>,
    /// JSON Lines: one object per message.
    #[arg(long)]
    pub json: bool,
}

/// `cat` arguments.
#[derive(Args, Debug)]
pub struct CatArgs {
    /// Archive file, or `-` for stdin; for a chain, oldest first.
    #[arg(required = true, value_name = "ARCHIVE")]
    pub archives: Vec<String>,
    /// Look in the state of an earlier archive of the chain (archive id or time).
    #[arg(long, value_name = "ARCHIVE_ID|TIME")]
    pub as_of: Option<String>,
    /// User.
    #[arg(long)]
    pub user: String,
    /// Mailbox (required with --uid).
    #[arg(long)]
    pub mailbox: Option<String>,
    /// UID of the message.
    #[arg(
        long,
        conflicts_with = "guid",
        required_unless_present = "guid",
        requires = "mailbox"
    )]
    pub uid: Option<u32>,
    /// GUID of the message.
    #[arg(long)]
    pub guid: Option<String>,
}

/// `verify` arguments.
#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Archive file, or `-` for stdin; for a chain, oldest first: each archive is verified,
    /// and every message whose bytes are in another archive must find them in the chain.
    #[arg(required = true, value_name = "ARCHIVE")]
    pub archives: Vec<String>,
    /// Print only damage.
    #[arg(short, long)]
    pub quiet: bool,
}

/// `merge` arguments.
#[derive(Args, Debug)]
pub struct MergeArgs {
    /// The chain: a full archive and its incrementals, oldest first.
    #[arg(required = true, value_name = "ARCHIVE")]
    pub archives: Vec<String>,
    /// Archive to write, or `-` for stdout. A file appears only when complete.
    #[arg(short = 'o', long = "output", value_name = "PATH")]
    pub output: String,
    /// Keep records of mail deleted within this long before the last archive, with their
    /// bytes (e.g. `30d`).
    #[arg(long, value_name = "DURATION")]
    pub keep_deleted: Option<String>,
    #[command(flatten)]
    /// Compression and progress.
    pub write: WriteArgs,
}

/// Formats of `export`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormatArg {
    /// mboxrd; flags as Status/X-Status, keywords as X-Keywords headers.
    Mbox,
    /// One byte-exact `.eml` file per message, `DIR/<mailbox>/<uid>.eml`.
    Eml,
    /// A Maildir++ tree with flags, keywords, UIDs and dates.
    Maildir,
}

/// `export` arguments.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Archive file(s): one archive, or a chain oldest first.
    #[arg(required = true, value_name = "ARCHIVE")]
    pub archives: Vec<String>,
    /// User whose mail to export.
    #[arg(long)]
    pub user: String,
    /// Only this mailbox (exact name).
    #[arg(long)]
    pub mailbox: Option<String>,
    /// Output format.
    #[arg(long, value_enum)]
    pub format: ExportFormatArg,
    /// Output: a file for `mbox` with `--mailbox`, else a directory.
    #[arg(short = 'o', long = "output", value_name = "DIR|FILE")]
    pub output: PathBuf,
    /// Export the state of an earlier archive of the chain (archive id or time).
    #[arg(long, value_name = "ARCHIVE_ID|TIME")]
    pub as_of: Option<String>,
    /// Print nothing but warnings (items skipped or damaged) and errors.
    #[arg(short, long)]
    pub quiet: bool,
}
