//! What a restore writes: a fresh, self-contained `dovecot.index` ([`write_index`]) and the
//! `dovecot.index.log` holding only its header that goes with it ([`write_log_header`]).

use super::{
    BASE_HEADER_SIZE, COMPAT_LITTLE_ENDIAN, DEFAULT_BASE, EXT_KEYWORDS, EXT_MODSEQ, FLAG_DELETED,
    FLAG_SEEN, HDR_NEXT_UID, HDR_UID_VALIDITY, MAX_EXT_HDR_SIZE, NewIndex, Result, align_up, bad,
    keywords_hdr, layout_records, put_u32,
};

/// Sequence number of the log written with a new index. Not 1: a log that names no
/// previous log (`prev_file_seq` 0) tells Dovecot to reset the index when it starts
/// reading at its beginning, so the log is written as the successor of a log 1 that the
/// index has read to its end.
const LOG_FILE_SEQ: u32 = 2;
/// Size of a transaction log header as Dovecot 2.3 writes it.
const LOG_HEADER_SIZE: usize = 40;

/// A `dovecot.index.log` holding only its header, to be written with the index
/// [`write_index`] made with the same `indexid`: Dovecot appends to it, and its
/// `initial_modseq` (the index's HIGHESTMODSEQ, at least 1) is where modseqs go on from.
/// Without it Dovecot makes a log of its own whose position the index's `modseq` header
/// does not name, and then sets every message's modseq to the highest.
pub(crate) fn write_log_header(indexid: u32, initial_modseq: u64) -> Vec<u8> {
    let mut v = vec![0u8; LOG_HEADER_SIZE];
    v[0] = 1; // major
    v[1] = 3; // minor
    v[2..4].copy_from_slice(&(LOG_HEADER_SIZE as u16).to_le_bytes());
    put_u32(&mut v, 4, indexid);
    put_u32(&mut v, 8, LOG_FILE_SEQ);
    put_u32(&mut v, 12, LOG_FILE_SEQ - 1); // prev_file_seq
    put_u32(&mut v, 16, LOG_HEADER_SIZE as u32); // prev_file_offset
    put_u32(&mut v, 20, indexid); // create_stamp
    v[24..32].copy_from_slice(&initial_modseq.max(1).to_le_bytes());
    v[32] = COMPAT_LITTLE_ENDIAN;
    v
}

