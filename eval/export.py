"""Export the trained pipeline as one TensorFlow SavedModel (issue 11, item 4).

    python -m eval.export --checkpoints=W/checkpoints --out=DIR [--rl_stage=0.06] [--threshold=T]
                          [--flow_resolution=full|half] [--notflite]

The stages are loaded as `eval.segment_video` loads them (`eval.runtime.load_pipeline`: segmenter,
flownet and the rl policy with its operating threshold and the decision-history options it was
trained with). DIR gets a SavedModel with one signature per step of the streaming runtime
(`eval.runtime.DynamicSegmenter`), each a TensorFlow function of the same DeepFeatureFlow calls:

  key(frame)                              -> features, mask
  propagate(key_frame, key_features, frame) -> mask, flow_magnitude, conv6, conv6_1
  decide(<tap>, kar, lkd[, flow_change])  -> p_key

- frames: uint8 RGB (B, S, S, 3); features: float32 (B, h, w, C) (feature_net's output, kept by the
  caller for the key frame); masks: uint8 (B, S, S) class ids; flow_magnitude: float32 (B,), the mean
  |flow| from the key in feature-grid pixels (flownet2s.dff.mean_flow_magnitude); conv6, conv6_1:
  the flow net's taps; the policy reads the one named `deviation_tap` in pipeline.json, and decide's
  first input carries that name.
- decide takes the RAW history numbers, float32 (B,): kar = keys in the window / window (or / the
  decisions so far when kar_prefill is "none"), lkd = frames since the last key (i - k); it applies
  the policy's trained expert-input scaling itself (rl_scheduler.history: KAR x kar_scale; LKD x
  lkd_scale, or log2(1 + LKD) when lkd_input is "log"), with the constants inside the graph, in
  float32 (the runtime rounds the float64 product to float32: the inputs may differ by an ulp; float32
  throughout keeps the signature convertible to TFLite, which has no float64 multiply). A policy
  trained with motion_input="flow_change" also takes flow_change = the flow magnitude now minus its
  value at the first frame after the key (x motion_scale inside).
- The non-key masks come from the flow of (key frame, frame): one propagate call per frame > 0,
  then decide; on a key the caller runs key(frame) and keeps (frame, features).

DIR/pipeline.json (written last) holds what a streaming loop needs besides the graph: crop size,
threshold (tau: key when p_key > tau), deviation_tap, the history rules (window, kar_prefill) and,
for reference, the scaling constants baked into decide, and the TFLite conversion results.
`examples/stream_exported.py` is such a loop with tensorflow, numpy and cv2 only.

TFLite (`--tflite`, default on): each signature is converted on its own
(tf.lite.TFLiteConverter.from_saved_model(DIR, signature_keys=[name])) to DIR/tflite/<name>.tflite;
what the converter refused is recorded in pipeline.json "tflite" as one line per signature.
"""
import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402
from absl import logging as absl_logging  # noqa: E402

from deeplab_face import atomic, cli  # noqa: E402
from deeplab_face.errors import ConfigError  # noqa: E402

SIGNATURES = ("key", "propagate", "decide")
PIPELINE_JSON = "pipeline.json"
FORMAT = 1


def history_constants(scheduler):
    """The decision-history rules and expert-input scaling of a PolicyScheduler, as runtime uses them."""
    from rl_scheduler.policy import expert_size_of

    history = scheduler.history._batched   # the one instance the runtime's scheduler decides with
    training = dict(getattr(scheduler.policy, "stage_config", None) or {}).get("training") or {}
    return dict(window=int(history.window), kar_prefill=str(history.kar_prefill),
                kar_scale=float(history.kar_scale), lkd_input=str(history.lkd_input),
                lkd_scale=float(history.lkd_scale), expert_size=int(expert_size_of(scheduler.policy)),
                motion_scale=float(training.get("motion_scale", 1.0)))


