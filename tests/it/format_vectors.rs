//! Format test vectors: every checked-in vector must be readable, list exactly as recorded,
//! verify clean, and today's writer must reproduce the current vectors byte for byte.

use std::fs;
use std::path::{Path, PathBuf};

use crate::util::{Workspace, maildump, run_ok};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn vectors() -> Vec<PathBuf> {
    let mut v = Vec::new();
    for dir in fs::read_dir(repo().join("format-spec/vectors")).unwrap() {
        let dir = dir.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        for f in fs::read_dir(&dir).unwrap() {
            let f = f.unwrap().path();
            if f.extension().is_some_and(|e| e == "mdump") {
                v.push(f);
            }
        }
    }
    v.sort();
    v
}

fn expected_list(v: &Path) -> String {
    fs::read_to_string(v.with_extension("list.jsonl")).unwrap()
}

/// The chain a vector is read through: `X.incN.mdump` needs `X.mdump`, `X.inc1.mdump`, ...
/// `X.incN.mdump`; any other vector stands alone.
fn chain_of(v: &Path) -> Vec<PathBuf> {
    let name = v.file_name().unwrap().to_str().unwrap();
    let stem = name.strip_suffix(".mdump").unwrap();
    match stem.rsplit_once(".inc") {
        Some((base, n)) if n.parse::<u32>().is_ok() => {
            let n: u32 = n.parse().unwrap();
            let dir = v.parent().unwrap();
            let mut c = vec![dir.join(format!("{base}.mdump"))];
            c.extend((1..=n).map(|i| dir.join(format!("{base}.inc{i}.mdump"))));
            c
        }
        _ => vec![v.to_path_buf()],
    }
}

#[test]
fn every_chain_lists_its_deleted_mail_as_recorded() {
    let mut n = 0;
    for v in vectors() {
        let expected = v.with_file_name(
            v.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .split('.')
                .next()
                .unwrap()
                .to_string()
                + ".deleted.jsonl",
        );
        let chain = chain_of(&v);
        if chain.len() < 2 || !expected.exists() || chain.last() != Some(&v) {
            continue;
        }
        // Only the longest chain of each vector family is compared with the file.
        let next = v.to_str().unwrap().replace(
            &format!(".inc{}.", chain.len() - 1),
            &format!(".inc{}.", chain.len()),
        );
        if Path::new(&next).exists() {
            continue;
        }
        let out = run_ok(
            maildump()
                .arg("list")
                .arg("--deleted")
                .arg("--json")
                .args(&chain),
        );
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            fs::read_to_string(&expected).unwrap(),
            "{}",
            expected.display()
        );
        n += 1;
    }
    assert!(n >= 1, "no chain vector with a .deleted.jsonl found");
}

#[test]
fn every_vector_lists_as_recorded_and_verifies() {
    let vs = vectors();
    assert!(!vs.is_empty(), "no test vectors found");
    for v in &vs {
        let out = run_ok(maildump().arg("list").arg("--json").args(chain_of(v)));
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            expected_list(v),
            "{}",
            v.display()
        );
        let out = run_ok(maildump().arg("verify").arg(v));
        assert!(
            String::from_utf8_lossy(&out.stdout).starts_with("OK:"),
            "{}",
            v.display()
        );
    }
}

