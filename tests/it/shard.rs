//! Several agents in one `--state-dir` (issue 18): `--shard I/N` over the users of one store
//! and `--agent NAME` per Dovecot backend, each with its own chain, state file, lock and
//! retention; `list DIR` over all of them; `restore --state-dir DIR --user U` finding U's
//! agent by itself. Restores are compared with `doveadm` listings (`Dovecot::snapshot`).
//!
//! Runs are ordered by explicit steps (one started after the other finished, or both
//! started and both waited for) and `--created` times, never by sleeping.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use sha2::{Digest, Sha256};

use crate::dovecot::{Dovecot, message};
use crate::util::{
    Workspace, assert_text_eq, hold_flock, maildump, release_flock, report, run_expect_code, run_ok,
};

/// Exit code of a usage error.
const EXIT_USAGE: i32 = 2;
/// Exit code when another run holds the lock.
const EXIT_CONFLICT: i32 = 6;
/// Exit code for a user found nowhere.
const EXIT_NOT_FOUND: i32 = 8;

/// The users of the sharded store; with N = 2, shard 1 holds bob and carol, shard 2 alice
/// and dave (checked against the documented formula by `shard_of`).
pub(crate) const USERS: [&str; 4] = ["alice", "bob", "carol", "dave"];

/// The documented shard of `user` among `n`: 1 + (first 8 bytes of SHA-256, big-endian) mod n.
pub(crate) fn shard_of(user: &str, n: u64) -> u64 {
    let d = Sha256::digest(user.as_bytes());
    1 + u64::from_be_bytes(d[..8].try_into().unwrap()) % n
}

/// `maildump backup --location --home --all-users --quiet --state-dir DIR EXTRA...`.
pub(crate) fn backup(src: &Dovecot, dir: &Path, extra: &[&str]) -> Command {
    let mut cmd = src.backup_cmd();
    cmd.args(["--all-users", "--quiet", "--state-dir"])
        .arg(dir)
        .args(extra);
    cmd
}

/// Start `cmd` with its output captured.
pub(crate) fn start(cmd: &mut Command) -> Child {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start maildump")
}

/// Wait for `child` (started from `cmd`) and require success.
pub(crate) fn finish_ok(cmd: &Command, child: Child) {
    let out = child.wait_with_output().expect("wait for maildump");
    assert!(out.status.success(), "{}", report(cmd, &out));
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The archives of `dir` whose names start with `prefix`, sorted.
fn archives(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    names(dir)
        .into_iter()
        .filter(|n| n.starts_with(prefix) && n.ends_with(".mdump"))
        .map(|n| dir.join(n))
        .collect()
}

/// The users `maildump list ARCHIVE --json` shows messages of.
fn users_in(archive: &Path) -> BTreeSet<String> {
    let out = run_ok(maildump().arg("list").arg(archive).arg("--json"));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["user"].as_str().unwrap().to_string()
        })
        .collect()
}

