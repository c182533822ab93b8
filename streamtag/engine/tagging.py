"""Offline tagging of files (``streamtag tag``), on the daemon's engine.

Each file becomes a stream of the same ``Engine`` the daemon runs, so windows, smoothing and
events are the daemon's. Per file the result is the tag segments (a tag's on event to its off
event, with the mean smoothed score between them) and a summary: the file's headline tags are
those on in more than half of its windows (``engine.tracks.HEADLINE_RULE``, less a rock family
the classical family contradicts: ``engine.tracks.headline_tags``; a tag on for much of a track
has a mean score pulled under its threshold by the rest, so "mean above threshold" named almost
nothing), each with that share and its strength (its mean score over its
threshold: raw scores mean different things for different tags, a sparse tag is sure at 0.06,
a frequent one at 0.3); a file of dead air has none. The mean of the window probabilities per
tag stays in ``mean_scores``. The file is also one track, with the fields of the daemon's
``track`` message (``streamtag.engine.tracks``; its title from the file's title and artist
tags).

Loudness (``loudness``): EBU R128's integrated loudness of the whole file, gated as BS.1770-4
says (absolute gate -70 LUFS, then the relative gate 10 LU under what passed it). A file with no
400 ms block above the absolute gate (digital silence, or audio quieter than -70 LUFS) has no
number: ``loudness_lufs`` is None and ``loudness_below_gate`` True, said "below -70 LUFS".
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import io
import json
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from streamtag.audio.loudness import (
    ABSOLUTE_GATE_LUFS,
    SHORT_TERM_BLOCKS,
    SILENCE_LUFS,
    integrated_lufs,
    loudness_of_power,
)
from streamtag.engine.batching import Engine, EngineConfig, EngineSink, WindowResult
from streamtag.engine.content import MUSIC, SILENCE
from streamtag.engine.health import HealthConfig, SilenceEvent
from streamtag.engine.smoothing import SmoothingConfig, TagEvent
from streamtag.engine.tracks import (
    HEADLINE_RULE,
    SCORE_DECIMALS,
    TrackSummarizer,
    TrackSummary,
    headline_tags,
)
from streamtag.errors import SourceError
from streamtag.model.inference import InferenceModel, keep_freed_memory
from streamtag.sources import FileSource
from streamtag.text import csv_text


@dataclasses.dataclass
class Segment:
    tag: str
    start_s: float
    end_s: float
    mean_score: float
    strength: float = 0.0  # mean_score / the tag's threshold: 1 at the threshold


@dataclasses.dataclass
class DeadAir:
    """Dead air the health check found in a file: "silence" (below the threshold) or "tone"
    (a stuck tone: a steady tone, no music), from its start to its end in the file."""

    cause: str
    start_s: float
    end_s: float

    @property
    def name(self) -> str:
        return "stuck tone" if self.cause == "tone" else "silence"


@dataclasses.dataclass
class FileTags:
    path: str
    duration_s: float = 0.0
    windows: int = 0
    segments: list[Segment] = dataclasses.field(default_factory=list)
    mean_scores: dict[str, float] = dataclasses.field(default_factory=dict)
    # the headline tags: on in more than half of the file's windows (`tags_rule`) less a
    # contradicted rock family (`headline_tags`), the most often on first; none for dead air
    tags: list[str] = dataclasses.field(default_factory=list)
    tags_rule: str = HEADLINE_RULE
    # of each tag in ``tags``: the share of the windows it was on in, and its mean score / its
    # threshold
    tag_share: dict[str, float] = dataclasses.field(default_factory=dict)
    strength: dict[str, float] = dataclasses.field(default_factory=dict)
    error: str | None = None
    title: str | None = None  # from the file's tags
    track: dict | None = None  # the fields of the daemon's track message for this file
    # with ``loudness``: EBU R128 integrated loudness of the whole file (BS.1770-4, gated), and
    # the loudest short-term (3 s) reading, in LUFS; None without it, or below the gate
    loudness_lufs: float | None = None
    max_short_term_lufs: float | None = None
    loudness_measured: bool = False  # asked for (None above then: below the gate, too short)
    # measured, and no 400 ms block above the absolute gate (-70 LUFS): "below -70 LUFS"
    loudness_below_gate: bool = False
    # said where the file cannot be tagged as a model's windows usually are (shorter than one)
    note: str | None = None
    # dead air ([health]): silence and stuck tones, in the file's seconds
    dead_air: list[DeadAir] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class _Collector(EngineSink):
    """Engine sink that turns one stream's windows and events into segments."""

    def __init__(self, model: InferenceModel, silence_dbfs: float) -> None:
        self.model = model
        self.silence_dbfs = silence_dbfs
        self.results: dict[str, FileTags] = {}
        self._raw: dict[str, list[np.ndarray]] = {}
        self._open: dict[str, dict[str, tuple[float, list[float]]]] = {}
        self._tracks: dict[str, TrackSummarizer] = {}
        self._sounding: dict[str, int] = {}  # windows not quiet nor silent ([health])
        # windows per content (streamtag.engine.content), to say what a tagless file was
        self._content: dict[str, collections.Counter] = {}
        self._lock = threading.Lock()

    def start(self, stream_id: str, path: str) -> None:
        self.results[stream_id] = FileTags(path=path)
        self._raw[stream_id] = []
        self._open[stream_id] = {}
        self._tracks[stream_id] = TrackSummarizer(self.model.sample_rate)
        self._sounding[stream_id] = 0
        self._content[stream_id] = collections.Counter()

    def name(self, stream_id: str, title: str | None) -> None:
        """The file's title, from its tags: the title of its one track."""
        self.results[stream_id].title = title
        self._tracks[stream_id].change_title(title, 0)

    def on_window(self, result: WindowResult) -> None:
        with self._lock:
            out = self.results[result.stream_id]
            out.windows += 1
            if not result.quiet:
                self._sounding[result.stream_id] += 1
            self._content[result.stream_id][result.content] += 1
            self._raw[result.stream_id].append(result.raw)
            # dead air is not music, nor is speech or noise (streamtag.engine.content): their
            # windows are quiet to the smoother and count for no tag
            self._tracks[result.stream_id].add_window(
                result.end_sample, result.tags, result.raw, result.smoothed, result.active,
                result.model_name, result.model_hash, music=not result.quiet,
                dead_air_from=dead_air_start(result.silence))
            opened = self._open[result.stream_id]
            self._dead_air(result.stream_id, result.silence)
            self._events(result.stream_id, result.events)
            for tag, (_, scores) in opened.items():
                scores.append(float(result.smoothed[result.tags.index(tag)]))

    def _events(self, stream_id: str, events: list[TagEvent]) -> None:
        opened = self._open[stream_id]
        for e in events:
            if e.state == "on":
                opened[e.tag] = (e.time_s, [])
            elif e.tag in opened:
                start, scores = opened.pop(e.tag)
                if e.time_s <= start:  # on at the last window, off as the file ended: no time
                    continue
                mean = float(np.mean(scores)) if scores else e.score
                threshold = float(self.model.thresholds[self.model.tags.index(e.tag)])
                self.results[stream_id].segments.append(
                    Segment(e.tag, start, e.time_s, mean, ratio(mean, threshold)))

    def _dead_air(self, stream_id: str, changes: list[SilenceEvent]) -> None:
        for change in changes:
            if change.state == "off":
                self.results[stream_id].dead_air.append(
                    DeadAir(change.cause, round(change.start_s, 3), round(change.time_s, 3)))

    def on_silence_end(self, stream_id: str, changes: list[SilenceEvent]) -> None:
        with self._lock:
            self._dead_air(stream_id, changes)

    def on_stream_end(self, stream_id: str, events: list[TagEvent], end_s: float) -> None:
        with self._lock:
            self._events(stream_id, events)
            out = self.results[stream_id]
            out.segments.sort(key=lambda s: (s.start_s, s.tag))
            out.duration_s = end_s
            window_s = window_seconds(self.model)
            if out.error is None and 0.0 < end_s < window_s:
                out.note = (f"shorter than the model's {window_s:.2f} s window: its one "
                            "window is padded with silence, so its tags say little")
            # no track where no audio came (a file that could not be opened)
            closed = self._tracks[stream_id].end(round(end_s * self.model.sample_rate))
            if out.error is None and closed:
                out.track = track_fields(closed[-1])
            if self._raw[stream_id]:
                means = np.mean(self._raw[stream_id], axis=0)
                out.mean_scores = {t: round(float(m), SCORE_DECIMALS)
                                   for t, m in zip(self.model.tags, means, strict=True)}
            if out.track is not None:
                share = dict(zip(out.track["tags"], out.track["active_share"], strict=True))
                out.tags = sorted(headline_tags(out.track["active"], share),
                                  key=lambda t: (-share[t], t))
                out.tag_share = {t: round(share[t], 4) for t in out.tags}
                threshold = dict(zip(self.model.tags, self.model.thresholds, strict=True))
                out.strength = {t: ratio(out.mean_scores.get(t, 0.0), float(threshold[t]))
                                for t in out.tags if t in threshold}
            if self._raw[stream_id] and not self._sounding[stream_id]:
                out.tags, out.tag_share, out.strength = [], {}, {}
                other = {kind: n for kind, n in self._content[stream_id].items()
                         if kind not in (None, MUSIC)}
                if set(other) - {SILENCE}:  # speech, noise or a tone: say what it was
                    out.note = "no music in it (" + ", ".join(
                        f"{kind} {100 * n / out.windows:.0f}%" for kind, n in sorted(
                            other.items(), key=lambda kv: -kv[1])) + "): no tags"
                else:
                    out.note = (f"every window was below {self.silence_dbfs:g} dBFS "
                                "(silence): no tags")


