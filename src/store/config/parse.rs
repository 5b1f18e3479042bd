//! Reading a Dovecot 2.4 configuration file as Dovecot's own parser
//! (`src/config/config-parser.c`) does, for when its `doveconf` cannot: `key = value`,
//! `filter [name] {` ... `}`, comments, `\` continuation lines, quoted values, and
//! `!include` / `!include_try` with glob patterns relative to the including file (sorted,
//! read in place, later settings win). Builds a tree; what the settings mean is
//! [`super::v24`]'s job.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Where a setting or filter was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Origin {
    /// The file.
    pub file: PathBuf,
    /// Its line (1-based; the first line of a continued one).
    pub line: usize,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} line {}", self.file.display(), self.line)
    }
}

/// How a value was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// As is (or quoted: the quotes are removed).
    Text,
    /// `key = <path`: the value is the contents of a file.
    File,
    /// An unquoted value with `$SET:name` or `$ENV:name` in it.
    Variables,
}

/// `key = value`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    /// The key as written.
    pub key: String,
    /// The value, unquoted.
    pub value: String,
    /// How the value was written.
    pub form: Form,
    /// Where.
    pub at: Origin,
}

/// `kind [name] { ... }`, or the whole file (empty kind).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Section {
    /// Filter kind (`namespace`, `mail_attribute`, `dict`...).
    pub kind: String,
    /// Filter name (`inbox` in `namespace inbox {`).
    pub name: Option<String>,
    /// Settings and filters inside, in order (included files in place).
    pub items: Vec<Item>,
    /// Where it starts (`None` for the whole file).
    pub at: Option<Origin>,
}

/// What a section holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// `key = value`.
    Set(Setting),
    /// A filter.
    Section(Section),
}

/// Deepest include nesting followed (Dovecot finds loops; this also bounds depth).
const MAX_INCLUDE_DEPTH: usize = 32;

/// Parse the file at `path` and everything it includes.
///
/// # Errors
/// [`Error::Usage`] naming the file and line, with Dovecot's wording where it has one:
/// `The first setting must be dovecot_config_version`, `No matches`, `Recursive include
/// file`, `Expecting '{'`, an unbalanced `}`; [`Error::Io`] for an unreadable file.
pub fn parse_file(path: &Path) -> Result<Section> {
    let text = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse_text(&String::from_utf8_lossy(&text), path)
}

/// Parse `text` as if it were the file `path` (includes are relative to its directory).
///
/// # Errors
/// As [`parse_file`].
pub fn parse_text(text: &str, path: &Path) -> Result<Section> {
    let mut p = Parser {
        stack: vec![Section::default()],
        includes: vec![path.to_path_buf()],
        seen_setting: false,
    };
    p.read(text, path)?;
    if p.stack.len() > 1 {
        let open = p.stack.last().and_then(|s| s.at.clone());
        return Err(usage(
            open.as_ref(),
            path,
            "the filter starting here is not closed with `}`",
        ));
    }
    Ok(p.stack.pop().unwrap_or_default())
}

fn usage(at: Option<&Origin>, file: &Path, msg: impl std::fmt::Display) -> Error {
    match at {
        Some(o) => Error::Usage(format!("configuration file {o}: {msg}")),
        None => Error::Usage(format!("configuration file {}: {msg}", file.display())),
    }
}

struct Parser {
    /// Open sections, the whole file first.
    stack: Vec<Section>,
    /// Files being read (for `Recursive include file`).
    includes: Vec<PathBuf>,
    /// Whether a setting was seen (the first must be `dovecot_config_version`).
    seen_setting: bool,
}

/// One logical line of a configuration file.
enum Line {
    Set {
        key: String,
        value: String,
        form: Form,
    },
    Include {
        pattern: String,
        must_match: bool,
    },
    Begin {
        kind: String,
        name: Option<String>,
    },
    End,
}