def build_functions(dff, scheduler):
    """{name: tf.function with an input signature} for key, propagate and decide."""
    import tensorflow as tf

    from flownet2s.dff import mean_flow_magnitude

    policy = scheduler.policy
    tap = scheduler.deviation_tap
    constants = history_constants(scheduler)
    h, w = dff.frame_hw
    fh, fw = dff.feature_grid
    frame_spec = tf.TensorSpec([None, h, w, 3], tf.uint8)
    features_spec = tf.TensorSpec([None, fh, fw, dff.feature_channels], tf.float32, name="key_features")
    deviation_shape = [int(d) for d in policy.inputs[0].shape[1:]]

    def to_mask(probs):   # the runtime's np.argmax(probs, -1).astype(uint8): first maximum wins
        return tf.cast(tf.argmax(probs, axis=-1, output_type=tf.int32), tf.uint8)

    def frames(x):        # the runtime's np.asarray(frame, np.float32): exact for uint8
        return tf.cast(x, tf.float32)

    @tf.function(input_signature=[tf.TensorSpec(frame_spec.shape, tf.uint8, name="frame")])
    def key(frame):
        out = dff.key(frames(frame))
        return {"features": tf.identity(out["features"]), "mask": to_mask(out["probs"])}

    @tf.function(input_signature=[tf.TensorSpec(frame_spec.shape, tf.uint8, name="key_frame"), features_spec,
                                  tf.TensorSpec(frame_spec.shape, tf.uint8, name="frame")])
    def propagate(key_frame, key_features, frame):
        key_frame, frame = frames(key_frame), frames(frame)
        raw = dff.flow(key_frame, frame)                    # as DynamicSegmenter._flow
        magnitude = mean_flow_magnitude(raw["flow"])
        out = dff.propagate(key_frame, key_features, frame, flow_outputs=raw)   # as DynamicSegmenter.step
        return {"mask": to_mask(out["probs"]), "flow_magnitude": tf.cast(magnitude, tf.float32),
                "conv6": tf.identity(raw["conv6"]), "conv6_1": tf.identity(raw["conv6_1"])}

    def expert(kar, lkd, flow_change=None):   # rl_scheduler.history.BatchedHistory.expert, in float32
        columns = [kar * tf.constant(constants["kar_scale"], tf.float32)]
        if constants["lkd_input"] == "log":
            columns.append(tf.math.log(1.0 + lkd) / tf.constant(math.log(2.0), tf.float32))
        else:
            columns.append(lkd * tf.constant(constants["lkd_scale"], tf.float32))
        if flow_change is not None:       # rl_scheduler.history.motion_feature
            columns.append(flow_change * tf.constant(constants["motion_scale"], tf.float32))
        return tf.stack(columns, axis=1)

    decide_specs = [tf.TensorSpec([None, *deviation_shape], tf.float32, name=tap),
                    tf.TensorSpec([None], tf.float32, name="kar"), tf.TensorSpec([None], tf.float32, name="lkd")]
    if constants["expert_size"] == 3:
        @tf.function(input_signature=decide_specs + [tf.TensorSpec([None], tf.float32, name="flow_change")])
        def decide(deviation, kar, lkd, flow_change):
            return {"p_key": policy([deviation, expert(kar, lkd, flow_change)], training=False)[:, 1]}
    elif constants["expert_size"] == 2:
        @tf.function(input_signature=decide_specs)
        def decide(deviation, kar, lkd):
            return {"p_key": policy([deviation, expert(kar, lkd)], training=False)[:, 1]}
    else:
        raise ConfigError(f"policy with {constants['expert_size']} expert inputs: export knows 2 or 3")
    return {"key": key, "propagate": propagate, "decide": decide}


