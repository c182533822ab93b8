"""streamtag.values: the checks behind the config, a source's options, a recipe and the wire
protocol. Each refuses a bad value with the caller's error class and a message naming where the
value is, what is allowed and what came; each gives a good value in its canonical type."""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamtag import values
from streamtag.errors import ConfigError, ProtocolError, SourceError
from streamtag.text import csv_text

ERRORS = [ConfigError, SourceError, ProtocolError]


# ---------------------------------------------------------------- single values

def test_an_integer_within_its_bounds_comes_back_and_one_outside_names_the_bound():
    assert values.integer(3, "engine.workers", ConfigError, minimum=1, maximum=256) == 3
    assert values.integer(1, "engine.workers", ConfigError, minimum=1) == 1  # the edges count
    assert values.integer(256, "engine.workers", ConfigError, maximum=256) == 256
    with pytest.raises(ConfigError, match=r"^engine\.workers must be >= 1, got 0$"):
        values.integer(0, "engine.workers", ConfigError, minimum=1)
    with pytest.raises(ConfigError, match=r"^w must be >= 1 and <= 256, got 257$"):
        values.integer(257, "w", ConfigError, minimum=1, maximum=256)
    with pytest.raises(ConfigError, match=r"^w must be an integer from 1 to 8, got 9$"):
        values.integer(9, "w", ConfigError, maximum=8, expected="an integer from 1 to 8")


@pytest.mark.parametrize("value", [True, False, 2.0, 2.5, "2", None, [2]])
def test_an_integer_is_never_a_bool_a_float_or_a_string(value):
    with pytest.raises(ConfigError, match=r"^n must be an integer, got "):
        values.integer(value, "n", ConfigError)


def test_an_integer_from_python_may_be_numpy_s_and_comes_back_an_int():
    got = values.integer(np.int64(7), "n", ProtocolError, minimum=0)
    assert got == 7 and type(got) is int


def test_a_number_takes_an_int_and_gives_a_float():
    got = values.number(3, "publish.heartbeat_s", ConfigError)
    assert got == 3.0 and type(got) is float
    assert type(values.number(np.float32(0.5), "x", ProtocolError)) is float


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, np.float64("nan")])
def test_nan_and_infinity_are_refused(value):
    with pytest.raises(ProtocolError, match=r"^scores raw\[3\] must be finite, got "):
        values.number(value, "scores raw[3]", ProtocolError)


@pytest.mark.parametrize("value", [True, "1.5", None, [1.0], {"a": 1}])
def test_a_number_is_never_a_bool_or_a_string(value):
    with pytest.raises(SourceError, match="^x must be a number, got "):
        values.number(value, "x", SourceError)


def test_a_number_s_bounds_are_named_without_a_needless_point_zero():
    with pytest.raises(ProtocolError, match=r"^track end_s must be >= 12, got 11\.0$"):
        values.number(11.0, "track end_s", ProtocolError, minimum=12.0)
    with pytest.raises(ConfigError, match=r"^lr must be > 0, got 0\.0$"):
        values.number(0, "lr", ConfigError, positive=True)
    with pytest.raises(ConfigError, match=r"^m must be >= 0 and <= 0\.5, got 0\.75$"):
        values.number(0.75, "m", ConfigError, minimum=0, maximum=0.5)
    with pytest.raises(ConfigError, match=r"^h must be > 0 seconds, got -1\.0$"):
        values.number(-1, "h", ConfigError, positive=True, expected="> 0 seconds")


def test_an_int_too_large_for_a_float_is_out_of_range_not_an_overflow():
    with pytest.raises(ProtocolError, match=r"^latency_ms is out of range: 1000.*\.\.\..*0$"):
        values.number(10**400, "latency_ms", ProtocolError)


def test_booleans_strings_and_choices():
    assert values.boolean(False, "engine.reuse_windows", ConfigError) is False
    with pytest.raises(ConfigError, match=r"^train\.bf16 must be true or false, got 1$"):
        values.boolean(1, "train.bf16", ConfigError)
    assert values.text("", "t", ProtocolError) == ""
    with pytest.raises(ProtocolError, match=r"^event tag must not be empty$"):
        values.text("", "event tag", ProtocolError, empty=False)
    with pytest.raises(ProtocolError, match=r"^event tag must be a string, got 5$"):
        values.text(5, "event tag", ProtocolError)
    with pytest.raises(ProtocolError, match="^status title is not valid Unicode"):
        values.text("a\ud800", "status title", ProtocolError)
    assert values.choice("int8", "engine.precision", ConfigError, ("fp32", "int8")) == "int8"
    with pytest.raises(ConfigError, match=r"^engine\.precision must be one of fp32, int8, "
                                          r"got 'fp16'$"):
        values.choice("fp16", "engine.precision", ConfigError, ("fp32", "int8"))
    quoted = values.Words(quoted=True)
    with pytest.raises(ConfigError, match=r"^train\.optimizer must be one of 'adam', 'sgd', "
                                          r"got 5$"):
        values.choice(5, "train.optimizer", ConfigError, ("adam", "sgd"), words=quoted)


