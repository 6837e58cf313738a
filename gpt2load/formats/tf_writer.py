"""Writing TensorFlow checkpoints, with TensorFlow itself (imported only here, only when asked).

Reading needs no TensorFlow (see ``tf_bundle``), but writing one the way the
original GPT-2 release was written (a TF1 ``Saver``: index, data shard and a
``.meta`` graph) is TensorFlow's job; the result then loads in TensorFlow's
checkpoint reader and in the original ``gpt-2`` code.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..fileio import atomic_write_text

STATE_FILE = "checkpoint"


def import_tensorflow():
    """TensorFlow with its start-up chatter turned down; a clear error when it is missing.

    oneDNN only changes how TensorFlow computes, and we only save, so it is switched
    off, which also silences the notice it prints on import.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    try:
        import tensorflow as tf
    except ImportError:
        raise ValueError(
            "writing a TensorFlow checkpoint needs TensorFlow: pip install tensorflow-cpu "
            "(reading one does not)"
        ) from None
    return tf


def write_tf_checkpoint(prefix: Path, arrays: dict[str, np.ndarray]) -> list[Path]:
    """Save ``arrays`` under their names as ``PREFIX.index``/``.data-*``/``.meta``; return the files.

    Variables are initialised by feeding each array to its initializer, so the
    ``.meta`` graph holds no weight constants.
    """
    tf = import_tensorflow()
    graph = tf.Graph()
    with graph.as_default():
        variables = [
            tf.compat.v1.get_variable(
                name,
                shape=array.shape,
                dtype=tf.as_dtype(array.dtype),
                initializer=tf.compat.v1.zeros_initializer(),
            )
            for name, array in arrays.items()
        ]
        saver = tf.compat.v1.train.Saver(variables, write_version=tf.compat.v1.train.SaverDef.V2)
        with tf.compat.v1.Session(graph=graph) as session:
            for variable, array in zip(variables, arrays.values(), strict=True):
                session.run(variable.initializer, {variable.initializer.inputs[1]: array})
            saver.save(session, str(prefix), write_meta_graph=True, write_state=False)
    return sorted(p for p in prefix.parent.iterdir() if p.name.startswith(prefix.name + "."))


def write_state_file(folder: Path, prefix_name: str) -> Path:
    """The ``checkpoint`` file, with a relative path as in the original release (77 bytes)."""
    text = f'model_checkpoint_path: "{prefix_name}"\nall_model_checkpoint_paths: "{prefix_name}"\n'
    return atomic_write_text(folder / STATE_FILE, text)
