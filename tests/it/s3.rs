//! Archives in object storage (issue 18) against a real Garage node ([`Garage`]): backup to
//! `s3://`, then list, cat, verify, restore (a chain, one user, one message), merge and
//! export from it, compared with the same commands on files (Dovecot listings through
//! `doveadm`); an interrupted upload leaves no object; missing buckets, missing keys and
//! refused credentials give one-line errors and the documented exit codes.

use std::fs;
use std::os::unix::fs::symlink;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::dovecot::{Dovecot, base64_lines, message, pseudo_random_bytes};
use crate::garage::{BUCKET, Garage};
use crate::util::{
    Workspace, assert_text_eq, maildump, run, run_expect_code, run_ok, signal_and_drain,
};

const EXIT_IO: i32 = 3;
const EXIT_NOT_FOUND: i32 = 8;

fn s3(key: &str) -> String {
    format!("s3://{BUCKET}/{key}")
}

/// The message lines of `maildump list` (the `;` header names the archive, which differs).
fn messages(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with(';'))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// `maildump: s3: N requests, B bytes fetched, S bytes sent` from `--s3-stats`.
fn stats(out: &Output) -> (u64, u64) {
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .find_map(|l| l.strip_prefix("maildump: s3: "))
        .unwrap_or_else(|| panic!("no s3 stats line in {err}"));
    let n: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    (n[0], n[1])
}

fn backup(cmd: &mut Command, src: &Dovecot, out: &str, bases: &[&str]) {
    cmd.args(["backup", "--location", &src.location, "--home"])
        .arg(src.home_template())
        .args(["--all-users", "--quiet", "-o", out]);
    for b in bases {
        cmd.args(["--base", b]);
    }
    run_ok(cmd);
}

/// A store of three users: alice (the rich store), bob (small) and carol, whose 24
/// messages of incompressible text make an archive of several parts and frames.
fn source(ws: &Workspace) -> Dovecot {
    let src = Dovecot::new(&ws.join("src"), "");
    src.build_rich_store("alice");
    src.build_small_store("bob");
    let big: Vec<_> = (0..24u32)
        .map(|i| {
            let body = base64_lines(&pseudo_random_bytes(u64::from(i) + 7, 420_000));
            (
                "INBOX",
                1_600_000_000 + u64::from(i),
                "S",
                message("carol", i + 1, &format!("big {i}"), &body),
            )
        })
        .collect();
    src.import("carol", &big);
    src
}

