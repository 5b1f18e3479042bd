//! Incremental backups (issue #3) against a real, daemon-less Dovecot: chains of a full and
//! incrementals (`--base`), since-archives (`--since`), cron runs (`--state-dir`), restore of
//! chains and `--as-of`, `list --deleted`, `cat` through chains and `merge`.
//!
//! Every comparison is against what `doveadm` reports (see `Dovecot::snapshot`) or against the
//! bytes of the mail files on disk.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::dovecot::{Dovecot, message};
use crate::util::{
    Workspace, assert_text_eq, hold_flock, line_diff, maildump, release_flock, report, run,
    run_expect_code, run_ok, sha256_hex, tree_listing,
};

/// Exit code for a missing archive, link or content of a chain.
const EXIT_NOT_FOUND: i32 = 8;
/// Exit code when another run holds the `--state-dir` lock.
const EXIT_CONFLICT: i32 = 6;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// `maildump backup --location LOC --home TEMPLATE --all-users` (output and chain options are
/// added by the caller).
fn backup_cmd(src: &Dovecot) -> Command {
    let mut cmd = src.backup_cmd();
    cmd.args(["--all-users", "--quiet"]);
    cmd
}

/// Full backup of every user of `src` into `out`.
fn backup_full(src: &Dovecot, out: &Path) {
    run_ok(backup_cmd(src).arg("-o").arg(out));
}

/// Incremental backup of `src` into `out` against `bases` (newest first).
fn backup_inc(src: &Dovecot, out: &Path, bases: &[&Path]) {
    let mut cmd = backup_cmd(src);
    cmd.arg("-o").arg(out);
    for b in bases {
        cmd.arg("--base").arg(b);
    }
    run_ok(&mut cmd);
}

/// Asserts that every user of `want` has exactly that Dovecot snapshot in `dst`, and that
/// `dst` holds no other user.
#[track_caller]
fn assert_snapshots(what: &str, want: &[(String, String)], dst: &Dovecot) {
    let users: Vec<String> = want.iter().map(|(u, _)| u.clone()).collect();
    assert_eq!(dst.users(), users, "{what}: users present in the target");
    for (u, snap) in want {
        assert_text_eq(&format!("{what}: user {u}"), snap, &dst.snapshot(u));
    }
}

/// Failures collected through a test, so that one run reports every broken behaviour; the
/// test panics with all of them at the end (`finish`).
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    /// Records a failure unless `cond`.
    fn that(&mut self, cond: bool, msg: impl FnOnce() -> String) {
        if !cond {
            self.0.push(msg());
        }
    }

    /// Records a line diff unless `expected == actual`.
    fn text(&mut self, what: &str, expected: &str, actual: &str) {
        if expected != actual {
            self.0.push(format!(
                "{what}: differs ('-' = expected, '+' = actual)\n{}",
                line_diff(expected, actual)
            ));
        }
    }

    /// Like [`assert_snapshots`], recorded.
    fn snapshots(&mut self, what: &str, want: &[(String, String)], dst: &Dovecot) {
        let users: Vec<String> = want.iter().map(|(u, _)| u.clone()).collect();
        let got = dst.users();
        if got != users {
            self.0.push(format!(
                "{what}: users in the target: want {users:?}, got {got:?}"
            ));
            return;
        }
        for (u, snap) in want {
            self.text(&format!("{what}: user {u}"), snap, &dst.snapshot(u));
        }
    }

    /// Runs `cmd`; records its report unless it exits with 0. Returns success.
    fn run_ok(&mut self, what: &str, cmd: &mut Command) -> bool {
        let out = run(cmd);
        let ok = out.status.success();
        if !ok {
            self.0
                .push(format!("{what}: command failed\n{}", report(cmd, &out)));
        }
        ok
    }

    /// Panics with every recorded failure.
    #[track_caller]
    fn finish(self) {
        if !self.0.is_empty() {
            panic!(
                "{} problem(s):\n\n{}",
                self.0.len(),
                self.0
                    .join("\n\n----------------------------------------\n\n")
            );
        }
    }
}

/// Snapshots of `users` in `src`.
fn snapshots(src: &Dovecot, users: &[&str]) -> Vec<(String, String)> {
    users
        .iter()
        .map(|u| (u.to_string(), src.snapshot(u)))
        .collect()
}

/// `zstd -dc ARCHIVE | tar ARGS...` (the archive is a zstd-compressed tar stream).
fn untar(archive: &Path, tar_args: &[&str]) -> Vec<u8> {
    let tar_stream = run_ok(Command::new("zstd").arg("-qdc").arg(archive)).stdout;
    let mut cmd = Command::new("tar");
    cmd.args(tar_args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn tar");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || stdin.write_all(&tar_stream));
    let out = child.wait_with_output().expect("tar");
    writer
        .join()
        .expect("writer thread")
        .expect("write tar stream");
    assert!(out.status.success(), "tar failed\n{}", report(&cmd, &out));
    out.stdout
}

/// Names of the tar members of `archive`, in stream order.
fn members(archive: &Path) -> Vec<String> {
    String::from_utf8(untar(archive, &["-tf", "-"]))
        .expect("tar -t output is UTF-8")
        .lines()
        .map(str::to_string)
        .collect()
}

/// The `.eml` members of `archive`, sorted.
fn eml_members(archive: &Path) -> BTreeSet<String> {
    members(archive)
        .into_iter()
        .filter(|m| m.ends_with(".eml"))
        .collect()
}

/// The manifest (`MAILDUMP.json` member) of `archive`.
fn manifest(archive: &Path) -> serde_json::Value {
    let raw = untar(archive, &["-xOf", "-", "MAILDUMP.json"]);
    serde_json::from_slice(&raw).unwrap_or_else(|e| {
        panic!(
            "MAILDUMP.json of {} is not JSON: {e}\n{}",
            archive.display(),
            String::from_utf8_lossy(&raw)
        )
    })
}

/// Archive id and creation time (Unix seconds) of `archive`, from its manifest.
fn id_and_created(archive: &Path) -> (String, i64) {
    let m = manifest(archive);
    let id = m["archive_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no archive_id in manifest of {}: {m}", archive.display()))
        .to_string();
    let created = m["created"]
        .as_str()
        .unwrap_or_else(|| panic!("no created in manifest of {}: {m}", archive.display()));
    (id, rfc3339_secs(created))
}

/// Unix seconds of an RFC 3339 time.
fn rfc3339_secs(s: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("not an RFC 3339 time: {s:?}: {e}"))
        .timestamp()
}

/// Current Unix time in whole seconds.
fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// Sleeps long enough that the next archive gets a later `created` second.
fn next_second() {
    std::thread::sleep(Duration::from_millis(1100));
}

/// `maildump list ARCHIVES... --json EXTRA...`, one JSON object per line.
fn list_json(archives: &[&Path], extra: &[&str]) -> Vec<serde_json::Value> {
    let mut cmd = maildump();
    cmd.arg("list");
    for a in archives {
        cmd.arg(a);
    }
    cmd.arg("--json").args(extra);
    let out = run_ok(&mut cmd);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}\n{}", report(&cmd, &out)))
        })
        .collect()
}

/// A string field of a `list --json` object (numbers rendered as text); panics when missing.
fn field(v: &serde_json::Value, k: &str) -> String {
    match &v[k] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => panic!("list --json: missing {k:?} in {v}"),
        other => other.to_string(),
    }
}

/// `flags` and `keywords` of a `list --json` object as one sorted, space-separated string.
fn listed_flags(v: &serde_json::Value) -> String {
    let mut all = BTreeSet::new();
    for k in ["flags", "keywords"] {
        for f in v[k]
            .as_array()
            .unwrap_or_else(|| panic!("list --json: {k:?} is not an array in {v}"))
        {
            let f = f.as_str().expect("flag is a string");
            if f != "\\Recent" {
                all.insert(f.to_string());
            }
        }
    }
    all.into_iter().collect::<Vec<_>>().join(" ")
}

