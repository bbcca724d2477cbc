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

# The longest test files, longest first (measured worker-seconds on 2 cores). `make test` runs
# `pytest -n 2 --dist loadfile`: xdist hands each worker whole files in collection order (its reordering
# by test count is turned off below), so these start first and no long file is left to run alone at the
# end while the other worker idles. Files not named keep their collection order after these.
LONGEST_FIRST = (
    "tests/eval/test_reproduce.py",
    "tests/eval/test_export.py",
    "tests/flownet2s/test_pretrain.py",
    "tests/deeplab_face/test_distribute.py",
    "tests/deeplab_face/test_models.py",
    "tests/eval/test_cityscapes.py",
    "tests/deeplab_face/test_zoo_import.py",
    "tests/flownet2s/test_train.py",
    "tests/eval/test_output_checks.py",
    "tests/deeplab_face/test_resume_determinism.py",
    "tests/rl_scheduler/test_pair_tables.py",
    "tests/eval/test_segment_video.py",
    "tests/flownet2s/test_distribute.py",
    "tests/rl_scheduler/test_train.py",
    "tests/rl_scheduler/test_train_dvsnet.py",
    "tests/deeplab_face/test_checkpoint.py",
)


def pytest_configure(config):
    if hasattr(config.option, "loadscopereorder"):   # pytest-xdist: keep the order set below
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(session, config, items):
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))   # stable within a file
