"""deeplab_face.train --init_checkpoint with TF DeepLab's --initialize_last_layer /
--last_layers_contain_logits_only and the head flags (issue 14)."""
import json
import os
import subprocess
import sys

import pytest

from deeplab_face import build_segmenter
from deeplab_face.errors import CheckpointError
from deeplab_face.models.checkpoint import tf1_variable_map
from deeplab_face.train import init_import_mode, train_eval
from tests.backend_parity import ROOT
from tests.deeplab_face.test_checkpoint import random_arrays, write_tf1_checkpoint
from tests.deeplab_face.test_zoo_import import zoo_head_shapes


def test_initialisation_flags_map_to_import_modes():
    # (initialize_last_layer, last_layers_contain_logits_only) -> (mode, restore_head), as TF
    # DeepLab's train.py excludes model.get_extra_layer_scopes(last_layers_contain_logits_only)
    table = {(True, True): ("all", True), (True, False): ("all", True),
             (False, True): ("backbone", True), (False, False): ("backbone", False)}
    for (initialize_last_layer, logits_only), expected in table.items():
        assert init_import_mode(not initialize_last_layer, logits_only) == expected


@pytest.fixture(scope="module")
def pascal_mobilenet(tmp_path_factory):
    """The zoo's MobileNet-V2 PASCAL layout (no ASPP branches, no decoder, 21 classes)."""
    trunk = {n: v for n, v in tf1_variable_map(build_segmenter("mobilenet_v2", 21, 65)).items()
             if n.startswith("MobilenetV2/")}
    arrays = random_arrays({**trunk, **zoo_head_shapes(320, 144, 21, rates=0, decoder=False)})
    return write_tf1_checkpoint(tmp_path_factory.mktemp("pascal") / "model.ckpt", arrays)


def _train(args):
    return subprocess.run([sys.executable, "-m", "deeplab_face.train", *args],
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True,
                          text=True, timeout=600)


def test_command_imports_a_zoo_checkpoint_into_its_head(tiny_prepared, pascal_mobilenet, tmp_path):
    prepared, videos = tiny_prepared
    root = tmp_path / "segmenter"
    run = _train([f"--workdir={root}", f"--prepared_dir={prepared}", f"--train_videos={videos[0]}",
                  "--backbone=mobilenet_v2", "--crop_size=65", "--batch_size=1", "--steps=1",
                  "--noaugment", "--atrous_rates=", "--decoder_output_stride=none",
                  f"--init_checkpoint={pascal_mobilenet}"])
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"init checkpoint {pascal_mobilenet} (import mode backbone): " in run.stdout
    assert ("left at initialisation: 2 (logits/semantic/biases, logits/semantic/weights)"
            in run.stdout)
    config = json.loads((root / "config.json").read_text())
    assert config["atrous_rates"] == [] and config["decoder_output_stride"] is None
    hparams = json.loads((root / "hparams.json").read_text())
    assert hparams["init_import"]["reinitialised"] == ["logits/semantic/biases",
                                                      "logits/semantic/weights"]
    assert hparams["last_layers_contain_logits_only"] is True and hparams["reinit_logits"] is True


def test_bad_head_flag_is_one_error_line(tiny_prepared, tmp_path):
    run = _train([f"--workdir={tmp_path}", f"--prepared_dir={tiny_prepared[0]}",
                  "--decoder_output_stride=8"])
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1].startswith("error: --decoder_output_stride")


def test_initialize_last_layer_needs_the_same_head_and_classes(tiny_prepared, pascal_mobilenet,
                                                               tmp_path):
    """--initialize_last_layer=true is the all-or-nothing import: the default head and 5 classes
    do not fit the zoo's 21-class no-ASPP checkpoint, and the error names both heads."""
    prepared, videos = tiny_prepared
    with pytest.raises(CheckpointError, match="head configuration differs: checkpoint has "
                                              "atrous_rates=\\[\\], .*the model has "
                                              "atrous_rates=\\[6, 12, 18\\]"):
        train_eval(str(tmp_path), prepared, [videos[0]], backbone="mobilenet_v2", crop_size=65,
                   batch_size=1, steps=1, init_checkpoint=pascal_mobilenet, reinit_logits=False,
                   verbose=0)
