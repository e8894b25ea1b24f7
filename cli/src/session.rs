//! A live consuming session: drains a ring into the state engine and,
//! optionally, a record file. `record` and `watch` run one.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use memtrack::{Consumer, ProcessInfo, ProcessState, Record, Ring, RingOptions};

use crate::engine::Engine;
use crate::host_pid::host_pids;
use crate::output::{Output, Protected};
use crate::recording::{
    Block, CounterBlock, DiedBlock, FileHeader, IdentityBlock, LossBlock, OutputFailure, ProcessBlock,
    RecordWriter, StartBlock, TimeBase,
};

/// How often the process table is read for processes that died.
const PROCESS_POLL: Duration = Duration::from_millis(20);

/// Records taken per batch.
const BATCH: usize = 4096;

/// A consumer attached to a ring, feeding an engine (and a file).
pub struct Session {
    consumer: Consumer,
    engine: Engine,
    /// Whether records go through the engine as they arrive (`watch`,
    /// `demo`); `record` only writes the file, at full speed, and analyses
    /// it afterwards.
    analyse: bool,
    file: Option<RecordWriter>,
    buf: Vec<Record>,
    /// Loss counters when the session started; the session reports what
    /// was lost since.
    baseline: LossBlock,
    /// Drops before the session attached that may fall into its stream
    /// (see `LossBlock::dropped_before_attach`).
    dropped_before_attach: u64,
    /// Wall clock when the session attached, ns since the Unix epoch.
    started_unix_ns: u64,
    /// Ring clock then.
    started_ticks: u64,
    /// The blocks that open the stream (the table and counters found on
    /// attaching, the start block), kept until the record file, which may
    /// be opened after attaching, has them.
    prologue: Option<Vec<Block>>,
    /// Deaths seen in the table, not yet placed in the stream (they go in
    /// once every record the dead process wrote has been taken).
    pending_deaths: Vec<ProcessInfo>,
    /// (table entry, generation) of the processes found dead.
    reported_deaths: HashSet<(u16, u32)>,
    /// (table entry, generation) of the processes whose identity is in
    /// the stream.
    announced: HashSet<(u16, u32)>,
    last_poll: Instant,
    /// Where the backlog (the records the ring held on attaching) ends,
    /// while the engine has not been told it is read.
    backlog_end: Option<u64>,
}

impl Session {
    /// Attaches as the consumer of the ring at `ring_path`, creating it if
    /// it does not exist, and starts `record_file` if given.
    ///
    /// # Errors
    /// The ring cannot be opened or created, another consumer is attached,
    /// or the file is refused or cannot be created (see [`crate::output`]).
    pub fn start(ring_path: &Path, record_file: Option<&Path>) -> Result<Session> {
        let mut session = Session::attach(ring_path, true, true)?;
        if let Some(path) = record_file {
            session.record_into(path)?;
        }
        Ok(session)
    }

    /// As [`Session::start`], for a ring that must exist already (`watch`:
    /// a typo must not make a new ring nobody writes to).
    ///
    /// # Errors
    /// As [`Session::start`]; a missing ring is an error.
    pub fn start_existing(ring_path: &Path, record_file: Option<&Path>) -> Result<Session> {
        let mut session = Session::attach(ring_path, false, true)?;
        if let Some(path) = record_file {
            session.record_into(path)?;
        }
        Ok(session)
    }

    /// As [`Session::start`], writing `record_file` without feeding the
    /// engine (which stays empty).
    ///
    /// # Errors
    /// As [`Session::start`].
    pub fn recorder(ring_path: &Path, record_file: &Path) -> Result<Session> {
        let mut session = Session::attach(ring_path, true, false)?;
        session.record_into(record_file)?;
        Ok(session)
    }

    /// Attaches as the consumer of the ring at `ring_path` (created if
    /// missing), without a file yet: `record` opens its output after
    /// starting the command (a FIFO must not hold the command back) and
    /// hands it over with [`Session::write_into`]. The engine stays empty
    /// unless `analyse` (an output that cannot be read back).
    ///
    /// # Errors
    /// As [`Session::start`].
    pub fn consumer_for_recording(ring_path: &Path, analyse: bool) -> Result<Session> {
        Session::attach(ring_path, true, analyse)
    }

    /// Starts writing everything consumed from now on into `path`,
    /// which must not be the ring itself (see [`crate::output`]).
    ///
    /// # Errors
    /// The file is refused or cannot be created.
    pub fn record_into(&mut self, path: &Path) -> Result<()> {
        let protected = Protected::of(self.ring().path(), "the ring being read");
        let output = Output::create(path, protected.as_slice())?;
        self.write_into(output);
        Ok(())
    }

