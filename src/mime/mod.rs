//! Message structure shared by the stores and the archive format: RFC 2047 header
//! decoding for catalogs ([`headers`]) and the MIME part layout of messages whose
//! attachments are stored apart ([`parts`]), and finding the base64 attachments of a
//! message read whole ([`split`]). It imports neither [`crate::store`] nor
//! [`crate::format`].

pub mod headers;
pub mod parts;
pub(crate) mod split;
