//! maildump as an Amanda application (`maildump amanda ...`, issue 15).
//!
//! With real Amanda (Debian's 3.5.1: amcheck, amdump, amfetchdump, amcheckdump, amrecover;
//! vtapes, auth local), `tests/support/selftest-amanda.sh` runs README's "Amanda" setup with
//! this build's binary: amcheck refusing a store user backup cannot read and passing with
//! the read-only group; levels 0, 1, 2, 1 with doveadm changes in between; restores of
//! every fetched image, of one user from a piped level 0, of levels 0 and 1 piped
//! concatenated, of the images amfetchdump --extract spooled through the application;
//! amcheckdump; amrecover browsing the index; a failing backup FAILED with maildump's
//! message in the report. Each restore is compared with what doveadm showed at dump time.
//! A missing Amanda fails the test. The protocol itself (fd 3 messages, fd 4 index lines,
//! nothing on stderr, levels and their recorded state) is checked without Amanda below.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use crate::dovecot::Dovecot;
use crate::util::{Workspace, binary_for_user, maildump, run_selftest};

#[test]
fn amanda_dumps_and_restores_exactly() {
    let ws = Workspace::new();
    // Amanda runs the application as user backup.
    let exe = binary_for_user("backup", &ws);
    run_selftest(
        "amanda",
        &[
            ("MAILDUMP", exe.as_os_str()),
            ("AMANDA_DTIMEOUT", "5".as_ref()),
        ],
        &[
            "amcheck refuses a store with Dovecot's default modes",
            "amcheck with the group arrangement",
            "level 0 dump",
            "level 2 dump",
            "maildump restore of every fetched image = state at the last dump",
            "amfetchdump -p (level 0) | maildump restore - --user alice",
            "amfetchdump -p of levels 0 and 1, concatenated, | maildump restore -",
            "amfetchdump -p of the chain | maildump restore - --user alice --mailbox Work/Sub",
            "amfetchdump -p of the chain | maildump restore - --user alice --mailbox INBOX --uid 1",
            "amfetchdump --extract, then maildump restore of the spooled images",
            "amcheckdump validates",
            "amrecover browses users and mailboxes from the index lines",
            "a failing backup: dump FAILED, maildump's message in the report",
        ],
    );
}

