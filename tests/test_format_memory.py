"""Loading is lean: peak resident memory stays well under 1.5x the fp32 weight bytes.

Measured in a fresh process: resident memory after the imports is the baseline,
the kernel's high-water mark is reset, and the peak during the load is compared
with the model's fp32 parameter bytes. The three layouts' processes run at once
(each one's memory is its own), which spares two waits for the imports.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gpt2load.config import GPTConfig
from tests.checkpoint_factory import random_hf_state_dict, write_every_layout
from tests.conftest import REPO_ROOT

# GPT-2's vocabulary and context with a narrower, shallower body: ~39M parameters, fast to write.
CONFIG = GPTConfig(n_layer=4, n_head=8, n_embd=512)
LIMIT = 1.5

_MEASURE = r"""
import json, sys
def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))
from gpt2load.formats import load_checkpoint
base = status("VmRSS:")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
model = load_checkpoint(sys.argv[1])
peak = status("VmHWM:") - base
weight_bytes = sum(p.numel() for p in model.parameters()) * 4
print(json.dumps({"ratio": peak / weight_bytes, "weight_bytes": weight_bytes}))
"""


LAYOUTS = ["hf_hub", "hf_bin", "openai"]


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Each layout's measurement, from its own process."""
    root = tmp_path_factory.mktemp("memory")
    checkpoints = write_every_layout(root, CONFIG, random_hf_state_dict(CONFIG), only=LAYOUTS)
    procs = {
        layout: subprocess.Popen(
            [sys.executable, "-c", _MEASURE, str(checkpoints[layout])],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO_ROOT,
        )
        for layout in LAYOUTS
    }
    results = {}
    for layout, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{layout}: {err}"
        results[layout] = json.loads(out.strip().splitlines()[-1])
    return results


@pytest.mark.slow
@pytest.mark.skipif(
    not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc to measure RSS"
)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_peak_rss_of_a_load(measured: dict[str, dict], layout: str) -> None:
    assert measured[layout]["weight_bytes"] > 150_000_000
    assert measured[layout]["ratio"] < LIMIT, (
        f"{layout}: peak RSS {measured[layout]['ratio']:.2f}x the fp32 weights"
    )
