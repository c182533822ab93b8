"""EBU R128 loudness on the dashboard: Debian's chromium showing a real daemon's stream, with
``[health] loudness`` on, reading its short-term loudness beside the level."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("websockets", reason="the dashboard needs websockets: pip install websockets")

from support.dashboard import real_daemon_page  # noqa: E402
from support.helpers import make_config, tiny_model_file  # noqa: E402

from streamtag.audio.files import write_audio  # noqa: E402
from streamtag.audio.loudness import mean_lufs  # noqa: E402
from streamtag.daemon.config import SourceConfig, with_overrides  # noqa: E402
from tests.sources.test_loudness import (  # noqa: E402
    RATE,
    reference_blocks,
    stereo_music,
)
from tests.web.test_server import WAIT_S  # noqa: E402


def test_page_shows_the_short_term_loudness(browser, closing, tmp_path):
    from playwright.sync_api import expect

    path = tmp_path / "music.mp3"
    write_audio(path, stereo_music(16.0), RATE)
    model = tiny_model_file(tmp_path / "tiny.pt", window=64, hop=16)
    daemon, page, errors = real_daemon_page(
        browser, closing, with_overrides(make_config(model, tmp_path), loudness=True))
    daemon.add_source(SourceConfig("radio", f"file:{path}", {"realtime": True, "speed": 4.0}))
    level = page.locator('section.panel[data-stream="radio"] .level-value')
    # the first 3 s have no short-term loudness yet: the level alone, then both
    expect(level).to_have_text(re.compile(r"^-\d+ dBFS · -\d+\.\d LUFS$"),
                               timeout=WAIT_S * 1000)
    shown = float(re.search(r"(-\d+\.\d) LUFS", level.text_content())[1])
    # one of the file's short-term readings (the first half reads about -42 LUFS, the second
    # 12 LU more), to the page's one decimal
    blocks = reference_blocks(path)
    readings = [mean_lufs(blocks[k - 30:k]) for k in range(30, len(blocks) + 1)]
    assert min(readings) - 0.05 <= shown <= max(readings) + 0.05
    page.screenshot(path=str(tmp_path / "dashboard-loudness.png"))
    print(f"\ndashboard screenshot: {tmp_path / 'dashboard-loudness.png'}")
    assert errors == []
