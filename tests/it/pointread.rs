//! Point reads (issue 17): `cat` of one message reads the footer, the directory, the
//! catalog it needs and the frame holding the bytes up to their last byte, whatever the
//! archive's size; damage elsewhere does not stop it, damage where it reads never gives
//! wrong bytes.

use std::fs;
use std::path::{Path, PathBuf};

use maildump::format::index::Directory;
use maildump::format::writer::{ArchiveWriter, WriterOptions};
use maildump::model::{MailboxMeta, Name, Uid, UserMeta};
use maildump::ops::inspect::{self, MessageKey};

use crate::corrupt::bare_meta;
use crate::util::{Workspace, maildump, run, run_ok, sha256_hex, test_manifest};

/// A message body of about 3 KiB, different for every (user, mailbox, uid): text that
/// compresses about as well as mail does.
pub(crate) fn body(u: usize, m: usize, uid: u32) -> Vec<u8> {
    let mut b = format!("Subject: u{u} m{m} uid {uid}\n\n").into_bytes();
    let mut x = (u as u64) << 40 | (m as u64) << 20 | u64::from(uid) | 1;
    while b.len() < 3000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b.extend_from_slice(format!("line {} {:x}\n", x % 1000, x >> 40).as_bytes());
    }
    b
}

/// An archive of `users` users with `mailboxes` mailboxes of `per` messages each, written
/// in data frames of 16 KiB (so that a large archive has many frames), format 1.3 (no
/// POINT frame: cat reads the directory and catalogs).
pub(crate) fn archive(path: &Path, users: usize, mailboxes: usize, per: u32) {
    archive_minor(path, users, mailboxes, per, 3);
}

/// [`archive`] in format 1.`minor` (1.4: with a POINT frame, in pages of 8 entries).
pub(crate) fn archive_minor(path: &Path, users: usize, mailboxes: usize, per: u32, minor: u16) {
    let manifest = test_manifest("maildir", minor, &format!("point-{users}"));
    let opts = WriterOptions {
        frame_target: 16 << 10,
        threads: 1,
        page_entries: 8,
        ..WriterOptions::default()
    };
    let mut w = ArchiveWriter::new(fs::File::create(path).unwrap(), manifest, &opts).unwrap();
    for u in 0..users {
        let user = Name::from(format!("user{u}").as_str());
        let mut names = Vec::new();
        for m in 0..mailboxes {
            let mb = Name::from(format!("box{m}").as_str());
            let recs = (1..=per)
                .map(|uid| {
                    let meta = maildump::model::MessageMeta {
                        uid: Uid(uid),
                        ..bare_meta(&format!("g{u}.{m}.{uid}"))
                    };
                    let b = body(u, m, uid);
                    let mut r = std::io::Cursor::new(b.clone());
                    w.add_message(&user, &mb, meta, &mut r, b.len() as u64, Path::new("t"))
                        .unwrap()
                })
                .collect();
            let meta = MailboxMeta {
                name: mb.clone(),
                guid: None,
                uidvalidity: 1,
                uidnext: per + 1,
                highest_modseq: None,
                keywords: vec![],
                attributes: vec![],
                owner: None,
                uidlist_header_ext: vec![],
            };
            w.add_mailbox(&user, meta, recs, vec![], None).unwrap();
            names.push(mb);
        }
        let meta = UserMeta {
            name: user,
            ..Default::default()
        };
        w.add_user(meta, names).unwrap();
    }
    w.finish().unwrap();
}

/// `cat` through the library as the binary does it; the bytes each archive read.
fn cat_bytes_read(paths: &[&Path], user: &str, mailbox: &str, uid: u32) -> (Vec<u8>, Vec<u64>) {
    let key = MessageKey::Uid(uid);
    let found =
        inspect::find_for_cat(paths, None, user, Some(mailbox), &key, &mut |_, _| {}).unwrap();
    assert_eq!(found.reopened, None);
    let mut out = Vec::new();
    inspect::cat(&found.chain, found.at, &found.cat, &found.rec, &mut out).unwrap();
    let read = found
        .chain
        .archives
        .iter()
        .map(|a| a.bytes_read())
        .collect();
    (out, read)
}

