//! The layers of ARCHITECTURE.md, checked on the source: a module uses only the layers
//! below it (`model`, `mime`; `remote`; `format`; `store`; `chain`; `ops`; the binary's
//! `cli`), `format` and `store` do not know each other, and `remote` (object storage)
//! knows nothing of mail or of the archive format.

use std::path::{Path, PathBuf};

/// Each layer's source (below `src/`) and the modules it must not import.
const RULES: &[(&str, &[&str])] = &[
    (
        "model.rs",
        &["mime", "remote", "format", "store", "chain", "ops", "cli"],
    ),
    (
        "mime",
        &["remote", "format", "store", "chain", "ops", "cli"],
    ),
    (
        "remote",
        &["mime", "format", "store", "chain", "ops", "cli"],
    ),
    ("format", &["store", "chain", "ops", "cli"]),
    ("store", &["remote", "format", "chain", "ops", "cli"]),
    ("chain", &["store", "ops", "cli"]),
    ("ops", &["cli"]),
];

fn rust_files(p: &Path, out: &mut Vec<PathBuf>) {
    if p.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for e in entries {
            rust_files(&e, out);
        }
    } else if p.extension().is_some_and(|x| x == "rs") {
        out.push(p.to_path_buf());
    }
}

/// The `crate::<module>` paths a line of code names, doc comments left out (a doc may
/// point at a higher layer: `store` names `progress::Event` and `ops` in prose).
fn imports<'a>(line: &'a str, forbidden: &[&'a str]) -> Vec<&'a str> {
    let code = line.trim_start();
    if code.starts_with("//") {
        return Vec::new();
    }
    forbidden
        .iter()
        .copied()
        .filter(|m| {
            let path = format!("crate::{m}");
            code.match_indices(&path).any(|(i, _)| {
                code[i + path.len()..]
                    .chars()
                    .next()
                    .is_none_or(|c| !(c.is_alphanumeric() || c == '_'))
            })
        })
        .collect()
}

#[test]
fn no_layer_imports_a_layer_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut checked = 0;
    let mut wrong = Vec::new();
    for (layer, forbidden) in RULES {
        let mut files = Vec::new();
        rust_files(&src.join(layer), &mut files);
        assert!(!files.is_empty(), "no source for layer {layer}");
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            for (n, line) in text.lines().enumerate() {
                for m in imports(line, forbidden) {
                    wrong.push(format!("{}:{}: {layer} uses {m}", f.display(), n + 1));
                }
            }
            checked += 1;
        }
    }
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
    assert!(checked > 50, "only {checked} files checked");
}

#[test]
fn the_check_sees_an_import() {
    assert_eq!(
        imports(
            "    ) -> Result<Option<crate::ops::restore::X>> {",
            &["ops"]
        ),
        ["ops"]
    );
    assert!(imports("use crate::options::X;", &["ops"]).is_empty());
    assert!(imports("/// See [`crate::ops::x`].", &["ops"]).is_empty());
}
