"""A third-party plugin installed as its own distribution is discovered through its entry
point, works from the CLI, and a broken plugin only costs itself.

The packages are installed with ``pip --target`` into temporary folders and made visible
to subprocesses through ``PYTHONPATH``, so the test environment itself is never modified.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "audioembed-example-plugin"


def _pip_install_target(src: Path, target: Path) -> None:
    cmd = [
        sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
        "--no-index", "--disable-pip-version-check", "--target", str(target), str(src),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"pip install of {src.name} failed:\n{proc.stdout}\n{proc.stderr}"


def _env(target: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(target), env.get("PYTHONPATH")) if p)
    env.pop("PYTHONWARNINGS", None)
    return env


def _python(code: str, target: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=_env(target), capture_output=True, text=True, timeout=300
    )


def _cli(args: list[str], target: Path) -> subprocess.CompletedProcess:
    script = Path(sys.executable).parent / "audioembed"  # the installed console script
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "audioembed"]
    return subprocess.run(cmd + args, env=_env(target), capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def example_target(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("example_plugin")
    # build from a copy so the source tree gets no build/ or *.egg-info
    src = root / "src"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = root / "site"
    _pip_install_target(src, target)
    assert (target / "audioembed_example_plugin").is_dir()
    return target


def test_registry_sees_the_example_plugin(example_target):
    proc = _python(
        """
        import json, sys, warnings
        warnings.simplefilter("ignore")
        from audioembed.registry import get_registry, load_upstream

        entry = get_registry().upstreams["example_energy"]
        torch_after_listing = "torch" in sys.modules  # the entry-point module is light
        import torch

        up = load_upstream("example_energy")
        out = up(0.1 * torch.randn(2, 16000), torch.tensor([16000, 9000]))
        print(json.dumps({
            "torch_after_listing": torch_after_listing,
            "plugin": entry.plugin,
            "distribution": entry.distribution,
            "module": type(up).__module__,
            "num_layers": up.num_layers,
            "shapes": [list(h.shape) for h in out.hidden_states],
            "lengths": out.lengths.tolist(),
            "num_frames": [up.num_frames(16000), up.num_frames(9000)],
        }))
        """,
        example_target,
    )
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["plugin"] == "example"
    assert info["distribution"] == "audioembed-example-plugin"
    assert info["torch_after_listing"] is False
    assert info["module"] == "audioembed_example_plugin.energy"
    assert info["num_layers"] == 2
    assert info["shapes"] == [[2, 98, 2], [2, 98, 2]]
    assert info["lengths"] == info["num_frames"] == [98, 54]


def test_cli_plugins_lists_the_example(example_target):
    proc = _cli(["plugins"], example_target)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [line for line in proc.stdout.splitlines() if "example_energy" in line]
    assert lines, proc.stdout
    assert "audioembed-example-plugin" in lines[0]


def test_cli_extract_with_the_example(example_target, tmp_path):
    import h5py
    import soundfile as sf

    wav_dir = tmp_path / "wavs"
    wav_dir.mkdir()
    rng = np.random.default_rng(0)
    for name, seconds in (("a", 1.0), ("b", 1.5)):
        sf.write(wav_dir / f"{name}.wav", (0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32), 16000)
    out = tmp_path / "f.h5"
    proc = _cli(["extract", "--upstream", "example_energy", str(wav_dir), "-o", str(out)], example_target)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with h5py.File(out, "r") as f:
        assert len(f["utterances"]) == 2


BROKEN_PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "audioembed-broken-plugin"
version = "0.0.1"

[project.entry-points.audioembed]
broken = "audioembed_broken_plugin"

[tool.setuptools]
packages = ["audioembed_broken_plugin"]
"""


def test_broken_plugin_is_reported_and_skipped(tmp_path):
    src = tmp_path / "broken"
    (src / "audioembed_broken_plugin").mkdir(parents=True)
    (src / "pyproject.toml").write_text(BROKEN_PYPROJECT)
    (src / "audioembed_broken_plugin" / "__init__.py").write_text(
        'raise RuntimeError("this plugin is broken on purpose")\n'
    )
    target = tmp_path / "site"
    _pip_install_target(src, target)

    proc = _python(
        """
        import json, warnings
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            from audioembed.registry import get_registry
            reg = get_registry()
        print(json.dumps({
            "upstreams": sorted(reg.upstreams),
            "failed": sorted(reg.failed),
            "warnings": [f"{w.category.__name__}: {w.message}" for w in caught],
        }))
        """,
        target,
    )
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"fbank", "logmel", "mfcc"} <= set(info["upstreams"])
    assert "audioembed-broken-plugin:broken" in info["failed"]
    named = [w for w in info["warnings"] if "broken" in w and "audioembed-broken-plugin" in w]
    assert named, info["warnings"]
    assert named[0].startswith("PluginWarning:")
    assert "this plugin is broken on purpose" in named[0]
