"""The project's error types (DESIGN.md "Errors").

Each carries one line that names the file or flag at fault. Commands print that
line without a traceback and exit with status 2 (see `deeplab_face.cli`).
"""


class ProjectError(Exception):
    """Base class: a user-facing error with a one-line message."""


class DataError(ProjectError):
    """A data file (video, .pts, label, TFRecord, split list) is unreadable or malformed."""


class CheckpointError(ProjectError):
    """A checkpoint is missing, or its names/shapes do not match the model."""


class ConfigError(ProjectError):
    """A flag or config value is invalid."""


class OutputError(ProjectError):
    """An output file or folder cannot be written (permission, not a folder, a file in the way,
    no space left). The message names the path and what to do."""
