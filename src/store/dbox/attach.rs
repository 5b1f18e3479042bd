//! Writing single-instance attachments back into the attachment directory
//! (`mail_attachment_dir`) as Dovecot's fs-sis keeps them: each content once under its
//! Dovecot name, hard-linked from `<dir>/hashes/<hash>`.
//!
//! The attachment directory's own path is the administrator's (followed, made when
//! missing); everything below it is reached from its handle, never through a symlink
//! (`store::target`): a symlink at a hash directory or at `hashes/` is refused before any
//! file is written.

use std::io::Write;
use std::path::PathBuf;

use crate::error::{Error, IoContext, Result};
use crate::store::location::AttachmentLayout;
use crate::store::nofollow::DirFd;
use crate::store::target::{Perms, set_owner, split};

/// The attachment directory of one user's restore.
pub(super) struct AttachmentDir {
    path: PathBuf,
    root: Option<DirFd>,
    /// Dovecot 2.3's `hashes/` links, or 2.4's plain files.
    layout: AttachmentLayout,
}

/// A `/`-separated path below the attachment directory as its directory's components and
/// its file name.
fn dir_and_name(path: &str) -> (Vec<&[u8]>, &[u8]) {
    let mut comps: Vec<&[u8]> = path.split('/').map(str::as_bytes).collect();
    let name = comps.pop().unwrap_or_default();
    (comps, name)
}

impl AttachmentDir {
    /// The attachment directory at `path` (opened on first use), written in `layout`.
    pub(super) fn new(path: PathBuf, layout: AttachmentLayout) -> Self {
        AttachmentDir {
            path,
            root: None,
            layout,
        }
    }

    /// Whether attachments get 2.3's `hashes/` links or 2.4's plain files.
    pub(super) fn layout(&self) -> AttachmentLayout {
        self.layout
    }

    /// The directory's handle (its own path followed: the administrator's); the directory
    /// is made (with `dir_perms`) when missing.
    fn root(&mut self, dir_perms: Perms) -> Result<&DirFd> {
        if self.root.is_none() {
            let root = match DirFd::open_target(&self.path) {
                Ok(d) => d,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let (parent, name) = split(&self.path)?;
                    std::fs::create_dir_all(parent).at(parent)?;
                    let p = DirFd::open_target(parent).at(parent)?;
                    p.mkdir(name, dir_perms)?
                }
                Err(e) => return Err(Error::io(&self.path, e)),
            };
            self.root = Some(root);
        }
        self.root
            .as_ref()
            .ok_or_else(|| Error::Internal("attachment directory not open".into()))
    }

    /// Store the attachment `data` under the on-disk name `name` (its X path for mdbox,
    /// with the mailbox GUID and UID for sdbox), hard-linked from `link` (2.3's
    /// `hashes/<hash>`; none for 2.4), both from [`super::file::attachment_names`]. Already there
    /// with the same bytes (an earlier message or restore): kept.
    ///
    /// # Errors
    /// [`Error::Conflict`] when a file of that name holds other bytes (never overwritten);
    /// a symlink in the way ([`Error::UnsafeTarget`]); I/O errors.
    pub(super) fn store(
        &mut self,
        name: &str,
        link: Option<&str>,
        data: &[u8],
        (dir_perms, file_perms): (Perms, Perms),
    ) -> Result<()> {
        let root = self.root(dir_perms)?;
        // The directories first: a symlink in the way is refused before anything is written.
        let link_dir = match link {
            Some(l) => Some((root.mkdir_comps(&dir_and_name(l).0, dir_perms)?, l)),
            None => None,
        };
        let (comps, fname) = dir_and_name(name);
        let dest = root.mkdir_comps(&comps, dir_perms)?;
        if let Some(existing) = dest.read_target(fname)? {
            if existing == data {
                return Ok(());
            }
            return Err(Error::Conflict(format!(
                "attachment {} exists with other content; not overwritten",
                dest.join(fname).display()
            )));
        }
        if let Some((ld, l)) = &link_dir {
            let lname = dir_and_name(l).1;
            if ld.read_target(lname)?.is_some_and(|d| d == data) {
                return ld.link_to(lname, &dest, fname);
            }
        }
        let path = dest.join(fname);
        let mut f = dest.create(fname, file_perms.mode)?;
        f.write_all(data).at(&path)?;
        f.sync_all().at(&path)?;
        set_owner(&f, &path, file_perms.ids)?;
        if let Some((ld, l)) = &link_dir {
            let lname = dir_and_name(l).1;
            if !ld.refuse_symlink(lname)? {
                dest.link_to(fname, ld, lname)?;
            }
        }
        Ok(())
    }
}
