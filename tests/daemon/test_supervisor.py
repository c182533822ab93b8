"""``streamtag run --processes N``: N worker daemons on one machine behind one publish and one
control endpoint, supervised; real processes, real sockets on 127.0.0.1.

One supervised run (2 workers, 8 looped file sources at real speed) serves the first tests in
order: every stream comes from exactly one worker, the one its hash names, with its seq
unbroken; control requests need the token and reach the worker that owns the stream; a worker
killed with SIGKILL is started again and its streams (those added by control too) resume under
a new session while the other worker's go on under theirs, unbroken; the metrics port
serves every worker's histograms; SIGTERM drains every worker. Then: a killed supervisor's
workers drain by themselves, `auto` under a restricted CPU affinity, the cgroup v2 quota, and
refusals.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.helpers import (
    Feed,
    daemon_config_file,
    free_port,
    is_ready,
    stop_process,
    tiny_model_file,
    wait_until,
)

import streamtag
from streamtag.audio.files import write_audio
from streamtag.audio.testsignals import music_like
from streamtag.commands import stop_on_signals
from streamtag.commands.status import format_status
from streamtag.daemon.config import (
    ControlConfig,
    DaemonConfig,
    ModelConfig,
    PublishConfig,
    config_from_dict,
    with_overrides,
)
from streamtag.daemon.cpus import (
    WORKER_MEMORY,
    auto_processes,
    available_memory,
    cgroup_memory_limit,
    cgroup_quota,
    usable_cpus,
    usable_memory,
    worker_cores,
)
from streamtag.daemon.shard import ShardConfig, WorkerShard, shard_of
from streamtag.daemon.supervisor import Supervisor
from streamtag.errors import ConfigError
from streamtag.model.inference import cuda_visible, share_the_gpu
from streamtag.wire.control import control_request
from streamtag.wire.security import client_curve, generate_keys
from streamtag.wire.subscriber import Subscriber

WORKERS = 2
STREAMS = [f"radio-{i:02d}" for i in range(8)]


def streamtag_env() -> dict[str, str]:
    """The environment of a command that runs the streamtag this test imports (the checkout's
    or the installed one), as tests/support/hostile_station.py does."""
    root = Path(streamtag.__file__).resolve().parent.parent
    return {**os.environ, "PYTHONPATH": str(root)}


def run(*args: str, popen: bool = False, **kwargs):
    command = [sys.executable, "-m", "streamtag", *args]
    kwargs.setdefault("cwd", tempfile.gettempdir())
    kwargs.setdefault("env", streamtag_env())
    if popen:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, **kwargs)
    return subprocess.run(command, capture_output=True, text=True, **kwargs)


class Run:
    """``streamtag run --processes 2`` with its publish, control and metrics endpoints."""

    def __init__(self, root: Path, env: dict[str, str] | None = None) -> None:
        self.root = root
        self.publish = f"tcp://127.0.0.1:{free_port()}"
        self.control = f"tcp://127.0.0.1:{free_port()}"
        self.metrics_port = free_port()
        self.token_file = root / "control.token"
        audio = root / "station.flac"
        config = daemon_config_file(
            root / "daemon.toml", tiny_model_file(root / "tiny.pt"), audio, STREAMS,
            publish=self.publish, loop=True,
            sections=f'[control]\nendpoint = "{self.control}"\n'
                     f'token_file = "{self.token_file}"\nfile_roots = ["{root}"]\n\n')
        write_audio(audio, music_like(30.0, 16000, seed=4), 16000)
        self.audio = audio
        self.feed = Feed(self.publish)
        self.process = run("run", "--config", str(config), "--processes", str(WORKERS),
                           "--metrics-port", str(self.metrics_port), popen=True,
                           env=env or streamtag_env())
        wait_until(self.ready, 120, "the supervised run to be ready")

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"streamtag run exited: {self.process.stderr.read()}")
        return is_ready(self.metrics_port)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics",
                                    timeout=5) as reply:
            return reply.read().decode()

    def ask(self, request: dict, **kwargs) -> dict:
        kwargs.setdefault("token", self.token_file.read_text().strip())
        return control_request(self.control, request, 10_000, **kwargs)

    def status(self) -> dict:
        reply = self.ask({"cmd": "status"})
        assert reply["ok"], reply
        return reply

    def sessions(self) -> dict[str, int]:
        """Each serving worker's session -> its index."""
        return {w["session"]: w["index"] for w in self.status()["workers"] if w["session"]}

    def close(self) -> None:
        self.feed.close()
        stop_process(self.process, timeout=60)
        self.process.stdout.close()
        self.process.stderr.close()


@pytest.fixture(scope="module")
def supervised(tmp_path_factory):
    served = Run(tmp_path_factory.mktemp("processes"))
    yield served
    served.close()


def owned_by(index: int, prefix: str) -> str:
    """A stream id with ``prefix`` that the hash gives to worker ``index``."""
    return next(f"{prefix}-{i}" for i in range(1000) if shard_of(f"{prefix}-{i}", WORKERS) == index)


