//! The sliding window of a run: users fetched ahead in id order, chunks of
//! them in flight across batch boundaries, and the handled prefix — the
//! users before the first one not yet handled — which is all a checkpoint
//! may cover. A slow user holds back the checkpoint, never the users after it.

use super::{Failure, Outcome};
use crate::backfill::identifiers::{Dropped, GraphUser};
use std::collections::{HashMap, VecDeque};
use tokio::task::{Id as TaskId, JoinSet};

/// One fetched user, from its fetch until a checkpoint covers it.
struct Entry {
    id: i64,
    /// Taken when the user is started.
    user: Option<GraphUser>,
    outcome: Option<Outcome>,
    /// Values normalization dropped, counted once the user is checkpointed.
    dropped: Vec<Dropped>,
}

/// A checkpointed user: its id, its outcome, and the values normalization dropped.
pub(super) struct Handled {
    pub id: i64,
    pub outcome: Outcome,
    pub dropped: Vec<Dropped>,
}

/// The position of a user in the window since the window began; stable
/// while the front moves, so a chunk in flight can name its users.
type Seq = u64;

pub(super) struct Window {
    /// Every fetched user not yet checkpointed, in id order.
    entries: VecDeque<Entry>,
    /// The `Seq` of `entries[0]`.
    front_seq: Seq,
    /// Index in `entries` of the first user not started (nor skipped).
    next_to_start: usize,
    /// How many entries from the front are handled: the checkpointable prefix.
    handled_front: usize,
    /// The highest id fetched; the next page starts after it.
    fetched_through: i64,
    /// A page after `fetched_through` came back empty.
    exhausted: bool,
    in_flight: JoinSet<Vec<Outcome>>,
    /// The users of each chunk in flight.
    members: HashMap<TaskId, Vec<Seq>>,
}

impl Window {
    /// An empty window whose first page starts after `position`.
    pub(super) fn after(position: i64) -> Self {
        Window {
            entries: VecDeque::new(),
            front_seq: 0,
            next_to_start: 0,
            handled_front: 0,
            fetched_through: position,
            exhausted: false,
            in_flight: JoinSet::new(),
            members: HashMap::new(),
        }
    }

    pub(super) fn fetched_through(&self) -> i64 {
        self.fetched_through
    }

    pub(super) fn exhausted(&self) -> bool {
        self.exhausted
    }

    /// Users fetched and not started yet.
    pub(super) fn unstarted(&self) -> usize {
        self.entries.len() - self.next_to_start
    }

    /// Users started (or skipped) since the last checkpoint: how far the
    /// window reaches past the checkpoint.
    pub(super) fn span(&self) -> usize {
        self.next_to_start
    }

    pub(super) fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// How many users a checkpoint could cover now.
    pub(super) fn handled_prefix(&self) -> usize {
        self.handled_front
    }

    /// Nothing in flight and nothing handled waits for a checkpoint.
    pub(super) fn is_idle(&self) -> bool {
        self.in_flight.is_empty() && self.handled_front == 0
    }

    /// Every user of the phase was fetched, handled and checkpointed.
    pub(super) fn is_done(&self) -> bool {
        self.exhausted && self.entries.is_empty() && self.in_flight.is_empty()
    }

    /// Appends the next page; an empty page means the phase has no more users.
    pub(super) fn push_page(&mut self, page: Vec<GraphUser>) {
        match page.last() {
            None => self.exhausted = true,
            Some(last) => self.fetched_through = last.id,
        }
        self.entries.extend(page.into_iter().map(|user| Entry {
            id: user.id,
            dropped: user.dropped.clone(),
            user: Some(user),
            outcome: None,
        }));
    }

    /// Takes the next users to start, in id order: up to `chunk_size` users
    /// `skip_of` lets through. Users it skips are handled on the spot, and
    /// it stops at a skip once `enough` users are handled, so a run of
    /// skipped users still ends its batch.
    pub(super) fn take_chunk(
        &mut self,
        chunk_size: usize,
        enough: usize,
        skip_of: impl Fn(&GraphUser) -> Option<Outcome>,
    ) -> Vec<(Seq, GraphUser)> {
        let mut chunk = Vec::with_capacity(chunk_size);
        while self.next_to_start < self.entries.len()
            && chunk.len() < chunk_size
            && self.handled_front < enough
        {
            let index = self.next_to_start;
            let seq = self.front_seq + index as Seq;
            self.next_to_start += 1;
            let user = self.entries[index]
                .user
                .take()
                .expect("a user not started still holds its row");
            match skip_of(&user) {
                Some(outcome) => self.record(seq, outcome),
                None => chunk.push((seq, user)),
            }
        }
        chunk
    }

    /// Runs a chunk's write on the runtime, so it keeps going while the
    /// runner checkpoints, fetches or paces.
    pub(super) fn spawn(
        &mut self,
        seqs: Vec<Seq>,
        write: impl std::future::Future<Output = Vec<Outcome>> + Send + 'static,
    ) {
        let task = self.in_flight.spawn(write);
        self.members.insert(task.id(), seqs);
    }

    /// Waits for a chunk in flight to finish and records its users'
    /// outcomes. Returns at once when nothing is in flight.
    pub(super) async fn next_done(&mut self) {
        let Some(joined) = self.in_flight.join_next_with_id().await else {
            return;
        };
        let (seqs, outcomes) = match joined {
            Ok((task, outcomes)) => (self.members.remove(&task), outcomes),
            // Only `abort_in_flight` cancels, and it forgets the members first.
            Err(error) if error.is_cancelled() => return,
            Err(error) => {
                let seqs = self.members.remove(&error.id());
                let message = format!("the Identity Graph adapter panicked: {error}");
                let count = seqs.as_ref().map_or(0, Vec::len);
                (
                    seqs,
                    vec![Outcome::Failed(Failure::new("adapter", message)); count],
                )
            }
        };
        let mut outcomes = outcomes.into_iter();
        for seq in seqs.unwrap_or_default() {
            // A chunk that returns too few outcomes fails the rest, with a
            // message, rather than leaving them unhandled for ever.
            let outcome = outcomes.next().unwrap_or_else(|| {
                Outcome::Failed(Failure::new(
                    "adapter",
                    "the Identity Graph adapter returned no outcome",
                ))
            });
            self.record(seq, outcome);
        }
    }

    /// Drops every chunk in flight: their users stay unhandled, so the
    /// handled prefix — and any checkpoint — stops before the first of them.
    pub(super) fn abort_in_flight(&mut self) {
        self.members.clear();
        self.in_flight.abort_all();
    }

    /// Removes the handled prefix, for a checkpoint.
    pub(super) fn take_prefix(&mut self) -> Vec<Handled> {
        let count = self.handled_front;
        let prefix = self
            .entries
            .drain(..count)
            .map(|entry| Handled {
                id: entry.id,
                outcome: entry.outcome.expect("the prefix is handled"),
                dropped: entry.dropped,
            })
            .collect();
        self.front_seq += count as Seq;
        self.next_to_start -= count;
        self.handled_front = 0;
        prefix
    }

    fn record(&mut self, seq: Seq, outcome: Outcome) {
        let index = (seq - self.front_seq) as usize;
        self.entries[index].outcome = Some(outcome);
        while self
            .entries
            .get(self.handled_front)
            .is_some_and(|entry| entry.outcome.is_some())
        {
            self.handled_front += 1;
        }
    }
}