#[test]
fn an_archive_in_a_bucket_reads_back_as_a_file_does() {
    let g = Garage::start();
    let ws = Workspace::new();
    let src = source(&ws);
    let (full, inc) = (ws.join("full.mdump"), ws.join("inc.mdump"));
    let (full_s3, inc_s3) = (s3("chain/full.mdump"), s3("chain/inc.mdump"));
    backup(&mut maildump(), &src, full.to_str().unwrap(), &[]);
    backup(&mut g.maildump(), &src, &full_s3, &[]);
    let size = fs::metadata(&full).unwrap().len();
    assert!(size > 9 << 20, "the full archive spans two parts: {size}");
    src.save(
        "bob",
        "INBOX",
        &message("bob", 9, "After the full", "new\n"),
    );
    backup(
        &mut maildump(),
        &src,
        inc.to_str().unwrap(),
        &[full.to_str().unwrap()],
    );
    backup(&mut g.maildump(), &src, &inc_s3, &[&full_s3]);
    let users = ["alice", "bob", "carol"];
    let want: Vec<String> = users.iter().map(|u| src.snapshot(u)).collect();

    // list and verify read the chain from the bucket as from files.
    let local = run_ok(maildump().arg("list").arg(&full).arg(&inc));
    let remote = run_ok(g.maildump().args(["list", &full_s3, &inc_s3]));
    assert!(messages(&local).contains("After the full"));
    assert_text_eq(
        "list s3:// vs list FILE",
        &messages(&local),
        &messages(&remote),
    );
    let v = run_ok(g.maildump().args(["verify", &full_s3, &inc_s3]));
    let text = String::from_utf8_lossy(&v.stdout);
    assert!(text.contains("OK: s3://mail/chain/inc.mdump"), "{text}");

    // cat of one message: its bytes, for a few requests and a fraction of the archive.
    let args = ["--user", "carol", "--mailbox", "INBOX", "--uid", "13"];
    let want_msg = run_ok(maildump().arg("cat").arg(&full).args(args)).stdout;
    let out = run_ok(
        g.maildump()
            .args(["cat", &full_s3, "--s3-stats"])
            .args(args),
    );
    assert!(out.stdout == want_msg && want_msg.len() > 400_000);
    let (requests, fetched) = stats(&out);
    assert!(requests <= 5, "cat took {requests} requests");
    assert!(fetched < size / 2, "cat fetched {fetched} of {size} bytes");

    // restore: the chain, one user, one message, each as from the files.
    let dst = Dovecot::new(&ws.join("dst-chain"), "");
    run_ok(g.env(&mut dst.restore_cmd(&[Path::new(&full_s3), Path::new(&inc_s3)])));
    for (u, w) in users.iter().zip(&want) {
        assert_text_eq(&format!("restore s3:// chain: {u}"), w, &dst.snapshot(u));
    }
    let dst = Dovecot::new(&ws.join("dst-bob"), "");
    run_ok(
        g.env(&mut dst.restore_cmd(&[Path::new(&full_s3), Path::new(&inc_s3)]))
            .args(["--user", "bob"]),
    );
    assert_eq!(dst.users(), ["bob"]);
    assert_text_eq("restore --user bob", &want[1], &dst.snapshot("bob"));
    let one = ["--user", "alice", "--mailbox", "INBOX", "--uid", "2"];
    let (a, b) = (
        Dovecot::new(&ws.join("dst-one-file"), ""),
        Dovecot::new(&ws.join("dst-one-s3"), ""),
    );
    run_ok(a.restore_cmd(&[&full, &inc]).args(one));
    run_ok(
        g.env(&mut b.restore_cmd(&[Path::new(&full_s3), Path::new(&inc_s3)]))
            .args(one),
    );
    let one_msg = b.snapshot("alice");
    assert!(one_msg.contains("INBOX"), "{one_msg}");
    assert_text_eq("restore of one message", &a.snapshot("alice"), &one_msg);

    // merge from the bucket into the bucket; export from it.
    let merged = s3("merged.mdump");
    run_ok(
        g.maildump()
            .args(["merge", &full_s3, &inc_s3, "-o", &merged]),
    );
    let m = run_ok(g.maildump().args(["list", &merged]));
    assert_text_eq(
        "list of the merged archive",
        &messages(&local),
        &messages(&m),
    );
    let mbox = ws.join("bob.mbox");
    run_ok(
        g.maildump()
            .args(["export", &merged, "--user", "bob", "--mailbox", "INBOX"])
            .args(["--format", "mbox", "-o"])
            .arg(&mbox),
    );
    assert!(
        fs::read_to_string(&mbox)
            .unwrap()
            .contains("After the full")
    );
}