def test_every_stream_is_served_once_by_the_worker_its_hash_names(supervised):
    expected = {sid: shard_of(sid, WORKERS) for sid in STREAMS}
    assert set(expected.values()) == set(range(WORKERS))  # both workers have streams
    t0 = time.monotonic()
    wait_until(lambda: supervised.feed.advanced(STREAMS, t0, 4), 60,
               "every stream to publish on the one endpoint")
    sessions = supervised.sessions()
    assert len(sessions) == WORKERS
    serving = supervised.feed.sessions_of(STREAMS, t0)
    assert {s: sessions[session] for s, session in serving.items()} == expected
    status = supervised.status()
    assert {s: status["streams"][s]["worker"] for s in STREAMS} == expected
    assert all(status["streams"][s]["state"] == "running" for s in STREAMS)
    assert [w["restarts"] for w in status["workers"]] == [0] * WORKERS
    # `streamtag status` as a user reads it: each worker, and the worker serving each stream
    text = format_status(status)
    assert f"workers  {WORKERS} processes, 0 restarts" in text
    for worker in status["workers"]:
        assert re.search(rf"^ +worker {worker['index']}  running +pid {worker['pid']}  "
                         rf"{worker['streams']} streams?$", "\n".join(text), re.M), text
    for sid in STREAMS:
        source = text[text.index(next(line for line in text if line.startswith(sid))) + 1]
        assert source.endswith(f"(worker {expected[sid]})"), source
    supervised.feed.assert_seq_unbroken()
    # The merged snapshot (what a dashboard starts from) puts each stream under the session
    # its live messages come with, and names every worker's.
    snapshot = supervised.ask({"cmd": "snapshot"})
    assert snapshot["ok"] and set(snapshot["sessions"]) == set(sessions)
    assert {s: sessions[snapshot["streams"][s]["session"]] for s in STREAMS} == expected


def test_control_requests_need_the_token_and_reach_the_worker_that_owns_the_stream(supervised):
    refused = supervised.ask({"cmd": "status"}, token="not-the-token-" + "x" * 32)
    assert not refused["ok"] and "not authorised" in refused["error"]
    sessions = {index: session for session, index in supervised.sessions().items()}
    added = {index: owned_by(index, "added") for index in range(WORKERS)}
    for sid in added.values():
        reply = supervised.ask({"cmd": "add_source", "id": sid,
                                "spec": f"file:{supervised.audio}", "realtime": True,
                                "loop": True})
        assert reply["ok"], reply
    t0 = time.monotonic()
    wait_until(lambda: supervised.feed.advanced(added.values(), t0, 3), 60,
               "the added streams to publish")
    for index, sid in added.items():  # each from the worker its hash names
        assert {m.header.session for _, m in supervised.feed.of("scores", t0)
                if m.header.stream == sid} == {sessions[index]}
        assert supervised.status()["streams"][sid]["worker"] == index
    # The worker's allow-list answers, in its own words, through the supervisor.
    outside = supervised.ask({"cmd": "add_source", "id": "outside", "spec": "file:/etc/passwd"})
    assert not outside["ok"] and "control.file_roots" in outside["error"]
    twice = supervised.ask({"cmd": "add_source", "id": STREAMS[0],
                            "spec": f"file:{supervised.audio}"})
    assert not twice["ok"] and "already running" in twice["error"]
    # An id no worker serves: the refusal names every worker's streams, not one worker's.
    missing = supervised.ask({"cmd": "remove_source", "id": "no-such-stream"})
    assert not missing["ok"] and "no source with id 'no-such-stream'" in missing["error"]
    for sid in added.values():
        assert sid in missing["error"], missing
    # Removed from worker 0: its stream ends; worker 1 keeps its own for the next test.
    assert supervised.ask({"cmd": "remove_source", "id": added[0]})["ok"]
    wait_until(lambda: any(m.header.stream == added[0] and m.body.state == "ended"
                           for _, m in supervised.feed.of("status", t0)), 30,
               f"{added[0]} to end")


