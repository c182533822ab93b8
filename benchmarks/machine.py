"""The machine a benchmark ran on, for its report."""

from __future__ import annotations

from streamtag.model.inference import cpu_name

__all__ = ["cpu_name"]
