//! `memtrack serve`: a Prometheus endpoint for one ring.
//!
//! Each scrape of `/metrics` reads [`Ring::snapshot`] (the writers' live
//! counters, the process table and the loss counters) without consuming the
//! ring, so `serve` runs beside `record` or `watch`, and encodes it with the
//! `prometheus-client` crate: OpenMetrics text when the scraper asks for it
//! (Prometheus does), else the Prometheus text format 0.0.4 (curl, browsers).
//! If the ring file is replaced (removed and created anew), the next scrape
//! opens the new one; while it is missing, scrapes get a 503 and one line
//! naming the ring and the reason.
//!
//! The HTTP side ([`http`]) is hyper on a one-thread tokio runtime: every
//! connection is its own task with its own deadlines, so an idle or slow
//! client never delays another one's scrape. A scrape is a few microseconds
//! of reading shared memory, done under the [`Exporter`]'s lock.
//!
//! **`--consume`.** Allocation and free counts, peaks and anomaly counts
//! exist only for a reader that consumes the ring. With `--consume`, a
//! thread attaches as the ring's consumer and runs the state engine; the
//! [`Exporter`] reads its [`EngineTotals`] (refreshed every 100 ms) on each
//! scrape through [`Exporter::with_engine_totals`], and
//! [`encode_engine_totals`] turns them into `memtrack_allocations_total`,
//! `memtrack_frees_total`, `memtrack_device_memory_peak_bytes` and
//! `memtrack_anomalies_total`.

mod http;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use memtrack::{ProcessState, Ring, Snapshot};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use crate::engine::process_key;
use crate::units::kind_name;

/// Where `serve` listens unless told otherwise (the port is in Prometheus's
/// default port allocations list for exporters).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";

const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Args)]
pub struct ServeArgs {
    /// Ring name (file /dev/shm/memtrack-NAME) or path.
    /// Default: $MEMTRACK_RING, else "default".
    #[arg(long, value_name = "NAME")]
    ring: Option<String>,
    /// Address to listen on. Port 0 picks a free port; the address bound is
    /// printed on stdout.
    #[arg(long, default_value = DEFAULT_LISTEN, value_name = "ADDR")]
    listen: String,
    /// Also export per-process series (labels process, pid and name).
    #[arg(long)]
    per_process: bool,
    /// Also consume the ring (as its one reader) through the state engine,
    /// adding allocation and free totals, peaks and anomaly counts.
    #[arg(long)]
    consume: bool,
}

pub fn run(args: &ServeArgs) -> Result<()> {
    let mut exporter = Exporter::open(crate::ring_arg::resolve(args.ring.as_deref())?, args.per_process)?;
    if args.consume {
        let totals = consume_in_background(&exporter.source.path)?;
        exporter =
            exporter.with_engine_totals(move || totals.lock().unwrap_or_else(|e| e.into_inner()).clone());
    }
    let listener = TcpListener::bind(&args.listen).with_context(|| {
        format!("ring {}: cannot listen on {}", exporter.source.path.display(), args.listen)
    })?;
    let address = listener.local_addr()?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "memtrack serve: ring {} on http://{address}/metrics", exporter.source.path.display())?;
    out.flush()?;
    drop(out);
    http::serve(listener, exporter)
}

/// How often the consuming thread refreshes the totals scrapes see.
const TOTALS_REFRESH: Duration = Duration::from_millis(100);

/// Attaches as the ring's consumer and keeps the engine's totals behind a
/// mutex, refreshed every [`TOTALS_REFRESH`], for `--consume`.
fn consume_in_background(path: &std::path::Path) -> Result<std::sync::Arc<std::sync::Mutex<EngineTotals>>> {
    let mut session = crate::session::Session::start(path, None)?;
    let totals = std::sync::Arc::new(std::sync::Mutex::new(EngineTotals::default()));
    let shared = totals.clone();
    std::thread::spawn(move || {
        let mut refreshed = std::time::Instant::now();
        loop {
            let handled = match session.poll() {
                Ok(handled) => handled,
                Err(error) => {
                    eprintln!("memtrack serve: stopped consuming: {error:#}");
                    return;
                }
            };
            if refreshed.elapsed() >= TOTALS_REFRESH {
                refreshed = std::time::Instant::now();
                let fresh = EngineTotals::of(session.engine());
                *shared.lock().unwrap_or_else(|e| e.into_inner()) = fresh;
            }
            session.pause_if_idle(handled);
        }
    });
    Ok(totals)
}

