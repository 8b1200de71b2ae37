//! Prefect-style run names: an adjective and an animal, as `beryl-moth`.

use rand::seq::SliceRandom;

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
