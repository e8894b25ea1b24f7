//! `memtrack serve` run as an operator would: the built binary on an
//! ephemeral port, a real ring written with `memtrack::Writer`, scraped over
//! TCP, every value checked exactly.

use std::collections::BTreeMap;
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

    /// Sends one request; returns (status, headers, body).
    fn request(&self, request_line: &str, accept: &str) -> (u16, String, String) {
        let mut stream = TcpStream::connect(&self.address).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(stream, "{request_line}\r\nHost: {}\r\nAccept: {accept}\r\n\r\n", self.address).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, head.to_owned(), body.to_owned())
    }

    /// Scrapes /metrics as Prometheus does; returns `series -> value`.
    fn scrape(&self) -> BTreeMap<String, String> {
        let (status, head, body) = self.request("GET /metrics HTTP/1.1", OPENMETRICS);
        assert_eq!(status, 200, "{head}\n{body}");
        assert!(head.contains("Content-Type: application/openmetrics-text; version=1.0.0"), "{head}");
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

    fn create(&self) -> Ring {
        Ring::create(&self.0, RingOptions { capacity: 16 }).unwrap()
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
            ("memtrack_consumer_attached", 1),
        ],
    );
    // Exactly these series: no per-process, per-buffer or consume-only ones.
    assert_eq!(got.len(), 16, "{got:#?}");
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
    assert_eq!(got.len(), 16 + want.len(), "{got:#?}");
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
    assert!(head.contains("Content-Type: text/plain; version=0.0.4"), "{head}");
    assert!(!body.contains("# EOF"), "{body}");
    assert!(body.contains("# TYPE memtrack_records_lost_total counter\n"), "{body}");
    assert_eq!(samples(&body)[r#"memtrack_device_memory_used_bytes{device="2",kind="TRACE"}"#], "4096");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
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
    assert!(head.contains("Allow: GET, HEAD"), "{head}");
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
    let writer =
        Writer::attach_named(Ring::create(&ring.0, RingOptions { capacity: 1024 }).unwrap(), b"model")
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
