"""Per-video pair tables, filled in parallel (issue 11 item 2): `python -m rl_scheduler.pair_tables`.

A pair table `<pair_table_dir>/<video>.npz` holds, for one video, N's result on every frame and the
propagated result of every (key k, frame i) pair with 0 < i - k <= horizon (`VideoCache.save_table`:
scores, flow magnitude, agreement and the kept Conv6 taps; no masks). The RL stages (one per KAR
limit) read them for their trials and span credit, the DVSNet stage draws its pairs from them.

Parallel filling: every process (on one machine or several sharing the folder) runs the same
command over the same videos. A video is claimed with `<video>.lock`, created with O_CREAT|O_EXCL
and holding the claimer's pid and host; a lock whose pid is dead on this host is taken over (a
lock of another host is only waited on: delete it by hand if that machine's process is gone). The
table is written atomically (a temporary file renamed over `<video>.npz`), then `<video>.json`
records what it covers (horizon, taps, flow resolution, pairs, bytes, seconds): a table is
finished when both are there and the record covers the horizon and taps asked for, so a rerun
skips it. A process that meets a video locked by a live process moves on, and at the end polls
until the others' tables are there. Should two processes ever fill one video (a lock taken over in
the instant its owner died), both write the same table atomically: time is lost, nothing else.

Cost (measured on this project's 2-core CPU VM while other jobs shared it, load ~5; `<video>.json`
records each table's): the tiny preset's video 008 (200 frames, S = 129, half flow resolution,
conv6_1 1x1x384, horizon 40: 7,180 pairs) takes 12.85 MB, 1,790 bytes a pair, and 272 s wall /
~150 CPU-s (21 CPU-ms a pair); the table is bit-identical to the one its RL stage wrote. At S = 513
(paper preset: resnet_v1_50_beta N, FlowNet2-s 3/8 at full flow resolution, an 8x8x384 tap) a pair
takes 98,664 bytes and ~0.64 CPU-s (1.21 s wall under that load), N ~2.9 CPU-s a frame; a frame
with horizon 40 costs ~28.5 CPU-s. 300VW set B (50 videos of 1,000-3,000 frames: 50k-150k frames,
2-6 M pairs at horizon 40) projects to 200-590 GB and 400-1,200 CPU-hours (horizon 60: 300-890 GB,
570-1,700 CPU-hours); half flow resolution (a 4x4x384 tap, ~25 KB a pair) cuts the disk by 4. A
table is held in memory while it is filled (and the RL stage holds its videos' tables): 12 GB for
a 3,000-frame video at S = 513, horizon 40.
"""
import json
import os
import socket
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402

from deeplab_face import atomic, cli  # noqa: E402
from deeplab_face.errors import ConfigError, DataError  # noqa: E402
from rl_scheduler import config  # noqa: E402

HOST = socket.gethostname()
POLL_SECONDS = 10.0
LOCK_GRACE_SECONDS = 60.0   # a lock still empty after this long lost its writer between create and write
TAPS = ("conv6", "conv6_1")


def table_path(pair_table_dir, video_id):
    return os.path.join(pair_table_dir, f"{video_id}.npz")


def record_path(pair_table_dir, video_id):
    return os.path.join(pair_table_dir, f"{video_id}.json")


def lock_path(pair_table_dir, video_id):
    return os.path.join(pair_table_dir, f"{video_id}.lock")


def read_record(pair_table_dir, video_id):
    """The table's `<video>.json` record, None when absent (a corrupt one is a DataError naming it)."""
    return atomic.read_json(record_path(pair_table_dir, video_id), None,
                            advice="delete it and its .npz to recompute the table")


def finished(pair_table_dir, video_id, horizon, taps, flow_resolution=None):
    """Whether the video's table is there and covers `horizon` with `taps` (at `flow_resolution`)."""
    record = read_record(pair_table_dir, video_id)
    if record is None or not os.path.exists(table_path(pair_table_dir, video_id)):
        return False
    if flow_resolution is not None and record.get("flow_resolution") not in (None, flow_resolution):
        raise DataError(f"{record_path(pair_table_dir, video_id)}: the table was computed at flow resolution "
                        f"{record['flow_resolution']}, this run asks {flow_resolution}; use another "
                        "--pair_table_dir or delete the video's .npz and .json")
    return int(record.get("horizon", 0)) >= int(horizon) and set(taps) <= set(record.get("taps", ()))


# -- locks ---------------------------------------------------------------------------------------
def _alive(pid):
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # someone else's live process
        return True
    return True


