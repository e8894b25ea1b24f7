"""The pytest plugin on the fake-runtime test project, alone and under `memtrack record`."""

import glob
import os
import re
import subprocess
import sys

import pytest

import memtrack
from conftest import HERE

PROJECT = HERE / "fakeproject"


def run_pytest(runtime_lib, *args, record=None, memtrack_bin=None, env=None, wrap=()):
    extra = env or {}
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMTRACK_")}
    env["FAKE_RUNTIME_LIB"] = str(runtime_lib)
    env.update(extra)
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", *args, str(PROJECT)]
    if record is not None:
        command = [str(memtrack_bin), "record", "-q", "-o", str(record), "--"] + command
    command = list(wrap) + command
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, cwd=PROJECT)
    outcomes = dict(
        (name, outcome) for outcome, name in re.findall(r"^(PASSED|FAILED) \S*::(\w+)", result.stdout, re.M)
    )
    return result, outcomes


ALL_PASS = {
    "test_frees_everything": "PASSED",
    "test_leaks_three_dram_buffers": "PASSED",
    "test_no_device_memory": "PASSED",
    "test_small_leak_allowed": "PASSED",
    "test_peak_within_limit": "PASSED",
    "test_peak_over_limit": "PASSED",
    "test_touches_two_hundred_devices": "PASSED",
}


def test_off_until_asked(runtime_lib):
    result, outcomes = run_pytest(runtime_lib)
    assert result.returncode == 0, result.stdout
    assert outcomes == ALL_PASS
    assert "= memtrack =" not in result.stdout and "memtrack:" not in result.stdout


def test_turned_off_again(runtime_lib):
    """`--no-memtrack` overrides a `--memtrack` in addopts; `-p no:memtrack` unloads the plugin."""
    result, outcomes = run_pytest(runtime_lib, "--memtrack", "--no-memtrack")
    assert result.returncode == 0 and outcomes == ALL_PASS, result.stdout
    assert "= memtrack =" not in result.stdout and "memtrack:" not in result.stdout
    result, outcomes = run_pytest(runtime_lib, "-p", "no:memtrack")
    assert result.returncode == 0 and outcomes == ALL_PASS, result.stdout


def test_alone_fails_exactly_the_leaking_and_the_peaking_test(runtime_lib):
    result, outcomes = run_pytest(runtime_lib, "--memtrack")
    assert result.returncode == 1, result.stdout
    assert outcomes == {
        **ALL_PASS,
        "test_leaks_three_dram_buffers": "FAILED",
        "test_peak_over_limit": "FAILED",
    }
    assert "memtrack: leaked 3 buffers, 12.0 KiB on device 0 DRAM" in result.stdout
    # As the ring's reader, the plugin names the buffers (the fake runtime's ids).
    leak = r"^memtrack: leaked 3 buffers, 12.0 KiB on device 0 DRAM \(buffers \d+, \d+, \d+\)$"
    assert re.search(leak, result.stdout, re.M)
    assert "memtrack: peak 2.0 MiB on device 0 DRAM over the limit of 1.0 MiB" in result.stdout
    assert "7 tests checked on private ring /dev/shm/memtrack-pytest-" in result.stdout
    # The private ring is gone afterwards.
    ring = re.search(r"private ring (\S+),", result.stdout).group(1)
    assert not os.path.exists(ring)


def test_ignore_kind(runtime_lib):
    result, outcomes = run_pytest(runtime_lib, "--memtrack", "--memtrack-ignore-kind", "dram")
    assert outcomes == ALL_PASS, result.stdout
    assert "ignored kinds: DRAM" in result.stdout


def test_under_memtrack_record(runtime_lib, memtrack_bin, tmp_path):
    path = tmp_path / "pytest.mtr"
    result, outcomes = run_pytest(runtime_lib, "--memtrack", record=path, memtrack_bin=memtrack_bin)
    assert outcomes == {**ALL_PASS, "test_leaks_three_dram_buffers": "FAILED"}, result.stdout
    assert "max_peak not checked for 2 tests" in result.stdout
    # The recorder, not the plugin, reads the ring: the message says where the buffers are.
    hint = r"\(the buffers: `memtrack report FILE --scope '\S+::test_leaks_three_dram_buffers'`\)"
    assert re.search(r"leaked 3 buffers, 12.0 KiB on device 0 DRAM " + hint, result.stdout), result.stdout
    rec = memtrack.load(path)
    # pytest, the runtime and the plugin were one writer.
    assert len(rec.processes) == 1
    assert sorted(b.size for b in rec.remaining) == [4096, 4096, 4096, 8192]
    # Each test ran in a scope named by its node id: the leaks are attributed to their tests.
    node = "tests/fakeproject/test_model.py::{}".format
    by_scope = sorted((b.scope, b.size) for b in rec.remaining)
    assert by_scope == [
        (node("test_leaks_three_dram_buffers"), 4096),
        (node("test_leaks_three_dram_buffers"), 4096),
        (node("test_leaks_three_dram_buffers"), 4096),
        (node("test_small_leak_allowed"), 8192),
    ], by_scope
    allocating = {node(name) for name in ALL_PASS if name != "test_no_device_memory"}
    assert allocating <= {s.scope for s in rec.scopes}, rec.scopes


