"""The one error type a checkpoint problem raises.

It subclasses ``ValueError`` so the CLI reports it as a user error (one line,
exit code 2) and callers can catch every format problem in one place.
"""

from __future__ import annotations


class CheckpointError(ValueError):
    """A file or folder that cannot be read as a GPT-2 checkpoint; the message says why."""
