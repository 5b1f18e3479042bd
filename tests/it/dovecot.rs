//! A throwaway, daemon-less Dovecot for the integration tests.
//!
//! `Dovecot::new` writes a private `dovecot.conf` (base_dir/state_dir inside
//! the given directory, one home per user under `<dir>/home/%u`) and runs
//! `doveadm` against it with `USER`/`HOME` set and no `-u` (the only way
//! doveadm works without a running dovecot/auth daemon, see
//! /work/shared/reference/dovecot-storage.md §1).
//!
//! `snapshot` renders what Dovecot itself reports about a user as sorted text,
//! so that two stores with the same content give identical strings.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use crate::util::{chown_tree, current_ids, is_root, report, run, set_mtime, sha256_hex};

/// Numeric uid/gid Dovecot uses for mail access when the tests run as root
/// (doveadm refuses uid 0 / gid 0). No passwd entry is needed.
pub const ROOT_MAIL_ID: u32 = 5000;

/// Path of the `doveadm` executable. Panics (never skips) when it is missing.
pub fn doveadm_path() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let path_var = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs: Vec<PathBuf> = std::env::split_paths(&path_var).collect();
        // sbin directories are often missing from a non-root PATH.
        for extra in ["/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin"] {
            dirs.push(PathBuf::from(extra));
        }
        dirs.into_iter()
            .map(|d| d.join("doveadm"))
            .find(|p| p.is_file())
            .unwrap_or_else(|| {
                panic!(
                    "doveadm not found: install dovecot-core (e.g. `apt-get install dovecot-core`); \
                     the Dovecot fidelity tests need it and are never skipped"
                )
            })
    })
}

/// Which Dovecot runs a store's doveadm.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Server {
    /// The host's `doveadm` (Dovecot 2.3 here).
    Host,
    /// Dovecot 2.4 in the Debian 13 root at this path (`crate::d24`): doveadm runs through
    /// `chroot`, and sees a host path `ROOT/x` as `/x`.
    Root24(PathBuf),
}

/// One throwaway Dovecot configuration and its home root.
pub struct Dovecot {
    /// Directory holding `dovecot.conf`, `run/`, `state/` and `home/`.
    pub dir: PathBuf,
    /// The generated `dovecot.conf`.
    pub conf: PathBuf,
    /// `mail_location`, e.g. `maildir:~/Maildir:LAYOUT=fs`.
    pub location: String,
    /// Parent of the per-user homes (`<dir>/home`).
    pub home_root: PathBuf,
    /// `mail_uid` written to the config (and owner of the tree).
    pub uid: u32,
    /// `mail_gid` written to the config.
    pub gid: u32,
    /// Which Dovecot reads the store.
    pub server: Server,
}

/// Expands the second argument of [`Dovecot::new`]: a full location
/// (`maildir:...`, `sdbox:...`, `mdbox:...`) is used as is, anything else
/// (`""`, `":LAYOUT=fs"`, `":UTF-8"`) is a suffix of `maildir:~/Maildir`.
pub fn expand_location(location_or_suffix: &str) -> String {
    let is_full = ["maildir:", "sdbox:", "mdbox:", "mbox:", "imapc:"]
        .iter()
        .any(|p| location_or_suffix.starts_with(p));
    if is_full {
        location_or_suffix.to_string()
    } else {
        format!("maildir:~/Maildir{location_or_suffix}")
    }
}

impl Dovecot {
    /// Writes a throwaway config into `dir` (created if needed). The second
    /// argument is either a full `mail_location` or a suffix appended to
    /// `maildir:~/Maildir` (see [`expand_location`]).
    pub fn new(dir: &Path, location_or_suffix: &str) -> Dovecot {
        Self::with_extra(dir, location_or_suffix, &[])
    }

