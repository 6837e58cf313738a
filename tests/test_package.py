"""The package surface: lazy exports, entry points, and light start-up."""

from __future__ import annotations

import subprocess
import sys

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
