"""A notebook's plumbing in one call: ``nb = setup("finetune", globals())``.

:func:`setup` reads the notebook's parameters (its ``parameters`` cell, as JupyterLab's
Run All or papermill left them), checks the upstream chains they ask for before anything
trains (:func:`viny.upstream.check_chains`, naming the notebook's own parameter on error),
picks the output and store folders (the grid injects them; alone, ``runs/notebooks/...``)
and turns on the charts. The notebooks then hold what the paper section shows, not paths
or records built by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from viny.errors import VinyError
from viny.study import FILES, NOTEBOOKS
from viny.upstream import Upstream, check_chains

__all__ = ["NotebookRun", "setup"]


@dataclass(frozen=True)
class NotebookRun:
    """Where one notebook run writes, and the upstream chains it starts from."""

    study: str
    out: Path  # this run's output folder (a grid cell's folder under a grid)
    store: Path  # the store of upstream runs shared between cells and notebooks
    chains: tuple[Upstream, ...]  # the pre-trained chain first, then one per intermediate stage
    data_root: Path | None  # None: the sample shipped in the repo

    @property
    def chain(self) -> Upstream:
        """The chain this run fine-tunes from (the last one: with an intermediate stage, after it)."""
        if not self.chains:
            raise VinyError(f"the {self.study} notebook builds no upstream chain")
        return self.chains[-1]

    def encoder(self, chain: Upstream | None = None, progress: bool = True) -> str | None:
        """The encoder file of ``chain`` (default :attr:`chain`; ``None``: random init), trained in the store if needed."""
        return (chain or self.chain).resolve(self.store, progress)

    def data(self, name: str) -> str | None:
        """The folder of data set ``name`` (``imagenet``, ``intel``, ``pets``) under the data root; ``None``: the shipped sample."""
        folders = {"imagenet": "imagenet-subset/train", "intel": "intel-image-classification", "pets": "oxford-iiit-pet", "root": ""}
        if name not in folders:
            raise VinyError(f"unknown data set {name!r}: use one of {', '.join(folders)}")
        return str(self.data_root / folders[name]) if self.data_root else None

    def path(self, file: str) -> Path:
        """The path of one of the study's files (:data:`viny.study.FILES`) in the output folder."""
        return self.out / FILES[file]

    def finetune(self, **options) -> tuple[Path, dict]:
        """Fine-tune on Pets from :attr:`chain`'s encoder (``options``: the finetune phase's
        options, :class:`viny.config.FinetuneConfig`) in ``out/runs``, and write the cell's
        record: the held-out scores, where the encoder came from and the pre-training's
        reconstruction yardstick (for the report's Encoders table). Returns ``(run folder, record)``."""
        import json

        from viny.config import make_config
        from viny.pipeline import run_in_store
        from viny.pretrained import describe_encoder, pretraining_record

        chain = self.chain
        encoder = self.encoder(chain)
        start = {"init_from": encoder} if encoder else {"init": chain.init}
        config = make_config("finetune", data=self.data("root"), **start, **options)
        if chain.pretrain_data == "pets" and chain.shipped_name:
            self._check_unseen_test_set(config, chain.shipped_name)
        run = run_in_store(config, self.out / "runs")
        results = json.loads((run / "results.json").read_text())
        pretrained = pretraining_record(self.encoder(chain.pretrained()))[0] if chain.pretrain_images else {}
        source = describe_encoder(encoder) + ("" if encoder or chain.init == "reference" else f" ({chain.init} init)")
        record = {**results, "encoder_source": source, "pretraining_yardstick_ratio": pretrained.get("yardstick_ratio")}
        self.write_metrics(record)
        return run, record

    @staticmethod
    def _check_unseen_test_set(config, name: str) -> None:
        """A fine-tune from the shipped in-domain encoder (pre-trained on the Pets pool without
        one nested test set) must be tested on that test set: refuse any other split."""
        from viny.pretrained import card

        c = card(name)["config"]
        if (config.split, config.test_size, config.split_seed) != ("nested", c["test_size"], c["split_seed"]):
            raise VinyError(f"split = {config.split!r}, test_size = {config.test_size}: the shipped {name} was pre-trained on the Pets pool "
                            f"without the nested test set of test_size {c['test_size']} (split seed {c['split_seed']}); fine-tune from it "
                            "with split nested and that test_size, so that its test images stay unseen")

    def write_metrics(self, record: dict) -> None:
        """Write the run's ``metrics.json`` (the grid joins it into ``results.parquet``)."""
        from viny.views import write_json

        write_json(self.path("metrics"), record)


def setup(study: str, params: dict, charts: bool = True) -> NotebookRun:
    """Set up the notebook of ``study`` from its parameters ``params`` (``globals()`` of the
    notebook): check its upstream chains, create its output folder, enable the charts."""
    from viny.files import repo_runs

    if study not in NOTEBOOKS:
        raise VinyError(f"unknown study {study!r}: use one of {', '.join(NOTEBOOKS)}")
    chains = tuple(check_chains(NOTEBOOKS[study], params))
    out = Path(params["output_dir"]) if params.get("output_dir") else repo_runs("notebooks", study)
    store = Path(params["store_dir"]) if params.get("store_dir") else repo_runs("notebooks", "store")
    root = params.get("data_root") or None
    if root:
        from viny.data.datasets import check_data_root

        check_data_root(root, "data_root")
    out.mkdir(parents=True, exist_ok=True)
    if charts:
        from viny.figures import setup_charts

        setup_charts()
    return NotebookRun(study, out, store, chains, Path(root) if root else None)
