//! [`Prefaulted`]: a large list's buffer, faulted in a stretch at a time
//! ahead of the writes that fill it.
//!
//! A collecting map of a million inputs writes a 64 MB list of futures, one
//! per input. glibc maps any block past 32 MB fresh from the kernel and
//! unmaps it when freed, so each of its 16,000 pages faulted as a lane
//! first wrote it: an exception per page, on the lane's thread, between
//! runs. Asking the kernel for a stretch of pages in one call
//! (`MADV_POPULATE_WRITE`, Linux 5.14) does the same work without them.
//! The window/async map at 1,000,000 inputs, three runs in a process: 60.8k
//! page faults → 14.0k (`perf stat`), 0.185 → 0.175 µs per input (six
//! processes of each build by turns; an earlier six: 0.176 → 0.177, within
//! the host's noise); window/sync 0.161 → 0.143 (four each). The whole list
//! at once measured the same (0.176). A stretch at a time, so that a map a
//! kill switch stops early does not fault in what it never writes.
//!
//! A stretch is planned where the list is written (under a map's queue
//! lock) and faulted in once the lock is let go ([`Stretch`]): faulting in
//! 2 MB takes the kernel a hundred microseconds or more, which the other
//! threads' lanes spent waiting for the lock. It is planned half a stretch
//! before the writes reach it, so that it is mostly in memory when they do.
//! Window/async at 1,000,000 inputs, processes of each build by turns:
//! 0.134 → 0.110 µs per input with three runs in a process (eight each),
//! 0.141 → 0.118 with one (five each); window/sync, whose pool lanes take
//! few looks, 0.161 → 0.159.

/// How many bytes are faulted in at a time.
const STRETCH: usize = 2 << 20;

/// Lists smaller than this are left alone: glibc serves them from memory
/// it has already, mostly.
const LARGE: usize = 4 << 20;

/// A list's buffer, and how much of it is faulted in.
pub(crate) struct Prefaulted {
    /// Its address, and its length in bytes.
    start: usize,
    bytes: usize,
    /// Elements of `size` bytes; those from `faulted` on are not planned
    /// to be faulted in yet.
    size: usize,
    faulted: usize,
}

/// Part of a list to fault in, planned where the list is written: faulted
/// in by whoever planned it, once it has let the list's lock go. Dropped
/// unused, its pages fault in as they are written, as without it.
#[must_use]
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Stretch {
    start: usize,
    bytes: usize,
}

impl Stretch {
    /// Faults the stretch in, as writes to it would, without writing it.
    pub(crate) fn fault_in(self) {
        populate_for_writing(self.start, self.bytes);
    }
}

impl Prefaulted {
    /// For `buffer`'s spare room, if it is large and the kernel can fault
    /// it in ahead. The buffer may move only by growing past its capacity,
    /// which [`before_writing`](Self::before_writing) is told of: it then
    /// stops, never touching memory the list no longer holds.
    pub(crate) fn of<T>(buffer: &mut Vec<T>) -> Option<Self> {
        let size = std::mem::size_of::<T>();
        let bytes = buffer.capacity().checked_mul(size)?;
        let large = cfg!(target_os = "linux") && bytes >= LARGE && buffer.is_empty();
        large.then_some(Prefaulted {
            start: buffer.as_mut_ptr() as usize,
            bytes,
            size,
            faulted: 0,
        })
    }

    /// Before element `len` is written to the list, which has room for
    /// `capacity`: the next stretch to fault in, once `len` is within half
    /// a stretch of those planned.
    #[inline]
    pub(crate) fn before_writing(&mut self, len: usize, capacity: usize) -> Option<Stretch> {
        match len.saturating_add(STRETCH / 2 / self.size) >= self.faulted {
            true => self.plan_from(len, capacity),
            false => None,
        }
    }

    #[cold]
    fn plan_from(&mut self, len: usize, capacity: usize) -> Option<Stretch> {
        if capacity.checked_mul(self.size) != Some(self.bytes) || len >= capacity {
            // It grew (or is about to): its buffer moved.
            self.faulted = usize::MAX;
            return None;
        }
        let from = self
            .faulted
            .max(len)
            .saturating_mul(self.size)
            .min(self.bytes);
        let to = from.saturating_add(STRETCH).min(self.bytes);
        if to == from {
            // All of it planned already.
            self.faulted = usize::MAX;
            return None;
        }
        // Whole elements, so that the next stretch begins where this one ended.
        self.faulted = to.div_ceil(self.size).max(len + 1);
        Some(Stretch {
            start: self.start + from,
            bytes: to - from,
        })
    }
}

