//! Dovecot 2.4 settings mapped onto maildump's [`Location`]: `mail_driver`, `mail_path`,
//! `mail_home`, `mailbox_list_layout`, `mailbox_list_utf8`, `mail_alt_path`,
//! `mail_attribute { dict file { path } }` and `mail_ext_attachment { path fs ... }`;
//! every other setting that changes where mail lives is refused with an error naming it.
//!
//! The settings come as [`super::parse::Section`] trees, from `doveconf -N` or from the file
//! itself. Key names follow 2.4's prefixing: inside `mail_ext_attachment { }`, `path` is
//! `mail_ext_attachment_path`; inside `dict NAME { }`, `path` is `dict_NAME_path`
//! (`dict_file_path`). A setting inside a mail driver's filter (`mdbox { mail_path = ... }`)
//! applies when that driver is used; driver defaults are 2.4's (`mail_path =
//! %{home}/Maildir`, `mailbox_list_layout = maildir++` for maildir, `fs` otherwise).

use super::parse::{Form, Item, Section, Setting};
use crate::error::{Error, Result};
use crate::store::location::{AttachmentLayout, Layout, Location, StoreFormat};
use crate::store::template::to_any;

/// Settings that decide where mail lives: outside the top level they are refused (except in
/// the chosen driver's filter, or a shared namespace, which shows other users' mail).
const LOCATION_KEYS: &[&str] = &[
    "mail_driver",
    "mail_path",
    "mail_home",
    "mail_inbox_path",
    "mail_index_path",
    "mail_control_path",
    "mail_alt_path",
    "mailbox_list_layout",
    "mailbox_list_utf8",
    "mailbox_directory_name",
    "mailbox_root_directory_name",
    "mailbox_subscriptions_filename",
    "mailbox_list_storage_escape_char",
    "mailbox_list_visible_escape_char",
    "mail_chroot",
    "mail_ext_attachment_path",
];

/// Filters that have no name (`kind { }`); all others have one (`kind name { }`).
const UNNAMED_FILTERS: &[&str] = &["mail_attribute", "mail_ext_attachment"];

/// Mail drivers whose filters may hold driver-specific settings.
const DRIVERS: &[&str] = &[
    "maildir", "sdbox", "dbox", "mdbox", "mbox", "imapc", "pop3c", "raw", "shared", "fail",
];

/// A filter on the way to a setting: kind and name.
type Filter = (String, Option<String>);

/// The configuration flattened: each setting with the filters it is inside (in file order),
/// and each filter seen.
#[derive(Default)]
struct Flat {
    settings: Vec<(Vec<Filter>, Setting)>,
    filters: Vec<Vec<Filter>>,
}

impl Flat {
    fn add(&mut self, path: &[Filter], section: &Section) {
        for item in &section.items {
            match item {
                Item::Set(s) => self.add_setting(path, s),
                Item::Section(sub) => {
                    let mut p = path.to_vec();
                    p.push((sub.kind.clone(), sub.name.clone()));
                    self.filters.push(p.clone());
                    self.add(&p, sub);
                }
            }
        }
    }

    /// A setting, with 2.4's prefixing: `F { key }` is the top-level `F_key` when that is a
    /// setting we know (`mail_ext_attachment { path }`), `F { F_key }` is top-level too; a
    /// key written as `filter/name/key` is inside those filters.
    fn add_setting(&mut self, path: &[Filter], s: &Setting) {
        let mut path = path.to_vec();
        let mut key = s.key.clone();
        if key.contains('/') {
            let mut parts: Vec<&str> = s.key.split('/').collect();
            key = parts.pop().unwrap_or_default().to_string();
            let mut it = parts.into_iter();
            while let Some(kind) = it.next() {
                let name = if UNNAMED_FILTERS.contains(&kind) || DRIVERS.contains(&kind) {
                    None
                } else {
                    it.next().map(str::to_string)
                };
                path.push((kind.to_string(), name));
            }
        }
        if let [(kind, None)] = path.as_slice() {
            let prefixed = format!("{kind}_{key}");
            if key.starts_with(&format!("{kind}_")) {
                path.clear();
            } else if LOCATION_KEYS.contains(&prefixed.as_str())
                || prefixed.starts_with("mail_ext_attachment_")
            {
                path.clear();
                key = prefixed;
            }
        }
        let mut s = s.clone();
        s.key = key;
        self.settings.push((path, s));
    }

