//! Run names: flow runs get Prefect-style names (an adjective and an animal,
//! as `beryl-moth`), task runs `{task}-{k}`, and each task run a stable id.

use std::fmt;

use rand::seq::SliceRandom;

/// A task run's name, `{task}-{k}`, formatted only when shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TaskRunName {
    /// The task's name.
    pub task: &'static str,
    /// The run's number among this task's runs in its flow run, from 0.
    pub index: u64,
}

/// Whether two task names are the same task's: most often the very same
/// `&'static str`, compared by address before by text.
pub(crate) fn same_task(a: &'static str, b: &'static str) -> bool {
    std::ptr::eq(a, b) || a == b
}

impl fmt::Display for TaskRunName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.task, self.index)
    }
}

impl TaskRunName {
    /// The run's id on a Prefect server: derived from its flow run and its
    /// name, so that every part that speaks of the run (a concurrency slot
    /// held for it, its events) agrees on it without asking the others.
    pub fn id_in(self, flow_run: uuid::Uuid) -> uuid::Uuid {
        uuid::Uuid::new_v5(&flow_run, self.to_string().as_bytes())
    }
}

const ADJECTIVES: &[&str] = &[
    "amber",
    "amiable",
    "ancient",
    "beryl",
    "bold",
    "brave",
    "bright",
    "calm",
    "cerulean",
    "cheerful",
    "clever",
    "cobalt",
    "crimson",
    "curious",
    "daring",
    "dazzling",
    "eager",
    "elegant",
    "emerald",
    "fearless",
    "fiery",
    "gentle",
    "glittering",
    "golden",
    "graceful",
    "hallowed",
    "heavenly",
    "hopeful",
    "ivory",
    "jade",
    "jolly",
    "keen",
    "lively",
    "lucky",
    "magenta",
    "mellow",
    "merry",
    "mighty",
    "noble",
    "olive",
    "opal",
    "patient",
    "placid",
    "quick",
    "quiet",
    "radiant",
    "rustic",
    "sapphire",
    "scarlet",
    "silver",
    "sincere",
    "spirited",
    "steady",
    "swift",
    "tangerine",
    "teal",
    "tidy",
    "vigilant",
    "violet",
    "witty",
];

const ANIMALS: &[&str] = &[
    "albatross",
    "alligator",
    "antelope",
    "badger",
    "bat",
    "beaver",
    "bison",
    "bobcat",
    "butterfly",
    "camel",
    "caribou",
    "cheetah",
    "cobra",
    "condor",
    "cormorant",
    "coyote",
    "crane",
    "dingo",
    "dolphin",
    "dove",
    "eagle",
    "falcon",
    "ferret",
    "finch",
    "gazelle",
    "gecko",
    "gibbon",
    "gopher",
    "hare",
    "hawk",
    "heron",
    "hornet",
    "ibis",
    "jackal",
    "jaguar",
    "koala",
    "lemur",
    "leopard",
    "llama",
    "lynx",
    "marmot",
    "mink",
    "moose",
    "moth",
    "newt",
    "ocelot",
    "okapi",
    "otter",
    "owl",
    "panda",
    "pelican",
    "puffin",
    "quail",
    "raven",
    "salamander",
    "seal",
    "sparrow",
    "stork",
    "tapir",
    "toucan",
    "walrus",
    "wombat",
    "yak",
    "zebra",
];

/// A fresh random name such as `beryl-moth`.
pub fn generate_run_name() -> String {
    let mut rng = rand::thread_rng();
    let adjective = ADJECTIVES.choose(&mut rng).expect("list is not empty");
    let animal = ANIMALS.choose(&mut rng).expect("list is not empty");
    format!("{adjective}-{animal}")
}

/// A run another run depended on: what recorders hear with a run's
/// `Pending` transition, and what the Prefect server draws as an edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UpstreamRun {
    /// The parameter it gave a value to, or `"wait_for"`.
    pub input: &'static str,
    /// The upstream task run, in the same flow run.
    pub task_run: TaskRunName,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_adjective_dash_animal() {
        for _ in 0..100 {
            let name = generate_run_name();
            let (adjective, animal) = name.split_once('-').expect("has a dash");
            assert!(ADJECTIVES.contains(&adjective), "{name}");
            assert!(ANIMALS.contains(&animal), "{name}");
        }
    }
}