def _read_lock(path):
    """The lock's record ({} while its writer has not written it yet), None when it is gone."""
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return {}


def _stale(path, holder):
    if not holder:   # created, never written: its writer died between the two unless it is recent
        try:
            return time.time() - os.path.getmtime(path) > LOCK_GRACE_SECONDS
        except FileNotFoundError:
            return False
    if holder.get("host") != HOST:
        return False   # another machine's pid cannot be checked from here
    return int(holder.get("pid", -1)) == os.getpid() or not _alive(holder.get("pid", -1))


def claim(path, log=print):
    """Creates lock file `path` for this process: True when held, else the holder's record (dict)."""
    record = json.dumps(dict(pid=os.getpid(), host=HOST, started=time.time()))
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read_lock(path)
            if holder is None:
                continue   # released meanwhile: try again
            if not _stale(path, holder):
                return holder
            # take the stale lock over: rename it away (atomic: one taker wins) and check that what
            # was renamed is still that stale lock, not a fresh one created meanwhile
            moved = f"{path}.stale{os.getpid()}"
            try:
                os.rename(path, moved)
            except FileNotFoundError:
                continue
            if _read_lock(moved) != holder:
                try:
                    os.link(moved, path)   # a fresh lock: put it back (unless yet another is there)
                except FileExistsError:
                    pass
                os.remove(moved)
                return _read_lock(path) or {}
            os.remove(moved)
            log(f"pair tables: took over the stale lock {path} (pid {holder.get('pid')} on "
                f"{holder.get('host')} is gone)")
            continue
        with os.fdopen(fd, "w") as f:
            f.write(record)
            f.flush()
            os.fsync(f.fileno())
        return True
    return _read_lock(path) or {}


def release(path):
    """Removes lock `path` if this process holds it."""
    holder = _read_lock(path)
    if holder and holder.get("pid") == os.getpid() and holder.get("host") == HOST:
        os.remove(path)


# -- filling -------------------------------------------------------------------------------------
def fill_table(cache, pair_table_dir, video_id, horizon, flow_resolution=None, log=print):
    """Completes and writes one video's table from `cache` (the caller holds the lock): a table
    already there (with the cache's taps) is read first, the pairs up to `horizon` it lacks are
    computed (batched), then the .npz (atomically) and its record. Returns the record."""
    import numpy as np

    path = table_path(pair_table_dir, video_id)
    record = read_record(pair_table_dir, video_id)
    start = time.perf_counter()
    covered = 0
    if os.path.exists(path) and (record is None or set(cache.keep_taps) <= set(record.get("taps", ()))):
        log(f"pair table {video_id}: {cache.load_table(path)} pairs read from {path}")
        covered = int(record.get("horizon", 0)) if record else 0
    count = cache.prefetch_gaps(horizon, log=log)
    seconds = time.perf_counter() - start
    log(f"pair table {video_id}: {count} pairs added (gaps 1-{horizon}) in {seconds:.1f} s")
    if count or not os.path.exists(path):
        os.makedirs(pair_table_dir, exist_ok=True)
        tmp = os.path.join(pair_table_dir, f".{video_id}.{HOST}.{os.getpid()}.npz")
        try:
            cache.save_table(tmp)   # itself atomic into `tmp`; then renamed over the table
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    with np.load(path, allow_pickle=False) as data:   # reads this one array only
        pairs = len(data["pair_index"])
    if not count and record:   # nothing computed here: keep the time of the run that computed them
        count, seconds = record.get("computed_pairs", 0), record.get("seconds", 0.0)
    record = dict(video=str(video_id), horizon=max(int(horizon), covered), taps=list(cache.keep_taps),
                  flow_resolution=flow_resolution, frames=int(cache.num_frames), pairs=pairs,
                  bytes=os.path.getsize(path), computed_pairs=count, seconds=round(seconds, 3), host=HOST)
    atomic.write_json(record_path(pair_table_dir, video_id), record)
    return record


