"""Decoding audio files: PyAV decodes, channels are averaged to mono, soxr resamples.

Sources stream with ``mono_blocks`` (the file source over ``first_audio_stream``, as
``iter_decoded`` does); offline users (features, the trainer's cache) call ``load_audio`` for
a whole file.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np


class AudioDecodeError(RuntimeError):
    """A file that cannot be opened or decoded; the message names the file and the cause."""


# The sample rates audio may declare: a header of 1 Hz made every byte a second of audio (a
# resampler of hundreds of MB and thousands of windows a second from one hostile station), one
# of 2 GHz a resampler that never caught up. The loudness meter takes the same top.
MIN_SAMPLE_RATE = 1000
MAX_SAMPLE_RATE = 768000


# Sees each block's channels before they are averaged: (channels, frames) float32 samples, the
# sample rate, the channels' names (FFmpeg's: FL, FR, LFE, ...). A loudness meter measures there.
ChannelsSeen = Callable[[np.ndarray, int, tuple[str, ...]], None]


# FFmpeg's frame has 8 data pointers. PyAV counts a planar frame's planes by reading them up to
# the first NULL, which past 7 channels reads beyond them (8 channels: 9 "planes", the last a
# wild pointer, SIGSEGV; more: whatever the heap holds): such a frame's planes and ndarray are
# never touched, it is converted to packed samples by FFmpeg first (``_Packer``).
PLANE_POINTERS = 8
# Channels read: what the loudness meter measures too. A 7.1 stream is 8; Opus and Vorbis allow
# 255, which no station sends (each decoded channel costs the station's decoding time).
MAX_CHANNELS = 64
# Sample formats PyAV turns into numpy arrays itself; others (64-bit integers) are converted.
NUMPY_FORMATS = frozenset({"u8", "u8p", "s16", "s16p", "s32", "s32p", "flt", "fltp", "dbl",
                           "dblp"})


def _channel_names(frame) -> tuple[str, ...]:
    return tuple(channel.name for channel in frame.layout.channels)


def frame_channels(frame) -> int:
    """A decoded frame's channel count, from its layout (never from its planes); AudioDecodeError
    for a count streamtag does not read."""
    channels = frame.layout.nb_channels
    if not 1 <= channels <= MAX_CHANNELS:
        raise AudioDecodeError(
            f"the audio has {channels} channels; streamtag reads 1 to {MAX_CHANNELS} (mix it "
            "down first, for example ffmpeg -ac 2)")
    return channels


class _Packer:
    """Frames whose planes PyAV cannot read safely (planar with PLANE_POINTERS channels or
    more) or whose format it cannot give as an array (s64), as packed float32 samples: FFmpeg
    converts them (one converter for a run of frames of one format, layout and rate)."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._resampler: Any = None

    def samples(self, frame, channels: int) -> np.ndarray:
        """(channels, frames) float32."""
        import av

        key = (frame.format.name, frame.layout.name, channels, frame.sample_rate)
        if key != self._key or self._resampler is None:
            self._key = key
            self._resampler = av.AudioResampler(format="flt", layout=frame.layout,
                                                rate=frame.sample_rate)
        parts = [out.to_ndarray() for out in self._resampler.resample(frame)]
        if not parts:
            return np.zeros((channels, 0), np.float32)
        data = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
        return data.reshape(-1, channels).T


def _mono(frame, seen: ChannelsSeen | None, packer: _Packer) -> np.ndarray:
    """Any decoded frame as mono float32: integer PCM scaled to [-1, 1), channels averaged;
    ``seen`` gets the channels first; ``packer`` converts what PyAV cannot read safely."""
    channels = frame_channels(frame)
    if frame.format.name not in NUMPY_FORMATS or (frame.format.is_planar
                                                  and channels >= PLANE_POINTERS):
        data = packer.samples(frame, channels)
    else:
        data = frame.to_ndarray()
        if not frame.format.is_planar:  # packed: (1, samples * channels), interleaved
            data = data.reshape(-1, channels).T
    if np.issubdtype(data.dtype, np.unsignedinteger):  # u8 PCM: silence is 128
        middle = float(np.iinfo(data.dtype).max + 1) / 2
        data = (data.astype(np.float32) - middle) / middle
    elif np.issubdtype(data.dtype, np.integer):
        data = data.astype(np.float32) / float(np.iinfo(data.dtype).max + 1)
    data = data.astype(np.float32, copy=False)
    if seen is not None:
        seen(np.ascontiguousarray(data), frame.sample_rate, _channel_names(frame))
    return mix_down(list(data))


