//! Splitting a stream of concatenated archives (a chain sent through a pipe: `cat full.mdump
//! inc1.mdump | maildump restore -`) into one file per archive, while it is read.
//!
//! The stream is walked frame by frame, as FORMAT.md section 3 lays an archive out: the
//! HEADER, data frames (zstd frames: their blocks are walked, nothing is decompressed),
//! the INDEX and the FOOTER, which ends the archive; a HEADER may follow. Nothing is
//! searched for by content, so message bytes that look like a FOOTER cannot cut an archive.

use std::io::{self, Read, Write};

use super::spec::{
    FOOTER_FRAME_MAGIC, HEADER_FRAME_MAGIC, HEADER_PAYLOAD_LEN, SKIPPABLE_MAGIC_MAX,
    SKIPPABLE_MAGIC_MIN, ZSTD_FRAME_MAGIC,
};
use crate::error::{Error, Result};

/// What [`split`] read.
#[derive(Debug, Default)]
pub struct Split {
    /// Archives written, in stream order.
    pub archives: usize,
    /// Whether the last archive ended without a FOOTER (truncated: a reader recovers it by
    /// scanning).
    pub truncated: bool,
}

/// Reads exactly `buf.len()` bytes unless the stream ends first; how many were read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match input.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The stream being split: input, position, the current archive's file.
struct Walker<'a, R, W> {
    input: &'a mut R,
    name: &'a str,
    pos: u64,
    out: W,
}

impl<R: Read, W: Write> Walker<'_, R, W> {
    fn damaged(&self, detail: impl Into<String>) -> Error {
        Error::corrupt(format!("{} offset {}", self.name, self.pos), detail)
    }

    /// Copy exactly `n` bytes; false when the stream ended first.
    fn copy(&mut self, n: u64) -> Result<bool> {
        let got = io::copy(&mut self.input.take(n), &mut self.out).map_err(|e| self.io(e))?;
        self.pos += got;
        Ok(got == n)
    }

    /// Read and copy `buf.len()` bytes; how many the stream had.
    fn take(&mut self, buf: &mut [u8]) -> Result<usize> {
        let n = read_full(self.input, buf).map_err(|e| self.io(e))?;
        self.out.write_all(&buf[..n]).map_err(|e| self.io(e))?;
        self.pos += n as u64;
        Ok(n)
    }

    fn io(&self, e: io::Error) -> Error {
        Error::io(self.name, e)
    }

    /// Copy the rest of a zstd frame whose 4 magic bytes were copied; false when the stream
    /// ended inside it.
    fn zstd_frame(&mut self) -> Result<bool> {
        let mut fhd = [0u8; 1];
        if self.take(&mut fhd)? < 1 {
            return Ok(false);
        }
        let fhd = fhd[0];
        let single = fhd & 0x20 != 0;
        let fcs = match fhd >> 6 {
            0 => u64::from(single),
            1 => 2,
            2 => 4,
            _ => 8,
        };
        let did = [0, 1, 2, 4][usize::from(fhd & 3)];
        if !self.copy(u64::from(!single) + did + fcs)? {
            return Ok(false);
        }
        loop {
            let mut bh = [0u8; 3];
            if self.take(&mut bh)? < 3 {
                return Ok(false);
            }
            let h = u32::from(bh[0]) | u32::from(bh[1]) << 8 | u32::from(bh[2]) << 16;
            let size = u64::from(h >> 3);
            let body = match (h >> 1) & 3 {
                0 | 2 => size,
                1 => 1,
                _ => return Err(self.damaged("zstd block of the reserved type")),
            };
            if !self.copy(body)? {
                return Ok(false);
            }
            if h & 1 == 1 {
                break;
            }
        }
        // The content checksum, when the frame has one.
        self.copy(if fhd & 4 != 0 { 4 } else { 0 })
    }

    /// Copy one archive (its HEADER's magic is next); whether it ended with a FOOTER.
    fn archive(&mut self) -> Result<bool> {
        loop {
            let mut m = [0u8; 4];
            match self.take(&mut m)? {
                0 => return Ok(false),
                4 => {}
                _ => return Ok(false),
            }
            let magic = u32::from_le_bytes(m);
            if (SKIPPABLE_MAGIC_MIN..=SKIPPABLE_MAGIC_MAX).contains(&magic) {
                let mut size = [0u8; 4];
                if self.take(&mut size)? < 4 || !self.copy(u64::from(u32::from_le_bytes(size)))? {
                    return Ok(false);
                }
                if magic == FOOTER_FRAME_MAGIC {
                    return Ok(true);
                }
            } else if magic == ZSTD_FRAME_MAGIC {
                if !self.zstd_frame()? {
                    return Ok(false);
                }
            } else {
                return Err(self.damaged(format!(
                    "no frame starts here (magic {magic:#010x}): not a maildump archive, or damaged"
                )));
            }
        }
    }
}