#[test]
fn every_vector_is_plain_zstd_and_tar() {
    let mut ran = 0;
    for v in vectors() {
        ran += 1;
        let out = run_ok(
            std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("zstd -dc '{}' | tar -tf -", v.display())),
        );
        let names = String::from_utf8(out.stdout).unwrap();
        assert!(names.starts_with("MAILDUMP.json\n"), "{names}");
        let messages: Vec<&str> = names.lines().filter(|l| l.ends_with(".eml")).collect();
        let listed = expected_list(&v);
        if names.contains("\nblobs/") {
            // 1.2: messages with attachments are stored in parts (parts/<sha256>), their
            // attachments once each (blobs/<sha256>); plain tar never shows them as .eml.
            assert!(messages.len() < listed.lines().count(), "{}", v.display());
            for m in names
                .lines()
                .filter(|l| l.starts_with("blobs/") || l.starts_with("parts/"))
            {
                let sha = m.rsplit('/').next().unwrap();
                let out = run_ok(
                    std::process::Command::new("sh")
                        .arg("-c")
                        .arg(format!("zstd -dc '{}' | tar -xOf - '{m}'", v.display())),
                );
                assert_eq!(
                    crate::util::sha256_hex(&out.stdout),
                    sha,
                    "{m} is named by its SHA-256"
                );
            }
        } else if chain_of(&v).len() == 1 {
            assert_eq!(messages.len(), listed.lines().count(), "{}", v.display());
        } else {
            // An incremental holds only new bytes, each a message of its state.
            assert!(messages.len() < listed.lines().count(), "{}", v.display());
            for m in messages {
                let parts: Vec<&str> = m.split('/').collect();
                let uid = parts.last().unwrap().trim_end_matches(".eml");
                let needle = format!(
                    "\"user\":\"{}\",\"mailbox\":\"{}\",\"uid\":{uid},",
                    parts[1],
                    parts[2..parts.len() - 1].join("/")
                );
                assert!(
                    listed.contains(&needle),
                    "{m} not in the state of {}",
                    v.display()
                );
            }
        }
    }
    // format-spec/vectors/v1 holds 9 archives (fixture, sis, modseq, a chain of four,
    // point and its incremental).
    assert!(ran >= 9, "only {ran} vectors checked");
}

#[test]
fn every_message_of_every_vector_cats_to_its_hash() {
    let mut n = 0;
    for v in vectors() {
        for line in expected_list(&v).lines() {
            let j: serde_json::Value = serde_json::from_str(line).unwrap();
            let out = run_ok(
                maildump()
                    .arg("cat")
                    .args(chain_of(&v))
                    .args(["--user", j["user"].as_str().unwrap()])
                    .args(["--mailbox", j["mailbox"].as_str().unwrap()])
                    .args(["--uid", &j["uid"].to_string()]),
            );
            assert_eq!(
                crate::util::sha256_hex(&out.stdout),
                j["sha256"].as_str().unwrap()
            );
            assert_eq!(out.stdout.len() as u64, j["size"].as_u64().unwrap());
            n += 1;
        }
    }
    assert!(n >= 10, "only {n} messages checked");
}

#[test]
fn writer_reproduces_current_vectors_byte_for_byte() {
    assert!(
        crate::util::is_root(),
        "vector reproduction normalises ownership to 0:0 and must run as root (CI does)"
    );
    let ws = Workspace::new();
    let out = ws.join("v1");
    run_ok(
        std::process::Command::new(repo().join("format-spec/vectors/make-vectors.sh"))
            .arg(env!("CARGO_BIN_EXE_maildump"))
            .arg(&out),
    );
    // fixture.mdump is the frozen 1.0 vector; the writer reproduces the chain (asked for
    // format 1.1), sis (1.2), modseq (1.3) and point with its incremental (1.4, its default).
    for name in [
        "chain.mdump",
        "chain.inc1.mdump",
        "chain.inc2.mdump",
        "chain.inc3.mdump",
        "chain.list.jsonl",
        "chain.inc1.list.jsonl",
        "chain.inc2.list.jsonl",
        "chain.inc3.list.jsonl",
        "chain.deleted.jsonl",
        "sis.mdump",
        "sis.list.jsonl",
        "modseq.mdump",
        "modseq.list.jsonl",
        "point.mdump",
        "point.list.jsonl",
        "point.inc1.mdump",
        "point.inc1.list.jsonl",
    ] {
        let want = fs::read(repo().join("format-spec/vectors/v1").join(name)).unwrap();
        let got = fs::read(out.join(name)).unwrap();
        assert!(
            want == got,
            "writer output differs from format-spec/vectors/v1/{name}; if the format changed on purpose, bump the version and add a new vector"
        );
    }
}