def test_the_metrics_port_serves_every_workers_histograms(supervised):
    # Batch sizes and forward times summed over the workers; each stream's window latency
    # from the worker serving it, as one daemon's port would serve them.
    t0 = time.monotonic()
    wait_until(lambda: supervised.feed.advanced(STREAMS, t0, 2), 60, "every stream to publish")
    families = {f.name: f for f in text_string_to_metric_families(supervised.metrics())}
    latency = families["streamtag_window_latency_seconds"]
    counts = {s.labels["stream"]: s.value for s in latency.samples
              if s.name.endswith("_count")}
    assert set(STREAMS) <= set(counts) and all(counts[sid] >= 2 for sid in STREAMS)
    for name in ("streamtag_batch_size", "streamtag_forward_seconds"):
        samples = families[name].samples
        count = next(s.value for s in samples if s.name == name + "_count")
        buckets = [s for s in samples if s.name == name + "_bucket"]
        assert count > 0 and buckets[-1].labels["le"] == "+Inf" and buckets[-1].value == count
        assert [s.value for s in buckets] == sorted(s.value for s in buckets)  # cumulative
    # every window is in one latency histogram, and in one forward pass's batch
    windows = sum(s.value for s in latency.samples if s.name.endswith("_count"))
    batched = next(s.value for s in families["streamtag_batch_size"].samples
                   if s.name == "streamtag_batch_size_sum")
    assert abs(windows - batched) <= 2 * len(counts)  # windows scored between the two reads
    # what each stream hears, from the worker serving it: one content now, and its windows
    # counted by content as the latency counted them (a window may land between the reads)
    now = families["streamtag_stream_content"].samples
    by_content = collections.Counter()
    for sample in families["streamtag_content_windows"].samples:
        by_content[sample.labels["stream"]] += sample.value
    for sid in STREAMS:
        assert sum(s.value for s in now if s.labels["stream"] == sid) == 1.0
        assert abs(by_content[sid] - counts[sid]) <= 2


def run_totals(metrics: str) -> dict[str, float]:
    """The run-wide counters a scrape serves: forward passes, and the batch-size and forward-time
    histograms' counts."""
    totals = {}
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.name in ("streamtag_batches_total", "streamtag_batch_size_count",
                               "streamtag_batch_size_sum", "streamtag_forward_seconds_count"):
                totals[sample.name] = sample.value
    return totals


def test_a_killed_worker_is_started_again_and_only_its_streams_pause(supervised):
    feed = supervised.feed
    status = supervised.status()
    victim = status["workers"][1]
    scraped_before = time.monotonic()
    before = run_totals(supervised.metrics())
    # with the stream control added to worker 1 in the test before, where that test ran
    theirs = [s for s in STREAMS if shard_of(s, WORKERS) == 1] + [
        s for s in status["streams"] if s.startswith("added-") and shard_of(s, WORKERS) == 1]
    others = [s for s in STREAMS if shard_of(s, WORKERS) == 0]
    # A worker that does not answer (stopped here; a restarting one is seldom caught, it is back
    # in ~3 s): `streamtag status` says its streams are not listed, not that they ended.
    os.kill(victim["pid"], signal.SIGSTOP)
    try:
        stalled = supervised.status()  # after the supervisor's wait for the worker's answer
    finally:
        os.kill(victim["pid"], signal.SIGCONT)
    assert stalled["workers"][1]["state"] == "not answering"
    assert not set(theirs) & set(stalled["streams"]) and set(others) <= set(stalled["streams"])
    assert re.search(rf"^ +worker 1  not answering +pid {victim['pid']}  its streams not listed "
                     r"until it serves$", "\n".join(format_status(stalled)), re.M)
    t0 = time.monotonic()
    os.kill(victim["pid"], signal.SIGKILL)
    killed_at = time.monotonic()
    wait_until(lambda: feed.advanced(theirs, killed_at, 4), 90,
               "the killed worker's streams to resume")
    back = supervised.status()["workers"][1]
    assert back["pid"] != victim["pid"] and back["session"] != victim["session"]
    assert back["restarts"] == 1 and back["state"] == "running"
    assert "SIGKILL" in back["last_exit"]
    shown = "\n".join(format_status(supervised.status()))
    assert f"workers  {WORKERS} processes, 1 restart\n" in shown
    assert re.search(rf"^ +worker 1  running +pid {back['pid']}  .*1 restart \(the last process "
                     r"was killed by SIGKILL\)$", shown, re.M), shown
    for stream in theirs:  # the control-added stream too, under the new session
        assert feed.count(stream, back["session"], killed_at) >= 4
    restarted = {m.header.stream for _, m in feed.messages if getattr(m, "restarted", False)}
    assert restarted == set(theirs)
    # The other worker's streams went on through the kill as if nothing happened, however
    # loaded the machine: still published after it, under the session they had, their seq
    # unbroken (below) and each window's audio following the last, never said to be anything
    # but running. A pause's length is the machine's, not the code's: it is not asserted.
    resumed = time.monotonic()
    wait_until(lambda: feed.advanced(others, resumed, 4), 60,
               "the other worker's streams to go on")
    kept = status["workers"][0]["session"]
    assert supervised.status()["workers"][0]["session"] == kept
    for stream in others:
        windows = [m for _, m in feed.of("scores", t0) if m.header.stream == stream]
        assert {m.header.session for m in windows} == {kept}, stream
        starts = [m.body.start_sample for m in windows]
        hops = {b - a for a, b in zip(starts, starts[1:], strict=False)}
        assert len(hops) == 1, (stream, starts)  # one hop: no window lost, none heard again
    states = {m.body.state for _, m in feed.of("status", t0) if m.header.stream in others}
    assert states <= {"running"}, states
    assert supervised.status()["workers"][0]["restarts"] == 0
    scraped_at = time.monotonic()
    metrics = supervised.metrics()
    assert 'streamtag_worker_restarts_total{worker="1"} 1.0' in metrics
    assert 'streamtag_worker_up{worker="1"} 1.0' in metrics
    # The run's counters keep what the killed worker had counted (a counter that went down
    # would read as a reset to Prometheus's rate(): a burst of every pass counted since). Every
    # window published before the scrape went through a forward pass: only those the killed
    # worker passed between the scrape before the kill and the kill may be missing (how many
    # depends on how soon it caught up after SIGCONT: at most all it published since).
    after = run_totals(metrics)
    assert set(after) == set(before) == {"streamtag_batches_total", "streamtag_batch_size_count",
                                         "streamtag_batch_size_sum",
                                         "streamtag_forward_seconds_count"}
    for name, value in before.items():
        assert after[name] >= value, (name, value, after[name])
    published = sum(t <= scraped_at for t, _ in feed.of("scores"))
    missable = sum(t >= scraped_before and m.header.session == victim["session"]
                   for t, m in feed.of("scores"))
    assert after["streamtag_batch_size_sum"] >= published - missable, (after, published, missable)
    feed.assert_seq_unbroken()


