//! Encrypted archives (FORMAT.md section "Encrypted archives"): a whole archive is an age v1
//! file whose plaintext is an unchanged archive, byte for byte.
//!
//! - Writing: [`Recipients`] (age X25519 and ssh public keys, given as `--encrypt-to`)
//!   wrap the archive's destination in age's STREAM encryptor ([`Recipients::wrap`]).
//! - Reading: [`crate::format::source::open`] sees the age header at offset 0 and reads
//!   the archive through a [`Decrypting`] source, with the identities set once for the
//!   process ([`set_identities`]). age's STREAM authenticates each 64 KiB chunk on its
//!   own and seeks by chunk, so a point read (`cat`) decrypts only the chunks it needs.
//!
//! A chunk that fails authentication is damage (an [`crate::Error::Corrupt`] naming the
//! chunk's offset in the file); an archive none of the identities opens is
//! [`crate::Error::CannotDecrypt`].

use std::fmt;
use std::io::{self, BufRead, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock};

use age::stream::{StreamReader, StreamWriter};

use super::source::Source;
use crate::error::{Error, IoContext, Result};

/// What every age v1 file starts with.
pub const AGE_MAGIC: &[u8] = b"age-encryption.org/v1\n";

/// Plaintext bytes per STREAM chunk, and the bytes each chunk takes in the file (a
/// 16-byte tag after each).
pub const CHUNK: u64 = 64 << 10;
const ENCRYPTED_CHUNK: u64 = CHUNK + 16;

/// One key an archive is encrypted to.
#[derive(Clone)]
enum Recipient {
    X25519(age::x25519::Recipient),
    Ssh(age::ssh::Recipient),
}

/// The recipients of the archives a run writes (`--encrypt-to`).
#[derive(Clone, Default)]
pub struct Recipients(Vec<Recipient>);

impl fmt::Debug for Recipients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Recipients({})", self.0.len())
    }
}

impl Recipients {
    /// Parse `--encrypt-to` values: a recipient (`age1...`, `ssh-ed25519 ...`,
    /// `ssh-rsa ...`), or `@FILE` with one recipient per line (`#` comments and blank
    /// lines skipped).
    ///
    /// # Errors
    /// [`Error::Usage`] naming the value (and file and line) that is not a recipient;
    /// I/O errors on the file.
    pub fn parse(args: &[String]) -> Result<Recipients> {
        let mut out = Vec::new();
        for a in args {
            if let Some(file) = a.strip_prefix('@') {
                let text = std::fs::read_to_string(file).at(file)?;
                for (n, line) in text.lines().enumerate() {
                    let line = line.trim();
                    if line.is_empty() || line.starts_with('#') {
                        continue;
                    }
                    out.push(recipient(line).map_err(|why| {
                        Error::Usage(format!("--encrypt-to {a}: line {}: {why}", n + 1))
                    })?);
                }
            } else {
                out.push(
                    recipient(a.trim())
                        .map_err(|why| Error::Usage(format!("--encrypt-to {a}: {why}")))?,
                );
            }
        }
        if out.is_empty() && !args.is_empty() {
            return Err(Error::Usage(format!(
                "--encrypt-to {}: no recipient in it",
                args.join(" ")
            )));
        }
        Ok(Recipients(out))
    }

    /// Whether there is no recipient (archives are written in clear).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `out`, encrypted to every recipient: the age header is written now, the rest as
    /// bytes come; [`StreamWriter::finish`] writes the last chunk (without it the file
    /// reads as truncated).
    ///
    /// # Errors
    /// Wrapping the file key fails; the header cannot be written.
    pub fn wrap<W: Write>(&self, out: W) -> io::Result<StreamWriter<W>> {
        let enc = age::Encryptor::with_recipients(self.0.iter().map(|r| match r {
            Recipient::X25519(r) => r as &dyn age::Recipient,
            Recipient::Ssh(r) => r as &dyn age::Recipient,
        }))
        .map_err(|e| io::Error::other(format!("encrypting: {e}")))?;
        enc.wrap_output(out)
    }
}