def _tflite(out_dir, log):
    """Converts each signature to DIR/tflite/<name>.tflite; {name: "ok" | the converter's error}."""
    import tensorflow as tf

    results = {}
    folder = atomic.check_output_dir(os.path.join(out_dir, "tflite"), "--out")
    for name in SIGNATURES:
        try:
            converter = tf.lite.TFLiteConverter.from_saved_model(out_dir, signature_keys=[name])
            blob = converter.convert()
        except Exception as e:   # noqa: BLE001 - the converter raises many types; each is recorded
            message = " ".join(str(e).split())
            results[name] = f"failed: {type(e).__name__}: {message[:600]}"
        else:
            with atomic.replacing(os.path.join(folder, f"{name}.tflite")) as tmp:
                with open(tmp, "wb") as f:
                    f.write(blob)
            results[name] = f"ok ({len(blob) / 2 ** 20:.2f} MiB)"
        log(f"tflite {name}: {results[name]}")
    return results


def export(checkpoints, out, rl_stage=None, threshold=None, flow_resolution=None, tflite=True, log=print):
    """Writes the SavedModel and pipeline.json to `out`; returns the pipeline.json dict."""
    import tensorflow as tf

    from eval.runtime import load_pipeline

    atomic.check_output_dir(out, "--out")
    dff, scheduler = load_pipeline(checkpoints, "rl", threshold=threshold, rl_stage=rl_stage,
                                   flow_resolution=flow_resolution, log=log)
    functions = build_functions(dff, scheduler)
    module = tf.Module()
    module.segmenter, module.flow_net, module.policy = dff.segmenter, dff.flow_net, scheduler.policy
    module.variables_ = [v.value for m in (dff.segmenter, dff.flow_net, scheduler.policy) for v in m.variables]
    for name, fn in functions.items():
        setattr(module, name, fn)
    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.WARNING)   # not one INFO line per captured variable name
    try:
        tf.saved_model.save(module, out, signatures={n: fn.get_concrete_function() for n, fn in functions.items()})
    finally:
        absl_logging.set_verbosity(verbosity)
    info = dict(format=FORMAT, signatures=list(SIGNATURES), crop_size=int(dff.crop_size),
                num_classes=int(dff.segmenter.output_shape[-1]), feature_grid=list(dff.feature_grid),
                feature_channels=int(dff.feature_channels), flow_input=list(dff.flow_input),
                flow_resolution=dff.flow_resolution, threshold=float(scheduler.threshold),
                deviation_tap=scheduler.deviation_tap, **history_constants(scheduler),
                checkpoints=os.path.abspath(checkpoints),
                rules=("frame 0: key(frame), a forced key that is not a decision (LKD becomes 1, the window is "
                       "untouched); frame i > 0: propagate(key_frame, key_features, frame), then "
                       "p_key = decide(<deviation_tap>, kar, lkd) with lkd = i - k and kar over the last "
                       "`window` decisions; key when p_key > threshold, then key(frame); push the decision"))
    if tflite:
        info["tflite"] = _tflite(out, log)
    atomic.write_json(os.path.join(out, PIPELINE_JSON), info)
    log(f"exported {', '.join(SIGNATURES)} to {out} (tau = {info['threshold']:g}, tap {info['deviation_tap']})")
    return info


def define_flags():
    flags.DEFINE_string("checkpoints", None, "Folder of trained stages: segmenter/, flownet/, rl_eta<limit>/.")
    flags.DEFINE_string("out", None, "Output folder of the SavedModel (and pipeline.json, tflite/).")
    flags.DEFINE_string("rl_stage", None, "RL stage under --checkpoints: rl_eta<limit> or the bare limit "
                        "(default rl_eta0.06, else the lowest limit).")
    flags.DEFINE_float("threshold", None, "tau on P(key) (default: the stage's calibrated operating threshold).")
    flags.register_validator("threshold", lambda value: value is None or math.isfinite(value),
                             message="--threshold must be a finite number")
    flags.DEFINE_enum("flow_resolution", None, ["full", "half"], "Flow-net input size (default: F's training "
                      "setting).")
    flags.DEFINE_bool("tflite", True, "Also try the TFLite conversion of each signature.")


def main(argv):
    FLAGS = flags.FLAGS
    cli.check_command_line(argv, required=("checkpoints", "out"))
    export(FLAGS.checkpoints, FLAGS.out, FLAGS.rl_stage, FLAGS.threshold, FLAGS.flow_resolution, FLAGS.tflite)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
