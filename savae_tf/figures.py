"""Labelled figures (matplotlib), written as PNG files and, where a run has a log directory, as
TensorBoard images: one `save` for every picture the binaries draw.

  training_curves   per epoch: training loss and validation bounds, KL, mutual information and
                    active units, from a run's metrics.json entries (`training.train` redraws it
                    after every epoch).
  posterior_means   a 2-d projection (PCA) of posterior means, e.g. a text test set's.
  true_and_approximate_posteriors
                    a 2-d latent: per sequence, contours of the true posterior p(z | x) on a
                    grid and ellipses of each model's Gaussian q (bin/train_synthetic.py).
  aggregate_posterior_means
                    a 2-d latent: each model's posterior means of a data set, a panel per model
                    (bin/train_synthetic.py).
  inference_gaps    per model, a stacked bar of its inference gap: approximation, amortization
                    left after refinement, and amortization closed by the K steps (`savae_tf.gaps`).

matplotlib is an optional dependency (`pip install -e .[plots]`; requirements.txt has it):
without it, `MissingPlotting` says so and the binaries go on without pictures.
"""

import math
import os
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

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
      ("val_nll_bound", "validation -ELBO"),
      ("val_refined_nll_bound", "validation refined -ELBO")]),
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
    epochs = sorted({entry["epoch"] for entry in history})
    if len(epochs) <= 15:  # every epoch a tick (a locator puts fractions around a single one)
      ax.set_xticks(epochs)
    else:
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


def ellipse_half_axes(logvar, standard_deviations: float) -> np.ndarray:
  """The half-axes along z1, z2 of the ellipse `standard_deviations` standard deviations from the
  mean of a Gaussian with diagonal covariance exp(`logvar`): standard_deviations * exp(logvar / 2)
  (the ellipse is axis-aligned, centred on the mean)."""
  return standard_deviations * np.exp(0.5 * np.asarray(logvar, np.float64))


def true_and_approximate_posteriors(posterior, titles: Sequence[str],
                                    approximations: Mapping[str, Tuple[np.ndarray, np.ndarray]],
                                    title: str = ""):
  """A panel per sequence of a model with a 2-d latent: grey filled contours of the true
  posterior density p(z | x) on its quadrature grid (`posterior`, a
  `savae_tf.data.synthetic.GridPosterior` of the sequences), a black + at its mean, and for each of
  `approximations` {legend label: (mean, logvar), each [sequences, 2]} its diagonal Gaussian q as
  ellipses at 1 (solid) and 2 (dashed) standard deviations, one colour per model. Panels are
  titled `titles` (e.g. the sequence's words) and zoomed on the true posterior and the ellipses;
  the first panel's legend names the models."""
  plt = pyplot()
  from matplotlib import patches  # pylint: disable=import-outside-toplevel
  axis, densities = posterior.axis, posterior.density()
  true_means = posterior.mean()
  true_stds = np.sqrt(np.diagonal(posterior.covariance(), axis1=1, axis2=2))
  columns = min(len(titles), 2)
  rows = math.ceil(len(titles) / columns)
  figure, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 4.2 * rows), squeeze=False)
  for ax in axes.flat[len(titles):]:
    ax.remove()
  for s, (ax, name) in enumerate(zip(axes.flat, titles)):
    # contourf reads rows as z2 and columns as z1: the transpose of the grid's [i, j].
    ax.contourf(axis, axis, densities[s].T, levels=8, cmap="Greys")
    true_mean, true_std = true_means[s], true_stds[s]
    ax.plot(*true_mean, "k+", markersize=10)
    low, high = true_mean - 3.5 * true_std, true_mean + 3.5 * true_std
    for colour, (label, (mean, logvar)) in enumerate(approximations.items()):
      for k, style in ((1, "-"), (2, "--")):
        half = ellipse_half_axes(logvar[s], k)
        ax.add_patch(patches.Ellipse(mean[s], 2 * half[0], 2 * half[1], fill=False,
                                     linestyle=style, linewidth=1.6, edgecolor=f"C{colour}",
                                     label=label if k == 1 else None))
        low, high = np.minimum(low, mean[s] - half), np.maximum(high, mean[s] + half)
    margin = 0.05 * (high - low)
    low, high = np.maximum(low - margin, axis[0]), np.minimum(high + margin, axis[-1])
    ax.set_xlim(low[0], high[0])
    ax.set_ylim(low[1], high[1])
    ax.set_title(name)
    ax.set_xlabel("z1")
    ax.set_ylabel("z2")
  axes[0, 0].legend(fontsize="small", loc="best")
  figure.suptitle((title + "\n" if title else "") + "grey: true p(z | x) (+ its mean); "
                  "ellipses: each model's q at 1 (solid) and 2 (dashed) standard deviations",
                  fontsize="medium")
  figure.tight_layout()
  return figure


def aggregate_posterior_means(means: Mapping[str, np.ndarray], title: str = "",
                              truth: Optional[np.ndarray] = None):
  """A panel per model of a 2-d latent: the posterior means [N, 2] of a data set's examples
  (`means` {panel title, e.g. the model and K: means}), on shared axes z1, z2; with `truth`
  [N, 2], the true posterior means E[z | x] drawn in grey behind each model's."""
  plt = pyplot()
  figure, axes = plt.subplots(1, len(means), figsize=(4.2 * len(means), 4.2), squeeze=False,
                              sharex=True, sharey=True)
  for colour, (ax, (label, points)) in enumerate(zip(axes[0], means.items())):
    if truth is not None:
      ax.scatter(truth[:, 0], truth[:, 1], s=6, color="0.7", label="true E[z | x] (quadrature)")
    ax.scatter(points[:, 0], points[:, 1], s=6, alpha=0.7, color=f"C{colour}",
               label="the model's posterior mean")
    ax.set_title(label)
    ax.set_xlabel("z1")
    ax.set_ylabel("z2")
    ax.legend(fontsize="small", loc="best")
  if title:
    figure.suptitle(title, fontsize="medium")
  figure.tight_layout()
  return figure


def inference_gaps(reports: Mapping[str, Mapping[str, float]], title: str = ""):
  """One horizontal bar per model (`reports`: {label: `gaps.report`}), log p(x) - ELBO(lambda_0)
  split into the amortization gap the K refinement steps close, the amortization gap left, and the
  approximation gap; each part's standard error as a whisker at its end."""
  plt = pyplot()
  labels = list(reports)
  figure, axes = plt.subplots(figsize=(8, 1.2 + 0.6 * len(labels)))
  parts = [("closed by refinement", "#4c9f70"), ("amortization left", "#e39b3b"),
           ("approximation", "#8c8c8c")]
  for row, label in enumerate(labels):
    r = reports[label]
    closed = r["refinement_closed"] * r["amortization_gap"]
    widths = [closed, r["amortization_gap"] - closed, r["approximation_gap"]]
    errors = [r["refinement_closed_stderr"] * r["amortization_gap"],
              r["amortization_gap_stderr"], r["approximation_gap_stderr"]]
    left = 0.0
    for (name, colour), width, error in zip(parts, widths, errors):
      axes.barh(row, width, left=left, color=colour, label=name if row == 0 else None)
      axes.errorbar(left + width, row, xerr=error, color="black", capsize=3, linewidth=1)
      left += width
  axes.set_yticks(range(len(labels)), labels)
  axes.invert_yaxis()
  axes.set_xlabel("nats per example: log p(x) - ELBO(encoder's lambda_0)")
  axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.35 - 0.1 / len(labels)), ncol=3,
              fontsize="small", frameon=False)
  axes.set_title(title or "Inference gaps")
  return figure