/// `user mailbox uid guid flags sha256` of every message Dovecot reports for `users` in
/// `src`, with the SHA-256 of the mail file on disk.
fn live_records(src: &Dovecot, users: &[&str]) -> BTreeSet<String> {
    let mut set = BTreeSet::new();
    for user in users {
        let fetch = src.doveadm(
            user,
            &["-f", "tab", "fetch", "mailbox uid guid flags", "ALL"],
        );
        for line in fetch.lines().skip(1).filter(|l| !l.is_empty()) {
            let f: Vec<&str> = line.split('\t').collect();
            let (mailbox, uid, guid, flags) = (f[0], f[1], f[2], f[3]);
            let flags: BTreeSet<&str> = flags
                .split(' ')
                .filter(|x| !x.is_empty() && *x != "\\Recent")
                .collect();
            let flags = flags.into_iter().collect::<Vec<_>>().join(" ");
            let file = src.message_file(user, mailbox, uid.parse().expect("numeric uid"));
            let sha = sha256_hex(&fs::read(&file).expect("read mail file"));
            set.insert(format!(
                "{user}\t{mailbox}\tuid={uid}\tguid={guid}\tflags={flags}\tsha256={sha}"
            ));
        }
    }
    set
}

/// The same rendering as [`live_records`] for `list --json` output.
fn listed_records(list: &[serde_json::Value]) -> BTreeSet<String> {
    list.iter()
        .map(|v| {
            format!(
                "{}\t{}\tuid={}\tguid={}\tflags={}\tsha256={}",
                field(v, "user"),
                field(v, "mailbox"),
                field(v, "uid"),
                field(v, "guid"),
                listed_flags(v),
                field(v, "sha256")
            )
        })
        .collect()
}

fn join_set(s: &BTreeSet<String>) -> String {
    s.iter().map(|l| format!("{l}\n")).collect()
}

