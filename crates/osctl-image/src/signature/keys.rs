//! Public keys a policy trusts: PEM `PUBLIC KEY` (SubjectPublicKeyInfo)
//! blocks, the form `skopeo generate-sigstore-key` and `cosign
//! generate-key-pair` write, turned into `ring` verifiers.
//!
//! Model: the SPKI is taken apart by hand (two DER headers and a BIT
//! STRING) and its algorithm identifier compared with the constants
//! `rustls-pki-types` ships, rather than pulling in an ASN.1 crate: the
//! shapes accepted are few and fixed, and everything else is refused by
//! name. The hash is always SHA-256, as sigstore signs: ECDSA P-256 (what
//! skopeo generates) and P-384 with DER signatures, Ed25519, and RSA
//! PKCS#1 v1.5 (2048 to 8192 bits).

use ring::signature::{self as sig, UnparsedPublicKey, VerificationAlgorithm};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{SubjectPublicKeyInfoDer, alg_id};

use crate::verify::sha256_digest;

const DER_SEQUENCE: u8 = 0x30;
const DER_BIT_STRING: u8 = 0x03;
const DER_INTEGER: u8 = 0x02;
/// SEC1's first byte of an uncompressed EC point.
const SEC1_UNCOMPRESSED: u8 = 0x04;
/// The RSA key sizes `ring`'s `RSA_PKCS1_2048_8192_SHA256` verifies.
const RSA_MIN_BITS: usize = 2048;
const RSA_MAX_BITS: usize = 8192;

/// One trusted public key.
pub(crate) struct PublicKey {
    algorithm: &'static dyn VerificationAlgorithm,
    /// The key as the algorithm wants it (SEC1 point, Ed25519 bytes,
    /// PKCS#1 RSAPublicKey).
    key: Vec<u8>,
    /// `sha256:<hex>` of the whole SPKI DER: how status names the key.
    fingerprint: String,
    /// `ECDSA P-256`, … for messages.
    kind: &'static str,
}

impl PublicKey {
    /// The first `PUBLIC KEY` block of `pem`. `Err` is the reason in words.
    pub(crate) fn from_pem(pem: &[u8]) -> Result<PublicKey, String> {
        let spki = SubjectPublicKeyInfoDer::from_pem_slice(pem).map_err(|e| match e {
            rustls_pki_types::pem::Error::NoItemsFound => {
                "no PEM \"PUBLIC KEY\" block (a SubjectPublicKeyInfo, as `skopeo \
                 generate-sigstore-key` writes)"
                    .to_string()
            }
            other => format!("not a readable PEM public key: {other}"),
        })?;
        Self::from_spki(spki.as_ref())
    }

    fn from_spki(der: &[u8]) -> Result<PublicKey, String> {
        let bad = |why: &str| format!("malformed SubjectPublicKeyInfo: {why}");
        let (outer, rest) = der_element(der, DER_SEQUENCE).ok_or_else(|| bad("no SEQUENCE"))?;
        if !rest.is_empty() {
            return Err(bad("trailing bytes"));
        }
        let (alg, rest) =
            der_element(outer, DER_SEQUENCE).ok_or_else(|| bad("no algorithm identifier"))?;
        let (bits, rest) =
            der_element(rest, DER_BIT_STRING).ok_or_else(|| bad("no key BIT STRING"))?;
        if !rest.is_empty() {
            return Err(bad("trailing fields"));
        }
        // The first content byte of a BIT STRING counts unused bits: a
        // key is whole bytes.
        let key = match bits.split_first() {
            Some((0, key)) => key,
            _ => return Err(bad("key BIT STRING with unused bits")),
        };
        let (algorithm, kind): (&'static dyn VerificationAlgorithm, _) = match alg {
            a if a == alg_id::ECDSA_P256.as_ref() => (&sig::ECDSA_P256_SHA256_ASN1, "ECDSA P-256"),
            a if a == alg_id::ECDSA_P384.as_ref() => (&sig::ECDSA_P384_SHA256_ASN1, "ECDSA P-384"),
            a if a == alg_id::ED25519.as_ref() => (&sig::ED25519, "Ed25519"),
            a if a == alg_id::RSA_ENCRYPTION.as_ref() => (&sig::RSA_PKCS1_2048_8192_SHA256, "RSA"),
            _ => {
                return Err(
                    "unsupported key type (osctl verifies ECDSA P-256 and P-384, Ed25519 and \
                     RSA keys)"
                        .to_string(),
                );
            }
        };
        usable_key(kind, key)?;
        Ok(PublicKey {
            algorithm,
            key: key.to_vec(),
            fingerprint: sha256_digest(der),
            kind,
        })
    }

