"""A scripted radio session for the history report's tests: a real Publisher sends what a
daemon would for an Icecast station (statuses with titles as they change, a window a second,
tag events, a track per title change), including an outage where the mount answered 404, and
the track now playing left open. The script knows what was played, so a test can compare the
as-run log with it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from support.history_station import MODEL, RATE, TAGS, WINDOW_S, Station

from streamtag.wire.protocol import EventBody, ScoresBody, SilenceBody, StatusBody, TrackBody

SOURCE = "http://127.0.0.1:8000/live.mp3"
NOT_FOUND = "HTTP 404"
SILENCE_CONFIRMED_S = 10  # the daemon's [health] silence_s


@dataclass
class Silence:
    start: float       # wall clock
    end: float


@dataclass
class Played:
    """What the script played: one title, its wall-clock span and why it is partial."""

    title: str
    start: float
    end: float | None  # None: still playing
    partial: list[str] = field(default_factory=list)
    tag: str = ""      # the tag on throughout it
    silence: Silence | None = None


@dataclass
class Outage:
    start: float       # the last audio received (its window's send time)
    end: float         # audio back (the "running" status)
    noticed: float


def play_session(station: Station, stream: str, t0: float, songs: list[tuple[str, int]],
                 outage: tuple[int, float] | None = None, open_last: bool = True,
                 silence: tuple[int, int] | None = None,
                 heard: list[bool | None] | None = None,
                 ) -> tuple[list[Played], Outage | None]:
    """Plays `songs` (title, seconds of audio) from wall-clock `t0`, one window a second.
    `outage`: (audio second, seconds off air): the source loses the mount after that second's
    window and gets audio again that long after it. `silence`: (audio second, seconds) of dead
    air, announced as the daemon does (on once confirmed, off when sound is back; the span is
    the `silence` of the song it fell in). The last song is left playing when `open_last`.
    Each song has one tag on throughout (TAGS in turn). `heard`: per song, whether the source
    knew it heard the song from its start (protocol 1.5's heard_from_start; None: not known),
    sent with its title's status and its track."""
    played: list[Played] = []
    lag = 0.0  # wall clock minus audio time: grows by each outage
    found: Outage | None = None
    station.send(stream, StatusBody(state="starting", source=SOURCE), t0 - 1)
    audio = 0
    for n, (title, seconds) in enumerate(songs):
        start_wall = t0 + audio + lag
        from_start = heard[n] if heard is not None else None
        station.send(stream, StatusBody(state="running", title=title, source=SOURCE,
                                        heard_from_start=from_start), start_wall)
        tag = TAGS[n % len(TAGS)]
        station.send(stream, EventBody(tag=tag, state="on", score=0.9, time_s=audio + WINDOW_S,
                                       sample=int((audio + WINDOW_S) * RATE)), start_wall)
        joined = from_start is False or (from_start is None and n == 0)
        part = Played(title, start_wall, None, ["joined"] if joined else [], tag)
        sums = np.zeros(len(TAGS))
        first_audio = audio
        for i in range(audio, audio + seconds):
            # the window ending at audio second i + 1 (a window counts for the track its end
            # falls in), sent when that audio has been heard
            end = i + 1
            sent = t0 + end + lag
            smoothed = np.array([0.9 if t == tag else 0.1 + 0.01 * j
                                 for j, t in enumerate(TAGS)])
            sums += smoothed
            station.send(stream, ScoresBody(
                start_s=max(0.0, end - WINDOW_S), end_s=float(end),
                start_sample=int(max(0.0, end - WINDOW_S) * RATE), end_sample=end * RATE,
                tags=TAGS, raw=smoothed.tolist(), smoothed=smoothed.tolist(), active=[tag],
                model=MODEL, latency_ms=1.0), sent)
            if silence is not None and end in (silence[0] + SILENCE_CONFIRMED_S,
                                               silence[0] + silence[1]):
                on = end != silence[0] + silence[1]
                station.send(stream, SilenceBody(
                    state="on" if on else "off", time_s=float(silence[0] if on else end),
                    sample=(silence[0] if on else end) * RATE, start_s=float(silence[0]),
                    start_sample=silence[0] * RATE, duration_s=float(end - silence[0]),
                    threshold_dbfs=-50.0), sent)
                if not on:
                    part.silence = Silence(sent - silence[1], sent)
            if outage is not None and i == outage[0]:
                noticed = sent + 3.0
                for k in range(3):  # every retry says why
                    station.send(stream, StatusBody(state="reconnecting", error=NOT_FOUND,
                                                    title=title, source=SOURCE),
                                 noticed + 5.0 * k)
                lag += outage[1]
                back = sent + outage[1]
                # the source's sample count says where in the audio the outage fell
                station.send(stream, StatusBody(state="running", title=title, source=SOURCE,
                                                counters={"samples": end * RATE}), back)
                found = Outage(sent, back, noticed)
                if "off air" not in part.partial:
                    part.partial.append("off air")
        audio += seconds
        end_wall = t0 + audio + lag
        last = n == len(songs) - 1
        station.send(stream, EventBody(tag=tag, state="off", score=0.1, time_s=audio,
                                       sample=audio * RATE), end_wall)
        if last and open_last:
            played.append(part)
            break
        part.end = end_wall
        windows = audio - first_audio
        mean = (sums / windows).round(6).tolist()
        share = [1.0 if t == tag else 0.0 for t in TAGS]
        station.send(stream, TrackBody(
            title=title, reason="end" if last else "title_change", start_s=float(first_audio),
            end_s=float(audio), start_sample=first_audio * RATE, end_sample=audio * RATE,
            started_at=start_wall, ended_at=end_wall, windows=windows, tags=TAGS,
            mean_raw=mean, mean_smoothed=mean, active_share=share, active=[tag], model=MODEL,
            heard_from_start=from_start), end_wall + WINDOW_S)
        if last:
            part.partial.append("cut")
        played.append(part)
    return played, found
