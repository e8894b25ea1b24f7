use super::*;

fn keys_of(stamps: &[Option<u64>]) -> Vec<u64> {
    let mut keys = Vec::new();
    extend_keys(stamps, &mut keys, 0);
    keys
}

fn plan(sources: &[(&[Option<u64>], u64)]) -> Plan {
    let keys: Vec<Vec<u64>> = sources.iter().map(|&(stamps, _)| keys_of(stamps)).collect();
    let sources: Vec<Source<'_>> =
        sources.iter().zip(&keys).map(|(&(stamps, bound), keys)| Source { stamps, keys, bound }).collect();
    let mut plan = Plan::default();
    Merger::default().plan(&sources, usize::MAX, &mut plan);
    plan
}

#[test]
fn a_source_gives_the_prefix_whose_suffix_minimum_is_under_the_watermark() {
    // Keys [3, 3, 7, 8]: the record stamped 5 goes with the later one
    // stamped 3 (claimed after it, stamped before it).
    let p = plan(&[(&[Some(5), Some(3), Some(7), Some(8)], 4)]);
    assert_eq!((p.watermark, &p.prefix[..], &p.runs[..]), (4, &[2][..], &[(0, 2)][..]));
    assert_eq!(plan(&[(&[Some(5), Some(3), Some(7)], 2)]).prefix, [0]);
    assert_eq!(plan(&[(&[Some(5), Some(3), Some(7)], 7)]).prefix, [3]);
    assert_eq!(plan(&[(&[], 7)]), Plan { watermark: 7, prefix: vec![0], runs: vec![] });
}

#[test]
fn dead_claims_are_taken_with_what_precedes_them() {
    // It is taken as soon as what precedes it is.
    assert_eq!(plan(&[(&[None, Some(5)], 4)]).prefix, [1]);
    assert_eq!(plan(&[(&[None, Some(5)], 5)]).prefix, [2]);
    assert_eq!(plan(&[(&[Some(1), None, None], 1)]).prefix, [3]);
    assert_eq!(plan(&[(&[Some(9), None], 5)]).prefix, [0]);
    let p = plan(&[(&[None], 0)]);
    assert_eq!((&p.prefix[..], p.records()), (&[1][..], 0));
}

#[test]
fn the_watermark_is_the_least_bound_and_holds_back_every_source() {
    let p = plan(&[(&[Some(1), Some(6)], 9), (&[Some(2), Some(5)], 5), (&[], 3)]);
    assert_eq!(p.watermark, 3);
    assert_eq!(p.prefix, [1, 1, 0]);
    assert_eq!(p.runs, [(0, 1), (1, 1)]);
}

#[test]
fn prefixes_merge_by_key_then_source_keeping_each_source_in_order() {
    let p = plan(&[(&[Some(1), Some(4), Some(9)], 10), (&[Some(2), Some(3), Some(4)], 10)]);
    assert_eq!(p.runs, [(0, 1), (1, 2), (0, 1), (1, 1), (0, 1)], "a tie (4, 4) goes to the lower source");
    // Source order wins over stamps: 7 is keyed 2 and comes before 3.
    let p = plan(&[(&[Some(7), Some(2)], 10), (&[Some(3)], 10)]);
    assert_eq!(p.runs, [(0, 2), (1, 1)]);
}

#[test]
fn a_truncated_plan_is_a_prefix_of_the_merged_stream() {
    let a: &[Option<u64>] = &[Some(1), None, Some(4), Some(9)];
    let b: &[Option<u64>] = &[None, Some(2), Some(3)];
    let (ka, kb) = (keys_of(a), keys_of(b));
    let sources = [Source { stamps: a, keys: &ka, bound: 10 }, Source { stamps: b, keys: &kb, bound: 10 }];
    let mut p = Plan::default();
    Merger::default().plan(&sources, usize::MAX, &mut p);
    assert_eq!((&p.prefix[..], &p.runs[..]), (&[4, 3][..], &[(0, 1), (1, 2), (0, 2)][..]));
    p.truncate(2, &sources);
    assert_eq!(p.runs, [(0, 1), (1, 1)]);
    assert_eq!(p.prefix, [2, 2], "the dead claim after a's first record goes with it");
    p.truncate(0, &sources);
    assert_eq!((&p.prefix[..], p.records()), (&[0, 1][..], 0));
}

