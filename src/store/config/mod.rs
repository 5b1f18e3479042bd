//! `--config`: the mail location of a Dovecot configuration file, 2.3 or 2.4.
//!
//! - **Which Dovecot**: a 2.4 file's first setting is `dovecot_config_version` (2.4 requires
//!   it); any other file is read as 2.3.
//! - **2.3** (unchanged): `mail_location`, `mail_home`, `mail_attribute_dict` and
//!   `mail_attachment_dir`, each through `doveconf -h` when it answers, else from the file.
//! - **2.4**: `doveconf -c FILE -N` when the installed doveconf is 2.4's (its output, every
//!   setting the files set with the includes resolved, is read by `parse`; not `-n`, which
//!   leaves out a setting equal to its global default even where the mail driver's default
//!   differs: `mailbox_list_layout = fs` with `mail_driver = maildir`); when doveconf is missing or refuses the file
//!   because it is older (2.3's says `Unknown setting: dovecot_config_version`), the file
//!   itself with its `!include`s (`parse::parse_file`). A 2.4 doveconf that refuses the file
//!   for another reason stops the run with its message. The settings are mapped by
//!   `v24::location`.

pub(crate) mod parse;
pub(crate) mod v24;

use std::path::Path;

use crate::error::{Error, Result};
use crate::store::location::Location;

/// The Dovecot a configuration file is written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigVersion {
    /// 2.3 and older: `mail_location`.
    Dovecot23,
    /// 2.4: `dovecot_config_version` first, `mail_driver`/`mail_path`.
    Dovecot24,
}

/// How a 2.4 configuration was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Through `doveconf -N` (2.4's).
    Doveconf,
    /// By reading the file and its includes.
    File,
}

/// What a configuration file says about the mail store.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// The location, home template, METADATA dictionary and attachment directory it gives.
    pub location: Location,
    /// Which Dovecot it is for.
    pub version: ConfigVersion,
    /// How it was read (2.3 files: always [`Source::Doveconf`] when doveconf answered for
    /// `mail_location`, else [`Source::File`]).
    pub source: Source,
}

/// Read the mail location from the configuration file `conf`.
///
/// # Errors
/// [`Error::Usage`] naming the setting for what maildump cannot read the way Dovecot does
/// (2.3: no `mail_location`; 2.4: see `v24::location`); a 2.4 doveconf's own complaint;
/// [`Error::Io`] for an unreadable file.
pub fn read(conf: &Path) -> Result<StoreConfig> {
    match version_of(conf) {
        ConfigVersion::Dovecot23 => read23(conf),
        ConfigVersion::Dovecot24 => {
            let Some(text) = doveconf24(conf)? else {
                return Ok(StoreConfig {
                    location: v24::location(&parse::parse_file(conf)?, conf)?,
                    version: ConfigVersion::Dovecot24,
                    source: Source::File,
                });
            };
            // Lines of doveconf's output are not lines of the files: a setting refused there
            // is looked up in the files for its real place.
            let printed = format!("{} (as doveconf -N prints it)", conf.display());
            let location = v24::location(&parse::parse_text(&text, Path::new(&printed))?, conf)
                .map_err(
                    |e| match parse::parse_file(conf).map(|r| v24::location(&r, conf)) {
                        Ok(Err(precise)) => precise,
                        _ => e,
                    },
                )?;
            Ok(StoreConfig {
                location,
                version: ConfigVersion::Dovecot24,
                source: Source::Doveconf,
            })
        }
    }
}

/// 2.4 when the first setting of the file is `dovecot_config_version`; 2.3 otherwise (also
/// when the file cannot be read here: doveconf may still read it, as before).
pub(crate) fn version_of(conf: &Path) -> ConfigVersion {
    let Ok(data) = std::fs::read(conf) else {
        return ConfigVersion::Dovecot23;
    };
    let text = String::from_utf8_lossy(&data);
    let first = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'));
    match first {
        Some(l)
            if l.strip_prefix("dovecot_config_version")
                .is_some_and(|r| r.trim_start().starts_with('=')) =>
        {
            ConfigVersion::Dovecot24
        }
        _ => ConfigVersion::Dovecot23,
    }
}

/// `doveconf -c CONF -N` of a 2.4 file: the text when doveconf read it, `None` when there is
/// no doveconf or it is older than 2.4 (it does not know `dovecot_config_version`).
///
/// # Errors
/// [`Error::Usage`] with doveconf's message when a 2.4 doveconf refuses the file.
fn doveconf24(conf: &Path) -> Result<Option<String>> {
    let Ok(out) = std::process::Command::new("doveconf")
        .arg("-c")
        .arg(conf)
        .arg("-N")
        .stdin(std::process::Stdio::null())
        .output()
    else {
        return Ok(None);
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        let has_version = stdout
            .lines()
            .any(|l| l.starts_with("dovecot_config_version"));
        return Ok(has_version.then(|| stdout.into_owned()));
    }
    if stderr.contains("Unknown setting: dovecot_config_version") {
        return Ok(None);
    }
    let msg = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    Err(Error::Usage(format!(
        "{}: Dovecot's doveconf refuses it: {msg}",
        conf.display()
    )))
}

/// A 2.3 file: the four settings as before, each through doveconf or the file.
fn read23(conf: &Path) -> Result<StoreConfig> {
    let (spec, via_doveconf) = conf_setting(conf, "mail_location")?;
    let spec =
        spec.ok_or_else(|| Error::Usage(format!("{}: no mail_location set", conf.display())))?;
    let home = conf_setting(conf, "mail_home")?.0;
    let dict = conf_setting(conf, "mail_attribute_dict")?.0;
    let attachments = conf_setting(conf, "mail_attachment_dir")?.0;
    let mut location = Location::parse(&spec, None)?;
    location.home = home;
    location.attribute_dict = dict;
    location.attachment_dir = attachments;
    Ok(StoreConfig {
        location,
        version: ConfigVersion::Dovecot23,
        source: if via_doveconf {
            Source::Doveconf
        } else {
            Source::File
        },
    })
}

/// Read one setting from a 2.3 dovecot.conf, through doveconf when present, else by
/// reading the file (the last `name = value` line); whether doveconf answered.
fn conf_setting(conf: &Path, name: &str) -> Result<(Option<String>, bool)> {
    if let Ok(out) = std::process::Command::new("doveconf")
        .arg("-c")
        .arg(conf)
        .arg("-h")
        .arg(name)
        .output()
        && out.status.success()
    {
        let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
        return Ok(((!v.is_empty()).then_some(v), true));
    }
    let text = std::fs::read_to_string(conf).map_err(|e| Error::io(conf, e))?;
    let mut found = None;
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if let Some((k, v)) = line.split_once('=')
            && k.trim() == name
        {
            found = Some(v.trim().to_string());
        }
    }
    Ok((found.filter(|v| !v.is_empty()), false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_from_the_first_setting() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("c.conf");
        for (text, v) in [
            (
                "# x\n\n  dovecot_config_version = 2.4.1\n",
                ConfigVersion::Dovecot24,
            ),
            ("dovecot_config_version=2.4.0\n", ConfigVersion::Dovecot24),
            (
                "mail_location = maildir:~/M\ndovecot_config_version = 2.4.1\n",
                ConfigVersion::Dovecot23,
            ),
            ("dovecot_config_versions = 1\n", ConfigVersion::Dovecot23),
        ] {
            std::fs::write(&p, text).unwrap();
            assert_eq!(version_of(&p), v, "{text:?}");
        }
        assert_eq!(
            version_of(&t.path().join("missing")),
            ConfigVersion::Dovecot23
        );
    }
}