# A ring whose counter pool (128 cells, the smallest) cannot hold a cell per
# device of test_touches_two_hundred_devices: the plugin creates it, so
# MEMTRACK_COUNTER_CELLS sizes it.
SMALL_POOL = {"MEMTRACK_COUNTER_CELLS": "128"}
UNTRACKED = re.compile(
    r"^E?\s*memtrack: (\d+) events found the counter pool full, leaks cannot be checked; "
    r"set MEMTRACK_COUNTER_CELLS \(now 128\) higher$",
    re.M,
)


def test_a_full_counter_pool_fails_the_test_it_hides_leaks_of(runtime_lib):
    result, outcomes = run_pytest(runtime_lib, "--memtrack", env=SMALL_POOL)
    assert outcomes == {
        **ALL_PASS,
        "test_leaks_three_dram_buffers": "FAILED",
        "test_peak_over_limit": "FAILED",
        "test_touches_two_hundred_devices": "FAILED",
    }, result.stdout
    # Each of the devices that found no cell: an alloc and a free.
    events = [int(n) for n in UNTRACKED.findall(result.stdout)]
    assert events and all(n > 0 and n % 2 == 0 for n in events), result.stdout
    assert f"counter pool full: {events[0]} events in 1 test were counted as untracked" in result.stdout
    # The earlier tests had their cells: their verdicts stand.
    assert "memtrack: leaked 3 buffers, 12.0 KiB on device 0 DRAM" in result.stdout


def test_allow_untracked_passes_it_and_says_so(runtime_lib):
    result, outcomes = run_pytest(runtime_lib, "--memtrack", "--memtrack-allow-untracked", env=SMALL_POOL)
    assert outcomes == {
        **ALL_PASS,
        "test_leaks_three_dram_buffers": "FAILED",
        "test_peak_over_limit": "FAILED",
    }, result.stdout
    assert not UNTRACKED.search(result.stdout)
    summary = re.search(r"counter pool full: (\d+) events in 1 test .*allowed by --memtrack-allow-untracked", result.stdout)
    assert summary and int(summary.group(1)) > 0, result.stdout
    assert re.search(r"test_touches_two_hundred_devices: \d+ untracked events", result.stdout)


# A ring the plugin cannot use: the tests still run, untracked, and one line
# says why; no traceback of the plugin's, and no verdict it could not give.
NOT_TRACKING = re.compile(r"^memtrack: not tracking, (\d+) tests? ran unchecked: cannot attach to ring (\S+): (.+)$", re.M)


def assert_ran_unchecked(result, outcomes, reason):
    assert outcomes == ALL_PASS, result.stdout + result.stderr
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr and "OSError" not in result.stdout, result.stdout
    lines = NOT_TRACKING.findall(result.stdout)
    assert len(lines) == 1 and lines[0][0] == "7" and reason in lines[0][2], result.stdout
    assert "no test left device memory allocated" not in result.stdout
    assert "tests checked" not in result.stdout


def test_a_file_that_is_not_a_ring(runtime_lib, tmp_path):
    not_a_ring = tmp_path / "not-a-ring"
    not_a_ring.write_text("hello\n" * 100)
    result, outcomes = run_pytest(runtime_lib, "--memtrack", env={"MEMTRACK_RING": str(not_a_ring)})
    assert_ran_unchecked(result, outcomes, "not a valid memtrack ring")
    assert not_a_ring.read_text() == "hello\n" * 100


