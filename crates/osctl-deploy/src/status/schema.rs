//! The JSON Schema of `osctl status --format json|yaml`, generated from the
//! [`Host`] model, so the schema and the output cannot describe different
//! things.
//!
//! The repository carries the generated text as `docs/status.schema.json`;
//! the `status_format` tests fail when it differs from [`render_schema`]
//! and say how to regenerate it.
//!
//! The schema describes what osctl *prints*, so it is generated for
//! serialisation: a field is required whenever osctl always writes it (also
//! where the model's deserialiser would take a default), and only the
//! fields osctl leaves out when empty (`osctl`, `bootTries`, `health`) are
//! optional. Every object is closed (`additionalProperties: false`): a key
//! the model does not have is an error, which makes the schema a contract
//! for tools reading osctl's output. bootc's own schema for the same object
//! is open; osctl's output satisfies both.

use schemars::generate::SchemaSettings;
use schemars::transform::{Transform, transform_subschemas};
use schemars::{Schema, SchemaGenerator};

use super::Host;

/// Where the generated schema lives, relative to the repository root.
pub const SCHEMA_DOC: &str = "docs/status.schema.json";

/// The schema of [`Host`] as printed (draft 2020-12).
pub fn status_schema() -> Schema {
    let settings = SchemaSettings::draft2020_12()
        .for_serialize()
        .with_transform(CloseObjects);
    SchemaGenerator::new(settings).into_root_schema_for::<Host>()
}

/// [`status_schema`] as the text of [`SCHEMA_DOC`]: pretty JSON, ending
/// with a newline.
pub fn render_schema() -> String {
    let mut out =
        serde_json::to_string_pretty(&status_schema()).expect("a schema always serialises");
    out.push('\n');
    out
}

/// Sets `additionalProperties: false` on every schema that lists
/// `properties` (every struct of the model) and has not said otherwise.
#[derive(Clone)]
struct CloseObjects;

impl Transform for CloseObjects {
    fn transform(&mut self, schema: &mut Schema) {
        if schema.get("properties").is_some() && schema.get("additionalProperties").is_none() {
            schema.insert("additionalProperties".to_owned(), false.into());
        }
        transform_subschemas(self, schema);
    }
}
