"""Real servers and media for the tests: a local HTTP audio server, a private Icecast fed by
ffmpeg, a private PulseAudio with a null sink, and the media files they serve. The fixtures that
start them are in conftest.py."""

from __future__ import annotations

import contextlib
import glob
import http.server
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from support.helpers import free_port, stop_process, wait_until

from streamtag.audio.files import write_audio
from streamtag.audio.testsignals import music_like


def stereo_signal(seconds: float, sample_rate: int) -> np.ndarray:
    return np.stack([music_like(seconds, sample_rate, seed=1),
                     0.5 * music_like(seconds, sample_rate, seed=2)], axis=1)


def write_media(d: Path) -> dict[str, Path]:
    """The sources' test media in folder ``d``: stereo MP3/FLAC at 44.1 kHz, mono at 8 and
    48 kHz, and 1 s and 5 s MP3s, all music-like."""
    files = {"mp3_44k_stereo": d / "stereo44.mp3", "flac_44k_stereo": d / "stereo44.flac",
             "flac_8k": d / "mono8k.flac", "flac_48k": d / "mono48k.flac",
             "mp3_1s": d / "one_second.mp3", "mp3_5s": d / "five_seconds.mp3"}
    x = stereo_signal(2.0, 44100)
    write_audio(files["mp3_44k_stereo"], x.T, 44100)
    write_audio(files["flac_44k_stereo"], x.T, 44100)
    write_audio(files["flac_8k"], music_like(2.0, 8000, seed=3), 8000)
    write_audio(files["flac_48k"], music_like(2.0, 48000, seed=4), 48000)
    write_audio(files["mp3_1s"], music_like(1.0, 44100, seed=5), 44100)
    write_audio(files["mp3_5s"], music_like(5.0, 44100, seed=6), 44100)
    return files


class AudioServer:
    """A ThreadingHTTPServer on 127.0.0.1 that serves ``data`` at ``/stream.mp3``: once with a
    Content-Length (``radio=False``), or like a radio, repeated forever and paced at ``speed``
    times real time. ``stop()`` also cuts the open connections; ``start()`` may reuse the port.
    """

    def __init__(self, data: bytes, radio: bool, bytes_per_s: float = 16000.0) -> None:
        self.data, self.radio, self.bytes_per_s = data, radio, bytes_per_s
        self.port = 0
        self.requests = 0
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._cut = threading.Event()

    def url(self, credentials: str = "") -> str:
        return f"http://{credentials}127.0.0.1:{self.port}/stream.mp3"

    def start(self) -> None:
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                owner.requests += 1
                if self.path != "/stream.mp3":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "audio/mpeg")
                if not owner.radio:
                    self.send_header("Content-Length", str(len(owner.data)))
                    self.end_headers()
                    self.wfile.write(owner.data)
                    return
                self.end_headers()
                piece, t0, sent = 2048, time.monotonic(), 0
                while not owner._cut.is_set():
                    start = sent % len(owner.data)
                    try:
                        self.wfile.write(owner.data[start: start + piece])
                    except OSError:
                        return
                    sent += min(piece, len(owner.data) - start)
                    owner._cut.wait(max(0.0, t0 + sent / owner.bytes_per_s - time.monotonic()))

            def log_message(self, *args):
                pass

        self._cut.clear()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is None:
            return
        self._cut.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
        self._server = None


ICECAST_CONFIG = """<icecast>
  <location>streamtag test</location><admin>test@localhost</admin>
  <limits><clients>20</clients><sources>2</sources><burst-size>8192</burst-size></limits>
  <authentication>
    <source-password>{password}</source-password><relay-password>{password}</relay-password>
    <admin-user>admin</admin-user><admin-password>{password}</admin-password>
  </authentication>
  <hostname>127.0.0.1</hostname>
  <listen-socket><port>{port}</port><bind-address>127.0.0.1</bind-address></listen-socket>
  <mount>
    <mount-name>/radio.mp3</mount-name>
    <mp3-metadata-interval>2048</mp3-metadata-interval><burst-size>8192</burst-size>
  </mount>
  <fileserve>0</fileserve>
  <paths>
    <basedir>{dir}</basedir><logdir>{dir}</logdir><pidfile>{dir}/icecast.pid</pidfile>
    <webroot>/usr/share/icecast2/web</webroot><adminroot>/usr/share/icecast2/admin</adminroot>
  </paths>
  <logging><accesslog>access.log</accesslog><errorlog>error.log</errorlog>
    <loglevel>3</loglevel></logging>
  {security}
</icecast>
"""


