//! Flow-run parameters as JSON. A parameter whose type serializes is shown on
//! the Prefect server, and taken from the server when a flow run is adopted;
//! any other is shown by its type's name and always comes from the caller.
//!
//! `#[flow]` cannot require `Serialize` of every parameter, and Rust has no
//! specialization: the macro calls `(&Param(&x)).prefecto_to_json()`. Method
//! lookup tries the receiver `&Param` first, which the serde impl (on
//! `Param`, taking `&self`) matches when the type serializes; only if not
//! does it take one more reference and find the fallback (on `&Param`).

use std::any::type_name;
use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// A parameter on its way to JSON.
pub struct Param<'a, T>(pub &'a T);

/// Serializable parameters: their JSON.
pub trait ParamToJson {
    /// The parameter as JSON.
    fn prefecto_to_json(&self) -> Value;
}

/// The most JSON one parameter may take in a flow run's record. Prefect's
/// server refuses a flow run whose parameters take more than 512 KiB
/// together (`PREFECT_SERVER_API_MAX_PARAMETER_SIZE`), and a flow called
/// with a million inputs should not pay to serialize them all: past this,
/// serializing stops and the parameter is recorded by its type's name.
pub const PARAMETER_JSON_LIMIT: usize = 64 * 1024;

/// A writer that takes at most `limit` bytes, then refuses.
struct Capped {
    bytes: Vec<u8>,
    limit: usize,
    over: bool,
}

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > self.limit {
            self.over = true;
            return Err(std::io::Error::other("over the limit"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `value` as JSON, unless its JSON takes more than `limit` bytes.
pub(crate) fn capped_json<T: Serialize + ?Sized>(value: &T, limit: usize) -> Result<Value, String> {
    let mut out = Capped {
        bytes: Vec::new(),
        limit,
        over: false,
    };
    match serde_json::to_writer(&mut out, value) {
        Ok(()) => serde_json::from_slice(&out.bytes).map_err(|e| e.to_string()),
        Err(_) if out.over => Err(format!("over {} kB of JSON", limit / 1024)),
        Err(e) => Err(e.to_string()),
    }
}

/// The most JSON a flow run's parameters take together, under the
/// server's 512 KiB with room for the names and the braces.
pub const PARAMETERS_JSON_LIMIT: usize = 500 * 1024;

/// A flow call's parameters as the JSON object its run records: the
/// largest are replaced by a note until they fit under
/// [`PARAMETERS_JSON_LIMIT`] together.
pub(crate) fn recorded_parameters(parameters: Vec<(&'static str, Value)>) -> Map<String, Value> {
    let mut sized: Vec<(&'static str, Value, usize)> = parameters
        .into_iter()
        .map(|(name, value)| {
            let size = serde_json::to_vec(&value).map_or(0, |json| json.len()) + name.len() + 4;
            (name, value, size)
        })
        .collect();
    let mut total: usize = sized.iter().map(|p| p.2).sum();
    while total > PARAMETERS_JSON_LIMIT {
        let Some(largest) = sized.iter_mut().max_by_key(|p| p.2) else {
            break;
        };
        tracing::warn!(
            target: "prefecto.engine",
            "Flow parameter '{}' ({} kB of JSON) does not fit in the {} kB a flow run's parameters may take together: it is not recorded.",
            largest.0,
            largest.2 / 1024,
            PARAMETERS_JSON_LIMIT / 1024
        );
        let note = Value::String(format!("<{} kB of JSON, not recorded>", largest.2 / 1024));
        total -= largest.2;
        largest.2 = serde_json::to_vec(&note).map_or(0, |json| json.len()) + largest.0.len() + 4;
        total += largest.2;
        largest.1 = note;
    }
    sized
        .into_iter()
        .map(|(name, value, _)| (name.to_string(), value))
        .collect()
}

impl<T: Serialize> ParamToJson for Param<'_, T> {
    fn prefecto_to_json(&self) -> Value {
        capped_json(self.0, PARAMETER_JSON_LIMIT).unwrap_or_else(|why| {
            tracing::warn!(
                target: "prefecto.engine",
                "A flow parameter of type {} is {why}: the flow run records its type's name instead of its value.",
                type_name::<T>()
            );
            Value::String(format!("<{}: {why}, not recorded>", type_name::<T>()))
        })
    }
}

/// Any other parameter: its type's name.
pub trait ParamToJsonFallback {
    /// The parameter's type name, as a JSON string.
    fn prefecto_to_json(&self) -> Value;
}

impl<T> ParamToJsonFallback for &Param<'_, T> {
    fn prefecto_to_json(&self) -> Value {
        Value::String(format!("<{}>", type_name::<T>()))
    }
}

/// A parameter an adopted flow run may take from the server.
pub struct Adopt<'a, T>(
    pub Option<&'a Map<String, Value>>,
    pub &'static str,
    pub PhantomData<T>,
);

/// Deserializable parameters: the server's value, if it has one.
pub trait AdoptParam<T> {
    /// The server's value for the parameter, else `passed`.
    fn prefecto_adopt(&self, passed: T) -> T;
}

impl<T: DeserializeOwned> AdoptParam<T> for Adopt<'_, T> {
    fn prefecto_adopt(&self, passed: T) -> T {
        let Some(value) = self.0.and_then(|p| p.get(self.1)) else {
            return passed;
        };
        match serde_json::from_value(value.clone()) {
            Ok(adopted) => adopted,
            Err(e) => {
                tracing::warn!(
                    target: "prefecto.engine",
                    "The flow run's parameter '{}' on the server ({value}) is not a {}: {e}; using the value passed in code.",
                    self.1,
                    type_name::<T>()
                );
                passed
            }
        }
    }
}

/// Any other parameter: always the caller's.
pub trait AdoptParamFallback<T> {
    /// `passed`.
    fn prefecto_adopt(&self, passed: T) -> T;
}

impl<T> AdoptParamFallback<T> for &Adopt<'_, T> {
    fn prefecto_adopt(&self, passed: T) -> T {
        passed
    }
}