impl Parser {
    fn read(&mut self, text: &str, path: &Path) -> Result<()> {
        let mut full = String::new();
        let mut first_line = 0;
        for (i, raw) in text.lines().enumerate() {
            if full.is_empty() {
                first_line = i + 1;
            }
            let at = Origin {
                file: path.to_path_buf(),
                line: first_line,
            };
            let Some(line) = strip_comment(raw.trim_start()) else {
                continue;
            };
            let line = line.trim_end();
            if let Some(cont) = line.strip_suffix('\\') {
                let cont = cont.trim_end();
                if !cont.is_empty() {
                    full.push_str(cont);
                    full.push(' ');
                }
                continue;
            }
            let whole = if full.is_empty() {
                line.to_string()
            } else {
                std::mem::take(&mut full) + line
            };
            if whole.is_empty() {
                continue;
            }
            let parsed = parse_line(&whole).map_err(|m| usage(Some(&at), path, m))?;
            self.apply(parsed, at, path)?;
        }
        Ok(())
    }

    fn apply(&mut self, line: Line, at: Origin, path: &Path) -> Result<()> {
        let top = self.includes.len() == 1;
        if top
            && !self.seen_setting
            && !matches!(&line, Line::Set { key, .. } if key == "dovecot_config_version")
        {
            return Err(usage(
                Some(&at),
                path,
                "The first setting must be dovecot_config_version",
            ));
        }
        self.seen_setting = true;
        match line {
            Line::Set { key, value, form } => self.current().items.push(Item::Set(Setting {
                key,
                value,
                form,
                at,
            })),
            Line::Begin { kind, name } => self.stack.push(Section {
                kind,
                name,
                items: Vec::new(),
                at: Some(at),
            }),
            Line::End => {
                if self.stack.len() < 2 {
                    return Err(usage(Some(&at), path, "`}` without an open filter"));
                }
                if let Some(done) = self.stack.pop() {
                    self.current().items.push(Item::Section(done));
                }
            }
            Line::Include {
                pattern,
                must_match,
            } => self.include(&pattern, must_match, &at, path)?,
        }
        Ok(())
    }

    fn current(&mut self) -> &mut Section {
        if self.stack.is_empty() {
            self.stack.push(Section::default());
        }
        let last = self.stack.len() - 1;
        &mut self.stack[last]
    }

    fn include(&mut self, pattern: &str, must_match: bool, at: &Origin, path: &Path) -> Result<()> {
        let dir = path.parent().unwrap_or(Path::new("/"));
        let files = glob(&dir.join(pattern)).map_err(|e| usage(Some(at), path, e))?;
        if files.is_empty() && must_match {
            return Err(usage(Some(at), path, "No matches"));
        }
        if self.includes.len() > MAX_INCLUDE_DEPTH {
            return Err(usage(Some(at), path, "includes nested too deep"));
        }
        for f in files {
            let canon = std::fs::canonicalize(&f).unwrap_or_else(|_| f.clone());
            if self
                .includes
                .iter()
                .any(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()) == canon)
            {
                return Err(usage(
                    Some(at),
                    path,
                    format_args!("Recursive include file: {}", f.display()),
                ));
            }
            let text = match std::fs::read(&f) {
                Ok(t) => t,
                Err(_) if !must_match => continue,
                Err(e) => {
                    return Err(usage(
                        Some(at),
                        path,
                        format_args!("Couldn't open include file {}: {e}", f.display()),
                    ));
                }
            };
            self.includes.push(f.clone());
            let r = self.read(&String::from_utf8_lossy(&text), &f);
            self.includes.pop();
            r?;
        }
        Ok(())
    }
}

/// The line without its comment, `None` when nothing is left (Dovecot's rule: `#` outside
/// quotes starts a comment).
fn strip_comment(line: &str) -> Option<&str> {
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let b = line.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            q @ (b'"' | b'\'') => {
                i += 1;
                while i < b.len() && b[i] != q {
                    if b[i] == b'\\' && i + 1 < b.len() {
                        i += 1;
                    }
                    i += 1;
                }
                if i >= b.len() {
                    break;
                }
            }
            b'#' => return Some(&line[..i]),
            _ => {}
        }
        i += 1;
    }
    Some(line)
}

/// Dovecot's `str_unescape`: a backslash keeps the next character as is.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(n) => out.push(n),
                None => break,
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn parse_line(line: &str) -> std::result::Result<Line, String> {
    let (key, rest) = if let Some(q) = line.strip_prefix('"') {
        let mut end = None;
        let mut esc = false;
        for (i, c) in q.char_indices() {
            match c {
                '\\' if !esc => esc = true,
                '"' if !esc => {
                    end = Some(i);
                    break;
                }
                _ => esc = false,
            }
        }
        let end = end.unwrap_or(q.len());
        (q[..end].to_string(), q.get(end + 1..).unwrap_or_default())
    } else {
        let end = line
            .find(|c: char| c.is_whitespace() || c == '=')
            .unwrap_or(line.len());
        (line[..end].to_string(), &line[end..])
    };
    let rest = rest.trim_start();
    if key == "!include" || key == "!include_try" {
        return Ok(Line::Include {
            pattern: rest.to_string(),
            must_match: key == "!include",
        });
    }
    if let Some(v) = rest.strip_prefix('=') {
        return Ok(value_line(key, v.trim_start()));
    }
    if key == "}" && rest.is_empty() {
        return Ok(Line::End);
    }
    section_line(key, rest)
}

