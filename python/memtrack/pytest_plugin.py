"""pytest plugin: fail tests that leave device memory allocated.

Off until ``pytest --memtrack``. Each test runs inside a memtrack scope named by
its node id; this process's live counters (``memtrack.live()``) are compared
before and after the test's call, and a test that leaves device memory
allocated fails with the leak named. A test during which some of this
process's events found the ring's counter pool full (``memtrack.untracked()``
grew) cannot be checked, and fails saying so unless
``--memtrack-allow-untracked``. See docs/python.md.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Tuple, Union

import pytest

Cell = Tuple[int, str]


class MemtrackHookspecs:
    """The hooks the plugin calls in conftest.py files."""

    @pytest.hookspec
    def pytest_memtrack_settle(self, item):
        """After a test's call, before its leak check: free what a cache keeps that is not a leak.

        A runtime's cache leaves allocated, after the first test that fills
        it, what later tests reuse: ttnn's program cache keeps each op's
        circular buffers and kernel binaries until the device closes, so the
        first test of each op would fail. Clear it here (the test's fixtures
        are still alive), e.g. ``item.funcargs["device"].clear_program_cache()``.
        """


def pytest_addhooks(pluginmanager):
    pluginmanager.add_hookspecs(MemtrackHookspecs)


def pytest_addoption(parser):
    group = parser.getgroup("memtrack", "device-memory leak checks (memtrack)")
    group.addoption(
        "--memtrack",
        action="store_true",
        default=False,
        help="fail tests that leave device memory allocated (memtrack)",
    )
    group.addoption(
        "--no-memtrack",
        action="store_false",
        dest="memtrack",
        help="turn --memtrack off again (e.g. over addopts = --memtrack)",
    )
    group.addoption(
        "--memtrack-ignore-kind",
        action="append",
        default=[],
        metavar="KIND",
        help="do not count leaks of this kind (DRAM, L1, L1_SMALL, TRACE, CB, KERNEL, SYSTEM_MEMORY); repeatable",
    )
    group.addoption(
        "--memtrack-allow-untracked",
        action="store_true",
        default=False,
        help="do not fail a test whose events found the ring's counter pool full "
        "(its leak check is then incomplete; the summary still says so)",
    )


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "memtrack(allow_leak_bytes=0, max_peak=None): memtrack limits of a test: bytes it may leave "
        'allocated; peak bytes per "device:KIND" (e.g. {"0:DRAM": 1 << 30}) or for every cell (an int)',
    )
    if not config.getoption("memtrack"):
        return
    if _is_xdist_controller(config):
        # pytest-xdist's controller runs no test: each worker checks its own
        # (on its own private ring, or the recorder's) and sends its summary.
        config.pluginmanager.register(XdistController(config), "memtrack-plugin")
    else:
        config.pluginmanager.register(MemtrackPlugin(config), "memtrack-plugin")


def _is_xdist_controller(config) -> bool:
    """Whether this process hands the tests to pytest-xdist workers (``-n N``)."""
    if hasattr(config, "workerinput") or config.getoption("collectonly", False):
        return False
    return config.getoption("dist", "no") != "no" and bool(config.getoption("tx", None))


def human_bytes(n: int) -> str:
    """As memtrack's reports write sizes: ``512 B``, ``12.0 KiB``."""
    value, unit = float(n), 0
    units = ["B", "KiB", "MiB", "GiB", "TiB"]
    while abs(value) >= 1024 and unit + 1 < len(units):
        value /= 1024
        unit += 1
    return f"{n} B" if unit == 0 else f"{value:.1f} {units[unit]}"


# Buffer ids named per (device, kind) in a leak message; the rest are counted.
MAX_IDS = 10


def describe(leaks: Dict[Cell, Tuple[int, int]], ids: Optional[Dict[Cell, List[int]]] = None) -> str:
    """``leaked 3 buffers, 12.0 KiB on device 0 DRAM (buffers 4, 5, 6)`` (cells joined with "; ").

    ``ids``: the buffers of each cell, when known (the plugin reads its private ring).
    """
    parts = []
    for (device, kind), (nbytes, buffers) in sorted(leaks.items()):
        noun = "buffer" if buffers == 1 else "buffers"
        part = f"leaked {buffers} {noun}, {human_bytes(nbytes)} on device {device} {kind}"
        cell_ids = (ids or {}).get((device, kind))
        if cell_ids:
            named = ", ".join(str(i) for i in cell_ids[:MAX_IDS])
            more = f" and {len(cell_ids) - MAX_IDS} more" if len(cell_ids) > MAX_IDS else ""
            part += f" ({'buffer' if len(cell_ids) == 1 else 'buffers'} {named}{more})"
        parts.append(part)
    return "; ".join(parts)


