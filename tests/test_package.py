"""The package surface: lazy exports, entry points, and light start-up."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import gpt2load
from tests.conftest import REPO_ROOT


def test_every_export_resolves() -> None:
    assert sorted(gpt2load.__all__) == sorted(gpt2load._EXPORTS)
    for name in ("GPT", "GPTConfig", "KVCache", "generate", "get_tokenizer", "load", "preset"):
        assert callable(getattr(gpt2load, name)), name


def test_cli_help_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from gpt2load.cli import build_parser\n"
        "build_parser()\n"
        "assert 'torch' not in sys.modules, 'torch imported just to build the CLI'\n"
        "assert 'tensorflow' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True, timeout=60)


def test_python_dash_m_entry_point_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gpt2load", "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    assert "generate" in result.stdout


def _imports(path: Path) -> list[str]:
    """Every module a source file imports, as written (``from . import x`` excluded)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def test_finetune_uses_gpt2load_through_its_front_door_only() -> None:
    """finetune may import ``gpt2load`` (the names of its ``__init__``), never a module behind
    it; gpt2load never imports finetune nor names its files."""
    private = {
        f"{path.relative_to(REPO_ROOT)}: {name}"
        for path in sorted((REPO_ROOT / "finetune").rglob("*.py"))
        for name in _imports(path)
        if name.startswith("gpt2load.")
    }
    assert not private, f"finetune reaches behind gpt2load's front door: {sorted(private)}"
    backwards = {
        f"{path.relative_to(REPO_ROOT)}: {name}"
        for path in sorted((REPO_ROOT / "gpt2load").rglob("*.py"))
        for name in _imports(path)
        if name == "finetune" or name.startswith("finetune.")
    }
    assert not backwards, f"gpt2load imports finetune: {sorted(backwards)}"
    for path in sorted((REPO_ROOT / "gpt2load").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for name in ("trainer.pt", "config.toml", "metrics.jsonl"):
            assert name not in text, f"{path.relative_to(REPO_ROOT)} knows finetune's {name}"
