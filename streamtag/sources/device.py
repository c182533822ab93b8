"""Live capture from a sound card (or PulseAudio/PipeWire through ALSA) with PortAudio via
``sounddevice``.

The PortAudio callback runs on PortAudio's real-time thread: it only copies the block into a
``queue.SimpleQueue`` (no locks that can block, no waiting) and counts overflows. Everything
else (mono, resampling, chunks) happens in the consumer's thread, in ``chunks()``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import re
import sys
import tempfile
import threading
import time
from collections.abc import Iterator

import numpy as np

from streamtag.backoff import Backoff
from streamtag.errors import SourceError
from streamtag.sources.base import AudioChunk, Source

PORTAUDIO_HINT = ("the PortAudio library is missing; install it (Debian/Ubuntu: "
                  "apt-get install libportaudio2)")

log = logging.getLogger(__name__)

# What the C libraries under PortAudio write to the process's stderr as they probe or open a
# device that is gone (a sound server killed, a card unplugged), on every reopen attempt:
# ALSA's own lines (and the blank line its PulseAudio plugin adds), PortAudio's ALSA host API's
# failed expressions, JACK's client library looking for a server.
_C_LIBRARY_LINE = re.compile(
    r"ALSA lib |Expression '.*' failed in '|Cannot connect to server (socket|request channel)|"
    r"jack server is not running|JackShmReadWritePtr|\s*$")
_STDERR_LOCK = threading.Lock()


@contextlib.contextmanager
def _c_library_lines():
    """While PortAudio starts, probes, opens or closes a device: what is written to the
    process's stderr (file descriptor 2, where C libraries write) is caught; the C libraries'
    lines go to this module's log at info level (run -v shows them), and anything else
    written meanwhile (another thread's log line) is passed on to stderr once the call returns
    or fails. One call at a time."""
    with _STDERR_LOCK:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        try:
            saved = os.dup(2)
            caught = tempfile.TemporaryFile()
        except OSError:  # no stderr to guard, or nowhere to catch it: as it is
            yield
            return
        try:
            os.dup2(caught.fileno(), 2)
            yield
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            with caught:
                caught.seek(0)
                _pass_on(caught.read().decode("utf-8", "replace"))


def _pass_on(text: str) -> None:
    """The C libraries' lines of ``text`` to the log, the rest to stderr."""
    passed = []
    for line in text.splitlines(keepends=True):
        if _C_LIBRARY_LINE.match(line):
            if line.strip():
                log.info("PortAudio/ALSA: %s", line.strip())
        else:
            passed.append(line)
    if passed:
        with contextlib.suppress(OSError):
            os.write(2, "".join(passed).encode("utf-8", "replace"))


def _sounddevice():
    loaded = sys.modules.get("sounddevice")
    if loaded is not None:
        return loaded
    try:
        with _c_library_lines():  # importing it starts PortAudio, which probes every device
            import sounddevice
    except ImportError as exc:
        raise SourceError("cannot use audio devices: the 'sounddevice' package is missing; "
                          "install it with: pip install sounddevice") from exc
    except OSError as exc:  # sounddevice raises OSError when libportaudio cannot be loaded
        raise SourceError(f"cannot use audio devices: {PORTAUDIO_HINT} ({exc})") from exc
    return sounddevice


def list_input_devices() -> list[dict]:
    """Every capture device PortAudio sees: index, name, host API, channels, default rate."""
    sd = _sounddevice()
    try:
        with _c_library_lines():
            default_input = sd.default.device[0]
            hostapis = sd.query_hostapis()
            devices = sd.query_devices()
    except sd.PortAudioError as exc:
        raise SourceError(f"cannot list audio devices: {exc}") from exc
    return [{"index": int(d["index"]), "name": d["name"],
             "hostapi": hostapis[d["hostapi"]]["name"],
             "max_input_channels": int(d["max_input_channels"]),
             "default_samplerate": float(d["default_samplerate"]),
             "default": int(d["index"]) == default_input}
            for d in devices if d["max_input_channels"] > 0]


def resolve_input_device(name_or_index: str | int) -> dict:
    """The input device with this index, else the first whose name contains ``name_or_index``
    (case-insensitive; an exact name wins). ``""`` or ``"default"`` is the default input."""
    devices = list_input_devices()
    spec = str(name_or_index).strip()
    if spec.lower() in ("", "default") and not any(d["name"] == spec for d in devices):
        match = [d for d in devices if d["default"]]
    elif spec.lstrip("-").isdigit():
        match = [d for d in devices if d["index"] == int(spec)]
    else:
        match = ([d for d in devices if d["name"].lower() == spec.lower()]
                 or [d for d in devices if spec.lower() in d["name"].lower()])
    if not match:
        available = "; ".join(f"{d['index']}: {d['name']} ({d['hostapi']}, "
                              f"{d['max_input_channels']} ch)" for d in devices) or "none"
        raise SourceError(f"no input device matches {spec or 'default'!r}; "
                          f"available input devices: {available}")
    return match[0]


class DeviceSource(Source):
    """Captures ``channels`` channels (default: up to 2, averaged to mono) at ``device_rate``
    (default: the device's default rate), resampled to the target rate.

    If the consumer falls behind by more than ``max_queue_s`` seconds, new blocks are dropped
    and counted as overflows, like the device's own ``input_overflow``; both go to
    ``counters["overflows"]`` and to the status callback (at most once a second).

    A device that stops delivering (its stream goes inactive, or no audio for
    ``stall_timeout_s``; e.g. the sound server died or the card was unplugged) is reported as
    "reconnecting" and reopened after a backoff that starts at ``initial_backoff_s`` and doubles
    up to ``max_backoff_s``; ``max_reconnects`` limits consecutive attempts without audio
    (None: forever), ``reconnect=False`` fails on the first loss.
    """

    kind = "device"
    schemes = ("device",)
    spec_help = "device:NAME_OR_INDEX"
    live = True

    @classmethod
    def target_of(cls, rest: str, text: str) -> str:
        return rest or "default"

    def __init__(self, device: str | int = "default", *, blocksize: int = 1024,
                 channels: int | None = None, device_rate: float | None = None,
                 max_queue_s: float = 2.0, stall_timeout_s: float = 10.0,
                 reconnect: bool = True, initial_backoff_s: float = 0.5,
                 max_backoff_s: float = 10.0, max_reconnects: int | None = None) -> None:
        super().__init__()
        self.backoff_options = dict(reconnect=reconnect, initial_backoff_s=initial_backoff_s,
                                     max_backoff_s=max_backoff_s, max_reconnects=max_reconnects)
        Backoff(f"device:{device}", **self.backoff_options)  # checks the options now
        for name, value, ok, rule in (
                ("blocksize", blocksize, blocksize >= 0, ">= 0 frames (0: PortAudio chooses)"),
                ("channels", channels, channels is None or channels >= 1, ">= 1"),
                ("device_rate", device_rate, device_rate is None or device_rate > 0, "> 0 Hz"),
                ("max_queue_s", max_queue_s, 0 < max_queue_s <= 600, "> 0 and <= 600 seconds"),
                ("stall_timeout_s", stall_timeout_s, 0 < stall_timeout_s <= 3600,
                 "> 0 and <= 3600 seconds")):
            if not ok:
                raise SourceError(f"device:{device}: {name} must be {rule}, got {value!r}")
        self.device = str(device)
        self.description = f"device:{self.device}"
        self.blocksize = int(blocksize)
        self.channels = channels
        self.device_rate = device_rate
        self.max_queue_s = float(max_queue_s)
        self.stall_timeout_s = float(stall_timeout_s)
        self.device_info: dict | None = None
        self._stream = None
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._max_blocks = 1
        # Written only by the PortAudio callback thread, read by the consumer.
        self._device_overflows = 0
        self._dropped_blocks = 0

    def _open(self) -> None:
        sd = _sounddevice()
        info = resolve_input_device(self.device)
        self.device_info = info
        self.description = f"device:{info['index']} ({info['name']})"
        channels = self.channels or min(2, info["max_input_channels"])
        rate = float(self.device_rate or info["default_samplerate"])
        self._max_blocks = max(8, int(self.max_queue_s * rate / (self.blocksize or 1024)))
        try:
            with _c_library_lines():
                self._stream = sd.InputStream(samplerate=rate, blocksize=self.blocksize,
                                              device=info["index"], channels=channels,
                                              dtype="float32", callback=self._callback)
        except (sd.PortAudioError, ValueError) as exc:
            raise SourceError(f"cannot open {self.description} at {rate:g} Hz, {channels} "
                              f"channel(s): {exc}") from exc
        self.device_rate = float(self._stream.samplerate)

    def _callback(self, indata, frames, time_info, status) -> None:
        # PortAudio's thread: copy and count, nothing that can block or take long.
        if status.input_overflow:
            self._device_overflows += 1
        if self._queue.qsize() >= self._max_blocks:
            self._dropped_blocks += 1
            return
        self._queue.put_nowait((indata.copy(), time.monotonic()))

    def chunks(self, stop: threading.Event) -> Iterator[AudioChunk]:
        self._require_open()
        backoff = Backoff(self.description, **self.backoff_options)
        while not stop.is_set():
            got_audio, problem = False, None
            try:
                for chunk in self._capture(stop):
                    got_audio = True
                    yield chunk
            except _DeviceLost as exc:
                problem = str(exc)
            if problem is None or stop.is_set():
                break
            # The device went away (a sound server restart, an unplugged card): the audio after
            # a reopen is not continuous with this, so the resampler's tail ends this part.
            tail = self._flush()
            if tail is not None:
                yield tail
            if got_audio:
                backoff.reset()
            if backoff.exhausted():
                if backoff.reconnect:
                    problem += (f" (gave up after {backoff.attempts} reopen attempts without "
                                "audio)")
                self._status("failed", problem)
                raise SourceError(problem)
            wait_s = backoff.next_wait_s()
            self.counters["reconnects"] += 1
            self._status("reconnecting", problem, reconnects=self.counters["reconnects"],
                         backoff_s=wait_s)
            with self._waiting():
                if stop.wait(wait_s):
                    break
        yield from self._end()

    def _capture(self, stop: threading.Event) -> Iterator[AudioChunk]:
        """One opening of the device: chunks until ``stop`` (returns) or a loss (raises
        _DeviceLost); reopens the device first when an earlier loss closed it."""
        sd = _sounddevice()
        if self._stream is None:
            try:
                self._open()
            except SourceError as exc:
                raise _DeviceLost(str(exc)) from exc
        try:
            self._stream.start()
        except sd.PortAudioError as exc:
            if not self.counters["reconnects"]:
                message = f"cannot start {self.description}: {exc}"
                self._status("failed", message)
                raise SourceError(message) from exc
            self._close_stream()
            raise _DeviceLost(f"cannot restart {self.description}: {exc}") from exc
        reported, last_report, last_data = 0, 0.0, time.monotonic()
        try:
            while not stop.is_set():
                try:
                    with self._waiting():
                        blocks = [self._queue.get(timeout=0.1)]
                except queue.Empty:
                    if stop.is_set():
                        break
                    self._check_alive(last_data)
                    continue
                while True:  # take whatever else is already queued, in one chunk
                    try:
                        blocks.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                last_data = time.monotonic()
                overflows = self._device_overflows + self._dropped_blocks
                self.counters["overflows"] = overflows
                if overflows != reported and last_data - last_report >= 1.0:
                    reported, last_report = overflows, last_data
                    self._status("running", "input overflow: audio was lost",
                                 overflows=overflows, device_overflows=self._device_overflows,
                                 dropped_blocks=self._dropped_blocks)
                samples = blocks[0][0] if len(blocks) == 1 else np.concatenate(
                    [b[0] for b in blocks])
                chunk = self._chunk(samples, self.device_rate, arrival=blocks[-1][1])
                if chunk is not None:
                    yield chunk
        except _DeviceLost:
            self._close_stream()
            raise
        finally:
            self._stop_stream()

    def _running_extra(self) -> dict:
        return {"reconnects": self.counters["reconnects"]} if self.counters["reconnects"] else {}

    def _check_alive(self, last_data: float) -> None:
        problem = None
        if not self._stream.active:
            problem = "the device stopped delivering audio (unplugged or taken away?)"
        elif time.monotonic() - last_data > self.stall_timeout_s:
            problem = f"no audio from the device for {self.stall_timeout_s:g} s"
        if problem:
            raise _DeviceLost(f"{self.description}: {problem}")

    def _stop_stream(self) -> None:
        if self._stream is not None and self._stream.active:
            try:
                self._stream.abort()
            except _sounddevice().PortAudioError:  # the device may be gone: best effort
                pass

    def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            with _c_library_lines():
                try:
                    stream.abort()
                finally:
                    stream.close()

    def _close_stream(self) -> None:
        """Closes a lost stream; the device may already be gone, so errors are ignored."""
        try:
            self.close()
        except _sounddevice().PortAudioError:
            pass


class _DeviceLost(Exception):
    """The open device stopped delivering audio; the message says how."""