def test_a_full_dev_shm(runtime_lib):
    """/dev/shm a 1 MiB tmpfs (a mount namespace of its own): the private ring cannot be created."""
    script = 'mount -t tmpfs -o size=1M tmpfs /dev/shm && exec "$@"'
    try:
        probe = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", "true"], capture_output=True)
    except FileNotFoundError:
        pytest.skip("no unshare here")
    if probe.returncode != 0:
        pytest.skip(f"a tmpfs in a mount namespace of its own is not permitted here: {probe.stderr.decode().strip()}")
    result, outcomes = run_pytest(runtime_lib, "--memtrack", wrap=["unshare", "-m", "sh", "-c", script, "sh"])
    assert_ran_unchecked(result, outcomes, "no space left for the ring")


def test_xdist_workers_each_check_their_own_tests(runtime_lib):
    pytest.importorskip("xdist")
    result, outcomes = run_pytest(runtime_lib, "--memtrack", "-n", "2")
    assert outcomes == {
        **ALL_PASS,
        "test_leaks_three_dram_buffers": "FAILED",
        "test_peak_over_limit": "FAILED",
    }, result.stdout
    assert "memtrack: leaked 3 buffers, 12.0 KiB on device 0 DRAM" in result.stdout
    assert "memtrack: peak 2.0 MiB on device 0 DRAM over the limit of 1.0 MiB" in result.stdout
    # The controller's summary gathers the workers': every test counted once,
    # each failure under its own test, each worker's private ring gone.
    assert "7 tests checked by 2 xdist workers, each on a private ring" in result.stdout, result.stdout
    summary = result.stdout.split("= memtrack =")[1]
    leak = r"leaked 3 buffers, 12.0 KiB on device 0 DRAM \(buffers \d+, \d+, \d+\)$"
    assert re.search(r"^\S*::test_leaks_three_dram_buffers: " + leak, summary, re.M)
    assert re.search(r"^\S*::test_peak_over_limit: peak 2.0 MiB on device 0 DRAM", summary, re.M)
    assert "no test left device memory allocated" not in summary
    rings = re.findall(r"/dev/shm/memtrack-pytest-\d+", result.stdout)
    assert not [ring for ring in rings if os.path.exists(ring)]


CRASHING_WORKER = """
import os
from fake_runtime import Buffer

def test_a_leak():
    Buffer(4096)

def test_b_crashes_its_worker():
    os._exit(3)

def test_c_clean():
    Buffer(4096).free()
"""


def test_an_xdist_worker_that_crashes(runtime_lib, tmp_path):
    """A worker that dies takes its summary with it: the controller says so and claims no verdict for its tests."""
    pytest.importorskip("xdist")
    before = set(glob.glob("/dev/shm/memtrack-pytest-*"))
    result, outcomes = run_project(runtime_lib, tmp_path, CRASHING_WORKER, "-n", "1")
    for ring in set(glob.glob("/dev/shm/memtrack-pytest-*")) - before:
        if not os.path.exists("/proc/" + ring.rsplit("-", 1)[1]):
            os.remove(ring)  # the crashed worker's, left as a killed pytest's is
    assert outcomes.get("test_a_leak") == "FAILED", result.stdout
    assert "memtrack: leaked 1 buffer" in result.stdout, result.stdout
    summary = result.stdout.split("= memtrack =")[1]
    assert "no test left device memory allocated" not in summary, summary
    assert re.search(r"^memtrack: 1 xdist worker ended without its summary", summary, re.M), summary


BAD_MARKERS = """
import pytest
from fake_runtime import Buffer

@pytest.mark.memtrack(max_peak={"DRAM": 1 << 20})
def test_key_without_device():
    Buffer(4096).free()

@pytest.mark.memtrack(allow_leak_bytes="8k")
def test_bytes_not_a_number():
    Buffer(4096)

def test_after_them():
    Buffer(4096).free()
"""


def run_project(runtime_lib, tmp_path, source, *args, env=None):
    """pytest --memtrack on a one-file project, with the fake runtime importable (not imported)."""
    (tmp_path / "test_project.py").write_text(source)
    extra = env or {}
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMTRACK_")}
    env.update(FAKE_RUNTIME_LIB=str(runtime_lib), PYTHONPATH=str(HERE), **extra)
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", "--memtrack", *args, str(tmp_path)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    outcomes = dict((name, outcome) for outcome, name in re.findall(r"^(PASSED|FAILED) \S*::(\w+)", result.stdout, re.M))
    return result, outcomes


