//! UIDs and modseqs after a restore: what IMAP clients may already hold.
//!
//! A client caches a mailbox under its UIDVALIDITY: the UIDs it has seen (a UID is never
//! given to another message under one UIDVALIDITY) and, with CONDSTORE/QRESYNC (RFC
//! 7162), the HIGHESTMODSEQ it has seen, asking later only for changes above it. A restore
//! that keeps the UIDVALIDITY must therefore never hand out a UID or a modseq a client may
//! hold: an older state put back with its own UIDNEXT lets the next delivery take a UID a
//! client knows as another message, and with its own HIGHESTMODSEQ hides every change from
//! clients that saw more.
//!
//! [`apply`] decides per restored mailbox, from what is known to be newer than the archived
//! state: the live mailbox the restore writes into (empty, as exact mode requires, but its
//! UIDNEXT and HIGHESTMODSEQ are what clients last saw), else the newest state of the
//! mailbox in the chain given. With the live mailbox to go by, UIDNEXT and HIGHESTMODSEQ
//! become at least its own. Without it nothing tells what clients saw after the newest
//! archive, and [`Continuity::Margin`] raises UIDNEXT by the margin and HIGHESTMODSEQ by ten
//! times as much (a message can change many times); [`Continuity::NewUidvalidity`] instead
//! gives the mailbox a new UIDVALIDITY, after which clients drop what they cached. Whenever
//! the restored state may differ from what a client saw, every restored message gets the
//! new HIGHESTMODSEQ as its MODSEQ, so that a QRESYNC client fetches the flags of all of
//! them, and learns of every UID that is gone (Dovecot's log of the restored mailbox starts
//! above any modseq the client holds). The choice of the default and why is in README.md
//! ("UIDs and modseqs after a restore"). Pure: no I/O.

use crate::model::{MailboxMeta, MailboxStatus, MessageMeta};

/// UIDNEXT margin of [`Continuity::default`].
pub const DEFAULT_UID_MARGIN: u32 = 100_000;
/// HIGHESTMODSEQ goes up by this many times the UIDNEXT margin.
pub(crate) const MODSEQ_MARGIN_FACTOR: u64 = 10;

/// How an exact restore keeps clear of what clients may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Continuity {
    /// Keep the UIDVALIDITY; UIDNEXT and HIGHESTMODSEQ at least what is known, and, when
    /// no live mailbox tells what clients saw, raised by this margin (0: the archive, or
    /// the chain's newest state, is the last any client saw).
    Margin(u32),
    /// A new UIDVALIDITY from the mail root's counter; UIDs and modseqs as archived.
    NewUidvalidity,
}

impl Default for Continuity {
    fn default() -> Self {
        Continuity::Margin(DEFAULT_UID_MARGIN)
    }
}

/// What [`apply`] did to a mailbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// UIDNEXT, HIGHESTMODSEQ and MODSEQs as archived.
    Archived,
    /// Raised: the new UIDNEXT and HIGHESTMODSEQ (every message has that MODSEQ).
    Raised {
        /// UIDNEXT written.
        uidnext: u32,
        /// HIGHESTMODSEQ written, and every message's MODSEQ.
        highest_modseq: u64,
    },
    /// UIDVALIDITY left to the writer (the root's counter); the rest as archived.
    NewUidvalidity,
}

/// Set `meta`'s UIDNEXT and HIGHESTMODSEQ and the `messages`' MODSEQs for an exact restore
/// under `policy`, given the live mailbox the restore writes into and the newest state of
/// the mailbox in the chain (each used only under the same UIDVALIDITY). A UIDNEXT the
/// margin would push past the UID space takes a new UIDVALIDITY instead.
pub fn apply(
    policy: Continuity,
    meta: &mut MailboxMeta,
    messages: &mut [MessageMeta],
    live: Option<MailboxStatus>,
    newest: Option<MailboxStatus>,
) -> Outcome {
    let margin = match policy {
        Continuity::NewUidvalidity => return new_uidvalidity(meta),
        Continuity::Margin(m) => m,
    };
    let same = |k: &MailboxStatus| k.uidvalidity == meta.uidvalidity && meta.uidvalidity != 0;
    let live = live.filter(same);
    let newest = newest.filter(same);
    let archived = meta
        .highest_modseq
        .into_iter()
        .chain(messages.iter().filter_map(|m| m.modseq))
        .max();
    // The live mailbox is what clients last saw; a chain's newest state is only what the
    // last backup saw.
    let (floor, margin) = match live {
        Some(l) => (Some(l), 0),
        None => (newest, margin),
    };
    let newer = floor.is_some_and(|f| {
        live.is_some()
            || f.uidnext > meta.uidnext
            || f.highest_modseq.unwrap_or(0) > archived.unwrap_or(0)
    });
    if margin == 0 && !newer {
        return Outcome::Archived;
    }
    let floor_next = floor.map_or(0, |f| f.uidnext);
    let next = meta.uidnext.max(floor_next).checked_add(margin);
    let Some(uidnext) = next.filter(|&u| u < u32::MAX) else {
        return new_uidvalidity(meta);
    };
    let known = archived
        .unwrap_or(0)
        .max(floor.and_then(|f| f.highest_modseq).unwrap_or(0));
    let step = (u64::from(margin) * MODSEQ_MARGIN_FACTOR).max(1);
    let highest = known.saturating_add(step);
    meta.uidnext = uidnext;
    meta.highest_modseq = Some(highest);
    for m in messages.iter_mut() {
        m.modseq = Some(highest);
    }
    Outcome::Raised {
        uidnext,
        highest_modseq: highest,
    }
}