/// Serialize a NewIndex into dovecot.index bytes.
// Writes dovecot.index in file order (validation, base header, extension headers,
// records), mirroring `State::from_index`; split, the layout would no longer read as one.
#[allow(clippy::too_many_lines)]
pub(crate) fn write_index(new: &NewIndex) -> Result<Vec<u8>> {
    const F: &str = DEFAULT_BASE;
    // validate
    let mut prev = 0u32;
    for (i, r) in new.records.iter().enumerate() {
        if r.uid <= prev {
            return Err(bad(
                F,
                format!("record {i}: uid {} not above previous uid {prev}", r.uid),
            ));
        }
        prev = r.uid;
        if r.ext.len() != new.exts.len() {
            return Err(bad(
                F,
                format!(
                    "record uid {}: {} ext entries, expected {}",
                    r.uid,
                    r.ext.len(),
                    new.exts.len()
                ),
            ));
        }
        for (x, d) in new.exts.iter().zip(&r.ext) {
            if d.len() != usize::from(x.record_size) {
                return Err(bad(
                    F,
                    format!(
                        "record uid {}: ext {:?} data is {} bytes, expected {}",
                        r.uid,
                        x.name,
                        d.len(),
                        x.record_size
                    ),
                ));
            }
        }
        if let Some(&k) = r
            .keywords
            .iter()
            .find(|&&k| k as usize >= new.keywords.len())
        {
            return Err(bad(
                F,
                format!("record uid {}: keyword index {k} out of range", r.uid),
            ));
        }
    }
    if new.next_uid <= prev {
        return Err(bad(
            F,
            format!("next_uid {} not above highest uid {prev}", new.next_uid),
        ));
    }
    for (i, k) in new.keywords.iter().enumerate() {
        if k.is_empty() || k.contains(&0) || new.keywords[..i].contains(k) {
            return Err(bad(F, format!("invalid or duplicate keyword {i}")));
        }
    }
    let mut exts: Vec<(String, Vec<u8>, u16, u16, u32)> = Vec::new();
    for (i, x) in new.exts.iter().enumerate() {
        if x.name.is_empty()
            || x.name.len() > usize::from(u16::MAX)
            || x.name == EXT_KEYWORDS
            || new.exts[..i].iter().any(|y| y.name == x.name)
        {
            return Err(bad(
                F,
                format!("invalid or duplicate extension name {:?}", x.name),
            ));
        }
        if x.hdr.len() > MAX_EXT_HDR_SIZE as usize {
            return Err(bad(F, format!("extension {:?} header too large", x.name)));
        }
        let align = if x.record_size == 0 {
            0
        } else {
            x.record_align
        };
        if x.record_size > 0 && (!matches!(align, 1 | 2 | 4 | 8) || x.record_size % align != 0) {
            return Err(bad(
                F,
                format!(
                    "extension {:?}: bad record size/align {}/{}",
                    x.name, x.record_size, x.record_align
                ),
            ));
        }
        exts.push((
            x.name.clone(),
            x.hdr.clone(),
            x.record_size,
            align,
            x.reset_id,
        ));
    }
    let modseq_ext = new.highest_modseq.map(|h| {
        let mut hdr = h.to_le_bytes().to_vec();
        hdr.extend_from_slice(&LOG_FILE_SEQ.to_le_bytes());
        hdr.extend_from_slice(&(LOG_HEADER_SIZE as u32).to_le_bytes());
        exts.push((EXT_MODSEQ.to_string(), hdr, 8, 8, 0));
        (exts.len() - 1, h)
    });
    let kw_size = new.keywords.len().div_ceil(8);
    if !new.keywords.is_empty() {
        let size = u16::try_from(kw_size).map_err(|_| bad(F, "too many keywords"))?;
        exts.push((
            EXT_KEYWORDS.to_string(),
            keywords_hdr(&new.keywords),
            size,
            1,
            0,
        ));
    }
    let items: Vec<(u16, u16)> = exts.iter().map(|x| (x.2, x.3)).collect();
    let mut offs = vec![0u16; items.len()];
    let record_size = layout_records(&items, &mut offs)
        .ok_or_else(|| bad(F, "extension records too large"))? as usize;

    // header
    let mut out = vec![0u8; BASE_HEADER_SIZE];
    for (i, (name, hdr, size, align, reset_id)) in exts.iter().enumerate() {
        let start = out.len();
        out.extend_from_slice(&(hdr.len() as u32).to_le_bytes());
        out.extend_from_slice(&reset_id.to_le_bytes());
        out.extend_from_slice(&offs.get(i).copied().unwrap_or(0).to_le_bytes());
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&align.to_le_bytes());
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.resize(align_up(out.len(), 8).unwrap_or(out.len()), 0);
        out.extend_from_slice(hdr);
        out.resize(align_up(out.len(), 8).unwrap_or(out.len()), 0);
        debug_assert!(out.len() > start);
    }
    let header_size = u32::try_from(out.len()).map_err(|_| bad(F, "header too large"))?;
    let messages = u32::try_from(new.records.len()).map_err(|_| bad(F, "too many records"))?;
    let seen = new
        .records
        .iter()
        .filter(|r| r.flags & FLAG_SEEN != 0)
        .count() as u32;
    let deleted = new
        .records
        .iter()
        .filter(|r| r.flags & FLAG_DELETED != 0)
        .count() as u32;
    let first_unseen = new
        .records
        .iter()
        .find(|r| r.flags & FLAG_SEEN == 0)
        .map_or(new.next_uid, |r| r.uid);
    let first_deleted = new
        .records
        .iter()
        .find(|r| r.flags & FLAG_DELETED != 0)
        .map_or(new.next_uid, |r| r.uid);
    out[0] = 7;
    out[1] = 3;
    out[2..4].copy_from_slice(&(BASE_HEADER_SIZE as u16).to_le_bytes());
    put_u32(&mut out, 4, header_size);
    put_u32(&mut out, 8, record_size as u32);
    out[12] = COMPAT_LITTLE_ENDIAN;
    put_u32(&mut out, 16, new.indexid);
    put_u32(&mut out, HDR_UID_VALIDITY, new.uid_validity);
    put_u32(&mut out, HDR_NEXT_UID, new.next_uid);
    put_u32(&mut out, 32, messages);
    put_u32(&mut out, 40, seen);
    put_u32(&mut out, 44, deleted);
    put_u32(&mut out, 48, new.next_uid); // first_recent_uid: nothing is recent
    put_u32(&mut out, 52, first_unseen);
    put_u32(&mut out, 56, first_deleted);
    // The log written with the index ([`write_log_header`]) holds nothing yet: the index
    // has seen it up to its end.
    put_u32(&mut out, 60, LOG_FILE_SEQ);
    put_u32(&mut out, 64, LOG_HEADER_SIZE as u32); // log_file_tail_offset
    put_u32(&mut out, 68, LOG_HEADER_SIZE as u32); // log_file_head_offset

    // records
    let kw_ext = if new.keywords.is_empty() {
        None
    } else {
        Some(exts.len() - 1)
    };
    out.reserve(record_size.saturating_mul(new.records.len()));
    for r in &new.records {
        let start = out.len();
        out.resize(start + record_size, 0);
        let rec = &mut out[start..];
        rec[..4].copy_from_slice(&r.uid.to_le_bytes());
        rec[4] = r.flags;
        for (i, d) in r.ext.iter().enumerate() {
            let o = usize::from(offs.get(i).copied().unwrap_or(0));
            if let Some(dst) = rec.get_mut(o..o + d.len()) {
                dst.copy_from_slice(d);
            }
        }
        if let Some((m, h)) = modseq_ext {
            let o = usize::from(offs.get(m).copied().unwrap_or(0));
            let v = if r.modseq == 0 { h } else { r.modseq.min(h) };
            if let Some(dst) = rec.get_mut(o..o + 8) {
                dst.copy_from_slice(&v.to_le_bytes());
            }
        }
        if let Some(k) = kw_ext {
            let o = usize::from(offs.get(k).copied().unwrap_or(0));
            for &kw in &r.keywords {
                if let Some(b) = rec.get_mut(o + kw as usize / 8) {
                    *b |= 1 << (kw % 8);
                }
            }
        }
    }
    Ok(out)
}
#[cfg(test)]
pub(super) mod tests {
    use super::super::log::LogHeader;
    use super::super::log::tests::le;
    use super::super::{MailIndex, NewExt, NewRecord, get_u32};
    use super::*;

