"""Labelled figures (matplotlib), written as PNG files and, where a run has a log directory, as
TensorBoard images: one `save` for every picture the binaries draw.

  training_curves   per epoch: training loss and validation bounds, KL, mutual information and
                    active units, from a run's metrics.json entries (`training.train` redraws it
                    after every epoch).
  posterior_means   a 2-d projection (PCA) of posterior means, e.g. a text test set's.

matplotlib is an optional dependency (`pip install -e .[plots]`; requirements.txt has it):
without it, `MissingPlotting` says so and the binaries go on without pictures.
"""

import os
from typing import Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf


class MissingPlotting(ImportError):
  """matplotlib is not installed."""


def pyplot():
  """matplotlib's pyplot on a file-only backend (binaries run on machines without a display)."""
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  except ImportError:
    raise MissingPlotting("pictures need matplotlib: pip install -e .[plots] (or pip install "
                          "matplotlib)") from None
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  return plt


def save(figure, path: str, log_dir: Optional[str] = None, tag: Optional[str] = None,
         step: int = 0) -> str:
  """Writes `figure` to the PNG `path` and, with `log_dir`, as TensorBoard image `tag` (default:
  the file's name) at `step`; closes the figure and returns `path`."""
  plt = pyplot()
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  figure.savefig(path, dpi=100, bbox_inches="tight")
  plt.close(figure)
  if log_dir is not None:
    png = tf.io.read_file(path)
    with tf.summary.create_file_writer(log_dir).as_default():
      tf.summary.image(tag or os.path.splitext(os.path.basename(path))[0],
                       tf.image.decode_png(png, channels=4)[None], step=step)
  return path


# Panels of the training curves: (title, y label, [(metrics.json key, legend label)]).
_CURVES = [
    ("Bounds (nats per example)", "nats",
     [("loss", "training loss"), ("nll_bound", "training -ELBO"),
      ("val_nll_bound", "validation -ELBO"), ("val_refined_nll_bound", "validation refined -ELBO")]),
    ("KL(q || p)", "nats", [("kl", "training"), ("val_kl", "validation"),
                            ("val_refined_kl", "validation, refined")]),
    ("Mutual information I(x; z)", "nats", [("val_mi", "validation, encoder's q"),
                                            ("val_refined_mi", "validation, refined q")]),
    ("Active units", "units", [("val_active_units", "validation, encoder's q"),
                               ("val_refined_active_units", "validation, refined q")]),
]


def training_curves(history: Sequence[Dict[str, float]], title: str = ""):
  """A figure of the metrics per epoch of `history` (metrics.json's "epochs" entries): one panel
  each for the bounds, KL, mutual information and active units, with what a run has of them."""
  plt = pyplot()
  panels = [(name, unit, [(key, label) for key, label in lines
                          if any(key in entry for entry in history)])
            for name, unit, lines in _CURVES]
  panels = [panel for panel in panels if panel[2]]
  figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
  for ax, (name, unit, lines) in zip(axes[0], panels):
    for key, label in lines:
      points = [(entry["epoch"], entry[key]) for entry in history if key in entry]
      ax.plot(*zip(*points), marker="o", markersize=3, label=label)
    ax.set_title(name)
    ax.set_xlabel("epoch")
    ax.set_ylabel(unit)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize="small")
  if title:
    figure.suptitle(title)
  figure.tight_layout()
  return figure


def write_training_curves(model_dir: str, history: List[Dict[str, float]],
                          title: str = "") -> Optional[str]:
  """<model_dir>/pictures/training_curves.png from `history`; None without matplotlib."""
  try:
    return save(training_curves(history, title),
                os.path.join(model_dir, "pictures", "training_curves.png"))
  except MissingPlotting:
    return None


def principal_components(points: np.ndarray, count: int = 2) -> np.ndarray:
  """`points` [N, D] projected on their first `count` principal axes (centred; the axes are the
  right singular vectors, signed so each axis's largest coordinate is positive)."""
  centred = points - points.mean(axis=0)
  axes = np.linalg.svd(centred, full_matrices=False)[2][:count]
  signs = np.sign(axes[np.arange(len(axes)), np.abs(axes).argmax(axis=1)])
  return centred @ (axes * signs[:, None]).T


def posterior_means(means: np.ndarray, title: str, colour_by: Optional[np.ndarray] = None,
                    colour_label: str = ""):
  """A scatter of posterior means [N, latent] on their first two principal axes (the axes say
  how much of the means' variance each carries), coloured by `colour_by` if given."""
  plt = pyplot()
  means = np.asarray(means, np.float64)
  projected = principal_components(means, 2)
  variance = np.var(means - means.mean(axis=0), axis=0).sum()
  shares = np.var(projected, axis=0) / variance if variance > 0 else np.zeros(2)
  figure, ax = plt.subplots(figsize=(5.2, 4.6))
  if projected.shape[1] < 2:  # a 1-d latent: its one axis against zero
    projected = np.concatenate([projected, np.zeros_like(projected)], axis=1)
    shares = np.append(shares, 0.0)
  points = ax.scatter(projected[:, 0], projected[:, 1], s=6, alpha=0.6,
                      c=colour_by if colour_by is not None else None, cmap="viridis")
  if colour_by is not None:
    figure.colorbar(points, ax=ax, label=colour_label)
  ax.set_xlabel(f"first principal axis ({shares[0]:.0%} of the variance)")
  ax.set_ylabel(f"second principal axis ({shares[1]:.0%})")
  ax.set_title(title)
  figure.tight_layout()
  return figure