#[test]
fn bounds_follow_the_frontier_and_hold_only_beyond_the_run_that_gave_them() {
    use Frontier::*;
    use SourceKind::*;
    let run = [Some(40), None];
    let fresh = |value, end| Bound { value, end };
    assert_eq!(fresh(10, 0).after_peek(Shared, 0, 30, &run, Unclaimed), 30);
    assert_eq!(fresh(10, 0).after_peek(Shared, 0, 30, &run, Claimed), 10, "a live claim keeps the old bound");
    assert_eq!(fresh(10, 0).after_peek(Shared, 0, 30, &run, Limit), 10);
    assert_eq!(fresh(50, 0).after_peek(Shared, 0, 30, &run, Unclaimed), 50, "evidence is kept");
    assert_eq!(
        fresh(10, 0).after_peek(SubRing, 0, 30, &run, Unclaimed),
        40,
        "one thread: later stamps are later"
    );
    assert_eq!(fresh(10, 0).after_peek(SubRing, 0, 30, &run, Claimed), 40);
    assert_eq!(
        fresh(10, 0).after_peek(SubRing, 0, 30, &[], Corrupt),
        u64::MAX,
        "a corrupt ring bounds nothing"
    );
    // A look that stops short of where an earlier one ended (a sub-ring's
    // one batch) cannot use that look's bound: records between the two
    // ends may be stamped below it.
    let mut bound = Bound::default();
    assert_eq!(bound.after_peek(SubRing, 0, 0, &[Some(1), Some(2), Some(9)], Unclaimed), 9);
    assert_eq!(bound.after_peek(SubRing, 0, 10, &[Some(1)], Limit), 1);
    assert_eq!(
        bound.after_peek(SubRing, 1, 10, &[Some(2), Some(9)], Claimed),
        9,
        "from ticket 3 on, as said"
    );
}

// ---- a randomized model: threads, sub-rings, a shared ring, a consumer --

/// splitmix64: a small seeded generator, so a failure names its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// A record as the model knows it.
#[derive(Clone, Copy, Debug)]
struct Rec {
    /// When its claim happened and when it was complete (model time).
    claimed_at: u64,
    published_at: u64,
    /// A buffer's ALLOC (`Some((buffer, true))`) or FREE.
    buffer: Option<(usize, bool)>,
}

#[derive(Clone, Copy, Debug)]
enum Slot {
    /// Claimed; the claim is visible to the consumer from `visible_at` on
    /// (a sub-ring's claim is a plain store that may wait in a store
    /// buffer; the shared ring's is a CAS, visible at once).
    Claimed {
        id: usize,
        visible_at: u64,
        dead: bool,
    },
    Full {
        id: usize,
        stamp: u64,
    },
}

#[derive(Default)]
struct Ring {
    slots: Vec<Slot>,
    /// The consumer's next ticket.
    taken: usize,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Step {
    Idle,
    Claimed { source: usize, ticket: usize },
    Stamped { source: usize, ticket: usize, stamp: u64 },
}

struct Thread {
    step: Step,
    /// The sub-ring it leases, if any.
    lease: Option<usize>,
    /// Buffers it holds (allocated by it or handed to it).
    holds: Vec<usize>,
    writes_left: u32,
}

struct Model {
    rng: Rng,
    now: u64,
    /// Source 0 is the shared ring; 1.. are sub-rings.
    rings: Vec<Ring>,
    leased: Vec<bool>,
    threads: Vec<Thread>,
    records: Vec<Rec>,
    /// Buffers handed over through memory: (buffer), taken by any thread.
    mailbox: Vec<usize>,
    next_buffer: usize,
    store_buffer_delay: u64,
    /// How far the writers' clock is behind the consumer's (two cores'
    /// clocks that disagree).
    writer_clock_behind: u64,
    dead_claims: usize,
}

const SUBRINGS: usize = 3;
const BATCH: usize = 4;

impl Model {
    fn new(seed: u64, store_buffer_delay: u64, writer_clock_behind: u64) -> Model {
        let mut model = Model {
            rng: Rng(seed),
            now: 1_000,
            rings: (0..=SUBRINGS).map(|_| Ring::default()).collect(),
            leased: vec![false; SUBRINGS + 1],
            threads: Vec::new(),
            records: Vec::new(),
            mailbox: Vec::new(),
            next_buffer: 0,
            store_buffer_delay,
            writer_clock_behind,
            dead_claims: 0,
        };
        for _ in 0..4 {
            model.spawn();
        }
        model
    }

