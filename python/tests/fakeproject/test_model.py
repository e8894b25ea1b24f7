import pytest

import fake_runtime
from fake_runtime import DRAM, L1, Buffer


def test_frees_everything():
    buffers = [Buffer(4096) for _ in range(3)]
    for b in buffers:
        b.free()


def test_leaks_three_dram_buffers():
    # Kept alive on purpose: a leak the plugin must name.
    test_leaks_three_dram_buffers.kept = [Buffer(4096) for _ in range(3)]


def test_no_device_memory():
    assert 1 + 1 == 2


@pytest.mark.memtrack(allow_leak_bytes=8192)
def test_small_leak_allowed():
    test_small_leak_allowed.kept = Buffer(8192, kind=L1)


@pytest.mark.memtrack(max_peak={"0:DRAM": 1024 * 1024})
def test_peak_within_limit():
    b = Buffer(512 * 1024)
    b.free()


@pytest.mark.memtrack(max_peak={"0:DRAM": 1024 * 1024})
def test_peak_over_limit():
    b = Buffer(2 * 1024 * 1024)
    b.free()


def test_touches_two_hundred_devices():
    # A buffer on each of 200 devices, all freed: no leak, but with a
    # 128-cell counter pool most of these events find no cell.
    buffers = [Buffer(4096, device=d) for d in range(200)]
    for b in buffers:
        b.free()
