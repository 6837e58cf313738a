#!/usr/bin/env python
"""Download GPT-2 weights: the same as ``gpt2load download``, runnable from a checkout.

Example: ``python scripts/download_weights.py gpt2 --source openai`` (``--help`` for the rest).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpt2load.cli import main  # noqa: E402 - needs the path above

if __name__ == "__main__":
    sys.exit(main(["download", *sys.argv[1:]]))
