//! `--all-users` with `--config`: the users of Dovecot's userdb, as `doveadm -A` iterates
//! them, instead of the directories a home template happens to match.
//!
//! Read directly, without Dovecot's auth service running: `passwd-file` userdbs (the file's
//! user names and home fields) and `passwd` (the system users with `first_valid_uid` <=
//! uid <= `last_valid_uid`). A home comes from, in Dovecot's order: `override_fields home=`
//! (2.4: `fields { home = }`), the user's own home field, `default_fields home=`, and
//! otherwise the mail_home template. Userdbs that cannot be listed this way (sql, ldap,
//! static, a passwd-file path with variables) make [`read`] say so, and the caller falls
//! back to scanning the home template, naming why.

use std::path::{Path, PathBuf};

use super::config::parse::{self, Item, Section};
use super::config::{ConfigVersion, version_of};
use crate::error::{Error, Result};

/// One user of the userdb.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// The user name (`%u`).
    pub name: String,
    /// The home the userdb gives, when it gives one (otherwise the mail_home template).
    pub home: Option<PathBuf>,
}

/// User names and their own home fields, as a userdb lists them.
type Listed = Vec<(String, Option<String>)>;

/// What [`read`] found.
#[derive(Debug)]
pub enum Userdb {
    /// Every userdb of the configuration was listed: its users, in userdb order (a user a
    /// later userdb also lists is the first one's, as Dovecot's lookup returns it).
    Users(Vec<User>),
    /// A userdb maildump cannot list (named), so the users are not known from it.
    Unlisted(String),
    /// The configuration has no userdb (e.g. a doveadm-only configuration).
    Absent,
}

/// The `userdb` sections of `conf`: 2.3 through `doveconf -c CONF userdb` when doveconf
/// answers, else from the file itself; 2.4 from the file.
fn sections(conf: &Path) -> Result<Vec<Section>> {
    let root = match version_of(conf) {
        ConfigVersion::Dovecot23 => match std::process::Command::new("doveconf")
            .arg("-c")
            .arg(conf)
            .arg("userdb")
            .output()
        {
            Ok(out) if out.status.success() => as_23(&String::from_utf8_lossy(&out.stdout), conf)?,
            _ => as_23(
                &std::fs::read_to_string(conf).map_err(|e| Error::io(conf, e))?,
                conf,
            )?,
        },
        ConfigVersion::Dovecot24 => parse::parse_file(conf)?,
    };
    Ok(root
        .items
        .into_iter()
        .filter_map(|i| match i {
            Item::Section(s) if s.kind == "userdb" => Some(s),
            _ => None,
        })
        .collect())
}

/// 2.3 text read with the 2.4 parser (same syntax; the parser wants 2.4's first line).
fn as_23(text: &str, conf: &Path) -> Result<Section> {
    parse::parse_text(&format!("dovecot_config_version = 2.3\n{text}"), conf)
}

/// The value of setting `key` directly in `s` (the last one).
fn setting<'a>(s: &'a Section, key: &str) -> Option<&'a str> {
    s.items.iter().rev().find_map(|i| match i {
        Item::Set(x) if x.key == key => Some(x.value.as_str()),
        _ => None,
    })
}

/// `home=...` in a `default_fields`/`override_fields` value (2.3), or `home` inside a
/// `fields { }` section (2.4).
fn home_field(s: &Section, key: &str) -> Option<String> {
    if key == "fields" {
        return s.items.iter().find_map(|i| match i {
            Item::Section(f) if f.kind == "fields" => setting(f, "home").map(String::from),
            _ => None,
        });
    }
    setting(s, key)?
        .split_whitespace()
        .find_map(|f| f.strip_prefix("home=").map(String::from))
}

