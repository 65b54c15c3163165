//! Debian version numbers and their order, as dpkg defines it
//! (deb-version(7)): `[epoch:]upstream[-revision]`.
//!
//! - The epoch is a number (absent = 0) and decides first.
//! - The revision is what follows the *last* hyphen (absent = empty, which
//!   sorts as `0` would); the upstream part is everything between.
//! - Upstream and revision are compared with the same rule: alternately a
//!   run of non-digits, compared character by character where `~` sorts
//!   before everything (even the end of the string), then the end, then
//!   letters, then every other character (in ASCII order within each
//!   class); and a run of digits, compared as a number (leading zeros do
//!   not count; an absent run is 0).
//!
//! Hence `1.0~rc1 < 1.0 < 1.0a < 1.0+b1` (a tilde before the end, letters
//! before other characters) and `1.01 = 1.1`; the table in
//! `tests/version.rs` holds the tricky cases.

use std::cmp::Ordering;

use crate::DpkgError;

/// A parsed Debian version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version<'a> {
    pub epoch: u64,
    pub upstream: &'a str,
    pub revision: &'a str,
}

impl<'a> Version<'a> {
    /// Parses `text`, refusing only what dpkg itself refuses (its hard
    /// errors): an empty version, whitespace inside it, an epoch that is
    /// empty, not a number or above `i32::MAX`, nothing after the epoch's
    /// `:`, an empty upstream part, an empty revision after the last `-`.
    ///
    /// What dpkg only warns about is accepted, because dpkg reads its own
    /// status database leniently and an installed package can carry it: an
    /// upstream part not starting with a digit, characters outside
    /// `[A-Za-z0-9.+~:-]` (upstream) or `[A-Za-z0-9.+~]` (revision), a
    /// second `:` (`1:2:3` is epoch 1, upstream `2:3`). The order below
    /// handles any bytes the way dpkg's does.
    pub fn parse(text: &'a str) -> Result<Self, DpkgError> {
        let bad = |why: &str| DpkgError::BadVersion {
            version: text.to_string(),
            why: why.to_string(),
        };
        if text.is_empty() {
            return Err(bad("the version is empty"));
        }
        if text.contains(|c: char| c.is_ascii_whitespace()) {
            return Err(bad("the version has embedded spaces"));
        }
        let (epoch, rest) = match text.split_once(':') {
            Some(("", _)) => return Err(bad("the epoch is empty")),
            Some((e, rest)) => {
                if !e.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad("the epoch is not a number"));
                }
                let epoch = e
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n <= MAX_EPOCH)
                    .ok_or_else(|| bad("the epoch is too large"))?;
                if rest.is_empty() {
                    return Err(bad("nothing follows the epoch"));
                }
                (epoch, rest)
            }
            None => (0, text),
        };
        let (upstream, revision) = match rest.rsplit_once('-') {
            Some((_, "")) => return Err(bad("the revision after the last '-' is empty")),
            Some((u, r)) => (u, r),
            None => (rest, ""),
        };
        if upstream.is_empty() {
            return Err(bad("the upstream version is empty"));
        }
        Ok(Version {
            epoch,
            upstream,
            revision,
        })
    }
}

/// The largest epoch dpkg accepts (it stores it in a C `int`).
const MAX_EPOCH: u64 = i32::MAX as u64;

impl Ord for Version<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.epoch
            .cmp(&other.epoch)
            .then_with(|| compare_part(self.upstream, other.upstream))
            .then_with(|| compare_part(self.revision, other.revision))
    }
}

impl PartialOrd for Version<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Compares two version texts; both must parse.
pub fn compare(a: &str, b: &str) -> Result<Ordering, DpkgError> {
    Ok(Version::parse(a)?.cmp(&Version::parse(b)?))
}

/// Weight of one character of a non-digit run; `None` = the run ended.
fn weight(c: Option<u8>) -> i32 {
    match c {
        Some(b'~') => -1,
        None => 0,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(c) => i32::from(c) + 256,
    }
}

/// dpkg's comparison of an upstream version or a revision.
fn compare_part(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    while !a.is_empty() || !b.is_empty() {
        // Non-digit run: character by character until both reach a digit.
        while a.first().is_some_and(|c| !c.is_ascii_digit())
            || b.first().is_some_and(|c| !c.is_ascii_digit())
        {
            let (wa, wb) = (weight(a.first().copied()), weight(b.first().copied()));
            if wa != wb {
                return wa.cmp(&wb);
            }
            a = &a[1..];
            b = &b[1..];
        }
        // Digit run: as numbers, without parsing (no overflow).
        let (da, ra) = split_digits(a);
        let (db, rb) = split_digits(b);
        let ord = da.len().cmp(&db.len()).then_with(|| da.cmp(db));
        if ord != Ordering::Equal {
            return ord;
        }
        a = ra;
        b = rb;
    }
    Ordering::Equal
}

/// The leading digits of `s` without leading zeros, and the rest.
fn split_digits(s: &[u8]) -> (&[u8], &[u8]) {
    let end = s
        .iter()
        .position(|c| !c.is_ascii_digit())
        .unwrap_or(s.len());
    let (digits, rest) = s.split_at(end);
    let zeros = digits.iter().take_while(|&&c| c == b'0').count();
    (&digits[zeros..], rest)
}