def test_sigterm_drains_every_worker(supervised):
    feed = supervised.feed
    running = [s for s, info in supervised.status()["streams"].items()
               if info["state"] == "running"]
    pids = [w["pid"] for w in supervised.status()["workers"]]
    assert set(STREAMS) <= set(running)  # and, after the tests above, an added stream
    t0 = time.monotonic()
    supervised.process.send_signal(signal.SIGTERM)
    assert supervised.process.wait(90) == 0, supervised.process.stderr.read()
    wait_until(lambda: {m.header.stream for _, m in feed.of("status", t0)
                        if m.body.state == "ended"} >= set(running), 10,
               "every stream's final status")
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    feed.assert_seq_unbroken()


def running(pid: int) -> bool:
    """Whether process ``pid`` exists and has not exited (a zombie has)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_killed_supervisors_workers_drain_by_themselves_and_remove_its_folder(tmp_path):
    # A temporary folder of the run's own (TMPDIR, which mkdtemp reads), so that another
    # streamtag run on the machine adds no folder to the count; short, for its ipc:// paths
    temporary = Path(tempfile.mkdtemp(prefix="st-"))
    served = Run(tmp_path, env={**streamtag_env(), "TMPDIR": str(temporary)})
    try:
        folders = list(temporary.glob("streamtag-run-*"))
        assert len(folders) == 1, folders  # the run's private folder: sockets and token
        folder = folders.pop()
        pids = [w["pid"] for w in served.status()["workers"]]
        t0 = time.monotonic()
        wait_until(lambda: served.feed.advanced(STREAMS, t0, 2), 60, "every stream to publish")
        served.process.kill()  # SIGKILL: the supervisor cleans up nothing
        served.process.wait(10)
        wait_until(lambda: not any(running(pid) for pid in pids), 90,
                   "the workers to see the supervisor gone and exit")
        assert not folder.exists()
    finally:
        served.close()
        shutil.rmtree(temporary, ignore_errors=True)


# -- how many: auto -------------------------------------------------------------------------


def test_auto_under_a_one_cpu_affinity_runs_one_process(tmp_path):
    audio = tmp_path / "short.flac"
    write_audio(audio, music_like(2.0, 16000, seed=1), 16000)
    done = run("run", "--model", str(tiny_model_file(tmp_path / "tiny.pt")), "--device", "cpu",
               "--source", f"file:{audio}", "--publish", f"tcp://127.0.0.1:{free_port()}",
               "--control", "", "--processes", "auto", "--exit-when-done",
               preexec_fn=lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}),
               timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--processes auto: 1 worker process for 1 usable CPU (affinity 1," in done.stderr
    assert "worker processes (pids" not in done.stderr  # one process: no supervisor


def write_cgroup(root: Path, leaf: str, quotas: dict[str, str]) -> Path:
    """A cgroup v2 tree below ``root`` with ``cpu.max`` files, and a /proc/self/cgroup."""
    for path, text in quotas.items():
        (root / path).mkdir(parents=True, exist_ok=True)
        (root / path / "cpu.max").write_text(text)
    membership = root / "proc-self-cgroup"
    membership.write_text(f"0::/{leaf}\n")
    return membership


def test_the_cgroup_quota_caps_the_usable_cpus_at_the_tightest_level(tmp_path):
    membership = write_cgroup(tmp_path, "pod/app", {"pod": "150000 100000",
                                                    "pod/app": "max 100000"})
    assert cgroup_quota(tmp_path, membership) == 1.5
    assert usable_cpus(tmp_path, membership) == min(1.5, len(os.sched_getaffinity(0)))
    membership = write_cgroup(tmp_path / "b", "svc", {"svc": "800000 100000", "": "max"})
    assert cgroup_quota(tmp_path / "b", membership) == 8.0
    assert cgroup_quota(tmp_path / "none", tmp_path / "missing") is None
    (tmp_path / "v1").write_text("12:cpu,cpuacct:/docker/x\n")
    assert cgroup_quota(tmp_path, tmp_path / "v1") is None


def test_auto_counts_a_core_per_worker_on_the_cpu_two_on_a_gpu_or_what_its_threads_take():
    assert worker_cores(1, 1) == 1
    assert worker_cores(1, 1, gpu=True) == 2
    assert worker_cores(2, 2) == 4 and worker_cores(2, 2, gpu=True) == 4
    assert [auto_processes(cpus, 1) for cpus in (1, 1.5, 2, 3, 16, 64)] == [1, 1, 2, 3, 16, 64]
    assert [auto_processes(cpus, 2) for cpus in (1, 1.5, 2, 3, 16, 64)] == [1, 1, 1, 1, 8, 32]
    assert auto_processes(16, 5) == 3


def test_auto_runs_no_more_workers_than_the_memory_holds(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       32000000 kB\nMemFree:        1000000 kB\n"
                       "MemAvailable:    2000000 kB\n")
    assert available_memory(meminfo) == 2000000 * 1024
    assert available_memory(tmp_path / "missing") is None
    membership = write_cgroup(tmp_path / "cg", "pod/app", {"pod": "max 100000",
                                                          "pod/app": "max 100000"})
    (tmp_path / "cg" / "pod" / "memory.max").write_text(f"{3 * 2**30}\n")
    (tmp_path / "cg" / "pod" / "app" / "memory.max").write_text("max\n")
    assert cgroup_memory_limit(tmp_path / "cg", membership) == 3 * 2**30
    assert usable_memory(tmp_path / "cg", membership, meminfo) == 2000000 * 1024
    assert usable_memory(tmp_path / "cg", membership, tmp_path / "missing") == 3 * 2**30
    assert usable_memory(tmp_path / "none", tmp_path / "missing", tmp_path / "missing") is None
    # 16 CPUs in a container of 3 GiB: as many workers as 3 GiB holds, at least one
    assert auto_processes(16, 1, 3 * 2**30) == 3 * 2**30 // WORKER_MEMORY < 16
    assert auto_processes(16, 1, 100 * 2**20) == 1
    assert auto_processes(2, 1, 64 * 2**30) == 2


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_auto_under_a_two_cpu_affinity_runs_two_workers_or_one_per_fixed_stream(tmp_path):
    audio = tmp_path / "short.flac"
    write_audio(audio, music_like(2.0, 16000, seed=1), 16000)
    two = set(sorted(os.sched_getaffinity(0))[:2])
    model = str(tiny_model_file(tmp_path / "tiny.pt"))
    for sources in (["a", "b"], ["a"]):  # no control socket: these streams are all there is
        done = run("run", "--model", model, "--device", "cpu",
                   *[arg for sid in sources for arg in ("--source", f"{sid}=file:{audio}")],
                   "--publish", f"tcp://127.0.0.1:{free_port()}", "--control", "",
                   "--processes", "auto", "--exit-when-done", "--verbose",
                   preexec_fn=lambda: os.sched_setaffinity(0, two), timeout=180)
        assert done.returncode == 0, done.stderr
        if len(sources) == 2:
            assert ("--processes auto: 2 worker processes for 2 usable CPUs (affinity 2,"
                    in done.stderr), done.stderr
            assert "at 1 core per worker" in done.stderr
            assert "2 worker processes (pids" in done.stderr  # supervised
            # each worker names its part as a worker of this machine, not a shard of a fleet
            assert "worker 0/2: serving" in done.stderr and "shard 0/2" not in done.stderr
        else:
            assert ("--processes auto: 1 worker process for 2 usable CPUs (affinity 2,"
                    in done.stderr), done.stderr
            assert "one per stream: 1 stream and no control socket to add more" in done.stderr
            assert "worker processes (pids" not in done.stderr  # one process: no supervisor


# -- refusals ---------------------------------------------------------------------------------


def test_processes_in_the_config_and_its_bad_values():
    assert config_from_dict({"engine": {"processes": "auto"}}).processes == "auto"
    assert config_from_dict({"engine": {"processes": 4, "workers": 1}}).processes == 4
    with pytest.raises(ConfigError, match=r"engine.processes must be .* got 0"):
        config_from_dict({"engine": {"processes": 0}})
    with pytest.raises(ConfigError, match=r"engine.processes .* got 'many'"):
        config_from_dict({"engine": {"processes": "many"}})
    assert with_overrides(DaemonConfig(), processes="3").processes == 3  # the flag: text
    assert with_overrides(DaemonConfig(), processes="auto").processes == "auto"
    with pytest.raises(ConfigError, match=r"--processes: engine.processes must be .* got 0"):
        with_overrides(DaemonConfig(), processes="0")


def test_with_a_shard_the_workers_split_that_shard_and_refuse_the_others_streams(tmp_path):
    # A machine serving shard 1 of a fleet of 2 (`--shard 1/2`) with two worker processes: the
    # workers split that shard's streams by a second hash (by the fleet's again, shard 1's
    # streams would all be worker 1's), and a stream of shard 0 is refused with where it goes.
    machine = ShardConfig(1, 2)
    ids = [f"fleet-{i:02d}" for i in range(12)]
    mine = [sid for sid in ids if machine.owns(sid)]
    worker_of = {sid: WorkerShard(0, WORKERS, within=machine).owner(sid) for sid in mine}
    assert set(worker_of.values()) == set(range(WORKERS)) and len(mine) < len(ids)
    assert {shard_of(sid, WORKERS) for sid in mine} == {1}
    audio = tmp_path / "station.flac"
    write_audio(audio, music_like(30.0, 16000, seed=4), 16000)
    publish, control = (f"tcp://127.0.0.1:{free_port()}" for _ in range(2))
    token_file, metrics_port = tmp_path / "control.token", free_port()
    config = daemon_config_file(
        tmp_path / "daemon.toml", tiny_model_file(tmp_path / "tiny.pt"), audio, ids,
        publish=publish, loop=True,
        sections=f'[control]\nendpoint = "{control}"\ntoken_file = "{token_file}"\n'
                 f'file_roots = ["{tmp_path}"]\n\n')
    feed = Feed(publish)
    process = run("run", "--config", str(config), "--processes", str(WORKERS), "--shard", "1/2",
                  "--metrics-port", str(metrics_port), popen=True)
    try:
        wait_until(lambda: process.poll() is not None or is_ready(metrics_port), 120,
                   "the supervised shard to be ready")
        assert process.poll() is None, process.stderr.read()

        def ask(request: dict) -> dict:
            return control_request(control, request, 10_000, token=token_file.read_text().strip())

        t0 = time.monotonic()
        wait_until(lambda: feed.advanced(mine, t0, 2), 60, "shard 1's streams to publish")
        sessions = feed.sessions_of(mine, t0)  # only shard 1's streams, each from one worker
        assert len(set(sessions.values())) == WORKERS
        status = ask({"cmd": "status"})
        assert status["shard"] == {"index": 1, "count": 2}
        assert {sid: s["worker"] for sid, s in status["streams"].items()} == worker_of
        other = next(f"x{i}" for i in range(100) if shard_of(f"x{i}", 2) == 0)
        refused = ask({"cmd": "add_source", "id": other, "spec": f"file:{audio}"})
        assert not refused["ok"] and "shard 0/2" in refused["error"], refused
        added = next(f"y{i}" for i in range(100) if machine.owns(f"y{i}"))
        assert ask({"cmd": "add_source", "id": added, "spec": f"file:{audio}"})["ok"]
        wait_until(lambda: feed.advanced([added], t0, 1), 60, "the added stream to publish")
        assert ask({"cmd": "status"})["streams"][added]["worker"] == \
            WorkerShard(0, WORKERS, within=machine).owner(added)
        feed.assert_seq_unbroken()
    finally:
        feed.close()
        stop_process(process, timeout=60)
        process.stdout.close()
        process.stderr.close()


def test_a_model_that_cannot_load_stops_every_worker_with_exit_code_2(tmp_path):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a model file")
    done = run("run", "--model", str(bad), "--processes", "2", "--control", "",
               "--publish", f"tcp://127.0.0.1:{free_port()}", timeout=120)
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("streamtag run: ") and "broken.pt" in last


# -- keys -------------------------------------------------------------------------------------


def keyed_control(folder: Path, control: str, server_key, clients: str) -> str:
    """The [control] and [security] sections of a keyed run: its token in ``folder``, the
    clients' keys in ``folder``'s ``clients`` folder, the admins' in its admins folder."""
    return (f'[control]\nendpoint = "{control}"\ntoken_file = "{folder / "token"}"\n\n'
            f'[security]\nserver_key = "{server_key}"\n'
            f'client_keys = "{folder / clients}"\nadmin_keys = "{folder / "admins"}"\n\n')


