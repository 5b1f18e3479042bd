//! What a user sees, snapshotted (insta): `list` and `verify` of the format vectors, and
//! the error messages of common mistakes with their exit codes (every `--help` is in
//! `cli::every_help_is_as_documented`). A change to
//! any of them shows up as a snapshot diff to review (`cargo insta review`, or
//! `INSTA_UPDATE=always cargo test --test it ui::` then read the `.snap` diff).

use std::fs;
use std::path::{Path, PathBuf};

use crate::util::{Workspace, maildump, run};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `maildump ARGS` run in `dir`: exit code, stdout and stderr as one text to snapshot.
fn shown(dir: &Path, args: &[&str]) -> String {
    let out = run(maildump().current_dir(dir).args(args));
    format!(
        "$ maildump {}\nexit: {:?}\n--- stdout\n{}--- stderr\n{}",
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn list_and_verify_of_the_vectors_are_as_snapshotted() {
    let v = "format-spec/vectors/v1";
    let mut ran = 0;
    for name in ["fixture", "sis", "modseq", "chain"] {
        let a = format!("{v}/{name}.mdump");
        insta::assert_snapshot!(format!("list_{name}"), shown(&repo(), &["list", &a]));
        insta::assert_snapshot!(format!("verify_{name}"), shown(&repo(), &["verify", &a]));
        ran += 1;
    }
    let chain: Vec<String> = ["chain", "chain.inc1", "chain.inc2", "chain.inc3"]
        .iter()
        .map(|n| format!("{v}/{n}.mdump"))
        .collect();
    let chain: Vec<&str> = chain.iter().map(String::as_str).collect();
    let args = [&["verify"][..], &chain].concat();
    insta::assert_snapshot!("verify_chain_of_four", shown(&repo(), &args));
    let args = [&["list", "--deleted"][..], &chain].concat();
    insta::assert_snapshot!("list_deleted_chain_of_four", shown(&repo(), &args));
    assert_eq!(ran, 4);
}

#[test]
fn error_messages_are_as_snapshotted() {
    let ws = Workspace::new();
    let dir = ws.join("cwd");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("garbage.mdump"), b"this is not an archive\n").unwrap();
    let vector = repo().join("format-spec/vectors/v1/fixture.mdump");
    fs::copy(&vector, dir.join("fixture.mdump")).unwrap();
    // A live Maildir whose subscriptions file is a directory: the merge fails on it, and
    // the error names the user it was restoring.
    let live = dir.join("live/alice/Maildir");
    for d in ["cur", "new", "tmp", "subscriptions/x"] {
        fs::create_dir_all(live.join(d)).unwrap();
    }
    // (name, arguments split at spaces)
    let cases = [
        ("bad_option", "list --no-such-option fixture.mdump"),
        ("missing_archive", "list nosuch.mdump"),
        ("not_an_archive", "list garbage.mdump"),
        ("verify_not_an_archive", "verify garbage.mdump"),
        ("stdin_given_twice", "list - -"),
        ("stdin_empty", "list -"),
        (
            "cat_without_key",
            "cat fixture.mdump --user alice --mailbox INBOX",
        ),
        (
            "cat_unknown_user",
            "cat fixture.mdump --user nobody --mailbox INBOX --uid 1",
        ),
        (
            "cat_unknown_uid",
            "cat fixture.mdump --user alice --mailbox INBOX --uid 999999",
        ),
        (
            "backup_without_location",
            "backup --location maildir:~/Maildir --user alice -o x.mdump",
        ),
        (
            "restore_bad_owner",
            "restore fixture.mdump --location maildir:~/Maildir --home h/%u --owner root",
        ),
        (
            "restore_unknown_user",
            "restore fixture.mdump --location maildir:~/Maildir --home h/%u --user nobody",
        ),
        (
            "restore_merge_user_context",
            "restore fixture.mdump --location maildir:~/Maildir --home live/%u --user alice --mode merge",
        ),
        // Not an error: the mail is restored, the METADATA named as not taken (exit 1).
        (
            "restore_metadata_without_dictionary",
            "restore fixture.mdump --location maildir:nodict/%u",
        ),
    ];
    for (name, args) in cases {
        let args: Vec<&str> = args.split(' ').collect();
        insta::assert_snapshot!(format!("error_{name}"), shown(&dir, &args));
    }
    assert!(!dir.join("x.mdump").exists() && !dir.join("h").exists());
}