    /// The last top-level value of `key`, or in the filter `driver { }`, which wins.
    fn get(&self, key: &str, driver: Option<&str>) -> Option<&Setting> {
        let in_driver = driver.and_then(|d| {
            self.settings
                .iter()
                .rev()
                .find(|(p, s)| s.key == key && matches!(p.as_slice(), [(k, None)] if k == d))
        });
        in_driver
            .or_else(|| {
                self.settings
                    .iter()
                    .rev()
                    .find(|(p, s)| p.is_empty() && s.key == key)
            })
            .map(|(_, s)| s)
    }

    /// The settings inside the filter `path` (exactly), in order.
    fn inside<'a>(&'a self, path: &'a [Filter]) -> impl Iterator<Item = &'a Setting> + 'a {
        self.settings
            .iter()
            .filter(move |(p, _)| p.as_slice() == path)
            .map(|(_, s)| s)
    }
}

fn named(kind: &str, name: Option<&str>) -> Filter {
    (kind.to_string(), name.map(str::to_string))
}

fn show(path: &[Filter]) -> String {
    path.iter()
        .map(|(k, n)| match n {
            Some(n) => format!("{k} {n} {{ }}"),
            None => format!("{k} {{ }}"),
        })
        .collect::<Vec<_>>()
        .join(" > ")
}

fn refuse(s: &Setting, why: impl std::fmt::Display) -> Error {
    Error::Usage(format!("{} ({}): {why}", s.key, s.at))
}

/// The value of a setting we use as text (not `<file` or `$SET:`/`$ENV:`).
fn text(s: &Setting) -> Result<&str> {
    match s.form {
        Form::Text => Ok(s.value.as_str()),
        Form::File => Err(refuse(
            s,
            "a value read from a file (`<path`) is not supported here; write the value",
        )),
        Form::Variables => Err(refuse(
            s,
            "$SET:/$ENV: in this value is not supported; write the value",
        )),
    }
}

/// A template value rewritten for [`Location`] ([`to_any`]).
fn template(s: &Setting) -> Result<String> {
    to_any(text(s)?, &format!("{} ({})", s.key, s.at))
}

