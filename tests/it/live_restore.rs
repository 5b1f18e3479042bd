//! Restore into live mailboxes (issue #5): merge and side-folder modes, selections,
//! restore lists, export. Real Dovecot throughout.
//!
//! Every check is against what `doveadm` reports about the target store (UIDs, GUIDs, flags
//! and keywords, received dates, SHA-256 of `fetch text`, mailbox status) or, for `export`,
//! against what Python's `mailbox` module and a Dovecot pointed at the exported tree read.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::dovecot::{Dovecot, Pager, message};
use crate::util::{
    Workspace, assert_text_eq, maildump, report, run, run_expect_code, run_ok, sha256_hex,
    tree_listing,
};

/// Exit code of a refused restore or export (existing target).
const EXIT_CONFLICT: i32 = 6;

const ALICE: &str = "alice";
const BOB: &str = "bob";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// One message as Dovecot reports it (`\Recent` left out: it is session state).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Msg {
    mailbox: String,
    uid: u32,
    guid: String,
    /// System flags and keywords, sorted.
    flags: Vec<String>,
    /// `date.received` as doveadm prints it (UTC).
    received: String,
    message_id: String,
    /// SHA-256 of `fetch text`.
    sha: String,
    /// The bytes of `fetch text`.
    text: Vec<u8>,
}

impl Msg {
    /// What must survive any restore, whatever the mailbox or UID: content, flags, date.
    fn content_key(&self) -> (String, Vec<String>, String, String) {
        (
            self.sha.clone(),
            self.flags.clone(),
            self.received.clone(),
            self.message_id.clone(),
        )
    }

    /// The body: everything after the header's empty line.
    fn body(&self) -> &[u8] {
        let t = &self.text;
        for (i, w) in t.windows(2).enumerate() {
            if w == b"\n\n" {
                return &t[i + 2..];
            }
            if w == b"\r\n" && t[i + 2..].starts_with(b"\r\n") {
                return &t[i + 4..];
            }
        }
        &[]
    }
}

/// Lines of doveadm's stderr that show a problem (e.g. uidlist complaints).
fn complaints(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| {
            ["Error", "Warning", "Panic", "Fatal", "Corrupt", "corrupt"]
                .iter()
                .any(|w| l.contains(w))
        })
        .map(str::to_string)
        .collect()
}

/// `doveadm ARGS` for `user`; panics on failure; returns (stdout, stderr).
fn da(dc: &Dovecot, user: &str, args: &[&str]) -> (Vec<u8>, String) {
    let mut cmd = dc.command(user, args);
    let out = run(&mut cmd);
    assert!(
        out.status.success(),
        "doveadm failed\n{}",
        report(&cmd, &out)
    );
    (
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `doveadm ARGS` that must also leave nothing alarming on stderr.
fn da_clean(dc: &Dovecot, user: &str, args: &[&str]) -> String {
    let (out, err) = da(dc, user, args);
    let c = complaints(&err);
    assert!(
        c.is_empty(),
        "doveadm {args:?} (user {user}) complained on stderr:\n{}",
        c.join("\n")
    );
    String::from_utf8_lossy(&out).into_owned()
}

/// Every message matching `search` (doveadm search query), sorted by mailbox and UID, and
/// doveadm's stderr.
fn fetch_msgs(dc: &Dovecot, user: &str, search: &[&str]) -> (Vec<Msg>, String) {
    let mut args = vec![
        "-f",
        "pager",
        "fetch",
        "mailbox uid guid flags date.received hdr.message-id size.physical text",
    ];
    args.extend_from_slice(search);
    let (raw, stderr) = da(dc, user, &args);
    let mut p = Pager::new(&raw);
    let mut msgs = Vec::new();
    while !p.done() {
        let mailbox = p.field("mailbox");
        let uid: u32 = p.field("uid").parse().expect("numeric uid");
        let guid = p.field("guid");
        let mut flags: Vec<String> = p
            .field("flags")
            .split(' ')
            .filter(|f| !f.is_empty() && *f != "\\Recent")
            .map(str::to_string)
            .collect();
        flags.sort();
        let received = p.field("date.received");
        let message_id = p.field("hdr.message-id");
        let size: usize = p.field("size.physical").parse().expect("numeric size");
        let text = p.text(size, &format!("{mailbox} uid {uid}")).to_vec();
        msgs.push(Msg {
            mailbox,
            uid,
            guid,
            flags,
            received,
            message_id,
            sha: sha256_hex(&text),
            text,
        });
    }
    msgs.sort();
    (msgs, stderr)
}

/// Like [`fetch_msgs`], asserting that doveadm had nothing to complain about.
fn msgs(dc: &Dovecot, user: &str, search: &[&str]) -> Vec<Msg> {
    let (m, err) = fetch_msgs(dc, user, search);
    let c = complaints(&err);
    assert!(
        c.is_empty(),
        "doveadm fetch {search:?} (user {user}) complained on stderr:\n{}",
        c.join("\n")
    );
    m
}

/// `doveadm mailbox status` of one mailbox: (messages, uidvalidity, uidnext, guid).
fn status(dc: &Dovecot, user: &str, mailbox: &str) -> (u32, u32, u32, String) {
    let out = da_clean(
        dc,
        user,
        &[
            "-f",
            "tab",
            "mailbox",
            "status",
            "messages uidvalidity uidnext guid",
            mailbox,
        ],
    );
    let mut lines = out.lines();
    let head: Vec<&str> = lines.next().expect("status header").split('\t').collect();
    let vals: Vec<&str> = lines.next().expect("status row").split('\t').collect();
    let get = |k: &str| -> String {
        let i = head
            .iter()
            .position(|h| *h == k)
            .unwrap_or_else(|| panic!("no {k} in {head:?}"));
        vals[i].to_string()
    };
    (
        get("messages").parse().expect("messages"),
        get("uidvalidity").parse().expect("uidvalidity"),
        get("uidnext").parse().expect("uidnext"),
        get("guid"),
    )
}

/// `maildump backup --all-users` of `dc` into `archive`.
fn backup(dc: &Dovecot, archive: &Path) {
    run_ok(
        maildump()
            .args([
                "backup",
                "--location",
                &dc.location,
                "--home",
                &dc.home_template(),
                "--all-users",
                "--quiet",
                "-o",
            ])
            .arg(archive),
    );
}

/// `maildump restore ARCHIVE --location LOC --home TEMPLATE --owner UID:GID` (the caller adds
/// the rest).
fn restore(archive: &Path, dc: &Dovecot) -> Command {
    let mut cmd = maildump();
    cmd.arg("restore").arg(archive).args([
        "--location",
        &dc.location,
        "--home",
        &dc.home_template(),
        "--owner",
        &dc.owner_arg(),
    ]);
    cmd
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts that maildump's summary on stderr says it restored `n` messages.
#[track_caller]
fn assert_restored(out: &Output, n: usize) {
    let err = stderr_of(out);
    assert!(
        err.contains(&format!(" {n} messages (")),
        "expected maildump to report {n} restored messages; stderr:\n{err}"
    );
}

/// The number of messages maildump's summary on stderr says were restored.
fn restored_count(stderr: &str) -> usize {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("maildump: restored "))
        .unwrap_or_else(|| panic!("no restore summary on stderr:\n{stderr}"));
    let (_, rest) = line.split_once(" mailboxes, ").expect("summary format");
    rest.split(' ')
        .next()
        .expect("count")
        .parse()
        .expect("numeric count")
}

/// The day of the archive (`YYYY-MM-DD`, from `maildump list`'s header): the default
/// side-folder prefix is `Restored/<day>`.
fn archive_day(archive: &Path) -> String {
    let out = run_ok(maildump().arg("list").arg(archive));
    let text = stdout_of(&out);
    let created = text
        .lines()
        .find_map(|l| l.split_once(" created ").map(|(_, r)| r.to_string()))
        .unwrap_or_else(|| panic!("no `created` in the list header:\n{text}"));
    created.get(..10).expect("a date").to_string()
}

/// Drops the snapshot lines whose mailbox field starts with `prefix`.
fn without_prefix(snapshot: &str, prefix: &str) -> String {
    snapshot
        .lines()
        .filter(|l| l.split('\t').nth(1).is_none_or(|m| !m.starts_with(prefix)))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// (mailbox relative to `prefix/`, content key) of the messages under `prefix/`, sorted.
type Placed = Vec<(String, (String, Vec<String>, String, String))>;

fn under_prefix(all: &[Msg], prefix: &str) -> Placed {
    let p = format!("{prefix}/");
    let mut v: Placed = all
        .iter()
        .filter_map(|m| {
            m.mailbox
                .strip_prefix(&p)
                .map(|rel| (rel.to_string(), m.content_key()))
        })
        .collect();
    v.sort();
    v
}

fn placed<'a>(msgs: impl IntoIterator<Item = &'a Msg>) -> Placed {
    let mut v: Placed = msgs
        .into_iter()
        .map(|m| (m.mailbox.clone(), m.content_key()))
        .collect();
    v.sort();
    v
}

fn show(p: &Placed) -> String {
    p.iter()
        .map(|(mb, (sha, fl, rec, id))| {
            format!("{mb}\t{id}\t{rec}\t{}\t{}\n", fl.join(" "), &sha[..12])
        })
        .collect()
}

#[track_caller]
fn assert_placed(what: &str, expected: &Placed, got: &Placed) {
    assert_text_eq(what, &show(expected), &show(got));
}

fn find<'a>(all: &'a [Msg], mailbox: &str, uid: u32) -> &'a Msg {
    all.iter()
        .find(|m| m.mailbox == mailbox && m.uid == uid)
        .unwrap_or_else(|| panic!("no {mailbox} uid {uid} in the fixture"))
}

