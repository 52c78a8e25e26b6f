"""What the config.json parsers (config.py, architectures.py, rope.py) share:
what counts as an integer or a number in a config.json, and the error that
names the file and the field."""
from __future__ import annotations

import math
from typing import Callable, NoReturn

# bad(field, message) raises ValueError "<source>: field '<field>': <message>"
Bad = Callable[[str, str], NoReturn]


def field_error(source: str) -> Bad:
    """The `bad` of one config.json: its errors start with `source` (the file's path)."""
    def bad(name: str, msg: str) -> NoReturn:
        raise ValueError(f"{source}: field {name!r}: {msg}")
    return bad


def is_int(v) -> bool:
    """An integer, and not a bool (JSON true is not 1 here)."""
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v) -> bool:
    """A finite int or float, and not a bool."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