/// Faults in the whole pages of `bytes` bytes at `start` as a write
/// would, without writing them.
#[cfg(target_os = "linux")]
fn populate_for_writing(start: usize, bytes: usize) {
    // SAFETY: `sysconf` only reads a value of the process.
    let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        page if page > 0 => page as usize,
        _ => return,
    };
    let from = start.next_multiple_of(page);
    let to = (start + bytes) / page * page;
    if to > from {
        // SAFETY: the range is within an allocation of ours (or, if the
        // list moved, memory of the process); MADV_POPULATE_WRITE maps its
        // pages writable as writes would and changes no byte of them. It
        // fails on kernels before 5.14 (EINVAL) and on unmapped memory
        // (ENOMEM): the writes then fault the pages in, as without it.
        unsafe {
            libc::madvise(
                from as *mut libc::c_void,
                to - from,
                libc::MADV_POPULATE_WRITE,
            )
        };
    }
}

#[cfg(not(target_os = "linux"))]
fn populate_for_writing(_start: usize, _bytes: usize) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_list_is_faulted_in_a_stretch_ahead_of_its_writes() {
        let mut buffer: Vec<[u64; 8]> = Vec::with_capacity(200_000);
        let ahead = Prefaulted::of(&mut buffer);
        // 12.8 MB is large, where the kernel can fault it in ahead.
        assert_eq!(ahead.is_some(), cfg!(target_os = "linux"));
        let Some(mut ahead) = ahead else { return };
        let (per_stretch, start) = (STRETCH / 64, buffer.as_ptr() as usize);
        let mut planned = Vec::new();
        for len in 0..buffer.capacity() {
            if let Some(stretch) = ahead.before_writing(len, buffer.capacity()) {
                // Planned half a stretch before the writes reach it.
                assert!(stretch.start >= start + len * 64, "at {len}");
                assert!(
                    stretch.start <= start + (len + per_stretch / 2) * 64,
                    "at {len}"
                );
                planned.push((len, stretch.start - start, stretch.bytes));
                stretch.fault_in();
            }
            buffer.push([len as u64; 8]);
        }
        assert!(buffer.iter().enumerate().all(|(i, e)| e[7] == i as u64));
        // Stretches one after the other, from the start to the end.
        let ends: Vec<_> = planned.iter().map(|&(_, at, bytes)| at + bytes).collect();
        let starts: Vec<_> = planned.iter().skip(1).map(|&(_, at, _)| at).collect();
        assert_eq!(planned[0].1, 0);
        assert_eq!(starts, ends[..ends.len() - 1]);
        assert_eq!(ends.last(), Some(&(buffer.capacity() * 64)));
        assert_eq!(planned.len(), (buffer.capacity() * 64).div_ceil(STRETCH));
    }

    /// How many of the pages of `bytes` bytes at `start` are in memory.
    #[cfg(target_os = "linux")]
    fn page_size() -> usize {
        // SAFETY: `sysconf` only reads a value of the process.
        unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
    }

    #[cfg(target_os = "linux")]
    fn resident_pages(start: usize, bytes: usize) -> usize {
        let page = page_size();
        let from = start.next_multiple_of(page);
        let pages = (start + bytes - from) / page;
        let mut resident = vec![0u8; pages];
        // SAFETY: `resident` has a byte for each page of the range, which
        // is within the caller's allocation.
        let done = unsafe {
            libc::mincore(
                from as *mut libc::c_void,
                pages * page,
                resident.as_mut_ptr(),
            )
        };
        assert_eq!(done, 0, "mincore");
        resident.iter().filter(|&&r| r & 1 == 1).count()
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_stretch_ahead_is_in_memory_before_it_is_written_and_the_rest_is_not() {
        // 40 MB: past glibc's largest mmap threshold, so fresh from the
        // kernel, with no page in memory until it is touched.
        let mut buffer: Vec<u64> = Vec::with_capacity(5 << 20);
        let start = buffer.as_mut_ptr() as usize;
        let mut ahead = Prefaulted::of(&mut buffer).unwrap();
        assert_eq!(resident_pages(start, STRETCH), 0, "untouched");
        let planned = ahead.before_writing(0, buffer.capacity()).unwrap();
        assert_eq!(resident_pages(start, STRETCH), 0, "planned, not faulted in");
        planned.fault_in();
        let stretch = resident_pages(start, STRETCH);
        assert!(
            stretch >= STRETCH / page_size() - 1,
            "{stretch} pages in memory"
        );
        let beyond = start + 4 * STRETCH;
        assert_eq!(resident_pages(beyond, STRETCH), 0, "beyond the stretch");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_list_that_grew_past_its_room_is_left_alone() {
        let mut buffer: Vec<u64> = Vec::with_capacity(1 << 20);
        let mut ahead = Prefaulted::of(&mut buffer).unwrap();
        assert!(ahead.before_writing(0, buffer.capacity()).is_some());
        buffer.resize(buffer.capacity() + 1, 0);
        assert_eq!(ahead.before_writing(ahead.faulted, buffer.capacity()), None);
        assert_eq!(ahead.faulted, usize::MAX);
    }

    #[test]
    fn a_small_or_started_list_is_left_alone() {
        assert!(Prefaulted::of(&mut Vec::<u64>::with_capacity(1000)).is_none());
        let mut started: Vec<u64> = Vec::with_capacity(1 << 20);
        started.push(1);
        assert!(Prefaulted::of(&mut started).is_none());
    }
}
