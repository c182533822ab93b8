"""Decoding audio files: PyAV decodes, channels are averaged to mono, soxr resamples.

Sources stream with ``iter_decoded``; offline users (features, the trainer's cache) call
``load_audio`` for a whole file.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np


class AudioDecodeError(RuntimeError):
    """A file that cannot be opened or decoded; the message names the file and the cause."""


def _mono(frame) -> np.ndarray:
    fmt = frame.format
    if fmt.name == "fltp":  # planar float, as MP3, AAC and Vorbis decode: the planes as they are
        planes = [np.frombuffer(plane, np.float32, frame.samples) for plane in frame.planes]
        if len(planes) == 1:
            return planes[0]
        total = planes[0] + planes[1]
        for plane in planes[2:]:
            total += plane
        return total / np.float32(len(planes))  # what mean(axis=0) gives, without the copies
    data = frame.to_ndarray()
    if not fmt.is_planar:  # packed: (1, samples * channels), interleaved
        data = data.reshape(-1, len(frame.layout.channels)).T
    if np.issubdtype(data.dtype, np.unsignedinteger):  # u8 PCM: silence is 128
        middle = float(np.iinfo(data.dtype).max + 1) / 2
        data = (data.astype(np.float32) - middle) / middle
    elif np.issubdtype(data.dtype, np.integer):
        data = data.astype(np.float32) / float(np.iinfo(data.dtype).max + 1)
    return data.astype(np.float32, copy=False).mean(axis=0)


def iter_decoded(path: str | Path, block_s: float = 0.0) -> Iterator[tuple[np.ndarray, int]]:
    """Yields (mono float32 chunk, sample rate) as PyAV decodes the first audio stream,
    joined into blocks of at least ``block_s`` seconds (``joined_blocks``)."""
    import av

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as exc:
        raise AudioDecodeError(f"cannot open {path}: {exc}") from exc
    with container:
        if not container.streams.audio:
            raise AudioDecodeError(f"{path} has no audio stream")
        stream = container.streams.audio[0]

        def frames() -> Iterator[tuple[np.ndarray, int]]:
            try:
                for frame in container.decode(stream):
                    yield _mono(frame), int(frame.sample_rate)
            except av.error.FFmpegError as exc:
                raise AudioDecodeError(f"cannot decode {path}: {exc}") from exc

        yield from joined_blocks(frames(), block_s)


def joined_blocks(pieces: Iterable[tuple[np.ndarray, int]],
                  block_s: float) -> Iterator[tuple[np.ndarray, int]]:
    """(samples, sample rate) pieces, such as decoder frames, joined along their first axis
    into blocks of at least ``block_s`` seconds: an MP3 frame is 26 ms, and each chunk costs
    its consumer a pass through Python, so a fast reader takes them in blocks. A change of
    rate or of channels, the end and an error (raised again after) hand on what is held."""
    held: list[np.ndarray] = []
    held_samples, held_rate = 0, 0
    try:
        for samples, rate in pieces:
            if held and (rate != held_rate or samples.shape[1:] != held[0].shape[1:]):
                yield _joined(held), held_rate
                held, held_samples = [], 0
            held.append(samples)
            held_samples += len(samples)
            held_rate = rate
            if held_samples >= block_s * rate:
                yield _joined(held), rate
                held, held_samples = [], 0
    except Exception:
        if held:  # what decoded before the error is still delivered
            yield _joined(held), held_rate
        raise
    if held:
        yield _joined(held), held_rate


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


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
