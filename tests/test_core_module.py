"""The extension module as a whole: ``streamtag._core`` is put together from one binding file per
header (csrc/python/), so a class bound after a signature that names it shows only here, not in
any single file. (A binding left out of core_module.cc fails tests/test_typing.py, which holds
the module to its stub.)"""

from __future__ import annotations

import inspect

from streamtag import _core


def documented_callables():
    """(where, docstring) of every function, method and property getter the module binds."""
    for name, obj in vars(_core).items():
        if callable(obj) and not inspect.isclass(obj):
            yield name, obj.__doc__ or ""
        if inspect.isclass(obj) and obj.__module__ == "streamtag._core":
            for attr, member in vars(obj).items():
                if isinstance(member, property):
                    yield f"{name}.{attr}", member.fget.__doc__ or ""
                elif callable(member) and not attr.startswith("_pybind11"):
                    yield f"{name}.{attr}", getattr(member, "__doc__", "") or ""


def test_no_signature_of_the_extension_shows_a_cpp_type_name():
    docs = dict(documented_callables())
    assert "OnlineLogMel.window_level" in docs and "window_level_of" in docs, sorted(docs)
    leaked = {where: doc for where, doc in docs.items() if "::" in doc}
    assert not leaked, (
        f"signatures name C++ types (a class bound after a signature that uses it; order the "
        f"Bind calls in csrc/python/core_module.cc): {leaked}")
    assert "-> streamtag._core.WindowLevel" in docs["OnlineLogMel.window_level"]
