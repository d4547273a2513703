"""The layering rules of docs/architecture.md hold: import-linter contracts and no private imports.

The contracts live in pyproject.toml ([tool.importlinter]); running them here means the
README's test command checks them too.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: repository folder -> the package name it is installed under (pyproject package-dir)
PACKAGES = {"audioembed": "audioembed", "plugins": "audioembed_plugins", "downstreams": "audioembed_downstreams"}
#: folders whose Python files must not take private names of other modules
CHECKED_FOLDERS = ("audioembed", "plugins", "downstreams", "bench", "recipes", "examples")


def _lint_imports(cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    exe = shutil.which("lint-imports", path=os.path.dirname(sys.executable)) or shutil.which("lint-imports")
    if exe is None:
        pytest.fail("lint-imports is not installed: pip install -e '.[dev]' (import-linter)")
    return subprocess.run(
        [exe, "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )


def test_import_contracts_hold():
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    "module, line, contract",
    [
        ("audioembed/audio.py", "import audioembed_plugins.hf", "The core never imports the built-in plugins"),
        ("audioembed/store.py", "import audioembed.cli", "Only the command-line entry imports the CLI"),
        ("downstreams/common.py", "import audioembed.distill.trainer", "Downstream evaluation never imports training"),
        ("audioembed/distill/merge.py", "import audioembed.offline.pipeline", "only the CLI imports it"),
    ],
)
def test_import_contracts_catch_a_violation(tmp_path, module, line, contract):
    """Each contract fails on a copy of the code with one forbidden import added."""
    for folder, package in PACKAGES.items():
        shutil.copytree(ROOT / folder, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__", "pretrained"))
    folder, rest = module.split("/", 1)
    target = tmp_path / PACKAGES[folder] / rest
    target.write_text(target.read_text(encoding="utf-8") + f"\n{line}\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = _lint_imports(tmp_path, env)
    assert result.returncode != 0, result.stdout
    broken = [ln for ln in result.stdout.splitlines() if ln.rstrip().endswith("BROKEN")]
    assert any(contract in ln for ln in broken) or contract in result.stdout.split("BROKEN")[0], result.stdout


OWN = ("audioembed", "audioembed_plugins", "audioembed_downstreams")


def _private_imports(path: Path) -> list[str]:
    """``from X import _name``, and ``mod._name`` where ``mod`` is one of our modules."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    where = path.relative_to(ROOT)
    found = []
    own_aliases = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module != "__future__":
            ours = node.level > 0 or (node.module or "").split(".")[0] in OWN
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"{where}:{node.lineno}: from {'.' * node.level}{node.module or ''} import {alias.name}")
                elif ours:
                    own_aliases.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in OWN:
                    own_aliases.add(alias.asname or alias.name.split(".")[0])
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and isinstance(node.value, ast.Name)
            and node.value.id in own_aliases
        ):
            found.append(f"{where}:{node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_no_private_names_cross_modules():
    """A private name (``_x``) is the module's own business: other modules use public APIs."""
    problems = []
    for folder in CHECKED_FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if (ROOT / "bench" / "out") not in path.parents:  # generated benchmark data (git-ignored), not our code
                problems += _private_imports(path)
    assert not problems, "private names used across modules:\n" + "\n".join(problems)
