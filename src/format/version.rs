//! The format version, stored three times (HEADER, FOOTER, manifest; spec 8.1), and what a
//! reader does when the copies disagree (spec 6.1).
//!
//! The copies MUST agree, so a disagreement is damage (one flipped bit in a version
//! field), not a newer format: the version two copies agree on is taken, and the odd one is
//! named as damage. Only copies that agree on a major this build does not read make the
//! archive unsupported.

use super::spec::{
    FOOTER_FRAME_LEN, FOOTER_FRAME_MAGIC, FOOTER_MAGIC, FORMAT_MAJOR, HEADER_FRAME_MAGIC,
    HEADER_MAGIC, HEADER_PAYLOAD_LEN, SKIPPABLE_HEADER_LEN,
};
use crate::error::{Error, Result};

/// A format version: (major, minor).
pub type Version = (u16, u16);

fn at(b: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([b[i], b[i + 1]])
}

/// The version in the HEADER frame (the first 24 bytes of the file), whatever its major.
///
/// # Errors
/// [`Error::Corrupt`] when `first` is not a maildump HEADER.
pub(crate) fn header_version(first: &[u8]) -> Result<Version> {
    let hl = SKIPPABLE_HEADER_LEN + HEADER_PAYLOAD_LEN;
    let magic = first
        .get(..4)
        .map(|m| u32::from_le_bytes([m[0], m[1], m[2], m[3]]));
    if first.len() < hl || magic != Some(HEADER_FRAME_MAGIC) || &first[8..16] != HEADER_MAGIC {
        return Err(Error::corrupt(
            "offset 0",
            "not a maildump archive (no MAILDUMP header frame)",
        ));
    }
    Ok((at(first, 16), at(first, 18)))
}

/// The version in a FOOTER frame (the last 72 bytes of the file), when it is one.
pub(crate) fn footer_version(foot: &[u8]) -> Option<Version> {
    let magic = foot
        .get(..4)
        .map(|m| u32::from_le_bytes([m[0], m[1], m[2], m[3]]));
    (foot.len() == FOOTER_FRAME_LEN
        && magic == Some(FOOTER_FRAME_MAGIC)
        && &foot[8..16] == FOOTER_MAGIC)
        .then(|| (at(foot, 16), at(foot, 18)))
}

fn unsupported((major, minor): Version) -> Error {
    Error::UnsupportedVersion {
        major,
        minor,
        supported: FORMAT_MAJOR,
    }
}

/// Before reading further: HEADER and FOOTER agreeing on a major this build does not read
/// make the archive unsupported (spec 6.1: read no further).
///
/// # Errors
/// [`Error::UnsupportedVersion`].
pub(crate) fn check_early(header: Version, footer: Option<Version>) -> Result<()> {
    match footer {
        Some(f) if f == header && header.0 != FORMAT_MAJOR => Err(unsupported(header)),
        _ => Ok(()),
    }
}

/// The version of an archive from its copies (the FOOTER and the manifest where found),
/// and the damage to name when they disagree.
///
/// # Errors
/// [`Error::UnsupportedVersion`] when the agreeing copies name a major this build does not
/// read; [`Error::Corrupt`] when no two of three copies agree.
pub fn decide(
    header: Version,
    footer: Option<Version>,
    manifest: Option<Version>,
) -> Result<(Version, Option<String>)> {
    let show = |(a, b): Version| format!("{a}.{b}");
    let (version, damage) = match (footer, manifest) {
        (None, None) => (header, None),
        (Some(f), None) if f == header => (header, None),
        (Some(f), None) => {
            return Err(Error::corrupt(
                "version",
                format!("HEADER says format {}, FOOTER {}", show(header), show(f)),
            ));
        }
        (None, Some(m)) if m == header => (header, None),
        // The manifest is checksummed JSON; the HEADER is two bare bytes.
        (None, Some(m)) => (
            m,
            Some(format!(
                "HEADER says format {}, the manifest {}",
                show(header),
                show(m)
            )),
        ),
        (Some(f), Some(m)) if f == header && m == header => (header, None),
        (Some(f), Some(m)) if f == m => (
            m,
            Some(format!(
                "HEADER says format {}, the FOOTER and the manifest {}",
                show(header),
                show(m)
            )),
        ),
        (Some(f), Some(m)) if m == header => (
            m,
            Some(format!(
                "FOOTER says format {}, the HEADER and the manifest {}",
                show(f),
                show(m)
            )),
        ),
        (Some(f), Some(m)) if f == header => (
            f,
            Some(format!(
                "the manifest says format {}, the HEADER and the FOOTER {}",
                show(m),
                show(f)
            )),
        ),
        (Some(f), Some(m)) => {
            return Err(Error::corrupt(
                "version",
                format!(
                    "HEADER says format {}, FOOTER {}, the manifest {}",
                    show(header),
                    show(f),
                    show(m)
                ),
            ));
        }
    };
    if version.0 != FORMAT_MAJOR {
        return Err(unsupported(version));
    }
    Ok((version, damage.map(|d| format!("version: {d}"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_copies_out_of_three_decide() {
        assert_eq!(
            decide((1, 2), Some((1, 2)), Some((1, 2))).unwrap(),
            ((1, 2), None)
        );
        let (v, d) = decide((3, 2), Some((1, 2)), Some((1, 2))).unwrap();
        assert_eq!(v, (1, 2));
        assert!(d.unwrap().contains("HEADER says format 3.2"));
        let (v, d) = decide((1, 1), Some((1, 1)), Some((1, 3))).unwrap();
        assert_eq!(v, (1, 1));
        assert!(d.unwrap().contains("the manifest says format 1.3"));
        assert!(matches!(
            decide((2, 0), Some((2, 0)), Some((1, 1))),
            Err(Error::UnsupportedVersion { major: 2, .. })
        ));
        assert!(matches!(
            decide((2, 0), Some((3, 0)), Some((1, 1))),
            Err(Error::Corrupt { .. })
        ));
        assert!(check_early((2, 0), Some((2, 0))).is_err());
        assert!(check_early((2, 0), Some((1, 0))).is_ok());
        assert!(check_early((2, 0), None).is_ok());
    }
}
