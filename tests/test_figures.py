"""Tests for savae_tf.figures: the PCA, the training curves and the written pictures."""

import builtins

import numpy as np
import pytest
import tensorflow as tf

from savae_tf import figures

HISTORY = [{"epoch": 1, "loss": 30.0, "nll_bound": 29.0, "kl": 2.0, "val_nll_bound": 28.0,
            "val_kl": 1.5, "val_mi": 0.5, "val_active_units": 2.0},
           {"epoch": 2, "loss": 25.0, "nll_bound": 24.0, "kl": 3.0, "val_nll_bound": 26.0,
            "val_kl": 2.5, "val_mi": 0.9, "val_active_units": 3.0}]


def test_principal_components_find_the_axis_of_largest_variance():
  rng = np.random.default_rng(0)
  direction = np.array([3.0, 4.0, 0.0]) / 5.0
  points = rng.normal(size=(500, 1)) * 10.0 * direction + rng.normal(size=(500, 3)) * 0.1 + 7.0
  projected = figures.principal_components(points, 2)
  assert projected.shape == (500, 2)
  np.testing.assert_allclose(projected.mean(axis=0), 0.0, atol=1e-9)
  first = projected[:, 0] / np.linalg.norm(projected[:, 0])
  along = (points - points.mean(0)) @ direction
  assert abs(first @ (along / np.linalg.norm(along))) > 0.999  # the first axis is `direction`
  assert np.var(projected[:, 0]) > 100 * np.var(projected[:, 1])


def test_training_curves_draw_a_panel_per_metric_kind_with_what_the_run_has():
  figure = figures.training_curves(HISTORY, "savae")
  titles = [ax.get_title() for ax in figure.axes]
  assert titles == ["Bounds (nats per example)", "KL(q || p)", "Mutual information I(x; z)",
                    "Active units"]
  bounds = figure.axes[0]
  assert [line.get_label() for line in bounds.get_lines()] == [
      "training loss", "training -ELBO", "validation -ELBO"]  # no refined bound in this run
  np.testing.assert_array_equal(bounds.get_lines()[2].get_ydata(), [28.0, 26.0])
  assert all(ax.get_xlabel() == "epoch" for ax in figure.axes)
  figures.pyplot().close(figure)
  lm = figures.training_curves([{"epoch": 1, "loss": 5.0, "nll_bound": 5.0}])
  assert [ax.get_title() for ax in lm.axes] == ["Bounds (nats per example)"]


def test_a_figure_is_written_as_png_and_as_a_tensorboard_image(tmp_path):
  path = figures.save(figures.training_curves(HISTORY), str(tmp_path / "p" / "curves.png"),
                      log_dir=str(tmp_path / "logs"))
  assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
  events = list((tmp_path / "logs").glob("events.out.tfevents.*"))
  tags = [value.tag for event in tf.compat.v1.train.summary_iterator(str(events[0]))
          for value in event.summary.value]
  assert tags == ["curves"]


def test_without_matplotlib_the_message_says_how_to_install_it(monkeypatch, tmp_path):
  real_import = builtins.__import__

  def no_matplotlib(name, *args, **kwargs):
    if name.startswith("matplotlib"):
      raise ImportError(name)
    return real_import(name, *args, **kwargs)
  monkeypatch.setattr(builtins, "__import__", no_matplotlib)
  with pytest.raises(figures.MissingPlotting, match=r"pip install -e \.\[plots\]"):
    figures.pyplot()
  assert figures.write_training_curves(str(tmp_path), HISTORY) is None


def test_posterior_means_are_plotted_on_labelled_principal_axes():
  means = np.random.default_rng(1).normal(size=(50, 4)) * [5.0, 1.0, 0.1, 0.1]
  figure = figures.posterior_means(means, "test set", colour_by=np.arange(50.0),
                                   colour_label="length")
  ax = figure.axes[0]
  assert ax.get_title() == "test set" and "principal axis" in ax.get_xlabel()
  share = float(ax.get_xlabel().split("(")[1].split("%")[0])
  assert share > 80  # the first axis carries most of the variance (25 of ~26)
  figures.pyplot().close(figure)


def test_ellipse_half_axes_are_k_standard_deviations():
  logvar = np.log([[4.0, 0.25]])
  np.testing.assert_allclose(figures.ellipse_half_axes(logvar, 1), [[2.0, 0.5]])
  np.testing.assert_allclose(figures.ellipse_half_axes(logvar, 2), [[4.0, 1.0]])


