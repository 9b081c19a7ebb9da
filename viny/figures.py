"""The study's figures: image panels (PIL) and charts (altair), shared by the notebooks
and the HTML report so that each figure is drawn by one function.

Image panels: :func:`colorize_trimap`, :func:`panel` (rows of images -> one PNG-ready
image). Charts: :func:`loss_curve`, :func:`miou_vs_size` (paper Fig. 3),
:func:`intermediate_delta` (Fig. 4), :func:`cosine_chart` (Fig. 5),
:func:`heatmap_explorer` (Fig. 6, click a patch: works without a kernel).
"""

from __future__ import annotations

import base64
import functools
import io
import json
import uuid

import altair as alt
import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from viny.study import RANDOM_INIT_SMALL_POSITIONS

__all__ = [
    "setup_charts", "TRIMAP_COLOURS", "colorize_trimap", "panel", "png_data_uri", "loss_curve", "miou_vs_size", "intermediate_delta", "pretraining_curve", "selection_chart",
    "cosine_chart", "heatmap_explorer", "to_uint8",
]

PAPER_LEGEND = "paper (published)"  # Fig. 3's legend entry for the paper's curves (grey diamonds)

@functools.cache
def _vega_bundle() -> str:
    """vega-embed + Vega + Vega-Lite as one script (vl-convert ships it: no network)."""
    import vl_convert as vlc
    from altair.utils._importers import vl_version_for_vl_convert

    return vlc.javascript_bundle(vl_version=vl_version_for_vl_convert())


_CHART_HTML = """<div class="vega-visualization" id="{div}"></div>
<script type="text/javascript">
if (!window.vegaEmbed) {{ (function () {{
{bundle}
}})(); }}
(function () {{
  const spec = {spec};
  window.vegaEmbed("#{div}", spec, {options}).catch(console.error);
}})();
</script>"""


def chart_html(spec: dict, embed_options: dict | None = None) -> str:
    """One chart as HTML that renders offline and beside other charts on one page: the
    Vega bundle is inlined (so saved notebooks and nbconvert HTML render without network)
    but runs in its own function scope, only where no chart has loaded it yet, and each
    chart's script is scoped too. (altair's inline template declares top-level constants,
    so in a live JupyterLab page only the first chart rendered: docs/notebooks.md.)"""
    def js(obj) -> str:
        return json.dumps(obj).replace("</", "<\\/")  # no '</script>' inside the script

    return _CHART_HTML.format(div=f"viny-chart-{uuid.uuid4().hex[:12]}", bundle=_vega_bundle(), spec=js(spec),
                              options=js({"mode": "vega-lite", **(embed_options or {})}))


def _renderer(spec: dict, **metadata) -> dict:
    return {"text/html": chart_html(spec, metadata.get("embed_options"))}


def setup_charts() -> None:
    """Notebook set-up: altair charts as self-contained HTML that renders in JupyterLab,
    in executed notebooks and in nbconvert's HTML, offline (:func:`chart_html`), with no
    5,000-row limit."""
    if "viny" not in alt.renderers.names():
        alt.renderers.register("viny", _renderer)
    alt.renderers.enable("viny")
    alt.data_transformers.disable_max_rows()


# foreground, background, boundary
TRIMAP_COLOURS = np.array([[230, 159, 0], [40, 40, 60], [240, 240, 240]], dtype=np.uint8)


def to_uint8(image) -> np.ndarray:
    """``[3, H, W]`` float in [0, 1] or ``[H, W, 3]`` uint8 -> ``[H, W, 3]`` uint8."""
    a = np.asarray(image)
    if a.dtype != np.uint8:
        a = (np.clip(a, 0, 1) * 255).round().astype(np.uint8)
    if a.ndim == 3 and a.shape[0] == 3 and a.shape[-1] != 3:
        a = a.transpose(1, 2, 0)
    return a


def colorize_trimap(labels) -> np.ndarray:
    """``[H, W]`` labels 0/1/2 -> ``[H, W, 3]`` uint8 (orange pet, dark background, white boundary)."""
    return TRIMAP_COLOURS[np.asarray(labels, dtype=np.int64)]


