//! maildump inside real Bacula (director, storage daemon, file daemon with the bpipe plugin,
//! bconsole; Debian's 9.6.7), on loopback with its own configs and sqlite catalog:
//! `tests/support/selftest-bacula.sh` runs the FileSet, Job and RunScript of README's
//! "Bacula" section with this build's binary. Full, Incremental, Differential and
//! Incremental jobs with doveadm changes in between; restores through bconsole alone of the
//! newest state, of an earlier state (`before=`), of one user, one mailbox and one message,
//! each compared with what doveadm showed at backup time; a failing backup fails its job
//! (status E) with maildump's message in the job log. A missing Bacula fails the test.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::util::{Workspace, maildump, run_ok, run_selftest};

#[test]
fn bacula_bpipe_jobs_back_up_and_restore_exactly() {
    run_selftest(
        "bacula",
        &[("MAILDUMP", env!("CARGO_BIN_EXE_maildump").as_ref())],
        &[
            "restore current select = state at the last incremental",
            "restore before=<end of the first incremental> = state then",
            "restore where=\"ROOT --user alice\" = alice at the last incremental",
            "restore of one mailbox (Work/Sub)",
            "restore of one message (INBOX uid 6)",
            "a failing backup command fails the job (status E)",
            "the state keeps the Full's and the last job's index",
        ],
    );
}

/// A Maildir of `n` messages of about 16 KiB each that zstd cannot shrink much.
pub(crate) fn big_maildir(root: &std::path::Path, n: u32, seed: u64) {
    let md = root.join("alice/Maildir");
    for d in ["cur", "new", "tmp"] {
        fs::create_dir_all(md.join(d)).unwrap();
    }
    let mut x = seed;
    for i in 0..n {
        let mut body = String::new();
        while body.len() < 16 << 10 {
            // xorshift: no two lines alike.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            body.push_str(&format!("{x:016x}{:016x}\n", x.rotate_left(29)));
        }
        let msg = format!("Subject: m{i}\n\n{body}");
        fs::write(
            md.join(format!(
                "cur/{}.M{i}P1.host:2,S",
                1_700_000_000 + seed as u32 + i
            )),
            msg,
        )
        .unwrap();
    }
}

/// One Bacula job of the agent as the bpipe plugin runs it: `bacula backup --job ID --level
/// LEVEL --state-dir STATE` of every user under `home` (a `%u` template), `--quiet` and
/// `extra`, then `bacula finish`; both must succeed. The stream the job passed to Bacula.
pub(crate) fn agent_job(
    state: &Path,
    home: &str,
    id: &str,
    level: &str,
    extra: &[&str],
) -> Vec<u8> {
    let o = run_ok(
        maildump()
            .args([
                "bacula",
                "backup",
                "--job",
                id,
                "--level",
                level,
                "--state-dir",
            ])
            .arg(state)
            .args(["--location", "maildir:~/Maildir", "--home", home])
            .args(["--all-users", "--quiet"])
            .args(extra),
    );
    run_ok(
        maildump()
            .args(["bacula", "finish", "--job", id, "--state-dir"])
            .arg(state),
    );
    o.stdout
}

/// `bacula backup` + `finish` keep the Full's state with its message frames punched out
/// (on disk it takes a fraction of the archive), and an Incremental made against that
/// state restores, with the Full's stream, the store as it is.
#[test]
fn bacula_state_keeps_only_the_index() {
    let ws = Workspace::new();
    let (mail, state) = (ws.join("mail"), ws.join("state"));
    big_maildir(&mail, 200, 1);
    let home = format!("{}/%u", mail.display());
    let job = |id: &str, level: &str, out: &str| {
        let stream = agent_job(&state, &home, id, level, &[]);
        fs::write(ws.join(out), stream).unwrap();
    };
    job("1", "Full", "full.mdump");
    let kept = fs::metadata(state.join("committed/1.mdump")).unwrap();
    let streamed = fs::metadata(ws.join("full.mdump")).unwrap().len();
    assert_eq!(kept.len(), streamed, "same offsets as the archive");
    assert!(
        streamed > 1 << 20,
        "archive of {streamed} bytes is too small to tell"
    );
    assert!(
        kept.blocks() * 512 < streamed / 10,
        "state copy takes {} bytes on disk for a {streamed}-byte archive",
        kept.blocks() * 512
    );
    big_maildir(&mail, 210, 1);
    job("2", "Incremental", "inc.mdump");
    assert!(fs::metadata(ws.join("inc.mdump")).unwrap().len() < streamed / 5);
    let r = maildump()
        .arg("restore")
        .args([ws.join("full.mdump"), ws.join("inc.mdump")])
        .args(["--location", "maildir:~/Maildir", "--home"])
        .arg(format!("{}/%u", ws.join("r").display()))
        .arg("--quiet")
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(
        fs::read_dir(ws.join("r/alice/Maildir/cur"))
            .unwrap()
            .count(),
        210
    );
}
