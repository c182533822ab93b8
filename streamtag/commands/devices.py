"""``streamtag devices``: the audio input devices, the default one marked."""

from __future__ import annotations

import argparse
import json
import sys

from streamtag.commands import failed, terminal_json
from streamtag.errors import SourceError


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("devices", help="list audio input devices")
    p.add_argument("--json", action="store_true", help="one JSON list of the devices")
    p.set_defaults(func=cmd_devices)


def cmd_devices(args: argparse.Namespace) -> int:
    from streamtag.sources import list_input_devices

    try:
        devices = list_input_devices()
    except SourceError as exc:
        return failed("devices", exc)
    if args.json:
        print(terminal_json(json.dumps(devices)))
        return 0
    if not devices:
        print("streamtag devices: no audio input devices found; check that a sound card or "
              "microphone is connected and that this user may use it (the audio group; with "
              "PulseAudio or PipeWire, that its server runs for this user: pactl info)",
              file=sys.stderr)
    for d in devices:
        mark = "*" if d["default"] else " "
        print(f"{mark}{d['index']:3d}  {d['name']}  [{d['hostapi']}] "
              f"({d['max_input_channels']} ch, {d['default_samplerate']:g} Hz)")
    return 0
