//! A deployable binary's `main`: runs the flow a Prefect worker (or the
//! command line) asks for, among the binary's flows.

use std::process::ExitCode;

use serde_json::{Map, Value, json};

use crate::served::ServedFlow;

/// Runs one of `flows`, as asked, and gives the exit code; what
/// [`serve!`](crate::serve!) calls.
///
/// - Started by a Prefect worker (`PREFECT__FLOW_RUN_ID` set): runs the
///   flow the worker names (`PREFECT__FLOW_NAME`), adopting the worker's
///   flow run with its parameters from the server, and leaves the result
///   for the parent that ran the deployment
///   ([`deployments::results_dir`](crate::deployments::results_dir)).
/// - From a shell: `my-flows [FLOW] [--param NAME=VALUE]... [--params JSON]`
///   runs FLOW (needed when the binary has more than one) and prints its
///   result as JSON; a VALUE that is not JSON is a string.
/// - `--help` lists the flows and their parameters; `--flows-json` gives
///   them as JSON, with each flow's parameter schema (what `prefecto deploy` reads).
///
/// Exit codes: 0 the flow run completed; 1 it did not (or could not start);
/// 2 the command line or the flow's name was wrong.
///
/// ```no_run
/// use prefecto::prelude::*;
///
/// /// Sums the numbers up to `n`.
/// #[flow]
/// fn sum_to(n: u64) -> u64 {
///     (1..=n).sum()
/// }
///
/// // `my-flows --param n=10` prints 55; a worker runs it with its run's parameters.
/// fn main() -> std::process::ExitCode {
///     prefecto::serve!(sum_to)
/// }
/// ```
pub fn serve(flows: Vec<ServedFlow>) -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let program = std::env::args()
        .next()
        .and_then(|p| {
            std::path::Path::new(&p)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "flows".into());
    match run(&program, &flows, &args) {
        Ok(code) => code,
        Err(Failure::Usage(message)) => {
            eprintln!("error: {message}\n\n{}", help(&program, &flows));
            ExitCode::from(2)
        }
        Err(Failure::Run(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(1)
        }
    }
}

enum Failure {
    Usage(String),
    Run(String),
}

/// What the command line asks for.
#[derive(Debug, Default, PartialEq)]
struct Asked {
    help: bool,
    flows_json: bool,
    flow: Option<String>,
    parameters: Map<String, Value>,
}

fn parse(args: &[String]) -> Result<Asked, String> {
    let mut asked = Asked::default();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => asked.help = true,
            "--flows-json" => asked.flows_json = true,
            "--param" | "-p" => {
                let pair = args.next().ok_or("--param needs NAME=VALUE")?;
                let (name, value) = pair
                    .split_once('=')
                    .ok_or_else(|| format!("--param {pair:?}: write NAME=VALUE"))?;
                // JSON where it reads as JSON (numbers, lists, objects), else a string.
                let value = serde_json::from_str(value).unwrap_or_else(|_| Value::from(value));
                asked.parameters.insert(name.to_string(), value);
            }
            "--params" => {
                let text = args.next().ok_or("--params needs a JSON object")?;
                match serde_json::from_str::<Value>(text) {
                    Ok(Value::Object(map)) => asked.parameters.extend(map),
                    _ => return Err(format!("--params {text:?} is not a JSON object")),
                }
            }
            other if other.starts_with('-') => return Err(format!("unknown option {other:?}")),
            flow if asked.flow.is_none() => asked.flow = Some(flow.to_string()),
            extra => return Err(format!("unexpected argument {extra:?}")),
        }
    }
    Ok(asked)
}

fn help(program: &str, flows: &[ServedFlow]) -> String {
    let mut text = format!(
        "Usage: {program} [FLOW] [--param NAME=VALUE]... [--params JSON]\n\n\
         Runs one of this program's prefecto flows and prints its result as JSON.\n\
         A Prefect worker runs it with PREFECT__FLOW_RUN_ID set: the flow run and its\n\
         parameters then come from the server.\n\nFlows:\n"
    );
    for flow in flows {
        let summary = flow.description.lines().next().unwrap_or("");
        text.push_str(&format!("  {:<24} {summary}\n", flow.name));
        for parameter in &flow.parameters {
            let kind = describe(&parameter.schema);
            let required = if parameter.required { ", required" } else { "" };
            text.push_str(&format!(
                "      --param {}=… ({kind}{required})\n",
                parameter.name
            ));
        }
    }
    text.push_str(
        "\nOptions:\n  --param NAME=VALUE  a parameter; VALUE is JSON, or else a string\n  \
         --params JSON       parameters as one JSON object\n  \
         --flows-json        the flows and their parameter schemas, as JSON (for `prefecto deploy`)\n  \
         -h, --help          this help\n",
    );
    text
}