/// `maildump list DIR --json`, one object per archive.
fn list_dir(dir: &Path) -> Vec<serde_json::Value> {
    let out = run_ok(maildump().arg("list").arg(dir).arg("--json"));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The namespaces (`null` as `-`) of `list DIR --json`, one per archive, in order.
fn listed_namespaces(dir: &Path) -> Vec<String> {
    list_dir(dir)
        .iter()
        .map(|v| v["namespace"].as_str().unwrap_or("-").to_string())
        .collect()
}

/// `restore --state-dir DIR --user U` into `dst`; its stderr.
fn restore_user(dst: &Dovecot, dir: &Path, user: &str) -> String {
    let mut cmd = dst.restore_cmd(&[]);
    cmd.arg("--state-dir").arg(dir).args(["--user", user]);
    let out = run_ok(&mut cmd);
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A store of the four [`USERS`], each with [`Dovecot::build_small_store`].
pub(crate) fn four_users(ws: &Workspace) -> Dovecot {
    let src = Dovecot::new(&ws.join("src"), "");
    for u in USERS {
        src.build_small_store(u);
    }
    src
}

/// Two shards back up at the same time into one state directory: each user is in exactly
/// one shard's archive (the one the documented hash names), `list DIR` shows both, every
/// user restores from the right shard by itself and the union equals the store; the next
/// run of one shard is an incremental of its own chain and leaves the other alone.
#[test]
fn two_shards_at_once_into_one_state_dir() {
    let ws = Workspace::new();
    let src = four_users(&ws);
    let dir = ws.join("state");
    let mut c1 = backup(&src, &dir, &["--shard", "1/2"]);
    let mut c2 = backup(&src, &dir, &["--shard", "2/2"]);
    let (p1, p2) = (start(&mut c1), start(&mut c2));
    finish_ok(&c1, p1);
    finish_ok(&c2, p2);

    let mut seen = BTreeSet::new();
    for i in 1..=2u64 {
        let ns = format!("shard-{i}-of-2");
        let a = archives(&dir, &format!("maildump-{ns}-"));
        assert_eq!(a.len(), 1, "{ns}: {:?}", names(&dir));
        assert!(a[0].to_string_lossy().ends_with("-full.mdump"), "{a:?}");
        let want: BTreeSet<String> = USERS
            .iter()
            .filter(|u| shard_of(u, 2) == i)
            .map(|u| u.to_string())
            .collect();
        assert!(!want.is_empty(), "the test's users must fill both shards");
        assert_eq!(users_in(&a[0]), want, "{ns}");
        assert!(seen.is_disjoint(&want), "a user in two shards");
        seen.extend(want);
        assert!(dir.join(format!("state-{ns}.json")).is_file());
    }
    assert_eq!(seen.len(), USERS.len(), "every user in a shard");
    assert!(!dir.join("state.json").exists(), "no default namespace");
    assert_eq!(listed_namespaces(&dir), ["shard-1-of-2", "shard-2-of-2"]);

    let dst = Dovecot::new(&ws.join("dst"), "");
    for u in USERS {
        let said = restore_user(&dst, &dir, u);
        let ns = format!("shard-{}-of-2", shard_of(u, 2));
        assert!(
            said.contains(&ns),
            "restore of {u} should name {ns}: {said}"
        );
    }
    assert_eq!(dst.users(), USERS);
    for u in USERS {
        assert_text_eq(&format!("user {u}"), &src.snapshot(u), &dst.snapshot(u));
    }

    // Without --user, several agents: which one is ambiguous (exit 2); a user in no chain: 8.
    let mut cmd = dst.restore_cmd(&[]);
    cmd.arg("--state-dir").arg(&dir);
    let out = run_expect_code(&mut cmd, EXIT_USAGE);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--agent"));
    let mut cmd = dst.restore_cmd(&[]);
    cmd.arg("--state-dir").arg(&dir).args(["--user", "zoe"]);
    let out = run_expect_code(&mut cmd, EXIT_NOT_FOUND);
    assert!(String::from_utf8_lossy(&out.stderr).contains("user zoe"));

    // Shard 1 again, after a change to bob (in shard 1): an incremental of its own chain.
    assert!(
        src.save("bob", "INBOX", &message("bob", 9, "later", "new\n"))
            .status
            .success()
    );
    // estimate --shard: the shard's users, against the shard's own newest archive.
    let full1 = archives(&dir, "maildump-shard-1-of-2-").remove(0);
    let mut cmd = maildump();
    cmd.args(["estimate", "--location", &src.location, "--home"])
        .arg(src.home_template())
        .args(["--all-users", "--json", "--shard", "1/2", "--state-dir"])
        .arg(&dir);
    let est: serde_json::Value = serde_json::from_slice(&run_ok(&mut cmd).stdout).unwrap();
    assert_eq!(est["users"], 2, "{est}");
    assert_eq!(est["messages"], 1, "only bob's new message is read: {est}");
    assert_eq!(est["base"].as_str(), Some(full1.to_str().unwrap()), "{est}");
    run_ok(&mut backup(&src, &dir, &["--shard", "1/2"]));
    let a1 = archives(&dir, "maildump-shard-1-of-2-");
    assert_eq!(a1.len(), 2, "{:?}", names(&dir));
    assert!(
        a1.iter()
            .any(|p| p.to_string_lossy().ends_with("-inc.mdump"))
    );
    assert_eq!(archives(&dir, "maildump-shard-2-of-2-").len(), 1);
    assert_eq!(
        listed_namespaces(&dir),
        ["shard-1-of-2", "shard-1-of-2", "shard-2-of-2"]
    );
    let dst2 = Dovecot::new(&ws.join("dst2"), "");
    restore_user(&dst2, &dir, "bob");
    assert_text_eq(
        "bob after the incremental",
        &src.snapshot("bob"),
        &dst2.snapshot("bob"),
    );
}

/// The lock is per namespace: a held shard lock refuses a second run of that shard (exit 6,
/// naming the lock) and writes nothing, while the other shard, a named agent and the
/// default namespace run; bad --shard and --agent values are usage errors.
#[test]
fn one_namespace_locked_others_run() {
    let ws = Workspace::new();
    let src = four_users(&ws);
    let dir = ws.join("state");
    fs::create_dir_all(&dir).unwrap();
    let lock = dir.join("lock-shard-1-of-2");
    let holder = hold_flock(&lock);
    let mut cmd = backup(&src, &dir, &["--shard", "1/2"]);
    let out = run_expect_code(&mut cmd, EXIT_CONFLICT);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&lock.display().to_string()),
        "{}",
        report(&cmd, &out)
    );
    run_ok(&mut backup(&src, &dir, &["--shard", "2/2"]));
    run_ok(&mut backup(&src, &dir, &["--agent", "mx1"]));
    run_ok(&mut backup(&src, &dir, &[]));
    assert!(archives(&dir, "maildump-shard-1-of-2-").is_empty());
    release_flock(holder);
    run_ok(&mut backup(&src, &dir, &["--shard", "1/2"]));
    assert_eq!(
        listed_namespaces(&dir),
        ["-", "mx1", "shard-1-of-2", "shard-2-of-2"]
    );
    // After a run, the lock files name nobody (the holder is written while it runs).
    assert_eq!(fs::read(&lock).unwrap(), b"");
    // A lock file naming a run that died (kill -9 leaves its name in it): a local lock is an
    // flock, free with its holder gone, so the next run goes ahead without --break-lock.
    let dead = r#"{"host":"mx9","pid":999999,"started":"2026-01-01T00:00:00Z","token":"t"}"#;
    fs::write(&lock, dead).unwrap();
    run_ok(&mut backup(&src, &dir, &["--shard", "1/2"]));
    assert_eq!(fs::read(&lock).unwrap(), b"");
    assert_eq!(archives(&dir, "maildump-shard-1-of-2-").len(), 2);

    for bad in ["0/2", "3/2", "1/0", "x", "1/2/3", ""] {
        run_expect_code(&mut backup(&src, &dir, &["--shard", bad]), EXIT_USAGE);
    }
    for bad in ["", "../x", "a/b", ".hidden", "-x"] {
        run_expect_code(&mut backup(&src, &dir, &["--agent", bad]), EXIT_USAGE);
    }
    // --agent without --state-dir, --shard with -o: only the users of the shard.
    let mut cmd = src.backup_cmd();
    cmd.args(["--all-users", "--agent", "mx1", "-o"])
        .arg(ws.join("x.mdump"));
    run_expect_code(&mut cmd, EXIT_USAGE);
    let out = ws.join("s.mdump");
    let mut cmd = src.backup_cmd();
    cmd.args([
        "--quiet", "--user", "alice", "--user", "bob", "--shard", "1/2", "-o",
    ])
    .arg(&out);
    run_ok(&mut cmd);
    assert_eq!(users_in(&out), BTreeSet::from(["bob".to_string()]));
}

