//! The batch policy of one scheduler stage, as a pure value: it holds queued items of two
//! classes and decides, with the clock passed in, when a batch is ready and what goes in it. The
//! worker loop around it ([`super::stage`]) only pushes, asks `ready(now)` / `next_deadline()`,
//! and runs what `take(now)` returns. No threads, channels or sleeps here, so every rule is
//! tested with explicit `Instant`s.
//!
//! Rules:
//! - **Bounded**: at most `capacity` items queued over both classes; a push beyond is
//!   [`QueueFull`], which the API turns into 429.
//! - **Two classes**: interactive (sync callers) first; bulk fills the rest of a batch.
//! - **Aging**: when the stage has taken no bulk item for `bulk_aging` while bulk items waited,
//!   the bulk items that have waited `bulk_aging` go first, so bulk is never starved by a steady
//!   interactive stream. The clock is the stage's, not the item's: under bulk saturation every
//!   queued bulk item is old, but bulk is being served, so nothing is starved and interactive
//!   items still go first (an item clock made a saturated job queue overtake every sync caller).
//!   Preemption happens only at batch boundaries: a batch once taken is not changed.
//! - **Keys**: only items of one key share a batch (the detector input shape of a page, the
//!   width bucket of a recognition line). The batch's key is that of the first item, in the
//!   priority order below, whose key group is ready.
//! - **Closing**: a key group is ready when it holds `max_items`, or `max_cost` (e.g. padded
//!   pixels), or when its **oldest** item has waited `max_delay`.
//! - **Dropped before the model**: items whose caller has gone or whose deadline has passed are
//!   removed by `take` and returned separately, to be counted, never computed.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Class of work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// A caller is waiting on screen.
    Interactive,
    /// Asynchronous job work.
    Bulk,
}

/// Limits of one stage's batches.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchPolicy {
    /// Most items in one batch.
    pub max_items: usize,
    /// Most total cost in one batch (padded pixels for recognition); an item costlier than this
    /// alone still forms a batch of one.
    pub max_cost: u64,
    /// A batch closes when its oldest item has waited this long.
    pub max_delay: Duration,
    /// When no bulk item has been taken for this long while bulk waited, the bulk items that
    /// have waited this long go before interactive ones.
    pub bulk_aging: Duration,
    /// Most items queued, both classes together.
    pub capacity: usize,
}

/// One queued item with what the policy needs to know about it.
#[derive(Debug)]
pub struct Queued<T> {
    pub item: T,
    pub class: Class,
    pub enqueued: Instant,
    /// Past this instant the item is dropped instead of computed.
    pub deadline: Option<Instant>,
    pub cost: u64,
    /// Only items of the same key share a batch (a detector input shape, a recognition width
    /// bucket). Stages without shapes use 0.
    pub key: u64,
}

/// The queue is at capacity; the item is handed back.
#[derive(Debug)]
pub struct QueueFull<T>(pub Queued<T>);

/// Why an item was dropped before reaching a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Its caller has gone (the reply channel is closed).
    CallerGone,
    /// Its deadline passed while it waited.
    Expired,
}

/// What `take` returns: the batch to run (interactive-first order) and the dropped items.
#[derive(Debug)]
pub struct Taken<T> {
    pub batch: Vec<Queued<T>>,
    pub dropped: Vec<(Queued<T>, DropReason)>,
}

/// The queue and policy of one stage.
#[derive(Debug)]
pub struct Batcher<T> {
    policy: BatchPolicy,
    interactive: VecDeque<Queued<T>>,
    bulk: VecDeque<Queued<T>>,
    /// When the last batch holding a bulk item was taken (the starvation clock of aging).
    last_bulk_taken: Option<Instant>,
}

impl<T> Batcher<T> {
    pub fn new(policy: BatchPolicy) -> Self {
        Self {
            policy,
            interactive: VecDeque::new(),
            bulk: VecDeque::new(),
            last_bulk_taken: None,
        }
    }

