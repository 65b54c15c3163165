//! Telling "the store could not be written" apart from everything else.
//!
//! composefs-rs reports failures as anyhow chains; an `ENOSPC` deep inside a
//! layer import used to surface as "not a valid tar stream: No space left on
//! device". Any chain that carries one of [`WRITE_ERRNOS`] becomes
//! [`StoreError::Write`], which says where it failed and keeps the
//! `io::Error` as its source so callers can match on the errno.

use std::path::Path;

use rustix::io::Errno;

use crate::StoreError;

/// Errnos that mean the store's filesystem refused a write. Read-side and
/// network failures (`ECONNRESET`, a digest mismatch, `EACCES` on a source
/// file) are not among them and keep their own messages.
const WRITE_ERRNOS: [Errno; 5] = [
    Errno::NOSPC,
    Errno::DQUOT,
    Errno::ROFS,
    Errno::IO,
    Errno::FBIG,
];

/// The first write-side errno in `e`'s chain, as an `io::Error`.
pub(crate) fn write_errno(e: &anyhow::Error) -> Option<std::io::Error> {
    e.chain().find_map(|cause| {
        let errno = if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            Errno::from_io_error(io)?
        } else {
            *cause.downcast_ref::<Errno>()?
        };
        WRITE_ERRNOS
            .contains(&errno)
            .then(|| std::io::Error::from(errno))
    })
}

/// A failed write to the store at `path`, while doing `what`.
pub(crate) fn write_error(path: &Path, what: &str, source: std::io::Error) -> StoreError {
    StoreError::Write {
        what: what.to_string(),
        path: path.to_path_buf(),
        source,
    }
}

/// For composefs-rs calls that only write: a write-side errno becomes
/// [`StoreError::Write`], anything else [`StoreError::Repo`].
pub(crate) fn repo_write_error(path: &Path, what: &str, e: anyhow::Error) -> StoreError {
    match write_errno(&e) {
        Some(io) => write_error(path, what, io),
        None => StoreError::Repo(format!("{what}: {e:#}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_write_errnos_in_chains() {
        let cases: [(anyhow::Error, Option<i32>); 4] = [
            (
                anyhow::Error::from(Errno::NOSPC).context("writing object"),
                Some(libc_errno(Errno::NOSPC)),
            ),
            (
                anyhow::Error::from(std::io::Error::from(Errno::ROFS)).context("x"),
                Some(libc_errno(Errno::ROFS)),
            ),
            (
                anyhow::Error::from(Errno::CONNRESET).context("reading blob"),
                None,
            ),
            (anyhow::anyhow!("Repository is not writable"), None),
        ];
        for (e, want) in cases {
            assert_eq!(
                write_errno(&e).and_then(|io| io.raw_os_error()),
                want,
                "{e:#}"
            );
        }
    }

    fn libc_errno(e: Errno) -> i32 {
        e.raw_os_error()
    }
}