/// Delivers `bytes` into `mailbox` of `user` with `doveadm save`.
fn save(src: &Dovecot, user: &str, mailbox: &str, bytes: &[u8]) {
    let out = src.save(user, mailbox, bytes);
    assert!(
        out.status.success(),
        "doveadm save -m {mailbox} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// UID of the message with `subject` in `mailbox` (exactly one must match).
fn uid_of(src: &Dovecot, user: &str, mailbox: &str, subject: &str) -> u32 {
    let out = src.doveadm(
        user,
        &[
            "-f", "tab", "fetch", "uid", "mailbox", mailbox, "subject", subject,
        ],
    );
    let uids: Vec<u32> = out
        .lines()
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|l| l.trim().parse().expect("numeric uid"))
        .collect();
    assert_eq!(
        uids.len(),
        1,
        "expected one message with subject {subject:?} in {user}/{mailbox}, got {uids:?}"
    );
    uids[0]
}

/// GUID of `mailbox`/`uid`.
fn guid_of(src: &Dovecot, user: &str, mailbox: &str, uid: u32) -> String {
    let out = src.doveadm(
        user,
        &[
            "-f",
            "tab",
            "fetch",
            "guid",
            "mailbox",
            mailbox,
            "uid",
            &uid.to_string(),
        ],
    );
    let guid = out.lines().nth(1).unwrap_or_default().trim().to_string();
    assert!(
        !guid.is_empty(),
        "no guid for {user}/{mailbox} uid {uid}: {out:?}"
    );
    guid
}

/// `doveadm flags add|remove FLAGS mailbox M uid N`.
fn flags(src: &Dovecot, user: &str, op: &str, flags: &str, mailbox: &str, uid: u32) {
    src.set_flags(user, &[(op, flags, mailbox, &uid.to_string())]);
}

/// `doveadm expunge mailbox M uid N`.
fn expunge(src: &Dovecot, user: &str, mailbox: &str, uid: u32) {
    src.doveadm(
        user,
        &["expunge", "mailbox", mailbox, "uid", &uid.to_string()],
    );
}

/// Tar member path of a message in an ASCII-named mailbox.
fn member(user: &str, mailbox: &str, uid: u32) -> String {
    format!("users/{user}/{mailbox}/{uid}.eml")
}

/// Dovecot snapshots per user: (user, snapshot).
type Snapshots = Vec<(String, String)>;

/// `want` (snapshots of an older state) with each mailbox's UIDNEXT raised to the one
/// `newest` has under the same UIDVALIDITY: a restore of an older state of a chain never
/// gives a UIDNEXT below the chain's newest (issue 12; `invariants.rs`).
fn uidnext_floor(want: &Snapshots, newest: &Snapshots) -> Snapshots {
    let field = |l: &str, k: &str| -> Option<String> {
        l.split('\t')
            .find_map(|f| f.strip_prefix(&format!("{k}=")).map(str::to_string))
    };
    let mut next: BTreeMap<(String, String, String), u64> = BTreeMap::new();
    for (u, snap) in newest {
        for l in snap.lines().filter(|l| l.starts_with("status\t")) {
            let mb = l.split('\t').nth(1).unwrap_or_default().to_string();
            if let (Some(v), Some(n)) = (field(l, "uidvalidity"), field(l, "uidnext")) {
                next.insert((u.clone(), mb, v), n.parse().unwrap_or(0));
            }
        }
    }
    want.iter()
        .map(|(u, snap)| {
            let lines: Vec<String> = snap
                .lines()
                .map(|l| {
                    let mb = l.split('\t').nth(1).unwrap_or_default().to_string();
                    match (
                        l.starts_with("status\t"),
                        field(l, "uidvalidity"),
                        field(l, "uidnext"),
                    ) {
                        (true, Some(v), Some(n)) => {
                            let floor = next.get(&(u.clone(), mb, v)).copied().unwrap_or(0);
                            let n: u64 = n.parse().unwrap_or(0);
                            l.replace(
                                &format!("uidnext={n}"),
                                &format!("uidnext={}", n.max(floor)),
                            )
                        }
                        _ => l.to_string(),
                    }
                })
                .collect();
            (u.clone(), lines.join("\n") + "\n")
        })
        .collect()
}

/// A message that the scenario deletes, with its bytes read from disk before.
#[derive(Clone, Debug)]
struct Gone {
    user: String,
    mailbox: String,
    uid: u32,
    guid: String,
    bytes: Vec<u8>,
    /// 1: gone in INC1 (last seen in FULL); 2: gone in INC2 (last seen in INC1).
    round: u8,
}

impl Gone {
    fn capture(src: &Dovecot, user: &str, mailbox: &str, uid: u32, round: u8) -> Gone {
        let bytes = fs::read(src.message_file(user, mailbox, uid)).expect("read mail file");
        Gone {
            user: user.to_string(),
            mailbox: mailbox.to_string(),
            uid,
            guid: guid_of(src, user, mailbox, uid),
            bytes,
            round,
        }
    }
}

/// A full backup and two incrementals of a changing store (see [`build_chain`]).
struct Chain {
    ws: Workspace,
    src: Dovecot,
    full: PathBuf,
    inc1: PathBuf,
    inc2: PathBuf,
    full_id: String,
    inc1_id: String,
    inc2_id: String,
    full_created: i64,
    inc1_created: i64,
    inc2_created: i64,
    /// State when FULL was taken.
    snap0: Snapshots,
    /// State when INC1 was taken.
    snap1: Snapshots,
    /// State when INC2 was taken (= the live store at the end).
    snap2: Snapshots,
    /// Unix seconds strictly between INC1's and INC2's creation.
    between: i64,
    /// Messages expunged or lost with their mailbox (no copy left anywhere).
    gone: Vec<Gone>,
    /// GUID of the message moved from Work to Drafts in round 1.
    moved_guid: String,
    /// GUID of the message of the deleted and recreated Work/Sub that survives as a copy in
    /// "Ünï Box".
    copied_guid: String,
}

const USERS: [&str; 2] = ["alice", "bob"];

/// Builds the rich store of alice and the small one of bob, then:
/// FULL; round 1 of changes (new mail, flags and keywords, expunges, a move, a rename, a
/// delete, a delete + create with new UIDVALIDITY); INC1 `--base FULL`; round 2 (new mail in
/// the renamed folder, flags on new mail, expunge of mail only INC1 holds, a copy, METADATA);
/// INC2 `--base INC1`.
fn build_chain() -> Chain {
    let ws = Workspace::new();
    let src = Dovecot::new(&ws.join("src"), "");
    src.build_rich_store("alice");
    src.build_small_store("bob");

    let full = ws.join("full.mdump");
    let inc1 = ws.join("inc1.mdump");
    let inc2 = ws.join("inc2.mdump");

    let snap0 = snapshots(&src, &USERS);
    backup_full(&src, &full);
    next_second();

    // ---- round 1
    let mut gone = Vec::new();
    for (user, mailbox, n, subject, body) in [
        ("alice", "INBOX", 101, "new-1", "first new\n"),
        ("alice", "INBOX", 102, "new-2", "second new\n"),
        ("alice", "Work", 103, "new-3", "third new\n"),
    ] {
        save(&src, user, mailbox, &message(user, n, subject, body));
    }
    flags(&src, "alice", "add", "\\Flagged newkw", "INBOX", 1);
    flags(&src, "alice", "remove", "\\Seen custom_kw", "INBOX", 6);
    flags(&src, "alice", "add", "\\Seen", "Work", 1);
    gone.push(Gone::capture(&src, "alice", "INBOX", 4, 1));
    gone.push(Gone::capture(&src, "alice", "INBOX", 5, 1));
    src.doveadm("alice", &["expunge", "mailbox", "INBOX", "uid", "4,5"]);
    let moved_guid = guid_of(&src, "alice", "Work", 2);
    src.doveadm("alice", &["move", "Drafts", "mailbox", "Work", "uid", "2"]);
    src.doveadm("alice", &["mailbox", "rename", "Été", "Summer"]);
    gone.push(Gone::capture(&src, "alice", "R&D", 1, 1));
    gone.push(Gone::capture(&src, "alice", "R&D", 2, 1));
    src.doveadm("alice", &["mailbox", "delete", "R&D"]);
    gone.push(Gone::capture(&src, "alice", "Work/Sub", 1, 1));
    let copied_guid = guid_of(&src, "alice", "Work/Sub", 2);
    assert_eq!(
        copied_guid,
        guid_of(&src, "alice", "Ünï Box", 2),
        "fixture sanity: Ünï Box uid 2 is a copy of Work/Sub uid 2"
    );
    src.doveadm("alice", &["mailbox", "delete", "Work/Sub"]);
    src.doveadm("alice", &["mailbox", "create", "Work/Sub"]);
    save(
        &src,
        "alice",
        "Work/Sub",
        &message("alice", 104, "resub-1", "recreated\n"),
    );
    flags(&src, "bob", "add", "\\Seen", "INBOX", 2);
    save(
        &src,
        "bob",
        "INBOX",
        &message("bob", 101, "bob-new", "for bob\n"),
    );

    let snap1 = snapshots(&src, &USERS);
    assert_ne!(
        snap0, snap1,
        "fixture sanity: round 1 changed what Dovecot reports"
    );
    backup_inc(&src, &inc1, &[&full]);
    next_second();
    let between = now_secs();
    next_second();

    // ---- round 2
    save(
        &src,
        "alice",
        "Summer",
        &message("alice", 105, "new-4", "in renamed\n"),
    );
    let new1 = uid_of(&src, "alice", "INBOX", "new-1");
    flags(&src, "alice", "add", "\\Answered kw2", "INBOX", new1);
    let new3 = uid_of(&src, "alice", "Work", "new-3");
    gone.push(Gone::capture(&src, "alice", "Work", new3, 2));
    expunge(&src, "alice", "Work", new3);
    let new2 = uid_of(&src, "alice", "INBOX", "new-2");
    src.doveadm(
        "alice",
        &[
            "copy",
            "Archive",
            "mailbox",
            "INBOX",
            "uid",
            &new2.to_string(),
        ],
    );
    src.doveadm(
        "alice",
        &[
            "mailbox",
            "metadata",
            "set",
            "Summer",
            "/private/comment",
            "renamed folder",
        ],
    );
    gone.push(Gone::capture(&src, "bob", "INBOX", 1, 2));
    expunge(&src, "bob", "INBOX", 1);

    let snap2 = snapshots(&src, &USERS);
    assert_ne!(
        snap1, snap2,
        "fixture sanity: round 2 changed what Dovecot reports"
    );
    backup_inc(&src, &inc2, &[&inc1]);

    let (full_id, full_created) = id_and_created(&full);
    let (inc1_id, inc1_created) = id_and_created(&inc1);
    let (inc2_id, inc2_created) = id_and_created(&inc2);
    assert!(
        full_created < inc1_created && inc1_created <= between && between < inc2_created,
        "test timing: FULL {full_created}, INC1 {inc1_created}, between {between}, INC2 {inc2_created}"
    );
    Chain {
        ws,
        src,
        full,
        inc1,
        inc2,
        full_id,
        inc1_id,
        inc2_id,
        full_created,
        inc1_created,
        inc2_created,
        snap0,
        snap1,
        snap2,
        between,
        gone,
        moved_guid,
        copied_guid,
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Chain restore, --as-of
// ---------------------------------------------------------------------------------------------

/// FULL INC1 INC2 restores exactly the live store; `--as-of` FULL's id restores the state of the
/// full; `--as-of` a time between INC1 and INC2 restores INC1's state.
#[test]
fn chain_restore_equals_live() {
    let c = build_chain();
    let chain: [&Path; 3] = [&c.full, &c.inc1, &c.inc2];
    let mut p = Problems::default();

    // Manifests link the chain.
    let m0 = manifest(&c.full);
    let m1 = manifest(&c.inc1);
    let m2 = manifest(&c.inc2);
    p.that(m0.get("parent").is_none_or(|x| x.is_null()), || {
        format!("a full backup has no parent: {m0}")
    });
    p.that(m1["parent"]["archive_id"] == c.full_id.as_str(), || {
        format!("INC1's parent should be FULL {}: {m1}", c.full_id)
    });
    p.that(m2["parent"]["archive_id"] == c.inc1_id.as_str(), || {
        format!("INC2's parent should be INC1 {}: {m2}", c.inc1_id)
    });
    p.that(m1["format_minor"] == 4, || {
        format!("an incremental of today's writer is format 1.4: {m1}")
    });
    for a in chain {
        p.run_ok("verify", maildump().arg("verify").arg(a));
    }

    let dst = Dovecot::new(&c.ws.join("dst-chain"), "");
    if p.run_ok("restore FULL INC1 INC2", &mut dst.restore_cmd(&chain)) {
        p.snapshots("restore FULL INC1 INC2 vs live store", &c.snap2, &dst);
    }

    // The whole chain through a pipe, concatenated (as backup software sends it back):
    // split while read, restored the same; `verify -` checks each archive and the links.
    let stream: Vec<u8> = chain.iter().flat_map(|a| fs::read(a).unwrap()).collect();
    fs::write(c.ws.join("chain.stream"), &stream).unwrap();
    let dst = Dovecot::new(&c.ws.join("dst-stdin"), "");
    let mut cmd = dst.restore_cmd(&[Path::new("-")]);
    cmd.stdin(fs::File::open(c.ws.join("chain.stream")).unwrap());
    if p.run_ok("cat FULL INC1 INC2 | restore -", &mut cmd) {
        p.snapshots(
            "restore - (FULL INC1 INC2 concatenated) vs live store",
            &c.snap2,
            &dst,
        );
    }
    let out = run(maildump()
        .args(["verify", "-"])
        .stdin(fs::File::open(c.ws.join("chain.stream")).unwrap()));
    let text = String::from_utf8_lossy(&out.stdout);
    p.that(
        out.status.success()
            && text.matches("OK: ").count() == 4
            && text.contains("chain of 3 archives"),
        || format!("verify - of the concatenated chain: {text}"),
    );
    p.that(
        !text.contains("/tmp") && text.contains("OK: stdin (archive 3 of the stream): "),
        || format!("verify - names the archives of stdin by their place in the stream: {text}"),
    );

    let cases: [(&str, String, &Snapshots); 4] = [
        ("<FULL id>", c.full_id.clone(), &c.snap0),
        ("<INC1 id>", c.inc1_id.clone(), &c.snap1),
        (
            "<Unix seconds between INC1 and INC2>",
            c.between.to_string(),
            &c.snap1,
        ),
        (
            "<RFC 3339 time between INC1 and INC2>",
            chrono::DateTime::from_timestamp(c.between, 0)
                .expect("valid time")
                .format("%Y-%m-%dT%H:%M:%SZ")
                .to_string(),
            &c.snap1,
        ),
    ];
    for (n, (label, as_of, want)) in cases.iter().enumerate() {
        let what = format!("restore FULL INC1 INC2 --as-of {label} ({as_of})");
        let dst = Dovecot::new(&c.ws.join(format!("dst-asof-{n}")), "");
        if p.run_ok(&what, dst.restore_cmd(&chain).args(["--as-of", as_of])) {
            let want = uidnext_floor(want, &c.snap2);
            p.snapshots(&format!("{what} vs the state then"), &want, &dst);
        }
    }

    // One user of the chain, as another user.
    let dst = Dovecot::new(&c.ws.join("dst-one-user"), "");
    let what = "restore FULL INC1 INC2 --user alice --to-user carol";
    if p.run_ok(
        what,
        dst.restore_cmd(&chain)
            .args(["--user", "alice", "--to-user", "carol"]),
    ) {
        let want = [("carol".to_string(), c.snap2[0].1.clone())];
        p.snapshots(what, &want, &dst);
    }

    // list over the chain shows the live state (the last archive's) ...
    p.text(
        "list --json FULL INC1 INC2 vs live store",
        &join_set(&live_records(&c.src, &USERS)),
        &join_set(&listed_records(&list_json(&chain, &[]))),
    );
    // ... and list --as-of FULL the state of FULL.
    p.text(
        "list --json FULL INC1 INC2 --as-of <FULL id> vs list --json FULL",
        &join_set(&listed_records(&list_json(&[&c.full], &[]))),
        &join_set(&listed_records(&list_json(
            &chain,
            &["--as-of", &c.full_id],
        ))),
    );
    p.finish();
}

// ---------------------------------------------------------------------------------------------
// 2. merge
// ---------------------------------------------------------------------------------------------

/// `merge FULL INC1 INC2` restores like the chain; `--keep-deleted` keeps deleted mail with its
/// bytes; an incremental made against INC2 chains onto the merged archive.
#[test]
fn merge_restores_like_the_chain() {
    let c = build_chain();
    let chain: [&Path; 3] = [&c.full, &c.inc1, &c.inc2];
    let mut p = Problems::default();
    let merge = |out: &Path, extra: &[&str]| {
        let mut cmd = maildump();
        cmd.arg("merge")
            .args(chain)
            .args(extra)
            .arg("--quiet")
            .arg("-o")
            .arg(out);
        run_ok(&mut cmd);
        run_ok(maildump().arg("verify").arg(out));
    };

    let merged = c.ws.join("merged.mdump");
    merge(&merged, &[]);
    let mm = manifest(&merged);
    p.that(mm.get("parent").is_none_or(|x| x.is_null()), || {
        format!("a merged archive is a full (no parent): {mm}")
    });
    let replaces: BTreeSet<String> = mm["replaces"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| r["archive_id"].as_str().unwrap_or("?").to_string())
                .collect()
        })
        .unwrap_or_default();
    let ids: BTreeSet<String> = [&c.full_id, &c.inc1_id, &c.inc2_id]
        .into_iter()
        .cloned()
        .collect();
    p.that(replaces == ids, || {
        format!("merged manifest `replaces` should name FULL, INC1, INC2 {ids:?}: {mm}")
    });

    // A synthetic full holds the bytes itself: every message of its state is a member
    // (copies as hard links), and it restores alone.
    let merged_members = members(&merged)
        .into_iter()
        .filter(|m| m.ends_with(".eml"))
        .count();
    let state = list_json(&[&merged], &[]).len();
    p.that(merged_members == state, || {
        format!("merged archive: {merged_members} message members for {state} messages")
    });
    let dst = Dovecot::new(&c.ws.join("dst-merged"), "");
    if p.run_ok("restore MERGED", &mut dst.restore_cmd(&[&merged])) {
        p.snapshots("restore MERGED vs live store", &c.snap2, &dst);
    }
    // Without --keep-deleted no deleted mail is kept.
    let deleted = list_json(&[&merged], &["--deleted"]);
    p.that(deleted.is_empty(), || {
        format!("merge without --keep-deleted kept deleted records: {deleted:?}")
    });

    // --keep-deleted 30d: every deleted message, with its bytes.
    let kept = c.ws.join("merged-keep.mdump");
    merge(&kept, &["--keep-deleted", "30d"]);
    let listed: BTreeSet<String> = list_json(&[&kept], &["--deleted"])
        .iter()
        .map(|v| {
            format!(
                "{}\t{}\tuid={}\tguid={}",
                field(v, "user"),
                field(v, "mailbox"),
                field(v, "uid"),
                field(v, "guid")
            )
        })
        .collect();
    let want: BTreeSet<String> = c
        .gone
        .iter()
        .map(|g| format!("{}\t{}\tuid={}\tguid={}", g.user, g.mailbox, g.uid, g.guid))
        .collect();
    p.text(
        "list MERGED(--keep-deleted 30d) --deleted",
        &join_set(&want),
        &join_set(&listed),
    );
    for g in &c.gone {
        let mut cmd = maildump();
        cmd.arg("cat")
            .arg(&kept)
            .args(["--user", &g.user, "--guid", &g.guid]);
        let out = run(&mut cmd);
        p.that(out.status.success() && out.stdout == g.bytes, || {
            format!(
                "cat of deleted {}/{} uid {} (guid {}) from MERGED(--keep-deleted): want the {} \
                 original bytes\n{}",
                g.user,
                g.mailbox,
                g.uid,
                g.guid,
                g.bytes.len(),
                report(&cmd, &out)
            )
        });
    }
    // Deleted records are not restored by a plain restore.
    let dst = Dovecot::new(&c.ws.join("dst-merged-keep"), "");
    if p.run_ok(
        "restore MERGED(--keep-deleted)",
        &mut dst.restore_cmd(&[&kept]),
    ) {
        p.snapshots(
            "restore MERGED(--keep-deleted 30d) vs live store (deleted records must not come back)",
            &c.snap2,
            &dst,
        );
    }

    // --keep-deleted 1s: only what INC2 found deleted (deleted_by == INC2's creation, age 0);
    // what INC1 found deleted is at least 2 s older than INC2 and is dropped.
    assert!(c.inc2_created - c.inc1_created >= 2, "test timing");
    let short = c.ws.join("merged-short.mdump");
    merge(&short, &["--keep-deleted", "1s"]);
    let listed: BTreeSet<String> = list_json(&[&short], &["--deleted"])
        .iter()
        .map(|v| field(v, "guid"))
        .collect();
    let want: BTreeSet<String> = c
        .gone
        .iter()
        .filter(|g| g.round == 2)
        .map(|g| g.guid.clone())
        .collect();
    p.that(listed == want, || {
        format!(
            "merge --keep-deleted 1s keeps only the mail deleted by the last archive: want \
             {want:?}, got {listed:?}"
        )
    });

    // A later incremental against INC2 chains onto the merged archive (INC2 is in `replaces`).
    next_second();
    save(
        &c.src,
        "alice",
        "INBOX",
        &message("alice", 120, "after merge", "x\n"),
    );
    flags(&c.src, "bob", "add", "\\Flagged", "INBOX", 2);
    expunge(&c.src, "alice", "Summer", 1);
    let inc3 = c.ws.join("inc3.mdump");
    backup_inc(&c.src, &inc3, &[&c.inc2]);
    let live = snapshots(&c.src, &USERS);
    let dst = Dovecot::new(&c.ws.join("dst-merged-inc3"), "");
    if p.run_ok(
        "restore MERGED INC3",
        &mut dst.restore_cmd(&[&merged, &inc3]),
    ) {
        p.snapshots("restore MERGED INC3 vs live store", &live, &dst);
    }
    p.finish();
}

// ---------------------------------------------------------------------------------------------
// 3. A no-change incremental reads no message body
// ---------------------------------------------------------------------------------------------

/// Tiny deterministic PRNG for incompressible test bodies.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// `lines` lines of 76 base64-alphabet characters.
    fn base64_text(&mut self, lines: usize) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut s = String::with_capacity(lines * 77);
        for _ in 0..lines {
            for _ in 0..76 {
                s.push(ALPHABET[(self.next() % 64) as usize] as char);
            }
            s.push('\n');
        }
        s
    }
}

