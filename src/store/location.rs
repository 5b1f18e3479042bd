//! Dovecot `mail_location` syntax and home templates: `maildir:~/Maildir:LAYOUT=fs:UTF-8`,
//! `%u` `%n` `%d` `%h` `~` expansion, and finding the users of a store (`--all-users`).

use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::model::Name;

/// On-disk folder layout of a Maildir store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Maildir++: folders are `.A.B` directories under the root.
    MaildirPlusPlus,
    /// `LAYOUT=fs`: folders are nested directories.
    Fs,
}

/// The on-disk format of a store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreFormat {
    /// `maildir:` one file per message, flags in the file name.
    Maildir,
    /// `sdbox:` single-dbox, one `u.<UID>` file per message, flags in the index.
    Sdbox,
    /// `mdbox:` multi-dbox, messages in shared `storage/m.<N>` files.
    Mdbox,
}

/// A parsed mail location plus home template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// The text as given (recorded in archives).
    pub spec: String,
    /// Store format as written (`maildir`, `sdbox`, `mdbox`).
    pub format: String,
    /// Store format.
    pub kind: StoreFormat,
    /// Root path template (may contain `~`, `%u`, `%n`, `%d`, `%h`).
    pub root: String,
    /// Folder layout.
    pub layout: Layout,
    /// Folder names on disk are UTF-8 (`:UTF-8`) instead of modified UTF-7.
    pub utf8: bool,
    /// Home directory template (`--home`), e.g. `/srv/mail/%u`.
    pub home: Option<String>,
    /// METADATA dictionary file template (from `mail_attribute_dict = file:...`).
    pub attribute_dict: Option<String>,
    /// dbox alternate storage root template (`ALT=`).
    pub alt: Option<String>,
    /// Single-instance attachment directory template (`mail_attachment_dir`), dbox only.
    pub attachment_dir: Option<String>,
}

impl Location {
    /// Parse `format:path[:KEY=VALUE...]`.
    ///
    /// # Errors
    /// [`Error::Usage`] for unknown formats or options that would change where mail lives
    /// and that this version does not handle (`CONTROL=`, `INBOX=`, `DIRNAME=`; `ALT=` for
    /// Maildir, where it does not exist).
    pub fn parse(spec: &str, home: Option<String>) -> Result<Self> {
        let (format, rest) = spec
            .split_once(':')
            .ok_or_else(|| Error::Usage(format!("mail location {spec:?}: expected FORMAT:PATH")))?;
        let kind = match format {
            "maildir" => StoreFormat::Maildir,
            "sdbox" | "dbox" => StoreFormat::Sdbox,
            "mdbox" => StoreFormat::Mdbox,
            _ => {
                return Err(Error::Usage(format!(
                    "mail location {spec:?}: store format {format:?} is not supported (supported: maildir, sdbox, mdbox)"
                )));
            }
        };
        let mut parts = rest.split(':');
        let root = parts.next().unwrap_or_default().to_string();
        if root.is_empty() {
            return Err(Error::Usage(format!("mail location {spec:?}: empty path")));
        }
        let mut layout = Layout::MaildirPlusPlus;
        let mut utf8 = false;
        let mut alt = None;
        for opt in parts {
            let (k, v) = opt.split_once('=').unwrap_or((opt, ""));
            match k {
                "LAYOUT" => {
                    layout = match v {
                        "fs" => Layout::Fs,
                        "maildir++" => Layout::MaildirPlusPlus,
                        _ => {
                            return Err(Error::Usage(format!(
                                "mail location {spec:?}: LAYOUT={v} is not supported (fs, maildir++)"
                            )));
                        }
                    }
                }
                "UTF-8" => utf8 = true,
                "ALT" if kind != StoreFormat::Maildir && !v.is_empty() => alt = Some(v.to_string()),
                // Index and cache locations do not change the mail; they are caches for Maildir.
                "INDEX" | "INDEXPVT" | "ITERINDEX" | "NO-NOSELECT" | "VOLATILEDIR" => {}
                _ => {
                    return Err(Error::Usage(format!(
                        "mail location {spec:?}: option {k} is not supported yet"
                    )));
                }
            }
        }
        Ok(Location {
            spec: spec.to_string(),
            format: format.to_string(),
            kind,
            root,
            layout,
            utf8,
            home,
            attribute_dict: None,
            alt,
            attachment_dir: None,
        })
    }

