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

impl<T: Serialize> ParamToJson for Param<'_, T> {
    fn prefecto_to_json(&self) -> Value {
        serde_json::to_value(self.0)
            .unwrap_or_else(|e| Value::String(format!("<{}: {e}>", type_name::<T>())))
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