    pub(in crate::store::dbox::index) fn sample_new() -> NewIndex {
        let mut hdr = vec![0u8; 24];
        hdr[4..20].copy_from_slice(&[7; 16]);
        NewIndex {
            uid_validity: 99,
            next_uid: 20,
            indexid: 777,
            exts: vec![
                NewExt {
                    name: "dbox-hdr".into(),
                    hdr,
                    record_size: 0,
                    record_align: 0,
                    reset_id: 0,
                },
                NewExt {
                    name: "mdbox".into(),
                    hdr: vec![],
                    record_size: 8,
                    record_align: 4,
                    reset_id: 0,
                },
                NewExt {
                    name: "ref".into(),
                    hdr: vec![1, 2, 3],
                    record_size: 2,
                    record_align: 2,
                    reset_id: 0,
                },
            ],
            keywords: (0..9).map(|i| format!("k{i}").into_bytes()).collect(),
            records: (1..6)
                .map(|u| NewRecord {
                    uid: u * 3,
                    flags: (u as u8) & 0x1f,
                    keywords: vec![u % 9, 8],
                    ext: vec![vec![], le(&[u, u * 100]), vec![u as u8, 0]],
                    modseq: u64::from(u) * 10,
                })
                .collect(),
            highest_modseq: None,
        }
    }

