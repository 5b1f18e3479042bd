//! `maildump selfcheck` (issue 15): one `OK`/`ERROR` line per check and an exit code, on a
//! real Dovecot store read through its config; run as an unprivileged user (as Amanda runs
//! its applications) it names the file it cannot read and the target it cannot write.

use std::fs;
use std::process::{Command, Output};

use crate::dovecot::Dovecot;
use crate::util::{Workspace, binary_for_user, is_root, maildump};

fn lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn selfcheck_reports_each_check_and_what_an_unprivileged_user_cannot_read() {
    assert!(
        is_root(),
        "this test switches to user nobody: run the suite as root"
    );
    let ws = Workspace::new();
    let src = Dovecot::new(&ws.join("src"), "");
    src.build_small_store("alice");
    src.build_small_store("bob");
    fs::create_dir(ws.join("out")).unwrap();
    let args = |cmd: &mut Command| {
        cmd.arg("selfcheck")
            .arg("--config")
            .arg(&src.conf)
            .args(["--home", &src.home_template(), "--all-users", "-o"])
            .arg(ws.join("out/mail.mdump"));
    };
    let mut cmd = maildump();
    args(&mut cmd);
    let out = cmd.output().unwrap();
    let got = lines(&out);
    let prefixes = [
        "OK doveconf: ",
        "OK config ",
        "OK user alice: 2 mailboxes, ",
        "OK user bob: 2 mailboxes, ",
        "OK estimate: a full backup reads 6 messages ",
        "OK target ",
        "OK space: ",
    ];
    assert_eq!(got.len(), prefixes.len(), "{got:#?}");
    for (l, p) in got.iter().zip(prefixes) {
        assert!(l.starts_with(p), "{l:?} should start with {p:?}: {got:#?}");
    }
    assert_eq!(out.status.code(), Some(0), "{got:#?}");
    assert!(
        fs::read_dir(ws.join("out")).unwrap().next().is_none(),
        "the target probe is removed"
    );

    // As nobody: Dovecot's modes (files 0600 of the mail user) and a root-owned target.
    let exe = binary_for_user("nobody", &ws);
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(&exe);
    args(&mut cmd);
    let out = cmd.output().unwrap();
    let got = lines(&out);
    let err = |what: &str| {
        got.iter()
            .find(|l| l.starts_with(&format!("ERROR {what}: ")))
            .unwrap_or_else(|| panic!("no ERROR {what}: {got:#?}"))
            .clone()
    };
    for u in ["alice", "bob"] {
        let l = err(&format!("user {u}"));
        assert!(
            l.ends_with(": Permission denied (os error 13)")
                && l.contains(&ws.join("src/home").display().to_string()),
            "{l}"
        );
    }
    let l = err("target");
    assert_eq!(
        l,
        format!(
            "ERROR target: {}: Permission denied (os error 13)",
            ws.join("out").display()
        )
    );
    assert_eq!(out.status.code(), Some(3), "{got:#?}");
}
