"""`streamtag record --config FILE`: its `[retention]` section, which `--keep` overrides kind by
kind; a file or flag it cannot use stops record with the key and the fix; and a real record
process expiring a SQLite history as the file and the flag say."""

from __future__ import annotations

import collections
import time

import pytest
import sqlalchemy as sa
from support.helpers import free_port, run_streamtag, stop_process, wait_until
from support.history_station import keys, record, stored_keys

from streamtag.cli import main
from streamtag.errors import ConfigError
from streamtag.history import schema
from streamtag.history.config import RecordConfig, load_config
from streamtag.history.retention import DAY_S, Retention

HOUR = 3600.0


def retention_of(tmp_path, text: str | None, keep: str = "") -> Retention:
    """What record keeps with a file holding `text` (None: no file) and `--keep keep`."""
    config = RecordConfig()
    if text is not None:
        path = tmp_path / "record.toml"
        path.write_text(text, encoding="utf-8")
        config = load_config(path)
    return config.retention.with_keep(keep).retention()


@pytest.mark.parametrize("text, keep, expected", [
    # neither: the defaults
    (None, "", Retention(windows=30 * DAY_S, rollups=400 * DAY_S)),
    # the file alone
    ('[retention]\nwindows = "7d"\ntracks = "5y"\nevents = "90d"\n', "",
     Retention(windows=7 * DAY_S, rollups=400 * DAY_S, tracks=5 * 365 * DAY_S,
               events=90 * DAY_S)),
    ('[retention]\nrollups = "forever"\nsilences = "2w"\n', "",
     Retention(windows=30 * DAY_S, rollups=None, silences=14 * DAY_S)),
    # the flag alone
    (None, "windows=2h,gaps=1y", Retention(windows=2 * HOUR, rollups=400 * DAY_S,
                                           gaps=365 * DAY_S)),
    # both: the flag wins for what it names, the file stands for the rest
    ('[retention]\nwindows = "7d"\ntracks = "5y"\n', "windows=1d,statuses=30d",
     Retention(windows=DAY_S, rollups=400 * DAY_S, tracks=5 * 365 * DAY_S,
               statuses=30 * DAY_S)),
    ('[retention]\ntracks = "5y"\n', "tracks=forever", Retention()),
])
def test_retention_comes_from_the_file_and_the_flag_the_flag_winning(tmp_path, text, keep,
                                                                      expected):
    assert retention_of(tmp_path, text, keep) == expected


@pytest.mark.parametrize("text, keep, words", [
    ('[retention]\nwindows = 30\n', "",
     'retention.windows must be a number and a unit .* in quotes \\(windows = "30d"\\), got 30'),
    ('[retention]\ntracks = "5 years"\n', "",
     "retention.tracks must be a number and a unit \\(s, m, h, d, w or y"),
    ('[retention]\nwindows = "0d"\n', "", "retention.windows must be"),
    ('[retention]\nwindow = "3d"\n', "",
     "unknown key retention.window; allowed keys in \\[retention\\]: windows, rollups"),
    ('[retention]\nwindows = "60d"\nrollups = "30d"\n', "",
     "retention.rollups \\(30d\\) is shorter than retention.windows \\(60d\\).*keep them at "
     "least as long"),
    ('[retain]\nwindows = "3d"\n', "", "unknown section \\[retain\\].*sections are "
                                       "\\[retention\\]"),
    ("retention = 3\n", "", "\\[retention\\] must be a table"),
    ("[retention\n", "", "is not valid TOML"),
    ('[retention]\nrollups = "40d"\n', "windows=60d",
     "--keep 'windows=60d': retention.rollups \\(40d\\) is shorter than retention.windows"),
    ('[retention]\nwindows = "7d"\n', "tracks=5 years",
     "--keep 'tracks=5 years'.*give a number and a unit"),
])
def test_a_retention_record_cannot_use_is_refused_naming_the_key_and_the_fix(
        tmp_path, capsys, text, keep, words):
    path = tmp_path / "record.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=words):
        load_config(path).retention.with_keep(keep)
    # the command stops at once, exit status 2, before it touches the database
    url = f"sqlite:///{tmp_path / 'tags.db'}"
    assert main(["record", "--config", str(path), "--keep", keep, "--db", url,
                 "--upgrade"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("streamtag record: ")
    assert str(path) in err or keep in err
    assert not (tmp_path / "tags.db").exists()


def test_record_names_a_config_file_it_cannot_read(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'tags.db'}"
    assert main(["record", "--config", str(tmp_path / "missing.toml"), "--db", url,
                 "--upgrade"]) == 2
    assert "cannot read config file" in capsys.readouterr().err


def test_a_record_process_expires_what_its_file_and_flag_say(tmp_path):
    """Three streams recorded 3 h, 90 min and 15 min ago. The file keeps windows, rollups and
    tracks 2 h; `--keep windows=1h` overrides its windows. A real `streamtag record` keeps the
    recent stream's windows only (by the flag: the file's 2 h would keep the middle one's too),
    the middle and recent streams' rollups and tracks (by the file: the defaults would keep the
    old one's too), and every event and status (kept for ever by default)."""
    url = f"sqlite:///{tmp_path / 'tags.db'}"
    now = time.time()

    def programme(station):
        for stream, ago in (("old", 3 * HOUR), ("middle", 1.5 * HOUR), ("recent", 0.25 * HOUR)):
            station.play(stream, range(300), now - ago)  # a track every 240 windows
        return list(station.sent)

    sent = keys(record(url, programme))
    engine = schema.create_db_engine(url)
    assert stored_keys(engine) == sent
    config = tmp_path / "record.toml"
    config.write_text('[retention]\nwindows = "2h"\nrollups = "2h"\ntracks = "2h"\n',
                      encoding="utf-8")

    def streams_with(table) -> set[str]:
        with engine.connect() as conn:
            return set(conn.execute(
                sa.select(schema.sessions.c.stream).join(
                    table, table.c.session_id == schema.sessions.c.id)).scalars())

    proc = run_streamtag("record", "--config", str(config), "--keep", "windows=1h",
                         "--connect", f"tcp://127.0.0.1:{free_port()}", "--db", url, "-q",
                         popen=True)
    try:
        wait_until(lambda: streams_with(schema.window_blocks) == {"recent"}
                   and streams_with(schema.window_rollups) == {"middle", "recent"}
                   or proc.poll() is not None, 60, "the recorder's retention to run",
                   interval=0.2)
    finally:
        stop_process(proc, 15)
        _, err = proc.communicate()
    assert proc.returncode == 0, err
    stored = stored_keys(engine)
    by_kind = collections.defaultdict(set)
    for msg_type, stream, _, _ in stored:
        by_kind[msg_type].add(stream)
    assert by_kind["scores"] == {"recent"}
    assert by_kind["track"] == {"middle", "recent"}
    assert by_kind["event"] == by_kind["status"] == {"old", "middle", "recent"}
    assert {k: n for k, n in stored.items() if k[0] in ("event", "status")} == {
        k: n for k, n in sent.items() if k[0] in ("event", "status")}
    assert streams_with(schema.window_rollups) == {"middle", "recent"}
    engine.dispose()