def true_posteriors_figure():
  """Two sequences' Gaussian 'true' posteriors on a grid, and two models' q."""
  from savae_tf.data import synthetic
  axis = np.linspace(-4.0, 4.0, 41)
  z1, z2 = np.meshgrid(axis, axis, indexing="ij")
  centres = np.array([[1.0, -1.0], [-2.0, 0.5]])
  # log p(x | z) that makes the posterior these Gaussians: their log density minus the prior's.
  log_likelihood = np.stack([-0.5 * (((z1 - c[0]) / 0.3)**2 + ((z2 - c[1]) / 0.6)**2)
                             + 0.5 * (z1**2 + z2**2) for c in centres])
  approximations = {"VAE: encoder's q": (centres + 0.2, np.log([[0.3, 0.2], [0.5, 0.5]])),
                    "SA-VAE: q_K, K = 20": (centres, 2 * np.log([[0.3, 0.6], [0.3, 0.6]]))}
  return figures.true_and_approximate_posteriors(
      synthetic.GridPosterior(axis, log_likelihood), ["w1 w2", "w3 w4"], approximations,
      "oracle"), approximations


def test_true_and_approximate_posteriors_draw_a_panel_per_sequence_and_an_ellipse_per_sd():
  from matplotlib import patches
  figure, approximations = true_posteriors_figure()
  assert [ax.get_title() for ax in figure.axes] == ["w1 w2", "w3 w4"]
  assert all(ax.get_xlabel() == "z1" and ax.get_ylabel() == "z2" for ax in figure.axes)
  legend = figure.axes[0].get_legend()
  assert [text.get_text() for text in legend.get_texts()] == list(approximations)
  assert "oracle" in figure.get_suptitle()
  # Per panel, per model, ellipses at 1 and 2 standard deviations around q's mean.
  second = [p for p in figure.axes[1].patches if isinstance(p, patches.Ellipse)]
  assert len(second) == 4
  mean, logvar = approximations["SA-VAE: q_K, K = 20"]
  sa_vae = second[2:]
  for k, ellipse in zip((1, 2), sa_vae):
    np.testing.assert_allclose(ellipse.center, mean[1])
    np.testing.assert_allclose([ellipse.width, ellipse.height],
                               2 * k * np.exp(logvar[1] / 2))
  # Zoomed on the posterior: the 2-sd ellipse fits, the grid's far corner does not show.
  low, high = figure.axes[1].get_xlim()
  assert low <= mean[1, 0] - 0.6 and high >= mean[1, 0] + 0.6 and high < 4.0
  figures.pyplot().close(figure)


def test_aggregate_posterior_means_draw_a_panel_per_model_over_the_truth():
  rng = np.random.default_rng(2)
  truth = rng.normal(size=(30, 2))
  means = {"VAE: encoder's q": truth * 0.5, "SVI: q_K, K = 20": truth * 0.9}
  figure = figures.aggregate_posterior_means(means, "oracle generator", truth)
  assert [ax.get_title() for ax in figure.axes] == list(means)
  for ax, points in zip(figure.axes, means.values()):
    truth_points, model_points = ax.collections
    np.testing.assert_allclose(truth_points.get_offsets(), truth)
    np.testing.assert_allclose(model_points.get_offsets(), points)
    assert ax.get_xlabel() == "z1" and ax.get_ylabel() == "z2"
  figures.pyplot().close(figure)
  alone = figures.aggregate_posterior_means({"SA-VAE": truth})
  assert len(alone.axes[0].collections) == 1  # no truth: the model's means only
  figures.pyplot().close(alone)


def test_inference_gaps_stack_closed_left_and_approximation_per_model():
  reports = {"VAE": {"approximation_gap": 0.1, "approximation_gap_stderr": 0.01,
                     "amortization_gap": 0.4, "amortization_gap_stderr": 0.02,
                     "refinement_closed": 0.5, "refinement_closed_stderr": 0.05},
             "SA-VAE": {"approximation_gap": 0.1, "approximation_gap_stderr": 0.01,
                        "amortization_gap": 2.0, "amortization_gap_stderr": 0.1,
                        "refinement_closed": 0.9, "refinement_closed_stderr": 0.02}}
  figure = figures.inference_gaps(reports, "oracle")
  axes = figure.axes[0]
  bars = axes.patches
  assert len(bars) == 6  # three parts per model
  # Row by row: closed, left, approximation; each starts where the previous ends.
  vae, savae = bars[:3], bars[3:]
  for parts, report in ((vae, reports["VAE"]), (savae, reports["SA-VAE"])):
    closed = report["refinement_closed"] * report["amortization_gap"]
    widths = [closed, report["amortization_gap"] - closed, report["approximation_gap"]]
    np.testing.assert_allclose([bar.get_width() for bar in parts], widths)
    np.testing.assert_allclose([bar.get_x() for bar in parts],
                               [0.0, widths[0], widths[0] + widths[1]])
  assert [t.get_text() for t in axes.get_yticklabels()] == ["VAE", "SA-VAE"]
  assert [t.get_text() for t in axes.get_legend().get_texts()] == [
      "closed by refinement", "amortization left", "approximation"]
  figures.pyplot().close(figure)