// ---------------------------------------------------------------------------------------------
// 1. merge with --deleted
// ---------------------------------------------------------------------------------------------

/// Back up; expunge a message and delete a folder through doveadm; deliver new mail; restore
/// with `--deleted` (merge): the message comes back with its GUID, flags, keywords, date and
/// bytes under a UID above the old UIDNEXT, UIDVALIDITY and all live mail unchanged, the
/// folder back; a second run adds nothing; Dovecot reads the result without complaints.
#[test]
fn merge_restores_deleted_message_and_folder() {
    let ws = Workspace::new();
    let dc = Dovecot::new(&ws.join("live"), "");
    dc.build_rich_store(ALICE);
    let archive = ws.join("a.mdump");
    backup(&dc, &archive);

    let before = msgs(&dc, ALICE, &["ALL"]);
    let gone = find(&before, "INBOX", 2).clone();
    assert!(
        gone.flags.contains(&"\\Flagged".to_string())
            && gone.flags.contains(&"$Label1".to_string()),
        "fixture sanity: INBOX uid 2 has flags and keywords: {:?}",
        gone.flags
    );
    let rd_before: Vec<Msg> = before
        .iter()
        .filter(|m| m.mailbox == "R&D")
        .cloned()
        .collect();
    assert_eq!(rd_before.len(), 2, "fixture sanity: R&D holds 2 messages");

    da_clean(&dc, ALICE, &["expunge", "mailbox", "INBOX", "uid", "2"]);
    da_clean(&dc, ALICE, &["mailbox", "delete", "R&D"]);
    let fresh = message(ALICE, 40, "Delivered after the backup", "fresh\n");
    let out = dc.save(ALICE, "INBOX", &fresh);
    assert!(out.status.success(), "doveadm save: {}", stderr_of(&out));
    let fresh_uid = msgs(
        &dc,
        ALICE,
        &["mailbox", "INBOX", "header", "Message-ID", "alice.40@"],
    )
    .first()
    .expect("the new mail")
    .uid;
    da_clean(
        &dc,
        ALICE,
        &[
            "flags",
            "add",
            "\\Seen NewKw",
            "mailbox",
            "INBOX",
            "uid",
            &fresh_uid.to_string(),
        ],
    );

    let live = msgs(&dc, ALICE, &["ALL"]);
    assert!(
        !live
            .iter()
            .any(|m| m.guid == gone.guid && m.mailbox == "INBOX"),
        "the expunged message is gone before the restore"
    );
    assert!(
        !live.iter().any(|m| m.mailbox == "R&D"),
        "R&D is gone before the restore"
    );
    let (_, uidvalidity, uidnext, inbox_guid) = status(&dc, ALICE, "INBOX");

    let out = run_ok(restore(&archive, &dc).args(["--user", ALICE, "--deleted"]));
    assert_restored(&out, 3);

    // The first Dovecot access after the merge: its stderr is checked at the end.
    let (after, first_stderr) = fetch_msgs(&dc, ALICE, &["ALL"]);

    let back: Vec<&Msg> = after
        .iter()
        .filter(|m| m.mailbox == "INBOX" && m.guid == gone.guid)
        .collect();
    assert_eq!(
        back.len(),
        1,
        "the expunged message is back exactly once: {back:#?}"
    );
    let back = back[0];
    assert!(
        back.uid >= uidnext,
        "restored message got UID {} below the old UIDNEXT {uidnext} (UID reuse)",
        back.uid
    );
    assert_eq!(
        back.flags, gone.flags,
        "flags and keywords of the restored message"
    );
    assert_eq!(
        back.received, gone.received,
        "date.received of the restored message"
    );
    assert_eq!(back.sha, gone.sha, "text of the restored message");
    assert_eq!(back.message_id, gone.message_id);

    let (n, uidvalidity2, uidnext2, inbox_guid2) = status(&dc, ALICE, "INBOX");
    assert_eq!(uidvalidity2, uidvalidity, "INBOX UIDVALIDITY changed");
    assert_eq!(inbox_guid2, inbox_guid, "INBOX mailbox GUID changed");
    assert!(
        uidnext2 > back.uid,
        "UIDNEXT {uidnext2} not above the new UID {}",
        back.uid
    );
    assert_eq!(
        n as usize,
        live.iter().filter(|m| m.mailbox == "INBOX").count() + 1,
        "INBOX message count after the merge"
    );

    // All live mail, including the new delivery, untouched (same UID, GUID, flags, date, text).
    for m in &live {
        assert!(
            after.contains(m),
            "live message changed or vanished by the merge: {} uid {} {:?} {:?}\nnow: {:#?}",
            m.mailbox,
            m.uid,
            m.flags,
            m.message_id,
            after
                .iter()
                .filter(|a| a.mailbox == m.mailbox && (a.uid == m.uid || a.guid == m.guid))
                .map(|a| (a.uid, &a.guid, &a.flags))
                .collect::<Vec<_>>()
        );
    }
    let fresh_after = find(&after, "INBOX", fresh_uid);
    assert!(
        fresh_after.flags.contains(&"NewKw".to_string())
            && fresh_after.flags.contains(&"\\Seen".to_string()),
        "new mail lost its flags: {:?}",
        fresh_after.flags
    );

    // The deleted folder is back with its messages.
    let rd_after: Vec<&Msg> = after.iter().filter(|m| m.mailbox == "R&D").collect();
    assert_placed(
        "R&D after the restore",
        &placed(&rd_before),
        &placed(rd_after.iter().copied()),
    );
    assert_eq!(
        after.len(),
        live.len() + 3,
        "exactly the expunged message and the 2 of R&D were added"
    );

    // A second identical run adds nothing.
    let snap1 = dc.snapshot(ALICE);
    let out2 = run_ok(restore(&archive, &dc).args(["--user", ALICE, "--deleted"]));
    assert_restored(&out2, 0);
    assert_text_eq(
        "Dovecot's view after a second run",
        &snap1,
        &dc.snapshot(ALICE),
    );

    // Dovecot read the merged mailboxes without complaining (no uidlist warnings, no
    // resync needed).
    let c = complaints(&first_stderr);
    assert!(
        c.is_empty(),
        "doveadm complained on its first access after the merge restore:\n{}",
        c.join("\n")
    );
}

