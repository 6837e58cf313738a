"""The benchmark script runs end to end (a tiny model, fewest repeats), so it cannot rot.

Its timings are not checked here (a timed test on a shared machine proves
nothing); what is checked is that every row ran both sides, produced finite
positive figures and landed in bench.json.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import SHAKESPEARE_TXT, TOKENIZER_DIR

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_bench_quick_tiny_runs_every_row(tmp_path: Path) -> None:
    pytest.importorskip("transformers", reason="the benchmark's peer (requirements-dev.txt)")
    pytest.importorskip("tensorflow", reason="the benchmark writes an OpenAI TF checkpoint")
    out = tmp_path / "bench.json"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "bench.py"), "--quick", "--model", "tiny"]
        + ["--out", str(out), "--cache", str(tmp_path / "cache")],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    # 1 means a target was missed, which a tiny model's ratios say nothing about.
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    report = json.loads(out.read_text())
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    try:
        import bench
    finally:
        sys.path.remove(str(REPO_ROOT / "scripts"))
    ran = {row["key"]: row for row in report["rows"]}
    needs_shared_data = {"cold_start", "prepare"}
    have_shared = (TOKENIZER_DIR / "encoder.json").is_file() and SHAKESPEARE_TXT.is_file()
    gpu_only = {"train_mfu"}  # this test runs on the CPU
    expected = set(bench.ROWS) - gpu_only
    if not have_shared:
        expected -= needs_shared_data
    assert "--device cuda" in report["skipped"]["train_mfu"]
    assert expected <= ran.keys(), f"rows missing: {expected - ran.keys()}; {report['skipped']}"
    assert set(ran) | set(report["skipped"]) == set(bench.ROWS)
    for key, row in ran.items():
        for value in (row["ours_value"], row["peer_value"], row["ratio"]):
            assert math.isfinite(value) and value > 0, (key, row)
        assert row["ok"] == (row["ratio"] >= row["target"] and row["extra_ok"])
    assert "| row |" in proc.stdout and report["machine"] in proc.stdout
    assert 0 < ran["load_safetensors"]["notes"]["ours_peak_rss_over_weights"] < 10
