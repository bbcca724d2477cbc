"""Test-wide settings: TensorFlow backend, quiet logs, repo root on sys.path."""
import os
import pathlib
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# `make test` runs `pytest -n auto --dist loadfile`: xdist hands each worker whole files in collection order
# (its reordering by test count is turned off below), so the longest files, by the last recorded run's
# seconds (tests/file_durations.py says how to refresh them), start first and no long file is left to run
# alone at the end while the other worker idles. Files without a record keep their order after these.


def pytest_configure(config):
    if hasattr(config.option, "loadscopereorder"):   # pytest-xdist: keep the order set below
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(session, config, items):
    from tests.file_durations import load

    seconds = load()
    items.sort(key=lambda item: -seconds.get(item.nodeid.split("::")[0], 0.0))   # stable within a file
