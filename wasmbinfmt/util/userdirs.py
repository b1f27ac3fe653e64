"""The user's own directories (XDG base directories), never relative to the current one.

The XDG spec says a relative $XDG_CONFIG_HOME or $XDG_CACHE_HOME is invalid
and must be ignored; a relative $HOME is treated the same way. Otherwise a
program started in a directory someone else controls would read that
directory's `.config/wasmbinfmt/rules.yaml` (or cache) as the user's.
"""

from __future__ import annotations

import os

from .abcs import Mapping


def user_dir(env: Mapping[str, str], variable: str, under_home: str) -> str | None:
    """$variable if absolute, else $HOME/under_home if $HOME is absolute (the password
    database's home when HOME is unset), else None."""
    base = env.get(variable, "")
    if base.startswith("/"):
        return base
    home = env.get("HOME") or os.path.expanduser("~")
    return os.path.join(home, under_home) if home.startswith("/") else None
