//! Where an archive's bytes are read from: random access by offset, whatever holds them.
//!
//! Every reader of the format (the index, point reads of frames, a recovering scan) reads
//! through a [`Source`]: a local file today; an object in a bucket read with ranged
//! requests, or the plaintext view of an encrypted archive, are other implementations. A
//! source is shared by the threads that decompress frames, so it is `Send + Sync` and
//! reads take `&self`.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, IoContext, Result};
use crate::remote::{Object, S3Url};

/// Random access to an archive's bytes.
pub trait Source: Send + Sync {
    /// Read up to `buf.len()` bytes at `off`; 0 at or past the end.
    ///
    /// # Errors
    /// Whatever the medium reports.
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize>;

    /// The archive's length in bytes.
    ///
    /// # Errors
    /// Whatever the medium reports.
    fn len(&self) -> io::Result<u64>;

    /// Whether the archive is empty.
    ///
    /// # Errors
    /// As [`Source::len`].
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Fill `buf` from `off`, or fail with [`io::ErrorKind::UnexpectedEof`].
    ///
    /// # Errors
    /// As [`Source::read_at`], and a short archive.
    fn read_exact_at(&self, mut buf: &mut [u8], mut off: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read_at(buf, off) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    buf = &mut buf[n..];
                    off += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl Source for File {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        FileExt::read_at(self, buf, off)
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }
    fn read_exact_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, off)
    }
}

/// Open the archive `path` names for reading; an encrypted one (an age file) is read
/// through [`super::crypt::Decrypting`], as the plaintext archive it holds.
///
/// # Errors
/// The archive cannot be opened (named in the error); an encrypted archive none of the
/// process's identities opens.
pub fn open(path: &Path) -> Result<Arc<dyn Source>> {
    let src: Arc<dyn Source> = match S3Url::parse(path) {
        Some(url) => Arc::new(Object::open(&url.map_err(Error::Usage)?)?),
        None => Arc::new(File::open(path).at(path)?),
    };
    decrypting(src, path)
}

/// `src`, or its plaintext when it is an encrypted archive (`path` names it in errors).
///
/// # Errors
/// As [`super::crypt::Decrypting::open`].
pub fn decrypting(src: Arc<dyn Source>, path: &Path) -> Result<Arc<dyn Source>> {
    if super::crypt::is_encrypted(&*src).at(path)? {
        return Ok(Arc::new(super::crypt::Decrypting::open(src, path)?));
    }
    Ok(src)
}

/// An object in a bucket (`s3://bucket/key`), read by ranged requests.
impl Source for Object {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        Object::read_at(self, buf, off)
    }
    fn len(&self) -> io::Result<u64> {
        Ok(Object::len(self))
    }
}

/// A [`Source`] read in order from a position, as [`Read`] and [`Seek`] (for streaming
/// decoders).
pub struct SourceReader<'a> {
    src: &'a dyn Source,
    pos: u64,
}

impl<'a> SourceReader<'a> {
    /// Read `src` from `pos`.
    pub fn new(src: &'a dyn Source, pos: u64) -> Self {
        SourceReader { src, pos }
    }
}

impl Read for SourceReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.src.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for SourceReader<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let base = match to {
            SeekFrom::Start(n) => {
                self.pos = n;
                return Ok(n);
            }
            SeekFrom::End(d) => (self.src.len()?, d),
            SeekFrom::Current(d) => (self.pos, d),
        };
        self.pos = base
            .0
            .checked_add_signed(base.1)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_reads_and_seeks_through_a_source() {
        let mut f = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut f, b"0123456789").unwrap();
        let src: &dyn Source = &f;
        assert_eq!(src.len().unwrap(), 10);
        let mut r = SourceReader::new(src, 3);
        let mut b = [0u8; 4];
        r.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"3456");
        assert_eq!(r.seek(SeekFrom::End(-2)).unwrap(), 8);
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"89");
        assert!(r.seek(SeekFrom::Current(-20)).is_err());
        let mut big = [0u8; 4];
        assert_eq!(
            src.read_exact_at(&mut big, 8).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
    }
}
