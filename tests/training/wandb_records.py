"""Read back what an offline wandb run logged, without the network or the wandb service.

An offline run stores its records in `offline-run-*/run-ID.wandb`: a 7-byte header (":W&B",
a 2-byte magic, a version byte), then records in the LevelDB log framing (32 KiB blocks; each
chunk has a 4-byte checksum, a 2-byte length and a type: 1 full, 2 first, 3 middle, 4 last),
each record a protobuf `wandb_internal_pb2.Record`.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK = 32 * 1024
CHUNK_HEADER = 7


def find_offline_run(run_dir: Path) -> Path:
    """The single offline run folder under `run_dir/wandb`."""
    found = sorted((Path(run_dir) / "wandb").glob("offline-run-*"))
    assert len(found) == 1, f"expected one offline wandb run under {run_dir}/wandb, got {found}"
    return found[0]


def read_records(path: Path) -> list:
    """Every protobuf Record of a `.wandb` file, in order."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path}: not a wandb transaction log"
    pos, pending, records = 7, b"", []
    while pos + CHUNK_HEADER <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        _, length, kind = struct.unpack("<IHB", data[pos:pos + CHUNK_HEADER])
        if left_in_block < CHUNK_HEADER or (kind == 0 and length == 0):
            pos += left_in_block            # block trailer padding
            continue
        chunk = data[pos + CHUNK_HEADER:pos + CHUNK_HEADER + length]
        pos += CHUNK_HEADER + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def history(run_folder: Path) -> list[dict]:
    """The logged history rows ({key: value}) of an offline run folder."""
    wandb_file = next(Path(run_folder).glob("run-*.wandb"))
    rows = []
    for record in read_records(wandb_file):
        if record.WhichOneof("record_type") == "history":
            rows.append({(item.key or "/".join(item.nested_key)): json.loads(item.value_json)
                         for item in record.history.item})
    return rows
