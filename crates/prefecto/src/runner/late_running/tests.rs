//! The slot a pool thread shares with the watcher: which bodies it pays,
//! and that a paid body's end waits for the payment, against a watcher
//! racing the bodies.

use super::*;
use std::sync::atomic::AtomicBool;

const TASK: usize = 0x1000;
const LATER: i64 = i64::MAX;

fn numbers(index: u64) -> BodyNumbers {
    BodyNumbers {
        index,
        created: index as i64 * 3,
        started: index as i64 * 3 + 1,
        run_count: 1,
    }
}

fn paid_by(slot: &Slot<&'static str>, now: i64) -> Vec<(&'static str, BodyNumbers)> {
    let mut paid = Vec::new();
    slot.pay_if_due(now, |slice, numbers| paid.push((*slice, numbers)));
    paid
}

#[test]
fn a_body_still_going_at_a_look_is_paid_once_and_its_end_says_so() {
    let slot = Slot::default();
    slot.begin_slice("slice", TASK);
    assert!(slot.owe(TASK, numbers(7)));
    // Started less than a look ago: not yet.
    assert!(paid_by(&slot, numbers(7).started).is_empty());
    assert_eq!(paid_by(&slot, LATER), [("slice", numbers(7))]);
    assert!(paid_by(&slot, LATER).is_empty(), "paid once");
    assert!(slot.end_body(), "its end hears it was paid");
    // The next body starts afresh.
    assert!(slot.owe(TASK, numbers(8)));
    assert!(!slot.end_body(), "ended before any look");
    assert!(
        paid_by(&slot, LATER).is_empty(),
        "an ended body is not paid"
    );
    slot.end_slice();
}

#[test]
fn a_body_is_not_owed_outside_its_slice_or_inside_another_body() {
    let slot: Slot<&'static str> = Slot::default();
    assert!(!slot.owe(TASK, numbers(0)), "no slice");
    slot.begin_slice("slice", TASK);
    assert!(!slot.owe(TASK + 8, numbers(0)), "another task's run");
    assert!(slot.owe(TASK, numbers(1)));
    assert!(!slot.owe(TASK, numbers(2)), "a body run inside a body owed");
    slot.end_slice();
    assert!(paid_by(&slot, LATER).is_empty(), "the slice ended");
    assert!(!slot.owe(TASK, numbers(3)), "no slice");
}

#[test]
fn against_a_racing_watcher_every_paid_body_is_paid_whole_once_before_its_end_returns() {
    const BODIES: u64 = 200_000;
    let slot: Arc<Slot<&'static str>> = Arc::new(Slot::default());
    let paid = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(AtomicBool::new(false));
    slot.begin_slice("slice", TASK);
    let watcher = {
        let (slot, paid, done) = (slot.clone(), paid.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                slot.pay_if_due(LATER, |_, numbers| {
                    paid.lock().unwrap().push(numbers);
                });
            }
        })
    };
    let mut ended_paid = Vec::new();
    // Until the watcher has taken a few hundred bodies (a loaded host may
    // not run it for a while), within 20 s.
    let began = std::time::Instant::now();
    let mut index = 0;
    while index < BODIES || (ended_paid.len() < 300 && began.elapsed().as_secs() < 20) {
        index += 1;
        assert!(slot.owe(TASK, numbers(index)));
        if slot.end_body() {
            // Paid before this end returned.
            let last = paid.lock().unwrap().last().copied();
            assert_eq!(last, Some(numbers(index)));
            ended_paid.push(index);
        }
    }
    done.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    let paid = paid.lock().unwrap();
    // Never torn between two bodies, and each paid once.
    assert_eq!(
        *paid,
        ended_paid.iter().map(|&i| numbers(i)).collect::<Vec<_>>()
    );
    assert!(!paid.is_empty(), "the watcher took some bodies");
}
