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

/// Unmounts a tmpfs when dropped.
struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A target without room for the estimate: `ERROR space`, exit 3.
#[test]
fn selfcheck_names_a_target_without_room_for_the_backup() {
    assert!(is_root(), "this test mounts a tmpfs: run the suite as root");
    let ws = Workspace::new();
    let src = Dovecot::new(&ws.join("src"), "");
    let body = crate::dovecot::base64_lines(&crate::dovecot::pseudo_random_bytes(7, 200_000));
    src.save(
        "alice",
        "INBOX",
        &crate::dovecot::message("alice", 1, "big", &body),
    );
    let small = ws.join("small");
    fs::create_dir(&small).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&small)
        .status()
        .unwrap();
    assert!(st.success(), "mount a 64 KiB tmpfs");
    let _mounted = Tmpfs(small.clone());
    let out = maildump()
        .args(["selfcheck", "--location", &src.location, "--home"])
        .arg(src.home_template())
        .args(["--user", "alice", "-o"])
        .arg(small.join("mail.mdump"))
        .output()
        .unwrap();
    let got = lines(&out);
    let space = got
        .iter()
        .find(|l| l.starts_with("ERROR space: "))
        .unwrap_or_else(|| panic!("{got:#?}"));
    assert!(
        space.starts_with(&format!("ERROR space: {}: ", small.display()))
            && space.contains(" bytes free, the backup writes about "),
        "{space}"
    );
    assert!(got.iter().any(|l| l.starts_with("OK target ")), "{got:#?}");
    assert_eq!(out.status.code(), Some(3), "{got:#?}");
}
