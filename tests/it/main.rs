//! Integration tests: they run the real `maildump` binary, and real Dovecot (`doveadm`) for
//! store fidelity. A missing `doveadm` fails the Dovecot tests; nothing is skipped.
#![allow(missing_docs, clippy::unwrap_used)]

mod amanda;
mod bacula;
mod cli;
mod corrupt;
mod d24;
mod dbox;
mod dovecot;
mod dovecot24;
mod estimate;
mod fidelity;
mod format_vectors;
mod fuzz;
mod hostile;
mod imap;
mod incremental;
mod invariants;
mod leftovers;
mod live_backup;
mod live_restore;
mod planted;
mod savedate;
mod selfcheck;
mod skips;
mod untrusted;
mod userdb;
mod util;
mod vanish;
