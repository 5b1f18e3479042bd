//! `dovecot.index.log`: the transaction log's header and records, replayed on a [`State`]
//! the way Dovecot 2.3 does (one method per record kind, [`State::apply`]), with the modseq
//! accounting of each record.

use super::{
    COMPAT_LITTLE_ENDIAN, CurExt, EXT_KEYWORDS, EXT_MODSEQ, ExtState, HDR_NEXT_UID,
    MAX_EXT_HDR_SIZE, Record, Result, State, align_up, bad, get_u16, get_u32, get_u64, put_u32,
};

/// Whether `typ` (with its flag bits) is a record type Dovecot 2.3 writes.
fn known_record_type(typ: u32) -> bool {
    matches!(
        typ & TYPE_MASK & !0x2000_0000,
        T_EXPUNGE
            | T_EXPUNGE_PROT
            | T_APPEND
            | T_FLAG_UPDATE
            | T_HEADER_UPDATE
            | T_EXT_INTRO
            | T_EXT_RESET
            | T_EXT_HDR_UPDATE
            | T_EXT_REC_UPDATE
            | T_KEYWORD_UPDATE
            | T_KEYWORD_RESET
            | T_EXT_ATOMIC_INC
            | T_EXPUNGE_GUID
            | T_EXPUNGE_GUID_PROT
            | T_MODSEQ_UPDATE
            | T_EXT_HDR_UPDATE32
            | T_INDEX_DELETED
            | T_INDEX_UNDELETED
            | T_BOUNDARY
            | T_ATTRIBUTE_UPDATE
    )
}

// Log record types (after masking with TYPE_MASK).
const TYPE_MASK: u32 = 0x0fff_ffff;
const T_EXTERNAL: u32 = 0x1000_0000;
const T_EXPUNGE: u32 = 0x0001;
const T_EXPUNGE_PROT: u32 = 0x0001 | 0xcd90;
const T_APPEND: u32 = 0x0002;
const T_FLAG_UPDATE: u32 = 0x0004;
const T_HEADER_UPDATE: u32 = 0x0020;
const T_EXT_INTRO: u32 = 0x0040;
const T_EXT_RESET: u32 = 0x0080;
const T_EXT_HDR_UPDATE: u32 = 0x0100;
const T_EXT_REC_UPDATE: u32 = 0x0200;
const T_KEYWORD_UPDATE: u32 = 0x0400;
const T_KEYWORD_RESET: u32 = 0x0800;
const T_EXT_ATOMIC_INC: u32 = 0x1000;
const T_EXPUNGE_GUID: u32 = 0x2000;
const T_EXPUNGE_GUID_PROT: u32 = 0x2000 | 0xcd90;
const T_MODSEQ_UPDATE: u32 = 0x8000;
const T_EXT_HDR_UPDATE32: u32 = 0x1_0000;
const T_INDEX_DELETED: u32 = 0x2_0000;
const T_INDEX_UNDELETED: u32 = 0x4_0000;
const T_BOUNDARY: u32 = 0x8_0000;
const T_ATTRIBUTE_UPDATE: u32 = 0x10_0000;

/// Flag bits that count as a real (modseq-raising) flag change.
const FLAGS_MASK: u8 = 0x3f;
/// ext-intro flag: do not shrink an existing extension.
const EXT_INTRO_NO_SHRINK: u16 = 0x01;

/// Decode the size field of a log record header: the 4 bytes read as a big-endian u32 `v`
/// must have all of 0x80808080 set; the size is the 4 remaining 7-bit groups shifted left by
/// 2. Returns 0 (= end of data) when the marker bits are missing.
fn decode_log_record_size(raw: [u8; 4]) -> u32 {
    let v = u32::from_be_bytes(raw);
    if v & 0x8080_8080 != 0x8080_8080 {
        return 0;
    }
    ((v & 0x7f) | ((v >> 8) & 0x7f) << 7 | ((v >> 16) & 0x7f) << 14 | ((v >> 24) & 0x7f) << 21) << 2
}

/// Encode a log record size (a multiple of 4, below 2^30) into its on-disk bytes; the
/// inverse of [`decode_log_record_size`]. Returns `None` for sizes that cannot be encoded.
#[cfg(test)]
fn encode_log_record_size(size: u32) -> Option<[u8; 4]> {
    if !size.is_multiple_of(4) || size >= 1 << 30 {
        return None;
    }
    let s = size >> 2;
    let v = 0x8080_8080
        | (s & 0x7f)
        | ((s >> 7) & 0x7f) << 8
        | ((s >> 14) & 0x7f) << 16
        | ((s >> 21) & 0x7f) << 24;
    Some(v.to_be_bytes())
}

impl State {
    /// Index range of records with uid in `uid1..=uid2`.
    fn range(&self, uid1: u32, uid2: u32) -> std::ops::Range<usize> {
        let (a, b) = if uid1 <= uid2 {
            (uid1, uid2)
        } else {
            (uid2, uid1)
        };
        let start = self.records.partition_point(|r| r.uid < a);
        let end = self.records.partition_point(|r| r.uid <= b);
        start..end.max(start)
    }

    fn find(&self, uid: u32) -> Option<usize> {
        self.records.binary_search_by_key(&uid, |r| r.uid).ok()
    }