    #[test]
    fn written_index_and_log_read_back_with_modseqs() {
        let mut new = sample_new();
        new.highest_modseq = Some(77);
        let idx = write_index(&new).unwrap();
        let log = write_log_header(new.indexid, 77);
        let ix = MailIndex::from_bytes(Some(&idx), Some(&log), None).unwrap();
        assert_eq!(ix.highest_modseq, 77);
        let got: Vec<u64> = ix.records.iter().map(|r| r.modseq).collect();
        assert_eq!(got, [10, 20, 30, 40, 50]);
        assert_eq!(ix.ext_hdr("modseq").map(<[u8]>::len), Some(16));
        // The log continues a log 1 the index read to its end: no reset, nothing to replay.
        let lh = LogHeader::parse("log", &log).unwrap();
        assert_eq!(
            (lh.file_seq, lh.prev_file_seq, lh.prev_file_offset),
            (2, 1, 40)
        );
        assert_eq!((get_u32(&idx, 60), get_u32(&idx, 68)), (Some(2), Some(40)));
        // A record modseq of 0 reads as the highest; none is above it.
        new.records[0].modseq = 0;
        new.records[1].modseq = 500;
        let ix =
            MailIndex::from_bytes(Some(&write_index(&new).unwrap()), Some(&log), None).unwrap();
        assert_eq!((ix.records[0].modseq, ix.records[1].modseq), (77, 77));
    }

    #[test]
    fn write_roundtrip() {
        let new = sample_new();
        let bytes = write_index(&new).unwrap();
        // layout: keywords @5 (2), mdbox @8 (8), ref @16 (2), padded to 4 -> 20
        assert_eq!(get_u32(&bytes, 8), Some(20));
        let ix = MailIndex::from_bytes(Some(&bytes), None, None).unwrap();
        assert_eq!((ix.uid_validity, ix.next_uid, ix.indexid), (99, 20, 777));
        assert_eq!(ix.keywords, new.keywords);
        assert_eq!(ix.ext_hdr("dbox-hdr"), Some(&new.exts[0].hdr[..]));
        assert_eq!(ix.ext_hdr("ref"), Some(&[1u8, 2, 3][..]));
        assert_eq!(ix.exts.last().unwrap().name, "keywords");
        for (r, n) in ix.records.iter().zip(&new.records) {
            assert_eq!((r.uid, r.flags), (n.uid, n.flags));
            let mut k = n.keywords.clone();
            k.sort();
            k.dedup();
            assert_eq!(r.keywords, k);
            assert_eq!(ix.ext_rec(r, "mdbox"), Some(&n.ext[1][..]));
            assert_eq!(ix.ext_rec(r, "ref"), Some(&n.ext[2][..]));
        }
        // seen/deleted counts and first_recent_uid
        let seen = new.records.iter().filter(|r| r.flags & 8 != 0).count() as u32;
        assert_eq!(get_u32(&bytes, 40), Some(seen));
        assert_eq!(get_u32(&bytes, 48), Some(20));
        assert_eq!(get_u32(&bytes, 60), Some(2));
        assert_eq!(bytes[12], 1);

        // errors
        let mut bad_order = sample_new();
        bad_order.records.swap(0, 1);
        assert!(write_index(&bad_order).is_err());
        let mut bad_len = sample_new();
        bad_len.records[0].ext[1].pop();
        assert!(write_index(&bad_len).is_err());
        let mut bad_next = sample_new();
        bad_next.next_uid = 15;
        assert!(write_index(&bad_next).is_err());
        let mut bad_kw = sample_new();
        bad_kw.records[0].keywords.push(9);
        assert!(write_index(&bad_kw).is_err());
    }
}