    /// Starts writing everything consumed from now on into `output`,
    /// after the blocks that open the stream.
    pub fn write_into(&mut self, output: Output) {
        let header = FileHeader::new(self.ring(), self.started_unix_ns, self.started_ticks);
        let mut file = RecordWriter::new(output, &header);
        for block in self.prologue.take().unwrap_or_default() {
            file.block(block);
        }
        self.file = Some(file);
    }

    /// Why the record file stopped taking data, if it did (the session
    /// goes on consuming; [`Session::finish`] returns the error).
    pub fn output_failure(&self) -> Option<&OutputFailure> {
        self.file.as_ref().and_then(RecordWriter::failure)
    }

    fn attach(ring_path: &Path, create: bool, analyse: bool) -> Result<Session> {
        let ring = if create {
            Ring::open_or_create_with(ring_path, || RingOptions::from_env(ring_path))?
        } else {
            Ring::open(ring_path).map_err(|e| {
                if is_missing(&e) {
                    anyhow::anyhow!(
                        "memtrack: ring {}: no such ring (start the workload with MEMTRACK_RING set first; \
                         `memtrack status` lists the rings)",
                        ring_path.display()
                    )
                } else {
                    e.into()
                }
            })?
        };
        // Before attaching: attaching counts what a killed predecessor lost,
        // and this session reports that.
        let before = ring.snapshot();
        let baseline = LossBlock::new(before.dropped, &before.progress, before.untracked_processes);
        let mut consumer = Consumer::attach(ring_path)?;
        let started_unix_ns = memtrack::clock::realtime_ns();
        let started_ticks = consumer.ring().clock_source().now();
        // Where the stream starts, then the writers' state: the table (who
        // owns each entry, for the records of a ring in use: see
        // `Engine::owner`) and the live counters (the usage before the
        // stream: see `Engine::settle_opening`). In this order, every claim
        // below `backlog_end` was made before the table was read; a hook
        // that updates its counter cell before we read it and claims its
        // ticket after `backlog_end` is counted twice in the opening (the
        // cross-check at the end marks its cell uncertain). In the other
        // order, every hook between the two reads would be.
        let first_ticket = consumer.progress().taken;
        // Fenced: the records claimed below it come out before any other
        // (merged tickets alone would not keep them below it).
        let backlog_end = consumer.fence_backlog();
        let at_start = consumer.ring().snapshot();
        let start = StartBlock::new(started_ticks, first_ticket, backlog_end, before.dropped);
        let time = TimeBase::of_ring(consumer.ring()).starting_at(started_ticks);
        let mut session = Session {
            consumer,
            engine: Engine::new(time),
            analyse,
            file: None,
            buf: Vec::with_capacity(BATCH),
            baseline,
            dropped_before_attach: if start.has_backlog() { before.dropped } else { 0 },
            started_unix_ns,
            started_ticks,
            prologue: Some(Vec::new()),
            pending_deaths: Vec::new(),
            reported_deaths: HashSet::new(),
            announced: HashSet::new(),
            last_poll: Instant::now() - PROCESS_POLL,
            backlog_end: start.has_backlog().then_some(backlog_end),
        };
        session.announce(&at_start.processes, true)?;
        session.write_start(&at_start, start)?;
        Ok(session)
    }

    /// The opening of the stream: the process table and the writers' live
    /// counters when the session attached, then where the stream starts.
    fn write_start(&mut self, at_start: &memtrack::Snapshot, start: StartBlock) -> Result<()> {
        for p in &at_start.processes {
            let mut block = process_block(at_start, p);
            block.phase = ProcessBlock::AT_START;
            self.handle_block(Block::Process(block))?;
            if p.state == ProcessState::Died {
                // Ended before the stream: no death block later.
                self.reported_deaths.insert((p.slot, p.generation));
            }
        }
        for c in &at_start.counters {
            let Some(p) = at_start.processes.iter().find(|p| p.slot == c.process_slot) else { continue };
            let block = CounterBlock::new(p, c.device_id, c.kind, c.live_bytes, c.live_buffers);
            self.handle_block(Block::opening(block))?;
        }
        self.handle_block(Block::Start(start))
    }

    /// Wall clock when the session attached (time 0 of its engine), ns
    /// since the Unix epoch.
    pub fn started_unix_ns(&self) -> u64 {
        self.started_unix_ns
    }