def test_a_bad_marker_fails_its_test_and_the_run_goes_on(runtime_lib, tmp_path):
    result, outcomes = run_project(runtime_lib, tmp_path, BAD_MARKERS)
    assert outcomes == {
        "test_key_without_device": "FAILED",
        "test_bytes_not_a_number": "FAILED",
        "test_after_them": "PASSED",
    }, result.stdout + result.stderr
    assert "memtrack: bad memtrack marker: max_peak key 'DRAM' is not \"device:KIND\" (e.g. \"0:DRAM\")" in result.stdout
    assert "memtrack: bad memtrack marker: allow_leak_bytes '8k' is not a number of bytes" in result.stdout
    # The marker's limit unread, the leak is checked as if it were 0.
    assert "leaked 1 buffer, 4.0 KiB on device 0 DRAM" in result.stdout
    assert "Warning" not in result.stdout and "3 tests checked" in result.stdout


LAZY_RUNTIME = """
KEEP = []

def test_before_the_runtime():
    pass

def test_imports_the_runtime_and_leaks():
    from fake_runtime import Buffer
    KEEP.append(Buffer(4096))

def test_leaks_after():
    from fake_runtime import Buffer
    KEEP.append(Buffer(8192))

def test_clean_after():
    from fake_runtime import Buffer
    Buffer(4096).free()
"""


def test_a_runtime_imported_by_a_test_is_followed(runtime_lib, tmp_path):
    """The plugin bound to the package's own copy; a test then loads the runtime's libmemtrack.so.

    The runtime's allocations are counted by its library: the plugin follows
    it, or it would read counters nothing allocates through and pass leaks.
    """
    result, outcomes = run_project(runtime_lib, tmp_path, LAZY_RUNTIME)
    assert outcomes == {
        "test_before_the_runtime": "PASSED",
        "test_imports_the_runtime_and_leaks": "FAILED",
        "test_leaks_after": "FAILED",
        "test_clean_after": "PASSED",
    }, result.stdout
    assert "memtrack: leaked 1 buffer, 4.0 KiB on device 0 DRAM" in result.stdout
    assert "memtrack: leaked 1 buffer, 8.0 KiB on device 0 DRAM" in result.stdout
    assert f"through {runtime_lib}" in result.stdout
    assert re.search(
        r"^libmemtrack\.so was loaded during \S+::test_imports_the_runtime_and_leaks, after the plugin had bound "
        r"to the package's own copy; followed it from there \(import the runtime in conftest\.py\)$",
        result.stdout,
        re.M,
    ), result.stdout


def test_a_memtrack_lib_that_does_not_load(runtime_lib, tmp_path):
    missing = tmp_path / "nowhere" / "libmemtrack.so"
    result, outcomes = run_project(
        runtime_lib, tmp_path, "def test_one():\n    pass\n", env={"MEMTRACK_LIB": str(missing)}
    )
    assert result.returncode == 0 and outcomes == {"test_one": "PASSED"}, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    line = f"memtrack: not tracking, 1 test ran unchecked: cannot load $MEMTRACK_LIB: {missing}: "
    assert re.search("^" + re.escape(line) + ".*No such file", result.stdout, re.M), result.stdout


CACHING_RUNTIME = """
from fake_runtime import Buffer

# A runtime's cache: what the first test of an op leaves allocated for the
# next ones (ttnn's program cache keeps circular buffers and kernel binaries).
CACHE = {}

def run_op(name):
    if name not in CACHE:
        CACHE[name] = Buffer(2048)

def test_first_add():
    run_op("add")

def test_second_add():
    run_op("add")

def test_first_mul_and_a_real_leak():
    run_op("mul")
    CACHE["leak"] = Buffer(4096, device=1)
"""

SETTLE_HOOK = """
import test_project

def pytest_memtrack_settle(item):
    for name in [n for n in test_project.CACHE if n != "leak"]:
        test_project.CACHE.pop(name).free()
"""


def test_a_cache_is_settled_before_the_check(runtime_lib, tmp_path):
    result, outcomes = run_project(runtime_lib, tmp_path, CACHING_RUNTIME)
    # Without the hook, the cache is each first test's leak.
    assert outcomes == {
        "test_first_add": "FAILED",
        "test_second_add": "PASSED",
        "test_first_mul_and_a_real_leak": "FAILED",
    }, result.stdout
    (tmp_path / "conftest.py").write_text(SETTLE_HOOK)
    result, outcomes = run_project(runtime_lib, tmp_path, CACHING_RUNTIME)
    assert outcomes == {
        "test_first_add": "PASSED",
        "test_second_add": "PASSED",
        "test_first_mul_and_a_real_leak": "FAILED",
    }, result.stdout
    assert re.search(r"^memtrack: leaked 1 buffer, 4.0 KiB on device 1 DRAM \(buffer \d+\)$", result.stdout, re.M)
