//! `dovecot.index`: the snapshot's base header, extension headers, keyword names and
//! records, read into a [`State`], the log replayed on it (`log.rs`), and the result as a
//! [`MailIndex`].

use std::io;
use std::path::Path;

use super::log::LogHeader;
use super::{
    BASE_HEADER_SIZE, COMPAT_LITTLE_ENDIAN, CurExt, DEFAULT_BASE, EXT_KEYWORDS, EXT_MODSEQ, Ext,
    ExtState, HDR_NEXT_UID, HDR_UID_VALIDITY, MailIndex, RECORD_BASE_SIZE, RECORD_MIN_SIZE, Record,
    Result, State, align_up, bad, get_u16, get_u32, get_u64, keywords_hdr, layout_records, put_u32,
};

/// Parse the `keywords` extension header into names.
fn parse_keywords_hdr(file: &str, hdr: &[u8]) -> Result<Vec<Vec<u8>>> {
    if hdr.is_empty() {
        return Ok(Vec::new());
    }
    let count = get_u32(hdr, 0).ok_or_else(|| bad(file, "keywords header too short"))?;
    let names_start = (count as usize)
        .checked_mul(8)
        .and_then(|v| v.checked_add(4))
        .filter(|&v| v <= hdr.len())
        .ok_or_else(|| bad(file, format!("keywords header: count {count} too large")))?;
    let names = hdr.get(names_start..).unwrap_or(&[]);
    let mut out = Vec::with_capacity(count as usize);
    for i in 0..count as usize {
        let off = get_u32(hdr, 4 + i * 8 + 4).unwrap_or(u32::MAX) as usize;
        let rest = names.get(off..).ok_or_else(|| {
            bad(
                file,
                format!("keywords header: name {i} offset {off} out of range"),
            )
        })?;
        let end = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| bad(file, format!("keywords header: name {i} not terminated")))?;
        out.push(rest.get(..end).unwrap_or(&[]).to_vec());
    }
    Ok(out)
}

