"""The study's names, defined once: studies (grid sections), the files each notebook writes
and the report reads, the encoders' display labels, the intermediate tasks and the
data-root layout. Notebooks, grid files, the report and the findings import from here,
so renaming a label or a file cannot silently break a finding.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MODEL", "SIMMIM", "INTERMEDIATE", "FINETUNE", "CONTROL", "JOINT", "INDOMAIN", "GEOMETRY", "RESULTS", "FILES", "RANDOM_INIT_SMALL_POSITIONS", "IntermediateTask", "INTERMEDIATE_TASKS",
           "RANDOM_INIT", "PRETRAINED", "encoder_label", "NOTEBOOKS"]

# studies: the grid files' section names, one per notebook
MODEL, SIMMIM, INTERMEDIATE, FINETUNE, GEOMETRY, RESULTS = "model", "simmim", "intermediate", "finetune", "geometry", "results"
# the baseline's control (04_finetune with init: timm): random init without the authors'
# N(0,1) position embeddings, which already carry the Pets "object in the centre" prior
CONTROL = "control"
# beyond the paper (issue #34), 04_finetune too: joint training (fine-tuning + the auxiliary SimMIM
# loss, aux_mim_weight) and fine-tuning from the shipped in-domain encoder (pretrain_data: pets)
JOINT, INDOMAIN = "joint", "indomain"

# the notebook of each study (notebooks/<name>.py); a grid may run one notebook under several study names
NOTEBOOKS = {MODEL: "01_model", SIMMIM: "02_simmim", INTERMEDIATE: "03_intermediate", FINETUNE: "04_finetune", CONTROL: "04_finetune", JOINT: "04_finetune", INDOMAIN: "04_finetune",
             GEOMETRY: "05_geometry", RESULTS: "06_results"}

# files a notebook writes into its cell folder (and the report / findings read)
FILES = {
    "metrics": "metrics.json",  # every notebook: the grid joins these into results.parquet
    "results": "results.parquet",  # the grid's joined table
    "reconstructions": "reconstructions.png",  # 02_simmim
    "pretraining_curve": "pretraining_curve.csv",  # 02_simmim: mIoU along pre-training
    "selection_scores": "selection_scores.csv",  # 02_simmim: label-free scores of the same snapshots
    "segmentation": "segmentation.png",  # 04_finetune
    "geometry": "geometry.csv",  # 05_geometry: Table 2 per encoder and layer
    "cosine": "cosine.csv",  # 05_geometry: Fig. 5
    "heatmaps": "heatmaps.parquet",  # 05_geometry: Fig. 6 data
    "heatmap_images": "heatmap_images.json",  # 05_geometry: Fig. 6 images
}


@dataclass(frozen=True)
class IntermediateTask:
    """An intermediate fine-tuning task: what it trains on and what the figures call it."""

    name: str
    data: str  # "intel" or "pets"
    head: str  # "cls" (CLS classification) or "patch" (per-patch labels)
    labels: str  # "class" (Intel scene), "breed" (Pets), "trimap" (per-patch majority of the Pets trimap), "clusters" (label-free k-means)
    label: str  # display label of the encoder after this stage

    @property
    def spatial(self) -> bool:
        """Patch-aligned supervision (the paper's "spatial")."""
        return self.head == "patch"


# adding a task: an entry here (and its name in IntermediateConfig.task); viny.tasks follows these fields
INTERMEDIATE_TASKS: dict[str, IntermediateTask] = {t.name: t for t in (
    IntermediateTask("cls_intel", "intel", "cls", "class", "CLS-intermediate (Intel)"),
    IntermediateTask("cls_pets", "pets", "cls", "breed", "CLS-intermediate (Pets)"),
    IntermediateTask("spatial", "pets", "patch", "trimap", "spatial intermediate"),
    IntermediateTask("spatial_intel", "intel", "patch", "clusters", "spatial intermediate (Intel, label-free)"),
)}

RANDOM_INIT = "random init"
RANDOM_INIT_SMALL_POSITIONS = "none, timm init (small positions)"  # Fig. 3 legend (pre-training images)
PRETRAINED = "pretrained (SimMIM)"


def encoder_label(intermediate: str) -> str:
    """Display label of the pre-trained encoder after intermediate stage ``intermediate`` ("none": none)."""
    return PRETRAINED if intermediate == "none" else INTERMEDIATE_TASKS[intermediate].label