    /// Like [`Dovecot::new`] with extra config lines appended.
    pub fn with_extra(dir: &Path, location_or_suffix: &str, extra: &[&str]) -> Dovecot {
        doveadm_path();
        let location = expand_location(location_or_suffix);
        let (uid, gid) = if is_root() {
            (ROOT_MAIL_ID, ROOT_MAIL_ID)
        } else {
            current_ids()
        };
        let home_root = dir.join("home");
        for d in [
            dir.to_path_buf(),
            dir.join("run"),
            dir.join("state"),
            home_root.clone(),
        ] {
            fs::create_dir_all(&d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
        }
        let d = dir.display();
        let first_valid_uid = uid.clamp(1, 500);
        let first_valid_gid = gid.clamp(1, 500);
        let mut conf = format!(
            "# Throwaway doveadm-only config written by tests/it/dovecot.rs\n\
             base_dir = {d}/run\n\
             state_dir = {d}/state\n\
             log_path = /dev/stderr\n\
             ssl = no\n\
             mail_location = {location}\n\
             mail_uid = {uid}\n\
             mail_gid = {gid}\n\
             first_valid_uid = {first_valid_uid}\n\
             first_valid_gid = {first_valid_gid}\n\
             namespace inbox {{\n  inbox = yes\n  separator = /\n}}\n\
             mail_attribute_dict = file:%h/dovecot-attributes\n"
        );
        for line in extra {
            conf.push_str(line);
            conf.push('\n');
        }
        let conf_path = dir.join("dovecot.conf");
        fs::write(&conf_path, conf).expect("write dovecot.conf");
        let dc = Dovecot {
            dir: dir.to_path_buf(),
            conf: conf_path,
            location,
            home_root,
            uid,
            gid,
            server: Server::Host,
        };
        dc.fix_ownership();
        dc
    }

    /// `path` as this store's doveadm sees it (inside the 2.4 root: without its prefix).
    pub fn inner(&self, path: &Path) -> PathBuf {
        match &self.server {
            Server::Host => path.to_path_buf(),
            Server::Root24(root) => crate::d24::inner(root, path),
        }
    }

    /// A path printed by this store's doveadm, as the host sees it.
    pub fn outer(&self, path: &Path) -> PathBuf {
        match &self.server {
            Server::Host => path.to_path_buf(),
            Server::Root24(root) => root.join(path.strip_prefix("/").unwrap_or(path)),
        }
    }

    /// Home template for `maildump --home`, e.g. `/tmp/x/home/%u`.
    pub fn home_template(&self) -> String {
        format!("{}/%u", self.home_root.display())
    }

    /// Home directory of `user`.
    pub fn home(&self, user: &str) -> PathBuf {
        self.home_root.join(user)
    }

    /// `UID:GID` for `maildump restore --owner`.
    pub fn owner_arg(&self) -> String {
        format!("{}:{}", self.uid, self.gid)
    }

    /// `maildump backup --location LOC --home TEMPLATE` of this store (users, output and
    /// other options are added by the caller).
    pub fn backup_cmd(&self) -> std::process::Command {
        let mut cmd = crate::util::maildump();
        cmd.args([
            "backup",
            "--location",
            &self.location,
            "--home",
            &self.home_template(),
        ]);
        cmd
    }

    /// `maildump restore A1 A2 ... --location LOC --home TEMPLATE --owner UID:GID
    /// --uid-margin 0` into this store (extra arguments are appended by the caller): an
    /// exact copy, with the archive's UIDNEXT (the margin IMAP clients need after a
    /// disaster is tested in `invariants.rs`).
    pub fn restore_cmd(&self, archives: &[&Path]) -> std::process::Command {
        let mut cmd = self.restore_cmd_with_margin(archives);
        cmd.args(["--uid-margin", "0"]);
        cmd
    }

    /// [`Dovecot::restore_cmd`] with the default UIDNEXT margin.
    pub fn restore_cmd_with_margin(&self, archives: &[&Path]) -> std::process::Command {
        let mut cmd = crate::util::maildump();
        cmd.arg("restore").args(archives).args([
            "--location",
            &self.location,
            "--home",
            &self.home_template(),
            "--owner",
            &self.owner_arg(),
        ]);
        cmd
    }

    /// When running as root, gives the whole `dir` tree to `mail_uid:mail_gid`
    /// (files created by the tests themselves, e.g. import sources).
    pub fn fix_ownership(&self) {
        if is_root() {
            chown_tree(&self.dir, self.uid, self.gid).unwrap_or_else(|e| {
                panic!("chown -R {} {}: {e}", self.owner_arg(), self.dir.display())
            });
        }
    }

    /// Creates the home directory of `user` (owned by the mail uid).
    pub fn ensure_home(&self, user: &str) -> PathBuf {
        let home = self.home(user);
        fs::create_dir_all(&home).unwrap_or_else(|e| panic!("mkdir {}: {e}", home.display()));
        if is_root() {
            std::os::unix::fs::chown(&home, Some(self.uid), Some(self.gid)).expect("chown home");
        }
        home
    }

    /// A `doveadm -c CONF ARGS...` command for `user` (env `USER`, `HOME`,
    /// `TZ=UTC`; global options such as `-f tab` go first in `args`). Dovecot 2.4's runs
    /// inside its root with `--no-userdb-lookup` ([`crate::d24::doveadm`]).
    pub fn command(&self, user: &str, args: &[&str]) -> Command {
        if let Server::Root24(root) = &self.server {
            return crate::d24::doveadm(root, &self.inner(&self.conf), user, args);
        }
        let mut cmd = Command::new(doveadm_path());
        cmd.env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
            )
            .env("USER", user)
            .env("HOME", self.home(user))
            .env("TZ", "UTC")
            .env("LC_ALL", "C")
            .arg("-c")
            .arg(&self.conf)
            .args(args);
        cmd
    }

    /// `doveadm save -m MAILBOX` with `bytes` on stdin; returns doveadm's output, whatever
    /// the exit status.
    pub fn save(&self, user: &str, mailbox: &str, bytes: &[u8]) -> Output {
        use std::io::Write as _;
        use std::process::Stdio;
        let mut cmd = self.command(user, &["save", "-m", mailbox]);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start doveadm save");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(bytes)
            .expect("write to doveadm save");
        child.wait_with_output().expect("wait for doveadm save")
    }

    /// Runs doveadm and returns the raw output, whatever the exit status.
    pub fn try_doveadm(&self, user: &str, args: &[&str]) -> Output {
        run(&mut self.command(user, args))
    }

    /// Runs doveadm, panics with its stderr on failure, returns raw stdout.
    pub fn doveadm_bytes(&self, user: &str, args: &[&str]) -> Vec<u8> {
        let mut cmd = self.command(user, args);
        let out = run(&mut cmd);
        if !out.status.success() {
            panic!(
                "doveadm failed (user {user}, HOME {})\n{}",
                self.home(user).display(),
                report(&cmd, &out)
            );
        }
        out.stdout
    }

