"""tests/file_durations.py: per-file seconds from a junit XML, which order the test files."""
from tests import file_durations

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" tests="4">
<testcase classname="tests.eval.test_reproduce" name="test_a" time="170.5"/>
<testcase classname="tests.eval.test_reproduce" name="test_b" time="2.25"/>
<testcase classname="tests.rl_scheduler.test_history.TestWindow" name="test_c" time="0.5"/>
<testcase classname="tests.eval.test_gone" name="test_d" time="9.0"/>
</testsuite></testsuites>"""


def test_seconds_are_summed_per_file_longest_first_and_unknown_files_dropped(tmp_path):
    path = tmp_path / "run.xml"
    path.write_text(JUNIT)
    seconds = file_durations.from_junit(path)
    assert seconds == {"tests/eval/test_reproduce.py": 172.8, "tests/rl_scheduler/test_history.py": 0.5}
    assert list(seconds) == ["tests/eval/test_reproduce.py", "tests/rl_scheduler/test_history.py"]


def test_the_recorded_files_exist():
    recorded = file_durations.load()
    missing = [name for name in recorded if not (file_durations.ROOT / name).is_file()]
    assert not missing, f"tests/file_durations.json names files that are gone: {missing}"
