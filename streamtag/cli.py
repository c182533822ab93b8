"""The ``streamtag`` command line."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

EXIT_USAGE = 2


def _frontend_options(args: argparse.Namespace):
    from streamtag.frontend import LogMelOptions

    options = LogMelOptions.preset(args.preset)
    if args.options:
        try:
            changes = json.loads(args.options)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--options is not valid JSON: {exc}") from exc
        options = LogMelOptions.from_dict({**options.to_dict(), **changes})
    return options


def cmd_features(args: argparse.Namespace) -> int:
    import numpy as np

    from streamtag.audio import AudioDecodeError, load_audio
    from streamtag.frontend import compute_logmel

    try:
        options = _frontend_options(args)
        audio, rate = load_audio(args.file, options.sample_rate)
    except (ValueError, AudioDecodeError) as exc:
        print(f"streamtag features: {exc}", file=sys.stderr)
        return EXIT_USAGE
    t0 = time.perf_counter()
    frames = compute_logmel(audio, options)
    elapsed = time.perf_counter() - t0
    out = Path(args.out) if args.out else Path(args.file).with_suffix(".npy")
    np.save(out, frames.T if args.mels_first else frames)
    seconds = len(audio) / rate
    print(f"{args.file}: {seconds:.1f} s at {rate:g} Hz -> {frames.shape[0]} frames x "
          f"{frames.shape[1]} mels ({args.preset}) in {elapsed * 1e3:.1f} ms "
          f"({seconds / max(elapsed, 1e-9):.0f}x real time); wrote {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from streamtag.frontend import LogMelOptions

    parser = argparse.ArgumentParser(prog="streamtag", description="Streaming audio tagger.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("features", help="log-mel frames of an audio file, saved as .npy")
    p.add_argument("file", help="any audio file PyAV decodes")
    p.add_argument("--preset", default="musicnn", choices=LogMelOptions.preset_names())
    p.add_argument("--options", help='JSON object of option changes, e.g. \'{"n_mels": 128}\'')
    p.add_argument("--out", help="output .npy (default: the input's name with .npy)")
    p.add_argument("--mels-first", action="store_true",
                   help="save (n_mels, frames) instead of (frames, n_mels)")
    p.set_defaults(func=cmd_features)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
