//! The signed payload of a sigstore signature ("simple signing" JSON):
//!
//! ```json
//! {"critical": {"identity": {"docker-reference": "registry/repo:tag"},
//!               "image": {"docker-manifest-digest": "sha256:…"},
//!               "type": "cosign container image signature"},
//!  "optional": {"creator": "…", "timestamp": 1700000000}}
//! ```
//!
//! Parsed only after the signature over its bytes has been verified, and
//! strictly: `critical` and its objects have exactly these keys, the top
//! level exactly `critical` and `optional` (which may be `null`), no key
//! twice anywhere, nothing after the object. In `optional` only the types
//! of `creator` and `timestamp` are checked; other keys are free-form
//! annotations (cosign's `-a`).

use serde::Deserialize;

use super::strict_json::{self, Shape};

/// Objects, never arrays, where the payload has structs.
const PAYLOAD_SHAPE: Shape = Shape::Obj(&[
    (
        "critical",
        Shape::Obj(&[("image", Shape::Obj(&[])), ("identity", Shape::Obj(&[]))]),
    ),
    ("optional", Shape::ObjOrNull),
]);

/// The payload type sigstore signatures of container images carry.
pub(crate) const PAYLOAD_TYPE: &str = "cosign container image signature";

/// What a verified payload says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Payload {
    /// The docker reference the signer signed, as written.
    pub(crate) docker_reference: String,
    /// `sha256:<hex>` (or another algorithm) of the signed manifest.
    pub(crate) manifest_digest: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPayload {
    critical: Critical,
    // A missing `optional` is an error (a `deserialize_with` field has no
    // default), `null` is not.
    #[serde(deserialize_with = "optional_part")]
    #[allow(dead_code)] // checked for shape only
    optional: Option<Optional>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Critical {
    #[serde(rename = "type")]
    kind: String,
    image: Image,
    identity: Identity,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Image {
    #[serde(rename = "docker-manifest-digest")]
    digest: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Identity {
    #[serde(rename = "docker-reference")]
    reference: String,
}

#[derive(Deserialize)]
#[allow(dead_code)] // checked for shape only
struct Optional {
    creator: Option<String>,
    timestamp: Option<i64>,
}

fn optional_part<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Optional>, D::Error> {
    Option::<Optional>::deserialize(d)
}

/// Parses a payload whose signature has been verified. `Err` says what is
/// wrong, in words.
pub(crate) fn parse(bytes: &[u8]) -> Result<Payload, String> {
    let value: serde_json::Value = strict_json::from_slice(bytes).map_err(|e| e.to_string())?;
    strict_json::objects_where_structs_are(&value, "payload", &PAYLOAD_SHAPE)?;
    let raw: RawPayload = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if raw.critical.kind != PAYLOAD_TYPE {
        return Err(format!(
            "type is \"{}\", not \"{PAYLOAD_TYPE}\"",
            raw.critical.kind
        ));
    }
    let digest = raw.critical.image.digest;
    if !is_digest(&digest) {
        return Err(format!(
            "docker-manifest-digest \"{digest}\" is not a digest"
        ));
    }
    Ok(Payload {
        docker_reference: raw.critical.identity.reference,
        manifest_digest: digest,
    })
}

/// `sha256:` + 64 or `sha512:` + 128 lowercase hex digits.
fn is_digest(s: &str) -> bool {
    let hex_ok = |h: &str, n: usize| {
        h.len() == n
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    match s.split_once(':') {
        Some(("sha256", h)) => hex_ok(h, 64),
        Some(("sha512", h)) => hex_ok(h, 128),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn doc(critical_extra: &str, top_extra: &str, optional: &str) -> String {
        format!(
            r#"{{"critical":{{"identity":{{"docker-reference":"localhost:5000/os:v2"}},"image":{{"docker-manifest-digest":"{D}"}},"type":"{PAYLOAD_TYPE}"{critical_extra}}}{optional}{top_extra}}}"#
        )
    }

    #[test]
    fn well_formed_payloads_parse() {
        let want = Payload {
            docker_reference: "localhost:5000/os:v2".into(),
            manifest_digest: D.into(),
        };
        for optional in [
            r#","optional":null"#,
            r#","optional":{}"#,
            r#","optional":{"creator":"containers/image 5.30","timestamp":1700000000}"#,
            r#","optional":{"anything":{"goes":["here"]}}"#,
        ] {
            assert_eq!(
                parse(doc("", "", optional).as_bytes()),
                Ok(want.clone()),
                "{optional}"
            );
        }
    }

    #[test]
    fn anything_else_is_refused_with_its_reason() {
        let opt = r#","optional":null"#;
        let cases: Vec<(String, &str)> = vec![
            (doc("", "", ""), "missing field `optional`"),
            (doc("", r#","extra":1"#, opt), "unknown field `extra`"),
            (doc(r#","extra":1"#, "", opt), "unknown field `extra`"),
            (
                doc("", "", r#","optional":{"timestamp":1.5}"#),
                "invalid type: floating point",
            ),
            (
                doc("", "", r#","optional":{"creator":7}"#),
                "invalid type: integer",
            ),
            (
                doc("", "", r#","optional":null,"optional":null"#),
                "duplicate key \"optional\"",
            ),
            (
                doc("", "", opt).replace(PAYLOAD_TYPE, "atomic container signature"),
                "type is \"atomic container signature\"",
            ),
            (
                doc("", "", opt).replace(D, "sha256:abc"),
                "docker-manifest-digest \"sha256:abc\" is not a digest",
            ),
            (
                doc("", "", opt).replace(D, &D.to_uppercase()),
                "docker-manifest-digest",
            ),
            (
                doc("", "", opt).replace(
                    r#""docker-reference""#,
                    r#""docker-reference":"x","docker-reference""#,
                ),
                "duplicate key \"docker-reference\"",
            ),
            (
                format!("{} ", doc("", "", opt)) + "{}",
                "trailing characters",
            ),
            ("[]".to_string(), "payload must be an object"),
            (
                doc("", "", opt)
                    .replace(r#"{"docker-manifest-digest":"#, r#"["#)
                    .replace(r#""},"type""#, r#""],"type""#),
                "payload.critical.image must be an object",
            ),
            (
                doc("", "", r#","optional":["x",1]"#),
                "payload.optional must be an object or null",
            ),
        ];
        for (text, want) in cases {
            let err = parse(text.as_bytes()).expect_err(&text);
            assert!(
                err.starts_with(want),
                "{text}\n  error {err:?}\n  wanted {want:?}"
            );
        }
    }
}
