"""``viny report``: one self-contained HTML file from a grid's results.

Everything is inlined (the Vega/Vega-Lite/vega-embed bundle from vl-convert, the chart
specs with their data, the images as data URIs, the styles), so the page renders from a
file with the network off. Sections: what it was made from (data, scale, seeds, commit),
the findings (computed by :mod:`viny.findings`), Figs. 3 and 4, our tables beside the
paper's Tables 1/A2/A3 and 2, Fig. 5, the Fig. 6 explorer (click a patch, no kernel),
SimMIM reconstructions (Fig. 2) and segmentation examples (Figs. A1/A2), the list of
executed notebooks, and a provenance appendix listing every cell. Under each figure and
table a line names the notebook and cells that made it, their commit, processor and
precision (:mod:`viny.provenance`; "not recorded" for cells published before that record).
"""

from __future__ import annotations

import base64
import html
import json
import subprocess
import time
from pathlib import Path

import altair as alt
import pandas as pd

from viny.figures import cosine_chart, heatmap_explorer, intermediate_delta, miou_vs_size, pretraining_curve, selection_chart
from viny.files import atomic_write_text, writable_output
from viny.findings import findings, format_interval, indomain_vs_imagenette, joint_vs_sequential, position_prior, pretraining_gain
from viny.grid import CELL_NOTEBOOK, load_grid
from viny.paper import comparison_table, diagnostics_table
from viny.provenance import NOT_RECORDED
from viny.results import control_rows, finetune_rows, read_results, study_rows
from viny.selection import across_runs_display, selection_across_runs, selection_verdicts, verdict_counts
from viny.study import FILES, GEOMETRY, INDOMAIN, JOINT, SIMMIM