impl EngineTotals {
    /// The totals of a state engine.
    fn of(engine: &crate::engine::Engine) -> EngineTotals {
        let kinds = engine
            .devices()
            .iter()
            .map(|(&key, s)| {
                (key, KindTotals { allocations: s.allocs, frees: s.frees, peak_bytes: s.peak_bytes })
            })
            .collect();
        let counts = engine.anomaly_counts();
        let anomalies = [
            ("unknown_free", counts.unknown_frees),
            ("duplicate_alloc", counts.duplicate_allocs),
            ("size_mismatch", counts.size_mismatches),
        ]
        .into_iter()
        .collect();
        EngineTotals { kinds, anomalies }
    }
}

/// The ring a server reads, re-opened when its file is replaced.
struct RingSource {
    path: PathBuf,
    ring: Option<Ring>,
    /// (device, inode) of the file `ring` was opened from, as stat'ed just
    /// before opening: if the path is replaced in between, the next scrape
    /// sees another inode and opens again.
    file_id: Option<(u64, u64)>,
}

impl RingSource {
    fn open(path: PathBuf) -> Result<RingSource> {
        let mut source = RingSource { path, ring: None, file_id: None };
        source.current()?;
        Ok(source)
    }

    /// The ring now at `path`.
    fn current(&mut self) -> Result<&Ring, memtrack::Error> {
        let file_id = std::fs::metadata(&self.path).ok().map(|m| (m.dev(), m.ino()));
        if file_id.is_none() || file_id != self.file_id {
            self.ring = None;
        }
        if self.ring.is_none() {
            self.ring = Some(Ring::open(&self.path)?);
            self.file_id = file_id;
        }
        Ok(self.ring.as_ref().expect("opened above"))
    }
}

/// What a consuming reader adds to the live counters (see the module doc).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EngineTotals {
    /// Per (device, kind): counts since the engine started.
    pub kinds: BTreeMap<(u32, u8), KindTotals>,
    /// Per anomaly type (`unknown_free`, `duplicate_alloc`, ...): count.
    pub anomalies: BTreeMap<&'static str, u64>,
}

/// A consuming reader's totals for one (device, kind).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KindTotals {
    /// Allocation records.
    pub allocations: u64,
    /// Free records.
    pub frees: u64,
    /// Highest live bytes seen.
    pub peak_bytes: u64,
}

type EngineTotalsFn = Box<dyn Fn() -> EngineTotals + Send>;

/// Answers scrapes of one ring.
pub struct Exporter {
    source: RingSource,
    per_process: bool,
    /// Every (device, kind) ever exported: a pair whose usage drops to zero
    /// (and so leaves the snapshot) is exported as 0, not as a gap.
    seen: BTreeSet<(u32, u8)>,
    engine_totals: Option<EngineTotalsFn>,
    /// The last scrape error printed, so a missing ring is reported once.
    last_error: Option<String>,
}

impl Exporter {
    /// Opens the ring at `path`.
    ///
    /// # Errors
    /// The ring cannot be opened; the message names it.
    pub fn open(path: PathBuf, per_process: bool) -> Result<Exporter> {
        Ok(Exporter {
            source: RingSource::open(path)?,
            per_process,
            seen: BTreeSet::new(),
            engine_totals: None,
            last_error: None,
        })
    }

