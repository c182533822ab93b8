"""streamtag demo: the daemon on the generated piece, printed live, ending cleanly."""

import io

from helpers import tiny_model_file

from streamtag.commands.demo import run_demo


def test_demo_prints_the_stream_and_ends(tmp_path):
    model = tiny_model_file(tmp_path / "tiny.pt")
    out = io.StringIO()
    assert run_demo(str(model), seconds=6.0, speed=20.0, device="cpu", out=out) == 0
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("streamtag demo: 6 s piece, model tiny")
    assert any("active:" in line for line in lines)  # scores lines
    assert "status ended" in lines[-1]
