"""The stages of `eval.reproduce`, in pipeline order: what each one runs and how it is described.

`StageFunctions` holds one run's stage bodies (each calls its package's stage function, docs/interfaces.md
"Stage functions", with the preset's hyper-parameters); `stage_list` puts them in order with their
descriptions.
"""
import dataclasses

from deeplab_face.training import recalibrate_batch_norm
from eval import real_face


def _eta_name(kar_limit):
    return f"rl_eta{kar_limit:g}"


def _call(fn, *args, log=print, **kwargs):
    """`fn(*args, **kwargs)`, dropping (loudly) preset keys the stage function does not take; `log`
    goes to the functions that take one."""
    import inspect
    params = inspect.signature(fn).parameters
    if "log" in params:
        kwargs["log"] = log
    if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        dropped = sorted(k for k in kwargs if k not in params)
        if dropped:
            log(f"warning: {fn.__module__}.{fn.__name__} takes no {', '.join(dropped)}; not passed")
        kwargs = {k: v for k, v in kwargs.items() if k in params}
    return fn(*args, **kwargs)


class StageFunctions:
    """The stage bodies of one run of pipeline `p` (eval.reproduce.Pipeline) on `split`."""

    def __init__(self, p, split, segmenter_init=None, flownet_init=None):
        self.p, self.e, self.split = p, p.experiment, split
        self.segmenter_init, self.flownet_init = segmenter_init, flownet_init
        self.trained_seg_dir, self.flow_dir = p.checkpoint_dir("segmenter"), p.checkpoint_dir("flownet")
        # later stages read the recalibrated N when there is one
        self.seg_dir = p.checkpoint_dir("segmenter_bn") if self.e.recalibrate_bn else self.trained_seg_dir
        self.all_videos = sorted(set(split.segmenter_train + split.segmenter_val + split.scheduler_train
                                     + split.scheduler_val + split.test + split.real_test))

    def data(self):
        from deeplab_face.make_synthetic import make_synthetic
        p, d = self.p, self.e.data
        return make_synthetic(p.data_dir, videos=d.synthetic_videos, frames=d.synthetic_frames,
                              size=d.synthetic_size, seed=d.seed, demo_clip=d.demo_clip,
                              long_videos=d.long_videos, long_frames=d.long_frames, real_clip=d.real_clip,
                              log=p.log)

    def prepare(self):
        from deeplab_face.prepare_300vw import prepare as prepare_fn
        p = self.p
        return prepare_fn(p.data_dir, p.prepared_dir, size=self.e.data.crop_size, video_ids=self.all_videos,
                          exclude=p.exclude)

    def train_segmenter(self, stage, backbone):
        from deeplab_face.train import train_eval
        p, e, split = self.p, self.e, self.split
        hparams = dict(dataclasses.asdict(e.segmenter), backbone=backbone)
        if self.segmenter_init and backbone == e.segmenter.backbone:
            hparams["init_checkpoint"] = self.segmenter_init
        return _call(train_eval, p.checkpoint_dir(stage), p.prepared_dir, list(split.segmenter_train),
                     list(split.segmenter_val), log=p.log, **hparams)

    def recalibrate_bn(self):
        e = self.e
        return recalibrate_batch_norm(self.trained_seg_dir, self.seg_dir, self.p.prepared_dir,
                                      self.split.segmenter_train, e.recalibrate_bn, seed=e.segmenter.seed)

    def table1(self):
        from deeplab_face.evaluate import evaluate
        p, e, split, seg_dir = self.p, self.e, self.split, self.seg_dir
        rows = []
        for stage_dir in [seg_dir] + [p.checkpoint_dir(f"segmenter_{b}") for b in e.table1.extra_backbones]:
            # (evaluate gives the VGG models their single "N/A" row itself)
            out = _call(evaluate, stage_dir, p.prepared_dir, list(split.test), log=p.log,
                        scale_sets=e.table1.scale_sets, flip=e.table1.flip, max_frames=e.table1.max_frames)
            rows += out["table1"]
        # N per class: the test videos against the real face (Split.real_test, Table 1 only)
        per_class = real_face.per_class_iou(seg_dir, p.prepared_dir, {"test": split.test, "real_face": split.real_test},
                                            max_frames=e.table1.max_frames, log=p.log)
        return {"table1": rows, "per_class": per_class}

    def pretrain_flownet(self):
        from flownet2s.pretrain import pretrain
        p, e = self.p, self.e
        return _call(pretrain, p.checkpoint_dir("flownet_pretrain"), log=p.log, width=e.flow.width,
                     face_crop_size=e.data.crop_size, **dataclasses.asdict(e.flow_pretrain))

    def train_flownet(self):
        from flownet2s.train import train_eval
        p, e, split = self.p, self.e, self.split
        hparams = dataclasses.asdict(e.flow)
        if self.flownet_init:
            hparams["init_checkpoint"] = self.flownet_init
        elif e.flow_pretrain.steps:
            hparams["init_stage"] = p.checkpoint_dir("flownet_pretrain")
        return _call(train_eval, self.flow_dir, p.prepared_dir, self.seg_dir, list(split.segmenter_train),
                     list(split.segmenter_val), log=p.log, **hparams)

    def flownet_eval(self):
        from flownet2s.evaluate import evaluate
        p, e = self.p, self.e
        return _call(evaluate, self.seg_dir, self.flow_dir, p.prepared_dir, list(self.split.test), log=p.log,
                     gaps=e.table1.gaps, max_frames=e.table1.max_frames, flow_resolution=e.flow.flow_resolution)

    def train_dvsnet(self):
        from rl_scheduler.train_dvsnet import train_eval
        p, e, split = self.p, self.e, self.split
        return _call(train_eval, p.checkpoint_dir("dvsnet"), p.prepared_dir, self.seg_dir, self.flow_dir,
                     list(split.scheduler_train), list(split.scheduler_val), log=p.log,
                     flow_resolution=e.flow.flow_resolution, pair_table_dir=str(p.workdir / "pair_tables"),
                     **dataclasses.asdict(e.dvsnet))

    def train_rl(self, kar_limit):
        from rl_scheduler.train import train_eval
        p, e, split = self.p, self.e, self.split
        return _call(train_eval, p.checkpoint_dir(_eta_name(kar_limit)), p.prepared_dir, self.seg_dir,
                     self.flow_dir, list(split.scheduler_train), list(split.scheduler_val), log=p.log,
                     kar_limit=kar_limit, flow_resolution=e.flow.flow_resolution,
                     pair_table_dir=str(p.workdir / "pair_tables"), **dataclasses.asdict(e.rl))

    def sweeps(self):
        from eval import sweeps as sweeps_lib
        p, e = self.p, self.e
        return _call(sweeps_lib.run_sweeps, str(p.workdir / "sweeps"), p.prepared_dir, self.seg_dir, self.flow_dir,
                     {eta: p.checkpoint_dir(_eta_name(eta)) for eta in e.kar_limits},
                     p.checkpoint_dir("dvsnet"), list(self.split.test), log=p.log,
                     flow_resolution=e.flow.flow_resolution, **dataclasses.asdict(e.sweep))

    def figures(self):
        from eval import figures as figures_lib
        p = self.p
        return _call(figures_lib.make_figures, str(p.workdir / "figures"), str(p.workdir), log=p.log)


