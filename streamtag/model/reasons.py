"""Other libraries' errors told in one line: TorchScript's compiler, the ONNX exporter and ONNX
Runtime raise messages of many lines (source excerpts, graph dumps), and a ``ModelError`` says
why a model cannot be used in one."""

from __future__ import annotations

__all__ = ["first_lines"]


def first_lines(error: BaseException, count: int = 4) -> str:
    """The first ``count`` non-empty lines of an error's text, joined: long compiler and
    runtime messages in one line."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return " | ".join(lines[:count]) or type(error).__name__