    /// Adds a consuming reader's totals to every scrape (`--consume`).
    pub fn with_engine_totals(mut self, totals: impl Fn() -> EngineTotals + Send + 'static) -> Exporter {
        self.engine_totals = Some(Box::new(totals));
        self
    }

    /// The body of one scrape, in OpenMetrics text (with the `# EOF` line)
    /// or in the Prometheus text format 0.0.4.
    ///
    /// # Errors
    /// The ring is gone or no longer valid; the message names it.
    pub fn scrape(&mut self, openmetrics: bool) -> Result<String, memtrack::Error> {
        let snapshot = self.source.current()?.snapshot();
        self.seen.extend(snapshot.counters.iter().map(|c| (c.device_id, c.kind)));
        self.seen.extend(snapshot.capacities.iter().map(|c| (c.device_id, c.kind)));
        let mut registry = Registry::default();
        registry.register_collector(Box::new(SnapshotMetrics {
            snapshot,
            devices: self.seen.clone(),
            per_process: self.per_process,
            engine: self.engine_totals.as_ref().map(|totals| totals()),
        }));
        let mut body = String::new();
        let encoded = if openmetrics {
            prometheus_client::encoding::text::encode(&mut body, &registry)
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut body, &registry)
        };
        encoded.expect("writing to a String cannot fail");
        Ok(body)
    }

    /// The answer to one request.
    fn respond(&mut self, request: &Request) -> Response {
        let path = request.target.split('?').next().unwrap_or("");
        let method_ok = request.method == "GET" || request.method == "HEAD";
        match (path, method_ok) {
            ("/metrics", true) => {
                let openmetrics = request.accept.contains("application/openmetrics-text");
                match self.scrape(openmetrics) {
                    Ok(body) => {
                        self.last_error = None;
                        let content_type = if openmetrics {
                            OPENMETRICS_CONTENT_TYPE
                        } else {
                            prometheus_client::encoding::prometheus_text::CONTENT_TYPE
                        };
                        Response { status: 200, content_type, body }
                    }
                    Err(error) => {
                        let line = format!("{error:#}");
                        let line =
                            if line.starts_with("memtrack:") { line } else { format!("memtrack: {line}") };
                        if self.last_error.as_ref() != Some(&line) {
                            eprintln!("{line}");
                            self.last_error = Some(line.clone());
                        }
                        Response::text(503, line + "\n")
                    }
                }
            }
            ("/", true) => Response::text(
                200,
                format!("memtrack serve: ring {}\nmetrics: /metrics\n", self.source.path.display()),
            ),
            ("/metrics" | "/", false) => Response::text(405, "method not allowed\n".into()),
            _ => Response::text(404, "not found: try /metrics\n".into()),
        }
    }
}

/// What [`Exporter::respond`] needs of a request.
struct Request {
    method: String,
    /// The path and query.
    target: String,
    /// The Accept header, lowercased ("" if none).
    accept: String,
}

/// An answer, before HTTP framing (HEAD answers lose their body there).
struct Response {
    status: u16,
    content_type: &'static str,
    body: String,
}

impl Response {
    fn text(status: u16, body: String) -> Response {
        Response { status, content_type: "text/plain; charset=utf-8", body }
    }
}

#[derive(Debug, EncodeLabelSet)]
struct DeviceLabels {
    device: u32,
    kind: String,
}

impl DeviceLabels {
    fn new((device, kind): (u32, u8)) -> DeviceLabels {
        DeviceLabels { device, kind: kind_name(kind) }
    }
}

#[derive(Debug, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Debug, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

/// A ring of the file: `shared` for the shared ring, else the sub-ring's
/// index (as `status --json` gives it under `corrupt_slots`). Not `ring`:
/// scrape configurations put the ring's name in a target label `ring`.
#[derive(Debug, EncodeLabelSet)]
struct SubringLabel {
    subring: String,
}

#[derive(Debug, EncodeLabelSet)]
struct TypeLabel {
    r#type: &'static str,
}