/// Every message file under cur/ and new/ of every mailbox of `home`.
fn message_files(home: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p
                .parent()
                .and_then(|d| d.file_name())
                .is_some_and(|n| n == "cur" || n == "new")
            {
                out.push(p);
            }
        }
    }
    let mut v = Vec::new();
    walk(home, &mut v);
    v.sort();
    v
}

/// After a full backup every message file is overwritten in place with other bytes of the same
/// length, name and mtime. An incremental that opened a body would record another SHA-256; the
/// incremental must list the original hashes, hold no message member, be small, and restore
/// (with FULL) the original bytes.
#[test]
fn no_change_incremental_opens_no_message() {
    let ws = Workspace::new();
    let src = Dovecot::new(&ws.join("src"), "");
    src.build_rich_store("alice");
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut big = Vec::new();
    for n in 0..40u32 {
        let folder = if n % 3 == 0 { "Work" } else { "INBOX" };
        let body = rng.base64_text(1000); // ~77 KB, incompressible beyond base64
        big.push((
            folder,
            1_650_000_000 + u64::from(n) * 3600,
            if n % 2 == 0 { "S" } else { "" },
            message("alice", 200 + n, &format!("bulk {n}"), &body),
        ));
    }
    // `import` replaces the import source; the rich store's mail is already imported.
    src.import("alice", &big);
    let before = src.snapshot("alice");

    let full = ws.join("full.mdump");
    backup_full(&src, &full);
    let full_list = list_json(&[&full], &[]);
    assert!(
        full_list.len() > 50,
        "fixture sanity: {} messages",
        full_list.len()
    );

    // Overwrite every message file: same name, same length, same mtime/atime, other bytes.
    let files = message_files(&src.home("alice"));
    assert!(
        files.len() >= full_list.len() - 5,
        "fixture sanity: {} files",
        files.len()
    );
    for f in &files {
        let meta = fs::metadata(f).expect("stat mail file");
        let len = meta.len() as usize;
        let mut garbage = Vec::with_capacity(len);
        while garbage.len() < len {
            garbage.extend_from_slice(b"Garbage: not the archived bytes\n");
        }
        garbage.truncate(len);
        fs::write(f, &garbage).expect("overwrite mail file");
        let times = fs::FileTimes::new()
            .set_accessed(meta.accessed().expect("atime"))
            .set_modified(meta.modified().expect("mtime"));
        fs::File::options()
            .write(true)
            .open(f)
            .expect("open mail file")
            .set_times(times)
            .expect("restore mail file times");
    }

    let inc = ws.join("inc.mdump");
    backup_inc(&src, &inc, &[&full]);

    let inc_list = list_json(&[&inc], &[]);
    assert_text_eq(
        "list --json INC (no change since FULL) vs list --json FULL: the incremental must \
         take every hash from FULL, not from the (overwritten) files",
        &join_set(&listed_records(&full_list)),
        &join_set(&listed_records(&inc_list)),
    );
    let inc_members = eml_members(&inc);
    assert!(
        inc_members.is_empty(),
        "a no-change incremental stores no message member, got {inc_members:?}"
    );
    let full_size = fs::metadata(&full).expect("stat full").len();
    let inc_size = fs::metadata(&inc).expect("stat inc").len();
    eprintln!("full: {full_size} bytes, no-change incremental: {inc_size} bytes");
    assert!(
        full_size > 1_000_000,
        "fixture sanity: full archive is {full_size} bytes"
    );
    assert!(
        inc_size * 100 < full_size && inc_size < 24 * 1024,
        "no-change incremental is {inc_size} bytes, full is {full_size} bytes: want < 1% and < 24 KiB"
    );

    // The chain restores the original bytes (from FULL), not the overwritten ones.
    let dst = Dovecot::new(&ws.join("dst"), "");
    run_ok(&mut dst.restore_cmd(&[&full, &inc]));
    assert_text_eq(
        "restore FULL INC vs the store before it was overwritten",
        &before,
        &dst.snapshot("alice"),
    );

    // Sanity of the method: a backup that reads the files sees other hashes.
    let reread = ws.join("reread.mdump");
    backup_full(&src, &reread);
    let old: BTreeSet<String> = full_list.iter().map(|v| field(v, "sha256")).collect();
    let new: BTreeSet<String> = list_json(&[&reread], &[])
        .iter()
        .map(|v| field(v, "sha256"))
        .collect();
    assert!(
        old.is_disjoint(&new),
        "test method: overwriting did not change the hashes a full backup sees"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. An incremental holds only new content
// ---------------------------------------------------------------------------------------------

/// New mail is stored; flag changes, moves, copies (also into another user) and renames add
/// no message member; the incremental still lists the complete state.
#[test]
fn incremental_holds_only_new_content() {
    let ws = Workspace::new();
    let src = Dovecot::new(&ws.join("src"), "");
    src.build_rich_store("alice");
    src.build_small_store("bob");
    let full = ws.join("full.mdump");
    backup_full(&src, &full);
    let full_list = list_json(&[&full], &[]);

    for (user, mailbox, n, subject, body) in [
        ("alice", "INBOX", 301, "fresh-1", "one\n"),
        ("alice", "INBOX", 302, "fresh-2", "two\n"),
        ("alice", "Work", 303, "fresh-3", "three\n"),
    ] {
        save(&src, user, mailbox, &message(user, n, subject, body));
    }
    flags(&src, "alice", "add", "\\Flagged kwA", "INBOX", 1);
    flags(&src, "alice", "remove", "\\Seen", "INBOX", 2);
    flags(&src, "alice", "add", "\\Seen", "INBOX", 9); // the message in new/
    flags(&src, "bob", "add", "\\Deleted", "INBOX", 1);
    let moved_guid = guid_of(&src, "alice", "Work", 2);
    src.doveadm("alice", &["move", "Drafts", "mailbox", "Work", "uid", "2"]);
    src.doveadm("alice", &["copy", "Work", "mailbox", "INBOX", "uid", "6"]);
    src.doveadm("alice", &["mailbox", "rename", "Été", "Summer"]);
    // The same bytes delivered to another user: a new GUID, known content.
    let alice1 = fs::read(src.message_file("alice", "INBOX", 1)).expect("read mail file");
    save(&src, "bob", "INBOX", &alice1);

    next_second();
    let inc = ws.join("inc.mdump");
    backup_inc(&src, &inc, &[&full]);

    let want_members: BTreeSet<String> = [
        member("alice", "INBOX", uid_of(&src, "alice", "INBOX", "fresh-1")),
        member("alice", "INBOX", uid_of(&src, "alice", "INBOX", "fresh-2")),
        member("alice", "Work", uid_of(&src, "alice", "Work", "fresh-3")),
    ]
    .into_iter()
    .collect();
    assert_text_eq(
        "message members of the incremental (only the new mail)",
        &join_set(&want_members),
        &join_set(&eml_members(&inc)),
    );

    // Complete state: every message, with flags and hashes, as Dovecot and the files say.
    let inc_list = list_json(&[&inc], &[]);
    assert_text_eq(
        "list --json FULL INC vs live store",
        &join_set(&live_records(&src, &USERS)),
        &join_set(&listed_records(&inc_list)),
    );
    // The moved message keeps its hash; now listed in Drafts.
    let sha_in_full = full_list
        .iter()
        .find(|v| field(v, "guid") == moved_guid)
        .map(|v| field(v, "sha256"))
        .expect("moved message in FULL");
    let in_drafts: Vec<&serde_json::Value> = inc_list
        .iter()
        .filter(|v| field(v, "guid") == moved_guid)
        .collect();
    assert_eq!(
        in_drafts.len(),
        1,
        "moved message listed once: {in_drafts:?}"
    );
    assert_eq!(field(in_drafts[0], "mailbox"), "Drafts");
    assert_eq!(field(in_drafts[0], "sha256"), sha_in_full);

    // Complete state also for the incremental given alone (list reads the state only).
    assert_text_eq(
        "list --json INC alone vs live store",
        &join_set(&live_records(&src, &USERS)),
        &join_set(&listed_records(&list_json(&[&inc], &[]))),
    );

    let full_size = fs::metadata(&full).expect("stat full").len();
    let inc_size = fs::metadata(&inc).expect("stat inc").len();
    assert!(inc_size > 0 && full_size > 0);

    let live = snapshots(&src, &USERS);
    let dst = Dovecot::new(&ws.join("dst"), "");
    run_ok(&mut dst.restore_cmd(&[&full, &inc]));
    assert_snapshots("restore FULL INC vs live store", &live, &dst);
}

// ---------------------------------------------------------------------------------------------
// 5. Broken chains
// ---------------------------------------------------------------------------------------------

/// A small chain FULL, INC1, INC2 of bob's store.
fn small_chain(ws: &Workspace) -> (Dovecot, [PathBuf; 3], [String; 3]) {
    let src = Dovecot::new(&ws.join("src"), "");
    src.build_small_store("bob");
    let full = ws.join("full.mdump");
    let inc1 = ws.join("inc1.mdump");
    let inc2 = ws.join("inc2.mdump");
    backup_full(&src, &full);
    save(&src, "bob", "INBOX", &message("bob", 401, "chain-1", "1\n"));
    next_second();
    backup_inc(&src, &inc1, &[&full]);
    save(&src, "bob", "Work", &message("bob", 402, "chain-2", "2\n"));
    expunge(&src, "bob", "INBOX", 1);
    next_second();
    backup_inc(&src, &inc2, &[&inc1]);
    let ids = [
        id_and_created(&full).0,
        id_and_created(&inc1).0,
        id_and_created(&inc2).0,
    ];
    (src, [full, inc1, inc2], ids)
}

/// Restore refuses incomplete or misordered chains with exit 8, names what is missing and
/// writes nothing.
#[test]
fn broken_chains_are_refused() {
    let ws = Workspace::new();
    let (_src, [full, inc1, inc2], [full_id, inc1_id, _inc2_id]) = small_chain(&ws);

    let check = |name: &str, archives: &[&Path], codes: &[i32], must_name: Option<&str>| {
        let dst = Dovecot::new(&ws.join(format!("dst-{name}")), "");
        let before = tree_listing(&dst.dir);
        let mut cmd = dst.restore_cmd(archives);
        let out = run(&mut cmd);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.code().is_some_and(|c| codes.contains(&c)),
            "{name}: expected exit code in {codes:?}\n{}",
            report(&cmd, &out)
        );
        if let Some(id) = must_name {
            assert!(
                stderr.contains(id),
                "{name}: the error should name the missing archive {id}\n{}",
                report(&cmd, &out)
            );
        } else {
            assert!(
                !stderr.trim().is_empty(),
                "{name}: the refusal should explain itself\n{}",
                report(&cmd, &out)
            );
        }
        assert_text_eq(
            &format!("{name}: target after refused restore"),
            &before,
            &tree_listing(&dst.dir),
        );
        assert!(dst.users().is_empty(), "{name}: a home was created");
        // The same with --dry-run, and for list.
        let mut cmd = dst.restore_cmd(archives);
        cmd.arg("--dry-run");
        let out = run(&mut cmd);
        assert!(
            out.status.code().is_some_and(|c| codes.contains(&c)),
            "{name} --dry-run: expected exit code in {codes:?}\n{}",
            report(&cmd, &out)
        );
    };
    check("inc1-alone", &[&inc1], &[EXIT_NOT_FOUND], Some(&full_id));
    check("wrong-order", &[&inc1, &full], &[EXIT_NOT_FOUND, 2], None);
    check(
        "missing-link",
        &[&full, &inc2],
        &[EXIT_NOT_FOUND],
        Some(&inc1_id),
    );
    check(
        "inc2-twice",
        &[&full, &inc1, &inc2, &inc2],
        &[EXIT_NOT_FOUND, 2],
        None,
    );

    // cat of a message whose bytes are in a missing archive: not found, naming it.
    let inc1_list = list_json(&[&full, &inc1], &[]);
    let new = inc1_list
        .iter()
        .find(|v| field(v, "subject") == "chain-1")
        .expect("chain-1 listed");
    let mut cmd = maildump();
    cmd.arg("cat")
        .arg(&inc2)
        .args(["--user", "bob", "--guid", &field(new, "guid")]);
    let out = run_expect_code(&mut cmd, EXIT_NOT_FOUND);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&inc1_id),
        "cat INC2 of a message held by INC1 should name INC1\n{}",
        report(&cmd, &out)
    );
    assert!(
        out.stdout.is_empty(),
        "cat printed bytes although it failed"
    );
}