/// Where the INDEX frame starts, and the length of its directory frame.
fn index_extent(bytes: &[u8]) -> (usize, usize) {
    let f = &bytes[bytes.len() - 64..];
    let at = u64::from_le_bytes(f[16..24].try_into().unwrap()) as usize;
    let dir_len = u64::from_le_bytes(bytes[at + 16..at + 24].try_into().unwrap()) as usize;
    (at, dir_len)
}

/// What `cat` may read of one archive: footer, INDEX head, directory, one catalog and a
/// frame of 16 KiB (and the zstd reader's 128 KiB of read-ahead is capped by the frame).
const BOUND: u64 = 64 << 10;

#[test]
fn cat_reads_the_same_bounded_bytes_from_an_archive_ten_times_larger() {
    let ws = Workspace::new();
    let (small, large) = (ws.join("small.mdump"), ws.join("large.mdump"));
    archive(&small, 2, 5, 30);
    archive(&large, 20, 5, 30);
    let large_bytes = fs::read(&large).unwrap();
    let (index_at, _) = index_extent(&large_bytes);
    // A reader of the whole index (or the whole archive) would read far past the bound.
    assert!(
        (large_bytes.len() - index_at) as u64 > 2 * BOUND,
        "the large archive's index is only {} bytes",
        large_bytes.len() - index_at
    );
    assert!(fs::metadata(&small).unwrap().len() * 8 < large_bytes.len() as u64);
    let reads = reads_of_three(&small, &large);
    assert!(reads.iter().all(|&r| r <= BOUND), "{reads:?}");
    // Within the bound, what grows is the directory (one entry per frame and mailbox).
    let (small_max, large_max) = (reads[..3].iter().max(), reads[3..].iter().max());
    assert!(
        large_max.unwrap() - small_max.unwrap() < BOUND / 2,
        "{reads:?}"
    );
}

#[test]
fn cat_from_a_chain_reads_directories_and_the_archive_holding_the_bytes() {
    let v = Path::new(env!("CARGO_MANIFEST_DIR")).join("format-spec/vectors/v1");
    let names = ["chain", "chain.inc1", "chain.inc2", "chain.inc3"];
    let paths: Vec<PathBuf> = names.iter().map(|n| v.join(format!("{n}.mdump"))).collect();
    let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    // bob's Archive UID 1 is in the state of chain.inc3 by a copied catalog; its bytes are
    // in the full archive.
    let list = run_ok(maildump().args(["list", "--json"]).args(&paths)).stdout;
    let want = String::from_utf8(list)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|j| j["user"] == "bob" && j["mailbox"] == "INBOX")
        .unwrap();
    let uid = want["uid"].as_u64().unwrap() as u32;
    let (out, read) = cat_bytes_read(&refs, "bob", "INBOX", uid);
    assert_eq!(sha256_hex(&out), want["sha256"].as_str().unwrap());
    // Every archive: HEADER, FOOTER (read for its version and for the index), INDEX head
    // and directory; the last one also bob's INBOX catalog, the full one the data frame.
    for (i, p) in paths.iter().enumerate() {
        let bytes = fs::read(p).unwrap();
        let (_, dir_len) = index_extent(&bytes);
        let opened = (24 + 72 + 72 + 24 + dir_len) as u64;
        if i == 0 || i == paths.len() - 1 {
            assert!(read[i] > opened, "{}: read {}", names[i], read[i]);
        } else {
            assert_eq!(read[i], opened, "{}: more than the directory", names[i]);
        }
    }
}

/// Flip one byte at `at` of a copy of `src`.
fn damaged(ws: &Workspace, src: &Path, at: usize, name: &str) -> PathBuf {
    let mut b = fs::read(src).unwrap();
    b[at] ^= 0x55;
    let p = ws.join(name);
    fs::write(&p, &b).unwrap();
    p
}