    /// Runs doveadm, panics with its stderr on failure, returns stdout.
    pub fn doveadm(&self, user: &str, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.doveadm_bytes(user, args)).into_owned()
    }

    /// `doveadm flags add|remove FLAGS mailbox MAILBOX uid UIDS` for each
    /// `(verb, flags, mailbox, uids)`, in order.
    pub fn set_flags(&self, user: &str, changes: &[(&str, &str, &str, &str)]) {
        for (verb, flags, mailbox, uids) in changes {
            self.doveadm(
                user,
                &["flags", verb, flags, "mailbox", mailbox, "uid", uids],
            );
        }
    }

    /// Directory of `mailbox` on disk (`doveadm mailbox path`).
    pub fn mailbox_path(&self, user: &str, mailbox: &str) -> PathBuf {
        let out = self.doveadm(user, &["mailbox", "path", mailbox]);
        self.outer(Path::new(out.trim_end_matches('\n')))
    }

    /// Users whose home exists under `home_root`, sorted.
    pub fn users(&self) -> Vec<String> {
        let mut users: Vec<String> = fs::read_dir(&self.home_root)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        users.sort();
        users
    }

    /// The mail file of `mailbox`/`uid` on disk (maildir only): looks the UID
    /// up in `dovecot-uidlist` and finds the file with that base name in
    /// `cur/` or `new/`.
    pub fn message_file(&self, user: &str, mailbox: &str, uid: u32) -> PathBuf {
        let dir = self.mailbox_path(user, mailbox);
        let uidlist = fs::read_to_string(dir.join("dovecot-uidlist"))
            .unwrap_or_else(|e| panic!("read uidlist of {mailbox}: {e}"));
        let base = uidlist
            .lines()
            .skip(1)
            .find_map(|line| {
                let (head, base) = line.split_once(" :")?;
                let rec_uid: u32 = head.split(' ').next()?.parse().ok()?;
                (rec_uid == uid).then(|| base.to_string())
            })
            .unwrap_or_else(|| {
                panic!(
                    "uid {uid} not in {}/dovecot-uidlist:\n{uidlist}",
                    dir.display()
                )
            });
        for sub in ["cur", "new"] {
            if let Ok(rd) = fs::read_dir(dir.join(sub)) {
                for e in rd.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let b = name.split_once(':').map_or(name.as_str(), |(b, _)| b);
                    if b == base {
                        return e.path();
                    }
                }
            }
        }
        panic!("no file with base {base} in {}/{{cur,new}}", dir.display())
    }

    /// Writes a message file directly into a maildir folder, the way an
    /// external MDA would (Dovecot assigns it a UID on the next sync).
    /// `sub` is `cur` or `new`; `name` the full file name.
    pub fn deliver_foreign(
        &self,
        user: &str,
        mailbox: &str,
        sub: &str,
        name: &str,
        bytes: &[u8],
        mtime: u64,
    ) -> PathBuf {
        let path = self.mailbox_path(user, mailbox).join(sub).join(name);
        fs::write(&path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        set_mtime(&path, mtime);
        if is_root() {
            std::os::unix::fs::chown(&path, Some(self.uid), Some(self.gid))
                .expect("chown foreign file");
        }
        path
    }

    /// Writes a Maildir++ import source (`<dir>/import/<user>/Maildir`) and
    /// runs `doveadm import` so that received dates (file mtimes), flags and
    /// message GUIDs (source base names) are controlled. `msgs` items are
    /// `(folder, mtime, flag letters, message bytes)` where folder is the IMAP
    /// name (`""` or `INBOX` for INBOX, `/` as separator, UTF-8).
    pub fn import(&self, user: &str, msgs: &[(&str, u64, &str, Vec<u8>)]) {
        let src = self.dir.join("import").join(user).join("Maildir");
        let _ = fs::remove_dir_all(&src);
        for (n, (folder, mtime, flags, bytes)) in msgs.iter().enumerate() {
            let folder_dir = if folder.is_empty() || *folder == "INBOX" {
                src.clone()
            } else {
                let parts: Vec<String> = folder.split('/').map(mutf7_encode).collect();
                src.join(format!(".{}", parts.join(".")))
            };
            for sub in ["cur", "new", "tmp"] {
                fs::create_dir_all(folder_dir.join(sub)).expect("mkdir import source");
            }
            let name = format!("{mtime}.M{}P{}.{user}-src:2,{flags}", n + 1, 4000 + n);
            let path = folder_dir.join("cur").join(name);
            fs::write(&path, bytes).expect("write import source message");
            set_mtime(&path, *mtime);
        }
        self.ensure_home(user);
        self.fix_ownership();
        let loc = format!("maildir:{}", self.inner(&src).display());
        self.doveadm(user, &["import", &loc, "", "all"]);
    }

    /// Builds a small store for `user`: two messages in INBOX, one in Work.
    pub fn build_small_store(&self, user: &str) {
        self.import(
            user,
            &[
                (
                    "INBOX",
                    1_500_000_000,
                    "S",
                    message(user, 1, "Existing mail", "already here\n"),
                ),
                (
                    "INBOX",
                    1_500_000_100,
                    "",
                    message(user, 2, "Existing mail 2", "still here\n"),
                ),
                (
                    "Work",
                    1_500_000_200,
                    "F",
                    message(user, 3, "Existing work", "busy\n"),
                ),
            ],
        );
    }

    /// Builds a store exercising everything a restore must preserve: folder
    /// hierarchy, non-ASCII and `&` names, empty mailboxes, all system flags,
    /// keywords, expunge gaps (in the middle and at the end), copies, a CRLF
    /// message and a `new/` message delivered behind Dovecot's back, 8-bit
    /// headers, a MIME attachment, subscriptions (one to a missing mailbox),
    /// private and shared mailbox METADATA and server METADATA.
    pub fn build_rich_store(&self, user: &str) {
        let attachment = {
            let mut s = String::new();
            for i in 0..6 {
                s.push_str(&format!(
                    "QmluYXJ5IGRhdGEgbGluZSB7aX0gZm9yIHRoZSBhdHRhY2htZW50IHRlc3Q{i}\n"
                ));
            }
            s
        };
        let multipart = format!(
            "From: Files <files@example.net>\nTo: {user}@example.org\nSubject: Attachment for {user}\n\
             Date: Wed, 01 Jul 2020 00:00:00 +0000\nMessage-ID: <{user}.7@example.org>\nMIME-Version: 1.0\n\
             Content-Type: multipart/mixed; boundary=\"b1\"\n\n--b1\nContent-Type: text/plain\n\n\
             See attached.\n--b1\nContent-Type: application/octet-stream; name=\"a.bin\"\n\
             Content-Transfer-Encoding: base64\nContent-Disposition: attachment; filename=\"a.bin\"\n\n\
             {attachment}--b1--\n"
        )
        .into_bytes();
        let msgs: Vec<(&str, u64, &str, Vec<u8>)> = vec![
            (
                "INBOX",
                1_577_880_000,
                "S",
                message(user, 1, "Welcome", "Hello there.\n"),
            ),
            (
                "INBOX",
                1_580_644_800,
                "FR",
                message(user, 2, "Quarterly report", "Numbers inside.\n"),
            ),
            (
                "INBOX",
                1_583_150_400,
                "",
                message(user, 3, "To be expunged (gap)", "gone\n"),
            ),
            (
                "INBOX",
                1_585_720_800,
                "T",
                message(user, 4, "Deleted, not expunged", "marked\n"),
            ),
            (
                "INBOX",
                1_588_302_000,
                "DS",
                message(user, 5, "Draft reply", "unfinished\n"),
            ),
            (
                "INBOX",
                1_590_980_400,
                "S",
                message(
                    user,
                    6,
                    "Grüße aus Köln – 8bit",
                    "Ünïcödé body: Grüße, €, 日本語\n",
                ),
            ),
            ("INBOX", 1_593_561_600, "RS", multipart),
            (
                "INBOX",
                1_596_240_000,
                "",
                message(user, 8, "Last one, expunged", "gone too\n"),
            ),
            (
                "Work",
                1_600_000_000,
                "S",
                message(user, 9, "Project kickoff", "Let's go.\n"),
            ),
            (
                "Work",
                1_600_086_400,
                "FS",
                message(user, 10, "Budget", "Money.\n"),
            ),
            (
                "Work",
                1_600_172_800,
                "",
                message(user, 11, "Old thread, expunged", "old\n"),
            ),
            (
                "Work/Sub",
                1_601_510_400,
                "S",
                message(user, 12, "Sub item", "nested\n"),
            ),
            (
                "Work/Sub",
                1_601_596_800,
                "",
                message(user, 13, "Sub item 2", "nested too\n"),
            ),
            (
                "Ünï Box",
                1_604_188_800,
                "S",
                message(user, 14, "Unicode folder", "box\n"),
            ),
            (
                "Été",
                1_606_780_800,
                "",
                message(user, 15, "Summer", "sun\n"),
            ),
            (
                "R&D",
                1_609_459_200,
                "S",
                message(user, 16, "Lab results", "science\n"),
            ),
            (
                "R&D",
                1_609_545_600,
                "F",
                message(user, 17, "Patent draft", "secret\n"),
            ),
        ];
        self.import(user, &msgs);
        let da = |args: &[&str]| {
            self.doveadm(user, args);
        };
        da(&["mailbox", "create", "Archive", "Drafts"]);
        self.set_flags(
            user,
            &[
                ("add", "$Label1 Important", "INBOX", "2"),
                ("add", "custom_kw $Forwarded", "INBOX", "6"),
                ("add", "NonJunk Important", "Work", "2"),
                ("add", "\\Answered $Label1", "R&D", "1"),
                ("remove", "\\Seen", "Work", "1"),
            ],
        );
        da(&["expunge", "mailbox", "INBOX", "uid", "3,8"]);
        da(&["copy", "Archive", "mailbox", "INBOX", "uid", "1,2,6"]);
        da(&["copy", "Ünï Box", "mailbox", "Work/Sub", "uid", "2"]);
        // Delivered behind Dovecot's back: a CRLF message in Work/cur (no
        // ,S= / ,W= in the name) and a plain message left in INBOX/new.
        let crlf =
            message(user, 18, "CRLF line endings", "line one\nline two\n").replace_lf_with_crlf();
        self.deliver_foreign(
            user,
            "Work",
            "cur",
            &format!("1600259200.M77P77.{user}-crlf:2,S"),
            &crlf,
            1_600_259_200,
        );
        let fresh = message(user, 19, "Fresh in new/", "not yet seen\n");
        self.deliver_foreign(
            user,
            "INBOX",
            "new",
            &format!("1600345600.M78P78.{user}-new"),
            &fresh,
            1_600_345_600,
        );
        // Let Dovecot assign UIDs to them (Work: 4; INBOX: 9).
        da(&["mailbox", "status", "messages", "INBOX", "Work"]);
        self.doveadm(user, &["fetch", "uid", "mailbox", "INBOX"]);
        self.doveadm(user, &["fetch", "uid", "mailbox", "Work"]);
        da(&["expunge", "mailbox", "Work", "uid", "3"]);
        self.set_flags(user, &[("add", "\\Flagged custom_kw", "Work", "4")]);
        da(&[
            "mailbox",
            "subscribe",
            "INBOX",
            "Work",
            "Work/Sub",
            "Ünï Box",
            "R&D",
            "Gone/Away",
        ]);
        let (inbox, srv) = (format!("inbox comment of {user}"), format!("srv-{user}"));
        self.set_metadata(
            user,
            &[
                (Some("INBOX"), "/private/comment", &inbox),
                (
                    Some("Work"),
                    "/shared/vendor/vendor.dovecot/foo",
                    "shared value",
                ),
                (
                    Some("Work/Sub"),
                    "/private/comment",
                    "multi\nline\twith tab",
                ),
                (Some("Ünï Box"), "/private/comment", "Ünïcödé välue"),
                (Some("R&D"), "/shared/comment", "R&D shared comment"),
                (None, "/private/vendor/vendor.dovecot/servervalue", &srv),
                (
                    None,
                    "/shared/vendor/vendor.dovecot/sharedsrv",
                    "server shared",
                ),
            ],
        );
    }

    /// `doveadm mailbox metadata set` for each (mailbox, key, value); `None` is server
    /// METADATA (`-s ''`).
    pub fn set_metadata(&self, user: &str, entries: &[(Option<&str>, &str, &str)]) {
        for (mb, key, value) in entries {
            match mb {
                Some(mb) => self.doveadm(user, &["mailbox", "metadata", "set", mb, key, value]),
                None => self.doveadm(user, &["mailbox", "metadata", "set", "-s", "", key, value]),
            };
        }
    }

    /// Canonical text of everything Dovecot reports for `user`: mailbox list,
    /// subscriptions, per-mailbox status (messages, uidvalidity, uidnext,
    /// guid), per-message uid/guid/flags+keywords/received date/physical and
    /// virtual size/SHA-256 of the full text, mailbox METADATA and server
    /// METADATA. `\Recent` is left out (session state). Does not use
    /// `fetch modseq`, which would alter the store.
    pub fn snapshot(&self, user: &str) -> String {
        let mut out = String::new();

        let mailboxes: Vec<String> = self
            .doveadm(user, &["mailbox", "list"])
            .lines()
            .map(str::to_string)
            .collect();
        section(
            &mut out,
            "mailboxes",
            mailboxes.iter().map(|m| format!("mailbox\t{m}")).collect(),
        );

        let subs = self.doveadm(user, &["mailbox", "list", "-s"]);
        section(
            &mut out,
            "subscriptions",
            subs.lines().map(|m| format!("subscribed\t{m}")).collect(),
        );

        // `mailbox list` also shows non-selectable/non-existent names (e.g. a
        // LAYOUT=fs parent directory without cur/, or a missing INBOX);
        // `mailbox status '*'` only reports mailboxes that really exist.
        let status = self.doveadm(
            user,
            &[
                "-f",
                "tab",
                "mailbox",
                "status",
                "messages uidvalidity uidnext guid",
                "*",
            ],
        );
        let status_rows = parse_tab(&status);
        let existing: Vec<String> = status_rows
            .iter()
            .map(|r| col(r, "mailbox").to_string())
            .collect();
        let status_lines = status_rows
            .iter()
            .map(|r| {
                format!(
                    "status\t{}\tmessages={}\tuidvalidity={}\tuidnext={}\tguid={}",
                    col(r, "mailbox"),
                    col(r, "messages"),
                    col(r, "uidvalidity"),
                    col(r, "uidnext"),
                    col(r, "guid")
                )
            })
            .collect();
        section(&mut out, "status", status_lines);

        let hashes = self.text_hashes(user);
        let fetch = self.doveadm(
            user,
            &[
                "-f",
                "tab",
                "fetch",
                "mailbox uid guid flags date.received size.physical size.virtual",
                "ALL",
            ],
        );
        let mut msgs: Vec<(String, u64, String)> = parse_tab(&fetch)
            .into_iter()
            .map(|r| {
                let mailbox = col(&r, "mailbox").to_string();
                let uid: u64 = col(&r, "uid").parse().expect("numeric uid");
                let mut flags: Vec<&str> =
                    col(&r, "flags").split(' ').filter(|f| !f.is_empty() && *f != "\\Recent").collect();
                flags.sort();
                let sha = hashes
                    .get(&(mailbox.clone(), uid))
                    .unwrap_or_else(|| panic!("no `fetch text` output for {mailbox} uid {uid}"));
                let line = format!(
                    "msg\t{mailbox}\tuid={uid}\tguid={}\tflags={}\treceived={}\tphysical={}\tvirtual={}\tsha256={sha}",
                    col(&r, "guid"),
                    flags.join(" "),
                    col(&r, "date.received"),
                    col(&r, "size.physical"),
                    col(&r, "size.virtual"),
                );
                (mailbox, uid, line)
            })
            .collect();
        // Numeric UID order inside each mailbox (not lexical).
        msgs.sort();
        out.push_str("== messages\n");
        for (_, _, l) in msgs {
            out.push_str(&l);
            out.push('\n');
        }

        let mut meta = Vec::new();
        for mb in &existing {
            for key in self
                .doveadm(user, &["mailbox", "metadata", "list", "-p", mb])
                .lines()
            {
                let v = self.metadata_value(user, &[mb, key]);
                meta.push(format!("meta\t{mb}\t{key}\t{v:?}"));
            }
        }
        section(&mut out, "metadata", meta);

        // Quirk: without a key prefix `metadata list -s ''` shows only the
        // /private keys, so list both prefixes explicitly.
        let mut server = Vec::new();
        for prefix in ["/private", "/shared"] {
            for key in self
                .doveadm(
                    user,
                    &["mailbox", "metadata", "list", "-s", "-p", "", prefix],
                )
                .lines()
            {
                let v = self.metadata_value(user, &["-s", "", key]);
                server.push(format!("server-meta\t{key}\t{v:?}"));
            }
        }
        server.dedup();
        section(&mut out, "server metadata", server);
        out
    }

    /// Only the lines of `snapshot(user)` about `mailbox` (status, messages,
    /// metadata).
    pub fn snapshot_mailbox(&self, user: &str, mailbox: &str) -> String {
        filter_snapshot(&self.snapshot(user), mailbox)
    }

    fn metadata_value(&self, user: &str, args: &[&str]) -> String {
        let mut full = vec!["-f", "tab", "mailbox", "metadata", "get"];
        full.extend_from_slice(args);
        let raw = self.doveadm(user, &full);
        // tab formatter: "value\n<value>\n"
        let v = raw.strip_prefix("value\n").unwrap_or(&raw);
        v.strip_suffix('\n').unwrap_or(v).to_string()
    }

    /// SHA-256 of `fetch text` for every message, keyed by (mailbox, uid).
    /// Uses the pager formatter and the physical size to cut the raw bytes.
    fn text_hashes(&self, user: &str) -> BTreeMap<(String, u64), String> {
        let raw = self.doveadm_bytes(
            user,
            &[
                "-f",
                "pager",
                "fetch",
                "mailbox uid size.physical text",
                "ALL",
            ],
        );
        let mut map = BTreeMap::new();
        let mut p = Pager::new(&raw);
        while !p.done() {
            let mailbox = p.field("mailbox");
            let uid: u64 = p.field("uid").parse().expect("numeric uid");
            let size: usize = p.field("size.physical").parse().expect("numeric size");
            let text = p.text(size, &format!("{mailbox} uid {uid}"));
            map.insert((mailbox.clone(), uid), sha256_hex(text));
        }
        map
    }
}

