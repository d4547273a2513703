"""Discovering and listing plugins imports none of their implementation.

The registry imports every entry point of the ``audioembed`` group; the built-in ones name
light catalog modules whose ``load``/``build`` are :class:`LazyImport`s, so listing upstreams
and tasks (``audioembed plugins``) never pays for torch, transformers, numpy or HDF5.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import cli_env

from audioembed import AudioEmbedError, LazyImport, PluginImportError, SpecPlugin
from audioembed.registry import get_registry, load_upstream

HEAVY = ("torch", "transformers", "numpy", "h5py", "soundfile", "onnx", "sklearn", "scipy")
#: the modules that build models and read task data; only a load or a build may import them
IMPLEMENTATIONS = ("audioembed_plugins.hf", "audioembed_plugins.mert", "audioembed_plugins.dsp",
                   "audioembed_plugins.student", "audioembed_plugins.bundled", "audioembed_plugins.ge2e",
                   "audioembed_plugins.crepe", "audioembed_plugins.basic_pitch", "audioembed_downstreams.music",
                   "audioembed_downstreams.common", "audioembed.upstream", "audioembed.tasks")


def _imported_after(code: str) -> dict:
    probe = (code + "\nimport json, sys\n"
             f"print(json.dumps(sorted(m for m in {HEAVY + IMPLEMENTATIONS!r} if m in sys.modules)))\n")
    run = subprocess.run([sys.executable, "-c", probe], env=cli_env(), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    return {"stdout": run.stdout, "imported": json.loads(run.stdout.strip().splitlines()[-1])}


def test_listing_upstreams_and_tasks_imports_no_implementation():
    result = _imported_after(
        "from audioembed.registry import get_registry\n"
        "registry = get_registry()\n"
        "assert not registry.failed, registry.failed\n"
        "for table in (registry.upstreams, registry.tasks):\n"
        "    for name, entry in sorted(table.items()):\n"
        "        print(name, entry.plugin, entry.spec.summary)\n"
    )
    assert result["imported"] == []
    assert "unified_student student" in result["stdout"] and "genre music" in result["stdout"]


def test_cli_plugins_imports_no_implementation():
    result = _imported_after(
        "import sys\nfrom audioembed.cli import main\n"
        "try:\n    main(['plugins'])\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
    )
    assert result["imported"] == []
    assert "mfcc" in result["stdout"] and "sound_events" in result["stdout"]


def test_every_builtin_spec_names_an_importable_callable():
    registry = get_registry()
    for table in (registry.upstreams, registry.tasks):
        for name, entry in table.items():
            if entry.distribution != "audioembed":
                continue
            target = getattr(entry.spec, "load", None) or entry.spec.build
            assert isinstance(target, LazyImport), name
            assert callable(target.resolve()), name


def test_loading_imports_the_implementation_then():
    result = _imported_after("from audioembed.registry import load_upstream\nload_upstream('mfcc')\n")
    assert "torch" in result["imported"] and "audioembed_plugins.dsp" in result["imported"]
    assert "audioembed_plugins.hf" not in result["imported"]  # only the module of the loaded upstream
    assert load_upstream("fbank").name == "fbank"


def _pair(*args):
    return args


def test_lazy_import_binds_leading_arguments_and_imports_on_call():
    lazy = LazyImport(f"{__name__}:_pair", "family")
    assert lazy("source") == ("family", "source")
    assert lazy == LazyImport(f"{__name__}:_pair", "family") and "family" in repr(lazy)


@pytest.mark.parametrize("target", ["no_colon", "pkg.mod:", ":attr", "pkg..mod:attr", "pkg.mod:a.b", "pkg-x:attr"])
def test_lazy_import_rejects_malformed_targets(target):
    with pytest.raises(ValueError, match="package.module:attribute"):
        LazyImport(target)


def test_lazy_import_failures_are_one_line_project_errors():
    with pytest.raises(PluginImportError, match="cannot import audioembed_no_such_module") as missing:
        LazyImport("audioembed_no_such_module.loaders:load")(None)
    assert isinstance(missing.value, AudioEmbedError) and "\n" not in str(missing.value)
    with pytest.raises(PluginImportError, match="has no 'load_nothing'"):
        LazyImport("audioembed.specs:load_nothing")(None)


def test_spec_plugin_answers_both_hooks():
    from audioembed import TaskSpec, UpstreamSpec

    up = UpstreamSpec("u", LazyImport(f"{__name__}:_pair"), "an upstream")
    task = TaskSpec("t", LazyImport(f"{__name__}:_pair"), "a task")
    plugin = SpecPlugin(upstreams=[up], tasks=[task])
    assert plugin.audioembed_upstreams() == [up] and plugin.audioembed_tasks() == [task]
    assert SpecPlugin(upstreams=[up]).audioembed_tasks() == []