def test_with_keys_only_allowed_clients_hear_the_workers_and_only_admins_control(tmp_path):
    made = {name: generate_keys(tmp_path / "keys", name) for name in ("daemon", "client",
                                                                      "stranger")}
    for folder in ("clients", "admins"):
        (tmp_path / folder).mkdir()
        shutil.copy(made["client"][0], tmp_path / folder / "client.key")
    audio = tmp_path / "station.flac"
    write_audio(audio, music_like(30.0, 16000, seed=2), 16000)
    publish, control = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    config = daemon_config_file(
        tmp_path / "daemon.toml", tiny_model_file(tmp_path / "tiny.pt"), audio,
        [f"k{i}" for i in range(4)], publish=publish, max_wait_ms=None,
        sections=keyed_control(tmp_path, control, made["daemon"][1], "clients"))
    allowed = client_curve(made["daemon"][0], made["client"][1])
    stranger = client_curve(made["daemon"][0], made["stranger"][1])
    process = run("run", "--config", str(config), "--processes", "2", popen=True)
    heard = Subscriber(publish, curve=allowed)
    unheard = Subscriber(publish, curve=stranger)
    try:
        streams: set[str] = set()

        def hear() -> bool:
            message = heard.recv(200)
            if message is not None and message.header.msg_type == "scores":
                streams.add(message.header.stream)
            return streams == {f"k{i}" for i in range(4)}

        wait_until(hear, 120, "the allowed subscriber to hear every stream of both workers")
        assert all(unheard.recv(100) is None for _ in range(10))
        # An admin's key is the authority: no token needed; a stranger's gets no answer.
        reply = control_request(control, {"cmd": "status"}, 10_000, curve=allowed)
        assert reply["ok"] and set(reply["streams"]) == streams
        assert [w["state"] for w in reply["workers"]] == ["running", "running"]
        with pytest.raises(TimeoutError):
            control_request(control, {"cmd": "status"}, 1500, curve=stranger,
                            token=(tmp_path / "token").read_text().strip())
    finally:
        heard.close()
        unheard.close()
        stop_process(process, timeout=60)
        process.stdout.close()
        process.stderr.close()
    assert process.returncode == 0


