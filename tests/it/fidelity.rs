//! Round-trip fidelity against a real (daemon-less) Dovecot: build stores
//! with doveadm, back them up with `maildump`, restore into fresh homes and
//! compare what Dovecot reports before and after (see `Dovecot::snapshot`).

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use crate::dovecot::{Dovecot, filter_snapshot};
use crate::util::{
    Workspace, assert_text_eq, copy_dir, maildump, report, run, run_expect_code, run_ok,
    tree_listing,
};

/// Exit code of `maildump restore` when a target mailbox exists and holds mail.
const EXIT_TARGET_NOT_EMPTY: i32 = 6;

/// `maildump backup --location LOC --home TEMPLATE --all-users -o ARCHIVE`.
fn backup_all(src: &Dovecot, archive: &Path) {
    run_ok(
        maildump()
            .args([
                "backup",
                "--location",
                &src.location,
                "--home",
                &src.home_template(),
                "--all-users",
                "-o",
            ])
            .arg(archive),
    );
}

/// Full backup + restore of two rich users for one maildir flavour.
fn roundtrip(suffix: &str) {
    let ws = Workspace::new();
    let src = Dovecot::new(&ws.join("src"), suffix);
    let users = ["alice", "bob"];
    for u in users {
        src.build_rich_store(u);
    }
    let before: Vec<String> = users.iter().map(|u| src.snapshot(u)).collect();
    let tree_before = tree_listing(&src.home_root);

    let archive = ws.join("a.mdump");
    backup_all(&src, &archive);
    assert_text_eq(
        &format!(
            "[{}] source homes after backup (backup must not modify the store)",
            src.location
        ),
        &tree_before,
        &tree_listing(&src.home_root),
    );
    run_ok(maildump().arg("verify").arg(&archive));

    let dst = Dovecot::new(&ws.join("dst"), suffix);
    run_ok(&mut dst.restore_cmd(&[&archive]));
    assert_eq!(dst.users(), users, "[{}] restored homes", dst.location);
    for (u, b) in users.iter().zip(&before) {
        assert_text_eq(
            &format!(
                "[{}] user {u}: Dovecot snapshot after restore",
                dst.location
            ),
            b,
            &dst.snapshot(u),
        );
    }
}

#[test]
fn roundtrip_maildir_plusplus() {
    roundtrip("");
}

#[test]
fn roundtrip_maildir_layout_fs() {
    roundtrip(":LAYOUT=fs");
}

#[test]
fn roundtrip_maildir_utf8() {
    roundtrip(":UTF-8");
}

/// `--user alice --to-user carol` restores only alice, as carol, identically.
#[test]
fn restore_one_user_as_another() {
    let ws = Workspace::new();
    let src = Dovecot::new(&ws.join("src"), "");
    src.build_rich_store("alice");
    src.build_small_store("bob");
    let alice = src.snapshot("alice");
    let archive = ws.join("a.mdump");
    backup_all(&src, &archive);

    let dst = Dovecot::new(&ws.join("dst"), "");
    run_ok(
        dst.restore_cmd(&[&archive])
            .args(["--user", "alice", "--to-user", "carol"]),
    );
    assert_eq!(dst.users(), ["carol"], "only carol's home may be created");
    assert_text_eq(
        "carol (restored from alice) vs alice",
        &alice,
        &dst.snapshot("carol"),
    );
}

/// `--mailbox Work/Sub` into an empty location: that mailbox is identical
/// (status, UIDs, flags, dates, bodies, METADATA) and no other mail appears.
#[test]
fn restore_single_mailbox() {
    let ws = Workspace::new();
    let src = Dovecot::new(&ws.join("src"), ":LAYOUT=fs");
    src.build_rich_store("alice");
    let want = src.snapshot_mailbox("alice", "Work/Sub");
    assert!(
        want.contains("msg\tWork/Sub\t"),
        "fixture sanity: Work/Sub has mail:\n{want}"
    );
    let archive = ws.join("a.mdump");
    backup_all(&src, &archive);

    let dst = Dovecot::new(&ws.join("dst"), ":LAYOUT=fs");
    run_ok(
        dst.restore_cmd(&[&archive])
            .args(["--user", "alice", "--mailbox", "Work/Sub"]),
    );
    assert_eq!(dst.users(), ["alice"]);
    let got_all = dst.snapshot("alice");
    assert_text_eq(
        "Work/Sub after single-mailbox restore",
        &want,
        &filter_snapshot(&got_all, "Work/Sub"),
    );
    let stray: Vec<&str> = got_all
        .lines()
        .filter(|l| l.starts_with("msg\t") && !l.starts_with("msg\tWork/Sub\t"))
        .collect();
    assert!(
        stray.is_empty(),
        "messages outside Work/Sub were restored:\n{}\n\nfull snapshot:\n{got_all}",
        stray.join("\n")
    );
}

