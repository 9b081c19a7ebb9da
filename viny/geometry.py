"""Geometry of patch representations (paper Sec. 4.2, Table 2, Figs. 5-6) and DSE.

Pure functions on patch tokens ``[N, L, D]`` (N images, L = 64 patches on the 8x8 grid,
from :func:`viny.model.patch_tokens`), each checked in ``tests/test_geometry.py``
against a case whose answer is known by hand.

* :func:`variance_decomposition`: within-image, across-image and total variance;
* :func:`cosine_vs_distance`: mean cosine similarity per Manhattan distance on the grid,
  with its spread across images and the cross-image control;
* :func:`patch_probe`: a linear probe on frozen tokens predicting each patch's majority
  trimap class, scored on held-out images (and the authors' training-set number);
* :func:`reference_patches`, :func:`similarity_map`: the heatmaps of Fig. 6;
* :func:`effective_rank`, :func:`linear_cka`, :func:`kmeans`, :func:`dse_components`,
  :func:`dse_scores`: the Dense representation Structure Estimator of Dai et al.
  (NeurIPS 2025, arXiv 2510.17299) and its parts.
"""

from __future__ import annotations

import math

import pandas as pd
import torch
import torch.nn.functional as F

from viny.metrics import segmentation_scores

__all__ = [
    "variance_decomposition", "grid_distances", "cosine_vs_distance", "patch_probe", "reference_patches", "similarity_map",
    "effective_rank", "linear_cka", "kmeans", "dse_components", "dse_scores",
]


def _check_tokens(tokens: torch.Tensor) -> torch.Tensor:
    tokens = torch.as_tensor(tokens)
    if tokens.dim() != 3:
        raise ValueError(f"expected patch tokens [N, L, D], got shape {tuple(tokens.shape)}")
    return tokens.double()


# --------------------------------------------------------------------------- variance


def variance_decomposition(tokens: torch.Tensor) -> dict[str, float]:
    """The paper's Table 2 variances (docs/authors_code.md, "Diagnostics"), population (ddof 0) so that
    ``total = within + across`` exactly:

    * ``within``: variance across an image's patches, averaged over dims and images;
    * ``across``: variance across images of each image's mean token, averaged over dims;
    * ``total``: variance over all N*L tokens, averaged over dims.
    """
    t = _check_tokens(tokens)
    within = t.var(dim=1, unbiased=False).mean().item()
    across = t.mean(dim=1).var(dim=0, unbiased=False).mean().item()
    total = t.reshape(-1, t.shape[-1]).var(dim=0, unbiased=False).mean().item()
    return {"within": within, "across": across, "total": total}


# --------------------------------------------------------------------------- distance


def grid_distances(grid: tuple[int, int] = (8, 8)) -> torch.Tensor:
    """Manhattan distance ``[L, L]`` between patch positions on a ``rows x cols`` grid (row-major)."""
    r, c = torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing="ij")
    r, c = r.flatten(), c.flatten()
    return (r[:, None] - r[None]).abs() + (c[:, None] - c[None]).abs()


def cosine_vs_distance(tokens: torch.Tensor, grid: tuple[int, int] = (8, 8)) -> pd.DataFrame:
    """Cosine similarity between patch tokens as a function of their grid distance (Fig. 5).

    One row per Manhattan distance d = 0 .. rows+cols-2 with
    * ``within_mean`` / ``within_std``: mean over images of each image's mean cosine
      between its own patch pairs at distance d (std across images); d = 0 is 1 by
      definition;
    * ``cross_mean``: the control, mean cosine between a patch of one image and a patch of
      *another* image at the same grid distance. Position embeddings alone make
      same-position patches of different images similar (``cross_mean`` at d = 0), so the
      part of the within-image curve that exceeds the cross-image one is what the image
      content adds.
    """
    t = F.normalize(_check_tokens(tokens), dim=-1)
    n, l, _ = t.shape
    if l != grid[0] * grid[1]:
        raise ValueError(f"{l} tokens do not fill a {grid[0]}x{grid[1]} grid")
    dist = grid_distances(grid)
    sims = t @ t.transpose(1, 2)  # n l l
    rows = []
    s = t.sum(0)  # l d
    pair_sum = sims.sum(0)  # sum over images of same-image cosines, l l
    cross = (s @ s.T - pair_sum) / (n * (n - 1)) if n > 1 else torch.full((l, l), float("nan"), dtype=t.dtype)
    for d in range(int(dist.max()) + 1):
        m = dist == d
        per_image = sims[:, m].mean(1)
        rows.append({
            "distance": d,
            "within_mean": per_image.mean().item(),
            "within_std": per_image.std(unbiased=True).item() if n > 1 else 0.0,
            "cross_mean": cross[m].mean().item(),
            "pairs": int(m.sum()),
        })
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- probe


