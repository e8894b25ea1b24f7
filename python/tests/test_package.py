"""The memtrack package against real rings, real record files and the real CLI."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import memtrack

WORKLOAD = """
import memtrack, fake_runtime
from fake_runtime import Buffer, L1
a = [Buffer(4096) for _ in range(3)]
memtrack.mark("after three")
b = Buffer(1 << 20, device=1, kind=L1)
for x in a[:2]:
    x.free()
memtrack.mark("end")
"""


@pytest.fixture
def recording(run_python, memtrack_bin, tmp_path):
    path = tmp_path / "run.mtr"
    run_python(WORKLOAD, record=path, memtrack_bin=memtrack_bin)
    return path


def report_json(memtrack_bin, path):
    out = subprocess.run([str(memtrack_bin), "report", "--json", str(path)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_load_matches_report_json(recording, memtrack_bin):
    rec = memtrack.load(recording)
    assert rec.report == report_json(memtrack_bin, recording)
    # The attributes are the report's keys, as objects.
    [process] = rec.processes
    assert process.process == "0.1" and process.state == "exited"
    assert process.remaining_buffers == 2 and process.remaining_bytes == 4096 + (1 << 20)
    assert [m.label for m in rec.marks] == ["after three", "end"]
    assert rec.marks[0].usage[0].live_bytes == 3 * 4096
    assert sorted((b.device_id, b.kind, b.size) for b in rec.remaining) == [(0, "DRAM", 4096), (1, "L1", 1 << 20)]
    assert rec.usage(0, "DRAM").peak_bytes == 3 * 4096
    # The process exited: its device memory went with it; the peak stays.
    assert rec.devices[1].kinds["L1"].peak_bytes == 1 << 20 and rec.devices[1].kinds["L1"].live_bytes == 0
    assert rec.anomalies.unknown_frees == 0 and rec.anomalies.details == []
    # Every allocation outside any scope: one row, scope "".
    assert [(s.scope, s.allocs, s.remaining_buffers) for s in rec.scopes] == [("", 4, 2)]
    assert rec.duration_ns == rec.report["duration_ns"] and rec.finished  # any other key, as an attribute
    # An object equals the JSON it wraps (docs/python.md compares them so).
    assert rec.processes == rec.report["processes"] and rec.processes[0] == rec.report["processes"][0]
    assert rec.anomalies == rec.report["anomalies"] and rec.processes[0] != {"pid": process.pid}


def test_records_as_columns(recording):
    rec = memtrack.load(recording)
    assert rec.process_keys == ["0.1"]  # before records() too
    cols = rec.records()
    n = rec.report["records"]
    assert all(len(c) == n for c in cols.values())
    names = memtrack.EVENT_NAMES
    events = [names[e] for e in cols["event"]]
    assert events.count("alloc") == 4 and events.count("free") == 2 and events.count("mark") == 2
    assert list(cols["ticket"]) == sorted(cols["ticket"])
    assert np.all(np.diff(cols["time_ns"].astype(np.int64)) >= 0)
    allocs = cols["event"] == 1
    assert sorted(cols["size"][allocs]) == [4096, 4096, 4096, 1 << 20]
    assert {memtrack.KIND_NAMES[k] for k in cols["kind"][allocs]} == {"DRAM", "L1"}
    assert set(cols["pid"]) == {rec.processes[0].pid}
    assert {rec.process_keys[p] for p in cols["process"]} == {"0.1"}
    assert list(cols["label"][cols["event"] == 3]) == ["after three", "end"]
    assert cols["label"][0] == rec.processes[0].name  # the process-start record


def test_to_pandas(recording):
    pd = pytest.importorskip("pandas")
    frame = memtrack.load(recording).to_pandas()
    assert isinstance(frame, pd.DataFrame)
    assert (frame["event"] == "alloc").sum() == 4
    assert set(frame.loc[frame["event"] == "alloc", "kind"]) == {"DRAM", "L1"}


def test_load_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.mtr"
    bad.write_bytes(b"not a recording" * 10)
    with pytest.raises(ValueError, match="bad.mtr"):
        memtrack.load(bad)
    with pytest.raises(ValueError, match="missing.mtr"):
        memtrack.load(tmp_path / "missing.mtr")
    empty = tmp_path / "empty.mtr"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.mtr: too short"):
        memtrack.load(empty)


def test_a_truncated_file_says_how_to_read_it_from_python(recording, tmp_path):
    cut = tmp_path / "cut.mtr"
    data = recording.read_bytes()
    cut.write_bytes(data[: len(data) - 100])
    with pytest.raises(ValueError, match=r"cut.mtr: truncated .*memtrack\.load\(path, partial=True\)") as error:
        memtrack.load(cut)
    assert "report --partial" not in str(error.value)
    assert memtrack.load(cut, partial=True).report["records"] > 0


def test_one_writer_with_the_runtimes_library(run_python, memtrack_bin, runtime_lib, tmp_path):
    """The runtime loaded libmemtrack.so first: the package writes through it."""
    path = tmp_path / "one.mtr"
    out = run_python(
        """