/// Deterministic pseudo-random (incompressible) bytes: xorshift64* seeded with `seed`.
pub fn pseudo_random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Base64 of `data` in lines of 76 characters, each ending with `\n` (the layout Dovecot
/// can re-encode bit-exactly, so SIS externalises it).
pub fn base64_lines(data: &[u8]) -> String {
    use base64::Engine as _;
    let enc = base64::engine::general_purpose::STANDARD.encode(data);
    let mut s = String::with_capacity(enc.len() + enc.len() / 76 + 1);
    for chunk in enc.as_bytes().chunks(76) {
        s.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        s.push('\n');
    }
    s
}

/// Attachment bytes shared by every message/user of `build_dbox_store` (3000 bytes).
pub fn shared_attachment() -> Vec<u8> {
    pseudo_random_bytes(0xA77A_C4ED, 3000)
}

/// Second attachment of `build_dbox_store` (1600 bytes, above the 1k SIS minimum).
pub fn second_attachment() -> Vec<u8> {
    pseudo_random_bytes(0xB0B0_2222, 1600)
}

/// A multipart/mixed message for `user` with a text part and one base64
/// `application/octet-stream` part per item of `attachments` (`(file name, bytes)`).
/// LF line endings (convert with `replace_lf_with_crlf` for CRLF).
pub fn attachment_message(
    user: &str,
    n: u32,
    subject: &str,
    attachments: &[(&str, &[u8])],
) -> Vec<u8> {
    let mut m = format!(
        "From: Files {n} <files{n}@example.net>\nTo: {user}@example.org\nSubject: {subject}\n\
         Date: Tue, 2 Jun 2020 10:00:{:02} +0000\nMessage-ID: <{user}.att{n}@example.org>\nMIME-Version: 1.0\n\
         Content-Type: multipart/mixed; boundary=\"=_b{n}\"\n\nThis is a MIME message.\n\n\
         --=_b{n}\nContent-Type: text/plain; charset=us-ascii\n\nSee the {} attachment(s).\n",
        n % 60,
        attachments.len()
    );
    for (name, data) in attachments {
        m.push_str(&format!(
            "--=_b{n}\nContent-Type: application/octet-stream; name=\"{name}\"\n\
             Content-Transfer-Encoding: base64\nContent-Disposition: attachment; filename=\"{name}\"\n\n{}",
            base64_lines(data)
        ));
    }
    m.push_str(&format!("--=_b{n}--\n"));
    m.into_bytes()
}

impl Dovecot {
    /// Builds a dbox store (sdbox or mdbox, with `mail_attachment_dir` for SIS) for `user`:
    /// controlled received dates, folder hierarchy, non-ASCII folder names, flags, keywords,
    /// copies between mailboxes, expunges (a gap and the end), messages with the same
    /// base64 attachment (identical bytes for every user, so SIS dedups it), one message
    /// with two attachments, a CRLF message with an attachment, one with a small inline
    /// attachment, subscriptions, mailbox and server METADATA. Then toggles a flag on
    /// `Work` until that mailbox has a `dovecot.index` (the others only have
    /// `dovecot.index.log`). For an mdbox location with `ALT=`, `Work/Sub` is moved to
    /// the alt storage (`altmove` + `purge`) before the expunges, so expunged,
    /// unpurged messages also remain in `m.N` files.
    ///
    /// Resulting UIDs: INBOX 1,2,4,5,6,7 (3 and 8 expunged); Work 1..3; Work/Sub 1,2;
    /// `Ünï Box` 1 + copy of Work 2 (uid 2); Été 1; Archive: copies of INBOX 4,5 (1,2).
    pub fn build_dbox_store(&self, user: &str) {
        let a = shared_attachment();
        let b = second_attachment();
        let small = pseudo_random_bytes(0x5A11, 300);
        let msgs: Vec<(&str, u64, &str, Vec<u8>)> = vec![
            (
                "INBOX",
                1_577_880_000,
                "S",
                message(user, 1, "Welcome", "Hello there.\n"),
            ),
            (
                "INBOX",
                1_580_644_800,
                "FR",
                message(user, 2, "Quarterly report", "Numbers inside.\n"),
            ),
            (
                "INBOX",
                1_583_150_400,
                "",
                attachment_message(user, 3, "Attachment, expunged (gap)", &[("a.bin", &a)]),
            ),
            (
                "INBOX",
                1_585_720_800,
                "S",
                attachment_message(user, 4, "Shared attachment", &[("a.bin", &a)]),
            ),
            (
                "INBOX",
                1_588_302_000,
                "RS",
                attachment_message(user, 5, "Two attachments", &[("a.bin", &a), ("b.bin", &b)]),
            ),
            (
                "INBOX",
                1_590_980_400,
                "S",
                message(
                    user,
                    6,
                    "Grüße aus Köln – 8bit",
                    "Ünïcödé body: Grüße, €, 日本語\n",
                ),
            ),
            (
                "INBOX",
                1_593_561_600,
                "T",
                attachment_message(user, 7, "CRLF with attachment", &[("a.bin", &a)])
                    .replace_lf_with_crlf(),
            ),
            (
                "INBOX",
                1_596_240_000,
                "",
                message(user, 8, "Last one, expunged", "gone too\n"),
            ),
            (
                "Work",
                1_600_000_000,
                "S",
                message(user, 9, "Project kickoff", "Let's go.\n"),
            ),
            (
                "Work",
                1_600_086_400,
                "F",
                attachment_message(user, 10, "Work attachment", &[("a.bin", &a)]),
            ),
            (
                "Work",
                1_600_172_800,
                "DS",
                message(user, 11, "Draft", "unfinished\n"),
            ),
            (
                "Work/Sub",
                1_601_510_400,
                "S",
                message(user, 12, "Sub item", "nested\n"),
            ),
            (
                "Work/Sub",
                1_601_596_800,
                "",
                attachment_message(
                    user,
                    13,
                    "Sub attachments",
                    &[("b.bin", &b), ("small.bin", &small)],
                ),
            ),
            (
                "Ünï Box",
                1_604_188_800,
                "S",
                message(user, 14, "Unicode folder", "box\n"),
            ),
            (
                "Été",
                1_606_780_800,
                "",
                attachment_message(user, 15, "Summer file", &[("a.bin", &a)]),
            ),
        ];
        self.import(user, &msgs);
        let da = |args: &[&str]| {
            self.doveadm(user, args);
        };
        da(&["mailbox", "create", "Archive", "Drafts"]);
        self.set_flags(
            user,
            &[
                ("add", "$Label1 Important", "INBOX", "2"),
                ("add", "custom_kw $Forwarded", "INBOX", "6"),
                ("add", "NonJunk Important", "Work", "2"),
                ("add", "\\Answered $Label1", "Ünï Box", "1"),
                ("remove", "\\Seen", "Work", "1"),
            ],
        );
        da(&["copy", "Archive", "mailbox", "INBOX", "uid", "4,5"]);
        da(&["copy", "Ünï Box", "mailbox", "Work", "uid", "2"]);
        if self.location.starts_with("mdbox:") && self.location.contains(":ALT=") {
            da(&["altmove", "mailbox", "Work/Sub", "all"]);
            da(&["purge"]);
        }
        da(&["expunge", "mailbox", "INBOX", "uid", "3,8"]);
        da(&[
            "mailbox",
            "subscribe",
            "INBOX",
            "Work",
            "Work/Sub",
            "Ünï Box",
            "Gone/Away",
        ]);
        let (inbox, srv) = (format!("inbox comment of {user}"), format!("srv-{user}"));
        self.set_metadata(
            user,
            &[
                (Some("INBOX"), "/private/comment", &inbox),
                (
                    Some("Work"),
                    "/shared/vendor/vendor.dovecot/foo",
                    "shared value",
                ),
                (Some("Ünï Box"), "/private/comment", "Ünïcödé välue"),
                (None, "/private/vendor/vendor.dovecot/servervalue", &srv),
            ],
        );
        // Flag toggles until Work's transaction log is big enough for Dovecot to write
        // a dovecot.index (about 8 KiB of log).
        let index = self.mailbox_path(user, "Work").join("dovecot.index");
        for i in 0..400 {
            if index.exists() {
                break;
            }
            let uid = (i % 3 + 1).to_string();
            self.set_flags(
                user,
                &[
                    ("add", "\\Flagged", "Work", &uid),
                    ("remove", "\\Flagged", "Work", &uid),
                ],
            );
        }
        // uid 2 is \Flagged from the import: the loop removed it; put it back.
        da(&["flags", "add", "\\Flagged", "mailbox", "Work", "uid", "2"]);
    }

    /// The full text of one message as Dovecot returns it (`fetch text`), attachments of
    /// SIS stores included.
    pub fn fetch_text(&self, user: &str, mailbox: &str, uid: u32) -> Vec<u8> {
        let raw = self.doveadm_bytes(
            user,
            &[
                "-f",
                "pager",
                "fetch",
                "mailbox uid size.physical text",
                "mailbox",
                mailbox,
                "uid",
                &uid.to_string(),
            ],
        );
        let mut p = Pager::new(&raw);
        assert!(!p.done(), "no message {mailbox} uid {uid} for {user}");
        p.field("mailbox");
        p.field("uid");
        let size: usize = p.field("size.physical").parse().expect("numeric size");
        p.text(size, &format!("{mailbox} uid {uid}")).to_vec()
    }

    /// Mailbox GUID (`mailbox status guid`).
    pub fn mailbox_guid(&self, user: &str, mailbox: &str) -> String {
        let out = self.doveadm(user, &["-f", "tab", "mailbox", "status", "guid", mailbox]);
        let rows = parse_tab(&out);
        col(&rows[0], "guid").to_string()
    }
}

/// Reads `doveadm -f pager` output field by field: `name: value` lines (`name:` alone for
/// an empty value), then a `text:` block of a known length, then the record separator.
pub struct Pager<'a> {
    raw: &'a [u8],
    pos: usize,
}

