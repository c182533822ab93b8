"""Sharding: the stream id → shard function, the --shard flag and [shard] section, and a daemon
given the whole source list serving exactly its share."""

from __future__ import annotations

import collections
import json
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.helpers import free_port, run_python, run_streamtag

from streamtag.cli import build_parser
from streamtag.daemon.config import (
    ControlConfig,
    DaemonConfig,
    ModelConfig,
    PublishConfig,
    SourceConfig,
    config_from_dict,
    with_overrides,
)
from streamtag.daemon.daemon import Daemon
from streamtag.daemon.shard import ShardConfig, WorkerShard, index_from_host_name, shard_of
from streamtag.errors import ConfigError
from streamtag.wire.control import control_request

TABLE = Path(__file__).parents[1] / "data" / "shard_table.json"
ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:-"


def random_ids(seed: int, count: int) -> list[str]:
    """`count` distinct stream ids of random length and characters."""
    rng = random.Random(seed)
    ids: set[str] = set()
    while len(ids) < count:
        ids.add("".join(rng.choice(ID_CHARS) for _ in range(rng.randint(1, 24))))
    return sorted(ids)


# ---------------------------------------------------------------- the function

def test_the_shard_of_every_stored_id_is_unchanged_for_1_to_16_shards():
    stored = json.loads(TABLE.read_text())
    assert stored["shards"] == list(range(1, 17))
    for sid, row in stored["table"].items():
        assert [shard_of(sid, n) for n in stored["shards"]] == row, sid


def test_the_shard_does_not_depend_on_the_processes_string_hash_seed():
    # Python salts hash() of strings per process; a shard must be the same in every process.
    code = ("import json; from streamtag.daemon.shard import shard_of; "
            "print(json.dumps([shard_of(f'radio-{i}', 7) for i in range(200)]))")
    outputs = {run_python(code, env={**_env(), "PYTHONHASHSEED": seed})
               for seed in ("0", "1", "12345")}
    assert len(outputs) == 1
    assert json.loads(outputs.pop()) == [shard_of(f"radio-{i}", 7) for i in range(200)]


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"}


# derandomize: the same examples every run, so a rare but legitimate 1.5x share (about one
# random draw in a thousand) cannot make the suite flaky.
@settings(derandomize=True, max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), numbered=st.booleans())
def test_no_shard_holds_more_than_one_and_a_half_times_its_share(seed, numbered):
    ids = ([f"station-{seed % 1000}-{i}" for i in range(1000)] if numbered
           else random_ids(seed, 1000))
    counts = collections.Counter(shard_of(sid, 16) for sid in ids)
    assert set(counts) <= set(range(16))
    assert max(counts.values()) <= 1.5 * 1000 / 16, counts


@settings(derandomize=True, max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), count=st.integers(1, 63))
def test_adding_a_shard_moves_streams_only_to_the_new_shard(seed, count):
    ids = random_ids(seed, 400)
    before = {sid: shard_of(sid, count) for sid in ids}
    after = {sid: shard_of(sid, count + 1) for sid in ids}
    moved = [sid for sid in ids if before[sid] != after[sid]]
    assert all(after[sid] == count for sid in moved)  # nothing moves between old shards
    # About 1/(count+1) move; far fewer than a modulo hash, which moves about count/(count+1).
    assert len(moved) <= 3 * len(ids) / (count + 1) + 10


@settings(derandomize=True, max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), machines=st.integers(2, 5), workers=st.integers(2, 8))
def test_the_worker_processes_of_a_shard_split_it_evenly_and_serve_each_stream_once(
        seed, machines, workers):
    # run --shard K/M --processes N: the fleet's assignment is the one a plain daemon has, and
    # each machine's workers split its share by a second hash, every worker getting its part.
    ids = random_ids(seed, 2000)
    for k in range(machines):
        machine = ShardConfig(k, machines)
        parts = [WorkerShard(i, workers, within=machine) for i in range(workers)]
        share = [sid for sid in ids if machine.owns(sid)]
        for sid in ids:
            assert sum(part.owns(sid) for part in parts) == (sid in share)
        counts = [sum(part.owns(sid) for sid in share) for part in parts]
        assert min(counts) >= 0.5 * len(share) / workers, counts
        assert max(counts) <= 1.5 * len(share) / workers, counts
    assert str(WorkerShard(1, 4, within=ShardConfig(2, 3))) == "2/3 (worker 1/4)"
    assert WorkerShard(1, 4, within=ShardConfig(2, 3)).name == "shard 2/3 (worker 1/4)"


def test_the_workers_of_a_machine_that_serves_every_source_are_named_workers_not_shards():
    # run --processes 2 alone: its workers' logs and readiness said "shard 0/2", as if the
    # fleet had two machines. They split the sources as shards of N would.
    ids = random_ids(7, 500)
    parts = [WorkerShard(i, 2) for i in range(2)]
    for sid in ids:
        assert [part.owns(sid) for part in parts] == [shard_of(sid, 2) == i for i in range(2)]
    assert parts[1].name == str(parts[1]) == "worker 1/2"
    assert ShardConfig(1, 2).name == "shard 1/2"


# ---------------------------------------------------------------- flag and config