    /// A new thread: the first free sub-ring, else none (the shared ring).
    fn spawn(&mut self) {
        let lease = (1..=SUBRINGS).find(|&s| !self.leased[s]);
        if let Some(s) = lease {
            self.leased[s] = true;
        }
        let writes_left = 1 + self.rng.below(40) as u32;
        self.threads.push(Thread { step: Step::Idle, lease, holds: Vec::new(), writes_left });
    }

    fn tick(&mut self) -> u64 {
        self.now += 1 + self.rng.below(3);
        self.now
    }

    /// One step of thread `t`: claim, stamp, or publish (a thread may be
    /// preempted between any two, for as long as the scheduler likes).
    fn step_thread(&mut self, t: usize) {
        let now = self.tick();
        match self.threads[t].step {
            Step::Idle => {
                let thread = &self.threads[t];
                // The sub-ring, unless "full" (sometimes the shared ring).
                let source = match thread.lease {
                    Some(s) if !self.rng.chance(15) => s,
                    _ => 0,
                };
                let delay = if source == 0 { 0 } else { self.rng.below(self.store_buffer_delay + 1) };
                let id = self.records.len();
                // An ALLOC of a new buffer, a FREE of one it holds, or a
                // hand-over of one it holds to whoever takes it next.
                let buffer = match self.rng.below(3) {
                    0 if !self.threads[t].holds.is_empty() => {
                        let i = self.rng.below(self.threads[t].holds.len() as u64) as usize;
                        Some((self.threads[t].holds.swap_remove(i), false))
                    }
                    _ => {
                        self.next_buffer += 1;
                        Some((self.next_buffer - 1, true))
                    }
                };
                self.records.push(Rec { claimed_at: now, published_at: u64::MAX, buffer });
                let ring = &mut self.rings[source];
                ring.slots.push(Slot::Claimed { id, visible_at: now + delay, dead: false });
                self.threads[t].step = Step::Claimed { source, ticket: ring.slots.len() - 1 };
            }
            Step::Claimed { source, ticket } => {
                // The stamp is read after the claim (program order), while
                // the claim may still be invisible to the consumer.
                let stamp = now - self.writer_clock_behind;
                self.threads[t].step = Step::Stamped { source, ticket, stamp };
            }
            Step::Stamped { source, ticket, stamp } => {
                let Slot::Claimed { id, .. } = self.rings[source].slots[ticket] else { unreachable!() };
                self.rings[source].slots[ticket] = Slot::Full { id, stamp };
                let rec = &mut self.records[id];
                rec.published_at = now;
                let thread = &mut self.threads[t];
                if let Some((buffer, true)) = rec.buffer {
                    // Published: now another thread may be handed it.
                    if self.rng.chance(50) {
                        self.mailbox.push(buffer);
                    } else {
                        thread.holds.push(buffer);
                    }
                }
                thread.step = Step::Idle;
                thread.writes_left -= 1;
            }
        }
        // Pick up a handed-over buffer now and then.
        if self.threads[t].step == Step::Idle && !self.mailbox.is_empty() && self.rng.chance(30) {
            let i = self.rng.below(self.mailbox.len() as u64) as usize;
            let buffer = self.mailbox.swap_remove(i);
            self.threads[t].holds.push(buffer);
        }
    }

    /// Thread `t` ends: it exits (gives its lease back) when idle, or dies
    /// (its claim stays claimed; its lease is stale and taken back).
    fn end_thread(&mut self, t: usize) {
        let thread = self.threads.swap_remove(t);
        if let Step::Claimed { source, ticket } | Step::Stamped { source, ticket, .. } = thread.step {
            let Slot::Claimed { id, visible_at, .. } = self.rings[source].slots[ticket] else {
                unreachable!()
            };
            self.rings[source].slots[ticket] = Slot::Claimed { id, visible_at, dead: true };
            self.dead_claims += 1;
            self.records[id].published_at = u64::MAX; // Never published.
        }
        if let Some(s) = thread.lease {
            self.leased[s] = false;
        }
        // Its buffers go to others, as memory shared by the threads would.
        self.mailbox.extend(thread.holds);
    }