def patch_probe(
    train_tokens: torch.Tensor, train_labels: torch.Tensor, test_tokens: torch.Tensor, test_labels: torch.Tensor,
    num_classes: int = 3, epochs: int = 5, lr: float = 1e-2, batch_size: int = 1024, seed: int = 0,
) -> dict[str, float]:
    """Linear probe on frozen patch tokens: ``Linear(D, num_classes)`` trained with Adam
    (lr 1e-2, 5 epochs: the authors' settings) on ``train_tokens [N, L, D]`` with patch
    labels ``[N, L]``, scored on held-out images.

    Returns ``accuracy`` and ``miou`` on the held-out patches (patch-level, dataset-level
    mIoU), and ``train_accuracy_last_epoch``: the authors' number, accuracy over the
    last training epoch while the probe is still learning (no held-out split).
    """
    xtr = torch.as_tensor(train_tokens).float().reshape(-1, train_tokens.shape[-1])
    ytr = torch.as_tensor(train_labels).long().reshape(-1)
    xte = torch.as_tensor(test_tokens).float().reshape(-1, test_tokens.shape[-1])
    yte = torch.as_tensor(test_labels).long().reshape(-1)
    if len(xtr) != len(ytr) or len(xte) != len(yte):
        raise ValueError("tokens and labels disagree in number of patches")
    gen = torch.Generator().manual_seed(seed)
    probe = torch.nn.Linear(xtr.shape[1], num_classes)
    with torch.no_grad():
        bound = 1 / math.sqrt(xtr.shape[1])
        probe.weight.uniform_(-bound, bound, generator=gen)
        probe.bias.uniform_(-bound, bound, generator=gen)
    opt = torch.optim.Adam(probe.parameters(), lr=lr)
    last_correct = 0
    for _ in range(epochs):
        last_correct = 0
        for idx in torch.randperm(len(xtr), generator=gen).split(batch_size):
            with torch.enable_grad():
                logits = probe(xtr[idx])
                loss = F.cross_entropy(logits, ytr[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
            last_correct += int((logits.argmax(1) == ytr[idx]).sum())
    with torch.no_grad():
        pred = probe(xte).argmax(1)
    scores = segmentation_scores(pred[None], yte[None], num_classes)
    return {"accuracy": scores["pixel_accuracy"], "miou": scores["miou"], "train_accuracy_last_epoch": last_correct / len(xtr)}


# --------------------------------------------------------------------------- heatmaps


def reference_patches(target: torch.Tensor, patch_size: int = 16, max_boundary: float = 0.2) -> dict[str, int]:
    """The three reference patches of Fig. 6 from a pixel label map ``[H, W]``
    (0 foreground, 1 background, 2 boundary), as row-major patch indices:

    * ``background``: the top-left corner patch (index 0);
    * ``boundary``: the patch with the most boundary pixels;
    * ``foreground``: the most-foreground patch among those with at most 20 % boundary
      pixels (ties: the lowest index).
    """
    t = torch.as_tensor(target).long()
    h, w = t.shape
    p = patch_size
    counts = F.one_hot(t, 3).reshape(h // p, p, w // p, p, 3).sum((1, 3)).reshape(-1, 3).double() / (p * p)
    boundary = int(counts[:, 2].argmax())
    fg = counts[:, 0].masked_fill(counts[:, 2] > max_boundary, -1.0)
    return {"background": 0, "foreground": int(fg.argmax()), "boundary": boundary}


def similarity_map(tokens: torch.Tensor, index: int, grid: tuple[int, int] = (8, 8)) -> torch.Tensor:
    """Cosine similarity ``[rows, cols]`` of patch ``index`` to every patch of one image ``[L, D]``."""
    t = F.normalize(torch.as_tensor(tokens).double(), dim=-1)
    return (t @ t[index]).reshape(grid).float()


# --------------------------------------------------------------------------- DSE and friends


def effective_rank(z: torch.Tensor, normalized: bool = False) -> float:
    """RankMe effective rank of ``z [n, d]``: ``exp(entropy(s / sum(s)))`` of its singular
    values (1 for rank-1 data, d for isotropic data); ``normalized`` divides by min(n, d)."""
    z = torch.as_tensor(z).double()
    s = torch.linalg.svdvals(z)
    p = s / s.sum()
    p = p[p > 0]
    r = torch.exp(-(p * p.log()).sum()).item()
    return r / min(z.shape) if normalized else r


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA (Kornblith et al. 2019) between two representations of the same ``n``
    items, ``x [n, d1]`` and ``y [n, d2]``: 1 for representations equal up to rotation and
    isotropic scaling."""
    x = torch.as_tensor(x).double()
    y = torch.as_tensor(y).double()
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"CKA needs the same items: {x.shape[0]} vs {y.shape[0]} rows")
    x = x - x.mean(0)
    y = y - y.mean(0)
    hsic = (x.T @ y).pow(2).sum()
    return (hsic / ((x.T @ x).pow(2).sum().sqrt() * (y.T @ y).pow(2).sum().sqrt())).item()


def kmeans(x: torch.Tensor, k: int, iters: int = 20, tol: float = 1e-6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means with k-means++ seeding from a seeded generator (at most ``iters`` Lloyd steps,
    20 as in the DSE reference code), in the input's floating dtype.

    ``x [n, d]`` -> ``(centroids [k, d], labels [n])``; or batched, many independent
    problems at once: ``x [B, n, d]`` -> ``([B, k, d], [B, n])``.
    """
    x = torch.as_tensor(x)
    x = x if x.is_floating_point() else x.double()
    single = x.dim() == 2
    if single:
        x = x[None]
    b, n, _ = x.shape
    k = min(k, n)
    gen = torch.Generator().manual_seed(seed)
    rows = torch.arange(b)
    centroids = x[rows, torch.randint(n, (b,), generator=gen)][:, None]  # b 1 d
    for _ in range(k - 1):
        d2 = torch.cdist(x, centroids).min(-1).values.pow(2)  # b n
        total = d2.sum(-1, keepdim=True)
        probs = torch.where(total > 0, d2 / total.clamp(min=1e-300), torch.full_like(d2, 1.0 / n))
        pick = torch.multinomial(probs, 1, generator=gen)[:, 0]
        centroids = torch.cat([centroids, x[rows, pick][:, None]], 1)
    labels = torch.cdist(x, centroids).argmin(-1)
    for _ in range(iters):
        onehot = F.one_hot(labels, k).to(x.dtype)  # b n k
        counts = onehot.sum(1)  # b k
        sums = onehot.transpose(1, 2) @ x  # b k d
        new = torch.where(counts[..., None] > 0, sums / counts.clamp(min=1)[..., None], centroids)
        shift = (new - centroids).norm(dim=-1).max()
        centroids = new
        labels = torch.cdist(x, centroids).argmin(-1)
        if shift < tol:
            break
    return (centroids[0], labels[0]) if single else (centroids, labels)


def _cluster_radii(x: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """DSE's class radius for every cluster of every problem: the sum of the singular values
    of the centred cluster / sqrt(max(n_j - 1, d)); NaN for clusters of fewer than 2 points.
    ``x [B, n, d]``, ``labels [B, n]`` -> ``[B, k]``.

    Clusters are gathered into a zero-padded ``[B, k, m, d]`` block (m = largest cluster);
    the singular values come from the eigenvalues of each ``m x m`` Gram matrix.
    """
    b, n, d = x.shape
    counts = F.one_hot(labels, k).sum(1)  # b k
    m = int(counts.max())
    order = labels.argsort(dim=1, stable=True)
    sorted_labels = labels.gather(1, order)
    offsets = torch.cumsum(counts, 1) - counts  # b k: first position of each cluster
    rank = torch.arange(n).expand(b, n) - offsets.gather(1, sorted_labels)
    padded = x.new_zeros(b, k, m, d)
    bi = torch.arange(b)[:, None].expand(b, n)
    padded[bi, sorted_labels, rank] = x[bi, order]
    valid = (torch.arange(m)[None, None] < counts[..., None]).to(x.dtype)  # b k m
    means = padded.sum(2) / counts.clamp(min=1)[..., None].to(x.dtype)
    centred = (padded - means[:, :, None]) * valid[..., None]
    gram = centred @ centred.transpose(-1, -2)  # b k m m
    sv = torch.linalg.eigvalsh(gram).clamp(min=0).sqrt().sum(-1)
    radius = sv / torch.sqrt(torch.clamp(counts - 1, min=d).to(x.dtype))
    return torch.where(counts > 1, radius, torch.full_like(radius, float("nan")))


def dse_components(
    tokens: torch.Tensor, normalize: bool = True, local_clusters: int = 3, global_clusters: int = 24,
    group_images: int = 8, seed: int = 0,
) -> dict[str, float]:
    """The parts of DSE (Dai et al., NeurIPS 2025) for one encoder's tokens ``[N, L, D]``.

    Following the authors' public implementation (EldercatSAM/SSL-Degradation, which
    assumes a 14x14 grid; here any L): tokens optionally L2-normalised; every distance
    divided by the mean distance of tokens to their global mean;
    * ``m_intra_image``: per image, k-means with ``local_clusters``, mean cluster radius;
    * ``m_intra_batch``: per group of ``group_images`` images, k-means with
      ``global_clusters``, mean cluster radius; ``m_intra`` is the mean of the two;
    * ``m_inter``: mean distance from each token to the nearest *other* centroid;
    * ``m_dim``: effective rank (normalised by min(n, d)) of one randomly chosen patch per
      image, averaged over L such draws;
    * ``dse``: ``m_inter - m_intra + m_dim`` (lambda = 1; see :func:`dse_scores` for the
      adaptive lambda across checkpoints).
    All k-means problems of a kind run batched.
    """
    t = _check_tokens(tokens)
    if normalize:
        t = F.normalize(t, dim=-1)
    n, l, d = t.shape
    scale = (t - t.mean((0, 1), keepdim=True)).norm(dim=-1).mean().item()
    _, lab = kmeans(t.float(), local_clusters, seed=seed)  # clustering in fp32 (speed), radii in fp64
    intra_image = _cluster_radii(t, lab, min(local_clusters, l)).nanmean(-1).nan_to_num(1.0)
    groups = n // group_images
    usable = groups * group_images
    if groups == 0:
        raise ValueError(f"DSE needs at least {group_images} images (group_images), got {n}")
    g = t[:usable].reshape(groups, group_images * l, d)
    kg = min(global_clusters, group_images * l)
    cent, glab = kmeans(g.float(), kg, seed=seed + 1)
    cent = cent.double()
    radii = _cluster_radii(g, glab, kg)
    dist = torch.cdist(g, cent)  # groups, m, k
    dist.scatter_(-1, glab[..., None], float("inf"))
    inter = dist.min(-1).values.mean(-1)  # per group
    gen = torch.Generator().manual_seed(seed)
    perm = torch.stack([torch.randperm(l, generator=gen) for _ in range(n)])  # n l
    shuffled = t[torch.arange(n)[:, None], perm].transpose(0, 1)  # l n d: one patch per image per draw
    sv = torch.linalg.svdvals(shuffled)
    p = sv / sv.sum(-1, keepdim=True)
    ent = -(p * p.clamp(min=1e-300).log()).sum(-1)
    m_dim = (ent.exp() / min(n, d)).mean().item()
    m_intra_image = intra_image.mean().item() / scale
    m_intra_batch = radii.nanmean().nan_to_num(1.0).item() / scale
    m_inter = inter.mean().item() / scale
    m_intra = (m_intra_image + m_intra_batch) / 2
    return {"m_inter": m_inter, "m_intra_image": m_intra_image, "m_intra_batch": m_intra_batch, "m_intra": m_intra,
            "m_dim": m_dim, "dse": m_inter - m_intra + m_dim}


def dse_scores(components: pd.DataFrame) -> pd.Series:
    """DSE across a set of checkpoints with the paper's adaptive lambda:
    ``(m_inter - m_intra) + lambda * m_dim``, ``lambda = std(m_inter - m_intra) / std(m_dim)``
    over the rows (lambda = 1 when m_dim does not vary)."""
    sep = components["m_inter"] - components["m_intra"]
    sd = components["m_dim"].std(ddof=0)
    lam = sep.std(ddof=0) / sd if sd > 0 else 1.0
    return sep + lam * components["m_dim"]
