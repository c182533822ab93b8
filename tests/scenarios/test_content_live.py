"""Programmes of music with speech between the pieces, played live through Icecast (MP3, in
real time, each part's title announced as it starts) and tagged by a real daemon with the
shipped default model:

- a synthesised bulletin, with no speech detector installed (the content network decides):
  the scores say speech over it and list no tag, and its track summary has none;
- recorded people (warzone2100's voice actor reading the tutorial, a woman saying Mandarin
  syllables one at a time) with silero-vad installed from its wheel, as `streamtag models
  install speech` does: each voice is mostly speech and each piece mostly music, no tag is on
  over speech, and the voices' track summaries have none.

Slow: each takes its programme's length."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from support.content_material import (
    RATE,
    festival_speech,
    game_music,
    held_out_song,
    midi_music,
    require,
)
from support.helpers import make_config, started, stop_process

from streamtag.audio.files import write_audio
from streamtag.catalog.shipped import default_model_path
from streamtag.daemon.config import SourceConfig

# ICY titles ride in the stream at intervals and the daemon hears what Icecast buffered
SLACK_S = 5.0


@dataclass(frozen=True)
class Part:
    title: str
    kind: str  # music or speech
    audio: np.ndarray

    @property
    def seconds(self) -> float:
        return len(self.audio) / RATE


def spoken(audio: np.ndarray, seconds: float) -> np.ndarray:
    audio = audio[: round(seconds * RATE)]
    return audio / np.abs(audio).max() * 0.5


def air(tmp_path: Path, parts: list[Part]) -> list:
    """Plays ``parts`` live into a daemon with the shipped model, announcing each title as its
    part starts; returns every message the daemon published."""
    from support.servers import icecast_server

    path = tmp_path / "programme.wav"
    write_audio(path, np.concatenate([p.audio for p in parts]).astype(np.float32), RATE)
    starts = np.cumsum([0.0] + [p.seconds for p in parts])
    with icecast_server() as (icecast, log):
        feeder = subprocess.Popen(
            ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-re", "-i", str(path),
             "-ac", "2", "-ar", "44100", "-c:a", "libmp3lame", "-b:a", "128k",
             "-content_type", "audio/mpeg", "-progress", "pipe:1", "-stats_period", "0.1",
             "-f", "mp3",
             f"icecast://source:{icecast.password}@127.0.0.1:{icecast.port}{icecast.mount}"],
            stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, text=True)
        daemon = sub = None
        try:
            icecast.wait_live(10)
            icecast.admin("metadata", mode="updinfo", song=parts[0].title)
            daemon, sub = started(make_config(default_model_path(), tmp_path))
            daemon.add_source(SourceConfig("radio", icecast.url))
            messages, announced = [], 1
            for line in feeder.stdout:
                key, _, value = line.strip().partition("=")
                if key == "out_time_us" and value.isdigit():
                    played = int(value) / 1e6
                    if announced < len(parts) and played >= starts[announced]:
                        icecast.admin("metadata", mode="updinfo", song=parts[announced].title)
                        announced += 1
                while (msg := sub.recv(0)) is not None:
                    messages.append(msg)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # the last windows and the track's end
                msg = sub.recv(200)
                if msg is not None:
                    messages.append(msg)
        finally:
            stop_process(feeder)
            feeder.stdout.close()
            if daemon is not None:
                daemon.stop()
                sub.close()
    return messages


def inside(messages: list, title: str) -> tuple:
    """The track of ``title`` (the stream's audio time starts when the daemon connected: a
    part is placed by its title's track message) and the windows that lie inside it."""
    (track,) = [m.body for m in messages if m.msg_type == "track" and m.body.title == title]
    windows = [m.body for m in messages if m.msg_type == "scores"
               and track.start_s + SLACK_S <= m.body.start_s
               and m.body.end_s <= track.end_s - 1.0]
    return track, windows


def share(windows: list, content: str) -> float:
    return sum(b.content == content for b in windows) / len(windows)


@pytest.mark.slow
def test_a_live_bulletin_between_music_has_no_music_tags(tmp_path):
    require()
    parts = [Part("First piece", "music", game_music(1, 30.0)),
             Part("News bulletin", "speech", spoken(festival_speech(tmp_path), 30.0)),
             Part("Second piece", "music", game_music(4, 30.0))]
    messages = air(tmp_path, parts)
    scores = [m.body for m in messages if m.msg_type == "scores"]
    news, windows = inside(messages, "News bulletin")
    assert len(windows) >= 15
    assert all(b.content == "speech" and b.active == () for b in windows), \
        [(b.start_s, b.content, b.active) for b in windows]
    assert news.active == ()
    music = [b for b in scores if b.end_s <= news.start_s - 1.0
             or b.start_s >= news.end_s + SLACK_S]
    assert sum(b.content == "music" for b in music) >= 0.9 * len(music)


@pytest.fixture
def speech_detector(tmp_path, monkeypatch) -> None:
    """silero-vad installed from its wheel into this test's store, as users install it."""
    from support.speech_material import silero_wheel

    from streamtag.catalog import installed

    monkeypatch.setenv("STREAMTAG_HOME", str(tmp_path / "home"))
    installed.install(["speech"], source=silero_wheel(), log=lambda line: None)


@pytest.mark.slow
def test_live_recorded_voices_between_music_are_speech_with_no_tags(tmp_path, speech_detector):
    from support.speech_material import gcin_syllables, warzone_tutorial
    from support.speech_material import require as require_voices

    require()
    require_voices()
    parts = [Part("Opening", "music", game_music(0, 20.0)),
             Part("Tutorial", "speech", spoken(warzone_tutorial(RATE), 25.0)),
             Part("Rock", "music", held_out_song("War of freedom", 20.0, 20.0)),
             Part("Syllables", "speech", spoken(gcin_syllables(RATE), 25.0)),
             Part("Closing", "music", midi_music(tmp_path, 0, 20.0)),
             # its title closes the track before it
             Part("Sign-off", "music", game_music(2, 5.0))]
    messages = air(tmp_path, parts)
    wrong = []
    for n, part in enumerate(parts[:-1]):
        track, windows = inside(messages, part.title)
        said = (part.title, [(round(b.start_s - track.start_s, 1), b.content, len(b.active))
                             for b in windows])
        # the daemon joins the stream during the first part
        if len(windows) < (5 if n == 0 else 10):
            wrong.append(("too few windows", said))
        elif part.kind == "speech":
            if share(windows, "speech") < 0.8:
                wrong.append(("not mostly speech", said))
            if any(b.active for b in windows if b.content == "speech"):
                wrong.append(("tags over speech", said))
            if track.active:
                wrong.append(("headline tags", part.title, track.active))
        elif share(windows, "music") < 0.8:
            wrong.append(("not mostly music", said))
    assert not wrong, wrong
