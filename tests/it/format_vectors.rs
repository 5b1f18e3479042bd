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

#[test]
fn every_vector_lists_as_recorded_and_verifies() {
    let vs = vectors();
    assert!(!vs.is_empty(), "no test vectors found");
    for v in &vs {
        let out = run_ok(maildump().arg("list").arg("--json").arg(v));
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
    for v in vectors() {
        let out = run_ok(
            std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("zstd -dc '{}' | tar -tf -", v.display())),
        );
        let names = String::from_utf8(out.stdout).unwrap();
        assert!(names.starts_with("MAILDUMP.json\n"), "{names}");
        let messages = names.lines().filter(|l| l.ends_with(".eml")).count();
        assert_eq!(
            messages,
            expected_list(&v).lines().count(),
            "{}",
            v.display()
        );
    }
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
                    .arg(&v)
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
    let want = fs::read(repo().join("format-spec/vectors/v1/fixture.mdump")).unwrap();
    let got = fs::read(out.join("fixture.mdump")).unwrap();
    assert!(
        want == got,
        "writer output differs from format-spec/vectors/v1/fixture.mdump; if the format changed on purpose, bump the version and add a new vector directory"
    );
}
