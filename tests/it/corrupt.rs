//! Bad input: truncated and bit-flipped archives give a clear error and a defined exit code,
//! never a panic; items in undamaged frames still list, cat and restore.

use std::fs;
use std::path::{Path, PathBuf};

use crate::util::{Workspace, maildump, run, run_ok};

/// The fixture backed up with tiny frames, so damage can hit one frame among many.
pub(crate) fn small_frame_archive(ws: &Workspace) -> PathBuf {
    let store = crate::cli::fixture_copy(ws);
    let a = ws.join("small.mdump");
    run_ok(
        crate::cli::backup_cmd(&store)
            .args([
                "--all-users",
                "--quiet",
                "--threads",
                "1",
                "--frame-target",
                "1024",
                "-o",
            ])
            .arg(&a),
    );
    a
}

fn code_of(args: &[&str], archive: &Path) -> (i32, String) {
    let out = run(maildump().args(args).arg(archive));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    // A panic exits with 101 and prints "panicked"; a signal has no code.
    let code = out
        .status
        .code()
        .unwrap_or_else(|| panic!("killed by a signal: {args:?}\n{stderr}"));
    assert!(
        !stderr.contains("panicked"),
        "panic for {args:?} on {}:\n{stderr}",
        archive.display()
    );
    (code, stderr)
}

#[test]
fn truncation_at_many_offsets_is_reported_never_a_panic() {
    let ws = Workspace::new();
    let a = small_frame_archive(&ws);
    let bytes = fs::read(&a).unwrap();
    let mut offsets: Vec<usize> = (0..bytes.len()).step_by(61).collect();
    offsets.extend([1, 8, 23, 24, 25, bytes.len() - 72, bytes.len() - 1]);
    let t = ws.join("t.mdump");
    let mut checked = 0;
    for off in offsets {
        fs::write(&t, &bytes[..off]).unwrap();
        let (code, err) = code_of(&["verify"], &t);
        assert_eq!(
            code, 4,
            "verify of archive truncated at {off} gave {code}: {err}"
        );
        let (code, err) = code_of(&["list"], &t);
        assert!(
            matches!(code, 1 | 4),
            "list of archive truncated at {off} gave {code}: {err}"
        );
        if code == 4 {
            assert!(err.contains("corrupt archive"), "{err}");
        }
        checked += 1;
    }
    assert!(checked > 20);
}

#[test]
fn bit_flips_anywhere_are_detected_by_verify() {
    let ws = Workspace::new();
    let a = small_frame_archive(&ws);
    let bytes = fs::read(&a).unwrap();
    let t = ws.join("f.mdump");
    let mut checked = 0;
    for off in (0..bytes.len()).step_by(47) {
        let mut b = bytes.clone();
        b[off] ^= 0x10;
        fs::write(&t, &b).unwrap();
        let (code, err) = code_of(&["verify"], &t);
        assert!(
            matches!(code, 4 | 5),
            "flip at {off}: verify gave {code}: {err}"
        );
        let (code, err) = code_of(&["list", "--json"], &t);
        assert!(
            matches!(code, 0 | 1 | 4 | 5),
            "flip at {off}: list gave {code}: {err}"
        );
        checked += 1;
    }
    assert!(checked > 50, "{checked}");
}

/// `bit_flips_anywhere_are_detected_by_verify` steps by 47 bytes, so it reaches the
/// HEADER's size and reserved field never and the FOOTER's reserved field only when the
/// archive's length puts one there (it failed once so): every byte of both, here.
#[test]
fn every_byte_of_the_header_and_footer_frames_is_checked_by_verify() {
    let ws = Workspace::new();
    let a = small_frame_archive(&ws);
    let bytes = fs::read(&a).unwrap();
    let t = ws.join("f.mdump");
    let footer = bytes.len() - 72;
    for off in (0..24).chain(footer..bytes.len()) {
        let mut b = bytes.clone();
        b[off] ^= 0x10;
        fs::write(&t, &b).unwrap();
        let (code, err) = code_of(&["verify"], &t);
        assert!(
            matches!(code, 4 | 5),
            "flip at {off}: verify gave {code}: {err}"
        );
    }
}

