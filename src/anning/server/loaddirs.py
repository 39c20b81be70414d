"""Where `Admin.LoadSnapshot` may read its files and write its rejects file: under the data
directory and the directories given with `anning serve --load-dir`, nowhere else.

Without this an admin token read any file the server could (a refused load names the file's
header row in its reason) and wrote a rejects file anywhere. A path is resolved first
(relative to the server's working directory; `..` and every symbolic link followed) and the
load is given the resolved path, so a link inside an allowed directory that points out of it
is refused too.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from anning.errors import InvalidInput, NotPermitted

__all__ = ["MAX_PATH_BYTES", "LoadDirs"]

MAX_PATH_BYTES = 4096  # PATH_MAX on Linux


class LoadDirs:
    """The directories LoadSnapshot may use, resolved once at start."""

    def __init__(self, directories: Iterable[str | os.PathLike[str]]) -> None:
        resolved: list[Path] = []
        for directory in directories:
            path = Path(directory).resolve()
            if path not in resolved:
                resolved.append(path)
        self.directories = tuple(resolved)

    def resolve(self, field: str, path: str) -> str:
        """`path` resolved, if it lies under an allowed directory: InvalidInput for a path that
        cannot be one, NotPermitted (PERMISSION_DENIED) for one outside; both name `field`."""
        if "\x00" in path:
            raise InvalidInput(f"{field}: {path!r} has a NUL byte, which no path can")
        if len(os.fsencode(path)) > MAX_PATH_BYTES:
            raise InvalidInput(f"{field}: a path of {len(os.fsencode(path)):,} bytes, longer "
                               f"than any path can be ({MAX_PATH_BYTES})")
        try:
            resolved = Path(path).resolve()
        except (OSError, RuntimeError) as exc:  # a loop of links, a name too long
            raise InvalidInput(f"{field}: {path!r} cannot be resolved: {exc}") from None
        if not any(resolved.is_relative_to(d) for d in self.directories):
            allowed = ", ".join(str(d) for d in self.directories) or "none"
            raise NotPermitted(f"{field}: {path!r} is outside the directories LoadSnapshot may "
                               f"use (the data directory and --load-dir): {allowed}")
        return str(resolved)
