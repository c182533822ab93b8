"""Recorders of shards: ``record --shard K/N`` records only the streams of shard K (the hash
``run --shard`` and ``run --processes`` split streams by), so N recorders writing one
database store every message of a fleet exactly once, with gaps judged per stream and the
heartbeats stored by shard 0 alone."""

from __future__ import annotations

import collections
import time

import pytest
from support.helpers import free_port, run_streamtag, stop_process, wait_until
from support.history_station import Station, keys, scrape_received, stored_keys, table_rows

from streamtag.daemon.shard import ShardConfig, shard_of
from streamtag.history import schema
from streamtag.history.recorder import Recorder
from streamtag.wire.protocol import STREAM_MSG_TYPES, StatusBody, topic_for

SHARDS = 3


def streams_per_shard(prefix: str, each: int) -> dict[int, list[str]]:
    """``each`` stream ids of every shard of SHARDS, named prefix-0, prefix-1, ..."""
    found: dict[int, list[str]] = {k: [] for k in range(SHARDS)}
    i = 0
    while min(map(len, found.values())) < each:
        stream = f"{prefix}-{i}"
        owner = shard_of(stream, SHARDS)
        if len(found[owner]) < each:
            found[owner].append(stream)
        i += 1
    return found


def test_recorders_of_three_shards_store_every_message_once_and_gaps_per_stream(db_url):
    """Three recorders of shards 0/3, 1/3 and 2/3 into one database: each takes exactly the
    messages of its own shard's streams; together they store every message once; a seq gap
    in one stream is stored once, for that stream; heartbeats are stored by shard 0 alone."""
    engine = schema.create_db_engine(db_url)
    schema.upgrade(engine)
    station = Station()
    streams = streams_per_shard("radio", 2)
    probes = {k: next(s for s in (f"probe-{i}" for i in range(100))
                      if shard_of(s, SHARDS) == k) for k in range(SHARDS)}
    recorders = [Recorder(schema.create_db_engine(db_url), station.endpoint,
                          owns=ShardConfig(k, SHARDS).owns, heartbeats=k == 0).start()
                 for k in range(SHARDS)]
    try:
        def all_subscribed() -> bool:  # each recorder hears its own shard's probe stream
            for probe in probes.values():
                station.send(probe, StatusBody(state="running"))
            time.sleep(0.05)
            return all(r.stats.received["status"] > 0 for r in recorders)

        wait_until(all_subscribed, 20, "the three recorders to subscribe", interval=0.1)
        time.sleep(0.3)  # the last probes arrive
        before = [dict(r.stats.received) for r in recorders]
        first = len(station.sent)
        for k in range(SHARDS):
            for stream in streams[k]:
                station.play(stream, range(0, 40))
        gapped = streams[1][0]
        station._seq[topic_for("scores", gapped)] += 3  # three windows never sent
        for k in range(SHARDS):
            for stream in streams[k]:
                station.play(stream, range(40, 60))
        station.pub.heartbeat(6)
        played = station.sent[first:]

        def received(k: int) -> dict[str, int]:
            now = recorders[k].stats.received
            return {t: now[t] - before[k][t] for t in STREAM_MSG_TYPES}

        wanted = [collections.Counter(m.msg_type for m in played
                                      if shard_of(m.stream, SHARDS) == k)
                  for k in range(SHARDS)]
        wait_until(lambda: all(received(k) == {t: wanted[k][t] for t in STREAM_MSG_TYPES}
                               for k in range(SHARDS)), 30,
                   "each recorder to receive its shard's messages", interval=0.1)
        wait_until(lambda: all(r.queue.empty() for r in recorders), 30, "the queues to empty")
        for recorder in recorders:
            assert recorder.stop(10)
        # every played message stored once, none missing, whichever recorder wrote it
        stored = stored_keys(engine)
        played_streams = {s for shard in streams.values() for s in shard}
        assert collections.Counter({key: n for key, n in stored.items()
                                    if key[1] in played_streams}) == keys(played)
        # no message written twice (a row kept by ON CONFLICT would hide it), none left out
        assert sum(r.stats.written for r in recorders) == \
            sum(stored.values()) + recorders[0].stats.received["heartbeat"]
        gaps = table_rows(engine, schema.gaps)
        assert [(g.stream, g.msg_type, g.missed, g.cause) for g in gaps] == \
            [(gapped, "scores", 3, "seq")]
        assert [r.stats.gaps for r in recorders] == [0, 1, 0]
        daemons = table_rows(engine, schema.daemons)
        assert [d.session for d in daemons] == [station.session]
        assert [r.stats.received["heartbeat"] for r in recorders][1:] == [0, 0]
    finally:
        for recorder in recorders:
            recorder.stop(0)
            recorder.engine.dispose()
        station.close()
        engine.dispose()


