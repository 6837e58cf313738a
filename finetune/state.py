"""Moved into :mod:`finetune.checkpoint`; the name stays for the tests that import it."""

from .checkpoint import TRAINER_FILE, read_trainer_state  # noqa: F401