    /// Whether `signature` is this key's signature over `message`.
    pub(crate) fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(self.algorithm, &self.key)
            .verify(message, signature)
            .is_ok()
    }

    pub(crate) fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub(crate) fn kind(&self) -> &'static str {
        self.kind
    }
}

/// `ring` looks at a key only when it verifies; a key that could never
/// verify anything is a broken key file, and is said to be one when it is
/// read: EC points uncompressed and of the curve's length, Ed25519 keys of
/// 32 bytes, RSA moduli of 2048 to 8192 bits (what `ring` verifies).
fn usable_key(kind: &str, key: &[u8]) -> Result<(), String> {
    let point = |len: usize| {
        if key.len() == len && key.first() == Some(&SEC1_UNCOMPRESSED) {
            Ok(())
        } else {
            Err(format!(
                "{kind} key is not an uncompressed point of {len} bytes"
            ))
        }
    };
    match kind {
        "ECDSA P-256" => point(65),
        "ECDSA P-384" => point(97),
        "Ed25519" if key.len() == 32 => Ok(()),
        "Ed25519" => Err(format!("Ed25519 key of {} bytes, not 32", key.len())),
        _ => {
            let bits = rsa_modulus_bits(key).ok_or("malformed RSA public key")?;
            if (RSA_MIN_BITS..=RSA_MAX_BITS).contains(&bits) {
                Ok(())
            } else {
                Err(format!(
                    "RSA key of {bits} bits (osctl verifies {RSA_MIN_BITS} to {RSA_MAX_BITS})"
                ))
            }
        }
    }
}

/// The bit length of a PKCS#1 `RSAPublicKey`'s modulus.
fn rsa_modulus_bits(key: &[u8]) -> Option<usize> {
    let (seq, rest) = der_element(key, DER_SEQUENCE)?;
    if !rest.is_empty() {
        return None;
    }
    let (modulus, _) = der_element(seq, DER_INTEGER)?;
    let start = modulus.iter().position(|b| *b != 0)?;
    let first = modulus[start];
    Some((modulus.len() - start - 1) * 8 + (8 - first.leading_zeros() as usize))
}

