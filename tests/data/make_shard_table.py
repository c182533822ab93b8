"""Writes shard_table.json: which shard serves each of a fixed list of stream ids, for 1 to 16
shards. Run once; tests/daemon/test_shard.py checks that streamtag.daemon.shard still agrees, so a
change of the hash (which would move streams between running daemons) cannot pass unnoticed.

    PYTHONPATH=. python tests/data/make_shard_table.py
"""

from __future__ import annotations

import json
from pathlib import Path

from streamtag.daemon.shard import shard_of

MAX_SHARDS = 16


def stream_ids() -> list[str]:
    """Ids of the shapes operators use: numbered stations, dotted and colon names, the
    shortest and the longest allowed, every character class of a stream id."""
    ids = [f"radio-{i:03d}" for i in range(40)]
    ids += [f"s{i}" for i in range(10)]
    ids += ["a", "Z", "0", "_", "-", ".", ":", "fm.bbc.radio4", "am:1089", "de.wdr-1_live",
            "ROOM-2", "venue_main.stage:left", "x" * 128, "0123456789" * 12 + "abcdefgh"]
    return ids


def main() -> None:
    table = {sid: [shard_of(sid, n) for n in range(1, MAX_SHARDS + 1)] for sid in stream_ids()}
    out = Path(__file__).with_name("shard_table.json")
    rows = ",\n".join(f"  {json.dumps(sid)}: {json.dumps(row)}" for sid, row in table.items())
    out.write_text(f'{{"shards": {json.dumps(list(range(1, MAX_SHARDS + 1)))},\n'
                   f' "table": {{\n{rows}\n }}\n}}\n')
    print(f"wrote {out}: {len(table)} ids x {MAX_SHARDS} shard counts")


if __name__ == "__main__":
    main()
