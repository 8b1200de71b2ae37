//! The outbox's shards, packs and lists of plain ends, against what the
//! writer receives.

use super::*;
use std::sync::mpsc;

fn log(thread: u64, seq: usize) -> Event {
    Event::Log {
        flow_run: uuid::Uuid::nil(),
        task_run: Some(("t", thread)),
        level: "INFO",
        logger: "test",
        message: seq.to_string(),
        micros: 0,
    }
}

/// What the writer gets for each task run's end, by run number: `true`
/// for a run packed by the outbox, `false` for one sent as its transition.
fn ends(receiver: &mpsc::Receiver<Vec<Event>>) -> Vec<(u64, bool)> {
    let mut ends = Vec::new();
    for event in receiver.try_iter().flatten() {
        match event {
            Event::Packed { pack, .. } => {
                let runs = super::super::pack::unpack(pack.body()).unwrap();
                ends.extend(runs.iter().map(|run| (run.index, true)));
            }
            Event::TaskRun { index, state, .. } if state.is_terminal() => ends.push((index, false)),
            _ => {}
        }
    }
    ends.sort_unstable();
    ends
}

#[test]
fn only_a_run_the_writer_has_nothing_of_is_packed_at_its_end() {
    let (sender, receiver) = mpsc::channel();
    let outbox = Outbox::new(sender, Arc::new(Backlog::default()));
    let key = |index| RunKey::Task(uuid::Uuid::nil(), "t", index);
    let times = TimesRow {
        created: 10,
        started: Some(20),
        run_count: 1,
    };
    let done = State::completed();
    // 1: quick.
    outbox.running(key(1), 1, 10, 20);
    outbox.push_end(key(1), 1, &done, times);
    // 2: an earlier transition went to the writer (before it started).
    let waiting = Event::TaskRun {
        flow_run: uuid::Uuid::nil(),
        task: "t",
        index: 2,
        state: State::awaiting_retry("later"),
        times: Some(times),
    };
    outbox.push_transition(key(2), 2, waiting, false);
    outbox.running(key(2), 2, 10, 20);
    outbox.push_end(key(2), 2, &done, times);
    // 3: it lingered, and was written as it stood.
    outbox.running(key(3), 3, 10, 20);
    assert_eq!(outbox.lingering(i64::MAX).len(), 1);
    outbox.push_end(key(3), 3, &done, times);
    // 4: never noted as running (its recorders heard only its end).
    outbox.push_end(key(4), 4, &done, times);
    // 5: quick, after 2's end: the writer has nothing of it.
    outbox.running(key(2), 2, 10, 20);
    outbox.push_end(key(2), 2, &done, times);
    outbox.drain();
    let expected = [(1, true), (2, false), (2, true), (3, false), (4, true)];
    assert_eq!(ends(&receiver), expected);
}

#[test]
fn a_shard_sends_a_pack_once_full_and_keeps_a_few_open() {
    let (sender, receiver) = mpsc::channel();
    let outbox = Outbox::new(sender, Arc::new(Backlog::default()));
    let times = TimesRow {
        created: 10,
        started: Some(20),
        run_count: 1,
    };
    // One shard (index 0 and multiples of the shard count), many tasks.
    let step = outbox.shards.len() as u64;
    const TASKS: [&str; OPEN_PACKS + 1] = ["a", "b", "c", "d", "e"];
    for (n, task) in TASKS.iter().enumerate() {
        let key = RunKey::Task(uuid::Uuid::nil(), task, n as u64 * step);
        outbox.running(key, n as u64 * step, 10, 20);
        outbox.push_end(key, n as u64 * step, &State::completed(), times);
    }
    // The fifth task's pack sent the first's, still in the shard's
    // events (not a full parcel).
    assert!(receiver.try_recv().is_err());
    outbox.drain();
    let sent: Vec<&str> = receiver
        .try_iter()
        .flatten()
        .filter_map(|event| match event {
            Event::Packed { task, .. } => Some(task),
            _ => None,
        })
        .collect();
    assert_eq!(sent, TASKS);
    // A full pack goes without a drain.
    let mut runs = 0;
    let parcel = loop {
        if let Ok(parcel) = receiver.try_recv() {
            break parcel;
        }
        let index = runs * step;
        let key = RunKey::Task(uuid::Uuid::nil(), "a", index);
        outbox.running(key, index, 10, 20);
        outbox.push_end(key, index, &State::completed(), times);
        runs += 1;
        assert!(runs < 100_000, "no pack was sent");
    };
    let [Event::Packed { pack, .. }] = &parcel[..] else {
        panic!("one pack");
    };
    assert_eq!(pack.runs() as u64, runs);
    assert!(pack.body().len() >= PACK_BYTES);
}

