//! Bounds on what one image source may cost: memory caps on everything read
//! whole, and how often a failed registry request is tried again.
//!
//! Blobs are streamed and bounded by their descriptors; what is left is
//! read into memory as a whole: manifests and indexes, token answers and
//! error bodies. A registry decides how long those are, so each has a cap
//! far above what a real registry sends and far below what hurts a machine.
//! A response over its cap is refused with a one-line error naming the
//! registry, the thing fetched and the cap; it is never read further.

/// Manifests and indexes. The distribution spec lets registries refuse
/// manifests over 4 MiB, and distribution itself does (its `maxManifestBodySize`
/// is 4 MiB), so no pushable manifest is bigger.
pub const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;

/// The manifest under a `sha256-<hex>.sig` tag. Each signature adds one
/// layer descriptor of a few hundred bytes (a few KiB with cosign's bundle
/// annotations), so 1 MiB holds hundreds of signatures.
pub const MAX_SIGNATURE_MANIFEST_BYTES: u64 = 1024 * 1024;

/// One signature payload (the simple-signing JSON): a few hundred bytes,
/// more with cosign's `-a` annotations. Checked against the descriptor
/// before the download starts.
pub const MAX_SIGNATURE_PAYLOAD_BYTES: u64 = 64 * 1024;

/// Signatures examined for one image. Each costs a blob download and a
/// verification; a real image has one or a few.
pub const MAX_SIGNATURES: usize = 64;

/// A token service's answer (`{"token": …, "expires_in": …}`). Tokens are
/// JWTs of a few KiB even with long scope lists; 1 MiB is a wide margin.
pub const MAX_TOKEN_RESPONSE_BYTES: u64 = 1024 * 1024;

/// The body of an error answer. Only its first error message is shown; the
/// distribution error envelopes are a few hundred bytes.
pub const MAX_ERROR_BODY_BYTES: u64 = 64 * 1024;

/// How many times one idempotent registry GET is sent at most, counting the
/// first try, when it fails in a way a retry can fix: HTTP 408, 429, 500,
/// 502, 503, 504, or a connection that fails or drops. Few, because a
/// registry that fails four times in a row is down, not flaky.
pub const RETRY_ATTEMPTS: u32 = 4;

/// The pause before the first retry; it doubles for each further one
/// (0.2 s, 0.4 s, 0.8 s). Short, so a single hiccup costs a fraction of a
/// second; a registry's `Retry-After` (in seconds) is honoured up to
/// [`RETRY_MAX_DELAY`].
pub const RETRY_FIRST_DELAY: std::time::Duration = std::time::Duration::from_millis(200);

/// The longest pause between two attempts, whatever `Retry-After` asks for.
pub const RETRY_MAX_DELAY: std::time::Duration = std::time::Duration::from_secs(10);

/// How many times one blob download may be interrupted and resumed (with a
/// `Range` request from the first byte not yet received) before the pull
/// fails. Each resumption only asks for what is missing, and the digest is
/// still checked over the whole blob.
pub const MAX_BLOB_RESUMES: u32 = 5;

/// The pause before attempt `attempt + 1` (attempts count from 1).
pub fn retry_delay(attempt: u32, retry_after: Option<std::time::Duration>) -> std::time::Duration {
    let doubled = RETRY_FIRST_DELAY.saturating_mul(1 << attempt.saturating_sub(1).min(16));
    retry_after.unwrap_or(doubled).min(RETRY_MAX_DELAY)
}

/// `4194304` → `4 MiB`, `1536` → `1.5 KiB`: sizes in limit messages.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["bytes", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} bytes")
    } else if value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_and_are_capped() {
        use std::time::Duration;
        let ms = |n| Duration::from_millis(n);
        assert_eq!(retry_delay(1, None), ms(200));
        assert_eq!(retry_delay(2, None), ms(400));
        assert_eq!(retry_delay(3, None), ms(800));
        assert_eq!(retry_delay(40, None), RETRY_MAX_DELAY);
        assert_eq!(retry_delay(1, Some(ms(0))), ms(0));
        assert_eq!(
            retry_delay(1, Some(Duration::from_secs(3600))),
            RETRY_MAX_DELAY
        );
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        for (bytes, text) in [
            (0, "0 bytes"),
            (1023, "1023 bytes"),
            (1536, "1.5 KiB"),
            (MAX_ERROR_BODY_BYTES, "64 KiB"),
            (MAX_TOKEN_RESPONSE_BYTES, "1 MiB"),
            (MAX_MANIFEST_BYTES, "4 MiB"),
            (3 * 1024 * 1024 * 1024, "3 GiB"),
        ] {
            assert_eq!(human_size(bytes), text);
        }
    }
}