def test_the_words_of_a_family_of_messages():
    recipe = values.Words(integer="a whole number", number="a finite number")
    with pytest.raises(ConfigError, match=r"^train\.epochs must be a whole number, got 2\.5$"):
        values.integer(2.5, "train.epochs", ConfigError, minimum=1, words=recipe)
    with pytest.raises(SourceError, match=r"^rate must be a finite number, got '44100'$"):
        values.number("44100", "rate", SourceError, words=recipe)


@pytest.mark.parametrize("error", ERRORS)
def test_the_caller_chooses_the_error_class(error):
    checks = [lambda: values.integer("1", "w", error),
              lambda: values.number(math.nan, "w", error),
              lambda: values.text(1, "w", error), lambda: values.boolean(0, "w", error),
              lambda: values.choice("c", "w", error, ("a", "b")),
              lambda: values.texts([1], "w", error), lambda: values.numbers("1", "w", error),
              lambda: values.table([], "w", error),
              lambda: values.check_keys(["x"], ["y"], "w", error),
              lambda: values.coerce("x", int | None, "w", error)]
    for check in checks:
        with pytest.raises(error) as info:
            check()
        assert type(info.value) is error
        assert re.match(r"(unknown key )?w\b", str(info.value)), str(info.value)


# ---------------------------------------------------------------- arrays and tables

def test_arrays_name_the_item_that_is_wrong():
    assert values.texts(["rock", "calm"], "scores tags", ProtocolError) == ("rock", "calm")
    assert values.texts(iter(["a"]), "t", ProtocolError) == ("a",)  # any iterable, read once
    with pytest.raises(ProtocolError, match=r"^scores tags\[1\] must not be empty$"):
        values.texts(["rock", ""], "scores tags", ProtocolError, empty=False)
    with pytest.raises(ProtocolError, match=r"^scores tags\[2\] must be a string, got 3$"):
        values.texts(("a", "b", 3), "scores tags", ProtocolError)
    with pytest.raises(ProtocolError, match=r"^scores tags must be a list, got 'rock'$"):
        values.texts("rock", "scores tags", ProtocolError)
    with pytest.raises(ProtocolError, match=r"^t\[0\] is not valid Unicode"):
        values.texts(["\udc80"], "t", ProtocolError)
    assert values.numbers([1, 0.5], "raw", ProtocolError) == (1.0, 0.5)
    assert values.numbers(np.array([0.25, 0.5]), "raw", ProtocolError) == (0.25, 0.5)
    with pytest.raises(ProtocolError, match=r"^scores raw\[1\] must be finite, got inf$"):
        values.numbers([0.5, math.inf, 0.5], "scores raw", ProtocolError)
    with pytest.raises(ProtocolError, match=r"^raw must be a list, got \{'a': 1\}$"):
        values.numbers({"a": 1}, "raw", ProtocolError)


def test_text_and_arrays_over_their_caps_are_refused_naming_the_cap():
    assert values.text("abc", "t", ProtocolError, longest=3) == "abc"
    with pytest.raises(ProtocolError, match=r"^t must be at most 3 characters long, got 4$"):
        values.text("abcd", "t", ProtocolError, longest=3)
    # each item's length, whatever the total: a long list of short names passes
    assert values.texts(["ab"] * 10, "tags", ProtocolError, longest=2) == ("ab",) * 10
    with pytest.raises(ProtocolError, match=r"^tags\[1\] must be at most 2 characters long"):
        values.texts(["ab", "abc"], "tags", ProtocolError, longest=2)
    assert values.texts(["a", "b"], "tags", ProtocolError, most=2) == ("a", "b")
    assert values.numbers([1.0, 2.0], "raw", ProtocolError, most=2) == (1.0, 2.0)
    for items in (["a", "b", "c"], iter(["a", "b", "c"])):
        with pytest.raises(ProtocolError, match=r"^tags must have at most 2 items, got 3$"):
            values.texts(items, "tags", ProtocolError, most=2)
    for items in ([1.0, 2.0, 3.0], np.zeros(3)):
        with pytest.raises(ProtocolError, match=r"^raw must have at most 2 items, got 3$"):
            values.numbers(items, "raw", ProtocolError, most=2)


