"""iBUG / 300-W `.pts` landmark files (reference/datasets.md §1).

The format::

    version: 1
    n_points:  68
    {
    x1 y1
    ...
    x68 y68
    }

Coordinates in the file are 1-based (MATLAB convention; menpo subtracts 1 as well): `read_pts`
returns 0-based float32 (x, y) and `write_pts` adds 1 back. Reading is tolerant of layout (CRLF or
CR line ends, tabs, extra spaces, blank lines, a UTF-8 BOM) and strict about content: every problem
raises a one-line `DataError` naming the file and the 1-based line number.
"""
import math
import pathlib
import re

import numpy as np

from deeplab_face.errors import DataError

NUM_LANDMARKS = 68  # iBUG-68, the only layout 300VW ships

_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def _fail(path, line_number, message):
    raise DataError(f"{path}: line {line_number}: {message}")


def _parse_count(path, line_number, value):
    try:
        count = int(value)
    except ValueError:
        _fail(path, line_number, f"n_points is not an integer: {value!r}")
    if count <= 0:
        _fail(path, line_number, f"n_points must be positive, got {count}")
    return count


def _parse_point(path, line_number, line):
    fields = line.split()
    if len(fields) != 2:
        _fail(path, line_number, f"expected 2 numbers (x y), got {len(fields)} fields: {line!r}")
    try:
        x, y = float(fields[0]), float(fields[1])
    except ValueError:
        _fail(path, line_number, f"not a number: {line!r}")
    if not (math.isfinite(x) and math.isfinite(y)):
        _fail(path, line_number, f"non-finite coordinate: {line!r}")
    return x, y


def parse_pts_text(text, path="<string>", n_points=NUM_LANDMARKS):
    """Parses `.pts` text; returns float32 (n, 2) 0-based points. `path` only labels errors.

    `n_points` is the count the caller expects (None accepts whatever the header says).
    """
    lines = _LINE_BREAK.split(text.lstrip("\ufeff"))
    if not text.strip():
        _fail(path, 1, "empty file, expected an iBUG .pts header")
    header_count = None
    header_line = None
    points = []
    state = "header"  # header -> points -> done
    close_line = None
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        if state == "header":
            if line == "{":
                if header_count is None:
                    _fail(path, number, "'{' before any 'n_points:' header line")
                state = "points"
                continue
            key, colon, value = line.partition(":")
            if not colon or not key.strip() or " " in key.strip():
                _fail(path, number, f"expected a 'key: value' header line or '{{', got {line!r}")
            key = key.strip().lower()
            if key == "n_points":
                header_count = _parse_count(path, number, value.strip())
                header_line = number
                if n_points is not None and header_count != n_points:
                    _fail(path, number, f"n_points is {header_count}, expected {n_points}")
            # Other header keys (`version: 1`, ...) carry nothing we use.
        elif state == "points":
            if line == "}":
                if len(points) < header_count:
                    _fail(path, number, f"'}}' after {len(points)} points, n_points "
                          f"(line {header_line}) says {header_count}")
                state = "done"
                close_line = number
                continue
            if len(points) == header_count:
                _fail(path, number, f"more than n_points={header_count} points "
                      f"(expected '}}', got {line!r})")
            points.append(_parse_point(path, number, line))
        else:
            _fail(path, number, f"unexpected text after '}}' (line {close_line}): {line!r}")
    last = len(lines)
    if state == "header":
        _fail(path, last, "missing '{' (no point block found)")
    if state == "points":
        _fail(path, last, f"missing '}}' at end of file after {len(points)} points")
    return (np.asarray(points, np.float64) - 1.0).astype(np.float32)


def read_pts(path, n_points=NUM_LANDMARKS):
    """Reads an iBUG `.pts` file; returns float32 (n_points, 2) 0-based (x, y).

    Raises `DataError` ("<file>: line <k>: <what>") on unreadable or malformed files.
    """
    path = pathlib.Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read .pts file ({e.strerror or e})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise DataError(f"{path}: line {line}: not UTF-8/ASCII text") from None
    return parse_pts_text(text, path, n_points)


def _format_coordinate(value):
    """Three decimals like the iBUG files when exact, else the shortest text that reads back exactly."""
    text = f"{value:.3f}"
    return text if float(text) == value else repr(value)


def format_pts(points):
    """The 1-based iBUG text of 0-based (n, 2) points (LF line ends, header as 300VW writes it)."""
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points must have shape (n, 2), got {points.shape}")
    if not np.all(np.isfinite(points)):
        raise ValueError("points must be finite")
    one_based = points.astype(np.float64) + 1.0  # exact for float32 input, so reading gives it back
    rows = [f"{_format_coordinate(float(x))} {_format_coordinate(float(y))}" for x, y in one_based]
    return "\n".join(["version: 1", f"n_points:  {len(rows)}", "{", *rows, "}"]) + "\n"


def write_pts(path, points):
    """Writes 0-based (n, 2) points as a 1-based iBUG `.pts` file (round-trips through `read_pts`)."""
    path = pathlib.Path(path)
    try:
        path.write_text(format_pts(points), encoding="ascii", newline="\n")
    except OSError as e:
        raise DataError(f"{path}: cannot write .pts file ({e.strerror or e})") from None
