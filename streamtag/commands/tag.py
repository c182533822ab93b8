"""``streamtag tag``: audio files tagged offline, as text, CSV or JSON on stdout; a file that
cannot be read is said on stderr (and kept as a row of the JSON or CSV), with exit status 1."""

from __future__ import annotations

import argparse
import contextlib
import re
import sys

from streamtag.catalog.installed import resolve_model
from streamtag.catalog.shipped import SYNTHETIC_NOTE, default_model_path
from streamtag.commands import (
    EXIT_FAILED,
    EXIT_USAGE,
    STDIN,
    progress,
    refused,
    stdin_as_file,
    terminal_text,
)
from streamtag.engine.batching import EngineConfig
from streamtag.engine.tagging import format_csv, format_json, format_text, tag_files
from streamtag.errors import ModelError
from streamtag.model.inference import InferenceModel

# A stream's address, which `tag` (files) cannot read: `run --source URL` tags it live.
STREAM_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def cmd_tag(args: argparse.Namespace) -> int:
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