#[cfg(test)]
// The borrows are the point: they are what the macro writes.
#[allow(clippy::needless_borrow)]
mod tests {
    use super::*;

    struct Opaque;

    #[test]
    fn serializable_parameters_become_json_and_others_their_type() {
        assert_eq!((&Param(&3u8)).prefecto_to_json(), Value::from(3));
        assert_eq!(
            (&Param(&vec!["a"])).prefecto_to_json(),
            serde_json::json!(["a"])
        );
        let opaque = (&Param(&Opaque)).prefecto_to_json();
        assert!(opaque.as_str().unwrap().contains("Opaque"), "{opaque}");
    }

    #[test]
    fn a_parameter_over_the_limit_is_recorded_by_its_type_without_serializing_it_all() {
        let big: Vec<u64> = (0..1_000_000).collect();
        let recorded = (&Param(&big)).prefecto_to_json();
        let text = recorded.as_str().unwrap();
        assert!(
            text.contains("Vec<u64>") && text.contains("over 64 kB"),
            "{text}"
        );
        let small: Vec<u64> = (0..100).collect();
        assert_eq!(
            (&Param(&small)).prefecto_to_json(),
            serde_json::json!(small)
        );
        assert_eq!(capped_json(&"x".repeat(10), 12).unwrap(), "x".repeat(10));
        assert!(capped_json(&"x".repeat(11), 12).is_err());
    }

    #[test]
    fn parameters_that_do_not_fit_together_are_noted_largest_first() {
        let big = |n: usize| Value::String("x".repeat(n));
        let recorded = recorded_parameters(vec![
            ("a", big(60 * 1024)),
            ("b", big(63 * 1024)),
            ("c", big(60 * 1024)),
            ("d", big(60 * 1024)),
            ("e", big(60 * 1024)),
            ("f", big(60 * 1024)),
            ("g", big(60 * 1024)),
            ("h", big(60 * 1024)),
            ("i", big(60 * 1024)),
            ("small", Value::from(3)),
        ]);
        assert!(recorded["b"].as_str().unwrap().contains("not recorded"));
        assert_eq!(recorded["a"].as_str().unwrap().len(), 60 * 1024);
        assert_eq!(recorded["small"], 3);
        assert!(serde_json::to_vec(&recorded).unwrap().len() <= PARAMETERS_JSON_LIMIT);
    }

    #[test]
    fn adopted_parameters_come_from_the_server_when_they_can() {
        let server: Map<String, Value> = serde_json::from_str(r#"{"n": 8, "s": "x"}"#).unwrap();
        let n: u32 = (&Adopt::<u32>(Some(&server), "n", PhantomData)).prefecto_adopt(7);
        assert_eq!(n, 8);
        let missing: u32 = (&Adopt::<u32>(Some(&server), "m", PhantomData)).prefecto_adopt(7);
        assert_eq!(missing, 7);
        let wrong_type: u32 = (&Adopt::<u32>(Some(&server), "s", PhantomData)).prefecto_adopt(7);
        assert_eq!(wrong_type, 7);
        let opaque = (&Adopt::<Opaque>(Some(&server), "n", PhantomData)).prefecto_adopt(Opaque);
        let _: Opaque = opaque;
    }
}