fn plain_end(index: u64) -> PlainEnd {
    PlainEnd {
        index,
        created_nanos: 1_000,
        started_nanos: 2_000,
        ended_nanos: 3_000,
        run_count: 1,
        state_type: crate::state::StateType::Completed,
    }
}

/// A lane's list, as lanes make them (a full list's room), of runs `from..to`.
fn lane_list(backlog: &Backlog, from: u64, to: u64) -> Vec<PlainEnd> {
    let mut list = backlog.empty_ends();
    list.extend((from..to).map(plain_end));
    list
}

/// The run numbers of the lists a parcel holds, list by list.
fn listed(parcel: &[Event]) -> Vec<Vec<u64>> {
    parcel
        .iter()
        .map(|event| match event {
            Event::Ended { ends, .. } => ends.iter().map(|end| end.index).collect(),
            _ => panic!("only lists of plain ends were sent"),
        })
        .collect()
}

#[test]
fn lanes_plain_ends_go_a_few_thousand_runs_at_a_time_and_the_rest_at_a_drain() {
    let (sender, receiver) = mpsc::channel();
    let backlog = Arc::new(Backlog::default());
    let outbox = Outbox::new(sender, backlog.clone());
    let full = LANE_ENDS as u64;
    let lists = (ENDED_RUNS_PER_PARCEL / LANE_ENDS) as u64;
    for list in 0..lists - 1 {
        outbox.send_ended(
            Uuid::nil(),
            "t",
            lane_list(&backlog, list * full, (list + 1) * full),
        );
    }
    assert!(
        receiver.try_recv().is_err(),
        "held until a few thousand runs wait"
    );
    assert!(backlog.queued() > 0, "held lists count in the backlog");
    outbox.send_ended(
        Uuid::nil(),
        "t",
        lane_list(&backlog, (lists - 1) * full, lists * full),
    );
    let parcel = receiver.try_recv().unwrap();
    assert_eq!(parcel.len(), lists as usize);
    assert_eq!(
        listed(&parcel).concat(),
        (0..lists * full).collect::<Vec<_>>()
    );
    outbox.send_ended(Uuid::nil(), "t", lane_list(&backlog, 5_000, 5_001));
    outbox.drain();
    let rest = receiver.try_recv().unwrap();
    assert_eq!(listed(&rest), [[5_000]]);
    assert!(receiver.try_recv().is_err());
}