/// One recipient from its text.
fn recipient(s: &str) -> std::result::Result<Recipient, String> {
    if s.starts_with("age1") {
        return age::x25519::Recipient::from_str(s)
            .map(Recipient::X25519)
            .map_err(|e| format!("not an age X25519 recipient: {e}"));
    }
    if s.starts_with("ssh-") {
        return age::ssh::Recipient::from_str(s)
            .map(Recipient::Ssh)
            .map_err(|e| match e {
                age::ssh::ParseRecipientKeyError::Unsupported(t) => {
                    format!("unsupported ssh key type {t} (ssh-ed25519 and ssh-rsa are)")
                }
                _ => "not a valid ssh-ed25519 or ssh-rsa public key".into(),
            });
    }
    Err("not an age recipient (age1...) or ssh public key (ssh-ed25519, ssh-rsa)".into())
}

/// One key that may open archives.
enum Identity {
    X25519(age::x25519::Identity),
    Ssh(age::ssh::Identity),
}

impl Identity {
    fn as_dyn(&self) -> &dyn age::Identity {
        match self {
            Identity::X25519(i) => i,
            Identity::Ssh(i) => i,
        }
    }
}

/// The identities of the process, set once ([`set_identities`]).
struct Identities {
    keys: Vec<Identity>,
    files: Vec<PathBuf>,
}

static IDENTITIES: OnceLock<Identities> = OnceLock::new();

/// Read the identity files (`--identity`: age identity files, `AGE-SECRET-KEY-1...` per
/// line with `#` comments; or unencrypted OpenSSH/PEM ssh private keys) and make them the
/// identities every archive of this process is opened with. Called once, before any
/// archive is opened; a later call changes nothing.
///
/// # Errors
/// [`Error::Usage`] naming a file that holds no usable key (or a passphrase-protected ssh
/// key); I/O errors on a file.
pub fn set_identities(files: &[PathBuf]) -> Result<()> {
    let mut keys = Vec::new();
    for f in files {
        keys.extend(read_identity_file(f)?);
    }
    let _ = IDENTITIES.set(Identities {
        keys,
        files: files.to_vec(),
    });
    Ok(())
}

/// The identity files given to [`set_identities`].
pub fn identity_files() -> &'static [PathBuf] {
    IDENTITIES.get().map(|i| &i.files[..]).unwrap_or(&[])
}

fn read_identity_file(path: &Path) -> Result<Vec<Identity>> {
    let text = std::fs::read_to_string(path).at(path)?;
    let bad = |why: &str| Error::Usage(format!("--identity {}: {why}", path.display()));
    if text.contains("-----BEGIN") {
        let id = age::ssh::Identity::from_buffer(text.as_bytes(), Some(path.display().to_string()))
            .map_err(|e| bad(&format!("not an ssh private key: {e}")))?;
        return match id {
            age::ssh::Identity::Unencrypted(_) => Ok(vec![Identity::Ssh(id)]),
            age::ssh::Identity::Encrypted(_) => Err(bad(
                "a passphrase-protected ssh key; give an unencrypted copy (ssh-keygen -p) kept where only root reads it",
            )),
            age::ssh::Identity::Unsupported(k) => Err(bad(&format!("unsupported ssh key: {k:?}"))),
        };
    }
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let id = age::x25519::Identity::from_str(line).map_err(|_| {
            bad(&format!(
                "line {}: not an age identity (AGE-SECRET-KEY-1...)",
                n + 1
            ))
        })?;
        keys.push(Identity::X25519(id));
    }
    if keys.is_empty() {
        return Err(bad("holds no identity"));
    }
    Ok(keys)
}

/// Whether `src` starts as an age file does.
pub fn is_encrypted(src: &dyn Source) -> io::Result<bool> {
    let mut head = [0u8; AGE_MAGIC.len()];
    match src.read_exact_at(&mut head, 0) {
        Ok(()) => Ok(head == AGE_MAGIC),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// Damage found by decrypting: a chunk that fails authentication, or a truncated file.
/// Carried inside an [`io::Error`] through readers that know only I/O errors, and turned
/// into [`Error::Corrupt`] by [`Error::io`].
#[derive(Debug)]
pub struct Damaged {
    /// The offset in the file of the chunk that failed, where known (not in a stream).
    pub offset: Option<u64>,
    /// The chunk's number (0: the first).
    pub chunk: u64,
    /// What failed.
    pub detail: String,
}

impl Damaged {
    /// The chunk, as messages name it: `encrypted chunk N at offset X`.
    pub fn item(&self) -> String {
        match self.offset {
            Some(o) => format!("encrypted chunk {} at offset {o}", self.chunk),
            None => format!("encrypted chunk {} (64 KiB of plaintext each)", self.chunk),
        }
    }
}

impl fmt::Display for Damaged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.item(), self.detail)
    }
}