    /// One on-disk mailbox name component as UTF-8 bytes (mUTF-7 decoded unless `:UTF-8`;
    /// a component that is not valid mUTF-7 is kept byte for byte, so nothing is lost).
    pub fn decode_component(&self, c: &[u8]) -> Vec<u8> {
        if self.utf8 {
            return c.to_vec();
        }
        match super::mutf7::decode(c) {
            Some(s) => s.into_bytes(),
            None => c.to_vec(),
        }
    }

    /// One UTF-8 mailbox name component as stored on disk (mUTF-7 unless `:UTF-8`).
    pub fn encode_component(&self, c: &[u8]) -> Vec<u8> {
        if self.utf8 {
            return c.to_vec();
        }
        match std::str::from_utf8(c) {
            Ok(s) => super::mutf7::encode(s).into_bytes(),
            Err(_) => c.to_vec(),
        }
    }

    /// The directory of mailbox `name` below the mail root as Dovecot names it in this
    /// location, as path components: Maildir `INBOX` is the root itself (none), Maildir++
    /// `.A.B`, `LAYOUT=fs` `A/B`, dbox `mailboxes/A/B`; each name component encoded as on
    /// disk. Names Dovecot cannot hold here ([`Location::unholdable_mailbox_name`]) still
    /// get a directory, which may be another mailbox's.
    pub fn mailbox_dir_components(&self, name: &Name) -> Vec<Vec<u8>> {
        let comps = name
            .as_bytes()
            .split(|&b| b == b'/')
            .map(|c| self.encode_component(c));
        match (self.kind, self.layout) {
            (StoreFormat::Maildir, _) if name.as_bytes() == b"INBOX" => Vec::new(),
            (StoreFormat::Maildir, Layout::MaildirPlusPlus) => {
                let mut n = b".".to_vec();
                n.extend_from_slice(&comps.collect::<Vec<_>>().join(&b'.'));
                vec![n]
            }
            (StoreFormat::Maildir, Layout::Fs) => comps.collect(),
            (StoreFormat::Sdbox | StoreFormat::Mdbox, _) => {
                std::iter::once(super::dbox::MAILBOXES_DIR.as_bytes().to_vec())
                    .chain(comps)
                    .collect()
            }
        }
    }

    /// Why Dovecot cannot hold a mailbox named `name` in this location, if it cannot: a
    /// `.` in a Maildir++ name (the hierarchy separator on disk: Dovecot refuses such a
    /// name, and a directory made for it shows as another mailbox), or a name component
    /// that is a directory of the layout itself (Maildir `LAYOUT=fs`: `cur`, `new`, `tmp`;
    /// dbox: `dbox-Mails`), which Dovecot refuses as reserved.
    pub fn unholdable_mailbox_name(&self, name: &Name) -> Option<String> {
        let inbox = name.as_bytes() == b"INBOX";
        for c in name.as_bytes().split(|&b| b == b'/') {
            let c = self.encode_component(c);
            match (self.kind, self.layout) {
                (StoreFormat::Maildir, Layout::MaildirPlusPlus) if !inbox && c.contains(&b'.') => {
                    return Some(
                        "'.' cannot be part of a mailbox name in Maildir++, where it separates the hierarchy on disk"
                            .into(),
                    );
                }
                (StoreFormat::Maildir, Layout::Fs)
                    if matches!(c.as_slice(), b"cur" | b"new" | b"tmp") =>
                {
                    return Some(format!(
                        "{} is a reserved name in Maildir LAYOUT=fs (a directory of every mailbox)",
                        String::from_utf8_lossy(&c)
                    ));
                }
                (StoreFormat::Sdbox | StoreFormat::Mdbox, _)
                    if c == super::dbox::MAILS_DIR.as_bytes() =>
                {
                    return Some(format!(
                        "{} is a reserved name in dbox (the directory of every mailbox's mail)",
                        super::dbox::MAILS_DIR
                    ));
                }
                _ => {}
            }
        }
        None
    }

    /// A whole on-disk name with `/` between components (subscriptions), as UTF-8.
    pub fn decode_name(&self, n: &[u8]) -> Name {
        let parts: Vec<Vec<u8>> = n
            .split(|&b| b == b'/')
            .map(|c| self.decode_component(c))
            .collect();
        Name::from_bytes(parts.join(&b'/'))
    }