/// `--dry-run` must not create or modify anything in the target.
#[test]
fn restore_dry_run_writes_nothing() {
    let ws = Workspace::new();
    let src = Dovecot::new(&ws.join("src"), "");
    src.build_rich_store("alice");
    let archive = ws.join("a.mdump");
    backup_all(&src, &archive);

    let dst = Dovecot::new(&ws.join("dst"), "");
    let before = tree_listing(&dst.dir);
    run_ok(dst.restore_cmd(&[&archive]).arg("--dry-run"));
    assert_text_eq(
        "target tree after --dry-run",
        &before,
        &tree_listing(&dst.dir),
    );
}

/// A restore onto a mailbox that exists and holds mail is refused with exit
/// code 6, and nothing in the target changes (no partial restore either).
#[test]
fn restore_refuses_non_empty_target() {
    let ws = Workspace::new();
    let src = Dovecot::new(&ws.join("src"), "");
    src.build_rich_store("alice");
    src.build_small_store("bob");
    let archive = ws.join("a.mdump");
    backup_all(&src, &archive);

    let dst = Dovecot::new(&ws.join("dst"), "");
    dst.build_small_store("alice");
    let snap = dst.snapshot("alice");
    let before = tree_listing(&dst.dir);
    let out = run_expect_code(&mut dst.restore_cmd(&[&archive]), EXIT_TARGET_NOT_EMPTY);
    assert!(
        !out.stderr.is_empty(),
        "a refusal should explain itself on stderr"
    );
    assert_text_eq(
        "target tree after refused restore",
        &before,
        &tree_listing(&dst.dir),
    );
    assert_text_eq(
        "target snapshot after refused restore",
        &snap,
        &dst.snapshot("alice"),
    );

    // Same when only the non-empty mailbox is requested (the snapshot above
    // touched Dovecot's index files, so list the tree again).
    let before = tree_listing(&dst.dir);
    run_expect_code(
        dst.restore_cmd(&[&archive])
            .args(["--user", "alice", "--mailbox", "INBOX"]),
        EXIT_TARGET_NOT_EMPTY,
    );
    assert_text_eq(
        "target tree after refused single-mailbox restore",
        &before,
        &tree_listing(&dst.dir),
    );
}

/// `cat` returns exactly the bytes of the mail file Dovecot stores
/// (including a CRLF message, an 8-bit one, a copy and one in `new/`).
#[test]
fn cat_returns_stored_bytes() {
    let ws = Workspace::new();
    let src = Dovecot::new(&ws.join("src"), ":UTF-8");
    src.build_rich_store("alice");
    let archive = ws.join("a.mdump");
    backup_all(&src, &archive);

    let cases = [
        ("INBOX", 1),
        ("INBOX", 6),
        ("INBOX", 7),
        ("INBOX", 9),
        ("Work", 4),
        ("Ünï Box", 2),
        ("R&D", 1),
        ("Archive", 3),
    ];
    for (mailbox, uid) in cases {
        let file = src.message_file("alice", mailbox, uid);
        let want = fs::read(&file).expect("read mail file");
        let mut cmd = maildump();
        cmd.arg("cat").arg(&archive).args([
            "--user",
            "alice",
            "--mailbox",
            mailbox,
            "--uid",
            &uid.to_string(),
        ]);
        let out = run_ok(&mut cmd);
        assert!(
            out.stdout == want,
            "cat {mailbox} uid {uid} differs from {} ({} vs {} bytes)\n--- cat ---\n{}\n--- file ---\n{}",
            file.display(),
            out.stdout.len(),
            want.len(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&want)
        );
    }
    // The CRLF message really is CRLF on disk (sanity of the fixture).
    let crlf = fs::read(src.message_file("alice", "Work", 4)).expect("read crlf file");
    assert!(
        crlf.windows(2).any(|w| w == b"\r\n"),
        "Work uid 4 should be stored with CRLF"
    );

    // --guid selects the same message as --uid.
    let guid = src.doveadm("alice", &["fetch", "guid", "mailbox", "INBOX", "uid", "2"]);
    let guid = guid
        .trim()
        .strip_prefix("guid: ")
        .expect("guid: line")
        .to_string();
    let want = fs::read(src.message_file("alice", "INBOX", 2)).expect("read mail file");
    let out = run_ok(maildump().arg("cat").arg(&archive).args([
        "--user",
        "alice",
        "--mailbox",
        "INBOX",
        "--guid",
        &guid,
    ]));
    assert!(
        out.stdout == want,
        "cat --guid {guid} differs from INBOX uid 2"
    );
}