impl std::error::Error for Damaged {}

/// A [`Source`] read in order from a position, owning it (what age's reader wraps), with
/// its first bytes kept: age's header parser reads in small pieces, and the header is
/// then one read of the source (one request where the source is remote).
struct Owned {
    src: Arc<dyn Source>,
    pos: u64,
    head: Arc<[u8]>,
}

/// Bytes read ahead for the age header (a header with many ssh-rsa recipients may be
/// longer: the rest is read from the source).
const HEAD: usize = 8 << 10;

impl Owned {
    fn new(src: Arc<dyn Source>) -> io::Result<Owned> {
        let mut head = vec![0u8; HEAD];
        let mut n = 0;
        while n < HEAD {
            match src.read_at(&mut head[n..], n as u64)? {
                0 => break,
                k => n += k,
            }
        }
        head.truncate(n);
        Ok(Owned {
            src,
            pos: 0,
            head: head.into(),
        })
    }
}

impl Read for Owned {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match usize::try_from(self.pos)
            .ok()
            .filter(|p| *p < self.head.len())
        {
            Some(p) => {
                let n = buf.len().min(self.head.len() - p);
                buf[..n].copy_from_slice(&self.head[p..p + n]);
                n
            }
            None => self.src.read_at(buf, self.pos)?,
        };
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Owned {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.pos = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.src.len()?.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        }
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        Ok(self.pos)
    }
}

/// The length of the STREAM payload holding `len` plaintext bytes (a last chunk, maybe
/// empty, is always there).
fn payload_len(len: u64) -> u64 {
    let chunks = len.div_ceil(CHUNK).max(1);
    len + chunks * (ENCRYPTED_CHUNK - CHUNK)
}

/// The plaintext of an encrypted archive, by offset: age's STREAM readers (each seeks by
/// chunk and keeps its current chunk decrypted), one per thread reading at a time: a
/// reader is taken from a pool for each read and put back, a new one made (the header's
/// file key unwrapped again) when all are in use.
pub struct Decrypting {
    /// Readers not in use.
    idle: Mutex<Vec<StreamReader<Owned>>>,
    /// The source, and its first bytes (the age header), for new readers.
    src: Arc<dyn Source>,
    head: Arc<[u8]>,
    /// The plaintext's length (the last chunk authenticated).
    len: u64,
    /// Where the first chunk starts in the file (after the age header).
    start: u64,
}

/// [`Error::CannotDecrypt`] for the encrypted archive `path` when no identity was given.
fn refuse_without_identity(path: &Path) -> Result<()> {
    if identity_files().is_empty() {
        return Err(Error::CannotDecrypt {
            path: path.to_path_buf(),
            detail: "encrypted archive; give --identity FILE (or MAILDUMP_IDENTITY) with a key it is encrypted to".into(),
        });
    }
    Ok(())
}

