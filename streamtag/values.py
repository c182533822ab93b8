"""Checks of values read from TOML and JSON: the daemon's config, a source's options, a training
recipe, a wire message. Every check raises the error class its caller names (``ConfigError``,
``SourceError``, ``ProtocolError``) with one shape of message, saying where the value is, what
is allowed there and what came:

    engine.max_pending_windows must be an integer >= 1, got 0
    scores raw[3] must be finite, got nan

A frozen dataclass declares each field's rule beside it (``epochs: int = field(30,
minimum=1)``) and calls ``check_fields(self, "train", ConfigError)`` in ``__post_init__``: every
field is checked against its annotation and rule and kept in its canonical type (an int given
for a float becomes a float, a list given for a tuple a tuple). ``from_table`` builds one from a
TOML table or JSON object, refusing a key it does not have. The single checks (``integer``,
``number``, ``text``, ...) serve code that checks values one at a time, as the wire protocol does
on its hot path: each returns the value in its canonical type, and tries the common case first.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import numbers as _numbers
import reprlib
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

ErrorClass = type[Exception]  # the caller's: ConfigError, SourceError, ProtocolError


@dataclasses.dataclass(frozen=True)
class Words:
    """What one family of messages calls a kind of value. The daemon's config and the wire say
    "an integer" and "a number"; a recipe says "a whole number" and quotes its choices."""

    integer: str = "an integer"
    number: str = "a number"
    quoted: bool = False  # choices written 'a', 'b' (else a, b)


WORDS = Words()


@dataclasses.dataclass(frozen=True)
class Rule:
    """What a field takes beyond its annotation; ``expected`` words the range where the
    generated words ("an integer >= 1") would not say enough."""

    minimum: float | None = None
    maximum: float | None = None
    positive: bool = False  # > 0
    choices: tuple[str, ...] | None = None
    expected: str | None = None

    def range_words(self, noun: str) -> str | None:
        """The range in words, naming the kind: "a whole number >= 1"; None when unbounded."""
        if self.expected or (self.minimum is None and self.maximum is None
                             and not self.positive):
            return self.expected
        return f"{noun} {bounds(self.minimum, self.maximum, self.positive)}"


RULE = "streamtag.values"  # the key of a field's Rule in its metadata


_HELP = "help"
_FLAG = "flag"
_METAVAR = "metavar"


def field(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING,
          minimum: float | None = None, maximum: float | None = None, positive: bool = False,
          choices: Sequence[str] | None = None, expected: str | None = None,
          help: str = "", flag: str | None = None,  # noqa: A002 - argparse's word
          metavar: str | None = None) -> Any:
    """A dataclass field with its rule, which ``check_fields`` applies, and what a reader of
    the settings is told of it: ``help`` (its meaning) and ``flag`` (the command-line flag that
    overrides it, if any, with its value's name in the usage, ``metavar``). The configuration
    reference (docs/config.md) and ``run``'s flags are made from these."""
    rule = Rule(minimum, maximum, positive, tuple(choices) if choices is not None else None,
                expected)
    return dataclasses.field(default=default, default_factory=default_factory,
                             metadata={RULE: rule, _HELP: help, _FLAG: flag,
                                       _METAVAR: metavar})


def help_of(declared: dataclasses.Field[Any]) -> str:
    """A field's meaning, as ``field(help=...)`` declared it ("" where it declared none)."""
    return str(declared.metadata.get(_HELP, ""))


def flag_of(declared: dataclasses.Field[Any]) -> str | None:
    """The command-line flag that overrides a field, as ``field(flag=...)`` declared it."""
    return declared.metadata.get(_FLAG)


def metavar_of(declared: dataclasses.Field[Any]) -> str | None:
    """The name of a flag's value in the usage, as ``field(metavar=...)`` declared it."""
    return declared.metadata.get(_METAVAR)


def set_field(obj: Any, name: str, value: Any) -> None:
    """Sets a field of a frozen dataclass: for ``__post_init__``, keeping a value it checked in
    its canonical type."""
    object.__setattr__(obj, name, value)


# ---------------------------------------------------------------- messages

_KINDS = {bool: "a boolean", str: "a string", type(None): "null", dict: "an object",
          list: "an array", tuple: "an array", int: "an integer", float: "a number"}

SHOWN = 60  # characters of a value a message shows at most
_SHORT = reprlib.Repr()  # bounded work for a value of any size or depth (it came from outside)
_SHORT.maxstring = _SHORT.maxother = _SHORT.maxlong = SHOWN


def kind(value: Any) -> str:
    """The JSON name of a value's kind ("a string", "an array"), else its Python type's name."""
    return _KINDS.get(type(value), type(value).__name__)


def show(value: Any) -> str:
    """A value as a message shows it: its repr, cut to ``SHOWN`` characters."""
    try:
        shown = _SHORT.repr(value)
    except Exception:  # an int past Python's digit limit, a repr that fails
        return f"<{type(value).__name__} too long to show>"
    return shown if len(shown) <= SHOWN else shown[:SHOWN - 3] + "..."


def must_be(value: Any, where: str, error: ErrorClass, expected: str) -> Exception:
    """The error to raise for a value that is not what ``where`` takes."""
    return error(f"{where} must be {expected}, got {show(value)}")


def _figure(bound: float) -> str:
    if isinstance(bound, float) and bound.is_integer() and abs(bound) < 1e16:
        return str(int(bound))  # "must be >= 12", not 12.0
    return show(bound)


def bounds(minimum: float | None = None, maximum: float | None = None,
           positive: bool = False) -> str:
    """A range in words: ">= 1", "> 0 and <= 60"."""
    parts = ["> 0"] if positive else []
    if minimum is not None:
        parts.append(f">= {_figure(minimum)}")
    if maximum is not None:
        parts.append(f"<= {_figure(maximum)}")
    return " and ".join(parts)


# ---------------------------------------------------------------- single values

def integer(value: Any, where: str, error: ErrorClass, *, minimum: int | None = None,
            maximum: int | None = None, expected: str | None = None,
            words: Words = WORDS) -> int:
    """An integer (never a bool) within the bounds; ``expected`` words the range in the
    message (else the bounds alone: "must be >= 0")."""
    if (type(value) is int and (minimum is None or value >= minimum)
            and (maximum is None or value <= maximum)):
        return value
    if isinstance(value, bool) or not isinstance(value, _numbers.Integral):
        raise must_be(value, where, error, words.integer)
    whole = int(value)
    if (minimum is not None and whole < minimum) or (maximum is not None and whole > maximum):
        raise must_be(whole, where, error, expected or bounds(minimum, maximum))
    return whole


def number(value: Any, where: str, error: ErrorClass, *, minimum: float | None = None,
           maximum: float | None = None, positive: bool = False, expected: str | None = None,
           words: Words = WORDS) -> float:
    """A finite number (an integer too, never a bool) as a float, within the bounds."""
    if (type(value) is float and math.isfinite(value) and (minimum is None or value >= minimum)
            and (maximum is None or value <= maximum) and not (positive and value <= 0)):
        return value
    if isinstance(value, bool) or not isinstance(value, _numbers.Real):
        raise must_be(value, where, error, words.number)
    try:
        figure = float(value)
    except (OverflowError, ValueError, TypeError):
        raise error(f"{where} is out of range: {show(value)}") from None
    if not math.isfinite(figure):
        raise must_be(figure, where, error, "finite")
    if ((positive and figure <= 0) or (minimum is not None and figure < minimum)
            or (maximum is not None and figure > maximum)):
        raise must_be(figure, where, error, expected or bounds(minimum, maximum, positive))
    return figure


def boolean(value: Any, where: str, error: ErrorClass) -> bool:
    if not isinstance(value, bool):
        raise must_be(value, where, error, "true or false")
    return value


def text(value: Any, where: str, error: ErrorClass, *, empty: bool = True,
         longest: int | None = None) -> str:
    """A string that UTF-8 can carry (JSON can escape a lone surrogate, which it cannot), of
    at most ``longest`` characters."""
    if not isinstance(value, str):
        raise must_be(value, where, error, "a string")
    if not empty and not value:
        raise error(f"{where} must not be empty")
    if longest is not None and len(value) > longest:
        raise too_long(where, error, len(value), longest)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise error(f"{where} is not valid Unicode: {show(value)}") from None
    return value


def too_long(where: str, error: ErrorClass, length: int, longest: int) -> Exception:
    """The error for a string over its length cap (its text is not shown: it may be long)."""
    return error(f"{where} must be at most {longest} characters long, got {length}")


def too_many(where: str, error: ErrorClass, count: int, most: int) -> Exception:
    """The error for an array over its size cap."""
    return error(f"{where} must have at most {most} items, got {count}")


def choice(value: Any, where: str, error: ErrorClass, choices: Sequence[str], *,
           words: Words = WORDS) -> str:
    if isinstance(value, str) and value in choices:
        return value
    listed = ", ".join(map(repr, choices) if words.quoted else choices)
    raise must_be(value, where, error, f"one of {listed}")


# ---------------------------------------------------------------- arrays and tables

def array(value: Any, where: str, error: ErrorClass, *, most: int | None = None) -> list[Any]:
    """The items of a list, a tuple or any other iterable but a string, bytes or a mapping
    (a publisher may give a numpy array), at most ``most`` of them."""
    if isinstance(value, (str, bytes, bytearray, Mapping)) or not isinstance(value, Iterable):
        raise must_be(value, where, error, "a list")
    items = list(value)
    if most is not None and len(items) > most:
        raise too_many(where, error, len(items), most)
    return items


def texts(value: Any, where: str, error: ErrorClass, *, empty: bool = True,
          longest: int | None = None, most: int | None = None) -> tuple[str, ...]:
    """An array of at most ``most`` strings, each of at most ``longest`` characters, as a
    tuple; an item is named by its index (``scores tags[2]``)."""
    if type(value) in (list, tuple):
        if most is not None and len(value) > most:
            raise too_many(where, error, len(value), most)
        # The common case in a few C calls: join refuses an item that is not a string, and the
        # encoding a lone surrogate; the loop below then names the item.
        try:
            joined = "".join(value)
            joined.encode("utf-8")
        except (TypeError, UnicodeEncodeError):
            pass
        else:
            # no item is longer than all of them together: one comparison for most arrays
            if ((empty or all(value))
                    and (longest is None or len(joined) <= longest
                         or max(map(len, value)) <= longest)):
                return tuple(value)
    return tuple(text(item, f"{where}[{i}]", error, empty=empty, longest=longest)
                 for i, item in enumerate(array(value, where, error, most=most)))


def numbers(value: Any, where: str, error: ErrorClass, *,
            most: int | None = None) -> tuple[float, ...]:
    """An array of at most ``most`` finite numbers as a tuple of floats; an item is named by
    its index."""
    if type(value) in (list, tuple):
        if most is not None and len(value) > most:
            raise too_many(where, error, len(value), most)
        items = tuple(value)
        # The common case, all floats and finite, without a call per item: NaN or inf anywhere
        # makes the sum so, and the loop below names the item.
        if set(map(type, items)) == {float} and math.isfinite(sum(items)):
            return items
    return tuple(number(item, f"{where}[{i}]", error)
                 for i, item in enumerate(array(value, where, error, most=most)))


def table(value: Any, where: str, error: ErrorClass) -> dict[str, Any]:
    """A TOML table or JSON object, copied: what is built from it shares nothing with it."""
    if not isinstance(value, Mapping):
        raise must_be(value, where, error, "a table")
    return copy.deepcopy(dict(value))


def check_keys(keys: Iterable[str], allowed: Sequence[str], section: str,
               error: ErrorClass) -> None:
    """An unknown key is an error naming it and the keys ``[section]`` takes."""
    for key in keys:
        if key not in allowed:
            raise error(f"unknown key {section}.{key}; allowed keys in [{section}]: "
                        f"{', '.join(allowed)}")


# ---------------------------------------------------------------- dataclass fields

def describe(annotation: Any, words: Words = WORDS) -> str:
    """An annotation in a message's words: ``int | None`` is "an integer or none"."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return " or ".join(describe(arg, words) for arg in typing.get_args(annotation))
    if typing.get_origin(annotation) is tuple:
        return "a list"
    names = {bool: "true or false", int: words.integer, float: words.number, str: "a string",
             type(None): "none"}
    return names.get(annotation, str(annotation).replace("typing.", ""))


def coerce(value: Any, annotation: Any, where: str, error: ErrorClass, *, rule: Rule | None = None,
           words: Words = WORDS) -> Any:
    """A TOML or JSON value checked against a field's annotation (and rule) and given in its
    type: an int for a float, a list for a tuple. An annotation other than bool, int, float, str,
    a union or a tuple of them (a nested table, Any) takes the value as it is."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        if value is None and type(None) in args:
            return None
        options = [arg for arg in args if arg is not type(None)]
        if len(options) == 1:  # "must be finite" says more than "a number or none"
            return coerce(value, options[0], where, error, rule=rule, words=words)
        for option in options:
            try:
                return coerce(value, option, where, error, rule=rule, words=words)
            except error:
                pass
        raise must_be(value, where, error, describe(annotation, words))
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise must_be(value, where, error, "a list")
        item = typing.get_args(annotation)[0]
        return tuple(coerce(v, item, f"{where}[{i}]", error, rule=rule, words=words)
                     for i, v in enumerate(value))
    rule = rule or Rule()
    if annotation is int:
        # an int field's rule has whole bounds (Rule holds both kinds as floats)
        return integer(value, where, error, minimum=rule.minimum,  # type: ignore[arg-type]
                       maximum=rule.maximum,  # type: ignore[arg-type]
                       expected=rule.range_words(words.integer), words=words)
    if annotation is float:
        return number(value, where, error, minimum=rule.minimum, maximum=rule.maximum,
                      positive=rule.positive, expected=rule.range_words(words.number),
                      words=words)
    if annotation is bool:
        return boolean(value, where, error)
    if annotation is str:
        if rule.choices is not None:
            return choice(value, where, error, rule.choices, words=words)
        return text(value, where, error)
    return value


@functools.cache
def _declared(cls: type) -> tuple[tuple[str, Any, Rule | None], ...]:
    """Each field's name, annotation and rule, found once per class."""
    hints = typing.get_type_hints(cls)
    return tuple((f.name, hints[f.name], f.metadata.get(RULE)) for f in dataclasses.fields(cls))


def check_fields(obj: Any, section: str, error: ErrorClass, words: Words = WORDS) -> None:
    """Checks every field of a dataclass (``section.name``) against its annotation and rule and
    keeps it in its canonical type: for ``__post_init__``."""
    for name, annotation, rule in _declared(type(obj)):  # type: ignore[arg-type]  # a class hashes
        value = getattr(obj, name)
        checked = coerce(value, annotation, f"{section}.{name}", error, rule=rule, words=words)
        if checked is not value:
            set_field(obj, name, checked)


def from_table(cls: type, value: Any, section: str, error: ErrorClass, words: Words = WORDS) -> Any:
    """The dataclass that a TOML table or JSON object ``[section]`` describes; a key it does not
    have, or a value that its annotation refuses, is an ``error`` naming ``section.key``."""
    settings = table(value, f"[{section}]", error)
    declared = {name: annotation for name, annotation, _ in _declared(cls)}
    check_keys(settings, list(declared), section, error)
    checked = {key: coerce(v, declared[key], f"{section}.{key}", error, words=words)
               for key, v in settings.items()}
    try:
        return cls(**checked)
    except error:
        raise
    except (TypeError, ValueError) as exc:  # a dataclass's own check, in its own error
        raise error(str(exc) if section in str(exc) else f"[{section}]: {exc}") from exc


def from_text(text: str, annotation: Any) -> Any:
    """A value written on the command line for a field of ``annotation``: an integer or a
    number where the field takes one and the text is one, else the text itself (which the
    field's check then refuses, naming what it takes)."""
    options = (typing.get_args(annotation)
               if typing.get_origin(annotation) in (typing.Union, types.UnionType, tuple)
               else (annotation,))
    for option in options:
        try:
            if option is int:
                return int(text, 10)
            if option is float:
                return float(text)
        except ValueError:
            pass
    return text


def toml_value(text: str) -> Any:
    """A value written on the command line (``--set key=VALUE``, ``--option key=VALUE``): TOML
    (numbers, booleans, quoted strings, arrays), or the text itself where it is not TOML (a bare
    path or word)."""
    text = text.strip()
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text
