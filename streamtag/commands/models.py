"""``streamtag models list | install | complete | info | remove | calibrate | quantize``:
installed models by name (quantize also takes a model file)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys

from streamtag.commands import STDIN, refused, stdin_as_file, terminal_json
from streamtag.errors import ModelError

__all__ = ["add_commands"]


def cmd_list(args: argparse.Namespace) -> int:
    from streamtag.catalog import installed
    from streamtag.model.manifest import read_manifest

    try:
        models = installed.installed()
    except ModelError as error:  # a store that is not this user's alone
        return refused("models", error)
    from streamtag.catalog import speech_import

    names = installed.available_names()
    speech, speech_line = speech_import.status()
    missing = [n for n in names if n not in models] + ([] if speech else [installed.SPEECH])
    if args.json:
        listed = []
        for name, path in models.items():
            entry = {"name": name, "path": str(path)}
            try:
                manifest = read_manifest(path)
                recipe = manifest.recipe if isinstance(manifest.recipe, dict) else {}
                entry.update(model=manifest.name, tags=len(manifest.tags),
                             made_of=recipe.get("made_of"))
            except ModelError as error:
                entry["error"] = str(error)
            listed.append(entry)
        print(terminal_json(json.dumps({"folder": str(installed.models_folder()),
                                        "installed": listed, "installable": missing,
                                        "recommended": installed.RECOMMENDED,
                                        "speech": {"installed": speech,
                                                   "note": speech_line}})))
        return 0
    print(f"installed models in {installed.models_folder()}:")
    if not models:
        print("  none")
    for name, path in models.items():
        try:
            manifest = read_manifest(path)
            line = f"{manifest.name}, {len(manifest.tags)} tags"
            recipe = manifest.recipe if isinstance(manifest.recipe, dict) else {}
            if recipe.get("made_of"):
                line += f": {' + '.join(recipe['made_of'])} on one input"
        except ModelError as error:
            line = f"UNUSABLE: {error}"
        print(f"  {name:<14s} {line}")
    print(f"speech detector: {speech_line}")
    if missing:
        named = [f"{n} (recommended)" if n == installed.RECOMMENDED else n for n in missing]
        print(f"can be installed: {', '.join(named)} (streamtag models install NAME)")
    return 0


def cmd_install(args: argparse.Namespace) -> int:
    from streamtag.catalog import installed

    try:
        done = installed.install(args.names, source=args.source)
    except ModelError as error:
        return refused("models", error)
    for name, _ in done:
        if args.quiet:
            continue
        if name == installed.SPEECH:
            print(f"{name}: installed; every window's speech is decided by silero-vad's "
                  "detector from the next start of the daemon on")
            continue
        print(f"{name}: installed; use it with --model {name}, e.g. streamtag run --model {name} "
              "--source radio=URL")
    return 0


def cmd_complete(args: argparse.Namespace) -> int:
    from streamtag.catalog import installed
    from streamtag.errors import ModelError

    try:
        path, _ = installed.complete(args.name)
    except ModelError as error:
        return refused("models", error)
    print(f"{args.name}: TorchScript module added to {path}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from streamtag.catalog import installed

    try:
        path, manifest = installed.info(args.name)
    except ModelError as error:
        return refused("models", error)
    if args.json:
        print(terminal_json(json.dumps({"name": args.name, "path": str(path),
                                        "manifest": manifest.to_dict()}, default=str)))
        return 0
    print(f"{args.name}: {path}")
    print(f"  name:        {manifest.name}")
    print(f"  created:     {manifest.created}")
    print(f"  weights:     sha256 {manifest.weights_sha256}")
    print(f"  input:       {manifest.input_kind}, window {manifest.window}, hop {manifest.hop}, "
          f"{manifest.frontend.sample_rate:g} Hz, {manifest.frontend.n_mels} mels")
    print(f"  architecture: {manifest.architecture}")
    if not manifest.torchscript:
        reuse = ("" if manifest.window_reuse.get("hops")
                 else ", whole windows (no window-reuse steps)")
        print("  module:      none: installed without torch, served by ONNX Runtime on the CPU "
              f"only{reuse}; `streamtag models complete {args.name}` adds the TorchScript "
              "module once torch is installed")
    if isinstance(manifest.recipe, dict):  # a converted model: its source, licence, citation
        _print_fields(manifest.recipe, "  ")
    elif manifest.recipe:
        print(f"  recipe: {manifest.recipe}")
    _print_fields(manifest.options, "  ")
    print(f"  tags ({len(manifest.tags)}), threshold each:")
    pairs = [f"{t} {th:.3f}" for t, th in zip(manifest.tags, manifest.thresholds, strict=True)]
    for i in range(0, len(pairs), 5):
        print("    " + "; ".join(pairs[i:i + 5]))
    return 0


def _print_fields(fields: dict, indent: str) -> None:
    for key, value in fields.items():
        if isinstance(value, dict):
            print(f"{indent}{key}:")
            _print_fields(value, indent + "  ")
        else:
            print(f"{indent}{key}: {value}")


def cmd_remove(args: argparse.Namespace) -> int:
    from streamtag.catalog import installed

    try:
        path = installed.remove(args.name)
    except ModelError as error:
        return refused("models", error)
    print(f"{args.name}: removed {path}")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from streamtag.catalog import installed
    from streamtag.catalog.calibration import ThresholdRule, calibrate_file

    try:
        path = installed.model_file(args.name)
        with recordings(args.audio) as audio:
            result, _ = calibrate_file(path, audio, device=args.device)
    except ModelError as error:
        return refused("models", error)
    print(f"{args.name}: thresholds set from {result.windows} windows of {len(args.audio)} "
          f"recording(s): on those, {100 * result.share_in_range:.0f} % of windows have 1 to 6 "
          f"active tags (mean {result.mean_active:.1f}, none on "
          f"{100 * result.empty_share:.0f} %); written to {path}")
    rarest = ThresholdRule().min_share
    if result.windows * rarest < 1 and not args.quiet:
        print(f"{args.name}: note: {result.windows} windows are few: a tag active on fewer than "
              f"1 window in {round(1 / rarest)} got its threshold from too little; an hour or "
              "so of the music you will tag sets them well", file=sys.stderr)
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    from streamtag.catalog.installed import resolve_model
    from streamtag.catalog.quantize import quantize_file

    try:
        path = resolve_model(args.model)
        with recordings(args.audio) as audio:
            done = quantize_file(path, audio, args.output)
    except ModelError as error:
        return refused("models", error)
    print(f"{args.model}: int8 graph written to {args.output or path}; calibrated on "
          f"{done.calibration_windows} windows, checked on {done.check_windows} others: "
          f"probabilities within {done.max_difference:.3g} of FP32 (mean "
          f"{done.mean_difference:.2g}), {100 * done.decisions_agree:.1f} % of the tag decisions "
          f"the same; one window {done.fp32_ms:.2f} ms FP32, {done.int8_ms:.2f} ms int8")
    if done.pays:
        print("serve it with --precision int8 (or [engine] precision = \"int8\")")
    else:
        print("int8 is not faster than FP32 for this model on this CPU: keep precision fp32")
    return 0


@contextlib.contextmanager
def recordings(names: list[str]):
    """The paths to read for the recordings given, ``-`` (once) as standard input's copy."""
    if names.count(STDIN) > 1:
        raise ModelError("- (standard input) is given more than once; it can be read once")
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(stdin_as_file(name)) for name in names]