def test_with_keys_the_workers_publish_to_a_keyed_proxy_and_the_supervisor_still_controls_them(
        tmp_path):
    # [publish] connect: each worker connects to the proxy's frontend itself, as a CURVE server
    # with the daemon's keys; its control socket then takes CURVE too, and the supervisor is
    # its one admin.
    made = {name: generate_keys(tmp_path / "keys", name) for name in ("daemon", "proxy",
                                                                      "client")}
    for folder, names in (("daemon_clients", ("proxy",)), ("admins", ("client",)),
                          ("proxy_clients", ("client",))):
        (tmp_path / folder).mkdir()
        for name in names:
            shutil.copy(made[name][0], tmp_path / folder / f"{name}.key")
    frontend, backend = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    control = f"tcp://127.0.0.1:{free_port()}"
    audio = tmp_path / "station.flac"
    write_audio(audio, music_like(30.0, 16000, seed=3), 16000)
    config = daemon_config_file(
        tmp_path / "daemon.toml", tiny_model_file(tmp_path / "tiny.pt"), audio,
        [f"c{i}" for i in range(4)], publish=frontend, connect=True, max_wait_ms=None,
        sections=keyed_control(tmp_path, control, made["daemon"][1], "daemon_clients"))
    proxy = run("proxy", "--frontend", frontend, "--backend", backend, "--server-key",
                str(made["proxy"][1]), "--client-keys", str(tmp_path / "proxy_clients"),
                "--daemon-key", str(made["daemon"][0]), popen=True)
    process = run("run", "--config", str(config), "--processes", "2", popen=True)
    heard = Subscriber(backend, curve=client_curve(made["proxy"][0], made["client"][1]))
    try:
        sessions: dict[str, set[str]] = collections.defaultdict(set)

        def hear() -> bool:
            message = heard.recv(200)
            if message is not None and message.header.msg_type == "scores":
                sessions[message.header.stream].add(message.header.session)
            return set(sessions) == {f"c{i}" for i in range(4)}

        wait_until(hear, 120, "every stream of both workers through the keyed proxy")
        reply = control_request(control, {"cmd": "status"}, 10_000,
                                curve=client_curve(made["daemon"][0], made["client"][1]))
        assert reply["ok"] and set(reply["streams"]) == set(sessions)
        assert [w["state"] for w in reply["workers"]] == ["running", "running"]
        by_worker = {w["session"]: w["index"] for w in reply["workers"]}
        assert {s: by_worker[next(iter(its))] for s, its in sessions.items()} == \
            {s: shard_of(s, 2) for s in sessions}
    finally:
        heard.close()
        for started in (process, proxy):
            stop_process(started, timeout=60)
            started.stdout.close()
            started.stderr.close()
    assert process.returncode == 0