/// `maildump amanda ARGS` through bash with fd 3 and fd 4 going to files, stdout to
/// `image`: (output, fd 3 text, fd 4 text).
fn app(dir: &Path, image: &Path, args: &[&str]) -> (Output, String, String) {
    let (mesg, index) = (dir.join("fd3"), dir.join("fd4"));
    let out = Command::new("bash")
        .arg("-c")
        .arg(r#"exe=$1; img=$2; m=$3; i=$4; shift 4; exec "$exe" amanda "$@" > "$img" 3> "$m" 4> "$i""#)
        .arg("bash")
        .arg(env!("CARGO_BIN_EXE_maildump"))
        .args([image, &mesg, &index])
        .args(args)
        .output()
        .unwrap();
    let read = |p: &Path| fs::read_to_string(p).unwrap_or_default();
    (out, read(&mesg), read(&index))
}

#[test]
fn amanda_protocol_levels_messages_and_index() {
    let ws = Workspace::new();
    let src = Dovecot::new(&ws.join("src"), "");
    src.build_small_store("alice");
    let state = ws.join("state");
    let home = src.home_template();
    let props = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "--config",
            "mdt",
            "--host",
            "localhost",
            "--disk",
            "/srv/mail",
            "--device",
            "/srv/mail",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v.extend([
            "--location".into(),
            src.location.clone(),
            "--home".into(),
            home.clone(),
        ]);
        v.extend(["--state-dir".into(), state.display().to_string()]);
        v
    };
    let run = |cmd: &str, image: &Path, extra: &[&str]| {
        let p = props(extra);
        let mut args = vec![cmd];
        args.extend(p.iter().map(String::as_str));
        app(ws.path(), image, &args)
    };
    let sink = ws.join("sink");

    let (out, _, _) = run("support", &sink, &[]);
    let support = fs::read_to_string(&sink).unwrap();
    for cap in [
        "MAX-LEVEL 9",
        "MULTI-ESTIMATE YES",
        "INDEX-LINE YES",
        "RECORD YES",
    ] {
        assert!(support.lines().any(|l| l == cap), "{cap}: {support}");
    }
    assert!(out.status.success() && out.stderr.is_empty());

    // No level 0 recorded yet: level 1 cannot be estimated.
    let (out, _, _) = run("estimate", &sink, &["--level", "0", "--level", "1"]);
    let est = fs::read_to_string(&sink).unwrap();
    let lines: Vec<&str> = est.lines().collect();
    assert_eq!(lines.len(), 2, "{est}");
    assert!(
        lines[0].starts_with("0 ") && lines[0].ends_with(" 1"),
        "{est}"
    );
    assert_eq!(lines[1], "1 -1 -1");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("ERROR maildump: level 1: ") && err.contains("no level 0 dump recorded"),
        "{err}"
    );

    let l0 = ws.join("l0.mdump");
    let (out, mesg, index) = run(
        "backup",
        &l0,
        &["--level", "0", "--index", "line", "--record"],
    );
    assert!(out.status.success(), "{mesg}");
    assert!(
        out.stderr.is_empty(),
        "stderr fails a dump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        mesg.lines()
            .any(|l| l.starts_with("| maildump: backed up 1 users")),
        "{mesg}"
    );
    let kb = fs::metadata(&l0).unwrap().len().div_ceil(1024);
    assert!(
        mesg.lines().any(|l| l == format!("sendbackup: size {kb}")),
        "{mesg}"
    );
    let index: Vec<&str> = index.lines().collect();
    for want in [
        "/alice/",
        "/alice/INBOX/",
        "/alice/INBOX/1",
        "/alice/INBOX/2",
        "/alice/INBOX/.maildump-level-0",
        "/alice/Work/1",
    ] {
        assert!(index.contains(&want), "{want}: {index:?}");
    }
    assert!(state.join("level-0.mdump").exists());

    src.save(
        "alice",
        "INBOX",
        &crate::dovecot::message("alice", 9, "new", "after level 0\n"),
    );
    let (out, _, _) = run("estimate", &sink, &["--level", "1"]);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let l1 = ws.join("l1.mdump");
    let (out, mesg, index) = run(
        "backup",
        &l1,
        &["--level", "1", "--index", "line", "--record"],
    );
    assert!(out.status.success() && out.stderr.is_empty(), "{mesg}");
    assert!(mesg.contains("3 files not read"), "an incremental: {mesg}");
    assert!(index.lines().any(|l| l == "/alice/INBOX/3"), "{index}");
    assert!(
        index.lines().any(|l| l == "/alice/INBOX/.maildump-level-1"),
        "{index}"
    );
    // A new level 0 supersedes level 1's state.
    let (out, mesg, _) = run(
        "backup",
        &ws.join("l0b.mdump"),
        &["--level", "0", "--record"],
    );
    assert!(out.status.success(), "{mesg}");
    assert!(!state.join("level-1.mdump").exists());

    // The chain restores; validate reads an image on stdin; index lists one.
    let r = maildump()
        .args(["restore"])
        .args([&l0, &l1])
        .args(["--location", &src.location, "--home"])
        .arg(format!("{}/%u", ws.join("r").display()))
        .args(["--uid-margin", "0", "--quiet"])
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let validate = |image: &Path| {
        Command::new("bash")
            .arg("-c")
            .arg(r#""$1" amanda validate < "$2""#)
            .arg("bash")
            .arg(env!("CARGO_BIN_EXE_maildump"))
            .arg(image)
            .output()
            .unwrap()
    };
    let v = validate(&l1);
    assert!(
        v.status.success() && v.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&v.stderr)
    );
    let bad = ws.join("bad.mdump");
    fs::write(&bad, b"not an archive at all").unwrap();
    let v = validate(&bad);
    assert!(
        !v.status.success() && !v.stderr.is_empty(),
        "a bad image fails validate"
    );

    // An item left out (a FIFO among the messages): a `?` line (a STRANGE dump), exit 0.
    rustix::fs::mknodat(
        rustix::fs::CWD,
        src.home("alice").join("Maildir/new/1700000100.M9P1.fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let (out, mesg, _) = run("backup", &sink, &["--level", "0"]);
    assert!(out.status.success() && out.stderr.is_empty(), "{mesg}");
    assert!(
        mesg.lines().any(|l| l.starts_with("? maildump: warning: ")
            && l.contains("1700000100.M9P1.fifo: not a regular file; left out")),
        "{mesg}"
    );
    assert!(
        mesg.lines().any(|l| l.starts_with("sendbackup: size ")),
        "{mesg}"
    );

    // A backup that fails: messages on fd 3, nothing on stderr, exit 1.
    let (out, mesg, _) = app(
        ws.path(),
        &sink,
        &[
            "backup",
            "--level",
            "0",
            "--dovecot-config",
            &ws.join("missing.conf").display().to_string(),
            "--state-dir",
            &state.display().to_string(),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{mesg}");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        mesg.lines()
            .any(|l| l.starts_with("? maildump: error: ") && l.contains("missing.conf")),
        "{mesg}"
    );
    assert!(
        mesg.lines()
            .any(|l| l.starts_with("sendbackup: error [maildump") && l.contains("missing.conf")),
        "{mesg}"
    );
    assert!(
        fs::read_dir(&state).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".pending")),
        "no pending copy left"
    );
}