/// The same through a chain: full backup, expunge a message and delete a folder, incremental
/// backup (which records the deletions); `restore FULL INC --deleted` brings both back from the
/// chain's records of deleted mail, although the chain's last state no longer holds them.
/// (Dovecot's stderr after the merge is checked by the test above.)
#[test]
fn merge_restores_deleted_mail_from_a_chain() {
    let ws = Workspace::new();
    let dc = Dovecot::new(&ws.join("live"), "");
    dc.build_rich_store(ALICE);
    let full = ws.join("full.mdump");
    backup(&dc, &full);
    let before = msgs(&dc, ALICE, &["ALL"]);
    let gone = find(&before, "INBOX", 5).clone();
    let ete: Vec<Msg> = before
        .iter()
        .filter(|m| m.mailbox == "Été")
        .cloned()
        .collect();
    assert_eq!(ete.len(), 1, "fixture sanity: Été holds one message");
    da_clean(&dc, ALICE, &["expunge", "mailbox", "INBOX", "uid", "5"]);
    da_clean(&dc, ALICE, &["mailbox", "delete", "Été"]);
    let inc = ws.join("inc.mdump");
    run_ok(
        maildump()
            .args([
                "backup",
                "--location",
                &dc.location,
                "--home",
                &dc.home_template(),
                "--all-users",
                "--quiet",
                "--base",
            ])
            .arg(&full)
            .arg("-o")
            .arg(&inc),
    );
    let live = msgs(&dc, ALICE, &["ALL"]);
    let (_, uidvalidity, uidnext, _) = status(&dc, ALICE, "INBOX");

    let chain_restore = || {
        let mut cmd = maildump();
        cmd.arg("restore").arg(&full).arg(&inc).args([
            "--location",
            &dc.location,
            "--home",
            &dc.home_template(),
            "--owner",
            &dc.owner_arg(),
            "--user",
            ALICE,
            "--deleted",
        ]);
        cmd
    };
    let out = run_ok(&mut chain_restore());
    assert_restored(&out, 2);
    let (after, _) = fetch_msgs(&dc, ALICE, &["ALL"]);
    let back: Vec<&Msg> = after
        .iter()
        .filter(|m| m.mailbox == "INBOX" && m.guid == gone.guid)
        .collect();
    assert_eq!(back.len(), 1, "the expunged message is back exactly once");
    assert!(
        back[0].uid >= uidnext,
        "UID {} below the old UIDNEXT {uidnext}",
        back[0].uid
    );
    assert_eq!(
        back[0].content_key(),
        gone.content_key(),
        "restored message"
    );
    assert_eq!(
        status(&dc, ALICE, "INBOX").1,
        uidvalidity,
        "INBOX UIDVALIDITY"
    );
    assert_placed(
        "Été after the restore from the chain",
        &placed(&ete),
        &placed(after.iter().filter(|m| m.mailbox == "Été")),
    );
    for m in &live {
        assert!(
            after.contains(m),
            "live message {} uid {} changed",
            m.mailbox,
            m.uid
        );
    }
    assert_eq!(after.len(), live.len() + 2, "exactly two messages added");

    let snap = dc.snapshot(ALICE);
    let out = run_ok(&mut chain_restore());
    assert_restored(&out, 0);
    assert_text_eq(
        "after a second run from the chain",
        &snap,
        &dc.snapshot(ALICE),
    );
}

// ---------------------------------------------------------------------------------------------
// 2. side-folder, --into, --to-user
// ---------------------------------------------------------------------------------------------

