"""``memtrack.load``: a record file, as plain Python objects and columns."""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Union

import numpy as np

from . import _native

KIND_NAMES: List[str] = list(_native.kind_names())
EVENT_NAMES: Dict[int, str] = dict(_native.event_names())
# Events whose records carry a buffer (or a capacity): alloc, free, capacity.
BUFFER_EVENTS = [code for code, name in EVENT_NAMES.items() if name in ("alloc", "free", "capacity")]


class Obj:
    """A JSON object of the report with attribute access: ``p.pid`` is ``p["pid"]``."""

    __slots__ = ("_data",)

    def __init__(self, data: Dict[str, Any]):
        self._data = data

    def __getattr__(self, name: str) -> Any:
        try:
            return _wrap(self._data[name])
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, name: str) -> Any:
        return _wrap(self._data[name])

    def __contains__(self, name: str) -> bool:
        return name in self._data

    def __eq__(self, other: object) -> bool:
        # Equal to the JSON it wraps too: `rec.processes == json.loads(...)`.
        if isinstance(other, Obj):
            return self._data == other._data
        if isinstance(other, dict):
            return self._data == other
        return NotImplemented

    def __dir__(self):
        return list(self._data)

    def keys(self):
        return self._data.keys()

    def to_dict(self) -> Dict[str, Any]:
        """The object as the report's JSON has it."""
        return self._data

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={_brief(v)}' for k, v in self._data.items())})"


