//! Untrusted sizes, version disagreements and damage isolation (issue 13 items 6, 8, 9):
//! archives made hostile here, by rewriting what the writer wrote, each test saying what it
//! changes.

use std::fs;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::hostile::{BODY, inbox, plain, tampered_archive, user};
use crate::util::{Workspace, maildump, run, tree_listing};

/// The parts of an archive's end: INDEX frame offset and length.
fn index_extent(b: &[u8]) -> (usize, usize) {
    let foot = &b[b.len() - 64..];
    let off = u64::from_le_bytes(foot[16..24].try_into().unwrap()) as usize;
    let len = u64::from_le_bytes(foot[24..32].try_into().unwrap()) as usize;
    (off, len)
}

/// Rewrite the index directory of the archive at `path` with `f` (on its JSON), keeping
/// the catalogs, and write a footer whose digest matches: an index that is intact as far
/// as checksums go, and lies.
pub(crate) fn rewrite_directory(path: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let b = fs::read(path).unwrap();
    let (off, len) = index_extent(&b);
    let dir_len = u64::from_le_bytes(b[off + 16..off + 24].try_into().unwrap()) as usize;
    let dir = zstd::decode_all(&b[off + 24..off + 24 + dir_len]).unwrap();
    let mut j: serde_json::Value = serde_json::from_slice(&dir).unwrap();
    f(&mut j);
    let dir = zstd::encode_all(serde_json::to_vec(&j).unwrap().as_slice(), 3).unwrap();
    let cats = &b[off + 24 + dir_len..off + len];
    let mut index = b[off..off + 16].to_vec();
    index.extend_from_slice(&(dir.len() as u64).to_le_bytes());
    index.extend_from_slice(&dir);
    index.extend_from_slice(cats);
    let new_len = index.len();
    index[4..8].copy_from_slice(&((new_len - 8) as u32).to_le_bytes());
    let mut foot = b[b.len() - 72..].to_vec();
    foot[8 + 24..8 + 32].copy_from_slice(&(new_len as u64).to_le_bytes());
    foot[8 + 32..8 + 64].copy_from_slice(&Sha256::digest(&index[8..]));
    let mut out = b[..off].to_vec();
    out.extend_from_slice(&index);
    out.extend_from_slice(&foot);
    fs::write(path, out).unwrap();
}

/// Run `maildump ARGS`; returns (exit code, stdout, stderr), failing on a panic or signal.
fn md(args: &[&str], archive: &Path, more: &[&str]) -> (i32, Vec<u8>, String) {
    let out = run(maildump().args(args).arg(archive).args(more));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    let code = out
        .status
        .code()
        .unwrap_or_else(|| panic!("signal: {stderr}"));
    (code, out.stdout, stderr)
}

/// Three messages of alice's INBOX, UID 1 to 3, each with [`BODY`], with `tamper`
/// applied to their records.
fn three(path: &Path, tamper: impl FnOnce(&mut Vec<maildump::format::index::MessageRecord>)) {
    tampered_archive(
        path,
        user("alice"),
        inbox(),
        vec![plain(1), plain(2), plain(3)],
        tamper,
    );
}

/// Issue 13 item 6: `content.size = u64::MAX` on two messages made a debug build panic
/// ("attempt to add with overflow") when the archive was read by scanning; a size over
/// MESSAGE_LIMIT is damage, named, with or without the index.
#[test]
fn message_sizes_over_the_format_limit_are_damage_not_overflow() {
    let ws = Workspace::new();
    let a = ws.join("a.mdump");
    three(&a, |recs| {
        for r in recs.iter_mut().take(2) {
            r.message.content.size = u64::MAX;
        }
    });
    let noindex = ws.join("noindex.mdump");
    let b = fs::read(&a).unwrap();
    fs::write(&noindex, &b[..index_extent(&b).0]).unwrap();
    let limit = "corrupt archive: index catalog of alice/INBOX: UID 1: size 18446744073709551615 is over the format's limit of 8589934591 bytes";
    let scanned = "UID 1: size 18446744073709551615 is over the format's limit of 8589934591 bytes";
    // Through the index the catalog is damaged (exit 4); rebuilt by scanning, the
    // mailbox's record is named as unreadable and left out (list exit 1; cat and restore
    // find nothing of it, exit 8).
    for (archive, expect, codes) in [(&a, limit, [4, 4, 4, 4]), (&noindex, scanned, [8, 4, 1, 8])] {
        let uid1 = ["--user", "alice", "--mailbox", "INBOX", "--uid", "1"];
        let (code, out, err) = md(&["cat"], archive, &uid1);
        assert_eq!(code, codes[0], "{err}");
        assert!(err.contains(expect), "{err}");
        assert!(out.is_empty(), "cat wrote {} bytes", out.len());
        let (code, out, err) = md(&["verify"], archive, &[]);
        assert_eq!(code, codes[1], "{err}");
        let report = String::from_utf8_lossy(&out);
        assert!(report.contains(scanned), "{report}");
        let (code, _, err) = md(&["list"], archive, &[]);
        assert_eq!(code, codes[2], "{err}");
        assert!(err.contains(scanned), "{err}");
        let target = ws.join("t");
        let home = format!("{}/%u", target.display());
        let (code, _, err) = md(
            &["restore"],
            archive,
            &[
                "--location",
                "maildir:~/Maildir",
                "--home",
                &home,
                "--quiet",
            ],
        );
        assert_eq!(code, codes[3], "{err}");
        assert!(err.contains(scanned), "{err}");
        assert!(!target.exists(), "restore wrote something");
    }
}

