"""``streamtag run``: the daemon in the foreground until a signal, or until its files end."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading

from streamtag.commands import EXIT_FAILED, EXIT_USAGE, log_level, stop_on_signals
from streamtag.commands.flags import port_number, source_flag
from streamtag.daemon.config import add_setting_flags
from streamtag.errors import ConfigError, SourceError

log = logging.getLogger("streamtag.run")


# what each socket needs to listen beyond this machine: the control socket admits admin_keys
KEYS = {"publish.endpoint": "[security] server_key and client_keys (docs/operations.md, Keys)",
        "control.endpoint": "[security] server_key and admin_keys (docs/operations.md, Keys)"}
REACH = {"publish.endpoint": "reads every message",
         "control.endpoint": "reaches the control socket, guarded by the token alone, which "
                             "travels in the clear"}


def refuse_or_warn(exposed: list[tuple[str, str]], insecure: bool) -> None:
    """Sockets that would listen beyond this machine in the clear (``exposed``: key and
    endpoint) are a ConfigError, unless ``insecure`` accepts them: then a loud warning that
    names each and what anyone who reaches it can do."""
    from streamtag.wire.exposure import refusal

    if exposed and not insecure:
        raise ConfigError("; ".join(f"{key}: {refusal(endpoint, KEYS[key])}"
                                    for key, endpoint in exposed)
                          + " ([security] insecure = true in the config file)")
    for key, endpoint in exposed:
        log.warning("INSECURE (--insecure): %s %s is open beyond this machine without "
                    "encryption or client keys; anyone who reaches it %s", key, endpoint,
                    REACH[key])


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="the daemon: tag audio streams and publish over ZeroMQ")
    p.add_argument("--config", help="daemon TOML file (flags override it)")
    # each setting that declares a flag (values.field(flag=...)): --model, --publish, ...
    add_setting_flags(p)
    p.add_argument("--source", action="append", metavar="[ID=]SPEC", type=source_flag,
                   help="file:PATH or a path, http(s)://URL, device:NAME_OR_INDEX or pipe:; "
                        "repeatable")
    p.add_argument("--realtime", action="store_true", help="play file sources at real speed")
    p.add_argument("--shard", metavar="K/N",
                   help="serve only shard K of N of the sources (by a stable hash of the "
                        "stream id); auto/N: K from the host name NAME-K (a StatefulSet pod)")
    p.add_argument("--exit-when-done", action="store_true",
                   help="stop once every source has ended or failed for good (a live source "
                        "that sets neither max_reconnects nor reconnect gives up after 5 "
                        "reconnects without audio); exit status 1 when one failed (its error "
                        "is said)")
    p.add_argument("--venue", action="store_true",
                   help="a screen for the room's mood: the default sound card (unless "
                        "--source), the installed real-music model (unless --model) and the "
                        "venue page at /venue (docs/venue.md)")
    p.add_argument("--dashboard-port", type=port_number, default=8080,
                   help="with --venue: the page's HTTP port (default 8080)")
    p.add_argument("--dashboard-host", default="127.0.0.1",
                   help="with --venue: the address the page listens on (default loopback; "
                        "0.0.0.0 for a screen on another machine)")
    p.add_argument("--allow-host", action="append", metavar="NAME",
                   help="with --venue: a name the page may be reached by (its Host), besides "
                        "localhost and IP addresses; repeatable (as for streamtag dashboard)")
    p.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    from streamtag.model.inference import keep_freed_memory

    keep_freed_memory()  # before any thread starts: a thread started earlier keeps its own arena

    # Imported after: loading them may start threads.
    from streamtag.daemon.config import (
        DaemonConfig,
        ending_sources,
        exposed_endpoints,
        flag_values,
        load_config,
        with_overrides,
    )
    from streamtag.daemon.daemon import Daemon
    from streamtag.errors import ModelError

    venue = getattr(args, "venue", False)
    model, sources = args.model, args.source
    try:
        config = load_config(args.config) if args.config else DaemonConfig()
        if venue:
            from streamtag.commands.venue import venue_model, venue_source

            picked, why_model = venue_model(model or (config.model.path if args.config
                                                      else None))
            model = model or picked
            added, why_source = venue_source(sources, len(config.sources))
            sources = sources or added
            say(f"venue: {why_source}; {why_model}")
        config = with_overrides(config, **{**flag_values(args), "model": model},
                                sources=sources, realtime=True if args.realtime else None,
                                shard=args.shard)
        if args.exit_when_done:
            config = ending_sources(config)
        if config.model.path is None and not args.quiet:
            from streamtag.catalog.shipped import SYNTHETIC_NOTE

            say(f"note: {SYNTHETIC_NOTE}")
        refuse_or_warn(exposed_endpoints(config), config.security.insecure)
        processes = worker_processes(config)
        if processes > 1:
            if venue:
                raise ConfigError(f"--venue with {processes} worker processes: the venue "
                                  "screen serves one stream in one process; leave out "
                                  "--processes (or [engine] processes)")
            return run_supervised(config, processes, args)
        daemon = Daemon(config)
        daemon.start()
    except (ConfigError, ModelError) as exc:
        print(f"streamtag run: {exc}", file=sys.stderr)
        return EXIT_USAGE

    def exit_at_once() -> None:
        print("streamtag run: second signal, exiting at once", file=sys.stderr)
        os._exit(1)

    with stop_on_signals(on_repeat=exit_at_once) as stop:
        if not args.quiet:
            say(f"publishing on {daemon.publisher.endpoint}"
                + (f", control on {daemon.control.endpoint} (its token in {daemon.token_file})"
                   if daemon.control else "")
                + f"; session {daemon.publisher.session}")
        page_stop = threading.Event()
        if venue:
            from streamtag.commands.dashboard import LOOPBACK
            from streamtag.commands.venue import VENUE_STREAM, start_page, watch_sources

            try:
                url = start_page(daemon.publisher.endpoint,
                                 daemon.control.endpoint if daemon.control else None,
                                 args.dashboard_port, args.dashboard_host, page_stop,
                                 token_file=str(daemon.token_file) if daemon.control else None,
                                 allow_hosts=tuple(args.allow_host or ()))
            except OSError as exc:
                say(str(exc))
                daemon.stop()
                return EXIT_USAGE
            if args.dashboard_host not in LOOPBACK:  # as streamtag dashboard warns
                say(f"the venue page listens on {args.dashboard_host}: anyone who can reach "
                    "it sees the tags; there is no authentication")
            ids = [s.id for s in config.sources]
            query = f"?stream={VENUE_STREAM}" if VENUE_STREAM in ids else ""
            say(f"the venue screen: open {url}/venue{query} (full screen; add "
                f"{'&' if query else '?'}theme=light for a light room)")
            threading.Thread(target=watch_sources, args=(daemon.status, page_stop, say),
                             name="streamtag-venue-watch", daemon=True).start()
        # The first signal drains (the last windows are published) in a thread of its own, so
        # that this one stays free to see a second signal, which exits at once.
        draining = None
        while not daemon.wait(0.2):
            if draining is not None:
                continue
            if stop.is_set():
                draining = threading.Thread(target=daemon.stop, name="streamtag-shutdown",
                                            daemon=True)
                draining.start()
            elif args.exit_when_done and config.sources and daemon.idle():
                failed = daemon.failed_streams()
                daemon.stop()
                if failed:
                    say_failed(failed, len(config.sources))
                    page_stop.set()
                    return EXIT_FAILED
        page_stop.set()
    return 0


def say_failed(failed: list[tuple[str, str]], streams: int) -> None:
    """--exit-when-done: the streams whose source failed, with why (the first ten)."""
    say(f"{len(failed)} of {streams} streams failed: "
        + "; ".join(f"{sid} ({error})" for sid, error in failed[:10])
        + (" ..." if len(failed) > 10 else ""))


def _reads_stdin(spec: str) -> bool:
    from streamtag.sources import parse_spec

    try:
        return parse_spec(spec).kind == "pipe"
    except SourceError:
        return False  # said when the source is built


def worker_processes(config) -> int:
    """How many worker processes ``config`` asks for; for "auto", from the CPUs and the memory
    this process may use (affinity, cgroup quotas, streamtag.daemon.cpus) and where the model
    serves, said on the terminal."""
    from streamtag.daemon.config import MAX_PROCESSES, PROCESSES_AUTO
    from streamtag.daemon.cpus import (
        WORKER_MEMORY,
        auto_processes,
        cgroup_quota,
        usable_cpus,
        usable_memory,
        worker_cores,
    )
    from streamtag.model.inference import serving_device

    piped = [src.id for src in config.sources if _reads_stdin(src.spec)]
    if piped and config.processes != PROCESSES_AUTO and config.processes > 1:
        raise ConfigError(f"source {piped[0]!r} reads pipe: (this command's standard input), "
                          f"which none of {config.processes} worker processes has; run it "
                          "in one process: leave out --processes (or [engine] processes)")
    if config.processes != PROCESSES_AUTO:
        return config.processes
    if piped:
        say(f"--processes auto: 1 worker process: source {piped[0]!r} reads pipe: (this "
            "command's standard input), which only one process can")
        return 1
    gpu = serving_device(config.model.device, config.engine.backend,
                         config.engine.precision).startswith("cuda")
    cpus, memory = usable_cpus(), usable_memory()
    per_worker = worker_cores(config.engine.workers, config.engine.threads, gpu)
    count = min(auto_processes(cpus, per_worker, memory), MAX_PROCESSES)
    quota = cgroup_quota()
    by_memory = auto_processes(cpus, per_worker, memory) < auto_processes(cpus, per_worker)
    # Without a control socket no stream is added later: a worker beyond one a stream would
    # hold its model and serve nothing.
    by_streams = not config.control.endpoint and count > max(1, len(config.sources))
    if by_streams:
        count, by_memory = max(1, len(config.sources)), False
    say(f"--processes auto: {count} worker process{'es' if count > 1 else ''} for "
        f"{cpus:g} usable CPU{'s' if cpus != 1 else ''} (affinity "
        f"{len(os.sched_getaffinity(0))}, cgroup quota "
        f"{'none' if quota is None else f'{quota:g}'}) at {per_worker} "
        f"core{'s' if per_worker != 1 else ''} per worker"
        + (" serving on the GPU" if gpu else "")
        + (f"; limited by {memory / 2**30:.1f} GiB of usable memory at "
           f"{WORKER_MEMORY / 2**30:.2g} GiB per worker" if by_memory else "")
        + (f"; one per stream: {len(config.sources)} stream"
           f"{'s' if len(config.sources) != 1 else ''} and no control socket to add more"
           if by_streams else ""))
    return count


def run_supervised(config, processes: int, args: argparse.Namespace) -> int:
    """``processes`` worker daemons behind this process's endpoints, until a signal (each
    worker drains) or, with --exit-when-done, until every stream has ended."""
    from streamtag.daemon.supervisor import Supervisor
    from streamtag.errors import ModelError

    try:
        supervisor = Supervisor(config, processes, stop_signals=stop_on_signals,
                                exit_when_done=args.exit_when_done,
                                log_level=log_level(args)).start()
    except (ConfigError, ModelError) as exc:
        print(f"streamtag run: {exc}", file=sys.stderr)
        return EXIT_USAGE

    def exit_at_once() -> None:
        print("streamtag run: second signal, exiting at once (the workers drain by "
              "themselves)", file=sys.stderr)
        os._exit(1)

    with stop_on_signals(on_repeat=exit_at_once) as stop:
        pids = ", ".join(str(w["pid"]) for w in supervisor.workers())
        if not args.quiet:
            say(f"{processes} worker processes (pids {pids}) publishing on {supervisor.endpoint}"
                + (f", control on {supervisor.control.endpoint} (its token in "
                   f"{supervisor.token_file})" if supervisor.control else "")
                + f"; supervisor session {supervisor.session}")
        draining = None
        while not supervisor.wait(0.2):
            if draining is None and stop.is_set():
                draining = threading.Thread(target=supervisor.stop, name="streamtag-shutdown",
                                            daemon=True)
                draining.start()
    failed = sorted(supervisor.failed_streams)
    if args.exit_when_done and failed:
        say_failed(failed, len(config.sources))
        return EXIT_FAILED
    return 0


def say(line: str) -> None:
    print(f"streamtag run: {line}", file=sys.stderr, flush=True)