@pytest.mark.parametrize(("cell", "written"), [
    ("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"), ("+1", "'+1"),
    ("-2+3", "'-2+3"), ("@SUM(A1)", "'@SUM(A1)"), ("\tx", "'\tx"), ("\rx", "'\nx"),
    ("rock", "rock"), ("a=b", "a=b"), ("", ""), (None, ""),
    # a part that starts a cell where the CSV is split on semicolons or tabs, or at a line
    # break, which a reader that does not see our quotes takes for a new row
    ("a\r\n=1+1", "a\n'=1+1"), ("A;=1;B", "A;'=1;B"), ("A; +1", "A;' +1"),
    ("a;\"@x\"", "a;'\"@x\""), ("a\t-1+2", "a\t'-1+2")])
def test_csv_text_keeps_a_spreadsheet_from_reading_station_text_as_a_formula(cell, written):
    assert csv_text(cell) == written


def test_a_table_is_a_mapping_and_comes_back_a_copy():
    original = {"options": {"n": [1, 2]}}
    copied = values.table(original, "[model]", ConfigError)
    copied["options"]["n"].append(3)
    assert original == {"options": {"n": [1, 2]}}
    with pytest.raises(ConfigError, match=r"^\[model\] must be a table, got \[1\]$"):
        values.table([1], "[model]", ConfigError)


def test_an_unknown_key_is_named_with_the_keys_the_section_takes():
    values.check_keys(["a"], ["a", "b"], "s", ConfigError)
    with pytest.raises(ConfigError, match=re.escape(
            "unknown key engine.max_batchh; allowed keys in [engine]: max_batch, workers")):
        values.check_keys(["workers", "max_batchh"], ["max_batch", "workers"], "engine",
                          ConfigError)


def test_a_value_is_shown_short_whatever_its_size_or_depth():
    assert values.show("x") == "'x'" and values.show(1.5) == "1.5"
    assert len(values.show("a" * 10_000)) <= values.SHOWN
    assert len(values.show(list(range(10_000)))) <= values.SHOWN
    nested: list = []
    for _ in range(10_000):
        nested = [nested]
    assert len(values.show(nested)) <= values.SHOWN  # no RecursionError
    assert values.show(10**5000) == "<int too long to show>"


# ---------------------------------------------------------------- annotations and dataclasses

def test_coerce_follows_the_annotation():
    assert values.coerce(None, float | None, "w", ConfigError) is None
    assert values.coerce(2, float | None, "w", ConfigError) == 2.0
    assert values.coerce(["a", "b"], tuple[str, ...], "w", ConfigError) == ("a", "b")
    assert values.coerce(3, int | str, "w", ConfigError) == 3
    assert values.coerce("auto", int | str, "w", ConfigError) == "auto"
    assert values.coerce({"k": 1}, dict, "w", ConfigError) == {"k": 1}  # not checked here
    with pytest.raises(ConfigError, match=r"^w must be finite, got nan$"):  # not "or none"
        values.coerce(math.nan, float | None, "w", ConfigError)
    with pytest.raises(ConfigError, match=r"^w must be an integer or a string, got True$"):
        values.coerce(True, int | str, "w", ConfigError)
    with pytest.raises(ConfigError, match=r"^control\.file_roots must be a list, got '/srv'$"):
        values.coerce("/srv", tuple[str, ...], "control.file_roots", ConfigError)
    with pytest.raises(ConfigError, match=r"^control\.file_roots\[1\] must be a string, got 1$"):
        values.coerce(["/srv", 1], tuple[str, ...], "control.file_roots", ConfigError)


@dataclasses.dataclass(frozen=True)
class Section:
    count: int = values.field(1, minimum=1)
    rate: float = values.field(1.0, positive=True, maximum=10)
    mode: str = values.field("fast", choices=("fast", "slow"))
    limit: int | None = values.field(None, minimum=0, expected="an integer >= 0 (or left out)")
    names: tuple[str, ...] = ()
    on: bool = True

    def __post_init__(self) -> None:
        values.check_fields(self, "section", ConfigError)


