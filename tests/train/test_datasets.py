"""Dataset adapters on fixtures in each dataset's exact layout, and the feature cache."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest

from streamtag.audio.files import load_audio, write_audio
from streamtag.audio.testsignals import music_like
from streamtag.errors import ConfigError
from streamtag.frontend import LogMelOptions, compute_logmel
from streamtag.train.cache import FeatureCache, options_key
from streamtag.train.datasets import (
    Track,
    load_dataset,
    load_folder_csv,
    load_magnatagatune,
    load_mtg_jamendo,
)

pytest.importorskip("av", reason="audio files are written and decoded with PyAV")

# --------------------------------------------------------------------------------------------
# MTG-Jamendo: splits/split-0/autotagging_moodtheme-{train,validation,test}.tsv, CRLF line
# ends, tab-separated, tags from the sixth column on; audio PATH under an audio root, mels
# PATH.npy under a mel root.

MTG_HEADER = "TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS"
MTG_ROWS = {
    "train": [
        "track_0000001\tartist_000001\talbum_000001\t01/1.mp3\t212.7\tmood/theme---happy",
        "track_0000002\tartist_000002\talbum_000002\t02/2.mp3\t180.0\tmood/theme---happy"
        "\tmood/theme---sad\tmood/theme---calm\tmood/theme---dark",
        "track_0000003\tartist_000003\talbum_000003\t03/3.mp3\t99.5",  # no tags
        "track_0000004\tartist_000004\talbum_000004\t04/4.mp3\t120.0\tmood/theme---energetic",
        "this line is not a row",
        "track_x\tartist_000005\talbum_000005\t05/5.mp3\t100.0\tmood/theme---sad",
    ],
    "validation": [
        "track_0000006\tartist_000006\talbum_000006\t06/6.mp3\t60.0\tmood/theme---calm"
        "\tmood/theme---sad",
    ],
    "test": [
        "track_0000007\tartist_000007\talbum_000007\t07/7.mp3\t75.25\tmood/theme---dark",
    ],
}
MTG_PRESENT = ["01/1.mp3", "02/2.mp3", "03/3.mp3", "06/6.mp3", "07/7.mp3"]  # 04/4.mp3 missing


def write_mtg_split(root, rows=MTG_ROWS, subset="autotagging_moodtheme"):
    folder = root / "splits" / "split-0"
    folder.mkdir(parents=True, exist_ok=True)
    for split, lines in rows.items():
        text = "\r\n".join([MTG_HEADER, *lines]) + "\r\n"
        (folder / f"{subset}-{split}.tsv").write_bytes(text.encode("utf-8"))


@pytest.fixture(scope="module")
def mtg(tmp_path_factory):
    root = tmp_path_factory.mktemp("mtg")
    write_mtg_split(root / "data")
    for i, rel in enumerate(MTG_PRESENT):
        audio = root / "audio" / rel
        audio.parent.mkdir(parents=True, exist_ok=True)
        write_audio(audio, music_like(0.6, 16000, seed=i), 16000)
        mel = (root / "mels" / rel).with_suffix(".npy")
        mel.parent.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(i)
        np.save(mel, (rng.standard_normal((96, 20 + i)) * 10 - 40).astype(np.float32))
    return root


def test_mtg_jamendo_reads_tracks_tags_and_reports_bad_rows(mtg):
    assert b"\r\n" in (mtg / "data/splits/split-0/autotagging_moodtheme-train.tsv").read_bytes()
    ds = load_mtg_jamendo(mtg / "data", audio_root=mtg / "audio")
    by_id = {t.id: t for t in ds.tracks}
    assert sorted(by_id) == ["track_0000001", "track_0000002", "track_0000006", "track_0000007"]
    assert by_id["track_0000001"].tags == ("happy",)
    assert by_id["track_0000002"].tags == ("happy", "sad", "calm", "dark")
    assert by_id["track_0000002"].audio_path == mtg / "audio/02/2.mp3"
    assert by_id["track_0000002"].feature_path is None
    assert by_id["track_0000007"].duration_s == 75.25
    assert [t.split for t in ds.tracks] == ["train", "train", "validation", "test"]
    # The vocabulary comes from the files, rows that are skipped included, without prefixes.
    assert ds.tags == ["calm", "dark", "energetic", "happy", "sad"]
    assert ds.categories == dict.fromkeys(ds.tags, "mood/theme")
    report = ds.report
    assert report.counts == {"malformed_row": 2, "empty_tags": 1, "missing_file": 1}
    assert "track_0000003" in report.examples["empty_tags"][0]
    assert "04/4.mp3" in report.examples["missing_file"][0]
    assert any("track_x" in e for e in report.examples["malformed_row"])
    assert report.kept == {"train": 2, "validation": 1, "test": 1}
    assert "missing_file: 1" in str(report)
    labels = ds.labels(ds.split("train"))
    assert labels.tolist() == [[0, 0, 0, 1, 0], [1, 1, 0, 1, 1]]


def test_mtg_jamendo_precomputed_mels_and_a_fixed_vocabulary(mtg):
    ds = load_mtg_jamendo(mtg, mel_root=mtg / "mels", tags=["happy", "sad"],
                          splits=("train", "validation"))
    by_id = {t.id: t for t in ds.tracks}
    assert by_id["track_0000001"].feature_path == mtg / "mels/01/1.npy"
    assert by_id["track_0000001"].audio_path is None
    assert ds.tags == ["happy", "sad"]
    assert by_id["track_0000002"].tags == ("happy", "sad")
    # calm, dark and energetic are unknown now: dropped from their rows and reported; track 4
    # is left with no tag.
    assert ds.report.counts["unknown_tag"] == 4
    assert ds.report.counts["empty_tags"] == 2
    assert sorted(by_id) == ["track_0000001", "track_0000002", "track_0000006"]
    # The test split's only track has no known tag left: nothing usable, an error.
    with pytest.raises(ConfigError, match=r"moodtheme-test\.tsv: no usable test tracks"):
        load_mtg_jamendo(mtg, mel_root=mtg / "mels", tags=["happy", "sad"])


def test_mtg_jamendo_empty_split_and_missing_files_are_errors_naming_the_file(mtg, tmp_path):
    with pytest.raises(ConfigError, match="audio_root"):
        load_mtg_jamendo(mtg / "data")
    with pytest.raises(ConfigError, match="autotagging_genre-train.tsv"):
        load_mtg_jamendo(mtg / "data", subset="genre", audio_root=mtg / "audio")
    rows = dict(MTG_ROWS, test=["track_0000009\tartist_9\talbum_9\t09/9.mp3\t10.0\tmood/theme---x"])
    write_mtg_split(tmp_path, rows)
    with pytest.raises(ConfigError, match=r"autotagging_moodtheme-test\.tsv.*no usable test"):
        load_mtg_jamendo(tmp_path, audio_root=mtg / "audio")
    ds = load_mtg_jamendo(tmp_path, audio_root=mtg / "audio", splits=("train", "validation"))
    assert {t.split for t in ds.tracks} == {"train", "validation"}


def test_mtg_jamendo_keeps_the_category_of_names_used_by_two_categories(mtg, tmp_path):
    rows = {
        "train": ["track_0000001\ta\tb\t01/1.mp3\t1.0\tgenre---dark\tinstrument---piano",
                  "track_0000002\ta\tb\t02/2.mp3\t1.0\tmood/theme---dark"],
        "validation": ["track_0000006\ta\tb\t06/6.mp3\t1.0\tinstrument---piano"],
        "test": ["track_0000007\ta\tb\t07/7.mp3\t1.0\tgenre---dark"],
    }
    write_mtg_split(tmp_path, rows, subset="autotagging")
    ds = load_mtg_jamendo(tmp_path, subset="all", audio_root=mtg / "audio")
    assert ds.tags == ["genre---dark", "mood/theme---dark", "piano"]
    assert ds.categories == {"genre---dark": "genre", "mood/theme---dark": "mood/theme",
                             "piano": "instrument"}
    assert ds.tracks[0].tags == ("genre---dark", "piano")


def test_mtg_jamendo_wrong_header_is_an_error(tmp_path):
    folder = tmp_path / "splits/split-0"
    folder.mkdir(parents=True)
    for split in ("train", "validation", "test"):
        (folder / f"autotagging_moodtheme-{split}.tsv").write_text("id,path,tags\n")
    with pytest.raises(ConfigError, match="not an MTG-Jamendo split file"):
        load_mtg_jamendo(tmp_path, audio_root=tmp_path)


# --------------------------------------------------------------------------------------------
# MagnaTagATune: annotations_final.csv, tab-separated with quoted fields: clip_id, 188 tag
# columns, mp3_path.

MTAT_TAGS = ["guitar", "classical", "slow", "no voice", "female singer"] + [
    f"tag {i:03d}" for i in range(183)]
MTAT_CLIPS = [  # clip_id, mp3_path, indices of its tags
    ("2", "0/artist_a-album-01-song-0-29.mp3", [0, 1, 2]),
    ("6", "5/artist_b-album-02-song-30-59.mp3", [0, 1]),
    ("10", "b/artist_c-album-03-song-0-29.mp3", [0]),
    ("11", "c/artist_d-album-04-song-0-29.mp3", [0, 3]),
    ("12", "d/artist_e-album-05-song-0-29.mp3", [1, 2]),
    ("13", "f/artist_f-album-06-song-0-29.mp3", [4]),  # none of the top 3
    ("14", "e/artist_g-album-07-song-0-29.mp3", [0]),  # its mp3 is missing
]


@pytest.fixture(scope="module")
def mtat(tmp_path_factory):
    root = tmp_path_factory.mktemp("mtat")
    assert len(MTAT_TAGS) == 188
    with open(root / "annotations_final.csv", "w", newline="") as f:
        writer = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_ALL, lineterminator="\n")
        writer.writerow(["clip_id", *MTAT_TAGS, "mp3_path"])
        for clip_id, mp3, on in MTAT_CLIPS:
            values = ["1" if i in on else "0" for i in range(188)]
            writer.writerow([clip_id, *values, mp3])
        writer.writerow(["15", "1", "0", "f/short-row.mp3"])  # malformed: 4 columns
    for i, (_, mp3, _) in enumerate(MTAT_CLIPS[:-1]):
        (root / mp3).parent.mkdir(parents=True, exist_ok=True)
        write_audio(root / mp3, music_like(0.5, 16000, seed=i), 16000)
    return root


def test_magnatagatune_top_tags_by_frequency_and_the_folder_split(mtat):
    ds = load_magnatagatune(mtat / "annotations_final.csv", top_n=3)
    # guitar 5 clips, classical 3, slow 2 (the malformed row does not count).
    assert ds.tags == ["guitar", "classical", "slow"]
    by_id = {t.id: t for t in ds.tracks}
    assert sorted(by_id, key=int) == ["2", "6", "10", "11", "12"]
    assert by_id["2"].tags == ("guitar", "classical", "slow")
    assert by_id["11"].tags == ("guitar",)
    assert {i: by_id[i].split for i in by_id} == {"2": "train", "6": "train", "10": "train",
                                                  "11": "validation", "12": "test"}
    assert by_id["12"].audio_path == mtat / MTAT_CLIPS[4][1]
    assert ds.report.counts == {"malformed_row": 1, "empty_tags": 1, "missing_file": 1}
    assert "clip 13" in ds.report.examples["empty_tags"][0]
    assert "clip 14" in ds.report.examples["missing_file"][0]


def test_magnatagatune_top_50_default_counts_from_the_file(mtat):
    ds = load_magnatagatune(mtat / "annotations_final.csv")
    assert len(ds.tags) == 50
    # Five tags occur; the rest tie at zero and keep the file's column order.
    assert ds.tags[:5] == ["guitar", "classical", "slow", "no voice", "female singer"]
    assert ds.tags[5:7] == ["tag 000", "tag 001"]
    assert {t.id for t in ds.tracks} == {"2", "6", "10", "11", "12", "13"}


def test_magnatagatune_user_split_lists(mtat, tmp_path):
    (tmp_path / "train.txt").write_text(f"{MTAT_CLIPS[0][1]}\n6\n999\n")
    (tmp_path / "valid.tsv").write_text(f"0\t{MTAT_CLIPS[3][1]}\n")
    np.save(tmp_path / "test.npy", np.array(["12", "2"]))
    ds = load_magnatagatune(mtat / "annotations_final.csv", top_n=3, split_lists={
        "train": tmp_path / "train.txt", "validation": tmp_path / "valid.tsv",
        "test": tmp_path / "test.npy"})
    assert {t.id: t.split for t in ds.tracks} == {"2": "train", "6": "train",
                                                  "11": "validation", "12": "test"}
    assert ds.report.counts["unmatched_split_entry"] == 1
    assert "'999'" in ds.report.examples["unmatched_split_entry"][0]
    assert ds.report.counts["duplicate_id"] == 1  # clip 2 listed in test too


def test_magnatagatune_errors_name_the_file(mtat, tmp_path):
    (tmp_path / "test.txt").write_text("13\n")  # only a clip without top-3 tags
    (tmp_path / "train.txt").write_text("2\n")
    with pytest.raises(ConfigError, match=r"test\.txt.*no usable test"):
        load_magnatagatune(mtat / "annotations_final.csv", top_n=3, splits=("train", "test"),
                           split_lists={"train": tmp_path / "train.txt",
                                        "test": tmp_path / "test.txt"})
    with pytest.raises(ConfigError, match="not columns"):
        load_magnatagatune(mtat / "annotations_final.csv", tags=["kazoo"])
    bad = tmp_path / "annotations_final.csv"
    bad.write_text("clip_id,guitar,mp3_path\n1,0,a/b.mp3\n")
    with pytest.raises(ConfigError, match="tab-separated header"):
        load_magnatagatune(bad)


# --------------------------------------------------------------------------------------------
# Folder + CSV


@pytest.fixture()
def folder(tmp_path):
    for i, rel in enumerate(["a.wav", "sub/b.wav", "c.wav", "d.wav"]):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        write_audio(tmp_path / rel, music_like(0.5, 16000, seed=i), 16000)
    rows = [
        ["path", "tags", "split", "duration", "comment"],
        ["a.wav", "rock; happy", "train", "0.5", "x"],
        ["sub/b.wav", "rock", "valid", "", ""],
        ["c.wav", "happy;;", "test", "", ""],
        ["d.wav", "", "train", "", ""],  # no tags
        ["gone.wav", "rock", "train", "", ""],  # missing file
        ["a.wav", "rock", "train", "", ""],  # listed twice
        ["c.wav", "rock", "holdout", "", ""],  # unknown split
        ["a.wav", "rock"],  # too few columns
    ]
    with open(tmp_path / "tracks.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return tmp_path


def test_folder_csv(folder):
    ds = load_folder_csv(folder / "tracks.csv")
    assert [(t.id, t.tags, t.split) for t in ds.tracks] == [
        ("a", ("rock", "happy"), "train"), ("sub/b", ("rock",), "validation"),
        ("c", ("happy",), "test")]
    assert ds.tracks[0].audio_path == folder / "a.wav" and ds.tracks[0].duration_s == 0.5
    assert ds.tags == ["happy", "rock"]
    assert ds.report.counts == {"malformed_row": 2, "empty_tags": 1, "missing_file": 1,
                                "duplicate_id": 1}
    fixed = load_dataset("folder_csv", folder / "tracks.csv", tags=["rock"],
                         splits=("train", "validation"))
    assert [t.id for t in fixed.tracks] == ["a", "sub/b"]
    assert fixed.report.counts["unknown_tag"] == 1
    with pytest.raises(ConfigError, match="unknown dataset kind"):
        load_dataset("audioset")


def test_folder_csv_errors(tmp_path):
    (tmp_path / "t.csv").write_text("file,labels\nx.wav,a\n")
    with pytest.raises(ConfigError, match="missing column"):
        load_folder_csv(tmp_path / "t.csv")
    (tmp_path / "t.csv").write_text("path,tags,split\nx.wav,a,train\n")
    with pytest.raises(ConfigError, match=r"t\.csv: no usable train"):
        load_folder_csv(tmp_path / "t.csv")


# --------------------------------------------------------------------------------------------
# Feature cache


@pytest.fixture()
def wav_tracks(tmp_path):
    tracks = []
    for i in range(3):
        path = tmp_path / f"audio/{i}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_audio(path, music_like(1.0 + 0.25 * i, 16000, seed=i), 16000)
        tracks.append(Track(id=f"dir/{i}", tags=("x",), split="train", audio_path=path))
    return tracks


def test_cache_builds_float16_frames_equal_to_the_frontend(tmp_path, wav_tracks):
    options = LogMelOptions(n_mels=64)
    cache = FeatureCache(tmp_path / "cache", options)
    report = cache.build(wav_tracks, workers=2, progress=False)
    assert (report.total, report.computed, report.cached, report.failed) == (3, 3, 0, 0)
    assert report.audio_seconds == pytest.approx(1.0 + 1.25 + 1.5)
    assert report.realtime_factor > 0 and report.realtime_factor_per_core > 0
    for track in wav_tracks:
        audio, _ = load_audio(track.audio_path, options.sample_rate)
        expected = compute_logmel(audio, options)
        got = cache.load(track.id)
        assert got.dtype == np.float32 and got.shape == expected.shape
        assert np.array_equal(got, expected.astype(np.float16).astype(np.float32))
        np.testing.assert_allclose(got, expected, rtol=2**-10, atol=1e-3)
        assert cache.n_frames(track.id) == expected.shape[0]
        assert np.array_equal(cache.load(track.id, 5, 7), got[5:12])
    assert cache.path("dir/0").name == "dir%2F0.npy"
    stored = json.loads((cache.directory / "options.json").read_text())
    assert LogMelOptions.from_dict(stored) == options


def test_cache_resumes_and_recomputes_only_missing_or_broken_files(tmp_path, wav_tracks):
    cache = FeatureCache(tmp_path / "cache", LogMelOptions(n_mels=32))
    cache.build(wav_tracks, progress=False)
    os.remove(cache.path("dir/1"))
    again = cache.build(wav_tracks, progress=False)
    assert (again.computed, again.cached) == (1, 2)
    # A truncated file (not one this cache writes, but one a full disk could) is redone too.
    data = cache.path("dir/2").read_bytes()
    cache.path("dir/2").write_bytes(data[: len(data) // 2])
    assert not cache.has("dir/2") and cache.has("dir/0")
    third = cache.build(wav_tracks, progress=False)
    assert (third.computed, third.cached) == (1, 2)
    assert cache.has("dir/2")
    assert not list(cache.directory.glob(".*.tmp"))


def test_cache_reports_unreadable_audio_without_stopping(tmp_path, wav_tracks, folder):
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(b"this is not an mp3 file" * 100)
    tracks = [*wav_tracks, Track(id="bad", tags=("x",), split="train", audio_path=bad)]
    cache = FeatureCache(tmp_path / "cache", LogMelOptions(n_mels=32))
    report = cache.build(tracks, workers=2, progress=False)
    assert (report.computed, report.failed) == (3, 1)
    assert "bad.mp3" in report.failures["bad"]
    assert "failed bad" in str(report)
    assert not cache.has("bad")
    with pytest.raises(FileNotFoundError, match="run build first"):
        cache.load("bad")
    # The dataset takes the failures into its report.
    ds = load_folder_csv(folder / "tracks.csv")
    dropped = ds.drop({"a": report.failures["bad"]})
    assert [t.id for t in dropped.tracks] == ["sub/b", "c"]
    assert dropped.report.counts["unreadable_audio"] == 1 and dropped.report.kept["train"] == 0
    assert "unreadable_audio" not in ds.report.counts


def test_cache_options_pick_the_folder(tmp_path):
    a, b = LogMelOptions(), LogMelOptions(n_mels=64)
    assert options_key(a) != options_key(b)
    assert options_key(LogMelOptions(sample_rate=16000)) == options_key(a)  # int or float
    assert len(options_key(a)) == 16 and int(options_key(a), 16) >= 0
    assert FeatureCache(tmp_path, a).directory != FeatureCache(tmp_path, b).directory


def test_cache_uses_precomputed_mtg_mels_only_for_the_mtg_preset(tmp_path, mtg):
    ds = load_mtg_jamendo(mtg / "data", audio_root=mtg / "audio", mel_root=mtg / "mels")
    preset = FeatureCache(tmp_path / "cache", LogMelOptions.preset("mtg_jamendo"))
    report = preset.build(ds.tracks, progress=False)
    assert (report.computed, report.precomputed, report.failed) == (4, 4, 0)
    track = ds.tracks[0]
    mel = np.load(track.feature_path)
    assert np.array_equal(preset.load(track.id), mel.T.astype(np.float16).astype(np.float32))
    # Other options decode the mp3 instead.
    other = FeatureCache(tmp_path / "cache", LogMelOptions(sample_rate=12000.0, n_mels=48))
    report = other.build(ds.tracks, progress=False)
    assert (report.computed, report.precomputed) == (4, 0)
    assert report.audio_seconds == pytest.approx(4 * 0.6, abs=0.2)
    mels_only = load_mtg_jamendo(mtg / "data", mel_root=mtg / "mels")
    report = FeatureCache(tmp_path / "cache2", LogMelOptions()).build(mels_only.tracks,
                                                                      progress=False)
    assert report.failed == 4 and "give the audio files" in next(iter(report.failures.values()))