class Icecast:
    def __init__(self, port: int, password: str, directory: Path) -> None:
        self.port, self.password, self.directory = port, password, directory
        self.mount = "/radio.mp3"
        self.process: subprocess.Popen | None = None  # icecast2, once icecast_server starts it

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.mount}"

    def admin(self, command: str, timeout_s: float = 20.0, **params) -> str:
        query = urllib.parse.urlencode({"mount": self.mount, **params})
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/admin/{command}?{query}")
        manager = urllib.request.HTTPPasswordMgrWithDefaultRealm()
        manager.add_password(None, f"http://127.0.0.1:{self.port}/", "admin", self.password)
        opener = urllib.request.build_opener(urllib.request.HTTPBasicAuthHandler(manager))
        # Icecast answers its admin requests in its one client thread, behind the streams it
        # serves: 5 s once ran out on a busy machine (a killclient in sources/test_sources.py)
        with opener.open(request, timeout=timeout_s) as response:
            return response.read().decode()

    def mount_is_live(self, timeout_s: float = 20.0) -> bool:
        try:
            return "<return>1</return>" in self.admin("metadata", timeout_s=timeout_s,
                                                      mode="updinfo", song="")
        except OSError:
            return False

    def live_within(self, timeout_s: float, feeder: subprocess.Popen | None = None) -> bool:
        """Whether the mount goes live within ``timeout_s`` (False at once where ``feeder``
        ends first), each probe bounded by the time left."""
        deadline = time.monotonic() + timeout_s
        while (feeder is None or feeder.poll() is None) and time.monotonic() < deadline:
            if self.mount_is_live(timeout_s=max(1.0, deadline - time.monotonic())):
                return True
            time.sleep(0.05)
        return False

    def wait_live(self, timeout_s: float = 10.0) -> None:
        """Waits for a feeder the test started to make the mount live; past ``timeout_s``
        fails with Icecast's and ffmpeg's last log lines."""
        if not self.live_within(timeout_s):
            raise AssertionError(f"timed out after {timeout_s} s waiting for ffmpeg to feed the "
                                 f"icecast mount\n{self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        """Whether icecast2 still runs, and the last lines of its error log and of the log its
        processes (and a feeder's ffmpeg) write to, for a failure's message."""
        code = None if self.process is None else self.process.poll()
        parts = [] if code is None else [f"--- icecast2 ended (exit status {code})"]
        for name in ("error.log", "processes.log"):
            try:
                text = (self.directory / name).read_text(errors="replace")
            except OSError:
                continue
            parts.append(f"--- {name}:\n" + "\n".join(text.splitlines()[-lines:]))
        return "\n".join(parts)


# Debian's Icecast 2.4.4 now and then dies of a segmentation fault just after it starts to
# listen (within 50 ms of it, in about 1 start in 20 on a machine whose cores are all busy):
# one that is still running ICECAST_SETTLE_S after listening is kept, else another is started
ICECAST_STARTS = 5
ICECAST_SETTLE_S = 0.5


def require_icecast() -> None:
    """Skips, naming the packages, unless icecast2 and ffmpeg are installed."""
    missing = [tool for tool in ("icecast2", "ffmpeg") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed; install with "
                    f"apt-get install icecast2 ffmpeg")


@contextlib.contextmanager
def icecast_server():
    """A private Icecast on a free loopback port, listening: yields the server and the log file
    its processes (and any feeder) write to; stops it and removes its folder afterwards. As
    root it runs as the Debian icecast2 user (it refuses to run as root otherwise)."""
    require_icecast()
    directory = Path(tempfile.mkdtemp(prefix="streamtag-icecast-"))
    security = ""
    if os.geteuid() == 0:
        import grp
        import pwd

        try:
            user = pwd.getpwnam("icecast2")
            group = grp.getgrgid(user.pw_gid).gr_name
        except KeyError:
            shutil.rmtree(directory, ignore_errors=True)
            pytest.skip("running as root but the Debian 'icecast2' user does not exist")
        security = (f"<security><chroot>0</chroot><changeowner><user>icecast2</user>"
                    f"<group>{group}</group></changeowner></security>")
        os.chown(directory, user.pw_uid, user.pw_gid)
    server = Icecast(free_port(), "pw" + os.urandom(6).hex(), directory)
    (directory / "icecast.xml").write_text(ICECAST_CONFIG.format(
        port=server.port, password=server.password, dir=directory, security=security))
    log = open(directory / "processes.log", "wb")  # closed below
    try:
        try:
            for _ in range(ICECAST_STARTS):
                server.process = subprocess.Popen(
                    ["icecast2", "-c", str(directory / "icecast.xml")], stdout=log, stderr=log,
                    stdin=subprocess.DEVNULL)
                if settled(server):
                    break
            assert server.process.poll() is None, (
                f"icecast2 ended {ICECAST_STARTS} times as it started\n{server.log_tail()}")
            yield server, log
        finally:
            if server.process is not None:
                # killed, not asked to stop: it takes over a second to end on SIGTERM, and
                # nothing of it is kept
                server.process.kill()
                server.process.wait(5)
    finally:
        log.close()
        shutil.rmtree(directory, ignore_errors=True)


def settled(server: Icecast) -> bool:
    """Whether ``server.process`` listens and is still running ``ICECAST_SETTLE_S`` later."""
    icecast = server.process
    wait_until(lambda: port_open(server.port) or icecast.poll() is not None, 10,
               "icecast to listen")
    deadline = time.monotonic() + ICECAST_SETTLE_S
    while icecast.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    return icecast.poll() is None


class Feeder:
    """ffmpeg streaming a looped mp3 to the Icecast mount; started and stopped by PID."""

    def __init__(self, server: Icecast, mp3: Path, log) -> None:
        self.server, self.mp3, self.log = server, mp3, log
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 60.0, attempt_s: float = 10.0) -> None:
        """Starts ffmpeg and waits for the mount to be live. An ffmpeg that ends before it is
        (refused by a server still starting, on a busy machine), or that is still running but
        has not made it live within ``attempt_s``, is replaced by a new one; past ``timeout_s``
        the error carries ffmpeg's and Icecast's last log lines."""
        s = self.server
        deadline = time.monotonic() + timeout_s
        attempts = 0
        while time.monotonic() < deadline:
            attempts += 1
            self.proc = subprocess.Popen(
                ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-re",
                 "-stream_loop", "-1", "-i", str(self.mp3), "-c:a", "libmp3lame", "-b:a",
                 "128k", "-content_type", "audio/mpeg", "-ice_name", "streamtag test", "-f",
                 "mp3", f"icecast://source:{s.password}@127.0.0.1:{s.port}{s.mount}"],
                stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL)
            if s.live_within(min(attempt_s, deadline - time.monotonic()), self.proc):
                return
            self.stop()
            time.sleep(0.2)
        raise AssertionError(f"timed out after {timeout_s} s ({attempts} ffmpeg started) waiting "
                             f"for ffmpeg to feed the icecast mount\n{s.log_tail()}")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def listener_ids(xml: str) -> list[str]:
    import re

    return re.findall(r'<listener id="(\d+)"', xml) or re.findall(r"<ID>(\d+)</ID>", xml)


def alsa_pulse_plugin() -> bool:
    return bool(glob.glob("/usr/lib/*/alsa-lib/libasound_module_pcm_pulse.so")
                or glob.glob("/usr/lib/alsa-lib/libasound_module_pcm_pulse.so"))


PULSE_PACKAGES = ("apt-get install libportaudio2 pulseaudio pulseaudio-utils "
                  "libasound2-plugins")


def require_pulse():
    """sounddevice, once PortAudio, PulseAudio and the ALSA pulse plugin are all there; else
    the test skips naming what to install."""
    try:
        import sounddevice as sd
    except ImportError:
        pytest.skip("the sounddevice package is missing; install with: pip install sounddevice")
    except OSError as exc:
        pytest.skip(f"PortAudio is missing ({exc}); install with: {PULSE_PACKAGES}")
    missing = [t for t in ("pulseaudio", "pacat", "pactl") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed; install with: {PULSE_PACKAGES}")
    if not alsa_pulse_plugin():
        pytest.skip(f"the ALSA pulse plugin (libasound2-plugins) is missing; install with: "
                    f"{PULSE_PACKAGES}")
    return sd


class PulseServer:
    """A private PulseAudio daemon with a 48 kHz mono float null sink ``testsink``, reachable by
    PortAudio's ALSA backend through the ``pulse`` PCM; ``env`` points a process at it. With
    ``music`` it also plays 30 s of music into the sink. It can be killed (SIGKILL, by PID)
    and started again on the same socket."""

    def __init__(self, directory: Path, music: bool = False) -> None:
        self.directory = directory
        self.socket = directory / "native"
        self.env = {"HOME": str(directory), "XDG_RUNTIME_DIR": str(directory),
                    "PULSE_SERVER": f"unix:{self.socket}", "PULSE_SOURCE": "testsink.monitor",
                    "PULSE_SINK": "testsink"}
        self.proc: subprocess.Popen | None = None
        self.player: subprocess.Popen | None = None
        self._log = open(directory / "pulseaudio.log", "ab")  # closed in close()
        self.music: Path | None = None
        if music:
            self.music = directory / "music.raw"
            self.music.write_bytes(music_like(30.0, 48000, seed=51).astype("<f4").tobytes())

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["pulseaudio", "--daemonize=no", "-n", "--exit-idle-time=-1", "--use-pid-file=no",
             "--log-target=stderr",
             f"--load=module-native-protocol-unix auth-anonymous=1 socket={self.socket}",
             "--load=module-null-sink sink_name=testsink rate=48000 channels=1 "
             "format=float32le"],
            env={**os.environ, **self.env}, stdout=self._log, stderr=self._log,
            stdin=subprocess.DEVNULL)

        def ready() -> bool:
            if self.proc.poll() is not None:
                return True
            return subprocess.run(["pactl", "info"], env={**os.environ, **self.env},
                                  timeout=5, capture_output=True).returncode == 0

        wait_until(ready, 10, "pulseaudio to start", interval=0.05)
        assert self.proc.poll() is None, (self.directory / "pulseaudio.log").read_text()
        if self.music is not None:
            self.player = subprocess.Popen(  # music into the sink whose monitor is captured
                ["pacat", "--playback", "--raw", "--device=testsink", "--format=float32le",
                 "--rate=48000", "--channels=1", str(self.music)],
                env={**os.environ, **self.env}, stdout=self._log, stderr=self._log,
                stdin=subprocess.DEVNULL)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(5)
        if self.player is not None:
            stop_process(self.player)  # it lost its server too

    def close(self) -> None:
        for proc in (self.player, self.proc):
            if proc is not None:
                stop_process(proc)
        self._log.close()


@contextlib.contextmanager
def pulse_session(monkeypatch, music: bool = False):
    """A started ``PulseServer`` that this process (and PortAudio) talks to; afterwards the
    server is stopped, the environment restored and PortAudio made to look again."""
    sd = require_pulse()
    directory = Path(tempfile.mkdtemp(prefix="st-pa-"))  # short: unix socket paths are limited
    server = PulseServer(directory, music)
    try:
        server.start()
        for key, value in server.env.items():
            monkeypatch.setenv(key, value)
        sd._terminate()  # PortAudio lists devices once; make it look again with the new env
        sd._initialize()
        yield server
    finally:
        server.close()
        monkeypatch.undo()
        try:
            sd._terminate()
            sd._initialize()
        finally:
            shutil.rmtree(directory, ignore_errors=True)
