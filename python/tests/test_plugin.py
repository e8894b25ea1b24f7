"""The pytest plugin on the fake-runtime test project, alone and under `memtrack record`."""

import os
import re
import subprocess
import sys

import memtrack
from conftest import HERE

PROJECT = HERE / "fakeproject"


def run_pytest(runtime_lib, *args, record=None, memtrack_bin=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMTRACK_")}
    env["FAKE_RUNTIME_LIB"] = str(runtime_lib)
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", *args, str(PROJECT)]
    if record is not None:
        command = [str(memtrack_bin), "record", "-q", "-o", str(record), "--"] + command
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
}


def test_off_until_asked(runtime_lib):
    result, outcomes = run_pytest(runtime_lib)
    assert result.returncode == 0, result.stdout
    assert outcomes == ALL_PASS
    assert "= memtrack =" not in result.stdout and "memtrack:" not in result.stdout


def test_alone_fails_exactly_the_leaking_and_the_peaking_test(runtime_lib):
    result, outcomes = run_pytest(runtime_lib, "--memtrack")
    assert result.returncode == 1, result.stdout
    assert outcomes == {
        **ALL_PASS,
        "test_leaks_three_dram_buffers": "FAILED",
        "test_peak_over_limit": "FAILED",
    }
    assert "memtrack: leaked 3 buffers, 12.0 KiB on device 0 DRAM" in result.stdout
    assert "memtrack: peak 2.0 MiB on device 0 DRAM over the limit of 1.0 MiB" in result.stdout
    assert "6 tests checked on private ring /dev/shm/memtrack-pytest-" in result.stdout
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