// ---------------------------------------------------------------------------------------------
// 6. list --deleted
// ---------------------------------------------------------------------------------------------

/// `list FULL INC1 INC2 --deleted` shows expunged mail and the mail of deleted mailboxes, with
/// when it was last seen and which archive found it gone; moved or still copied mail is not
/// deleted. `cat` finds deleted mail through the chain.
#[test]
fn list_deleted_over_a_chain() {
    let c = build_chain();
    let chain: [&Path; 3] = [&c.full, &c.inc1, &c.inc2];
    let mut p = Problems::default();
    let fmt = |secs: i64| {
        chrono::DateTime::from_timestamp(secs, 0)
            .expect("valid time")
            .to_rfc3339()
    };
    let time = |v: &serde_json::Value, k: &str| match v[k].as_str() {
        Some(t) => fmt(rfc3339_secs(t)),
        None => format!("<{k} missing>"),
    };
    let deleted = list_json(&chain, &["--deleted"]);
    let got: BTreeSet<String> = deleted
        .iter()
        .map(|v| {
            format!(
                "{}\t{}\tuid={}\tguid={}\tlast_seen={}\tdeleted_by={}",
                field(v, "user"),
                field(v, "mailbox"),
                field(v, "uid"),
                field(v, "guid"),
                time(v, "last_seen"),
                time(v, "deleted_by"),
            )
        })
        .collect();
    let seen_by = |g: &Gone| {
        if g.round == 1 {
            (c.full_created, c.inc1_created, &c.full_id)
        } else {
            (c.inc1_created, c.inc2_created, &c.inc1_id)
        }
    };
    let want: BTreeSet<String> = c
        .gone
        .iter()
        .map(|g| {
            let (seen, by, _) = seen_by(g);
            format!(
                "{}\t{}\tuid={}\tguid={}\tlast_seen={}\tdeleted_by={}",
                g.user,
                g.mailbox,
                g.uid,
                g.guid,
                fmt(seen),
                fmt(by)
            )
        })
        .collect();
    p.text(
        "list FULL INC1 INC2 --deleted --json",
        &join_set(&want),
        &join_set(&got),
    );
    for v in &deleted {
        let guid = field(v, "guid");
        p.that(guid != c.moved_guid, || {
            format!("the moved message is listed as deleted: {v}")
        });
        p.that(guid != c.copied_guid, || {
            format!(
                "a message of a deleted mailbox that has a copy elsewhere is listed as deleted: {v}"
            )
        });
        let Some(g) = c.gone.iter().find(|g| g.guid == guid) else {
            continue;
        };
        p.that(field(v, "sha256") == sha256_hex(&g.bytes), || {
            format!("sha256 of deleted {v}")
        });
        p.that(field(v, "size") == g.bytes.len().to_string(), || {
            format!("size of deleted {v}")
        });
        // `archive`: the archive where the record was last present.
        let archive = seen_by(g).2;
        p.that(v["archive"].as_str() == Some(archive.as_str()), || {
            format!(
                "list --deleted --json: `archive` should be {archive} (the archive where the \
                 record was last present) in {v}"
            )
        });
    }

    // Filters: --user, --mailbox.
    let bob = list_json(&chain, &["--deleted", "--user", "bob"]);
    p.that(bob.len() == 1, || format!("bob's deleted mail: {bob:?}"));
    let rd = list_json(
        &chain,
        &["--deleted", "--user", "alice", "--mailbox", "R&D"],
    );
    p.that(rd.len() == 2, || {
        format!("deleted mail of the deleted mailbox R&D: {rd:?}")
    });

    // Up to INC1 only the round-1 deletions exist.
    let upto1: BTreeSet<String> = list_json(&[&c.full, &c.inc1], &["--deleted"])
        .iter()
        .map(|v| field(v, "guid"))
        .collect();
    let want1: BTreeSet<String> = c
        .gone
        .iter()
        .filter(|g| g.round == 1)
        .map(|g| g.guid.clone())
        .collect();
    p.that(upto1 == want1, || {
        format!("list FULL INC1 --deleted: want {want1:?}, got {upto1:?}")
    });
    // A full alone has no deleted mail.
    let none = list_json(&[&c.full], &["--deleted"]);
    p.that(none.is_empty(), || format!("list FULL --deleted: {none:?}"));

    // The text form names the same messages.
    let mut cmd = maildump();
    cmd.arg("list").args(chain).arg("--deleted");
    let text = String::from_utf8_lossy(&run_ok(&mut cmd).stdout).into_owned();
    for g in &c.gone {
        p.that(text.contains(&g.guid), || {
            format!(
                "list --deleted (text) lacks {} {}/{}:\n{text}",
                g.guid, g.user, g.mailbox
            )
        });
    }
    p.that(!text.contains(&c.moved_guid), || {
        format!("moved message listed as deleted:\n{text}")
    });

    // cat finds deleted mail by GUID through the chain, with the original bytes.
    for g in &c.gone {
        let mut cmd = maildump();
        cmd.arg("cat")
            .args(chain)
            .args(["--user", &g.user, "--guid", &g.guid]);
        let out = run(&mut cmd);
        p.that(out.status.success() && out.stdout == g.bytes, || {
            format!(
                "cat FULL INC1 INC2 --guid {} (deleted {}/{} uid {}): want the {} original \
                 bytes\n{}",
                g.guid,
                g.user,
                g.mailbox,
                g.uid,
                g.bytes.len(),
                report(&cmd, &out)
            )
        });
    }
    p.finish();
}

