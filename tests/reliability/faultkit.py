"""Helpers of the fault-injection tests: final statuses, expected window counts, real pipes,
files made by ffmpeg, process memory."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

from streamtag.frontend import OnlineLogMel
from streamtag.model.inference import InferenceModel


def final_statuses(messages) -> dict:
    """stream id -> the body of its last status message (ended or failed)."""
    return {m.header.stream: m.body for m in messages if m.header.msg_type == "status"
            and m.body.state in ("ended", "failed")}


def states_of(messages, stream: str) -> list[str]:
    return [m.body.state for m in messages
            if m.header.stream == stream and m.header.msg_type == "status"]


def of_stream(messages, stream: str, msg_type: str | None = None) -> list:
    return [m for m in messages if m.header.stream == stream
            and (msg_type is None or m.header.msg_type == msg_type)]


_models: dict[str, InferenceModel] = {}


def load_model(path) -> InferenceModel:
    key = str(path)
    if key not in _models:
        _models[key] = InferenceModel.load(key, device="cpu")
    return _models[key]


def expected_windows(samples: int, model: InferenceModel, hop: int | None = None) -> int:
    """How many windows the engine scores for a stream of `samples` samples: one every hop
    frames once a window is full, one more aligned to the last frame when audio follows the
    last regular window, and one wrap-padded window for input shorter than a window."""
    frames = OnlineLogMel(model.frontend).num_frames_for(samples) if samples else 0
    window, hop = model.window, hop or model.hop
    if frames == 0:
        return 0
    if frames < window:
        return 1
    regular = (frames - window) // hop + 1
    return regular + (frames > window + (regular - 1) * hop)


def rss_kib() -> int:
    """This process's resident set size (VmRSS) in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


class PipeWriter:
    """A real OS pipe: a thread writes `data` into it in `block` byte pieces, then closes it.
    `reader` is the binary file object to hand to a pipe source."""

    def __init__(self, data: bytes, block: int = 65536) -> None:
        read_fd, write_fd = os.pipe()
        self.reader = os.fdopen(read_fd, "rb", buffering=0)
        self._writer = os.fdopen(write_fd, "wb", buffering=0)
        self._data, self._block = data, block
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            view = memoryview(self._data)
            for i in range(0, len(view), self._block):
                self._writer.write(view[i: i + self._block])
        except OSError as exc:  # the reader went away
            self.error = exc
        finally:
            self._writer.close()

    def close(self) -> None:
        self.reader.close()  # a blocked writer gets EPIPE and ends
        self._thread.join(5)
        assert not self._thread.is_alive(), "the pipe writer did not end"


def require_tools(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed; install with apt-get install "
                    f"{' '.join(missing)}")


def ffmpeg_encode(raw: np.ndarray, rate: int, path: Path, *args: str) -> Path:
    """Encodes float32 `raw` at `rate`, mono or (frames, channels), to `path` with the ffmpeg
    CLI and extra `args` (codec, sample format, channel mapping, output rate)."""
    require_tools("ffmpeg")
    raw = np.asarray(raw, dtype="<f4")
    channels = 1 if raw.ndim == 1 else raw.shape[1]
    done = subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-f", "f32le",
         "-ar", str(rate), "-ac", str(channels), "-i", "pipe:0", *args, str(path)],
        input=raw.tobytes(), capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return path


def port_is_free(endpoint: str) -> bool:
    """Whether a tcp://HOST:PORT endpoint could be bound now (nothing holds it)."""
    host, port = endpoint.removeprefix("tcp://").rsplit(":", 1)
    with socket.socket() as s:
        try:
            s.bind((host, int(port)))
        except OSError:
            return False
    return True
