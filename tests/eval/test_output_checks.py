"""Issue 9, output locations: every command checks where it will write before it starts working, and a
place it cannot write (a file in the way, a path under a file) is one `error:` line naming the flag and
the path, exit status 2, in seconds."""
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def blocked(tmp_path_factory):
    root = tmp_path_factory.mktemp("outputs")
    a_file = root / "a_file"
    a_file.write_text("")
    from deeplab_face.data.synthetic import write_synthetic_video
    write_synthetic_video(root / "tree" / "001", frames=3, size=64, seed=0)
    return root, a_file


def _commands(root, a_file):
    stages = ["--segmenter_dir=s", "--flownet_dir=f", f"--prepared_dir={root}"]
    return [
        ("eval.reproduce", ["--config=smoke", f"--workdir={a_file}"], "--workdir"),
        ("deeplab_face.prepare_300vw", [f"--data_dir={root / 'tree'}", f"--out_dir={a_file}/prepared"], "--out_dir"),
        ("deeplab_face.make_synthetic", [f"--out_dir={a_file}", "--videos=1", "--frames=1"], "--out_dir"),
        ("deeplab_face.evaluate", ["--segmenter_dir=s", f"--prepared_dir={root}", f"--out_dir={a_file}/eval"],
         "--out_dir"),
        ("flownet2s.evaluate", stages + [f"--output={a_file}/out.json"], "--output"),
        ("flownet2s.train", [f"--workdir={a_file}/flow", f"--prepared_dir={root}", "--segmenter_dir=s"],
         "--workdir"),
        ("flownet2s.pretrain", [f"--root_dir={a_file}"], "--root_dir"),
        ("rl_scheduler.train_dvsnet", stages + [f"--root_dir={a_file}/dvs"], "--root_dir"),
    ]


@pytest.mark.parametrize("index", range(8))
def test_an_unwritable_output_is_one_line_before_any_work(blocked, index):
    root, a_file = blocked
    module, args, flag = _commands(root, a_file)[index]
    result = subprocess.run([sys.executable, "-m", module, *args], env=dict(os.environ, PYTHONPATH=str(ROOT)),
                            capture_output=True, text=True, timeout=300)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert len(errors) == 1 and errors[0].startswith(f"error: {flag}: {a_file}"), errors