def mix_down(planes: Sequence[np.ndarray]) -> np.ndarray:
    """The mean of equal-length float32 channels, added in order and divided once: bitwise
    what numpy's mean over up to 7 channels gives, without its cost on interleaved samples (a
    mean over the channel axis of (frames, 2) float32 takes 18 times as long) or the copies of
    stacking; one channel is returned as it is. Channels whose sum overflows float32 (a float
    stream of ±3e38) are averaged in float64: their mean is finite, as theirs are."""
    if len(planes) == 1:
        return planes[0]
    with np.errstate(over="ignore", invalid="ignore"):
        total = planes[0] + planes[1]
        for plane in planes[2:]:
            total += plane
        mean = total / np.float32(len(planes))
    if np.isinf(mean).any():  # finite channels whose sum overflowed (±3e38 each): in float64
        mean = np.stack(planes).astype(np.float64).mean(axis=0).astype(np.float32)
    return mean


def open_failure(exc: BaseException) -> str:
    """Why ``av.open`` failed, in words: FFmpeg's reason without its error number (``[Errno
    1094995529] ...`` tells a user nothing), and for data FFmpeg cannot place, what to check."""
    import av

    reason = getattr(exc, "strerror", None) or str(exc)
    if isinstance(exc, av.error.InvalidDataError):
        return (f"FFmpeg does not recognise it as audio ({reason}); check that it is an audio "
                "file and that it is whole")
    return reason


@contextlib.contextmanager
def first_audio_stream(path: str | Path, container=None) -> Iterator[tuple[Any, Any]]:
    """(container, its first audio stream) of ``path``, closed after the block, where PyAV's
    errors in the block are AudioDecodeError naming the file. ``container``: ``path`` as the
    caller already opened it (``av.open``)."""
    import av

    if container is None:
        try:
            container = av.open(str(path))
        except (av.error.FFmpegError, OSError) as exc:
            raise AudioDecodeError(f"cannot open {path}: {open_failure(exc)}") from exc
    with container:
        if not container.streams.audio:
            raise AudioDecodeError(f"{path} has no audio stream")
        try:
            yield container, container.streams.audio[0]
        except av.error.FFmpegError as exc:
            raise AudioDecodeError(f"cannot decode {path}: {exc}") from exc


def iter_decoded(path: str | Path, block_s: float = 0.0,
                 container=None) -> Iterator[tuple[np.ndarray, int]]:
    """Yields (mono float32 chunk, sample rate) as PyAV decodes the first audio stream,
    in blocks of at least ``block_s`` seconds (``mono_blocks``). ``container``: ``path`` as
    the caller already opened it (``av.open``), read from its start and closed here."""
    with first_audio_stream(path, container) as (container, stream):
        try:
            yield from mono_blocks(container.decode(stream), block_s)
        except AudioDecodeError as exc:  # one the blocks found (a rate out of range)
            if str(path) in str(exc):
                raise
            raise AudioDecodeError(f"{path}: {exc}") from None


def mono_blocks(frames: Iterable, block_s: float,
                seen: ChannelsSeen | None = None) -> Iterator[tuple[np.ndarray, int]]:
    """Decoded PyAV audio frames as (mono float32 samples, sample rate) in blocks of at least
    ``block_s`` seconds: an MP3 frame is 26 ms, and each chunk costs its consumer a pass through
    Python, so a fast reader takes them in blocks.

    Planar float frames (what MP3, AAC and Vorbis decode to) are held as views of their planes
    and joined and averaged once per block: done frame by frame, the numpy calls cost as much
    as the decoding of a stereo MP3. Other formats are made mono frame by frame (``_mono``). A
    change of rate, channels or format, the end and an error (raised again after) hand on what
    is held. ``seen``, when given, gets every block's channels before they are averaged (as
    one (channels, frames) array: the planes are joined into it instead of one by one)."""
    held: list = []  # per frame: its plane views (planar float) or a mono array
    held_samples, held_key, block_samples, names = 0, None, 0.0, ()
    packer = _Packer()
    try:
        for frame in frames:
            channels = frame_channels(frame)
            # views of the planes while PyAV can count them (fewer channels than pointers)
            planes = (frame.planes[:channels]
                      if frame.format.name == "fltp" and channels < PLANE_POINTERS else None)
            key = (frame.sample_rate, 0 if planes is None else channels)  # 0: made mono
            if key != held_key:
                if not MIN_SAMPLE_RATE <= frame.sample_rate <= MAX_SAMPLE_RATE:
                    raise AudioDecodeError(
                        f"the audio declares a sample rate of {frame.sample_rate} Hz; "
                        f"streamtag reads {MIN_SAMPLE_RATE // 1000}-"
                        f"{MAX_SAMPLE_RATE // 1000} kHz")
                if held:
                    yield _block(held, held_key, seen, names), held_key[0]
                    held, held_samples = [], 0
                held_key, block_samples = key, block_s * key[0]
                names = _channel_names(frame) if seen is not None and planes is not None else ()
            samples = frame.samples
            if planes is not None:  # views of the planes' first samples (a buffer may be longer)
                held.append([memoryview(plane)[:4 * samples] for plane in planes])
            else:
                held.append(_mono(frame, seen, packer))
            held_samples += samples
            if held_samples >= block_samples:
                yield _block(held, key, seen, names), key[0]
                held, held_samples = [], 0
    except Exception:
        if held:  # what decoded before the error is still delivered
            yield _block(held, held_key, seen, names), held_key[0]
        raise
    if held:
        yield _block(held, held_key, seen, names), held_key[0]


