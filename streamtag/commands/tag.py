"""``streamtag tag``: audio files tagged offline, as text, CSV or JSON on stdout."""

from __future__ import annotations

import argparse
import sys

from streamtag.catalog.installed import resolve_model
from streamtag.catalog.shipped import default_model_path
from streamtag.commands import EXIT_USAGE
from streamtag.engine.batching import EngineConfig
from streamtag.engine.tagging import format_csv, format_json, format_text, tag_files
from streamtag.errors import ModelError
from streamtag.model.inference import InferenceModel


def cmd_tag(args: argparse.Namespace) -> int:
    try:
        model = InferenceModel.load(resolve_model(args.model) or default_model_path(),
                                    device=args.device, backend=args.backend,
                                    precision=args.precision)
        config = EngineConfig(hop_seconds=args.hop_seconds)
    except (ModelError, ValueError) as exc:
        print(f"streamtag tag: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        results = tag_files(args.files, model, config=config, loudness=args.loudness)
    except ModelError as exc:  # found as the engine prepares the model (its window reuse)
        print(f"streamtag tag: {exc}", file=sys.stderr)
        return EXIT_USAGE
    formatter = format_json if args.json else format_csv if args.csv else format_text
    sys.stdout.write(formatter(results))
    return 1 if any(r.error for r in results) else 0
