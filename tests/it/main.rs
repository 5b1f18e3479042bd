//! Integration tests: they run the real `maildump` binary, and real Dovecot (`doveadm`) for
//! store fidelity. A missing `doveadm` fails the Dovecot tests; nothing is skipped.
#![allow(missing_docs, clippy::unwrap_used)]
// A scenario test reads top to bottom (make a store, back up, change it, restore, check
// with Dovecot); split into helpers, the scenario would no longer be visible in one place.
#![allow(clippy::too_many_lines)]

mod amanda;
mod bacula;
mod cli;
mod corrupt;
mod crypt;
mod d24;
mod dbox;
mod dovecot;
mod dovecot24;
mod estimate;
mod fast_restore;
mod fidelity;
mod format_vectors;
mod fuzz;
mod garage;
mod hostile;
mod imap;
mod incremental;
mod invariants;
mod layers;
mod leftovers;
mod live_backup;
mod live_restore;
mod parts;
mod planted;
mod pointread;
mod s3;
mod savedate;
mod selfcheck;
mod shard;
mod skips;
mod ui;
mod untrusted;
mod userdb;
mod util;
mod vanish;