/// A backup to `s3://` held on a full stderr pipe after its first part was sent: carol's
/// messages come first (30 MiB compressed: more than what is held in flight, 2 frames of
/// one compression thread, the 8 MiB output queue and one 8 MiB part, so a part is sent
/// whatever the timing), then user `z`'s 700
/// symbolic links, each named on stderr, and its messages. The upload is under way and
/// nothing is visible; then the signal.
fn stopped_by(sig: i32) {
    let g = Garage::start();
    let ws = Workspace::new();
    for (i, chunk) in (0..30u64).enumerate() {
        let md = ws.join("home/carol/Maildir");
        for sub in ["cur", "new", "tmp"] {
            fs::create_dir_all(md.join(sub)).unwrap();
        }
        let mut body = format!("Subject: m{i}\n\n").into_bytes();
        body.extend(base64_lines(&pseudo_random_bytes(chunk + 1, 1 << 20)).into_bytes());
        fs::write(
            md.join(format!("cur/{}.M{i}P1.big:2,S", 1_700_000_000 + i)),
            body,
        )
        .unwrap();
    }
    let md = ws.join("home/z/Maildir");
    for sub in ["cur", "new", "tmp"] {
        fs::create_dir_all(md.join(sub)).unwrap();
    }
    for i in 0..700 {
        let name = format!(
            "{}.M{i}P2.link-with-a-long-name-to-fill-the-pipe:2,S",
            1_600_000_000 + i
        );
        symlink("/etc/hostname", md.join("cur").join(name)).unwrap();
    }
    // Messages after the links: the run notices the signal at the next one.
    for i in 0..5 {
        fs::write(
            md.join(format!("cur/{}.M{i}P3.small:2,S", 1_800_000_000 + i)),
            format!("Subject: s{i}\n\nsmall\n"),
        )
        .unwrap();
    }
    let key = s3("stopped.mdump");
    let mut child = g
        .maildump()
        .args(["backup", "--location", "maildir:~/Maildir", "--home"])
        .arg(ws.join("home/%u"))
        .args([
            "--user",
            "carol",
            "--user",
            "z",
            "--progress",
            "json",
            "--threads",
            "1",
            "-o",
            &key,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Garage lists the upload under way once its first part is stored.
    let mut tries = 0;
    while info_field(&g.bucket_info(), "Unfinished uploads:") != "1 multipart uploads" {
        tries += 1;
        assert!(tries < 600, "no upload under way:\n{}", g.bucket_info());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let visible = run(g.maildump().args(["list", &key]));
    assert_eq!(
        visible.status.code(),
        Some(EXIT_NOT_FOUND),
        "no object while uploading"
    );
    let (status, err) = signal_and_drain(&mut child, sig);
    assert_eq!(status.signal(), Some(sig), "{status:?}\n{err}");
    let gone = run(g.maildump().args(["list", &key]));
    assert_eq!(
        gone.status.code(),
        Some(EXIT_NOT_FOUND),
        "no object after the signal"
    );
    let info = g.bucket_info();
    assert_eq!(info_field(&info, "Objects:"), "0", "{info}");
    if sig == 9 {
        // Killed, it could not abort: the upload stays, invisible, until aborted (a
        // lifecycle rule, `garage bucket cleanup-incomplete-uploads`).
        assert_eq!(
            info_field(&info, "Unfinished uploads:"),
            "1 multipart uploads"
        );
    } else {
        // Stopped by a signal it handles, the run aborted its upload.
        assert!(err.contains("interrupted by a signal"), "{err}");
        assert_eq!(info_field(&info, "Unfinished uploads:"), "", "{info}");
    }
}

/// The value of the line of `garage bucket info` that starts with `name` ("" if none).
fn info_field(info: &str, name: &str) -> String {
    info.lines()
        .find_map(|l| l.strip_prefix(name))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

#[test]
fn an_upload_killed_leaves_no_object() {
    stopped_by(9);
}

#[test]
fn an_upload_stopped_by_sigterm_is_aborted() {
    stopped_by(15);
}

#[test]
fn missing_buckets_keys_and_refused_credentials_are_named() {
    let g = Garage::start();
    let ws = Workspace::new();
    let src = Dovecot::new(&ws.join("src"), "");
    src.build_small_store("bob");
    let key = s3("a.mdump");
    backup(&mut g.maildump(), &src, &key, &[]);

    let one_line = |out: &Output, code: i32, has: &[&str]| {
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        for h in has {
            assert!(err.contains(h), "{h:?} not in {err}");
        }
    };
    let out = run(g.maildump().args(["list", "s3://mail/nothing.mdump"]));
    one_line(
        &out,
        EXIT_NOT_FOUND,
        &[
            "not found",
            "bucket \"mail\"",
            "key \"nothing.mdump\"",
            "NoSuchKey",
        ],
    );
    let out = run(g.maildump().args(["list", "s3://nobucket/a.mdump"]));
    one_line(
        &out,
        EXIT_NOT_FOUND,
        &["bucket \"nobucket\"", "NoSuchBucket"],
    );
    let out = run(g.maildump().args([
        "cat",
        "s3://mail",
        "--user",
        "bob",
        "--mailbox",
        "INBOX",
        "--uid",
        "1",
    ]));
    one_line(&out, 2, &["s3://BUCKET/KEY"]);
    // Writing into a missing bucket: not found, and no object anywhere.
    let mut cmd = g.maildump();
    cmd.args(["backup", "--location", &src.location, "--home"])
        .arg(src.home_template())
        .args(["--all-users", "--quiet", "-o", "s3://nobucket/a.mdump"]);
    one_line(&run(&mut cmd), EXIT_NOT_FOUND, &["NoSuchBucket"]);

    // Where object storage is not supported yet: refused, nothing made locally.
    let out = run(g.maildump().current_dir(ws.path()).args([
        "export",
        &key,
        "--user",
        "bob",
        "--format",
        "eml",
        "-o",
        "s3://mail/eml/",
    ]));
    one_line(&out, 2, &["export -o s3://mail/eml/", "not supported"]);
    assert!(!ws.join("s3:").exists());

    // Refused credentials: a wrong secret, an unknown key.
    let out = run(g
        .maildump()
        .env("AWS_SECRET_ACCESS_KEY", "0".repeat(64))
        .args(["list", &key]));
    one_line(
        &out,
        EXIT_IO,
        &[
            "bucket \"mail\"",
            "key \"a.mdump\"",
            "HTTP 403",
            "check the credentials",
        ],
    );
    let out = run(g
        .maildump()
        .env("AWS_ACCESS_KEY_ID", "GK0000")
        .args(["list", &key]));
    one_line(&out, EXIT_IO, &["HTTP 403", "check the credentials"]);
    // None at all.
    let out = run(g
        .maildump()
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("HOME", ws.path())
        .args(["list", &key]));
    one_line(&out, 2, &["no S3 credentials", "AWS_ACCESS_KEY_ID"]);

    // A profile of a shared credentials file, and --s3-endpoint instead of the variable.
    let creds = ws.join("credentials");
    fs::write(
        &creds,
        format!(
            "[default]\naws_access_key_id = nobody\naws_secret_access_key = x\n\n[garage]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            g.key_id, g.secret
        ),
    )
    .unwrap();
    let out = run_ok(
        maildump()
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_ENDPOINT_URL")
            .env("AWS_PROFILE", "garage")
            .env("AWS_SHARED_CREDENTIALS_FILE", &creds)
            .env("AWS_REGION", "garage")
            .args(["list", &key, "--s3-endpoint", &g.endpoint]),
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Existing mail"));
}

/// What `Client::put_if_absent` (`If-None-Match: *` on PUT, the conditional write a lock in
/// a bucket needs) gets from Garage 2.5: nothing. Garage honours the header on GET only,
/// so both writers "win" and the second object replaces the first. A lock in a Garage
/// bucket needs another primitive; this test fails, and says so, the day Garage honours it.
#[test]
fn garage_2_5_ignores_a_conditional_put() {
    let g = Garage::start();
    let c = g.client();
    let url = maildump::remote::S3Url {
        bucket: BUCKET.into(),
        key: "state/lock".into(),
    };
    assert!(c.put_if_absent(&url, b"first").unwrap(), "the first write");
    assert!(
        c.put_if_absent(&url, b"second").unwrap(),
        "Garage now refuses a conditional PUT (412): a lock in a bucket can use it"
    );
    let (bytes, _) = c.get(&url, maildump::remote::Range::Tail(100)).unwrap();
    assert_eq!(bytes, b"second");
}

/// The keys under `prefix` of the test bucket, the prefix cut off.
fn keys(g: &Garage, prefix: &str) -> Vec<String> {
    g.client()
        .list(BUCKET, prefix)
        .unwrap()
        .into_iter()
        .map(|k| k[prefix.len()..].to_string())
        .collect()
}

/// `--state-dir s3://mail/state/`: two shards back up at once into one prefix, `list`
/// of the prefix shows both, every user restores by `--state-dir --user` alone with
/// Dovecot listings equal to the store's, and the next run is an incremental built on the
/// archive in the bucket. No lock and no claim is left behind.
#[test]
fn a_state_dir_in_a_bucket_holds_two_shards_at_once() {
    use crate::shard::{USERS, backup, finish_ok, four_users, shard_of, start};
    let g = Garage::start();
    let ws = Workspace::new();
    let src = four_users(&ws);
    let dir = s3("state/");
    let mut c1 = backup(&src, Path::new(&dir), &["--shard", "1/2"]);
    let mut c2 = backup(&src, Path::new(&dir), &["--shard", "2/2"]);
    g.env(&mut c1);
    g.env(&mut c2);
    let (p1, p2) = (start(&mut c1), start(&mut c2));
    finish_ok(&c1, p1);
    finish_ok(&c2, p2);

    let names = keys(&g, "state/");
    let full = |i: u64| {
        names
            .iter()
            .filter(|n| {
                n.starts_with(&format!("maildump-shard-{i}-of-2-")) && n.ends_with("-full.mdump")
            })
            .count()
    };
    assert!(full(1) == 1 && full(2) == 1, "{names:?}");
    assert!(
        names.contains(&"state-shard-1-of-2.json".to_string()),
        "{names:?}"
    );
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("lock") || n.contains(".claim-")),
        "a lock or claim left behind: {names:?}"
    );
    let listed = run_ok(g.maildump().args(["list", &dir, "--json"]));
    let spaces: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["namespace"].as_str().unwrap_or("-").to_string()
        })
        .collect();
    assert_eq!(spaces, ["shard-1-of-2", "shard-2-of-2"]);

    let dst = Dovecot::new(&ws.join("dst"), "");
    for u in USERS {
        let mut cmd = dst.restore_cmd(&[]);
        g.env(&mut cmd).args(["--state-dir", &dir, "--user", u]);
        let out = run_ok(&mut cmd);
        let said = String::from_utf8_lossy(&out.stderr);
        let ns = format!("shard-{}-of-2", shard_of(u, 2));
        assert!(
            said.contains(&ns),
            "restore of {u} should name {ns}: {said}"
        );
        assert_text_eq(
            &format!("restore of {u}"),
            &src.snapshot(u),
            &dst.snapshot(u),
        );
    }

    // The next run of shard 1: an incremental whose base is read from the bucket.
    let u1 = USERS.iter().find(|u| shard_of(u, 2) == 1).unwrap();
    src.save(u1, "INBOX", &message(u1, 50, "After the full", "new\n"));
    let mut again = backup(&src, Path::new(&dir), &["--shard", "1/2"]);
    run_ok(g.env(&mut again));
    let names = keys(&g, "state/");
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("maildump-shard-1-of-2-") && n.ends_with("-inc.mdump")),
        "{names:?}"
    );
    let dst = Dovecot::new(&ws.join("dst2"), "");
    let mut cmd = dst.restore_cmd(&[]);
    run_ok(g.env(&mut cmd).args(["--state-dir", &dir, "--user", u1]));
    assert_text_eq(
        "restore after the incremental",
        &src.snapshot(u1),
        &dst.snapshot(u1),
    );

    // Retention in the bucket: a chain started in 2020 is more than `--full-every 7d` old,
    // so the next run starts a new chain and `--keep-chains 1` deletes the old archive.
    let keep = ["--agent", "ret", "--full-every", "7d", "--keep-chains", "1"];
    let mut old = backup(&src, Path::new(&dir), &keep);
    run_ok(g.env(&mut old).args(["--created", "2020-01-01T00:00:00Z"]));
    assert!(keys(&g, "state/").contains(&"maildump-ret-20200101T000000Z-full.mdump".to_string()));
    let mut new = backup(&src, Path::new(&dir), &keep);
    run_ok(g.env(&mut new));
    let ret: Vec<String> = keys(&g, "state/")
        .into_iter()
        .filter(|n| n.starts_with("maildump-ret-"))
        .collect();
    assert!(
        ret.len() == 1 && !ret[0].contains("2020") && ret[0].ends_with("-full.mdump"),
        "{ret:?}"
    );
}