/// Read the userdbs of the configuration file `conf`.
///
/// # Errors
/// An unreadable configuration or passwd-file.
pub fn read(conf: &Path) -> Result<Userdb> {
    let dbs = sections(conf)?;
    if dbs.is_empty() {
        return Ok(Userdb::Absent);
    }
    let mut users: Vec<User> = Vec::new();
    for db in &dbs {
        let driver = setting(db, "driver")
            .or(db.name.as_deref())
            .unwrap_or_default();
        let listed = match driver {
            "passwd-file" => passwd_file(db)?,
            "passwd" => system_users(conf)?,
            other => {
                return Ok(Userdb::Unlisted(format!(
                    "its userdb {other:?} cannot be listed without Dovecot's auth service"
                )));
            }
        };
        let Some(listed) = listed else {
            return Ok(Userdb::Unlisted(
                "its passwd-file path holds variables (one file per domain)".into(),
            ));
        };
        let over = home_field(db, "override_fields").or_else(|| home_field(db, "fields"));
        let default = home_field(db, "default_fields");
        for (name, own) in listed {
            if users.iter().any(|u| u.name == name) {
                continue;
            }
            let template = over.clone().or(own).or_else(|| default.clone());
            let home = match template {
                Some(t) => Some(super::location::expand_path(&t, &name, None)?),
                None => None,
            };
            users.push(User { name, home });
        }
    }
    Ok(Userdb::Users(users))
}

/// The users and home fields of a passwd-file userdb; `None` when its path has variables.
fn passwd_file(db: &Section) -> Result<Option<Listed>> {
    let path = setting(db, "passwd_file_path")
        .map(String::from)
        .or_else(|| {
            setting(db, "args").and_then(|a| {
                a.split_whitespace()
                    .rfind(|w| !w.contains('='))
                    .map(String::from)
            })
        });
    let Some(path) = path else {
        return Err(Error::Usage(
            "userdb passwd-file: no file given (args or passwd_file_path)".into(),
        ));
    };
    if path.contains('%') {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(':').collect();
        let home = fields
            .get(5)
            .filter(|h| !h.is_empty())
            .map(|h| h.to_string());
        out.push((fields[0].to_string(), home));
    }
    Ok(Some(out))
}

/// The system users Dovecot's `passwd` userdb serves: uid within the valid range.
fn system_users(conf: &Path) -> Result<Option<Listed>> {
    let get = |name: &str, default: u64| -> u64 {
        std::process::Command::new("doveconf")
            .arg("-c")
            .arg(conf)
            .args(["-h", name])
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .filter(|v| *v != 0 || name == "first_valid_uid")
            .unwrap_or(default)
    };
    let (first, last) = (get("first_valid_uid", 500), get("last_valid_uid", u64::MAX));
    let text = std::fs::read_to_string("/etc/passwd").map_err(|e| Error::io("/etc/passwd", e))?;
    let mut out = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split(':').collect();
        let Some(uid) = f.get(2).and_then(|u| u.parse::<u64>().ok()) else {
            continue;
        };
        if (first..=last).contains(&uid) {
            out.push((f[0].to_string(), f.get(5).map(|h| h.to_string())));
        }
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_file_users_and_their_homes() {
        let t = tempfile::tempdir().unwrap();
        let users = t.path().join("users");
        std::fs::write(
            &users,
            "alice:{PLAIN}x:5000:5000::/srv/mail/alice::\n# comment\ncarol:{PLAIN}y:5000:5000::/elsewhere/carol::\ndave:{PLAIN}z::::::\n",
        )
        .unwrap();
        let conf = t.path().join("d.conf");
        std::fs::write(
            &conf,
            format!(
                "mail_location = maildir:~/Maildir\nuserdb {{\n  driver = passwd-file\n  args = username_format=%n {}\n  default_fields = home=/srv/default/%u\n}}\n",
                users.display()
            ),
        )
        .unwrap();
        let Userdb::Users(got) = read(&conf).unwrap() else {
            panic!("not listed");
        };
        let homes: Vec<(&str, Option<&Path>)> = got
            .iter()
            .map(|u| (u.name.as_str(), u.home.as_deref()))
            .collect();
        assert_eq!(
            homes,
            [
                ("alice", Some(Path::new("/srv/mail/alice"))),
                ("carol", Some(Path::new("/elsewhere/carol"))),
                ("dave", Some(Path::new("/srv/default/dave"))),
            ]
        );
        std::fs::write(&conf, "mail_location = maildir:~/Maildir\nuserdb {\n  driver = sql\n  args = /etc/sql.conf\n}\n").unwrap();
        assert!(matches!(read(&conf).unwrap(), Userdb::Unlisted(w) if w.contains("\"sql\"")));
    }
}
