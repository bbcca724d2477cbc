"""Video in and out for eval.segment_video: opening a file or camera, decoding frames, the overlay's
status text layout, and the checked outputs (OUT.mp4 and OUT.csv).

Outputs are checked before any frame is processed (`check_output`: the folder is created and must be
writable; `Outputs` writes and flushes the CSV header, so a log that cannot take it fails at once).
While the video plays every CSV row is flushed, and a frame whose write meets a full disk stops the
run with one error line naming the file and the frame; the rows written before it are kept. OpenCV's
VideoWriter reports nothing on a failed write (it only logs a warning per frame), so a full disk
under OUT.mp4 is seen from the file system's free blocks after each frame.
"""
import csv
import os

import cv2

from deeplab_face import atomic
from deeplab_face.errors import DataError, OutputError, ProjectError


# -- video ----------------------------------------------------------------------------------------
def open_video(video):
    """cv2.VideoCapture of a file, or of a camera when `video` is an index; DataError if unreadable."""
    source = int(video) if str(video).isdigit() and not os.path.exists(str(video)) else str(video)
    if isinstance(source, str) and not os.path.isfile(source):
        raise DataError(f"{video}: no such video file")
    capture = cv2.VideoCapture(source)
    if not capture.isOpened():
        raise DataError(f"{video}: cannot open the video (unknown format or no such camera)")
    return capture


def read_frames(capture, video, max_frames=None):
    """RGB uint8 frames (BGR converted once, here)."""
    count = 0
    while max_frames is None or count < max_frames:
        ok, bgr = capture.read()
        if not ok:
            if count == 0:
                raise DataError(f"{video}: no frame could be decoded")
            return
        count += 1
        yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def status_layout(text, width, height):
    """[(line, (x, y), scale, thickness)] of the overlay's status text: one line at the frame's
    preferred scale when it fits the width, else smaller, else split over lines so that every line
    stays inside a `width` x `height` frame (a 176-px-wide video included)."""
    font = cv2.FONT_HERSHEY_SIMPLEX
    margin = max(2, min(height, width) // 80) * 2 + 2
    room = max(1, width - 2 * margin)
    scale = max(0.4, min(height, width) / 700)

    def fit(lines, scale):
        thickness = max(1, int(round(scale * 2)))
        widest = max(cv2.getTextSize(line, font, scale, thickness)[0][0] for line in lines)
        return min(scale, scale * room / widest), thickness

    words, lines = text.split(), [text]
    for parts in range(1, len(words) + 1):   # as few lines as keep the text at >= 0.3 scale
        per = -(-len(words) // parts)
        lines = [" ".join(words[i:i + per]) for i in range(0, len(words), per)]
        if fit(lines, scale)[0] >= 0.3:
            break
    scale, thickness = fit(lines, scale)
    thickness = max(1, int(round(scale * 2)))
    layout, y = [], margin
    for line in lines:
        (w, h), base = cv2.getTextSize(line, font, scale, thickness)
        y += h
        layout.append((line, (margin, y), scale, thickness))
        y += base + 2
    return layout


# -- outputs --------------------------------------------------------------------------------------
def check_output(path, flag):
    """Before any work: the folder of output file `path` is created and can be written, and `path`
    is not a folder (deeplab_face.atomic.check_output_file: one OutputError line otherwise)."""
    atomic.check_output_file(path, flag)


def _os_error(flag, path, error, where=""):
    """The one-line OutputError for an OSError on an output (flag, path, the OS's words, what to do),
    with `where` (" at frame N") after the path."""
    mapped = atomic.output_error(f"{path}{where}", error, flag)
    if mapped is None:
        raise error
    return mapped


def _no_space(path):
    """True when the file system holding `path` has no free block left (for this user)."""
    try:
        stats = os.statvfs(os.path.dirname(os.path.abspath(path)))
    except OSError:
        return False
    return (stats.f_bfree if os.geteuid() == 0 else stats.f_bavail) == 0


class Outputs:
    """OUT.mp4 (mp4v, frames of `shape`) and OUT.csv (first row `header`).

    Opening writes and flushes the CSV header (a log that cannot take it fails here, before any
    frame) and refuses a full disk under OUT.mp4. Every row is flushed, and a frame whose write
    meets a full disk stops the run with one error naming the file and the frame; the rows before
    it are kept, and the files of a run that stopped before its first frame are removed. OpenCV's
    own per-frame write warnings are silenced while the files are open.
    """

    def __init__(self, output, log, fps, shape, header):
        self.output, self.log, self.writer, self.rows = output, log, None, 0
        self.log_level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        try:
            self.log_file = open(log, "w", newline="")
            self.table = csv.writer(self.log_file)
            self._row(header, "")
            if _no_space(output):
                raise OutputError(f"--output: {output}: No space left on device; free some space or choose "
                                  "another --output")
            height, width = shape[:2]
            self.writer = cv2.VideoWriter(output, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
            if not self.writer.isOpened():
                raise DataError(f"{output}: OpenCV cannot open an mp4v writer")
        except (OSError, ProjectError) as e:
            self.close()
            if isinstance(e, OSError):
                raise _os_error("--log", log, e) from None
            raise

    def _row(self, row, where):
        try:
            self.table.writerow(row)
            self.log_file.flush()
        except OSError as e:
            raise _os_error("--log", self.log, e, where) from None

    def write(self, index, picture, row):
        self.writer.write(cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
        if _no_space(self.output):
            raise OutputError(f"--output: {self.output} at frame {index}: No space left on device ({self.rows} "
                              f"frames logged in {self.log} are kept); free some space or choose another --output")
        self._row(row, f" at frame {index}")
        self.rows += 1

    def close(self):
        """Closes both files; with no frame written yet, removes them (regular files only)."""
        if self.writer is not None:
            self.writer.release()
        if getattr(self, "log_file", None) is not None:
            try:
                self.log_file.close()
            except OSError:   # a row that could not be written was reported already
                pass
        cv2.utils.logging.setLogLevel(self.log_level)
        if self.rows == 0:
            for path in (self.output, self.log):
                if os.path.isfile(path):
                    os.remove(path)
