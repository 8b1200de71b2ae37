//! How a stopped map ends the inputs it never ran: those given back by
//! lanes that waited, and those never taken, as far as they can be read.

use std::task::Poll;

use super::map_run::MapRun;
use crate::context::flow_log;
use crate::state::State;
use crate::task::Task;

impl<T: Task> MapRun<T> {
    /// Ends in `Cancelled` every input given back by a lane and not taken
    /// since, and every input not yet taken, as far as it can be read: an
    /// iterator that may be endless (no upper bound in its `size_hint`), or
    /// a stream whose next input has not come, is left unread and named as
    /// such. Later calls find none left.
    pub(super) async fn cancel_unsubmitted(&self) {
        let message = match self.tripped.get() {
            Some((switch, reason)) => {
                format!("Cancelled by kill switch {switch} before submission: {reason}")
            }
            None => format!("{} It was never submitted.", self.scope.reason()),
        };
        // Submitted, given back by a lane that waited, and not run since:
        // ended as a lane would end them once the map stopped.
        let given_back: Vec<_> = self.queue().given_back.drain(..).collect();
        for (position, run, _) in given_back {
            let cancelled = State::cancelled(self.scope.reason());
            self.task_run(&run).finish(cancelled, None);
            self.observe(&run);
            self.deliver(position, &run, None).await;
        }
        let mut count = 0;
        // Said once, by the call that left them.
        let mut left_unread = None;
        loop {
            let cancelled = {
                let mut queue = self.queue();
                let read = match queue.exhausted || queue.inputs.upper_bound().is_none() {
                    true => Poll::Pending,
                    false => self.read_input(&mut queue, None, None),
                };
                match read {
                    Poll::Ready(read) => read.map(|(position, run, _)| (position, run)),
                    _ if queue.exhausted => None,
                    Poll::Pending => {
                        queue.exhausted = true;
                        queue.unread_from = Some(queue.next);
                        left_unread = queue.unread_from;
                        None
                    }
                }
            };
            let Some((position, run)) = cancelled else {
                break;
            };
            self.task_run(&run).cancel_unsubmitted(&message);
            count += 1;
            self.deliver(position, &run, None).await;
        }
        if count > 0 {
            flow_log!(
                self.ctx,
                WARN,
                "{} input(s) of '{}' were never submitted; their task runs are Cancelled.",
                count,
                self.task.spec().name
            );
        }
        if let Some(first) = left_unread {
            flow_log!(
                self.ctx,
                WARN,
                "The inputs of '{}' from #{} on were never read: the map stopped, and their \
                 iterator has no known end, or their stream had not given them yet.",
                self.task.spec().name,
                first
            );
        }
    }
}
