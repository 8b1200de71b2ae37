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

/// A flow run as the server it is reported to knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RemoteFlowRun {
    /// Its id on the server.
    pub id: Uuid,
    /// Its page in the server's UI, if the server has one.
    pub url: Option<String>,
}

impl RemoteFlowRun {
    /// A flow run known to a server as `id`, shown at `url`.
    ///
    /// ```
    /// use prefecto::RemoteFlowRun;
    ///
    /// let run = RemoteFlowRun::new(uuid::Uuid::nil(), None);
    /// assert!(run.url.is_none());
    /// ```
    pub fn new(id: Uuid, url: Option<String>) -> Self {
        RemoteFlowRun { id, url }
    }
}

/// The seam where a flow run meets the server that orchestrates it: finds
/// the flow run a flow call should adopt, and tells when the server has a
/// new one running.
pub trait FlowRunAdopter: Send + Sync + 'static {
    /// Asked at the start of every flow call of `flow`; the run to adopt, or
    /// `None` to start a new one.
    fn adopt(&self, flow: &str) -> Option<AdoptedFlowRun>;

    /// Called once flow run `flow_run` is running here, before its body
    /// runs. A server's client waits (within a bound) until the server has
    /// it running too, so that none of its task runs starts there before
    /// it, as Python's engine does, and gives the run as the server knows
    /// it. By default, nothing to wait for.
    fn started(&self, _flow_run: Uuid) -> Option<RemoteFlowRun> {
        None
    }
}