def dead_air_start(changes: list[SilenceEvent]) -> int | None:
    """Where dead air confirmed by a window began (its "on" event), if one was."""
    return next((c.start_sample for c in changes if c.state == "on"), None)


def ratio(score: float, threshold: float) -> float:
    """How far ``score`` stands above ``threshold``, as a multiple (1 at the threshold)."""
    return round(score / threshold, 2) if threshold > 0 else 0.0


def track_fields(track: TrackSummary) -> dict:
    """A track as the daemon's ``track`` message has it in JSON, its means rounded alike."""
    def rounded(values: tuple[float, ...]) -> list[float]:
        return [round(v, SCORE_DECIMALS) for v in values]

    return {"title": track.title, "reason": track.reason, "start_s": track.start_s,
            "end_s": track.end_s, "start_sample": track.start_sample,
            "end_sample": track.end_sample, "started_at": track.started_at,
            "ended_at": track.ended_at, "windows": track.windows, "tags": list(track.tags),
            "mean_raw": rounded(track.mean_raw), "mean_smoothed": rounded(track.mean_smoothed),
            "active_share": list(track.active_share), "active": list(track.active),
            "model": {"name": track.model_name, "hash": track.model_hash}}


def tag_files(paths: Sequence[str | Path], model: InferenceModel,
              smoothing: SmoothingConfig | None = None,
              config: EngineConfig | None = None, loudness: bool = False) -> list[FileTags]:
    """Tags each file; a file that cannot be decoded gets ``error`` set, the others go on.
    ``loudness``: also each file's EBU R128 integrated loudness, measured at its own rate and
    channels."""
    keep_freed_memory()
    # as the daemon: no tag turns on in quiet audio or dead air
    health = HealthConfig()
    collector = _Collector(model, health.silence_dbfs)
    engine = Engine(model, collector, config or EngineConfig(), smoothing, health=health)
    for i, path in enumerate(paths):
        sid = f"f{i}"
        collector.start(sid, str(path))
        engine.add_stream(sid)
        try:
            powers: list[float] = []
            with FileSource(path) as source:
                source.measure_loudness = loudness
                source.open(model.sample_rate)
                collector.name(sid, source.title)
                for chunk in source.chunks(threading.Event()):
                    engine.accept(sid, chunk.samples)
                    powers += [power for _, power in chunk.loudness]
            if loudness:
                _add_loudness(collector.results[sid], powers)
        except SourceError as exc:
            collector.results[sid].error = str(exc)
        engine.finish_stream(sid)
        engine.drain()
    return [collector.results[f"f{i}"] for i in range(len(paths))]