#[test]
fn a_damaged_frame_loses_only_its_items() {
    let ws = Workspace::new();
    let a = small_frame_archive(&ws);
    let bytes = fs::read(&a).unwrap();
    // Damage the middle of the data frames: find the frame holding bob's INBOX UID 1.
    let listing =
        String::from_utf8(run_ok(maildump().args(["list", "--json"]).arg(&a)).stdout).unwrap();
    assert_eq!(listing.lines().count(), 12);
    // Flip bytes in successive places of the data region until one hits a message body.
    let t = ws.join("d.mdump");
    let index_at = {
        let f = &bytes[bytes.len() - 64..];
        u64::from_le_bytes(f[16..24].try_into().unwrap()) as usize
    };
    let mut found = None;
    for off in (bytes.len() / 4..index_at).step_by(211) {
        let mut b = bytes.clone();
        b[off] ^= 0xff;
        fs::write(&t, &b).unwrap();
        let out = run(maildump().arg("verify").arg(&t));
        assert_eq!(out.status.code(), Some(4), "flip at {off} not detected");
        let report = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(report.lines().any(|l| l.starts_with("DAMAGED")), "{report}");
        // Every message either cats intact (its hash matches) or fails with exit 4.
        let (mut ok, mut bad) = (0, 0);
        for line in listing.lines() {
            let j: serde_json::Value = serde_json::from_str(line).unwrap();
            let out = run(maildump().arg("cat").arg(&t).args([
                "--user",
                j["user"].as_str().unwrap(),
                "--mailbox",
                j["mailbox"].as_str().unwrap(),
                "--uid",
                &j["uid"].to_string(),
            ]));
            if out.status.success() {
                assert_eq!(
                    crate::util::sha256_hex(&out.stdout),
                    j["sha256"].as_str().unwrap()
                );
                ok += 1;
            } else {
                assert_eq!(out.status.code(), Some(4));
                assert!(
                    report.contains(&format!("UID {}", j["uid"])),
                    "cat failed for a message verify did not name:\n{report}"
                );
                bad += 1;
            }
        }
        if bad > 0 {
            found = Some((ok, bad));
            break;
        }
    }
    let (ok, bad) = found.expect("no flip in the data region hit a message body");
    assert!(ok >= 6 && bad >= 1, "ok {ok} bad {bad}");
    // Restore writes the intact messages and reports the rest (exit 1).
    let target = ws.join("target");
    let out = run(crate::cli::restore_cmd(&t, &target).arg("--quiet"));
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written = walk_count(&target);
    assert!(
        written >= ok,
        "restored {written} message files, {ok} were intact"
    );
}

fn walk_count(p: &Path) -> usize {
    let mut n = 0;
    if let Ok(rd) = fs::read_dir(p) {
        for e in rd {
            let e = e.unwrap();
            let path = e.path();
            if path.is_dir() {
                n += walk_count(&path);
            } else if path
                .parent()
                .is_some_and(|d| d.ends_with("cur") || d.ends_with("new"))
            {
                n += 1;
            }
        }
    }
    n
}

/// An archive at `path` holding one message (UID 1) in `mailbox` of `user`, written through
/// the library's writer: for names and paths `backup` would never write. `meta` is the
/// message's metadata; `add` stores it and returns its record.
pub(crate) fn one_message_archive(
    path: &Path,
    store: &str,
    minor: u16,
    ids: (&str, &str, Option<&str>),
    add: impl FnOnce(
        &mut maildump::format::writer::ArchiveWriter<fs::File>,
        &maildump::model::Name,
        &maildump::model::Name,
    ) -> maildump::format::index::MessageRecord,
) {
    one_mailbox_archive(path, store, minor, ids, |w, u, mb| vec![add(w, u, mb)]);
}

/// An archive of one mailbox of one user, with the messages `add` writes (written through
/// the library's writer with default options).
pub(crate) fn one_mailbox_archive(
    path: &Path,
    store: &str,
    minor: u16,
    (user, mailbox, guid): (&str, &str, Option<&str>),
    add: impl FnOnce(
        &mut maildump::format::writer::ArchiveWriter<fs::File>,
        &maildump::model::Name,
        &maildump::model::Name,
    ) -> Vec<maildump::format::index::MessageRecord>,
) {
    use maildump::format::writer::{ArchiveWriter, WriterOptions};
    use maildump::model::*;
    let manifest = crate::util::test_manifest(store, minor, "x");
    let file = fs::File::create(path).unwrap();
    let mut w = ArchiveWriter::new(file, manifest, &WriterOptions::default()).unwrap();
    let (u, mb) = (Name::from(user), Name::from(mailbox));
    let recs = add(&mut w, &u, &mb);
    let mbm = MailboxMeta {
        name: mb.clone(),
        guid: guid.map(String::from),
        uidvalidity: 1,
        uidnext: recs.iter().map(|r| r.message.uid.0 + 1).max().unwrap_or(1),
        highest_modseq: None,
        keywords: vec![],
        attributes: vec![],
        owner: None,
        uidlist_header_ext: vec![],
    };
    w.add_mailbox(&u, mbm, recs, vec![], None).unwrap();
    w.add_user(
        UserMeta {
            name: u,
            ..Default::default()
        },
        vec![mb],
    )
    .unwrap();
    w.finish().unwrap();
}

/// Metadata of UID 1 with nothing but a GUID.
pub(crate) fn bare_meta(guid: &str) -> maildump::model::MessageMeta {
    use maildump::model::*;
    MessageMeta {
        uid: Uid(1),
        guid: Name::from(guid),
        flags: Flags::empty(),
        keywords: vec![],
        received: Timestamp { secs: 1, nanos: 0 },
        saved: None,
        modseq: None,
        changed: None,
        storage_key: None,
        size_physical: 0,
        size_virtual: None,
        pop3_uidl: None,
        pop3_order: None,
        owner: None,
        maildir: None,
        sdbox: None,
        mdbox: None,
        from: None,
        subject: None,
        message_id: None,
        content: Content::default(),
    }
}