    /// The ring.
    pub fn ring(&self) -> &Ring {
        self.consumer.ring()
    }

    /// The engine, with everything consumed so far (empty for a
    /// [`Session::recorder`]).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Takes what the consumer's batching policy says is due (whole
    /// batches, or what waited its latency bound, or everything when writers
    /// wait for space: `memtrack::BatchPolicy`), and notices processes that
    /// died. Returns the records handled. A record file that fails does not
    /// stop the session (see [`Session::output_failure`]), so neither does
    /// it make this fail.
    ///
    /// # Errors
    /// None at present; the `Result` leaves room for a sink that must stop
    /// the session.
    pub fn poll(&mut self) -> Result<usize> {
        if !self.pending_deaths.is_empty() {
            // A death goes in once the consumer has caught up (`place_deaths`);
            // whole batches alone may never catch up while others write.
            return self.drain();
        }
        // A take of less than a whole batch ends the poll; without batching
        // (a batch of 1), one of less than BATCH does, as in `drain`.
        let full = match usize::try_from(self.consumer.batch_policy().batch) {
            Ok(batch) if batch > 1 => batch.min(BATCH),
            _ => BATCH,
        };
        self.poll_with(Consumer::take_due, full)
    }

    /// As [`Session::poll`], but takes everything the ring holds now: for
    /// the end of a session, once the writers are done.
    ///
    /// # Errors
    /// As [`Session::poll`].
    pub fn drain(&mut self) -> Result<usize> {
        self.poll_with(Consumer::take, BATCH)
    }

    /// Takes with `take` until a take returns fewer than `full` records.
    fn poll_with(
        &mut self,
        take: fn(&mut Consumer, usize, &mut Vec<Record>) -> memtrack::Batch,
        full: usize,
    ) -> Result<usize> {
        // From the first record on, blocks go to the file or nowhere.
        self.prologue = None;
        let mut handled = 0;
        loop {
            let mut buf = std::mem::take(&mut self.buf);
            buf.clear();
            let batch = take(&mut self.consumer, BATCH, &mut buf);
            let result = self.handle(&buf).and_then(|()| self.flush());
            self.buf = buf;
            result?;
            // Only once the records are in the file (the kernel's page
            // cache: they survive our being killed): a reader killed before
            // this commit costs them, and its successor counts them lost.
            self.consumer.commit();
            handled += batch.records;
            // Fewer than a batch: we reached the frontier, or the policy
            // says wait; what comes next waits for the next poll.
            if batch.records + batch.lost < full {
                break;
            }
        }
        self.note_backlog_read();
        if self.last_poll.elapsed() >= PROCESS_POLL {
            self.last_poll = Instant::now();
            self.watch_table()?;
        }
        if self.consumer.caught_up() {
            self.place_deaths()?;
        }
        Ok(handled)
    }

    /// Tells the engine the backlog is read once the consumer has passed
    /// its end. Its last record tells it too, but that record may never
    /// come (a claim its writer never published, lost): the engine would
    /// then wait for the next record after it, which an idle ring may not
    /// write for hours, showing meanwhile the processes that had ended
    /// before the attach as running, with their buffers in device usage.
    /// A file replays the same order: the next record after the hole, or
    /// the blocks after the stream, settle it at the same point.
    fn note_backlog_read(&mut self) {
        if let Some(end) = self.backlog_end
            && self.consumer.progress().taken >= end
        {
            self.backlog_end = None;
            if self.analyse {
                self.engine.backlog_read();
            }
        }
    }

    /// Sleeps briefly if the last poll found little (see
    /// `Consumer::pause_if_idle`).
    pub fn pause_if_idle(&mut self, handled: usize) {
        self.consumer.pause_if_idle(handled);
    }

    fn flush(&mut self) -> Result<()> {
        if let Some(file) = &mut self.file {
            file.flush();
        }
        Ok(())
    }

    fn handle(&mut self, records: &[Record]) -> Result<()> {
        if let Some(file) = &mut self.file {
            file.records(records);
        }
        if self.analyse {
            for record in records {
                self.engine.apply(record);
            }
        }
        Ok(())
    }

    fn handle_block(&mut self, block: Block) -> Result<()> {
        match (&mut self.file, &mut self.prologue) {
            (Some(file), _) => file.block(block),
            (None, Some(prologue)) => prologue.push(block),
            (None, None) => {}
        }
        if self.analyse {
            self.engine.apply_block(&block);
        }
        Ok(())
    }