#[test]
fn short_lists_of_the_same_runs_are_sent_as_full_ones_and_given_back() {
    let (sender, receiver) = mpsc::channel();
    let backlog = Arc::new(Backlog::default());
    let outbox = Outbox::new(sender, backlog.clone());
    // A stream's lanes, pausing every 100 runs: two flow runs' lists, by turns.
    let (first, second) = (Uuid::nil(), Uuid::from_u128(1));
    let mut sent = Vec::new();
    for list in 0..100u64 {
        let flow_run = if list % 2 == 0 { first } else { second };
        outbox.send_ended(
            flow_run,
            "t",
            lane_list(&backlog, list * 100, (list + 1) * 100),
        );
        sent.extend(receiver.try_iter());
    }
    outbox.drain();
    sent.extend(receiver.try_iter());
    let mut by_flow_run: [Vec<u64>; 2] = Default::default();
    let (mut weight, mut lists) = (0, 0);
    for event in sent.iter().flatten() {
        let Event::Ended { flow_run, ends, .. } = event else {
            panic!("only lists of plain ends were sent");
        };
        assert!(ends.len() <= LANE_ENDS, "no list outgrows a lane's");
        lists += 1;
        by_flow_run[(*flow_run == second) as usize].extend(ends.iter().map(|end| end.index));
        weight += event.weight();
    }
    // Every run once, each flow run's in the order they were sent.
    let runs = |parity: u64| -> Vec<u64> {
        (0..100u64)
            .filter(|list| list % 2 == parity)
            .flat_map(|list| list * 100..(list + 1) * 100)
            .collect()
    };
    assert_eq!(by_flow_run, [runs(0), runs(1)]);
    // 10,000 runs in lists of up to 1,024 (ten hundreds each), a few
    // thousand runs to a parcel: not 100 lists in 25 parcels.
    assert!(lists <= 16, "{lists} lists");
    assert!(sent.len() <= 4, "{} parcels", sent.len());
    // The backlog counts what the writer will take: no more, no less.
    assert_eq!(backlog.queued(), weight);
    // The short lists went back to the spares, for the lanes to fill again.
    assert!(backlog.empty_ends().capacity() == LANE_ENDS);
}

#[test]
fn a_parcel_the_writer_gives_back_is_filled_again() {
    let (sender, receiver) = mpsc::channel();
    let backlog = Arc::new(Backlog::default());
    let outbox = Outbox::new(sender, backlog.clone());
    for seq in 0..PARCEL {
        outbox.push(0, log(0, seq));
    }
    let first = receiver.try_recv().expect("a full parcel is sent");
    assert_eq!(first.len(), PARCEL);
    let address = first.as_ptr();
    backlog.give_back(first);
    // The shard took a parcel when it sent its full one: the next
    // full parcel is sent in the one given back.
    for seq in 0..2 * PARCEL {
        outbox.push(0, log(0, seq));
    }
    let _second = receiver.try_recv().expect("a second parcel");
    let third = receiver.try_recv().expect("a third parcel");
    assert_eq!(third.as_ptr(), address);
    // `send_now`'s one-event parcels are not kept.
    outbox.send_now(log(0, 0));
    backlog.give_back(receiver.try_recv().unwrap());
    assert_eq!(backlog.spare_parcels(), 0);
}

#[test]
fn every_event_arrives_once_and_each_runs_in_order_while_shards_are_drained() {
    let (sender, receiver) = mpsc::channel();
    let backlog = Arc::new(Backlog::default());
    let outbox = Arc::new(Outbox::new(sender, backlog.clone()));
    const THREADS: u64 = 4;
    const EACH: usize = 1000;
    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            let outbox = &outbox;
            scope.spawn(move || {
                for seq in 0..EACH {
                    outbox.push(thread, log(thread, seq));
                }
            });
        }
        // The writer's periodic fetch, racing the pushes.
        scope.spawn(|| {
            for _ in 0..200 {
                outbox.drain();
                std::thread::yield_now();
            }
        });
    });
    drop(outbox);
    let mut next = [0usize; THREADS as usize];
    let mut total = 0;
    for event in receiver.iter().flatten() {
        let Event::Log {
            task_run: Some((_, thread)),
            message,
            ..
        } = event
        else {
            panic!("only logs were sent");
        };
        assert_eq!(message, next[thread as usize].to_string());
        next[thread as usize] += 1;
        total += 1;
    }
    assert_eq!(total, THREADS as usize * EACH);
    assert_eq!(backlog.queued(), total);
}
