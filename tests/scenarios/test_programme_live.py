"""A programme of real recordings played live through Icecast, as a radio monitor hears it:
an MP3 mount (titles announced by the playout as each item starts) and a chained Ogg mount
(each item one titled Vorbis link) carry the same programme into `streamtag run --loudness`,
`streamtag record` writes what it publishes to SQLite, and `streamtag history` reports it as
text, CSV and JSON. Each item of the table a monitor was held to is checked where a user looks:

- a news bulletin is speech: its windows say so and carry no music tag, no tag turns on in
  it, and its track summary, as-run line, CSV row and JSON entry have no tags;
- digital silence, noise at -60 dBFS and a stuck 1 kHz tone carry no tags either; the tone is
  a tone (in the windows, the silence spans and the as-run log), not silence;
- a track's loudness is EBU R128's: digital silence is "below -70 LUFS", never a number;
- a 20 s encoder stop is logged off air, ending within the stated bound of the station's
  return; the track it fell in, played whole, is logged as heard for all but that bound;
- with the recommended `music` model installed, the orchestral pieces and the solo piano get
  tags of the classical family.

The default run plays 18 s (speech, silence and music) with the shipped model; the whole
programme (about 7 minutes) is slow."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from support.helpers import Feed, free_port, run_streamtag, stop_process, wait_until
from support.programme import (
    RATE,
    Item,
    SourceClient,
    encode,
    require,
    short_programme,
    whole_programme,
)

from streamtag.audio.files import load_audio
from streamtag.audio.loudness import LoudnessMeter, integrated_lufs
from streamtag.history import schema

STREAMS = {"radio": ("/radio.mp3", "audio/mpeg"), "chained": ("/radio.ogg", "application/ogg")}
# A window belongs to an item when it lies inside it, this far from the item's start (the
# content decision is taken every other window and a title rides in the stream at intervals)
# and this far from its end.
INSIDE_START_S, INSIDE_END_S = 1.5, 0.5
NOT_MUSIC = ("speech", "silence", "noise", "tone")
# The tags of the classical family in the music model's list (musicnn's MTT half)
CLASSICAL = {"classical", "strings", "violin", "cello", "piano", "harpsichord", "choir",
             "choral", "opera", "harp", "flute"}
ENCODER_STOP_S = 20.0


@dataclass
class Aired:
    """What the programme put on air and what streamtag said of it."""

    items: list[Item]
    messages: list                 # every message the daemon published
    history: dict                  # streamtag history --json
    text: str                      # streamtag history (text)
    rows: list[dict]               # streamtag history --csv
    radio: SourceClient            # the MP3 mount's source client

    def of(self, stream: str, kind: str) -> list:
        return [m.body for m in self.messages
                if m.header.stream == stream and m.msg_type == kind]

    def track(self, stream: str, title: str):
        (track,) = [t for t in self.of(stream, "track") if t.title == title]
        return track

    def inside(self, stream: str, title: str, after_s: float = INSIDE_START_S) -> list:
        """The windows of ``stream`` inside the item ``title`` (by its track's audio time),
        from ``after_s`` into it."""
        t = self.track(stream, title)
        return [b for b in self.of(stream, "scores")
                if t.start_s + after_s <= b.start_s and b.end_s <= t.end_s - INSIDE_END_S]

    def entry(self, stream: str, title: str) -> dict:
        (entry,) = [e for e in self.history["asrun"]
                    if e["stream"] == stream and e["title"] == title]
        return entry

    def row(self, stream: str, title: str) -> dict:
        (row,) = [r for r in self.rows if r["kind"] == "track" and r["stream"] == stream
                  and r["title"] == title]
        return row


def play(tmp_path: Path, items: list[Item], model: str, home: Path,
         stop_at: float | None = None, sections: str = "") -> Aired:
    """Plays ``items`` live (both mounts; the MP3 encoder stopped for ENCODER_STOP_S at
    programme second ``stop_at``) into `streamtag run --model MODEL --loudness`, with
    `streamtag record`, and reads `streamtag history` once the programme has played;
    ``sections``: more of the daemon's config (TOML)."""
    from support.servers import icecast_server, port_open

    starts = np.cumsum([0.0] + [i.seconds for i in items])
    mp3 = encode(tmp_path, items, "mp3")
    ogg = encode(tmp_path, items, "ogg")
    env = {**os.environ, "STREAMTAG_HOME": str(home)}
    publish, control = (f"tcp://127.0.0.1:{free_port()}" for _ in range(2))
    url = f"sqlite:///{tmp_path / 'tags.db'}"
    db = schema.create_db_engine(url)
    schema.upgrade(db)
    daemon = recorder = feed = None
    clients: dict[str, SourceClient] = {}
    with icecast_server() as (icecast, log):
        try:
            config = tmp_path / "daemon.toml"  # control may add streams of this machine
            config.write_text(f'[control]\nendpoint = "{control}"\nallow_hosts = ["127.0.0.1"]\n'
                              + sections)
            daemon = run_streamtag("run", "--config", str(config), "--model", model,
                                   "--loudness", "--publish", publish, "-q", popen=True, env=env)
            feed = Feed(publish)
            wait_until(lambda: feed.of("heartbeat") or daemon.poll() is not None, 120,
                       "the daemon to publish", interval=0.2)
            assert daemon.poll() is None, daemon.communicate()[1]
            recorder = run_streamtag("record", "--connect", publish, "--db", url, "-q",
                                     popen=True, env=env)
            wait_until(lambda: heard(db) or recorder.poll() is not None, 60,
                       "the recorder to store the daemon's heartbeat", interval=0.2)
            assert recorder.poll() is None, recorder.communicate()[1]
            assert port_open(icecast.port), f"icecast stopped: {icecast_log(icecast, log)}"
            clients["radio"] = SourceClient(
                icecast, *STREAMS["radio"], mp3, titles=list(zip(starts, (i.title for i in items),
                                                                 strict=False)),
                stop_at=None if stop_at is None else (stop_at, ENCODER_STOP_S))
            clients["chained"] = SourceClient(icecast, *STREAMS["chained"], ogg)
            for stream, (mount, _) in STREAMS.items():
                added = run_streamtag("control", "add", stream,
                                      f"http://127.0.0.1:{icecast.port}{mount}",
                                      "--control", control, env=env, timeout=60)
                assert added.returncode == 0, added.stderr
            wait_until(lambda: all("streamtag" in icecast.admin("listclients", mount=mount)
                                   for mount, _ in STREAMS.values()), 30,
                       "the daemon to listen to both mounts", interval=0.1)
            for client in clients.values():
                client.release()
            playing_s = sum(p.seconds for p in mp3) + (0 if stop_at is None else ENCODER_STOP_S)
            for client in clients.values():
                client.join(playing_s + 60)
            ended = time.monotonic()
            # the mounts end with the programme: each stream's last windows are out once its
            # source notices
            wait_until(lambda: all(any(m.header.stream == s and m.body.state != "running"
                                       for _, m in feed.of("status", since=ended - 2.0))
                                   for s in STREAMS), 60, "the daemon to hear the mounts end",
                       interval=0.2)
            time.sleep(3.0)
            result = history(env, url, "--json")
            text = history(env, url, "--tz", "UTC").stdout
            rows = list(csv.DictReader(io.StringIO(history(env, url, "--csv").stdout)))
            # kept with the test's files, for a look after a failure
            (tmp_path / "history.json").write_text(result.stdout)
            (tmp_path / "history.txt").write_text(text)
        finally:
            for client in clients.values():
                client.close()
            for proc in (recorder, daemon):
                if proc is not None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.communicate(timeout=30)
                    except subprocess.TimeoutExpired:
                        stop_process(proc)
            if feed is not None:
                feed.close()
            db.dispose()
    messages = [m for _, m in feed.messages]
    return Aired(items, messages, json.loads(result.stdout), text, rows, clients["radio"])


def icecast_log(icecast, log) -> str:
    """What Icecast and its clients said, for a failure's message."""
    log.flush()
    return " | ".join(path.read_text(errors="replace")[-2000:]
                      for path in (Path(log.name), icecast.directory / "error.log")
                      if path.exists())


def heard(db) -> bool:
    with db.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(schema.daemons)).scalar() > 0