// ---------------------------------------------------------------------------------------------
// 7. --since
// ---------------------------------------------------------------------------------------------

/// Largest of ctime and mtime of `path`, in nanoseconds since the epoch.
fn changed_ns(path: &Path) -> i128 {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(path).expect("stat mail file");
    let c = i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec());
    let t = i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec());
    c.max(t)
}

/// `backup --since TIME` stores the bodies of the files changed after TIME and records the
/// complete state; FULL + the since-archive restore the live store. A since-archive whose TIME
/// leaves a gap after the previous archive does not chain.
#[test]
fn since_archive() {
    let ws = Workspace::new();
    let src = Dovecot::new(&ws.join("src"), "");
    src.build_rich_store("alice");
    src.build_small_store("bob");
    next_second();
    let full = ws.join("full.mdump");
    backup_full(&src, &full);
    let (_, full_created) = id_and_created(&full);
    next_second();

    for (user, mailbox, n, subject, body) in [
        ("alice", "INBOX", 501, "since-1", "a\n"),
        ("alice", "Work", 502, "since-2", "b\n"),
    ] {
        save(&src, user, mailbox, &message(user, n, subject, body));
    }
    save(&src, "bob", "INBOX", &message("bob", 503, "since-3", "c\n"));
    flags(&src, "alice", "add", "\\Flagged", "INBOX", 1);
    expunge(&src, "alice", "INBOX", 2);
    src.doveadm("alice", &["move", "Drafts", "mailbox", "Work", "uid", "2"]);
    src.doveadm("alice", &["mailbox", "rename", "Été", "Summer"]);
    src.doveadm("alice", &["mailbox", "delete", "R&D"]);
    let live = snapshots(&src, &USERS);
    let mut p = Problems::default();

    // Which files changed after TIME, by the files themselves.
    let limit = i128::from(full_created) * 1_000_000_000;
    let mut want = BTreeSet::new();
    let mut unchanged = 0;
    for user in USERS {
        let fetch = src.doveadm(user, &["-f", "tab", "fetch", "mailbox uid", "ALL"]);
        for line in fetch.lines().skip(1).filter(|l| !l.is_empty()) {
            let (mailbox, uid) = line.split_once('\t').expect("two columns");
            let uid: u32 = uid.parse().expect("numeric uid");
            if changed_ns(&src.message_file(user, mailbox, uid)) > limit {
                want.insert(member(user, mailbox, uid));
            } else {
                unchanged += 1;
            }
        }
    }
    for (user, mailbox, subject) in [
        ("alice", "INBOX", "since-1"),
        ("alice", "Work", "since-2"),
        ("bob", "INBOX", "since-3"),
    ] {
        assert!(
            want.contains(&member(user, mailbox, uid_of(&src, user, mailbox, subject))),
            "test method: new mail {subject} counts as changed"
        );
    }
    assert!(unchanged >= 10, "test method: {unchanged} unchanged files");
    // (Only ASCII-named mailboxes hold changed files here: renaming Été moved no file.)

    // TIME = FULL's creation (Unix seconds): no gap after FULL.
    let since = ws.join("since.mdump");
    run_ok(
        backup_cmd(&src)
            .args(["--since", &full_created.to_string(), "-o"])
            .arg(&since),
    );
    let ms = manifest(&since);
    p.that(ms.get("since").is_some_and(|s| s.is_string()), || {
        format!("a since-archive records `since` in its manifest: {ms}")
    });

    p.text(
        "message members of the since-archive (files changed after TIME)",
        &join_set(&want),
        &join_set(&eml_members(&since)),
    );

    // Complete state; over the chain FULL SINCE the hashes of the files the since-archive
    // did not read are resolved from FULL (by identity), as for any incremental.
    p.text(
        "list --json FULL SINCE vs live store",
        &join_set(&live_records(&src, &USERS)),
        &join_set(&listed_records(&list_json(&[&full, &since], &[]))),
    );

    let dst = Dovecot::new(&ws.join("dst"), "");
    if p.run_ok("restore FULL SINCE", &mut dst.restore_cmd(&[&full, &since])) {
        p.snapshots("restore FULL SINCE vs live store", &live, &dst);
    }

    // RFC 3339 TIME works the same (same members).
    let rfc = chrono::DateTime::from_timestamp(full_created, 0)
        .expect("valid time")
        .to_rfc3339();
    let since_rfc = ws.join("since-rfc.mdump");
    run_ok(
        backup_cmd(&src)
            .args(["--since", &rfc, "-o"])
            .arg(&since_rfc),
    );
    let got = eml_members(&since_rfc);
    p.that(got == want, || {
        format!("--since {rfc} stores {got:?}, --since {full_created} stores {want:?}")
    });

    // TIME later than FULL's creation leaves a gap: FULL SINCE_LATE is no valid chain.
    let late = ws.join("since-late.mdump");
    run_ok(
        backup_cmd(&src)
            .args(["--since", &(full_created + 1).to_string(), "-o"])
            .arg(&late),
    );
    let dst = Dovecot::new(&ws.join("dst-late"), "");
    let before = tree_listing(&dst.dir);
    let mut cmd = dst.restore_cmd(&[&full, &late]);
    let out = run(&mut cmd);
    p.that(
        out.status.code() == Some(EXIT_NOT_FOUND) && !out.stderr.is_empty(),
        || {
            format!(
                "FULL + a since-archive whose TIME ({}) is after FULL's creation ({full_created}) \
                 leaves a gap: want exit {EXIT_NOT_FOUND} with an explanation\n{}",
                full_created + 1,
                report(&cmd, &out)
            )
        },
    );
    p.text(
        "target after refused restore of FULL SINCE_LATE",
        &before,
        &tree_listing(&dst.dir),
    );

    // On its own a since-archive lacks the bytes of the files it did not read: exit 8,
    // nothing written.
    let dst = Dovecot::new(&ws.join("dst-alone"), "");
    let before = tree_listing(&dst.dir);
    let mut cmd = dst.restore_cmd(&[&since]);
    let out = run(&mut cmd);
    p.that(
        out.status.code() == Some(EXIT_NOT_FOUND) && !out.stderr.is_empty(),
        || {
            format!(
                "a since-archive alone cannot restore the mail it did not store: want exit \
                 {EXIT_NOT_FOUND} naming what is missing\n{}",
                report(&cmd, &out)
            )
        },
    );
    p.text(
        "target after refused restore of SINCE alone",
        &before,
        &tree_listing(&dst.dir),
    );
    p.finish();
}

