//! The directory's frame and blob tables, left unparsed for point reads (`cat`).
//!
//! An archive of 20,000 messages has a directory of about 500 KB, nine tenths of it the
//! frame table (one entry per data frame) and the blob table (one per attachment stored).
//! A point read needs one or two frame entries and, for a message stored in parts, the
//! entries of its blobs; parsing both tables whole took a third of a `cat`. Here the rest
//! of the directory is parsed as usual, the two tables are only checked to be well-formed
//! JSON, and an entry is parsed when it is asked for, each one checked as the full open
//! checks it ([`crate::format::reader`]).

use std::ops::Range;

use serde::Deserialize;
use serde::de::{IgnoredAny, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::index::{ArchiveStats, BlobEntry, Directory, FrameEntry, MailboxEntry, Manifest};
use super::spec::FRAME_LIMIT;
use crate::error::{Error, Result};
use crate::model::UserMeta;

/// The directory as [`Directory`], its two tables kept as JSON text.
#[derive(Deserialize)]
struct Head<'a> {
    manifest: Manifest,
    #[serde(borrow)]
    frames: &'a RawValue,
    users: Vec<UserMeta>,
    mailboxes: Vec<MailboxEntry>,
    #[serde(default)]
    gone: Vec<MailboxEntry>,
    #[serde(default, borrow)]
    blobs: Option<&'a RawValue>,
    stats: ArchiveStats,
}

/// The frame and blob tables of a directory, as JSON text (see the module text).
pub(crate) struct RawTables {
    json: Vec<u8>,
    frames: Range<usize>,
    blobs: Option<Range<usize>>,
    /// Where the INDEX frame starts: every data frame ends before it.
    index_offset: u64,
}

/// Parse the directory `json` but for its frame and blob tables, which stay in the
/// returned [`RawTables`] (the [`Directory`]'s are empty).
///
/// # Errors
/// A directory that is not what the format says.
pub(crate) fn parse_head(json: Vec<u8>, index_offset: u64) -> Result<(Directory, RawTables)> {
    let corrupt = |e: serde_json::Error| Error::corrupt("index directory", e.to_string());
    let head: Head = serde_json::from_slice(&json).map_err(corrupt)?;
    let span = |r: &RawValue| {
        let start = r.get().as_ptr() as usize - json.as_ptr() as usize;
        start..start + r.get().len()
    };
    let (frames, blobs) = (span(head.frames), head.blobs.map(span));
    let dir = Directory {
        manifest: head.manifest,
        frames: Vec::new(),
        users: head.users,
        mailboxes: head.mailboxes,
        gone: head.gone,
        blobs: Vec::new(),
        stats: head.stats,
    };
    let tables = RawTables {
        json,
        frames,
        blobs,
        index_offset,
    };
    Ok((dir, tables))
}

impl RawTables {
    /// Entry `i` of the frame table, checked to lie before the index; `None` past its end.
    ///
    /// # Errors
    /// A table entry that is not a frame entry, or out of range.
    pub(crate) fn frame(&self, i: u32) -> Result<Option<FrameEntry>> {
        let what = || format!("index frame table entry {i}");
        let text = &self.json[self.frames.clone()];
        let fe: Option<FrameEntry> =
            nth(text, i as usize).map_err(|e| Error::corrupt(what(), e.to_string()))?;
        if let Some(f) = &fe {
            let end = f.offset.checked_add(f.csize);
            if end.is_none_or(|e| e > self.index_offset) || f.usize > FRAME_LIMIT {
                return Err(Error::corrupt(what(), "out of range"));
            }
        }
        Ok(fe)
    }

    /// The whole blob table.
    ///
    /// # Errors
    /// A table that is not one.
    pub(crate) fn blobs(&self) -> Result<Vec<BlobEntry>> {
        let Some(r) = &self.blobs else {
            return Ok(Vec::new());
        };
        serde_json::from_slice(&self.json[r.clone()])
            .map_err(|e| Error::corrupt("index blob table", e.to_string()))
    }
}

