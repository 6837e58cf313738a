#!/usr/bin/env python
"""Fine-tune GPT-2 on Tiny Shakespeare: the same as `finetune shakespeare [flags]`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from finetune.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["shakespeare", *sys.argv[1:]]))