/// `maildump cat` of user `u` mailbox `m` UID `uid`: exit code, stdout, stderr.
fn cat_cmd(a: &Path, u: usize, m: usize, uid: u32) -> (i32, Vec<u8>, String) {
    let out = run(maildump().arg("cat").arg(a).args([
        "--user",
        &format!("user{u}"),
        "--mailbox",
        &format!("box{m}"),
        "--uid",
        &uid.to_string(),
    ]));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap(), out.stdout, err)
}

#[test]
fn damage_where_cat_does_not_read_does_not_stop_it_and_where_it_reads_never_gives_wrong_bytes() {
    let ws = Workspace::new();
    let a = ws.join("a.mdump");
    archive(&a, 2, 3, 10);
    let bytes = fs::read(&a).unwrap();
    let (index_at, dir_len) = index_extent(&bytes);
    let dir_frame = &bytes[index_at + 24..index_at + 24 + dir_len];
    let dir: Directory = serde_json::from_slice(&zstd::decode_all(dir_frame).unwrap()).unwrap();
    let area = index_at + 24 + dir_len;
    let catalog_middle = |u: &str, m: &str| {
        let e = dir
            .mailboxes
            .iter()
            .find(|e| e.user.to_string() == u && e.name.to_string() == m)
            .unwrap();
        area + (e.catalog_offset + e.catalog_len / 2) as usize
    };
    // The frame holding user1 box2 UID 10 (the last message) and one holding user0's.
    let found = inspect::find_for_cat(
        &[a.as_path()],
        None,
        "user1",
        Some("box2"),
        &MessageKey::Uid(10),
        &mut |_, _| {},
    )
    .unwrap();
    let last = &dir.frames[found.rec.loc.unwrap().frame as usize];
    let first = &dir.frames[1];
    // Damage in another mailbox's catalog, or in a frame cat does not need: not even
    // noticed (nothing of it is read), the bytes are exact; verify finds it.
    for (at, what) in [
        (catalog_middle("user0", "box1"), "catalog"),
        ((first.offset + first.csize / 2) as usize, "frame"),
    ] {
        let d = damaged(&ws, &a, at, &format!("other-{what}.mdump"));
        let (code, out, err) = cat_cmd(&d, 1, 2, 10);
        assert_eq!((code, err.as_str()), (0, ""), "damaged {what}");
        assert!(out == body(1, 2, 10), "damaged {what}: wrong bytes");
        let v = run(maildump().arg("verify").arg(&d));
        assert_eq!(v.status.code(), Some(4), "verify missed the damaged {what}");
    }
    // Damage in the catalog cat needs: named, then the archive is read as list reads it
    // (the index's digest fails, so it is rebuilt by scanning) and the bytes are exact.
    let d = damaged(
        &ws,
        &a,
        catalog_middle("user1", "box2"),
        "needed-catalog.mdump",
    );
    let (code, out, err) = cat_cmd(&d, 1, 2, 10);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("index catalog of user1/box2") && err.contains("rebuilt by scanning"),
        "{err}"
    );
    assert!(out == body(1, 2, 10), "needed catalog damaged: wrong bytes");
    // Damage in the frame that holds the message: an error naming it (exit 4), nothing on
    // stdout.
    // (Near the frame's start, so that what comes before the message is damaged too.)
    let d = damaged(&ws, &a, (last.offset + 24) as usize, "needed-frame.mdump");
    let (code, out, err) = cat_cmd(&d, 1, 2, 10);
    assert_eq!(code, 4, "{err}");
    assert!(out.is_empty(), "cat wrote {} bytes", out.len());
    assert!(err.contains("user user1 mailbox box2 UID 10"), "{err}");
}

/// `cat` of three messages of `small` (2 users) and `large` (20 users), each checked:
/// the bytes read for each.
fn reads_of_three(small: &Path, large: &Path) -> Vec<u64> {
    let mut reads = Vec::new();
    for (path, users) in [(small, 2), (large, 20)] {
        for (u, m, uid) in [(0, 0, 1), (users / 2, 3, 17), (users - 1, 4, 30)] {
            let user = format!("user{u}");
            let (out, read) = cat_bytes_read(&[path], &user, &format!("box{m}"), uid);
            assert!(out == body(u, m, uid), "{user} box{m} {uid}: wrong bytes");
            reads.push(read[0]);
        }
    }
    reads
}

