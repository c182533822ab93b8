"""A programme of music, a spoken bulletin and music again played live through Icecast (MP3,
in real time, each part's title announced as it starts), tagged by a real daemon with the
shipped default model: the scores say speech over the bulletin and list no tag, and the
bulletin's track summary has none. Slow: it takes the programme's length."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from support.content_material import RATE, festival_speech, game_music, require
from support.helpers import make_config, started, stop_process, wait_until

from streamtag.audio.files import write_audio
from streamtag.catalog.shipped import default_model_path
from streamtag.daemon.config import SourceConfig

PART_S = 30.0
TITLES = ("First piece", "News bulletin", "Second piece")
# ICY titles ride in the stream at intervals and the daemon hears what Icecast buffered
SLACK_S = 5.0


def programme(folder: Path) -> Path:
    speech = festival_speech(folder)[: round(PART_S * RATE)]
    speech = speech / np.abs(speech).max() * 0.5
    audio = np.concatenate([game_music(1, PART_S), speech, game_music(4, PART_S)])
    path = folder / "programme.wav"
    write_audio(path, audio.astype(np.float32), RATE)
    return path


@pytest.mark.slow
def test_a_live_bulletin_between_music_has_no_music_tags(tmp_path):
    from support.servers import icecast_server

    require()
    path = programme(tmp_path)
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
            wait_until(icecast.mount_is_live, 10, "ffmpeg to feed the icecast mount")
            icecast.admin("metadata", mode="updinfo", song=TITLES[0])
            daemon, sub = started(make_config(default_model_path(), tmp_path))
            daemon.add_source(SourceConfig("radio", icecast.url))
            messages, announced = [], 1
            for line in feeder.stdout:
                key, _, value = line.strip().partition("=")
                if key == "out_time_us" and value.isdigit():
                    played = int(value) / 1e6
                    if announced < len(TITLES) and played >= announced * PART_S:
                        icecast.admin("metadata", mode="updinfo", song=TITLES[announced])
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
    scores = [m.body for m in messages if m.msg_type == "scores"]
    # the stream's audio time starts when the daemon connected: place the bulletin by its
    # title's track message
    tracks = {m.body.title: m.body for m in messages if m.msg_type == "track"}
    news = tracks[TITLES[1]]
    inside = [b for b in scores
              if news.start_s + SLACK_S <= b.start_s and b.end_s <= news.end_s - 1.0]
    assert len(inside) >= 15
    assert all(b.content == "speech" and b.active == () for b in inside), \
        [(b.start_s, b.content, b.active) for b in inside]
    assert news.active == ()
    music = [b for b in scores if b.end_s <= news.start_s - 1.0
             or b.start_s >= news.end_s + SLACK_S]
    assert sum(b.content == "music" for b in music) >= 0.9 * len(music)
