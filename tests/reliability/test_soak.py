"""The soak benchmark, shortened: 8 streams x 30 s through a real daemon at full speed, a
subscriber in another process. Memory stays flat after warm-up, every expected window is
published and received, no sequence gap (benchmarks/soak.py runs the full hour)."""

from __future__ import annotations

from pathlib import Path

from support.helpers import load_file_module

SOAK = Path(__file__).resolve().parents[2] / "benchmarks" / "soak.py"


def load_soak():
    return load_file_module(SOAK, "streamtag_soak")


def test_a_short_soak_loses_nothing_and_keeps_memory_flat():
    soak = load_soak()
    result = soak.run_soak(streams=8, seconds_per_stream=30.0, timeout_s=120.0,
                           log=lambda text: None)
    assert result["failures"] == [], soak.report(result)
    assert result["audio_s"] >= 8 * 30.0 - 1
    assert result["windows_expected"] == result["windows_published"] == \
        result["windows_received"] > 8 * 100
    assert result["rss_growth"] < 0.05
    assert result["subscriber"]["gaps"] == 0 and result["subscriber"]["complete"]
