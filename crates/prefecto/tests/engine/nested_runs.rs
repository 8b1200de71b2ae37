//! A task body that calls, submits or maps other tasks, or waits for a
//! future it was given, never deadlocks on the pool it runs on: the inner
//! runs need no pool thread that their caller holds.

use std::time::Duration;

use prefecto::prelude::*;

use crate::common::{self, within};

const LIMIT: Duration = Duration::from_secs(20);

#[task]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[task]
fn calls_add(x: i64) -> Result<i64, TaskRunError> {
    add(x, 100)
}

#[task]
fn submits_add(x: i64) -> Result<i64, TaskRunError> {
    add.submit(x, 100).result()
}

#[task]
fn maps_add(x: i64) -> Result<i64, TaskRunError> {
    Ok(add
        .map(vec![x, x], unmapped(100))
        .unwrap()
        .results()?
        .iter()
        .sum())
}

#[task]
fn batch_maps_add(x: i64) -> Result<i64, prefecto::Error> {
    let batch = BatchTask::new(add, 2)?;
    Ok(batch
        .map(vec![x, x, x], unmapped(100))?
        .results()?
        .iter()
        .sum())
}

/// More inputs than the batch's size, in both modes: most runs are made
/// by the map's lanes, not where the body called it.
#[task]
fn batch_streams_add(x: i64) -> Result<i64, prefecto::Error> {
    let mut sum = 0;
    for batch in [
        BatchTask::new(add, 2)?,
        BatchTask::new(add, 2)?.sliding_window(),
    ] {
        sum += batch
            .map(vec![x; 5], unmapped(100))?
            .results()?
            .iter()
            .sum::<i64>();
        for run in batch.stream(vec![x; 5], unmapped(100))? {
            sum += run.result?;
        }
    }
    Ok(sum)
}

#[flow(max_workers = 1)]
fn one_worker_batch_streams() -> Vec<i64> {
    batch_streams_add.map(0..3).unwrap().results().unwrap()
}

#[test]
fn a_task_mapping_and_streaming_a_batch_task_with_one_worker_does_not_deadlock() {
    common::quiet();
    let sums = within(LIMIT, "BatchTask map and stream in a task", || {
        one_worker_batch_streams().unwrap()
    });
    assert_eq!(sums, vec![2000, 2020, 2040]);
}

#[task]
fn waits_for(upstream: PrefectFuture<i64>) -> Result<i64, TaskRunError> {
    Ok(upstream.result()? + 1)
}

#[flow(max_workers = 1)]
fn one_worker_calls() -> Vec<i64> {
    calls_add.map(0..3).unwrap().results().unwrap()
}

#[flow(max_workers = 2)]
fn two_workers_four_inputs() -> Vec<i64> {
    calls_add.map(0..4).unwrap().results().unwrap()
}

#[flow]
fn default_pool_more_inputs_than_cores() -> Vec<i64> {
    calls_add.map(0..64).unwrap().results().unwrap()
}

#[flow(max_workers = 1)]
fn one_worker_submits_maps_and_batches() -> (Vec<i64>, Vec<i64>, Vec<i64>) {
    let submitted = submits_add.map(0..3).unwrap().results().unwrap();
    let mapped = maps_add.map(0..3).unwrap().results().unwrap();
    let batched = batch_maps_add.map(0..3).unwrap().results().unwrap();
    (submitted, mapped, batched)
}

#[flow(max_workers = 1)]
fn one_worker_future_as_argument() -> Vec<i64> {
    (0..20)
        .map(|i| {
            let upstream = add.submit(i, 0);
            waits_for.submit(upstream)
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|f| f.result().unwrap())
        .collect()
}

#[test]
fn a_task_calling_a_task_with_one_worker_does_not_deadlock() {
    common::quiet();
    let results = within(LIMIT, "a task calling a task on one worker", || {
        one_worker_calls().unwrap()
    });
    assert_eq!(results, vec![100, 101, 102]);
}

#[test]
fn a_task_calling_a_task_with_more_inputs_than_workers_does_not_deadlock() {
    common::quiet();
    let results = within(LIMIT, "4 inputs calling tasks on 2 workers", || {
        two_workers_four_inputs().unwrap()
    });
    assert_eq!(results, vec![100, 101, 102, 103]);
    let results = within(LIMIT, "64 inputs calling tasks on the default pool", || {
        default_pool_more_inputs_than_cores().unwrap()
    });
    assert_eq!(results, (100..164).collect::<Vec<_>>());
}

#[test]
fn a_task_submitting_or_mapping_tasks_with_one_worker_does_not_deadlock() {
    common::quiet();
    let (submitted, mapped, batched) = within(LIMIT, "submit, map, BatchTask in a task", || {
        one_worker_submits_maps_and_batches().unwrap()
    });
    assert_eq!(submitted, vec![100, 101, 102]);
    assert_eq!(mapped, vec![200, 202, 204]);
    assert_eq!(batched, vec![300, 303, 306]);
}

#[test]
fn a_future_resolved_inside_a_body_with_one_worker_does_not_deadlock() {
    common::quiet();
    for _ in 0..5 {
        let results = within(LIMIT, "a future resolved in a body on one worker", || {
            one_worker_future_as_argument().unwrap()
        });
        assert_eq!(results, (1..21).collect::<Vec<_>>());
    }
}

#[test]
fn an_inner_call_is_a_task_run_of_its_own_in_the_callers_thread() {
    common::quiet();
    #[task]
    fn thread_name() -> String {
        std::thread::current().name().unwrap_or("").to_string()
    }
    #[task]
    fn outer_and_inner_threads() -> Result<(String, String), TaskRunError> {
        let outer = std::thread::current().name().unwrap_or("").to_string();
        Ok((outer, thread_name()?))
    }
    #[flow(max_workers = 4)]
    fn threads() -> (prefecto::flow::FlowRunInfo, (String, String)) {
        (
            prefecto::flow::current_flow_run().unwrap(),
            outer_and_inner_threads().unwrap(),
        )
    }
    let (info, (outer, inner)) = within(LIMIT, "a nested call", || threads().unwrap());
    assert_eq!(outer, inner);
    let runs = common::Recording::installed().final_task_states(info.id);
    assert_eq!(
        runs.len(),
        2,
        "the inner call is a task run of its own: {runs:?}"
    );
}
