"""Decoding MP3 into mono blocks: what a source thread spends before resampling, side by side.

One thread, CPU ms per second of audio (the thread's own clock, best of the repeats, each
contender in turn), on a mono 64 kb/s and a stereo 128 kb/s MP3 of the same music-like signal:

- PyAV decoding alone, every frame dropped: the floor;
- ``streamtag.audio.files.iter_decoded``, blocks of 0.5 s (what the file source reads; the HTTP
  source joins its frames with the same ``mono_blocks``);
- frame by frame, each frame's ``to_ndarray()`` averaged over its channels and the frames
  joined per block: how the HTTP source read them before ``mono_blocks``;
- the ``ffmpeg`` command decoding the same file to its null output, where it is installed, less
  the same command decoding only its first second (the process's start-up).

    python benchmarks/decoding.py [--seconds 30] [--repeats 15]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from streamtag.audio.files import iter_decoded, write_audio
from streamtag.audio.testsignals import music_like

RATE = 44100
BLOCK_S = 0.5


def stereo_mp3(mono: Path, path: Path) -> Path:
    import av

    with av.open(str(mono)) as source, av.open(str(path), "w") as out:
        stream = out.add_stream("libmp3lame", rate=RATE, layout="stereo")
        stream.bit_rate = 128_000
        resampler = av.AudioResampler(format=stream.codec_context.format.name,
                                      layout="stereo", rate=RATE)
        for frame in source.decode(source.streams.audio[0]):
            frame.pts = None
            for converted in resampler.resample(frame):
                out.mux(stream.encode(converted))
        out.mux(stream.encode(None))
    return path


def decode_only(path: Path) -> None:
    import av

    with av.open(str(path)) as container:
        for _ in container.decode(container.streams.audio[0]):
            pass


def streamtag_blocks(path: Path) -> None:
    for _ in iter_decoded(path, BLOCK_S):
        pass


def frame_by_frame(path: Path) -> None:
    import av

    with av.open(str(path)) as container:
        held, samples = [], 0
        for frame in container.decode(container.streams.audio[0]):
            held.append(frame.to_ndarray().T.astype(np.float32, copy=False))  # (frames, ch)
            samples += frame.samples
            if samples >= BLOCK_S * frame.sample_rate:
                np.concatenate(held).mean(axis=1, dtype=np.float32)
                held, samples = [], 0


def ffmpeg_cli(path: Path, *limit: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-threads", "1", "-i",
                    str(path), *limit, "-f", "null", "-"], check=True)


def ffmpeg_start(path: Path) -> None:
    ffmpeg_cli(path, "-t", "1")


def cpu_ms(run: Callable[[Path], None], path: Path, child: bool) -> float:
    if child:  # the ffmpeg command's CPU is its process's, not this thread's
        import resource

        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        run(path)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        return 1000 * (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    started = time.thread_time()
    run(path)
    return 1000 * (time.thread_time() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    contenders: dict[str, tuple[Callable[[Path], None], bool]] = {
        "PyAV decoding alone": (decode_only, False),
        "streamtag mono_blocks": (streamtag_blocks, False),
        "frame by frame": (frame_by_frame, False)}
    if shutil.which("ffmpeg"):
        contenders["ffmpeg command"] = (ffmpeg_cli, True)
        contenders["ffmpeg start-up"] = (ffmpeg_start, True)
    with tempfile.TemporaryDirectory() as folder:
        mono = Path(folder) / "mono.mp3"
        write_audio(mono, music_like(args.seconds, RATE, seed=100), RATE)
        files = {"mono 64 kb/s": mono, "stereo 128 kb/s": stereo_mp3(mono, Path(folder) / "s.mp3")}
        print(f"CPU ms per second of audio, one thread, best of {args.repeats}; "
              f"ratio: against PyAV decoding alone")
        shown = [name for name in contenders if name != "ffmpeg start-up"]
        print("| file | " + " | ".join(shown) + " |")
        print("|---|" + "---|" * len(shown))
        for label, path in files.items():
            best = {name: float("inf") for name in contenders}
            for _ in range(args.repeats):
                for name, (run, child) in contenders.items():
                    best[name] = min(best[name], cpu_ms(run, path, child) / args.seconds)
            if "ffmpeg command" in best:  # less its start-up: the rest decodes seconds - 1
                start = best.pop("ffmpeg start-up") * args.seconds
                best["ffmpeg command"] = (best["ffmpeg command"] * args.seconds - start) / (
                    args.seconds - 1)
            floor = best["PyAV decoding alone"]
            cells = [f"{ms:.3f} ({ms / floor:.2f}×)" for ms in best.values()]
            print(f"| {label} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
