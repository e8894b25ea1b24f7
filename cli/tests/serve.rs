//! `memtrack serve` run as an operator would: the built binary on an
//! ephemeral port, a real ring written with `memtrack::Writer`, scraped over
//! TCP, every value checked exactly.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use memtrack::format::kind;
use memtrack::{Consumer, MemtrackBuffer, Ring, RingOptions, Writer, ring_path};

const OPENMETRICS: &str =
    "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// A `memtrack serve` process, killed on drop.
struct Server {
    child: Child,
    address: String,
}

impl Server {
    fn start(ring: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_memtrack"))
            .args(["serve", "--ring", ring.to_str().unwrap(), "--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run memtrack serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let address = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.strip_suffix("/metrics\n"))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_owned();
        Server { child, address }
    }

    /// Sends one request; returns (status, lowercased head, body).
    fn request(&self, request_line: &str, accept: &str) -> (u16, String, String) {
        let mut stream = TcpStream::connect(&self.address).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(stream, "{request_line}\r\nHost: {}\r\nAccept: {accept}\r\n\r\n", self.address).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        // Header names are case-insensitive (hyper writes them lowercase).
        (status, head.to_ascii_lowercase(), body.to_owned())
    }

    /// Scrapes /metrics as Prometheus does; returns `series -> value`.
    fn scrape(&self) -> BTreeMap<String, String> {
        let (status, head, body) = self.request("GET /metrics HTTP/1.1", OPENMETRICS);
        assert_eq!(status, 200, "{head}\n{body}");
        assert!(head.contains("content-type: application/openmetrics-text; version=1.0.0"), "{head}");
        assert!(body.ends_with("# EOF\n"), "{body}");
        samples(&body)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `name{labels} value` lines as a map; comments skipped.
fn samples(body: &str) -> BTreeMap<String, String> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample {l:?}"));
            (series.to_owned(), value.to_owned())
        })
        .collect()
}

fn assert_samples(got: &BTreeMap<String, String>, want: &[(&str, i64)]) {
    for (series, value) in want {
        assert_eq!(
            got.get(*series).map(String::as_str),
            Some(value.to_string().as_str()),
            "{series} in {got:#?}"
        );
    }
}

fn buffer(buffer_id: u64, size: u64, device_id: u32, kind: u8, flags: u8) -> MemtrackBuffer {
    MemtrackBuffer { buffer_id, size, device_id, kind, flags, ..Default::default() }
}

/// A fresh ring path, removed on drop.
struct TempRing(PathBuf);

impl TempRing {
    fn new(test: &str) -> TempRing {
        let path = ring_path(&format!("cli-serve-{test}-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        TempRing(path)
    }

    /// 16 slots and no sub-rings: every record goes to the shared ring,
    /// which the known workload fills to make drops.
    fn create(&self) -> Ring {
        Ring::create(&self.0, RingOptions { capacity: 16, subrings: 0, ..RingOptions::default() }).unwrap()
    }
}

impl Drop for TempRing {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Two writers in one ring: "model" (running) and "loader" (exited); 12
/// records, all delivered to a consumer; then 20 marks into the 16 free
/// slots with the consumer attached and idle: 4 dropped.
fn known_workload(ring: &TempRing) -> (Writer, Writer, Consumer) {
    let model = Writer::attach_named(ring.create(), b"model").unwrap(); // 1 record
    model.set_capacity(0, kind::DRAM, 1 << 30); // 1
    for id in 0..3 {
        model.alloc(&buffer(id, 1000, 0, kind::DRAM, 0)); // 3
    }
    model.free(&buffer(1, 1000, 0, kind::DRAM, 0)); // 1
    model.alloc(&buffer(10, 500, 1, kind::L1, 0)); // 1
    model.alloc(&buffer(11, 300, 1, kind::L1, memtrack::format::FLAG_ALIAS)); // 1
    let loader = Writer::attach_named(Ring::open(&ring.0).unwrap(), b"loader").unwrap(); // 1
    loader.alloc(&buffer(20, 700, 0, kind::DRAM, 0)); // 1
    loader.alloc(&buffer(21, 300, 0, kind::KERNEL, 0)); // 1
    loader.shutdown(); // 1: 12 in all

    let mut consumer = Consumer::attach(&ring.0).unwrap();
    let mut buf = Vec::new();
    let delivered = consumer.drain(usize::MAX, &mut buf, |_| Ok::<_, ()>(())).unwrap();
    assert_eq!(delivered, 12);
    for _ in 0..20 {
        model.mark(b"phase");
    }
    (model, loader, consumer)
}

#[test]
fn serve_exports_the_live_counters_exactly() {
    let ring = TempRing::new("exact");
    let (model, _loader, consumer) = known_workload(&ring);
    let server = Server::start(&ring.0, &[]);
    let got = server.scrape();
    assert_samples(
        &got,
        &[
            // The exited loader's 700 + 300 bytes are its leak, not usage;
            // its (device, kind) series stay, at 0.
            (r#"memtrack_device_memory_used_bytes{device="0",kind="DRAM"}"#, 2000),
            (r#"memtrack_device_memory_used_bytes{device="0",kind="KERNEL"}"#, 0),
            (r#"memtrack_device_memory_used_bytes{device="1",kind="L1"}"#, 500),
            (r#"memtrack_device_memory_buffers{device="0",kind="DRAM"}"#, 2),
            (r#"memtrack_device_memory_buffers{device="0",kind="KERNEL"}"#, 0),
            (r#"memtrack_device_memory_buffers{device="1",kind="L1"}"#, 2),
            (r#"memtrack_device_memory_capacity_bytes{device="0",kind="DRAM"}"#, 1 << 30),
            ("memtrack_records_delivered_total", 12),
            (r#"memtrack_records_lost_total{reason="dropped"}"#, 4),
            (r#"memtrack_records_lost_total{reason="writer_died"}"#, 0),
            (r#"memtrack_records_lost_total{reason="reader_died"}"#, 0),
            (r#"memtrack_processes{state="running"}"#, 1),
            (r#"memtrack_processes{state="exited"}"#, 1),
            (r#"memtrack_processes{state="died"}"#, 0),
            ("memtrack_untracked_processes_total", 0),
            ("memtrack_untracked_memory_used_bytes", 0),
            ("memtrack_untracked_memory_buffers", 0),
            ("memtrack_untracked_events_total", 0),
            ("memtrack_untracked_capacities_total", 0),
            ("memtrack_consumer_attached", 1),
            ("memtrack_corrupt_stops", 0),
        ],
    );
    // Exactly these series: no per-process, per-buffer or consume-only ones
    // (and no ring stopped at a corrupt slot).
    assert_eq!(got.len(), 21, "{got:#?}");
    assert_eq!(got.keys().filter(|k| k.contains("capacity")).count(), 1, "{got:#?}");

    // The snapshot is read anew on every scrape; a (device, kind) whose
    // usage drops to zero stays, as 0.
    model.free(&buffer(10, 500, 1, kind::L1, 0));
    model.free(&buffer(11, 300, 1, kind::L1, memtrack::format::FLAG_ALIAS));
    drop(consumer);
    let got = server.scrape();
    assert_samples(
        &got,
        &[
            (r#"memtrack_device_memory_used_bytes{device="1",kind="L1"}"#, 0),
            (r#"memtrack_device_memory_buffers{device="1",kind="L1"}"#, 0),
            (r#"memtrack_records_lost_total{reason="dropped"}"#, 6),
            ("memtrack_consumer_attached", 0),
        ],
    );
}

/// Format 2: any device id and kind has live counters and a capacity, and
/// sizes far beyond the old packed counter (2^43 B read as -8 TiB) are exact.
#[test]
fn serve_exports_any_device_and_kind_and_sizes_beyond_eight_tib() {
    let ring = TempRing::new("v2-devices");
    let writer = Writer::attach_named(ring.create(), b"galaxy").unwrap();
    writer.set_capacity(100, 9, 32 << 30);
    for id in 0..4 {
        writer.alloc(&buffer(id, 256 << 20, 100, 9, 0));
    }
    writer.alloc(&buffer(10, 1 << 43, 70_000, kind::DRAM, 0));
    writer.alloc(&buffer(11, 1 << 62, u32::MAX, kind::L1, 0));
    let got = Server::start(&ring.0, &[]).scrape();
    assert_samples(
        &got,
        &[
            (r#"memtrack_device_memory_used_bytes{device="100",kind="KIND_9"}"#, 1 << 30),
            (r#"memtrack_device_memory_buffers{device="100",kind="KIND_9"}"#, 4),
            (r#"memtrack_device_memory_capacity_bytes{device="100",kind="KIND_9"}"#, 32 << 30),
            (r#"memtrack_device_memory_used_bytes{device="70000",kind="DRAM"}"#, 1 << 43),
            (r#"memtrack_device_memory_used_bytes{device="4294967295",kind="L1"}"#, 1 << 62),
            ("memtrack_untracked_events_total", 0),
        ],
    );
}

/// A counter pool filled to the brim: the events it has no cell for are
/// shown as untracked, never silently left out.
#[test]
fn serve_shows_what_a_full_counter_pool_could_not_count() {
    let ring = TempRing::new("v2-full-pool");
    let small = RingOptions {
        capacity: 16,
        counter_cells: memtrack::format::MIN_COUNTER_CELLS,
        ..RingOptions::default()
    };
    let writer = Writer::attach_named(Ring::create(&ring.0, small).unwrap(), b"many").unwrap();
    let devices = memtrack::format::MIN_COUNTER_CELLS + 72;
    for device in 0..devices {
        writer.alloc(&buffer(device as u64, 1000, device, kind::DRAM, 0));
    }
    // From another attachment: through its own, a writer's lock looks free.
    let s = Ring::open(&ring.0).unwrap().snapshot();
    let counted: u64 = s.counters.iter().map(|c| c.held().0).sum();
    let (bytes, buffers, events) = s.untracked_usage();
    assert_eq!(s.counters.len(), memtrack::format::MIN_COUNTER_CELLS as usize, "every cell used");
    assert_eq!((bytes, buffers, events), (72 * 1000, 72, 72));
    assert_eq!(counted + bytes, devices as u64 * 1000, "counted + untracked = everything");
    let got = Server::start(&ring.0, &[]).scrape();
    assert_samples(
        &got,
        &[
            ("memtrack_untracked_memory_used_bytes", 72 * 1000),
            ("memtrack_untracked_memory_buffers", 72),
            ("memtrack_untracked_events_total", 72),
        ],
    );
}

/// A slot in a state the protocol never writes, in a real ring file,
/// stops its ring's consumer for good: `/metrics` counts the rings stopped
/// and gives, per ring (`subring` = `shared` or the index), the records
/// claimed behind the slot, as `status` does.
#[test]
fn serve_shows_each_ring_stopped_at_a_corrupt_slot() {
    let ring = TempRing::new("corrupt");
    let (_writer, subring, in_shared) =
        common::five_allocs_in_a_subring(&ring.0, |id| buffer(id, 1000, 0, kind::L1, 0));
    let server = Server::start(&ring.0, &[]);
    let got = server.scrape();
    assert_samples(&got, &[("memtrack_corrupt_stops", 0)]);
    assert!(!got.keys().any(|k| k.starts_with("memtrack_corrupt_stop_records_behind")), "{got:#?}");

    common::corrupt_subring_ticket_2_and_shared_ticket_0(&ring.0, subring);

    let got = server.scrape();
    assert_samples(
        &got,
        &[
            ("memtrack_corrupt_stops", 2),
            (r#"memtrack_corrupt_stop_records_behind{subring="shared"}"#, in_shared as i64 - 1),
            (&format!(r#"memtrack_corrupt_stop_records_behind{{subring="{subring}"}}"#), 2),
        ],
    );
    assert_eq!(got.keys().filter(|k| k.starts_with("memtrack_corrupt_stop")).count(), 3, "{got:#?}");
    let (_, _, body) = server.request("GET /metrics HTTP/1.1", OPENMETRICS);
    for line in ["# TYPE memtrack_corrupt_stops gauge", "# TYPE memtrack_corrupt_stop_records_behind gauge"] {
        assert!(body.lines().any(|l| l == line), "no {line:?} in\n{body}");
    }
}

#[test]
fn serve_per_process_adds_process_series_only_when_asked() {
    let ring = TempRing::new("per-process");
    let (_model, _loader, _consumer) = known_workload(&ring);
    let server = Server::start(&ring.0, &["--per-process"]);
    let got = server.scrape();
    let pid = std::process::id();
    // Both writers are this process (one pid); `process` (table entry and
    // generation) tells them apart.
    let series = |process: &str, name: &str, device: u32, kind: &str| {
        format!(
            r#"memtrack_process_memory_used_bytes{{process="{process}",pid="{pid}",name="{name}",device="{device}",kind="{kind}"}}"#
        )
    };
    let dropped = |process: &str, name: &str| {
        format!(r#"memtrack_process_records_dropped_total{{process="{process}",pid="{pid}",name="{name}"}}"#)
    };
    let want = [
        (series("0.1", "model", 0, "DRAM"), 2000),
        (series("0.1", "model", 1, "L1"), 500),
        (series("1.1", "loader", 0, "DRAM"), 700),
        (series("1.1", "loader", 0, "KERNEL"), 300),
        (dropped("0.1", "model"), 4),
        (dropped("1.1", "loader"), 0),
    ];
    let want: Vec<(&str, i64)> = want.iter().map(|(s, v)| (s.as_str(), *v)).collect();
    assert_samples(&got, &want);
    assert_eq!(got.keys().filter(|k| k.starts_with("memtrack_process_")).count(), want.len(), "{got:#?}");
    assert_eq!(got.len(), 21 + want.len(), "{got:#?}");
}

#[test]
fn serve_speaks_http_and_both_text_formats() {
    let ring = TempRing::new("http");
    let writer = Writer::attach_named(ring.create(), b"model").unwrap();
    writer.alloc(&buffer(1, 4096, 2, kind::TRACE, 0));
    let server = Server::start(&ring.0, &[]);

    // Without an OpenMetrics Accept header: the Prometheus text format 0.0.4.
    let (status, head, body) = server.request("GET /metrics HTTP/1.1", "*/*");
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("content-type: text/plain; version=0.0.4"), "{head}");
    assert!(!body.contains("# EOF"), "{body}");
    assert!(body.contains("# TYPE memtrack_records_lost_total counter\n"), "{body}");
    assert_eq!(samples(&body)[r#"memtrack_device_memory_used_bytes{device="2",kind="TRACE"}"#], "4096");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .expect("Content-Length")
        .parse()
        .unwrap();
    assert_eq!(length, body.len());

    // OpenMetrics: types, units and help, as Prometheus reads them.
    let (_, _, body) = server.request("GET /metrics HTTP/1.1", OPENMETRICS);
    for line in [
        "# TYPE memtrack_device_memory_used_bytes gauge",
        "# UNIT memtrack_device_memory_used_bytes bytes",
        "# TYPE memtrack_records_lost counter",
        "# TYPE memtrack_processes gauge",
    ] {
        assert!(body.lines().any(|l| l == line), "missing {line:?} in\n{body}");
    }

    let (status, head, body) = server.request("HEAD /metrics HTTP/1.1", OPENMETRICS);
    assert_eq!((status, body.as_str()), (200, ""), "{head}");
    assert_eq!(server.request("GET /other HTTP/1.1", "*/*").0, 404);
    let (status, head, _) = server.request("POST /metrics HTTP/1.1", "*/*");
    assert_eq!(status, 405);
    assert!(head.contains("allow: get, head"), "{head}");
    assert_eq!(server.request("GET / HTTP/1.1", "*/*").0, 200);
    assert_eq!(server.request("NONSENSE", "*/*").0, 400);
    // A client that hangs up without a request does not stop the server.
    drop(TcpStream::connect(&server.address).unwrap());
    assert_eq!(server.request("GET /metrics HTTP/1.1", OPENMETRICS).0, 200);
}

#[test]
fn serve_follows_a_replaced_ring_and_reports_a_missing_one() {
    let ring = TempRing::new("replaced");
    let first = Writer::attach_named(ring.create(), b"first").unwrap();
    first.alloc(&buffer(1, 111, 0, kind::DRAM, 0));
    let server = Server::start(&ring.0, &[]);
    assert_samples(
        &server.scrape(),
        &[(r#"memtrack_device_memory_used_bytes{device="0",kind="DRAM"}"#, 111)],
    );

    std::fs::remove_file(&ring.0).unwrap();
    let (status, _, body) = server.request("GET /metrics HTTP/1.1", OPENMETRICS);
    assert_eq!(status, 503);
    assert_eq!(body.lines().count(), 1, "{body}");
    assert!(body.contains(ring.0.to_str().unwrap()) && body.contains("No such file"), "{body}");

    let second = Writer::attach_named(ring.create(), b"second").unwrap();
    second.alloc(&buffer(1, 222, 0, kind::DRAM, 0));
    let got = server.scrape();
    assert_samples(&got, &[(r#"memtrack_device_memory_used_bytes{device="0",kind="DRAM"}"#, 222)]);
    drop(first);
}

#[test]
fn serve_errors_are_one_line_naming_the_ring() {
    let path = std::env::temp_dir().join(format!("memtrack-cli-serve-bad-{}", std::process::id()));
    std::fs::write(&path, b"definitely not a ring").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_memtrack"))
        .args(["serve", "--ring", path.to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(path.to_str().unwrap()) && stderr.contains("shorter than a header"), "{stderr}");

    // The port is taken: one line naming the ring and the address.
    let ring = TempRing::new("busy-port");
    let _writer = Writer::attach(ring.create()).unwrap();
    let server = Server::start(&ring.0, &[]);
    let out = Command::new(env!("CARGO_BIN_EXE_memtrack"))
        .args(["serve", "--ring", ring.0.to_str().unwrap(), "--listen", &server.address])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(ring.0.to_str().unwrap())
            && stderr.contains(&format!("cannot listen on {}", server.address))
            && stderr.contains("in use"),
        "{stderr}"
    );
}

#[test]
fn serve_consume_adds_the_engine_totals() {
    let ring = TempRing::new("consume");
    let writer = Writer::attach_named(
        Ring::create(&ring.0, RingOptions { capacity: 1024, ..RingOptions::default() }).unwrap(),
        b"model",
    )
    .unwrap();
    for id in 0..4 {
        writer.alloc(&buffer(id, 1000, 2, kind::L1, 0));
    }
    writer.free(&buffer(0, 1000, 2, kind::L1, 0));
    writer.free(&buffer(0, 1000, 2, kind::L1, 0)); // unknown free
    writer.alloc(&buffer(3, 1000, 2, kind::L1, 0)); // duplicate alloc
    let server = Server::start(&ring.0, &["--consume"]);
    // The consuming thread refreshes its totals every 100 ms.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let got = loop {
        let got = server.scrape();
        if got.get(r#"memtrack_allocations_total{device="2",kind="L1"}"#).map(String::as_str) == Some("5") {
            break got;
        }
        assert!(std::time::Instant::now() < deadline, "totals never appeared: {got:#?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_samples(
        &got,
        &[
            (r#"memtrack_frees_total{device="2",kind="L1"}"#, 1),
            (r#"memtrack_device_memory_peak_bytes{device="2",kind="L1"}"#, 4000),
            (r#"memtrack_anomalies_total{type="unknown_free"}"#, 1),
            (r#"memtrack_anomalies_total{type="duplicate_alloc"}"#, 1),
            (r#"memtrack_anomalies_total{type="size_mismatch"}"#, 0),
            ("memtrack_consumer_attached", 1),
        ],
    );
    // Without --consume the ring keeps its one consumer slot free.
    drop(server);
    let plain = Server::start(&ring.0, &[]);
    assert!(!plain.scrape().contains_key(r#"memtrack_allocations_total{device="2",kind="L1"}"#));
}

/// Whether `stream` is still open with nothing to read: the server neither
/// answered nor closed it.
fn open_and_unanswered(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let result = stream.peek(&mut byte);
    stream.set_nonblocking(false).unwrap();
    matches!(result, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

#[test]
fn serve_an_idle_or_slow_client_never_delays_another_scrape() {
    let ring = TempRing::new("idle");
    let writer = Writer::attach_named(ring.create(), b"model").unwrap();
    writer.alloc(&buffer(1, 4096, 0, kind::DRAM, 0));
    let server = Server::start(&ring.0, &[]);

    // An idle connection (sends nothing), a slow one (half a request line),
    // and one that sends a request and never reads the answer.
    let idle = TcpStream::connect(&server.address).unwrap();
    let mut slow = TcpStream::connect(&server.address).unwrap();
    slow.write_all(b"GET /met").unwrap();
    let mut deaf = TcpStream::connect(&server.address).unwrap();
    write!(deaf, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();

    // Several scrapes are answered while the idle and slow connections are
    // still open and unanswered: they were not served one after another
    // (the old one-connection-at-a-time loop answered these only after the
    // idle client's 5 s timeout had closed it).
    for _ in 0..5 {
        assert_samples(
            &server.scrape(),
            &[(r#"memtrack_device_memory_used_bytes{device="0",kind="DRAM"}"#, 4096)],
        );
    }
    assert!(open_and_unanswered(&idle), "the idle connection was closed or answered before the scrapes");
    assert!(open_and_unanswered(&slow), "the slow connection was closed or answered before the scrapes");

    // The idle and slow clients are not kept forever: the server closes them
    // (hyper answers 408 or just closes) after its header timeout (5 s).
    for (name, mut stream) in [("idle", idle), ("slow", slow)] {
        stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut rest = Vec::new();
        let result = stream.read_to_end(&mut rest);
        assert!(result.is_ok(), "{name}: not closed by the server: {result:?}");
        let rest = String::from_utf8_lossy(&rest);
        assert!(rest.is_empty() || rest.starts_with("HTTP/1.1 408"), "{name}: {rest}");
    }
    drop(deaf);
}

#[test]
fn serve_answers_many_concurrent_scrapes() {
    let ring = TempRing::new("concurrent");
    let writer = Writer::attach_named(ring.create(), b"model").unwrap();
    writer.alloc(&buffer(1, 777, 3, kind::L1, 0));
    let server = Server::start(&ring.0, &[]);
    // 32 idle connections held open while 8 threads scrape 10 times each.
    let idle: Vec<TcpStream> = (0..32).map(|_| TcpStream::connect(&server.address).unwrap()).collect();
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                for _ in 0..10 {
                    let got = server.scrape();
                    assert_eq!(got[r#"memtrack_device_memory_used_bytes{device="3",kind="L1"}"#], "777");
                }
            });
        }
    });
    assert!(idle.iter().all(open_and_unanswered));
}

/// Identifiers (`[A-Za-z_][A-Za-z0-9_]*`) of a PromQL expression outside its
/// string literals, each with what follows it (spaces skipped).
fn promql_tokens(expr: &str) -> Vec<(String, Option<char>)> {
    let chars: Vec<char> = expr.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == '[' {
            // A range: `[5m]`, `[$__rate_interval]`.
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == '$' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == '$')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = chars[i..].iter().copied().find(|c| !c.is_whitespace());
            if !word.starts_with('$') {
                tokens.push((word, next));
            }
        } else {
            i += 1;
        }
    }
    tokens
}

/// The metric names and the label names a PromQL expression uses: labels in
/// `by (...)`, `on (...)`, selectors `{label=...}` and `label_values(m, label)`.
fn promql_names(expr: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let tokens = promql_tokens(expr);
    let mut metrics = BTreeSet::new();
    let mut labels = BTreeSet::new();
    let mut grouping = false;
    for (word, next) in &tokens {
        if word.starts_with("memtrack_") {
            metrics.insert(word.clone());
            grouping = false;
        } else if matches!(word.as_str(), "by" | "on" | "without" | "ignoring") && *next == Some('(') {
            grouping = true;
        } else if grouping {
            labels.insert(word.clone());
            if *next == Some(')') {
                grouping = false;
            }
        } else if matches!(next, Some('=' | '!')) {
            labels.insert(word.clone()); // A selector's label matcher.
        }
    }
    // label_values(metric{...}, label): the last argument.
    if let Some(arguments) = expr.trim().strip_prefix("label_values(").and_then(|a| a.strip_suffix(')')) {
        labels.insert(arguments.rsplit(',').next().unwrap().trim().to_owned());
    }
    (metrics, labels)
}

/// Every string value under a key named `key`, anywhere in `value`.
fn strings_under(value: &serde_json::Value, key: &str, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match v {
                    serde_json::Value::String(s) if k == key => out.push(s.clone()),
                    _ => strings_under(v, key, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| strings_under(v, key, out)),
        _ => {}
    }
}

#[test]
fn promql_names_finds_metrics_and_labels() {
    let (metrics, labels) = promql_names(
        r#"sum by (device, kind) (rate(memtrack_frees_total{instance=~"$instance", kind!="L1 by (x)"}[$__rate_interval])) / on (job) memtrack_x"#,
    );
    assert_eq!(metrics, ["memtrack_frees_total", "memtrack_x"].map(String::from).into());
    assert_eq!(labels, ["device", "kind", "instance", "job"].map(String::from).into());
    let (metrics, labels) = promql_names("label_values(memtrack_a{instance=~\"$instance\"}, device)");
    assert_eq!(metrics, ["memtrack_a".to_owned()].into());
    assert_eq!(labels, ["instance", "device"].map(String::from).into());
}

#[test]
fn grafana_dashboard_queries_only_metrics_and_labels_serve_exports() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/grafana/memtrack.json");
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(dashboard["uid"], "memtrack");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut exprs = Vec::new();
    strings_under(&dashboard["panels"], "expr", &mut exprs);
    for variable in dashboard["templating"]["list"].as_array().expect("templating") {
        if variable["type"] == "query" {
            exprs.push(variable["query"]["query"].as_str().expect("a query variable's query").to_owned());
        }
    }
    let mut legends = Vec::new();
    strings_under(&dashboard["panels"], "legendFormat", &mut legends);
    assert!(exprs.len() >= 15, "{exprs:#?}");
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        assert!(panel["targets"].as_array().is_some_and(|t| !t.is_empty()), "no query in {panel}");
        assert!(panel["gridPos"]["w"].as_u64().is_some() && panel["title"].is_string(), "{panel}");
    }

    // A ring with everything the dashboard shows: usage with a capacity, L1,
    // processes; serve with --per-process and --consume for their series.
    let ring = TempRing::new("grafana");
    let model = Writer::attach_named(
        Ring::create(&ring.0, RingOptions { capacity: 1024, ..RingOptions::default() }).unwrap(),
        b"model",
    )
    .unwrap();
    model.set_capacity(0, kind::DRAM, 1 << 30);
    model.alloc(&buffer(1, 4096, 0, kind::DRAM, 0));
    model.alloc(&buffer(2, 512, 0, kind::L1, 0));
    model.free(&buffer(9, 512, 0, kind::L1, 0)); // an anomaly
    let server = Server::start(&ring.0, &["--per-process", "--consume"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let body = loop {
        let (status, _, body) = server.request("GET /metrics HTTP/1.1", "*/*");
        assert_eq!(status, 200);
        if body.contains("memtrack_allocations_total{") {
            break body;
        }
        assert!(std::time::Instant::now() < deadline, "the consumed totals never appeared:\n{body}");
        std::thread::sleep(Duration::from_millis(50));
    };
    // metric name -> label names of its samples.
    let mut exported: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (series, _) in samples(&body) {
        let (name, labels) = series.split_once('{').unwrap_or((&series, ""));
        let entry = exported.entry(name.to_owned()).or_default();
        for pair in labels.trim_end_matches('}').split(',').filter(|p| !p.is_empty()) {
            entry.insert(pair.split_once('=').unwrap().0.to_owned());
        }
    }
    let target_labels = ["instance", "job"]; // Added by Prometheus.
    for expr in &exprs {
        let (metrics, labels) = promql_names(expr);
        assert!(!metrics.is_empty(), "no memtrack metric in {expr:?}");
        for metric in &metrics {
            assert!(exported.contains_key(metric), "{expr:?} uses {metric}, not in /metrics:\n{body}");
        }
        for label in labels.iter().filter(|l| !target_labels.contains(&l.as_str())) {
            assert!(
                metrics.iter().any(|m| exported[m].contains(label)),
                "{expr:?} uses label {label}, which none of {metrics:?} has"
            );
        }
    }
    // Legends name labels that exist on some exported series.
    let all_labels: BTreeSet<&String> = exported.values().flatten().collect();
    for legend in &legends {
        for part in legend.split("{{").skip(1) {
            let label = part.split("}}").next().unwrap().trim().to_owned();
            assert!(
                all_labels.contains(&label) || target_labels.contains(&label.as_str()),
                "legend {legend:?}"
            );
        }
    }
}
