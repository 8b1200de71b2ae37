//! A full disk: the run history keeps a reserve file beside the database,
//! given up the moment SQLite finds no room, so that the runs going on (and
//! above all the flow run's end) are still written; what does not fit even
//! then waits in memory and is written again once space returns.
//!
//! Without this, a flow run that completed while the disk was full stayed
//! `Running` in the database and was later shown `Crashed`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::Store;
use super::event::Event;
use super::outbox::FastMap;
use super::pack::Packs;
use super::sql::{Plan, write_batch};

/// How often writes that found no room are tried again.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// At most this many task runs wait in memory for space; beyond, they are
/// counted as lost (the warning says how many).
const MAX_WAITING_RUNS: usize = 1_000_000;

/// Whether SQLite failed for want of room.
pub(super) fn is_full(error: &rusqlite::Error) -> bool {
    error.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull)
}

/// The reserve file beside a database.
pub(super) struct Reserve {
    path: PathBuf,
    present: bool,
}

impl Reserve {
    /// Makes sure a reserve of `megabytes` lies beside `database` (best
    /// effort: a disk already full gets none, and the next start tries again).
    pub(super) fn keep(database: &Path, megabytes: u64) -> Reserve {
        let mut path = database.as_os_str().to_owned();
        path.push(".reserve");
        let path = PathBuf::from(path);
        let bytes = megabytes * 1024 * 1024;
        let present = bytes > 0
            && (std::fs::metadata(&path).is_ok_and(|m| m.len() >= bytes)
                || fill(&path, bytes).is_ok());
        if !present {
            let _ = std::fs::remove_file(&path);
        }
        Reserve { path, present }
    }

    /// Gives the reserve's space back to the disk. True if there was any.
    pub(super) fn release(&mut self) -> bool {
        let released = self.present && std::fs::remove_file(&self.path).is_ok();
        self.present = false;
        released
    }
}

/// Written block by block: a sparse file (`set_len`) would reserve nothing.
fn fill(path: &Path, bytes: u64) -> std::io::Result<()> {
    let mut file = std::fs::File::create(path)?;
    let block = vec![0u8; 64 * 1024];
    let mut written = 0;
    while written < bytes {
        file.write_all(&block)?;
        written += block.len() as u64;
    }
    file.sync_all()
}

/// Writes that found the disk full, waiting for space.
#[derive(Default)]
pub(super) struct Waiting {
    batches: Vec<(Vec<Event>, Packs)>,
    runs: usize,
    lost: usize,
    next_try: Option<Instant>,
}

impl Waiting {
    /// Task runs waiting, and task runs lost for want of memory to wait in.
    pub(super) fn counts(&self) -> (usize, usize) {
        (self.runs, self.lost)
    }

    /// Whether the disk was full at the last try.
    pub(super) fn stalled(&self) -> bool {
        self.next_try.is_some()
    }

    /// Whether it is time to try the disk again.
    pub(super) fn due(&self, now: Instant) -> bool {
        self.next_try.is_none_or(|at| now >= at)
    }

    /// A write found the disk full at `now`: the next try waits a moment.
    pub(super) fn failed(&mut self, now: Instant) {
        self.next_try = Some(now + RETRY_EVERY);
    }

    /// Holds what a failed write held, to be written once space returns.
    pub(super) fn hold(&mut self, others: Vec<Event>, packs: Packs) {
        let runs: usize = packs.iter().map(|(_, pack)| pack.runs()).sum();
        if self.runs + runs > MAX_WAITING_RUNS {
            self.lost += runs;
            return;
        }
        let others: Vec<Event> = others
            .into_iter()
            .filter(|e| !matches!(e, Event::Flush(_)))
            .collect();
        if others.is_empty() && packs.is_empty() {
            return;
        }
        self.runs += runs;
        self.batches.push((others, packs));
    }

    /// Writes what waits, oldest first; stops at the first failure.
    pub(super) fn write(&mut self, store: &mut Store) -> Result<(), rusqlite::Error> {
        let unwritten = FastMap::default();
        while let Some((others, packs)) = self.batches.first() {
            let plan = Plan {
                others,
                as_rows: &[],
                unwritten: &unwritten,
                packs,
            };
            write_batch(store, &plan)?;
            let (_, packs) = self.batches.remove(0);
            self.runs -= packs.iter().map(|(_, pack)| pack.runs()).sum::<usize>();
        }
        Ok(())
    }

    /// The disk took a write again.
    pub(super) fn recovered(&mut self) {
        self.next_try = None;
    }
}

#[cfg(test)]
mod tests {
    use super::super::pack::Pack;
    use super::*;
    use uuid::Uuid;

    #[test]
    fn the_reserve_is_made_once_and_given_back() {
        let dir = std::env::temp_dir().join(format!("prefecto-reserve-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("history.db");
        let mut reserve = Reserve::keep(&db, 1);
        let file = dir.join("history.db.reserve");
        assert_eq!(std::fs::metadata(&file).unwrap().len(), 1024 * 1024);
        assert!(reserve.release());
        assert!(!file.exists());
        assert!(!reserve.release(), "released once");
        let mut none = Reserve::keep(&db, 0);
        assert!(!none.release());
        assert!(!file.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn waiting_writes_beyond_the_cap_are_counted_lost() {
        let mut waiting = Waiting::default();
        let now = Instant::now();
        assert!(waiting.due(now));
        waiting.runs = MAX_WAITING_RUNS;
        let mut packs = Packs::new();
        let mut pack = Pack::default();
        pack.push(&super::super::pack::Run {
            index: 0,
            created: 0,
            start: None,
            end: None,
            run_count: 1,
            state: super::super::pack::RunState {
                state_type: crate::state::StateType::Completed,
                name: std::borrow::Cow::Borrowed("Completed"),
                message: None,
            },
            history: Vec::new(),
        });
        packs.push(((Uuid::nil(), "t"), pack));
        waiting.hold(Vec::new(), packs);
        waiting.failed(now);
        assert_eq!(waiting.counts(), (MAX_WAITING_RUNS, 1));
        assert!(waiting.stalled());
        assert!(!waiting.due(now));
        assert!(waiting.due(now + RETRY_EVERY));
    }
}
