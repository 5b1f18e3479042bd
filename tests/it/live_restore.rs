//! Restore into live mailboxes (issue #5): merge and side-folder modes, selections,
//! restore lists, export. Real Dovecot throughout.

use crate::dovecot::Dovecot;
use crate::util::Workspace;

#[test]
fn zz_explore() {
    let ws = Workspace::new();
    let src = Dovecot::new(&ws.join("src"), "");
    src.build_rich_store("alice");
    let p = ws.keep();
    println!("KEPT {}", p.display());
}