fn value_line(key: String, v: &str) -> Line {
    if let Some(f) = v.strip_prefix('<') {
        return Line::Set {
            key,
            value: f.trim_start().to_string(),
            form: Form::File,
        };
    }
    let quoted = v.len() >= 2
        && ((v.starts_with('"') && v.ends_with('"')) || (v.starts_with('\'') && v.ends_with('\'')));
    if quoted {
        return Line::Set {
            key,
            value: unescape(&v[1..v.len() - 1]),
            form: Form::Text,
        };
    }
    let form = if v.contains("$SET:") || v.contains("$ENV:") {
        Form::Variables
    } else {
        Form::Text
    };
    Line::Set {
        key,
        value: v.to_string(),
        form,
    }
}

fn section_line(kind: String, rest: &str) -> std::result::Result<Line, String> {
    let expecting = || "Expecting '{'".to_string();
    let (name, after) = if rest.starts_with('{') {
        (None, rest)
    } else if kind == "group" {
        // `group @name value {`: kept as a filter of kind `group`.
        let mut parts = rest.splitn(3, char::is_whitespace);
        let (g, v, tail) = (parts.next(), parts.next(), parts.next().unwrap_or_default());
        let (Some(g), Some(v)) = (g, v) else {
            return Err(expecting());
        };
        (Some(format!("{g} {v}")), tail.trim_start())
    } else if let Some(q) = rest.strip_prefix('"') {
        let end = q.find('"').ok_or_else(expecting)?;
        (Some(unescape(&q[..end])), q[end + 1..].trim_start())
    } else {
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        (Some(rest[..end].to_string()), rest[end..].trim_start())
    };
    if !after.starts_with('{') {
        return Err(expecting());
    }
    if after.len() > 1 {
        return Err("Garbage after '{'".into());
    }
    Ok(Line::Begin { kind, name })
}

/// `glob(3)` with `GLOB_BRACE`, as Dovecot's `!include` uses it: each `{a,b}` alternative
/// is matched in turn, the matches of each sorted; `*`, `?` and `[...]` do not match a
/// leading `.`; a pattern without wildcards names the file when it exists.
///
/// # Errors
/// A directory on the way that cannot be read.
pub fn glob(pattern: &Path) -> std::result::Result<Vec<PathBuf>, String> {
    let text = pattern.to_string_lossy();
    let mut out = Vec::new();
    for alt in expand_braces(&text) {
        let mut found = Vec::new();
        let start = if alt.starts_with('/') {
            PathBuf::from("/")
        } else {
            PathBuf::from(".")
        };
        let comps: Vec<&str> = alt.split('/').filter(|c| !c.is_empty()).collect();
        glob_walk(&start, &comps, &mut found)?;
        found.sort();
        out.extend(found);
    }
    Ok(out)
}

