"""Test-wide settings, and the fixtures that several test files share (real model files, media
files, a local HTTP audio server, a private Icecast, a private PulseAudio, a browser)."""

import atexit
import os
import shutil
import tempfile

# Two shared cores: torch's default of one thread per core oversubscribes them when several
# processes run, which makes small forward passes tens of times slower. One thread per test
# process keeps the suite's time predictable. (Benchmarks set their own thread counts.)
os.environ.setdefault("OMP_NUM_THREADS", "1")
# streamtag's user folder (installed models, the control token) is this run's own: no test reads
# or writes the user's, and every daemon and command a test starts finds the same token there.
os.environ["STREAMTAG_HOME"] = tempfile.mkdtemp(prefix="streamtag-home-")
atexit.register(shutil.rmtree, os.environ["STREAMTAG_HOME"], True)

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from support.helpers import free_port, tiny_model_file  # noqa: E402
from support.servers import AudioServer, Feeder, icecast_server, pulse_session, write_media  # noqa: E402

from streamtag.audio.files import write_audio  # noqa: E402
from streamtag.audio.testsignals import music_like  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return tiny_model_file(tmp_path_factory.mktemp("models") / "tiny.pt")


@pytest.fixture(scope="module")
def audio_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("audio")
    files = {}
    for name, seconds, seed in (("a", 5.0, 1), ("b", 4.0, 2)):
        files[name] = root / f"{name}.flac"
        write_audio(files[name], music_like(seconds, 44100, seed=seed), 44100)
    files["corrupt"] = root / "corrupt.mp3"
    files["corrupt"].write_bytes(b"ID3" + os.urandom(5000))
    return files


@pytest.fixture(scope="module")
def song(tmp_path_factory) -> Path:
    """12 s of music as a 44.1 kHz MP3."""
    path = tmp_path_factory.mktemp("audio") / "song.mp3"
    write_audio(path, music_like(12.0, 44100, seed=3), 44100)
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    return write_media(tmp_path_factory.mktemp("media"))


@pytest.fixture
def audio_server(request, media):
    servers = []

    def make(radio: bool, name: str = "mp3_44k_stereo") -> AudioServer:
        server = AudioServer(media[name].read_bytes(), radio)
        servers.append(server)
        server.start()
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def icecast(media):
    with icecast_server() as (server, log):
        feeder = Feeder(server, media["mp3_5s"], log)
        try:
            feeder.start()
            yield server
        finally:
            feeder.stop()


@pytest.fixture(scope="module")
def postgres():
    """A throwaway PostgreSQL server for the module (``PostgresServer``), started."""
    from support.postgres import PostgresServer

    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for the module, the previous count restored after it: on tiny inputs a
    second thread only adds start-up and contention. Use with ``usefixtures``."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    """A user cache folder of the test's own (graphs exported at load go there). Use with
    ``usefixtures``."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture
def pulse(monkeypatch):
    """The environment of a private PulseAudio server (``PulseServer``) this process uses."""
    with pulse_session(monkeypatch) as server:
        yield server.env


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """The synthetic benchmark's folder for ``(n_clips, clip_seconds)``, one per session: the
    trainer generates it on first use (the same clips every time), and every trainer test with
    those settings reads the same folder."""
    base = tmp_path_factory.mktemp("synthetic")
    return lambda n_clips, clip_seconds: base / f"{n_clips}-clips-of-{clip_seconds:g}s"


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium driven by playwright, one for the module (skips when missing)."""
    from support.dashboard import chromium

    with chromium() as launched:
        yield launched


@pytest.fixture
def closing():
    """Things to stop at the end of the test, last started first: objects with close() or
    stop(), or functions to call."""
    from support.dashboard import close_all

    opened: list = []
    yield opened
    close_all(opened)


@pytest.fixture
def endpoints():
    """A feed and a control endpoint on free ports of 127.0.0.1."""
    return f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
