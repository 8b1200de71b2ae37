//! A flow with parameters: the sum of the squares of 1..=n, in batches.
//!
//! Run as is, it uses the parameters in `main`. Started by a Prefect worker
//! (or with `PREFECT__FLOW_RUN_ID` set by hand, and `PREFECT_API_URL`), it
//! adopts that flow run and takes `n` and `size` from the server.

use prefecto::prelude::*;

#[task]
fn square(x: u64) -> u64 {
    x * x
}

#[flow]
fn squares(n: u64, size: usize) -> Result<u64, prefecto::Error> {
    let batch = BatchTask::new(square, size)?;
    Ok(batch.map(1..=n)?.results()?.iter().sum())
}

fn main() -> Result<(), FlowRunError> {
    println!("{}", squares(4, 2)?);
    Ok(())
}
