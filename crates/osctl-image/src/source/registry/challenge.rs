//! `WWW-Authenticate` challenges and token answers (Docker token protocol).
//!
//! A registry that wants credentials answers `401` with
//! `WWW-Authenticate: Basic realm="…"` (send the user and password on every
//! request) or `Bearer realm="URL",service="…",scope="…"` (trade them, or
//! nothing, for a token at `URL?service=…&scope=…`). Parsers take `&str` and
//! are pure so they can be tested with hostile input directly.

use serde::Deserialize;

/// What a registry asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses one challenge (`Scheme k="v", k2=v2`). Unknown schemes and a
/// Bearer challenge without a realm give `None`: there is nothing to answer.
pub(super) fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = match header.split_once(char::is_whitespace) {
        Some((s, r)) => (s, r),
        None => (header, ""),
    };
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let params = parse_params(rest)?;
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    Some(Challenge::Bearer {
        realm: get("realm").filter(|r| !r.is_empty())?,
        service: get("service"),
        scope: get("scope"),
    })
}

/// `k="v", k2=v2` → pairs; `None` on a malformed list (an unterminated
/// quote, a parameter without `=`).
fn parse_params(s: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        if chars.peek().is_none() {
            return Some(out);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') || key.is_empty() {
            return None;
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => value.push(chars.next()?),
                    c => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' || c.is_whitespace() {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        out.push((key, value));
    }
}

#[derive(Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
}

/// The bearer token in a token service's JSON answer (`token`, or OAuth2's
/// `access_token`). It must be usable as an HTTP header value.
pub(super) fn parse_token(body: &[u8]) -> Result<String, String> {
    let answer: TokenAnswer =
        serde_json::from_slice(body).map_err(|e| format!("its answer is not token JSON: {e}"))?;
    let token = answer
        .token
        .filter(|t| !t.is_empty())
        .or(answer.access_token.filter(|t| !t.is_empty()))
        .ok_or("its answer holds no token")?;
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("its token is not printable ASCII".into());
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let bearer = |realm: &str, service: Option<&str>, scope: Option<&str>| {
            Some(Challenge::Bearer {
                realm: realm.into(),
                service: service.map(Into::into),
                scope: scope.map(Into::into),
            })
        };
        for (header, expected) in [
            (r#"Basic realm="reg""#, Some(Challenge::Basic)),
            ("basic", Some(Challenge::Basic)),
            (
                r#"Bearer realm="http://t:1/token",service="reg",scope="repository:a/b:pull""#,
                bearer("http://t:1/token", Some("reg"), Some("repository:a/b:pull")),
            ),
            (
                r#"bearer  realm = "r" , service=svc"#,
                bearer("r", Some("svc"), None),
            ),
            (r#"Bearer realm="a\"b""#, bearer("a\"b", None, None)),
            (r#"Bearer service="x""#, None),
            (r#"Bearer realm="unterminated"#, None),
            (r#"Bearer realm"#, None),
            ("Negotiate abc", None),
            ("", None),
        ] {
            assert_eq!(parse_challenge(header), expected, "{header}");
        }
    }

    #[test]
    fn token_answers() {
        assert_eq!(parse_token(br#"{"token":"abc"}"#).unwrap(), "abc");
        assert_eq!(
            parse_token(br#"{"token":"","access_token":"xyz","expires_in":60}"#).unwrap(),
            "xyz"
        );
        for (body, needle) in [
            (&b"<html>"[..], "not token JSON"),
            (br#"{"expires_in":60}"#, "no token"),
            (br#"{"token":"a\nb"}"#, "not printable"),
            (br#"[1,2]"#, "not token JSON"),
        ] {
            let e = parse_token(body).unwrap_err();
            assert!(e.contains(needle), "{e}");
        }
    }
}
