"""``streamtag features``: the log-mel frames of audio files, each saved as .npy."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from streamtag.commands import STDIN, failed, progress, refused, stdin_as_file
from streamtag.frontend import LogMelOptions, compute_logmel


def frontend_options(preset: str, changes_json: str | None) -> LogMelOptions:
    """A preset's options with the changes of ``--options`` (a JSON object); ValueError."""
    options = LogMelOptions.preset(preset)
    if changes_json:
        try:
            changes = json.loads(changes_json)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--options is not valid JSON: {exc}") from exc
        if not isinstance(changes, dict):
            raise ValueError(f"--options must be a JSON object of options, such as "
                             f"'{{\"n_mels\": 64}}', got {changes_json!r}")
        options = LogMelOptions.from_dict({**options.to_dict(), **changes})
    return options


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("features", help="log-mel frames of audio files, saved as .npy")
    p.add_argument("file", nargs="+", metavar="FILE",
                   help="audio files PyAV decodes, each saved beside it as NAME.npy; - reads "
                        "standard input (with --out)")
    p.add_argument("--preset", default="musicnn", choices=LogMelOptions.preset_names())
    p.add_argument("--options", help='JSON object of option changes, e.g. \'{"n_mels": 128}\'')
    p.add_argument("--out", help="output .npy of one input (default: the input's name with "
                                 ".npy)")
    p.add_argument("--mels-first", action="store_true",
                   help="save (n_mels, frames) instead of (frames, n_mels)")
    p.add_argument("--json", action="store_true",
                   help="what was written, one JSON object a file on stdout")
    p.set_defaults(func=cmd_features)


def cmd_features(args: argparse.Namespace) -> int:
    from streamtag.audio.files import AudioDecodeError

    files = args.file
    if args.out and len(files) > 1:
        return refused("features", f"--out names one file, and {len(files)} inputs are given; "
                                   "leave it out to write each beside its input")
    if STDIN in files and not args.out:
        return refused("features", "reading standard input (-), give --out FILE.npy: there "
                                   "is no input name to save beside")
    try:
        options = frontend_options(args.preset, args.options)
    except ValueError as exc:
        return refused("features", exc)
    status = 0
    for name in progress(files, args.quiet, desc="features", unit="file"):
        out = Path(args.out) if args.out else Path(name).with_suffix(".npy")
        try:
            done = write_features(name, out, options, args.mels_first)
        except ValueError as exc:  # options valid one by one that do not fit together
            return refused("features", exc)
        except (AudioDecodeError, OSError) as exc:
            status = failed("features", exc)
            continue
        seconds, rate, shape, elapsed = done
        if args.json:
            print(json.dumps({"file": name, "out": str(out), "seconds": round(seconds, 6),
                              "sample_rate": rate, "frames": shape[0], "n_mels": shape[1],
                              "preset": args.preset, "mels_first": bool(args.mels_first)}),
                  flush=True)
        elif not args.quiet:
            print(f"{name}: {seconds:.1f} s at {rate:g} Hz -> {shape[0]} frames x {shape[1]} "
                  f"mels ({args.preset}) in {elapsed * 1e3:.1f} ms "
                  f"({seconds / max(elapsed, 1e-9):.0f}x real time); wrote {out}", flush=True)
    return status


def write_features(name: str, out: Path, options: LogMelOptions,
                   mels_first: bool) -> tuple[float, float, tuple[int, int], float]:
    """The frames of file ``name`` (``-``: standard input) saved to ``out``: (its seconds,
    sample rate, frames x mels, seconds spent computing). AudioDecodeError for audio that
    cannot be read, OSError (its words, the path and the fix) for an output that cannot be
    written, ValueError for options that do not fit together."""
    import numpy as np

    from streamtag.audio.files import AudioDecodeError, load_audio

    with stdin_as_file(name) as path:
        try:
            audio, rate = load_audio(path, options.sample_rate)
        except AudioDecodeError as exc:
            raise AudioDecodeError(str(exc).replace(path, name) if path != name
                                   else str(exc)) from None
    t0 = time.perf_counter()
    frames = compute_logmel(audio, options)
    elapsed = time.perf_counter() - t0
    try:
        with open(out, "wb") as f:  # the path as given (np.save adds .npy to a name without)
            np.save(f, frames.T if mels_first else frames)
    except OSError as exc:
        raise OSError(f"cannot write {out}: {exc.strerror}; give --out a path in a folder "
                      "that exists and can be written") from None
    return len(audio) / rate, rate, (int(frames.shape[0]), int(frames.shape[1])), elapsed
