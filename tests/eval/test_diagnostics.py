"""The report's RL diagnostics from history rows and stage results."""
import json
import os

from eval import diagnostics


def _rows():
    rows = []
    for u in range(1, 11):
        rows.append(dict(update=u, mean_return=0.1 * u, key_ratio=0.2 - 0.01 * u, completed=0.05 * u,
                         entropy=0.5, key_price=0.3, mean_lkd=5.0 + u, max_lkd=20 + u,
                         lkd_histogram=[1, 2, 3, 4, 0, 0, 0, 0, 0] if u <= 5 else [0, 0, 1, 2, 3, 4, 0, 0, 0]))
    rows[4].update(val_quality=0.70, val_tau=0.2, val_key_ratio=0.05, val_fixed_quality=0.71)
    rows[9].update(val_quality=0.74, val_tau=0.1, val_key_ratio=0.06, val_fixed_quality=0.71)
    return rows


def test_training_summary_compares_first_and_last_updates():
    s = diagnostics.training_summary(_rows())
    assert s["mean_return_first"] == 0.3 and s["mean_return_last"] == 0.8
    assert s["lkd_histogram_first"] == [5, 10, 15, 20, 0, 0, 0, 0, 0]
    assert s["lkd_histogram_last"] == [0, 0, 5, 10, 15, 20, 0, 0, 0]
    assert s["best_update"] == 10 and s["best_val_quality"] == 0.74 and s["updates"] == 10


def test_rl_markdown_reads_the_stage_history_and_probes(tmp_path):
    stage = tmp_path / "checkpoints" / "rl_eta0.05"
    stage.mkdir(parents=True)
    (stage / "history.json").write_text(json.dumps(_rows()))
    probe = dict(policy=dict(lkd=[1, 10], p_key_mean=[0.05, 0.3], p_key_std=[0.01, 0.04], p_key_p10=[0, 0],
                             p_key_p90=[0, 0], kar_fraction=[0.0, 1.0], kar_probe_lkd=20, p_key_by_kar=[0.3, 0.1],
                             spread=0.025, samples=48),
                 reward=dict(r2_features=0.4, r2_gap=0.2, r2_features_and_gap=0.5, train_pairs=600, test_pairs=300))
    found = diagnostics.rl_diagnostics(str(tmp_path), {"rl_eta0.05": {"probe": probe, "operating_threshold": 0.1},
                                                       "dvsnet": {}})
    assert list(found) == ["rl_eta0.05"] and found["rl_eta0.05"]["summary"]["updates"] == 10
    text = diagnostics.rl_markdown(found)
    assert "| mean P(key) | 0.050 | 0.300 |" in text and "Conv6 features 0.400" in text
    assert "74.00 at tau 0.100" in text and "tau = 0.100" in text
    assert diagnostics.rl_markdown({}) == "No RL stage ran."
    assert os.path.exists(stage / "history.json")


def test_key_value_diagnosis_uses_the_best_scheduler_at_the_densest_target():
    from eval.report import key_value_diagnosis
    point = lambda t, aki, miou: dict(target_aki=t, aki=aki, miou=miou, calibrated=True)  # noqa: E731
    curves = {"flow_magnitude": [point(2, 1.9, 42.5), point(25, 25.8, 42.0)],
              "fixed": [point(2, 2.0, 46.1), point(25, 25.0, 44.2)]}
    text = key_value_diagnosis(curves)
    assert "fixed, AKI 2.0" in text and "Keys buy accuracy here (1.90 points)" in text
    flat = {"fixed": [point(2, 2.0, 44.0), point(25, 25.0, 44.2)]}
    assert "Keys do not buy accuracy" in key_value_diagnosis(flat)
