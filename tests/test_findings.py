"""The report's verdicts on the paper's claims, from hand-made result tables."""

import itertools
import math

import pandas as pd
import pytest

from viny.findings import findings
from viny.stats import mean_interval, paired_difference, t_quantile_975


def test_t_interval_by_hand():
    iv = mean_interval([1.0, 2.0, 3.0])  # mean 2, sd 1, half-width t(0.975, 2) / sqrt(3) = 4.303 / 1.7321 = 2.4843
    assert iv["mean"] == 2 and iv["std"] == 1 and iv["n"] == 3
    assert iv["lo"] == pytest.approx(2 - 2.4843, abs=1e-4) and iv["hi"] == pytest.approx(2 + 2.4843, abs=1e-4)
    assert math.isnan(mean_interval([5.0])["lo"]) and t_quantile_975(1) == 12.706
    d = paired_difference(pd.Series([3.0, 5.0, 7.0], index=[0, 1, 2]), pd.Series([1.0, 2.0, 3.0, 9.0], index=[0, 1, 2, 3]))
    assert d["n"] == 3 and d["mean"] == 3  # only seeds present in both


def _table(gain_per_doubling_ft=(10.0, 5.0), pretrain_gain=(6.0, 4.0, 3.0), cls_drop=5.0, sizes=(100, 200, 400), pres=(0, 1000, 2000, 4000)):
    """mIoU (in [0, 1]) = 30 + fine-tuning gains + pre-training gain (halved at each larger size) - CLS drop, plus seed offsets."""
    rows = []
    for p, inter, n, seed in itertools.product(pres, ["none", "cls_intel"], sizes, [0, 1, 2]):
        k = sizes.index(n)
        v = 30 + sum(gain_per_doubling_ft[:k])
        if p:
            v += sum(pretrain_gain[: pres.index(p)]) / 2**k
        if inter == "cls_intel":
            v -= cls_drop + seed  # drops of 5, 6, 7 points
        v += 0.1 * seed * (k + 1)  # seeds differ a little, differently per size
        rows.append({"study": "finetune", "status": "done", "pretrain_images": p, "intermediate": inter, "train_size": n, "seed": seed,
                     "miou": v / 100})
    return pd.DataFrame(rows)


def _verdicts(table, grid_dir=None):
    f = findings(table, grid_dir)
    return dict(zip(f["claim"], f["verdict"])), dict(zip(f["claim"], f["evidence"]))


def test_paper_like_results_support_the_claims():
    v, ev = _verdicts(_table())
    assert v["pretraining_small_data"] == "supported"
    assert v["diminishing_finetune"] == "supported" and v["diminishing_pretrain"] == "supported"
    assert v["cls_hurts"] == "supported"
    # drops of 5, 6, 7 points per seed in every cell: mean -6, sd 1, t interval -6 -+ 2.48
    assert "-6.00 [-8.48, -3.52] (n=3)" in ev["cls_hurts"]
    assert v["spatial_probe"] == "inconclusive"  # no geometry study in the table


def test_opposite_results_contradict_them():
    v, _ = _verdicts(_table(pretrain_gain=(-6.0, -8.0, -12.0), cls_drop=-8.0))
    assert v["pretraining_small_data"] == "contradicted" and v["cls_hurts"] == "contradicted"
    v, _ = _verdicts(_table(gain_per_doubling_ft=(5.0, 10.0), pretrain_gain=(0.0, 0.0, 0.0)))
    assert v["diminishing_finetune"] == "contradicted"  # the second doubling gains more
    assert v["pretraining_small_data"] == "inconclusive"  # no gain at all


def test_too_small_grids_are_inconclusive_and_say_why():
    v, ev = _verdicts(_table(sizes=(100, 400), pres=(0, 1000)))
    assert v["diminishing_finetune"] == "inconclusive" and "needs three or more levels" in ev["diminishing_finetune"]
    assert v["diminishing_pretrain"] == "inconclusive"