fn new_uidvalidity(meta: &mut MailboxMeta) -> Outcome {
    meta.uidvalidity = 0;
    Outcome::NewUidvalidity
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Flags, Name, Timestamp, Uid};

    fn meta(uidnext: u32, h: Option<u64>) -> MailboxMeta {
        MailboxMeta {
            name: Name::from("INBOX"),
            guid: None,
            uidvalidity: 7,
            uidnext,
            highest_modseq: h,
            keywords: Vec::new(),
            attributes: Vec::new(),
            owner: None,
            uidlist_header_ext: Vec::new(),
        }
    }

    fn msg(uid: u32, modseq: Option<u64>) -> MessageMeta {
        let json = serde_json::json!({
            "uid": uid, "guid": "g", "flags": [], "received": {"secs": 1},
            "size_physical": 1, "content": {"sha256": "", "size": 1}
        });
        let mut m: MessageMeta = serde_json::from_value(json).expect("message meta");
        m.modseq = modseq;
        m.uid = Uid(uid);
        m.flags = Flags::empty();
        m.received = Timestamp { secs: 1, nanos: 0 };
        m
    }

    fn known(uidvalidity: u32, uidnext: u32, h: u64) -> Option<MailboxStatus> {
        Some(MailboxStatus {
            uidvalidity,
            uidnext,
            highest_modseq: Some(h),
        })
    }

    #[test]
    fn margin_zero_and_nothing_newer_keeps_the_archive() {
        let mut m = meta(10, Some(50));
        let mut msgs = vec![msg(1, Some(20)), msg(9, Some(50))];
        let o = apply(Continuity::Margin(0), &mut m, &mut msgs, None, None);
        assert_eq!(o, Outcome::Archived);
        assert_eq!((m.uidnext, m.highest_modseq), (10, Some(50)));
        assert_eq!(msgs[0].modseq, Some(20));
        // The chain's newest state equal to the archive's: still exact.
        let o = apply(
            Continuity::Margin(0),
            &mut m,
            &mut msgs,
            None,
            known(7, 10, 50),
        );
        assert_eq!(o, Outcome::Archived);
    }

    #[test]
    fn newer_state_or_margin_raises_everything() {
        let mut m = meta(10, Some(50));
        let mut msgs = vec![msg(1, Some(20)), msg(9, Some(50))];
        let o = apply(
            Continuity::Margin(5),
            &mut m,
            &mut msgs,
            None,
            known(7, 30, 200),
        );
        assert_eq!(
            o,
            Outcome::Raised {
                uidnext: 35,
                highest_modseq: 250
            }
        );
        assert!(msgs.iter().all(|x| x.modseq == Some(250)));
        // An empty live mailbox: its values, plus one modseq, no margin.
        let mut m = meta(10, Some(50));
        let o = apply(
            Continuity::Margin(5),
            &mut m,
            &mut msgs,
            known(7, 80, 300),
            known(7, 30, 200),
        );
        assert_eq!(
            o,
            Outcome::Raised {
                uidnext: 80,
                highest_modseq: 301
            }
        );
        // Another UIDVALIDITY tells nothing about this one's UIDs.
        let mut m = meta(10, None);
        let o = apply(
            Continuity::Margin(0),
            &mut m,
            &mut msgs,
            known(8, 80, 300),
            known(9, 30, 200),
        );
        assert_eq!(o, Outcome::Archived);
    }

    #[test]
    fn new_uidvalidity_on_request_or_when_uids_run_out() {
        let mut m = meta(10, Some(50));
        let mut msgs = vec![msg(1, Some(20))];
        let o = apply(Continuity::NewUidvalidity, &mut m, &mut msgs, None, None);
        assert_eq!(
            (o, m.uidvalidity, m.uidnext),
            (Outcome::NewUidvalidity, 0, 10)
        );
        let mut m = meta(u32::MAX - 3, Some(50));
        let o = apply(Continuity::Margin(100), &mut m, &mut msgs, None, None);
        assert_eq!((o, m.uidvalidity), (Outcome::NewUidvalidity, 0));
    }
}