/// Location settings inside filters that do not apply to the user's own store.
fn check_filters(flat: &Flat) -> Result<()> {
    for (path, s) in &flat.settings {
        if path.is_empty() || !LOCATION_KEYS.contains(&s.key.as_str()) {
            continue;
        }
        match path.as_slice() {
            [(d, None)] if DRIVERS.contains(&d.as_str()) => continue,
            [(ns, Some(name)), ..] if ns == "namespace" => {
                let ns_path = [named("namespace", Some(name))];
                let shared = flat
                    .inside(&ns_path)
                    .any(|t| (t.key == "type" || t.key == "namespace_type") && t.value == "shared");
                if shared {
                    continue;
                }
                return Err(refuse(
                    s,
                    format_args!(
                        "a namespace with a mail location of its own ({}) is not supported: maildump reads each user's main store (give --location and --home for it)",
                        show(path)
                    ),
                ));
            }
            _ => {
                return Err(refuse(
                    s,
                    format_args!(
                        "set inside {}: maildump reads location settings only outside filters (or in the mail driver's filter)",
                        show(path)
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Build the [`Location`] a 2.4 configuration describes.
///
/// # Errors
/// [`Error::Usage`] naming the setting (and its file and line) for anything maildump
/// cannot read the same way Dovecot does.
pub fn location(root: &Section, conf: &std::path::Path) -> Result<Location> {
    let mut flat = Flat::default();
    flat.add(&[], root);
    check_filters(&flat)?;
    let driver_set = flat.get("mail_driver", None).ok_or_else(|| {
        Error::Usage(format!(
            "{}: mail_driver is not set: maildump needs the store format (maildir, sdbox or mdbox); Dovecot's autodetection is not supported",
            conf.display()
        ))
    })?;
    let driver = text(driver_set)?.to_string();
    let kind = match driver.as_str() {
        "maildir" => StoreFormat::Maildir,
        "sdbox" | "dbox" => StoreFormat::Sdbox,
        "mdbox" => StoreFormat::Mdbox,
        other => {
            return Err(refuse(
                driver_set,
                format_args!(
                    "store format {other:?} is not supported (supported: maildir, sdbox, mdbox)"
                ),
            ));
        }
    };
    let dbox = kind != StoreFormat::Maildir;
    let get = |k: &str| flat.get(k, Some(&driver));
    let nonempty = |k: &str| get(k).filter(|s| !s.value.is_empty());
    let root = match nonempty("mail_path") {
        Some(s) => template(s)?,
        None => format!(
            "%{{home}}/{}",
            match kind {
                StoreFormat::Maildir => "Maildir",
                StoreFormat::Sdbox => "sdbox",
                StoreFormat::Mdbox => "mdbox",
            }
        ),
    };
    let home = nonempty("mail_home").map(template).transpose()?;
    let layout = layout_of(&flat, &driver, dbox)?;
    let utf8 = match get("mailbox_list_utf8") {
        None => false,
        Some(s) => parse_bool(s)?,
    };
    check_unsupported(&flat, &driver, dbox)?;
    let alt = match nonempty("mail_alt_path") {
        Some(s) if !dbox => {
            return Err(refuse(
                s,
                "applies to sdbox and mdbox only (Maildir has no alternate storage)",
            ));
        }
        Some(s) => Some(template(s)?),
        None => None,
    };
    let attachment_dir = attachment_dir(&flat, &driver, dbox)?;
    let attribute_dict = attribute_dict(&flat, conf)?;
    let mut spec = format!("{driver}:{root}");
    if let Some(a) = &alt {
        spec.push_str(&format!(":ALT={a}"));
    }
    if !dbox && layout == Layout::Fs {
        spec.push_str(":LAYOUT=fs");
    }
    if utf8 {
        spec.push_str(":UTF-8");
    }
    Location {
        spec,
        format: driver,
        kind,
        root,
        layout,
        utf8,
        home,
        attribute_dict,
        alt,
        attachment_dir,
        attachment_layout: AttachmentLayout::Dovecot24,
        homes: std::collections::BTreeMap::new(),
    }
    .checked()
}

fn parse_bool(s: &Setting) -> Result<bool> {
    let v = text(s)?;
    if v.eq_ignore_ascii_case("yes") || v.eq_ignore_ascii_case("y") || v == "1" {
        Ok(true)
    } else if v.eq_ignore_ascii_case("no") {
        Ok(false)
    } else {
        Err(refuse(
            s,
            format_args!("Invalid boolean value: {v} (use yes or no)"),
        ))
    }
}

fn layout_of(flat: &Flat, driver: &str, dbox: bool) -> Result<Layout> {
    let Some(s) = flat.get("mailbox_list_layout", Some(driver)) else {
        return Ok(if dbox {
            Layout::Fs
        } else {
            Layout::MaildirPlusPlus
        });
    };
    match (text(s)?, dbox) {
        ("fs", _) => Ok(Layout::Fs),
        ("maildir++", false) => Ok(Layout::MaildirPlusPlus),
        (v, _) => Err(refuse(
            s,
            format_args!(
                "layout {v:?} is not supported with mail_driver = {driver} (supported: {})",
                if dbox { "fs" } else { "maildir++, fs" }
            ),
        )),
    }
}

/// Settings that move parts of the store elsewhere, which maildump does not follow: each is
/// refused when set to anything but its default.
fn check_unsupported(flat: &Flat, driver: &str, dbox: bool) -> Result<()> {
    let dbox_default = |d: &'static str| if dbox { d } else { "" };
    let rules: [(&str, &str, &str); 9] = [
        (
            "mail_inbox_path",
            if dbox { "" } else { "." },
            "INBOX must be the mail_path directory",
        ),
        (
            "mail_index_path",
            "",
            "maildump reads and writes the index files beside the mail",
        ),
        (
            "mail_control_path",
            "",
            "maildump reads and writes the control files beside the mail",
        ),
        (
            "mailbox_directory_name",
            dbox_default("dbox-Mails"),
            "maildump expects Dovecot's default",
        ),
        (
            "mailbox_root_directory_name",
            dbox_default("mailboxes"),
            "maildump expects Dovecot's default",
        ),
        (
            "mailbox_subscriptions_filename",
            "subscriptions",
            "maildump expects Dovecot's default",
        ),
        (
            "mailbox_list_storage_escape_char",
            "",
            "escaped mailbox names on disk are not supported",
        ),
        (
            "mailbox_list_visible_escape_char",
            "",
            "escaped mailbox names are not supported",
        ),
        (
            "mail_chroot",
            "",
            "give the paths as seen from outside the chroot with --location and --home",
        ),
    ];
    for (key, default, why) in rules {
        if let Some(s) = flat.get(key, Some(driver)) {
            let v = text(s)?;
            if !v.is_empty() && v != default {
                return Err(refuse(s, format_args!("{v:?} is not supported: {why}")));
            }
        }
    }
    Ok(())
}

/// `mail_ext_attachment_path` and its `fs` stack: `posix`, optionally below `sis` or
/// `sis-queue` (what Dovecot stores plainly in files).
fn attachment_dir(flat: &Flat, driver: &str, dbox: bool) -> Result<Option<String>> {
    let Some(s) = flat
        .get("mail_ext_attachment_path", Some(driver))
        .filter(|s| !s.value.is_empty())
    else {
        return Ok(None);
    };
    if !dbox {
        return Err(refuse(s, "applies to sdbox and mdbox only"));
    }
    let base = [named("mail_ext_attachment", None)];
    let mut drivers = Vec::new();
    for f in &flat.filters {
        if let [b, (kind, Some(name))] = f.as_slice()
            && *b == base[0]
            && kind == "fs"
        {
            let explicit = flat
                .inside(f)
                .filter(|x| x.key == "fs_driver" || x.key == "driver")
                .last()
                .map(|x| x.value.clone());
            drivers.push(explicit.unwrap_or_else(|| name.clone()));
        }
    }
    let ok = match drivers
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["posix"] | ["sis" | "sis-queue", "posix"] => true,
        [] => {
            return Err(refuse(
                s,
                "is set, but mail_ext_attachment { fs ... } is missing (Dovecot refuses this too)",
            ));
        }
        _ => false,
    };
    if !ok {
        return Err(refuse(
            s,
            format_args!(
                "attachment fs {:?} is not supported (supported: posix, or sis then posix): other fs drivers change the stored bytes",
                drivers.join(" ")
            ),
        ));
    }
    Ok(Some(template(s)?))
}

/// `mail_attribute { dict NAME { driver path } }` as a `file:PATH` dictionary.
fn attribute_dict(flat: &Flat, conf: &std::path::Path) -> Result<Option<String>> {
    let base = named("mail_attribute", None);
    // The same `dict NAME { }` written twice is one filter (later settings win).
    let mut dicts: Vec<&Vec<Filter>> = Vec::new();
    for f in &flat.filters {
        if matches!(f.as_slice(), [b, (k, Some(_))] if *b == base && k == "dict")
            && !dicts.contains(&f)
        {
            dicts.push(f);
        }
    }
    let Some(path) = dicts.last() else {
        return Ok(None);
    };
    let name = path.get(1).and_then(|f| f.1.clone()).unwrap_or_default();
    let canonical = |k: &str| -> String {
        let long = format!("dict_{name}_{k}");
        if ["dict_file_path", "dict_driver"].contains(&long.as_str()) || k.starts_with("dict_") {
            if k.starts_with("dict_") {
                k.to_string()
            } else {
                long
            }
        } else {
            format!("dict_{k}")
        }
    };
    let mut driver = name.clone();
    let mut file = None;
    for s in flat.inside(path) {
        match canonical(&s.key).as_str() {
            "dict_driver" => driver = text(s)?.to_string(),
            "dict_file_path" => file = Some(s),
            _ => {}
        }
    }
    if dicts.len() > 1 || driver != "file" {
        let what = if dicts.len() > 1 {
            "more than one dict".to_string()
        } else {
            format!("the {driver:?} dict")
        };
        return Err(Error::Usage(format!(
            "{}: mail_attribute: {what} is not supported (only one `dict file {{ path = ... }}`): maildump reads and writes METADATA in a file dict",
            conf.display()
        )));
    }
    let file = file.ok_or_else(|| {
        Error::Usage(format!(
            "{}: mail_attribute {{ dict file {{ }} }} has no path",
            conf.display()
        ))
    })?;
    Ok(Some(format!("file:{}", template(file)?)))
}

#[cfg(test)]
mod tests {
    use super::super::parse::parse_text;
    use super::*;

    fn loc(body: &str) -> Result<Location> {
        let text =
            format!("dovecot_config_version = 2.4.1\ndovecot_storage_version = 2.4.1\n{body}");
        let conf = std::path::Path::new("/etc/dovecot/dovecot.conf");
        location(&parse_text(&text, conf)?, conf)
    }

    #[test]
    fn each_format_with_its_settings() {
        let l = loc("mail_driver = mdbox\nmail_path = ~/mdbox\nmail_home = /srv/h/%{user}\n\
             mail_alt_path = /alt/%{user | username}\n\
             mail_attribute {\n  dict file {\n    path = %{home}/dovecot-attributes\n  }\n}\n\
             mail_ext_attachment {\n  path = ~/attachments\n  min_size = 1k\n  fs sis {\n  }\n  fs posix {\n  }\n}\n")
        .unwrap();
        assert_eq!(l.kind, StoreFormat::Mdbox);
        assert_eq!(l.layout, Layout::Fs);
        assert_eq!(l.attachment_layout, AttachmentLayout::Dovecot24);
        assert_eq!(l.spec, "mdbox:~/mdbox:ALT=/alt/%{user | username}");
        assert_eq!(
            l.root_of("a@b").unwrap(),
            std::path::PathBuf::from("/srv/h/a@b/mdbox")
        );
        assert_eq!(
            l.alt_of("a@b").unwrap().unwrap(),
            std::path::PathBuf::from("/alt/a")
        );
        assert_eq!(
            l.attribute_file_of("a").unwrap().unwrap(),
            std::path::PathBuf::from("/srv/h/a/dovecot-attributes")
        );
        assert_eq!(
            l.attachment_dir_of("a").unwrap().unwrap(),
            std::path::PathBuf::from("/srv/h/a/attachments")
        );
        // Top-level spelling of the attachment settings, driver default path, `%u` literal.
        let l = loc(
            "mail_driver = sdbox\nmail_home = /h/%u\nmail_ext_attachment_path = /att\n\
             mail_ext_attachment {\n  fs posix {\n  }\n}\n",
        )
        .unwrap();
        assert_eq!(
            l.root_of("bob").unwrap(),
            std::path::PathBuf::from("/h/%u/sdbox")
        );
        assert_eq!(l.attachment_dir.as_deref(), Some("/att"));
        let l = loc(
            "mail_driver = maildir\nmail_path = /m/%{user}\nmailbox_list_layout = fs\n\
             mailbox_list_utf8 = yes\nmail_inbox_path = .\nmaildir {\n  mail_path = /d/%{user}\n}\n\
             mdbox {\n  mail_path = /never\n}\n",
        )
        .unwrap();
        assert_eq!((l.layout, l.utf8), (Layout::Fs, true));
        assert_eq!(l.root_of("x").unwrap(), std::path::PathBuf::from("/d/x"));
        assert_eq!(l.spec, "maildir:/d/%{user}:LAYOUT=fs:UTF-8");
        let l = loc("mail_driver = maildir\nmail_home = /h/%{user}\n").unwrap();
        assert_eq!((l.layout, l.utf8), (Layout::MaildirPlusPlus, false));
        assert_eq!(
            l.root_of("x").unwrap(),
            std::path::PathBuf::from("/h/x/Maildir")
        );
        assert_eq!(l.attribute_dict, None);
        // A shared namespace's own location is other users' mail: not an error.
        loc("mail_driver = maildir\nnamespace shared {\n  type = shared\n  mail_path = %{owner_home}/Maildir\n}\n")
            .unwrap();
    }

    #[test]
    fn refusals_name_the_setting() {
        let cases = [
            ("mail_home = /h\n", "mail_driver is not set"),
            (
                "mail_driver = mbox\n",
                "mail_driver (/etc/dovecot/dovecot.conf line 3): store format \"mbox\"",
            ),
            (
                "mail_driver = maildir\nmail_index_path = /idx/%{user}\n",
                "mail_index_path (/etc/dovecot/dovecot.conf line 4)",
            ),
            (
                "mail_driver = maildir\nmail_control_path = ~/c\n",
                "mail_control_path",
            ),
            (
                "mail_driver = maildir\nmail_inbox_path = ~/inbox\n",
                "mail_inbox_path",
            ),
            (
                "mail_driver = sdbox\nmail_inbox_path = .\n",
                "mail_inbox_path",
            ),
            (
                "mail_driver = maildir\nmail_alt_path = /alt\n",
                "mail_alt_path",
            ),
            (
                "mail_driver = sdbox\nmailbox_list_layout = maildir++\n",
                "mailbox_list_layout",
            ),
            (
                "mail_driver = maildir\nmailbox_list_layout = index\n",
                "layout \"index\"",
            ),
            (
                "mail_driver = maildir\nmailbox_list_utf8 = maybe\n",
                "Invalid boolean value",
            ),
            ("mail_driver = maildir\nmail_chroot = /c\n", "mail_chroot"),
            (
                "mail_driver = sdbox\nmailbox_directory_name = x\n",
                "mailbox_directory_name",
            ),
            (
                "mail_driver = maildir\nmail_path = <  /etc/path\n",
                "mail_path",
            ),
            (
                "mail_driver = maildir\nmail_path = $ENV:HOME/M\n",
                "$SET:/$ENV:",
            ),
            (
                "mail_driver = maildir\nmail_path = /m/%{username}\n",
                "%{user | username}",
            ),
            (
                "mail_driver = maildir\nmail_home = /m/%{user | nosuch}\n",
                "mail_home",
            ),
            (
                "mail_driver = maildir\nprotocol imap {\n  mail_path = /x\n}\n",
                "inside protocol imap { }",
            ),
            (
                "mail_driver = maildir\nnamespace extra {\n  prefix = x/\n  mail_path = /x\n}\n",
                "namespace extra",
            ),
            (
                "mail_driver = sdbox\nmail_ext_attachment_path = /a\n",
                "mail_ext_attachment { fs ... } is missing",
            ),
            (
                "mail_driver = sdbox\nmail_ext_attachment {\n path = /a\n fs compress {\n }\n fs posix {\n }\n}\n",
                "\"compress posix\"",
            ),
            (
                "mail_driver = maildir\nmail_ext_attachment_path = /a\nmail_ext_attachment {\n fs posix {\n }\n}\n",
                "sdbox and mdbox only",
            ),
            (
                "mail_driver = maildir\nmail_attribute {\n dict proxy {\n  name = metadata\n }\n}\n",
                "the \"proxy\" dict",
            ),
            (
                "mail_driver = maildir\nmail_attribute {\n dict file {\n }\n}\n",
                "has no path",
            ),
        ];
        for (body, want) in cases {
            let e = loc(body).unwrap_err().to_string();
            assert!(e.contains(want), "{body:?}: {e}");
        }
    }
}