import fake_runtime, memtrack
from fake_runtime import Buffer
keep = Buffer(4096)
print(memtrack.library_path())
print(memtrack.enabled())
memtrack.mark("from python")
print(memtrack.live())
""",
        record=path,
        memtrack_bin=memtrack_bin,
    ).stdout.splitlines()
    assert os.path.realpath(out[0]) == os.path.realpath(runtime_lib)
    assert out[1] == "True"
    assert out[2] == "{(0, 'DRAM'): Live(live_bytes=4096, live_buffers=1)}"
    rec = memtrack.load(path)
    # One process-table entry: the mark and the runtime's buffer share it.
    assert [p.process for p in rec.processes] == ["0.1"]
    assert rec.marks[0].label == "from python" and rec.marks[0].process == "0.1"
    assert rec.remaining[0].process == "0.1"


def test_memtrack_lib_then_the_shipped_copy(run_python, runtime_lib):
    code = "import memtrack; print(memtrack.library_path()); print(memtrack.enabled()); print(memtrack.live())"
    shipped = run_python(code).stdout.splitlines()
    assert os.path.basename(shipped[0]).startswith("_native") and shipped[1:] == ["False", "{}"]
    named = run_python(code, env={"MEMTRACK_LIB": str(runtime_lib)}).stdout.splitlines()
    assert named[0] == str(runtime_lib)


def test_live_counts_this_process_only(run_python, tmp_path):
    ring = str(tmp_path / "ring")
    out = run_python(
        """
import memtrack
from fake_runtime import Buffer, L1
memtrack.init()
before = memtrack.live()
a, b = Buffer(1000), Buffer(24, device=2, kind=L1)
during = memtrack.live()
a.free(); b.free()
print(before, during, memtrack.live(), sep="\\n")
""",
        env={"MEMTRACK_RING": ring},
    ).stdout.splitlines()
    assert out[0] == "{}"
    assert out[1] == (
        "{(0, 'DRAM'): Live(live_bytes=1000, live_buffers=1), (2, 'L1'): Live(live_bytes=24, live_buffers=1)}"
    )
    assert out[2] == "{}"


def test_untracked_shows_what_a_full_counter_pool_kept_from_live(run_python, tmp_path):
    """A 128-cell pool and 200 devices: live() misses some, untracked() has them."""
    out = run_python(
        """
import memtrack
from fake_runtime import Buffer
memtrack.init()
print(memtrack.untracked_supported(), memtrack.untracked())
buffers = [Buffer(4096, device=d) for d in range(200)]
live, untracked = memtrack.live(), memtrack.untracked()
print(len(live), sum(u.live_bytes for u in live.values()), sum(u.live_buffers for u in live.values()))
print(untracked.live_bytes, untracked.live_buffers, untracked.events)
for b in buffers:
    b.free()
print(memtrack.live(), memtrack.untracked())
""",
        env={"MEMTRACK_RING": str(tmp_path / "ring"), "MEMTRACK_COUNTER_CELLS": "128"},
    ).stdout.splitlines()
    assert out[0] == "True Untracked(live_bytes=0, live_buffers=0, events=0)"
    cells, live_bytes, live_buffers = map(int, out[1].split())
    untracked_bytes, untracked_buffers, events = map(int, out[2].split())
    assert cells <= 128 and events == 200 - cells, out
    assert (untracked_bytes, untracked_buffers) == (4096 * events, events)
    assert (live_bytes + untracked_bytes, live_buffers + untracked_buffers) == (200 * 4096, 200)
    assert out[3] == f"{{}} Untracked(live_bytes=0, live_buffers=0, events={2 * events})"


def test_untracked_is_zero_without_tracking_or_with_an_older_library(run_python):
    out = run_python(
        """
import memtrack
from memtrack import _writer
print(memtrack.untracked())

class Older:
    \"\"\"A libmemtrack from before memtrack_untracked_usage.\"\"\"