    /// The consumer's look at source `s` at the current time, as
    /// `RingView::peek` would give it.
    fn peek(&self, s: usize) -> Peeked {
        let ring = &self.rings[s];
        let subring_batch = s != 0
            && matches!(ring.slots.get(ring.taken + BATCH - 1), Some(Slot::Full { .. }))
            && ring.slots[ring.taken..ring.taken + BATCH].iter().all(|x| matches!(x, Slot::Full { .. }));
        let max = if subring_batch { BATCH } else { usize::MAX };
        let mut stamps = Vec::new();
        for slot in ring.slots[ring.taken..].iter() {
            if stamps.len() == max {
                return (stamps, Frontier::Limit);
            }
            match *slot {
                Slot::Full { stamp, .. } => stamps.push(Some(stamp)),
                Slot::Claimed { visible_at, .. } if visible_at > self.now => {
                    return (stamps, Frontier::Unclaimed);
                }
                Slot::Claimed { dead: true, .. } => stamps.push(None),
                Slot::Claimed { .. } => return (stamps, Frontier::Claimed),
            }
        }
        if stamps.len() == max {
            return (stamps, Frontier::Limit);
        }
        (stamps, Frontier::Unclaimed)
    }
}

/// What a look at one source found.
type Peeked = (Vec<Option<u64>>, Frontier);

/// When the model's consumer lifts a source's bound for a round because
/// its look ended at a ticket no writer had claimed (module doc, "The
/// second look").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lift {
    /// Never: the bounds alone (the slack).
    Never,
    /// After the last look at any source, if that ticket is still
    /// unclaimed: what `consumer::sources` does.
    SecondLook,
    /// Wrong, to show the model can tell: on the look's word alone, with
    /// other sources looked at after it.
    AtTheLook,
}

impl Model {
    /// Whether the consumer finds `ticket` of source `s` unclaimed now.
    fn unclaimed(&self, s: usize, ticket: usize) -> bool {
        match self.rings[s].slots.get(ticket) {
            None => true,
            Some(Slot::Claimed { visible_at, .. }) => *visible_at > self.now,
            Some(Slot::Full { .. }) => false,
        }
    }
}

/// The consumer's state across rounds, and its output.
struct Reader {
    slack: u64,
    lift: Lift,
    /// Within a round, once every source was looked at: per source,
    /// whether its bound is lifted.
    lifted: Option<Vec<bool>>,
    bounds: Vec<Bound>,
    merger: Merger,
    /// Within a round: its clock and what it peeked so far.
    round: Option<(u64, Vec<Peeked>)>,
    out: Vec<(usize, usize)>, // (record id, source)
    lost: usize,
}