/// One agent per Dovecot backend (`--agent`), both started at once: `list DIR` shows both,
/// a user restores from its backend's chain; a user who moved to the other backend is in
/// both namespaces' newest chains and restores from the newer one, said on stderr.
#[test]
fn agents_per_backend_and_a_moved_user() {
    let ws = Workspace::new();
    let mx1 = Dovecot::new(&ws.join("mx1"), "");
    let mx2 = Dovecot::new(&ws.join("mx2"), "");
    mx1.build_small_store("alice");
    mx1.build_small_store("bob");
    mx2.build_small_store("carol");
    let dir = ws.join("state");
    let t1 = ["--created", "2026-01-01T00:00:00Z"];
    let mut c1 = backup(&mx1, &dir, &["--agent", "mx1"]);
    c1.args(t1);
    let mut c2 = backup(&mx2, &dir, &["--agent", "mx2"]);
    c2.args(t1);
    let (p1, p2) = (start(&mut c1), start(&mut c2));
    finish_ok(&c1, p1);
    finish_ok(&c2, p2);
    assert_eq!(listed_namespaces(&dir), ["mx1", "mx2"]);
    assert_eq!(
        archives(&dir, "maildump-mx1-")
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect::<Vec<_>>(),
        ["maildump-mx1-20260101T000000Z-full.mdump"]
    );
    let dst = Dovecot::new(&ws.join("dst"), "");
    assert!(restore_user(&dst, &dir, "carol").contains("namespace mx2"));
    assert_text_eq("carol", &mx2.snapshot("carol"), &dst.snapshot("carol"));

    // bob moves to mx2 (his mail there differs), and mx2's next run is newer.
    mx2.build_small_store("bob");
    assert!(
        mx2.save("bob", "INBOX", &message("bob", 7, "on mx2", "moved\n"))
            .status
            .success()
    );
    let mut c = backup(&mx2, &dir, &["--agent", "mx2"]);
    c.args(["--created", "2026-01-02T00:00:00Z"]);
    run_ok(&mut c);
    let dst2 = Dovecot::new(&ws.join("dst2"), "");
    let said = restore_user(&dst2, &dir, "bob");
    assert!(
        said.contains("also in namespace mx1 (archive of 2026-01-01T00:00:00Z)")
            && said.contains(
                "restoring from namespace mx2 (archive of 2026-01-02T00:00:00Z), the newest"
            ),
        "{said}"
    );
    assert_text_eq("bob from mx2", &mx2.snapshot("bob"), &dst2.snapshot("bob"));
    // --agent picks a namespace by hand: bob as mx1 had him.
    let dst3 = Dovecot::new(&ws.join("dst3"), "");
    let mut cmd = dst3.restore_cmd(&[]);
    cmd.arg("--state-dir")
        .arg(&dir)
        .args(["--agent", "mx1", "--user", "bob"]);
    run_ok(&mut cmd);
    assert_text_eq("bob from mx1", &mx1.snapshot("bob"), &dst3.snapshot("bob"));
}