    pub fn len(&self) -> usize {
        self.interactive.len() + self.bulk.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queued items of one class.
    pub fn depth(&self, class: Class) -> usize {
        match class {
            Class::Interactive => self.interactive.len(),
            Class::Bulk => self.bulk.len(),
        }
    }

    /// When the oldest item of a class was queued.
    pub fn oldest(&self, class: Class) -> Option<Instant> {
        match class {
            Class::Interactive => self.interactive.front(),
            Class::Bulk => self.bulk.front(),
        }
        .map(|q| q.enqueued)
    }

    /// Queues an item (items of a class must be pushed in `enqueued` order).
    pub fn push(&mut self, q: Queued<T>) -> Result<(), QueueFull<T>> {
        if self.len() >= self.policy.capacity {
            return Err(QueueFull(q));
        }
        match q.class {
            Class::Interactive => self.interactive.push_back(q),
            Class::Bulk => self.bulk.push_back(q),
        }
        Ok(())
    }

    /// The instant the oldest item reaches `max_delay`: when to wake up if nothing else comes.
    pub fn next_deadline(&self) -> Option<Instant> {
        let oldest = [self.oldest(Class::Interactive), self.oldest(Class::Bulk)]
            .into_iter()
            .flatten()
            .min()?;
        Some(oldest + self.policy.max_delay)
    }

    /// Room left before the queue is at capacity.
    pub fn room(&self) -> usize {
        self.policy.capacity.saturating_sub(self.len())
    }

    /// The policy this queue batches by.
    pub fn policy(&self) -> &BatchPolicy {
        &self.policy
    }

    /// Per key: (items, total cost, oldest enqueue instant).
    fn groups(&self) -> HashMap<u64, (usize, u64, Instant)> {
        let mut g: HashMap<u64, (usize, u64, Instant)> = HashMap::new();
        for q in self.interactive.iter().chain(&self.bulk) {
            let e = g.entry(q.key).or_insert((0, 0, q.enqueued));
            e.0 += 1;
            e.1 += q.cost;
            e.2 = e.2.min(q.enqueued);
        }
        g
    }

    fn group_ready(&self, (n, cost, oldest): (usize, u64, Instant), now: Instant) -> bool {
        n >= self.policy.max_items
            || cost >= self.policy.max_cost
            || now.saturating_duration_since(oldest) >= self.policy.max_delay
    }

    /// Whether a batch should close now: some key's group holds enough items or cost, or the
    /// oldest item has waited `max_delay`.
    pub fn ready(&self, now: Instant) -> bool {
        self.groups()
            .into_values()
            .any(|g| self.group_ready(g, now))
    }

    /// Takes the next batch. First drops gone and expired items. Then picks the batch's key: the
    /// key of the first item, in priority order (aged bulk, interactive, other bulk, each oldest
    /// first; bulk items are aged only while the stage starves bulk, see the module docs), whose
    /// group is ready; if none is (a forced take at shutdown), the first item's.
    /// Then fills up to `max_items` and `max_cost` with items of that key in the same priority
    /// order. A bulk item that fits the room an interactive item could not use is taken (the
    /// interactive item leads the next batch). `is_gone` says whether an item's caller has gone.
    pub fn take(&mut self, now: Instant, is_gone: impl Fn(&T) -> bool) -> Taken<T> {
        let mut dropped = Vec::new();
        for queue in [&mut self.interactive, &mut self.bulk] {
            let mut kept = VecDeque::with_capacity(queue.len());
            for q in queue.drain(..) {
                if is_gone(&q.item) {
                    dropped.push((q, DropReason::CallerGone));
                } else if q.deadline.is_some_and(|d| now >= d) {
                    dropped.push((q, DropReason::Expired));
                } else {
                    kept.push_back(q);
                }
            }
            *queue = kept;
        }
        let aging = self.policy.bulk_aging;
        let starved = self
            .last_bulk_taken
            .is_none_or(|t| now.saturating_duration_since(t) >= aging);
        let aged = if starved {
            self.bulk
                .iter()
                .take_while(|q| now.saturating_duration_since(q.enqueued) >= aging)
                .count()
        } else {
            0
        };
        let groups = self.groups();
        let in_order = || {
            self.bulk
                .iter()
                .take(aged)
                .chain(&self.interactive)
                .chain(self.bulk.iter().skip(aged))
        };
        let key = in_order()
            .find(|q| self.group_ready(groups[&q.key], now))
            .or_else(|| in_order().next())
            .map(|q| q.key);
        let Some(key) = key else {
            return Taken {
                batch: Vec::new(),
                dropped,
            };
        };
        let mut batch: Vec<Queued<T>> = Vec::new();
        let mut cost = 0u64;
        let policy = &self.policy;
        // Takes the items of `key` among the first `limit` of a queue until one does not fit;
        // the others stay in order.
        let mut fill =
            |queue: &mut VecDeque<Queued<T>>, limit: usize, batch: &mut Vec<Queued<T>>| {
                let mut kept = VecDeque::with_capacity(queue.len());
                let mut open = true;
                for (i, q) in queue.drain(..).enumerate() {
                    let fits = open
                        && i < limit
                        && q.key == key
                        && batch.len() < policy.max_items
                        && (batch.is_empty() || cost + q.cost <= policy.max_cost);
                    if fits {
                        cost += q.cost;
                        batch.push(q);
                    } else {
                        if i < limit && q.key == key {
                            // Keep order within the class: nothing later of this key jumps it.
                            open = false;
                        }
                        kept.push_back(q);
                    }
                }
                *queue = kept;
            };
        let mut taken_aged = Vec::new();
        fill(&mut self.bulk, aged, &mut taken_aged);
        batch.append(&mut taken_aged);
        fill(&mut self.interactive, usize::MAX, &mut batch);
        fill(&mut self.bulk, usize::MAX, &mut batch);
        if batch.iter().any(|q| q.class == Class::Bulk) {
            self.last_bulk_taken = Some(now);
        }
        Taken { batch, dropped }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> BatchPolicy {
        BatchPolicy {
            max_items: 4,
            max_cost: 100,
            max_delay: Duration::from_millis(10),
            bulk_aging: Duration::from_millis(500),
            capacity: 6,
        }
    }

    /// Items are (name, class, enqueued ms after t0, cost, deadline ms).
    type Spec = (&'static str, Class, u64, u64, Option<u64>);

    fn batcher(t0: Instant, items: &[Spec]) -> Batcher<&'static str> {
        let mut b = Batcher::new(policy());
        for &(name, class, at, cost, deadline) in items {
            let q = Queued {
                item: name,
                class,
                enqueued: t0 + Duration::from_millis(at),
                deadline: deadline.map(|d| t0 + Duration::from_millis(d)),
                cost,
                key: name.starts_with('w') as u64,
            };
            b.push(q).unwrap();
        }
        b
    }

    use Class::{Bulk, Interactive as Int};

    #[test]
    fn ready_table() {
        let t0 = Instant::now();
        let ms = |m: u64| t0 + Duration::from_millis(m);
        let cases: Vec<(&str, Vec<Spec>, u64, bool)> = vec![
            ("empty", vec![], 1000, false),
            ("one item, young", vec![("a", Int, 0, 1, None)], 5, false),
            (
                "one item, oldest reached max delay",
                vec![("a", Int, 0, 1, None)],
                10,
                true,
            ),
            (
                "delay counts from the oldest",
                vec![("a", Bulk, 0, 1, None), ("b", Int, 9, 1, None)],
                10,
                true,
            ),
            (
                "size reached",
                vec![
                    ("a", Int, 0, 1, None),
                    ("b", Int, 0, 1, None),
                    ("c", Bulk, 0, 1, None),
                    ("d", Bulk, 0, 1, None),
                ],
                0,
                true,
            ),
            (
                "budget reached",
                vec![("a", Int, 0, 60, None), ("b", Bulk, 0, 40, None)],
                0,
                true,
            ),
            (
                "size counts per key: two groups of two are not a full batch",
                vec![
                    ("a", Int, 0, 1, None),
                    ("b", Int, 0, 1, None),
                    ("wc", Bulk, 0, 1, None),
                    ("wd", Bulk, 0, 1, None),
                ],
                0,
                false,
            ),
        ];
        for (name, items, now, want) in cases {
            assert_eq!(batcher(t0, &items).ready(ms(now)), want, "{name}");
        }
        assert_eq!(
            batcher(t0, &[("a", Bulk, 3, 1, None)]).next_deadline(),
            Some(ms(13))
        );
    }

    #[test]
    fn take_table() {
        let t0 = Instant::now();
        /// (name, queued items, now in ms, expected batch, expected drops)
        type Case = (
            &'static str,
            Vec<Spec>,
            u64,
            Vec<&'static str>,
            Vec<(&'static str, DropReason)>,
        );
        let cases: Vec<Case> = vec![
            (
                "interactive first, bulk fills",
                vec![
                    ("b1", Bulk, 0, 1, None),
                    ("b2", Bulk, 1, 1, None),
                    ("i1", Int, 2, 1, None),
                ],
                20,
                vec!["i1", "b1", "b2"],
                vec![],
            ),
            (
                "size cap keeps the rest queued, oldest first",
                vec![
                    ("i1", Int, 0, 1, None),
                    ("i2", Int, 1, 1, None),
                    ("i3", Int, 2, 1, None),
                    ("b1", Bulk, 0, 1, None),
                    ("b2", Bulk, 1, 1, None),
                ],
                20,
                vec!["i1", "i2", "i3", "b1"],
                vec![],
            ),
            (
                "budget cap: bulk fills what interactive leaves",
                vec![
                    ("i1", Int, 0, 60, None),
                    ("i2", Int, 1, 50, None),
                    ("b1", Bulk, 0, 30, None),
                ],
                20,
                vec!["i1", "b1"],
                vec![],
            ),
            (
                "an item over budget alone still runs",
                vec![("big", Int, 0, 500, None), ("i2", Int, 1, 1, None)],
                20,
                vec!["big"],
                vec![],
            ),
            (
                "aged bulk goes before interactive",
                vec![
                    ("b1", Bulk, 0, 1, None),
                    ("i1", Int, 590, 1, None),
                    ("i2", Int, 591, 1, None),
                    ("i3", Int, 592, 1, None),
                    ("i4", Int, 593, 1, None),
                ],
                600,
                vec!["b1", "i1", "i2", "i3"],
                vec![],
            ),
            (
                "expired and gone are dropped, not batched",
                vec![
                    ("late", Int, 0, 1, Some(15)),
                    ("gone", Bulk, 0, 1, None),
                    ("ok", Bulk, 1, 1, Some(100)),
                ],
                20,
                vec!["ok"],
                vec![
                    ("late", DropReason::Expired),
                    ("gone", DropReason::CallerGone),
                ],
            ),
            (
                "only one key per batch; items named w* have key 1",
                vec![
                    ("i1", Int, 0, 1, None),
                    ("w1", Int, 1, 1, None),
                    ("i2", Int, 2, 1, None),
                    ("wb", Bulk, 0, 1, None),
                ],
                20,
                vec!["i1", "i2"],
                vec![],
            ),
            (
                "a full group goes before an older group that is not ready",
                vec![
                    ("i1", Int, 0, 1, None),
                    ("w1", Int, 1, 1, None),
                    ("w2", Int, 1, 1, None),
                    ("w3", Int, 2, 1, None),
                    ("w4", Int, 2, 1, None),
                ],
                5,
                vec!["w1", "w2", "w3", "w4"],
                vec![],
            ),
        ];
        for (name, items, now, want, want_dropped) in cases {
            let mut b = batcher(t0, &items);
            let before = b.len();
            let taken = b.take(t0 + Duration::from_millis(now), |item| *item == "gone");
            let got: Vec<&str> = taken.batch.iter().map(|q| q.item).collect();
            assert_eq!(got, want, "{name}");
            let dropped: Vec<(&str, DropReason)> =
                taken.dropped.iter().map(|(q, r)| (q.item, *r)).collect();
            assert_eq!(dropped, want_dropped, "{name}");
            assert_eq!(
                b.len() + got.len() + dropped.len(),
                before,
                "{name}: nothing lost"
            );
        }
    }

    #[test]
    fn full_queue_is_a_typed_error_that_returns_the_item() {
        let t0 = Instant::now();
        let mut b = batcher(
            t0,
            &[
                ("a", Int, 0, 1, None),
                ("b", Int, 0, 1, None),
                ("c", Int, 0, 1, None),
                ("d", Bulk, 0, 1, None),
                ("e", Bulk, 0, 1, None),
                ("f", Bulk, 0, 1, None),
            ],
        );
        let q = Queued {
            item: "g",
            class: Int,
            enqueued: t0,
            deadline: None,
            cost: 1,
            key: 0,
        };
        let QueueFull(back) = b.push(q).unwrap_err();
        assert_eq!(back.item, "g");
        assert_eq!((b.depth(Int), b.depth(Bulk)), (3, 3));
    }

    #[test]
    fn bulk_is_never_starved_by_a_steady_interactive_stream() {
        // Four new interactive items every 10 ms fill every batch; the bulk item still runs once
        // it has aged.
        let t0 = Instant::now();
        let mut b: Batcher<u32> = Batcher::new(BatchPolicy {
            capacity: 1000,
            ..policy()
        });
        b.push(Queued {
            item: 0,
            class: Bulk,
            enqueued: t0,
            deadline: None,
            cost: 1,
            key: 0,
        })
        .unwrap();
        let mut bulk_ran_at = None;
        for step in 1..=100u64 {
            let now = t0 + Duration::from_millis(step * 10);
            for k in 0..4 {
                b.push(Queued {
                    item: (step * 10 + k) as u32,
                    class: Int,
                    enqueued: now,
                    deadline: None,
                    cost: 1,
                    key: 0,
                })
                .unwrap();
            }
            let taken = b.take(now, |_| false);
            if taken.batch.iter().any(|q| q.class == Bulk) {
                bulk_ran_at = Some(step * 10);
                break;
            }
        }
        assert_eq!(bulk_ran_at, Some(500));
    }

    /// Names of the next batch taken at `now`.
    fn take_names(b: &mut Batcher<&'static str>, now: Instant) -> Vec<&'static str> {
        b.take(now, |_| false)
            .batch
            .iter()
            .map(|q| q.item)
            .collect()
    }

    /// Pushes (name, class, enqueued) items of cost 1, key 0, no deadline.
    fn push_all(
        b: &mut Batcher<&'static str>,
        at: impl Fn(u64) -> Instant,
        items: &[(&'static str, Class, u64)],
    ) {
        for &(item, class, ms) in items {
            b.push(Queued {
                item,
                class,
                enqueued: at(ms),
                deadline: None,
                cost: 1,
                key: 0,
            })
            .unwrap();
        }
    }

    #[test]
    fn old_bulk_items_do_not_overtake_interactive_while_bulk_is_being_served() {
        // A saturated job queue: every bulk item is older than the aging limit, but the stage
        // took a bulk batch 100 ms ago, so bulk is not starved and the sync caller goes first.
        let t0 = Instant::now();
        let ms = |m: u64| t0 + Duration::from_millis(m);
        let mut b = batcher(
            t0,
            &[
                ("b1", Bulk, 0, 1, None),
                ("b2", Bulk, 1, 1, None),
                ("b3", Bulk, 2, 1, None),
                ("b4", Bulk, 3, 1, None),
                ("b5", Bulk, 4, 1, None),
            ],
        );
        assert_eq!(
            take_names(&mut b, ms(600)),
            vec!["b1", "b2", "b3", "b4"],
            "starved at first: aged bulk runs"
        );
        push_all(&mut b, ms, &[("i1", Int, 650), ("b6", Bulk, 660)]);
        assert_eq!(
            take_names(&mut b, ms(700)),
            vec!["i1", "b5", "b6"],
            "b5 waited 696 ms, but bulk ran 100 ms ago"
        );
        // Once the stage has served no bulk for the aging limit, waiting bulk leads again.
        push_all(&mut b, ms, &[("b7", Bulk, 710), ("i2", Int, 1250)]);
        assert_eq!(
            take_names(&mut b, ms(1300)),
            vec!["b7", "i2"],
            "no bulk taken for 600 ms: b7 (590 ms old) leads"
        );
    }
}