impl State {
    /// Parse a dovecot.index file. Returns the state and `(log_file_seq, log_file_head_offset)`.
    // Parses dovecot.index in file order (base header, extension headers, keyword names,
    // records), every offset checked where it is used; split, the offsets would scatter.
    #[allow(clippy::too_many_lines)]
    fn from_index(file: &str, buf: &[u8]) -> Result<(State, u32, u32)> {
        let e = |m: String| bad(file, m);
        if buf.len() < BASE_HEADER_SIZE {
            return Err(e(format!("file too short ({} bytes)", buf.len())));
        }
        if buf[0] != 7 {
            return Err(e(format!(
                "unsupported major version {} at offset 0",
                buf[0]
            )));
        }
        if buf[12] & COMPAT_LITTLE_ENDIAN == 0 {
            return Err(e("compat_flags at offset 12 lack little-endian".into()));
        }
        let base_size = usize::from(get_u16(buf, 2).unwrap_or(0));
        let header_size = get_u32(buf, 4).unwrap_or(0) as usize;
        let record_size = get_u32(buf, 8).unwrap_or(0) as usize;
        let messages = get_u32(buf, 32).unwrap_or(0) as usize;
        if base_size < BASE_HEADER_SIZE || base_size > header_size {
            return Err(e(format!("bad base_header_size {base_size} at offset 2")));
        }
        if header_size > buf.len() {
            return Err(e(format!(
                "header_size {header_size} at offset 4 exceeds file size {}",
                buf.len()
            )));
        }
        if record_size < RECORD_BASE_SIZE as usize || record_size > usize::from(u16::MAX) {
            return Err(e(format!("bad record_size {record_size} at offset 8")));
        }
        let records_end = messages
            .checked_mul(record_size)
            .and_then(|v| v.checked_add(header_size))
            .filter(|&v| v <= buf.len())
            .ok_or_else(|| {
                e(format!(
                    "{messages} records of {record_size} bytes do not fit in {} bytes",
                    buf.len()
                ))
            })?;
        let indexid = get_u32(buf, 16).unwrap_or(0);
        let mut st = State::new_empty(indexid);
        st.base = buf.get(..base_size).unwrap_or(&[]).to_vec();

        // extension headers
        let mut off = align_up(base_size, 8).unwrap_or(usize::MAX);
        while off < header_size {
            let eh = buf
                .get(off..off.saturating_add(16))
                .filter(|_| off + 16 <= header_size)
                .ok_or_else(|| e(format!("truncated extension header at offset {off}")))?;
            let hdr_size = get_u32(eh, 0).unwrap_or(0) as usize;
            let reset_id = get_u32(eh, 4).unwrap_or(0);
            let rec_off = get_u16(eh, 8).unwrap_or(0);
            let rec_size = get_u16(eh, 10).unwrap_or(0);
            let rec_align = get_u16(eh, 12).unwrap_or(0);
            let name_size = usize::from(get_u16(eh, 14).unwrap_or(0));
            let name_start = off + 16;
            let name = buf
                .get(name_start..name_start + name_size)
                .filter(|_| name_start + name_size <= header_size && name_size > 0)
                .ok_or_else(|| e(format!("bad extension name at offset {name_start}")))?;
            let name = String::from_utf8_lossy(name).into_owned();
            let data_start = align_up(name_start + name_size, 8).unwrap_or(usize::MAX);
            let data_end = data_start
                .checked_add(hdr_size)
                .filter(|&v| v <= header_size)
                .ok_or_else(|| {
                    e(format!(
                        "extension {name:?} header data ({hdr_size} bytes at offset {data_start}) exceeds header_size"
                    ))
                })?;
            let hdr = buf.get(data_start..data_end).unwrap_or(&[]).to_vec();
            if rec_size > 0
                && (rec_align == 0
                    || usize::from(rec_off) < RECORD_MIN_SIZE as usize
                    || usize::from(rec_off) + usize::from(rec_size) > record_size)
            {
                return Err(e(format!(
                    "extension {name:?} at offset {off}: record offset {rec_off} size {rec_size} align {rec_align} invalid for record_size {record_size}"
                )));
            }
            st.exts.push(ExtState {
                name,
                reset_id,
                hdr,
                record_offset: if rec_size > 0 { rec_off } else { 0 },
                record_size: rec_size,
                record_align: rec_align,
            });
            off = align_up(data_end, 8).unwrap_or(usize::MAX);
        }

        // keywords
        st.modseq_ext = st.exts.iter().any(|x| x.name == EXT_MODSEQ);
        let kw_idx = st.exts.iter().position(|x| x.name == EXT_KEYWORDS);
        if let Some(k) = kw_idx {
            st.keywords = parse_keywords_hdr(file, &st.exts[k].hdr)?;
        }

        // records
        let recs = buf.get(header_size..records_end).unwrap_or(&[]);
        let mut prev_uid = 0u32;
        st.records.reserve(messages);
        for (i, r) in recs.chunks_exact(record_size).enumerate() {
            let uid = get_u32(r, 0).unwrap_or(0);
            if uid <= prev_uid {
                return Err(e(format!(
                    "record {i} at offset {}: uid {uid} not above previous uid {prev_uid}",
                    header_size + i * record_size
                )));
            }
            prev_uid = uid;
            let flags = r.get(4).copied().unwrap_or(0);
            let mut ext = Vec::with_capacity(st.exts.len());
            for x in &st.exts {
                if x.record_size == 0 {
                    ext.push(None);
                } else {
                    let s = usize::from(x.record_offset);
                    ext.push(r.get(s..s + usize::from(x.record_size)).map(<[u8]>::to_vec));
                }
            }
            let mut keywords = Vec::new();
            if let Some(k) = kw_idx
                && let Some(Some(bits)) = ext.get(k)
            {
                for (byte_i, &b) in bits.iter().enumerate() {
                    for bit in 0..8 {
                        if b & (1 << bit) != 0 {
                            let kw = (byte_i * 8 + bit) as u32;
                            if (kw as usize) < st.keywords.len() {
                                keywords.push(kw);
                            }
                        }
                    }
                }
            }
            st.records.push(Record {
                uid,
                flags,
                keywords,
                modseq: 0,
                ext,
            });
        }
        if prev_uid >= st.next_uid() {
            put_u32(&mut st.base, HDR_NEXT_UID, prev_uid.saturating_add(1));
        }
        let log_seq = get_u32(buf, 60).unwrap_or(0);
        let head_off = get_u32(buf, 68).unwrap_or(0);
        Ok((st, log_seq, head_off))
    }

