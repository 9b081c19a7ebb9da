"""The numbers of the README and the results' READMEs are computed from the results files
(viny.docs): a committed number that no longer matches its file fails here, and the README
stays a front door."""

import re
import subprocess
from pathlib import Path

import pytest

from viny import docs

ROOT = docs.ROOT


@pytest.mark.parametrize("path", docs.marked_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_committed_numbers_match_their_results(path):
    text = path.read_text()
    assert text == docs.render(text), f"{path.relative_to(ROOT)} is stale: run `python -m viny.docs` and commit the result"


def test_results_index_is_generated():
    assert (ROOT / "results" / "README.md").read_text() == docs.results_index(), "results/README.md is stale: run `python -m viny.docs`"


@pytest.mark.parametrize("folder", ["staged"])
def test_published_readme_matches_its_results(folder):
    """results/staged/README.md is written by `viny demo --publish`: what it computed must
    still come out of its results.csv and cells."""
    text = (ROOT / "results" / folder / "README.md").read_text()
    for block in docs.published_blocks(folder):
        assert block in text, f"results/{folder}/README.md no longer matches its results: {block[:200]}"


def test_readme_is_a_front_door():
    text = (ROOT / "README.md").read_text()
    assert docs.word_count(text) <= 1500
    first_screen = "\n".join(text.splitlines()[:45])
    for what in ("make demo", "make test", "report.html"):
        assert what in first_screen


def test_every_readme_file_has_a_number_computed():
    """README.md and each results README has marks, so none is back to typed numbers."""
    for path in [ROOT / "README.md", *sorted((ROOT / "results").glob("*/README.md"))]:
        if path.parent.name == "staged":
            continue  # written whole by `viny demo --publish` (test_published_readme_matches_its_results)
        assert docs.MARK.search(path.read_text()), f"{path.relative_to(ROOT)} has no computed number"


def test_unknown_value_is_an_error():
    with pytest.raises(KeyError, match="unknown viny value"):
        docs.render("<!--viny:no_such_value-->1<!--/viny-->")


def test_render_fills_a_span_and_a_block():
    out = docs.render("gain <!--viny:gain staged 9469 100-->old<!--/viny--> and\n<!--viny:presets_table-->\nold\n<!--/viny-->\n")
    assert re.search(r"gain <!--viny:gain staged 9469 100-->[+-]\d+\.\d\d \[[+-]\d+\.\d\d, [+-]\d+\.\d\d\]<!--/viny--> and", out)
    assert "<!--viny:presets_table-->\n| phase |" in out and out.endswith("|\n<!--/viny-->\n")


def test_presets_table_follows_the_code(monkeypatch):
    from viny import config

    presets = {**config.PRESETS, "reference": {**config.PRESETS["reference"], "finetune": {"normalize": False, "resize": "nearest", "lr": 0.5}}}
    monkeypatch.setattr(config, "PRESETS", presets)
    assert "`--lr 0.5`" in docs.render("<!--viny:presets_table--><!--/viny-->")


def test_no_file_outside_docs_cites_the_private_notes():
    """The project's private notes (REFERENCE, NOTES) are not in the repository: what users need is in docs/."""
    names = ("REFERENCE" + ".md", "NOTES" + ".md")
    tracked = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.split()
    bad = []
    for rel in tracked:
        path = ROOT / rel
        if rel.startswith("docs/") or path.suffix not in {".py", ".md", ".yaml", ".toml", ".sh", ".txt", ".cfg", ""} or not path.is_file():
            continue
        text = path.read_text(errors="ignore")
        bad += [f"{rel}: {n}" for n in names if n in text]
    assert not bad, bad


def test_docs_links_resolve():
    """Relative links of the README and the results index point at files that exist
    (docs/cluster.md may still be being written by then)."""
    for path in (ROOT / "README.md", ROOT / "results" / "README.md"):
        for target in re.findall(r"\]\(([^)#]+)\)", path.read_text()):
            if "://" in target or target.endswith("cluster.md"):
                continue
            assert (path.parent / target).exists(), f"{path.relative_to(ROOT)} links to missing {target}"


def test_figure_exists():
    assert docs.FIGURE.is_file() and docs.FIGURE.stat().st_size > 10_000
    assert Path("docs/figures/staged_miou_vs_size.png").name in (ROOT / "README.md").read_text()


def test_yardstick_sentence_follows_the_ratio():
    """`viny pretrain` and the model cards say "below 1" only when the ratio is below 1."""
    from viny.pretrained import yardstick_text

    m = {"yardstick_images": 256, "yardstick_l1": 0.95, "yardstick_mean_colour_l1": 0.8, "yardstick_dataset_mean_l1": 0.98}
    assert "Not below 1" in yardstick_text({**m, "yardstick_ratio": 1.19})
    assert "Below 1: it learned more" in yardstick_text({**m, "yardstick_ratio": 0.66})