impl Reader {
    /// One step of the consumer: read the clock, peek one source, or plan
    /// and take. Returns whether a round ended.
    fn step(&mut self, model: &mut Model) -> bool {
        let sources = model.rings.len();
        let Some((clock, peeks)) = &mut self.round else {
            self.round = Some((model.tick(), Vec::new()));
            return false;
        };
        if peeks.len() < sources {
            model.tick();
            peeks.push(model.peek(peeks.len()));
            return false;
        }
        if self.lifted.is_none() {
            let ends: Vec<Option<usize>> = peeks
                .iter()
                .enumerate()
                .map(|(s, (stamps, frontier))| {
                    (*frontier == Frontier::Unclaimed).then(|| model.rings[s].taken + stamps.len())
                })
                .collect();
            match self.lift {
                Lift::Never => self.lifted = Some(vec![false; sources]),
                Lift::AtTheLook => self.lifted = Some(ends.iter().map(Option::is_some).collect()),
                Lift::SecondLook => {
                    // A step of its own: writers may run in between.
                    model.tick();
                    let lifted =
                        ends.iter().enumerate().map(|(s, end)| end.is_some_and(|t| model.unclaimed(s, t)));
                    self.lifted = Some(lifted.collect());
                    return false;
                }
            }
        }
        let clock = *clock;
        let lifted = self.lifted.take().expect("set above");
        let peeks = &self.round.as_ref().expect("a round").1;
        let seen_after = clock.saturating_sub(self.slack);
        // The keys as the consumer keeps them: extended as its look grows
        // (here in two steps, split at random).
        let keys: Vec<Vec<u64>> = peeks
            .iter()
            .map(|(stamps, _)| {
                let mut keys = Vec::new();
                let split = model.rng.below(stamps.len() as u64 + 1) as usize;
                extend_keys(&stamps[..split], &mut keys, 0);
                extend_keys(stamps, &mut keys, 0);
                keys
            })
            .collect();
        let mut round = Vec::new();
        for (s, ((stamps, frontier), keys)) in peeks.iter().zip(&keys).enumerate() {
            let kind = if s == 0 { SourceKind::Shared } else { SourceKind::SubRing };
            let start = model.rings[s].taken as u64;
            let bound = self.bounds[s].after_peek(kind, start, seen_after, stamps, *frontier);
            // Lifted for this round only: the kept bound stays the slack's.
            let bound = if lifted[s] { u64::MAX } else { bound };
            round.push(Source { stamps, keys, bound });
        }
        let mut plan = Plan::default();
        // Sometimes a take of a few only (a prefix of the merged stream).
        let max = if model.rng.chance(30) { 1 + model.rng.below(4) as usize } else { usize::MAX };
        self.merger.plan(&round, max, &mut plan);
        // Take: the ids of each source's prefix, in order, then merge.
        let mut taken: Vec<std::collections::VecDeque<usize>> = Vec::new();
        for (s, &n) in plan.prefix.iter().enumerate() {
            let ring = &mut model.rings[s];
            let mut ids = std::collections::VecDeque::new();
            for slot in &ring.slots[ring.taken..ring.taken + n] {
                match *slot {
                    Slot::Full { id, .. } => ids.push_back(id),
                    Slot::Claimed { dead: true, .. } => self.lost += 1,
                    Slot::Claimed { .. } => panic!("took a live claim"),
                }
            }
            ring.taken += n;
            taken.push(ids);
        }
        for &(s, n) in &plan.runs {
            for _ in 0..n {
                self.out.push((taken[s].pop_front().expect("a run longer than the prefix"), s));
            }
        }
        assert!(taken.iter().all(|ids| ids.is_empty()), "the runs hand on every taken record");
        self.round = None;
        self.lifted = None;
        true
    }
}

/// Runs the model with `seed`; returns the first ordering violation.
fn run(
    seed: u64,
    store_buffer_delay: u64,
    writer_clock_behind: u64,
    slack: u64,
    lift: Lift,
) -> Result<(), String> {
    let mut model = Model::new(seed, store_buffer_delay, writer_clock_behind);
    let sources = model.rings.len();
    let mut reader = Reader {
        slack,
        lift,
        lifted: None,
        bounds: vec![Bound::default(); sources],
        merger: Merger::default(),
        round: None,
        out: Vec::new(),
        lost: 0,
    };
    let mut spawned = 4;
    while !model.threads.is_empty() {
        // The scheduler: mostly writers, the consumer a third of the time.
        if model.rng.chance(33) {
            reader.step(&mut model);
            continue;
        }
        let t = model.rng.below(model.threads.len() as u64) as usize;
        let thread = &model.threads[t];
        let dies = thread.step != Step::Idle && model.rng.chance(1);
        if dies || (thread.writes_left == 0 && thread.step == Step::Idle) {
            model.end_thread(t);
            if spawned < 12 {
                model.spawn();
                spawned += 1;
            }
        } else {
            model.step_thread(t);
        }
    }
    // Drain: the writers are gone; rounds go on (the clock with them).
    let mut rounds = 0;
    while model.rings.iter().any(|r| r.taken < r.slots.len()) {
        if reader.step(&mut model) {
            rounds += 1;
            assert!(rounds < 10_000, "seed {seed}: the drain does not end");
        }
    }
    check(&model, &reader).map_err(|e| format!("seed {seed}: {e}"))
}