def window_seconds(model: InferenceModel) -> float:
    """The audio one window of the model covers."""
    frontend = model.frontend
    if model.input_kind != "logmel":  # a model that reads samples: its window is samples
        return model.window / model.sample_rate
    return ((model.window - 1) * frontend.hop_length + frontend.n_fft) / frontend.sample_rate


def _add_loudness(out: FileTags, powers: list[float]) -> None:
    out.loudness_measured = True
    integrated = integrated_lufs(powers)
    out.loudness_lufs = None if integrated is None else round(integrated, 2)
    # under 400 ms of audio has no gating block at all: not measured, not below the gate
    out.loudness_below_gate = integrated is None and len(powers) >= 4
    if len(powers) >= SHORT_TERM_BLOCKS:
        windows = np.convolve(powers, np.ones(SHORT_TERM_BLOCKS) / SHORT_TERM_BLOCKS, "valid")
        loudest = loudness_of_power(float(windows.max()))
        out.max_short_term_lufs = None if loudest <= SILENCE_LUFS else round(loudest, 2)


def format_text(results: Sequence[FileTags]) -> str:
    lines = []
    for r in results:
        if r.error:
            lines.append(f"{r.path}: ERROR {r.error}")
            continue
        tags = ", ".join(f"{t} {100 * r.tag_share.get(t, 0.0):.0f}%" for t in r.tags) or "none"
        title = f' "{r.title}"' if r.title else ""
        loud = ""
        if r.loudness_lufs is not None:
            loud = f"; loudness {r.loudness_lufs:.1f} LUFS integrated, " + (
                f"{r.max_short_term_lufs:.1f} LUFS short-term at most"
                if r.max_short_term_lufs is not None else "no short-term reading (under 3 s)")
        elif r.loudness_below_gate:
            loud = (f"; loudness below {ABSOLUTE_GATE_LUFS:g} LUFS (nothing above EBU R128's "
                    "absolute gate: silence)")
        elif r.loudness_measured:
            loud = "; loudness: none (under 400 ms of audio)"
        lines.append(f"{r.path}:{title} {r.duration_s:.1f} s, {r.windows} windows; "
                     f"tags ({r.tags_rule}): {tags}{loud}")
        if r.note:
            lines.append(f"  note: {r.note}")
        for d in r.dead_air:
            what = " (a steady tone, no music)" if d.cause == "tone" else ""
            lines.append(f"  {d.start_s:8.2f} - {d.end_s:8.2f}  {d.name.upper()}{what}")
        for s in r.segments:
            lines.append(f"  {s.start_s:8.2f} - {s.end_s:8.2f}  {s.tag:<20s} {s.strength:4.1f}x "
                         f"(score {s.mean_score:.2f})")
    return "\n".join(lines) + "\n"