_writer._lib = Older()
print(memtrack.untracked_supported(), memtrack.untracked())
"""
    ).stdout.splitlines()
    assert out == [
        "Untracked(live_bytes=0, live_buffers=0, events=0)",
        "False Untracked(live_bytes=0, live_buffers=0, events=0)",
    ]


def test_scope_is_a_context_manager_and_a_decorator(run_python):
    out = run_python(
        """
import memtrack
@memtrack.scope("decorated")
def f(x):
    return x + 1
with memtrack.scope("block") as s:
    print(s.name, f(1), memtrack.scopes_supported())
"""
    ).stdout
    assert out.split() == ["block", "2", "True"]


def test_scopes_attribute_the_runtimes_allocations(run_python, memtrack_bin, tmp_path):
    path = tmp_path / "scopes.mtr"
    run_python(
        """
import fake_runtime, memtrack
@memtrack.scope("step")
def step():
    return fake_runtime.Buffer(100)
with memtrack.scope("model"):
    kept = [fake_runtime.Buffer(4096), step()]
""",
        record=path,
        memtrack_bin=memtrack_bin,
    )
    rec = memtrack.load(path)
    assert sorted((b.scope, b.size) for b in rec.remaining) == [("model", 4096), ("model/step", 100)]


PARQUET_WORKLOAD = """
import ctypes, memtrack, fake_runtime
from fake_runtime import Buffer, L1
lib = fake_runtime._lib
lib.memtrack_set_capacity.argtypes = [ctypes.c_uint32, ctypes.c_uint8, ctypes.c_uint64]
lib.memtrack_set_capacity(0, 0, 1 << 30)
with memtrack.scope("model"):
    a = [Buffer(4096) for _ in range(3)]
    with memtrack.scope("a scope name longer than one record holds, " + "x" * 40):
        b = Buffer(1 << 20, device=1, kind=L1)
memtrack.mark("a mark label longer than the 36 bytes one record holds")
for x in a[:2]:
    x.free()
"""


def _strings(column):
    """A string or categorical column as Python strings, None where empty."""
    return [None if v is None or v != v else str(v) for v in column.astype(object)]


def test_parquet_export_is_records_column_for_column(run_python, memtrack_bin, tmp_path):
    """`memtrack export --format parquet` read by pandas/pyarrow is `Recording.to_pandas()`."""
    pd = pytest.importorskip("pandas")
    pq = pytest.importorskip("pyarrow.parquet")
    path, out = tmp_path / "run.mtr", tmp_path / "run.parquet"
    run_python(PARQUET_WORKLOAD, record=path, memtrack_bin=memtrack_bin)
    subprocess.run([str(memtrack_bin), "export", str(path), "--format", "parquet", "-o", str(out)], check=True)
    rec = memtrack.load(path)
    expected, actual = rec.to_pandas(), pd.read_parquet(out)
    assert list(actual.columns) == list(expected.columns) == list(rec.records())
    assert len(actual) == len(expected) == rec.report["records"]
    for name in expected.columns:
        want, got = expected[name], actual[name]
        if name in ("event", "kind", "process", "scope", "label"):
            # Categoricals and objects in memory, strings in the file.
            assert _strings(got) == _strings(want), name
        else:
            assert got.dtype == want.dtype, name
            assert (got.to_numpy() == want.to_numpy()).all(), name
    events = _strings(actual["event"])
    assert {"alloc", "free", "mark", "capacity", "scope", "text", "process_start"} <= set(events)
    # What the rows say, in the file's own terms.
    capacity = actual[actual["event"] == "capacity"].iloc[0]
    assert capacity["size"] == 1 << 30 and capacity["kind"] == "DRAM" and pd.isna(capacity["process"])
    allocs = actual[actual["event"] == "alloc"]
    long_scope = "model/a scope name longer than one record holds, " + "x" * 40
    assert _strings(allocs["scope"]) == ["model"] * 3 + [long_scope]
    assert _strings(allocs["kind"]) == ["DRAM"] * 3 + ["L1"]
    assert set(_strings(actual["process"].dropna())) == {"0.1"}
    # Processes and marks as the report has them (the long label whole).
    meta = pq.read_schema(out).metadata
    assert meta[b"memtrack.schema"] == b"memtrack.parquet/1"
    assert json.loads(meta[b"memtrack.processes"]) == rec.report["processes"]
    assert json.loads(meta[b"memtrack.marks"]) == rec.report["marks"]
    assert rec.marks[0].label == "a mark label longer than the 36 bytes one record holds"
