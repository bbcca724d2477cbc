"""Shared entry point for the absl commands: one clear error line, exit status 2.

`run(main)` is `app.run(main)` with the project's error convention (README, "Errors"):
- a bad flag (absl's own parse and bound checks included), bad data, a checkpoint that does not fit,
  an output folder that cannot be written (permission, a file in the way, no space left), a corrupt
  TFRecord: one line `error: ...` on stderr naming the flag or file, exit status 2;
- Ctrl-C: one line `interrupted: ...`, exit status 130; every finished stage and the last checkpoint
  are kept, so the same command resumes. A KeyboardInterrupt can be swallowed where Python cannot
  raise it (it lands in a finaliser or a callback and is printed as "Exception ignored"), so the
  work would run on; the first Ctrl-C therefore also arms a watchdog that ends the process with the
  same line and status after `INTERRUPT_GRACE_S`, and a second Ctrl-C ends it at once. Every write
  of the project is atomic (deeplab_face.atomic), so ending without unwinding loses nothing written;
- anything else is a bug and keeps its traceback.
"""
import os
import signal
import sys
import threading

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from deeplab_face import atomic  # noqa: E402
from deeplab_face.errors import ProjectError  # noqa: E402

USAGE_STATUS = 2        # bad input of any kind
INTERRUPTED_STATUS = 130  # 128 + SIGINT, as shells report Ctrl-C
INTERRUPT_GRACE_S = 30.0  # after Ctrl-C, the unwinding's time before the watchdog ends the process
INTERRUPTED_MESSAGE = ("stopped by Ctrl-C; finished stages and the last checkpoint are kept: run the same "
                       "command again to resume")


def _one_line(text):
    return " ".join(str(text).split())


def _exit(prefix, message, status):
    _exit.said = True   # the watchdog (below) must not say it twice while the interpreter shuts down
    if sys.stdout.isatty():  # end a progress bar's unfinished line first
        print(flush=True)
    sys.stdout.flush()
    print(f"{prefix}: {_one_line(message)}", file=sys.stderr, flush=True)
    sys.exit(status)


def error_line(exc):
    """The one-line message for an expected failure `exc`, or None when `exc` is a bug."""
    if isinstance(exc, ProjectError):
        return str(exc)
    if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError):
        # (a missing input is checked where it is read; one that slips through is a bug to see)
        mapped = atomic.output_error(exc.filename or "output", exc)
        return None if mapped is None else str(mapped)
    tf = sys.modules.get("tensorflow")
    if tf is not None and isinstance(exc, tf.errors.OpError):
        reason = (exc.message or type(exc).__name__).splitlines()[0]
        if isinstance(exc, tf.errors.DataLossError):
            return f"corrupt data file ({reason}); delete it and recreate it (prepare_300vw redoes a deleted video)"
        if isinstance(exc, tf.errors.ResourceExhaustedError):
            return (f"out of space or memory ({reason}); free disk space, or lower --batch_size, and run "
                    "the same command again")
    return None


def parse_flags(argv):
    """absl's flag parsing with the project's convention: a bad flag is one line and exit 2."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        _exit("error", f"{e} (--helpfull lists every flag)", USAGE_STATUS)


def check_command_line(argv, required=()):
    """A command's main(argv) preamble: no positional arguments, and every flag in `required` given
    (each a ConfigError, which `run` prints as one line)."""
    from deeplab_face.errors import ConfigError

    if len(argv) > 1:
        raise ConfigError(f"unexpected arguments: {' '.join(argv[1:])}")
    for name in required:
        if flags.FLAGS[name].value is None:
            raise ConfigError(f"--{name}: required")


def _end_now():
    """Ends the process with the interrupted line, without unwinding (module docstring)."""
    if not getattr(_exit, "said", False):
        sys.stdout.flush()
        os.write(2, f"interrupted: {INTERRUPTED_MESSAGE}\n".encode())
    os._exit(INTERRUPTED_STATUS)


def _watchdog(grace_s):
    threading.Event().wait(grace_s)
    _end_now()   # still alive: the KeyboardInterrupt was swallowed somewhere


def _on_sigint(signum, frame):
    """First Ctrl-C: KeyboardInterrupt, as Python's own handler, plus the watchdog; second: end now."""
    if getattr(_on_sigint, "armed", False):
        _end_now()
    _on_sigint.armed = True
    threading.Thread(target=_watchdog, args=(INTERRUPT_GRACE_S,), daemon=True, name="ctrl-c-watchdog").start()
    raise KeyboardInterrupt


def run(main):
    """`app.run(main)`, printing expected failures as one line (module docstring)."""
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, _on_sigint)

    def guarded(argv):
        try:
            return main(argv)
        except KeyboardInterrupt:
            _exit("interrupted", INTERRUPTED_MESSAGE, INTERRUPTED_STATUS)
        except Exception as e:  # noqa: BLE001 - anything not recognised is re-raised below
            message = error_line(e)
            if message is None:
                raise
            _exit("error", message, USAGE_STATUS)

    try:
        app.run(guarded, flags_parser=parse_flags)
    except KeyboardInterrupt:   # Ctrl-C before main started (imports, flag parsing)
        _exit("interrupted", "stopped by Ctrl-C before any work started", INTERRUPTED_STATUS)
    finally:
        if previous is not None:   # in-process callers (tests) get their own handler back
            signal.signal(signal.SIGINT, previous)
