"""Property-based fuzzing of the three places where outside input enters: the log-mel frontend
(any chunking, any finite or non-finite samples, extreme options), the wire decoder (any frames
give a Message or ProtocolError; the control server answers anything) and the config loader
(any TOML-able document gives a DaemonConfig or ConfigError; a Daemon built from it raises
nothing else and binds nothing). tests/wire/test_protocol.py already fuzzes short byte frames and
mutated valid messages; these add arbitrary objects, arbitrary JSON documents, the control
request/reply decoders and a subscriber on a real socket."""

from __future__ import annotations

import datetime
import json
import math
import threading
import time

import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from support.helpers import decodes_or_refuses, feed

from streamtag.daemon.config import SECTIONS, DaemonConfig, config_from_dict
from streamtag.daemon.daemon import Daemon
from streamtag.errors import ConfigError, ProtocolError
from streamtag.frontend import LogMelOptions, OnlineLogMel, compute_logmel
from streamtag.wire.control import ControlServer
from streamtag.wire.protocol import (
    HEADER_FIELDS,
    MSG_TYPES,
    HeartbeatBody,
    decode_reply,
    decode_request,
    encode,
    make_message,
)


def fuzz(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# -- the frontend ------------------------------------------------------------------------------

SPECIAL = [0.0, -0.0, 1e30, -1e30, 3.4e38, -3.4e38, 1e-45, -1e-45, 1.1754942e-38, 1e-40,
           1.0, -1.0, 32767.0, -32768.0, float("nan"), float("inf"), float("-inf")]


def largest_prime_factor(n: int) -> int:
    factor, largest = 2, 1
    while factor * factor <= n:
        while n % factor == 0:
            largest, n = factor, n // factor
        factor += 1
    return max(largest, n)


def fft_cost(n_fft: int) -> int:
    """Rough work of one frame: the real FFT runs a complex one of n/2 (n when odd), whose
    generic radix for a prime p costs p^2 (n_fft = 8191 takes about a second a frame)."""
    half = n_fft // 2 if n_fft % 2 == 0 else n_fft
    return n_fft * max(8, largest_prime_factor(half))


# Every size up to 1024, and above it the sizes whose FFT is not a slow prime radix; the slow
# fuzzing run draws from all of 2..8192.
QUICK_SIZES = st.sampled_from([n for n in range(2, 8193)
                               if n <= 1024 or largest_prime_factor(n) <= 67])


@st.composite
def frontend_options(draw, sizes=QUICK_SIZES) -> LogMelOptions:
    n_fft = draw(sizes, label="n_fft")
    sample_rate = draw(st.sampled_from([8000.0, 12000.0, 16000.0, 22050.0, 44100.0, 192000.0]))
    fmax = draw(st.none() | st.floats(0.05, 1.0).map(lambda f: f * sample_rate / 2))
    fmin = draw(st.floats(0.0, 0.9)) * (fmax if fmax is not None else sample_rate / 2)
    options = dict(
        sample_rate=sample_rate, n_fft=n_fft,
        win_length=draw(st.none() | st.integers(1, n_fft)),
        hop_length=draw(st.integers(1, n_fft), label="hop_length"),
        window=draw(st.sampled_from(["hann", "hann_symmetric"])),
        center=draw(st.booleans()), pad_mode=draw(st.sampled_from(["constant", "reflect"])),
        n_mels=draw(st.integers(1, min(256, n_fft // 2 + 1)), label="n_mels"),
        fmin=fmin, fmax=fmax,
        mel_scale=draw(st.sampled_from(["slaney", "htk"])),
        norm=draw(st.sampled_from(["slaney", None])),
        power=draw(st.sampled_from([1.0, 2.0])),
        log=draw(st.sampled_from(["db", "log1p", "ln", "none"])),
        amin=draw(st.sampled_from([1e-10, 1e-5, 1e-30])),
        db_multiplier=draw(st.sampled_from([10.0, 20.0])),
        log1p_gain=draw(st.sampled_from([1.0, 10000.0, 1e30])))
    try:
        built = LogMelOptions(**options)
        OnlineLogMel(built)
    except ValueError as exc:
        # Too many mels for the FFT (or fmin too close to fmax for one bin): refused, naming it.
        assert any(name in str(exc) for name in ("n_mels", "fmin", "fmax")), exc
        assume(False)
    return built


@st.composite
def signals(draw, options: LogMelOptions) -> np.ndarray:
    max_frames = max(1, 20_000_000 // fft_cost(options.n_fft))  # bounded work
    length = draw(st.integers(0, min(6 * options.n_fft, max_frames * options.hop_length)),
                  label="length")
    seed = draw(st.integers(0, 2**32 - 1))
    scale = draw(st.sampled_from([0.0, 1e-40, 1e-3, 1.0, 1e4, 1e30]), label="scale")
    x = (np.random.default_rng(seed).standard_normal(length) * scale).astype(np.float32)
    if length:
        specials = draw(st.lists(st.tuples(st.integers(0, length - 1),
                                           st.sampled_from(SPECIAL) | st.floats(width=32)),
                                 max_size=20), label="specials")
        for i, v in specials:
            x[i] = v
    return x


@fuzz(150)
@given(data=st.data())
def test_frontend_any_options_any_chunking_any_samples(data):
    check_frontend(data)


@pytest.mark.slow
@fuzz(1000)
@given(data=st.data())
def test_frontend_longer_fuzzing_with_every_fft_size(data):
    check_frontend(data, st.integers(2, 8192))


def check_frontend(data, sizes=QUICK_SIZES) -> None:
    options = data.draw(frontend_options(sizes), label="options")
    x = data.draw(signals(options), label="signal")
    sizes = data.draw(st.lists(st.integers(0, 3 * options.n_fft), max_size=12), label="chunks")
    got, nonfinite = feed(options, x, sizes)
    fe = OnlineLogMel(options)
    assert got.shape == (fe.num_frames_for(x.size), options.n_mels)
    assert got.dtype == np.float32
    whole = compute_logmel(x, options)
    assert np.array_equal(got, whole, equal_nan=True)  # bitwise, whatever the chunking
    bad = ~np.isfinite(x)
    assert nonfinite == int(bad.sum())
    # NaN/Inf samples are zeros to the frontend, exactly.
    assert np.array_equal(whole, compute_logmel(np.where(bad, 0, x), options), equal_nan=True)
    if options.log != "none" or np.max(np.abs(np.where(bad, 0, x)), initial=0) <= 1e4:
        # Log compression clamps overflowed power; without it only sane levels are finite.
        assert np.isfinite(got).all()


# -- the wire decoder --------------------------------------------------------------------------

json_documents = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(
        st.sampled_from([*HEADER_FIELDS, "tags", "raw", "state", "streams", "cmd", "ok",
                         "error"]) | st.text(max_size=10), inner, max_size=8),
    max_leaves=30)


def as_frame(document) -> bytes:
    return json.dumps(document, allow_nan=True).encode("utf-8", "surrogatepass")


frames_of_anything = st.lists(
    st.binary(max_size=4096) | st.text(max_size=64) | json_documents.map(as_frame)
    | st.sampled_from([None, 0, b"", bytearray(b"{}"), memoryview(b"[]"), 3.5, ["x"]]),
    max_size=6)


@fuzz(200)
@given(frames_of_anything)
def test_decode_of_any_frames_is_a_message_or_protocol_error(frames):
    decodes_or_refuses(frames)


@fuzz(200)
@given(topic=st.sampled_from([*MSG_TYPES, "scores.a", "event.a", "status.a", "x"]),
       header=json_documents, body=json_documents)
def test_decode_of_any_json_documents_is_a_message_or_protocol_error(topic, header, body):
    decodes_or_refuses([topic.encode(), as_frame(header), as_frame(body)])


@fuzz(200)
@given(st.binary(max_size=2048) | json_documents.map(as_frame))
def test_control_decoders_and_server_answer_anything(data):
    for decoder in (decode_request, decode_reply):
        try:
            assert isinstance(decoder(data), dict)
        except ProtocolError:
            pass
    reply = decode_reply(ControlServer(handlers={}).handle_bytes(data))  # never raises
    assert reply["ok"] in (True, False)


def test_a_subscriber_survives_a_hostile_publisher():
    """Garbage on a real socket: the subscriber counts it as invalid, raises nothing and still
    decodes the valid messages around it."""
    from streamtag.wire.subscriber import Subscriber

    ctx = zmq.Context.instance()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    sub = Subscriber(f"tcp://127.0.0.1:{port}")
    def beat(seq: int) -> list[bytes]:
        return encode(make_message(HeartbeatBody(uptime_s=1.0 + seq, streams=0),
                                   session="s" * 32, stream="", seq=seq))

    try:
        deadline = time.monotonic() + 10
        while sub.recv(50) is None:  # until the subscription is through
            assert time.monotonic() < deadline, "no subscription"
            pub.send_multipart(beat(0))
        rng = np.random.default_rng(7)
        garbage = [[b"heartbeat", rng.bytes(int(n))] for n in rng.integers(0, 3000, 200)]
        garbage += [[b"scores.x", b"{}", b"{}"], [b"heartbeat"] * 7,
                    [b"status.a", b"\xff", b"null"], [b"event.a", b"[]", b"[]"]]
        for frames in garbage:
            pub.send_multipart(frames)
        pub.send_multipart(beat(1))
        after = None
        deadline = time.monotonic() + 10
        while (after is None or after.header.seq != 1) and time.monotonic() < deadline:
            after = sub.recv(100)
    finally:
        sub.close()
        pub.close(linger=0)
    assert after is not None and after.header.seq == 1 and after.gap == 0
    assert sub.invalid == len(garbage)


# -- the config loader -------------------------------------------------------------------------

toml_scalars = (st.text(max_size=20) | st.integers(-(2**63), 2**63 - 1) | st.booleans()
                | st.floats() | st.datetimes() | st.dates() | st.times()
                | st.sampled_from(["cpu", "cuda:0", "auto", "tcp://127.0.0.1:0", "pipe:",
                                   "device:pulse", "http://127.0.0.1:9/x", "file:/nope.mp3",
                                   "/etc/hostname", "a", ""]))
toml_values = st.recursive(toml_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=12)
FIELDS = sorted({f for cls in SECTIONS.values() for f in cls.__dataclass_fields__}
                | {"id", "spec", "realtime", "loop", "speed", "format", "rate", "channels",
                   "reconnect", "max_reconnects", "read_timeout_s", "blocksize"})
sections = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), toml_values,
                           max_size=5)
documents = st.dictionaries(
    st.sampled_from([*SECTIONS, "sources"]) | st.text(max_size=8),
    sections | st.lists(sections, max_size=3) | toml_values, max_size=5)


@fuzz(150)
@given(documents)
def test_any_config_document_is_a_config_or_a_config_error(document):
    try:
        config = config_from_dict(document)
    except ConfigError as exc:
        assert str(exc)
        return
    assert isinstance(config, DaemonConfig)
    threads = threading.active_count()
    try:
        Daemon(config)  # builds every source; binds and starts nothing
    except ConfigError:
        pass
    assert threading.active_count() == threads


def test_the_fuzzed_documents_reach_valid_configs():
    """The strategy is not all noise: valid documents of every section are among it."""
    document = {"engine": {"max_batch": 8, "hop_seconds": 0.5}, "publish": {"heartbeat_s": 1},
                "sources": [{"id": "a", "spec": "pipe:", "rate": 48000, "format": "f32le"}],
                "metrics": {"port": 0}, "control": {"file_roots": ["/srv"]},
                "smoothing": {"margin": 0.2}, "model": {"device": "cpu"}}
    config = config_from_dict(document)
    Daemon(config)
    assert config.sources[0].options == {"rate": 48000, "format": "f32le"}
    assert isinstance(datetime.datetime.now(), datetime.datetime) and math.isfinite(1.0)
