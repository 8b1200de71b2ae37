//! The lanes' plain ends, packed on the writer's thread as their lists
//! come (`lane_pack.rs` keeps them on the lanes, `Outbox::send_ended`
//! sends them): a map's runs are then mostly packed by the time it ends.

use uuid::Uuid;

use super::backlog::Backlog;
use super::event::Event;
use super::outbox::{FastMap, PACK_BYTES};
use super::pack::{Pack, Packs};

/// Packs the lanes' plain ends a parcel holds (`Event::Ended`), in the
/// order each lane made its runs, and gives their lists back. A pack of a
/// flow run's task that fills is set aside whole, as the outbox's are.
pub(super) fn pack_plain_ends(
    parcel: &mut Vec<Event>,
    packs: &mut FastMap<(Uuid, &'static str), Pack>,
    ready: &mut Packs,
    writer: &mut WriterPacks,
    backlog: &Backlog,
) {
    if !parcel.iter().any(|e| matches!(e, Event::Ended { .. })) {
        return;
    }
    // A parcel with lists holds nothing else (`Outbox::send_ended`), but
    // any other event keeps its place.
    for event in std::mem::take(parcel) {
        let Event::Ended {
            flow_run,
            task,
            ends,
        } = event
        else {
            parcel.push(event);
            continue;
        };
        let key = (flow_run, task);
        let pack = packs.entry(key).or_insert_with(|| writer.fresh());
        for end in &ends {
            pack.push_plain_end(end);
            if pack.body().len() >= PACK_BYTES {
                ready.push((key, std::mem::replace(pack, writer.fresh())));
            }
        }
        backlog.give_back_ends(ends);
    }
}

/// The writer's own packs of plain ends, kept from one batch to the next
/// and made with a full pack's room: made afresh from empty, each grew
/// through a few reallocations, copying what it held each time.
#[derive(Default)]
pub(super) struct WriterPacks {
    spare: Vec<Pack>,
}

/// A pack's room: a full pack and the one run that fills it.
const PACK_ROOM: usize = PACK_BYTES + 64;
/// At most this many packs wait to be filled again (~1 MiB).
const SPARE_PACKS: usize = 64;

impl WriterPacks {
    pub(super) fn fresh(&mut self) -> Pack {
        self.spare
            .pop()
            .unwrap_or_else(|| Pack::with_capacity(PACK_ROOM))
    }

    /// Keeps written packs of a pack's room (the outbox's, grown, too),
    /// emptied, to fill again; frees the rest.
    pub(super) fn recycle(&mut self, packs: Packs) {
        for (_, mut pack) in packs {
            if self.spare.len() < SPARE_PACKS
                && (PACK_ROOM..=2 * PACK_ROOM).contains(&pack.capacity())
            {
                pack.clear();
                self.spare.push(pack);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::StateType;
    use crate::store::backlog::LANE_ENDS;
    use crate::store::pack::{PlainEnd, unpack};

    fn lane_list(backlog: &Backlog, from: u64) -> Vec<PlainEnd> {
        let mut ends = backlog.empty_ends();
        let at = 1_790_000_000_000_000_000i64;
        ends.extend((from..from + LANE_ENDS as u64).map(|index| PlainEnd {
            index,
            created_nanos: at + index as i64 * 1_000,
            started_nanos: at + index as i64 * 1_000,
            ended_nanos: at + index as i64 * 1_000 + 500,
            run_count: 1,
            state_type: StateType::Completed,
        }));
        ends
    }

    #[test]
    fn plain_ends_are_packed_whole_packs_at_a_time_and_their_lists_go_back() {
        let backlog = Backlog::default();
        // Enough for a full pack: a quick run takes two bytes.
        let list_count = (2 * PACK_BYTES / LANE_ENDS) as u64;
        let mut parcel: Vec<Event> = (0..list_count)
            .map(|list| Event::Ended {
                flow_run: Uuid::nil(),
                task: "t",
                ends: lane_list(&backlog, list * LANE_ENDS as u64),
            })
            .collect();
        let lists: Vec<*const PlainEnd> = parcel
            .iter()
            .map(|event| match event {
                Event::Ended { ends, .. } => ends.as_ptr(),
                _ => unreachable!(),
            })
            .collect();
        parcel.push(Event::Flush(std::sync::mpsc::sync_channel(1).0));
        let (mut open, mut ready, mut writer) =
            (FastMap::default(), Packs::new(), WriterPacks::default());
        pack_plain_ends(&mut parcel, &mut open, &mut ready, &mut writer, &backlog);
        // The other events stay, for the batch.
        assert!(matches!(parcel[..], [Event::Flush(_)]));
        assert!(!ready.is_empty());
        for (_, pack) in &ready {
            assert!(pack.body().len() >= PACK_BYTES);
            assert!(pack.capacity() <= PACK_ROOM, "filled without growing");
        }
        let packs: Vec<&Pack> = ready.iter().map(|(_, p)| p).chain(open.values()).collect();
        let indexes: Vec<u64> = packs
            .iter()
            .flat_map(|pack| unpack(pack.body()).unwrap())
            .map(|run| run.index)
            .collect();
        assert_eq!(
            indexes,
            (0..list_count * LANE_ENDS as u64).collect::<Vec<_>>()
        );
        // The lists, emptied, are the lanes' again.
        let again = backlog.empty_ends();
        assert_eq!((again.len(), again.capacity()), (0, LANE_ENDS));
        assert!(lists.contains(&again.as_ptr()), "a list the lanes filled");
        // Written packs are filled again, not made afresh.
        let first = ready[0].1.body().as_ptr();
        writer.recycle(ready);
        let refilled: Vec<*const u8> = (0..4).map(|_| writer.fresh().body().as_ptr()).collect();
        assert!(refilled.contains(&first));
    }
}