/// Issue 13 item 6: a size that lies (more than the message's member holds, within the
/// limit) made `cat` write the next messages' bytes before failing. Now `cat` writes
/// nothing and names the member's real length; restore loses only that message.
#[test]
fn cat_never_writes_a_byte_outside_the_member() {
    let ws = Workspace::new();
    let a = ws.join("a.mdump");
    three(&a, |recs| recs[0].message.content.size = 5000);
    let uid1 = ["--user", "alice", "--mailbox", "INBOX", "--uid", "1"];
    let (code, out, err) = md(
        &["cat"],
        &a,
        &["--user", "alice", "--mailbox", "INBOX", "--uid", "1"],
    );
    assert_eq!(code, 4, "{err}");
    assert!(
        out.is_empty(),
        "cat wrote {} bytes: {:?}",
        out.len(),
        String::from_utf8_lossy(&out)
    );
    assert!(
        err.contains(
            "user alice mailbox INBOX UID 1: the record says 5000 bytes, its member holds 19"
        ),
        "{err}"
    );
    // The other messages are intact.
    let (code, out, err) = md(
        &["cat"],
        &a,
        &["--user", "alice", "--mailbox", "INBOX", "--uid", "2"],
    );
    assert_eq!((code, out.as_slice()), (0, BODY), "{err}");
    let target = ws.join("t");
    let (code, _, err) = md(
        &["restore"],
        &a,
        &[
            "--location",
            "maildir:~/Maildir",
            "--home",
            &format!("{}/%u", target.display()),
            "--quiet",
        ],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("UID 1: the record says 5000 bytes"), "{err}");
    let cur: Vec<_> = fs::read_dir(target.join("alice/Maildir/cur"))
        .unwrap()
        .collect();
    assert_eq!(cur.len(), 2);
    // A hash that lies (intact frames, the member as long as the record says): cat checks
    // the message before writing any of it.
    three(&a, |recs| recs[0].message.content.sha256 = "00".repeat(32));
    let (code, out, err) = md(&["cat"], &a, &uid1);
    assert_eq!(code, 4, "{err}");
    assert!(out.is_empty(), "cat wrote {} bytes", out.len());
    assert!(err.contains("UID 1: SHA-256 mismatch"), "{err}");
}

/// Issue 13 item 6: the index's `catalog_len` is checked against the index before
/// anything is allocated for it (before: a 1 GiB buffer, then "truncated").
#[test]
fn a_catalog_length_past_the_index_is_refused_before_allocating() {
    let ws = Workspace::new();
    let a = ws.join("a.mdump");
    three(&a, |_| {});
    rewrite_directory(&a, |j| {
        j["mailboxes"][0]["catalog_len"] = (1u64 << 30).into()
    });
    let (code, out, err) = md(
        &["cat"],
        &a,
        &["--user", "alice", "--mailbox", "INBOX", "--uid", "1"],
    );
    assert_eq!(code, 4, "{err}");
    assert!(out.is_empty());
    assert!(
        err.contains("index catalog of alice/INBOX: extends past the end of the index"),
        "{err}"
    );
    let (code, out, _) = md(&["verify"], &a, &[]);
    assert_eq!(code, 4);
    assert!(String::from_utf8_lossy(&out).contains("extends past the end of the index"));
}