/// The lock of a namespace in a bucket: a lock object left by a run that died refuses the
/// next run (exit 6, naming its host and pid, nothing written), `--break-lock` takes it; a
/// claim left by a run that died while taking the lock is refused and broken the same way;
/// a missing bucket and refused credentials are named with their exit codes.
#[test]
fn a_lock_in_a_bucket_refuses_a_second_run_until_broken() {
    use crate::shard::{backup, four_users};
    let g = Garage::start();
    let ws = Workspace::new();
    let src = four_users(&ws);
    let dir = s3("locked/");
    let c = g.client();
    let at = |k: &str| maildump::remote::S3Url {
        bucket: BUCKET.into(),
        key: format!("locked/{k}"),
    };
    let owner = br#"{"host":"mx9","pid":4242,"started":"2026-01-01T00:00:00Z","token":"dead"}"#;
    c.put(&at("lock-mx1"), owner).unwrap();
    let mut cmd = backup(&src, Path::new(&dir), &["--agent", "mx1"]);
    let out = run_expect_code(g.env(&mut cmd), 6);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("host mx9, pid 4242")
            && err.contains("--break-lock")
            && err.contains("s3://mail/locked/lock-mx1"),
        "{err}"
    );
    assert_eq!(
        keys(&g, "locked/"),
        ["lock-mx1"],
        "nothing written while refused"
    );
    // Another agent's lock is another object.
    let mut other = backup(&src, Path::new(&dir), &["--agent", "mx2"]);
    run_ok(g.env(&mut other));
    let mut cmd = backup(&src, Path::new(&dir), &["--agent", "mx1", "--break-lock"]);
    run_ok(g.env(&mut cmd));
    let names = keys(&g, "locked/");
    assert!(!names.iter().any(|n| n.starts_with("lock")), "{names:?}");
    assert_eq!(
        names.iter().filter(|n| n.ends_with("-full.mdump")).count(),
        2,
        "{names:?}"
    );

    c.put(&at("lock-mx1.claim-0123"), owner).unwrap();
    let mut cmd = backup(&src, Path::new(&dir), &["--agent", "mx1"]);
    let out = run_expect_code(g.env(&mut cmd), 6);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("lock-mx1.claim-") && err.contains("--break-lock"),
        "{err}"
    );
    let mut cmd = backup(&src, Path::new(&dir), &["--agent", "mx1", "--break-lock"]);
    run_ok(g.env(&mut cmd));
    let names = keys(&g, "locked/");
    assert!(!names.iter().any(|n| n.contains("lock")), "{names:?}");

    let mut cmd = backup(&src, Path::new("s3://no-such-bucket/x/"), &[]);
    let out = run_expect_code(g.env(&mut cmd), EXIT_NOT_FOUND);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no-such-bucket") && err.lines().count() == 1,
        "{err}"
    );
    let mut cmd = backup(&src, Path::new(&dir), &["--agent", "mx3"]);
    g.env(&mut cmd).env("AWS_SECRET_ACCESS_KEY", "wrong");
    let out = run_expect_code(&mut cmd, EXIT_IO);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("\"mail\"") && err.contains("credentials"),
        "{err}"
    );
}

