"""The selection study across encoders (viny.encoder_selection), on hand-computed cases."""

import numpy as np
import pandas as pd
import pytest

from viny.encoder_selection import encoder_truth, rank_table, score_encoder, selection_study, snapshot_pool, study_verdicts, with_pool_dse


def _truth(means: dict[str, float], offsets=(0.0, 1.0, -1.0), size: int = 100) -> pd.DataFrame:
    return pd.DataFrame([{"encoder": e, "train_size": size, "seed": s, "value": m + o} for e, m in means.items() for s, o in enumerate(offsets)])


def test_a_score_in_the_order_of_miou_has_tau_1_and_no_regret():
    truth = _truth({"a": 40.0, "b": 42.0, "c": 44.0, "d": 46.0})
    scores = pd.DataFrame({"encoder": ["a", "b", "c", "d"], "effective_rank": [1.0, 2.0, 3.0, 4.0]})
    row = selection_study(scores, truth).set_index("score").loc["effective_rank"]
    assert row["tau"] == 1.0 and row["tau_lo"] == 1.0 and row["verdict"] == "supported"
    assert row["picks"] == row["best"] == "d" and row["regret"] == 0.0 and row["encoders"] == 4


def test_a_reversed_score_picks_the_worst_encoder_and_its_regret_is_paired_by_seed():
    # per seed: d - a = 6 + (0, 1, -1) - (0, 2, -2) = 6, 5, 7 -> regret of picking a: -6, mean interval over 3 seeds
    truth = pd.concat([_truth({"a": 40.0}, (0.0, 2.0, -2.0)), _truth({"b": 42.0, "c": 44.0, "d": 46.0})])
    scores = pd.DataFrame({"encoder": ["a", "b", "c", "d"], "nn_probe_miou": [4.0, 3.0, 2.0, 1.0]})
    row = selection_study(scores, truth).set_index("score").loc["nn_probe_miou"]
    assert row["tau"] == -1.0 and row["verdict"] == "contradicted" and row["picks"] == "a"
    assert row["regret"] == pytest.approx(-6.0)
    half = 4.302652729749464 * 1.0 / np.sqrt(3)  # t(0.975, 2) * std([-6, -5, -7]) / sqrt(3)
    assert row["regret_lo"] == pytest.approx(-6.0 - half, rel=1e-4) and row["regret_hi"] == pytest.approx(-6.0 + half, rel=1e-4)
    assert bool(row["uses_labels"])


def test_reconstruction_is_the_negated_ratio_and_missing_scores_are_left_out():
    truth = _truth({"a": 40.0, "b": 42.0, "c": 44.0, "d": 46.0})
    scores = pd.DataFrame({"encoder": ["a", "b", "c", "d"], "reconstruction_ratio": [1.3, 1.1, 0.9, np.nan]})
    row = selection_study(scores, truth).set_index("score").loc["reconstruction"]
    assert row["encoders"] == 3 and row["tau"] == 1.0 and row["picks"] == "c" and row["best"] == "c"
    two = pd.DataFrame({"encoder": ["a", "b"], "effective_rank": [1.0, 2.0]})
    assert selection_study(two, truth).empty  # fewer than 3 encoders: no tau


def test_pool_dse_uses_the_adaptive_lambda_by_hand():
    scores = pd.DataFrame({"encoder": ["a", "b", "c"], "m_inter": [1.0, 2.0, 3.0], "m_intra": [0.0, 0.0, 0.0], "m_dim": [0.0, 1.0, 0.0]})
    # sep = 1, 2, 3 (std sqrt(2/3)); m_dim std sqrt(2/9): lambda = sqrt(3)
    assert with_pool_dse(scores)["dse"].tolist() == pytest.approx([1.0, 2.0 + np.sqrt(3), 3.0])


def test_encoder_truth_reads_each_encoders_cells_of_a_results_table():
    results = pd.DataFrame([
        {"study": "finetune", "status": "done", "pretrain_images": 0, "intermediate": "none", "train_size": 100, "seed": 0, "miou": 0.4},
        {"study": "finetune", "status": "failed", "pretrain_images": 0, "intermediate": "none", "train_size": 100, "seed": 1, "miou": np.nan},
        {"study": "finetune", "status": "done", "pretrain_images": 9469, "intermediate": "cls_intel", "train_size": 250, "seed": 2, "miou": 0.45},
        {"study": "control", "status": "done", "pretrain_images": 0, "intermediate": "none", "train_size": 100, "seed": 0, "miou": 0.38},
        {"study": "indomain", "status": "done", "epochs": 50, "train_size": 100, "seed": 0, "miou": 0.41},
    ])
    truth = encoder_truth(results).set_index("encoder")
    assert truth.loc["random init (reference)", "value"] == pytest.approx(40.0)
    assert truth.loc["SimMIM 9.5k + CLS", ["train_size", "seed"]].tolist() == [250, 2]
    assert truth.loc["random init (timm)", "value"] == pytest.approx(38.0)
    assert "SimMIM Pets 400" not in truth.index  # only its 50-epoch cell: not the 100-epoch protocol
    assert len(truth) == 3


def test_study_verdicts_need_every_row_to_agree():
    rows = pd.DataFrame([
        {"pool": "encoders", "train_size": 100, "score": "dse", "tau": 0.8, "tau_lo": 0.2, "tau_hi": 1.0, "encoders": 10, "regret": 0.0,
         "regret_lo": 0.0, "regret_hi": 0.0, "verdict": "supported"},
        {"pool": "encoders", "train_size": 250, "score": "dse", "tau": 0.1, "tau_lo": -0.4, "tau_hi": 0.6, "encoders": 10, "regret": -1.0,
         "regret_lo": -2.0, "regret_hi": 0.0, "verdict": "inconclusive"},
        {"pool": "encoders", "train_size": 100, "score": "effective_rank", "tau": 0.9, "tau_lo": 0.5, "tau_hi": 1.0, "encoders": 10,
         "regret": 0.0, "regret_lo": 0.0, "regret_hi": 0.0, "verdict": "supported"},
    ])
    v = study_verdicts(rows).set_index("score")
    assert v.loc["dse", "verdict"] == "inconclusive" and v.loc["effective_rank", "verdict"] == "supported"
    assert "encoders at 250: tau +0.10 [-0.40, +0.60] over 10" in v.loc["dse", "evidence"]


def test_the_snapshot_pool_of_the_committed_curves():
    scores, truth = snapshot_pool("results/along_pretraining")
    assert scores["encoder"].is_unique and set(truth["encoder"]) >= set(scores["encoder"])
    assert (truth["train_size"].isin([100, 250])).all() and "simmim_9469@100" in set(scores["encoder"])
    table = rank_table(scores, truth)
    assert {"miou_100", "effective_rank", "dse"} <= set(table.columns)


def test_score_encoder_gives_every_score(tmp_path):
    import torch

    from viny.diagnostics import diagnostic_images
    from viny.registry import create_encoder
    from viny.simmim import SimMIM

    torch.manual_seed(0)
    enc = create_encoder("viny_test")
    data = diagnostic_images(None, num_images=24, exclude=np.arange(10), size=64)
    assert not set(data.index) & set(range(10))
    held = torch.randn(8, 3, 64, 64)
    row = score_encoder(enc, data, SimMIM(enc), held, dse_images=16, precision="fp32")
    assert {"effective_rank", "dse_lambda1", "probe_accuracy", "nn_probe_miou", "reconstruction_ratio"} <= set(row)
    assert "dse" not in row and all(np.isfinite(v) for v in row.values())