/// Issue 13 item 8: one flipped bit in the HEADER's or the FOOTER's major version made the
/// whole archive unreadable (exit 5) although the other copy and the manifest say 1. A
/// disagreement is damage: readers go on with the version two copies agree on (list exit
/// 1 with a warning, cat works), verify names it (exit 4). All three saying 2 is still an
/// unsupported version (exit 5).
#[test]
fn a_version_disagreement_is_damage_not_an_unknown_version() {
    let ws = Workspace::new();
    let good = crate::corrupt::small_frame_archive(&ws);
    let b = fs::read(&good).unwrap();
    let foot = b.len() - 72 + 8 + 8;
    let a = ws.join("v.mdump");
    // The minor of the archive the helper wrote (the HEADER's minor follows its major).
    let minor = u16::from_le_bytes([b[18], b[19]]);
    for (what, at, text) in [
        (
            "HEADER",
            16usize,
            format!("HEADER says format 3.{minor}, the FOOTER and the manifest 1.{minor}"),
        ),
        (
            "FOOTER",
            foot,
            format!("FOOTER says format 3.{minor}, the HEADER and the manifest 1.{minor}"),
        ),
    ] {
        let mut v = b.clone();
        v[at] = 3;
        fs::write(&a, &v).unwrap();
        let (code, out, err) = md(&["verify"], &a, &[]);
        let out = String::from_utf8_lossy(&out);
        assert_eq!(code, 4, "{what}: {out}{err}");
        assert!(
            out.contains(&format!("DAMAGED: version: {text}")),
            "{what}: {out}"
        );
        assert_eq!(
            out.lines().filter(|l| l.starts_with("DAMAGED")).count(),
            1,
            "{out}"
        );
        let (code, out, err) = md(&["list"], &a, &[]);
        assert_eq!(code, 1, "{what}: {err}");
        assert!(err.contains(&text), "{what}: {err}");
        assert_eq!(
            String::from_utf8_lossy(&out)
                .lines()
                .filter(|l| !l.starts_with(';'))
                .count(),
            12
        );
        let (code, out, err) = md(
            &["cat"],
            &a,
            &["--user", "bob", "--mailbox", "INBOX", "--uid", "1"],
        );
        assert_eq!(code, 0, "{what}: {err}");
        assert!(!out.is_empty());
    }
    // The manifest disagreeing with HEADER and FOOTER.
    fs::write(&a, &b).unwrap();
    rewrite_directory(&a, |j| j["manifest"]["format_major"] = 2.into());
    let (code, out, _) = md(&["verify"], &a, &[]);
    assert_eq!(code, 4);
    let out = String::from_utf8_lossy(&out);
    assert!(
        out.contains(&format!(
            "DAMAGED: version: the manifest says format 2.{minor}, the HEADER and the FOOTER 1.{minor}"
        )),
        "{out}"
    );
    // All three agree on a major this build does not read: unsupported, exit 5.
    let mut v = b.clone();
    v[16] = 2;
    v[foot] = 2;
    fs::write(&a, &v).unwrap();
    rewrite_directory(&a, |j| j["manifest"]["format_major"] = 2.into());
    for cmd in ["verify", "list"] {
        let (code, _, err) = md(&[cmd], &a, &[]);
        assert_eq!(code, 5, "{cmd}: {err}");
        assert!(
            err.contains(&format!("unsupported archive format version 2.{minor}")),
            "{err}"
        );
    }
    // Without a footer, the HEADER disagreeing with the manifest found by scanning.
    let mut v = b[..index_extent(&b).0].to_vec();
    v[16] = 3;
    fs::write(&a, &v).unwrap();
    let (code, out, _) = md(&["verify"], &a, &[]);
    assert_eq!(code, 4);
    let out = String::from_utf8_lossy(&out);
    assert!(
        out.contains(&format!(
            "DAMAGED: version: HEADER says format 3.{minor}, the manifest 1.{minor}"
        )),
        "{out}"
    );
    let (code, _, err) = md(&["list"], &a, &[]);
    assert_eq!(code, 1, "{err}");
}

/// Issue 13 item 8: verify passed an archive whose index lies about a frame's
/// decompressed length, which cat and restore then could not read. "verify OK" must mean
/// they can: each frame table entry is checked against the frame.
#[test]
fn verify_checks_the_frame_table_cat_relies_on() {
    let ws = Workspace::new();
    let a = crate::corrupt::small_frame_archive(&ws);
    rewrite_directory(&a, |j| {
        let f = &mut j["frames"][2]["usize"];
        *f = (f.as_u64().unwrap() + 1).into();
    });
    let (code, out, _) = md(&["verify"], &a, &[]);
    let out = String::from_utf8_lossy(&out);
    assert_eq!(code, 4, "{out}");
    assert!(
        out.contains("DAMAGED: frame 2 at offset") && out.contains("the index says"),
        "{out}"
    );
}