impl<'a> Pager<'a> {
    pub fn new(raw: &'a [u8]) -> Self {
        Pager { raw, pos: 0 }
    }

    /// True when every record has been read.
    pub fn done(&self) -> bool {
        self.pos >= self.raw.len()
    }

    /// The next field, which must be `name`.
    pub fn field(&mut self, name: &str) -> String {
        let raw = self.raw;
        let empty = format!("{name}:\n");
        if raw[self.pos..].starts_with(empty.as_bytes()) {
            self.pos += empty.len();
            return String::new();
        }
        let prefix = format!("{name}: ");
        assert!(
            raw[self.pos..].starts_with(prefix.as_bytes()),
            "unexpected doveadm pager output at byte {}: expected {prefix:?}, got {:?}",
            self.pos,
            String::from_utf8_lossy(&raw[self.pos..raw.len().min(self.pos + 80)])
        );
        let start = self.pos + prefix.len();
        let end = start
            + raw[start..]
                .iter()
                .position(|&b| b == b'\n')
                .expect("newline after field");
        self.pos = end + 1;
        String::from_utf8_lossy(&raw[start..end]).into_owned()
    }

    /// The `text:` field of `size` bytes (the message's physical size) and the separator
    /// after it; `what` names the message in failures.
    pub fn text(&mut self, size: usize, what: &str) -> &'a [u8] {
        let raw = self.raw;
        assert!(
            raw[self.pos..].starts_with(b"text:\n"),
            "expected text: in pager output"
        );
        self.pos += "text:\n".len();
        assert!(
            self.pos + size <= raw.len(),
            "pager output shorter than size.physical for {what}"
        );
        let text = &raw[self.pos..self.pos + size];
        self.pos += size;
        let rest = &raw[self.pos..];
        if rest.starts_with(b"\x0c\n") {
            self.pos += 2;
        } else if rest.starts_with(b"\n\x0c\n") {
            self.pos += 3;
        } else if rest == b"\n" {
            self.pos += 1;
        } else {
            assert!(
                rest.is_empty(),
                "unexpected bytes after the text of {what}: {:?}",
                String::from_utf8_lossy(&rest[..rest.len().min(80)])
            );
        }
        text
    }
}

