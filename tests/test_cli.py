import json

import numpy as np
import pytest
from PIL import Image

from viny.cli import main

TINY = ["--model", "viny_test", "--epochs", "1", "--quiet", "--batch-size", "16"]


def run(capsys, *args):
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(err, *needles):
    lines = [line for line in err.strip().splitlines()]
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], lines[0]


def test_finetune_and_evaluate_print_json(capsys, tmp_path):
    rc, out, _ = run(capsys, "finetune", *TINY, "--train-size", "16", "--test-size", "16", "--out", str(tmp_path / "ft"))
    assert rc == 0
    res = json.loads(out)
    rc, out, _ = run(capsys, "evaluate", str(tmp_path / "ft"), "--quiet")
    assert rc == 0 and json.loads(out)["miou"] == pytest.approx(res["miou"])


def test_bad_inputs_are_one_line_errors(capsys, tmp_path, pets_root):
    rc, _, err = run(capsys, "finetune", *TINY, "--data", str(tmp_path / "missing"))
    assert rc == 2
    one_line_error(err, "does not exist", "expected oxford-iiit-pet/images")
    rc, _, err = run(capsys, "finetune", *TINY, "--preset", "nope")
    one_line_error(err, "unknown preset 'nope'")
    rc, _, err = run(capsys, "finetune", *TINY, "--train-size", "600", "--test-size", "100")
    one_line_error(err, "600", "more than the 598 images")
    tri = pets_root / "oxford-iiit-pet" / "annotations" / "trimaps" / "Abyssinian_3.png"
    good_trimap = tri.read_bytes()
    Image.fromarray(np.full((40, 46), 9, np.uint8)).save(tri)
    rc, _, err = run(capsys, "finetune", *TINY, "--data", str(pets_root), "--train-size", "4", "--test-size", "4", "--cache-dir", str(tmp_path / "c1"))
    one_line_error(err, "Abyssinian_3.png", "values [9]")
    tri.write_bytes(good_trimap)
    bad = pets_root / "oxford-iiit-pet" / "images" / "beagle_2.jpg"
    bad.write_bytes(b"\xff\xd8garbage")
    rc, _, err = run(capsys, "finetune", *TINY, "--data", str(pets_root), "--train-size", "4", "--test-size", "4", "--cache-dir", str(tmp_path / "c"))
    one_line_error(err, "beagle_2.jpg", "--skip-bad-images")
    rc, out, err = run(capsys, "finetune", *TINY, "--data", str(pets_root), "--train-size", "4", "--test-size", "4", "--cache-dir", str(tmp_path / "c"),
                       "--skip-bad-images", "--out", str(tmp_path / "skip"))
    assert rc == 0, err
    config = json.loads((tmp_path / "skip" / "config.json").read_text())
    assert config["runtime"]["pool_images"] == 12 and config["runtime"]["skipped_bad_images"] == 1
    rc, _, err = run(capsys, "evaluate", str(tmp_path / "nothing"))
    one_line_error(err, "not found")
    rc, _, err = run(capsys, "intermediate", *TINY, "--data", str(pets_root))
    one_line_error(err, "seg_train/seg_train")
    rc, _, err = run(capsys, "finetune", *TINY, "--resume")
    one_line_error(err, "--resume needs --out")


def test_unknown_option_is_rejected_by_argparse(capsys):
    with pytest.raises(SystemExit) as e:
        main(["finetune", "--colour", "red"])
    assert e.value.code == 2 and "unrecognized arguments: --colour" in capsys.readouterr().err


def test_geometry_command_writes_tables(capsys, tmp_path):
    rc, out, err = run(capsys, "geometry", "a=random:viny_test", "b=random:viny_test", "--images", "40", "--dse-images", "16",
                       "--layers", "all", "--cka", "a", "b", "--out", str(tmp_path / "g"), "--quiet")
    assert rc == 0, err
    import pandas as pd

    geo = pd.read_csv(tmp_path / "g" / "geometry.csv")
    assert len(geo) == 4 and set(geo["layer"]) == {1, 2}
    assert pd.read_csv(tmp_path / "g" / "cka.csv")["cka"].round(6).eq(1.0).all()
    rc, _, err = run(capsys, "geometry", "a=random:viny_test", "--cka", "a", "zz", "--images", "40", "--out", str(tmp_path / "g2"))
    one_line_error(err, "--cka names unknown encoder(s) ['zz']")
    rc, _, err = run(capsys, "geometry", "oops")
    one_line_error(err, "expected NAME=PATH")


@pytest.mark.parametrize("argv, how", [(["grid", "params/demo.yaml"], "rerun the same command to continue: finished cells are skipped"),
                                       (["finetune", "--epochs", "1"], "rerun with --resume"),
                                       (["report", "runs/x"], "rerun the same command")])
def test_an_interrupt_says_how_to_continue(capsys, monkeypatch, argv, how):
    import viny.cli

    def interrupted(args):
        raise KeyboardInterrupt

    for name in ("_run_grid", "_run_phase", "_run_report"):
        monkeypatch.setattr(viny.cli, name, interrupted)
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert how in err and (argv[0] in ("finetune",) or "--resume" not in err)  # grid and report have no --resume