    fn finish(mut self) -> MailIndex {
        // keywords extension mirrors the keyword list and per-record keyword sets
        let has_ext = self.exts.iter().any(|x| x.name == EXT_KEYWORDS);
        if !self.keywords.is_empty() || has_ext {
            let idx = self.keywords_ext();
            let need = self.keywords.len().div_ceil(8);
            if let Some(x) = self.exts.get_mut(idx) {
                x.hdr = keywords_hdr(&self.keywords);
                if usize::from(x.record_size) < need {
                    x.record_size = u16::try_from(need).unwrap_or(u16::MAX);
                    x.record_align = 1;
                    self.layout_dirty = true;
                }
                let size = usize::from(x.record_size);
                for rec in &mut self.records {
                    let mut bits = vec![0u8; size];
                    for &k in &rec.keywords {
                        if let Some(b) = bits.get_mut(k as usize / 8) {
                            *b |= 1 << (k % 8);
                        }
                    }
                    if let Some(slot) = rec.ext.get_mut(idx) {
                        *slot = if size > 0 { Some(bits) } else { None };
                    }
                }
            }
        }
        // every record gets data of exactly record_size bytes for each record extension
        for (i, x) in self.exts.iter().enumerate() {
            let n = usize::from(x.record_size);
            for rec in &mut self.records {
                if let Some(slot) = rec.ext.get_mut(i) {
                    if n == 0 {
                        *slot = None;
                    } else {
                        let mut v = slot.take().unwrap_or_default();
                        v.resize(n, 0);
                        *slot = Some(v);
                    }
                }
            }
        }
        // modseq extension: per-message modseqs up to the index snapshot; a zero there means
        // "not set yet" and reads as the extension header's highest_modseq. Without the
        // extension Dovecot does not track per-message modseqs: report 0 (unknown).
        match self.exts.iter().position(|x| x.name == EXT_MODSEQ) {
            Some(mi) => {
                let hdr_highest = self
                    .exts
                    .get(mi)
                    .and_then(|x| get_u64(&x.hdr, 0))
                    .unwrap_or(0);
                self.highest_modseq = self.highest_modseq.max(hdr_highest);
                let rec_ext = self.exts.get(mi).is_some_and(|x| x.record_size == 8);
                for rec in &mut self.records {
                    let slot = rec
                        .ext
                        .get_mut(mi)
                        .and_then(Option::as_mut)
                        .filter(|_| rec_ext);
                    if let Some(d) = slot {
                        let mut v = get_u64(d, 0).unwrap_or(0);
                        if v == 0 {
                            v = hdr_highest;
                        }
                        rec.modseq = rec.modseq.max(v);
                        d.copy_from_slice(&rec.modseq.to_le_bytes());
                    }
                }
            }
            None => self.records.iter_mut().for_each(|r| r.modseq = 0),
        }
        if self.layout_dirty {
            let items: Vec<(u16, u16)> = self
                .exts
                .iter()
                .map(|x| (x.record_size, x.record_align))
                .collect();
            let mut offs = vec![0u16; items.len()];
            if layout_records(&items, &mut offs).is_some() {
                for (x, o) in self.exts.iter_mut().zip(offs) {
                    x.record_offset = o;
                }
            }
        }
        MailIndex {
            indexid: self.indexid,
            uid_validity: get_u32(&self.base, HDR_UID_VALIDITY).unwrap_or(0),
            next_uid: self.next_uid(),
            highest_modseq: self.highest_modseq,
            exts: self
                .exts
                .into_iter()
                .map(|x| Ext {
                    name: x.name,
                    hdr: x.hdr,
                    record_offset: x.record_offset,
                    record_size: x.record_size,
                    record_align: x.record_align,
                    reset_id: x.reset_id,
                })
                .collect(),
            keywords: self.keywords,
            records: self.records,
        }
    }
}

fn read_opt(path: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    }
}