/// `list --json` reports what Dovecot reports (uid, guid, received, size,
/// flags, keywords, sha256 of the stored bytes).
#[test]
fn list_json_matches_dovecot() {
    let ws = Workspace::new();
    let src = Dovecot::new(&ws.join("src"), "");
    src.build_rich_store("alice");
    let archive = ws.join("a.mdump");
    backup_all(&src, &archive);

    let fetch = src.doveadm(
        "alice",
        &[
            "-f",
            "tab",
            "fetch",
            "mailbox uid guid flags date.received size.physical",
            "ALL",
        ],
    );
    let mut expected = BTreeSet::new();
    for line in fetch.lines().skip(1) {
        let f: Vec<&str> = line.split('\t').collect();
        let (mailbox, uid, guid, flags, received, size) = (f[0], f[1], f[2], f[3], f[4], f[5]);
        let uid_n: u32 = uid.parse().expect("uid");
        let sha = crate::util::sha256_hex(
            &fs::read(src.message_file("alice", mailbox, uid_n)).expect("read"),
        );
        let mut sys = BTreeSet::new();
        let mut kw = BTreeSet::new();
        for fl in flags
            .split(' ')
            .filter(|x| !x.is_empty() && *x != "\\Recent")
        {
            match fl.strip_prefix('\\') {
                Some(s) => sys.insert(s.to_ascii_lowercase()),
                None => kw.insert(fl.to_string()),
            };
        }
        expected.insert(format!(
            "{mailbox}\tuid={uid}\tguid={guid}\treceived={received}\tsize={size}\tflags={sys:?}\tkeywords={kw:?}\tsha256={sha}"
        ));
    }

    let mut cmd = maildump();
    cmd.arg("list")
        .arg(&archive)
        .args(["--user", "alice", "--json"]);
    let out = run_ok(&mut cmd);
    let mut got = BTreeSet::new();
    let mut welcome_subject = None;
    for line in String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
    {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("bad JSON line {line:?}: {e}\n{}", report(&cmd, &out)));
        let s = |k: &str| -> String {
            match &v[k] {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => panic!("list --json: missing {k:?} in {line}"),
                other => other.to_string(),
            }
        };
        assert_eq!(s("user"), "alice", "{line}");
        // RFC 3339 UTC -> doveadm's "YYYY-MM-DD HH:MM:SS".
        let rec = s("received");
        let rec_norm = rec
            .trim_end_matches('Z')
            .trim_end_matches("+00:00")
            .replacen('T', " ", 1);
        let rec_norm = rec_norm.split('.').next().unwrap_or_default().to_string();
        let list = |k: &str| -> Vec<String> {
            v[k].as_array()
                .unwrap_or_else(|| panic!("list --json: {k:?} is not an array in {line}"))
                .iter()
                .map(|x| x.as_str().expect("string flag").to_string())
                .collect()
        };
        let sys: BTreeSet<String> = list("flags")
            .iter()
            .map(|f| f.trim_start_matches('\\').to_ascii_lowercase())
            .filter(|f| f != "recent")
            .collect();
        let kw: BTreeSet<String> = list("keywords").into_iter().collect();
        if s("mailbox") == "INBOX" && s("uid") == "1" {
            welcome_subject = Some(s("subject"));
        }
        got.insert(format!(
            "{}\tuid={}\tguid={}\treceived={rec_norm}\tsize={}\tflags={sys:?}\tkeywords={kw:?}\tsha256={}",
            s("mailbox"),
            s("uid"),
            s("guid"),
            s("size"),
            s("sha256")
        ));
    }
    let join = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>().join("\n") + "\n";
    assert_text_eq(
        "list --json (normalised) vs doveadm fetch",
        &join(&expected),
        &join(&got),
    );
    assert_eq!(
        welcome_subject.as_deref(),
        Some("Welcome"),
        "subject of INBOX uid 1"
    );
}