    /// The user's home directory, if a template is known ([`Self::expand_path`]).
    ///
    /// # Errors
    /// A hostile user name ([`check_user_name`]).
    pub fn home_of(&self, user: &str) -> Result<Option<PathBuf>> {
        self.home
            .as_deref()
            .map(|h| expand_path(h, user, None))
            .transpose()
    }

    /// The user's mail root (Maildir directory).
    ///
    /// # Errors
    /// [`Error::Usage`] when the location needs a home (`~`, `%h`) and none is known; a
    /// hostile user name ([`check_user_name`]).
    pub fn root_of(&self, user: &str) -> Result<PathBuf> {
        let needs_home = self.root.starts_with('~') || self.root.contains("%h");
        if needs_home && self.home.is_none() {
            return Err(Error::Usage(format!(
                "mail location {:?} uses the home directory: give --home TEMPLATE (e.g. /srv/mail/%u)",
                self.spec
            )));
        }
        self.expand_path(&self.root, user)
    }

    /// The mail root of `user` ([`Self::root_of`]), which must be an existing directory.
    ///
    /// # Errors
    /// As [`Self::root_of`]; [`Error::NotFound`] naming the store when the root is missing.
    pub fn existing_root_of(&self, user: &str) -> Result<PathBuf> {
        let root = self.root_of(user)?;
        if !root.is_dir() {
            return Err(Error::NotFound(format!(
                "user {user}: no {} store at {}",
                self.format,
                root.display()
            )));
        }
        Ok(root)
    }

    /// Expand a path template (`~`, `%u`, `%h`, ...) for `user`: the one place where a user
    /// name (from an archive, a store or the command line) becomes part of a path. The user
    /// name is checked ([`check_user_name`]), and every path component a variable helped
    /// to make is proven to be a plain name (not `.` or `..`), so the path stays under the
    /// template's fixed part.
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming the user when it is hostile.
    pub fn expand_path(&self, template: &str, user: &str) -> Result<PathBuf> {
        let home = self.home_of(user)?;
        expand_path(template, user, home.as_deref())
    }

    /// The user's dbox alternate storage root (`ALT=`), if any.
    ///
    /// # Errors
    /// As [`Self::expand_path`].
    pub fn alt_of(&self, user: &str) -> Result<Option<PathBuf>> {
        self.alt
            .as_deref()
            .map(|t| self.expand_path(t, user))
            .transpose()
    }

    /// The user's single-instance attachment directory, if any.
    ///
    /// # Errors
    /// As [`Self::expand_path`].
    pub fn attachment_dir_of(&self, user: &str) -> Result<Option<PathBuf>> {
        self.attachment_dir
            .as_deref()
            .map(|t| self.expand_path(t, user))
            .transpose()
    }

    /// The METADATA dictionary file of a user, if configured (`file:` dicts only).
    ///
    /// # Errors
    /// As [`Self::expand_path`].
    pub fn attribute_file_of(&self, user: &str) -> Result<Option<PathBuf>> {
        let Some(path) = self
            .attribute_dict
            .as_deref()
            .and_then(|t| t.strip_prefix("file:"))
        else {
            return Ok(None);
        };
        self.expand_path(path, user).map(Some)
    }