def _brief(value: Any) -> str:
    """A value in an ``Obj``'s repr: nested objects by their keys, lists by their length."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: ..." for k in value) + "}"
    if isinstance(value, list):
        return f"[{len(value)} items]" if value else "[]"
    return repr(value)


def _wrap(value: Any) -> Any:
    if isinstance(value, dict):
        return Obj(value)
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


class Recording:
    """A record file read through memtrack's engine (the one behind ``memtrack report``).

    Attributes hold what ``memtrack report --json`` holds, under the same names:
    ``processes``, ``devices``, ``remaining``, ``anomalies``, ``marks``, ``scopes``
    and the rest (``report`` is the whole document as a dict).
    """

    def __init__(self, path: Union[str, os.PathLike], partial: bool = False):
        self.path = os.fspath(path)
        self.partial = partial
        self.report: Dict[str, Any] = json.loads(_native.report_json(self.path, partial))

    def __getattr__(self, name: str) -> Any:
        report = self.__dict__.get("report", {})
        if name in report:
            return _wrap(report[name])
        raise AttributeError(name)

    @property
    def processes(self) -> List[Obj]:
        """One per writer process: ``process`` key ("<entry>.<generation>"), pid, name, state, ..."""
        return _wrap(self.report["processes"])

    @property
    def devices(self) -> List[Obj]:
        """Per device: ``device_id`` and ``kinds`` {kind name: live/peak/capacity/allocs/frees}."""
        return _wrap(self.report["devices"])

    @property
    def remaining(self) -> List[Obj]:
        """Buffers still allocated at the end of the recording."""
        return _wrap(self.report["remaining"])

    @property
    def anomalies(self) -> Obj:
        """Counts (``unknown_frees``, ``duplicate_allocs``, ``size_mismatches``) and ``details``."""
        return _wrap(self.report["anomalies"])

    @property
    def marks(self) -> List[Obj]:
        """Phase markers with the usage of every device and kind at each."""
        return _wrap(self.report["marks"])

    @property
    def scopes(self) -> List[Obj]:
        """Scopes, as ``report --json`` lists them; empty while the reader has no scopes."""
        return _wrap(self.report.get("scopes", []))

    def usage(self, device_id: int, kind: str) -> Optional[Obj]:
        """The stats of one (device, kind), or None."""
        for device in self.report["devices"]:
            if device["device_id"] == device_id and kind in device["kinds"]:
                return Obj(device["kinds"][kind])
        return None

    def records(self, labels: bool = True) -> Dict[str, np.ndarray]:
        """Every record as columns: a dict of numpy arrays, one entry per record.

        Columns: ticket, time_ns, event (code; ``memtrack.EVENT_NAMES``), process
        (index into ``process_keys``; -1 for capacity records), pid, process_slot,
        device_id, kind (code; ``memtrack.KIND_NAMES``), buffer_id, parent_id,
        address, size (the buffer columns are 0 for records without a buffer:
        all but alloc, free and capacity), flags, scope (an alloc's scope path,
        else None), and with ``labels`` a ``label`` object column (the text of
        mark, process-start, scope and text records, else None). The numeric
        arrays are read-only views of the bytes the reader built. The rows are
        those of ``memtrack export --format parquet``.
        """
        n, columns, keys, paths, label_rows = _native.record_columns(self.path, self.partial)
        out = {name: np.frombuffer(data, dtype=np.dtype(dtype), count=n) for name, (dtype, data) in columns.items()}
        process = out["process"].astype(np.int64)
        process[out["process"] == _native.NO_PROCESS] = -1
        out["process"] = process
        # Paths by index, None for -1 (the last entry).
        scope_names = np.array(list(paths) + [None], dtype=object)
        out["scope"] = scope_names[out["scope"]]
        if labels:
            column = np.full(n, None, dtype=object)
            for row, label in label_rows:
                column[row] = label
            out["label"] = column
        self._process_keys: List[str] = list(keys)
        return out

    @property
    def process_keys(self) -> List[str]:
        """The ``process`` column's values: the report's process keys ("<entry>.<generation>"), in its order."""
        keys = self.__dict__.get("_process_keys")
        return list(keys) if keys is not None else [p["process"] for p in self.report["processes"]]

    def to_pandas(self):
        """The records as a pandas DataFrame, with event, kind and process as categoricals.

        Column for column what ``memtrack export --format parquet`` holds (there
        event, kind and process are strings). Needs pandas (``pip install pandas``).
        """
        try:
            import pandas as pd
        except ImportError as e:
            raise ImportError("memtrack: Recording.to_pandas needs pandas (pip install pandas)") from e
        columns = self.records()
        keys = self._process_keys
        frame = pd.DataFrame({k: v for k, v in columns.items() if k not in ("event", "kind", "process")})
        frame.insert(2, "event", pd.Categorical.from_codes(_codes(columns["event"], EVENT_NAMES), _names(EVENT_NAMES)))
        frame.insert(3, "process", pd.Categorical.from_codes(columns["process"], keys))
        has_buffer = np.isin(columns["event"], BUFFER_EVENTS)
        kind_codes = np.where(has_buffer, columns["kind"].astype(np.int64), -1)
        # Codes past the known kinds are named as the reader names them (KIND_9).
        kinds = KIND_NAMES + [f"KIND_{code}" for code in range(len(KIND_NAMES), int(kind_codes.max(initial=-1)) + 1)]
        frame.insert(7, "kind", pd.Categorical.from_codes(kind_codes, kinds))
        return frame

    def __repr__(self) -> str:
        r = self.report
        return f"<memtrack.Recording {self.path}: {r['records']} records, {len(r['processes'])} processes, {r['duration_ns']} ns>"


def _names(names: Dict[int, str]) -> List[str]:
    return [names.get(code, f"EVENT_{code}") for code in range(max(names) + 1)]


def _codes(values: np.ndarray, names: Dict[int, str]) -> np.ndarray:
    codes = values.astype(np.int64)
    codes[codes > max(names)] = -1
    return codes


def load(path: Union[str, os.PathLike], partial: bool = False) -> Recording:
    """Read a record file written by ``memtrack record``.

    ``partial`` also reads a recording whose reader was killed (``report --partial``).
    Raises ``ValueError`` naming the file and the reason for a missing or bad file.
    """
    return Recording(path, partial)
