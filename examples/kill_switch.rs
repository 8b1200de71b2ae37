//! The seed's second example. Python's `1 + '2'` fails with a TypeError; here
//! `add` takes its second operand as text, and parsing `"x"` fails.
//!
//! An `AnyFailedSwitch` stops the map at the first failure: the rest of the
//! failing batch is cancelled, the later batches are never submitted, and the
//! error says what became of every input. The flow run ends Failed with the
//! switch's reason.

use prefecto::concurrency::{AnyFailedSwitch, BatchTask, KillSwitchError};
use prefecto::prelude::*;

#[task]
fn add(a: i64, b: String) -> Result<i64, std::num::ParseIntError> {
    Ok(a + b.parse::<i64>()?)
}

#[flow]
fn my_flow() -> Result<Vec<i64>, KillSwitchError<i64>> {
    let batch_add = BatchTask::new(add, 2)
        .expect("2 is a valid batch size")
        .with_kill_switch(AnyFailedSwitch::new());
    let operands = ["2", "x", "4", "5", "6", "7"].map(String::from);
    match batch_add.map(vec![1, 2, 3, 4, 5, 6], operands) {
        Ok(futures) => Ok(futures
            .results()
            .expect("no kill switch trip means all completed")),
        Err(err) => {
            let mut err = err
                .into_kill_switch()
                .expect("the arguments are valid, so only the switch can stop the map");
            println!("{err}");
            println!("partial results: {:?}", err.partial_results());
            println!("failed inputs: {:?}", err.failed_inputs());
            println!("cancelled inputs: {:?}", err.cancelled_inputs());
            for outcome in &err.outcomes {
                println!("  {} {}", outcome.task_run, outcome.state);
            }
            Err(err)
        }
    }
}

fn main() {
    match my_flow() {
        Ok(sums) => println!("{sums:?}"),
        Err(err) => {
            println!("{err}");
            std::process::exit(1);
        }
    }
}