/// A process: `process` (table entry and generation) tells processes
/// apart, so no two series share a label set, whatever their pids (which
/// repeat across PID namespaces).
#[derive(Debug, EncodeLabelSet)]
struct ProcessLabels {
    process: String,
    pid: u32,
    name: String,
}

#[derive(Debug, EncodeLabelSet)]
struct ProcessDeviceLabels {
    process: String,
    pid: u32,
    name: String,
    device: u32,
    kind: String,
}

/// One scrape's values, encoded when the registry is.
#[derive(Debug)]
struct SnapshotMetrics {
    snapshot: Snapshot,
    /// The (device, kind) pairs to export usage for.
    devices: BTreeSet<(u32, u8)>,
    per_process: bool,
    engine: Option<EngineTotals>,
}

/// Encodes one metric family: a descriptor, then one sample per label set.
fn family<L: EncodeLabelSet, M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    metric_type: MetricType,
    samples: impl IntoIterator<Item = (L, M)>,
) -> std::fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, unit, metric_type)?;
    for (labels, value) in samples {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Encodes one metric family without labels.
fn single(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric_type: MetricType,
    value: impl EncodeMetric,
) -> std::fmt::Result {
    value.encode(encoder.encode_descriptor(name, help, None, metric_type)?)
}

fn gauge(value: i64) -> ConstGauge<i64> {
    ConstGauge::new(value)
}

fn counter(value: u64) -> ConstCounter<u64> {
    ConstCounter::new(value)
}

impl Collector for SnapshotMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let s = &self.snapshot;
        // Usage per (device, kind) of the processes that did not die; every
        // (device, kind) seen so far keeps its series, at 0 once freed.
        let mut usage: BTreeMap<(u32, u8), (u64, u64)> =
            self.devices.iter().map(|&key| (key, (0, 0))).collect();
        usage.extend(s.device_usage());
        family(
            &mut encoder,
            "memtrack_device_memory_used",
            "Live bytes per device and kind held by the ring's running processes (ALIAS buffers excluded; never negative).",
            Some(&Unit::Bytes),
            MetricType::Gauge,
            usage.iter().map(|(&key, &(bytes, _))| (DeviceLabels::new(key), gauge(saturate(bytes)))),
        )?;
        family(
            &mut encoder,
            "memtrack_device_memory_buffers",
            "Live buffers per device and kind held by the ring's running processes (ALIAS buffers included).",
            None,
            MetricType::Gauge,
            usage.iter().map(|(&key, &(_, buffers))| (DeviceLabels::new(key), gauge(saturate(buffers)))),
        )?;
        family(
            &mut encoder,
            "memtrack_device_memory_capacity",
            "Total bytes of a device's kind of memory, where a writer set it (memtrack_set_capacity).",
            Some(&Unit::Bytes),
            MetricType::Gauge,
            s.capacities.iter().map(|c| (DeviceLabels::new((c.device_id, c.kind)), gauge(saturate(c.bytes)))),
        )?;
        single(
            &mut encoder,
            "memtrack_records_delivered",
            "Records a consumer took out of the ring and handed on.",
            MetricType::Counter,
            counter(s.progress.delivered),
        )?;
        family(
            &mut encoder,
            "memtrack_records_lost",
            "Records lost: dropped by a writer (ring full), claimed by a writer that died, or taken by a consumer that died.",
            None,
            MetricType::Counter,
            [
                ("dropped", s.dropped),
                ("writer_died", s.progress.lost_writer_died),
                ("reader_died", s.progress.lost_reader_died),
            ]
            .map(|(reason, value)| (ReasonLabel { reason }, counter(value))),
        )?;
        // A slot in a state the protocol never writes (a damaged file)
        // stops its ring's consumer for good: nothing from there on is
        // delivered, and no loss counter says so.
        single(
            &mut encoder,
            "memtrack_corrupt_stops",
            "Rings (the shared ring, sub-rings) whose consumer stops for good at a corrupt slot (a damaged file; memtrack status names them).",
            MetricType::Gauge,
            gauge(s.corrupt.len() as i64),
        )?;
        family(
            &mut encoder,
            "memtrack_corrupt_stop_records_behind",
            "Records claimed behind the corrupt slot a ring's consumer stops at: they will not be delivered.",
            None,
            MetricType::Gauge,
            s.corrupt.iter().map(|c| {
                let subring = c.subring.map_or_else(|| "shared".to_owned(), |i| i.to_string());
                (SubringLabel { subring }, gauge(saturate(c.behind)))
            }),
        )?;
        let count = |state: ProcessState| s.processes.iter().filter(|p| p.state == state).count() as i64;
        family(
            &mut encoder,
            "memtrack_processes",
            "Writer processes in the ring's process table, by state.",
            None,
            MetricType::Gauge,
            [ProcessState::Running, ProcessState::Exited, ProcessState::Died]
                .map(|state| (StateLabel { state: state.name() }, gauge(count(state)))),
        )?;
        single(
            &mut encoder,
            "memtrack_untracked_processes",
            "Processes that found the ring's process table full and ran untracked.",
            MetricType::Counter,
            counter(s.untracked_processes),
        )?;
        let (untracked_bytes, untracked_buffers, untracked_events) = s.untracked_usage();
        single(
            &mut encoder,
            "memtrack_untracked_memory_used_bytes",
            "Live bytes of running processes that found the counter pool full (in no device series; MEMTRACK_COUNTER_CELLS sizes the pool).",
            MetricType::Gauge,
            gauge(saturate(untracked_bytes)),
        )?;
        single(
            &mut encoder,
            "memtrack_untracked_memory_buffers",
            "Live buffers of running processes that found the counter pool full.",
            MetricType::Gauge,
            gauge(saturate(untracked_buffers)),
        )?;
        single(
            &mut encoder,
            "memtrack_untracked_events",
            "Buffer events whose live counter found the counter pool full (their records are delivered as ever).",
            MetricType::Counter,
            counter(untracked_events),
        )?;
        single(
            &mut encoder,
            "memtrack_untracked_capacities",
            "memtrack_set_capacity calls that found the ring's capacity table full.",
            MetricType::Counter,
            counter(s.untracked_capacities),
        )?;
        single(
            &mut encoder,
            "memtrack_consumer_attached",
            "1 while a consumer (memtrack record or watch) drains the ring, else 0.",
            MetricType::Gauge,
            gauge(i64::from(s.reader_pid.is_some())),
        )?;
        if self.per_process {
            let process = |slot: u16| s.processes.iter().find(|p| p.slot == slot);
            family(
                &mut encoder,
                "memtrack_process_memory_used",
                "Live bytes per process, device and kind (ALIAS buffers excluded).",
                Some(&Unit::Bytes),
                MetricType::Gauge,
                // Held figures: the process's untracked frees taken off, as
                // in the device series, so that the two add up.
                s.held().into_iter().filter_map(|(c, held, _approximate)| {
                    let p = process(c.process_slot)?;
                    let labels = ProcessDeviceLabels {
                        process: process_key(p.slot, p.generation),
                        pid: p.pid,
                        name: p.name.clone(),
                        device: c.device_id,
                        kind: kind_name(c.kind),
                    };
                    Some((labels, gauge(saturate(held.0))))
                }),
            )?;
            family(
                &mut encoder,
                "memtrack_process_records_dropped",
                "Records a process dropped because the ring was full.",
                None,
                MetricType::Counter,
                s.processes.iter().map(|p| {
                    let process = process_key(p.slot, p.generation);
                    (ProcessLabels { process, pid: p.pid, name: p.name.clone() }, counter(p.dropped))
                }),
            )?;
        }
        if let Some(engine) = &self.engine {
            encode_engine_totals(&mut encoder, engine)?;
        }
        Ok(())
    }
}