def _add_recordings(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("audio", nargs="+", metavar="AUDIO",
                        help="recordings (any format PyAV decodes; - reads standard input)")


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Adds ``models`` and its subcommands to the ``streamtag`` command line."""
    p = subparsers.add_parser(
        "models",
        help="trained real-music models: install, complete, list, info, calibrate, quantize, "
             "remove",
        description="Installed models live in $STREAMTAG_HOME/models (default: the user data "
                    "folder), one NAME.pt each; every --model takes their names. See "
                    "docs/models.md.")
    sub = p.add_subparsers(dest="models_command", required=True)

    q = sub.add_parser("list", help="installed models and the ones that can be installed")
    q.add_argument("--json", action="store_true",
                   help="one JSON object: the folder, the installed models, those installable")
    q.set_defaults(func=cmd_list)

    q = sub.add_parser(
        "install", help="convert musicnn's published taggers into model files",
        description="Converts musicnn's trained checkpoints (music, musicnn-mtt, musicnn-msd, "
                    "vgg-mtt, vgg-msd) into model files. The weights come from --from, else an "
                    "installed musicnn package, else `pip download --no-deps musicnn==0.1.0`. "
                    "Without torch, each is written as the ONNX graphs ONNX Runtime serves, "
                    "without its TorchScript module (`streamtag models complete NAME` adds it "
                    "later).")
    q.add_argument("names", nargs="+", metavar="NAME",
                   help="musicnn-mtt, musicnn-msd, vgg-mtt or vgg-msd")
    q.add_argument("--from", dest="source", metavar="PATH",
                   help="musicnn's wheel (.whl), its unpacked package folder, a folder holding "
                        "musicnn/, or one checkpoint folder (e.g. MSD_musicnn)")
    q.set_defaults(func=cmd_install)

    q = sub.add_parser(
        "complete", help="add the TorchScript module to a model installed without torch",
        description="A model installed where torch was not holds the ONNX graph the CPU serves "
                    "and no TorchScript module, which CUDA, --backend torch, training, "
                    "quantize's checks and window reuse need. With torch installed, this "
                    "rebuilds the module from the file's own weights, checks it against the "
                    "graph and writes the file again in place, thresholds kept.")
    q.add_argument("name", help="an installed model's name or a model file's path")
    q.set_defaults(func=cmd_complete)

    q = sub.add_parser("info", help="an installed model's (or a model file's) source, licence, "
                                    "tags, thresholds")
    q.add_argument("name", help="an installed model's name or a model file's path")
    q.add_argument("--json", action="store_true",
                   help="the path and the model file's manifest as one JSON object")
    q.set_defaults(func=cmd_info)

    q = sub.add_parser("remove", help="delete an installed model")
    q.add_argument("name")
    q.set_defaults(func=cmd_remove)

    q = sub.add_parser(
        "calibrate", help="set an installed model's per-tag thresholds from your recordings",
        description="Scores the recordings with the model as the daemon does and sets each "
                    "tag's threshold so that, on them, most windows have 1 to 6 active tags "
                    "(the rule: docs/models.md, Thresholds). The model file is rewritten in "
                    "place, atomically.")
    q.add_argument("name", help="an installed model's name, or a model file's path (that file "
                                "is rewritten)")
    _add_recordings(q)
    q.add_argument("--device", default="cpu", help="cpu, auto, cuda or cuda:N (default cpu)")
    q.set_defaults(func=cmd_calibrate)

    q = sub.add_parser(
        "quantize", help="add an int8 graph to a model file, made and checked on your recordings",
        description="Cuts the recordings into the model's windows as the daemon does, "
                    "calibrates ONNX Runtime's static quantizer on half of them and measures the "
                    "int8 graph against FP32 on the other half (probabilities, tag decisions, "
                    "forward time); the graph and those figures go into the model file. Serve it "
                    "with --precision int8. It pays for wide convolutional models, not for "
                    "small ones (docs/operations.md).")
    q.add_argument("model", help="a model file or an installed model's name")
    _add_recordings(q)
    q.add_argument("-o", "--output", help="write the quantized model file here (default: in "
                                          "place, atomically)")
    q.set_defaults(func=cmd_quantize)