fn check(model: &Model, reader: &Reader) -> Result<(), String> {
    let published: Vec<&Rec> = model.records.iter().filter(|r| r.published_at != u64::MAX).collect();
    if reader.out.len() != published.len() || reader.lost != model.dead_claims {
        return Err(format!(
            "{} out + {} lost, {} published + {} dead claims",
            reader.out.len(),
            reader.lost,
            published.len(),
            model.dead_claims
        ));
    }
    let mut position = vec![usize::MAX; model.records.len()];
    for (i, &(id, _)) in reader.out.iter().enumerate() {
        if position[id] != usize::MAX {
            return Err(format!("record {id} handed on twice"));
        }
        position[id] = i;
    }
    // Each source in its order.
    for s in 0..model.rings.len() {
        let ids: Vec<usize> = model.rings[s]
            .slots
            .iter()
            .filter_map(|x| if let Slot::Full { id, .. } = *x { Some(id) } else { None })
            .collect();
        if ids.windows(2).any(|w| position[w[0]] > position[w[1]]) {
            return Err(format!("source {s} out of order"));
        }
    }
    // Happens-before: a record complete before another was claimed comes
    // first. Scan the output with the earliest completion still to come.
    let mut earliest_after = u64::MAX;
    for &(id, _) in reader.out.iter().rev() {
        let rec = &model.records[id];
        if earliest_after < rec.claimed_at {
            return Err(format!(
                "record {id} (claimed at {}) before one complete at {earliest_after}",
                rec.claimed_at
            ));
        }
        earliest_after = earliest_after.min(rec.published_at);
    }
    // One buffer's ALLOC before its FREE (handed over between threads).
    let mut alloc_at = std::collections::HashMap::new();
    for &(id, _) in &reader.out {
        match model.records[id].buffer {
            Some((b, true)) => {
                alloc_at.insert(b, id);
            }
            Some((b, false)) if !alloc_at.contains_key(&b) => {
                return Err(format!("buffer {b} freed before its alloc"));
            }
            _ => {}
        }
    }
    Ok(())
}

#[test]
fn randomized_rounds_keep_every_happens_before_edge_and_lose_nothing() {
    let seeds = if cfg!(miri) { 20 } else { 2_000 };
    for seed in 0..seeds {
        run(seed, 6, 8, 8, Lift::Never).unwrap();
        run(seed, 0, 0, 0, Lift::Never).unwrap();
        run(seed, 6, 8, 8, Lift::SecondLook).unwrap();
        run(seed, 0, 0, 0, Lift::SecondLook).unwrap();
    }
}

/// The second look is what makes lifting a bound sound: lifted on the
/// first look's word, a record claimed after that look (while the consumer
/// looks at the other sources) can be overtaken by one it happened before.
#[test]
fn lifting_a_bound_without_the_second_look_breaks_the_order() {
    let failures = |lift| (0..500).filter(|&seed| run(seed, 6, 8, 8, lift).is_err()).count();
    assert!(failures(Lift::AtTheLook) > 0, "no seed broke the order lifting at the look");
    assert_eq!(failures(Lift::SecondLook), 0);
}

/// The model can fail: with a consumer's clock ahead of the writers' by
/// more than the slack, a record claimed after the consumer's look can be
/// stamped below the watermark and overtake one that happened before it.
#[test]
fn a_slack_smaller_than_the_clock_disagreement_breaks_the_order() {
    let failures =
        |behind, slack| (0..500).filter(|&seed| run(seed, 6, behind, slack, Lift::Never).is_err()).count();
    assert!(failures(30, 0) > 0, "no seed broke the order with no slack");
    assert_eq!(failures(30, 30), 0);
}

#[test]
fn keys_extended_step_by_step_are_the_keys_of_the_whole_run() {
    let mut rng = Rng(7);
    for _ in 0..2000 {
        let len = rng.below(40) as usize;
        let stamps: Vec<Option<u64>> =
            (0..len).map(|_| if rng.chance(10) { None } else { Some(rng.below(50)) }).collect();
        let mut keys = Vec::new();
        let mut at = 0;
        while at < len {
            at += 1 + rng.below((len - at) as u64) as usize;
            extend_keys(&stamps[..at], &mut keys, 0);
        }
        let expected: Vec<u64> =
            (0..len).map(|i| stamps[i..].iter().filter_map(|t| *t).min().unwrap_or(u64::MAX)).collect();
        assert_eq!(keys, expected, "{stamps:?}");
    }
}
