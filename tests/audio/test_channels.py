"""Any channel count and sample format that PyAV decodes is read as mono, safely: 7.1 AAC and
Opus (8 channels: the count at which PyAV's plane list reads past FFmpeg's 8 data pointers and
crashed the daemon with SIGSEGV), 16 and 64 Opus channels, 16 packed PCM channels, 64-bit
integer and float PCM; more than 64 channels is refused with an error that says what to do,
and a file that fails is one error line while the others are tagged."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest
from support.helpers import run_streamtag

from streamtag.audio.files import (
    MAX_CHANNELS,
    AudioDecodeError,
    iter_decoded,
    load_audio,
    mono_blocks,
    write_audio,
)

RATE = 48000
SECONDS = 1.0


def channels_of(n: int) -> np.ndarray:
    """(n, frames): a 100 Hz tone (below every codec's LFE cut) at a level of its own in each
    channel, so the mono mix has a known level."""
    t = np.arange(int(RATE * SECONDS)) / RATE
    tone = np.sin(2 * np.pi * 100 * t)
    return np.stack([0.5 * (k + 1) / n * tone for k in range(n)])


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


CASES = {  # name: (file name, codec, channels, layout, encoder options, decoded format)
    "aac-7.1": ("a.m4a", "aac", 8, "7.1", None, "fltp"),
    "opus-7.1": ("a.opus", "libopus", 8, "7.1", None, "fltp"),
    "opus-16": ("b.opus", "libopus", 16, None, {"mapping_family": "255"}, "fltp"),
    "opus-64": ("c.opus", "libopus", 64, None, {"mapping_family": "255"}, "fltp"),
    "pcm-16": ("a.wav", "pcm_s16le", 16, None, None, "s16"),
    "s64-stereo": ("b.wav", "pcm_s64le", 2, None, None, "s64"),
    "f64-5.1": ("c.wav", "pcm_f64le", 6, "5.1", None, "dbl"),
    "f64-8": ("d.wav", "pcm_f64le", 8, "7.1", None, "dbl"),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("channels")
    made = {}
    for case, (name, codec, n, layout, options, _) in CASES.items():
        path = root / name
        write_audio(path, channels_of(n), RATE, codec=codec, layout=layout, options=options)
        made[case] = path
    return made


@pytest.mark.parametrize("case", list(CASES))
def test_every_channel_count_and_format_is_read_as_the_mean_of_its_channels(files, case):
    _, _, n, _, _, decoded = CASES[case]
    path = files[case]
    with av.open(str(path)) as container:  # what the test means to give the reader
        stream = container.streams.audio[0]
        assert (stream.codec_context.layout.nb_channels, stream.format.name) == (n, decoded)
    audio, rate = load_audio(path)
    expected = channels_of(n).mean(axis=0)
    assert rate == RATE and abs(len(audio) - len(expected)) < 4096
    # 64-bit PCM is exact, 16-bit within its steps, lossy codecs within a few per cent
    tolerance = {"s64": 1e-6, "f64": 1e-6, "pcm": 1e-3}.get(case[:3], 0.03)
    assert rms(audio) == pytest.approx(rms(expected), rel=tolerance)


@pytest.mark.parametrize("case", ["aac-7.1", "opus-64", "s64-stereo", "f64-8"])
def test_the_loudness_meter_sees_every_channel_before_the_mix(files, case):
    _, _, n, _, _, _ = CASES[case]
    seen_shapes, names = [], set()

    def seen(planar: np.ndarray, rate: float, channel_names: tuple[str, ...]) -> None:
        seen_shapes.append(planar.shape)
        names.add(channel_names)

    with av.open(str(files[case])) as container:
        blocks = list(mono_blocks(container.decode(container.streams.audio[0]), 0.2, seen))
    assert seen_shapes and all(shape[0] == n for shape in seen_shapes)
    assert sum(shape[1] for shape in seen_shapes) == sum(len(b) for b, _ in blocks)
    assert all(len(found) == n for found in names)
    if case == "aac-7.1":
        assert names == {("FL", "FR", "FC", "LFE", "BL", "BR", "SL", "SR")}


def silent_wav(path, channels: int, frames: int) -> None:
    """A WAV of ``channels`` silent channels (write_audio stops at MAX_CHANNELS)."""
    layout = av.AudioLayout(f"{channels} channels")
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=RATE, layout=layout)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, frames * channels), np.int16),
                                           format="s16", layout=layout)
        frame.sample_rate = RATE
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)


def test_more_channels_than_streamtag_reads_are_refused_with_what_to_do(tmp_path):
    path = tmp_path / "many.wav"
    n = MAX_CHANNELS + 16
    silent_wav(path, n, 960)
    with pytest.raises(AudioDecodeError, match=f"{path}: the audio has {n} channels; "
                                               r"streamtag reads 1 to 64 \(mix it down first"):
        list(iter_decoded(path))


def test_tag_reads_surround_and_64_bit_files_and_one_that_fails_costs_only_its_line(
        files, tmp_path, model_path):
    many = tmp_path / "many.wav"
    silent_wav(many, MAX_CHANNELS + 1, 4800)
    given = [files["aac-7.1"], many, files["s64-stereo"], files["opus-16"]]
    done = run_streamtag("tag", "--model", str(model_path), "--json", *map(str, given))
    assert done.returncode == 1, done.stderr  # one file failed
    assert done.stderr.count("streamtag tag: ") == 1
    assert f"{many}: the audio has 65 channels" in done.stderr
    results = {r["path"]: r for r in map(json.loads, done.stdout.splitlines())}
    assert set(results) == set(map(str, given))
    for path in given:
        result = results[str(path)]
        if path == many:
            assert "65 channels" in result["error"]
        else:
            assert not result.get("error") and result["duration_s"] == pytest.approx(1.0,
                                                                                     abs=0.1)