// ---------------------------------------------------------------------------------------------
// 8. --state-dir
// ---------------------------------------------------------------------------------------------

/// Archives in a state directory, sorted by name (= by time).
fn state_archives(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read state dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "mdump"))
        .collect();
    v.sort();
    v
}

/// `maildump-YYYYMMDDTHHMMSSZ-full.mdump` or `...-inc.mdump`: returns `full` or `inc`.
fn archive_kind(p: &Path) -> String {
    let name = p.file_name().expect("name").to_string_lossy().into_owned();
    let rest = name
        .strip_prefix("maildump-")
        .unwrap_or_else(|| panic!("archive name {name:?} lacks the maildump- prefix"));
    let (stamp, kind) = rest
        .split_once('-')
        .unwrap_or_else(|| panic!("archive name {name:?}: no kind"));
    assert!(
        stamp.len() == 16
            && stamp.as_bytes()[8] == b'T'
            && stamp.ends_with('Z')
            && stamp[..8].bytes().all(|b| b.is_ascii_digit())
            && stamp[9..15].bytes().all(|b| b.is_ascii_digit()),
        "archive name {name:?}: time stamp is not YYYYMMDDTHHMMSSZ"
    );
    kind.strip_suffix(".mdump")
        .unwrap_or_else(|| panic!("archive name {name:?}"))
        .to_string()
}

