"""Issue 9: flags are validated by absl itself. Every numeric flag of every command has a bound (or a
validator), the catalogue's bad values are refused at parse time, and a refusal is one line, exit 2."""
import contextlib
import importlib
import os
import pathlib
import subprocess
import sys

import pytest
from absl import flags

FLAGS = flags.FLAGS
ROOT = pathlib.Path(__file__).resolve().parents[2]

# command module -> required flags (dummy values: absl checks them at parse time too)
COMMANDS = {
    "deeplab_face.make_synthetic": ["--out_dir=o"],
    "deeplab_face.prepare_300vw": ["--data_dir=d", "--out_dir=o"],
    "deeplab_face.train": ["--workdir=w", "--prepared_dir=p"],
    "deeplab_face.evaluate": ["--segmenter_dir=s", "--prepared_dir=p"],
    "flownet2s.pretrain": ["--root_dir=r"],
    "flownet2s.train": ["--workdir=w", "--prepared_dir=p", "--segmenter_dir=s"],
    "flownet2s.evaluate": ["--segmenter_dir=s", "--flownet_dir=f", "--prepared_dir=p"],
    "rl_scheduler.train": ["--root_dir=r", "--prepared_dir=p", "--segmenter_dir=s", "--flownet_dir=f"],
    "rl_scheduler.train_dvsnet": ["--root_dir=r", "--prepared_dir=p", "--segmenter_dir=s", "--flownet_dir=f"],
    "eval.cityscapes": ["--data_dir=d", "--checkpoint=c"],
    "rl_scheduler.pair_tables": ["--pair_table_dir=t", "--prepared_dir=p", "--segmenter_dir=s", "--flownet_dir=f"],
    "eval.causal_split": ["--workdir=w"],
    "eval.oracle_state": ["--workdir=w"],
}


@contextlib.contextmanager
def command_flags(name):
    """The command's flags alone on the global FlagValues (as when it runs), the others put back after."""
    module = importlib.import_module(name)
    saved = {id(FLAGS[n]): FLAGS[n] for n in FLAGS}
    for n in list(FLAGS):             # other commands' flags (eval.reproduce's, defined at import)
        delattr(FLAGS, n)
    FLAGS.unparse_flags()
    module.define_flags()
    try:
        yield [FLAGS[n] for n in sorted(FLAGS)]
    finally:
        FLAGS.unparse_flags()
        for n in list(FLAGS):
            delattr(FLAGS, n)
        for flag in saved.values():   # (a short name, like -v, comes back with its flag)
            FLAGS[flag.name] = flag


def _has_bound(flag):
    parser = flag.parser
    return (getattr(parser, "lower_bound", None) is not None or getattr(parser, "upper_bound", None) is not None
            or bool(flag.validators))


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_numeric_flag_has_a_bound(name):
    with command_flags(name) as defined:
        numeric = [f for f in defined if f.flag_type() in ("int", "float")]
        assert numeric, name
        unbounded = [f.name for f in numeric if not _has_bound(f)]
        assert not unbounded, f"{name}: numeric flags without a bound: {unbounded}"
        FLAGS(["prog"] + COMMANDS[name])      # the defaults and the required flags parse


def test_reproduce_flags_are_checked_by_absl():
    from eval import reproduce   # defines its flags at import
    try:
        for argv, flag in ((["--workdir=w", "--config=bogus"], "--config"), ([], "--workdir")):
            with pytest.raises(flags.Error, match=flag):
                FLAGS(["prog"] + argv)
            FLAGS.unparse_flags()
    finally:
        FLAGS.unparse_flags()
    del reproduce


CATALOGUE = [   # issue 9's list of values that were accepted or crashed deep inside
    ("rl_scheduler.train_dvsnet", "--batch_size=0"),
    ("rl_scheduler.train_dvsnet", "--epochs=0"),
    ("rl_scheduler.train_dvsnet", "--max_gap=0"),
    ("rl_scheduler.train_dvsnet", "--deviation_size=4"),
    ("rl_scheduler.train", "--episode_length=0"),
    ("rl_scheduler.train", "--window=0"),
    ("rl_scheduler.train", "--deviation_size=a"),
    ("rl_scheduler.train", "--kar_limit=1.5"),
    ("rl_scheduler.train", "--kar_limit=0"),
    ("flownet2s.evaluate", "--max_frames=0"),
    ("flownet2s.evaluate", "--gaps=1,x"),
    ("flownet2s.train", "--min_gap=5 --max_gap=2"),
    ("flownet2s.train", "--init_checkpoint=a --init_stage=b"),
    ("flownet2s.pretrain", "--input_size=100"),
    ("deeplab_face.train", "--output_stride=12"),
    ("deeplab_face.evaluate", "--scale_sets=1.0;x"),
    ("eval.cityscapes", "--max_snippets=-1"),
    ("deeplab_face.make_synthetic", "--frames=ten"),
]


@pytest.mark.parametrize("name,bad", CATALOGUE)
def test_bad_values_are_refused_at_parse_time(name, bad):
    with command_flags(name):
        with pytest.raises(flags.Error) as refused:
            FLAGS(["prog"] + COMMANDS[name] + bad.split())
        assert bad.split()[0].split("=")[0].lstrip("-") in str(refused.value), str(refused.value)


def test_a_refused_flag_is_one_line_with_status_2():
    result = subprocess.run([sys.executable, "-m", "rl_scheduler.train_dvsnet", "--batch_size=0"],
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--batch_size=0" in errors[0], result.stderr[-2000:]
