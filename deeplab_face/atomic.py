"""Atomic writes and checked reads: the one home of every JSON, text, weights and DONE file a
command leaves behind (DESIGN.md "Errors"; issue 9).

A file is written under a temporary name in its own folder and renamed over its target with
`os.replace` (atomic on POSIX), so a crash, kill -9 or Ctrl-C leaves the old file or the new one,
never half of one. A stage writes `DONE` last (`deeplab_face.stage.finish_stage`).

OS errors on outputs (permission, read-only, a file where a folder should be, no space left) become
one-line `OutputError`s that name the path and what to do; `check_output_dir` raises them before
any work starts, so a bad `--workdir` fails in the first second rather than after the training.
"""
import contextlib
import errno
import json
import math
import os
import tempfile

from deeplab_face.errors import DataError, OutputError

# errno -> what to do about it (the OS's own words come first in the message)
_OUTPUT_ERRNOS = {
    errno.ENOSPC: "free some space (or choose another folder) and run the same command again: finished "
                  "work is kept",
    errno.EDQUOT: "free some space (or choose another folder) and run the same command again: finished "
                  "work is kept",
    errno.EFBIG: "the file system refuses files this large; choose a folder on another file system",
    errno.EACCES: "choose a folder you can write to",
    errno.EPERM: "choose a folder you can write to",
    errno.EROFS: "the file system is read-only; choose a folder you can write to",
    errno.ENOTDIR: "a part of the path is a file, not a folder; choose another path",
    errno.EEXIST: "a file is in the way; remove it or choose another path",
    errno.EISDIR: "a folder is in the way; remove it or choose another path",
    errno.ENOENT: "its folder does not exist",
    errno.ENAMETOOLONG: "choose a shorter path",
}


def output_error(path, error, flag=None):
    """The OutputError for an OSError `error` met while writing `path` (None: not an output problem)."""
    number = getattr(error, "errno", None)
    if number not in _OUTPUT_ERRNOS:
        text = str(error)
        if "No space left" in text:          # h5py and TensorFlow lose the errno
            number = errno.ENOSPC
        elif "Permission denied" in text or "Read-only file system" in text:
            number = errno.EACCES
        else:
            return None
    reason = getattr(error, "strerror", None) or os.strerror(number)
    where = f"{flag}: {path}" if flag else f"{path}"
    return OutputError(f"{where}: {reason.rstrip('.')}; {_OUTPUT_ERRNOS[number]}")


def _raise_output_error(path, error, flag=None):
    mapped = output_error(path, error, flag)
    if mapped is None:
        raise error
    raise mapped from None


def check_output_dir(path, flag=None):
    """Creates folder `path` (and its parents) and checks that a file can be written in it: the
    check every command runs on its output folder before it starts working. Returns `path`."""
    path = os.fspath(path)
    try:
        if os.path.exists(path) and not os.path.isdir(path):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), path)
        os.makedirs(path, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".write-check-", dir=path)
        os.close(handle)
        os.remove(probe)
    except OSError as e:
        _raise_output_error(getattr(e, "filename", None) or path, e, flag)
    return path


def check_output_file(path, flag=None):
    """`check_output_dir` for the folder of output file `path`, which must not be a folder."""
    path = os.fspath(path)
    check_output_dir(os.path.dirname(os.path.abspath(path)), flag)
    if os.path.isdir(path):
        _raise_output_error(path, IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path), flag)
    return path


@contextlib.contextmanager
def replacing(path, suffix=""):
    """Yields a temporary path beside `path` (ending in `suffix`); the block writes it and it is
    renamed over `path` when the block ends, or removed when the block fails."""
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".{name}.tmp{os.getpid()}{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        _raise_output_error(path, e)
    finally:
        if os.path.lexists(tmp):
            with contextlib.suppress(OSError):
                os.remove(tmp)


def jsonable(value):
    """`value` as plain JSON: numpy scalars and arrays as Python numbers and lists, tuples as lists,
    dict keys as strings, and NaN / infinity as None (JSON `null`: an empty set has no number)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_text(path, text):
    """Writes `text` to `path` atomically."""
    with replacing(path) as tmp:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    return path


def write_json(path, value, indent=1):
    """Writes `value` (through `jsonable`) to `path` atomically; returns `path`."""
    return write_text(path, json.dumps(jsonable(value), indent=indent, allow_nan=False) + "\n")


def save_weights(model, path):
    """`model.save_weights(path)` atomically (Keras wants the `.weights.h5` ending on the temporary)."""
    with replacing(path, suffix=".weights.h5") as tmp:
        model.save_weights(tmp)
    return path


def read_json(path, default=None, missing_ok=True, advice=None):
    """`path`'s JSON; `default` when it is missing (with `missing_ok`). A half-written or corrupt
    file is a DataError naming it and saying what to do (`advice`, e.g. whether deleting is safe)."""
    path = os.fspath(path)
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        if missing_ok:
            return default
        raise DataError(f"{path}: not found") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e}); "
                        + (advice or "it was left by an interrupted run or edited by hand")) from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
