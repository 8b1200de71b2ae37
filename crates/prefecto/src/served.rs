//! A flow as a deployable binary offers it: its name, its parameters'
//! schema, and a call that takes its parameters as JSON. `#[flow]` writes
//! one for every flow; [`serve`](crate::serve()) runs the one asked for.

use std::any::type_name;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::flow::FlowRunError;

/// One flow of a deployable binary, written by `#[flow]`; give it to
/// [`serve!`](crate::serve!).
#[derive(Clone)]
#[non_exhaustive]
pub struct ServedFlow {
    /// The flow's name (a deployment's flow).
    pub name: &'static str,
    /// Its doc comment, the deployment's description.
    pub description: &'static str,
    /// Its parameters, in order.
    pub parameters: Vec<ServedParameter>,
    /// Runs one flow run with these parameters; the flow's return value as JSON.
    pub call: fn(Map<String, Value>) -> Result<Value, ServeError>,
}

impl std::fmt::Debug for ServedFlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServedFlow")
            .field("name", &self.name)
            .field("parameters", &self.parameters)
            .finish_non_exhaustive()
    }
}

impl ServedFlow {
    /// The deployment's `parameter_schema`, in Prefect's layout.
    ///
    /// ```
    /// use prefecto::prelude::*;
    ///
    /// /// Sums the numbers up to `n`.
    /// #[flow]
    /// fn sum_to(n: u64, label: Option<String>) -> u64 {
    ///     (1..=n).sum()
    /// }
    ///
    /// let served = prefecto::served_flow!(sum_to);
    /// assert_eq!(served.name, "sum-to");
    /// assert_eq!(served.description, "Sums the numbers up to `n`.");
    /// let schema = served.parameter_schema();
    /// assert_eq!(schema["properties"]["n"]["type"], "integer");
    /// assert_eq!(schema["required"], serde_json::json!(["n"]));
    /// ```
    pub fn parameter_schema(&self) -> Value {
        let parameters: Vec<(&str, Value, bool)> = self
            .parameters
            .iter()
            .map(|p| (p.name, p.schema.clone(), p.required))
            .collect();
        crate::parameter_schema::flow_parameter_schema(&parameters)
    }
}

/// One parameter of a [`ServedFlow`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ServedParameter {
    /// Its name.
    pub name: &'static str,
    /// Its JSON schema ([`ParameterSchema`](crate::ParameterSchema)).
    pub schema: Value,
    /// Whether a run must give it.
    pub required: bool,
}

impl ServedParameter {
    /// A parameter `name` with this schema.
    ///
    /// ```
    /// let n = prefecto::ServedParameter::new("n", serde_json::json!({"type": "integer"}), true);
    /// assert!(n.required);
    /// ```
    pub fn new(name: &'static str, schema: Value, required: bool) -> Self {
        ServedParameter {
            name,
            schema,
            required,
        }
    }
}

/// Why a served flow did not run, or did not complete.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// A required parameter was not given.
    #[error("flow '{flow}' needs parameter '{parameter}', which was not given")]
    MissingParameter {
        /// The flow.
        flow: &'static str,
        /// The parameter.
        parameter: &'static str,
    },
    /// A parameter's JSON is not a value of its type.
    #[error("parameter '{parameter}' of flow '{flow}' is not a {expected}: {reason}")]
    BadParameter {
        /// The flow.
        flow: &'static str,
        /// The parameter.
        parameter: &'static str,
        /// Its Rust type.
        expected: &'static str,
        /// What serde said.
        reason: String,
    },
    /// The parameter's type does not implement `Deserialize`, so it cannot come from JSON.
    #[error(
        "parameter '{parameter}' of flow '{flow}' is a {type_name}, which cannot be read from JSON \
         (it does not implement serde's Deserialize); a served flow's parameters must"
    )]
    NotDeserializable {
        /// The flow.
        flow: &'static str,
        /// The parameter.
        parameter: &'static str,
        /// Its Rust type.
        type_name: &'static str,
    },
    /// The flow run did not complete.
    #[error(transparent)]
    FlowRun(#[from] FlowRunError),
}

/// A parameter of a served flow, read from the given JSON (what `#[flow]` writes).
#[doc(hidden)]
pub struct Given<'a, T>(
    pub &'a Map<String, Value>,
    pub &'static str,
    pub &'static str,
    pub PhantomData<T>,
);

#[doc(hidden)]
pub trait GivenParam<T> {
    fn prefecto_given(&self) -> Result<T, ServeError>;
}

impl<T: DeserializeOwned> GivenParam<T> for Given<'_, T> {
    fn prefecto_given(&self) -> Result<T, ServeError> {
        let Given(given, flow, parameter, _) = *self;
        // A missing parameter reads as `null`: an `Option` takes it as `None`.
        let value = given.get(parameter).cloned().unwrap_or(Value::Null);
        let missing = value.is_null() && !given.contains_key(parameter);
        serde_json::from_value(value).map_err(|e| {
            if missing {
                ServeError::MissingParameter { flow, parameter }
            } else {
                ServeError::BadParameter {
                    flow,
                    parameter,
                    expected: type_name::<T>(),
                    reason: e.to_string(),
                }
            }
        })
    }
}

#[doc(hidden)]
pub trait GivenParamFallback<T> {
    fn prefecto_given(&self) -> Result<T, ServeError>;
}

impl<T> GivenParamFallback<T> for &Given<'_, T> {
    fn prefecto_given(&self) -> Result<T, ServeError> {
        Err(ServeError::NotDeserializable {
            flow: self.1,
            parameter: self.2,
            type_name: type_name::<T>(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::needless_borrow)]
mod tests {
    use super::*;

    struct Opaque;

    #[test]
    fn given_parameters_read_or_say_why_not() {
        let given: Map<String, Value> = serde_json::from_str(r#"{"n": 3, "s": "x"}"#).unwrap();
        let n: u32 = (&Given::<u32>(&given, "f", "n", PhantomData))
            .prefecto_given()
            .unwrap();
        assert_eq!(n, 3);
        let none: Option<u32> = (&Given::<Option<u32>>(&given, "f", "m", PhantomData))
            .prefecto_given()
            .unwrap();
        assert_eq!(none, None);
        let missing = (&Given::<u32>(&given, "f", "m", PhantomData)).prefecto_given();
        assert!(matches!(missing, Err(ServeError::MissingParameter { .. })));
        let wrong = (&Given::<u32>(&given, "f", "s", PhantomData)).prefecto_given();
        assert!(
            matches!(
                &wrong,
                Err(ServeError::BadParameter {
                    expected: "u32",
                    ..
                })
            ),
            "{wrong:?}"
        );
        let opaque = (&Given::<Opaque>(&given, "f", "n", PhantomData)).prefecto_given();
        assert!(matches!(opaque, Err(ServeError::NotDeserializable { .. })));
    }
}