/// Backup with `--config dovecot.conf` (mail_location and mail_attribute_dict
/// from the file) and restore with `--config` of the target.
#[test]
fn backup_and_restore_with_config_file() {
    let ws = Workspace::new();
    let src = Dovecot::new(&ws.join("src"), ":LAYOUT=fs");
    src.build_rich_store("alice");
    src.build_small_store("bob");
    let before = [src.snapshot("alice"), src.snapshot("bob")];
    let archive = ws.join("a.mdump");
    let mut cmd = maildump();
    cmd.arg("backup")
        .arg("--config")
        .arg(&src.conf)
        .args(["--home", &src.home_template(), "--all-users", "-o"])
        .arg(&archive);
    run_ok(&mut cmd);

    let dst = Dovecot::new(&ws.join("dst"), ":LAYOUT=fs");
    let mut cmd = maildump();
    cmd.arg("restore")
        .arg(&archive)
        .arg("--config")
        .arg(&dst.conf)
        .args(["--home", &dst.home_template(), "--owner", &dst.owner_arg()])
        .args(["--uid-margin", "0"]);
    run_ok(&mut cmd);
    for (u, b) in ["alice", "bob"].iter().zip(&before) {
        assert_text_eq(
            &format!("user {u} after --config backup/restore"),
            b,
            &dst.snapshot(u),
        );
    }
}

/// `backup -o -` writes the archive to stdout; the result verifies and
/// lists the same messages as a file archive.
#[test]
fn backup_to_stdout() {
    let ws = Workspace::new();
    let src = Dovecot::new(&ws.join("src"), "");
    src.build_small_store("bob");
    let file = ws.join("file.mdump");
    backup_all(&src, &file);
    let mut cmd = maildump();
    cmd.args([
        "backup",
        "--location",
        &src.location,
        "--home",
        &src.home_template(),
        "--user",
        "bob",
        "-o",
        "-",
    ]);
    let out = run(&mut cmd);
    assert!(
        out.status.success(),
        "backup -o - failed\n{}",
        report(&cmd, &out)
    );
    assert!(
        !out.stdout.is_empty(),
        "backup -o - wrote nothing to stdout"
    );
    let piped = ws.join("piped.mdump");
    fs::write(&piped, &out.stdout).expect("write piped archive");
    run_ok(maildump().arg("verify").arg(&piped));
    let list = |a: &Path| run_ok(maildump().arg("list").arg(a).arg("--json")).stdout;
    assert_text_eq(
        "list --json of piped vs file archive",
        &String::from_utf8_lossy(&list(&file)),
        &String::from_utf8_lossy(&list(&piped)),
    );
}

/// The committed fixture store (fixtures/store, no index caches, made by
/// fixtures/make-fixture.sh) survives backup + restore unchanged.
#[test]
fn fixture_store_roundtrip() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/store");
    assert!(
        fixture.join("alice/Maildir").is_dir(),
        "missing {}; run fixtures/make-fixture.sh",
        fixture.display()
    );
    let ws = Workspace::new();
    let src = Dovecot::new(&ws.join("src"), "");
    copy_dir(&fixture, &src.home_root).expect("copy fixture store");
    src.fix_ownership();
    let users = ["alice", "bob"];
    let before: Vec<String> = users.iter().map(|u| src.snapshot(u)).collect();
    assert!(
        before[0].contains("msg\tArchive\tuid=2\t"),
        "fixture sanity:\n{}",
        before[0]
    );
    let archive = ws.join("a.mdump");
    backup_all(&src, &archive);
    let dst = Dovecot::new(&ws.join("dst"), "");
    run_ok(&mut dst.restore_cmd(&[&archive]));
    for (u, b) in users.iter().zip(&before) {
        assert_text_eq(
            &format!("fixture user {u} after restore"),
            b,
            &dst.snapshot(u),
        );
    }
}

