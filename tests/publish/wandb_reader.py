"""Read a W&B offline run file (`run-<id>.wandb`) back into wandb's own protobuf Records.

The file is a LevelDB-style log (the format of wandb's former `sdk/internal/datastore.py`): a 7-byte
header (":W&B", magic 0xBEE1, version 0), then 32 KiB blocks of records, each with a 7-byte header
(crc32, length, type: 1 full, 2 first, 3 middle, 4 last). Payloads are `wandb_internal_pb2.Record`.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any

BLOCK = 32768
HEADER = 7


def read_records(path: Path) -> list[Any]:
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:HEADER])
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0), "not a W&B run file"
    pos, pending, out = HEADER, b"", []
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # block trailer padding
            pos += left
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        if kind == 0 and length == 0:
            pos += HEADER
            continue
        chunk = data[pos + HEADER:pos + HEADER + length]
        assert zlib.crc32(bytes([kind]) + chunk) & 0xFFFFFFFF == crc, f"bad checksum at {pos}"
        pos += HEADER + length
        if kind == 1:
            out.append(chunk)
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            out.append(pending + chunk)
            pending = b""
    records = []
    for raw in out:
        rec = pb.Record()
        rec.ParseFromString(raw)
        records.append(rec)
    return records