/// Appends `== name` and the sorted `lines` to `out`.
fn section(out: &mut String, name: &str, mut lines: Vec<String>) {
    lines.sort();
    out.push_str(&format!("== {name}\n"));
    for l in lines {
        out.push_str(&l);
        out.push('\n');
    }
}

/// Keeps the `status`, `msg` and `meta` lines of a snapshot whose mailbox
/// field is `mailbox`.
pub fn filter_snapshot(snapshot: &str, mailbox: &str) -> String {
    let mut s = String::new();
    for line in snapshot.lines() {
        let mut f = line.split('\t');
        let kind = f.next().unwrap_or("");
        if matches!(kind, "status" | "msg" | "meta") && f.next() == Some(mailbox) {
            s.push_str(line);
            s.push('\n');
        }
    }
    s
}

/// Parses doveadm `-f tab` output into rows of (header -> value).
fn parse_tab(text: &str) -> Vec<BTreeMap<String, String>> {
    let mut lines = text.lines();
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let cols: Vec<&str> = header.split('\t').collect();
    lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let vals: Vec<&str> = l.split('\t').collect();
            assert_eq!(
                vals.len(),
                cols.len(),
                "doveadm tab row {l:?} does not match header {header:?}"
            );
            cols.iter()
                .zip(vals)
                .map(|(c, v)| (c.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

fn col<'a>(row: &'a BTreeMap<String, String>, name: &str) -> &'a str {
    row.get(name)
        .unwrap_or_else(|| panic!("doveadm output lacks column {name}: {row:?}"))
}

/// A simple RFC 5322 message for `user` (LF line endings).
pub fn message(user: &str, n: u32, subject: &str, body: &str) -> Vec<u8> {
    format!(
        "Return-Path: <sender{n}@example.net>\nFrom: Sender {n} <sender{n}@example.net>\nTo: {user}@example.org\n\
         Subject: {subject}\nDate: Mon, 1 Jun 2020 12:00:{:02} +0000\nMessage-ID: <{user}.{n}@example.org>\n\
         MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n{body}",
        n % 60
    )
    .into_bytes()
}

/// LF -> CRLF conversion for test messages.
pub trait ToCrlf {
    /// Returns a copy with every `\n` replaced by `\r\n`.
    fn replace_lf_with_crlf(&self) -> Vec<u8>;
}

impl ToCrlf for Vec<u8> {
    fn replace_lf_with_crlf(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len() + 64);
        for &b in self {
            if b == b'\n' {
                v.push(b'\r');
            }
            v.push(b);
        }
        v
    }
}

/// Modified UTF-7 (RFC 3501 §5.1.3) encoding of one mailbox name level.
pub fn mutf7_encode(name: &str) -> String {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";
    let mut out = String::new();
    let mut pending: Vec<u16> = Vec::new();
    let flush = |pending: &mut Vec<u16>, out: &mut String| {
        if pending.is_empty() {
            return;
        }
        let bytes: Vec<u8> = pending.iter().flat_map(|u| u.to_be_bytes()).collect();
        out.push('&');
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            let chars = chunk.len() + 1;
            for i in 0..chars {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out.push('-');
        pending.clear();
    };
    for c in name.chars() {
        if (' '..='~').contains(&c) {
            flush(&mut pending, &mut out);
            if c == '&' {
                out.push_str("&-");
            } else {
                out.push(c);
            }
        } else {
            let mut buf = [0u16; 2];
            pending.extend_from_slice(c.encode_utf16(&mut buf));
        }
    }
    flush(&mut pending, &mut out);
    out
}