/// Where a 1.4 archive's POINT frame is: its first byte, its page area, its head's first
/// byte and the INDEX frame's (where the frame ends); and its head, parsed.
struct PointAt {
    start: usize,
    area: usize,
    head_at: usize,
    index_at: usize,
    head: serde_json::Value,
}

fn point_head(bytes: &[u8]) -> PointAt {
    let (index_at, _) = index_extent(bytes);
    let tail = &bytes[index_at - 28..index_at];
    assert_eq!(&tail[20..], b"MDPTAIL\0");
    let head_len = u64::from_le_bytes(tail[..8].try_into().unwrap()) as usize;
    let frame_len = u64::from_le_bytes(tail[8..16].try_into().unwrap()) as usize;
    let head_at = index_at - 28 - head_len;
    let head = zstd::decode_all(&bytes[head_at..head_at + head_len]).unwrap();
    PointAt {
        start: index_at - frame_len,
        area: index_at - frame_len + 16,
        head_at,
        index_at,
        head: serde_json::from_slice(&head).unwrap(),
    }
}

/// A 1.4 archive of 2 users with 3 mailboxes of 20 messages, and its bytes.
fn point_archive(ws: &Workspace) -> (PathBuf, Vec<u8>) {
    let a = ws.join("a.mdump");
    archive_minor(&a, 2, 3, 20, 4);
    let bytes = fs::read(&a).unwrap();
    (a, bytes)
}

#[test]
fn cat_of_a_1_4_archive_reads_pages_and_the_same_bytes_whatever_its_size() {
    let ws = Workspace::new();
    let (small, large) = (ws.join("small.mdump"), ws.join("large.mdump"));
    archive_minor(&small, 2, 5, 30, 4);
    archive_minor(&large, 20, 5, 30, 4);
    let large_bytes = fs::read(&large).unwrap();
    let (index_at, dir_len) = index_extent(&large_bytes);
    let reads = reads_of_three(&small, &large);
    // The tail read (16 KiB, the head in it), one record page, one frame page and the
    // message's 16 KiB frame: no directory, no catalog.
    assert!(reads.iter().all(|&r| r < 40 << 10), "{reads:?}");
    assert!(
        dir_len > 8 << 10,
        "the large archive's directory is {dir_len} bytes"
    );
    // The same bytes from an archive ten times larger, but for the POINT head's list of
    // mailboxes, read with the tail in one read of at most 16 KiB either way.
    let (small_max, large_max) = (reads[..3].iter().max(), reads[3..].iter().max());
    assert!(
        large_max.unwrap().abs_diff(*small_max.unwrap()) < 2048,
        "{reads:?}"
    );
    // The large archive pages its tables: several frame pages, several record pages per
    // mailbox.
    let head = point_head(&large_bytes).head;
    assert!(
        head["frame_pages"].as_array().unwrap().len() > 10,
        "{}",
        head["frame_pages"]
    );
    assert_eq!(head["mailboxes"][0]["pages"].as_array().unwrap().len(), 4);
    assert!(index_at > 0);
}

#[test]
fn cat_through_a_copied_catalog_reads_the_pages_of_the_archive_that_wrote_it() {
    let v = Path::new(env!("CARGO_MANIFEST_DIR")).join("format-spec/vectors/v1");
    let paths = [v.join("point.mdump"), v.join("point.inc1.mdump")];
    let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    let list = fs::read_to_string(v.join("point.inc1.list.jsonl")).unwrap();
    let mut n = 0;
    for line in list.lines() {
        let j: serde_json::Value = serde_json::from_str(line).unwrap();
        let (user, mailbox) = (j["user"].as_str().unwrap(), j["mailbox"].as_str().unwrap());
        let (out, read) = cat_bytes_read(&refs, user, mailbox, j["uid"].as_u64().unwrap() as u32);
        assert_eq!(sha256_hex(&out), j["sha256"].as_str().unwrap());
        // The incremental: HEADER, FOOTER twice, INDEX head and the tail read that holds
        // the POINT frame's head; not its catalog (a copy), not its directory.
        let inc = fs::read(&paths[1]).unwrap();
        let (index_at, _) = index_extent(&inc);
        let opened = (24 + 72 + 72 + 24 + (index_at - 24).min(16 << 10)) as u64;
        assert_eq!(
            read[1], opened,
            "{user}/{mailbox}: the incremental read more"
        );
        n += 1;
    }
    assert!(n >= 4);
}

