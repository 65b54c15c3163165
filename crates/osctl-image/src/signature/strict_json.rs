//! JSON read strictly: a document with a key twice in one object, or with
//! anything after its value, is refused.
//!
//! serde_json keeps the last of two equal keys in a map and ignores the
//! rest silently; for a signed payload or a security policy that is how
//! two readers come to see two different documents. So every document
//! osctl's signature code reads is walked once by [`no_duplicate_keys`]
//! before it is deserialized into its typed form (which denies unknown
//! fields itself).
//!
//! serde also reads a struct from a JSON *array*, by position
//! (`["reject"]` would be a requirement); [`objects_where_structs_are`]
//! lets each reader say where its document must have objects.

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// Parses `text` as `T` after checking that no object repeats a key.
/// The error is serde_json's, with line and column.
pub(crate) fn from_slice<T: serde::de::DeserializeOwned>(
    text: &[u8],
) -> Result<T, serde_json::Error> {
    no_duplicate_keys(text)?;
    serde_json::from_slice(text)
}

/// Fails unless `value` is an object and, in it, each key in `shape` maps
/// to what the shape says: `Obj(inner)` an object checked by `inner`,
/// `ObjOf(inner)` an object whose every value is checked by `inner`,
/// `ListOf(inner)` an array whose every element is checked by `inner`.
/// Keys not named in `shape` are not checked here; absent keys are fine.
pub(crate) fn objects_where_structs_are(
    value: &serde_json::Value,
    at: &str,
    shape: &Shape,
) -> Result<(), String> {
    use serde_json::Value;
    match (shape, value) {
        (Shape::Obj(fields), Value::Object(map)) => {
            for (key, inner) in *fields {
                if let Some(v) = map.get(*key) {
                    objects_where_structs_are(v, &format!("{at}.{key}"), inner)?;
                }
            }
            Ok(())
        }
        (Shape::ObjOrNull, Value::Object(_) | Value::Null) => Ok(()),
        (Shape::ObjOf(inner), Value::Object(map)) => map
            .iter()
            .try_for_each(|(k, v)| objects_where_structs_are(v, &format!("{at}[\"{k}\"]"), inner)),
        (Shape::ListOf(inner), Value::Array(items)) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, v)| objects_where_structs_are(v, &format!("{at}[{i}]"), inner)),
        (Shape::ListOf(_), _) => Err(format!("{at} must be an array")),
        (Shape::ObjOrNull, _) => Err(format!("{at} must be an object or null")),
        _ => Err(format!("{at} must be an object")),
    }
}

/// Where a document must hold objects (see [`objects_where_structs_are`]).
pub(crate) enum Shape {
    Obj(&'static [(&'static str, Shape)]),
    ObjOrNull,
    ObjOf(&'static Shape),
    ListOf(&'static Shape),
}

/// Walks `text` and fails on the first object that has a key twice.
pub(crate) fn no_duplicate_keys(text: &[u8]) -> Result<(), serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(text);
    UniqueKeys.deserialize(&mut de)?;
    de.end()
}

/// A seed that accepts any JSON value and refuses repeated keys.
#[derive(Clone, Copy)]
struct UniqueKeys;

impl<'de> DeserializeSeed<'de> for UniqueKeys {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for UniqueKeys {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(de::Error::custom(format!("duplicate key \"{key}\"")));
            }
            map.next_value_seed(self)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_are_refused_where_objects_belong() {
        const INNER: Shape = Shape::Obj(&[("b", Shape::Obj(&[]))]);
        const SHAPE: Shape =
            Shape::Obj(&[("list", Shape::ListOf(&INNER)), ("opt", Shape::ObjOrNull)]);
        let cases = [
            (r#"{}"#, None),
            (
                r#"{"list":[{"b":{}},{"c":[1]}],"opt":null,"other":[1]}"#,
                None,
            ),
            (r#"[]"#, Some("payload must be an object")),
            (r#"{"list":{}}"#, Some("payload.list must be an array")),
            (
                r#"{"list":[["x"]]}"#,
                Some("payload.list[0] must be an object"),
            ),
            (
                r#"{"list":[{"b":["x"]}]}"#,
                Some("payload.list[0].b must be an object"),
            ),
            (
                r#"{"opt":[1]}"#,
                Some("payload.opt must be an object or null"),
            ),
        ];
        for (text, want) in cases {
            let v: serde_json::Value = serde_json::from_str(text).unwrap();
            assert_eq!(
                objects_where_structs_are(&v, "payload", &SHAPE)
                    .err()
                    .as_deref(),
                want,
                "{text}"
            );
        }
    }

    #[test]
    fn repeated_keys_and_trailing_data_are_refused_anywhere() {
        let cases = [
            (r#"{"a":1}"#, None),
            (r#"{"a":{"b":[{"c":1,"d":null}]},"e":"x"}"#, None),
            (r#"{"a":1,"a":2}"#, Some("duplicate key \"a\"")),
            (r#"{"a":[{"b":1,"b":1}]}"#, Some("duplicate key \"b\"")),
            (r#"{"a":{"x":{"y":1,"y":2}}}"#, Some("duplicate key \"y\"")),
            (r#"{"a":1} {"a":1}"#, Some("trailing characters")),
            (r#"{"a":1"#, Some("EOF while parsing")),
        ];
        for (text, want) in cases {
            let got = no_duplicate_keys(text.as_bytes())
                .err()
                .map(|e| e.to_string());
            match (want, got) {
                (None, None) => {}
                (Some(w), Some(g)) => assert!(g.starts_with(w), "{text}: {g}"),
                (w, g) => panic!("{text}: want {w:?}, got {g:?}"),
            }
        }
    }
}
