//! `maildump estimate` (issue 15) against a real, daemon-less Dovecot store: its figure is
//! what the backup then reads (its summary), for a full, for an incremental after
//! deliveries, a move, a flag change and an expunge, and for a `--state-dir` run; a
//! `chown -R` of the store (every ctime changes) estimates nothing to read.

use std::path::Path;
use std::process::Command;

use crate::dovecot::{Dovecot, message, pseudo_random_bytes};
use crate::util::{Workspace, maildump, run_ok};

fn store_args(src: &Dovecot, cmd: &mut Command) {
    cmd.args(["--location", &src.location, "--home", &src.home_template()]);
    cmd.arg("--all-users");
}

/// `maildump estimate ... --json EXTRA`, parsed.
fn estimate(src: &Dovecot, extra: &[&std::ffi::OsStr]) -> serde_json::Value {
    let mut cmd = maildump();
    cmd.arg("estimate");
    store_args(src, &mut cmd);
    cmd.arg("--json").args(extra);
    let out = run_ok(&mut cmd);
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 1, "one JSON object: {text}");
    serde_json::from_str(&text).unwrap()
}

/// A backup's `done` event (`--progress json`), and the message bytes it read.
fn backup(src: &Dovecot, extra: &[&std::ffi::OsStr]) -> (String, u64) {
    let mut cmd = maildump();
    cmd.arg("backup");
    store_args(src, &mut cmd);
    cmd.args(extra).args(["--progress", "json"]);
    let out = run_ok(&mut cmd);
    let err = String::from_utf8(out.stderr).unwrap();
    let done = err
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["event"] == "done")
        .unwrap_or_else(|| panic!("no done event: {err}"));
    let read = done["read_bytes"]
        .as_u64()
        .unwrap_or_else(|| panic!("no read_bytes in {done}"));
    (done.to_string(), read)
}

#[track_caller]
fn assert_close(what: &str, est: &serde_json::Value, read: u64, summary: &str) {
    let bytes = est["bytes"].as_u64().unwrap();
    let diff = bytes.abs_diff(read);
    assert!(
        diff * 10 <= read,
        "{what}: estimate {bytes} bytes, the backup read {read} ({est}; {summary})"
    );
}

fn big(user: &str, n: u32, len: usize) -> Vec<u8> {
    let body = crate::dovecot::base64_lines(&pseudo_random_bytes(u64::from(n), len));
    message(user, n, &format!("big {n}"), &body)
}

#[test]
fn estimate_predicts_what_the_backup_reads() {
    let ws = Workspace::new();
    let src = Dovecot::new(&ws.join("src"), "");
    for u in ["alice", "bob"] {
        src.build_small_store(u);
    }
    for n in 0..6 {
        src.save(
            "alice",
            "INBOX",
            &big("alice", 10 + n, 20_000 + 3_000 * n as usize),
        );
    }
    src.save("bob", "Work", &big("bob", 30, 50_000));
    let o = |p: &Path| p.as_os_str().to_owned();
    let full = ws.join("full.mdump");

    let est = estimate(&src, &[]);
    assert_eq!(est["kind"], "full");
    assert_eq!(est["messages"], 13, "{est}");
    let (summary, read) = backup(&src, &["-o".as_ref(), o(&full).as_os_str()]);
    assert!(summary.contains("\"messages\":13"), "{summary}");
    assert_close("full", &est, read, &summary);
    assert!(est["write_bytes"].as_u64().unwrap() >= read / 2, "{est}");

    // Changes: two deliveries (one big), a move, a flag change, an expunge.
    src.save("alice", "INBOX", &big("alice", 40, 60_000));
    src.save("bob", "INBOX", &message("bob", 41, "new", "hello\n"));
    src.doveadm("alice", &["move", "Work", "mailbox", "INBOX", "uid", "3"]);
    src.doveadm(
        "bob",
        &["flags", "add", "\\Seen", "mailbox", "Work", "uid", "1"],
    );
    src.doveadm("bob", &["expunge", "mailbox", "INBOX", "uid", "1"]);
    let base = ["--base".as_ref(), full.as_os_str()];
    let est = estimate(&src, &base);
    assert_eq!(est["kind"], "incremental");
    assert_eq!(
        est["messages"], 2,
        "only the two deliveries are read: {est}"
    );
    let inc = ws.join("inc.mdump");
    let mut args = base.to_vec();
    args.extend(["-o".as_ref(), inc.as_os_str()]);
    let (summary, read) = backup(&src, &args);
    assert!(read > 60_000, "{summary}");
    assert_close("incremental", &est, read, &summary);

    // Admin work that changes every ctime changes no signature.
    let st = Command::new("chown")
        .arg("-R")
        .arg(format!("{}:{}", src.uid, src.gid))
        .arg(ws.join("src/home"))
        .status()
        .unwrap();
    assert!(st.success());
    let est = estimate(&src, &["--base".as_ref(), inc.as_os_str()]);
    assert_eq!(
        (&est["messages"], &est["bytes"]),
        (&0.into(), &0.into()),
        "{est}"
    );
    assert_eq!(est["mailboxes_unchanged"], est["mailboxes"], "{est}");

    // --state-dir: a full when it is empty, then an incremental against its newest.
    let sd = ws.join("state");
    let sdo = ["--state-dir".as_ref(), sd.as_os_str()];
    assert_eq!(estimate(&src, &sdo)["kind"], "full");
    backup(&src, &sdo);
    src.save("bob", "Work", &big("bob", 50, 30_000));
    let est = estimate(&src, &sdo);
    assert_eq!(
        (&est["kind"], &est["messages"]),
        (&"incremental".into(), &1.into())
    );
    let (summary, read) = backup(&src, &sdo);
    assert_close("state-dir", &est, read, &summary);
}

#[test]
fn estimate_text_and_errors() {
    let ws = Workspace::new();
    let src = Dovecot::new(&ws.join("src"), "");
    src.build_small_store("alice");
    let mut cmd = maildump();
    cmd.arg("estimate");
    store_args(&src, &mut cmd);
    let out = run_ok(&mut cmd);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("a full backup reads 3 messages (")
            && text.contains("of 1 users; it writes about "),
        "{text}"
    );
    let mut cmd = maildump();
    cmd.args(["estimate", "--location", "maildir:~/Maildir", "--home"])
        .arg(format!("{}/%u", ws.join("nowhere").display()))
        .args(["--user", "nosuch"]);
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(8), "{err}");
    assert!(
        err.starts_with("maildump: error: ") && err.contains("nosuch"),
        "{err}"
    );
}