/// A schema in a word or two.
fn describe(schema: &Value) -> String {
    if let Some(kind) = schema.get("type").and_then(Value::as_str) {
        return kind.to_string();
    }
    if let Some(any_of) = schema.get("anyOf").and_then(Value::as_array) {
        let kinds: Vec<String> = any_of.iter().map(describe).collect();
        return kinds.join(" or ");
    }
    "any JSON".to_string()
}

fn flows_json(flows: &[ServedFlow]) -> Value {
    Value::Array(
        flows
            .iter()
            .map(|flow| {
                json!({
                    "name": flow.name,
                    "description": flow.description,
                    "parameter_schema": flow.parameter_schema(),
                })
            })
            .collect(),
    )
}

fn pick<'a>(flows: &'a [ServedFlow], name: Option<&str>) -> Result<&'a ServedFlow, String> {
    let names = || flows.iter().map(|f| f.name).collect::<Vec<_>>().join(", ");
    match name {
        Some(name) => flows
            .iter()
            .find(|f| f.name == name)
            .ok_or_else(|| format!("this program has no flow {name:?}; its flows: {}", names())),
        None if flows.len() == 1 => Ok(&flows[0]),
        None => Err(format!("name the flow to run: one of {}", names())),
    }
}

fn run(program: &str, flows: &[ServedFlow], args: &[String]) -> Result<ExitCode, Failure> {
    let mut seen = std::collections::HashSet::new();
    if let Some(twice) = flows.iter().find(|f| !seen.insert(f.name)) {
        return Err(Failure::Run(format!(
            "two flows are named {:?}: give one another name (#[flow(name = \"...\")])",
            twice.name
        )));
    }
    let asked = parse(args).map_err(Failure::Usage)?;
    if asked.help {
        print!("{}", help(program, flows));
        return Ok(ExitCode::SUCCESS);
    }
    if asked.flows_json {
        println!("{}", flows_json(flows));
        return Ok(ExitCode::SUCCESS);
    }
    #[cfg(feature = "prefect")]
    if let Some(worker) = crate::deployments::worker_run().map_err(Failure::Run)? {
        // The worker's name for the flow wins over the command line's.
        let flow = pick(flows, worker.flow.as_deref().or(asked.flow.as_deref()))
            .map_err(Failure::Usage)?;
        use crate::deployments::WorkerRunState;
        let parameters = match crate::deployments::read_worker_run(worker.id) {
            Ok(WorkerRunState::Run(parameters)) => parameters,
            Ok(WorkerRunState::Cancelled) => {
                eprintln!("Flow run {} was cancelled before it started.", worker.id);
                return Ok(ExitCode::SUCCESS);
            }
            Ok(WorkerRunState::Finished(state)) => {
                eprintln!(
                    "Flow run {} has already ended in state {state}; it is not run again.",
                    worker.id
                );
                return Ok(ExitCode::SUCCESS);
            }
            Err(e) => {
                return Err(Failure::Run(format!(
                    "cannot read flow run {} from the server: {e}",
                    worker.id
                )));
            }
        };
        let value = (flow.call)(parameters).map_err(|e| Failure::Run(e.to_string()))?;
        let dir = crate::deployments::results_dir();
        if let Err(e) = crate::deployments::write_result(&dir, worker.id, &value) {
            // The run completed; only a parent waiting for its result misses it.
            tracing::warn!(
                target: "prefecto.deployments",
                "The flow run's result could not be left in {}: {e}",
                dir.display()
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let flow = pick(flows, asked.flow.as_deref()).map_err(Failure::Usage)?;
    let value = (flow.call)(asked.parameters).map_err(|e| Failure::Run(e.to_string()))?;
    println!("{value}");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parameters_are_json_or_else_strings() {
        let asked = parse(&strings(&[
            "sum-to",
            "--param",
            "n=3",
            "--param",
            "label=hello",
            "--params",
            r#"{"x": [1]}"#,
        ]))
        .unwrap();
        assert_eq!(asked.flow.as_deref(), Some("sum-to"));
        assert_eq!(asked.parameters["n"], 3);
        assert_eq!(asked.parameters["label"], "hello");
        assert_eq!(asked.parameters["x"], json!([1]));
    }

    #[test]
    fn a_bad_command_line_says_what_is_wrong() {
        assert!(
            parse(&strings(&["--param", "n"]))
                .unwrap_err()
                .contains("NAME=VALUE")
        );
        assert!(
            parse(&strings(&["--params", "[1]"]))
                .unwrap_err()
                .contains("not a JSON object")
        );
        assert!(
            parse(&strings(&["--bogus"]))
                .unwrap_err()
                .contains("unknown option")
        );
        assert!(
            parse(&strings(&["a", "b"]))
                .unwrap_err()
                .contains("unexpected argument")
        );
    }

    #[test]
    fn schemas_read_in_a_word() {
        assert_eq!(describe(&json!({"type": "integer"})), "integer");
        assert_eq!(
            describe(&json!({"anyOf": [{"type": "string"}, {"type": "null"}]})),
            "string or null"
        );
        assert_eq!(describe(&json!({})), "any JSON");
    }
}
