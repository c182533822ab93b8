"""What the daemon's subscribers hear: the engine's results as protocol messages, in order.

`Broadcast` turns what the engine hands the daemon (a scored window, tag events, dead air, a
closed track, a source's state) into the bodies of ``streamtag.wire.protocol`` on one
`Publisher`, in the order a subscriber reads them, and sends the heartbeat. It knows nothing of
sources, control requests or the daemon's life cycle: the daemon binds the publisher and hands
it over, and ``close`` releases it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from streamtag.engine.batching import WindowResult
from streamtag.engine.health import SilenceEvent
from streamtag.engine.smoothing import TagEvent
from streamtag.engine.tracks import SCORE_DECIMALS, TrackSummary
from streamtag.wire.protocol import ModelRef, SilenceBody, TrackBody
from streamtag.wire.publisher import Publisher

HEARTBEAT_JOIN_S = 2.0  # how long close() waits for the heartbeat thread


def track_body(track: TrackSummary) -> TrackBody:
    """The ``track`` message's body of a track the engine closed, its means rounded as every
    published score is (SCORE_DECIMALS)."""
    def rounded(values: tuple[float, ...]) -> tuple[float, ...]:
        return tuple(round(v, SCORE_DECIMALS) for v in values)

    return TrackBody(title=track.title, reason=track.reason, start_s=track.start_s,
                     end_s=track.end_s, start_sample=track.start_sample,
                     end_sample=track.end_sample, started_at=track.started_at,
                     ended_at=track.ended_at, windows=track.windows, tags=track.tags,
                     mean_raw=rounded(track.mean_raw), mean_smoothed=rounded(track.mean_smoothed),
                     active_share=track.active_share, active=track.active,
                     model=ModelRef(track.model_name, track.model_hash),
                     heard_from_start=track.heard_from_start,
                     loudness_lufs=(None if track.loudness_lufs is None
                                    else round(track.loudness_lufs, 2)))


def silence_body(change: SilenceEvent) -> SilenceBody:
    """The ``silence`` message's body of a change of dead air the engine found."""
    return SilenceBody(state=change.state, time_s=change.time_s, sample=change.sample,
                       start_s=change.start_s, start_sample=change.start_sample,
                       duration_s=round(change.duration_s, 6),
                       threshold_dbfs=change.threshold_dbfs, cause=change.cause,
                       ended=change.ended if change.state == "off" else None)


class Broadcast:
    """The daemon's side of the feed: one `Publisher`, written from any thread.

    ``publisher``: bound (or connected) already; ``close`` closes it.
    """

    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher
        self._stopped = threading.Event()
        self._heartbeat: threading.Thread | None = None

    @property
    def session(self) -> str:
        return self.publisher.session

    def window(self, result: WindowResult, closed: Sequence[TrackSummary] = ()
               ) -> list[TrackBody]:
        """One scored window's messages, in the order a subscriber reads them: the tracks it
        closes first (the window is already the next track's), then its silence changes (an
        "on" explains the tags' "off"), its tag events, and its scores, which already list the
        events' tags as active. Returns the closed tracks' bodies."""
        bodies = self.tracks(result.stream_id, closed)
        self.silence(result.stream_id, result.silence)
        self.events(result.stream_id, result.events, result.sample_rate)
        self.publisher.publish_scores(
            result.stream_id, start_s=result.start_s, end_s=result.end_s,
            start_sample=result.start_sample, end_sample=result.end_sample, tags=result.tags,
            raw=result.raw, smoothed=result.smoothed, active=result.active,
            model={"name": result.model_name, "hash": result.model_hash},
            latency_ms=result.latency_ms, audio=result.audio, mood=result.mood,
            content=result.content)
        return bodies

    def tracks(self, stream_id: str, closed: Iterable[TrackSummary]) -> list[TrackBody]:
        """A ``track`` message per closed track; returns their bodies."""
        bodies = [track_body(track) for track in closed]
        for body in bodies:
            self.publisher.publish(stream_id, body)
        return bodies

    def silence(self, stream_id: str, changes: Iterable[SilenceEvent]) -> None:
        for change in changes:
            self.publisher.publish(stream_id, silence_body(change))

    def events(self, stream_id: str, events: Iterable[TagEvent], sample_rate: float) -> None:
        """An ``event`` message per tag turning on or off, placed in samples at
        ``sample_rate``."""
        for event in events:
            self.publisher.publish_event(stream_id, tag=event.tag, state=event.state,
                                         score=event.score, time_s=event.time_s,
                                         sample=round(event.time_s * sample_rate))

    def status(self, stream_id: str, *, state: str, error: str | None,
               counters: dict[str, Any], title: str | None, source: str,
               station: str | None, heard_from_start: bool | None) -> None:
        """A source's state; its text is published as given (the caller hides a URL's
        secrets)."""
        self.publisher.publish_status(stream_id, state=state, error=error, counters=counters,
                                      title=title, source=source, station=station,
                                      heard_from_start=heard_from_start)

    def held(self) -> AbstractContextManager:
        """Messages published inside leave together (an engine turn's)."""
        return self.publisher.held()

    def start_heartbeat(self, period_s: float, streams: Callable[[], int]) -> None:
        """A heartbeat now, then every ``period_s`` seconds, with the count ``streams()``
        gives, until ``close``. The first goes before this returns: a daemon's first message
        says it is alive, before any stream's status (a restart is heard as such first). Each
        says its interval (protocol 1.8), so a reader knows when one is late."""
        self.publisher.heartbeat(streams(), interval_s=period_s)

        def beat() -> None:
            while not self._stopped.wait(period_s):
                self.publisher.heartbeat(streams(), interval_s=period_s)

        self._heartbeat = threading.Thread(target=beat, name="streamtag-heartbeat",
                                           daemon=True)
        self._heartbeat.start()

    def close(self) -> None:
        """Stops the heartbeat and closes the publisher (with its linger); safe to call
        twice."""
        self._stopped.set()
        if self._heartbeat is not None:
            self._heartbeat.join(HEARTBEAT_JOIN_S)
        self.publisher.close()