def panel(rows: list[list[np.ndarray]], titles: list[str] | None = None, scale: int = 1, gap: int = 4) -> Image.Image:
    """Lay out rows of equally sized RGB images (uint8 ``[H, W, 3]``) with column titles."""
    h, w = rows[0][0].shape[:2]
    h, w = h * scale, w * scale
    top = 14 if titles else 0
    cols = max(len(r) for r in rows)
    canvas = Image.new("RGB", (cols * (w + gap) + gap, top + len(rows) * (h + gap) + gap), "white")
    draw = ImageDraw.Draw(canvas)
    for j, t in enumerate(titles or []):
        draw.text((gap + j * (w + gap), 1), t, fill="black")
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            im = Image.fromarray(to_uint8(img)).resize((w, h), Image.Resampling.NEAREST)
            canvas.paste(im, (gap + j * (w + gap), top + gap + i * (h + gap)))
    return canvas


def png_data_uri(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def loss_curve(metrics: pd.DataFrame, title: str = "training loss") -> alt.Chart:
    """Per-epoch training loss from a run's ``metrics.csv`` (several runs: a ``run`` column)."""
    color = alt.Color("run:N") if "run" in metrics else alt.value("#4c78a8")
    return alt.Chart(metrics, title=title).mark_line(point=True).encode(
        x=alt.X("epoch:Q"), y=alt.Y("train_loss:Q", title="loss", scale=alt.Scale(zero=False)), color=color,
        tooltip=list(metrics.columns),
    ).properties(width=360, height=220)


def _pretrain_label(results: pd.DataFrame) -> pd.Series:
    return results["pretrain_images"].map(lambda n: "none" if n == 0 else f"{int(n):,}")


def _size_axis(sizes: pd.Series) -> alt.X:
    """Log axis of fine-tuning sizes spanning the measured sizes (padded a little, so error
    bars do not sit on the axis line), ticks at those sizes."""
    values = sorted(int(v) for v in pd.Series(sizes).unique())
    lo, hi = values[0] / 1.15, values[-1] * 1.15
    return alt.X("train_size:Q", scale=alt.Scale(type="log", domain=[lo, hi], nice=False),
                 axis=alt.Axis(values=values, format="d"), title="fine-tuning images")


def miou_vs_size(results: pd.DataFrame, metric: str = "miou", control: pd.DataFrame | None = None) -> alt.LayerChart:
    """Paper Fig. 3: mIoU vs fine-tune size, one line per pre-training size, band = ±1 std over
    seeds; ``control``: the random-init control cells (small-position init), one more line."""
    df = results[results["intermediate"] == "none"].copy()
    df["pretrain"] = _pretrain_label(df)
    if control is not None and len(control):
        c = control.assign(pretrain=RANDOM_INIT_SMALL_POSITIONS, pretrain_images=-1)  # sorts first
        df = pd.concat([df, c[["pretrain", "pretrain_images", "train_size", "seed", metric]]], ignore_index=True)
    df[metric] = 100 * df[metric]
    g = df.groupby(["pretrain", "pretrain_images", "train_size"])[metric]
    agg = g.mean().rename("mean").to_frame().join(g.std(ddof=1).fillna(0).rename("std")).join(g.size().rename("seeds")).reset_index()
    agg["lo"], agg["hi"] = agg["mean"] - agg["std"], agg["mean"] + agg["std"]
    order = [p for p in agg.sort_values("pretrain_images")["pretrain"].unique()]
    base = alt.Chart(agg).encode(x=_size_axis(agg["train_size"]))
    colour = dict(sort=order, title="pre-training images", legend=alt.Legend(labelLimit=300, symbolOpacity=1))
    band = base.mark_area(opacity=0.15).encode(y="lo:Q", y2="hi:Q", color=alt.Color("pretrain:N", **colour))
    # the paper's curves (Tables 1 and A2, per-image protocol) where its fine-tuning sizes fall in this axis
    from viny.paper import segmentation_table

    lo, hi = agg["train_size"].min() / 1.15, agg["train_size"].max() * 1.15
    ref = segmentation_table()
    ref = ref[(ref["intermediate"] == "none") & ref["train_size"].between(lo, hi)].copy()
    ref["paper"] = ref["pretrain_images"].map(lambda n: "paper, no pre-training" if n == 0 else f"paper, {int(n) // 1000}k pre-training")
    ref["source"] = PAPER_LEGEND
    # dashed grey lines with diamonds, named in a legend of their own (the shape's)
    paper = alt.Chart(ref).mark_line(strokeDash=[5, 3], color="grey", clip=True).encode(x="train_size:Q", y="miou:Q", detail="paper:N") + alt.Chart(ref).mark_point(
        filled=True, size=50, color="grey", opacity=1, clip=True).encode(
        x="train_size:Q", y="miou:Q",
        shape=alt.Shape("source:N", scale=alt.Scale(domain=[PAPER_LEGEND], range=["diamond"]),
                        legend=alt.Legend(title=None, symbolFillColor="grey", symbolStrokeColor="grey", labelLimit=300)),
        tooltip=["paper", "train_size", alt.Tooltip("miou:Q", title="paper mIoU (per-image, %)")])
    line = base.mark_line(point=True).encode(
        color=alt.Color("pretrain:N", **colour),
        y=alt.Y("mean:Q", title=f"{metric} (%)", scale=alt.Scale(zero=False)),
        tooltip=["pretrain", "train_size", alt.Tooltip("mean:Q", format=".2f"), alt.Tooltip("std:Q", format=".2f"), "seeds"],
    )
    layers = [band, line] + ([paper] if len(ref) else [])
    return alt.layer(*layers).properties(width=420, height=280, title=alt.Title(
        "Segmentation mIoU vs fine-tuning data (Fig. 3)", subtitle="grey diamonds: the paper's Tables 1 / A2 (per-image mIoU)" if len(ref) else ""))


def paired_deltas(results: pd.DataFrame, metric: str = "miou", treatment: str = "cls_intel") -> pd.DataFrame:
    """Per (pretrain_images, train_size): the paired difference ``treatment - none`` over
    seeds (:func:`viny.stats.paired_difference`), in points of ``metric`` x 100."""
    from viny.stats import paired_difference

    rows = []
    for (p, n), g in results.groupby(["pretrain_images", "train_size"]):
        a = g[g["intermediate"] == treatment].set_index("seed")[metric]
        b = g[g["intermediate"] == "none"].set_index("seed")[metric]
        if len(a) and len(b):
            d = paired_difference(100 * a, 100 * b)
            rows.append({"pretrain_images": p, "train_size": n, **d})
    return pd.DataFrame(rows)


def intermediate_delta(results: pd.DataFrame, metric: str = "miou", treatment: str = "cls_intel") -> alt.LayerChart:
    """Paper Fig. 4: change in mIoU from the intermediate stage, paired by seed, 95 % intervals."""
    d = paired_deltas(results, metric, treatment)
    d["pretrain"] = _pretrain_label(d)
    order = [p for p in d.sort_values("pretrain_images")["pretrain"].unique()]
    base = alt.Chart(d).encode(
        x=_size_axis(d["train_size"]),
        color=alt.Color("pretrain:N", sort=order, title="pre-training images", legend=alt.Legend(labelLimit=300, symbolOpacity=1)),
    )
    # with 2-3 seeds a t interval can be 10x the spread of the means; the axis spans the means
    # +- 3 std of the differences, and longer bars are clipped there (the tooltip has the interval)
    pad = max(3 * float(np.nanmax(d["std"])) if d["std"].notna().any() else 0.0, 1.0)
    domain = [min(float(d["mean"].min()) - pad, -1.0), max(float(d["mean"].max()) + pad, 1.0)]
    rule = alt.Chart(pd.DataFrame({"y": [0]})).mark_rule(color="grey", strokeDash=[4, 4]).encode(y="y:Q")
    bars = base.mark_errorbar(clip=True).encode(y=alt.Y("lo:Q", title=f"change in {metric} (points)", scale=alt.Scale(domain=domain)), y2="hi:Q")
    pts = base.mark_line(point=True).encode(
        y="mean:Q", tooltip=["pretrain", "train_size", alt.Tooltip("mean:Q", format=".2f"), alt.Tooltip("lo:Q", format=".2f"),
                             alt.Tooltip("hi:Q", format=".2f"), "n"],
    )
    return (rule + bars + pts).properties(width=420, height=280, title=f"Effect of intermediate {treatment} on {metric} (Fig. 4)")


def pretraining_curve(runs: pd.DataFrame, metric: str = "miou") -> alt.LayerChart:
    """When does pre-training start to pay? Downstream ``metric`` after fine-tuning from
    snapshots along pre-training (x: pre-training epoch), one line per fine-tuning size,
    bars: 95 % t interval over seeds; dashed: random init (``epoch`` 0) at the same size."""
    from viny.stats import mean_interval

    rows = []
    for (epoch, n), g in runs.groupby(["epoch", "train_size"]):
        iv = mean_interval(100 * g[metric].to_numpy())
        rows.append({"epoch": int(epoch), "train_size": f"{int(n)} images", **iv})
    agg = pd.DataFrame(rows)
    pre, rand = agg[agg["epoch"] > 0], agg[agg["epoch"] == 0]
    colour = alt.Color("train_size:N", title="fine-tuning", legend=alt.Legend(symbolOpacity=1))
    base = alt.Chart(pre).encode(x=alt.X("epoch:Q", title="pre-training epoch"), color=colour)
    line = base.mark_line(point=True).encode(
        y=alt.Y("mean:Q", title=f"{metric} (%)", scale=alt.Scale(zero=False)),
        tooltip=["epoch", "train_size", alt.Tooltip("mean:Q", format=".2f"), alt.Tooltip("lo:Q", format=".2f"),
                 alt.Tooltip("hi:Q", format=".2f"), "n"])
    bars = base.mark_errorbar().encode(y=alt.Y("lo:Q", title=f"{metric} (%)"), y2="hi:Q")
    layers = [bars, line]
    if len(rand):
        layers.append(alt.Chart(rand).mark_rule(strokeDash=[5, 4]).encode(y="mean:Q", color=colour,
                                                                           tooltip=["train_size", alt.Tooltip("mean:Q", format=".2f")]))
    return alt.layer(*layers).properties(width=420, height=280, title="Downstream mIoU along pre-training (dashed: random init)")


def selection_chart(scores: pd.DataFrame, downstream: pd.DataFrame, train_size: int, metric: str = "miou") -> alt.VConcatChart:
    """Label-free checkpoint selection along pre-training: downstream ``metric`` at
    ``train_size`` (mean over seeds) above, each label-free score (min-max scaled) below,
    against the pre-training epoch; a ring marks the epoch each score picks."""
    from viny.selection import SCORES, _score_series, choose

    d = downstream[(downstream["train_size"] == train_size) & (downstream["epoch"] > 0)]
    truth = (d.groupby("epoch")[metric].mean() * 100).rename("mean").reset_index()
    rows, picks = [], []
    for name in ("dse", "effective_rank", "reconstruction"):
        sc = _score_series(scores, name).dropna()
        if len(sc) < 2:
            continue
        span = sc.max() - sc.min()
        for e, v in sc.items():
            rows.append({"epoch": int(e), "score": SCORES[name], "scaled": (v - sc.min()) / span if span else 0.5})
        picks.append({"epoch": choose(sc), "score": SCORES[name]})
    top = alt.Chart(truth).mark_line(point=True, color="black").encode(
        x=alt.X("epoch:Q", title="pre-training epoch"), y=alt.Y("mean:Q", title=f"{metric} (%) at {train_size} images", scale=alt.Scale(zero=False)),
        tooltip=["epoch", alt.Tooltip("mean:Q", format=".2f")]).properties(width=420, height=160, title="Downstream mIoU and label-free scores")
    sdf, pdf = pd.DataFrame(rows), pd.DataFrame(picks).merge(pd.DataFrame(rows), on=["epoch", "score"])
    colour = alt.Color("score:N", legend=alt.Legend(orient="bottom", labelLimit=300, symbolOpacity=1))
    lines = alt.Chart(sdf).mark_line(point=True).encode(x="epoch:Q", y=alt.Y("scaled:Q", title="score (scaled 0-1)"), color=colour)
    rings = alt.Chart(pdf).mark_point(size=250, shape="circle", filled=False, strokeWidth=2).encode(x="epoch:Q", y="scaled:Q", color=colour)
    return alt.vconcat(top, (lines + rings).properties(width=420, height=160))


def cosine_chart(cosine: pd.DataFrame) -> alt.LayerChart:
    """Paper Fig. 5: within-image cosine similarity vs grid distance per encoder (band: ±1 std
    across images), dashed: the cross-image control at the same distance."""
    df = cosine[cosine["distance"] > 0].copy()
    df["lo"], df["hi"] = df["within_mean"] - df["within_std"], df["within_mean"] + df["within_std"]
    base = alt.Chart(df).encode(x=alt.X("distance:Q", title="Manhattan distance on the patch grid"),
                                color=alt.Color("encoder:N", legend=alt.Legend(labelLimit=320, symbolOpacity=1, orient="bottom", columns=2)))
    # ±1 std as thin dotted edges rather than filled areas, which merge into one mass with five encoders
    band = base.mark_line(strokeDash=[1, 2], strokeWidth=1, opacity=0.6).encode(y="lo:Q") + base.mark_line(
        strokeDash=[1, 2], strokeWidth=1, opacity=0.6).encode(y="hi:Q")
    line = base.mark_line(point=True).encode(y=alt.Y("within_mean:Q", title="cosine similarity"),
                                             tooltip=["encoder", "distance", alt.Tooltip("within_mean:Q", format=".3f")])
    ctrl = base.mark_line(strokeDash=[4, 3], opacity=0.7).encode(y="cross_mean:Q")
    return (band + line + ctrl).properties(width=420, height=280, title="Patch similarity vs distance (Fig. 5; dashed: across images)")


def heatmap_explorer(sims: pd.DataFrame, images: dict[str, str], grid: tuple[int, int] = (8, 8), default_patch: int = 0,
                     cell: int = 16) -> alt.VConcatChart:
    """Paper Fig. 6 as a kernel-free explorer: click a patch of the image (left), and every
    encoder's cosine-similarity map to that patch updates (right); a menu picks the image.

    ``sims``: rows ``image, encoder, patch, target, sim`` (cosine of ``patch`` to ``target``);
    ``images``: image id -> PNG data URI. Colour scale fixed to [-0.5, 1] as in the paper.
    """
    rows, cols = grid
    ids = list(images)
    pick = alt.param(name="image", value=ids[0], bind=alt.binding_select(options=ids, name="image "))
    sel = alt.selection_point(name="patch", fields=["patch"], on="click", value=[{"patch": default_patch}], clear=False)
    gdf = pd.DataFrame([{"patch": p, "row": p // cols, "col": p % cols} for p in range(rows * cols)])
    img_df = pd.DataFrame([{"image": k, "url": v} for k, v in images.items()])
    size = dict(width=cols * cell, height=rows * cell)
    x = alt.X("col:O", axis=None)
    y = alt.Y("row:O", axis=None)
    picture = alt.Chart(img_df).mark_image(width=cols * cell, height=rows * cell).encode(
        x=alt.value(cols * cell / 2), y=alt.value(rows * cell / 2), url="url:N").transform_filter(alt.datum.image == pick)
    grid_layer = alt.Chart(gdf).mark_rect(fillOpacity=0.0, stroke="white", strokeOpacity=0.35, cursor="pointer").encode(
        x=x, y=y,
        stroke=alt.condition(sel, alt.value("red"), alt.value("white")),
        strokeWidth=alt.condition(sel, alt.value(3), alt.value(0.5)),
        strokeOpacity=alt.condition(sel, alt.value(1.0), alt.value(0.35)),
        tooltip=["patch:Q", "row:O", "col:O"],
    ).add_params(sel)
    left = alt.layer(picture, grid_layer).properties(title="click a patch", **size).add_params(pick)
    heat = alt.Chart(sims).mark_rect().encode(
        x=x, y=y,
        color=alt.Color("sim:Q", scale=alt.Scale(domain=[-0.5, 1], scheme="viridis", clamp=True), title="cosine",
                        legend=alt.Legend(values=[-0.5, 0, 0.5, 1], format=".1f")),
        tooltip=["encoder", "target:Q", alt.Tooltip("sim:Q", format=".3f")],
    ).transform_filter(alt.datum.image == pick).transform_filter(sel).transform_calculate(
        row=f"floor(datum.target / {cols})", col=f"datum.target % {cols}",
    ).properties(**size).facet(column=alt.Column("encoder:N", title=None, header=alt.Header(labelLimit=200, labelFontSize=10)))
    return alt.hconcat(left, heat).resolve_scale(color="independent")


def attention_chart(maps: np.ndarray) -> alt.FacetChart:
    """The CLS token's attention to each patch, one small map per head (``maps``: ``[heads, gh, gw]``)."""
    df = pd.DataFrame([{"head": h, "row": r, "col": c, "attention": float(maps[h, r, c])}
                       for h in range(maps.shape[0]) for r in range(maps.shape[1]) for c in range(maps.shape[2])])
    return alt.Chart(df).mark_rect().encode(
        x=alt.X("col:O", axis=None), y=alt.Y("row:O", axis=None), color=alt.Color("attention:Q", scale=alt.Scale(scheme="magma")),
    ).properties(width=90, height=90).facet(column="head:O")


def reference_similarity_panel(image: np.ndarray, trimap: np.ndarray, maps: dict[str, dict[str, np.ndarray]], patch_size: int = 16) -> Image.Image:
    """One row per encoder: the image, its trimap and the cosine map of each reference patch
    (``maps``: encoder -> reference name -> ``[gh, gw]``), grey on Fig. 6's [-0.5, 1] scale (white = 1)."""
    def grey(m):
        return ((m.clip(-0.5, 1) + 0.5) / 1.5)[..., None].repeat(3, -1).repeat(patch_size, 0).repeat(patch_size, 1)

    refs = list(next(iter(maps.values())))
    rows = [[image, colorize_trimap(trimap)] + [grey(m[r]) for r in refs] for m in maps.values()]
    canvas = panel(rows, ["image", "trimap"] + refs)
    draw, (h, gap, top) = ImageDraw.Draw(canvas), (image.shape[0], 4, 14)
    for i, name in enumerate(maps):  # each row's encoder, on its image
        x, y = gap + 2, top + gap + i * (h + gap) + 2
        draw.rectangle([x - 1, y - 1, x + 6 * len(name) + 1, y + 11], fill=(255, 255, 255))
        draw.text((x, y), name, fill=(0, 0, 0))
    return canvas


def encoder_selection_chart(encoders: pd.DataFrame, train_size: int = 100) -> alt.FacetChart:
    """The selection study across encoders (:mod:`viny.encoder_selection`): each cheap score
    (a panel each, its own x scale) against the fine-tuned mIoU at ``train_size`` (mean over
    seeds), one point per encoder; a score that ranks encoders like mIoU rises left to right."""
    from viny.encoder_selection import SCORES

    value = f"miou_{train_size}"
    columns = {"reconstruction_ratio": SCORES["reconstruction"], "effective_rank": SCORES["effective_rank"], "dse": SCORES["dse"],
               "probe_accuracy": SCORES["probe_accuracy"], "nn_probe_miou": SCORES["nn_probe_miou"]}
    rows = []
    for col, label in columns.items():
        if col not in encoders:
            continue
        for r in encoders[["encoder", value, col]].dropna().itertuples(index=False):
            rows.append({"encoder": r[0], "miou": r[1], "score": label, "value": -r[2] if col == "reconstruction_ratio" else r[2]})
    return alt.Chart(pd.DataFrame(rows)).mark_point(filled=True, size=70).encode(
        x=alt.X("value:Q", title="score (higher = predicted better)", scale=alt.Scale(zero=False)),
        y=alt.Y("miou:Q", title=f"fine-tuned mIoU (%) at {train_size} images", scale=alt.Scale(zero=False)),
        color=alt.Color("encoder:N", legend=alt.Legend(orient="bottom", columns=3, labelLimit=200)),
        tooltip=["encoder", "score", alt.Tooltip("value:Q", format=".3f"), alt.Tooltip("miou:Q", format=".2f")],
    ).properties(width=190, height=170).facet(facet=alt.Facet("score:N", title=None), columns=3).resolve_scale(x="independent").properties(
        title=f"Cheap scores vs fine-tuned mIoU across encoders ({train_size} Pets images, 100 epochs, mean of 3 seeds)")