@pytest.mark.slow
def test_three_record_processes_split_a_real_daemons_streams_exactly_once(db_url, tmp_path):
    """A real daemon serving six file streams, three ``streamtag record --shard K/3``
    processes into one database: the database holds exactly the messages a subscriber heard,
    and each recorder received exactly those of its own shard's streams."""
    from support.helpers import make_config, tiny_model_file, wait_for_heartbeat

    from streamtag.audio.files import write_audio
    from streamtag.audio.testsignals import music_like
    from streamtag.daemon.daemon import Daemon
    from streamtag.wire.control import control_request
    from streamtag.wire.subscriber import Subscriber

    streams = streams_per_shard("st", 2)
    probes = streams_per_shard("probe", 1)
    files = {}
    for i, stream in enumerate(sorted(s for shard in streams.values() for s in shard)):
        files[stream] = tmp_path / f"{stream}.flac"
        write_audio(files[stream], music_like(4.0, 22050, seed=i), 22050)
    probe_file = tmp_path / "probe.flac"
    write_audio(probe_file, music_like(30.0, 22050, seed=99), 22050)
    config = make_config(tiny_model_file(tmp_path / "tiny.pt"), tmp_path)
    engine = schema.create_db_engine(db_url)
    schema.upgrade(engine)
    daemon = Daemon(config).start()
    ports = [free_port() for _ in range(SHARDS)]
    recorders = [run_streamtag("record", "--connect", daemon.publisher.endpoint, "--db", db_url,
                               "--shard", f"{k}/{SHARDS}", "--metrics-port", str(ports[k]),
                               popen=True) for k in range(SHARDS)]
    try:
        with Subscriber(daemon.publisher.endpoint) as sub:
            wait_for_heartbeat(sub)
            for (probe,) in probes.values():  # real-time streams each recorder hears first
                reply = control_request(daemon.control.endpoint,
                                        {"cmd": "add_source", "id": probe,
                                         "spec": str(probe_file), "realtime": True})
                assert reply["ok"], reply

            wait_until(lambda: all(scrape_received(p).get("scores", 0) > 0 for p in ports), 60,
                       "each recorder to hear its probe stream", interval=0.2)
            for stream, path in files.items():
                reply = control_request(daemon.control.endpoint,
                                        {"cmd": "add_source", "id": stream,
                                         "spec": str(path)})
                assert reply["ok"], reply
            heard, ended = [], set()
            deadline = time.monotonic() + 90
            while ended != set(files) and time.monotonic() < deadline:
                message = sub.recv(200)
                if message is None or message.stream not in files:
                    continue
                heard.append(message)
                if message.msg_type == "status" and message.body.state == "ended":
                    ended.add(message.stream)
            settle = time.monotonic() + 1.5  # the tracks follow the last window
            while time.monotonic() < settle:
                message = sub.recv(100)
                if message is not None and message.stream in files:
                    heard.append(message)
        assert ended == set(files)
        assert sum(m.msg_type == "scores" for m in heard) >= 6

        def stored_heard():
            return collections.Counter({key: n for key, n in stored_keys(engine).items()
                                        if key[1] in files})

        wait_until(lambda: stored_heard() == keys(heard), 30,
                   "the recorders to store every message heard", interval=0.2)
        gaps = [g for g in table_rows(engine, schema.gaps) if g.stream in files]
        assert gaps == []
        assert len(table_rows(engine, schema.daemons)) == 1  # shard 0's heartbeats, once
    finally:
        for recorder in recorders:
            stop_process(recorder)
            recorder.communicate()
        daemon.stop()
        engine.dispose()


@pytest.mark.parametrize("shard, words", [("3/3", "shard.index 3 is out of range"),
                                          ("1-3", "is not K/N"),
                                          ("0/0", "shard.count must be a whole number")])
def test_record_refuses_a_shard_that_cannot_be_naming_the_fix(tmp_path, capsys, shard, words):
    from streamtag.cli import main

    code = main(["record", "--connect", "tcp://127.0.0.1:9", "--db",
                 f"sqlite:///{tmp_path / 'tags.db'}", "--shard", shard])
    err = capsys.readouterr().err
    assert code == 2 and words in err and "--shard" in err
