"""Tiny TensorFlow checkpoints of known contents, for tests/catalog/test_tfcheckpoint.py.

Run once with TensorFlow 2 installed:

    python tests/data/tfcheckpoint/make_checkpoints.py

It writes, beside itself:

- ``v1/ckpt.index`` + ``v1/ckpt.data-00000-of-00001``: TF1 ``Saver`` (graph mode, plain variable
  names as musicnn's checkpoints have) holding ``tensors()`` below and a bfloat16 variable;
- ``sharded/ckpt.index`` + ``sharded/ckpt.data-0000?-of-00002``: the same tensors saved by a
  sharded ``Saver`` from two devices, so in two data files;
- ``expected.npz``: the arrays, by variable name.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import tensorflow as tf

HERE = Path(__file__).resolve().parent


def tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(12)
    return {
        "dense/kernel": rng.standard_normal((7, 5)).astype(np.float32),
        "dense/bias": rng.standard_normal(5).astype(np.float32),
        "conv/kernel": rng.standard_normal((3, 3, 2, 4)).astype(np.float32),
        "scalar": np.array(3.25, dtype=np.float32),
        "empty": np.zeros((0, 3), dtype=np.float32),
        "float64": rng.standard_normal((2, 3)),
        "float16": rng.standard_normal(6).astype(np.float16),
        "int32": rng.integers(-2**31, 2**31, size=(4,), dtype=np.int32),
        "int64": rng.integers(-2**63, 2**63, size=(2, 2), dtype=np.int64),
        "int8": rng.integers(-128, 128, size=5, dtype=np.int8),
        "uint8": rng.integers(0, 256, size=5, dtype=np.uint8),
        "bool": rng.random(5) > 0.5,
        "complex64": (rng.standard_normal(3) + 1j * rng.standard_normal(3)).astype(np.complex64),
        # A long name, sharing a prefix with the next: keys are prefix-compressed in the index.
        "a/very/long/name/that/shares/a/prefix/with/the/next/one/kernel":
            rng.standard_normal(3).astype(np.float32),
        "a/very/long/name/that/shares/a/prefix/with/the/next/one/kernel_2":
            rng.standard_normal(3).astype(np.float32),
    }


def write_v1(values: dict[str, np.ndarray]) -> None:
    folder = HERE / "v1"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    graph = tf.Graph()
    with graph.as_default():
        for name, value in values.items():
            tf.compat.v1.get_variable(name, initializer=tf.constant(value))
        # bfloat16 has no numpy dtype: the reader must refuse it by name.
        tf.compat.v1.get_variable("bfloat16", initializer=tf.constant([1.5, -2.0],
                                                                      dtype=tf.bfloat16))
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            saver.save(session, str(folder / "ckpt"), write_meta_graph=False)
    (folder / "checkpoint").unlink()  # the "latest checkpoint" pointer: not part of the format


def write_sharded(values: dict[str, np.ndarray]) -> None:
    folder = HERE / "sharded"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    graph = tf.Graph()
    with graph.as_default():
        # A sharded Saver writes one data file per device holding variables.
        for i, (name, value) in enumerate(values.items()):
            with tf.device(f"/cpu:{i % 2}"):
                tf.compat.v1.get_variable(name, initializer=tf.constant(value))
        saver = tf.compat.v1.train.Saver(sharded=True)
        config = tf.compat.v1.ConfigProto(device_count={"CPU": 2})
        with tf.compat.v1.Session(graph=graph, config=config) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            saver.save(session, str(folder / "ckpt"), write_meta_graph=False)
    (folder / "checkpoint").unlink()


def main() -> None:
    values = tensors()
    write_v1(values)
    write_sharded(values)
    np.savez(HERE / "expected.npz", **values)
    for path in sorted(HERE.rglob("ckpt*")):
        print(path.relative_to(HERE), path.stat().st_size)


if __name__ == "__main__":
    main()