    /// Reads the process table: new owners of entries get an identity
    /// block, deaths are queued for `place_deaths`.
    fn watch_table(&mut self) -> Result<()> {
        let table = self.ring().processes();
        self.announce(&table, false)?;
        for p in table {
            let id = (p.slot, p.generation);
            if p.state == ProcessState::Died
                && !self.reported_deaths.contains(&id)
                && !self.pending_deaths.iter().any(|d| (d.slot, d.generation) == id)
            {
                self.pending_deaths.push(p);
            }
        }
        Ok(())
    }

    /// Puts an identity block for each process of `table` not announced
    /// yet into the stream, with its pid in our namespace where it can be
    /// found (it must be alive for that: the earlier the better).
    /// `initial_tail`: `table` is the table as we found it on attaching.
    fn announce(&mut self, table: &[ProcessInfo], initial: bool) -> Result<()> {
        let new: Vec<&ProcessInfo> =
            table.iter().filter(|p| !self.announced.contains(&(p.slot, p.generation))).collect();
        if new.is_empty() {
            return Ok(());
        }
        let new: Vec<ProcessInfo> = new.into_iter().cloned().collect();
        for (p, host_pid) in new.iter().zip(host_pids(&new)) {
            self.announced.insert((p.slot, p.generation));
            self.handle_block(Block::Identity(IdentityBlock::new(p, host_pid, initial)))?;
        }
        Ok(())
    }

    /// Puts the pending deaths into the stream. A death belongs after the
    /// dead process's last record, so `poll` calls this only once the
    /// consumer has caught up with every claim made so far (`finish`, at
    /// the end, regardless).
    fn place_deaths(&mut self) -> Result<()> {
        if self.pending_deaths.is_empty() {
            return Ok(());
        }
        let now = self.ring().clock_source().now();
        for p in std::mem::take(&mut self.pending_deaths) {
            self.reported_deaths.insert((p.slot, p.generation));
            self.handle_block(Block::Died(DiedBlock::new(&p, now)))?;
        }
        Ok(())
    }

    /// Whether no process attached to the ring is still running.
    pub fn writers_ended(&self) -> bool {
        self.ring().processes().iter().all(|p| p.state != ProcessState::Running)
    }

    /// Whether every record claimed so far has been taken.
    pub fn caught_up(&self) -> bool {
        self.consumer.caught_up()
    }

    /// Loss since the session started, and drops before it that may fall
    /// into its stream.
    pub fn losses(&self) -> LossBlock {
        let s = self.ring().snapshot();
        let mut losses = LossBlock::new(s.dropped, &s.progress, s.untracked_processes).since(&self.baseline);
        losses.dropped_before_attach = self.dropped_before_attach;
        losses
    }

    /// Drains what is left, writes the process table, loss totals and the
    /// writers' live counters, completes the file, and returns the engine.
    ///
    /// # Errors
    /// Writing the record file failed.
    pub fn finish(mut self) -> Result<Engine> {
        self.drain()?;
        self.watch_table()?;
        // Whatever is still pending goes in now, after everything taken.
        self.place_deaths()?;
        let snapshot = self.ring().snapshot();
        for p in &snapshot.processes {
            self.handle_block(Block::Process(process_block(&snapshot, p)))?;
        }
        self.handle_block(Block::Loss(self.losses()))?;
        for c in &snapshot.counters {
            let Some(p) = snapshot.processes.iter().find(|p| p.slot == c.process_slot) else { continue };
            let block = CounterBlock::new(p, c.device_id, c.kind, c.live_bytes, c.live_buffers);
            self.handle_block(Block::Counter(block))?;
        }
        if let Some(file) = self.file.take()
            && let Some(replaced) = file.finish()?
        {
            eprintln!("{replaced}");
        }
        Ok(self.engine)
    }
}

/// Whether `error` says the ring file does not exist.
fn is_missing(error: &memtrack::Error) -> bool {
    matches!(&error.kind, memtrack::ErrorKind::Io { error, .. } if error.kind() == std::io::ErrorKind::NotFound)
}

/// `p`'s process-table block, saying whether the counter pool missed
/// some of its events (then its counters can't be checked against records).
fn process_block(snapshot: &memtrack::Snapshot, p: &memtrack::ProcessInfo) -> ProcessBlock {
    let mut block = ProcessBlock::from(p);
    let untracked = snapshot.untracked.iter().any(|u| u.process_slot == p.slot && u.events > 0);
    block.counters_incomplete = untracked.into();
    block
}
