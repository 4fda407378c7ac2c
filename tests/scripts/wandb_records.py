"""Read an offline W&B run file (``run-*.wandb``) back, for tests: W&B 0.2x+ has no Python reader.

The file is W&B's LevelDB-style log: a 7-byte header (``:W&B``, magic 0xBEE1, version), then 32 KiB
blocks of records, each with a 7-byte header (crc32, length, type: full / first / middle / last)
holding serialised ``wandb_internal_pb2.Record`` protobufs.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Any

BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def raw_records(path: str | Path) -> list[bytes]:
    data = Path(path).read_bytes()
    ident, magic, _version = struct.unpack("<4sHB", data[:7])
    if ident != b":W&B" or magic != 0xBEE1:
        raise ValueError(f"{path}: not a W&B run file")
    out, pending, pos = [], b"", 7
    while pos + 7 <= len(data):
        room = BLOCK - pos % BLOCK
        if room < 7:  # block trailer padding
            pos += room
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:
            pos += room
            continue
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == FULL:
            out.append(chunk)
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            out.append(pending + chunk)
            pending = b""
    return out


def _merge(into: dict[str, Any], update: dict[str, Any]) -> None:
    """Deep merge: W&B sends nested keys (``_wandb.visualize.<key>``) as separate updates of one top-level key."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def record_kinds(path: str | Path) -> list[str]:
    """The type of each record of a run file, in order (``run``, ``history``, ..., ``exit`` last)."""
    from wandb.proto import wandb_internal_pb2 as pb

    kinds = []
    for raw in raw_records(path):
        record = pb.Record()
        record.ParseFromString(raw)
        kinds.append(record.WhichOneof("record_type"))
    return kinds


def wait_for_run_file(run_dir: str | Path, timeout_s: float = 600.0) -> Path:
    """The run file of ``run_dir`` once W&B's writer has written its ``exit`` record (after ``wandb.finish()``).

    Waits for that record, not for a time: ``timeout_s`` only bounds a writer that never finishes.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        files = sorted(Path(run_dir).glob("run-*.wandb"))
        if files:
            from google.protobuf.message import DecodeError

            try:
                if "exit" in record_kinds(files[0]):
                    return files[0]
            except (ValueError, struct.error, DecodeError):  # header or a record not fully written yet
                pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{run_dir}: W&B's writer wrote no exit record in {timeout_s:.0f} s")
        time.sleep(0.2)


def _items_to_dict(items: Any) -> dict[str, Any]:
    """Protobuf items (``key`` or ``nested_key`` path, JSON value) as a nested dict."""
    out: dict[str, Any] = {}
    for item in items:
        path = [item.key] if item.key else list(item.nested_key)
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = json.loads(item.value_json)
    return out


def read_run(path: str | Path) -> dict[str, Any]:
    """``{"history": [{key: value}], "config": {key: value}, "summary": {...}}`` of a run file."""
    from wandb.proto import wandb_internal_pb2 as pb

    history, config, summary = [], {}, {}
    for raw in raw_records(path):
        record = pb.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.append(_items_to_dict(record.history.item))
        elif kind == "config":
            _merge(config, _items_to_dict(record.config.update))
        elif kind == "run":  # wandb.init(config=...) arrives with the run record
            _merge(config, _items_to_dict(record.run.config.update))
        elif kind == "summary":
            _merge(summary, _items_to_dict(record.summary.update))
    return {"history": history, "config": config, "summary": summary}