#[test]
fn damage_in_the_point_frame_never_gives_wrong_bytes_and_verify_names_it() {
    let ws = Workspace::new();
    let (a, bytes) = point_archive(&ws);
    let PointAt {
        area,
        index_at,
        head,
        ..
    } = point_head(&bytes);
    let page = |p: &serde_json::Value| {
        area + (p["offset"].as_u64().unwrap() + p["len"].as_u64().unwrap() / 2) as usize
    };
    // user1 box2 UID 20 is on the mailbox's last record page.
    let mb = head["mailboxes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["user"] == "user1" && m["name"] == "box2")
        .unwrap();
    let places = [
        (
            page(mb["pages"].as_array().unwrap().last().unwrap()),
            "record page",
        ),
        (page(&head["frame_pages"][0]), "frame page"),
        (
            page(head["frame_pages"].as_array().unwrap().last().unwrap()),
            "last frame page",
        ),
        (index_at - 28 - 20, "head"),
        (index_at - 20, "tail's frame length"),
        (index_at - 8, "tail"),
    ];
    for (at, what) in places {
        let d = damaged(
            &ws,
            &a,
            at,
            &format!("point-{}.mdump", what.replace(' ', "-")),
        );
        // cat: the message, exact, whether or not the damage was in its way (then it says
        // so and reads the archive whole).
        let (code, out, err) = cat_cmd(&d, 1, 2, 20);
        assert_eq!(code, 0, "damaged {what}: {err}");
        assert!(out == body(1, 2, 20), "damaged {what}: wrong bytes");
        // (A damaged tail hides the POINT frame: cat reads the INDEX, as in 1.3.)
        let in_its_way = what != "frame page" && what != "tail";
        assert!(
            if in_its_way {
                err.contains("point") && err.contains("opened again")
            } else {
                err.is_empty()
            },
            "damaged {what}: {err}"
        );
        // verify names it.
        let v = run(maildump().arg("verify").arg(&d));
        let verr =
            String::from_utf8_lossy(&v.stderr).into_owned() + &String::from_utf8_lossy(&v.stdout);
        assert_eq!(
            v.status.code(),
            Some(4),
            "verify missed the damaged {what}: {verr}"
        );
        assert!(verr.contains("point"), "{what}: {verr}");
    }
}

#[test]
fn verify_notices_every_changed_byte_of_the_point_frame() {
    let ws = Workspace::new();
    let (a, bytes) = point_archive(&ws);
    let p = point_head(&bytes);
    let (start, head_at, index_at) = (p.start, p.head_at, p.index_at);
    let clean = inspect::verify(&a).unwrap();
    assert!(clean.damage.is_empty(), "{:?}", clean.damage);
    // Every byte of the skippable header, the head and the tail; every 13th of the pages.
    let offsets = (start..start + 16)
        .chain((start + 16..head_at).step_by(13))
        .chain(head_at..index_at);
    let t = ws.join("flipped.mdump");
    let mut checked = 0;
    for off in offsets {
        let mut b = bytes.clone();
        b[off] ^= 0x10;
        fs::write(&t, &b).unwrap();
        let rep = inspect::verify(&t).unwrap();
        assert!(
            !rep.damage.is_empty(),
            "a flip at {off} (POINT frame {start}..{index_at}) went unnoticed"
        );
        checked += 1;
    }
    assert!(checked > 200, "{checked}");
}