def _block(held: list, key: tuple[int, int], seen: ChannelsSeen | None = None,
           names: tuple[str, ...] = ()) -> np.ndarray:
    if key[1] == 0:  # mono arrays (``_mono`` showed ``seen`` their channels)
        return held[0] if len(held) == 1 else np.concatenate(held)
    channels = key[1]
    # The planes joined channel by channel into one (channels, frames) block; a bytearray, so
    # the block is writable, as a numpy array made by concatenating would be.
    planar = np.frombuffer(bytearray().join(views[c] for c in range(channels) for views in held),
                           np.float32).reshape(channels, -1)
    if seen is not None:
        seen(planar, key[0], names)
    return mix_down(list(planar))


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
                codec: str | None = None, layout: str | None = None,
                options: dict[str, str] | None = None) -> None:
    """Encodes float samples to a file with PyAV (codec from the suffix by default): 1-D mono,
    or (channels, frames) for up to MAX_CHANNELS channels. ``layout``: FFmpeg's name for the
    channels ("7.1"); by default mono, stereo, or "N channels". ``options``: the encoder's
    (``{"mapping_family": "255"}`` for Opus past 8 channels)."""
    import av

    path = Path(path)
    codec = codec or {".mp3": "libmp3lame", ".flac": "flac", ".wav": "pcm_s16le",
                      ".ogg": "libvorbis", ".m4a": "aac"}.get(path.suffix.lower())
    if codec is None:
        raise ValueError(f"no default codec for {path.suffix!r}; pass codec=")
    x = np.clip(np.asarray(samples, dtype=np.float64), -1.0, 1.0)
    x = x[None, :] if x.ndim == 1 else x
    if x.ndim != 2 or not 1 <= x.shape[0] <= MAX_CHANNELS:
        raise ValueError(f"samples must be 1-D (mono) or (channels, frames) with 1 to "
                         f"{MAX_CHANNELS} channels, got shape {np.shape(samples)}")
    channels = x.shape[0]
    layout = layout or {1: "mono", 2: "stereo"}.get(channels, f"{channels} channels")
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=sample_rate, layout=layout)
        if options:
            stream.codec_context.options = dict(options)
        fmt = stream.codec_context.format.name if stream.codec_context.format else "s16"
        if fmt.endswith("p") and channels >= PLANE_POINTERS:
            # PyAV cannot fill the planes of such a frame (PLANE_POINTERS): packed samples,
            # which its encoder converts
            fmt = fmt[:-1]
        if fmt.rstrip("p") == "s64":  # PyAV makes no frame of these: doubles, converted
            fmt = "dbl"
        dtype, scale = {"s16": (np.int16, 32767.0), "s32": (np.int32, 2147483647.0),
                        "flt": (np.float32, 1.0), "dbl": (np.float64, 1.0)}[fmt.rstrip("p")]
        planar = fmt.endswith("p")
        block = stream.codec_context.frame_size or 4096
        for i in range(0, x.shape[1], block):
            part = (x[:, i: i + block] * scale).astype(dtype)
            if not planar:  # packed: one plane, the channels interleaved
                part = np.ascontiguousarray(part.T).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(part), format=fmt,
                                               layout=layout)
            frame.sample_rate = sample_rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