def ensure_tables(pair_table_dir, video_ids, horizon, cache_for, taps, flow_resolution=None, load=False,
                  log=print, poll_seconds=POLL_SECONDS, timeout=None, done=None):
    """Makes every video's table finished, several processes at once (module docstring).

    cache_for(video_id) -> the VideoCache to fill (its keep_taps should be `taps`); load: read the
    finished tables into `cache_for(video)` too (a training); done(video_id): called after this
    process filled a video (the command frees its cache there). timeout: seconds to wait for
    videos locked by others (None: as long as it takes). Returns {video: "filled" | "skipped" |
    "waited"}.
    """
    status, pending = {}, [str(v) for v in video_ids]
    waiting_since = None
    while True:
        waiting = {}
        for video in pending:
            if not finished(pair_table_dir, video, horizon, taps, flow_resolution):
                os.makedirs(pair_table_dir, exist_ok=True)
                lock = lock_path(pair_table_dir, video)
                held = claim(lock, log=log)
                if held is not True:   # a live process fills it: the others first, then wait
                    waiting[video] = held
                    status[video] = "waited"
                    continue
                try:
                    filled = not finished(pair_table_dir, video, horizon, taps, flow_resolution)
                    if filled:   # (else finished by another between the check and the claim)
                        fill_table(cache_for(video), pair_table_dir, video, horizon, flow_resolution, log=log)
                finally:
                    release(lock)
                if filled:
                    status[video] = "filled"
                    if done is not None:
                        done(video)
                    continue
            status.setdefault(video, "skipped")
            if load:
                path = table_path(pair_table_dir, video)
                log(f"pair table {video}: {cache_for(video).load_table(path)} pairs read from {path}")
        if not waiting:
            return status
        holders = ", ".join(f"{v} ({h.get('pid', '?')}@{h.get('host', '?')})" for v, h in list(waiting.items())[:6])
        log(f"pair tables: {len(video_ids) - len(waiting)}/{len(video_ids)} ready; waiting for {len(waiting)} "
            f"filled by other processes: {holders}{' ...' if len(waiting) > 6 else ''}")
        waiting_since = waiting_since or time.monotonic()
        if timeout is not None and time.monotonic() - waiting_since > timeout:
            raise DataError(f"{pair_table_dir}: pair tables of {', '.join(waiting)} still locked after "
                            f"{timeout:g} s; delete their .lock files if those processes are gone")
        time.sleep(poll_seconds)
        pending = list(waiting)


def fill_pair_tables(pair_table_dir, segmenter_dir, flownet_dir, prepared_dir, video_ids, horizon,
                     taps=(config.DEFAULT_OPTIONS["deviation_tap"],), flow_resolution="full", cache_batch_size=8,
                     max_frames_in_memory=config.MAX_FRAMES_IN_MEMORY, log=print, poll_seconds=POLL_SECONDS,
                     timeout=None):
    """Fills `<pair_table_dir>/<video>.npz` for `video_ids` with the frozen N and F of the stage
    folders (`ensure_tables`; run it in several processes at once to share the work). Returns a
    summary: status per video, tables, pairs, bytes and seconds over the finished tables."""
    from flownet2s.dff import load_dff
    from rl_scheduler.cache import load_video_caches

    taps = tuple(dict.fromkeys(taps))
    bad = [t for t in taps if t not in TAPS]
    if bad or not taps:
        raise ConfigError(f"--taps: {','.join(bad) or '(none)'}: choose from {', '.join(TAPS)}")
    if not video_ids:
        raise ConfigError("--videos: at least one video id is needed")
    state = {}

    def cache_for(video):
        if "dff" not in state:   # loaded once, and only when this process fills something
            state["dff"] = load_dff(segmenter_dir, flownet_dir, flow_resolution=flow_resolution)
        if state.get("video") != video:
            # frames lazily, masks of the pairs being computed only; the table itself stays in memory
            state["video"], state["cache"] = video, load_video_caches(
                state["dff"], prepared_dir, [video], batch_size=cache_batch_size, keep_masks=False,
                keep_taps=taps, key_mask_capacity=max(4 * int(horizon), 64),
                max_frames_in_memory=max_frames_in_memory)[0]
        return state["cache"]

    def done(video):
        state.pop("cache", None)
        state.pop("video", None)

    status = ensure_tables(pair_table_dir, video_ids, horizon, cache_for, taps, flow_resolution, log=log,
                           poll_seconds=poll_seconds, timeout=timeout, done=done)
    summary = dict(status=status, **table_cost(pair_table_dir, video_ids))
    log(f"pair tables: {summary['tables']} tables, {summary['pairs']} pairs, {summary['bytes'] / 1e6:.1f} MB"
        + (f" ({summary['bytes_per_pair']:.0f} bytes a pair)" if summary["pairs"] else "")
        + (f", {summary['seconds_per_pair'] * 1e3:.2f} ms a pair when computed" if summary["seconds_per_pair"] else ""))
    return summary


