"""Reference outputs of musicnn's own TensorFlow graphs, for tests/catalog/test_musicnn.py.

Run once, with TensorFlow 2, tf-keras, librosa and ``pip install --no-deps musicnn==0.1.0``
installed (TensorFlow 2 runs musicnn's TF1 graph through tf.compat.v1):

    TF_USE_LEGACY_KERAS=1 python tests/data/musicnn/make_reference.py

It writes, beside itself:

- ``inputs.npy``: float32 (windows, 96 mels, 187 frames), musicnn-preset log-mel windows of
  streamtag's deterministic music-like test signal (``streamtag/audio/testsignals.py``), computed
  with librosa as musicnn's extractor does but in float32 (its float16 cast overflows on loud
  audio);
- ``outputs.npz``: for each of musicnn's four models (``MTT_musicnn``, ``MSD_musicnn``,
  ``MTT_vgg``, ``MSD_vgg``), float32 (windows, 50) sigmoid probabilities of the graph built by
  musicnn's ``models.define_model`` with its checkpoint restored, in inference mode.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import librosa
import numpy as np
import tensorflow as tf

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
MODELS = ("MTT_musicnn", "MSD_musicnn", "MTT_vgg", "MSD_vgg")
N_FRAMES = 187
# (signal seed, first frame, gain): windows at different places of different pieces, one quiet.
WINDOWS = ((0, 0, 1.0), (1, 250, 1.0), (2, 100, 0.05))


def _testsignals():
    # Loaded by path: importing the streamtag package would need its compiled extension.
    spec = importlib.util.spec_from_file_location("testsignals",
                                                  ROOT / "streamtag" / "testsignals.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def musicnn_features(audio: np.ndarray) -> np.ndarray:
    """(frames, 96) log-mel as musicnn's extractor computes it, but in float32."""
    mel = librosa.feature.melspectrogram(y=audio, sr=16000, hop_length=256, n_fft=512,
                                         n_mels=96).T
    return np.log10(10000 * mel + 1).astype(np.float32)


def inputs() -> np.ndarray:
    music_like = _testsignals().music_like
    windows = []
    for seed, first, gain in WINDOWS:
        audio = gain * music_like(8.0, 16000, seed=seed)
        features = musicnn_features(audio)
        windows.append(features[first:first + N_FRAMES].T)  # (96, 187): streamtag's layout
    return np.stack(windows).astype(np.float32)


def musicnn_probabilities(package: Path, model: str, batch: np.ndarray) -> np.ndarray:
    """musicnn's graph for ``model`` on (windows, frames, 96) features: sigmoid outputs."""
    from musicnn import configuration, models

    labels = configuration.MTT_LABELS if model.startswith("MTT") else configuration.MSD_LABELS
    tf.compat.v1.reset_default_graph()
    with tf.name_scope("model"):
        x = tf.compat.v1.placeholder(tf.float32, [None, N_FRAMES, 96])
        is_training = tf.compat.v1.placeholder(tf.bool)
        logits = models.define_model(x, is_training, model, len(labels))[0]
        probabilities = tf.nn.sigmoid(logits)
    with tf.compat.v1.Session() as session:
        tf.compat.v1.train.Saver().restore(session, os.path.join(package, model, ""))
        return session.run(probabilities, feed_dict={x: batch, is_training: False})


def main() -> None:
    tf.compat.v1.disable_eager_execution()
    spec = importlib.util.find_spec("musicnn")
    package = Path(spec.submodule_search_locations[0])
    windows = inputs()
    np.save(HERE / "inputs.npy", windows)
    batch = windows.transpose(0, 2, 1)  # musicnn's (windows, frames, mels)
    outputs = {model: musicnn_probabilities(package, model, batch).astype(np.float32)
               for model in MODELS}
    np.savez(HERE / "outputs.npz", **outputs)
    for model, p in outputs.items():
        print(model, p.shape, "max", p.max(axis=1))


if __name__ == "__main__":
    main()
