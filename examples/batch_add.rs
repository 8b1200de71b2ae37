//! The seed's first example: `add` mapped over four pairs, two at a time.
//!
//! Run it with `cargo run --release --example batch_add`; set
//! `PREFECTO_LOGGING_LEVEL=DEBUG` to see the batch lines.

use prefecto::prelude::*;

#[task]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[flow]
fn my_flow() -> Result<Vec<i64>, prefecto::Error> {
    let batch_add = BatchTask::new(add, 2)?;
    let futures = batch_add.map(vec![1, 2, 3, 4], vec![2, 3, 4, 5])?;
    Ok(futures.results()?)
}

fn main() -> Result<(), FlowRunError> {
    println!("{:?}", my_flow()?);
    Ok(())
}
