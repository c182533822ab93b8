"""Offline tagging: the daemon's engine over files; segments match the events."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from support.helpers import run_side_by_side, tiny_model_file

from streamtag.audio.files import write_audio
from streamtag.audio.testsignals import music_like
from streamtag.engine.smoothing import SmoothingConfig
from streamtag.engine.tagging import format_csv, format_text, tag_files
from streamtag.model.inference import InferenceModel


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("tag")
    model = tiny_model_file(root / "tiny.pt", thresholds=(0.5, 0.45, 0.5, 0.5))
    quiet_then_loud = np.concatenate([0.02 * music_like(4.0, 22050, seed=1),
                                      music_like(4.0, 22050, seed=2)])
    write_audio(root / "one.flac", quiet_then_loud, 22050)
    write_audio(root / "two.flac", music_like(3.0, 22050, seed=3), 22050)
    (root / "broken.mp3").write_bytes(b"not audio at all" * 100)
    return root, model


def test_segments_follow_events_and_summary_follows_window_means(setup):
    root, model_path = setup
    model = InferenceModel.load(model_path, device="cpu")
    smoothing = SmoothingConfig(time_constant_s=0, margin=0, min_on_s=0, min_off_s=0)
    results = tag_files([root / "one.flac", root / "broken.mp3", root / "two.flac"], model,
                        smoothing=smoothing)
    one, broken, two = results
    assert broken.error and "broken.mp3" in broken.error and broken.windows == 0
    assert two.error is None and two.windows > 0
    assert one.duration_s == pytest.approx(8.0, abs=0.01)
    for seg in one.segments:
        assert 0 <= seg.start_s < seg.end_s <= one.duration_s + 1e-6
        assert seg.tag in model.tags
    # The headline tags are those on in more than half of its windows, the most often on
    # first, each with its share and its strength (its mean over its threshold).
    share = dict(zip(one.track["tags"], one.track["active_share"], strict=True))
    assert set(one.tags) == {t for t, s in share.items() if s > 0.5}
    assert [one.tag_share[t] for t in one.tags] == sorted(one.tag_share.values(), reverse=True)
    threshold = dict(zip(model.tags, model.thresholds, strict=True))
    for tag in one.tags:
        assert one.strength[tag] == pytest.approx(one.mean_scores[tag] / threshold[tag],
                                                  abs=0.01)
    for seg in one.segments:
        assert seg.strength == pytest.approx(seg.mean_score / threshold[seg.tag], abs=0.01)
    assert any(s.end_s == pytest.approx(one.duration_s) for s in one.segments) or not any(
        one.segments)
    # The text's first line names the headline tags by the rule, with their shares.
    head = format_text([one]).splitlines()[0]
    assert ("tags (on in more than half of its windows): " + (", ".join(
        f"{t} {100 * one.tag_share[t]:.0f}%" for t in one.tags) or "none")) in head, head
    rows = list(csv.DictReader(io.StringIO(format_csv(results))))
    assert {r["kind"] for r in rows} <= {"segment", "track", "error"}
    assert sum(r["kind"] == "segment" for r in rows) == len(one.segments) + len(two.segments)


def test_tag_csv_has_no_formula_cell_split_on_commas_or_on_semicolons(setup):
    # a file's name is anyone's text: a formula after a semicolon is a cell of its own where
    # a spreadsheet splits rows on semicolons (the decimal mark a comma)
    root, model_path = setup
    named = root / "a;=HYPERLINK(1);b.flac"
    named.write_bytes((root / "two.flac").read_bytes())
    broken = root / "c; @SUM(1);-2.mp3"
    broken.write_bytes(b"not audio at all" * 100)
    model = InferenceModel.load(model_path, device="cpu")
    written = format_csv(tag_files([named, broken], model))
    rows = list(csv.DictReader(io.StringIO(written)))
    assert {r["kind"] for r in rows} >= {"segment", "error"}
    assert {r["path"] for r in rows} == {str(named).replace(";=", ";'="),
                                        str(broken).replace("; @", ";' @").replace(";-", ";'-")}
    text = [r[k] for r in rows for k in ("path", "tag", "error")]
    by_semicolons = [c for row in csv.reader(io.StringIO(written), delimiter=";") for c in row]
    for cells in (text, by_semicolons):
        assert not [c for c in cells if c.lstrip(' "').startswith(("=", "+", "-", "@"))]


def test_tag_command_json_and_exit_code(setup):
    root, model_path = setup
    model = ("--model", str(model_path), "--device", "cpu")
    good, broken, missing = run_side_by_side(
        ("tag", str(root / "two.flac"), *model, "--json"),
        ("tag", str(root / "broken.mp3"), *model),
        ("tag", str(root / "missing.mp3"), str(root / "two.flac"), *model, "--json"))
    done = good
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout.splitlines()[0])
    assert record["path"].endswith("two.flac") and record["windows"] > 0
    assert set(record["mean_scores"]) == {"calm", "loud", "bright", "dark"}
    done = broken
    assert done.returncode == 1 and done.stdout == ""  # the error is said on stderr
    # FFmpeg's reason in words, with what to check, and not its error number
    assert "FFmpeg does not recognise it as audio" in done.stderr, done.stderr
    assert "check that it is an audio file" in done.stderr and "Errno" not in done.stderr
    assert "Traceback" not in done.stderr and "sink failed" not in done.stderr, done.stderr
    # a file that is not there: said, the other file tagged, and no traceback for it
    done = missing
    assert done.returncode == 1
    missing, two = (json.loads(line) for line in done.stdout.splitlines())
    assert "no such file" in missing["error"] and two["windows"] > 0
    assert "Traceback" not in done.stderr and "sink failed" not in done.stderr, done.stderr
