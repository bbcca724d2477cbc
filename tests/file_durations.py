"""Measured seconds per test file; `tests/conftest.py` starts the longest files first.

`make test` runs `pytest -n auto --dist loadfile`: xdist hands each worker whole files in collection order,
so the longest files go first and no long file is left to run alone at the end while the other worker
idles. Refresh the numbers from a whole run (the order then follows the suite as it changes):

    PYTEST_ADDOPTS=--junitxml=/tmp/run.xml make test
    .venv/bin/python -m tests.file_durations /tmp/run.xml     # rewrites tests/file_durations.json
"""
import collections
import json
import pathlib
import sys
import xml.etree.ElementTree as ElementTree

ROOT = pathlib.Path(__file__).resolve().parents[1]
PATH = pathlib.Path(__file__).with_name("file_durations.json")


def _test_file(classname):
    """'tests.eval.test_x' or 'tests.eval.test_x.TestClass' -> 'tests/eval/test_x.py' (None if no such file)."""
    parts = classname.split(".")
    for n in range(len(parts), 0, -1):
        candidate = "/".join(parts[:n]) + ".py"
        if (ROOT / candidate).is_file():
            return candidate
    return None


def from_junit(path):
    """{test file: seconds} summed over a junit XML's test cases (a module fixture's set-up counts in the
    first test that uses it), longest first."""
    seconds = collections.defaultdict(float)
    for case in ElementTree.parse(path).iter("testcase"):
        name = _test_file(case.get("classname", ""))
        if name is not None:
            seconds[name] += float(case.get("time", 0.0))
    return dict(sorted(((k, round(v, 1)) for k, v in seconds.items()), key=lambda kv: -kv[1]))


def load():
    """{test file: seconds} of the last recorded run ({} when none is recorded)."""
    return json.loads(PATH.read_text()) if PATH.exists() else {}


def main(argv):
    if len(argv) != 2:
        sys.exit(f"usage: python -m tests.file_durations JUNIT_XML (writes {PATH.relative_to(ROOT)})")
    seconds = from_junit(argv[1])
    if not seconds:
        sys.exit(f"error: {argv[1]}: no test cases of files under {ROOT}")
    PATH.write_text(json.dumps(seconds, indent=1) + "\n")
    print(f"{PATH.relative_to(ROOT)}: {len(seconds)} files, {sum(seconds.values()):.0f} s in all")


if __name__ == "__main__":
    main(sys.argv)
