"""bench/pipeline.py's memory mode (issue 11, item 5): a base clip and a longer one streamed through the
runtime, each in its own process, at the smallest size (the figures are in README)."""
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_memory_mode_reports_both_runs_and_the_peak_ratio():
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "pipeline.py"), "--memory_frames=6",
                           "--memory_factor=3", "--size=65", "--backbone=mobilenet_v2", "--scheduler=fixed",
                           "--threshold=4"], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line.split("|")[1:-1] for line in proc.stdout.splitlines()
            if re.match(r"\| (base clip|3x longer) \|", line)]
    assert [r[0].strip() for r in rows] == ["base clip", "3x longer"]
    assert [int(r[1]) for r in rows] == [6, 18]
    assert [int(r[2]) for r in rows] == [2, 5]          # fixed K = 4: frames 0, 4 (, 8, 12, 16)
    after, peak, final = ([float(r[i]) for r in rows] for i in (3, 4, 5))
    assert all(0 < a <= p and 0 < f <= p for a, p, f in zip(after, peak, final))
    ratio = float(re.search(r"peak RSS ratio long / base: ([0-9.]+)", proc.stdout).group(1))
    assert abs(ratio - peak[1] / peak[0]) < 2e-3