def test_a_grid_still_running_is_judged_on_the_cells_it_has():
    """Random init measured at three sizes, the largest encoder at two so far (the staged grid
    part-way): the fine-tuning-size claim is inconclusive for the largest encoder's two levels, not a crash."""
    t = _table()
    t = t[~((t["pretrain_images"] == 4000) & (t["train_size"] == 400))]
    v, ev = _verdicts(t)
    assert v["diminishing_finetune"] == "inconclusive" and "fine-tuning sizes [100, 200] (pre-training 4,000)" in ev["diminishing_finetune"]
    assert "gain at 100 minus gain at 200" in ev["pretraining_small_data"] and "nan" not in ev["pretraining_small_data"]
    t = _table()
    t = t[~((t["pretrain_images"] == 1000) & (t["train_size"] == 100))]  # 1000 lacks the smallest fine-tuning size
    v, ev = _verdicts(t)
    assert "pre-training sizes [2000, 4000] (fine-tuning 100)" in ev["diminishing_pretrain"]


def test_spatial_probe_uses_the_label_free_intel_task_when_the_pets_one_is_absent(tmp_path):
    cells = []
    for seed in (0, 1, 2):
        d = tmp_path / f"geo{seed}"
        d.mkdir()
        pd.DataFrame([{"encoder": "pretrained (SimMIM)", "layer": 12, "probe_accuracy": 0.70 + 0.01 * seed},
                      {"encoder": "spatial intermediate (Intel, label-free)", "layer": 12, "probe_accuracy": 0.75 + 0.02 * seed}]
                     ).to_csv(d / "geometry.csv", index=False)
        cells.append({"study": "geometry", "status": "done", "seed": seed, "output_dir": str(d)})
    v, ev = _verdicts(pd.concat([_table(), pd.DataFrame(cells)], ignore_index=True), tmp_path)
    # differences 5, 6, 7 points: mean 6, interval 6 -+ 2.48
    assert v["spatial_probe"] == "supported"
    assert "spatial intermediate (Intel, label-free) minus pre-trained: +6.00 [+3.52, +8.48] (n=3)" in ev["spatial_probe"]


def test_a_grid_without_the_intermediate_axis_is_judged_not_a_key_error():
    from viny.results import finetune_rows

    t = _table()
    t = t[t["intermediate"] == "none"].drop(columns=["intermediate"])
    ft = finetune_rows(t)
    assert set(ft["intermediate"]) == {"none"} and len(ft) == len(t)
    f = findings(t).set_index("claim")
    assert f.loc["diminishing_finetune", "verdict"] == "supported"
    assert f.loc["cls_hurts", "verdict"] == "inconclusive"


def test_results_without_finished_finetune_cells_are_a_clear_error(tmp_path):
    """06_results on a grid whose fine-tuning cells are not done: the error names the file, not KeyError 'miou'."""
    from viny.errors import VinyError
    from viny.results import finetune_rows

    t = _table()
    t["status"] = "failed"
    with pytest.raises(VinyError, match=r"results\.parquet has no finished finetune cells"):
        finetune_rows(t, tmp_path / "results.parquet")
    assert finetune_rows(t).empty  # without a source (report, findings): an empty table, as before


def test_comparison_table_sets_ours_beside_the_papers_cell_at_the_same_size():
    from viny.paper import comparison_table

    t = _table(sizes=(100, 250, 400), pres=(0, 2368))
    t["paper_miou"] = t["miou"] + 0.01
    c = comparison_table(t).set_index(["pretrain_images", "intermediate", "train_size"])
    row = c.loc[(0, "none", 250)]
    assert row["paper mIoU per-image"] == "43.7 ± 1.0" and row["paper cell"] == "Table 1, 0 pre-training images"
    assert c.loc[(2368, "cls_intel", 250), "paper cell"] == "Table A3, 45,000 pre-training images"  # the paper's smallest size
    assert c.loc[(0, "none", 100), "paper cell"] == "no cell at this size"
    # per-image and dataset protocols side by side: here per-image = dataset + 1 point
    a, b = (float(row[k].split(" ± ")[0]) for k in ("ours mIoU per-image", "ours mIoU dataset"))
    assert a == pytest.approx(b + 1.0, abs=0.05)


def test_pooled_cls_verdict_says_how_far_the_cells_disagree():
    t = _table()
    # one cell where CLS helps clearly: +5 points on every seed at (1000, 400)
    sel = (t["pretrain_images"] == 1000) & (t["train_size"] == 400) & (t["intermediate"] == "cls_intel")
    t.loc[sel, "miou"] += 0.11
    t["intermediate_epochs"] = 8
    ev = findings(t).set_index("claim").loc["cls_hurts", "evidence"]
    assert "the CLS stage (8 epochs)" in ev and "11 significantly lower, 1 significantly higher" in ev