def parse_cell(text: str) -> Cell:
    """``"0:DRAM"`` as ``(0, "DRAM")``; ValueError saying what is wrong."""
    device, _, kind = str(text).partition(":")
    if not device.strip().isdigit() or not kind:
        raise ValueError(f'max_peak key {text!r} is not "device:KIND" (e.g. "0:DRAM")')
    return int(device), kind.strip().upper()


def _nbytes(value, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} {value!r} is not a number of bytes") from None


# A max_peak limit: one for every (device, kind), or one per cell.
PeakLimits = Union[int, Dict[Cell, int]]


def marker_limits(marker) -> Tuple[int, Optional[PeakLimits]]:
    """The ``memtrack`` marker's (allow_leak_bytes, max_peak); ValueError saying what is wrong."""
    if marker is None:
        return 0, None
    allow = _nbytes(marker.kwargs.get("allow_leak_bytes", 0), "allow_leak_bytes")
    max_peak = marker.kwargs.get("max_peak")
    if max_peak is None:
        return allow, None
    if isinstance(max_peak, dict):
        return allow, {parse_cell(key): _nbytes(value, f"max_peak[{key!r}]") for key, value in max_peak.items()}
    return allow, _nbytes(max_peak, "max_peak")


class MemtrackPlugin:
    def __init__(self, config):
        import memtrack

        self.memtrack = memtrack
        self.config = config
        self.ignored = {k.upper() for k in config.getoption("memtrack_ignore_kind")}
        self.allow_untracked = config.getoption("memtrack_allow_untracked")
        self.private_ring: Optional[str] = None
        if not os.environ.get("MEMTRACK_RING"):
            # Alone: a private ring, named here so that the runtime's library,
            # which attaches lazily from $MEMTRACK_RING, joins it too.
            self.private_ring = f"/dev/shm/memtrack-pytest-{os.getpid()}"
            os.environ["MEMTRACK_RING"] = self.private_ring
        self.started = False
        self.watcher = None
        self.before: Dict[Cell, object] = {}
        self.untracked_before = 0
        self.summary = Summary()
        self.summary.ignored = sorted(self.ignored)
        self.summary.allow_untracked = self.allow_untracked
        self.summary.private_ring = self.private_ring is not None
        self.summary.rings = [os.environ["MEMTRACK_RING"]]
        # Why this process cannot track (the ring or the library cannot be
        # used): then every test runs unchecked, and the summary says why.
        self.not_tracking: Optional[str] = None
        self.announced = False
        # The test during which the plugin followed a runtime's library.
        self.followed_during: Optional[str] = None

    def _start(self):
        if self.started:
            return
        self.started = True
        try:
            self.memtrack.init(os.environ["MEMTRACK_RING"])
            self.summary.libraries = [self.memtrack.library_path()]
            self.summary.scopes_supported = self.memtrack.scopes_supported()
            self.summary.untracked_supported = self.memtrack.untracked_supported()
        except OSError as e:
            # A full /dev/shm, a file that is not a ring, a library that
            # cannot be loaded: the tests run on, untracked, and one line
            # says why (not a traceback from this plugin).
            self.not_tracking = str(e).removeprefix("memtrack: ")
            self.summary.not_tracking = [[self.not_tracking, 0]]
            return
        if self.private_ring is not None:
            from memtrack import _native

            try:
                self.watcher = _native.PeakWatcher(self.private_ring, os.getpid())
            except ValueError as e:
                self.summary.no_peaks = [f"cannot read the private ring {self.private_ring}: {e}"]

    def _live(self, item) -> Dict[Cell, Tuple[int, int]]:
        self._follow_runtime(item)
        return {cell: (u.live_bytes, u.live_buffers) for cell, u in self.memtrack.live().items()}

    def _follow_runtime(self, item) -> None:
        """Follows a runtime's libmemtrack.so loaded after the plugin bound to the package's copy."""
        from memtrack import _writer

        path = _writer.follow_loaded_library()
        if path is None:
            return
        self.summary.libraries = [path]
        self.followed_during = item.nodeid
        self.summary.followed = [
            f"libmemtrack.so was loaded during {item.nodeid}, after the plugin had bound to the package's own copy; "
            "followed it from there (import the runtime in conftest.py)"
        ]
        try:
            # Attached already if the runtime allocated; else attach it now.
            self.memtrack.init(os.environ["MEMTRACK_RING"])
        except OSError:
            pass

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_setup(self, item):
        self._start()
        if self.not_tracking is not None:
            yield
            return
        if self.memtrack.scopes_supported():
            self.memtrack.scope(item.nodeid).__enter__()
        else:
            # Until the library has scopes, a mark shows where each test
            # starts in a recording (labels keep 36 bytes: the tail).
            self.memtrack.mark(item.nodeid.encode()[-36:].decode("utf-8", "ignore"))
        yield

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_teardown(self, item):
        yield
        if self.not_tracking is None and self.memtrack.scopes_supported():
            self.memtrack.scope(item.nodeid).__exit__(None, None, None)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(self, item):
        if self.not_tracking is not None:
            yield
            return
        self.before = self._live(item)
        self.untracked_before = self.memtrack.untracked().events
        if self.watcher is not None:
            self.watcher.reset()
        yield

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        if call.when != "call":
            return
        report = outcome.get_result()
        if self.not_tracking is not None:
            self.summary.not_tracking[0][1] += 1
            return
        problems = self._check(item)
        self.summary.checked += 1
        if problems and report.passed:
            report.outcome = "failed"
            report.longrepr = f"memtrack: {problems}"
        if problems:
            self.summary.results.append((item.nodeid, problems))

    def pytest_runtest_logreport(self, report):
        # Outside the test's output capture: say at once that nothing is
        # checked, not only in the summary at the end of a long run.
        if self.not_tracking is not None and not self.announced:
            self.announced = True
            reporter = self.config.pluginmanager.get_plugin("terminalreporter")
            if reporter is not None:
                reporter.write_line(f"memtrack: not tracking: {self.not_tracking}; the tests run unchecked")

    def _check(self, item) -> str:
        problems = []
        try:
            item.config.hook.pytest_memtrack_settle(item=item)
        except Exception as e:  # noqa: BLE001 - the conftest's error is this test's verdict
            problems.append(f"pytest_memtrack_settle raised {e!r}")
        after = self._live(item)
        untracked = self.memtrack.untracked().events - self.untracked_before
        try:
            allow, max_peak = marker_limits(item.get_closest_marker("memtrack"))
        except ValueError as e:
            # This test's verdict says so; the run goes on. Its leaks are
            # still checked, as if it had no marker.
            problems.append(f"bad memtrack marker: {e}")
            allow, max_peak = 0, None
        leaks = {}
        for cell in set(after) | set(self.before):
            if cell[1] in self.ignored:
                continue
            b0, n0 = self.before.get(cell, (0, 0))
            b1, n1 = after.get(cell, (0, 0))
            if b1 - b0 > 0 or n1 - n0 > 0:
                leaks[cell] = (max(b1 - b0, 0), max(n1 - n0, 0))
        if untracked > 0:
            # Their allocations and frees are in no (device, kind) cell: a
            # leak among them would not show in `after`.
            self.summary.untracked_tests.append((item.nodeid, untracked))
            if not self.allow_untracked:
                problems.append(
                    f"{untracked} events found the counter pool full, leaks cannot be checked; "
                    f"set MEMTRACK_COUNTER_CELLS (now {self._counter_cells()}) higher"
                )
        if leaks and sum(b for b, _ in leaks.values()) > allow:
            ids = self._born()
            leaked = describe(leaks, ids)
            # (Not for the test that loaded the runtime: its scope opened in the other copy.)
            if ids is None and self.memtrack.scopes_supported() and self.followed_during != item.nodeid:
                # Under `memtrack record`: the recording knows the buffers, by this test's scope.
                leaked += f" (the buffers: `memtrack report FILE --scope '{item.nodeid}'`)"
            problems.append(leaked)
        peaks = self._peaks()
        for cell, peak in (peaks or {}).items():
            self.summary.see_peak(cell, peak)
        if max_peak is not None:
            if peaks is None:
                self.summary.peaks_unchecked.append(item.nodeid)
            else:
                for cell, peak in sorted(peaks.items()):
                    if cell[1] in self.ignored:
                        continue
                    limit = max_peak.get(cell) if isinstance(max_peak, dict) else max_peak
                    if limit is not None and peak > limit:
                        problems.append(
                            f"peak {human_bytes(peak)} on device {cell[0]} {cell[1]} over the limit of {human_bytes(limit)}"
                        )
        return "; ".join(problems)

    def _born(self) -> Optional[Dict[Cell, List[int]]]:
        """The buffer ids this process allocated during the call and did not free; None under `memtrack record`."""
        if self.watcher is None:
            return None
        return {(device, _kind_name(self.memtrack, kind)): ids for (device, kind), ids in self.watcher.born().items()}

    def _counter_cells(self) -> str:
        """The ring's counter-pool size, as its creator's MEMTRACK_COUNTER_CELLS was."""
        try:
            from memtrack import _native

            return str(_native.ring_counter_cells(os.environ["MEMTRACK_RING"]))
        except (ImportError, KeyError, ValueError):
            return "unknown"

    def _peaks(self) -> Optional[Dict[Cell, int]]:
        """This process's peak bytes per cell during the call; None under `memtrack record`."""
        if self.watcher is None:
            # Under `memtrack record`, or a private ring no watcher could read.
            return None
        return {
            (device, _kind_name(self.memtrack, kind)): peak
            for (device, kind), (_, peak) in self.watcher.peaks().items()
            if peak > 0
        }

    def pytest_terminal_summary(self, terminalreporter):
        self.summary.counter_cells = self._counter_cells()
        self.summary.write(terminalreporter)

    def pytest_sessionfinish(self, session):
        workeroutput = getattr(self.config, "workeroutput", None)
        if workeroutput is not None:
            # An xdist worker: its summary goes to the controller.
            self.summary.counter_cells = self._counter_cells()
            workeroutput["memtrack"] = self.summary.to_dict()

    def pytest_unconfigure(self, config):
        if self.watcher is not None:
            self.watcher.close()
            self.watcher = None
        if self.private_ring is not None:
            try:
                os.unlink(self.private_ring)
            except OSError:
                pass