    /// Replay one log file. Records before `apply_from` are only used for modseq accounting.
    /// Per-message modseqs are tracked only while the `modseq` extension exists (as Dovecot).
    pub(super) fn replay_log(&mut self, file: &str, log: &[u8], apply_from: usize) -> Result<()> {
        let lh = LogHeader::parse(file, log)?;
        let mut modseq = lh.initial_modseq;
        let track = lh.initial_modseq != 0;
        let mut pos = lh.hdr_size;
        if apply_from > log.len() {
            return Err(bad(
                file,
                format!(
                    "index points at offset {apply_from}, past the end of the log ({} bytes)",
                    log.len()
                ),
            ));
        }
        while let Some(raw) = log.get(pos..pos.saturating_add(4)) {
            let size = decode_log_record_size([raw[0], raw[1], raw[2], raw[3]]) as usize;
            if size == 0 {
                // The end of the data: zeros (space written ahead, or a write cut short).
                // Anything else here is damage, which must not silently end the replay.
                if log[pos..].iter().all(|&b| b == 0) {
                    break;
                }
                return Err(bad(
                    file,
                    format!("record at offset {pos}: not a record (damaged log)"),
                ));
            }
            if size < 8 {
                return Err(bad(
                    file,
                    format!("record at offset {pos}: size {size} too small"),
                ));
            }
            let typ = get_u32(log, pos + 4).unwrap_or(0);
            if let Some(t) = log.get(pos + 4..pos + 8)
                && !known_record_type(get_u32(t, 0).unwrap_or(0))
            {
                return Err(bad(
                    file,
                    format!(
                        "record at offset {pos}: unknown record type {:#x} (damaged log)",
                        get_u32(t, 0).unwrap_or(0)
                    ),
                ));
            }
            let Some(end) = pos.checked_add(size).filter(|&e| e <= log.len()) else {
                break; // the last record, partially written
            };
            let data = log.get(pos + 8..end).unwrap_or(&[]);
            let t = typ & TYPE_MASK;
            if t == T_BOUNDARY {
                let bsize = get_u32(data, 0)
                    .ok_or_else(|| bad(file, format!("boundary at offset {pos} too short")))?;
                if pos
                    .checked_add(bsize as usize)
                    .is_none_or(|e| e > log.len())
                {
                    break; // unfinished transaction
                }
            }
            if track {
                modseq = modseq_after(file, pos, typ, data, modseq)?;
            }
            // records before `apply_from` are already contained in dovecot.index (including
            // the per-message modseqs of its `modseq` extension); they only count for modseq
            if pos >= apply_from {
                self.apply(file, pos, typ, data, modseq)?;
            }
            pos = end;
        }
        if track {
            self.highest_modseq = self.highest_modseq.max(modseq);
        }
        Ok(())
    }

    fn modseq_update(&mut self, data: &[u8]) {
        for c in data.chunks_exact(12) {
            let uid = get_u32(c, 0).unwrap_or(0);
            let m =
                u64::from(get_u32(c, 4).unwrap_or(0)) | u64::from(get_u32(c, 8).unwrap_or(0)) << 32;
            if let Some(i) = self.find(uid) {
                let rec = &mut self.records[i];
                rec.modseq = rec.modseq.max(m);
            }
        }
    }

    fn cur_ext(&self, file: &str, pos: usize, what: &str) -> Result<Option<(usize, u16)>> {
        match self.cur {
            CurExt::None => Err(bad(
                file,
                format!("{what} at offset {pos} without ext-intro"),
            )),
            CurExt::Broken | CurExt::Ext { ignore: true, .. } => Ok(None),
            CurExt::Ext {
                idx,
                rec_size,
                ignore: false,
            } => Ok(Some((idx, rec_size))),
        }
    }

    fn check_multiple(file: &str, pos: usize, data: &[u8], unit: usize, what: &str) -> Result<()> {
        if !data.len().is_multiple_of(unit) {
            return Err(bad(
                file,
                format!(
                    "{what} at offset {pos}: data size {} not a multiple of {unit}",
                    data.len()
                ),
            ));
        }
        Ok(())
    }

    /// Apply one log record of type `typ` (at offset `pos` of `file`) to the state: one
    /// method per record kind.
    fn apply(&mut self, file: &str, pos: usize, typ: u32, data: &[u8], modseq: u64) -> Result<()> {
        let external = typ & T_EXTERNAL != 0;
        match typ & TYPE_MASK {
            T_APPEND => self.append(file, pos, data, modseq),
            T_EXPUNGE | T_EXPUNGE_PROT => self.expunge(file, pos, data, external),
            T_EXPUNGE_GUID | T_EXPUNGE_GUID_PROT => self.expunge_guid(file, pos, data, external),
            T_FLAG_UPDATE => self.flag_update(file, pos, data, modseq),
            T_HEADER_UPDATE => self.header_update(file, pos, data),
            T_EXT_INTRO => self.ext_intros(file, pos, data, modseq),
            T_EXT_RESET => self.ext_reset(file, pos, data),
            t @ (T_EXT_HDR_UPDATE | T_EXT_HDR_UPDATE32) => {
                self.ext_hdr_update(file, pos, data, t == T_EXT_HDR_UPDATE32)
            }
            T_EXT_REC_UPDATE => self.ext_rec_update(file, pos, data),
            T_EXT_ATOMIC_INC => self.ext_atomic_inc(file, pos, data),
            T_KEYWORD_UPDATE => self.keyword_update(file, pos, data, modseq),
            T_KEYWORD_RESET => self.keyword_reset(file, pos, data, modseq),
            T_MODSEQ_UPDATE => self.modseq_update_record(file, pos, data),
            T_INDEX_DELETED | T_INDEX_UNDELETED | T_BOUNDARY | T_ATTRIBUTE_UPDATE => Ok(()),
            other => Err(bad(
                file,
                format!("unknown record type {other:#x} at offset {pos}"),
            )),
        }
    }

    /// Append: new message records (UID and flags).
    fn append(&mut self, file: &str, pos: usize, data: &[u8], modseq: u64) -> Result<()> {
        Self::check_multiple(file, pos, data, 8, "append")?;
        for c in data.chunks_exact(8) {
            let uid = get_u32(c, 0).unwrap_or(0);
            let last = self.records.last().map_or(0, |r| r.uid);
            if uid == 0 || uid < self.next_uid() || uid <= last {
                continue; // Dovecot treats this as corruption and skips it
            }
            self.records.push(Record {
                uid,
                flags: c.get(4).copied().unwrap_or(0),
                keywords: Vec::new(),
                modseq: if self.modseq_ext { modseq } else { 0 },
                ext: vec![None; self.exts.len()],
            });
            put_u32(&mut self.base, HDR_NEXT_UID, uid.saturating_add(1));
        }
        Ok(())
    }

    /// Expunge: UID ranges removed (acted on only when `external`).
    fn expunge(&mut self, file: &str, pos: usize, data: &[u8], external: bool) -> Result<()> {
        Self::check_multiple(file, pos, data, 8, "expunge")?;
        if external {
            let mut gone = vec![false; self.records.len()];
            for c in data.chunks_exact(8) {
                let r = self.range(get_u32(c, 0).unwrap_or(0), get_u32(c, 4).unwrap_or(0));
                for g in gone.get_mut(r).unwrap_or(&mut []) {
                    *g = true;
                }
            }
            let mut it = gone.into_iter();
            self.records.retain(|_| !it.next().unwrap_or(false));
        }
        Ok(())
    }

