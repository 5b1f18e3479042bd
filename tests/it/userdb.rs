//! `--all-users` with `--config` asks Dovecot's userdb (a passwd-file here, read directly,
//! as `doveadm -A` iterates it): a user whose home the userdb puts elsewhere is backed up,
//! a directory under the home root that is no user is not, and a userdb user without mail
//! yet is named. A restore with `--config` puts that user back in her userdb home.

use std::fs;

use crate::dovecot::Dovecot;
use crate::util::{Workspace, maildump, run_ok};

/// `maildump list` lines of `user` (no header lines).
fn lines_of(archive: &std::path::Path, user: &str) -> Vec<String> {
    let out = run_ok(maildump().arg("list").arg(archive).args(["--user", user]));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with(';'))
        .map(String::from)
        .collect()
}

#[test]
fn all_users_come_from_the_userdb() {
    let ws = Workspace::new();
    let users_file = ws.join("users");
    let dc = Dovecot::with_extra(
        &ws.join("dc"),
        "maildir:~/Maildir",
        &[&format!(
            "userdb {{\n  driver = passwd-file\n  args = username_format=%u {}\n}}",
            users_file.display()
        )],
    );
    dc.build_small_store("alice");
    dc.build_small_store("carol");
    let template = dc.home_template();
    let before = ws.join("before.mdump");
    run_ok(
        maildump()
            .args([
                "backup",
                "--location",
                "maildir:~/Maildir",
                "--home",
                &template,
            ])
            .args(["--user", "carol", "--quiet", "-o"])
            .arg(&before),
    );
    // carol's home moves out of the template's reach; a stray store-like directory appears.
    let elsewhere = ws.join("elsewhere/carol");
    fs::create_dir_all(elsewhere.parent().unwrap()).unwrap();
    fs::rename(dc.home("carol"), &elsewhere).unwrap();
    fs::create_dir_all(dc.home_root.join("lost+found/Maildir/cur")).unwrap();
    fs::write(
        &users_file,
        format!(
            "alice:{{PLAIN}}a:::::\ncarol:{{PLAIN}}c::::{}::\ndave:{{PLAIN}}d:::::\n",
            elsewhere.display()
        ),
    )
    .unwrap();
    let all = ws.join("all.mdump");
    let out = run_ok(
        maildump()
            .args(["backup", "--config"])
            .arg(&dc.conf)
            .args(["--home", &template, "--all-users", "-o"])
            .arg(&all),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("1 users of the userdb have no mail store yet (nothing to back up): dave"),
        "{err}"
    );
    assert!(err.contains("backed up 2 users"), "{err}");
    // estimate takes the same users as the backup (the userdb's, not the template scan's).
    let est = run_ok(
        maildump()
            .args(["estimate", "--config"])
            .arg(&dc.conf)
            .args(["--home", &template, "--all-users", "--json"]),
    );
    let est: serde_json::Value = serde_json::from_slice(&est.stdout).unwrap();
    assert_eq!(est["users"], 2, "{est}");
    let mailboxes = format!("backed up 2 users, {} mailboxes,", est["mailboxes"]);
    assert!(err.contains(&mailboxes), "{mailboxes} / {err}");
    assert_eq!(lines_of(&all, "carol"), lines_of(&before, "carol"));
    assert!(!lines_of(&all, "alice").is_empty());
    let o = maildump()
        .arg("list")
        .arg(&all)
        .args(["--user", "lost+found"])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(8),
        "lost+found is no user of the userdb"
    );

    // Restored with the same config, carol's mail goes back to her userdb home.
    fs::remove_dir_all(&elsewhere).unwrap();
    run_ok(
        maildump()
            .arg("restore")
            .arg(&all)
            .args(["--config"])
            .arg(&dc.conf)
            .args(["--home", &template, "--user", "carol", "--quiet"]),
    );
    assert!(elsewhere.join("Maildir/cur").is_dir());
    assert!(!dc.home("carol").exists(), "not into the template's home");
    let again = ws.join("again.mdump");
    run_ok(
        maildump()
            .args(["backup", "--config"])
            .arg(&dc.conf)
            .args(["--home", &template, "--user", "carol", "--quiet", "-o"])
            .arg(&again),
    );
    assert_eq!(lines_of(&again, "carol"), lines_of(&before, "carol"));
}