class Summary:
    """What the ``memtrack`` section at the end of the session says.

    One per process that runs tests; under pytest-xdist each worker sends
    its own to the controller (``to_dict``, plain lists and numbers, as
    xdist's ``workeroutput`` carries them), which merges them (``merge``).
    """

    def __init__(self):
        self.workers = 0  # xdist workers merged in; 0: the tests ran here
        self.workers_lost = 0  # xdist workers that went down without sending theirs (crashed)
        self.private_ring = True
        self.rings: List[str] = []
        self.libraries: List[str] = []
        self.scopes_supported = True
        self.untracked_supported = True
        self.allow_untracked = False
        self.ignored: List[str] = []
        self.checked = 0
        self.not_tracking: List[List] = []  # [why, tests run unchecked], per process
        self.no_peaks: List[str] = []  # why max_peak could not be read
        self.followed: List[str] = []  # a runtime's library loaded after the plugin bound to its own
        self.results: List[Tuple[str, str]] = []  # (node id, problems)
        # (node id, events) of the tests during which events found the pool full.
        self.untracked_tests: List[Tuple[str, int]] = []
        self.peaks_unchecked: List[str] = []
        self.max_peak_seen: Dict[Cell, int] = {}
        self.counter_cells = "unknown"

    def see_peak(self, cell: Cell, peak: int) -> None:
        self.max_peak_seen[cell] = max(self.max_peak_seen.get(cell, 0), peak)

    def to_dict(self) -> dict:
        data = {k: v for k, v in vars(self).items() if k != "max_peak_seen"}
        data["max_peak_seen"] = [[device, kind, peak] for (device, kind), peak in self.max_peak_seen.items()]
        return data

    def merge(self, data: dict) -> None:
        """Adds a worker's summary (``to_dict``) to this one."""
        self.workers += 1
        self.private_ring = self.private_ring and data["private_ring"]
        self.not_tracking.extend(data["not_tracking"])
        for name in ("rings", "libraries", "no_peaks", "followed"):
            known = getattr(self, name)
            known.extend(v for v in data[name] if v not in known)
        for name in ("results", "untracked_tests", "peaks_unchecked"):
            getattr(self, name).extend(tuple(v) if isinstance(v, list) else v for v in data[name])
        self.checked += data["checked"]
        self.scopes_supported = self.scopes_supported and data["scopes_supported"]
        self.untracked_supported = self.untracked_supported and data["untracked_supported"]
        self.allow_untracked, self.ignored = data["allow_untracked"], data["ignored"]
        for device, kind, peak in data["max_peak_seen"]:
            self.see_peak((device, kind), peak)
        if data["counter_cells"] != "unknown":
            self.counter_cells = data["counter_cells"]

    def write(self, tr) -> None:
        tr.section("memtrack")
        if self.workers_lost:
            # Their checks ran (a leak failed its test), but what they found
            # is not here: no verdict below may speak for their tests.
            tr.write_line(
                f"memtrack: {self.workers_lost} xdist worker{'s' if self.workers_lost > 1 else ''} ended without "
                "its summary (crashed): the tests it checked are not counted below; their failures are above"
            )
            if not self.workers:
                return
        if self.not_tracking:
            # Nothing was checked: say so and why, and claim nothing more.
            for reason, unchecked in self.not_tracking:
                tr.write_line(f"memtrack: not tracking, {_tests(unchecked)} ran unchecked: {reason}")
            if not self.checked:
                return
        library = ", ".join(self.libraries) or "(not loaded)"
        rings = ", ".join(self.rings)
        if self.workers:
            where = f"by {self.workers} xdist workers, " + (
                f"each on a private ring ({rings})" if self.private_ring else f"on ring {rings}"
            )
        else:
            where = f"on private ring {rings}" if self.private_ring else f"on ring {rings}"
        tr.write_line(f"{self.checked} tests checked {where}, through {library}")
        for line in self.followed:
            tr.write_line(line)
        if self.ignored:
            tr.write_line(f"ignored kinds: {', '.join(self.ignored)}")
        if self.libraries and not self.scopes_supported:
            tr.write_line("scopes: this libmemtrack has no memtrack_scope_begin; each test's start is a mark instead")
        if self.libraries and not self.untracked_supported:
            tr.write_line(
                "untracked: this libmemtrack has no memtrack_untracked_usage; "
                "a full counter pool would hide leaks unnoticed"
            )
        if self.untracked_tests:
            events = sum(n for _, n in self.untracked_tests)
            verdict = (
                "allowed by --memtrack-allow-untracked: their leak checks are incomplete"
                if self.allow_untracked
                else "they failed"
            )
            tr.write_line(
                f"counter pool full: {events} events in {_tests(len(self.untracked_tests))} were counted as untracked, "
                f"so leaks cannot be checked ({verdict}); "
                f"set MEMTRACK_COUNTER_CELLS (now {self.counter_cells}) higher"
            )
            if self.allow_untracked:
                for nodeid, n in self.untracked_tests:
                    tr.write_line(f"{nodeid}: {n} untracked events")
        for nodeid, problems in self.results:
            tr.write_line(f"{nodeid}: {problems}")
        if not self.results and self.untracked_tests:
            tr.write_line("no leak in the live counters, but the tests above were not fully checked")
        elif not self.results and not self.workers_lost:
            tr.write_line("no test left device memory allocated")
        for cell, peak in sorted(self.max_peak_seen.items()):
            tr.write_line(f"largest peak in a test: {human_bytes(peak)} on device {cell[0]} {cell[1]}")
        for reason in self.no_peaks:
            tr.write_line(f"max_peak not checked: {reason}")
        if self.peaks_unchecked:
            tr.write_line(
                f"max_peak not checked for {len(self.peaks_unchecked)} tests: under `memtrack record` "
                "the recorder is the ring's reader (see its report's marks and scopes)"
            )


class XdistController:
    """The plugin in pytest-xdist's controller: the workers' summaries, merged."""

    def __init__(self, config):
        self.summary = Summary()

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node, error):
        data = getattr(node, "workeroutput", {}).get("memtrack")
        if data is not None:
            self.summary.merge(data)
        else:
            # A worker that crashed (xdist replaces it): it sent nothing.
            self.summary.workers_lost += 1

    def pytest_terminal_summary(self, terminalreporter):
        self.summary.write(terminalreporter)


def _kind_name(memtrack, code: int) -> str:
    kinds = memtrack.KIND_NAMES
    return kinds[code] if code < len(kinds) else f"KIND_{code}"


def _tests(n: int) -> str:
    return f"{n} test" if n == 1 else f"{n} tests"