def test_exit_when_done_ends_the_run_once_every_workers_streams_have_ended(tmp_path):
    audio = tmp_path / "short.flac"
    write_audio(audio, music_like(1.5, 16000, seed=5), 16000)
    publish = f"tcp://127.0.0.1:{free_port()}"
    ids = [f"f{i}" for i in range(4)]
    assert {shard_of(sid, 2) for sid in ids} == {0, 1}
    feed = Feed(publish)
    try:
        done = run("run", "--model", str(tiny_model_file(tmp_path / "tiny.pt")), "--device",
                   "cpu", *(arg for sid in ids for arg in ("--source", f"{sid}=file:{audio}")),
                   "--realtime", "--publish", publish, "--control", "", "--processes", "2",
                   "--exit-when-done", timeout=120)
        assert done.returncode == 0, done.stderr
        wait_until(lambda: {m.header.stream for _, m in feed.of("status")
                            if m.body.state == "ended"} == set(ids), 10,
                   "every stream's final status")
        assert {m.header.session for _, m in feed.of("scores")} == \
            {m.header.session for _, m in feed.of("status") if m.body.state == "ended"}
        assert len({m.header.session for _, m in feed.of("scores")}) == 2
    finally:
        feed.close()


@pytest.mark.slow  # 7 s; one process's loudness is tested by default
def test_with_loudness_every_worker_measures_and_the_supervisor_serves_it(tmp_path):
    # `run --processes 2 --loudness`: the flag reaches both workers' sources (stereo MP3s at
    # 44.1 kHz), every stream's scores carry its short-term loudness once 3 s have played,
    # and the supervisor's one metrics port serves it for the streams of both workers.
    audio = tmp_path / "stereo.mp3"
    write_audio(audio, [music_like(6.0, 44100, seed=6) * 0.3,
                        music_like(6.0, 44100, seed=7) * 0.3], 44100)
    publish, metrics_port = f"tcp://127.0.0.1:{free_port()}", free_port()
    ids = [f"f{i}" for i in range(4)]
    assert {shard_of(sid, 2) for sid in ids} == {0, 1}
    feed = Feed(publish)
    process = run("run", "--model", str(tiny_model_file(tmp_path / "tiny.pt")), "--device",
                  "cpu", *(arg for sid in ids for arg in ("--source", f"{sid}=file:{audio}")),
                  "--realtime", "--publish", publish, "--control", "", "--processes", "2",
                  "--loudness", "--metrics-port", str(metrics_port), popen=True)
    try:
        def measured() -> set[str]:
            return {m.header.stream for _, m in feed.of("scores")
                    if m.body.audio is not None and m.body.audio.short_term_lufs is not None}
        wait_until(lambda: measured() == set(ids), 60, "every stream's short-term loudness")
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                    timeout=5) as reply:
            metrics = reply.read().decode()
    finally:
        stop_process(process, timeout=60)
        process.stdout.close()
        process.stderr.close()
        feed.close()
    assert len({m.header.session for _, m in feed.of("scores")}) == 2
    for sid in ids:
        assert f'streamtag_loudness_lufs{{meter="short_term",stream="{sid}"}}' in metrics