def test_cls_cells_with_fewer_seeds_so_far_are_left_out():
    """A grid still running: one CLS cell has one seed of three. Neither the pooled drop nor
    the "largest where pre-training helps" comparison may use it (that gave "n=1, no interval")."""
    t = _table()
    partial = (t["pretrain_images"] == 1000) & (t["train_size"] == 400) & (t["intermediate"] == "cls_intel") & (t["seed"] > 0)
    t.loc[(t["pretrain_images"] == 1000) & (t["train_size"] == 400) & (t["intermediate"] == "cls_intel") & (t["seed"] == 0), "miou"] += 0.5
    f = findings(t[~partial]).set_index("claim")
    assert "averaged over 11 cells: -6.00 [-8.48, -3.52] (n=3)" in f.loc["cls_hurts", "evidence"]
    assert "1 cell(s) with fewer than 3 seeds so far left out" in f.loc["cls_hurts", "evidence"]
    assert "(1000, 400)" not in f.loc["cls_hurts_where_pretraining_helps", "evidence"]
    assert "no interval" not in f.loc["cls_hurts_where_pretraining_helps", "evidence"]


def test_position_prior_pairs_random_init_with_its_control_by_seed():
    """Random init (N(0,1) positions) minus the timm-init control, per size, by seed: at 100
    images the differences are 2 and 4 points (mean 3, t interval 3 ± 12.706 * 1.414/sqrt(2))."""
    from viny.findings import position_prior

    rows = [{"study": "finetune", "status": "done", "pretrain_images": 0, "intermediate": "none", "train_size": 100, "seed": s, "miou": m}
            for s, m in ((0, 0.40), (1, 0.42))]
    rows += [{"study": "control", "status": "done", "pretrain_images": 0, "intermediate": "none", "train_size": 100, "seed": s, "miou": m}
             for s, m in ((0, 0.38), (1, 0.38))]
    prior = position_prior(pd.DataFrame(rows))
    assert len(prior) == 1 and prior.loc[0, "train_size"] == 100
    assert prior.loc[0, "mean"] == pytest.approx(3.0)
    half = 12.706 * (2 ** 0.5) / 2 ** 0.5  # t(0.975, 1) x std of [2, 4] / sqrt(2)
    assert prior.loc[0, "hi"] - prior.loc[0, "mean"] == pytest.approx(half, rel=1e-3)
    assert prior.loc[0, "verdict"] == "inconclusive"
    assert position_prior(pd.DataFrame(rows[:2])).empty  # no control cells: nothing to say


def test_pretraining_gain_pairs_each_encoder_with_random_init_by_seed():
    """Encoder minus random init, per size, by seed: at 100 images the differences are 5 and 7
    points (mean 6, interval 6 ± 12.706 x 1.414 / sqrt(2) = 6 ± 12.706); at 400 both are 1 point
    (std 0: interval [1, 1], supported). Intermediate-stage cells and the control are left out."""
    from viny.findings import pretraining_gain

    def row(study, p, inter, n, seed, m):
        return {"study": study, "status": "done", "pretrain_images": p, "intermediate": inter, "train_size": n, "seed": seed, "miou": m}

    rows = [row("finetune", 0, "none", 100, 0, 0.40), row("finetune", 0, "none", 100, 1, 0.41),
            row("finetune", 9469, "none", 100, 0, 0.45), row("finetune", 9469, "none", 100, 1, 0.48),
            row("finetune", 0, "none", 400, 0, 0.50), row("finetune", 0, "none", 400, 1, 0.52),
            row("finetune", 9469, "none", 400, 0, 0.51), row("finetune", 9469, "none", 400, 1, 0.53),
            row("finetune", 9469, "cls_intel", 100, 0, 0.10), row("control", 0, "none", 100, 0, 0.90)]
    gain = pretraining_gain(pd.DataFrame(rows)).set_index("train_size")
    assert list(gain.index) == [100, 400] and set(gain["pretrain_images"]) == {9469}
    assert gain.loc[100, "mean"] == pytest.approx(6.0) and gain.loc[100, "hi"] - 6.0 == pytest.approx(12.706, rel=1e-3)
    assert gain.loc[100, "verdict"] == "inconclusive"
    assert gain.loc[400, "mean"] == pytest.approx(1.0) and gain.loc[400, "lo"] == pytest.approx(1.0)
    assert gain.loc[400, "verdict"] == "supported"
    assert pretraining_gain(pd.DataFrame(rows[2:4])).empty  # no random init: nothing to compare with