fn glob_walk(
    base: &Path,
    comps: &[&str],
    out: &mut Vec<PathBuf>,
) -> std::result::Result<(), String> {
    let Some((first, rest)) = comps.split_first() else {
        if std::fs::symlink_metadata(base).is_ok() {
            out.push(base.to_path_buf());
        }
        return Ok(());
    };
    if !first.contains(['*', '?', '[']) {
        return glob_walk(&base.join(first), rest, out);
    }
    let rd = match std::fs::read_dir(base) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("{}: {e}", base.display())),
    };
    let mut names: Vec<String> = Vec::new();
    for e in rd {
        let e = e.map_err(|e| format!("{}: {e}", base.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && !first.starts_with('.') {
            continue;
        }
        if fnmatch(first.as_bytes(), name.as_bytes()) {
            names.push(name);
        }
    }
    names.sort();
    for n in names {
        glob_walk(&base.join(n), rest, out)?;
    }
    Ok(())
}

/// `a{b,c{d,e}}f` → `abf`, `acdf`, `acef` (unbalanced braces are literal).
fn expand_braces(s: &str) -> Vec<String> {
    let b = s.as_bytes();
    let Some(open) = s.find('{') else {
        return vec![s.to_string()];
    };
    let mut depth = 0usize;
    let mut commas = Vec::new();
    let mut close = None;
    for (i, &c) in b.iter().enumerate().skip(open) {
        match c {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    close = Some(i);
                    break;
                }
            }
            b',' if depth == 1 => commas.push(i),
            _ => {}
        }
    }
    let Some(close) = close else {
        return vec![s.to_string()];
    };
    let (head, tail) = (&s[..open], &s[close + 1..]);
    let mut bounds = vec![open];
    bounds.extend(commas);
    bounds.push(close);
    let mut out = Vec::new();
    for w in bounds.windows(2) {
        let inner = &s[w[0] + 1..w[1]];
        for e in expand_braces(&format!("{head}{inner}{tail}")) {
            out.push(e);
        }
    }
    out
}

/// Shell pattern match of one name: `*`, `?`, `[abc]`, `[a-z]`, `[!x]` / `[^x]`, `\x`.
fn fnmatch(p: &[u8], n: &[u8]) -> bool {
    match p.split_first() {
        None => n.is_empty(),
        Some((b'*', rest)) => (0..=n.len()).any(|i| fnmatch(rest, &n[i..])),
        Some((b'?', rest)) => !n.is_empty() && fnmatch(rest, &n[1..]),
        Some((b'[', rest)) => {
            let Some((&c, n_rest)) = n.split_first() else {
                return false;
            };
            match class(rest, c) {
                Some((hit, after)) => hit && fnmatch(after, n_rest),
                None => c == b'[' && fnmatch(rest, n_rest),
            }
        }
        Some((b'\\', rest)) if !rest.is_empty() => {
            n.first() == rest.first() && fnmatch(&rest[1..], &n[1..])
        }
        Some((&c, rest)) => n.first() == Some(&c) && fnmatch(rest, &n[1..]),
    }
}

