"""What a control request may open or load: the daemon's allow-list, read from ``[control]``.

A request comes from outside (docs/security.md): ``reload_model`` may load an installed model's
name or a file under ``model_roots``; ``add_source`` may open a file under ``file_roots``, a
device only with ``allow_devices``, an http(s) URL under the host policy, and no other kind
(never ``pipe:``). Each kind a request may open has one rule in ``ControlPolicy.admissions``;
a kind without one is refused by name. Sources of the config file and the command line are
trusted and never pass through here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from streamtag.catalog.installed import installed, path_of
from streamtag.daemon.config import ControlConfig
from streamtag.errors import ConfigError, ModelError, SourceError
from streamtag.sources import KINDS, SourceSpec, parse_spec, spec_help
from streamtag.sources.hosts import HostPolicy, redact_url

SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")  # a spec that names a kind, not a path
# Why a kind of source is never opened for a control request (ControlPolicy.allowed_spec).
NOT_OVER_CONTROL = {"pipe": "the daemon's standard input is not the requester's"}

Admission = Callable[[SourceSpec, dict[str, Any]], tuple[SourceSpec, dict[str, Any]]]


def _under(path: Path, roots: tuple[str, ...]) -> bool:
    """Whether ``path`` (resolved) lies below one of ``roots`` (resolved, symlinks followed)."""
    return any(path.is_relative_to(Path(root).expanduser().resolve()) for root in roots)


class ControlPolicy:
    """The rules of ``[control]`` for what ``add_source`` and ``reload_model`` requests may
    open or load; a refusal is a ConfigError (ModelError for a model) naming the rule and how
    the operator would allow it."""

    def __init__(self, control: ControlConfig) -> None:
        self.control = control
        self.host_policy = HostPolicy(allow=control.allow_hosts, deny=control.deny_hosts,
                                      private=control.allow_private_hosts)

    def allowed_model(self, text: str) -> str:
        """The model file a ``reload_model`` request may load: an installed model's name, or a
        readable file below ``control.model_roots`` (resolved, symlinks followed). Anything else
        (missing, unreadable, outside, a folder) gets one and the same ModelError, so that the
        answer tells nothing of the files of this machine. A model file is code: only the
        places the operator named may provide one."""
        names = installed()
        if text in names:
            return str(path_of(text))  # refused when not this user's alone
        roots = self.control.model_roots
        try:
            path = Path(text).expanduser().resolve(strict=True)
            if roots and _under(path, roots) and path.is_file() and os.access(path, os.R_OK):
                return str(path)
        except (OSError, RuntimeError, ValueError):  # missing, a loop of links, a NUL byte
            pass
        listed = ", ".join(names) or "none"
        raise ModelError(f"reload_model refuses {text!r}: give an installed model's name "
                         f"(installed: {listed}) or a model file under control.model_roots")

    def allowed_spec(self, text: str, options: dict[str, Any]) -> tuple[SourceSpec, dict]:
        """An ``add_source`` request's spec as it will be opened, and its options, once the
        spec passes the rule ``[control]`` has for its kind (``admissions``): a file below
        ``file_roots`` (the resolved path is what is opened), a device only with
        ``allow_devices``, an http(s) URL whose host the host policy allows (checked now and by
        the source on every connection and redirect). A kind with no rule (``pipe:``) is never
        opened. ConfigError naming the rule otherwise."""
        admissions = self.admissions()
        try:
            spec = parse_spec(text)
        except SourceError as exc:
            shown = redact_url(text.strip())
            # A path that is not there: outside the roots, the same answer as a file that is
            # (the reply does not tell which files exist).
            if not SCHEME.match(text.strip()):
                if self._resolved(text.strip()) is None:
                    raise self._outside_roots(shown) from None
                # below the roots, where the requester may read: it is not there
                allowed = spec_help(tuple(k for k in KINDS if k.kind in admissions))
                raise ConfigError(f"add_source refuses {shown!r}: there is no such file below "
                                  f"control.file_roots; give an existing audio file's path, "
                                  f"or {allowed}") from None
            raise ConfigError(f"add_source refuses {shown!r}: {exc}") from None
        admit = admissions.get(spec.kind)
        if admit is None:
            written = next(k.spec_help for k in KINDS if k.kind == spec.kind)
            why = NOT_OVER_CONTROL.get(spec.kind, f"[control] has no rule for {spec.kind} "
                                                  "sources")
            raise ConfigError(f"add_source refuses {redact_url(spec.text)!r}: {written} is not "
                              f"available over the control socket ({why})")
        return admit(spec, options)

    def admissions(self) -> dict[str, Admission]:
        """The rule of ``[control]`` for each kind of source a request may open, by kind."""
        return {"file": self._admit_file, "http": self._admit_http,
                "device": self._admit_device}

    def _resolved(self, target: str) -> Path | None:
        """A file path of an ``add_source`` request, resolved (symlinks followed), when it lies
        below ``control.file_roots``; else None."""
        try:
            path = Path(target).expanduser().resolve()
        except (OSError, RuntimeError, ValueError):  # a loop of links, a NUL byte
            return None
        return path if _under(path, self.control.file_roots) else None

    def _outside_roots(self, shown: str) -> ConfigError:
        return ConfigError(f"add_source refuses {shown!r}: files must lie below "
                           f"control.file_roots ({list(self.control.file_roots)}): set "
                           "[control] file_roots in the daemon's config file, or start it "
                           "with streamtag run --allow-file-root DIR")

    def _admit_file(self, spec: SourceSpec, options: dict[str, Any]
                    ) -> tuple[SourceSpec, dict[str, Any]]:
        path = self._resolved(spec.target)
        if path is None:
            raise self._outside_roots(redact_url(spec.text))
        return SourceSpec(spec.kind, str(path), spec.text), options

    def _admit_device(self, spec: SourceSpec, options: dict[str, Any]
                      ) -> tuple[SourceSpec, dict[str, Any]]:
        if not self.control.allow_devices:
            raise ConfigError(f"add_source refuses {redact_url(spec.text)!r}: input devices "
                              "are not available over the control socket unless "
                              "control.allow_devices = true")
        return spec, options

    def _admit_http(self, spec: SourceSpec, options: dict[str, Any]
                    ) -> tuple[SourceSpec, dict[str, Any]]:
        try:
            self.host_policy.check(spec.target)
        except SourceError as exc:
            raise ConfigError(f"add_source refuses {redact_url(spec.text)!r}: {exc}") from None
        return spec, {**options, "host_policy": self.host_policy}