    /// Expunge-guid: UIDs (with GUIDs) removed (acted on only when `external`).
    fn expunge_guid(&mut self, file: &str, pos: usize, data: &[u8], external: bool) -> Result<()> {
        Self::check_multiple(file, pos, data, 20, "expunge-guid")?;
        if external {
            let mut gone = vec![false; self.records.len()];
            for c in data.chunks_exact(20) {
                if let Some(i) = self.find(get_u32(c, 0).unwrap_or(0))
                    && let Some(g) = gone.get_mut(i)
                {
                    *g = true;
                }
            }
            let mut it = gone.into_iter();
            self.records.retain(|_| !it.next().unwrap_or(false));
        }
        Ok(())
    }

    /// Flag-update: flags added and removed on UID ranges.
    fn flag_update(&mut self, file: &str, pos: usize, data: &[u8], modseq: u64) -> Result<()> {
        Self::check_multiple(file, pos, data, 12, "flag-update")?;
        for c in data.chunks_exact(12) {
            let add = c.get(8).copied().unwrap_or(0);
            let remove = c.get(9).copied().unwrap_or(0);
            let internal = flag_update_is_internal(c);
            let r = self.range(get_u32(c, 0).unwrap_or(0), get_u32(c, 4).unwrap_or(0));
            for rec in self.records.get_mut(r).unwrap_or(&mut []) {
                rec.flags = (rec.flags & !remove) | add;
                if !internal && self.modseq_ext {
                    rec.modseq = modseq;
                }
            }
        }
        Ok(())
    }

    /// Header-update: bytes of the base header replaced (next UID never lowered).
    fn header_update(&mut self, file: &str, pos: usize, data: &[u8]) -> Result<()> {
        let mut i = 0usize;
        while i < data.len() {
            let off = get_u16(data, i);
            let size = get_u16(data, i + 2);
            let (Some(off), Some(size)) = (off, size) else {
                return Err(bad(
                    file,
                    format!("header-update at offset {pos}: truncated"),
                ));
            };
            let (off, size) = (usize::from(off), usize::from(size));
            let src = data.get(i + 4..i + 4 + size).ok_or_else(|| {
                bad(
                    file,
                    format!("header-update at offset {pos}: data past record end"),
                )
            })?;
            if off + size > self.base.len() {
                return Err(bad(
                    file,
                    format!("header-update at offset {pos}: {off}+{size} outside base header"),
                ));
            }
            let old_next = self.next_uid();
            if let Some(dst) = self.base.get_mut(off..off + size) {
                dst.copy_from_slice(src);
            }
            if self.next_uid() < old_next {
                put_u32(&mut self.base, HDR_NEXT_UID, old_next);
            }
            i = align_up(i + 4 + size, 4).unwrap_or(usize::MAX);
        }
        Ok(())
    }

    /// Ext-intro: the extensions the following ext records refer to.
    fn ext_intros(&mut self, file: &str, pos: usize, data: &[u8], modseq: u64) -> Result<()> {
        let mut i = 0usize;
        while i.saturating_add(20) <= data.len() {
            let ext_id = get_u32(data, i).unwrap_or(0);
            let reset_id = get_u32(data, i + 4).unwrap_or(0);
            let hdr_size = get_u32(data, i + 8).unwrap_or(0);
            let rec_size = get_u16(data, i + 12).unwrap_or(0);
            let rec_align = get_u16(data, i + 14).unwrap_or(0);
            let flags = get_u16(data, i + 16).unwrap_or(0);
            let name_size = usize::from(get_u16(data, i + 18).unwrap_or(0));
            let name = data.get(i + 20..i + 20 + name_size).ok_or_else(|| {
                bad(
                    file,
                    format!("ext-intro at offset {pos}: name past record end"),
                )
            })?;
            self.ext_intro(
                file, pos, ext_id, reset_id, hdr_size, rec_size, rec_align, flags, name, modseq,
            )?;
            i = align_up(i + 20 + name_size, 4).unwrap_or(usize::MAX);
        }
        Ok(())
    }