def history(env: dict, url: str, *args: str) -> subprocess.CompletedProcess:
    done = run_streamtag("history", "--db", url, *args, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return done


def offline_lufs(audio: np.ndarray) -> float | None:
    """EBU R128 integrated loudness of an item as aired (the same audio in both channels)."""
    meter = LoudnessMeter()
    meter.accept(np.stack([audio, audio], axis=1), RATE)
    return integrated_lufs(meter.pop_blocks())


# -- what a user checks, per item ----------------------------------------------------------


def assert_no_music_tags(aired: Aired, stream: str, item: Item, silence_s: float) -> None:
    """The item is what it is in its windows, and no music tag is on anywhere a user looks.
    Silence is dead air once it has lasted ``silence_s`` (the daemon's [health] silence_s): a
    pause in music shorter than that keeps its tags until then."""
    inside = aired.inside(stream, item.title)
    assert inside, (stream, item.title)
    said = [b.content for b in inside]
    expected = {"silence": {"silence"}, "noise": {"noise", "silence"}, "tone": {"tone"},
                "speech": {"speech"}}[item.kind]
    assert set(said) <= expected, (stream, item.title, said)
    quiet = "silence" in said
    confirmed = aired.inside(stream, item.title, max(INSIDE_START_S, silence_s if quiet else 0))
    assert confirmed and all(b.active == () for b in confirmed), (
        stream, item.title, [(b.start_s, b.active) for b in confirmed])
    track = aired.track(stream, item.title)
    # an event's time is its window's end; a window reaching past the item's edges may take
    # its neighbour's decision
    window_s = inside[0].end_s - inside[0].start_s
    ons = [e for e in aired.of(stream, "event") if e.state == "on"
           and track.start_s + INSIDE_START_S + window_s <= e.time_s
           <= track.end_s - INSIDE_END_S]
    assert ons == [], (stream, item.title, ons)
    assert track.active == (), (stream, item.title, track.active)
    entry = aired.entry(stream, item.title)
    assert entry["top"] == [] and entry["active"] == [], entry
    row = aired.row(stream, item.title)
    assert row["detail"] == "" and not [v for k, v in row.items()
                                        if k.startswith("tag:") and v], row
    lines = [line for line in aired.text.splitlines() if f"  {item.title}  " in line
             and "tags:" in line]
    assert len(lines) == len(STREAMS) and all(line.endswith("tags: -") for line in lines), lines


def assert_loudness_below_gate(aired: Aired, stream: str, title: str) -> None:
    entry = aired.entry(stream, title)
    assert entry["loudness_lufs"] is None and entry["loudness_below_gate"], entry
    assert aired.row(stream, title)["loudness_lufs"] == ""


def test_a_short_live_programme_is_speech_silence_and_music_where_they_played(tmp_path):
    """18 s through both mounts with the shipped model: the content and the missing tags are
    the model's business not at all."""
    require(short=True)
    items = short_programme(tmp_path)
    # a station that calls 1.5 s of silence dead air (the default is 10 s)
    aired = play(tmp_path, items, "default", tmp_path / "home",
                 sections="[health]\nsilence_s = 1.5\n")
    for stream in STREAMS:
        assert_no_music_tags(aired, stream, items[1], 1.5)   # the bulletin
        assert_no_music_tags(aired, stream, items[2], 1.5)   # dead air
        assert_loudness_below_gate(aired, stream, items[2].title)
        # the music before them is music (its first window, from the stream's start)
        first = aired.of(stream, "scores")[0]
        assert first.end_s <= aired.track(stream, items[0].title).end_s
        assert first.content == "music", first
    # speech is counted as such in the history: a span per stream
    assert {s["stream"] for s in aired.history["speech"]} == set(STREAMS)


def music_home(home: Path) -> str:
    """The recommended model installed in ``home`` when musicnn's checkpoints are here (its
    name), else the shipped model's name."""
    from streamtag.catalog.musicnn import find_installed_package

    if find_installed_package() is None:
        return "default"
    done = run_streamtag("models", "install", "music", env={**os.environ,
                                                            "STREAMTAG_HOME": str(home)},
                         timeout=600)
    assert done.returncode == 0, done.stderr
    return "music"


class Verdicts:
    """Each item's checks, run to the end: the programme takes minutes, so one run says which
    items held and which did not, then fails with all that did not."""

    def __init__(self) -> None:
        self.failed: list[str] = []

    def check(self, what: str, check, *args) -> None:
        try:
            check(*args)
        except AssertionError as exc:
            self.failed.append(f"{what}: {exc}")

    def done(self) -> None:
        assert not self.failed, "\n".join(self.failed)


def aired_lufs(tmp_path: Path, stream: str, items: list[Item], title: str) -> float | None:
    """The EBU R128 loudness of an item as its stream carried it (decoded from what was sent:
    the codec changes quiet noise's level), the same audio in both channels."""
    n = [i.title for i in items].index(title)
    if stream == "radio":
        start = round(sum(i.seconds for i in items[:n]) * RATE)
        audio = load_audio(tmp_path / "programme.mp3", RATE)[0][start: start
                                                                 + len(items[n].audio)]
    else:
        audio = load_audio(tmp_path / f"link{n}.ogg", RATE)[0]
    # a second off each end: a few ms of the music beside it would pass the gates and
    # outweigh the quiet item (the stream's readings of it lie inside it too)
    return offline_lufs(audio[RATE:-RATE])


@pytest.mark.slow
def test_the_issue_s_programme_played_live_is_reported_truthfully_item_by_item(tmp_path):
    """About 7 minutes of real recordings, a bulletin, dead air, quiet noise, a stuck tone and
    a 20 s encoder stop, with the recommended model where musicnn's checkpoints are installed
    (pip install --no-deps musicnn==0.1.0): every item as a user would check it."""
    require()
    items = whole_programme(tmp_path)
    by_title = {i.title: i for i in items}
    starts = dict(zip((i.title for i in items), np.cumsum([0.0] + [i.seconds for i in items]),
                      strict=False))
    home = tmp_path / "home"
    model = music_home(home)
    stopped = "Frontiers"  # the encoder stops 25 s into it, for 20 s
    aired = play(tmp_path, items, model, home, stop_at=starts[stopped] + 25.0)
    silence_s = 10.0  # the daemon's default [health] silence_s
    verdicts = Verdicts()
    check = verdicts.check

    def quiet_noise_is_its_own(stream: str) -> None:
        measured = aired.entry(stream, "Quiet noise")["loudness_lufs"]
        expected = aired_lufs(tmp_path, stream, items, "Quiet noise")
        assert measured is not None and abs(measured - expected) <= 1.0, (measured, expected)

    def tone_is_a_tone(stream: str) -> None:
        tone = aired.entry(stream, "Stuck tone")
        assert tone["tone_s"] >= 0.5 * by_title["Stuck tone"].seconds, tone
        assert any(s["stream"] == stream and s["detail"] == "stuck tone"
                   for s in aired.history["silence"]), aired.history["silence"]

    def piano_is_piano(stream: str) -> None:
        assert "piano" in aired.track(stream, "Greensleeves").active

    def orchestral_leads_with_classical(stream: str, title: str) -> None:
        top = {name for name, _ in aired.entry(stream, title)["top"]}
        assert top & CLASSICAL, top

    for stream in STREAMS:
        for title in ("News bulletin", "Dead air", "Quiet noise", "Stuck tone"):
            check(f"{stream} {title}: no music tags", assert_no_music_tags, aired, stream,
                  by_title[title], silence_s)
        # digital silence has no loudness; quiet noise its own, not the music's around it
        check(f"{stream} Dead air: below the gate", assert_loudness_below_gate, aired, stream,
              "Dead air")
        check(f"{stream} Quiet noise: its loudness", quiet_noise_is_its_own, stream)
        check(f"{stream} Stuck tone: a tone", tone_is_a_tone, stream)
        if model == "music":
            check(f"{stream} Greensleeves: piano", piano_is_piano, stream)
            for title in ("Battle theme", "Legends of the north"):
                check(f"{stream} {title}: classical leading tags",
                      orchestral_leads_with_classical, stream, title)

    def stop_is_logged_within_its_bound() -> None:
        # off air from the last audio before the stop to the first audio after it, ended in
        # the log within the stated bound of the station's return
        radio = aired.radio
        (outage,) = [s for s in aired.history["off_air"] if s["stream"] == "radio"
                     and s["start"] < radio.back_at]
        assert outage["start"] == pytest.approx(radio.stopped_at, abs=2.0), outage
        assert outage["back_within_s"] is not None and outage["back_within_s"] <= 2.0, outage
        assert radio.back_at <= outage["end"] <= (radio.back_at + outage["back_within_s"]
                                                  + 0.25), (outage, radio.back_at)
        # the track it fell in was played whole: heard all but what the bound let pass, and
        # said to be cut by the outage
        entry = aired.entry("radio", stopped)
        assert "off air" in entry["partial"], entry
        assert entry["audio_s"] >= (by_title[stopped].seconds - outage["back_within_s"]
                                    - 1.0), entry

    def chained_heard_it_whole() -> None:
        whole = aired.entry("chained", stopped)
        assert whole["partial"] == [] and whole["audio_s"] == pytest.approx(
            by_title[stopped].seconds, abs=0.5), whole

    check("radio: the encoder stop", stop_is_logged_within_its_bound)
    check("chained: the track the stop fell in", chained_heard_it_whole)

    def text_names_the_tone() -> None:
        assert "stuck tone" in aired.text

    check("the text names the stuck tone", text_names_the_tone)
    verdicts.done()