impl MailIndex {
    /// Read `<dir>/<base>` (e.g. base = "dovecot.index" or "dovecot.map.index") and replay
    /// `<dir>/<base>.log` (and `.log.2` when needed) per section 6.0. Ok(None) when neither the
    /// index nor the log exists. A missing index with an existing log is normal.
    pub fn read(dir: &Path, base: &str) -> Result<Option<MailIndex>> {
        let index = read_opt(&dir.join(base))?;
        let log = read_opt(&dir.join(format!("{base}.log")))?;
        if index.is_none() && log.is_none() {
            return Ok(None);
        }
        let log2 = if log.is_some() {
            read_opt(&dir.join(format!("{base}.log.2")))?
        } else {
            None
        };
        Self::from_bytes_named(base, index.as_deref(), log.as_deref(), log2.as_deref()).map(Some)
    }

    /// Same from bytes (index may be None; log2 may be None) - used by read() and by tests.
    pub fn from_bytes(
        index: Option<&[u8]>,
        log: Option<&[u8]>,
        log2: Option<&[u8]>,
    ) -> Result<MailIndex> {
        Self::from_bytes_named(DEFAULT_BASE, index, log, log2)
    }

    /// Like [`MailIndex::from_bytes`], naming the files `<base>`, `<base>.log`, `<base>.log.2`
    /// in error messages.
    pub(crate) fn from_bytes_named(
        base: &str,
        index: Option<&[u8]>,
        log: Option<&[u8]>,
        log2: Option<&[u8]>,
    ) -> Result<MailIndex> {
        let log_name = format!("{base}.log");
        let log2_name = format!("{base}.log.2");
        let lh = match log {
            Some(l) => Some(LogHeader::parse(&log_name, l)?),
            None => None,
        };
        let l2h = match log2 {
            Some(l) => LogHeader::parse(&log2_name, l).ok(),
            None => None,
        };
        let mut st = match index {
            Some(buf) => {
                let (mut st, seq, head) = State::from_index(base, buf)?;
                if let (Some(log), Some(lh)) = (log, &lh) {
                    if lh.indexid != st.indexid {
                        return Err(bad(
                            &log_name,
                            format!(
                                "indexid {} differs from the index's {}",
                                lh.indexid, st.indexid
                            ),
                        ));
                    }
                    if lh.file_seq == seq {
                        st.replay_log(&log_name, log, head as usize)?;
                    } else if lh.prev_file_seq == seq
                        && let (Some(l2), Some(l2h)) = (log2, &l2h)
                        && l2h.file_seq == seq
                        && l2h.indexid == st.indexid
                    {
                        st.replay_log(&log2_name, l2, head as usize)?;
                        st.replay_log(&log_name, log, 0)?;
                    } else if lh.prev_file_seq == seq && lh.prev_file_offset == head {
                        // the log was rotated exactly where the index ends (or the previous
                        // log never existed, as after a hand-written index): nothing in .log.2
                        st.replay_log(&log_name, log, 0)?;
                    } else if lh.file_seq > seq {
                        return Err(bad(
                            &log_name,
                            format!(
                                "log file_seq {} (prev {}) does not continue the index's log_file_seq {seq}",
                                lh.file_seq, lh.prev_file_seq
                            ),
                        ));
                    }
                    // a log older than the index holds nothing new
                }
                st
            }
            None => {
                let (Some(log), Some(lh)) = (log, &lh) else {
                    return Err(bad(base, "neither index nor log given"));
                };
                let mut st = State::new_empty(lh.indexid);
                if let (Some(l2), Some(l2h)) = (log2, &l2h)
                    && lh.prev_file_seq != 0
                    && l2h.file_seq == lh.prev_file_seq
                    && l2h.prev_file_seq == 0
                    && l2h.indexid == lh.indexid
                {
                    st.replay_log(&log2_name, l2, 0)?;
                }
                st.replay_log(&log_name, log, 0)?;
                st
            }
        };
        st.cur = CurExt::None;
        Ok(st.finish())
    }

    /// The ext_id of the extension named `name`.
    pub(crate) fn ext_id(&self, name: &str) -> Option<usize> {
        self.exts.iter().position(|x| x.name == name)
    }