def attach_tables(caches, pair_table_dir, horizon, taps, flow_resolution=None, log=print):
    """A training's tables ({video: VideoCache}): finished ones are read, missing ones filled here
    (claimed, so that stages and `fill_pair_tables` running at once share the work); without a
    folder every video's pairs up to `horizon` are computed in memory."""
    if pair_table_dir:
        return ensure_tables(pair_table_dir, list(caches), horizon, caches.__getitem__, taps, flow_resolution,
                             load=True, log=log)
    for video, cache in caches.items():
        start = time.perf_counter()
        count = cache.prefetch_gaps(horizon, log=log)
        log(f"pair table {video}: {count} pairs computed (gaps 1-{horizon}) in {time.perf_counter() - start:.1f} s")
    return {video: "filled" for video in caches}


def table_cost(pair_table_dir, video_ids):
    """Tables, pairs, bytes and compute seconds of the finished tables of `video_ids` (their records)."""
    records = [r for r in (read_record(pair_table_dir, v) for v in map(str, video_ids)) if r]
    pairs, size = sum(r["pairs"] for r in records), sum(r["bytes"] for r in records)
    computed, seconds = sum(r.get("computed_pairs", 0) for r in records), sum(r.get("seconds", 0) for r in records)
    return dict(tables=len(records), pairs=pairs, bytes=size, bytes_per_pair=size / pairs if pairs else None,
                seconds=seconds, seconds_per_pair=seconds / computed if computed else None)


def read_table(cache, pair_table_dir, video_id, log=None):
    """Reads the video's table into `cache` when there (never writes); a table that does not fit
    (another tap, a corrupt file) is logged and left out. Returns the pairs read (0: none)."""
    path = pair_table_dir and table_path(pair_table_dir, video_id)
    if not path or not os.path.exists(path):
        return 0
    try:
        loaded = cache.load_table(path)
    except DataError as e:
        loaded, reason = 0, f"none ({e})"
    else:
        reason = loaded
    if log is not None:
        log(f"pair table {video_id}: {reason} pairs read from {path}")
    return loaded


FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_string("pair_table_dir", None, "Folder of the <video>.npz tables (shared by the processes).")
    flags.DEFINE_string("prepared_dir", None, "Prepared data (manifest.json + TFRecords).")
    flags.DEFINE_string("segmenter_dir", None, "Stage directory of the segmentation network N.")
    flags.DEFINE_string("flownet_dir", None, "Stage directory of the flow network F.")
    flags.DEFINE_list("videos", [], "Video ids to fill (every process gets the same list).")
    flags.DEFINE_integer("credit_horizon", config.CREDIT_HORIZON,
                         "Largest key-frame gap of the table (the RL stages' --credit_horizon).", lower_bound=1)
    flags.DEFINE_list("taps", [config.DEFAULT_OPTIONS["deviation_tap"]],
                      "Conv6 taps kept per pair (the RL stages' --deviation_tap; DVSNet reads conv6_1).")
    flags.register_validator("taps", lambda v: bool(v) and set(v) <= set(TAPS),
                             f"--taps must name one or both of {', '.join(TAPS)}")
    flags.DEFINE_enum("flow_resolution", "full", ["full", "half"], "Flow-net input resolution.")
    flags.DEFINE_integer("cache_batch_size", 8, "Frames per compiled call.", lower_bound=1)
    flags.DEFINE_integer("max_frames_in_memory", config.MAX_FRAMES_IN_MEMORY,
                         "Decoded frames kept in memory (0: the whole video).", lower_bound=0)
    flags.DEFINE_float("poll_seconds", POLL_SECONDS, "Seconds between checks for tables others fill.",
                       lower_bound=0.01, upper_bound=3600.0)
    flags.DEFINE_float("wait_timeout", 0.0, "Most seconds to wait for tables others fill (0: no limit).",
                       lower_bound=0.0)


def main(argv):
    cli.check_command_line(argv, required=("pair_table_dir", "prepared_dir", "segmenter_dir", "flownet_dir"))
    atomic.check_output_dir(FLAGS.pair_table_dir, "--pair_table_dir")
    summary = fill_pair_tables(
        FLAGS.pair_table_dir, FLAGS.segmenter_dir, FLAGS.flownet_dir, FLAGS.prepared_dir, FLAGS.videos,
        FLAGS.credit_horizon, taps=FLAGS.taps, flow_resolution=FLAGS.flow_resolution,
        cache_batch_size=FLAGS.cache_batch_size, max_frames_in_memory=FLAGS.max_frames_in_memory or None,
        poll_seconds=FLAGS.poll_seconds, timeout=FLAGS.wait_timeout or None)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    define_flags()
    cli.run(main)