def test_check_fields_applies_each_field_s_rule_and_keeps_its_canonical_type():
    section = Section(count=2, rate=3, names=["a"], limit=0)
    assert (section.rate, type(section.rate), section.names) == (3.0, float, ("a",))
    for changes, message in [
            ({"count": 0}, "section.count must be an integer >= 1, got 0"),
            ({"count": 1.0}, "section.count must be an integer, got 1.0"),
            ({"rate": 0}, "section.rate must be a number > 0 and <= 10, got 0.0"),
            ({"rate": 11}, "section.rate must be a number > 0 and <= 10, got 11.0"),
            ({"mode": "slower"}, "section.mode must be one of fast, slow, got 'slower'"),
            ({"limit": -1}, "section.limit must be an integer >= 0 (or left out), got -1"),
            ({"names": "a"}, "section.names must be a list, got 'a'"),
            ({"on": "yes"}, "section.on must be true or false, got 'yes'")]:
        with pytest.raises(ConfigError) as info:
            Section(**changes)
        assert str(info.value) == message


def test_from_table_refuses_an_unknown_key_and_wraps_the_dataclass_s_own_errors():
    assert values.from_table(Section, {"rate": 2, "names": ["x"]}, "section", ConfigError) == \
        Section(rate=2.0, names=("x",))
    with pytest.raises(ConfigError, match=r"^unknown key section\.rat; allowed keys in "
                                          r"\[section\]: count, rate, mode, limit, names, on$"):
        values.from_table(Section, {"rat": 2}, "section", ConfigError)
    with pytest.raises(ConfigError, match=r"^\[section\] must be a table, got 5$"):
        values.from_table(Section, 5, "section", ConfigError)

    @dataclasses.dataclass(frozen=True)
    class Picky:
        level: float = 0.0

        def __post_init__(self) -> None:
            if self.level > 1:
                raise ValueError("level is too high")

    with pytest.raises(SourceError, match=r"^\[picky\]: level is too high$"):
        values.from_table(Picky, {"level": 2}, "picky", SourceError)


# ---------------------------------------------------------------- properties

bounds = st.one_of(st.none(), st.integers(-1000, 1000))


@given(st.integers(-2000, 2000), bounds, bounds)
def test_an_integer_passes_exactly_when_it_is_within_its_bounds(value, minimum, maximum):
    inside = (minimum is None or value >= minimum) and (maximum is None or value <= maximum)
    try:
        got = values.integer(value, "n", ConfigError, minimum=minimum, maximum=maximum)
    except ConfigError as exc:
        assert not inside and str(exc).startswith("n must be ") and str(exc).endswith(
            f"got {value}")
    else:
        assert inside and got == value


@given(st.floats(allow_nan=True, allow_infinity=True) | st.integers(-10**6, 10**6),
       st.one_of(st.none(), st.floats(-1e6, 1e6)))
def test_a_number_passes_exactly_when_finite_and_within_its_bound(value, minimum):
    good = math.isfinite(value) and (minimum is None or value >= minimum)
    try:
        got = values.number(value, "x", ProtocolError, minimum=minimum)
    except ProtocolError:
        assert not good
    else:
        assert good and got == value and type(got) is float


json_items = st.one_of(st.text(max_size=5), st.integers(), st.floats(), st.booleans(),
                       st.none(), st.lists(st.integers(), max_size=2))


@given(st.lists(json_items, max_size=8), st.booleans())
def test_texts_gives_the_strings_or_names_the_first_item_that_is_not_one(items, empty):
    def good(item):
        return isinstance(item, str) and (empty or item != "") and not re.search(
            "[\ud800-\udfff]", item)

    try:
        got = values.texts(items, "t", ProtocolError, empty=empty)
    except ProtocolError as exc:
        first = next(i for i, item in enumerate(items) if not good(item))
        assert str(exc).startswith(f"t[{first}] ")
    else:
        assert all(map(good, items)) and got == tuple(items)


@given(st.lists(st.floats() | st.integers(-10**6, 10**6) | st.booleans(), max_size=8))
def test_numbers_gives_floats_or_names_the_first_item_that_is_not_finite(items):
    def good(item):
        return not isinstance(item, bool) and math.isfinite(item)

    try:
        got = values.numbers(items, "raw", ProtocolError)
    except ProtocolError as exc:
        first = next(i for i, item in enumerate(items) if not good(item))
        assert str(exc).startswith(f"raw[{first}] ")
    else:
        assert all(map(good, items)) and got == tuple(float(v) for v in items)
        assert all(type(v) is float for v in got)


@given(st.recursive(json_items, lambda inner: st.lists(inner) | st.dictionaries(st.text(),
                                                                              inner)))
def test_show_is_short_for_anything(value):
    assert len(values.show(value)) <= values.SHOWN