    /// Find users by listing the directories at the `%u` (or `%d`/`%n`) positions of the
    /// home template (or of the location when there is no home template). Sorted.
    ///
    /// # Errors
    /// When no template contains a user variable, or the base directory cannot be read.
    pub fn discover_users(&self) -> Result<Vec<String>> {
        let template = match &self.home {
            Some(h) if h.contains('%') => h.clone(),
            _ if self.root.contains("%u") || self.root.contains("%n") => self.root.clone(),
            _ => {
                return Err(Error::Usage(
                    "--all-users needs %u (or %d/%n) in --home or in the mail location".into(),
                ));
            }
        };
        let mut users = Vec::new();
        walk_template(
            Path::new("/"),
            &components(&template),
            &mut Vars::default(),
            &mut users,
        )?;
        let mut out: Vec<String> = Vec::new();
        for u in users {
            if self.root_of(&u).map(|r| r.is_dir()).unwrap_or(false) {
                out.push(u);
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}

#[derive(Default, Clone)]
struct Vars {
    u: Option<String>,
    n: Option<String>,
    d: Option<String>,
}

fn components(t: &str) -> Vec<String> {
    let abs = t.starts_with('/');
    let mut v: Vec<String> = t
        .split('/')
        .filter(|c| !c.is_empty())
        .map(String::from)
        .collect();
    if !abs {
        // Relative templates are relative to the current directory.
        if let Ok(cwd) = std::env::current_dir() {
            let mut c: Vec<String> = cwd
                .to_string_lossy()
                .split('/')
                .filter(|c| !c.is_empty())
                .map(String::from)
                .collect();
            c.append(&mut v);
            v = c;
        }
    }
    v
}

fn walk_template(
    base: &Path,
    rest: &[String],
    vars: &mut Vars,
    out: &mut Vec<String>,
) -> Result<()> {
    let Some((first, tail)) = rest.split_first() else {
        let user = match (&vars.u, &vars.n, &vars.d) {
            (Some(u), _, _) => u.clone(),
            (None, Some(n), Some(d)) => format!("{n}@{d}"),
            (None, Some(n), None) => n.clone(),
            _ => return Ok(()),
        };
        out.push(user);
        return Ok(());
    };
    let var = match first.as_str() {
        "%u" | "%Lu" => Some('u'),
        "%n" | "%Ln" => Some('n'),
        "%d" | "%Ld" => Some('d'),
        _ => None,
    };
    match var {
        None => {
            if first.contains('%') {
                return Err(Error::Usage(format!(
                    "--all-users: template component {first:?} must be exactly %u, %n or %d"
                )));
            }
            walk_template(&base.join(first), tail, vars, out)
        }
        Some(v) => {
            let mut names: Vec<String> = Vec::new();
            for e in std::fs::read_dir(base).at(base)? {
                let e = e.at(base)?;
                let Ok(name) = e.file_name().into_string() else {
                    continue;
                };
                if name.starts_with('.') || !e.path().is_dir() || name == "lost+found" {
                    continue;
                }
                names.push(name);
            }
            names.sort();
            for name in names {
                let saved = vars.clone();
                match v {
                    'u' => vars.u = Some(name.clone()),
                    'n' => vars.n = Some(name.clone()),
                    _ => vars.d = Some(name.clone()),
                }
                walk_template(&base.join(&name), tail, vars, out)?;
                *vars = saved;
            }
            Ok(())
        }
    }
}

/// [`Location::expand_path`] with the home directory already expanded (itself by this
/// function): `~` at the start is the home.
fn expand_path(template: &str, user: &str, home: Option<&Path>) -> Result<PathBuf> {
    check_user_name(user.as_bytes())?;
    let home_s = home.map(|h| h.to_string_lossy().into_owned());
    let mut out = String::with_capacity(template.len() + user.len());
    for (i, c) in template.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        let c = match (i, c.strip_prefix('~'), &home_s) {
            (0, Some(rest), Some(h)) => {
                out.push_str(h);
                rest
            }
            _ => c,
        };
        if !c.contains('%') || c == "%h" {
            // Literal text, or the home, itself made by this function.
            out.push_str(&expand(c, user, home_s.as_deref()));
            continue;
        }
        let e = expand(c, user, home_s.as_deref());
        if e.split('/').any(|p| p == "." || p == "..") {
            return Err(Error::corrupt(
                format!("user {user:?}"),
                format!("hostile user name refused (it makes {c:?} {e:?})"),
            ));
        }
        out.push_str(&e);
    }
    Ok(PathBuf::from(out))
}

/// Expand `%u %n %d %h %%` (and the `%L` lowercase forms) in a Dovecot template.
pub fn expand(t: &str, user: &str, home: Option<&str>) -> String {
    let (n, d) = user.split_once('@').unwrap_or((user, ""));
    let mut out = String::with_capacity(t.len() + user.len());
    let mut chars = t.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut lower = false;
        if chars.peek() == Some(&'L') {
            lower = true;
            chars.next();
        }
        let v = match chars.next() {
            Some('u') => user.to_string(),
            Some('n') => n.to_string(),
            Some('d') => d.to_string(),
            Some('h') => home.unwrap_or("").to_string(),
            Some('%') => "%".to_string(),
            Some(o) => format!("%{o}"),
            None => "%".to_string(),
        };
        out.push_str(&if lower { v.to_lowercase() } else { v });
    }
    out
}

/// Check that a user name is safe to put into a path: not empty, no `/` or NUL, no leading
/// `.`, and neither the part before the `@` (`%n`) nor the one after it (`%d`) is `.` or
/// `..`.
///
/// # Errors
/// [`Error::Corrupt`] naming the user when it is not.
pub fn check_user_name(user: &[u8]) -> Result<&str> {
    let s = std::str::from_utf8(user).map_err(|_| {
        Error::corrupt(
            format!("user {:?}", String::from_utf8_lossy(user)),
            "user name is not UTF-8",
        )
    })?;
    let (n, d) = s.split_once('@').unwrap_or((s, ""));
    if s.is_empty()
        || s.contains('/')
        || s.contains('\0')
        || s.starts_with('.')
        || [n, d].iter().any(|p| *p == "." || *p == "..")
    {
        return Err(Error::corrupt(
            format!("user {s:?}"),
            "hostile user name refused",
        ));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_expand() {
        let l = Location::parse(
            "maildir:~/Maildir:LAYOUT=fs:UTF-8",
            Some("/srv/%d/%n".into()),
        )
        .unwrap();
        assert_eq!(l.layout, Layout::Fs);
        assert!(l.utf8);
        assert_eq!(
            l.root_of("bob@ex.org").unwrap(),
            PathBuf::from("/srv/ex.org/bob/Maildir")
        );
        let l = Location::parse("maildir:/var/mail/%Lu/md", None).unwrap();
        assert_eq!(
            l.root_of("Alice").unwrap(),
            PathBuf::from("/var/mail/alice/md")
        );
        assert!(
            Location::parse("maildir:~/M", None)
                .unwrap()
                .root_of("a")
                .is_err()
        );
        assert!(Location::parse("mbox:~/mail", None).is_err());
        let l = Location::parse("mdbox:~/mdbox:ALT=~/alt", Some("/h/%u".into())).unwrap();
        assert_eq!(l.kind, StoreFormat::Mdbox);
        assert_eq!(l.alt_of("a").unwrap(), Some(PathBuf::from("/h/a/alt")));
        assert!(Location::parse("maildir:~/M:ALT=/x", None).is_err());
        assert!(Location::parse("maildir:~/M:CONTROL=/x", None).is_err());
        assert_eq!(expand("a%%b", "u", None), "a%b");
    }

    #[test]
    fn all_users_from_domain_and_user_levels() {
        let t = tempfile::tempdir().unwrap();
        for (d, n) in [("ex.org", "bob"), ("ex.org", "amy"), ("other.net", "cy")] {
            std::fs::create_dir_all(t.path().join(d).join(n).join("Maildir/cur")).unwrap();
        }
        // A directory without a Maildir is not a user.
        std::fs::create_dir_all(t.path().join("ex.org/empty")).unwrap();
        let home = format!("{}/%d/%n", t.path().display());
        let l = Location::parse("maildir:~/Maildir", Some(home)).unwrap();
        assert_eq!(
            l.discover_users().unwrap(),
            ["amy@ex.org", "bob@ex.org", "cy@other.net"]
        );
        let l = Location::parse(
            &format!("maildir:{}/ex.org/%u/Maildir", t.path().display()),
            None,
        )
        .unwrap();
        assert_eq!(l.discover_users().unwrap(), ["amy", "bob"]);
    }

    #[test]
    fn hostile_users() {
        for bad in ["", "..", "a/b", "a\0b", ".hidden", "x@..", "x@.", "..@x"] {
            assert!(check_user_name(bad.as_bytes()).is_err(), "{bad:?}");
        }
        // Every expansion is proven to stay below the template's fixed part, also where
        // literal text next to a variable would make `..` (an empty domain here).
        let l = Location::parse("maildir:/srv/.%d./%n", None).unwrap();
        let e = l.root_of("bob").unwrap_err().to_string();
        assert!(e.contains("hostile user name refused"), "{e}");
        assert_eq!(l.root_of("bob@x").unwrap(), PathBuf::from("/srv/.x./bob"));
        let l = Location::parse("maildir:~/Maildir", Some("/h/%d/%n".into())).unwrap();
        assert!(l.root_of("x@..").is_err());
        assert_eq!(l.root_of("x@y").unwrap(), PathBuf::from("/h/y/x/Maildir"));
        assert_eq!(
            check_user_name(b"alice@example.org").unwrap(),
            "alice@example.org"
        );
    }
}