/// Cron mode: first run full, then incrementals against the newest archive, `--full-every`
/// starts a new chain, state.json records the archives, and the lock keeps two runs apart.
#[test]
fn state_dir_runs() {
    let ws = Workspace::new();
    let src = Dovecot::new(&ws.join("src"), "");
    src.build_small_store("bob");
    src.build_small_store("dave");
    let dir = ws.join("state");
    let users = ["bob", "dave"];
    let mut p = Problems::default();

    let cron = |full_every: &str| {
        run_ok(
            backup_cmd(&src)
                .arg("--state-dir")
                .arg(&dir)
                .args(["--full-every", full_every]),
        );
    };

    cron("1d");
    let a = state_archives(&dir);
    assert_eq!(a.len(), 1, "after run 1: {a:?}");
    assert_eq!(archive_kind(&a[0]), "full");

    save(&src, "bob", "INBOX", &message("bob", 601, "cron-1", "1\n"));
    next_second();
    cron("1d");
    save(&src, "dave", "Work", &message("dave", 602, "cron-2", "2\n"));
    flags(&src, "bob", "add", "\\Answered", "INBOX", 1);
    expunge(&src, "dave", "INBOX", 2);
    next_second();
    cron("1d");
    let live = snapshots(&src, &users);

    let a = state_archives(&dir);
    assert_eq!(a.len(), 3, "after run 3: {a:?}");
    let kinds: Vec<String> = a.iter().map(|p| archive_kind(p)).collect();
    assert_eq!(kinds, ["full", "inc", "inc"], "{a:?}");
    let ids: Vec<String> = a.iter().map(|p| id_and_created(p).0).collect();
    assert_eq!(manifest(&a[1])["parent"]["archive_id"], ids[0].as_str());
    assert_eq!(manifest(&a[2])["parent"]["archive_id"], ids[1].as_str());
    let new_member = eml_members(&a[1]);
    assert_eq!(
        new_member,
        [member(
            "bob",
            "INBOX",
            uid_of(&src, "bob", "INBOX", "cron-1")
        )]
        .into_iter()
        .collect(),
        "run 2 stores only the new message"
    );

    let state_raw = fs::read_to_string(dir.join("state.json")).expect("read state.json");
    let state: serde_json::Value = serde_json::from_str(&state_raw)
        .unwrap_or_else(|e| panic!("state.json is not JSON: {e}\n{state_raw}"));
    for (p, id) in a.iter().zip(&ids) {
        let name = p.file_name().expect("name").to_string_lossy().into_owned();
        assert!(
            state_raw.contains(&name) && state_raw.contains(id.as_str()),
            "state.json should record {name} ({id}):\n{state}"
        );
    }

    let dst = Dovecot::new(&ws.join("dst"), "");
    let chain: Vec<&Path> = a.iter().map(PathBuf::as_path).collect();
    if p.run_ok(
        "restore of the state-dir chain",
        &mut dst.restore_cmd(&chain),
    ) {
        p.snapshots("restore of the state-dir chain vs live store", &live, &dst);
    }

    // The chain's full is >= 2 s old: --full-every 1s starts a new chain...
    next_second();
    cron("1s");
    let b = state_archives(&dir);
    assert_eq!(b.len(), 4, "after run 4: {b:?}");
    let newest = &b[3];
    assert_eq!(archive_kind(newest), "full", "{b:?}");
    let m4 = manifest(newest);
    assert!(
        m4.get("parent").is_none_or(|p| p.is_null()),
        "--full-every 1s after 2 s: a full without parent: {m4}"
    );
    let id4 = id_and_created(newest).0;
    // ... and the next run is an incremental of that new full.
    save(
        &src,
        "dave",
        "INBOX",
        &message("dave", 603, "cron-3", "3\n"),
    );
    next_second();
    cron("1d");
    let b = state_archives(&dir);
    assert_eq!(b.len(), 5, "after run 5: {b:?}");
    assert_eq!(archive_kind(&b[4]), "inc");
    assert_eq!(manifest(&b[4])["parent"]["archive_id"], id4.as_str());
    let live = snapshots(&src, &users);
    let dst = Dovecot::new(&ws.join("dst2"), "");
    if p.run_ok(
        "restore of the second state-dir chain",
        &mut dst.restore_cmd(&[&b[3], &b[4]]),
    ) {
        p.snapshots(
            "restore of the second state-dir chain vs live store",
            &live,
            &dst,
        );
    }

    // A held lock: the run fails with exit 6 naming the lock, and writes no archive.
    let holder = hold_flock(&dir.join("lock"));
    next_second();
    let mut cmd = backup_cmd(&src);
    cmd.arg("--state-dir").arg(&dir);
    let out = run_expect_code(&mut cmd, EXIT_CONFLICT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lock_path = dir.join("lock").display().to_string();
    assert!(
        stderr.contains(&lock_path),
        "the error should name the lock {lock_path}\n{}",
        report(&cmd, &out)
    );
    assert_eq!(
        state_archives(&dir).len(),
        5,
        "no archive may be written while the lock is held"
    );
    release_flock(holder);
    let out: Output = run(&mut cmd);
    assert!(
        out.status.success(),
        "after the lock is released the run succeeds\n{}",
        report(&cmd, &out)
    );
    assert_eq!(state_archives(&dir).len(), 6);
    p.finish();
}
