"""Several processes writing one store at once: the lock must admit exactly one writer.

Job arrays and retries start writers on the same output at the same time. A lock that
admits two writers lets one consolidation replace the main file with a copy that lacks the
other's utterances, so this stress test checks the outcome that matters: every utterance
whose writer returned normally is in the final store.
"""

from __future__ import annotations

import multiprocessing
import time

import numpy as np

from audioembed.store import FeatureReader, FeatureWriter, StoreError

ATTRS = {
    "format_version": 1, "upstream": "x", "weights_hash": "abc", "sample_rate": 16000, "hop_length": 160,
    "layers": np.array([0]), "pooling": "mean", "dtype": "float32", "window_samples": 16000,
    "context_samples": 0,
}
WRITERS = 4
SECONDS = 4.0


def _writer_process(out: str, worker: int, seconds: float, results) -> None:
    """Open, write one or two utterances, close; repeat.

    Reports the ids of every session that returned normally, how often the lock refused the
    writer (expected), and any other error (a second writer trampling the first one's files).
    """
    committed, errors = [], []
    refused = 0
    deadline = time.monotonic() + seconds
    session = 0
    while time.monotonic() < deadline:
        session += 1
        ids = [f"w{worker}-s{session}-u{k}" for k in range(1 + session % 2)]
        try:
            writer = FeatureWriter(out, ATTRS, seal_seconds=0)
        except StoreError as exc:
            if "another audioembed process" not in str(exc):
                errors.append(str(exc))
            refused += 1
            continue
        except Exception as exc:  # noqa: BLE001 - reported to the test
            errors.append(f"open: {type(exc).__name__}: {exc}")
            continue
        try:
            with writer:
                for uid in ids:
                    w = writer.begin(uid, [0], 2)
                    w.append({0: np.full((2, 2), float(worker))})
                    writer.commit({"path": uid, "num_samples": 2, "duration": 0.0, "metadata": "{}"})
        except Exception as exc:  # noqa: BLE001 - reported to the test
            errors.append(f"write: {type(exc).__name__}: {exc}")
            continue
        committed.extend(ids)  # the writer closed without an exception: these must survive
    results.put((worker, committed, refused, errors))


def test_concurrent_writers_lose_nothing(tmp_path):
    out = tmp_path / "shared.h5"
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    procs = [ctx.Process(target=_writer_process, args=(str(out), i, SECONDS, results)) for i in range(WRITERS)]
    for p in procs:
        p.start()
    reports = [results.get(timeout=SECONDS + 60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    committed = {uid for _, ids, _, _ in reports for uid in ids}
    errors = [e for _, _, _, errs in reports for e in errs]
    assert len(committed) > WRITERS  # the writers really took turns
    with FeatureReader(out) as feats:
        missing = sorted(committed - set(feats.ids))
    assert not missing, f"{len(missing)} of {len(committed)} committed utterances lost: {missing[:10]}"
    assert not errors, f"{len(errors)} writer sessions failed, e.g. {errors[:3]}"
