"""Windows of tracks: where training draws them, where evaluation places them, and the
per-track probabilities a model gives over them (``predict``).

Each epoch every training track gives ``windows_per_track`` windows, at random positions or its
centre (``training_windows``); a track shorter than the window is repeated (``augment.wrap_pad``)
or padded with silence (``TrackData.window``). A track is scored by the mean of the model's
probabilities over evenly spaced windows covering it (at most ``eval.eval_hop`` apart) or by
its centre window (``evaluation_starts``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import torch

from streamtag.train.data import TrackData
from streamtag.train.progress import progress

__all__ = ["WindowDataset", "evaluation_batches", "evaluation_starts", "predict",
           "training_windows"]


def evaluation_starts(total: int, window: int, hop: int, mode: str = "average") -> np.ndarray:
    """Start positions of the windows that score a track of ``total`` frames: its centre window
    (``"centre"``), or evenly spaced windows from its start to its end at most ``hop`` apart
    (``"average"``); one window at 0 when the track is not longer than the window."""
    if total <= window:
        return np.zeros(1, dtype=np.int64)
    if mode == "centre":
        return np.array([(total - window) // 2], dtype=np.int64)
    count = math.ceil((total - window) / hop) + 1
    return np.round(np.linspace(0, total - window, count)).astype(np.int64)


def training_windows(lengths: np.ndarray, window: int, per_track: int, position: str,
                     rng: np.random.Generator) -> np.ndarray:
    """One epoch's ``(track index, start)`` pairs in a random order: ``per_track`` windows per
    track, at uniformly random starts (``"random"``) or the centre."""
    tracks = np.repeat(np.arange(len(lengths)), per_track)
    room = np.maximum(lengths[tracks] - window, 0)
    if position == "centre":
        starts = room // 2
    else:
        starts = rng.integers(0, room + 1)
    order = rng.permutation(len(tracks))
    return np.stack([tracks[order], starts[order]], axis=1)


class WindowDataset(torch.utils.data.Dataset):
    """The windows ``items`` (``(track index, start)`` pairs) of ``split``: each item is the
    window, the track's labels and, with high-level track features, the track's features."""

    def __init__(self, data: TrackData, split: str, items: np.ndarray, window: int) -> None:
        self.data, self.split, self.items, self.window = data, split, items, window

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[np.ndarray, ...]:
        track, start = (int(v) for v in self.items[i])
        x = self.data.window(self.data.tracks[self.split][track].id, self.window, start,
                             int(self.data.lengths[self.split][track]))
        if self.data.features is not None:  # the track's high-level features
            return x, self.data.labels[self.split][track], self.data.features[self.split][track]
        return x, self.data.labels[self.split][track]


def predict(model: Callable[[torch.Tensor], torch.Tensor], data: TrackData, split: str,
            window: int, hop: int, *, mode: str = "average", batch_size: int = 32,
            device: torch.device | str = "cpu", outputs: str = "logits",
            bf16: bool = False) -> np.ndarray:
    """Per-track probabilities ``(tracks, tags)`` of ``split``: the mean over the track's
    evaluation windows (``evaluation_starts``) of ``sigmoid(model(x))`` (``outputs="logits"``)
    or of ``model(x)`` (``"probabilities"``: a model file's module). With high-level track
    features (``data.features``) the model is called as ``model(x, features)``."""
    device = torch.device(device)
    tracks = data.tracks[split]
    lengths = data.lengths[split]
    sums: np.ndarray | None = None
    counts = np.zeros(len(tracks))
    pending: list[tuple[int, np.ndarray]] = []

    def flush() -> None:
        nonlocal sums
        x = torch.from_numpy(np.stack([a for _, a in pending])).to(device)
        owners = np.array([i for i, _ in pending])
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16,
                                                     enabled=bf16 and device.type == "cuda"):
            if data.features is None:
                out = model(x)
            else:
                out = model(x, torch.from_numpy(data.features[split][owners]).to(device))
        out = out.float()
        p = (torch.sigmoid(out) if outputs == "logits" else out).cpu().numpy().astype(np.float64)
        if sums is None:
            sums = np.zeros((len(tracks), p.shape[1]))
        np.add.at(sums, owners, p)
        np.add.at(counts, owners, 1)
        pending.clear()

    bar = progress(total=len(tracks), unit="track", desc=f"scoring {split}")
    with bar:
        for i, track in enumerate(tracks):
            total = int(lengths[i])
            for start in evaluation_starts(total, window, hop, mode):
                pending.append((i, data.window(track.id, window, int(start), total)))
                if len(pending) >= batch_size:
                    flush()
            bar.update(1)
        if pending:
            flush()
    assert sums is not None  # every split has at least one track
    return sums / counts[:, None]


def evaluation_batches(data: TrackData, split: str, window: int, hop: int, mode: str,
                       batch_size: int) -> Iterator[np.ndarray]:
    """The evaluation windows of every track of ``split`` (``evaluation_starts``), in track
    order, stacked ``batch_size`` at a time."""
    pending: list[np.ndarray] = []
    for track, total in zip(data.tracks[split], data.lengths[split], strict=True):
        for start in evaluation_starts(int(total), window, hop, mode):
            pending.append(data.window(track.id, window, int(start), int(total)))
            if len(pending) >= batch_size:
                yield np.stack(pending)
                pending = []
    if pending:
        yield np.stack(pending)
