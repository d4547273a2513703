"""A full disk: one line naming the output, a non-zero exit, nothing sealed is lost, a rerun completes.

The first two tests inject ENOSPC where HDF5 reports it (flushing a part, copying the main
file for consolidation); the last runs the real command on a tiny tmpfs when this machine
lets the test mount one (root with mount rights), and is skipped otherwise.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import uuid

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import audio_gen
from conftest import cli_env

from audioembed import FeatureReader, extract
from audioembed.cli import main
from audioembed.store import DiskFullError, parts_dir

# the text HDF5 puts in the exception when write(2) fails with ENOSPC
HDF5_ENOSPC = ("Unable to synchronously flush file (file write failed: time = Thu Dec  3 09:25:51 2026\n, "
               "filename = 'x.h5', file descriptor = 3, errno = 28, error message = 'No space left on device', "
               "buf = 0x1, total write size = 96840, bytes this sub-write = 96840, offset = 307200)")


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "in"
    audio_gen.make_corpus(root, n=6, seed=3, min_s=0.3, max_s=1.0)
    return root


def _assert_same_as_clean_run(corpus, out, tmp_path):
    clean = tmp_path / "clean.h5"
    extract(corpus, "logmel", clean, pooling="none", progress=False)
    with FeatureReader(clean) as a, FeatureReader(out) as b:
        assert a.ids == b.ids and len(a) == 6
        for uid in a.ids:
            np.testing.assert_array_equal(a.get(uid), b.get(uid))


def test_full_disk_while_writing(corpus, tmp_path, monkeypatch):
    out = tmp_path / "out" / "f.h5"
    flush = h5py.File.flush

    def flush_until_full(self):  # the disk fills up once two parts are sealed
        if len(list(parts_dir(out).glob("part-*.h5"))) >= 2:
            raise RuntimeError(HDF5_ENOSPC)
        return flush(self)

    monkeypatch.setattr(h5py.File, "flush", flush_until_full)
    args = ["extract", "-u", "logmel", str(corpus), "-o", str(out), "--pool", "none", "-q", "--checkpoint-seconds", "0"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert str(out) in lines[0] and "no space left on device" in lines[0]
    assert "Traceback" not in result.output
    # the two utterances sealed before the disk filled are kept; the broken part is gone
    with FeatureReader(out) as feats:
        assert len(feats) == 2
    assert not list(parts_dir(out).glob("*.tmp"))

    monkeypatch.setattr(h5py.File, "flush", flush)  # space freed
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0, again.output
    assert "4 extracted, 2 already done" in again.output
    _assert_same_as_clean_run(corpus, out, tmp_path)


def test_full_disk_while_consolidating(corpus, tmp_path, monkeypatch):
    out = tmp_path / "f.h5"

    def no_space(src, dst, **kwargs):
        with open(dst, "wb") as fh:
            fh.write(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))

    extract(corpus, "logmel", out, pooling="none", progress=False, checkpoint_seconds=0)  # creates the main file
    os.unlink(out)
    monkeypatch.setattr("audioembed.store.shutil.copyfile", no_space)
    with pytest.raises(DiskFullError, match="no space left on device") as info:
        extract(corpus, "logmel", out, pooling="none", progress=False, checkpoint_seconds=0)
    assert str(out) in str(info.value)
    assert not (tmp_path / "f.h5.consolidate.tmp").exists()
    with FeatureReader(out) as feats:  # everything is in sealed parts, read together with the main file
        assert len(feats) == 6
    monkeypatch.undo()
    assert extract(corpus, "logmel", out, pooling="none", progress=False).skipped_done == 6
    assert not parts_dir(out).exists()
    _assert_same_as_clean_run(corpus, out, tmp_path)


def _mount_tmpfs(where, size):
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    run = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", f"audioembed-test-{uuid.uuid4().hex[:8]}",
                          str(where)], capture_output=True, text=True)
    if run.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {run.stderr.strip()}")


def test_real_full_filesystem(corpus, tmp_path):
    exe = shutil.which("audioembed")
    assert exe, "the audioembed console script is not installed"
    disk = tmp_path / "disk"
    disk.mkdir()
    _mount_tmpfs(disk, "200k")
    try:
        out = disk / "f.h5"
        cmd = [exe, "extract", "-u", "logmel", str(corpus), "-o", str(out), "--pool", "none", "-q",
               "--checkpoint-seconds", "0"]
        run = subprocess.run(cmd, env=cli_env(), capture_output=True, text=True, timeout=300)
        assert run.returncode == 1, (run.returncode, run.stderr[-2000:])
        assert [line for line in run.stderr.splitlines() if line.strip()] == [
            f"Error: {out}: no space left on device; utterances finished before the last checkpoint are kept, "
            "free some space and rerun the same command to continue"
        ]
        subprocess.run(["mount", "-o", "remount,size=20m", str(disk)], check=True)
        run = subprocess.run(cmd, env=cli_env(), capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        _assert_same_as_clean_run(corpus, out, tmp_path)
    finally:
        subprocess.run(["umount", str(disk)], check=False)
