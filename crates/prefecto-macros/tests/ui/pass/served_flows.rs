//! Flows of every shape describe themselves for `serve!`: sync and async,
//! `Result` or not, with parameters that do not deserialize (those fail at
//! run time, with a message, instead of at compile time).

use prefecto::prelude::*;

struct NotJson;

mod nested {
    use prefecto::prelude::*;

    /// A flow in a module.
    #[flow]
    pub async fn in_module(n: u64) -> Result<u64, String> {
        Ok(n)
    }
}

#[flow(name = "named")]
fn plain(name: String, maybe: Option<Vec<u32>>) -> String {
    format!("{name}{maybe:?}")
}

#[flow]
fn opaque(_thing: NotJson) {}

fn main() {
    let served = prefecto::served_flow!(nested::in_module);
    assert_eq!(served.name, "in-module");
    assert_eq!(served.description, "A flow in a module.");
    let _ = prefecto::served_flow!(plain);
    let _ = prefecto::served_flow!(opaque);
    // Only that it compiles: `serve!` takes paths.
    let _ = || -> std::process::ExitCode { prefecto::serve!(plain, nested::in_module, opaque) };
}
