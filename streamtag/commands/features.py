"""``streamtag features``: the log-mel frames of an audio file, saved as .npy."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from streamtag.audio.files import AudioDecodeError, load_audio
from streamtag.commands import STDIN, failed, refused, stdin_as_file
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


def cmd_features(args: argparse.Namespace) -> int:
    if args.file == STDIN and not args.out:
        return refused("features", "reading standard input (-), give --out FILE.npy: there "
                                   "is no input name to save beside")
    try:
        options = frontend_options(args.preset, args.options)
    except ValueError as exc:
        return refused("features", exc)
    path = args.file
    try:
        with stdin_as_file(args.file) as path:
            audio, rate = load_audio(path, options.sample_rate)
    except AudioDecodeError as exc:
        return failed("features", str(exc).replace(str(path), args.file))
    t0 = time.perf_counter()
    try:
        frames = compute_logmel(audio, options)
    except ValueError as exc:  # options valid one by one that do not fit together
        return refused("features", exc)
    elapsed = time.perf_counter() - t0
    out = Path(args.out) if args.out else Path(args.file).with_suffix(".npy")
    try:
        with open(out, "wb") as f:  # the path as given (np.save adds .npy to a name without)
            np.save(f, frames.T if args.mels_first else frames)
    except OSError as exc:
        return failed("features", f"cannot write {out}: {exc.strerror}; give --out a path in "
                                  "a folder that exists and can be written")
    seconds = len(audio) / rate
    if args.json:
        print(json.dumps({"file": args.file, "out": str(out), "seconds": round(seconds, 6),
                          "sample_rate": rate, "frames": int(frames.shape[0]),
                          "n_mels": int(frames.shape[1]), "preset": args.preset,
                          "mels_first": bool(args.mels_first)}))
    elif not args.quiet:
        print(f"{args.file}: {seconds:.1f} s at {rate:g} Hz -> {frames.shape[0]} frames x "
              f"{frames.shape[1]} mels ({args.preset}) in {elapsed * 1e3:.1f} ms "
              f"({seconds / max(elapsed, 1e-9):.0f}x real time); wrote {out}", file=sys.stdout)
    return 0