def test_add_source_stops_at_max_sources_counted_over_every_worker(tmp_path):
    # control.max_sources counts the streams of all the workers. An add under it is accepted
    # on a count up to a second old plus the adds since (asking every worker's status on each
    # add made adding hundreds of streams slow); a refusal comes only after the workers were
    # asked again, so a stream removed a moment ago frees its place for the next add.
    audio = tmp_path / "station.flac"
    write_audio(audio, music_like(10.0, 16000, seed=8), 16000)
    token_file = tmp_path / "control.token"
    config = DaemonConfig(
        model=ModelConfig(path=str(tiny_model_file(tmp_path / "tiny.pt")), device="cpu"),
        publish=PublishConfig(endpoint="tcp://127.0.0.1:*"),
        control=ControlConfig(endpoint="tcp://127.0.0.1:*", token_file=str(token_file),
                              file_roots=(str(tmp_path),), max_sources=3))
    supervisor = Supervisor(config, WORKERS, stop_signals=stop_on_signals).start()
    try:
        token = token_file.read_text().strip()

        def ask(request: dict) -> dict:
            return control_request(supervisor.control.endpoint, request, 10_000, token=token)

        def add(sid: str) -> dict:
            return ask({"cmd": "add_source", "id": sid, "spec": f"file:{audio}",
                        "realtime": True, "loop": True})

        ids = [owned_by(0, "a"), owned_by(1, "b"), owned_by(0, "c")]
        for sid in ids:
            assert add(sid)["ok"]
        refused = add(owned_by(1, "d"))
        assert not refused["ok"]
        assert "3 streams run, the most control.max_sources (3) allows" in refused["error"]
        assert ask({"cmd": "remove_source", "id": ids[0]})["ok"]
        wait_until(lambda: ask({"cmd": "status"})["streams"][ids[0]]["state"] == "ended", 30,
                   f"{ids[0]} to end")
        assert add(owned_by(1, "d"))["ok"]  # within the second: the workers asked again
        assert not add(owned_by(0, "e"))["ok"]
        running = {sid for sid, s in ask({"cmd": "status"})["streams"].items()
                   if s["state"] not in ("ended", "failed")}
        assert running == {ids[1], ids[2], owned_by(1, "d")}
    finally:
        supervisor.stop()


def test_a_worker_on_the_cpu_leaves_the_gpu_allocator_alone():
    # share_the_gpu caps torch's CUDA allocator only where the model serves on CUDA (on a GPU
    # box: tests/model/test_inference_cuda.py); on the CPU, on ONNX Runtime, or with no CUDA
    # device, it sets nothing.
    assert share_the_gpu("cpu", 0.5) is None
    # ONNX Runtime and int8 serve on the CPU whatever GPU the box has: no CUDA context either
    assert share_the_gpu("auto", 0.5, backend="onnxruntime") is None
    assert share_the_gpu("auto", 0.5, precision="int8") is None
    if not cuda_visible():
        assert share_the_gpu("auto", 0.5) is None
        assert share_the_gpu("cuda", 0.5) is None