    /// Header data of the extension named `name`.
    pub(crate) fn ext_hdr(&self, name: &str) -> Option<&[u8]> {
        self.exts
            .iter()
            .find(|x| x.name == name)
            .map(|x| x.hdr.as_slice())
    }

    /// Record data of extension `name` for `rec` (None if that ext has no data for it).
    pub fn ext_rec<'a>(&self, rec: &'a Record, name: &str) -> Option<&'a [u8]> {
        let id = self.ext_id(name)?;
        rec.ext_data(id)
    }

    /// The record with this uid.
    pub fn record(&self, uid: u32) -> Option<&Record> {
        self.records
            .binary_search_by_key(&uid, |r| r.uid)
            .ok()
            .and_then(|i| self.records.get(i))
    }

    /// The MODSEQ Dovecot reports for a record: its own where the index tracks per-message
    /// modseqs (the `modseq` extension), else the highest (as Dovecot does); `None` when the
    /// index tracks no modseqs at all (a log without `initial_modseq`).
    pub(crate) fn modseq_of(&self, rec: &Record) -> Option<u64> {
        match (rec.modseq, self.highest_modseq) {
            (_, 0) => None,
            (0, h) => Some(h),
            (m, _) => Some(m),
        }
    }

    /// Keyword names of a record (keyword indexes resolved through [`MailIndex::keywords`]).
    pub(crate) fn keyword_names<'a>(&'a self, rec: &Record) -> Vec<&'a [u8]> {
        rec.keywords
            .iter()
            .filter_map(|&k| self.keywords.get(k as usize).map(Vec::as_slice))
            .collect()
    }
}

impl Record {
    /// Record data of the extension with this ext_id (None for header-only extensions).
    pub(crate) fn ext_data(&self, ext_id: usize) -> Option<&[u8]> {
        self.ext.get(ext_id).and_then(|d| d.as_deref())
    }
}
#[cfg(test)]
mod tests {
    use super::super::log::tests::{append, intro, kw_update, log};
    use super::super::write::tests::sample_new;
    use super::super::write_index;
    use super::*;

    /// Tiny deterministic PRNG for the mutation test.
    fn rng(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    /// Truncations and bit flips must never panic.
    pub(crate) fn mutate_all(index: Option<&[u8]>, log: Option<&[u8]>, rounds: usize) {
        let mut s = 0x1234_5678_9abc_def0u64;
        for (which, buf) in [(0, index), (1, log)] {
            let Some(buf) = buf else { continue };
            for cut in 0..buf.len() {
                let b = &buf[..cut];
                let _ = if which == 0 {
                    MailIndex::from_bytes(Some(b), log, None)
                } else {
                    MailIndex::from_bytes(index, Some(b), None)
                };
            }
            for _ in 0..rounds {
                let mut m = buf.to_vec();
                for _ in 0..1 + rng(&mut s) % 4 {
                    let i = (rng(&mut s) % m.len().max(1) as u64) as usize;
                    if let Some(x) = m.get_mut(i) {
                        *x ^= 1 << (rng(&mut s) % 8);
                        if rng(&mut s).is_multiple_of(4) {
                            *x = rng(&mut s) as u8;
                        }
                    }
                }
                let _ = if which == 0 {
                    MailIndex::from_bytes(Some(&m), log, None)
                } else {
                    MailIndex::from_bytes(index, Some(&m), None)
                };
            }
        }
    }

    #[test]
    fn garbage_never_panics() {
        let idx = write_index(&sample_new()).unwrap();
        let mut l = log(
            1,
            &[
                append(&[30, 31]),
                kw_update(true, "x", 30, 31),
                intro(u32::MAX, "ref", 0, 2, 2),
            ],
        );
        l[4..8].copy_from_slice(&777u32.to_le_bytes());
        mutate_all(Some(&idx), Some(&l), 3000);
        let mut s = 42u64;
        for n in 0..500 {
            let v: Vec<u8> = (0..n).map(|_| rng(&mut s) as u8).collect();
            let _ = MailIndex::from_bytes(Some(&v), Some(&v), Some(&v));
            let _ = MailIndex::from_bytes(None, Some(&v), None);
        }
    }
}