#[test]
fn hostile_names_in_an_archive_are_refused() {
    // Build an archive whose user is named "../evil" by editing a store name is impossible
    // (backup refuses such users), so write one through the library's writer directly.
    use maildump::model::*;
    let ws = Workspace::new();
    for (user, mailbox) in [
        ("../evil", "INBOX"),
        ("/abs", "INBOX"),
        ("a/b", "INBOX"),
        ("ok", "../../etc"),
        ("ok", "a/../../b"),
        ("ok", "x\0y"),
    ] {
        one_message_archive(
            &ws.join("h.mdump"),
            "maildir",
            0,
            (user, mailbox, None),
            |w, u, mb| {
                let meta = MessageMeta {
                    size_physical: 3,
                    maildir: Some(MaildirMessage {
                        filename: Name::from("../../../../tmp/pwned:2,S"),
                        ..Default::default()
                    }),
                    ..bare_meta("g")
                };
                w.add_message(
                    u,
                    mb,
                    meta,
                    &mut std::io::Cursor::new(&b"hi\n"[..]),
                    3,
                    Path::new("x"),
                )
                .unwrap()
            },
        );
        let target = ws.join("t");
        let out = run(maildump()
            .arg("restore")
            .arg(ws.join("h.mdump"))
            .args(["--location", "maildir:~/Maildir", "--home"])
            .arg(format!("{}/%u", target.display()))
            .arg("--quiet"));
        assert_eq!(
            out.status.code(),
            Some(4),
            "{user:?} {mailbox:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("hostile"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !target.exists(),
            "something was written for {user:?} {mailbox:?}"
        );
        assert!(!Path::new("/tmp/pwned:2,S").exists());
    }
}

/// UID 1 stored in parts (1.2): "head\n" + base64 of the 6-byte blob `abcdef` in lines of
/// 4 + "\ntail\n", the message `head\nYWJj\nZGVm\ntail\n`.
pub(crate) fn sis_message(
    w: &mut maildump::format::writer::ArchiveWriter<fs::File>,
    meta: maildump::model::MessageMeta,
) -> maildump::format::index::MessageRecord {
    use maildump::mime::parts;
    let data = b"head\n\ntail\n";
    let blob = b"abcdef".to_vec();
    let sha = parts::digest(
        &[parts::blob(String::new(), 6, None, false)],
        b"",
        std::slice::from_ref(&blob),
    )
    .unwrap()
    .0;
    let layout = vec![
        parts::range(0, 5),
        parts::blob(sha, 6, Some(4), false),
        parts::range(5, 6),
    ];
    w.add_message_in_parts(meta, data, layout, &[blob], Path::new("x"))
        .unwrap()
}

/// An sdbox archive (1.2) of `user`'s INBOX holding one message ([`sis_message`]) whose
/// single-instance attachment has the X path `x_path`.
pub(crate) fn sis_archive(path: &Path, user: &str, x_path: &str) {
    use maildump::model::*;
    one_message_archive(
        path,
        "sdbox",
        2,
        (user, "INBOX", Some("00112233445566778899aabbccddeeff")),
        |w, _, _| {
            let meta = MessageMeta {
                size_physical: 20,
                sdbox: Some(DboxFacts {
                    attachments: vec![AttachmentRef {
                        start: 5,
                        size: 9,
                        options: "B4".into(),
                        path: Name::from(x_path),
                    }],
                    other: vec![],
                }),
                ..bare_meta("0123456789abcdef0123456789abcdef")
            };
            sis_message(w, meta)
        },
    );
}

/// A 1.2 archive whose single-instance attachment path climbs out of the attachment
/// directory (`../`) or is absolute: restoring into an sdbox with an attachment directory
/// refuses it (exit 4) and writes nothing outside.
#[test]
fn hostile_attachment_paths_are_refused() {
    let ws = Workspace::new();
    for path in ["../../escaped", "/tmp/abs-escape", "ab/../../x"] {
        sis_archive(&ws.join("h.mdump"), "carol", path);
        // The message itself is intact: cat puts it together.
        let out = run_ok(maildump().arg("cat").arg(ws.join("h.mdump")).args([
            "--user",
            "carol",
            "--mailbox",
            "INBOX",
            "--uid",
            "1",
        ]));
        assert_eq!(out.stdout, b"head\nYWJj\nZGVm\ntail\n");
        let target = ws.join("t");
        let out = run(maildump()
            .arg("restore")
            .arg(ws.join("h.mdump"))
            .args([
                "--location",
                "sdbox:~/sdbox",
                "--attachment-dir",
                "~/att",
                "--home",
            ])
            .arg(format!("{}/%u", target.display()))
            .arg("--quiet"));
        assert_eq!(
            out.status.code(),
            Some(4),
            "{path:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("refused"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!ws.join("escaped").exists() && !Path::new("/tmp/abs-escape").exists());
    }
}