/// `--full-every` and `--keep-chains` work per namespace: pruning one agent's old chain
/// leaves the other agents' archives; a state directory without namespaces keeps its
/// names (`state.json`, `lock`, `maildump-STAMP-KIND.mdump`) and restores without --user.
#[test]
fn retention_per_namespace_and_the_default_namespace_unchanged() {
    let ws = Workspace::new();
    let src = Dovecot::new(&ws.join("src"), "");
    src.build_small_store("alice");
    src.build_small_store("bob");
    let dir = ws.join("state");
    let at = |t: &str| ["--created".to_string(), t.to_string()];
    // The default namespace, as before agents: a full, then an incremental.
    run_ok(backup(&src, &dir, &[]).args(at("2020-01-01T00:00:00Z")));
    run_ok(backup(&src, &dir, &[]).args(at("2020-01-02T00:00:00Z")));
    assert_eq!(
        names(&dir),
        [
            "lock",
            "maildump-20200101T000000Z-full.mdump",
            "maildump-20200102T000000Z-inc.mdump",
            "state.json"
        ]
    );
    run_ok(backup(&src, &dir, &["--agent", "b"]).args(at("2020-01-01T00:00:00Z")));
    // Agent a: each run's chain is years old, so --full-every 1d starts a new one each
    // time; --keep-chains 1 then removes a's older chain, and only it.
    for day in ["2020-01-01", "2020-01-02", "2020-01-03"] {
        let mut cmd = backup(
            &src,
            &dir,
            &["--agent", "a", "--full-every", "1d", "--keep-chains", "1"],
        );
        run_ok(cmd.args(at(&format!("{day}T00:00:00Z"))));
    }
    assert_eq!(
        names(&dir),
        [
            "lock",
            "lock-a",
            "lock-b",
            "maildump-20200101T000000Z-full.mdump",
            "maildump-20200102T000000Z-inc.mdump",
            "maildump-a-20200103T000000Z-full.mdump",
            "maildump-b-20200101T000000Z-full.mdump",
            "state-a.json",
            "state-b.json",
            "state.json"
        ]
    );
    let listed = list_dir(&dir);
    let kinds: Vec<(String, String)> = listed
        .iter()
        .map(|v| {
            (
                v["namespace"].as_str().unwrap_or("-").to_string(),
                v["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want = [
        ("-", "full"),
        ("-", "incremental"),
        ("a", "full"),
        ("b", "full"),
    ];
    assert_eq!(
        kinds,
        want.map(|(a, b)| (a.to_string(), b.to_string())),
        "{listed:?}"
    );
    // Text listing: a header and one line per archive, namespace first.
    let text = String::from_utf8(run_ok(maildump().arg("list").arg(&dir)).stdout).unwrap();
    let first: Vec<&str> = text
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(first, ["-", "-", "a", "b"], "{text}");
    // alice is in all three namespaces' newest chains; a's (2020-01-03) is the newest.
    let dst = Dovecot::new(&ws.join("dst"), "");
    let said = restore_user(&dst, &dir, "alice");
    assert!(said.contains("restoring from namespace a "), "{said}");
    assert_text_eq("alice", &src.snapshot("alice"), &dst.snapshot("alice"));

    // An old state directory (only the default namespace) restores without --user.
    let old = ws.join("old");
    run_ok(&mut backup(&src, &old, &[]));
    let dst2 = Dovecot::new(&ws.join("dst2"), "");
    let mut cmd = dst2.restore_cmd(&[]);
    cmd.arg("--state-dir").arg(&old);
    run_ok(&mut cmd);
    for u in ["alice", "bob"] {
        assert_text_eq(u, &src.snapshot(u), &dst2.snapshot(u));
    }
    // list DIR takes no message filters; a directory without state is not a state dir.
    run_expect_code(
        maildump().arg("list").arg(&old).args(["--user", "alice"]),
        EXIT_USAGE,
    );
    run_expect_code(maildump().arg("list").arg(ws.join("src")), EXIT_NOT_FOUND);
}

/// `restore --state-dir --as-of` takes the chain holding that state, not only the newest:
/// with weekly fulls (`--full-every`), last week's state is in the previous chain.
#[test]
fn restore_as_of_picks_the_chain_holding_that_time() {
    let ws = Workspace::new();
    let src = Dovecot::new(&ws.join("src"), "");
    src.build_small_store("alice");
    let dir = ws.join("state");
    let run = |day: &str| {
        let mut cmd = backup(&src, &dir, &["--agent", "c", "--full-every", "1d"]);
        run_ok(cmd.args(["--created", &format!("{day}T00:00:00Z")]));
    };
    run("2020-01-01");
    let before = src.snapshot("alice");
    assert!(
        src.save("alice", "INBOX", &message("alice", 8, "later", "x\n"))
            .status
            .success()
    );
    run("2020-01-02");
    let chains: BTreeSet<String> = list_dir(&dir)
        .iter()
        .map(|v| v["chain"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(chains.len(), 2, "--full-every 1d made two chains");

    let restore_as_of = |name: &str, as_of: &str| -> Dovecot {
        let dst = Dovecot::new(&ws.join(name), "");
        let mut cmd = dst.restore_cmd(&[]);
        cmd.arg("--state-dir")
            .arg(&dir)
            .args(["--user", "alice", "--as-of", as_of]);
        run_ok(&mut cmd);
        dst
    };
    let old = restore_as_of("dst1", "2020-01-01T12:00:00Z");
    assert_text_eq("alice as of day 1", &before, &old.snapshot("alice"));
    let new = restore_as_of("dst2", "2020-01-02T12:00:00Z");
    assert_text_eq(
        "alice as of day 2",
        &src.snapshot("alice"),
        &new.snapshot("alice"),
    );
    // Before the first archive: nothing to restore, exit 8.
    let dst = Dovecot::new(&ws.join("dst3"), "");
    let mut cmd = dst.restore_cmd(&[]);
    cmd.arg("--state-dir")
        .arg(&dir)
        .args(["--agent", "c", "--as-of", "2019-12-31"]);
    let out = run_expect_code(&mut cmd, EXIT_NOT_FOUND);
    assert!(String::from_utf8_lossy(&out.stderr).contains("as of 2019-12-31"));
}