/// `--mode side-folder` (default prefix `Restored/<day>`), `--into PREFIX`, and `--to-user`
/// into another user's existing mailboxes; originals untouched; second runs add nothing.
#[test]
fn side_folder_and_to_user() {
    let ws = Workspace::new();
    let dc = Dovecot::new(&ws.join("live"), "");
    dc.build_rich_store(ALICE);
    dc.build_small_store(BOB);
    let archive = ws.join("a.mdump");
    backup(&dc, &archive);
    let alice = msgs(&dc, ALICE, &["ALL"]);
    let alice_snap = dc.snapshot(ALICE);
    let prefix = format!("Restored/{}", archive_day(&archive));

    // Default side-folder prefix.
    let out = run_ok(restore(&archive, &dc).args(["--user", ALICE, "--mode", "side-folder"]));
    assert_restored(&out, alice.len());
    let after = msgs(&dc, ALICE, &["ALL"]);
    assert_placed(
        &format!("messages under {prefix}/ vs the originals"),
        &placed(&alice),
        &under_prefix(&after, &prefix),
    );
    assert_text_eq(
        "alice's original mailboxes after the side-folder restore",
        &without_prefix(&alice_snap, "Restored"),
        &without_prefix(&dc.snapshot(ALICE), "Restored"),
    );
    let (_, v_orig, _, g_orig) = status(&dc, ALICE, "INBOX");
    let (n_side, v_side, _, g_side) = status(&dc, ALICE, &format!("{prefix}/INBOX"));
    assert_eq!(
        n_side as usize,
        alice.iter().filter(|m| m.mailbox == "INBOX").count()
    );
    assert_ne!(g_side, g_orig, "side folder must get a new mailbox GUID");
    assert_ne!(v_side, v_orig, "side folder must get a new UIDVALIDITY");

    // Second run: nothing added.
    let s1 = dc.snapshot(ALICE);
    let out = run_ok(restore(&archive, &dc).args(["--user", ALICE, "--mode", "side-folder"]));
    assert_restored(&out, 0);
    assert_text_eq(
        "alice after a second side-folder run",
        &s1,
        &dc.snapshot(ALICE),
    );

    // --into (implies side-folder), one mailbox.
    let out = run_ok(restore(&archive, &dc).args([
        "--user",
        ALICE,
        "--mailbox",
        "INBOX",
        "--into",
        "Restored/x",
    ]));
    let inbox: Vec<&Msg> = alice.iter().filter(|m| m.mailbox == "INBOX").collect();
    assert_restored(&out, inbox.len());
    let after = msgs(&dc, ALICE, &["ALL"]);
    assert_placed(
        "messages under Restored/x/",
        &placed(inbox.iter().copied()),
        &under_prefix(&after, "Restored/x"),
    );
    assert_text_eq(
        "alice's original mailboxes after --into",
        &without_prefix(&alice_snap, "Restored"),
        &without_prefix(&dc.snapshot(ALICE), "Restored"),
    );

    // --to-user bob: merged into bob's existing INBOX and Work, other folders created.
    let bob = msgs(&dc, BOB, &["ALL"]);
    let (_, bob_inbox_v, bob_inbox_next, _) = status(&dc, BOB, "INBOX");
    let (_, bob_work_v, bob_work_next, _) = status(&dc, BOB, "Work");
    let alice_snap2 = dc.snapshot(ALICE);
    let out =
        run_ok(restore(&archive, &dc).args(["--user", ALICE, "--to-user", BOB, "--mode", "merge"]));
    assert_restored(&out, alice.len());
    let bob_after = msgs(&dc, BOB, &["ALL"]);
    for m in &bob {
        assert!(
            bob_after.contains(m),
            "bob's own message {} uid {} changed or vanished",
            m.mailbox,
            m.uid
        );
    }
    for m in &alice {
        let hits: Vec<&Msg> = bob_after
            .iter()
            .filter(|b| b.mailbox == m.mailbox && b.guid == m.guid && b.sha == m.sha)
            .collect();
        assert_eq!(
            hits.len(),
            1,
            "alice's {} uid {} should be in bob's {} exactly once",
            m.mailbox,
            m.uid,
            m.mailbox
        );
        assert_eq!(
            hits[0].content_key(),
            m.content_key(),
            "{} uid {}",
            m.mailbox,
            m.uid
        );
        let floor = match m.mailbox.as_str() {
            "INBOX" => bob_inbox_next,
            "Work" => bob_work_next,
            _ => 1,
        };
        assert!(
            hits[0].uid >= floor,
            "{} uid {} merged into bob under UID {} below his UIDNEXT {floor}",
            m.mailbox,
            m.uid,
            hits[0].uid
        );
    }
    assert_eq!(
        bob_after.len(),
        bob.len() + alice.len(),
        "bob's message count"
    );
    assert_eq!(
        status(&dc, BOB, "INBOX").1,
        bob_inbox_v,
        "bob's INBOX UIDVALIDITY"
    );
    assert_eq!(
        status(&dc, BOB, "Work").1,
        bob_work_v,
        "bob's Work UIDVALIDITY"
    );
    assert_text_eq(
        "alice after --to-user bob",
        &alice_snap2,
        &dc.snapshot(ALICE),
    );

    let b1 = dc.snapshot(BOB);
    let out =
        run_ok(restore(&archive, &dc).args(["--user", ALICE, "--to-user", BOB, "--mode", "merge"]));
    assert_restored(&out, 0);
    assert_text_eq("bob after a second --to-user run", &b1, &dc.snapshot(BOB));
}

// ---------------------------------------------------------------------------------------------
// 3. selections and --dry-run
// ---------------------------------------------------------------------------------------------