/// What opening the encrypted archive `path` failed with: no identity matches
/// ([`Error::CannotDecrypt`]), a damaged header, I/O.
fn decrypt_error(e: age::DecryptError, path: &Path) -> Error {
    let cannot = |detail: String| Error::CannotDecrypt {
        path: path.to_path_buf(),
        detail,
    };
    match e {
        age::DecryptError::NoMatchingKeys => cannot(format!(
            "no identity given matches (tried {})",
            identity_files()
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
        age::DecryptError::Io(e) => Error::io(path, e),
        e @ (age::DecryptError::InvalidHeader
        | age::DecryptError::InvalidMac
        | age::DecryptError::UnknownFormat) => {
            Error::corrupt(format!("{}: age header", path.display()), e.to_string())
        }
        e => cannot(e.to_string()),
    }
}

/// A reader of the age file `owned` with the process's identities.
fn stream_reader(owned: Owned) -> std::result::Result<StreamReader<Owned>, age::DecryptError> {
    let ids = IDENTITIES.get().map(|i| &i.keys[..]).unwrap_or(&[]);
    age::Decryptor::new(owned)?.decrypt(ids.iter().map(Identity::as_dyn))
}

impl Decrypting {
    /// Open the encrypted archive in `src` (named `path` in errors) with the identities
    /// of the process.
    ///
    /// # Errors
    /// [`Error::CannotDecrypt`] when no identity was given or none opens it;
    /// [`Error::Corrupt`] for a damaged header or a truncated file; I/O errors.
    pub fn open(src: Arc<dyn Source>, path: &Path) -> Result<Decrypting> {
        refuse_without_identity(path)?;
        let file_len = src.len().at(path)?;
        let owned = Owned::new(src.clone()).at(path)?;
        let head = owned.head.clone();
        let mut reader = stream_reader(owned).map_err(|e| decrypt_error(e, path))?;
        let len = reader.seek(SeekFrom::End(0)).map_err(|e| {
            Error::corrupt(
                format!("{}: last encrypted chunk", path.display()),
                format!("{e} (the archive is truncated or damaged)"),
            )
        })?;
        Ok(Decrypting {
            idle: Mutex::new(vec![reader]),
            src,
            head,
            len,
            start: file_len.saturating_sub(payload_len(len)),
        })
    }

    /// A reader not in use by another thread: from the pool, or a new one.
    fn take(&self) -> io::Result<StreamReader<Owned>> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop();
        match idle {
            Some(r) => Ok(r),
            None => stream_reader(Owned {
                src: self.src.clone(),
                pos: 0,
                head: self.head.clone(),
            })
            .map_err(|e| io::Error::other(format!("age header: {e}"))),
        }
    }

    fn put_back(&self, r: StreamReader<Owned>) {
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(r);
    }

    fn damaged(&self, off: u64, e: &io::Error) -> io::Error {
        let chunk = off / CHUNK;
        io::Error::new(
            io::ErrorKind::InvalidData,
            Damaged {
                offset: Some(self.start + chunk * ENCRYPTED_CHUNK),
                chunk,
                detail: format!("fails authentication ({e})"),
            },
        )
    }
}

impl Source for Decrypting {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        if off >= self.len || buf.is_empty() {
            return Ok(0);
        }
        let mut r = self.take()?;
        let want = usize::try_from(self.len - off)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let res = r
            .seek(SeekFrom::Start(off))
            .and_then(|_| r.read(&mut buf[..want]));
        // A reader that failed may be left between chunks: it is dropped.
        if res.is_ok() {
            self.put_back(r);
        }
        res.map_err(|e| match e.kind() {
            io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof => self.damaged(off, &e),
            _ => e,
        })
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.len)
    }
}

/// The plaintext of an age file read in order (an encrypted archive on stdin), with the
/// identities of the process; `name` names it in errors.
///
/// # Errors
/// As [`Decrypting::open`].
pub fn decrypt_stream<'a, R: BufRead + 'a>(input: R, name: &Path) -> Result<Box<dyn Read + 'a>> {
    refuse_without_identity(name)?;
    let ids = IDENTITIES.get().map(|i| &i.keys[..]).unwrap_or(&[]);
    let r = age::Decryptor::new_buffered(input)
        .and_then(|d| d.decrypt(ids.iter().map(Identity::as_dyn)))
        .map_err(|e| decrypt_error(e, name))?;
    Ok(Box::new(Stream { inner: r, pos: 0 }))
}

/// A decrypting reader that names the chunk where it fails ([`Damaged`]).
struct Stream<R> {
    inner: R,
    /// Plaintext bytes read so far.
    pos: u64,
}

impl<R: Read> Read for Stream<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.pos += n as u64;
                Ok(n)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
                ) =>
            {
                Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    Damaged {
                        offset: None,
                        chunk: self.pos / CHUNK,
                        detail: format!("fails authentication ({e})"),
                    },
                ))
            }
            Err(e) => Err(e),
        }
    }
}