/// Eight threads take the same name under a prefix at once (the claims of
/// `statedir::objects`, since Garage ignores `If-None-Match`): at most one wins, a loser
/// is told it exists or that others were taking it, the object holds the winner's bytes
/// and no claim is left.
#[test]
fn of_eight_racing_for_one_name_in_a_bucket_at_most_one_wins() {
    use maildump::ops::statedir::objects::ObjectPrefix;
    use std::sync::{Arc, Barrier};
    let g = Garage::start();
    let client = Arc::new(g.client());
    let barrier = Arc::new(Barrier::new(8));
    let results: Vec<(usize, Result<bool, String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let (client, barrier) = (client.clone(), barrier.clone());
                s.spawn(move || {
                    let p = ObjectPrefix::parse(Path::new(&s3("race/")))
                        .unwrap()
                        .unwrap()
                        .with_client(client);
                    barrier.wait();
                    (
                        i,
                        p.create_once("lock", format!("writer {i}").as_bytes())
                            .map_err(|e| e.to_string()),
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let winners: Vec<usize> = results
        .iter()
        .filter(|(_, r)| *r == Ok(true))
        .map(|(i, _)| *i)
        .collect();
    assert!(winners.len() <= 1, "several won: {results:?}");
    for (_, r) in &results {
        if let Err(e) = r {
            assert!(e.contains("at the same moment"), "{e}");
        }
    }
    let names = keys(&g, "race/");
    assert!(!names.iter().any(|n| n.contains(".claim-")), "{names:?}");
    if let [w] = winners.as_slice() {
        assert_eq!(names, ["lock"]);
        let (bytes, _) = client
            .get(
                &maildump::remote::S3Url {
                    bucket: BUCKET.into(),
                    key: "race/lock".into(),
                },
                maildump::remote::Range::Tail(100),
            )
            .unwrap();
        assert_eq!(bytes, format!("writer {w}").as_bytes());
    } else {
        assert!(names.is_empty(), "{names:?}");
    }
}
