"""eval.figures: every figure from a small fake workdir, and the Table 1 markdown."""
import json

import cv2
import numpy as np

from eval import figures


def _fake_workdir(root):
    rng = np.random.default_rng(0)
    for eta in (0.04, 0.14):
        stage = root / "checkpoints" / f"rl_eta{eta:g}"
        stage.mkdir(parents=True)
        rows = [dict(update=u + 1, episodes=8 * (u + 1), mean_return=0.1 * u + eta, key_ratio=eta,
                     entropy=0.6, kar_weight=-0.01 * u, lkd_weight=0.02 * u) for u in range(6)]
        (stage / "history.json").write_text(json.dumps(rows))
    curves = {name: [dict(aki=a, miou=60 + 5 * np.log(a) * (name == "rl") + rng.random(), fps=30 + a,
                          threshold=float(a)) for a in (2.0, 10.0, 40.0)]
              for name in ("rl", "dvsnet", "flow_magnitude", "fixed", "random")}
    for p in curves["rl"]:
        p.update(kar_limit=0.14, target_aki=p["aki"], calibrated=True)
    curves["dvsnet"][-1].update(target_aki=25.0, calibrated=False)    # a missed target: drawn hollow
    curves["oracle"] = [dict(aki=a, miou=80.0 - a / 10, fps=None, threshold=100 / a, target_aki=a, calibrated=True)
                        for a in (2.0, 10.0, 40.0)]
    rl_policies = {"0.04": [dict(p, kar_limit=0.04, miou=p["miou"] - 1) for p in curves["rl"]],
                   "0.14": curves["rl"]}
    table1 = [dict(model="DeepLab-V3+ (MobileNet-V2)", scales=[1.25, 1.75], miou=61.234, fps=12.0),
              dict(model="FlowNet2-s", scales=[], miou=55.0, fps=99.0)]
    (root / "results.json").write_text(json.dumps({"curves": curves, "table1": table1,
                                                   "sweeps": {"rl_policies": rl_policies}}))
    sweeps = root / "sweeps"
    sweeps.mkdir()
    records = {name: [dict(aki=10.0, miou=60.0, keys=[[0, 8, 20, 31], [0, 15]],
                           frame_miou=list(rng.random(40)))] for name in ("rl", "fixed", "dvsnet")}
    (sweeps / "points.json").write_text(json.dumps(dict(
        records=records, chosen={n: 0 for n in records}, figure_aki=10.0, figure_video="006",
        frames_per_video=[40, 20])))
    labels = np.zeros((2, 33, 33), np.uint8)
    labels[:, 8:25, 8:25] = 1
    np.savez(sweeps / "fig8_samples.npz", images=rng.integers(0, 255, (2, 33, 33, 3), dtype=np.uint8),
             labels=labels, frame_index=np.array([5, 30]), mask_rl=labels, is_key_rl=np.array([False, False]),
             mask_fixed=np.zeros_like(labels), is_key_fixed=np.array([False, True]))


def test_make_figures_writes_every_figure(tmp_path):
    _fake_workdir(tmp_path)
    lines = []
    out = figures.make_figures(str(tmp_path / "figures"), str(tmp_path), log=lines.append)
    assert out["missing"] == []
    assert sorted(out["figures"]) == ["fig3_rl_training.png", "fig4_aki_fps_miou.png", "fig6_cki_density.png",
                                      "fig7_keys_along_video.png", "fig8_nonkey_masks.png"]
    for name in out["figures"]:
        image = cv2.imread(str(tmp_path / "figures" / name))
        assert image is not None and image.shape[0] > 200 and image.shape[1] > 200, name
        assert image.std() > 10, name   # something is drawn
    table = (tmp_path / "figures" / "table1.md").read_text()
    assert "| DeepLab-V3+ (MobileNet-V2) | 1.25, 1.75 | 61.23 | 12.0 |" in table
    assert "| FlowNet2-s | N/A | 55.00 | 99.0 |" in table


def test_fig4_draws_the_references_dashed_and_dotted_without_fps(tmp_path, monkeypatch):
    _fake_workdir(tmp_path)
    drawn = []
    monkeypatch.setattr(figures, "_save", lambda fig, path: drawn.append(fig) or path)
    results = json.loads((tmp_path / "results.json").read_text())
    curves = dict(results["curves"], causal_oracle=[dict(p, miou=p["miou"] + 1.0) for p in results["curves"]["oracle"]])
    figures.fig4_curves(curves, str(tmp_path / "f.png"), results["sweeps"]["rl_policies"])
    left, right = drawn[0].axes
    lines = {line.get_label(): line for line in left.get_lines()}
    oracle, causal = figures.ORACLE_LABEL, figures.REFERENCE_STYLES["causal_oracle"]["label"]
    assert lines[oracle].get_linestyle() == "--" and lines[causal].get_linestyle() == ":"
    assert "RL (ours), KAR limit 0.04" in lines and "RL (ours)" in lines
    on_fps = {line.get_label() for line in right.get_lines()}
    assert oracle not in on_fps and causal not in on_fps   # they read labels: no FPS
    hollow = [line for line in left.get_lines() if line.get_markerfacecolor() == "white"]
    assert len(hollow) == 1 and list(hollow[0].get_xdata()) == [40.0]   # dvsnet's missed target


def test_missing_inputs_are_reported_not_fatal(tmp_path):
    lines = []
    out = figures.make_figures(str(tmp_path / "figures"), str(tmp_path), log=lines.append)
    assert out["figures"] == [] and len(out["missing"]) == 4
    assert any("fig3" in line for line in lines)


def test_histories_are_read_per_kar_limit(tmp_path):
    _fake_workdir(tmp_path)
    histories = figures.read_histories(str(tmp_path))
    assert sorted(histories) == [0.04, 0.14] and len(histories[0.14]) == 6
