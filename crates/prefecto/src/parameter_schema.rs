//! The JSON schema of a flow's parameters, as Prefect keeps it on a
//! deployment: the UI draws its "Custom run" form from it, and the server
//! checks a new run's parameters against it.
//!
//! `#[flow]` asks each parameter's type through [`ParameterSchema`]; a type
//! without an implementation gets the empty schema (any JSON value), the
//! same autoref fallback as for parameters' JSON.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::marker::PhantomData;
use std::path::PathBuf;

use serde_json::{Map, Value, json};

/// A type's JSON schema as a flow parameter, as Pydantic writes it for the
/// Python type Prefect would see.
///
/// Implemented for numbers, `bool`, strings, paths, `Option`, sequences
/// and string-keyed maps. Implement it for a type of your own to give the
/// UI's form its fields; without it the form takes any JSON.
///
/// ```
/// use prefecto::ParameterSchema;
/// use serde_json::json;
///
/// assert_eq!(<Vec<u32>>::parameter_schema(), json!({"type": "array", "items": {"type": "integer"}}));
/// assert!(!<Option<String>>::required());
///
/// struct Region(String);
///
/// impl ParameterSchema for Region {
///     fn parameter_schema() -> serde_json::Value {
///         json!({"type": "string", "enum": ["eu", "us"]})
///     }
/// }
/// assert_eq!(Region::parameter_schema()["enum"][0], "eu");
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no JSON schema for a deployment's parameter form",
    note = "implement `prefecto::ParameterSchema` for `{Self}` to give it one"
)]
pub trait ParameterSchema {
    /// The schema of one value of the type.
    fn parameter_schema() -> Value;

    /// Whether a run must give the parameter (`Option`s need not).
    fn required() -> bool {
        true
    }
}

macro_rules! schema_of {
    ($schema:tt: $($ty:ty),+) => {
        $(impl ParameterSchema for $ty {
            fn parameter_schema() -> Value {
                json!($schema)
            }
        })+
    };
}

schema_of!({"type": "integer"}: i8, i16, i32, i64, i128, isize, u8, u16, u32, u64, u128, usize);
schema_of!({"type": "number"}: f32, f64);
schema_of!({"type": "boolean"}: bool);
schema_of!({"type": "string"}: String, char, Box<str>);
schema_of!({"type": "string", "format": "path"}: PathBuf);
schema_of!({}: Value);
schema_of!({"type": "object"}: Map<String, Value>);

impl<T: ParameterSchema> ParameterSchema for Option<T> {
    fn parameter_schema() -> Value {
        json!({"anyOf": [T::parameter_schema(), {"type": "null"}], "default": null})
    }

    fn required() -> bool {
        false
    }
}

macro_rules! sequence_schema {
    ($($ty:ident),+) => {
        $(impl<T: ParameterSchema> ParameterSchema for $ty<T> {
            fn parameter_schema() -> Value {
                json!({"type": "array", "items": T::parameter_schema()})
            }
        })+
    };
}

sequence_schema!(Vec, VecDeque, BTreeSet);

impl<T: ParameterSchema, S> ParameterSchema for HashSet<T, S> {
    fn parameter_schema() -> Value {
        json!({"type": "array", "items": T::parameter_schema(), "uniqueItems": true})
    }
}

impl<T: ParameterSchema, S> ParameterSchema for HashMap<String, T, S> {
    fn parameter_schema() -> Value {
        json!({"type": "object", "additionalProperties": T::parameter_schema()})
    }
}

impl<T: ParameterSchema> ParameterSchema for BTreeMap<String, T> {
    fn parameter_schema() -> Value {
        json!({"type": "object", "additionalProperties": T::parameter_schema()})
    }
}

/// A parameter type on its way to a schema (what `#[flow]` writes).
#[doc(hidden)]
pub struct SchemaOf<T>(pub PhantomData<T>);

#[doc(hidden)]
pub trait SchemaOfKnown {
    fn prefecto_schema(&self) -> (Value, bool);
}

impl<T: ParameterSchema> SchemaOfKnown for SchemaOf<T> {
    fn prefecto_schema(&self) -> (Value, bool) {
        (T::parameter_schema(), T::required())
    }
}

/// Any other type: any JSON value, required.
#[doc(hidden)]
pub trait SchemaOfAny {
    fn prefecto_schema(&self) -> (Value, bool);
}

impl<T> SchemaOfAny for &SchemaOf<T> {
    fn prefecto_schema(&self) -> (Value, bool) {
        (json!({}), true)
    }
}

/// The `parameter_schema` of a deployment: Prefect's layout (`title`,
/// `position`, `required`, `definitions`), from each parameter's name and
/// its type's schema, in order.
pub(crate) fn flow_parameter_schema(parameters: &[(&str, Value, bool)]) -> Value {
    let mut properties = Map::new();
    let mut required = Vec::new();
    for (position, (name, schema, is_required)) in parameters.iter().enumerate() {
        let mut property = match schema {
            Value::Object(fields) => fields.clone(),
            _ => Map::new(),
        };
        property.insert("title".into(), Value::from(*name));
        property.insert("position".into(), Value::from(position));
        properties.insert((*name).to_string(), Value::Object(property));
        if *is_required {
            required.push(Value::from(*name));
        }
    }
    json!({
        "title": "Parameters",
        "type": "object",
        "properties": properties,
        "required": required,
        "definitions": {},
    })
}

#[cfg(test)]
// The borrows are the point: they are what the macro writes.
#[allow(clippy::needless_borrow)]
mod tests {
    use super::*;

    struct Opaque;

    #[test]
    fn known_types_have_their_schema_and_others_take_any_json() {
        let (schema, required) = (&SchemaOf::<Option<u8>>(PhantomData)).prefecto_schema();
        assert_eq!(schema["anyOf"][0]["type"], "integer");
        assert!(!required);
        let (schema, required) = (&SchemaOf::<Opaque>(PhantomData)).prefecto_schema();
        assert_eq!(schema, json!({}));
        assert!(required);
    }

    #[test]
    fn a_flows_schema_is_laid_out_as_prefects() {
        let schema = flow_parameter_schema(&[
            ("n", json!({"type": "integer"}), true),
            (
                "label",
                json!({"anyOf": [{"type": "string"}, {"type": "null"}]}),
                false,
            ),
        ]);
        assert_eq!(schema["properties"]["n"]["position"], 0);
        assert_eq!(schema["properties"]["label"]["title"], "label");
        assert_eq!(schema["required"], json!(["n"]));
        assert_eq!(schema["type"], "object");
    }
}