/// Peek whether `input` starts a HEADER frame; `None` at the end of the stream.
fn header_next(input: &mut impl Read, first: &mut [u8; 8]) -> io::Result<Option<bool>> {
    let n = read_full(input, first)?;
    if n == 0 {
        return Ok(None);
    }
    let size = u32::from_le_bytes([first[4], first[5], first[6], first[7]]);
    Ok(Some(
        n == 8
            && u32::from_le_bytes([first[0], first[1], first[2], first[3]]) == HEADER_FRAME_MAGIC
            && size as usize == HEADER_PAYLOAD_LEN,
    ))
}

/// Read `input` (named `name` in messages, e.g. "stdin") to its end, writing each archive
/// it holds to a new writer from `next`, in order.
///
/// # Errors
/// [`Error::Corrupt`] when the stream does not start with an archive's HEADER, or a frame
/// does not start where one must (bytes between archives included); I/O errors from the
/// input or the writers.
pub fn split<R: Read, W: Write>(
    input: &mut R,
    name: &str,
    mut next: impl FnMut(usize) -> Result<W>,
) -> Result<Split> {
    let mut out = Split::default();
    let mut pos = 0u64;
    loop {
        let mut first = [0u8; 8];
        match header_next(input, &mut first).map_err(|e| Error::io(name, e))? {
            None if out.archives > 0 => return Ok(out),
            None => return Err(Error::corrupt(name, "empty: no archive")),
            Some(false) => {
                return Err(Error::corrupt(
                    format!("{name} offset {pos}"),
                    if out.archives == 0 {
                        "not a maildump archive (no HEADER frame)".to_string()
                    } else {
                        format!(
                            "bytes after archive {} are not another archive (no HEADER frame)",
                            out.archives
                        )
                    },
                ));
            }
            Some(true) => {}
        }
        if out.truncated {
            return Err(Error::corrupt(
                name,
                format!("archive {} has no FOOTER but another follows", out.archives),
            ));
        }
        let mut w = next(out.archives)?;
        w.write_all(&first).map_err(|e| Error::io(name, e))?;
        let mut walker = Walker {
            input: &mut *input,
            name,
            pos: pos + 8,
            out: &mut w,
        };
        // The HEADER's payload, then the frames up to the FOOTER.
        let whole = walker.copy(HEADER_PAYLOAD_LEN as u64)? && walker.archive()?;
        pos = walker.pos;
        w.flush().map_err(|e| Error::io(name, e))?;
        out.archives += 1;
        out.truncated = !whole;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(payload: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend(HEADER_FRAME_MAGIC.to_le_bytes());
        a.extend(16u32.to_le_bytes());
        a.extend(b"MAILDUMP\x01\0\x03\0\0\0\0\0");
        a.extend(zstd::bulk::compress(payload, 3).unwrap());
        // Uncompressible bytes that look like a FOOTER frame, inside a zstd frame.
        let mut fake = FOOTER_FRAME_MAGIC.to_le_bytes().to_vec();
        fake.extend(64u32.to_le_bytes());
        fake.extend(b"MDFOOTER");
        a.extend(zstd::bulk::compress(&fake, 1).unwrap());
        a.extend(0x184D_2A5Cu32.to_le_bytes());
        a.extend(3u32.to_le_bytes());
        a.extend(b"idx");
        a.extend(FOOTER_FRAME_MAGIC.to_le_bytes());
        a.extend(64u32.to_le_bytes());
        a.extend([7u8; 64]);
        a
    }

    type Parts = std::rc::Rc<std::cell::RefCell<Vec<Vec<u8>>>>;

    /// A writer that appends to part `.1` of `.0`.
    struct Collect(Parts, usize);

    impl Write for Collect {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.borrow_mut()[self.1].extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn run(stream: &[u8]) -> Result<(Split, Vec<Vec<u8>>)> {
        let parts = Parts::default();
        let s = split(&mut &stream[..], "stdin", |i| {
            parts.borrow_mut().push(Vec::new());
            Ok(Collect(parts.clone(), i))
        })?;
        Ok((s, parts.take()))
    }

    #[test]
    fn concatenated_archives_come_apart_exactly() {
        let (a, b) = (archive(b"first"), archive(&[9u8; 100_000]));
        let stream = [a.clone(), b.clone(), a.clone()].concat();
        let (s, parts) = run(&stream).unwrap();
        assert_eq!((s.archives, s.truncated), (3, false));
        assert_eq!(parts, vec![a.clone(), b, a]);
    }

    #[test]
    fn truncated_and_foreign_streams() {
        let a = archive(b"first");
        let (s, parts) = run(&a[..a.len() - 10]).unwrap();
        assert_eq!((s.archives, s.truncated), (1, true));
        assert_eq!(parts[0], a[..a.len() - 10]);
        for (bad, what) in [
            (b"not an archive at all".to_vec(), "no HEADER"),
            ([a.clone(), b"junk".to_vec()].concat(), "after archive 1"),
            (Vec::new(), "empty"),
            ([a[..40].to_vec(), a.clone()].concat(), "offset"),
        ] {
            let e = run(&bad).unwrap_err().to_string();
            assert!(e.contains(what) && e.contains("stdin"), "{what}: {e}");
        }
    }
}
