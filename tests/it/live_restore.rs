//! Restore into live mailboxes (issue #5): merge and side-folder modes, selections,
//! restore lists, export. Real Dovecot throughout.
