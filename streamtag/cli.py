"""The ``streamtag`` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
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

    from streamtag.audio.files import AudioDecodeError, load_audio
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


def cmd_run(args: argparse.Namespace) -> int:
    import logging
    import signal

    from streamtag.model.inference import keep_freed_memory

    keep_freed_memory()  # before any thread starts: a thread started earlier keeps its own arena

    from streamtag.daemon.config import DaemonConfig, load_config, with_overrides
    from streamtag.daemon.daemon import Daemon
    from streamtag.errors import ConfigError, ModelError

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config) if args.config else DaemonConfig()
        config = with_overrides(config, model=args.model, device=args.device,
                                sources=args.source, publish=args.publish, control=args.control,
                                hop_seconds=args.hop_seconds, metrics_port=args.metrics_port,
                                realtime=True if args.realtime else None, shard=args.shard,
                                backend=args.backend, precision=args.precision)
        daemon = Daemon(config)
        daemon.start()
    except (ConfigError, ModelError) as exc:
        print(f"streamtag run: {exc}", file=sys.stderr)
        return EXIT_USAGE
    signals = {"count": 0}

    def on_signal(signum, frame) -> None:
        signals["count"] += 1
        if signals["count"] > 1:
            print("streamtag run: second signal, exiting at once", file=sys.stderr)
            os._exit(1)
        threading.Thread(target=daemon.stop, name="streamtag-shutdown", daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"streamtag run: publishing on {daemon.publisher.endpoint}"
          + (f", control on {daemon.control.endpoint}" if daemon.control else "")
          + f"; session {daemon.publisher.session}", file=sys.stderr, flush=True)
    while not daemon.wait(0.2):
        if args.exit_when_done and config.sources and daemon.idle():
            daemon.stop()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from streamtag.commands.demo import run_demo
    from streamtag.errors import ConfigError, ModelError

    try:
        return run_demo(args.model, realtime=args.realtime, speed=args.speed,
                        seconds=args.seconds, dashboard=args.dashboard,
                        dashboard_port=args.dashboard_port, device=args.device,
                        backend=args.backend)
    except (ConfigError, ModelError) as exc:
        print(f"streamtag demo: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def cmd_listen(args: argparse.Namespace) -> int:
    from streamtag.errors import ConfigError
    from streamtag.wire.security import client_curve
    from streamtag.wire.subscriber import listen_main

    curve = None
    if args.server_key or args.client_key:
        if not (args.server_key and args.client_key):
            print("streamtag listen: --server-key and --client-key go together", file=sys.stderr)
            return EXIT_USAGE
        try:
            curve = client_curve(args.server_key, args.client_key)
        except ConfigError as exc:
            print(f"streamtag listen: {exc}", file=sys.stderr)
            return EXIT_USAGE
    return listen_main(args.endpoint, streams=args.stream or None, as_json=args.json,
                       count=args.count, duration=args.duration, curve=curve,
                       tracks=args.tracks, control=args.control)


def cmd_keys(args: argparse.Namespace) -> int:
    from streamtag.wire.security import generate_keys

    public, secret = generate_keys(args.directory, args.name)
    print(f"public key: {public}  (give it to the other side)\nsecret key: {secret}  "
          "(keep it here)")
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from streamtag.web import dashboard_main

    return dashboard_main(args)


def cmd_proxy(args: argparse.Namespace) -> int:
    from streamtag.wire.proxy import run_proxy

    def ready(frontend: str | None, backend: str) -> None:
        print(f"streamtag proxy: daemons publish to {frontend}, subscribers connect to "
              f"{backend}", file=sys.stderr, flush=True)

    import signal

    # The proxy loop runs in libzmq without returning to Python, so it cannot see a signal:
    # it runs in a thread, and SIGTERM (an orchestrator stopping the pod) or Ctrl-C here
    # stops it through its stop event. Exit 0 either way.
    stop = threading.Event()
    failure: list[BaseException] = []

    def serve() -> None:
        try:
            run_proxy(args.frontend, args.backend, stop, upstream=args.upstream or (),
                      ready=ready)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            failure.append(exc)
            stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    worker = threading.Thread(target=serve, name="streamtag-proxy", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.2)
    if failure and isinstance(failure[0], OSError):  # an endpoint it cannot bind
        print(f"streamtag proxy: {failure[0].strerror or failure[0]}", file=sys.stderr)
        return EXIT_USAGE
    if failure:
        raise failure[0]
    return 0


def cmd_record(args: argparse.Namespace) -> int:
    from streamtag.history.recorder import record_main

    return record_main(args)


def cmd_history(args: argparse.Namespace) -> int:
    from streamtag.history.report import history_main

    return history_main(args)


def cmd_tag(args: argparse.Namespace) -> int:
    from streamtag.catalog.installed import resolve_model
    from streamtag.catalog.shipped import default_model_path
    from streamtag.engine.batching import EngineConfig
    from streamtag.engine.tagging import format_csv, format_json, format_text, tag_files
    from streamtag.errors import ModelError
    from streamtag.model.inference import InferenceModel

    try:
        model = InferenceModel.load(resolve_model(args.model) or default_model_path(),
                                    device=args.device, backend=args.backend,
                                    precision=args.precision)
        config = EngineConfig(hop_seconds=args.hop_seconds)
    except (ModelError, ValueError) as exc:
        print(f"streamtag tag: {exc}", file=sys.stderr)
        return EXIT_USAGE
    results = tag_files(args.files, model, config=config)
    formatter = format_json if args.json else format_csv if args.csv else format_text
    sys.stdout.write(formatter(results))
    return 1 if any(r.error for r in results) else 0


def cmd_devices(args: argparse.Namespace) -> int:
    from streamtag.errors import SourceError
    from streamtag.sources import list_input_devices

    try:
        devices = list_input_devices()
    except SourceError as exc:
        print(f"streamtag devices: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not devices:
        print("no audio input devices found")
    for d in devices:
        mark = "*" if d["default"] else " "
        print(f"{mark}{d['index']:3d}  {d['name']}  [{d['hostapi']}] "
              f"({d['max_input_channels']} ch, {d['default_samplerate']:g} Hz)")
    return 0


def _add_backend(parser: argparse.ArgumentParser, default: str | None) -> None:
    from streamtag.daemon.config import BACKENDS

    parser.add_argument("--backend", default=default, choices=BACKENDS,
                        help="what runs the model: auto (ONNX Runtime on the CPU, TorchScript "
                             "on CUDA), onnxruntime or torch")


def _add_precision(parser: argparse.ArgumentParser, default: str | None) -> None:
    from streamtag.daemon.config import PRECISIONS

    parser.add_argument("--precision", default=default, choices=PRECISIONS,
                        help="fp32, or int8: the model file's int8 graph on ONNX Runtime, made "
                             "by `streamtag models quantize` (docs/operations.md)")


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

    from streamtag.commands.train import (
        add_train_commands,  # only argparse: the trainer loads lazily
    )

    add_train_commands(sub)

    from streamtag.commands.models import add_models_commands  # only argparse until a command runs

    add_models_commands(sub)

    p = sub.add_parser("run", help="the daemon: tag audio streams and publish over ZeroMQ")
    p.add_argument("--config", help="daemon TOML file (flags override it)")
    p.add_argument("--model", help="model file or installed model name, e.g. musicnn-msd "
                   "(default: the shipped model)")
    p.add_argument("--source", action="append", metavar="[ID=]SPEC",
                   help="file:PATH, a path, http(s)://URL, device:NAME or pipe:; repeatable")
    p.add_argument("--publish", help="PUB endpoint (default tcp://127.0.0.1:5556)")
    p.add_argument("--control", help="control endpoint (default tcp://127.0.0.1:5557; '' off)")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--hop-seconds", type=float, help="seconds between windows")
    _add_backend(p, None)
    _add_precision(p, None)
    p.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")
    p.add_argument("--realtime", action="store_true", help="play file sources at real speed")
    p.add_argument("--shard", metavar="K/N",
                   help="serve only shard K of N of the sources (by a stable hash of the "
                        "stream id); auto/N: K from the host name NAME-K (a StatefulSet pod)")
    p.add_argument("--exit-when-done", action="store_true",
                   help="stop once every source has ended (files)")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("tag", help="tag audio files offline: segments and a summary per file")
    p.add_argument("files", nargs="+")
    p.add_argument("--model", help="model file or installed model name, e.g. musicnn-msd "
                   "(default: the shipped model)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--hop-seconds", type=float, help="seconds between windows")
    _add_backend(p, "auto")
    _add_precision(p, "fp32")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="one JSON object per file")
    fmt.add_argument("--csv", action="store_true", help="CSV rows: segments and track tags")
    p.set_defaults(func=cmd_tag)

    p = sub.add_parser("devices", help="list audio input devices")
    p.set_defaults(func=cmd_devices)

    p = sub.add_parser("demo", help="watch the daemon tag a generated piece live")
    p.add_argument("--model", help="model file or installed model name, e.g. musicnn-msd "
                   "(default: the shipped model)")
    p.add_argument("--realtime", action="store_true", help="play at real speed")
    p.add_argument("--speed", type=float, default=4.0, help="playback speed (default 4)")
    p.add_argument("--seconds", type=float, default=60.0, help="length of the piece")
    p.add_argument("--dashboard", action="store_true", help="also open the web dashboard")
    p.add_argument("--dashboard-port", type=int, default=8080)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    _add_backend(p, "auto")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("listen", help="print a daemon's messages live")
    p.add_argument("endpoint", nargs="?", default="tcp://127.0.0.1:5556")
    p.add_argument("--stream", action="append", help="only this stream; repeatable")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--count", type=int, help="stop after this many messages")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--server-key", help="the daemon's public key file (NAME.key), for CURVE")
    p.add_argument("--client-key", help="this client's secret key file (NAME.key_secret)")
    p.add_argument("--tracks", action="store_true",
                   help="only what is playing: each title change and each finished track's "
                        "summary")
    p.add_argument("--control", metavar="ENDPOINT",
                   help="with --tracks: the daemon's control endpoint, to start with its "
                        "current titles and last tracks")
    p.set_defaults(func=cmd_listen)

    p = sub.add_parser("keys", help="CURVE key pairs for encrypted, authenticated sockets")
    keys_sub = p.add_subparsers(dest="keys_command", required=True)
    g = keys_sub.add_parser("generate", help="write NAME.key and NAME.key_secret in DIRECTORY")
    g.add_argument("directory")
    g.add_argument("--name", default="server", help="the key pair's name (default: server)")
    g.set_defaults(func=cmd_keys)

    p = sub.add_parser("dashboard",
                       help="a web page showing the tags live, for a screen in the room")
    p.add_argument("--connect", action="append", metavar="ENDPOINT",
                   help="the daemon's (or a proxy's) PUB endpoint; repeatable "
                        "(default tcp://127.0.0.1:5556)")
    p.add_argument("--control", metavar="ENDPOINT",
                   help="the daemon's control endpoint: the current state is fetched at start")
    p.add_argument("--port", type=int, default=8080, help="HTTP port (default 8080; 0: any free)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback)")
    p.add_argument("--db", metavar="URL",
                   help="a history database (streamtag record's) for the history view")
    p.set_defaults(func=cmd_dashboard)

    p = sub.add_parser("proxy", help="XSUB/XPUB proxy: many daemons, one subscriber endpoint")
    p.add_argument("--frontend", default="tcp://127.0.0.1:5558",
                   help="XSUB endpoint daemons publish to (bound)")
    p.add_argument("--backend", default="tcp://127.0.0.1:5559",
                   help="XPUB endpoint subscribers connect to (bound)")
    p.add_argument("--upstream", action="append", help="a daemon PUB endpoint to connect to")
    p.set_defaults(func=cmd_proxy)

    p = sub.add_parser("record", help="write what daemons publish to a history database")
    p.add_argument("--connect", action="append", metavar="ENDPOINT",
                   help="a daemon's (or a proxy's) PUB endpoint; repeatable")
    p.add_argument("--db", default="sqlite:///tags.db",
                   help="sqlite:///PATH (default sqlite:///tags.db) or postgresql://...")
    p.add_argument("--control", action="append", metavar="ENDPOINT",
                   help="a daemon's control endpoint, for a snapshot at start; repeatable")
    p.add_argument("--queue-size", type=int, default=100_000,
                   help="messages that may wait for a slow or down database (default 100000)")
    p.add_argument("--batch-size", type=int, default=2000,
                   help="messages per transaction at most (default 2000)")
    p.add_argument("--max-backoff-s", type=float, default=30.0,
                   help="longest wait between retries of a down database (default 30)")
    p.add_argument("--drain-timeout-s", type=float, default=10.0,
                   help="on stop, how long to wait for the database to take the queue")
    p.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")
    p.add_argument("--metrics-address", default="127.0.0.1",
                   help="address of the metrics server (default loopback)")
    p.add_argument("--upgrade", action="store_true",
                   help="create or upgrade the database schema, then exit")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=cmd_record)

    p = sub.add_parser("history", help="what was recorded: tracks, tag airtime, events")
    p.add_argument("--db", default="sqlite:///tags.db",
                   help="sqlite:///PATH (default sqlite:///tags.db) or postgresql://...")
    p.add_argument("--stream", action="append", help="only this stream; repeatable")
    p.add_argument("--since", help="from this time: ISO 8601 (local time unless it has an "
                                   "offset), a time of day (today), Unix seconds, or ago as "
                                   "2h, 30m, 1d")
    p.add_argument("--until", help="up to this time (same forms as --since)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="one JSON object")
    fmt.add_argument("--csv", action="store_true", help="CSV rows: tracks, shares, events, gaps")
    p.add_argument("--plot", metavar="FILE.png", help="draw a timeline of tag shares per stream")
    p.add_argument("--top", type=int, default=8, help="tags drawn per stream (default 8)")
    p.set_defaults(func=cmd_history)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