    /// Ext-reset: the current extension's reset id, its data cleared unless preserved.
    fn ext_reset(&mut self, file: &str, pos: usize, data: &[u8]) -> Result<()> {
        let new_reset_id = get_u32(data, 0)
            .ok_or_else(|| bad(file, format!("ext-reset at offset {pos}: too short")))?;
        let preserve = data.get(4).copied().unwrap_or(0) != 0;
        match self.cur {
            CurExt::None => {
                return Err(bad(
                    file,
                    format!("ext-reset at offset {pos} without ext-intro"),
                ));
            }
            CurExt::Broken => {}
            CurExt::Ext { idx, .. } => {
                if let Some(x) = self.exts.get_mut(idx) {
                    x.reset_id = new_reset_id;
                    if !preserve {
                        x.hdr.iter_mut().for_each(|b| *b = 0);
                        for rec in &mut self.records {
                            if let Some(d) = rec.ext.get_mut(idx) {
                                *d = None;
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Ext-hdr-update (`wide`: the 32-bit form): bytes of the current extension's header replaced.
    fn ext_hdr_update(&mut self, file: &str, pos: usize, data: &[u8], wide: bool) -> Result<()> {
        let hl = if wide { 8 } else { 4 };
        let mut i = 0usize;
        while i < data.len() {
            let (off, size) = if wide {
                (
                    get_u32(data, i).map(|v| v as usize),
                    get_u32(data, i + 4).map(|v| v as usize),
                )
            } else {
                (
                    get_u16(data, i).map(usize::from),
                    get_u16(data, i + 2).map(usize::from),
                )
            };
            let (Some(off), Some(size)) = (off, size) else {
                return Err(bad(
                    file,
                    format!("ext-hdr-update at offset {pos}: truncated"),
                ));
            };
            let src = (i + hl)
                .checked_add(size)
                .and_then(|e| data.get(i + hl..e))
                .ok_or_else(|| {
                    bad(
                        file,
                        format!("ext-hdr-update at offset {pos}: data past record end"),
                    )
                })?;
            if let Some((idx, _)) = self.cur_ext(file, pos, "ext-hdr-update")? {
                let hdr = self.exts.get_mut(idx).map(|x| &mut x.hdr);
                let dst = hdr.and_then(|h| {
                    let e = off.checked_add(size)?;
                    h.get_mut(off..e)
                });
                match dst {
                    Some(d) => d.copy_from_slice(src),
                    None => {
                        return Err(bad(
                            file,
                            format!(
                                "ext-hdr-update at offset {pos}: {off}+{size} outside extension header"
                            ),
                        ));
                    }
                }
            }
            i = align_up(i + hl + size, 4).unwrap_or(usize::MAX);
        }
        Ok(())
    }

    /// Ext-rec-update: the current extension's data of single messages.
    fn ext_rec_update(&mut self, file: &str, pos: usize, data: &[u8]) -> Result<()> {
        if let Some((idx, rec_size)) = self.cur_ext(file, pos, "ext-rec-update")? {
            let stride = align_up(4 + usize::from(rec_size), 4).unwrap_or(4);
            Self::check_multiple(file, pos, data, stride, "ext-rec-update")?;
            let ext_size = self.exts.get(idx).map_or(0, |x| usize::from(x.record_size));
            for c in data.chunks_exact(stride) {
                let uid = get_u32(c, 0).unwrap_or(0);
                if uid == 0 || uid >= self.next_uid() {
                    return Err(bad(
                        file,
                        format!("ext-rec-update at offset {pos}: invalid uid {uid}"),
                    ));
                }
                let src = c.get(4..4 + usize::from(rec_size)).unwrap_or(&[]);
                if let Some(i) = self.find(uid)
                    && let Some(slot) = self.records[i].ext.get_mut(idx)
                {
                    let mut v = vec![0u8; ext_size];
                    let n = ext_size.min(src.len());
                    v[..n].copy_from_slice(&src[..n]);
                    *slot = Some(v);
                }
            }
        }
        Ok(())
    }

    /// Ext-atomic-inc: a number in the current extension's data of single messages changed.
    fn ext_atomic_inc(&mut self, file: &str, pos: usize, data: &[u8]) -> Result<()> {
        Self::check_multiple(file, pos, data, 8, "ext-atomic-inc")?;
        if let Some((idx, rec_size)) = self.cur_ext(file, pos, "ext-atomic-inc")? {
            let n = usize::from(rec_size);
            if !matches!(n, 1 | 2 | 4 | 8) {
                return Err(bad(
                    file,
                    format!("ext-atomic-inc at offset {pos}: invalid size {n}"),
                ));
            }
            let ext_size = self.exts.get(idx).map_or(0, |x| usize::from(x.record_size));
            for c in data.chunks_exact(8) {
                let uid = get_u32(c, 0).unwrap_or(0);
                let diff = i64::from(get_u32(c, 4).unwrap_or(0) as i32);
                if uid == 0 || uid >= self.next_uid() {
                    return Err(bad(
                        file,
                        format!("ext-atomic-inc at offset {pos}: invalid uid {uid}"),
                    ));
                }
                let Some(i) = self.find(uid) else { continue };
                let Some(slot) = self.records[i].ext.get_mut(idx) else {
                    continue;
                };
                let mut v = slot.take().unwrap_or_default();
                v.resize(ext_size.max(n), 0);
                let mut num = [0u8; 8];
                num[..n].copy_from_slice(&v[..n]);
                let orig = u64::from_le_bytes(num);
                let max = if n == 8 {
                    u64::MAX
                } else {
                    (1u64 << (n * 8)) - 1
                };
                let new = i128::from(orig) + i128::from(diff);
                if new < 0 || new > i128::from(max) {
                    return Err(bad(
                        file,
                        format!(
                            "ext-atomic-inc at offset {pos}: uid {uid} value {orig} {diff:+} out of range"
                        ),
                    ));
                }
                let bytes = (new as u64).to_le_bytes();
                v[..n].copy_from_slice(&bytes[..n]);
                v.truncate(ext_size);
                *slot = Some(v);
            }
        }
        Ok(())
    }

    /// Keyword-update: one keyword added to or removed from UID ranges (registered when new).
    fn keyword_update(&mut self, file: &str, pos: usize, data: &[u8], modseq: u64) -> Result<()> {
        let modify = data.first().copied();
        let name_size = get_u16(data, 2).map(usize::from);
        let (Some(modify), Some(name_size)) = (modify, name_size) else {
            return Err(bad(
                file,
                format!("keyword-update at offset {pos}: truncated"),
            ));
        };
        let name = data.get(4..4 + name_size).ok_or_else(|| {
            bad(
                file,
                format!("keyword-update at offset {pos}: name past record end"),
            )
        })?;
        let start = align_up(4 + name_size, 4).unwrap_or(usize::MAX);
        let uids = data.get(start..).unwrap_or(&[]);
        if start > data.len() || uids.len() % 8 != 0 {
            return Err(bad(
                file,
                format!("keyword-update at offset {pos}: bad uid list size"),
            ));
        }
        if name.is_empty() || name.contains(&0) {
            return Err(bad(
                file,
                format!("keyword-update at offset {pos}: invalid keyword name"),
            ));
        }
        let add = modify == 0;
        let kw = match self.keywords.iter().position(|k| k == name) {
            Some(k) => k as u32,
            None if !add => return Ok(()),
            None => {
                // Dovecot registers the keywords extension when the first keyword
                // appears: it takes the next extension id, which later ext-intro
                // records of the log refer to.
                self.keywords_ext();
                self.keywords.push(name.to_vec());
                (self.keywords.len() - 1) as u32
            }
        };
        for c in uids.chunks_exact(8) {
            let r = self.range(get_u32(c, 0).unwrap_or(0), get_u32(c, 4).unwrap_or(0));
            for rec in self.records.get_mut(r).unwrap_or(&mut []) {
                match (rec.keywords.binary_search(&kw), add) {
                    (Err(p), true) => rec.keywords.insert(p, kw),
                    (Ok(p), false) => {
                        rec.keywords.remove(p);
                    }
                    _ => {}
                }
                if self.modseq_ext {
                    rec.modseq = modseq;
                }
            }
        }
        Ok(())
    }

    /// Keyword-reset: all keywords removed from UID ranges.
    fn keyword_reset(&mut self, file: &str, pos: usize, data: &[u8], modseq: u64) -> Result<()> {
        Self::check_multiple(file, pos, data, 8, "keyword-reset")?;
        for c in data.chunks_exact(8) {
            let r = self.range(get_u32(c, 0).unwrap_or(0), get_u32(c, 4).unwrap_or(0));
            for rec in self.records.get_mut(r).unwrap_or(&mut []) {
                rec.keywords.clear();
                if self.modseq_ext {
                    rec.modseq = modseq;
                }
            }
        }
        Ok(())
    }

    /// Modseq-update: modseqs raised.
    fn modseq_update_record(&mut self, file: &str, pos: usize, data: &[u8]) -> Result<()> {
        Self::check_multiple(file, pos, data, 12, "modseq-update")?;
        self.modseq_update(data);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn ext_intro(
        &mut self,
        file: &str,
        pos: usize,
        ext_id: u32,
        reset_id: u32,
        hdr_size: u32,
        rec_size: u16,
        rec_align: u16,
        flags: u16,
        name: &[u8],
        modseq: u64,
    ) -> Result<()> {
        self.cur = CurExt::Broken;
        let idx = if ext_id != u32::MAX {
            if ext_id as usize >= self.exts.len() {
                return Err(bad(
                    file,
                    format!("ext-intro at offset {pos}: unknown ext id {ext_id}"),
                ));
            }
            Some(ext_id as usize)
        } else {
            if name.is_empty() {
                return Err(bad(
                    file,
                    format!("ext-intro at offset {pos}: no id and no name"),
                ));
            }
            self.exts.iter().position(|x| x.name.as_bytes() == name)
        };
        let is_keywords = match idx {
            Some(i) => self.exts.get(i).is_some_and(|x| x.name == EXT_KEYWORDS),
            None => name == EXT_KEYWORDS.as_bytes(),
        };
        if is_keywords {
            return Ok(()); // keywords are maintained through keyword records only
        }
        if hdr_size > MAX_EXT_HDR_SIZE
            || (rec_size > 0 && (rec_align == 0 || !rec_size.is_multiple_of(rec_align)))
        {
            return Err(bad(
                file,
                format!(
                    "ext-intro at offset {pos}: invalid sizes hdr {hdr_size} record {rec_size}/{rec_align}"
                ),
            ));
        }
        let no_shrink = flags & EXT_INTRO_NO_SHRINK != 0;
        match idx {
            Some(i) => {
                let Some(x) = self.exts.get_mut(i) else {
                    return Ok(());
                };
                let ignore = x.reset_id != reset_id;
                if !ignore {
                    let new_hdr = hdr_size as usize;
                    if new_hdr > x.hdr.len() || !no_shrink {
                        x.hdr.resize(new_hdr, 0);
                    }
                    if x.record_align < rec_align || (x.record_align > rec_align && !no_shrink) {
                        x.record_align = rec_align;
                        self.layout_dirty = true;
                    }
                    if x.record_size < rec_size || (x.record_size > rec_size && !no_shrink) {
                        x.record_size = rec_size;
                        self.layout_dirty = true;
                        let n = usize::from(rec_size);
                        for rec in &mut self.records {
                            if let Some(Some(d)) = rec.ext.get_mut(i) {
                                d.resize(n, 0);
                            }
                        }
                    }
                }
                self.cur = CurExt::Ext {
                    idx: i,
                    rec_size,
                    ignore,
                };
            }
            None => {
                self.exts.push(ExtState {
                    name: String::from_utf8_lossy(name).into_owned(),
                    reset_id,
                    hdr: vec![0; hdr_size as usize],
                    record_offset: 0,
                    record_size: rec_size,
                    record_align: rec_align,
                });
                for rec in &mut self.records {
                    rec.ext.push(None);
                }
                if name == EXT_MODSEQ.as_bytes() && !self.modseq_ext {
                    // modseqs just got enabled: existing messages get the current highest
                    self.modseq_ext = true;
                    for rec in &mut self.records {
                        rec.modseq = modseq;
                    }
                }
                self.layout_dirty = true;
                self.cur = CurExt::Ext {
                    idx: self.exts.len() - 1,
                    rec_size,
                    ignore: false,
                };
            }
        }
        Ok(())
    }

    /// The index of the `keywords` extension, registered (with an empty slot in every
    /// record) when missing.
    pub(super) fn keywords_ext(&mut self) -> usize {
        if let Some(i) = self.exts.iter().position(|x| x.name == EXT_KEYWORDS) {
            return i;
        }
        self.exts.push(ExtState {
            name: EXT_KEYWORDS.to_string(),
            reset_id: 0,
            hdr: Vec::new(),
            record_offset: 0,
            record_size: 0,
            record_align: 1,
        });
        for rec in &mut self.records {
            rec.ext.push(None);
        }
        self.exts.len() - 1
    }
}

/// A flag-update entry (12 bytes) that only touches internal bits does not raise modseq.
fn flag_update_is_internal(c: &[u8]) -> bool {
    let add = c.get(8).copied().unwrap_or(0);
    let remove = c.get(9).copied().unwrap_or(0);
    let inc = c.get(10).copied().unwrap_or(0);
    (add | remove) & FLAGS_MASK == 0 && inc == 0
}

/// Modseq after applying one log record (section 6.4 accounting).
fn modseq_after(file: &str, pos: usize, typ: u32, data: &[u8], cur: u64) -> Result<u64> {
    let external = typ & T_EXTERNAL != 0;
    Ok(match typ & TYPE_MASK {
        T_EXPUNGE | T_EXPUNGE_PROT | T_EXPUNGE_GUID | T_EXPUNGE_GUID_PROT if !external => cur,
        T_EXPUNGE | T_EXPUNGE_PROT | T_EXPUNGE_GUID | T_EXPUNGE_GUID_PROT | T_APPEND
        | T_KEYWORD_UPDATE | T_KEYWORD_RESET | T_ATTRIBUTE_UPDATE => cur.saturating_add(1),
        T_FLAG_UPDATE => {
            if data.chunks_exact(12).any(|c| !flag_update_is_internal(c)) {
                cur.saturating_add(1)
            } else {
                cur
            }
        }
        T_MODSEQ_UPDATE => {
            if !data.len().is_multiple_of(12) {
                return Err(bad(
                    file,
                    format!("modseq-update at offset {pos}: bad size {}", data.len()),
                ));
            }
            data.chunks_exact(12).fold(cur, |m, c| {
                let v = u64::from(get_u32(c, 4).unwrap_or(0))
                    | u64::from(get_u32(c, 8).unwrap_or(0)) << 32;
                m.max(v)
            })
        }
        _ => cur,
    })
}

/// The parts of a log file header this module uses.
pub(super) struct LogHeader {
    pub(super) hdr_size: usize,
    pub(super) indexid: u32,
    pub(super) file_seq: u32,
    pub(super) prev_file_seq: u32,
    pub(super) prev_file_offset: u32,
    pub(super) initial_modseq: u64,
}

impl LogHeader {
    pub(super) fn parse(file: &str, log: &[u8]) -> Result<LogHeader> {
        if log.len() < 40 {
            return Err(bad(
                file,
                format!("log file too short ({} bytes)", log.len()),
            ));
        }
        if log[0] != 1 {
            return Err(bad(
                file,
                format!("unsupported log major version {} at offset 0", log[0]),
            ));
        }
        let hdr_size = usize::from(get_u16(log, 2).unwrap_or(0));
        if hdr_size < 40 || hdr_size > log.len() {
            return Err(bad(
                file,
                format!("bad log hdr_size {hdr_size} at offset 2"),
            ));
        }
        if log[32] & COMPAT_LITTLE_ENDIAN == 0 {
            return Err(bad(file, "compat_flags at offset 32 lack little-endian"));
        }
        Ok(LogHeader {
            hdr_size,
            indexid: get_u32(log, 4).unwrap_or(0),
            file_seq: get_u32(log, 8).unwrap_or(0),
            prev_file_seq: get_u32(log, 12).unwrap_or(0),
            prev_file_offset: get_u32(log, 16).unwrap_or(0),
            initial_modseq: get_u64(log, 24).unwrap_or(0),
        })
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::MailIndex;
    use super::*;

    /// Build a log file: header + records `(type, data)`.
    pub(in crate::store::dbox::index) fn log(
        initial_modseq: u64,
        recs: &[(u32, Vec<u8>)],
    ) -> Vec<u8> {
        let mut v = vec![0u8; 40];
        v[0] = 1;
        v[1] = 3;
        v[2] = 40;
        put_u32(&mut v, 4, 777); // indexid
        put_u32(&mut v, 8, 1); // file_seq
        v[24..32].copy_from_slice(&initial_modseq.to_le_bytes());
        v[32] = 1;
        for (t, d) in recs {
            let size = (8 + d.len()) as u32;
            v.extend_from_slice(&encode_log_record_size(size).unwrap());
            v.extend_from_slice(&t.to_le_bytes());
            v.extend_from_slice(d);
        }
        v
    }

    pub(in crate::store::dbox::index) fn le(words: &[u32]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    pub(in crate::store::dbox::index) fn append(uids: &[u32]) -> (u32, Vec<u8>) {
        (
            T_APPEND | T_EXTERNAL,
            uids.iter().flat_map(|&u| le(&[u, 0])).collect(),
        )
    }

    pub(in crate::store::dbox::index) fn kw_update(
        add: bool,
        name: &str,
        u1: u32,
        u2: u32,
    ) -> (u32, Vec<u8>) {
        let mut d = vec![if add { 0 } else { 1 }, 0];
        d.extend_from_slice(&(name.len() as u16).to_le_bytes());
        d.extend_from_slice(name.as_bytes());
        while d.len() % 4 != 0 {
            d.push(0);
        }
        d.extend(le(&[u1, u2]));
        (T_KEYWORD_UPDATE, d)
    }

    pub(in crate::store::dbox::index) fn intro(
        ext_id: u32,
        name: &str,
        hdr: u32,
        rs: u16,
        ra: u16,
    ) -> (u32, Vec<u8>) {
        let mut d = le(&[ext_id, 0, hdr]);
        for x in [rs, ra, 0, name.len() as u16] {
            d.extend_from_slice(&x.to_le_bytes());
        }
        d.extend_from_slice(name.as_bytes());
        while !d.len().is_multiple_of(4) {
            d.push(0);
        }
        (T_EXT_INTRO, d)
    }

    #[test]
    fn size_encoding() {
        assert_eq!(decode_log_record_size([0x80, 0x80, 0x80, 0x88]), 32);
        assert_eq!(decode_log_record_size([0x80, 0x80, 0x80, 0x85]), 20);
        assert_eq!(decode_log_record_size([0x00, 0x80, 0x80, 0x88]), 0);
        assert_eq!(decode_log_record_size([0, 0, 0, 0]), 0);
        for s in [4u32, 8, 12, 508, 512, 65532, 65536, 1 << 20, (1 << 30) - 4] {
            assert_eq!(
                decode_log_record_size(encode_log_record_size(s).unwrap()),
                s
            );
        }
        assert!(encode_log_record_size(6).is_none());
        assert_eq!(encode_log_record_size(32), Some([0x80, 0x80, 0x80, 0x88]));
    }

    #[test]
    fn replay_basic() {
        let mut hu = vec![];
        hu.extend_from_slice(&24u16.to_le_bytes());
        hu.extend_from_slice(&4u16.to_le_bytes());
        hu.extend(le(&[4242]));
        let l = log(
            1,
            &[
                (T_HEADER_UPDATE, hu),
                append(&[1, 2, 3, 5]),
                (T_FLAG_UPDATE, [le(&[1, 2]), vec![0x08, 0, 0, 0]].concat()),
                (
                    T_FLAG_UPDATE,
                    [le(&[2, 2]), vec![0x04, 0xff, 0, 0]].concat(),
                ),
                kw_update(true, "foo", 1, 3),
                kw_update(true, "bar", 3, 3),
                kw_update(false, "foo", 2, 2),
                kw_update(false, "nothere", 1, 5),
                (T_EXPUNGE_PROT, le(&[3, 3])), // request only
                (T_EXPUNGE_PROT | T_EXTERNAL, le(&[5, 9])), // real
                intro(u32::MAX, "ref", 0, 2, 2),
                (T_EXT_REC_UPDATE, le(&[1, 7])),
                (T_EXT_ATOMIC_INC, le(&[1, 3, 2, 1])),
                intro(u32::MAX, "hdrx", 8, 0, 0),
                (T_EXT_HDR_UPDATE, vec![2, 0, 2, 0, 0xab, 0xcd, 0, 0]),
                (
                    T_EXT_HDR_UPDATE32,
                    [le(&[4, 1]), vec![0xee, 0, 0, 0]].concat(),
                ),
            ],
        );
        let ix = MailIndex::from_bytes(None, Some(&l), None).unwrap();
        assert_eq!(ix.uid_validity, 4242);
        assert_eq!(ix.next_uid, 6);
        assert_eq!(ix.indexid, 777);
        let uids: Vec<u32> = ix.records.iter().map(|r| r.uid).collect();
        assert_eq!(uids, [1, 2, 3]);
        assert_eq!(ix.record(1).unwrap().flags, 0x08);
        assert_eq!(ix.record(2).unwrap().flags, 0x04);
        assert_eq!(ix.keywords, [b"foo".to_vec(), b"bar".to_vec()]);
        assert_eq!(ix.record(1).unwrap().keywords, [0]);
        assert!(ix.record(2).unwrap().keywords.is_empty());
        assert_eq!(ix.record(3).unwrap().keywords, [0, 1]);
        // modseq: 1 + append + 2 flag updates + 3 effective kw updates + remove-unknown kw
        // update (still counted) + external expunge = 9
        assert_eq!(ix.highest_modseq, 9);
        assert_eq!(
            ix.ext_rec(ix.record(1).unwrap(), "ref"),
            Some(&[10u8, 0][..])
        );
        assert_eq!(
            ix.ext_rec(ix.record(2).unwrap(), "ref"),
            Some(&[1u8, 0][..])
        );
        assert_eq!(
            ix.ext_rec(ix.record(3).unwrap(), "ref"),
            Some(&[0u8, 0][..])
        );
        assert_eq!(
            ix.ext_hdr("hdrx"),
            Some(&[0, 0, 0xab, 0xcd, 0xee, 0, 0, 0][..])
        );
        assert_eq!(ix.ext_rec(ix.record(1).unwrap(), "hdrx"), None);
        // no modseq extension: per-message modseqs unknown
        assert!(ix.records.iter().all(|r| r.modseq == 0));
        // keywords ext synthesized
        assert_eq!(
            ix.ext_rec(ix.record(3).unwrap(), "keywords"),
            Some(&[3u8][..])
        );

        // resize "ref" to 4 bytes through an intro by id: data kept, zero extended
        let mut recs = vec![
            append(&[1]),
            intro(u32::MAX, "ref", 0, 2, 2),
            (T_EXT_REC_UPDATE, le(&[1, 0x0505])),
        ];
        recs.push(intro(0, "", 0, 4, 4));
        let ix = MailIndex::from_bytes(None, Some(&log(1, &recs)), None).unwrap();
        let x = &ix.exts[0];
        assert_eq!((x.record_size, x.record_align, x.record_offset), (4, 4, 8));
        assert_eq!(ix.ext_rec(&ix.records[0], "ref"), Some(&[5u8, 5, 0, 0][..]));
    }

    #[test]
    fn unfinished_transaction_and_truncation() {
        let mut bound = le(&[0]);
        let recs = [
            append(&[1]),
            (T_BOUNDARY, bound.clone()),
            append(&[2]),
            append(&[3]),
        ];
        // boundary size covers boundary + the two appends = 12 + 16 + 16
        bound = le(&[44]);
        let full = log(
            1,
            &[
                recs[0].clone(),
                (T_BOUNDARY, bound),
                recs[2].clone(),
                recs[3].clone(),
            ],
        );
        let ix = MailIndex::from_bytes(None, Some(&full), None).unwrap();
        assert_eq!(ix.records.len(), 3);
        assert_eq!(ix.highest_modseq, 4);
        // cut inside the transaction: stops before the boundary, not an error
        for cut in 40 + 16..full.len() {
            let ix = MailIndex::from_bytes(None, Some(&full[..cut]), None).unwrap();
            let n = if cut == full.len() { 3 } else { 1 };
            assert_eq!(ix.records.len(), n, "cut {cut}");
        }
        // trailing zeros are the end of the log
        let mut z = full.clone();
        z.extend_from_slice(&[0; 64]);
        assert_eq!(
            MailIndex::from_bytes(None, Some(&z), None)
                .unwrap()
                .records
                .len(),
            3
        );
        // header-only / short logs
        assert!(MailIndex::from_bytes(None, Some(&full[..39]), None).is_err());
        assert_eq!(
            MailIndex::from_bytes(None, Some(&full[..40]), None)
                .unwrap()
                .records
                .len(),
            0
        );
        // big-endian compat flag refused
        let mut be = full.clone();
        be[32] = 0;
        assert!(MailIndex::from_bytes(None, Some(&be), None).is_err());
    }

    /// One method per log record kind ([`State::apply`]), each tested alone on a fresh
    /// state (modseq 5 for every record).
    mod record_kinds {
        use super::*;

        fn state(recs: &[(u32, Vec<u8>)]) -> Result<State> {
            let mut st = State::new_empty(1);
            for (pos, (t, d)) in recs.iter().enumerate() {
                st.apply("t", pos, *t, d, 5)?;
            }
            Ok(st)
        }

        fn uids(st: &State) -> Vec<u32> {
            st.records.iter().map(|r| r.uid).collect()
        }

        #[test]
        fn append_takes_rising_uids_and_skips_the_rest() {
            let st = state(&[append(&[1, 2, 5]), append(&[3, 0, 6])]).unwrap();
            assert_eq!(uids(&st), [1, 2, 5, 6]);
            assert_eq!(st.next_uid(), 7);
            assert!(
                state(&[(T_APPEND, vec![1, 0, 0])]).is_err(),
                "size not a multiple of 8"
            );
        }

        #[test]
        fn expunge_acts_only_when_external() {
            let base = append(&[1, 2, 3, 4]);
            let st = state(&[base.clone(), (T_EXPUNGE, le(&[2, 3]))]).unwrap();
            assert_eq!(uids(&st), [1, 2, 3, 4]);
            let st = state(&[base, (T_EXPUNGE | T_EXTERNAL, le(&[3, 2]))]).unwrap();
            assert_eq!(uids(&st), [1, 4]);
        }

        #[test]
        fn expunge_guid_removes_single_uids() {
            let mut d = le(&[2]);
            d.extend([0xaa; 16]);
            let st = state(&[append(&[1, 2, 3]), (T_EXPUNGE_GUID | T_EXTERNAL, d.clone())]);
            assert_eq!(uids(&st.unwrap()), [1, 3]);
            let st = state(&[append(&[1, 2, 3]), (T_EXPUNGE_GUID, d)]).unwrap();
            assert_eq!(uids(&st), [1, 2, 3]);
        }

        #[test]
        fn flag_update_adds_and_removes_on_a_range() {
            let set = (T_FLAG_UPDATE, [le(&[1, 2]), vec![0x09, 0, 0, 0]].concat());
            let clear = (T_FLAG_UPDATE, [le(&[2, 3]), vec![0, 0x08, 0, 0]].concat());
            let st = state(&[append(&[1, 2, 3]), set, clear]).unwrap();
            let flags: Vec<u8> = st.records.iter().map(|r| r.flags).collect();
            assert_eq!(flags, [0x09, 0x01, 0]);
        }

        #[test]
        fn header_update_writes_the_base_header_but_never_lowers_next_uid() {
            let mut uv = [24u16.to_le_bytes(), 4u16.to_le_bytes()].concat();
            uv.extend(le(&[4242]));
            let mut next = [(HDR_NEXT_UID as u16).to_le_bytes(), 4u16.to_le_bytes()].concat();
            next.extend(le(&[2]));
            let st = state(&[
                append(&[1, 7]),
                (T_HEADER_UPDATE, uv),
                (T_HEADER_UPDATE, next),
            ])
            .unwrap();
            assert_eq!(get_u32(&st.base, 24), Some(4242));
            assert_eq!(st.next_uid(), 8);
            let outside = [(4096u16).to_le_bytes(), 4u16.to_le_bytes()].concat();
            assert!(state(&[(T_HEADER_UPDATE, [outside, le(&[0])].concat())]).is_err());
        }

        #[test]
        fn ext_intro_registers_an_extension_for_the_records_after_it() {
            let st = state(&[append(&[1]), intro(u32::MAX, "ref", 8, 2, 2)]).unwrap();
            assert_eq!(st.exts.len(), 1);
            assert_eq!(st.exts[0].name, "ref");
            assert_eq!(st.exts[0].hdr, [0; 8]);
            assert!(matches!(st.cur, CurExt::Ext { idx: 0, .. }));
        }

        #[test]
        fn ext_records_without_an_intro_are_errors() {
            for t in [
                T_EXT_REC_UPDATE,
                T_EXT_ATOMIC_INC,
                T_EXT_HDR_UPDATE,
                T_EXT_RESET,
            ] {
                assert!(state(&[append(&[1]), (t, le(&[1, 1]))]).is_err(), "{t:#x}");
            }
        }

        #[test]
        fn ext_rec_update_and_atomic_inc_change_one_message() {
            let st = state(&[
                append(&[1, 2]),
                intro(u32::MAX, "ref", 0, 2, 2),
                (T_EXT_REC_UPDATE, le(&[2, 7])),
                (T_EXT_ATOMIC_INC, le(&[2, 3, 1, 1])),
            ])
            .unwrap();
            assert_eq!(st.records[0].ext[0], Some(vec![1, 0]));
            assert_eq!(st.records[1].ext[0], Some(vec![10, 0]));
            let under = (T_EXT_ATOMIC_INC, le(&[1, u32::MAX]));
            let intro = intro(u32::MAX, "ref", 0, 2, 2);
            assert!(
                state(&[append(&[1]), intro.clone(), under]).is_err(),
                "below zero"
            );
            let bad_uid = (T_EXT_REC_UPDATE, le(&[9, 7]));
            assert!(
                state(&[append(&[1]), intro, bad_uid]).is_err(),
                "uid past next_uid"
            );
        }

        #[test]
        fn ext_hdr_update_in_both_widths() {
            let st = state(&[
                intro(u32::MAX, "hdrx", 8, 0, 0),
                (T_EXT_HDR_UPDATE, vec![2, 0, 2, 0, 0xab, 0xcd, 0, 0]),
                (
                    T_EXT_HDR_UPDATE32,
                    [le(&[6, 1]), vec![0xee, 0, 0, 0]].concat(),
                ),
            ])
            .unwrap();
            assert_eq!(st.exts[0].hdr, [0, 0, 0xab, 0xcd, 0, 0, 0xee, 0]);
            let past = (T_EXT_HDR_UPDATE, vec![7, 0, 2, 0, 1, 2, 0, 0]);
            assert!(state(&[intro(u32::MAX, "hdrx", 8, 0, 0), past]).is_err());
        }

        #[test]
        fn ext_reset_clears_data_unless_preserved() {
            let recs = |preserve: u8| {
                vec![
                    append(&[1]),
                    intro(u32::MAX, "ref", 4, 2, 2),
                    (T_EXT_HDR_UPDATE, vec![0, 0, 1, 0, 9, 0, 0, 0]),
                    (T_EXT_REC_UPDATE, le(&[1, 7])),
                    (T_EXT_RESET, [le(&[3]), vec![preserve, 0, 0, 0]].concat()),
                ]
            };
            let st = state(&recs(0)).unwrap();
            assert_eq!(st.exts[0].reset_id, 3);
            assert_eq!(
                (st.exts[0].hdr.as_slice(), &st.records[0].ext[0]),
                (&[0u8; 4][..], &None)
            );
            let st = state(&recs(1)).unwrap();
            assert_eq!(st.exts[0].hdr, [9, 0, 0, 0]);
            assert_eq!(st.records[0].ext[0], Some(vec![7, 0]));
        }

        #[test]
        fn keyword_update_registers_names_and_keyword_reset_clears() {
            let st = state(&[
                append(&[1, 2, 3]),
                kw_update(true, "work", 1, 3),
                kw_update(false, "work", 2, 2),
                kw_update(false, "never", 1, 3),
            ])
            .unwrap();
            assert_eq!(st.keywords, [b"work".to_vec()]);
            assert!(st.exts.iter().any(|x| x.name == EXT_KEYWORDS));
            let kws: Vec<&[u32]> = st.records.iter().map(|r| r.keywords.as_slice()).collect();
            assert_eq!(kws, [&[0][..], &[], &[0]]);
            let st = state(&[
                append(&[1, 2]),
                kw_update(true, "work", 1, 2),
                (T_KEYWORD_RESET, le(&[2, 2])),
            ])
            .unwrap();
            assert_eq!(st.records[0].keywords, [0]);
            assert!(st.records[1].keywords.is_empty());
            assert!(state(&[kw_update(true, "", 1, 1)]).is_err(), "empty name");
        }

        #[test]
        fn modseq_update_only_raises() {
            let mut st = state(&[append(&[1, 2])]).unwrap();
            st.records[1].modseq = 50;
            st.apply("t", 9, T_MODSEQ_UPDATE, &le(&[1, 40, 0, 2, 9, 0]), 5)
                .unwrap();
            assert_eq!((st.records[0].modseq, st.records[1].modseq), (40, 50));
            assert!(st.apply("t", 9, T_MODSEQ_UPDATE, &le(&[1, 2]), 5).is_err());
        }

        #[test]
        fn ignored_kinds_pass_and_unknown_kinds_fail() {
            for t in [
                T_INDEX_DELETED,
                T_INDEX_UNDELETED,
                T_BOUNDARY,
                T_ATTRIBUTE_UPDATE,
            ] {
                assert!(state(&[(t, vec![1, 2, 3])]).is_ok(), "{t:#x}");
            }
            assert!(state(&[(0x40_0000, vec![])]).is_err());
        }
    }
}