/// `--uid`, `--guid`, `--message-id`, `--received-since/--before`, `--mailbox` patterns and
/// `--recursive` restore exactly the chosen messages; `--dry-run` writes nothing and says
/// what it would add and skip.
#[test]
fn selections_restore_exactly_the_chosen_messages() {
    let ws = Workspace::new();
    let dc = Dovecot::new(&ws.join("live"), "");
    dc.build_rich_store(ALICE);
    let archive = ws.join("a.mdump");
    backup(&dc, &archive);
    let all = msgs(&dc, ALICE, &["ALL"]);

    // Side-folder restores, each into its own prefix.
    let side = |name: &str, extra: &[&str]| -> Placed {
        let prefix = format!("Sel/{name}");
        let mut cmd = restore(&archive, &dc);
        cmd.args(["--user", ALICE, "--into", &prefix]).args(extra);
        run_ok(&mut cmd);
        under_prefix(&msgs(&dc, ALICE, &["ALL"]), &prefix)
    };
    let expect = |f: &dyn Fn(&Msg) -> bool| -> Placed { placed(all.iter().filter(|m| f(m))) };

    assert_placed(
        "--uid 2:3 (all mailboxes)",
        &expect(&|m| (2..=3).contains(&m.uid)),
        &side("uid", &["--uid", "2:3"]),
    );
    assert_placed(
        "--mailbox INBOX --uid 1,5:6",
        &expect(&|m| m.mailbox == "INBOX" && [1, 5, 6].contains(&m.uid)),
        &side("uid2", &["--mailbox", "INBOX", "--uid", "1,5:6"]),
    );
    let g6 = find(&all, "INBOX", 6).guid.clone();
    let g6_expected = expect(&|m| m.guid == g6);
    assert_eq!(
        g6_expected.len(),
        2,
        "fixture sanity: INBOX 6 was copied to Archive"
    );
    assert_placed("--guid", &g6_expected, &side("guid", &["--guid", &g6]));
    assert_placed(
        "--message-id (with and without <>)",
        &expect(&|m| {
            m.message_id == "<alice.12@example.org>" || m.message_id == "<alice.13@example.org>"
        }),
        &side(
            "mid",
            &[
                "--message-id",
                "alice.12@example.org",
                "--message-id",
                "<alice.13@example.org>",
            ],
        ),
    );
    // Bounds: since is inclusive (INBOX 5 at 2020-05-01 03:00:00), before exclusive (Work 2 at
    // 2020-09-14 12:26:40).
    let dates = expect(&|m| {
        m.received.as_str() >= "2020-05-01 03:00:00" && m.received.as_str() < "2020-09-14 12:26:40"
    });
    assert!(dates.len() >= 4, "fixture sanity: {dates:?}");
    assert_placed(
        "--received-since/--received-before",
        &dates,
        &side(
            "date",
            &[
                "--received-since",
                "2020-05-01T03:00:00Z",
                "--received-before",
                "2020-09-14T12:26:40Z",
            ],
        ),
    );
    let work_tree = expect(&|m| m.mailbox == "Work" || m.mailbox == "Work/Sub");
    assert_placed(
        "--mailbox 'Work*'",
        &work_tree,
        &side("glob", &["--mailbox", "Work*"]),
    );
    assert_placed(
        "--mailbox Work --recursive",
        &work_tree,
        &side("rec", &["--mailbox", "Work", "--recursive"]),
    );
    assert_placed(
        "--mailbox Work",
        &expect(&|m| m.mailbox == "Work"),
        &side("exact", &["--mailbox", "Work"]),
    );
    assert_placed(
        "--mailbox 'Work/%'",
        &expect(&|m| m.mailbox == "Work/Sub"),
        &side("pct", &["--mailbox", "Work/%"]),
    );

    // Merge into an emptied INBOX. (Dovecot's stderr is not checked here: the uidlist
    // complaints after a merge are the subject of `merge_restores_deleted_message_and_folder`.)
    let not_inbox =
        |v: &[Msg]| -> Vec<Msg> { v.iter().filter(|m| m.mailbox != "INBOX").cloned().collect() };
    let others = not_inbox(&msgs(&dc, ALICE, &["ALL"]));
    da(&dc, ALICE, &["expunge", "mailbox", "INBOX", "all"]);
    let (_, v, next, _) = status(&dc, ALICE, "INBOX");
    let out = run_ok(restore(&archive, &dc).args([
        "--user",
        ALICE,
        "--mode",
        "merge",
        "--mailbox",
        "INBOX",
        "--uid",
        "2:3",
    ]));
    assert_restored(&out, 1);
    let (now, _) = fetch_msgs(&dc, ALICE, &["mailbox", "INBOX", "ALL"]);
    assert_placed(
        "INBOX after merge --uid 2:3",
        &expect(&|m| m.mailbox == "INBOX" && m.uid == 2),
        &placed(&now),
    );
    assert!(
        now.iter().all(|m| m.uid >= next),
        "merge reused a UID below {next}: {now:?}"
    );
    assert_eq!(status(&dc, ALICE, "INBOX").1, v, "UIDVALIDITY after merge");

    da(&dc, ALICE, &["expunge", "mailbox", "INBOX", "all"]);
    let out =
        run_ok(restore(&archive, &dc).args(["--user", ALICE, "--mode", "merge", "--guid", &g6]));
    assert_restored(&out, 1);
    let (now_all, _) = fetch_msgs(&dc, ALICE, &["ALL"]);
    let inbox_now: Vec<&Msg> = now_all.iter().filter(|m| m.mailbox == "INBOX").collect();
    assert_placed(
        "INBOX after merge --guid",
        &expect(&|m| m.mailbox == "INBOX" && m.guid == g6),
        &placed(inbox_now.iter().copied()),
    );
    assert_eq!(
        not_inbox(&now_all),
        others,
        "other mailboxes after merge --guid"
    );

    let out = run_ok(restore(&archive, &dc).args([
        "--user",
        ALICE,
        "--mode",
        "merge",
        "--message-id",
        "<alice.1@example.org>",
    ]));
    assert_restored(&out, 1);
    let (now_all, _) = fetch_msgs(&dc, ALICE, &["ALL"]);
    assert_placed(
        "INBOX after merge --message-id",
        &expect(&|m| {
            m.mailbox == "INBOX" && (m.guid == g6 || m.message_id == "<alice.1@example.org>")
        }),
        &placed(now_all.iter().filter(|m| m.mailbox == "INBOX")),
    );

    // --dry-run of a merge: nothing written, the plan printed.
    let tree = tree_listing(&dc.home_root);
    let out =
        run_ok(restore(&archive, &dc).args(["--user", ALICE, "--mode", "merge", "--dry-run"]));
    assert_text_eq(
        "tree after merge --dry-run",
        &tree,
        &tree_listing(&dc.home_root),
    );
    let plan = stdout_of(&out);
    let would_add: Vec<&str> = plan
        .lines()
        .filter(|l| l.starts_with("would add"))
        .collect();
    let skips: Vec<&str> = plan.lines().filter(|l| l.starts_with("skip")).collect();
    let missing_inbox: Vec<&Msg> = all
        .iter()
        .filter(|m| m.mailbox == "INBOX" && m.guid != g6 && m.message_id != "<alice.1@example.org>")
        .collect();
    assert_eq!(
        would_add.len(),
        missing_inbox.len(),
        "merge --dry-run should list each missing INBOX message as `would add`:\n{plan}"
    );
    for m in &missing_inbox {
        assert!(
            would_add
                .iter()
                .any(|l| l.contains("mailbox INBOX") && l.contains(&format!("UID {} of", m.uid))),
            "no `would add` line for INBOX uid {}:\n{plan}",
            m.uid
        );
    }
    assert_eq!(
        skips.len(),
        all.len() - missing_inbox.len(),
        "merge --dry-run should list every present message as skipped:\n{plan}"
    );

    // --dry-run of a side-folder restore.
    let tree = tree_listing(&dc.home_root);
    let out = run_ok(restore(&archive, &dc).args([
        "--user",
        ALICE,
        "--into",
        "Sel/dry",
        "--mailbox",
        "Work*",
        "--dry-run",
    ]));
    assert_text_eq(
        "tree after side-folder --dry-run",
        &tree,
        &tree_listing(&dc.home_root),
    );
    let plan = stdout_of(&out);
    for mb in ["Sel/dry/Work", "Sel/dry/Work/Sub"] {
        assert!(
            plan.lines().any(|l| l.contains(&format!("mailbox {mb} "))),
            "side-folder --dry-run does not mention {mb}:\n{plan}"
        );
    }
    assert!(
        !da_clean(&dc, ALICE, &["mailbox", "list"])
            .lines()
            .any(|l| l.starts_with("Sel/dry")),
        "--dry-run created a mailbox"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. --restore-list
// ---------------------------------------------------------------------------------------------

/// `maildump list A > L`, delete some lines and comment others out with `;`: `restore
/// --restore-list L --mode side-folder` restores exactly the lines left in, for every user.
#[test]
fn restore_list_restores_exactly_the_lines_left_in() {
    let ws = Workspace::new();
    let dc = Dovecot::new(&ws.join("live"), "");
    dc.build_rich_store(ALICE);
    dc.build_small_store(BOB);
    let archive = ws.join("a.mdump");
    backup(&dc, &archive);
    let prefix = format!("Restored/{}", archive_day(&archive));
    let by_user: BTreeMap<&str, Vec<Msg>> = [ALICE, BOB]
        .into_iter()
        .map(|u| (u, msgs(&dc, u, &["ALL"])))
        .collect();

    let listed = stdout_of(&run_ok(maildump().arg("list").arg(&archive)));
    let mut edited = String::new();
    let mut kept: BTreeSet<(String, String, u32)> = BTreeSet::new();
    let mut data_lines = 0;
    for line in listed.lines() {
        if line.starts_with(';') || line.trim().is_empty() {
            edited.push_str(line);
            edited.push('\n');
            continue;
        }
        let f: Vec<&str> = line.split('\t').collect();
        assert!(f.len() >= 3, "list line without user/mailbox/uid: {line:?}");
        match data_lines % 3 {
            0 => {} // deleted
            1 => {
                edited.push(';');
                edited.push_str(line);
                edited.push('\n');
            }
            _ => {
                edited.push_str(line);
                edited.push('\n');
                kept.insert((
                    f[0].to_string(),
                    f[1].to_string(),
                    f[2].parse().expect("uid"),
                ));
            }
        }
        data_lines += 1;
    }
    let total: usize = by_user.values().map(Vec::len).sum();
    assert_eq!(
        data_lines, total,
        "`maildump list` has one line per message:\n{listed}"
    );
    assert!(kept.len() >= 5, "fixture sanity: {kept:?}");
    let list = ws.join("L");
    fs::write(&list, &edited).expect("write restore list");

    let out = run_ok(
        restore(&archive, &dc)
            .arg("--restore-list")
            .arg(&list)
            .args(["--mode", "side-folder"]),
    );
    assert_restored(&out, kept.len());
    for (user, before) in &by_user {
        let expected = placed(
            before
                .iter()
                .filter(|m| kept.contains(&(user.to_string(), m.mailbox.clone(), m.uid))),
        );
        let after = msgs(&dc, user, &["ALL"]);
        assert_placed(
            &format!("user {user}: messages restored from the edited list"),
            &expected,
            &under_prefix(&after, &prefix),
        );
        // The originals are untouched.
        let originals: Vec<Msg> = after
            .iter()
            .filter(|m| !m.mailbox.starts_with("Restored"))
            .cloned()
            .collect();
        assert_eq!(&originals, before, "user {user}: original mailboxes");
    }
}

// ---------------------------------------------------------------------------------------------
// 5. merge while Dovecot delivers and changes flags
// ---------------------------------------------------------------------------------------------

/// While another thread delivers 30 messages with `doveadm save` and changes flags of existing
/// mail, 50 archived messages are merged into the same INBOX (in five runs). Afterwards every
/// message is there exactly once, the concurrent flag changes are kept, and Dovecot reads the
/// mailbox without errors; `force-resync` changes nothing.
#[test]
fn merge_during_concurrent_delivery() {
    let ws = Workspace::new();
    // The archive: 50 messages of alice's INBOX.
    let src = Dovecot::new(&ws.join("src"), "");
    let archived: Vec<(&str, u64, &str, Vec<u8>)> = (0..50u32)
        .map(|i| {
            let flags = match i % 4 {
                0 => "S",
                1 => "FS",
                2 => "",
                _ => "RS",
            };
            (
                "INBOX",
                1_600_000_000 + u64::from(i) * 3600,
                flags,
                message(
                    ALICE,
                    100 + i,
                    &format!("Archived {i}"),
                    &format!("archived body {i}\n"),
                ),
            )
        })
        .collect();
    src.import(ALICE, &archived);
    let src_msgs = msgs(&src, ALICE, &["ALL"]);
    assert_eq!(src_msgs.len(), 50);
    let archive = ws.join("a.mdump");
    backup(&src, &archive);

    // The live store: 5 messages of its own.
    let live = Dovecot::new(&ws.join("live"), "");
    let existing: Vec<(&str, u64, &str, Vec<u8>)> = (1..=5u32)
        .map(|i| {
            (
                "INBOX",
                1_700_000_000 + u64::from(i),
                "",
                message(ALICE, i, &format!("Existing {i}"), "live mail\n"),
            )
        })
        .collect();
    live.import(ALICE, &existing);
    let (_, uidvalidity, _, _) = status(&live, ALICE, "INBOX");

    let delivered = AtomicUsize::new(0);
    let chunks = ["1:10", "11:20", "21:30", "31:40", "41:*"];
    let (problems, outputs) = std::thread::scope(|s| {
        let deliverer = s.spawn(|| {
            let mut problems = Vec::new();
            for i in 0..30u32 {
                let out = live.save(
                    ALICE,
                    "INBOX",
                    &message(
                        ALICE,
                        200 + i,
                        &format!("Delivered {i}"),
                        "delivered meanwhile\n",
                    ),
                );
                let err = stderr_of(&out);
                if !out.status.success() || !complaints(&err).is_empty() {
                    problems.push(format!("save {i}: {} {err}", out.status));
                }
                delivered.fetch_add(1, Ordering::SeqCst);
                let uid = (i % 5 + 1).to_string();
                let flags = if i % 2 == 0 {
                    "\\Flagged ConcKw"
                } else {
                    "\\Answered"
                };
                let mut cmd = live.command(
                    ALICE,
                    &["flags", "add", flags, "mailbox", "INBOX", "uid", &uid],
                );
                let out = run(&mut cmd);
                let err = stderr_of(&out);
                if !out.status.success() || !complaints(&err).is_empty() {
                    problems.push(format!("flags add {i}: {}", report(&cmd, &out)));
                }
            }
            problems
        });
        let start = Instant::now();
        while delivered.load(Ordering::SeqCst) < 3 && start.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut outputs = Vec::new();
        for set in chunks {
            let mut cmd = restore(&archive, &live);
            cmd.args(["--user", ALICE, "--mode", "merge", "--uid", set]);
            let out = run(&mut cmd);
            outputs.push((
                delivered.load(Ordering::SeqCst),
                report(&cmd, &out),
                out.status.success(),
                stderr_of(&out),
            ));
            std::thread::sleep(Duration::from_millis(40));
        }
        (deliverer.join().expect("delivery thread"), outputs)
    });
    for (_, rep, ok, _) in &outputs {
        assert!(ok, "merge restore during delivery failed\n{rep}");
    }
    let added: usize = outputs.iter().map(|o| restored_count(&o.3)).sum();
    assert_eq!(added, 50, "messages the five merge runs report as restored");
    let during: Vec<usize> = outputs.iter().map(|o| o.0).collect();
    assert!(
        during.iter().any(|&d| d < 30),
        "fixture sanity: the restores should overlap the deliveries (delivered counts after each: {during:?})"
    );

    // Dovecot's first look after everything: no complaints.
    let (after, first_stderr) = fetch_msgs(&live, ALICE, &["mailbox", "INBOX", "ALL"]);
    let mut ids: BTreeMap<&str, usize> = BTreeMap::new();
    for m in &after {
        *ids.entry(m.message_id.as_str()).or_default() += 1;
    }
    let mut want: Vec<String> = (1..=5)
        .chain(100..150)
        .chain(200..230)
        .map(|n| format!("<alice.{n}@example.org>"))
        .collect();
    want.sort();
    let got_ids: Vec<String> = ids.keys().map(|s| s.to_string()).collect();
    assert_eq!(
        got_ids, want,
        "Message-IDs in INBOX after the concurrent merge"
    );
    let dups: Vec<_> = ids.iter().filter(|(_, n)| **n != 1).collect();
    assert!(dups.is_empty(), "messages present more than once: {dups:?}");
    let guids: BTreeSet<&str> = after.iter().map(|m| m.guid.as_str()).collect();
    assert_eq!(guids.len(), after.len(), "GUIDs are unique");
    let uids: BTreeSet<u32> = after.iter().map(|m| m.uid).collect();
    assert_eq!(uids.len(), after.len(), "UIDs are unique");
    for s in &src_msgs {
        let m = after
            .iter()
            .find(|m| m.message_id == s.message_id)
            .expect("restored message");
        assert_eq!(
            (&m.guid, &m.flags, &m.received, &m.sha),
            (&s.guid, &s.flags, &s.received, &s.sha),
            "restored {}",
            s.message_id
        );
    }
    for uid in 1..=5u32 {
        let m = find(&after, "INBOX", uid);
        for f in ["\\Flagged", "\\Answered", "ConcKw"] {
            assert!(
                m.flags.iter().any(|x| x == f),
                "flag {f} set concurrently on uid {uid} was lost: {:?}",
                m.flags
            );
        }
    }
    let c = complaints(&first_stderr);
    assert!(
        c.is_empty(),
        "doveadm complained on its first access after the concurrent merge:\n{}",
        c.join("\n")
    );
    let (n, v, _, _) = status(&live, ALICE, "INBOX");
    assert_eq!(n, 85, "mailbox status messages");
    assert_eq!(v, uidvalidity, "UIDVALIDITY after the concurrent merge");

    // force-resync must not be needed: it changes nothing Dovecot reports.
    let before_resync = msgs(&live, ALICE, &["mailbox", "INBOX", "ALL"]);
    da_clean(&live, ALICE, &["force-resync", "INBOX"]);
    let after_resync = msgs(&live, ALICE, &["mailbox", "INBOX", "ALL"]);
    assert!(
        before_resync == after_resync,
        "force-resync changed what Dovecot reports:\n{}",
        crate::util::line_diff(
            &before_resync
                .iter()
                .map(|m| format!("{} {} {:?}\n", m.uid, m.guid, m.flags))
                .collect::<String>(),
            &after_resync
                .iter()
                .map(|m| format!("{} {} {:?}\n", m.uid, m.guid, m.flags))
                .collect::<String>()
        )
    );
    assert_eq!(
        status(&live, ALICE, "INBOX").1,
        uidvalidity,
        "UIDVALIDITY after force-resync"
    );

    // And a whole second run adds nothing.
    let out = run_ok(restore(&archive, &live).args(["--user", ALICE, "--mode", "merge"]));
    assert_restored(&out, 0);
    assert_eq!(
        msgs(&live, ALICE, &["mailbox", "INBOX", "ALL"]),
        after_resync
    );

    // Last, so that everything above is checked too: the concurrent Dovecot processes
    // themselves ran without errors or warnings (e.g. while waiting for the uidlist lock
    // maildump held).
    assert!(
        problems.is_empty(),
        "concurrent Dovecot operations failed or complained:\n{}",
        problems.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// 6. export
// ---------------------------------------------------------------------------------------------

const MBOX_READER: &str = r#"
import json, mailbox, sys
out = []
box = mailbox.mbox(sys.argv[1], create=False)
for key in box.iterkeys():
    raw = box.get_bytes(key)
    msg = box[key]
    sep = raw.find(b"\n\n")
    body = raw[sep + 2:] if sep >= 0 else b""
    payload = None
    if not msg.is_multipart():
        payload = msg.get_payload(decode=True).hex()
    out.append({
        "message_id": msg.get("Message-ID"),
        "status": msg.get("Status"),
        "x_status": msg.get("X-Status"),
        "x_keywords": msg.get("X-Keywords"),
        "body": body.hex(),
        "payload": payload,
    })
json.dump(out, sys.stdout)
"#;

fn python3() -> Command {
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path_var)
        .chain(["/usr/bin".into(), "/usr/local/bin".into()])
        .map(|d: PathBuf| d.join("python3"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("python3 not found: the export test needs it (never skipped)"));
    Command::new(found)
}

fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap_or_else(|e| panic!("read {}: {e}", d.display())) {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                v.push(p);
            }
        }
    }
    v.sort();
    v
}

/// `export --format mbox` is read by Python's `mailbox.mbox` (same count, same bodies, flags as
/// Status/X-Status/X-Keywords); `--format eml` gives one byte-exact file per message;
/// `--format maildir` gives a tree Dovecot reads with the same messages and flags; export never
/// overwrites (exit 6).
#[test]
fn export_mbox_eml_maildir() {
    let ws = Workspace::new();
    let dc = Dovecot::new(&ws.join("live"), "");
    dc.build_rich_store(ALICE);
    let archive = ws.join("a.mdump");
    backup(&dc, &archive);
    let all = msgs(&dc, ALICE, &["ALL"]);
    let inbox: Vec<&Msg> = all.iter().filter(|m| m.mailbox == "INBOX").collect();

    // mbox of INBOX.
    let mbox = ws.join("inbox.mbox");
    let export = |extra: &[&str], out: &Path| -> Command {
        let mut cmd = maildump();
        cmd.arg("export")
            .arg(&archive)
            .args(["--user", ALICE])
            .args(extra)
            .arg("-o")
            .arg(out);
        cmd
    };
    run_ok(&mut export(
        &["--mailbox", "INBOX", "--format", "mbox"],
        &mbox,
    ));
    let mut py = python3();
    py.arg("-c").arg(MBOX_READER).arg(&mbox);
    let out = run_ok(&mut py);
    let parsed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("python JSON");
    let parsed = parsed.as_array().expect("array");
    assert_eq!(parsed.len(), inbox.len(), "mailbox.mbox message count");
    for (p, m) in parsed.iter().zip(&inbox) {
        let s = |k: &str| p[k].as_str().unwrap_or("").to_string();
        assert_eq!(s("message_id"), m.message_id, "mbox order/identity");
        let body = hex::decode(s("body")).expect("hex");
        assert!(
            body == m.body(),
            "mbox body of {} differs\n--- mbox ---\n{}\n--- original ---\n{}",
            m.message_id,
            String::from_utf8_lossy(&body),
            String::from_utf8_lossy(m.body())
        );
        if let Some(pl) = p["payload"].as_str() {
            let pl = hex::decode(pl).expect("hex");
            assert!(pl == m.body(), "mbox payload of {} differs", m.message_id);
        }
        let seen = m.flags.iter().any(|f| f == "\\Seen");
        assert_eq!(
            s("status").contains('R'),
            seen,
            "Status: {:?} of {} (flags {:?})",
            s("status"),
            m.message_id,
            m.flags
        );
        assert_eq!(
            s("x_status").contains('F'),
            m.flags.iter().any(|f| f == "\\Flagged"),
            "X-Status: {:?} of {} (flags {:?})",
            s("x_status"),
            m.message_id,
            m.flags
        );
        let mut kw: Vec<String> = s("x_keywords")
            .split_whitespace()
            .map(str::to_string)
            .collect();
        kw.sort();
        let mut want_kw: Vec<String> = m
            .flags
            .iter()
            .filter(|f| !f.starts_with('\\'))
            .cloned()
            .collect();
        want_kw.sort();
        assert_eq!(kw, want_kw, "X-Keywords of {}", m.message_id);
    }
    let mbox_bytes = fs::read(&mbox).expect("read mbox");
    let refused = run_expect_code(
        &mut export(&["--mailbox", "INBOX", "--format", "mbox"], &mbox),
        EXIT_CONFLICT,
    );
    assert!(
        !refused.stderr.is_empty(),
        "a refusal should explain itself"
    );
    assert!(
        fs::read(&mbox).expect("read mbox") == mbox_bytes,
        "refused export changed the mbox"
    );

    // eml: one byte-exact file per message.
    let eml = ws.join("eml");
    run_ok(&mut export(&["--format", "eml"], &eml));
    let files = files_under(&eml);
    assert_eq!(files.len(), all.len(), "one .eml per message: {files:?}");
    for m in &all {
        if ["INBOX", "Archive", "Work", "Work/Sub"].contains(&m.mailbox.as_str()) {
            let p = eml.join(&m.mailbox).join(format!("{}.eml", m.uid));
            let got = fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
            assert!(
                got == m.text,
                "{} differs from doveadm fetch text",
                p.display()
            );
        }
    }
    let mut want: Vec<String> = all.iter().map(|m| m.sha.clone()).collect();
    want.sort();
    let mut got: Vec<String> = files
        .iter()
        .map(|p| sha256_hex(&fs::read(p).expect("read eml")))
        .collect();
    got.sort();
    assert_eq!(got, want, "SHA-256 of all .eml files vs doveadm fetch text");
    let tree = tree_listing(&eml);
    run_expect_code(&mut export(&["--format", "eml"], &eml), EXIT_CONFLICT);
    assert_text_eq(
        "eml tree after a refused export",
        &tree,
        &tree_listing(&eml),
    );

    // maildir: Dovecot pointed at the tree sees the same messages and flags.
    let md = ws.join("exp").join("md");
    let exp = Dovecot::new(&ws.join("exp"), &format!("maildir:{}", md.display()));
    run_ok(&mut export(&["--format", "maildir"], &md));
    exp.ensure_home(ALICE);
    exp.fix_ownership();
    let exported = msgs(&exp, ALICE, &["ALL"]);
    assert_placed(
        "exported Maildir vs the original",
        &placed(&all),
        &placed(&exported),
    );
    let key = |v: &[Msg]| -> Vec<(String, u32, String)> {
        v.iter()
            .map(|m| (m.mailbox.clone(), m.uid, m.guid.clone()))
            .collect()
    };
    assert_eq!(
        key(&exported),
        key(&all),
        "mailboxes, UIDs and GUIDs of the exported Maildir"
    );
    run_expect_code(&mut export(&["--format", "maildir"], &md), EXIT_CONFLICT);
    assert_eq!(
        msgs(&exp, ALICE, &["ALL"]),
        exported,
        "refused maildir export changed the tree"
    );
}

/// A folder renamed after the backup keeps its mailbox GUID: a merge restore puts its
/// deleted mail back into the folder under its new name and does not recreate the old name.
#[test]
fn merge_follows_a_renamed_mailbox() {
    let ws = Workspace::new();
    let dc = Dovecot::new(&ws.join("live"), "");
    dc.build_rich_store(ALICE);
    let archive = ws.join("a.mdump");
    backup(&dc, &archive);
    let before = msgs(&dc, ALICE, &["mailbox", "R&D"]);
    assert_eq!(before.len(), 2, "fixture sanity: R&D holds 2 messages");
    da_clean(&dc, ALICE, &["mailbox", "rename", "R&D", "Research"]);
    let victim = before[0].clone();
    da_clean(
        &dc,
        ALICE,
        &[
            "expunge",
            "mailbox",
            "Research",
            "uid",
            &victim.uid.to_string(),
        ],
    );
    let out = run_ok(restore(&archive, &dc).args(["--user", ALICE, "--deleted", "--quiet"]));
    assert!(out.status.success());
    let listed = da_clean(&dc, ALICE, &["mailbox", "list"]);
    assert!(
        !listed.lines().any(|l| l == "R&D"),
        "the old name was recreated:\n{listed}"
    );
    let now = msgs(&dc, ALICE, &["mailbox", "Research"]);
    assert_eq!(now.len(), 2, "{now:?}");
    let back = now
        .iter()
        .find(|m| m.guid == victim.guid)
        .expect("the expunged message is back in the renamed folder");
    assert_eq!(back.sha, victim.sha);
    assert_eq!(back.flags, victim.flags);
    assert_eq!(back.received, victim.received);
    assert!(back.uid > victim.uid, "a new UID above the old ones");
}
