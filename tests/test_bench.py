"""The benchmark script runs end to end (the tiny model, fewest repeats), so it cannot rot.

Its timings are not checked here (a timed test on a shared machine proves nothing); what is
checked is that every row ran both sides, produced finite positive figures and landed in
bench.json. The tiny model is the script's smoke mode: one repeat, no warm-up, fewer tokens, and
each side's child program run inside the benchmark's process rather than a new interpreter.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from .conftest import SHAKESPEARE_TXT, TOKENIZER_DIR

REPO_ROOT = Path(__file__).resolve().parent.parent


def _script(name: str):
    """A module of scripts/ (bench.py and the bench_*.py it imports)."""
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(REPO_ROOT / "scripts"))


@pytest.mark.slow
def test_bench_quick_tiny_runs_every_row(tmp_path: Path) -> None:
    # Looked up, not imported: importing TensorFlow here would cost seconds for nothing.
    if importlib.util.find_spec("transformers") is None:
        pytest.skip("the benchmark's peer (requirements-dev.txt)")
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("the benchmark writes an OpenAI TF checkpoint")
    bench = _script("bench")
    # Two benchmark processes at once, one thread each: the TensorFlow row (with a light one, to
    # even them out) and all the others.
    first = ["load_tf", "prepare"]
    groups = [first, [key for key in bench.ROWS if key not in first]]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    procs = []
    for i, rows in enumerate(groups):
        command = [sys.executable, str(REPO_ROOT / "scripts" / "bench.py"), "--quick"]
        command += ["--model", "tiny", "--only", *rows, "--out", str(tmp_path / f"{i}.json")]
        command += ["--cache", str(tmp_path / "cache")]
        with open(tmp_path / f"{i}.stdout", "w") as out, open(tmp_path / f"{i}.stderr", "w") as err:
            procs.append(subprocess.Popen(command, stdout=out, stderr=err, text=True, env=env))
    ran, skipped = {}, {}
    for i, proc in enumerate(procs):
        returncode = proc.wait(timeout=900)
        stdout, stderr = ((tmp_path / f"{i}.{name}").read_text() for name in ("stdout", "stderr"))
        # 1 means a target was missed, which a tiny model's ratios say nothing about.
        assert returncode in (0, 1), stderr[-3000:]
        report = json.loads((tmp_path / f"{i}.json").read_text())
        assert "| row |" in stdout and report["machine"] in stdout
        ran |= {row["key"]: row for row in report["rows"]}
        skipped |= report["skipped"]
    needs_shared_data = {"cold_start", "prepare"}
    have_shared = (TOKENIZER_DIR / "encoder.json").is_file() and SHAKESPEARE_TXT.is_file()
    gpu_only = {"train_mfu"}  # this test runs on the CPU
    expected = set(bench.ROWS) - gpu_only
    if not have_shared:
        expected -= needs_shared_data
    assert "--device cuda" in skipped["train_mfu"]
    assert expected <= ran.keys(), f"rows missing: {expected - ran.keys()}; {skipped}"
    assert set(ran) | set(skipped) == set(bench.ROWS)
    for key, row in ran.items():
        for value in (row["ours_value"], row["peer_value"], row["ratio"]):
            assert math.isfinite(value) and value > 0, (key, row)
        assert row["ok"] == (row["ratio"] >= row["target"] and row["extra_ok"])
    assert 0 < ran["load_safetensors"]["notes"]["ours_peak_rss_over_weights"] < 10


def test_spawn_runs_a_child_in_a_new_interpreter_or_in_process(monkeypatch) -> None:
    """The real runs' path (a new interpreter, which the tiny smoke test above never takes)
    and the smoke test's (the same code in this process) give a child the same view."""
    spawn = _script("bench_kit").spawn
    monkeypatch.setattr(os, "environ", dict(os.environ))  # the in-process path sets variables
    code = "import os, sys\nprint(sys.argv[1:], os.environ['HF_HUB_OFFLINE'])"
    for smoke in (False, True):
        args = SimpleNamespace(smoke=smoke)
        assert spawn(args, "-c", code, "a", "b") == "['a', 'b'] 1\n"
        assert "generate" in spawn(args, "-m", "gpt2load", "--help")
    with pytest.raises(RuntimeError, match="failed"):
        spawn(SimpleNamespace(smoke=False), "-c", "raise SystemExit(3)")
