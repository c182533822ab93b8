"""Audio sources against real parts: files PyAV writes, a local HTTP server, a real Icecast
server fed by ffmpeg, PulseAudio's null sink captured through PortAudio, and OS pipes.

Servers and processes are started by fixtures that always stop them; everything listens on
127.0.0.1 on ports chosen at run time; every wait is bounded.
"""

from __future__ import annotations

import io
import itertools
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from support.helpers import free_port, stop_process
from support.servers import listener_ids, stereo_signal

from streamtag.audio.files import iter_decoded, load_audio, mix_down, mono_blocks
from streamtag.audio.testsignals import music_like
from streamtag.errors import SourceError
from streamtag.sources import (
    AudioChunk,
    DeviceSource,
    FileSource,
    HttpSource,
    PipeSource,
    Resampler,
    parse_source,
)
from streamtag.sources.resample import SAMPLE_LIMIT

soxr = pytest.importorskip("soxr")
av = pytest.importorskip("av")

TARGET = 16000


# -- helpers ---------------------------------------------------------------------------------


class Recorder:
    """A StatusCallback that keeps every call (thread-safe enough: list.append)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None, dict]] = []

    def __call__(self, state: str, error: str | None, extra: dict) -> None:
        self.calls.append((state, error, dict(extra)))

    def states(self) -> list[str]:
        return [c[0] for c in self.calls]

    def wait_for(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(predicate(c) for c in list(self.calls)):
                return True
            time.sleep(0.01)
        return False


class Consumer:
    """Iterates a source's chunks on a thread, so the test can act while audio flows."""

    def __init__(self, source, sample_rate: float, on_status=None) -> None:
        self.source = source
        self.stop = threading.Event()
        self.chunks: list[AudioChunk] = []
        self.error: BaseException | None = None
        source.open(sample_rate, on_status)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for chunk in self.source.chunks(self.stop):
                self.chunks.append(chunk)
        except BaseException as exc:  # handed to the test
            self.error = exc

    def samples(self) -> int:
        return sum(c.samples.size for c in list(self.chunks))

    def wait_samples(self, n: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.thread.is_alive():
            if self.samples() >= n:
                return True
            time.sleep(0.01)
        return self.samples() >= n

    def finish(self, timeout: float = 5.0) -> float:
        """Sets stop, joins; returns how long the source took to notice. Fails if the source
        is still running after ``timeout`` s: a promptness test sets it well below what
        ignoring the stop would take, so that a loaded machine cannot miss it."""
        t0 = time.monotonic()
        self.stop.set()
        self.thread.join(timeout)
        took = time.monotonic() - t0
        self.source.close()
        assert not self.thread.is_alive(), f"{self.source} ignored stop for {timeout} s"
        return took


def read_all(source, sample_rate: float = TARGET, on_status=None) -> list[AudioChunk]:
    source.open(sample_rate, on_status)
    try:
        return list(source.chunks(threading.Event()))
    finally:
        source.close()


def concat(chunks: list[AudioChunk]) -> np.ndarray:
    return np.concatenate([c.samples for c in chunks]) if chunks else np.zeros(0, np.float32)


def assert_contiguous(chunks: list[AudioChunk], start: int = 0) -> None:
    assert chunks, "no audio"
    assert chunks[0].sample_index == start
    for a, b in itertools.pairwise(chunks):
        assert b.sample_index == a.sample_index + a.samples.size
    for c in chunks:
        assert c.samples.dtype == np.float32 and c.samples.ndim == 1


# -- Resampler -------------------------------------------------------------------------------


def test_resampler_is_independent_of_chunking():
    x = music_like(3.0, 44100, seed=7)
    whole = Resampler(TARGET)
    one = np.concatenate([whole.process(x, 44100), whole.flush()])
    rng = np.random.default_rng(0)
    pieces, r, i = [], Resampler(TARGET), 0
    while i < x.size:
        n = int(rng.choice([0, 1, 7, 160, 1023, 4096, 20000]))
        pieces.append(r.process(x[i: i + n], 44100))
        i += n
    pieces.append(r.flush())
    chunked = np.concatenate(pieces)
    assert chunked.size == one.size == r.samples_out == whole.samples_out
    assert abs(one.size - 3.0 * TARGET) <= 2
    np.testing.assert_allclose(chunked, one, atol=1e-5)
    batch = soxr.resample(x, 44100, TARGET, quality="HQ")
    np.testing.assert_allclose(one, batch, atol=1e-4)


def test_resampler_averages_channels_passes_through_and_follows_rate_changes():
    x = stereo_signal(0.5, TARGET).astype(np.float32)
    r = Resampler(TARGET)
    out = r.process(x, TARGET)
    np.testing.assert_array_equal(out, x.mean(axis=1, dtype=np.float32))  # no resampling
    # The rate changes mid-stream: the first part is flushed, the second gets a new stream.
    a, b = music_like(1.0, 44100, seed=8), music_like(1.0, 48000, seed=9)
    r = Resampler(TARGET)
    out = [r.process(a[:30000], 44100), r.process(a[30000:], 44100), r.process(b, 48000),
           r.flush()]
    total = sum(o.size for o in out)
    assert total == r.samples_out
    assert abs(total - 2 * TARGET) <= 4
    expected_a = soxr.resample(a, 44100, TARGET, quality="HQ")
    np.testing.assert_allclose(np.concatenate(out)[: expected_a.size], expected_a, atol=1e-4)


@pytest.mark.parametrize("rate", [TARGET, 44100])  # passed through, and resampled
def test_overflowing_float_audio_is_a_blast_not_silence(rate):
    # Float channels of ±3e38 summed to infinity when averaged, which was made 0 as NaN is:
    # a blasting station read as dead air. They are averaged without overflow now, and what
    # lies beyond ±SAMPLE_LIMIT is the limit.
    square = np.where(np.sin(2 * np.pi * 100 * np.arange(rate) / rate) >= 0, 3e38, -3e38)
    x = np.repeat(square[:, None], 2, axis=1).astype(np.float32)  # a 100 Hz square wave
    x[10, :] = np.nan
    r = Resampler(TARGET)
    out = np.concatenate([r.process(x, rate), r.flush()])
    assert np.isfinite(out).all() and np.abs(out).max() <= SAMPLE_LIMIT * 1.2
    assert np.sqrt(np.mean(out ** 2)) > 1.0  # loud, not silent
    assert (r.nonfinite, r.beyond_limit) == (1, rate - 1)  # the NaN, and all the rest
    sane = music_like(1.0, rate, seed=3)
    r = Resampler(TARGET)
    assert r.process(sane, rate).size and (r.nonfinite, r.beyond_limit) == (0, 0)
    huge = np.full(rate, 100.0, np.float32)  # finite, beyond the limit
    huge[:3] = (np.inf, -np.inf, np.nan)  # a decoder's glitch: a dropout, as before
    r = Resampler(TARGET)
    r.process(huge, rate)
    assert (r.nonfinite, r.beyond_limit) == (3, rate - 3)


# -- FileSource ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mp3_44k_stereo", "flac_44k_stereo", "flac_8k", "flac_48k"])
def test_file_source_yields_the_file_at_the_target_rate(media, name):
    path = media[name]
    status = Recorder()
    chunks = read_all(FileSource(path), TARGET, status)
    assert_contiguous(chunks)
    out = concat(chunks)
    decoded, rate = load_audio(path)  # the whole file, decoded in one go, at its own rate
    assert abs(out.size - 2.0 * TARGET) <= 3, (out.size, rate)
    expected = soxr.resample(decoded, rate, TARGET, quality="HQ")
    n = min(out.size, expected.size)
    assert abs(out.size - expected.size) <= 2
    corr = np.corrcoef(out[:n], expected[:n])[0, 1]
    assert corr > 0.9999
    assert np.max(np.abs(out[:n] - expected[:n])) < 1e-3
    assert status.states() == ["starting", "running", "ended"]


def test_file_source_realtime_takes_playback_time(media):
    source = FileSource(media["mp3_1s"], realtime=True)
    t0 = time.monotonic()
    chunks = read_all(source)
    elapsed = time.monotonic() - t0
    assert abs(concat(chunks).size - TARGET) <= 3
    assert elapsed >= 0.9  # real time cannot be beaten; slower only means a loaded machine
    # Chunks come out spread over the second, not in a burst at the end.
    assert chunks[len(chunks) // 2].arrival - chunks[0].arrival > 0.3


def test_file_source_realtime_stops_promptly(media):
    consumer = Consumer(FileSource(media["mp3_5s"], realtime=True), TARGET)
    assert consumer.wait_samples(TARGET // 4, timeout=20.0)
    consumer.finish()
    assert consumer.error is None
    assert consumer.samples() < 2 * TARGET  # it did not run on to the end of the 5 s


def test_file_source_loops_with_continuous_indices(media):
    consumer = Consumer(FileSource(media["flac_8k"], loop=True), TARGET)
    assert consumer.wait_samples(5 * TARGET, timeout=10.0)  # 2.5 passes of the 2 s file
    consumer.finish()
    assert consumer.error is None
    assert_contiguous(consumer.chunks)


def test_file_source_decodes_the_file_it_opened(media, tmp_path):
    # open() probes the file and keeps it open: chunks() decodes that file, even when the path
    # has meanwhile been replaced by something that is not audio.
    path = tmp_path / "moved.mp3"
    path.write_bytes(media["mp3_44k_stereo"].read_bytes())
    expected = concat(read_all(FileSource(path), TARGET))
    source = FileSource(path)
    source.open(TARGET, None)
    path.unlink()
    path.write_text("not audio any more\n")
    try:
        out = concat(list(source.chunks(threading.Event())))
    finally:
        source.close()
    np.testing.assert_array_equal(out, expected)


def open_files() -> set[str]:
    return {os.path.realpath(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")}


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd (Linux)")
def test_file_source_closed_before_reading_holds_nothing_open(media):
    path = os.path.realpath(media["mp3_1s"])
    source = FileSource(media["mp3_1s"])
    source.open(TARGET, None)
    assert path in open_files()
    source.close()
    assert path not in open_files()
    source.close()  # safe twice
    # Opened again, it reads the whole file from its start.
    source.open(TARGET, None)
    with source:
        assert abs(concat(list(source.chunks(threading.Event()))).size - TARGET) <= 3


def test_file_source_titles_are_cleaned_like_a_station_s(tmp_path):
    path = tmp_path / "tagged.flac"
    x = (music_like(0.5, 8000, seed=1) * 32767).astype(np.int16)
    with av.open(str(path), "w") as container:
        container.metadata.update({"title": "\x1b[2JSong\nTwo\x07", "artist": "A" * 300})
        stream = container.add_stream("flac", rate=8000, layout="mono")
        frame = av.AudioFrame.from_ndarray(x[None, :], format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    source = FileSource(path)
    status = Recorder()
    read_all(source, TARGET, status)
    title = next(c[2]["title"] for c in status.calls if "title" in c[2])
    assert title == ("A" * 300 + " - Song Two")[:256]


def test_file_source_missing_file(tmp_path):
    path = tmp_path / "nope.mp3"
    with pytest.raises(SourceError, match="nope.mp3.*no such file"):
        FileSource(path).open(TARGET, None)


def test_file_source_corrupt_file_names_the_file(tmp_path):
    path = tmp_path / "not_audio.mp3"
    path.write_text("this is a text file, not an MP3\n" * 100)
    status = Recorder()
    with pytest.raises(SourceError, match="not_audio.mp3"):
        FileSource(path).open(TARGET, status)
    assert status.states() == ["starting", "failed"]


def test_file_source_truncated_mp3_yields_the_first_half_then_ends(media, tmp_path):
    # Documented behaviour: FFmpeg drops the cut last frame and reports a clean end.
    data = media["mp3_44k_stereo"].read_bytes()
    path = tmp_path / "half.mp3"
    path.write_bytes(data[: len(data) // 2])
    status = Recorder()
    chunks = read_all(FileSource(path), TARGET, status)
    n = concat(chunks).size
    assert 0.8 * TARGET < n < 1.2 * TARGET
    assert status.states()[-1] == "ended"


def test_file_source_damaged_mp3_yields_what_decoded_then_fails(media, tmp_path):
    data = bytearray(media["mp3_44k_stereo"].read_bytes())
    middle = len(data) // 2
    data[middle: middle + 4000] = np.random.default_rng(0).integers(0, 256, 4000,
                                                                    dtype=np.uint8).tobytes()
    path = tmp_path / "damaged.mp3"
    path.write_bytes(bytes(data))
    source, status, got = FileSource(path), Recorder(), []
    source.open(TARGET, status)
    with pytest.raises(SourceError, match="damaged.mp3"):
        for chunk in source.chunks(threading.Event()):
            got.append(chunk)
    assert concat(got).size > 0.5 * TARGET
    assert status.states()[-1] == "failed"


# -- HttpSource against a local http.server --------------------------------------------------


def test_http_source_reads_an_mp3_like_the_file_source(audio_server, media):
    server = audio_server(radio=False)
    status = Recorder()
    chunks = read_all(HttpSource(server.url(), reconnect=False), TARGET, status)
    assert_contiguous(chunks)
    from_file = concat(read_all(FileSource(media["mp3_44k_stereo"])))
    # The same samples; a file's MP3 end padding is trimmed only where FFmpeg can seek to
    # the end, not in a stream read front to back: at most one MP3 frame more (which also
    # changes the resampler's last few milliseconds).
    got = concat(chunks)
    assert from_file.size <= got.size <= from_file.size + 1152 * TARGET / 44100
    same = from_file.size - TARGET // 100
    np.testing.assert_allclose(got[:same], from_file[:same], atol=1e-6)
    assert status.states() == ["starting", "running", "ended"]
    # Decoded frames go on in blocks (the first loses the resampler's delay; the last two
    # are what was held at the end and the resampler's tail).
    assert len(chunks) > 5 and all(c.samples.size >= 0.19 * TARGET for c in chunks[1:-2])


def test_http_source_reconnects_after_a_server_restart_on_the_same_port(audio_server):
    server = audio_server(radio=True)
    status = Recorder()
    source = HttpSource(server.url(), initial_backoff_s=0.05, max_backoff_s=0.2,
                        read_timeout_s=2.0)
    consumer = Consumer(source, TARGET, status)
    try:
        assert consumer.wait_samples(TARGET // 2, timeout=10.0), consumer.error
        server.stop()
        assert status.wait_for(lambda c: c[0] == "reconnecting", timeout=20.0), status.calls
        # While the server is down, the attempts fail (connection refused) and back off.
        assert status.wait_for(lambda c: c[0] == "reconnecting" and "refused" in (c[1] or ""),
                               timeout=20.0), status.calls
        before = consumer.samples()
        last_index = consumer.chunks[-1].sample_index
        server.start()  # the same port
        assert consumer.wait_samples(before + TARGET // 2, timeout=10.0), status.calls
    finally:
        consumer.finish()
    assert consumer.error is None
    assert_contiguous(consumer.chunks)  # indices continue across the gap
    assert consumer.chunks[-1].sample_index > last_index
    assert source.counters["reconnects"] >= 2
    running_again = [c for c in status.calls if c[0] == "running" and c[2].get("reconnects")]
    assert running_again, status.calls


def test_http_source_backs_off_exponentially_and_gives_up():
    url = f"http://127.0.0.1:{free_port()}/nothing.mp3"  # nothing listens there
    status = Recorder()
    source = HttpSource(url, initial_backoff_s=0.05, max_backoff_s=0.15, max_reconnects=4,
                        read_timeout_s=2.0)
    with pytest.raises(SourceError, match="gave up after 4 reconnects"):
        read_all(source, TARGET, status)
    backoffs = [c[2]["backoff_s"] for c in status.calls if c[0] == "reconnecting"]
    assert backoffs == [0.05, 0.1, 0.15, 0.15]
    assert status.states()[-1] == "failed"


def test_http_source_stop_is_prompt_during_a_backoff_wait():
    url = f"http://127.0.0.1:{free_port()}/nothing.mp3"
    status = Recorder()
    consumer = Consumer(HttpSource(url, initial_backoff_s=20.0, max_backoff_s=20.0), TARGET,
                        status)
    assert status.wait_for(lambda c: c[0] == "reconnecting", timeout=20.0)
    consumer.finish(timeout=10.0)  # waiting out the back-off would take 20 s
    assert consumer.error is None


# -- HttpSource against a real Icecast server ------------------------------------------------

def test_icecast_stream_yields_audio_and_the_stream_title(icecast):
    icecast.admin("metadata", mode="updinfo", song="First Song")
    time.sleep(0.7)  # let the 8 KiB burst fill with data that carries the new title
    status = Recorder()
    source = HttpSource(icecast.url, initial_backoff_s=0.1, max_backoff_s=0.5,
                        read_timeout_s=5.0)
    consumer = Consumer(source, TARGET, status)
    try:
        assert consumer.wait_samples(TARGET, timeout=10.0), (consumer.error, status.calls)
        assert status.wait_for(lambda c: c[2].get("title") == "First Song", timeout=20.0), \
            status.calls
        titled = next(c for c in status.calls if c[2].get("title"))
        assert titled[2].get("station") == "streamtag test"
        assert titled[2]["title_sample"] == 0  # the first block names the audio from 0
        # MP3 does not say where in the song listening began: not told (protocol 1.5)
        assert "heard_from_start" not in titled[2]
        # A title change mid-connection is seen as it arrives, placed further on.
        icecast.admin("metadata", mode="updinfo", song="Second Song")
        assert status.wait_for(lambda c: c[2].get("title") == "Second Song", timeout=5.0), \
            status.calls
        second = next(c for c in status.calls if c[2].get("title") == "Second Song")
        assert 0 < second[2]["title_sample"] <= consumer.samples() + TARGET
        assert second[2]["heard_from_start"] is True  # it began while the source listened
        assert source.counters["reconnects"] == 0
        # Kick our listener: the source reconnects, and the unchanged title is not repeated.
        ids = listener_ids(icecast.admin("listclients"))
        assert ids, "our listener is not listed"
        for listener in ids:
            icecast.admin("killclient", id=listener)
        assert status.wait_for(lambda c: c[0] == "reconnecting", timeout=10.0), status.calls
        before = consumer.samples()
        assert consumer.wait_samples(before + TARGET // 2, timeout=10.0)
    finally:
        consumer.finish()
    assert consumer.error is None
    assert [c[2]["title"] for c in status.calls if "title" in c[2]] == ["First Song",
                                                                          "Second Song"]
    assert_contiguous(consumer.chunks)
    assert np.abs(concat(consumer.chunks)).max() > 0.05  # music, not silence


# -- DeviceSource through PulseAudio's null sink ---------------------------------------------


def test_device_source_captures_the_played_signal_sample_exactly(pulse):
    status = Recorder()
    source = DeviceSource("pulse", device_rate=48000, channels=1, blocksize=512)
    consumer = Consumer(source, 48000, status)  # target = device rate: no resampling
    signal = music_like(1.0, 48000, seed=11)
    try:
        assert consumer.wait_samples(1, timeout=10.0), (consumer.error, status.calls)
        # PulseAudio drops the first few hundred samples of a new playback stream (the null
        # sink starts rendering before pacat's data arrives), so play 0.1 s of silence first.
        lead_in = np.zeros(4800, np.float32)
        subprocess.run(["pacat", "--playback", "--raw", "--device=testsink",
                        "--format=float32le", "--rate=48000", "--channels=1",
                        "--volume=65536"], input=np.concatenate([lead_in, signal]).tobytes(),
                       env={**os.environ, **pulse}, timeout=15, check=True)
        before = consumer.samples()
        assert consumer.wait_samples(before + 24000, timeout=10.0)  # the tail reaches us
    finally:
        consumer.finish()
    assert consumer.error is None
    assert_contiguous(consumer.chunks)
    captured = concat(consumer.chunks)
    n = 1 << int(np.ceil(np.log2(captured.size + signal.size)))
    corr = np.fft.irfft(np.fft.rfft(captured, n) * np.conj(np.fft.rfft(signal, n)), n)
    lag = int(np.argmax(corr[: captured.size - signal.size + 1]))
    aligned = captured[lag: lag + signal.size]
    assert aligned.size == signal.size
    assert np.max(np.abs(aligned - signal)) < 1e-3
    assert np.max(np.abs(captured[:lag])) < 1e-3  # silence before it, as played
    assert status.states()[:2] == ["starting", "running"] and status.states()[-1] == "ended"
    assert source.counters["samples"] == captured.size


def test_device_source_counts_and_reports_overflows_of_a_slow_consumer(pulse):
    status = Recorder()
    source = DeviceSource("pulse", device_rate=48000, channels=1, blocksize=512,
                          max_queue_s=0.2)
    source.open(48000, status)
    stop = threading.Event()
    chunks = source.chunks(stop)
    try:
        first = next(chunks)
        time.sleep(1.0)  # the consumer stalls: capture goes on, the queue overflows
        deadline = time.monotonic() + 30.0
        while source.counters["overflows"] == 0 and time.monotonic() < deadline:
            next(chunks)
    finally:
        stop.set()
        chunks.close()
        source.close()
    assert first.samples.size > 0
    assert source.counters["overflows"] > 0
    reports = [c for c in status.calls if c[1] and "overflow" in c[1]]
    assert reports and reports[0][2]["dropped_blocks"] > 0, status.calls


def test_device_resolution_by_name_index_and_error(pulse):
    from streamtag.sources import list_input_devices

    devices = list_input_devices()
    names = [d["name"] for d in devices]
    assert "pulse" in names, names
    index = names.index("pulse")
    from streamtag.sources.device import resolve_input_device

    assert resolve_input_device("PULSE")["name"] == "pulse"
    assert resolve_input_device(str(devices[index]["index"]))["name"] == "pulse"
    with pytest.raises(SourceError, match="no input device matches 'no such card'.*pulse"):
        resolve_input_device("no such card")


# -- PipeSource ------------------------------------------------------------------------------


def test_pipe_source_s16le_stereo_with_an_odd_trailing_byte():
    rng = np.random.default_rng(1)
    pcm = rng.integers(-32768, 32767, size=(10000, 2), dtype=np.int16)
    data = pcm.astype("<i2").tobytes() + b"\x01\x02\x03"  # a partial frame at the end
    source = PipeSource(format="s16le", rate=TARGET, channels=2, stream=io.BytesIO(data),
                        block_frames=999)
    status = Recorder()
    chunks = read_all(source, TARGET, status)
    assert_contiguous(chunks)
    expected = pcm.astype(np.float32).mean(axis=1) / 32768.0
    np.testing.assert_allclose(concat(chunks), expected, atol=1e-6)
    assert source.counters["dropped_bytes"] == 3
    assert status.calls[-1] == ("ended", None, {"dropped_bytes": 3})


def test_pipe_source_f32le_stereo_is_resampled():
    x = stereo_signal(1.0, 44100).astype("<f4")
    source = PipeSource(format="f32le", rate=44100, channels=2, stream=io.BytesIO(x.tobytes()))
    out = concat(read_all(source, TARGET))
    expected = soxr.resample(x.mean(axis=1), 44100, TARGET, quality="HQ")
    assert abs(out.size - expected.size) <= 1
    n = min(out.size, expected.size)
    np.testing.assert_allclose(out[:n], expected[:n], atol=1e-4)


WRITER = """
import sys, time
import numpy as np
x = (np.arange(48000 * 2) % 2000 - 1000).astype('<i2')  # 1 s of stereo at 48 kHz
data = x.tobytes()
out = sys.stdout.buffer
for i in range(0, len(data), 3001):  # odd sizes: frames split across writes
    out.write(data[i:i + 3001]); out.flush()
    if i % 60000 == 0:
        time.sleep(0.01)
"""


def test_pipe_source_reads_a_real_pipe_with_partial_writes():
    proc = subprocess.Popen([sys.executable, "-c", WRITER], stdout=subprocess.PIPE)
    try:
        source = PipeSource(format="s16le", rate=48000, channels=2, stream=proc.stdout)
        chunks = read_all(source, 48000)
        assert proc.wait(10) == 0
    finally:
        stop_process(proc)
        proc.stdout.close()
    assert_contiguous(chunks)
    x = (np.arange(48000 * 2) % 2000 - 1000).astype(np.float32).reshape(-1, 2)
    np.testing.assert_allclose(concat(chunks), x.mean(axis=1) / 32768.0, atol=1e-6)


def test_pipe_source_stop_is_prompt_on_an_idle_pipe():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"],
                            stdout=subprocess.PIPE)
    try:
        consumer = Consumer(PipeSource(rate=TARGET, stream=proc.stdout), TARGET)
        time.sleep(0.2)
        consumer.finish(timeout=10.0)  # the writer stays silent for 30 s
    finally:
        stop_process(proc)
        proc.stdout.close()


# -- parse_source ----------------------------------------------------------------------------


def test_parse_source_kinds_and_options(media):
    path = media["flac_8k"]
    source = parse_source(str(path))
    assert isinstance(source, FileSource) and source.kind == "file" and not source.live
    source = parse_source(f"file:{path}", realtime=True, loop=True)
    assert isinstance(source, FileSource) and source.realtime and source.loop
    source = parse_source("https://radio.example/live.mp3", max_reconnects=3)
    assert isinstance(source, HttpSource) and source.live
    assert source.backoff_options["max_reconnects"] == 3
    assert isinstance(parse_source("http://radio.example/a"), HttpSource)
    source = parse_source("device:USB Audio", blocksize=256, channels=2)
    assert isinstance(source, DeviceSource) and source.live and source.device == "USB Audio"
    assert parse_source("device:3").device == "3"
    stream = io.BytesIO(b"")
    source = parse_source("pipe:", format="f32le", rate=48000, channels=2, stream=stream)
    assert isinstance(source, PipeSource) and source.kind == "pipe" and not source.live
    assert (source.format, source.rate, source.channels, source.stream) == (
        "f32le", 48000.0, 2, stream)


def test_parse_source_errors():
    with pytest.raises(SourceError, match=r"'ftp://x/y'.*file:PATH.*http.*device:.*pipe:"):
        parse_source("ftp://x/y")
    with pytest.raises(SourceError, match="missing.mp3"):
        parse_source("missing.mp3")
    with pytest.raises(SourceError, match="'volume'.*realtime, loop"):
        parse_source("file:x.mp3", volume=2)
    with pytest.raises(SourceError, match="unknown format"):
        parse_source("pipe:", format="u8")


def test_url_credentials_never_reach_the_description():
    source = parse_source("http://user:s3cret@radio.example:8000/live.mp3?x=1&token=t0ken")
    assert source.description == "http://user:***@radio.example:8000/live.mp3?x=***&token=***"
    assert "s3cret" not in repr(source) and "t0ken" not in repr(source)
    with pytest.raises(SourceError) as info:
        parse_source("rtsp://user:s3cret@cam.example/stream")
    assert "s3cret" not in str(info.value)


def test_http_source_error_messages_hide_credentials(audio_server):
    server = audio_server(radio=False)
    url = server.url("user:s3cret@").replace("/stream.mp3", "/missing.mp3")
    status = Recorder()
    with pytest.raises(SourceError) as info:
        read_all(HttpSource(url, reconnect=False), TARGET, status)
    assert "s3cret" not in str(info.value) and "127.0.0.1" in str(info.value)
    assert all("s3cret" not in (c[1] or "") for c in status.calls)


def test_the_package_docstring_names_every_option_of_every_kind():
    import inspect

    import streamtag.sources

    for cls in (FileSource, HttpSource, DeviceSource, PipeSource):
        for name, parameter in inspect.signature(cls).parameters.items():
            if parameter.kind is inspect.Parameter.KEYWORD_ONLY:
                assert f"``{name}``" in streamtag.sources.__doc__, (cls.__name__, name)


def test_one_backoff_policy_for_every_live_source():
    from streamtag.backoff import Backoff

    backoff = Backoff("x", reconnect=True, initial_backoff_s=0.5, max_backoff_s=3.0,
                      max_reconnects=5)
    waits = [backoff.next_wait_s() for _ in range(4)]
    assert waits == [0.5, 1.0, 2.0, 3.0] and not backoff.exhausted()
    backoff.reset()  # audio resets the wait and the count
    assert backoff.attempts == 0 and backoff.next_wait_s() == 0.5
    for _ in range(4):
        backoff.next_wait_s()
    assert backoff.exhausted()
    assert Backoff("x", reconnect=False, initial_backoff_s=1, max_backoff_s=1,
                   max_reconnects=None).exhausted()
    for options in (dict(initial_backoff_s=0, max_backoff_s=1, max_reconnects=None),
                    dict(initial_backoff_s=2, max_backoff_s=1, max_reconnects=None),
                    dict(initial_backoff_s=1, max_backoff_s=1, max_reconnects=-1)):
        with pytest.raises(SourceError, match="url-or-device: .*(backoff|max_reconnects)"):
            Backoff("url-or-device", reconnect=True, **options)
    # Both live sources refuse bad back-off options through it, naming themselves.
    with pytest.raises(SourceError, match="http://h/x: need 0 < initial_backoff_s"):
        HttpSource("http://h/x", initial_backoff_s=5, max_backoff_s=1)
    with pytest.raises(SourceError, match="device:7: max_reconnects must be >= 0"):
        DeviceSource("7", max_reconnects=-2)


@pytest.mark.parametrize("channels", [1, 2, 6])
def test_decoded_blocks_equal_the_decoder_frames_averaged_to_mono(tmp_path, channels):
    """iter_decoded joins frames into blocks and reads planar float frames plane by plane: the
    same samples as averaging each frame's to_ndarray() (an MP3/AAC decoder gives fltp)."""
    import av

    path = tmp_path / f"{channels}.m4a"
    rng = np.random.default_rng(channels)
    layout = {1: "mono", 2: "stereo", 6: "5.1"}[channels]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=44100, layout=layout)
        x = (0.3 * rng.standard_normal((channels, 44100))).astype(np.float32)
        for i in range(0, x.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x[:, i:i + 1024]),
                                               format="fltp", layout=layout)
            frame.sample_rate = 44100
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    with av.open(str(path)) as container:
        frames = list(container.decode(container.streams.audio[0]))
        assert frames[0].format.name == "fltp" and len(frames[0].planes) == channels
        expected = np.concatenate([f.to_ndarray().mean(axis=0, dtype=np.float32)
                                   for f in frames])
    per_frame = [x for x, rate in iter_decoded(path)]
    blocks = [x for x, rate in iter_decoded(path, block_s=0.25)]
    assert len(per_frame) == len(frames) and len(blocks) < len(frames) / 5
    assert all(b.size >= 0.25 * 44100 for b in blocks[:-1])
    np.testing.assert_array_equal(np.concatenate(per_frame), expected)
    np.testing.assert_array_equal(np.concatenate(blocks), expected)


def _frame(x: np.ndarray, fmt: str, rate: int):
    layout = {1: "mono", 2: "stereo"}[x.shape[0]]
    if fmt == "s16":  # packed: one row of interleaved samples
        x = np.round(x.T.reshape(1, -1) * 32767).astype(np.int16)
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x), format=fmt, layout=layout)
    frame.sample_rate = rate
    return frame


def test_mono_blocks_end_where_rate_channels_or_format_change_and_keep_what_preceded_an_error():
    """Planar float frames are held as plane views and averaged per block; packed 16-bit
    frames are made mono frame by frame. A change of rate, channels or format ends a block;
    an error hands on what was held, then is raised; every block is writable."""
    rng = np.random.default_rng(7)
    parts = [(rng.uniform(-0.5, 0.5, (2, 1152)).astype(np.float32), fmt, rate)
             for fmt, rate in [("fltp", 44100)] * 3 + [("s16", 44100)] * 2 + [("fltp", 48000)]]
    parts.append((rng.uniform(-0.5, 0.5, (1, 1152)).astype(np.float32), "fltp", 48000))

    def frames():
        for x, fmt, rate in parts:
            yield _frame(x, fmt, rate)
        raise OSError("the network went away")

    blocks = []
    with pytest.raises(OSError, match="the network went away"):
        for block in mono_blocks(frames(), block_s=1.0):
            blocks.append(block)
    assert [(rate, len(x)) for x, rate in blocks] == [(44100, 3 * 1152), (44100, 2 * 1152),
                                                      (48000, 1152), (48000, 1152)]
    stereo = [x.mean(axis=0, dtype=np.float32) for x, fmt, rate in parts[:3]]
    np.testing.assert_array_equal(blocks[0][0], np.concatenate(stereo))
    packed = [np.round(x * 32767).astype(np.int16).astype(np.float32) / 32768
              for x, fmt, rate in parts[3:5]]
    np.testing.assert_array_equal(blocks[1][0], np.concatenate([x.mean(axis=0) for x in packed]))
    np.testing.assert_array_equal(blocks[2][0], parts[5][0].mean(axis=0, dtype=np.float32))
    np.testing.assert_array_equal(blocks[3][0], parts[6][0][0])
    for x, _ in blocks:
        assert x.dtype == np.float32 and x.flags.writeable
        x[:1] = 0.0


@pytest.mark.parametrize("header", ["icy-name", "ice-name"])
def test_a_station_s_name_goes_with_its_running_status_and_titles(header, tmp_path):
    """The server's icy-name (or ice-name) is the station's display name, cleaned as titles
    are; an Ogg stream's own TITLE/ARTIST comments title its audio."""
    import http.server

    from tests.scenarios.test_ogg_titles import PIECES, encode_links

    data = encode_links(tmp_path, "opus")[0].read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/ogg")
            self.send_header(header, "Late\x1b[2J Night\tRadio")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    statuses = []
    try:
        source = HttpSource(f"http://127.0.0.1:{server.server_address[1]}/live.ogg",
                            reconnect=False)
        source.open(16000, lambda state, error, extra: statuses.append((state, extra)))
        assert sum(c.samples.size for c in source.chunks(threading.Event())) > 0
    finally:
        server.shutdown()
        server.server_close()
    running = [extra for state, extra in statuses if state == "running"]
    assert running and running[0].get("station") == "Late Night Radio"
    assert {extra["station"] for extra in running if "station" in extra} == {"Late Night Radio"}
    assert [extra["title"] for extra in running if "title" in extra] == [
        f"{PIECES[0][0]} - {PIECES[0][1]}"]


@pytest.mark.parametrize("channels", range(1, 8))
def test_mixing_down_is_numpys_mean_bitwise(channels):
    # What a pipe or a sound card hands the resampler (interleaved frames) and what a packed
    # 16-bit frame decodes to (a strided view of its channels): the mean numpy gives, bitwise,
    # at a fraction of its cost (benchmarks/downmix.py).
    rng = np.random.default_rng(channels)
    x = (0.3 * rng.standard_normal((4410, channels))).astype(np.float32)
    mean = x.mean(axis=1, dtype=np.float32)
    assert mix_down([x[:, c] for c in range(channels)]).tobytes() == mean.tobytes()
    assert mix_down(list(x.T)).tobytes() == mean.tobytes()
    resampler = Resampler(44100)  # at its own rate: the mono samples pass untouched
    assert resampler.process(x, 44100).tobytes() == mean.tobytes()


@pytest.mark.parametrize(("spec", "listed", "hidden"), [
    ("pipe:", "format, rate, channels, block_frames", "stream"),
    ("http://radio.example/live", "reconnect, ", "host_policy"),
    ("file:song.flac", "realtime, loop, speed", None),
])
def test_an_unknown_option_lists_only_those_a_user_may_give(spec, listed, hidden):
    """The list named `stream` (pipe) and `host_policy` (http): objects only Python gives."""
    from streamtag.sources import parse_source

    with pytest.raises(SourceError) as refused:
        parse_source(spec, bogus=1)
    text = str(refused.value)
    assert "take no option 'bogus'" in text and listed in text, text
    assert hidden is None or hidden not in text
