"""``log.jsonl``: one JSON object per logged step, appended as training goes.

On resume the log is cut back to the checkpoint's step first: the steps logged between
that checkpoint and the interruption are trained again and logged again, and without the
cut they would appear twice.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

LOG_FILE = "log.jsonl"


def read_log(output_dir: str | os.PathLike) -> list[dict]:
    """The records of ``OUT/log.jsonl`` (a last line cut off by a kill is ignored)."""
    path = Path(output_dir) / LOG_FILE
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a partial line written when the process was killed
    return records


def truncate_log(output_dir: str | os.PathLike, step: int) -> int:
    """Keep only the records of steps ``<= step`` (and drop a partial last line); returns
    how many records were dropped. The file is rewritten atomically."""
    path = Path(output_dir) / LOG_FILE
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            dropped += 1
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] > step:
            dropped += 1
            continue
        kept.append(line)
    if dropped:
        tmp = path.with_name(LOG_FILE + ".tmp")
        tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        os.replace(tmp, path)
    return dropped


class RunLog:
    """Appends records to ``OUT/log.jsonl``; inactive (writes nothing) on non-main ranks."""

    def __init__(self, output_dir: str | os.PathLike, active: bool = True):
        self.file = open(Path(output_dir) / LOG_FILE, "a", encoding="utf-8") if active else None

    def write(self, record: dict) -> None:
        if self.file is not None:
            self.file.write(json.dumps(record, allow_nan=True) + "\n")
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
