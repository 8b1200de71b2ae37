//! One straggler among quick inputs, in both modes.
//!
//! Strict batches wait for their slowest run before the next batch starts; the
//! sliding window starts the next input as soon as any run finishes.

use std::time::{Duration, Instant};

use prefecto::prelude::*;

#[task]
async fn fetch(item: u32) -> u32 {
    // Every tenth item is a straggler.
    let millis = if item.is_multiple_of(10) { 200 } else { 10 };
    tokio::time::sleep(Duration::from_millis(millis)).await;
    item
}

#[flow]
async fn compare() -> Result<(), prefecto::Error> {
    let items: Vec<u32> = (0..100).collect();
    for batch in [
        BatchTask::new(fetch, 10)?,
        BatchTask::new(fetch, 10)?.sliding_window(),
    ] {
        let started = Instant::now();
        let results = batch
            .map_async(items.clone())
            .await?
            .results_async()
            .await?;
        assert_eq!(results, items);
        println!(
            "{:?} mode: {} inputs in {:.2?}",
            batch.mode(),
            results.len(),
            started.elapsed()
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), FlowRunError> {
    compare().await
}