__all__ = ["build_report"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}td,th{border:1px solid #ddd;padding:3px 7px;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
.banner{background:#fff4d6;border:1px solid #e0c060;padding:.6em 1em;border-radius:4px}
.meta{color:#555;font-size:.9em}.supported{color:#11772d;font-weight:600}.contradicted{color:#b00020;font-weight:600}
.inconclusive{color:#666;font-weight:600}.chart{margin:1em 0}img{max-width:100%;image-rendering:pixelated}
.note{color:#555;font-size:.9em}table.text td{text-align:left}
.madeby{color:#777;font-size:.8em;margin-top:.2em}
"""


def _git_commit(path: Path) -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=path, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=path, capture_output=True, text=True, timeout=10)
        if rev.returncode:
            return "unknown (not a git checkout)"
        return rev.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _img(path: Path, alt_text: str) -> str:
    if not path.is_file():
        return f'<p class="note">({html.escape(alt_text)}: not produced by this grid)</p>'
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt_text)}" src="data:image/png;base64,{data}">'


def _table(df: pd.DataFrame, floatfmt: str = "{:.2f}") -> str:
    df = df.copy()
    for c in df.columns:  # whole-number columns (sizes, seeds) print as integers
        if pd.api.types.is_float_dtype(df[c]) and df[c].dropna().apply(float.is_integer).all() and c.endswith(("images", "size", "seeds")):
            df[c] = df[c].astype("Int64")
    return df.to_html(index=False, na_rep="", float_format=lambda v: floatfmt.format(v), border=0, escape=True)


def _recorded(rows: pd.DataFrame, key: str) -> pd.Series:
    """The provenance field ``key`` of each cell (:mod:`viny.provenance`, in the status the
    grid wrote), "not recorded" where the cell has none (cells published before it existed)."""
    col = f"provenance.{key}"
    values = rows[col] if col in rows else pd.Series([None] * len(rows), index=rows.index, dtype=object)
    return values.map(lambda v: NOT_RECORDED if v is None or (isinstance(v, float) and pd.isna(v)) or v == "" else v)


def _commit_text(commit, dirty) -> str:
    if commit == NOT_RECORDED:
        return NOT_RECORDED
    return str(commit)[:7] + (" (uncommitted changes)" if str(dirty).lower() == "true" else "")


def _machine_text(device, cpu, gpu) -> str:
    """The cell's processor: the GPU's model on CUDA, else the CPU's."""
    if str(device).startswith("cuda"):
        return str(gpu) if gpu != NOT_RECORDED else "a CUDA GPU"
    return str(cpu)


def _tally(values: pd.Series) -> str:
    """One value, or each value with its number of cells ("not recorded" last)."""
    counts = values.astype(str).value_counts(sort=True)
    if len(counts) == 1:
        return counts.index[0]
    counts = pd.concat([counts.drop(NOT_RECORDED, errors="ignore"), counts.filter([NOT_RECORDED])])
    return ", ".join(f"{v} in {n} cell{'s' if n > 1 else ''}" for v, n in counts.items())


def _notebook_name(path) -> str:
    return f"{Path(str(path)).parent.name}/{Path(str(path)).name}" if isinstance(path, str) and path else NOT_RECORDED


def _made_by(rows: pd.DataFrame | pd.Series) -> str:
    """The caption under a figure or table: the notebook and cells that made it, at which
    commit, on which processor and at which precision."""
    rows = rows.to_frame().T if isinstance(rows, pd.Series) else rows
    if not len(rows):
        return ""
    notebooks = rows["notebook"].map(_notebook_name) if "notebook" in rows else _recorded(rows, "notebook")
    cells = []
    for study, g in rows.groupby("study", sort=False) if "study" in rows else []:
        ids = list(g["cell"].astype(str)) if "cell" in g else []
        cells.append(", ".join(f"{study}/{i}" for i in ids) if 0 < len(ids) <= 3 else f"{len(g)} {study} cells")
    commits = pd.Series([_commit_text(c, d) for c, d in zip(_recorded(rows, "commit"), _recorded(rows, "dirty"))], index=rows.index)
    machines = pd.Series([_machine_text(*v) for v in zip(_recorded(rows, "device"), _recorded(rows, "cpu_model"), _recorded(rows, "gpu_model"))],
                         index=rows.index)
    names = list(dict.fromkeys(notebooks.astype(str)))
    text = f"made by {' and '.join(names)}" + (f" from {' and '.join(cells)}" if cells else "")
    if (commits == NOT_RECORDED).all() and (machines == NOT_RECORDED).all():
        text += f"; commit, processor and precision {NOT_RECORDED}"
    else:
        text += f"; commit {_tally(commits)}; on {_tally(machines)}; precision {_tally(_recorded(rows, 'precision'))}"
    return f"<p class='madeby'>{html.escape(text)}</p>"


def _provenance_section(table: pd.DataFrame) -> list[str]:
    """The appendix: every cell's provenance (commit, configuration hash, versions, processor,
    precision, threads, wall time); "not recorded" for cells published without it."""
    if not len(table):
        return []
    versions = [NOT_RECORDED if all(v == NOT_RECORDED for v in vs) else ", ".join(f"{n} {v}" for n, v in zip(("python", "torch", "timm", "viny"), vs))
                for vs in zip(*(_recorded(table, k) for k in ("python", "torch", "timm", "viny")))]
    seconds = table["seconds"] if "seconds" in table else pd.Series([None] * len(table), index=table.index)
    shown = pd.DataFrame({
        "study": table["study"].astype(str), "cell": table["cell"].astype(str), "status": table["status"].astype(str),
        "notebook": table["notebook"].map(_notebook_name) if "notebook" in table else _recorded(table, "notebook"),
        "commit": [_commit_text(c, d) for c, d in zip(_recorded(table, "commit"), _recorded(table, "dirty"))],
        "config sha256": _recorded(table, "config_sha256").map(lambda v: v if v == NOT_RECORDED else str(v)[:12]),
        "device": _recorded(table, "device").astype(str),
        "CPU / GPU": [_machine_text(*v) for v in zip(_recorded(table, "device"), _recorded(table, "cpu_model"), _recorded(table, "gpu_model"))],
        "precision": _recorded(table, "precision").astype(str),
        "threads": _recorded(table, "threads").map(lambda v: v if v == NOT_RECORDED else str(int(float(v)))),
        "versions": versions,
        "wall time (s)": seconds.map(lambda v: "" if v is None or pd.isna(v) else f"{float(v):.0f}"),
    })
    recorded = int((_recorded(table, "commit") != NOT_RECORDED).sum())
    return ["<h2>Provenance</h2><p class='note'>Every cell of the grid: the commit of the code that ran it (and whether the tree "
            "had uncommitted changes), a hash of its full configuration (notebook and parameters), the device with its CPU or GPU "
            "model, the precision, the threads, the versions of python, torch, timm and viny, and the cell's wall time. "
            f"{recorded} of {len(table)} cells recorded it; <i>{NOT_RECORDED}</i>: cells run before the grid kept this record.</p>"
            + shown.to_html(index=False, na_rep="", border=0, escape=True, classes="text")]


def _scale_description(ft: pd.DataFrame, table: pd.DataFrame, data_label: str | None = None) -> tuple[str, bool]:
    """A sentence on data, scale and seeds, and whether it is below the paper's scale.
    ``data_label`` names the data root instead of its path on this machine."""
    def vals(col, df=ft):
        out = sorted({v for v in df[col].dropna().unique()}) if col in df else []
        return [int(v) if isinstance(v, float) and v.is_integer() else v for v in out]

    data_roots = [v for v in vals("data_root", table) if v] if "data_root" in table else []
    data = (data_label or ", ".join(data_roots)) if data_roots else "the data sample shipped in the repository (598 Pets, 360+120 Intel, 1,000 Imagenette images)"
    parts = [f"data: {data}"]
    if len(ft):
        parts.append(f"model: {', '.join(map(str, vals('model'))) or 'viny'}")
        parts.append(f"pre-training images: {', '.join(f'{int(v):,}' for v in vals('pretrain_images'))}")
        parts.append(f"fine-tuning images: {', '.join(str(int(v)) for v in vals('train_size'))} (held-out test: {', '.join(str(int(v)) for v in vals('test_size'))})")
        pre = ", ".join(str(v) if v else "as shipped (Encoders table)" for v in vals("pretrain_epochs"))
        parts.append(f"epochs: pre-training {pre}, intermediate "
                     f"{', '.join(map(str, vals('intermediate_epochs')))}, fine-tuning {', '.join(map(str, vals('epochs')))}")
        parts.append(f"seeds: {len(vals('seed'))}")
    small = (not data_roots) or (len(ft) and (max(vals("pretrain_images") or [0]) < 45000 or max(vals("epochs") or [0]) < 100))
    return "; ".join(parts), bool(small)


def _header_section(grid: Path, table: pd.DataFrame, ft: pd.DataFrame, data_label: str | None) -> list[str]:
    """Title, scale sentence, the not-the-paper's-scale banner and cells not done."""
    sections: list[str] = []
    scale, small = _scale_description(ft, table, data_label)
    failed = table[table["status"] != "done"]
    head = [f"<h1>ViNy study report: {html.escape(grid.name)}</h1>",
            f'<p class="meta">Made {time.strftime("%Y-%m-%d %H:%M")} from commit {html.escape(_git_commit(Path(__file__).parent))} '
            f"by <code>viny report</code>. {html.escape(scale)}.</p>"]
    if small:
        head.append('<p class="banner"><b>Not the paper\'s scale.</b> This report comes from a reduced grid (fewer images, '
                    "epochs or a smaller model than the paper's 45k-200k ImageNet images, 100 epochs and 3 seeds). "
                    "Its numbers test the pipeline and the direction of effects, not the paper's effect sizes.</p>")
    if len(failed):
        per_study = failed.groupby(["study", "status"], sort=False).size()
        head.append(f'<div class="banner"><p>{len(failed)} of {len(table)} cells are not done ('
                    + ", ".join(f"{html.escape(str(st))}: {n} {html.escape(str(status))}" for (st, status), n in per_study.items())
                    + "); the findings and figures use the finished ones.</p><details><summary>which cells</summary><ul>"
                    + "".join(f"<li>{html.escape(r.study)}/{html.escape(r.cell)} ({html.escape(str(r.status))})</li>" for r in failed.itertuples())
                    + "</ul></details></div>")
    sections += head
    return sections


def _findings_section(grid: Path, table: pd.DataFrame) -> list[str]:
    """The computed verdicts on the paper's claims."""
    sections: list[str] = []

    verdicts = findings(table, grid)
    rows = "".join(f"<tr><td>{html.escape(r.statement)}</td><td class='{r.verdict}'>{r.verdict}</td><td>{html.escape(r.evidence)}</td></tr>"
                   for r in verdicts.itertuples())
    sections.append("<h2>Findings</h2><p class='note'>Each verdict is computed from this grid's results: 95 % t intervals over seeds of "
                    "paired differences; <i>supported</i> / <i>contradicted</i> when the interval excludes zero, "
                    f"<i>inconclusive</i> otherwise.</p><table class='text'><tr><th>paper's claim</th><th>verdict</th><th>evidence (mIoU points)</th></tr>{rows}</table>"
                    + _made_by(pd.concat([finetune_rows(table), control_rows(table), study_rows(table, GEOMETRY)])))
    return sections


def _encoders_section(ft: pd.DataFrame) -> list[str]:
    """Where each fine-tuning cell's encoder came from, with its reconstruction ratio."""
    sections: list[str] = []
    if len(ft) and "encoder_source" in ft:
        cols = ["pretrain_images", "intermediate", "encoder_source"] + (["pretraining_yardstick_ratio"] if "pretraining_yardstick_ratio" in ft else [])
        enc = (ft[cols].drop_duplicates(subset=cols[:3]).sort_values(["pretrain_images", "intermediate"])
               .rename(columns={"encoder_source": "where the encoder came from",
                                "pretraining_yardstick_ratio": "held-out reconstruction / mean-colour predictor"}))
        sections.append("<h2>Encoders</h2><p class='note'>The encoder each fine-tuning cell started from. <i>shipped</i>: "
                        "viny/pretrained, whose model cards give the command, data, epochs and loss curve; <i>trained here</i>: "
                        "a run of this grid's store. The reconstruction ratio is the pre-training's masked-patch L1 on held-out "
                        "Intel images over that of filling each masked patch with the image's mean visible colour: below 1, the "
                        f"encoder learned more than colour means.</p>{_table(enc, '{:.3f}')}" + _made_by(ft))
    return sections


def _gain_note(table: pd.DataFrame) -> str:
    """What each pre-trained encoder gives over random init at each fine-tuning size, under Fig. 3."""
    gain = pretraining_gain(table)
    if not len(gain):
        return ""
    rows = "".join(f"<tr><td>{r.pretrain_images:,}</td><td>{r.train_size}</td><td>{html.escape(format_interval(r._asdict()))}</td>"
                   f"<td class='{r.verdict}'>{'helps' if r.verdict == 'supported' else 'hurts' if r.verdict == 'contradicted' else 'inconclusive'}</td></tr>"
                   for r in gain.itertuples())
    return ("<p class='note'><b>Pre-training gain.</b> mIoU of each pre-trained encoder (no intermediate stage) minus random init's, "
            "paired by seed, in points with the 95 % t interval:</p><table class='text'><tr><th>pre-training images</th>"
            f"<th>fine-tuning images</th><th>gain (points)</th><th>verdict</th></tr>{rows}</table>")


def _control_note(table: pd.DataFrame) -> str:
    """The baseline's control under Fig. 3, as computed paired differences."""
    prior = position_prior(table)
    if not len(prior):
        return ""
    parts = [f"{r.train_size} images: {format_interval(r._asdict())} points ({r.verdict})" for r in prior.itertuples()]
    return ("<p class='note'><b>Baseline control.</b> viny's random init uses the authors' N(0,1) position embeddings, which "
            "already carry a prior (pets sit in the middle); the control line starts from timm's init (positions with std "
            f"0.02) instead. Random init minus the control, paired by seed: {'; '.join(parts)}. Where supported, the N(0,1) "
            "positions help on their own, and a pre-trained encoder has to beat that prior, not just an untrained network.</p>")


def _verdict_word(verdict: str, better: str, worse: str) -> str:
    return better if verdict == "supported" else worse if verdict == "contradicted" else "inconclusive"


def _beyond_sections(table: pd.DataFrame) -> list[str]:
    """Beyond the paper (issue #34): the joint arm against sequential fine-tuning, the in-domain
    encoder against Imagenette pre-training, as computed paired differences."""
    joint, dom = joint_vs_sequential(table), indomain_vs_imagenette(table)
    if not len(joint) and not len(dom):
        return []
    sections = ["<h2>Beyond the paper</h2>"]
    if len(joint):
        rows = "".join(f"<tr><td>{r.pretrain_images:,}</td><td>{r.train_size}</td><td>{html.escape(r.aux_mim_weight)}</td>"
                       f"<td>{html.escape(format_interval(r._asdict()))}</td><td class='{r.verdict}'>{_verdict_word(r.verdict, 'joint better', 'joint worse')}</td></tr>"
                       for r in joint.itertuples())
        sections.append("<p class='note'><b>Joint training.</b> Fine-tuning with an auxiliary SimMIM loss (the segmentation loss plus "
                        "W x SimMIM's masked L1 on the same augmented batch, <code>aux_mim_weight</code> W chosen on validation images: "
                        "<code>results/joint_weight</code>) minus sequential fine-tuning (the finetune study's cell with the same pre-training, "
                        "fine-tuning size and seed, no intermediate stage), mIoU points paired by seed with the 95 % t interval:</p>"
                        "<table class='text'><tr><th>pre-training images</th><th>fine-tuning images</th><th>W</th><th>joint minus sequential</th>"
                        f"<th>verdict</th></tr>{rows}</table>" + _made_by(study_rows(table, JOINT)))
    if len(dom):
        rows = "".join(f"<tr><td>{html.escape(r.comparison)}</td><td>{html.escape(r.reference)}</td><td>{r.indomain_steps:,} vs {r.imagenette_steps:,}</td>"
                       f"<td>{r.train_size}</td><td>{r.finetune_epochs}</td><td>{html.escape(format_interval(r._asdict()))}</td>"
                       f"<td class='{r.verdict}'>{_verdict_word(r.verdict, 'in-domain better', 'in-domain worse')}</td></tr>" for r in dom.itertuples())
        sections.append("<p class='note'><b>In-domain pre-training.</b> Fine-tuning from the shipped <code>simmim_pets400</code> (SimMIM on the "
                        "400 Pets images outside the test set, labels unused) minus fine-tuning from Imagenette pre-training, mIoU points paired "
                        "by seed: <i>nearest steps</i> against the snapshot of the 2.4k encoder's run whose pre-training image-steps are closest "
                        "(its fine-tunes from <code>results/along_pretraining/simmim_2368</code>, same test images and seeds, 50 epochs); "
                        "<i>as shipped</i> against the finetune study's cells, whose encoders had several times the steps.</p>"
                        "<table class='text'><tr><th>comparison</th><th>Imagenette encoder</th><th>pre-training image-steps</th>"
                        f"<th>fine-tuning images</th><th>fine-tuning epochs</th><th>in-domain minus Imagenette</th><th>verdict</th></tr>{rows}</table>"
                        + _made_by(study_rows(table, INDOMAIN)))
    return sections


def _finetune_sections(ft: pd.DataFrame, charts: dict, table: pd.DataFrame | None = None) -> list[str]:
    """Figs. 3 and 4 (Fig. 3 with the random-init control when the grid has it), the table
    beside the paper's, segmentation examples."""
    sections: list[str] = []

    if len(ft):
        table = table if table is not None else ft
        charts["fig3"] = miou_vs_size(ft, control=control_rows(table)).to_dict()
        sections.append("<h2>Pre-training and fine-tuning data (Fig. 3)</h2><div id='fig3' class='chart'></div>"
                        "<p class='note'>Dataset-level mIoU on the held-out images; band: ±1 std over seeds; grey diamonds: "
                        "the paper's published curves.</p>" + _made_by(pd.concat([ft, control_rows(table)]))
                        + _gain_note(table) + _control_note(table))
        if set(ft["intermediate"]) >= {"none", "cls_intel"}:
            charts["fig4"] = intermediate_delta(ft).to_dict()
            sections.append("<h2>Intermediate CLS fine-tuning (Fig. 4)</h2><div id='fig4' class='chart'></div>"
                            "<p class='note'>Change in mIoU, paired by seed; bars: 95 % t interval, clipped at the plot's edge when longer "
                            "(its bounds are in the tooltip and the findings).</p>" + _made_by(ft))
        comp = comparison_table(ft)
        sections.append("<h2>Our results beside the paper's Tables 1, A2, A3</h2><p class='note'>mIoU in %, mean ± std over seeds. "
                        "<i>per-image</i>: the paper's protocol (each image's mIoU, then averaged); <i>dataset</i>: one confusion matrix "
                        "over all held-out pixels, as in Fig. 3 and the findings. The paper's cell matches the intermediate stage and "
                        "fine-tuning size; its pre-training size is the nearest the paper has (named in <i>paper cell</i>).</p>" + _table(comp)
                        + _made_by(ft))
        ex = ft.sort_values(["pretrain_images", "train_size"]).iloc[-1]
        ex_cls = ft[(ft["intermediate"] == "cls_intel") & (ft["pretrain_images"] == ex["pretrain_images"]) & (ft["train_size"] == ex["train_size"])]
        sections.append("<h2>Segmentation examples (Figs. A1, A2)</h2><p class='note'>image, ground truth, prediction; colours: "
                        "<b style='color:#e69f00'>orange</b> pet, <b style='color:#28283c'>dark</b> background, white border; "
                        f"{int(ex['pretrain_images']):,} pre-training images, {int(ex['train_size'])} fine-tuning images, "
                        f"intermediate {html.escape(str(ex['intermediate']))}</p>" + _img(Path(ex["output_dir"]) / FILES["segmentation"], "segmentation examples") + _made_by(ex))
        if len(ex_cls):
            sections.append("<p class='note'>The same with the intermediate CLS stage (Fig. A2):</p>"
                            + _img(Path(ex_cls.iloc[0]["output_dir"]) / FILES["segmentation"], "segmentation after CLS") + _made_by(ex_cls.iloc[0]))
    return sections


def _geometry_sections(geo_rows: pd.DataFrame, charts: dict) -> list[str]:
    """Table 2, probe by block, Figs. 5 and 6."""
    sections: list[str] = []

    if len(geo_rows):
        gdir = Path(geo_rows.iloc[0]["output_dir"])
        geo = pd.read_csv(gdir / FILES["geometry"])
        final = geo[geo["layer"] == geo["layer"].max()]
        cols = ["encoder", "within_variance", "across_variance", "probe_accuracy", "probe_miou", "probe_train_accuracy_authors", "dse"]
        ours = final[cols].copy()
        for c in ("probe_accuracy", "probe_miou", "probe_train_accuracy_authors"):
            ours[c] = 100 * ours[c]
        sections.append("<h2>Patch geometry (Table 2)</h2><p class='note'>Ours: held-out probe accuracy / mIoU, and the authors' number "
                        "(probe accuracy on its own training data) beside it; DSE with lambda = 1.</p>" + _table(ours, "{:.3f}")
                        + _made_by(geo_rows) + "<p class='note'>The paper's Table 2:</p>" + _table(diagnostics_table()))
        if geo["layer"].nunique() > 1:
            charts["layers"] = alt.Chart(geo).mark_line(point=True).encode(
                x="layer:O", y=alt.Y("probe_accuracy:Q", scale=alt.Scale(zero=False)), color="encoder:N").properties(
                width=420, height=240, title="held-out patch-probe accuracy by block").to_dict()
            sections.append("<div id='layers' class='chart'></div>" + _made_by(geo_rows))
        cos = pd.read_csv(gdir / FILES["cosine"])
        charts["fig5"] = cosine_chart(cos[cos["layer"] == cos["layer"].max()]).to_dict()
        sections.append("<h2>Similarity vs distance (Fig. 5)</h2><div id='fig5' class='chart'></div><p class='note'>Mean cosine "
                        "similarity between the final block's patch tokens of one image as a function of their Manhattan distance on "
                        "the patch grid, per encoder; dotted: ±1 std across images; dashed: the same for patches of different images "
                        "(the control: similarity that distance alone does not explain).</p>" + _made_by(geo_rows))
        hm = gdir / FILES["heatmaps"]
        if hm.is_file():
            meta = json.loads((gdir / FILES["heatmap_images"]).read_text())
            sims = pd.read_parquet(hm)
            first = next(iter(meta["references"].values()))
            grid_side = int(round(sims["target"].max() + 1) ** 0.5)
            charts["fig6"] = heatmap_explorer(sims, meta["images"], (grid_side, grid_side), default_patch=int(first["foreground"])).to_dict()
            sections.append("<h2>Similarity heatmaps (Fig. 6)</h2><p class='note'>Click a patch of the image: each encoder's cosine "
                            "similarity to it is drawn on the right (scale fixed to [-0.5, 1]). Works without a kernel.</p>"
                            "<div id='fig6' class='chart'></div>" + _made_by(geo_rows))
    return sections


def measured_curves(table: pd.DataFrame) -> list[tuple[pd.Series, pd.DataFrame, pd.DataFrame | None]]:
    """The SimMIM cells that drew a curve along pre-training, by pre-training size:
    ``(cell row, downstream runs, label-free scores or None)``."""
    sim_rows = study_rows(table, SIMMIM)
    with_curve = [r for _, r in sim_rows.iterrows() if (Path(r["output_dir"]) / FILES["pretraining_curve"]).is_file()]
    if "pretrain_images" in sim_rows:
        with_curve.sort(key=lambda r: r["pretrain_images"])
    out = []
    for r in with_curve:
        folder = Path(r["output_dir"])
        scores_file = folder / FILES["selection_scores"]
        out.append((r, pd.read_csv(folder / FILES["pretraining_curve"]), pd.read_csv(scores_file) if scores_file.is_file() else None))
    return out


def selection_across_cells(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`viny.selection.selection_across_runs` over the grid's measured curves (runs named
    by their pre-training images); empty without any curve that has label-free scores."""
    curves = {f"{int(r['pretrain_images']):,} images": (runs, scores) for r, runs, scores in measured_curves(table)
              if scores is not None and pd.notna(r.get("pretrain_images"))}
    return selection_across_runs(curves) if curves else pd.DataFrame()


def _pretraining_sections(table: pd.DataFrame, charts: dict) -> list[str]:
    """Downstream mIoU along pre-training, label-free checkpoint selection (per run and
    across runs) and SimMIM reconstructions (Fig. 2)."""
    sections: list[str] = []
    sim_rows = study_rows(table, SIMMIM)
    curves = measured_curves(table)
    for r, runs, scores in curves:  # one curve per pre-training run the grid shows
        source = str(r.get("curve_source", "") or "")
        images = int(r["pretrain_images"]) if pd.notna(r.get("pretrain_images")) else None
        which = f" ({images:,} pre-training images)" if len(curves) > 1 and images else ""
        key = f"_{images}" if len(curves) > 1 and images else ""
        charts[f"pretraining_curve{key}"] = pretraining_curve(runs).to_dict()
        sections.append(f"<h2>When does pre-training start to pay?{which}</h2><div id='pretraining_curve{key}' class='chart'></div>"
                        "<p class='note'>Dataset-level mIoU on the held-out images after fine-tuning from snapshots along one "
                        "pre-training run; bars: 95 % t interval over seeds; dashed: random init."
                        + (f" Source: {html.escape(source)}." if source and source != "nan" else "") + "</p>" + _made_by(r))
        if scores is not None:
            size = int(runs["train_size"].min())
            charts[f"selection{key}"] = selection_chart(scores, runs, size).to_dict()
            verdicts = pd.concat([selection_verdicts(scores, runs, int(n)) for n in sorted(runs["train_size"].unique())], ignore_index=True)
            rows = "".join(f"<tr><td>{html.escape(r.claim)}</td><td class='{r.verdict}'>{r.verdict}</td><td>{html.escape(r.evidence)}</td></tr>"
                           for r in verdicts.itertuples())
            sections.append(f"<h2>Label-free checkpoint selection (DSE){which}</h2><div id='selection{key}' class='chart'></div>"
                            "<p class='note'>The same snapshots scored without labels; rings: the epoch each score picks.</p>"
                            f"<table class='text'><tr><th>claim</th><th>verdict</th><th>evidence</th></tr>{rows}</table>" + _made_by(r))
    across = selection_across_cells(table)
    if len(across) and across["run"].nunique() > 1:
        sections.append(_across_runs_html(across) + _made_by(pd.DataFrame([r for r, _, scores in curves if scores is not None])))
    if len(sim_rows):
        r = sim_rows.iloc[0]
        card = r.get("card_yardstick_ratio")
        card = f" (its own run's held-out images: {card:.3f})" if card is not None and pd.notna(card) else ""
        yard = (f" Held-out reconstruction on the {int(r['yardstick_images'])} held-out Intel images of this grid's data: L1 "
                f"{r['yardstick_l1']:.3f} = {r['yardstick_ratio']:.3f} x the mean-colour predictor's{card}."
                if "yardstick_ratio" in r and pd.notna(r["yardstick_ratio"]) and pd.notna(r.get("yardstick_images")) else "")
        sections.append("<h2>SimMIM reconstructions (Fig. 2)</h2><p class='note'>Encoder: "
                        f"{html.escape(str(r.get('encoder_source', '?')))}; rows: original, masked input (mask ratio 0.5, masked "
                        f"patches grey), reconstruction (visible patches kept, masked ones predicted).{yard}</p>"
                        + _img(Path(r["output_dir"]) / FILES["reconstructions"], "reconstructions") + _made_by(r))
    return sections


def _across_runs_html(across: pd.DataFrame) -> str:
    """The selection question over every (run, fine-tuning size): picks, regrets, taus and verdict counts."""
    shown = across_runs_display(across)
    head = "<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in shown.columns) + "</tr>"
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>" for row in shown.itertuples(index=False))
    counts = "".join(f"<li>{html.escape(line)}</li>" for line in verdict_counts(across))
    return ("<h2>Label-free checkpoint selection across runs</h2><p class='note'>Each run's picks with their regret (mIoU points "
            "against its best snapshot, mean over seeds) and Kendall's tau with mIoU (bootstrap 95 % interval); the verdicts, "
            f"paired over seeds, counted over the (run, size) pairs:</p><ul class='note'>{counts}</ul><table>{head}{rows}</table>")


def _notebooks_section(grid: Path, table: pd.DataFrame, list_notebooks: bool) -> list[str]:
    """The executed notebooks of the cells (or why they are not listed)."""
    sections: list[str] = []
    def where(cell_dir: str) -> str:  # relative to the grid folder, so a published report names no machine paths
        path = Path(cell_dir) / CELL_NOTEBOOK
        return str(path.relative_to(grid.resolve())) if path.is_relative_to(grid.resolve()) else str(path)

    if list_notebooks:
        nbs = "".join(f"<li>{html.escape(r.study)}/{html.escape(r.cell)}: <code>{html.escape(where(r.output_dir))}</code> "
                      f"({html.escape(str(r.status))})</li>" for r in table.itertuples())
        sections.append(f"<h2>Executed notebooks</h2><p class='note'>Paths relative to the grid folder <code>{html.escape(grid.name)}/</code>."
                        f"</p><ul class='note'>{nbs}</ul>")
    else:
        sections.append(f"<h2>Executed notebooks</h2><p class='note'>{len(table)} cells ran; their executed notebooks stay in the "
                        "grid folder's <code>cells/</code> on the machine that ran them and are not published with this report.</p>")
    return sections


def build_report(grid: str | Path, out: str | Path | None = None, data_label: str | None = None, list_notebooks: bool = True) -> Path:
    """Write the report of the grid whose output folder (or grid file) is ``grid``; returns its path.
    ``data_label`` names the grid's data root in the report instead of its path (for reports
    that are published, where a path on this machine means nothing); ``list_notebooks``
    lists the executed notebooks of the cells (off for published reports, which do not ship them)."""
    import vl_convert as vlc

    grid = Path(grid)
    if grid.is_file():
        grid = load_grid(grid, check=False).out
    table, grid = read_results(grid)
    out = writable_output(Path(out) if out else grid / "report.html", "--out", file=True)  # before the work, not after it
    alt.data_transformers.disable_max_rows()
    ft = finetune_rows(table)
    geo_rows = study_rows(table, GEOMETRY)
    charts: dict[str, dict] = {}
    sections = (_header_section(grid, table, ft, data_label) + _findings_section(grid, table) + _encoders_section(ft)
                + _finetune_sections(ft, charts, table) + _beyond_sections(table) + _geometry_sections(geo_rows, charts) + _pretraining_sections(table, charts)
                + _notebooks_section(grid, table, list_notebooks) + _provenance_section(table))
    bundle = vlc.javascript_bundle()
    script = ("window.vinyViews={};window.vinyErrors=[];const specs=" + json.dumps(charts).replace("</", "<\\/") + ";"
              "for(const [id,spec] of Object.entries(specs)){vegaEmbed('#'+id,spec,{renderer:'svg',actions:false})"
              ".then(r=>{window.vinyViews[id]=r.view;}).catch(e=>{window.vinyErrors.push(String(e));console.error(e);});}")
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>ViNy report: {html.escape(grid.name)}</title>"
            f"<style>{_CSS}</style><script>{bundle}</script></head><body>{''.join(sections)}"
            f"<script>{script}</script></body></html>")
    atomic_write_text(out, page)
    return out