/// After a restore with `--owner`, Dovecot (running as mail_uid) can keep
/// using the store: change METADATA, flags, deliver, create and subscribe.
/// Everything under the restored home must belong to the owner.
#[test]
fn restored_store_is_usable_by_dovecot() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/store");
    let ws = Workspace::new();
    let src = Dovecot::new(&ws.join("src"), "");
    copy_dir(&fixture, &src.home_root).expect("copy fixture store");
    src.fix_ownership();
    let archive = ws.join("a.mdump");
    backup_all(&src, &archive);
    let dst = Dovecot::new(&ws.join("dst"), "");
    run_ok(dst.restore_cmd(&[&archive]).args(["--user", "alice"]));

    let mut problems = Vec::new();
    // As root the restore ran with --owner; otherwise everything belongs to the user running
    // the tests, which is what `dst.owner_arg()` names then: checked either way.
    {
        let listing = tree_listing(&dst.home("alice"));
        let owner = dst.owner_arg();
        // tree_listing: "<path>\t<type>\t<mode>\t<uid:gid>..." (field 3 = owner)
        let wrong: Vec<&str> = listing
            .lines()
            .filter(|l| l.split('\t').nth(3) != Some(owner.as_str()))
            .collect();
        if !wrong.is_empty() {
            problems.push(format!(
                "entries under the restored home not owned by --owner {}:\n{}",
                dst.owner_arg(),
                wrong.join("\n")
            ));
        }
        use std::os::unix::fs::MetadataExt;
        let home_meta = fs::metadata(dst.home("alice")).expect("stat home");
        if (home_meta.uid(), home_meta.gid()) != (dst.uid, dst.gid) {
            problems.push(format!(
                "restored home {} is owned by {}:{}, not {}",
                dst.home("alice").display(),
                home_meta.uid(),
                home_meta.gid(),
                dst.owner_arg()
            ));
        }
    }
    let ops: [&[&str]; 6] = [
        &[
            "mailbox",
            "metadata",
            "set",
            "INBOX",
            "/private/comment",
            "changed after restore",
        ],
        &[
            "mailbox",
            "metadata",
            "set",
            "-s",
            "",
            "/private/vendor/vendor.dovecot/servervalue",
            "srv2",
        ],
        &[
            "flags",
            "add",
            "\\Seen NewKeyword",
            "mailbox",
            "INBOX",
            "uid",
            "2",
        ],
        &["mailbox", "create", "NewBox"],
        &["mailbox", "subscribe", "NewBox"],
        &["expunge", "mailbox", "Archive", "uid", "1"],
    ];
    for args in ops {
        let out = dst.try_doveadm("alice", args);
        if !out.status.success() {
            problems.push(format!(
                "doveadm {} failed on the restored store: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    let mut save = dst.command("alice", &["save", "-m", "Work"]);
    save.stdin(std::process::Stdio::piped());
    let mut child = save
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn doveadm save");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(b"From: x@example.net\nSubject: after restore\n\nhello\n")
            .expect("write stdin");
    }
    let out = child.wait_with_output().expect("doveadm save");
    if !out.status.success() {
        problems.push(format!(
            "doveadm save -m Work failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    assert!(
        problems.is_empty(),
        "restored store is not fully usable by Dovecot:\n{}",
        problems.join("\n")
    );
    let snap = dst.snapshot("alice");
    assert!(
        snap.contains("meta\tINBOX\t/private/comment\t\"changed after restore\""),
        "{snap}"
    );
    assert!(snap.contains("status\tWork\tmessages=2\t"), "{snap}");
}
