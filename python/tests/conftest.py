"""Fixtures of the memtrack package's own suite.

The suite runs real processes against real rings: the `memtrack` binary and
`libmemtrack.so` of this repository's cargo build (override with
$MEMTRACK_BIN and $FAKE_RUNTIME_LIB).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

# The test project is run by the tests, in its own pytest, not collected here.
collect_ignore = ["fakeproject"]


def _built(env: str, relative: str) -> Path:
    path = Path(os.environ.get(env) or REPO / relative)
    if not path.exists():
        pytest.exit(f"{path} is missing: run `cargo build` first (or set ${env})", returncode=2)
    return path


@pytest.fixture(scope="session")
def memtrack_bin() -> Path:
    return _built("MEMTRACK_BIN", "target/debug/memtrack")


@pytest.fixture(scope="session")
def runtime_lib() -> Path:
    return _built("FAKE_RUNTIME_LIB", "target/debug/libmemtrack.so")


@pytest.fixture
def run_python(runtime_lib, tmp_path):
    """Runs a Python snippet in a fresh interpreter, with the fake runtime importable."""

    def run(code, env=None, record=None, memtrack_bin=None, check=True):
        script = tmp_path / "snippet.py"
        script.write_text(code)
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("MEMTRACK_")}
        full_env.update(FAKE_RUNTIME_LIB=str(runtime_lib), PYTHONPATH=str(HERE))
        full_env.update(env or {})
        command = [sys.executable, str(script)]
        if record is not None:
            command = [str(memtrack_bin), "record", "-q", "-o", str(record), "--"] + command
        result = subprocess.run(command, env=full_env, capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            raise AssertionError(f"{command} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    return run
