"""Shared entry point for the absl commands: one clear error line, exit status 2."""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402

from deeplab_face.errors import ProjectError  # noqa: E402


def run(main):
    """`app.run(main)`, printing a `ProjectError` as one line instead of a traceback."""

    def guarded(argv):
        try:
            return main(argv)
        except ProjectError as e:
            if sys.stdout.isatty():  # end a progress bar's unfinished line first
                print(flush=True)
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    app.run(guarded)