/// A `[...]` class after the `[`: whether `c` is in it and the pattern after the `]`
/// (`None` when there is no closing `]`).
fn class(p: &[u8], c: u8) -> Option<(bool, &[u8])> {
    let (neg, mut i) = match p.first() {
        Some(b'!' | b'^') => (true, 1),
        _ => (false, 0),
    };
    let mut hit = false;
    let mut first = true;
    while i < p.len() {
        if p[i] == b']' && !first {
            return Some((hit != neg, &p[i + 1..]));
        }
        first = false;
        if i + 2 < p.len() && p[i + 1] == b'-' && p[i + 2] != b']' {
            hit |= p[i] <= c && c <= p[i + 2];
            i += 3;
        } else {
            hit |= p[i] == c;
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, text).unwrap();
        p
    }

    fn keys(s: &Section) -> Vec<String> {
        let mut out = Vec::new();
        for i in &s.items {
            match i {
                Item::Set(x) => out.push(format!("{}={}", x.key, x.value)),
                Item::Section(sub) => {
                    let inner = keys(sub).join(",");
                    out.push(format!(
                        "{}[{}]{{{inner}}}",
                        sub.kind,
                        sub.name.as_deref().unwrap_or("")
                    ));
                }
            }
        }
        out
    }

    #[test]
    fn lines_quotes_comments_sections() {
        let t = tempfile::tempdir().unwrap();
        let conf = write(
            t.path(),
            "dovecot.conf",
            "# comment\n\ndovecot_config_version = 2.4.1\nmail_path = \"~/Mail dir\" # trailing\n\
             mail_home=/h/%{user}\nx = 'a#b'\nlong = one \\\n   two\n\
             namespace inbox {\n  separator = /\n  mailbox \"Sent Items\" {\n    special_use = \\Sent\n  }\n}\n\
             mail_attribute {\n  dict file {\n    path = %{home}/dovecot-attributes\n  }\n}\n\
             y = <  /etc/secret\nz = $ENV:HOME/x\n",
        );
        let s = parse_file(&conf).unwrap();
        assert_eq!(
            keys(&s),
            [
                "dovecot_config_version=2.4.1",
                "mail_path=~/Mail dir",
                "mail_home=/h/%{user}",
                "x=a#b",
                "long=one two",
                "namespace[inbox]{separator=/,mailbox[Sent Items]{special_use=\\Sent}}",
                "mail_attribute[]{dict[file]{path=%{home}/dovecot-attributes}}",
                "y=/etc/secret",
                "z=$ENV:HOME/x",
            ]
        );
        let Item::Set(y) = &s.items[7] else { panic!() };
        assert_eq!(y.form, Form::File);
        let Item::Set(z) = &s.items[8] else { panic!() };
        assert_eq!(z.form, Form::Variables);
        assert_eq!(z.at.line, 21);
        for (bad, msg) in [
            (
                "mail_path = x\n",
                "The first setting must be dovecot_config_version",
            ),
            (
                "dovecot_config_version = 2.4.1\nfoo bar baz\n",
                "Expecting '{'",
            ),
            ("dovecot_config_version = 2.4.1\nfoo {\n", "not closed"),
            (
                "dovecot_config_version = 2.4.1\n}\n",
                "without an open filter",
            ),
            (
                "dovecot_config_version = 2.4.1\nfoo { x\n}\n",
                "Garbage after '{'",
            ),
        ] {
            let e = parse_text(bad, &conf).unwrap_err().to_string();
            assert!(e.contains(msg), "{bad:?}: {e}");
        }
    }

    #[test]
    fn includes_relative_sorted_later_wins() {
        // As tests/support/dovecot24.md section 4 measured with doveconf 2.4.1.
        let t = tempfile::tempdir().unwrap();
        let top = write(
            t.path(),
            "dovecot.conf",
            "dovecot_config_version = 2.4.1\n!include conf.d/*.conf\n!include sub/nested.conf\n\
             !include_try missing.conf\n!include_try nomatch/*.conf\n",
        );
        write(t.path(), "conf.d/30-override.conf", "mail_driver = sdbox\n");
        write(
            t.path(),
            "conf.d/10-mail.conf",
            "mail_driver = mdbox\nmail_path = ~/m\n",
        );
        write(t.path(), "conf.d/.hidden.conf", "mail_driver = hidden\n");
        write(
            t.path(),
            "sub/nested.conf",
            "!include 10-mail.conf\n!include ../conf.d/10-{x,mail}.conf\n",
        );
        write(t.path(), "sub/10-mail.conf", "mail_home = /sub\n");
        let s = parse_file(&top).unwrap();
        assert_eq!(
            keys(&s),
            [
                "dovecot_config_version=2.4.1",
                "mail_driver=mdbox",
                "mail_path=~/m",
                "mail_driver=sdbox",
                "mail_home=/sub",
                "mail_driver=mdbox",
                "mail_path=~/m",
            ]
        );
        let e = parse_text(
            "dovecot_config_version = 2.4.1\n!include missing.conf\n",
            &top,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("line 2: No matches"), "{e}");
        write(t.path(), "loop.conf", "!include loop.conf\n");
        let e = parse_text("dovecot_config_version = 2.4.1\n!include loop.conf\n", &top)
            .unwrap_err()
            .to_string();
        assert!(e.contains("Recursive include file"), "{e}");
        write(t.path(), "bad.conf", "garbage line here\n");
        let e = parse_text(
            "dovecot_config_version = 2.4.1\n!include_try bad.conf\n",
            &top,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("bad.conf line 1: Expecting '{'"), "{e}");
        // An include inside a filter adds to that filter.
        write(t.path(), "att.conf", "path = ~/attachments\n");
        let s = parse_text(
            "dovecot_config_version = 2.4.1\nmail_ext_attachment {\n!include att.conf\n}\n",
            &top,
        )
        .unwrap();
        assert_eq!(keys(&s)[1], "mail_ext_attachment[]{path=~/attachments}");
    }

    #[test]
    fn patterns() {
        assert!(fnmatch(b"*.conf", b"10-mail.conf"));
        assert!(!fnmatch(b"*.conf", b"10-mail.conf~"));
        assert!(fnmatch(b"1[0-9]-?ail.conf", b"10-mail.conf"));
        assert!(!fnmatch(b"[!1]*", b"10"));
        assert!(fnmatch(b"\\*", b"*"));
        assert_eq!(expand_braces("a{b,c{d,e}}f"), ["abf", "acdf", "acef"]);
        assert_eq!(expand_braces("a{b"), ["a{b"]);
    }
}