#[test]
fn chains_verify_whole_and_a_missing_link_is_damage() {
    let dir = repo().join("format-spec/vectors/v1");
    let chain = [
        dir.join("chain.mdump"),
        dir.join("chain.inc1.mdump"),
        dir.join("chain.inc2.mdump"),
        dir.join("chain.inc3.mdump"),
    ];
    let out = run_ok(maildump().arg("verify").args(&chain));
    let text = String::from_utf8(out.stdout).unwrap();
    // inc1: 11 referenced + 1 deleted record; inc2: 11 + 1; inc3: 11 (copied catalogs).
    assert!(
        text.contains("OK: chain of 4 archives: all 35 references"),
        "{text}"
    );
    let out = maildump()
        .arg("verify")
        .arg(&chain[0])
        .arg(&chain[2])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("missing link") && text.contains("00000000-0000-4000-8000-000000000002"),
        "{text}"
    );
}

#[test]
fn recovering_an_incremental_names_the_mailboxes_only_its_index_held() {
    let ws = Workspace::new();
    let inc3 = fs::read(repo().join("format-spec/vectors/v1/chain.inc3.mdump")).unwrap();
    // Cut off the index and footer: only the tar stream (MAILDUMP.json, user.json) is left.
    let cut = ws.join("inc3-cut.mdump");
    fs::write(&cut, &inc3[..inc3.len() / 2]).unwrap();
    let out = maildump().arg("list").arg(&cut).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "partial, not success");
    let err = String::from_utf8_lossy(&out.stderr);
    for mb in ["INBOX", "Archive", "Job", "Job/Sub"] {
        assert!(
            err.contains(&format!(
                "user alice mailbox {mb}: its state is not in the tar stream"
            )),
            "{mb} not named: {err}"
        );
    }
}

/// 1.2 recovery: with the index cut off, the blobs are found again by scanning the tar
/// stream (`blobs/<sha256>` members), and a message stored in parts comes out whole.
#[test]
fn recovering_a_sis_archive_puts_messages_in_parts_together() {
    let ws = Workspace::new();
    let v = repo().join("format-spec/vectors/v1/sis.mdump");
    let bytes = fs::read(&v).unwrap();
    // The INDEX frame's skippable magic 0x184D2A5C, little-endian.
    let at = bytes
        .windows(4)
        .rposition(|w| w == [0x5c, 0x2a, 0x4d, 0x18])
        .unwrap();
    let cut = ws.join("sis-cut.mdump");
    fs::write(&cut, &bytes[..at]).unwrap();
    let listed = expected_list(&v);
    let mut n = 0;
    for line in listed.lines() {
        let j: serde_json::Value = serde_json::from_str(line).unwrap();
        let out = maildump()
            .arg("cat")
            .arg(&cut)
            .args(["--user", j["user"].as_str().unwrap()])
            .args(["--mailbox", j["mailbox"].as_str().unwrap()])
            .args(["--uid", &j["uid"].to_string()])
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("rebuilt by scanning"),
            "recovery must be reported"
        );
        assert_eq!(
            crate::util::sha256_hex(&out.stdout),
            j["sha256"].as_str().unwrap(),
            "{line}"
        );
        n += 1;
    }
    assert_eq!(n, 4);
}

/// The 1.3 vector carries Dovecot's modseqs and the keywords only its index held.
#[test]
fn modseq_vector_carries_modseqs_and_index_only_keywords() {
    let path = repo().join("format-spec/vectors/v1/modseq.mdump");
    let a = maildump::format::reader::Archive::open(&path, true).unwrap();
    assert_eq!(a.manifest().format_minor, 3);
    let mut seen = 0;
    for i in 0..a.dir.mailboxes.len() {
        let cat = a.catalog(i).unwrap();
        let (highest, modseqs): (u64, Vec<u64>) = match cat.mailbox.name.as_bytes() {
            b"INBOX" => (41, vec![35, 38, 40]),
            b"Work" => (3, vec![3]),
            other => panic!("unexpected mailbox {other:?}"),
        };
        assert_eq!(cat.mailbox.highest_modseq, Some(highest));
        let got: Vec<u64> = cat
            .messages
            .iter()
            .map(|r| r.message.modseq.unwrap())
            .collect();
        assert_eq!(got, modseqs, "{}", cat.mailbox.name);
        if cat.mailbox.name.as_bytes() == b"INBOX" {
            assert_eq!(cat.mailbox.keywords.len(), 30);
            assert_eq!(cat.messages[2].message.keywords, vec!["kw28".into()]);
        }
        seen += 1;
    }
    assert_eq!(seen, 2);
}