/// Splits one DER element with tag `tag` off the front of `input`:
/// (its contents, what follows). Definite lengths only, as DER requires.
fn der_element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = input.split_first()?;
    if t != tag {
        return None;
    }
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        // Keys are far below 2^32 bytes; longer length fields are hostile.
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, after) = rest.split_at(n);
        rest = after;
        bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair};

    /// SPKI DER around a raw key, built from the algorithm identifiers.
    fn spki(alg: &[u8], key: &[u8]) -> Vec<u8> {
        fn wrap(tag: u8, body: &[u8]) -> Vec<u8> {
            let mut out = vec![tag];
            if body.len() < 0x80 {
                out.push(body.len() as u8);
            } else {
                out.extend([0x82, (body.len() >> 8) as u8, body.len() as u8]);
            }
            out.extend(body);
            out
        }
        let mut bits = vec![0];
        bits.extend(key);
        let mut body = wrap(DER_SEQUENCE, alg);
        body.extend(wrap(DER_BIT_STRING, &bits));
        wrap(DER_SEQUENCE, &body)
    }

    fn pem(der: &[u8]) -> String {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            lines.join("\n")
        )
    }

    #[test]
    fn p256_and_ed25519_keys_verify_their_signatures_only() {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let ec = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let ed_pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let ed = Ed25519KeyPair::from_pkcs8(ed_pkcs8.as_ref()).unwrap();
        let msg = b"payload";
        // (algorithm identifier, raw public key, signature over msg, kind)
        type Case<'a> = (&'a [u8], &'a [u8], Vec<u8>, &'a str);
        let cases: [Case; 2] = [
            (
                alg_id::ECDSA_P256.as_ref(),
                ec.public_key().as_ref(),
                ec.sign(&rng, msg).unwrap().as_ref().to_vec(),
                "ECDSA P-256",
            ),
            (
                alg_id::ED25519.as_ref(),
                ed.public_key().as_ref(),
                ed.sign(msg).as_ref().to_vec(),
                "Ed25519",
            ),
        ];
        for (alg, raw, signature, kind) in cases {
            let der = spki(alg, raw);
            let key = PublicKey::from_pem(pem(&der).as_bytes()).unwrap();
            assert_eq!(key.kind(), kind);
            assert_eq!(key.fingerprint(), sha256_digest(&der));
            assert!(key.verifies(msg, &signature), "{kind}");
            assert!(!key.verifies(b"other payload", &signature), "{kind}");
            let mut flipped = signature.clone();
            let last = flipped.len() - 1;
            flipped[last] ^= 1;
            assert!(!key.verifies(msg, &flipped), "{kind}");
        }
    }

    /// A key file whose key can never verify anything (a truncated or
    /// compressed EC point, an Ed25519 key of the wrong length, an RSA
    /// modulus under 2048 bits) is a broken key file: it must be refused
    /// when it is read, naming why, not accepted and then reported as "not
    /// a valid signature by a trusted key" for every image.
    #[test]
    fn keys_that_cannot_verify_are_refused_when_read() {
        // PKCS#1 RSAPublicKey: SEQUENCE { INTEGER n, INTEGER e }.
        fn rsa_public_key(modulus_bytes: usize) -> Vec<u8> {
            let mut n = vec![0x00, 0xc1];
            n.extend(std::iter::repeat_n(0x5a, modulus_bytes - 1));
            let mut body = vec![0x02, 0x82, (n.len() >> 8) as u8, n.len() as u8];
            body.extend(&n);
            body.extend([0x02, 0x03, 0x01, 0x00, 0x01]);
            let mut out = vec![
                DER_SEQUENCE,
                0x82,
                (body.len() >> 8) as u8,
                body.len() as u8,
            ];
            out.extend(body);
            out
        }
        let mut compressed = vec![0x02];
        compressed.extend([7; 32]);
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "P-256 point of 10 bytes",
                spki(alg_id::ECDSA_P256.as_ref(), &[4; 10]),
            ),
            (
                "compressed P-256 point",
                spki(alg_id::ECDSA_P256.as_ref(), &compressed),
            ),
            (
                "Ed25519 key of 31 bytes",
                spki(alg_id::ED25519.as_ref(), &[7; 31]),
            ),
            (
                "RSA 1024-bit",
                spki(alg_id::RSA_ENCRYPTION.as_ref(), &rsa_public_key(128)),
            ),
        ];
        for (what, der) in cases {
            assert!(
                PublicKey::from_pem(pem(&der).as_bytes()).is_err(),
                "{what} was accepted as a key"
            );
        }
        // A 2048-bit modulus of the same shape is a key.
        let ok = spki(alg_id::RSA_ENCRYPTION.as_ref(), &rsa_public_key(256));
        assert_eq!(
            PublicKey::from_pem(pem(&ok).as_bytes()).unwrap().kind(),
            "RSA"
        );
    }

    #[test]
    fn keys_osctl_cannot_use_are_refused_by_name() {
        let p521 = spki(alg_id::ECDSA_P521.as_ref(), &[4; 133]);
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"not pem at all".to_vec(), "no PEM \"PUBLIC KEY\" block"),
            (
                b"-----BEGIN RSA PUBLIC KEY-----\nAAAA\n-----END RSA PUBLIC KEY-----\n".to_vec(),
                "no PEM \"PUBLIC KEY\" block",
            ),
            (pem(&p521).into_bytes(), "unsupported key type"),
            (
                pem(&[DER_SEQUENCE, 0x05, 1, 2, 3]).into_bytes(),
                "malformed SubjectPublicKeyInfo",
            ),
            (
                pem(&spki(alg_id::ED25519.as_ref(), &[7; 32])[..20]).into_bytes(),
                "malformed SubjectPublicKeyInfo",
            ),
        ];
        for (input, want) in cases {
            let err = PublicKey::from_pem(&input).err().expect("refused");
            assert!(err.starts_with(want), "{err:?} should start with {want:?}");
        }
    }
}