/// The metrics only a consuming reader has (`--consume`).
fn encode_engine_totals(encoder: &mut DescriptorEncoder, totals: &EngineTotals) -> std::fmt::Result {
    family(
        encoder,
        "memtrack_allocations",
        "Allocation records consumed, per device and kind.",
        None,
        MetricType::Counter,
        totals.kinds.iter().map(|(&key, t)| (DeviceLabels::new(key), counter(t.allocations))),
    )?;
    family(
        encoder,
        "memtrack_frees",
        "Free records consumed, per device and kind.",
        None,
        MetricType::Counter,
        totals.kinds.iter().map(|(&key, t)| (DeviceLabels::new(key), counter(t.frees))),
    )?;
    family(
        encoder,
        "memtrack_device_memory_peak",
        "Highest live bytes per device and kind since the consumer started.",
        Some(&Unit::Bytes),
        MetricType::Gauge,
        totals.kinds.iter().map(|(&key, t)| (DeviceLabels::new(key), gauge(saturate(t.peak_bytes)))),
    )?;
    family(
        encoder,
        "memtrack_anomalies",
        "Anomalies the consumer found (unknown frees, duplicate allocations, size mismatches), by type.",
        None,
        MetricType::Counter,
        totals.anomalies.iter().map(|(&name, &count)| (TypeLabel { r#type: name }, counter(count))),
    )
}

fn saturate(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use memtrack::format::kind;

    fn encode(metrics: SnapshotMetrics) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(metrics));
        let mut body = String::new();
        prometheus_client::encoding::text::encode(&mut body, &registry).unwrap();
        body
    }

    fn empty_snapshot() -> Snapshot {
        Snapshot {
            processes: Vec::new(),
            counters: Vec::new(),
            capacities: Vec::new(),
            progress: Default::default(),
            dropped: 0,
            untracked_processes: 0,
            untracked: Vec::new(),
            untracked_capacities: 0,
            reader_pid: None,
            tail: 0,
            subrings: Vec::new(),
            subring_capacity: 0,
            corrupt: Vec::new(),
        }
    }

    #[test]
    fn engine_totals_become_consume_only_metrics() {
        let path = std::env::temp_dir().join(format!("memtrack-serve-unit-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let _ring =
            Ring::create(&path, memtrack::RingOptions { capacity: 16, ..memtrack::RingOptions::default() })
                .unwrap();
        let mut totals = EngineTotals::default();
        totals.kinds.insert((1, kind::L1), KindTotals { allocations: 5, frees: 2, peak_bytes: 3000 });
        totals.anomalies.insert("unknown_free", 4);
        let mut exporter =
            Exporter::open(path.clone(), false).unwrap().with_engine_totals(move || totals.clone());
        let body = exporter.scrape(true).unwrap();
        std::fs::remove_file(&path).unwrap();
        for line in [
            "memtrack_allocations_total{device=\"1\",kind=\"L1\"} 5",
            "memtrack_frees_total{device=\"1\",kind=\"L1\"} 2",
            "memtrack_device_memory_peak_bytes{device=\"1\",kind=\"L1\"} 3000",
            "# UNIT memtrack_device_memory_peak_bytes bytes",
            "memtrack_anomalies_total{type=\"unknown_free\"} 4",
        ] {
            assert!(body.lines().any(|l| l == line), "missing {line:?} in\n{body}");
        }
        assert!(body.ends_with("# EOF\n"), "{body}");
    }

    #[test]
    fn without_a_consumer_there_are_no_consume_only_metrics() {
        let body = encode(SnapshotMetrics {
            snapshot: empty_snapshot(),
            devices: [(0, kind::DRAM)].into(),
            per_process: false,
            engine: None,
        });
        assert!(body.contains("memtrack_device_memory_used_bytes{device=\"0\",kind=\"DRAM\"} 0\n"), "{body}");
        for absent in
            ["memtrack_allocations", "memtrack_frees", "_peak_", "memtrack_anomalies", "memtrack_process_"]
        {
            assert!(!body.contains(absent), "{absent} in\n{body}");
        }
    }
}
