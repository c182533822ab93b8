"""What several test modules share: small real model files (TorchScript files written by
streamtag.modelfile), running the CLI, free ports, waiting, stopping processes, and the
protocol decoder's contract."""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from streamtag import modelfile
from streamtag.errors import ProtocolError
from streamtag.frontend import LogMelOptions, OnlineLogMel
from streamtag.protocol import Message, decode, encode

TAGS = ("calm", "loud", "bright", "dark")


class TinyTagger(nn.Module):
    """Conv over mel bands, mean over time, linear: enough to react to loudness and timbre."""

    def __init__(self, n_mels: int, n_tags: int, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv1d(n_mels, 8, kernel_size=3, padding=1)
        self.out = nn.Linear(8, n_tags)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x / 10.0)).mean(dim=2)
        return self.out(h)


def tiny_model_file(path: Path, *, seed: int = 0, preset: str = "musicnn", window: int = 32,
                    hop: int = 16, tags: tuple[str, ...] = TAGS, name: str = "tiny",
                    thresholds: tuple[float, ...] | None = None) -> Path:
    frontend = LogMelOptions.preset(preset)
    model = TinyTagger(frontend.n_mels, len(tags), seed)
    modelfile.save(model, path, {
        "name": name, "tags": list(tags), "input_kind": "logmel", "frontend": frontend,
        "window": window, "hop": hop,
        "thresholds": list(thresholds) if thresholds else [0.5] * len(tags),
        "architecture": {"name": "tiny"}})
    return path


def run_streamtag(*args: str, popen: bool = False, **kwargs):
    """Runs ``python -m streamtag ARGS`` as a user would, from outside the source tree: ``-m``
    puts the working directory first on sys.path, and the source tree's streamtag/ (which lacks
    the built extension in a non-editable install) would shadow the installed package."""
    command = [sys.executable, "-m", "streamtag", *args]
    kwargs.setdefault("cwd", tempfile.gettempdir())
    if popen:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, **kwargs)
    return subprocess.run(command, capture_output=True, text=True, **kwargs)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, what: str, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def stop_process(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


def decodes_or_refuses(frames) -> None:
    """The decoder's contract: it refuses with ProtocolError, or whatever it accepts survives
    a round trip unchanged."""
    try:
        message = decode(frames)
    except ProtocolError:
        return
    assert isinstance(message, Message)
    assert decode(encode(message)) == message


def feed(options: LogMelOptions, x: np.ndarray, sizes: list[int]) -> tuple[np.ndarray, int]:
    """``x`` through a fresh ``OnlineLogMel`` in chunks of ``sizes`` (the rest in one last
    chunk), popping after each: every frame, and the count of non-finite samples."""
    fe = OnlineLogMel(options)
    out, i = [], 0
    for size in sizes:
        fe.accept_waveform(x[i: i + size])
        out.append(fe.pop())
        i += size
    fe.accept_waveform(x[i:])
    fe.input_finished()
    out.append(fe.pop())
    return np.concatenate(out), fe.nonfinite_samples

