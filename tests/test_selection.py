"""Label-free checkpoint selection: hand-computed picks, regret and tau; the CLI end to end on a tiny run."""

import numpy as np
import pandas as pd
import pytest

from viny.cli import main
from viny.errors import VinyError
from viny.selection import across_runs_markdown, along_table, choose, gains_over_random, kendall_tau_interval, read_along_pretraining, selection_across_runs, selection_summary, verdict_counts


def test_choose_takes_the_highest_score_and_the_later_epoch_on_ties():
    assert choose(pd.Series({10: 0.1, 20: 0.5, 30: 0.2})) == 20
    assert choose(pd.Series({10: 0.5, 20: 0.5, 30: float("nan")})) == 20


def test_kendall_tau_interval_perfect_and_reversed():
    a = kendall_tau_interval([1, 2, 3, 4, 5], [10, 20, 30, 40, 50])
    assert a["tau"] == 1.0 and a["lo"] == 1.0 and a["hi"] == 1.0 and a["n"] == 5
    assert kendall_tau_interval([1, 2, 3, 4], [4, 3, 2, 1])["tau"] == -1.0


def test_selection_summary_regret_by_hand():
    # mIoU (two seeds) peaks at epoch 20; DSE picks 20 (regret 0), "last" picks 30 (regret 31 - 35 = -4 points)
    scores = pd.DataFrame({"epoch": [10, 20, 30], "dse": [0.1, 0.9, 0.5], "effective_rank": [3.0, 2.0, 1.0],
                           "reconstruction_ratio": [1.0, 0.9, 0.8], "probe_accuracy": [0.5, 0.6, 0.7]})
    down = pd.DataFrame({"epoch": [0, 0, 10, 10, 20, 20, 30, 30], "train_size": [100] * 8, "seed": [0, 1] * 4,
                         "miou": [0.30, 0.30, 0.29, 0.31, 0.34, 0.36, 0.30, 0.32]})
    t = selection_summary(scores, down, 100).set_index("score")
    assert t.loc["dse", "picks_epoch"] == 20 and t.loc["dse", "regret"] == pytest.approx(0.0)
    assert t.loc["last", "picks_epoch"] == 30 and t.loc["last", "regret"] == pytest.approx(31 - 35)
    assert t.loc["effective_rank", "picks_epoch"] == 10 and t.loc["effective_rank", "regret"] == pytest.approx(30 - 35)
    assert t.loc["reconstruction", "picks_epoch"] == 30  # lowest ratio
    # truth by epoch: 30, 35, 31 -> DSE order (10 < 30 < 20) matches exactly: tau 1
    assert t.loc["dse", "tau"] == pytest.approx(1.0)


def test_along_table_and_gains_over_random_by_hand():
    scores = pd.DataFrame({"epoch": [10, 20], "dse": [0.2, 0.3], "effective_rank": [5.0, 6.0], "reconstruction_ratio": [0.9, 0.8]})
    down = pd.DataFrame({"epoch": [0, 0, 10, 10, 20, 20], "train_size": [100] * 6, "seed": [0, 1] * 3,
                         "miou": [0.30, 0.32, 0.33, 0.33, 0.35, 0.39]})
    t = along_table(scores, down).set_index("epoch")
    # epoch 20: mean 37 %, std of (35, 39) = 2.83; random init has no scores
    assert t.loc[20, "miou_100_mean"] == pytest.approx(37.0) and t.loc[20, "miou_100_std"] == pytest.approx(2 * 2 ** 0.5)
    assert t.loc[20, "dse"] == 0.3 and np.isnan(t.loc[0, "dse"])
    g = gains_over_random(down, 100).set_index("epoch")
    # epoch 10 minus random init, per seed: +3 and +1 -> mean +2, std 1.414, half-width 12.706 * 1.414 / sqrt(2) = 12.706
    assert g.loc[10, "mean"] == pytest.approx(2.0) and g.loc[10, "lo"] == pytest.approx(2 - 12.706) and g.loc[10, "n"] == 2
    assert g.loc[20, "mean"] == pytest.approx(6.0)
    with pytest.raises(VinyError, match="random-init"):
        gains_over_random(down[down["epoch"] > 0], 100)


def test_viny_select_writes_the_chosen_snapshot_with_a_card(tmp_path, capsys):
    import viny.train as T
    from viny.config import make_config
    from viny.weights import load_encoder, read_metadata

    run = tmp_path / "pre"
    T.train(make_config("pretrain", model="viny_test", epochs=3, num_images=32, batch_size=16, save_encoder_every=1, precision="fp32"), run, progress=False)
    rc = main(["select", str(run), "--by", "dse", "--images", "40", "--dse-images", "32"])
    out = capsys.readouterr().out
    assert rc == 0 and "chosen by dse" in out
    chosen = run / "selected_dse.safetensors"
    meta = read_metadata(chosen)
    assert meta["selected_by"] == "dse" and meta["selected_epoch"] in (1, 2, 3)
    assert load_encoder(chosen).pos_embed.shape[-1] == 32
    assert "Snapshot chosen by DSE" in chosen.with_suffix(".md").read_text()


