"""Dataset adapters: each reads one dataset's own layout into the same list of tracks.

Every adapter returns a ``TagDataset``: the tracks (id, tags, split, audio and/or precomputed
feature path, duration when known), the tag vocabulary in a fixed order, each tag's category where
the dataset has categories, and a ``DatasetReport`` that counts the problems per reason with the
first five examples of each. A bad row never stops loading: missing files, rows without tags,
unknown tags and malformed rows are reported and skipped (an unknown tag is dropped from its row;
the row stays if other tags remain). Audio that cannot be decoded is found later by the feature
cache; ``TagDataset.drop`` moves those tracks into the report. A split left with nothing usable
is a ``ConfigError`` naming the file.

Adapters:

- ``load_mtg_jamendo``: the MTG-Jamendo split files with mp3 audio and/or the precomputed mel
  files. Tags are named without their category prefix (``happy``, not ``mood/theme---happy``),
  and ``TagDataset.categories`` records each tag's category; a name that occurs under two
  categories keeps its full ``category---name`` spelling so that no two tags merge.
- ``load_magnatagatune``: ``annotations_final.csv`` (tab-separated), the top-N tags by frequency,
  the folder split or the user's split lists.
- ``load_folder_csv``: a CSV with ``path``, ``tags`` (``;``-separated) and ``split``.
- ``load_synthetic``: the synthetic benchmark (``streamtag.train.synthetic``), via the CSV.
- ``load_audio_folder``: every audio file under a folder, without tags (for pre-training, the
  one adapter whose tracks may have no tags); a fixed fraction, chosen by path hash, is the
  validation split.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import hashlib
import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from streamtag.errors import ConfigError

__all__ = [
    "SPLITS",
    "DatasetReport",
    "TagDataset",
    "Track",
    "load_audio_folder",
    "load_dataset",
    "load_folder_csv",
    "load_magnatagatune",
    "load_mtg_jamendo",
    "load_synthetic",
]

log = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "validation", "test")

# Reasons a row, a tag or a track is left out.
MISSING_FILE = "missing_file"
EMPTY_TAGS = "empty_tags"
UNKNOWN_TAG = "unknown_tag"
MALFORMED = "malformed_row"
DUPLICATE = "duplicate_id"
UNMATCHED = "unmatched_split_entry"
UNREADABLE = "unreadable_audio"
_ROW_REASONS = (MISSING_FILE, EMPTY_TAGS, MALFORMED, DUPLICATE, UNREADABLE)


@dataclasses.dataclass(frozen=True)
class Track:
    """One audio track (or clip) of a dataset.

    ``audio_path`` is decoded by the feature cache; ``feature_path`` is a precomputed log-mel
    file (MTG-Jamendo's ``(96, T)`` npy) that the cache uses when its options match the files.
    At least one of the two is set.
    """

    id: str
    tags: tuple[str, ...]
    split: str
    audio_path: Path | None = None
    feature_path: Path | None = None
    duration_s: float | None = None


@dataclasses.dataclass
class DatasetReport:
    """What an adapter left out, per reason: a count and the first few examples."""

    source: str
    kept: dict[str, int] = dataclasses.field(default_factory=dict)
    counts: dict[str, int] = dataclasses.field(default_factory=dict)
    examples: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    max_examples: ClassVar[int] = 5

    def add(self, reason: str, example: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < self.max_examples:
            shown.append(example)

    @property
    def skipped_rows(self) -> int:
        """Rows or tracks left out (unknown tags and unmatched split entries are not rows)."""
        return sum(n for reason, n in self.counts.items() if reason in _ROW_REASONS)

    def summary(self) -> str:
        kept = ", ".join(f"{split} {n}" for split, n in self.kept.items()) or "none"
        lines = [f"{self.source}: kept {sum(self.kept.values())} tracks ({kept})"]
        for reason, n in self.counts.items():
            lines.append(f"  {reason}: {n}")
            lines.extend(f"    {example}" for example in self.examples.get(reason, []))
        return "\n".join(lines)

    __str__ = summary

    def log(self, logger: logging.Logger | None = None) -> None:
        (logger or log).log(logging.WARNING if self.counts else logging.INFO, "%s", self)


@dataclasses.dataclass
class TagDataset:
    """Tracks with their tags; ``tags`` fixes the order of the label columns. ``targets``, when
    set, gives each track's row of targets itself (a teacher's scores: ``distill``) in place of
    the multi-hot of its tags, and ``thresholds`` then the teacher's per-tag thresholds, in
    ``tags`` order."""

    name: str
    tags: list[str]
    tracks: list[Track]
    report: DatasetReport
    categories: dict[str, str] = dataclasses.field(default_factory=dict)
    targets: dict[str, np.ndarray] | None = None
    thresholds: np.ndarray | None = None

    def split(self, name: str) -> list[Track]:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; splits are {list(SPLITS)}")
        return [t for t in self.tracks if t.split == name]

    def labels(self, tracks: Sequence[Track] | None = None) -> np.ndarray:
        """Multi-hot ``(len(tracks), len(self.tags))`` float32, columns in ``self.tags`` order
        (each track's ``targets`` row where the dataset has targets)."""
        tracks = self.tracks if tracks is None else tracks
        if self.targets is not None:
            return np.array([self.targets[t.id] for t in tracks], dtype=np.float32).reshape(
                len(tracks), len(self.tags))
        column = {tag: i for i, tag in enumerate(self.tags)}
        y = np.zeros((len(tracks), len(self.tags)), dtype=np.float32)
        for row, track in enumerate(tracks):
            for tag in track.tags:
                if tag in column:
                    y[row, column[tag]] = 1.0
        return y

    def drop(self, failures: Mapping[str, str] | Iterable[tuple[str, str]],
             reason: str = UNREADABLE) -> TagDataset:
        """A copy without the tracks in ``failures`` (track id -> message), which the copy's
        report lists under ``reason`` (the feature cache's unreadable audio, typically)."""
        failures = dict(failures.items() if isinstance(failures, Mapping) else failures)
        report = copy.deepcopy(self.report)
        kept = []
        for track in self.tracks:
            if track.id in failures:
                report.add(reason, f"{track.id}: {failures[track.id]}")
                report.kept[track.split] = report.kept.get(track.split, 0) - 1
            else:
                kept.append(track)
        return dataclasses.replace(self, tracks=kept, report=report)


def _finish(name: str, tags: list[str], tracks: list[Track], report: DatasetReport,
            splits: Sequence[str], split_source: Callable[[str], str],
            categories: dict[str, str] | None = None) -> TagDataset:
    for split in splits:
        report.kept[split] = sum(1 for t in tracks if t.split == split)
    report.log()
    for split in splits:
        if report.kept[split] == 0:
            raise ConfigError(f"{split_source(split)}: no usable {split} tracks "
                              f"({_reasons(report)}); check the paths and the audio/feature "
                              f"roots, or load fewer splits with splits=")
    return TagDataset(name=name, tags=tags, tracks=tracks, report=report,
                      categories=categories or {})


def _reasons(report: DatasetReport) -> str:
    if not report.counts:
        return "no rows"
    return ", ".join(f"{n} {reason}" for reason, n in report.counts.items())


def _check_splits(splits: Sequence[str]) -> tuple[str, ...]:
    splits = tuple(splits)
    bad = [s for s in splits if s not in SPLITS]
    if bad or not splits:
        raise ConfigError(f"splits must be a non-empty subset of {list(SPLITS)}, got {splits!r}")
    return splits


# --------------------------------------------------------------------------------------------
# MTG-Jamendo

MTG_SUBSETS = {
    "all": "autotagging",
    "moodtheme": "autotagging_moodtheme",
    "top50tags": "autotagging_top50tags",
    "genre": "autotagging_genre",
    "instrument": "autotagging_instrument",
}
_MTG_HEADER = ["TRACK_ID", "ARTIST_ID", "ALBUM_ID", "PATH", "DURATION"]
_MTG_TRACK_ID = re.compile(r"track_\d+")


def mtg_split_file(root: str | Path, subset: str = "moodtheme", split_index: int = 0,
                   split: str = "train") -> Path:
    """``root/splits/split-N/autotagging[_subset]-{train,validation,test}.tsv``; ``root`` may be
    the dataset repository (``data/splits`` below it) or the folder holding ``splits``."""
    if subset not in MTG_SUBSETS:
        raise ConfigError(f"unknown MTG-Jamendo subset {subset!r}; subsets: {list(MTG_SUBSETS)}")
    root = Path(root)
    if not (root / "splits").is_dir() and (root / "data" / "splits").is_dir():
        root = root / "data"
    return root / "splits" / f"split-{split_index}" / f"{MTG_SUBSETS[subset]}-{split}.tsv"


@dataclasses.dataclass
class _MtgRow:
    where: str
    track_id: str
    path: str
    duration_s: float
    tags: list[tuple[str, str]]  # (category, name)


def _read_mtg_file(path: Path, report: DatasetReport) -> list[_MtgRow]:
    with open(path, encoding="utf-8", newline="") as f:
        lines = f.read().splitlines()  # the files have CRLF line ends
    if not lines or lines[0].split("\t")[:5] != _MTG_HEADER:
        got = lines[0].split("\t")[:6] if lines else "an empty file"
        raise ConfigError(f"{path}: not an MTG-Jamendo split file: expected the header "
                          f"{_MTG_HEADER + ['TAGS']}, got {got}")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        where = f"{path.name}:{number}"
        fields = line.split("\t")
        if len(fields) < 5:
            report.add(MALFORMED, f"{where}: {len(fields)} columns, need at least 5: {line!r}")
            continue
        track_id, _, _, rel, duration = (x.strip() for x in fields[:5])
        if not _MTG_TRACK_ID.fullmatch(track_id):
            report.add(MALFORMED, f"{where}: bad TRACK_ID {track_id!r}")
            continue
        try:
            duration_s = float(duration)
        except ValueError:
            report.add(MALFORMED, f"{where}: {track_id}: bad DURATION {duration!r}")
            continue
        if not rel:
            report.add(MALFORMED, f"{where}: {track_id}: empty PATH")
            continue
        tags, bad = [], []
        for raw in (x.strip() for x in fields[5:]):
            if not raw:
                continue
            category, sep, name = raw.partition("---")
            if sep and category and name:
                tags.append((category, name))
            else:
                bad.append(raw)
        if bad:
            report.add(MALFORMED, f"{where}: {track_id}: tags without a 'category---' prefix "
                                  f"{bad}")
            continue
        rows.append(_MtgRow(where, track_id, rel, duration_s, tags))
    return rows


def load_mtg_jamendo(root: str | Path, subset: str = "moodtheme", split_index: int = 0, *,
                     audio_root: str | Path | None = None, mel_root: str | Path | None = None,
                     tags: Sequence[str] | None = None, splits: Sequence[str] = SPLITS,
                     check_files: bool = True) -> TagDataset:
    """MTG-Jamendo from its split files (see ``mtg_split_file`` for where they are looked for).

    Audio is ``audio_root/PATH`` (mp3); precomputed mels are ``mel_root/PATH`` with ``.npy``
    (``(96, T)``, the ``mtg_jamendo`` frontend preset). Give either root or both; a track is
    kept when at least one of its files exists. The vocabulary is every tag in the subset's
    train, validation and test files (sorted), unless ``tags`` fixes it; then other tags are
    reported as unknown and dropped.
    """
    splits = _check_splits(splits)
    if audio_root is None and mel_root is None:
        raise ConfigError("MTG-Jamendo needs audio_root (the mp3 folders) or mel_root (the "
                          "precomputed .npy mel folders), or both")
    files = {split: mtg_split_file(root, subset, split_index, split) for split in SPLITS}
    for split in splits:
        if not files[split].is_file():
            raise ConfigError(f"{files[split]} not found; root must hold "
                              f"splits/split-{split_index}/ of the MTG-Jamendo repository's "
                              f"data folder")
    report = DatasetReport(source=f"MTG-Jamendo {subset} split-{split_index} ({root})")
    rows = {split: _read_mtg_file(path, report) if path.is_file() else []
            for split, path in files.items()}

    categories_of: dict[str, set[str]] = {}
    for split_rows in rows.values():
        for row in split_rows:
            for category, name in row.tags:
                categories_of.setdefault(name, set()).add(category)

    def display(category: str, name: str) -> str:
        return name if len(categories_of[name]) == 1 else f"{category}---{name}"

    all_tags = {display(c, n): c for split_rows in rows.values() for r in split_rows
                for c, n in r.tags}
    vocabulary = list(tags) if tags is not None else sorted(all_tags)
    known = set(vocabulary)
    audio_root = Path(audio_root) if audio_root is not None else None
    mel_root = Path(mel_root) if mel_root is not None else None

    tracks, seen = [], set()
    for split in splits:
        for row in rows[split]:
            if row.track_id in seen:
                report.add(DUPLICATE, f"{row.where}: {row.track_id} listed again")
                continue
            seen.add(row.track_id)
            names = []
            for category, name in row.tags:
                tag = display(category, name)
                if tag in known:
                    names.append(tag)
                else:
                    report.add(UNKNOWN_TAG, f"{row.where}: {row.track_id}: {category}---{name}")
            if not names:
                report.add(EMPTY_TAGS, f"{row.where}: {row.track_id} has no "
                                       f"{'known ' if row.tags else ''}tags")
                continue
            audio = audio_root / row.path if audio_root is not None else None
            mel = mel_root / Path(row.path).with_suffix(".npy") if mel_root is not None else None
            if check_files:
                audio = audio if audio is not None and audio.is_file() else None
                mel = mel if mel is not None and mel.is_file() else None
                if audio is None and mel is None:
                    roots = " or ".join(str(r) for r in (audio_root, mel_root) if r is not None)
                    report.add(MISSING_FILE, f"{row.where}: {row.track_id}: {row.path} not "
                                             f"under {roots}")
                    continue
            tracks.append(Track(id=row.track_id, tags=tuple(dict.fromkeys(names)), split=split,
                                audio_path=audio, feature_path=mel, duration_s=row.duration_s))
    categories = {tag: all_tags[tag] for tag in vocabulary if tag in all_tags}
    return _finish(f"mtg_jamendo_{subset}", vocabulary, tracks, report, splits,
                   lambda split: str(files[split]), categories)


# --------------------------------------------------------------------------------------------
# MagnaTagATune

# The common folder split: the mp3s sit in 16 folders 0-9, a-f.
MTAT_FOLDER_SPLIT = {**{c: "train" for c in "0123456789ab"}, "c": "validation",
                     **{c: "test" for c in "def"}}


def _read_split_list(path: Path) -> list[str]:
    if path.suffix == ".npy":
        entries = [str(x) for x in np.load(path, allow_pickle=False).ravel()]
    else:
        entries = Path(path).read_text(encoding="utf-8").splitlines()
    return [e.strip() for e in entries if e.strip()]


def load_magnatagatune(annotations: str | Path, *, audio_root: str | Path | None = None,
                       split_lists: Mapping[str, str | Path] | None = None, top_n: int = 50,
                       tags: Sequence[str] | None = None, splits: Sequence[str] = SPLITS,
                       keep_empty: bool = False, check_files: bool = True) -> TagDataset:
    """MagnaTagATune from ``annotations_final.csv`` (tab-separated: ``clip_id``, 188 binary tag
    columns, ``mp3_path``).

    Tags: the ``top_n`` most frequent over the whole file (ties keep the file's column order),
    most frequent first, unless ``tags`` names the columns. Splits: ``split_lists`` maps
    ``train``/``validation``/``test`` to files listing clip ids or mp3 paths, one a line (a line
    ``id<TAB>path`` works too, and so does a ``.npy`` array of such strings); without lists, the
    folder split (first character of the mp3 folder: 0-b train, c validation, d-f test). Audio
    is ``audio_root/mp3_path``, ``audio_root`` defaulting to the annotation file's folder. Clips
    without any of the tags are skipped unless ``keep_empty`` (the usual top-50 setups skip them).
    """
    splits = _check_splits(splits)
    annotations = Path(annotations)
    if not annotations.is_file():
        raise ConfigError(f"{annotations} not found; pass the path of annotations_final.csv")
    audio_root = Path(audio_root) if audio_root is not None else annotations.parent
    report = DatasetReport(source=f"MagnaTagATune ({annotations})")
    with open(annotations, encoding="utf-8", newline="") as f:
        table = list(csv.reader(f, delimiter="\t"))
    if not table or len(table[0]) < 3 or table[0][0] != "clip_id" or table[0][-1] != "mp3_path":
        got = table[0][:3] + ["..."] + table[0][-1:] if table else "an empty file"
        raise ConfigError(f"{annotations}: expected a tab-separated header clip_id, <tags>, "
                          f"mp3_path; got {got}")
    header = table[0]
    columns = header[1:-1]
    rows = []
    for number, fields in enumerate(table[1:], start=2):
        where = f"{annotations.name}:{number}"
        if not fields or all(not x.strip() for x in fields):
            continue
        if len(fields) != len(header):
            report.add(MALFORMED, f"{where}: {len(fields)} columns, the header has {len(header)}")
            continue
        clip_id, values, mp3_path = fields[0].strip(), fields[1:-1], fields[-1].strip()
        if not clip_id.isdigit():
            report.add(MALFORMED, f"{where}: bad clip_id {clip_id!r}")
            continue
        if any(v not in ("0", "1") for v in values):
            report.add(MALFORMED, f"{where}: clip {clip_id}: tag values other than 0/1")
            continue
        if not mp3_path or "/" not in mp3_path:
            report.add(MALFORMED, f"{where}: clip {clip_id}: bad mp3_path {mp3_path!r}")
            continue
        rows.append((where, clip_id, np.array(values) == "1", mp3_path))
    if not rows:
        raise ConfigError(f"{annotations}: no well-formed rows ({_reasons(report)})")

    counts = np.sum([r[2] for r in rows], axis=0)
    if tags is None:
        if not 1 <= top_n <= len(columns):
            raise ConfigError(f"top_n must be in [1, {len(columns)}], got {top_n!r}")
        order = sorted(range(len(columns)), key=lambda i: (-counts[i], i))[:top_n]
    else:
        unknown = [t for t in tags if t not in columns]
        if unknown:
            raise ConfigError(f"tags {unknown} are not columns of {annotations}")
        order = [columns.index(t) for t in tags]
    vocabulary = [columns[i] for i in order]

    split_of: dict[str, str] = {}
    if split_lists is not None:
        bad = [s for s in split_lists if s not in SPLITS]
        if bad:
            raise ConfigError(f"split_lists keys must be among {list(SPLITS)}, got {bad}")
        by_id = {clip_id: clip_id for _, clip_id, _, _ in rows}
        by_path = {mp3: clip_id for _, clip_id, _, mp3 in rows}
        for split, list_path in split_lists.items():
            list_path = Path(list_path)
            if not list_path.is_file():
                raise ConfigError(f"split list {list_path} ({split}) not found")
            for number, entry in enumerate(_read_split_list(list_path), start=1):
                match = next((by_id.get(x) or by_path.get(x) for x in entry.split("\t")
                              if by_id.get(x) or by_path.get(x)), None)
                if match is None:
                    report.add(UNMATCHED, f"{list_path.name}:{number}: {entry!r} matches no "
                                          f"clip_id or mp3_path")
                elif match in split_of:
                    report.add(DUPLICATE, f"{list_path.name}:{number}: clip {match} already in "
                                          f"{split_of[match]}")
                else:
                    split_of[match] = split
    else:
        for _, clip_id, _, mp3 in rows:
            split = MTAT_FOLDER_SPLIT.get(mp3[:1].lower())
            if split is not None:
                split_of[clip_id] = split

    tracks = []
    wanted = set(splits)
    for where, clip_id, on, mp3 in rows:
        split = split_of.get(clip_id)
        if split not in wanted:
            continue
        names = tuple(columns[i] for i in order if on[i])
        if not names and not keep_empty:
            report.add(EMPTY_TAGS, f"{where}: clip {clip_id} has none of the {len(order)} tags")
            continue
        path = audio_root / mp3
        if check_files and not path.is_file():
            report.add(MISSING_FILE, f"{where}: clip {clip_id}: {path} not found")
            continue
        tracks.append(Track(id=clip_id, tags=names, split=split, audio_path=path))
    sources = {s: str(split_lists[s]) if split_lists and s in split_lists else str(annotations)
               for s in SPLITS}
    return _finish("magnatagatune", vocabulary, tracks, report, splits, sources.__getitem__)


# --------------------------------------------------------------------------------------------
# Folder + CSV

_SPLIT_ALIASES = {"train": "train", "validation": "validation", "valid": "validation",
                  "val": "validation", "test": "test"}


def load_folder_csv(csv_path: str | Path, *, tags: Sequence[str] | None = None,
                    splits: Sequence[str] = SPLITS, check_files: bool = True,
                    name: str | None = None) -> TagDataset:
    """Tracks from a CSV with columns ``path`` (relative to the CSV's folder, or absolute),
    ``tags`` (separated by ``;``) and ``split`` (``train``, ``validation`` — ``valid`` and
    ``val`` are read as ``validation`` — or ``test``); an optional ``duration`` column is read,
    other columns are ignored. Track ids are the paths relative to the CSV without their suffix.
    The vocabulary is every tag in the file (sorted) unless ``tags`` fixes it.
    """
    splits = _check_splits(splits)
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise ConfigError(f"{csv_path} not found")
    report = DatasetReport(source=f"folder+csv ({csv_path})")
    with open(csv_path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("path", "tags", "split") if c not in (reader.fieldnames or [])]
        if missing:
            raise ConfigError(f"{csv_path}: missing column(s) {missing}; the header must name "
                              f"path, tags and split (got {reader.fieldnames})")
        records = []
        for row in reader:
            where = f"{csv_path.name}:{reader.line_num}"
            if None in row or any(v is None for v in row.values()):
                report.add(MALFORMED, f"{where}: wrong number of columns")
                continue
            rel = row["path"].strip()
            split = _SPLIT_ALIASES.get(row["split"].strip().lower())
            if not rel:
                report.add(MALFORMED, f"{where}: empty path")
                continue
            if split is None:
                report.add(MALFORMED, f"{where}: {rel}: unknown split {row['split']!r}")
                continue
            duration_s = None
            if (row.get("duration") or "").strip():
                try:
                    duration_s = float(row["duration"])
                except ValueError:
                    report.add(MALFORMED, f"{where}: {rel}: bad duration {row['duration']!r}")
                    continue
            names = [t.strip() for t in row["tags"].split(";") if t.strip()]
            records.append((where, rel, split, names, duration_s))

    vocabulary = list(tags) if tags is not None else sorted({t for r in records for t in r[3]})
    known = set(vocabulary)
    tracks, seen, wanted = [], set(), set(splits)
    for where, rel, split, names, duration_s in records:
        track_id = Path(rel).with_suffix("").as_posix()
        if track_id in seen:
            report.add(DUPLICATE, f"{where}: {rel} listed again")
            continue
        seen.add(track_id)
        if split not in wanted:
            continue
        for tag in names:
            if tag not in known:
                report.add(UNKNOWN_TAG, f"{where}: {rel}: {tag!r}")
        names = [t for t in dict.fromkeys(names) if t in known]
        if not names:
            report.add(EMPTY_TAGS, f"{where}: {rel} has no {'known ' if known else ''}tags")
            continue
        path = Path(rel) if Path(rel).is_absolute() else csv_path.parent / rel
        if check_files and not path.is_file():
            report.add(MISSING_FILE, f"{where}: {path} not found")
            continue
        tracks.append(Track(id=track_id, tags=tuple(names), split=split, audio_path=path,
                            duration_s=duration_s))
    return _finish(name or csv_path.stem, vocabulary, tracks, report, splits,
                   lambda split: str(csv_path))


def load_synthetic(root: str | Path, *, splits: Sequence[str] = SPLITS,
                   check_files: bool = True) -> TagDataset:
    """The synthetic benchmark written by ``synthetic.generate_dataset``: its ``tags.csv``, with
    the generator's vocabulary (all of its tags, in ``streamtag.audio.synthetic.TAGS`` order,
    even those that no clip happens to carry)."""
    from streamtag.audio.synthetic import TAGS

    root = Path(root)
    info_path = root / "synthetic.json"
    tags = list(TAGS)
    if info_path.is_file():
        tags = list(json.loads(info_path.read_text(encoding="utf-8")).get("tags", TAGS))
    return load_folder_csv(root / "tags.csv", tags=tags, splits=splits, check_files=check_files,
                           name="synthetic")


# --------------------------------------------------------------------------------------------
# A folder of audio files, no tags

AUDIO_EXTENSIONS = (".flac", ".wav", ".mp3", ".ogg", ".opus", ".m4a", ".aiff")
UNLABELED_SPLITS: tuple[str, ...] = ("train", "validation")


def _hash_fraction(text: str) -> float:
    # A position in [0, 1) that depends on the path only: the split never changes with the order
    # the files are found in, the machine or the Python version.
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") / 2.0**64


def load_audio_folder(root: str | Path, *, extensions: Sequence[str] = AUDIO_EXTENSIONS,
                      validation_fraction: float = 0.1,
                      splits: Sequence[str] = UNLABELED_SPLITS) -> TagDataset:
    """Every file under ``root`` (recursively, hidden files and folders left out) whose suffix is
    one of ``extensions`` (any case, with or without the dot), as tracks without tags: audio for
    pre-training (``streamtag pretrain``). Track ids are the paths relative to ``root``.

    The validation split is the ``validation_fraction`` of the files (at least one, when there
    are two or more) whose path hash comes first, so the same files are held out every time;
    the rest is the training split. There is no test split (nothing to score without labels).
    """
    splits = _check_splits(splits)
    if "test" in splits:
        raise ConfigError("an audio folder has no test split (no labels to score); load "
                          "splits=('train', 'validation')")
    if not 0 < validation_fraction < 1:
        raise ConfigError(f"validation_fraction must be between 0 and 1, got "
                          f"{validation_fraction!r}")
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"{root} is not a folder; data.root must be a folder of audio files")
    suffixes = {e.lower() if e.startswith(".") else "." + e.lower() for e in extensions}
    report = DatasetReport(source=f"audio folder ({root})")
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in suffixes and p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not paths:
        raise ConfigError(f"{root}: no audio files with the suffixes {sorted(suffixes)} (searched "
                          "recursively); set data.extensions or data.root")
    if len(paths) < 2 and "validation" in splits:
        raise ConfigError(f"{root}: one audio file; at least two are needed (one is held out "
                          "for validation)")
    ids = [p.relative_to(root).as_posix() for p in paths]
    order = sorted(range(len(ids)), key=lambda i: (_hash_fraction(ids[i]), ids[i]))
    n_validation = min(len(ids) - 1, max(1, round(validation_fraction * len(ids))))
    held_out = set(order[:n_validation])
    tracks = []
    for i, (path, track_id) in enumerate(zip(paths, ids, strict=True)):
        split = "validation" if i in held_out else "train"
        if split in splits:
            tracks.append(Track(id=track_id, tags=(), split=split, audio_path=path))
    return _finish(root.name or str(root), [], tracks, report, splits,
                   lambda split: f"{root} ({len(ids)} audio files)")


ADAPTERS: dict[str, Callable[..., TagDataset]] = {
    "mtg_jamendo": load_mtg_jamendo,
    "magnatagatune": load_magnatagatune,
    "folder_csv": load_folder_csv,
    "synthetic": load_synthetic,
    "audio_folder": load_audio_folder,
}


def load_dataset(kind: str, *args: Any, **options: Any) -> TagDataset:
    """``ADAPTERS[kind](*args, **options)``; an unknown kind is a ConfigError listing them."""
    if kind not in ADAPTERS:
        raise ConfigError(f"unknown dataset kind {kind!r}; kinds: {sorted(ADAPTERS)}")
    return ADAPTERS[kind](*args, **options)
