"""Offline tagging of files (``streamtag tag``), on the daemon's engine.

Each file becomes a stream of the same ``Engine`` the daemon runs, so windows, smoothing and
events are the daemon's. Per file the result is the tag segments (a tag's on event to its off
event, with the mean smoothed score between them) and a track summary: the mean of the window
probabilities per tag and the tags whose mean reaches the tag's threshold, each with its
strength (the score over the threshold: 1.0 at it, 2.0 twice it; raw scores mean different
things for different tags, a sparse tag is sure at 0.06, a frequent one at 0.3), and the file as one
track, with the fields of the daemon's ``track`` message (``streamtag.engine.tracks``; its title
from the file's title and artist tags).
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
    SHORT_TERM_BLOCKS,
    SILENCE_LUFS,
    integrated_lufs,
    loudness_of_power,
)
from streamtag.engine.batching import Engine, EngineConfig, WindowResult
from streamtag.engine.content import MUSIC, SILENCE
from streamtag.engine.health import HealthConfig
from streamtag.engine.smoothing import SmoothingConfig, TagEvent
from streamtag.engine.tracks import SCORE_DECIMALS, TrackSummarizer, TrackSummary
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
class FileTags:
    path: str
    duration_s: float = 0.0
    windows: int = 0
    segments: list[Segment] = dataclasses.field(default_factory=list)
    mean_scores: dict[str, float] = dataclasses.field(default_factory=dict)
    tags: list[str] = dataclasses.field(default_factory=list)  # mean score >= threshold
    # of each tag in ``tags``: its mean score / its threshold, the strongest first
    strength: dict[str, float] = dataclasses.field(default_factory=dict)
    error: str | None = None
    title: str | None = None  # from the file's tags
    track: dict | None = None  # the fields of the daemon's track message for this file
    # with ``loudness``: EBU R128 integrated loudness of the whole file (BS.1770-4, gated), and
    # the loudest short-term (3 s) reading, in LUFS; None without it, or for silence
    loudness_lufs: float | None = None
    max_short_term_lufs: float | None = None
    loudness_measured: bool = False  # asked for (None above then: silence, or too short)
    # said where the file cannot be tagged as a model's windows usually are (shorter than one)
    note: str | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class _Collector:
    """Engine sink that turns one stream's windows and events into segments."""

    def __init__(self, model: InferenceModel, silence_dbfs: float) -> None:
        self.model = model
        self.silence_dbfs = silence_dbfs
        self.results: dict[str, FileTags] = {}
        self._raw: dict[str, list[np.ndarray]] = {}
        self._open: dict[str, dict[str, tuple[float, list[float]]]] = {}
        self._tracks: dict[str, TrackSummarizer] = {}
        self._sounding: dict[str, int] = {}  # music windows not quiet nor silent ([health])
        # windows per content (streamtag.engine.content); only music's scores are kept
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
            music = result.content in (None, MUSIC)
            self._content[result.stream_id][result.content] += 1
            if music:
                self._sounding[result.stream_id] += not result.quiet
                self._raw[result.stream_id].append(result.raw)
            self._tracks[result.stream_id].add_window(
                result.end_sample, result.tags, result.raw, result.smoothed, result.active,
                result.model_name, result.model_hash, music=music)
            opened = self._open[result.stream_id]
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
                strength = {t: ratio(float(m), float(th)) for t, m, th in
                            zip(self.model.tags, means, self.model.thresholds, strict=True)
                            if m >= th}
                out.tags = sorted(strength, key=lambda t: -strength[t])
                out.strength = {t: strength[t] for t in out.tags}
            other = {kind: n for kind, n in self._content[stream_id].items()
                     if kind not in (None, MUSIC)}
            if out.windows and not self._sounding[stream_id]:
                # dead air or speech: what the model says means nothing
                out.tags, out.strength = [], {}
                if set(other) - {SILENCE}:
                    out.note = "no music in it (" + ", ".join(
                        f"{kind} {100 * n / out.windows:.0f}%" for kind, n in sorted(
                            other.items(), key=lambda kv: -kv[1])) + "): no tags"
                else:
                    out.note = (f"every window was below {self.silence_dbfs:g} dBFS "
                                "(silence): no tags")


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
        tags = ", ".join(f"{t} {r.strength.get(t, 0.0):.1f}x" for t in r.tags) or "none"
        title = f' "{r.title}"' if r.title else ""
        mostly = ", ".join(r.track["active"]) if r.track and r.track["active"] else "none"
        loud = ""
        if r.loudness_lufs is not None:
            loud = f"; loudness {r.loudness_lufs:.1f} LUFS integrated, " + (
                f"{r.max_short_term_lufs:.1f} LUFS short-term at most"
                if r.max_short_term_lufs is not None else "no short-term reading (under 3 s)")
        elif r.loudness_measured:
            loud = "; loudness: none, silence (nothing above the -70 LUFS gate)"
        lines.append(f"{r.path}:{title} {r.duration_s:.1f} s, {r.windows} windows; "
                     f"mean above threshold: {tags}; "
                     f"active most of the time: {mostly}{loud}")
        if r.note:
            lines.append(f"  note: {r.note}")
        for s in r.segments:
            lines.append(f"  {s.start_s:8.2f} - {s.end_s:8.2f}  {s.tag:<20s} {s.strength:4.1f}x "
                         f"(score {s.mean_score:.2f})")
    return "\n".join(lines) + "\n"


def format_json(results: Sequence[FileTags]) -> str:
    return "\n".join(json.dumps(r.to_dict(), sort_keys=True) for r in results) + "\n"


def format_csv(results: Sequence[FileTags]) -> str:
    """One row per segment, one ``track`` row per tag of the summary, with loudness one
    ``loudness`` row (its integrated loudness in LUFS as the score), and a ``note`` row (the
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
        if r.note or not (r.segments or r.tags or r.loudness_lufs is not None):
            # every file has a row: one with no tag (silence, too short) says why in `error`
            writer.writerow([cell(r.path), "note", "", "0.000", f"{r.duration_s:.3f}", "", "",
                             cell(r.note or "no tag over its threshold")])
    return out.getvalue()
