"""Where streamtag keeps its own files: one folder per user (installed models, the control
token), ``$STREAMTAG_HOME`` when that variable is set, else streamtag's folder in the user
data folder (platformdirs: e.g. ``~/.local/share/streamtag`` on Linux). The folder is this
user's alone, since what it holds is a secret (the token) and code (models): whoever makes or
uses it checks it with ``fsutil.own_folder`` (made 0700, refused when another user owns it or
others may write it)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["HOME_ENV", "home"]

HOME_ENV = "STREAMTAG_HOME"


def home() -> Path:
    """``$STREAMTAG_HOME``, else streamtag's folder in the user data folder."""
    value = os.environ.get(HOME_ENV)
    if value:
        return Path(value).expanduser()
    import platformdirs

    return platformdirs.user_data_path("streamtag", appauthor=False)

