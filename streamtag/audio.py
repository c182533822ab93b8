"""Decoding audio files: PyAV decodes, channels are averaged to mono, soxr resamples.

Sources stream with ``iter_decoded``; offline users (features, the trainer's cache) call
``load_audio`` for a whole file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np


class AudioDecodeError(RuntimeError):
    """A file that cannot be opened or decoded; the message names the file and the cause."""


def _mono(frame) -> np.ndarray:
    data = frame.to_ndarray()
    fmt = frame.format
    if not fmt.is_planar:  # packed: (1, samples * channels), interleaved
        data = data.reshape(-1, len(frame.layout.channels)).T
    if np.issubdtype(data.dtype, np.unsignedinteger):  # u8 PCM: silence is 128
        middle = float(np.iinfo(data.dtype).max + 1) / 2
        data = (data.astype(np.float32) - middle) / middle
    elif np.issubdtype(data.dtype, np.integer):
        data = data.astype(np.float32) / float(np.iinfo(data.dtype).max + 1)
    return data.astype(np.float32, copy=False).mean(axis=0)


def iter_decoded(path: str | Path) -> Iterator[tuple[np.ndarray, int]]:
    """Yields (mono float32 chunk, sample rate) as PyAV decodes the first audio stream."""
    import av

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as exc:
        raise AudioDecodeError(f"cannot open {path}: {exc}") from exc
    with container:
        if not container.streams.audio:
            raise AudioDecodeError(f"{path} has no audio stream")
        stream = container.streams.audio[0]
        try:
            for frame in container.decode(stream):
                yield _mono(frame), int(frame.sample_rate)
        except av.error.FFmpegError as exc:
            raise AudioDecodeError(f"cannot decode {path}: {exc}") from exc


def load_audio(path: str | Path, sample_rate: float | None = None) -> tuple[np.ndarray, float]:
    """The whole file as mono float32, resampled to ``sample_rate`` when given (soxr)."""
    chunks, rate = [], None
    for chunk, chunk_rate in iter_decoded(path):
        if rate is not None and chunk_rate != rate:
            raise AudioDecodeError(f"{path}: the sample rate changes mid-stream ({rate} -> "
                                   f"{chunk_rate}); convert the file to one rate first")
        rate = chunk_rate
        chunks.append(chunk)
    if rate is None:
        raise AudioDecodeError(f"{path} contains no audio samples")
    audio = np.concatenate(chunks)
    if sample_rate is not None and sample_rate != rate:
        import soxr

        audio = soxr.resample(audio, rate, sample_rate, quality="HQ").astype(np.float32)
        rate = sample_rate
    return audio, float(rate)


def write_audio(path: str | Path, samples: np.ndarray, sample_rate: int,
                codec: str | None = None) -> None:
    """Encodes mono float samples to a file with PyAV (codec from the suffix by default)."""
    import av

    path = Path(path)
    codec = codec or {".mp3": "libmp3lame", ".flac": "flac", ".wav": "pcm_s16le",
                      ".ogg": "libvorbis", ".m4a": "aac"}.get(path.suffix.lower())
    if codec is None:
        raise ValueError(f"no default codec for {path.suffix!r}; pass codec=")
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=sample_rate, layout="mono")
        fmt = stream.codec_context.format.name if stream.codec_context.format else "s16"
        dtype, scale = {"s16": (np.int16, 32767.0), "s32": (np.int32, 2147483647.0),
                        "flt": (np.float32, 1.0), "dbl": (np.float64, 1.0)}[fmt.rstrip("p")]
        block = stream.codec_context.frame_size or 4096
        x = np.clip(np.asarray(samples, dtype=np.float64), -1.0, 1.0)
        for i in range(0, len(x), block):
            part = (x[i: i + block] * scale).astype(dtype)[None, :]
            frame = av.AudioFrame.from_ndarray(part, format=fmt, layout="mono")
            frame.sample_rate = sample_rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