# -- the list: [(name, description, fn, training)] ------------------------------------------------
def _data_stages(f):
    e = f.e
    stages = []
    if f.p.external_data is None:
        stages.append(("data", f"embedded data: {e.data.synthetic_videos} synthetic videos x "
                       f"{e.data.synthetic_frames} frames" + (" + the astronaut clip" if e.data.demo_clip else "")
                       + (" + the real-face clip" if e.data.real_clip else ""),
                       f.data, False))
    stages.append(("prepare", f"face crops at S={e.data.crop_size} for {len(f.all_videos)} videos", f.prepare, False))
    return stages


def _segmenter_stages(f):
    e = f.e
    stages = [("segmenter", f"train N ({e.segmenter.backbone}, S={e.segmenter.crop_size}, "
               f"{e.segmenter.steps} steps) on {len(f.split.segmenter_train)} videos",
               lambda: f.train_segmenter("segmenter", e.segmenter.backbone), True)]
    if e.recalibrate_bn:
        stages.append(("segmenter_bn", f"re-estimate N's batch-norm statistics ({e.recalibrate_bn} batches)",
                       f.recalibrate_bn, False))
    for backbone in e.table1.extra_backbones:
        stages.append((f"segmenter_{backbone}", f"train the Table 1 model {backbone}",
                       lambda b=backbone: f.train_segmenter(f"segmenter_{b}", b), True))
    stages.append(("table1", f"Table 1: N at scales {e.table1.scale_sets} on the test videos", f.table1, False))
    return stages


def _flownet_stages(f):
    e = f.e
    stages = []
    if e.flow_pretrain.steps and not f.flownet_init:
        stages.append(("flownet_pretrain", f"pretrain F on generated pairs with known flow "
                       f"({e.flow_pretrain.steps} steps, EPE loss)", f.pretrain_flownet, True))
    stages.append(("flownet", f"fine-tune F (width {e.flow.width}, {e.flow.steps} steps, gaps "
                   f"{e.flow.min_gap}-{e.flow.max_gap})", f.train_flownet, True))
    stages.append(("flownet_eval", "Table 1: the FlowNet2-s row, mIoU per gap", f.flownet_eval, False))
    return stages


def _scheduler_stages(f):
    e = f.e
    stages = []
    for eta in e.kar_limits:   # first: their pair tables (W/pair_tables) serve the DVSNet stage too
        stages.append((_eta_name(eta), f"train the RL policy, KAR limit {eta:g}, {e.rl.episodes} episodes",
                       lambda eta=eta: f.train_rl(eta), True))
    stages.append(("dvsnet", f"train the DVSNet decision network ({e.dvsnet.epochs} epochs)", f.train_dvsnet, True))
    stages.append(("sweeps", f"scheduler sweeps on the test videos {' '.join(f.split.test)}", f.sweeps, False))
    stages.append(("figures", "Fig. 3, 4, 6, 7, 8 and Table 1", f.figures, False))
    return stages


def stage_list(p, split, segmenter_init=None, flownet_init=None):
    """[(name, description, fn, training)] in pipeline order."""
    f = StageFunctions(p, split, segmenter_init, flownet_init)
    return _data_stages(f) + _segmenter_stages(f) + _flownet_stages(f) + _scheduler_stages(f)