def test_the_flag_and_the_file_name_the_shard_and_the_flag_wins():
    config = config_from_dict({"shard": {"index": 1, "count": 4}})
    assert config.shard == ShardConfig(1, 4)
    assert with_overrides(config, shard="3/4").shard == ShardConfig(3, 4)
    assert with_overrides(config, shard="auto/5").shard == ShardConfig("auto", 5)
    args = build_parser().parse_args(["run", "--shard", "2/3"])
    assert args.shard == "2/3"


@pytest.mark.parametrize("flag, names", [
    ("3", ["--shard '3'", "K/N"]),
    ("1/", ["K/N"]),
    ("x/3", ["K/N", "auto/3"]),
    ("3/3", ["shard.index 3", "0..2"]),
    ("0/0", ["shard.count", "1-"]),
])
def test_a_bad_shard_flag_says_what_to_write(flag, names):
    with pytest.raises(ConfigError) as info:
        with_overrides(DaemonConfig(), shard=flag)
    for name in names:
        assert name in str(info.value)


@pytest.mark.parametrize("table, names", [
    ({"index": 0, "count": 2, "replicas": 2}, ["unknown key shard.replicas", "index, count"]),
    ({"index": "first", "count": 2}, ["shard.index", "'first'", "auto"]),
    ({"index": 2, "count": 2}, ["shard.index 2", "0..1"]),
    ({"count": 1.5}, ["shard.count"]),
    ({"index": True}, ["shard.index"]),
])
def test_a_bad_shard_section_is_refused_naming_the_key(table, names):
    with pytest.raises(ConfigError) as info:
        config_from_dict({"shard": table})
    for name in names:
        assert name in str(info.value)


@pytest.mark.parametrize("host, count, index", [
    ("streamtag-0", 3, 0),
    ("streamtag-daemon-2", 3, 2),
    ("streamtag-daemon-11.streamtag-daemon.radio.svc.cluster.local", 12, 11),
])
def test_auto_reads_the_statefulset_ordinal_from_the_host_name(host, count, index):
    assert index_from_host_name(host, count) == index
    assert ShardConfig("auto", count).resolve(host) == ShardConfig(index, count)


@pytest.mark.parametrize("host, names", [
    ("buildbox", ["'buildbox'", "NAME-K", "--shard K/3"]),
    ("streamtag-3", ["shard 3", "shard.count is 3", "replicas"]),
    ("node-7.example-1", ["'node-7.example-1'", "shard 7"]),
])
def test_auto_on_a_host_name_without_a_fitting_ordinal_is_a_clear_error(host, names):
    with pytest.raises(ConfigError) as info:
        ShardConfig("auto", 3).resolve(host)
    for name in names:
        assert name in str(info.value)


def test_run_with_auto_on_a_host_without_an_ordinal_exits_2_in_one_line(model_path):
    done = run_streamtag("run", "--model", str(model_path), "--shard", "auto/3",
                         "--publish", "tcp://127.0.0.1:*", "--control", "",
                         env={**_env(), "HOSTNAME": "buildbox"}, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("streamtag run: ")
    assert "'buildbox'" in lines[0] and "--shard K/3" in lines[0]


def test_auto_takes_the_pod_name_kubernetes_puts_in_hostname(model_path, monkeypatch):
    monkeypatch.setenv("HOSTNAME", "streamtag-daemon-1")
    daemon = Daemon(DaemonConfig(model=ModelConfig(path=str(model_path)),
                                 shard=ShardConfig("auto", 2)))
    assert daemon.shard == ShardConfig(1, 2)


# ---------------------------------------------------------------- a daemon serves its share

@pytest.fixture(scope="module")
def long_file(tmp_path_factory):
    from streamtag.audio.files import write_audio
    from streamtag.audio.testsignals import music_like

    path = tmp_path_factory.mktemp("audio") / "long.flac"
    write_audio(path, music_like(30.0, 16000, seed=3), 16000)
    return path


def test_a_daemon_serves_exactly_its_share_and_refuses_another_shards_source(
        model_path, long_file, tmp_path):
    sources = tuple(SourceConfig(f"radio-{i:02d}", f"file:{long_file}", {"realtime": True})
                    for i in range(12))
    owners = {s.id: shard_of(s.id, 3) for s in sources}
    assert set(owners.values()) == {0, 1, 2}  # the test needs every shard to own something
    control = f"tcp://127.0.0.1:{free_port()}"
    config = DaemonConfig(
        model=ModelConfig(path=str(model_path), device="cpu"), sources=sources,
        publish=PublishConfig(endpoint="tcp://127.0.0.1:*"),
        control=ControlConfig(endpoint=control, file_roots=(str(long_file.parent),)),
        shard=ShardConfig(1, 3))
    daemon = Daemon(config).start()
    try:
        status = control_request(control, {"cmd": "status"})
        assert status["shard"] == {"index": 1, "count": 3}
        assert set(status["streams"]) == {sid for sid, k in owners.items() if k == 1}

        other = next(sid for sid, k in owners.items() if k == 2)
        reply = control_request(control, {"cmd": "add_source", "id": other,
                                          "spec": f"file:{long_file}"})
        assert reply["ok"] is False
        assert "belongs to shard 2/3" in reply["error"] and "shard 1/3" in reply["error"]
        new = next(sid for sid in (f"extra-{i}" for i in range(100)) if shard_of(sid, 3) == 1)
        reply = control_request(control, {"cmd": "add_source", "id": new,
                                          "spec": f"file:{long_file}"})
        assert reply["ok"] is True
        assert other not in control_request(control, {"cmd": "status"})["streams"]
    finally:
        daemon.stop()