def format_json(results: Sequence[FileTags]) -> str:
    return "\n".join(json.dumps(r.to_dict(), sort_keys=True) for r in results) + "\n"


def format_csv(results: Sequence[FileTags]) -> str:
    """One row per segment, one ``track`` row per headline tag (on in more than half of the
    file's windows; its mean score as the score), with loudness one ``loudness`` row (its
    integrated loudness in LUFS as the score; none, and "below -70 LUFS" in ``error``, for a
    file below EBU R128's absolute gate), and a ``note`` row (the
    note in ``error``) for a file with a note or nothing else to show. Paths, tag names and
    errors (a decoder's words about a file from anywhere) are written as cells a spreadsheet
    shows as text (``text.csv_text``); numbers as numbers."""
    cell = csv_text
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["path", "kind", "tag", "start_s", "end_s", "score", "strength", "error"])
    for r in results:
        if r.error:
            writer.writerow([cell(r.path), "error", "", "", "", "", "", cell(r.error)])
            continue
        for s in r.segments:
            writer.writerow([cell(r.path), "segment", cell(s.tag), f"{s.start_s:.3f}",
                             f"{s.end_s:.3f}", f"{s.mean_score:.4f}", f"{s.strength:.2f}", ""])
        for t in r.tags:
            writer.writerow([cell(r.path), "track", cell(t), "0.000", f"{r.duration_s:.3f}",
                             f"{r.mean_scores[t]:.4f}", f"{r.strength.get(t, 0.0):.2f}", ""])
        if r.loudness_lufs is not None:
            writer.writerow([cell(r.path), "loudness", "", "0.000", f"{r.duration_s:.3f}",
                             f"{r.loudness_lufs:.2f}", "", ""])
        elif r.loudness_below_gate:
            writer.writerow([cell(r.path), "loudness", "", "0.000", f"{r.duration_s:.3f}", "",
                             "", f"below {ABSOLUTE_GATE_LUFS:g} LUFS"])
        if r.note or not (r.segments or r.tags or r.loudness_lufs is not None):
            # every file has a row: one with no tag (silence, too short) says why in `error`
            writer.writerow([cell(r.path), "note", "", "0.000", f"{r.duration_s:.3f}", "", "",
                             cell(r.note or "no tag over its threshold")])
    return out.getvalue()
