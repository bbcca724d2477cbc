"""`.pts` I/O: real iBUG text, round trip, tolerant layout, strict content."""
import numpy as np
import pytest

from deeplab_face.data.pts import read_pts, write_pts
from deeplab_face.errors import DataError

# 68 points in the exact iBUG/300VW layout ("n_points:  68" with two spaces, CRLF), values with
# the fractional digits real files carry. Written out literally so the parser meets the real text.
_XS = [412.563, 413.118, 415.221, 418.774, 424.312, 432.902, 443.677, 456.120, 470.885, 485.340,
       497.661, 507.902, 515.443, 520.118, 522.907, 524.233, 524.991, 424.010, 430.551, 439.208,
       448.337, 456.902, 478.118, 487.004, 496.339, 505.441, 512.007, 467.554, 467.902, 468.113,
       468.339, 457.870, 462.558, 468.020, 473.331, 478.002, 434.227, 439.901, 446.338, 451.870,
       446.118, 439.667, 483.990, 489.551, 496.020, 501.337, 496.441, 490.118, 450.002, 457.338,
       463.990, 468.557, 473.118, 479.903, 486.664, 480.110, 473.880, 468.337, 462.990, 456.558,
       452.990, 463.554, 468.443, 473.337, 484.118, 473.880, 468.447, 463.118]
_YS = [251.338, 266.902, 282.117, 297.005, 311.448, 324.990, 336.113, 344.558, 347.902, 344.667,
       336.002, 324.117, 310.668, 296.005, 281.337, 266.118, 250.447, 236.557, 231.118, 229.990,
       231.005, 234.337, 234.118, 230.990, 229.338, 230.902, 235.448, 247.118, 256.990, 266.338,
       275.902, 283.117, 284.448, 285.990, 284.337, 283.001, 249.338, 246.118, 246.007, 249.990,
       251.448, 251.338, 249.902, 246.007, 246.118, 249.445, 251.337, 251.558, 305.117, 300.990,
       298.338, 299.447, 298.118, 300.902, 305.337, 312.558, 315.901, 316.448, 315.990, 312.338,
       305.448, 303.990, 304.337, 303.902, 305.337, 307.448, 307.990, 307.338]
REAL_PTS_TEXT = ("version: 1\r\nn_points:  68\r\n{\r\n"
                 + "".join(f"{x:.3f} {y:.3f}\r\n" for x, y in zip(_XS, _YS)) + "}\r\n")


def _write(tmp_path, text, name="bad.pts"):
    path = tmp_path / name
    path.write_bytes(text.encode())
    return path


def _good_lines():
    return ["version: 1", "n_points:  68", "{", *[f"{x:.3f} {y:.3f}" for x, y in zip(_XS, _YS)], "}"]


def test_real_ibug_text_parses_to_numbers_minus_one(tmp_path):
    path = _write(tmp_path, REAL_PTS_TEXT, "000001.pts")
    points = read_pts(path)
    assert points.dtype == np.float32 and points.shape == (68, 2)
    expected = np.stack([_XS, _YS], axis=1) - 1.0
    np.testing.assert_allclose(points, expected, atol=1e-4)
    assert points[0, 0] == pytest.approx(411.563, abs=1e-4)


def test_round_trip_exact(tmp_path):
    rng = np.random.default_rng(3)
    points = (rng.random((68, 2)) * 700 - 20).astype(np.float32)  # includes negative (off-frame) points
    points[:10] = np.round(points[:10])  # integral values too
    write_pts(tmp_path / "a.pts", points)
    assert np.array_equal(read_pts(tmp_path / "a.pts"), points)
    text = (tmp_path / "a.pts").read_text()
    assert text.startswith("version: 1\nn_points:  68\n{\n") and text.endswith("}\n")
    # 1-based on disk: the first integral point appears plus one.
    first = text.splitlines()[3].split()
    assert float(first[0]) == points[0, 0] + 1 and float(first[1]) == points[0, 1] + 1


def test_tolerant_layout(tmp_path):
    lines = _good_lines()
    messy = ["", "  version:\t1  ", "n_points:\t 68", "", " { "]
    messy += [f"\t{line.replace(' ', chr(9) + '  ')}  " for line in lines[3:-1]]
    messy += ["", "}", "", ""]
    for newline in ("\r\n", "\n", "\r"):
        path = _write(tmp_path, newline.join(messy), "messy.pts")
        np.testing.assert_allclose(read_pts(path), np.stack([_XS, _YS], 1) - 1, atol=1e-4)


def _error(tmp_path, lines):
    path = _write(tmp_path, "\r\n".join(lines) + "\r\n")
    with pytest.raises(DataError) as info:
        read_pts(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def test_wrong_n_points(tmp_path):
    lines = _good_lines()
    lines[1] = "n_points: 67"
    assert "line 2:" in _error(tmp_path, lines)
    lines[1] = "n_points: many"
    assert "line 2:" in _error(tmp_path, lines)


def test_non_numeric_line(tmp_path):
    lines = _good_lines()
    lines[10] = "412.5 abc"
    assert "line 11:" in _error(tmp_path, lines)
    lines[10] = "412.5"  # one number only
    assert "line 11:" in _error(tmp_path, lines)
    lines[10] = "412.5 3 4"  # three numbers
    assert "line 11:" in _error(tmp_path, lines)
    lines[10] = "nan 3"
    assert "line 11:" in _error(tmp_path, lines)


def test_missing_braces(tmp_path):
    lines = _good_lines()
    message = _error(tmp_path, lines[:2] + lines[3:])  # no '{': first point line is line 3
    assert "line 3:" in message and "{" in message
    message = _error(tmp_path, lines[:-1])  # no '}': reported at the end of the file
    assert "line 72:" in message and "}" in message


def test_too_few_and_too_many_points(tmp_path):
    lines = _good_lines()
    message = _error(tmp_path, lines[:-2] + ["}"])  # 67 points; '}' on line 71
    assert "line 71:" in message and "67" in message
    message = _error(tmp_path, lines[:-1] + ["1 2", "}"])  # a 69th point on line 72
    assert "line 72:" in message


def test_missing_header_and_trailing_garbage(tmp_path):
    lines = _good_lines()
    assert "line 1:" in _error(tmp_path, lines[2:])  # '{' without n_points
    assert "line 73:" in _error(tmp_path, lines + ["1 2"])
    assert "line 1:" in _error(tmp_path, [""])
    with pytest.raises(DataError, match="missing.pts"):
        read_pts(tmp_path / "missing.pts")
