//! The seam where a flow call takes over a flow run created elsewhere: a
//! Prefect worker creates the run, starts our binary with its id, and the
//! first flow call runs *that* run, with its name and parameters.

use serde_json::{Map, Value};
use uuid::Uuid;

/// A flow run created elsewhere that a flow call runs.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct AdoptedFlowRun {
    /// Its id.
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// Its parameters, by name; they replace the call's own where their types read them.
    pub parameters: Map<String, Value>,
}

impl AdoptedFlowRun {
    /// A flow run to adopt.
    pub fn new(id: Uuid, name: String, parameters: Map<String, Value>) -> Self {
        AdoptedFlowRun {
            id,
            name,
            parameters,
        }
    }
}

/// Finds the flow run a flow call should adopt, if any.
pub trait FlowRunAdopter: Send + Sync + 'static {
    /// Asked at the start of every flow call of `flow`; the run to adopt, or
    /// `None` to start a new one.
    fn adopt(&self, flow: &str) -> Option<AdoptedFlowRun>;
}
