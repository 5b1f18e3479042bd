//! Dovecot 2.4.1 (Debian 13 root, `crate::d24`): its configuration files, its variables and
//! its attachments, with the fidelity round trips run against 2.4's doveadm as `fidelity.rs`,
//! `dbox.rs`, `incremental.rs` and `live_restore.rs` run them against 2.3's, and archives
//! moved between the two versions. Every comparison is of what doveadm reports
//! (`Dovecot::snapshot`) before and after.
//!
//! maildump runs inside the root ([`Scratch::maildump`]) where a 2.4 server would run it:
//! `--config` is then read through 2.4's doveconf. The host's maildump (2.3's doveconf, which
//! refuses 2.4 files) reads the same stores by their host paths.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use crate::d24::{EXT_ATTACHMENTS, Scratch};
use crate::dovecot::{Dovecot, attachment_message, message, pseudo_random_bytes};
use crate::util::{assert_text_eq, files_under, maildump, report, run, run_ok};

/// A path of the scratch dir as maildump inside the root sees it.
fn inner(s: &Scratch, p: &Path) -> String {
    s.inner(p).to_string_lossy().into_owned()
}

/// Runs `cmd` and panics unless it exits with `code`; returns stderr.
fn expect_code(cmd: &mut Command, code: i32) -> String {
    let out = run(cmd);
    assert_eq!(
        out.status.code(),
        Some(code),
        "expected exit code {code}\n{}",
        report(cmd, &out)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `maildump backup --config CONF --all-users -o ARCHIVE [extra]`, inside the root.
fn backup24(s: &Scratch, dc: &Dovecot, archive: &Path, extra: &[&str]) -> Output {
    let mut cmd = s.maildump();
    cmd.args(["backup", "--config", &inner(s, &dc.conf), "--all-users"])
        .args(extra)
        .args(["-o", &inner(s, archive)]);
    run_ok(&mut cmd)
}

/// `maildump restore ARCHIVES --config CONF --uid-margin 0 [extra]`, inside the root: an
/// exact copy (the UIDNEXT margin has its own tests).
fn restore24(s: &Scratch, dc: &Dovecot, archives: &[&Path], extra: &[&str]) -> Output {
    let mut cmd = s.maildump();
    cmd.arg("restore");
    for a in archives {
        cmd.arg(inner(s, a));
    }
    cmd.args(["--config", &inner(s, &dc.conf), "--uid-margin", "0"])
        .args(extra);
    run_ok(&mut cmd)
}

/// `snapshot(user)` for each user.
fn snapshots(dc: &Dovecot, users: &[&str]) -> Vec<String> {
    users.iter().map(|u| dc.snapshot(u)).collect()
}

/// Each user's snapshot of `dst` equals `want`.
fn assert_snapshots(what: &str, users: &[&str], want: &[String], dst: &Dovecot) {
    for (u, w) in users.iter().zip(want) {
        assert_text_eq(&format!("{what}: user {u}"), w, &dst.snapshot(u));
    }
}

/// `list --json` lines of an archive, sorted (what it holds, independent of order).
fn listing(archive: &Path) -> String {
    let out = run_ok(maildump().arg("list").arg(archive).arg("--json"));
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    lines.join("\n") + "\n"
}

// ---------------------------------------------------------------------------------------------
// Configuration files
// ---------------------------------------------------------------------------------------------

/// A 2.4 configuration split over `!include`d files, as Debian ships it: `dovecot.conf`
/// includes `conf.d/*.conf` (a later file overrides an earlier one) and a file of its own
/// that includes a sibling by a relative path. `base` is the directory as the reader sees
/// it (inside the root for 2.4's tools, the host path for the host's maildump).
fn write_split_config(dir: &Path, base: &Path, extra_mail: &str) {
    let b = base.display();
    let single = crate::d24::config(base, "sdbox:~/sdbox", &[]);
    let (head, rest) = single
        .split_once("mail_driver = sdbox\n")
        .expect("generated config has mail_driver");
    fs::create_dir_all(dir.join("conf.d")).unwrap();
    fs::create_dir_all(dir.join("local")).unwrap();
    fs::write(
        dir.join("dovecot.conf"),
        format!(
            "{head}# the mail settings are in conf.d\n!include conf.d/*.conf\n\
             !include_try {b}/local/site.conf\n!include_try nowhere/*.conf\n"
        ),
    )
    .unwrap();
    fs::write(
        dir.join("conf.d/10-mail.conf"),
        format!("mail_driver = sdbox\n{rest}"),
    )
    .unwrap();
    fs::write(
        dir.join("conf.d/90-override.conf"),
        "mail_driver = maildir\nmail_path = ~/Maildir # later files win\n",
    )
    .unwrap();
    fs::write(dir.join("local/site.conf"), "!include attr.conf\n").unwrap();
    fs::write(
        dir.join("local/attr.conf"),
        format!(
            "mail_attribute {{\n  dict file {{\n    path = \"%{{home}}/dovecot-attributes\"\n  }}\n}}\n{extra_mail}"
        ),
    )
    .unwrap();
}

/// `--config` of a 2.4 file with includes: maildump inside the root reads it through 2.4's
/// doveconf, and by parsing it when there is no doveconf; the host's maildump parses it
/// (2.3's doveconf refuses it). The three backups hold the same messages, the one made through
/// doveconf restores exactly. A setting maildump does not support, and a file doveconf
/// refuses, stop the run with an error naming them (exit 2). Before issue 16 every one of
/// these runs failed with `no mail_location set`.
#[test]
fn config24_read_through_doveconf_and_by_parsing() {
    let s = Scratch::new("config24");
    let src = s.dovecot("src", "maildir:~/Maildir", &[]);
    // Dovecot 2.4 itself reads the split configuration: it builds the store.
    write_split_config(&src.dir, &s.inner(&src.dir), "");
    src.build_rich_store("alice");
    src.build_small_store("bob");
    assert!(
        src.home("alice").join("Maildir/.Work").is_dir(),
        "fixture: 90-override.conf (maildir) wins over 10-mail.conf (sdbox)"
    );
    let users = ["alice", "bob"];
    let before = snapshots(&src, &users);

    let by_doveconf = s.join("doveconf.mdump");
    backup24(&s, &src, &by_doveconf, &[]);
    let by_parser = s.join("parser.mdump");
    let mut cmd = s.maildump_without_doveconf();
    cmd.args(["backup", "--config", &inner(&s, &src.conf), "--all-users"])
        .args(["-o", &inner(&s, &by_parser)]);
    run_ok(&mut cmd);
    // The host reads the same store through a twin of the files with host paths.
    let twin = s.join("host-conf");
    write_split_config(&twin, &src.dir, "");
    let by_host = s.join("host.mdump");
    run_ok(
        maildump()
            .args(["backup", "--config"])
            .arg(twin.join("dovecot.conf"))
            .args(["--all-users", "-o"])
            .arg(&by_host),
    );
    let want = listing(&by_doveconf);
    assert!(want.contains("\"Work/Sub\""), "fixture: {want}");
    assert_text_eq(
        "list: no doveconf vs 2.4 doveconf",
        &want,
        &listing(&by_parser),
    );
    assert_text_eq(
        "list: host (2.3 doveconf) vs 2.4 doveconf",
        &want,
        &listing(&by_host),
    );

    let dst = s.dovecot("dst", "maildir:~/Maildir", &[]);
    write_split_config(&dst.dir, &s.inner(&dst.dir), "");
    restore24(&s, &dst, &[&by_doveconf], &[]);
    assert_snapshots("2.4 --config backup and restore", &users, &before, &dst);

    // Unsupported: named, with its file and line, through doveconf and by parsing.
    let bad = s.join("bad");
    write_split_config(&bad, &s.inner(&bad), "mail_index_path = /srv/idx/%{user}\n");
    let conf = inner(&s, &bad.join("dovecot.conf"));
    let attr = format!("{}/local/attr.conf line 6", inner(&s, &bad));
    for mut cmd in [s.maildump(), s.maildump_without_doveconf()] {
        cmd.args([
            "backup",
            "--config",
            &conf,
            "--all-users",
            "-o",
            "/dev/null",
        ]);
        let err = expect_code(&mut cmd, 2);
        assert!(
            err.contains("mail_index_path") && err.contains(&attr),
            "{err}"
        );
    }
    // A file 2.4's doveconf refuses: its own words.
    fs::write(bad.join("local/attr.conf"), "mail_pathh = /x\n").unwrap();
    let mut cmd = s.maildump();
    cmd.args([
        "backup",
        "--config",
        &conf,
        "--all-users",
        "-o",
        "/dev/null",
    ]);
    let err = expect_code(&mut cmd, 2);
    assert!(
        err.contains("doveconf refuses it") && err.contains("mail_pathh"),
        "{err}"
    );
}

/// 2.4 variables in `--home` (the issue's `%{user}` failed with `must be exactly %u, %n or
/// %d`) and in `mail_home`, with `--all-users` listing the directories at the user
/// positions: users `name@domain` under `home/<domain>/<name>`.
#[test]
fn home_templates_with_dovecot24_variables() {
    let s = Scratch::new("home24");
    let src = s.dovecot("src", "maildir:~/Maildir", &[]);
    let inner_home = format!(
        "{}/home/%{{user | domain}}/%{{user | username | lower}}",
        inner(&s, &src.dir)
    );
    let conf = fs::read_to_string(&src.conf).unwrap();
    let conf = conf.replace(
        &format!("mail_home = {}/home/%{{user}}", inner(&s, &src.dir)),
        &format!("mail_home = {inner_home}"),
    );
    assert!(conf.contains("%{user | domain}"));
    fs::write(&src.conf, conf).unwrap();
    let users = ["alice@example.org", "bob@example.net"];
    for (n, u) in users.iter().enumerate() {
        let out = src.save(u, "INBOX", &message(u, n as u32 + 1, "hello", "body\n"));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    src.fix_ownership();
    assert!(src.home_root.join("example.org/alice/Maildir").is_dir());
    let before = snapshots(&src, &users);

    // Host maildump, --location and 2.4 variables in --home.
    let host_home = format!(
        "{}/%{{user | domain}}/%{{user | username}}",
        src.home_root.display()
    );
    let a = s.join("cli.mdump");
    run_ok(
        maildump()
            .args([
                "backup",
                "--location",
                "maildir:%{home}/Maildir",
                "--home",
                &host_home,
            ])
            .args(["--all-users", "-o"])
            .arg(&a),
    );
    let listed = listing(&a);
    for u in users {
        assert!(
            listed.contains(&format!("\"user\":\"{u}\"")),
            "{u} not in\n{listed}"
        );
    }
    // --config inside the root: mail_home's variables.
    let b = s.join("conf.mdump");
    backup24(&s, &src, &b, &[]);
    assert_text_eq("list: --config vs --home", &listed, &listing(&b));
    let dst = s.dovecot("dst", "maildir:~/Maildir", &[]);
    fs::write(
        &dst.conf,
        fs::read_to_string(&dst.conf).unwrap().replace(
            "/home/%{user}",
            "/home/%{user | domain}/%{user | username | lower}",
        ),
    )
    .unwrap();
    restore24(&s, &dst, &[&b], &[]);
    assert!(dst.home_root.join("example.net/bob/Maildir").is_dir());
    assert_snapshots(
        "restore with mail_home of 2.4 variables",
        &users,
        &before,
        &dst,
    );
}

// ---------------------------------------------------------------------------------------------
// Round trips through 2.4
// ---------------------------------------------------------------------------------------------

/// Maildir: rich and small stores backed up with `--config` of a 2.4 file and restored with
/// `--config` into a new 2.4 store: identical listings. Then into the host's Dovecot 2.3
/// (a 2.4-made archive in 2.3): identical listings there too.
fn maildir_roundtrip24(location: &str) {
    let s = Scratch::new("maildir24");
    let src = s.dovecot("src", location, &[]);
    src.build_rich_store("alice");
    src.build_small_store("bob");
    let users = ["alice", "bob"];
    let before = snapshots(&src, &users);
    let a = s.join("a.mdump");
    backup24(&s, &src, &a, &[]);
    run_ok(maildump().arg("verify").arg(&a));
    let dst = s.dovecot("dst", location, &[]);
    restore24(&s, &dst, &[&a], &[]);
    assert_snapshots(&format!("[{location}] 2.4 -> 2.4"), &users, &before, &dst);
    let ws = crate::util::Workspace::new();
    let d23 = Dovecot::new(&ws.join("d23"), location);
    run_ok(&mut d23.restore_cmd(&[&a]));
    assert_snapshots(&format!("[{location}] 2.4 -> 2.3"), &users, &before, &d23);
}

#[test]
fn maildir_roundtrip24_maildir_plusplus() {
    maildir_roundtrip24("maildir:~/Maildir");
}

#[test]
fn maildir_roundtrip24_layout_fs_utf8() {
    maildir_roundtrip24("maildir:~/Maildir:LAYOUT=fs:UTF-8");
}

/// Attachment files below `home/attachments`, as paths relative to it.
fn attachment_files(home: &Path) -> Vec<String> {
    let base = home.join("attachments");
    let mut v: Vec<String> = files_under(&base)
        .iter()
        .map(|p| {
            p.strip_prefix(&base)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    v.sort();
    v
}

/// 2.4's attachment layout: `xx/yy/<sha1>-<guid>` (mdbox) or
/// `xx/yy/<sha1>-<guid>-<mailbox guid>-<uid>` (sdbox), no `hashes/`; returns the files.
fn assert_layout24(home: &Path, sdbox: bool) -> Vec<String> {
    let files = attachment_files(home);
    assert!(!files.is_empty(), "no attachments under {}", home.display());
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    for f in &files {
        let c: Vec<&str> = f.split('/').collect();
        let name: Vec<&str> = c.last().unwrap().split('-').collect();
        let ok = c.len() == 3
            && name
                .first()
                .is_some_and(|h| hex(h, 40) && h[..2] == *c[0] && h[2..4] == *c[1])
            && name.get(1).is_some_and(|g| hex(g, 32))
            && if sdbox {
                name.len() == 4 && hex(name[2], 32) && name[3].bytes().all(|b| b.is_ascii_digit())
            } else {
                name.len() == 2
            };
        assert!(ok, "not 2.4's attachment layout: {f} (all: {files:#?})");
    }
    files
}

/// The same later life on two stores: Dovecot 2.4 expunges a message with an attachment
/// (and `purge` drops its file), imports a new one with attachments, changes flags and
/// rebuilds the indexes. Deterministic: the same GUIDs, dates and UIDs on both.
fn later_life(dc: &Dovecot, user: &str) {
    dc.doveadm(user, &["expunge", "mailbox", "INBOX", "uid", "4"]);
    dc.doveadm(user, &["purge"]);
    let a = pseudo_random_bytes(0x24_24, 2500);
    let msg = attachment_message(user, 40, "After the restore", &[("new.bin", &a)]);
    dc.import(user, &[("Work", 1_700_000_000, "S", msg)]);
    dc.set_flags(user, &[("add", "\\Flagged later", "INBOX", "5")]);
    dc.doveadm(user, &["force-resync", "*"]);
}

/// A dbox store with 2.4's external attachments: backed up with `--config`, restored into
/// 2.4 with its attachment layout (no `hashes/`, the same file names), used by 2.4
/// afterwards like the source; restored inline (`--inline-attachments`) into a 2.4 store
/// without attachment storage; restored into the host's 2.3 with `hashes/` links.
fn dbox_attachments24(location: &str, extra: &[&str]) {
    let sdbox = location.starts_with("sdbox");
    let s = Scratch::new("dbox24");
    let mut conf = EXT_ATTACHMENTS.to_vec();
    conf.extend_from_slice(extra);
    let src = s.dovecot("src", location, &conf);
    src.build_dbox_store("alice");
    let users = ["alice"];
    let before = snapshots(&src, &users);
    let src_files = assert_layout24(&src.home("alice"), sdbox);

    let a = s.join("a.mdump");
    backup24(&s, &src, &a, &[]);
    run_ok(maildump().arg("verify").arg(&a));
    let plain = location.split(":ALT=").next().unwrap();
    let dst = s.dovecot("dst", plain, &conf);
    restore24(&s, &dst, &[&a], &[]);
    assert_snapshots(&format!("[{location}] 2.4 -> 2.4"), &users, &before, &dst);
    let dst_files = assert_layout24(&dst.home("alice"), sdbox);
    // The same names (the archive keeps Dovecot's); mdbox keeps the files of expunged,
    // not yet purged messages, which no backup holds.
    if sdbox {
        assert_eq!(
            src_files, dst_files,
            "attachment files of the restored store"
        );
    } else {
        let extra: Vec<&String> = dst_files
            .iter()
            .filter(|f| !src_files.contains(f))
            .collect();
        assert!(
            extra.is_empty() && dst_files.len() + 1 == src_files.len(),
            "attachment files: {src_files:#?} -> {dst_files:#?}"
        );
    }
    later_life(&src, "alice");
    later_life(&dst, "alice");
    assert_snapshots(
        &format!("[{location}] the same later life in the source and the restored store"),
        &users,
        &snapshots(&src, &users),
        &dst,
    );

    let inline = s.dovecot("inline", plain, extra);
    restore24(&s, &inline, &[&a], &["--inline-attachments"]);
    assert_snapshots(
        &format!("[{location}] 2.4 -> 2.4 inline"),
        &users,
        &before,
        &inline,
    );
    assert!(!inline.home("alice").join("attachments").exists());

    let ws = crate::util::Workspace::new();
    let mut sis = vec![
        "mail_attachment_dir = ~/attachments",
        "mail_attachment_min_size = 1k",
    ];
    sis.extend_from_slice(extra);
    let d23 = Dovecot::with_extra(&ws.join("d23"), plain, &sis);
    run_ok(
        d23.restore_cmd(&[&a])
            .args(["--attachment-dir", "~/attachments"]),
    );
    assert_snapshots(&format!("[{location}] 2.4 -> 2.3"), &users, &before, &d23);
    assert!(
        attachment_files(&d23.home("alice"))
            .iter()
            .any(|f| f.contains("/hashes/")),
        "a 2.3 target gets its hashes/ links"
    );
}

#[test]
fn sdbox_external_attachments24() {
    dbox_attachments24("sdbox:~/sdbox", &[]);
}

#[test]
fn mdbox_external_attachments_alt24() {
    dbox_attachments24("mdbox:~/mdbox:ALT=~/altstore", &["mdbox_rotate_size = 4k"]);
}

// ---------------------------------------------------------------------------------------------
// Incremental chain, live merge
// ---------------------------------------------------------------------------------------------

/// A full backup and two incrementals of a 2.4 sdbox store with external attachments that
/// changes between them (new mail with attachments, flags and keywords, expunges, a move, a
/// rename, a copy, METADATA): the chain restored into a new 2.4 store lists exactly as the
/// live store; each incremental holds only what changed (no attachment stored twice).
#[test]
fn incremental_chain24() {
    let s = Scratch::new("chain24");
    let src = s.dovecot("src", "sdbox:~/sdbox", &EXT_ATTACHMENTS);
    src.build_dbox_store("alice");
    let users = ["alice"];
    let full = s.join("full.mdump");
    backup24(&s, &src, &full, &[]);

    let shared = crate::dovecot::shared_attachment();
    let fresh = pseudo_random_bytes(0xC4A1, 1800);
    src.import(
        "alice",
        &[
            (
                "INBOX",
                1_610_000_000,
                "",
                attachment_message("alice", 50, "again", &[("a.bin", &shared)]),
            ),
            (
                "Work",
                1_610_000_100,
                "F",
                attachment_message("alice", 51, "fresh", &[("f.bin", &fresh)]),
            ),
        ],
    );
    src.set_flags(
        "alice",
        &[
            ("add", "\\Answered kw24", "INBOX", "1"),
            ("remove", "\\Seen", "INBOX", "6"),
        ],
    );
    src.doveadm("alice", &["expunge", "mailbox", "INBOX", "uid", "4"]);
    src.doveadm("alice", &["move", "Drafts", "mailbox", "Work", "uid", "2"]);
    src.doveadm("alice", &["mailbox", "rename", "Été", "Summer"]);
    let inc1 = s.join("inc1.mdump");
    backup24(&s, &src, &inc1, &["--base", &inner(&s, &full)]);

    src.doveadm("alice", &["copy", "Archive", "mailbox", "Work", "uid", "4"]);
    src.doveadm("alice", &["expunge", "mailbox", "INBOX", "uid", "5"]);
    src.set_metadata(
        "alice",
        &[(Some("Summer"), "/private/comment", "renamed in 2.4")],
    );
    let inc2 = s.join("inc2.mdump");
    backup24(&s, &src, &inc2, &["--base", &inner(&s, &inc1)]);
    let live = snapshots(&src, &users);

    // The incrementals store the new attachment once and the shared one not again.
    let members = |a: &Path| -> Vec<String> {
        let out = run_ok(Command::new("tar").arg("--zstd").arg("-tf").arg(a));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    };
    let blobs = |a: &Path| {
        members(a)
            .into_iter()
            .filter(|m| m.contains("blobs/"))
            .count()
    };
    assert_eq!(
        blobs(&inc1),
        1,
        "inc1 holds the new attachment only: {:#?}",
        members(&inc1)
    );
    assert_eq!(
        blobs(&inc2),
        0,
        "inc2 holds no attachment: {:#?}",
        members(&inc2)
    );

    let dst = s.dovecot("dst", "sdbox:~/sdbox", &EXT_ATTACHMENTS);
    restore24(&s, &dst, &[&full, &inc1, &inc2], &[]);
    assert_snapshots(
        "2.4 chain FULL INC1 INC2 vs live store",
        &users,
        &live,
        &dst,
    );
    assert_layout24(&dst.home("alice"), true);
}

/// `--mode merge` into the live 2.4 Maildir after a user lost mail and a folder: the
/// messages come back (same GUIDs, flags, dates and bytes, new UIDs above the mailbox's
/// UIDNEXT, UIDVALIDITY unchanged), mail delivered meanwhile is untouched, and a second run
/// adds nothing.
#[test]
fn live_merge_restore24() {
    let s = Scratch::new("merge24");
    let dc = s.dovecot("live", "maildir:~/Maildir", &[]);
    dc.build_rich_store("alice");
    let before = dc.snapshot("alice");
    let a = s.join("a.mdump");
    backup24(&s, &dc, &a, &[]);

    dc.doveadm("alice", &["expunge", "mailbox", "INBOX", "uid", "1,2"]);
    dc.doveadm("alice", &["mailbox", "delete", "R&D"]);
    let out = dc.save(
        "alice",
        "INBOX",
        &message("alice", 60, "delivered meanwhile", "new\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let damaged = dc.snapshot("alice");

    let merge = |what: &str| {
        let mut cmd = s.maildump();
        cmd.args(["restore", &inner(&s, &a), "--config", &inner(&s, &dc.conf)])
            .args(["--user", "alice", "--mode", "merge"]);
        let out = run_ok(&mut cmd);
        eprintln!("[{what}] {}", String::from_utf8_lossy(&out.stderr));
        dc.snapshot("alice")
    };
    let after = merge("first merge");
    // Every message of the backup is there again, whatever its UID now.
    let key = |l: &str| -> String {
        let f: Vec<&str> = l.split('\t').collect();
        format!("{}\t{}", f[1], f[3..].join("\t"))
    };
    let msgs = |snap: &str| -> Vec<String> {
        let mut v: Vec<String> = snap
            .lines()
            .filter(|l| l.starts_with("msg\t"))
            .map(key)
            .collect();
        v.sort();
        v
    };
    let now = msgs(&after);
    for m in msgs(&before) {
        assert!(now.contains(&m), "not restored: {m}\nafter merge:\n{after}");
    }
    assert!(after.contains("delivered meanwhile") || now.len() == msgs(&before).len() + 1);
    let field = |snap: &str, mb: &str, k: &str| -> u64 {
        let l = snap
            .lines()
            .find(|l| l.starts_with(&format!("status\t{mb}\t")))
            .unwrap_or_else(|| panic!("no status of {mb} in\n{snap}"));
        l.split('\t')
            .find_map(|f| f.strip_prefix(&format!("{k}=")))
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(
        field(&damaged, "INBOX", "uidvalidity"),
        field(&after, "INBOX", "uidvalidity"),
        "merge keeps UIDVALIDITY"
    );
    let next = field(&damaged, "INBOX", "uidnext");
    for l in after.lines().filter(|l| l.starts_with("msg\tINBOX\t")) {
        let uid: u64 = l
            .split('\t')
            .nth(2)
            .unwrap()
            .trim_start_matches("uid=")
            .parse()
            .unwrap();
        let was = damaged.lines().any(|d| d == l);
        assert!(
            was || uid >= next,
            "restored INBOX message below UIDNEXT {next}: {l}"
        );
    }
    assert_eq!(
        field(&after, "R&D", "messages"),
        2,
        "R&D is back with its mail"
    );
    assert_text_eq(
        "a second merge adds nothing",
        &after,
        &merge("second merge"),
    );
}

// ---------------------------------------------------------------------------------------------
// Between versions
// ---------------------------------------------------------------------------------------------

/// The README's migration story, as commands: on the old 2.3 server, `maildump backup
/// --config /etc/dovecot/dovecot.conf --all-users -o mail.mdump`; on the new 2.4 server, `maildump
/// restore mail.mdump --config /etc/dovecot/dovecot.conf`. The 2.4 doveadm lists every user
/// as the 2.3 doveadm did.
#[test]
fn migration_23_to_24_maildir() {
    let ws = crate::util::Workspace::new();
    let old = Dovecot::with_extra(
        &ws.join("old"),
        "maildir:~/Maildir",
        &[&format!("mail_home = {}/home/%u", ws.join("old").display())],
    );
    old.build_rich_store("alice");
    old.build_small_store("bob");
    let users = ["alice", "bob"];
    let before = snapshots(&old, &users);
    let s = Scratch::new("migrate24");
    let archive = s.join("mail.mdump");
    run_ok(
        maildump()
            .args(["backup", "--config"])
            .arg(&old.conf)
            .args(["--all-users", "-o"])
            .arg(&archive),
    );
    run_ok(maildump().arg("verify").arg(&archive));
    let new = s.dovecot("new", "maildir:~/Maildir", &[]);
    let mut cmd = s.maildump();
    cmd.args([
        "restore",
        &inner(&s, &archive),
        "--config",
        &inner(&s, &new.conf),
    ]);
    run_ok(&mut cmd);
    // The default --uid-margin: UIDNEXT 100000 above the archive's, for the IMAP clients
    // that knew the old server (README, "UIDs and modseqs after a restore").
    let want: Vec<String> = before.iter().map(|s| uidnext_plus(s, 100_000)).collect();
    assert_snapshots("2.3 server -> 2.4 server", &users, &want, &new);
}

/// `snapshot` with every mailbox's UIDNEXT raised by `margin`.
fn uidnext_plus(snapshot: &str, margin: u64) -> String {
    let mut out = String::new();
    for l in snapshot.lines() {
        let line = match l.split('\t').find_map(|f| f.strip_prefix("uidnext=")) {
            Some(n) if l.starts_with("status\t") => {
                let n: u64 = n.parse().expect("numeric uidnext");
                l.replace(
                    &format!("\tuidnext={n}\t"),
                    &format!("\tuidnext={}\t", n + margin),
                )
            }
            _ => l.to_string(),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// A 2.3 dbox store with single-instance attachments (`hashes/` links) restored into 2.4
/// with `--config`: 2.4's attachment layout (no `hashes/`), identical listings, and 2.4
/// keeps using the store as it uses a second restore of the same archive.
fn sis_from_23_into_24(location: &str, extra: &[&str]) {
    let ws = crate::util::Workspace::new();
    let mut sis = vec![
        "mail_attachment_dir = ~/attachments",
        "mail_attachment_min_size = 1k",
    ];
    sis.extend_from_slice(extra);
    let old = Dovecot::with_extra(&ws.join("old"), location, &sis);
    old.build_dbox_store("alice");
    assert!(
        attachment_files(&old.home("alice"))
            .iter()
            .any(|f| f.contains("/hashes/")),
        "fixture: 2.3 links its attachments from hashes/"
    );
    let users = ["alice"];
    let before = snapshots(&old, &users);
    let s = Scratch::new("sis23to24");
    let archive = s.join("mail.mdump");
    run_ok(
        maildump()
            .args([
                "backup",
                "--location",
                location,
                "--home",
                &old.home_template(),
            ])
            .args(["--attachment-dir", "~/attachments", "--all-users", "-o"])
            .arg(&archive),
    );
    let plain = location.split(":ALT=").next().unwrap();
    let mut conf = EXT_ATTACHMENTS.to_vec();
    conf.extend_from_slice(extra);
    let new = s.dovecot("new", plain, &conf);
    restore24(&s, &new, &[&archive], &[]);
    assert_snapshots(
        &format!("[{location}] 2.3 + SIS -> 2.4 + mail_ext_attachment"),
        &users,
        &before,
        &new,
    );
    assert_layout24(&new.home("alice"), plain.starts_with("sdbox"));
    let twin = s.dovecot("twin", plain, &conf);
    restore24(&s, &twin, &[&archive], &[]);
    later_life(&new, "alice");
    later_life(&twin, "alice");
    assert_snapshots(
        "the same later life in two 2.4 restores",
        &users,
        &snapshots(&twin, &users),
        &new,
    );
}

#[test]
fn sdbox_sis_from_23_into_24() {
    sis_from_23_into_24("sdbox:~/sdbox", &[]);
}

#[test]
fn mdbox_sis_alt_from_23_into_24() {
    sis_from_23_into_24("mdbox:~/mdbox:ALT=~/altstore", &["mdbox_rotate_size = 4k"]);
}

// ---------------------------------------------------------------------------------------------
// IMAP
// ---------------------------------------------------------------------------------------------

/// A Dovecot 2.4 imap server on a store restored into 2.4: an IMAP client (Python's
/// imaplib) sees the UIDVALIDITY, UIDNEXT, UIDs and flags doveadm listed, and an APPEND
/// gets the next UID under the same UIDVALIDITY. After the server stops, nothing listens.
#[test]
fn imap24_serves_a_restored_store() {
    let s = Scratch::new("imap24");
    let src = s.dovecot("src", "maildir:~/Maildir", &[]);
    src.build_small_store("alice");
    let a = s.join("a.mdump");
    backup24(&s, &src, &a, &[]);
    let dst = s.dovecot("dst", "maildir:~/Maildir", &[]);
    restore24(&s, &dst, &[&a], &[]);
    let snap = dst.snapshot("alice");
    let script = s.join("client.py");
    fs::write(&script, crate::imap::CLIENT).unwrap();
    let mut server = crate::d24::Imap24::start(&s, &dst);
    let client = |args: &[&str]| -> serde_json::Value {
        let mut cmd = Command::new("python3");
        cmd.arg(&script).arg(server.port.to_string()).args(args);
        let out = run_ok(&mut cmd);
        serde_json::from_slice(&out.stdout).expect("client JSON")
    };
    let state = client(&["state"]);
    let status = snap
        .lines()
        .find(|l| l.starts_with("status\tINBOX\t"))
        .expect("INBOX status");
    let field = |k: &str| -> u64 {
        status
            .split('\t')
            .find_map(|f| f.strip_prefix(&format!("{k}=")))
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(state["uidvalidity"], field("uidvalidity"), "{state}");
    assert_eq!(state["uidnext"], field("uidnext"), "{state}");
    let mut seen = Vec::new();
    for m in state["fetch"].as_array().expect("fetch list") {
        let flags: Vec<&str> = m["flags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap())
            .collect();
        seen.push(format!("uid={}\tflags={}", m["uid"], flags.join(" ")));
    }
    let mut want: Vec<String> = snap
        .lines()
        .filter(|l| l.starts_with("msg\tINBOX\t"))
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            format!("{}\t{}", f[2], f[4])
        })
        .collect();
    want.sort();
    seen.sort();
    assert_eq!(seen, want, "IMAP FETCH vs doveadm");
    let appended = client(&["append", "1"]);
    assert_eq!(
        appended["appenduid"],
        serde_json::json!([field("uidvalidity"), field("uidnext")]),
        "APPENDUID"
    );
    let port = server.port;
    server.stop();
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port {port} still accepts connections after the server stopped"
    );
}
