//! Nothing left out silently (issues 11 and 13): a symlinked `cur/`, mailbox directory or
//! message file is named and never followed, a duplicate base name is named, one
//! unreadable message file is named and the rest is backed up; each gives exit 1.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use crate::live_backup::archive_messages;
use crate::util::{Workspace, is_root, maildump, run_expect_code};

/// A Maildir++ store of user `u`: INBOX with `n` messages in `cur/` and a uidlist.
fn store(ws: &Workspace, n: usize) -> (PathBuf, Vec<(String, Vec<u8>)>) {
    let md = ws.join("home/u/Maildir");
    mailbox(&md, n, "inbox")
}

fn mailbox(dir: &Path, n: usize, tag: &str) -> (PathBuf, Vec<(String, Vec<u8>)>) {
    for sub in ["cur", "new", "tmp"] {
        fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let mut uidlist = format!("3 V1700000000 N{}\n", n + 1);
    let mut msgs = Vec::new();
    for i in 0..n {
        let base = format!("{}.M{i}P1.{tag}", 1_700_000_000 + i);
        let body = format!("Subject: {tag} {i}\n\nbody {i}\n").into_bytes();
        fs::write(dir.join("cur").join(format!("{base}:2,S")), &body).unwrap();
        uidlist.push_str(&format!("{} :{base}\n", i + 1));
        msgs.push((base, body));
    }
    fs::write(dir.join("dovecot-uidlist"), uidlist).unwrap();
    (dir.to_path_buf(), msgs)
}

fn backup(ws: &Workspace, code: i32) -> (String, PathBuf) {
    let archive = ws.join("a.mdump");
    let out = run_expect_code(
        maildump()
            .args(["backup", "--location", "maildir:~/Maildir", "--home"])
            .arg(ws.join("home/%u"))
            .args(["--user", "u", "-o"])
            .arg(&archive),
        code,
    );
    (String::from_utf8_lossy(&out.stderr).into_owned(), archive)
}

/// No byte of `/etc` in any archived message.
fn assert_nothing_of_etc(archive: &Path) {
    let passwd = fs::read("/etc/passwd").unwrap();
    for (mb, msgs) in archive_messages(archive) {
        for (uid, guid, bytes) in msgs {
            assert!(
                bytes != passwd && !guid.contains("passwd") && !guid.contains("shadow"),
                "{mb} UID {uid} ({guid}) holds a file of /etc"
            );
        }
    }
}

#[test]
fn symlinked_cur_of_inbox_is_named_not_followed() {
    let ws = Workspace::new();
    let (md, _) = store(&ws, 2);
    fs::remove_dir_all(md.join("cur")).unwrap();
    symlink("/etc", md.join("cur")).unwrap();
    let (_, w) = mailbox(&md.join(".Work"), 2, "work");
    let (err, archive) = backup(&ws, 1);
    assert!(
        err.contains("mailbox INBOX") && err.contains("Maildir/cur: is a symbolic link"),
        "{err}"
    );
    assert_nothing_of_etc(&archive);
    let got = archive_messages(&archive);
    assert!(!got.contains_key("INBOX"), "{got:?}");
    let work: Vec<&Vec<u8>> = got["Work"].iter().map(|(_, _, b)| b).collect();
    assert_eq!(work, w.iter().map(|(_, b)| b).collect::<Vec<_>>());
}

#[test]
fn symlinked_cur_of_a_folder_and_symlinked_folder_are_named() {
    let ws = Workspace::new();
    let (md, inbox) = store(&ws, 3);
    let (boxdir, _) = mailbox(&md.join(".Box"), 1, "box");
    fs::remove_dir_all(boxdir.join("cur")).unwrap();
    symlink("/etc", boxdir.join("cur")).unwrap();
    // A whole folder that is a symlink to a directory elsewhere.
    let (_, _) = mailbox(&ws.join("elsewhere"), 1, "elsewhere");
    symlink(ws.join("elsewhere"), md.join(".Evil")).unwrap();
    let (err, archive) = backup(&ws, 1);
    assert!(err.contains(".Box/cur: is a symbolic link"), "{err}");
    assert!(
        err.contains(".Evil: is a symbolic link to a directory; not followed"),
        "{err}"
    );
    assert!(err.contains("2 items left out"), "{err}");
    assert_nothing_of_etc(&archive);
    let got = archive_messages(&archive);
    assert_eq!(got.keys().collect::<Vec<_>>(), ["INBOX"]);
    assert_eq!(got["INBOX"].len(), inbox.len());
}

#[test]
fn symlinked_message_file_is_named_and_the_rest_backed_up() {
    let ws = Workspace::new();
    let (md, inbox) = store(&ws, 3);
    // The uidlist lists it: it is named, not taken for an expunged message.
    fs::remove_file(md.join("cur").join(format!("{}:2,S", inbox[1].0))).unwrap();
    symlink(
        "/etc/passwd",
        md.join("cur").join(format!("{}:2,S", inbox[1].0)),
    )
    .unwrap();
    // A FIFO is not a message either.
    rustix::fs::mknodat(
        rustix::fs::CWD,
        md.join("new/1700000100.M9P1.fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let (err, archive) = backup(&ws, 1);
    assert!(
        err.contains(&format!("{}:2,S: is a symbolic link", inbox[1].0)),
        "{err}"
    );
    assert!(
        err.contains("1700000100.M9P1.fifo: not a regular file"),
        "{err}"
    );
    assert_nothing_of_etc(&archive);
    let got = archive_messages(&archive);
    let bodies: Vec<&Vec<u8>> = got["INBOX"].iter().map(|(_, _, b)| b).collect();
    assert_eq!(bodies, [&inbox[0].1, &inbox[2].1]);
}

#[test]
fn duplicate_base_name_is_named() {
    let ws = Workspace::new();
    let (md, inbox) = store(&ws, 2);
    // The same base in new/ too, another file (not a rename caught twice).
    fs::write(md.join("new").join(&inbox[0].0), b"Subject: another\n\nx\n").unwrap();
    let (err, archive) = backup(&ws, 1);
    assert!(
        err.contains(&format!("new/{}: duplicate of", inbox[0].0)),
        "{err}"
    );
    let got = archive_messages(&archive);
    let bodies: Vec<&Vec<u8>> = got["INBOX"].iter().map(|(_, _, b)| b).collect();
    assert_eq!(bodies, [&inbox[0].1, &inbox[1].1]);
}

/// One message file that cannot be read: named, the rest backed up, exit 1 (it was exit 3
/// for the whole run). As root, maildump runs without the capabilities that override file
/// permissions (`setpriv`), so the file's mode 000 applies to it.
#[test]
fn one_unreadable_message_file_does_not_stop_the_backup() {
    let ws = Workspace::new();
    let (md, inbox) = store(&ws, 3);
    let bad = md.join("cur").join(format!("{}:2,S", inbox[1].0));
    fs::set_permissions(&bad, fs::Permissions::from_mode(0o000)).unwrap();
    let (_, w) = mailbox(&md.join(".Work"), 2, "work");
    let archive = ws.join("a.mdump");
    let mut cmd = if is_root() {
        let mut c = std::process::Command::new("setpriv");
        c.args(["--bounding-set", "-dac_override,-dac_read_search", "--"])
            .arg(env!("CARGO_BIN_EXE_maildump"));
        c
    } else {
        maildump()
    };
    cmd.args(["backup", "--location", "maildir:~/Maildir", "--home"])
        .arg(ws.join("home/%u"))
        .args(["--user", "u", "-o"])
        .arg(&archive);
    let out = run_expect_code(&mut cmd, 1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("mailbox INBOX UID 2: left out")
            && err.contains("Permission denied")
            && err.contains(&inbox[1].0),
        "{err}"
    );
    let got = archive_messages(&archive);
    let bodies: Vec<&Vec<u8>> = got["INBOX"].iter().map(|(_, _, b)| b).collect();
    assert_eq!(bodies, [&inbox[0].1, &inbox[2].1]);
    assert_eq!(got["Work"].len(), w.len());
}

/// An archive whose mailbox has two records with one UID (damaged or hostile): a restore
/// names the second and leaves it out, in Maildir and in sdbox/mdbox (the dbox writer used
/// to drop it without a word); exit 1.
#[test]
fn restore_names_records_sharing_a_uid() {
    use maildump::model::Uid;
    use maildump::store::location::Location;
    let ws = Workspace::new();
    let archive = ws.join("dup.mdump");
    crate::corrupt::one_mailbox_archive(
        &archive,
        "maildir",
        1,
        ("u", "INBOX", None),
        |w, u, mb| {
            [(1, "first"), (1, "second"), (2, "third")]
                .iter()
                .map(|(uid, g)| {
                    let body = format!("Subject: {g}\n\n{g}\n").into_bytes();
                    let meta = maildump::model::MessageMeta {
                        uid: Uid(*uid),
                        size_physical: body.len() as u64,
                        ..crate::corrupt::bare_meta(g)
                    };
                    let mut cur = std::io::Cursor::new(body.clone());
                    w.add_message(u, mb, meta, &mut cur, body.len() as u64, Path::new(g))
                        .unwrap()
                })
                .collect::<Vec<_>>()
        },
    );
    for location in ["maildir:~/Maildir", "sdbox:~/sdbox", "mdbox:~/mdbox"] {
        let home = ws.join(format!("r-{}", &location[..5]));
        let out = run_expect_code(
            maildump()
                .arg("restore")
                .arg(&archive)
                .args(["--location", location, "--home"])
                .arg(format!("{}/%u", home.display())),
            1,
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("mailbox INBOX UID 1: another message of the mailbox has the same UID"),
            "{location}: {err}"
        );
        let loc = Location::parse(location, Some(format!("{}/%u", home.display()))).unwrap();
        let r = maildump::store::open_reader(&loc, "u").unwrap();
        let inbox = r.mailboxes().unwrap().remove(0);
        let (_, msgs) = r.scan(&inbox).unwrap();
        let got: Vec<(u32, String)> = msgs.iter().map(|m| (m.uid.0, m.guid.to_string())).collect();
        assert_eq!(
            got,
            [(1, "first".to_string()), (2, "third".to_string())],
            "{location}"
        );
    }
}
