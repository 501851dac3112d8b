"""File names built from data (sensor names, class names, scene names) stay inside their folder.

A manifest or label file is data, and data can say anything: a `sensor` of "/../../../x" must
not write outside the output folder. Every output name taken from data goes through
`safe_name`, which keeps letters, digits, '.', '_' and '-' and never yields '.', '..' or an
empty name.
"""
from __future__ import annotations

import re
from pathlib import Path

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: object, fallback: str = "unnamed") -> str:
    """One path component made from `text`: runs of other characters become '-', leading
    dots and dashes are dropped (no hidden files, no '..'), at most 120 characters."""
    name = _UNSAFE.sub("-", str(text)).lstrip(".-").rstrip("-")[:120]
    return name or fallback


def inside(folder: str | Path, name: object, suffix: str = "") -> Path:
    """`folder / (safe_name(name) + suffix)`, checked to lie inside `folder`."""
    folder = Path(folder)
    path = folder / (safe_name(name) + suffix)
    if path.resolve().parent != folder.resolve():
        raise ValueError(f"output name {name!r} would leave {folder}")
    return path
