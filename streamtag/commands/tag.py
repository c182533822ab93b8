"""``streamtag tag``: audio files tagged offline, as text, CSV or JSON on stdout; a file that
cannot be read is said on stderr (and kept as a row of the JSON or CSV), with exit status 1."""

from __future__ import annotations

import argparse
import contextlib
import re
import sys

from streamtag.commands import (
    EXIT_FAILED,
    EXIT_USAGE,
    STDIN,
    progress,
    refused,
    stdin_as_file,
    terminal_text,
)
from streamtag.commands.flags import add_backend, add_model, add_precision
from streamtag.errors import ModelError

# A stream's address, which `tag` (files) cannot read: `run --source URL` tags it live.
STREAM_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tag", help="tag audio files offline: segments and a summary per file")
    p.add_argument("files", nargs="+", metavar="FILE",
                   help="audio files (any format PyAV decodes); - reads standard input to its "
                        "end. A stream (http://...) is tagged live by streamtag run --source "
                        "URL")
    add_model(p)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--hop-seconds", type=float, help="seconds between windows")
    add_backend(p, "auto")
    add_precision(p, "fp32")
    p.add_argument("--loudness", action="store_true",
                   help="also each file's EBU R128 integrated loudness (LUFS), measured at its "
                        "own rate and channels")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="one JSON object per file")
    fmt.add_argument("--csv", action="store_true", help="CSV rows: segments and track tags")
    p.set_defaults(func=cmd_tag)


def cmd_tag(args: argparse.Namespace) -> int:
    from streamtag.catalog.installed import resolve_model
    from streamtag.catalog.shipped import SYNTHETIC_NOTE, default_model_path
    from streamtag.engine.config import EngineConfig
    from streamtag.engine.tagging import format_csv, format_json, format_text, tag_files
    from streamtag.model.inference import InferenceModel

    urls = [f for f in args.files if STREAM_URL.match(f) and not f.lower().startswith("file:")]
    if urls:
        return refused("tag", f"{terminal_text(urls[0], one_line=True)} is a stream's address: "
                              "tag reads files (or - for standard input); tag a stream live "
                              f"with streamtag run --source {terminal_text(urls[0])}, or save "
                              "it to a file first")
    if args.files.count(STDIN) > 1:
        return refused("tag", "- (standard input) is given more than once; it can be read once")
    try:
        model = InferenceModel.load(resolve_model(args.model) or default_model_path(),
                                    device=args.device, backend=args.backend,
                                    precision=args.precision)
        config = EngineConfig(hop_seconds=args.hop_seconds)
    except (ModelError, ValueError) as exc:
        print(f"streamtag tag: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.model is None and not args.quiet:
        print(f"streamtag tag: note: {SYNTHETIC_NOTE}", file=sys.stderr)
    with contextlib.ExitStack() as stack:
        paths = [stack.enter_context(stdin_as_file(f)) for f in args.files]
        try:
            results = tag_files(progress(paths, args.quiet, desc="tagging", unit="file"),
                                model, config=config, loudness=args.loudness)
        except ModelError as exc:  # found as the engine prepares the model (its window reuse)
            print(f"streamtag tag: {exc}", file=sys.stderr)
            return EXIT_USAGE
    for given, path, result in zip(args.files, paths, results, strict=True):
        if given != path:  # standard input: named as given, not by its temporary copy
            result.path = given
            if result.error:
                result.error = result.error.replace(path, "standard input")
    failures = [r for r in results if r.error]
    for r in failures:
        said = r.error if r.path in r.error else f"{r.path}: {r.error}"
        print(f"streamtag tag: {terminal_text(said, one_line=True)}", file=sys.stderr)
    if args.json:
        sys.stdout.write(format_json(results))
    elif args.csv:
        sys.stdout.write(format_csv(results))
    else:  # the errors were said on stderr
        tagged = [r for r in results if not r.error]
        if tagged:
            sys.stdout.write(format_text(tagged))
    return EXIT_FAILED if failures else 0