/// Issue 13 item 9: no footer (truncated before the index) and one damaged data frame:
/// restore refused everything (exit 8, "bytes are in no archive given") although nearly
/// all messages were intact. Now it restores every intact message and names the others
/// (exit 1).
#[test]
fn no_footer_and_a_damaged_frame_still_restore_every_intact_message() {
    let ws = Workspace::new();
    let a = crate::corrupt::small_frame_archive(&ws);
    let listing =
        String::from_utf8(crate::util::run_ok(maildump().args(["list", "--json"]).arg(&a)).stdout)
            .unwrap();
    assert_eq!(listing.lines().count(), 12);
    let b = fs::read(&a).unwrap();
    let (index_at, _) = index_extent(&b);
    let t = ws.join("t.mdump");
    // Damage one byte in the data frames until a message (not only metadata) is hit.
    for off in (b.len() / 3..index_at).step_by(97) {
        let mut v = b[..index_at].to_vec();
        v[off] ^= 0xff;
        fs::write(&t, &v).unwrap();
        let (_, out, _) = md(&["verify"], &t, &[]);
        let report = String::from_utf8_lossy(&out).into_owned();
        let lost: Vec<&str> = report
            .lines()
            .filter(|l| l.contains("message bytes lost"))
            .collect();
        if lost.is_empty() {
            continue;
        }
        let target = ws.join("r");
        let before = tree_listing(ws.path());
        let (code, _, err) = md(
            &["restore"],
            &t,
            &[
                "--location",
                "maildir:~/Maildir",
                "--home",
                &format!("{}/%u", target.display()),
                "--quiet",
            ],
        );
        assert_eq!(code, 1, "flip at {off}: {err}");
        assert!(err.contains("lost"), "{err}");
        let restored = crate::util::files_under(&target)
            .iter()
            .filter(|p| {
                p.parent()
                    .is_some_and(|d| d.ends_with("cur") || d.ends_with("new"))
            })
            .count();
        let mailbox_lost = report.contains("its state is not in the tar stream");
        assert!(
            restored + lost.len() >= 12 || mailbox_lost,
            "restored {restored}, lost {}: {report}\n{err}",
            lost.len()
        );
        assert!(restored >= 6, "restored only {restored}:\n{report}\n{err}");
        // Nothing written outside the target.
        let after = tree_listing(ws.path());
        for line in after.lines().filter(|l| !before.contains(*l)) {
            assert!(line.starts_with("r/") || line.starts_with("r\t"), "{line}");
        }
        return;
    }
    panic!("no flip hit a message body");
}

/// Issue 13 item 8, messages stored in parts (1.2): a catalog whose part list does not fit
/// its data member (a range one byte too long) passed verify, and cat could not put the
/// message together. verify now checks each part list as cat will use it.
#[test]
fn verify_checks_the_part_lists_cat_relies_on() {
    let ws = Workspace::new();
    let a = ws.join("parts.mdump");
    crate::corrupt::one_message_archive(
        &a,
        "sdbox",
        2,
        ("carol", "INBOX", Some("00112233445566778899aabbccddeeff")),
        |w, _, _| {
            let meta = maildump::model::MessageMeta {
                size_physical: 20,
                ..crate::corrupt::bare_meta("0123456789abcdef0123456789abcdef")
            };
            let mut rec = crate::corrupt::sis_message(w, meta);
            rec.message.content.parts[2].size = 7;
            rec
        },
    );
    let (code, out, err) = md(&["verify"], &a, &[]);
    let report = String::from_utf8_lossy(&out);
    assert_eq!(code, 4, "{report}{err}");
    assert!(
        report.contains("DAMAGED: user carol mailbox INBOX UID 1: its parts do not fit: part 2: range 5+7 outside the data member (11 bytes)"),
        "{report}"
    );
    let (code, out, err) = md(
        &["cat"],
        &a,
        &["--user", "carol", "--mailbox", "INBOX", "--uid", "1"],
    );
    assert_eq!(code, 4, "{err}");
    assert!(out.is_empty());
    assert!(err.contains("cannot put the message together"), "{err}");
}