def test_selection_verdicts_and_chart():
    from viny.figures import selection_chart
    from viny.selection import selection_verdicts

    scores = pd.DataFrame({"epoch": [10, 20, 30], "dse": [0.1, 0.9, 0.5], "effective_rank": [3.0, 2.0, 1.0],
                           "reconstruction_ratio": [1.0, 0.9, 0.8], "probe_accuracy": [0.5, 0.6, 0.7]})
    # three seeds; epoch 20 is best on every seed by 3-5 points
    rows = []
    for seed, (a, b, c) in enumerate([(0.30, 0.35, 0.31), (0.31, 0.34, 0.30), (0.29, 0.35, 0.31)]):
        rows += [{"epoch": e, "train_size": 100, "seed": seed, "miou": v} for e, v in ((10, a), (20, b), (30, c))]
    down = pd.DataFrame(rows)
    v = selection_verdicts(scores, down, 100).set_index("claim")
    assert v.loc["DSE picks a better checkpoint than taking the last one", "verdict"] == "supported"
    assert "DSE picks epoch 20, last picks 30" in v.loc["DSE picks a better checkpoint than taking the last one", "evidence"]
    assert v.loc["DSE picks a better checkpoint than effective rank", "verdict"] == "supported"
    spec = selection_chart(scores, down, 100).to_dict()
    assert len(spec["vconcat"]) == 2


def test_snapshots_every_and_at(tmp_path):
    from viny.errors import VinyError
    from viny.weights import snapshots

    (tmp_path / "checkpoints").mkdir()
    for e in (10, 20, 30, 40):
        (tmp_path / "checkpoints" / f"encoder_epoch{e:04d}.safetensors").touch()
    assert [e for e, _ in snapshots(tmp_path)] == [10, 20, 30, 40]
    assert [e for e, _ in snapshots(tmp_path, every=20)] == [20, 40]
    assert [e for e, _ in snapshots(tmp_path, at=[40, 10, 30])] == [10, 30, 40]
    with pytest.raises(VinyError, match=r"no encoder snapshot for epoch\(s\) \[50\]"):
        snapshots(tmp_path, at=[10, 50])
    with pytest.raises(VinyError, match=r"run folder .*nowhere does not exist"):
        snapshots(tmp_path / "nowhere")


def test_selection_across_runs_agrees_with_each_runs_selection_table():
    """selection_across_runs on the committed 2.4k curve: the picks and regrets of its selection.csv."""
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "results" / "along_pretraining" / "simmim_2368"
    table = selection_across_runs({"simmim_2368": read_along_pretraining(folder)})
    ref = pd.read_csv(folder / "selection.csv").set_index(["score", "train_size"])
    assert list(table["train_size"]) == [100, 250] and set(table["snapshots"]) == {8}
    for row in table.to_dict("records"):
        for s in ("dse", "effective_rank", "last"):
            assert row[f"{s}_epoch"] == ref.loc[(s, row["train_size"]), "picks_epoch"]
            assert row[f"{s}_regret"] == pytest.approx(ref.loc[(s, row["train_size"]), "regret"])
    assert "| simmim_2368 | 100 | 8 | 90 | 70 (-0.99) | 150 (-0.12) |" in across_runs_markdown(table)


def test_verdict_counts_by_hand():
    table = pd.DataFrame({"verdict: DSE picks better": ["contradicted", "inconclusive", "contradicted"]})
    assert verdict_counts(table) == ["DSE picks better: contradicted in 2, inconclusive in 1 of 3 (run, size) pairs"]


def test_along_tables_prints_the_committed_4_7k_curve_readme_rows(capsys, monkeypatch):
    """benchmarks/along_tables.py on the committed 4.7k curve gives the rows its README shows."""
    import importlib.util
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("along_tables", root / "benchmarks" / "along_tables.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    folder = root / "results" / "along_pretraining" / "simmim_4734"
    monkeypatch.setattr(sys, "argv", ["along_tables.py", str(folder)])
    mod.main()
    out = capsys.readouterr().out
    readme = (folder / "README.md").read_text()
    for row in ("| random init | 39.62 ± 0.64 | 40.59 ± 1.02 |", "| 100 | 43.18 ± 0.60 | 45.49 ± 0.78 | 0.722 | 0.224 | 51.7 | 0.762 |"):
        assert row in out and row in readme
    assert "- epoch 100: +3.56 [+1.80, +5.32] (n=3)" in out and "+3.56 [+1.80, +5.32]" in readme
