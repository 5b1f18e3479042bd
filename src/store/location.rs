//! Dovecot `mail_location` syntax and home templates: `maildir:~/Maildir:LAYOUT=fs:UTF-8`,
//! `%u` `%n` `%d` `%h` `~` and 2.4's `%{user | ...}` expansion (`super::template`), and
//! finding the users of a store (`--all-users`).

use std::path::{Path, PathBuf};

use super::template::{Binding, Syntax, Template};
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

/// How single-instance attachments are laid out in the attachment directory when a
/// restore writes them (reading accepts both).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachmentLayout {
    /// Dovecot 2.3 (`mail_attachment_dir` with the `sis` fs): each attachment file is also
    /// hard-linked from `xx/yy/hashes/<hash>`, which 2.3 uses to share equal attachments.
    Dovecot23,
    /// Dovecot 2.4 (`mail_ext_attachment`): `xx/yy/<hash>-<guid>[-<mailbox guid>-<uid>]`
    /// only, no `hashes/` directory.
    Dovecot24,
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
    /// How a restore lays attachments out in `attachment_dir`.
    pub attachment_layout: AttachmentLayout,
    /// Homes the userdb gives single users ([`crate::store::userdb`]), which take the
    /// place of the home template for them.
    pub homes: std::collections::BTreeMap<String, PathBuf>,
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
        Location {
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
            attachment_layout: AttachmentLayout::Dovecot23,
            homes: std::collections::BTreeMap::new(),
        }
        .checked()
    }

    /// `self` once every template in it parses ([`Location::check_templates`]).
    ///
    /// # Errors
    /// As [`Location::check_templates`].
    pub fn checked(self) -> Result<Self> {
        self.check_templates()?;
        Ok(self)
    }

    /// Check that every template (location, home, alternate storage, attachment directory,
    /// METADATA dictionary path) parses, so that a bad one is named before anything is read.
    ///
    /// # Errors
    /// [`Error::Usage`] naming the template: an unknown variable or filter, an unfinished
    /// `%{`.
    pub fn check_templates(&self) -> Result<()> {
        let dict = self
            .attribute_dict
            .as_deref()
            .and_then(|d| d.strip_prefix("file:"));
        for t in [
            Some(self.root.as_str()),
            self.home.as_deref(),
            self.alt.as_deref(),
        ]
        .into_iter()
        .chain([self.attachment_dir.as_deref(), dict])
        .flatten()
        {
            Template::parse(t, Syntax::Any)?;
        }
        Ok(())
    }

    /// One on-disk mailbox name component as UTF-8 bytes (mUTF-7 decoded unless `:UTF-8`;
    /// a component that is not valid mUTF-7 is kept byte for byte, so nothing is lost).
    pub(crate) fn decode_component(&self, c: &[u8]) -> Vec<u8> {
        if self.utf8 {
            return c.to_vec();
        }
        match super::mutf7::decode(c) {
            Some(s) => s.into_bytes(),
            None => c.to_vec(),
        }
    }

    /// One UTF-8 mailbox name component as stored on disk (mUTF-7 unless `:UTF-8`).
    pub(crate) fn encode_component(&self, c: &[u8]) -> Vec<u8> {
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
    pub(crate) fn mailbox_dir_components(&self, name: &Name) -> Vec<Vec<u8>> {
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
    pub(crate) fn unholdable_mailbox_name(&self, name: &Name) -> Option<String> {
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
    pub(crate) fn decode_name(&self, n: &[u8]) -> Name {
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
        if let Some(h) = self.homes.get(user) {
            check_user_name(user.as_bytes())?;
            return Ok(Some(h.clone()));
        }
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
        let needs_home = Template::parse(&self.root, Syntax::Any)?.uses_home();
        if needs_home && self.home.is_none() && !self.homes.contains_key(user) {
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

    /// Expand a path template (`~`, `%u`, `%h`, `%{user | ...}`, ...) for `user`: the one place where a user
    /// name (from an archive, a store or the command line) becomes part of a path. The user
    /// name is checked ([`check_user_name`]), and every path component a variable helped
    /// to make is proven to be a plain name (not `.` or `..`), so the path stays under the
    /// template's fixed part.
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming the user when it is hostile; [`Error::Usage`] for a
    /// template that does not parse or a filter that cannot apply to this user.
    pub(crate) fn expand_path(&self, template: &str, user: &str) -> Result<PathBuf> {
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
    pub(crate) fn attachment_dir_of(&self, user: &str) -> Result<Option<PathBuf>> {
        self.attachment_dir
            .as_deref()
            .map(|t| self.expand_path(t, user))
            .transpose()
    }

    /// The METADATA dictionary file of a user, if configured (`file:` dicts only).
    ///
    /// # Errors
    /// As [`Self::expand_path`].
    pub(crate) fn attribute_file_of(&self, user: &str) -> Result<Option<PathBuf>> {
        let Some(path) = self
            .attribute_dict
            .as_deref()
            .and_then(|t| t.strip_prefix("file:"))
        else {
            return Ok(None);
        };
        self.expand_path(path, user).map(Some)
    }

    /// Find users by listing the directories at the user positions (`%u`, `%n`/`%d`,
    /// `%{user}`, `%{user | username}`...) of the home template (or of the location when the
    /// home template has none). A position whose directory name cannot be read back (e.g.
    /// `%{user | md5 | hexlify(2)}`) matches any directory; each user found is kept only when
    /// the template, expanded for it, gives the path found and its mail root exists. Sorted.
    ///
    /// # Errors
    /// When no template uses the user name, or a directory cannot be read.
    pub fn discover_users(&self) -> Result<Vec<String>> {
        let home = match &self.home {
            Some(h) => Some(Template::parse(h, Syntax::Any)?),
            None => None,
        };
        let root = Template::parse(&self.root, Syntax::Any)?;
        let names_user = |t: &Template| t.components().any(|c| c.names_user());
        let (template, is_home) = match home {
            Some(h) if names_user(&h) => (h, true),
            _ if names_user(&root) => (root, false),
            _ => {
                return Err(Error::Usage(
                    "--all-users needs a directory level named by the user (%u, %{user}, %n, %{user | username}...) in --home or in the mail location".into(),
                ));
            }
        };
        // A relative template is relative to the current directory.
        let cwd = if template.as_str().starts_with('/') {
            PathBuf::from("/")
        } else {
            std::env::current_dir().at(".")?
        };
        let mut found = Vec::new();
        let components: Vec<_> = template
            .components()
            .filter(|c| c.literal().is_none_or(|l| !l.is_empty()))
            .collect();
        walk_template(&cwd, &components, &mut Vars::default(), &mut found)?;
        let mut out: Vec<String> = Vec::new();
        for (user, path) in found {
            let again = if is_home {
                self.home_of(&user).ok().flatten()
            } else {
                self.root_of(&user).ok()
            };
            // The whole path must be the template's for this user (a position that
            // matched any directory, e.g. a hash, must be this user's).
            if again.map(|p| cwd.join(p)).as_deref() != Some(path.as_path()) {
                continue;
            }
            if self.root_of(&user).map(|r| r.is_dir()).unwrap_or(false) {
                out.push(user);
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

/// Walk `rest` below `base`, binding the user variables from directory names; each user
/// found comes with the path walked.
fn walk_template(
    base: &Path,
    rest: &[super::template::Component<'_>],
    vars: &mut Vars,
    out: &mut Vec<(String, PathBuf)>,
) -> Result<()> {
    let Some((first, tail)) = rest.split_first() else {
        let user = match (&vars.u, &vars.n, &vars.d) {
            (Some(u), _, _) => u.clone(),
            (None, Some(n), Some(d)) => format!("{n}@{d}"),
            (None, Some(n), None) => n.clone(),
            _ => return Ok(()),
        };
        out.push((user, base.to_path_buf()));
        return Ok(());
    };
    if let Some(l) = first.literal() {
        return walk_template(&base.join(l), tail, vars, out);
    }
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
        let Some(b) = first.bind(&name) else {
            continue;
        };
        let saved = vars.clone();
        match b {
            Binding::User(v) => vars.u = Some(v),
            Binding::Name(v) => vars.n = Some(v),
            Binding::Domain(v) => vars.d = Some(v),
            Binding::Any => {}
        }
        walk_template(&base.join(&name), tail, vars, out)?;
        *vars = saved;
    }
    Ok(())
}

/// [`Location::expand_path`] with the home directory already expanded (itself by this
/// function): `~` at the start is the home.
pub(crate) fn expand_path(template: &str, user: &str, home: Option<&Path>) -> Result<PathBuf> {
    check_user_name(user.as_bytes())?;
    let t = Template::parse(template, Syntax::Any)?;
    let home_s = home.map(|h| h.to_string_lossy().into_owned());
    let mut out = String::with_capacity(template.len() + user.len());
    for (i, c) in t.components().enumerate() {
        if i > 0 {
            out.push('/');
        }
        let tilde = i == 0 && c.starts_with_tilde() && home_s.is_some();
        if tilde && let Some(h) = &home_s {
            out.push_str(h);
        }
        if c.literal().is_some() || c.is_home() {
            // Literal text, or the home, itself made by this function.
            out.push_str(&c.expand(user, home_s.as_deref(), tilde)?);
            continue;
        }
        let e = c.expand(user, home_s.as_deref(), tilde)?;
        if e.split('/').any(|p| p == "." || p == "..") {
            return Err(Error::corrupt(
                format!("user {user:?}"),
                format!("hostile user name refused (it makes {e:?} of template {template:?})"),
            ));
        }
        out.push_str(&e);
    }
    Ok(PathBuf::from(out))
}

/// Check that a user name is safe to put into a path: not empty, no `/` or NUL, no leading
/// `.`, and neither the part before the `@` (`%n`) nor the one after it (`%d`) is `.` or
/// `..`.
///
/// # Errors
/// [`Error::Corrupt`] naming the user when it is not.
pub(crate) fn check_user_name(user: &[u8]) -> Result<&str> {
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
        let l = Location::parse("maildir:/m/a%%b/%u", None).unwrap();
        assert_eq!(l.root_of("u").unwrap(), PathBuf::from("/m/a%b/u"));
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
    fn all_users_with_dovecot24_templates() {
        let t = tempfile::tempdir().unwrap();
        // Hashed levels whose names cannot be read back: the whole path is checked.
        for (h, u) in [("a", "amy"), ("b", "bob"), ("b", "amy"), ("c", "cy@x.org")] {
            std::fs::create_dir_all(t.path().join(h).join(u).join("Maildir/cur")).unwrap();
        }
        let home = format!(
            "{}/%{{user | username | substr(0,1)}}/%{{user}}",
            t.path().display()
        );
        let l = Location::parse("maildir:%{home}/Maildir", Some(home)).unwrap();
        assert_eq!(l.discover_users().unwrap(), ["amy", "bob", "cy@x.org"]);
        let md5 = |u: &str| {
            use md5::Digest as _;
            hex::encode(md5::Md5::digest(u.as_bytes()))[..2].to_string()
        };
        let t = tempfile::tempdir().unwrap();
        for u in ["amy", "bob"] {
            std::fs::create_dir_all(t.path().join(md5(u)).join(u).join("cur")).unwrap();
        }
        std::fs::create_dir_all(t.path().join("00/bob/cur")).unwrap();
        let l = Location::parse(
            &format!(
                "maildir:{}/%{{user | md5 | hexlify(2)}}/%{{user}}",
                t.path().display()
            ),
            None,
        )
        .unwrap();
        assert_eq!(l.discover_users().unwrap(), ["amy", "bob"]);
        let l = Location::parse("maildir:/srv/%{user | md5 | hexlify}", None).unwrap();
        let e = l.discover_users().unwrap_err().to_string();
        assert!(e.contains("--all-users"), "{e}");
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
        // 2.4 filters are checked the same way: `..` made by reversing `x..` is refused.
        let l = Location::parse("maildir:/h/%{user | substr(1)}/M", None).unwrap();
        let e = l.root_of("a..").unwrap_err().to_string();
        assert!(e.contains("hostile"), "{e}");
        assert_eq!(l.root_of("a.b").unwrap(), PathBuf::from("/h/.b/M"));
        let l = Location::parse("maildir:/h/%{user | domain}/M", None).unwrap();
        assert!(l.root_of("x@..").is_err());
        assert_eq!(l.root_of("x@y").unwrap(), PathBuf::from("/h/y/M"));
        assert_eq!(
            check_user_name(b"alice@example.org").unwrap(),
            "alice@example.org"
        );
    }
}
