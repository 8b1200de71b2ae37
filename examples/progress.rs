//! A long map with a progress bar: run it in a terminal.
//!
//! `cargo run --release --example progress` shows completed, failed and total,
//! the current batch, the rate and the ETA, with the log lines above the bar.

use std::time::Duration;

use prefecto::prelude::*;

#[task]
async fn fetch(item: u32) -> Result<u32, String> {
    tokio::time::sleep(Duration::from_millis(20 + u64::from(item % 7) * 5)).await;
    if item % 97 == 13 {
        return Err(format!("item {item} is missing"));
    }
    Ok(item)
}

#[flow]
async fn fetch_all() -> usize {
    let batch = BatchTask::new(fetch, 50).unwrap();
    let futures = batch.map_async(0..2_000u32).await.unwrap();
    let states = futures.wait_async().await;
    states.iter().filter(|s| s.is_completed()).count()
}

#[tokio::main]
async fn main() -> Result<(), FlowRunError> {
    let completed = fetch_all().await?;
    println!("{completed} of 2000 completed");
    Ok(())
}