/// Element `i` of the JSON array `text` (`None` past its end), the others skipped over
/// unparsed.
fn nth<T: for<'de> Deserialize<'de>>(text: &[u8], i: usize) -> serde_json::Result<Option<T>> {
    struct Nth<T>(usize, std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for Nth<T> {
        type Value = Option<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an array")
        }
        fn visit_seq<A: SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> std::result::Result<Self::Value, A::Error> {
            for _ in 0..self.0 {
                if seq.next_element::<IgnoredAny>()?.is_none() {
                    return Ok(None);
                }
            }
            let found = seq.next_element::<T>()?;
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(found)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(text);
    let found = serde::Deserializer::deserialize_seq(&mut de, Nth(i, std::marker::PhantomData))?;
    de.end()?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::reader::{Archive, FrameTable};

    #[test]
    fn point_reads_see_the_tables_a_full_open_sees() {
        let v1 = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("format-spec/vectors/v1");
        for name in ["fixture.mdump", "sis.mdump", "chain.inc2.mdump"] {
            let full = Archive::open(&v1.join(name), true).unwrap();
            let point = Archive::open_for_point_reads(&v1.join(name)).unwrap();
            assert!(point.dir.frames.is_empty() && point.dir.blobs.is_empty());
            // The whole directory, tables put back: a field `Head` lacks would differ.
            let mut whole = point.dir.clone();
            whole.frames = full.dir.frames.clone();
            whole.blobs = full.dir.blobs.clone();
            assert_eq!(whole, full.dir, "{name}");
            assert_eq!(point.dir.manifest, full.dir.manifest, "{name}");
            assert_eq!(point.dir.users, full.dir.users, "{name}");
            assert_eq!(point.dir.mailboxes, full.dir.mailboxes, "{name}");
            assert_eq!(point.dir.gone, full.dir.gone, "{name}");
            assert_eq!(point.dir.stats, full.dir.stats, "{name}");
            for (i, f) in full.dir.frames.iter().enumerate() {
                let i = u32::try_from(i).unwrap();
                assert_eq!(point.frame_entry(i).unwrap().as_ref(), Some(f), "{name}");
            }
            let past = u32::try_from(full.dir.frames.len()).unwrap();
            assert_eq!(point.frame_entry(past).unwrap(), None, "{name}");
            assert_eq!(*point.blob_entries().unwrap(), *full.dir.blobs, "{name}");
        }
    }

    #[test]
    fn a_frame_entry_out_of_range_or_of_the_wrong_kind_is_damage() {
        let json = |frames: &str| {
            format!(
                r#"{{"manifest":{},"frames":{frames},"users":[],"mailboxes":[],"stats":{{"messages":0,"bodies":0,"message_bytes":0,"stored_bytes":0}}}}"#,
                serde_json::to_string(&manifest()).unwrap()
            )
            .into_bytes()
        };
        let ok = r#"[{"offset":24,"csize":10,"usize":20}]"#;
        let (_, t) = parse_head(json(ok), 34).unwrap();
        assert_eq!(t.frame(0).unwrap().unwrap().csize, 10);
        let (_, t) = parse_head(json(ok), 33).unwrap();
        assert!(t.frame(0).is_err(), "a frame past the index start");
        let (_, t) = parse_head(json(r#"[{"offset":"x"}]"#), 1000).unwrap();
        assert!(t.frame(0).is_err(), "an entry that is not a frame entry");
        assert!(
            parse_head(json(r#"[{"offset":1"#), 1000).is_err(),
            "not JSON"
        );
        let with_blobs = |blobs: &str| {
            let mut j = json(ok);
            j.truncate(j.len() - 1);
            j.extend_from_slice(format!(r#","blobs":{blobs}}}"#).as_bytes());
            j
        };
        let (_, t) = parse_head(with_blobs(r#"[{"sha256":1}]"#), 34).unwrap();
        assert!(t.blobs().is_err(), "a blob entry that is not one");
        let (_, t) = parse_head(json(ok), 34).unwrap();
        assert!(t.blobs().unwrap().is_empty(), "no blob table: no blobs");
    }

    fn manifest() -> Manifest {
        let v1 = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("format-spec/vectors/v1");
        Archive::open(&v1.join("fixture.mdump"), true)
            .unwrap()
            .dir
            .manifest
    }

    #[test]
    fn nth_takes_one_element_and_checks_the_rest() {
        let text = br#"[{"a":1},{"a":2},{"a":3}]"#;
        let v: Option<serde_json::Value> = nth(text, 1).unwrap();
        assert_eq!(v.unwrap()["a"], 2);
        assert!(nth::<serde_json::Value>(text, 3).unwrap().is_none());
        assert!(nth::<serde_json::Value>(br#"[1,2,}"#, 0).is_err());
        assert!(nth::<serde_json::Value>(br#"[1,2] x"#, 0).is_err());
    }
}
