"""Tests for savae_tf.svi.refine: gradients against numerical references, modes against each other."""

import numpy as np
import pytest
import tensorflow as tf
import keras

from savae_tf import distributions
from savae_tf import svi
from savae_tf.svi import refine

EXACT_MODES = ("unrolled", "reverse")


class SoftplusDecoderProblem:
  """A smooth, non-quadratic -ELBO with decoder variables theta and step-keyed noise.

  f_b(lambda_b, theta; k) = ||softplus(z_b W1 + b1) W2 - x_b||^2 + KL(q_b || p),
  z = mean + exp(logvar / 2) * eps_k.
  """

  def __init__(self, dtype=tf.float64, batch=3, latent=2, hidden=5, data=3, seed=0):
    rng = np.random.default_rng(seed)
    self.w1 = tf.Variable(rng.normal(size=(latent, hidden)), dtype=dtype)
    self.b1 = tf.Variable(rng.normal(size=(hidden,)), dtype=dtype)
    self.w2 = tf.Variable(rng.normal(size=(hidden, data)) * 0.5, dtype=dtype)
    self.variables = [self.w1, self.b1, self.w2]
    self.x = tf.constant(rng.normal(size=(batch, data)), dtype)
    self.mean0 = tf.constant(rng.normal(size=(batch, latent)) * 0.5, dtype)
    self.logvar0 = tf.constant(rng.normal(size=(batch, latent)) * 0.3 - 1.0, dtype)

  def loss(self, mean, logvar, step):
    z = distributions.sample(mean, logvar, distributions.step_seed([7, 11], step))
    recon = tf.math.softplus(z @ self.w1 + self.b1) @ self.w2
    nll = tf.reduce_sum(tf.square(recon - self.x), -1)
    return nll + distributions.kl_to_prior(mean, logvar)

  def final_loss(self, mean, logvar):
    """L(lambda_K, theta): the batch's mean loss with noise no refinement step used."""
    return tf.reduce_mean(self.loss(mean, logvar, tf.constant(1000)))


def refined_loss_and_grads(problem, gradient, steps=4, max_grad_norm=None, lr=(0.4, 0.3),
                           step_scale="batch_mean", keep_steps=0):
  sources = [problem.mean0, problem.logvar0] + problem.variables
  with tf.GradientTape() as tape:
    tape.watch(sources[:2])
    mean_k, logvar_k = refine(problem.loss, problem.mean0, problem.logvar0, steps, lr=lr,
                              momentum=0.5, max_grad_norm=max_grad_norm, gradient=gradient,
                              step_scale=step_scale, keep_steps=keep_steps)
    value = problem.final_loss(mean_k, logvar_k)
  grads = tape.gradient(value, sources)
  return value, [None if g is None else tf.convert_to_tensor(g) for g in grads]


def central_differences(fn, tensors, h=1e-6):
  """d fn / d tensors by central differences, perturbing one element at a time.

  `tensors` are tf.Variables (assigned in place) or numpy arrays (fn takes them by closure).
  """
  grads = []
  for t in tensors:
    base = t.numpy().copy()
    grad = np.zeros_like(base)
    for index in np.ndindex(base.shape):
      values = []
      for sign in (1.0, -1.0):
        perturbed = base.copy()
        perturbed[index] += sign * h
        t.assign(perturbed)
        values.append(float(fn()))
      t.assign(base)
      grad[index] = (values[0] - values[1]) / (2 * h)
    grads.append(grad)
  return grads


def relative_error(actual, expected):
  actual, expected = np.concatenate([np.ravel(a) for a in actual]), np.concatenate(
      [np.ravel(e) for e in expected])
  return np.linalg.norm(actual - expected) / np.linalg.norm(expected)


# The finite-difference mode in float64 with its default radius (1e-5) errs by O(radius^2)
# relative to the exact gradient; 1e-6 leaves room for the step-to-step accumulation.
GRADIENT_TOLERANCE = {"unrolled": 1e-6, "reverse": 1e-6, "finite_difference": 1e-6}


# Per convention: (lr, clip) with the clip binding on some gradients and not on others, far from
# the threshold (the procedure is smooth there), for a batch of 4.
CLIPPED_SETTINGS = {"batch_mean": ((0.4, 0.3), 0.5), "per_example": ((0.15, 0.1), 1.0)}


def clip_binds(problem, step_scale, max_norm):
  """Whether the first step's clip binds for some but not all rows (per example) or the batch."""
  with tf.GradientTape() as tape:
    tape.watch(problem.mean0)
    values = problem.loss(problem.mean0, problem.logvar0, tf.constant(0))
  g = tape.gradient(values, problem.mean0)
  if step_scale == "batch_mean":
    return float(tf.norm(g / g.shape[0])) > 1.5 * max_norm
  norms = tf.norm(g, axis=1).numpy()
  return np.any(norms > 1.5 * max_norm) and np.any(norms < max_norm / 1.5)


@pytest.mark.parametrize("step_scale", svi.STEP_SCALES)
@pytest.mark.parametrize("clipped", [False, True])
@pytest.mark.parametrize("gradient", ["unrolled", "reverse", "finite_difference"])
def test_gradient_equals_central_differences_of_the_whole_procedure(gradient, clipped,
                                                                     step_scale):
  problem = SoftplusDecoderProblem(batch=4)
  lr, max_norm = CLIPPED_SETTINGS[step_scale]
  if not clipped:
    max_norm = None
  else:
    assert clip_binds(problem, step_scale, max_norm)
  settings = dict(lr=lr, max_grad_norm=max_norm, step_scale=step_scale)
  _, grads = refined_loss_and_grads(problem, gradient, **settings)
  lam = [tf.Variable(problem.mean0), tf.Variable(problem.logvar0)]

  def procedure():
    mean_k, logvar_k = refine(problem.loss, lam[0], lam[1], 4, momentum=0.5, gradient="none",
                              **settings)
    return problem.final_loss(mean_k, logvar_k)

  expected = central_differences(procedure, lam + problem.variables)
  assert relative_error(grads, expected) < GRADIENT_TOLERANCE[gradient]
  # The test can fail: the refinement path contributes, so dropping it is far off.
  direct = [g.numpy() for g in refined_loss_and_grads(problem, "none", **settings)[1][2:]]
  assert relative_error(direct, expected[2:]) > 1e-2


def test_per_example_refinement_of_a_row_does_not_depend_on_the_other_rows():
  problem = SoftplusDecoderProblem(batch=4)
  settings = dict(lr=0.15, max_grad_norm=1.0, momentum=0.5)
  assert clip_binds(problem, "per_example", 1.0)
  together = refine(problem.loss, problem.mean0, problem.logvar0, 5, step_scale="per_example",
                    **settings)
  for b in range(4):
    def row_loss(mean, logvar, step, b=b):
      # Row b's own loss (with the batch's noise for row b); the other rows are constants.
      full = [tf.concat([t[:b], row, t[b + 1:]], 0)
              for t, row in ((problem.mean0, mean), (problem.logvar0, logvar))]
      return problem.loss(*full, step)[b:b + 1]

    alone = {scale: refine(row_loss, problem.mean0[b:b + 1], problem.logvar0[b:b + 1], 5,
                           step_scale=scale, **settings) for scale in svi.STEP_SCALES}
    np.testing.assert_allclose(alone["per_example"].mean, together.mean[b:b + 1], rtol=1e-12)
    np.testing.assert_allclose(alone["per_example"].logvar, together.logvar[b:b + 1],
                               rtol=1e-12)
    # A batch of one is the one convention under which batch_mean is per example too.
    np.testing.assert_allclose(alone["batch_mean"].mean, alone["per_example"].mean, rtol=1e-12)
  batch_mean = refine(problem.loss, problem.mean0, problem.logvar0, 5, step_scale="batch_mean",
                      **settings)
  assert np.max(np.abs(batch_mean.mean - together.mean)) > 1e-2  # the conventions differ


def test_batch_mean_equals_per_example_with_lr_over_batch_when_no_clip_binds():
  problem = SoftplusDecoderProblem(batch=4)
  batch_mean = refine(problem.loss, problem.mean0, problem.logvar0, 5, lr=0.4,
                      max_grad_norm=None, step_scale="batch_mean")
  per_example = refine(problem.loss, problem.mean0, problem.logvar0, 5, lr=0.1,
                       max_grad_norm=None, step_scale="per_example")
  np.testing.assert_allclose(batch_mean.mean, per_example.mean, rtol=1e-12)
  np.testing.assert_allclose(batch_mean.logvar, per_example.logvar, rtol=1e-12)


def test_none_mode_gives_only_the_direct_theta_gradient():
  problem = SoftplusDecoderProblem()
  _, grads = refined_loss_and_grads(problem, "none")
  assert grads[0] is None and grads[1] is None
  mean_k, logvar_k = refine(problem.loss, problem.mean0, problem.logvar0, 4, lr=(0.4, 0.3),
                            max_grad_norm=None, gradient="none", step_scale="batch_mean")
  expected = central_differences(lambda: problem.final_loss(mean_k, logvar_k), problem.variables)
  assert relative_error(grads[2:], expected) < 1e-6


@pytest.mark.parametrize("step_scale", svi.STEP_SCALES)
@pytest.mark.parametrize("gradient", ["reverse", "finite_difference"])
def test_modes_agree_with_unrolled_when_the_clip_is_active(gradient, step_scale):
  problem = SoftplusDecoderProblem(batch=4)
  lr, max_norm = CLIPPED_SETTINGS[step_scale]
  assert clip_binds(problem, step_scale, max_norm)
  settings = dict(lr=lr, max_grad_norm=max_norm, step_scale=step_scale)
  value_ref, ref = refined_loss_and_grads(problem, "unrolled", **settings)
  value, grads = refined_loss_and_grads(problem, gradient, **settings)
  assert float(value) == pytest.approx(float(value_ref), rel=1e-12)
  tolerance = 1e-10 if gradient == "reverse" else 1e-6
  assert relative_error(grads, ref) < tolerance


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("keep_steps", [1, 3, 4, 9])
def test_reverse_with_kept_steps_agrees_with_unrolled_in_float64(keep_steps, compiled):
  """The last keep_steps steps differentiated as unrolled, the rest by the reverse sweep (the
  momentum's adjoint passes between them); K = 4 given as a tensor when compiled."""
  problem = SoftplusDecoderProblem(batch=4)
  lr, max_norm = CLIPPED_SETTINGS["per_example"]
  settings = dict(lr=lr, max_grad_norm=max_norm, step_scale="per_example")
  value_ref, ref = refined_loss_and_grads(problem, "unrolled", **settings)
  run = tf.function(refined_loss_and_grads, autograph=False) if compiled else (
      refined_loss_and_grads)
  steps = tf.constant(4) if compiled else 4
  value, grads = run(problem, "reverse", steps=steps, keep_steps=keep_steps, **settings)
  assert float(value) == pytest.approx(float(value_ref), rel=1e-12)
  assert relative_error(grads, ref) < 1e-10


@pytest.mark.parametrize("per_example", [False, True])
def test_clip_vjp_is_the_transposed_jacobian_of_the_clip(per_example):
  rng = np.random.default_rng(1)
  # Below the threshold, above it, and (per example) rows on both sides of it.
  for scale in (0.1, 10.0, np.array([[0.1], [10.0], [0.3]])):
    g = tf.constant(rng.normal(size=(3, 4)) * scale)
    w = tf.constant(rng.normal(size=(3, 4)))
    with tf.GradientTape() as tape:
      tape.watch(g)
      clipped = svi.clip_by_norm(g, tf.constant(2.0, tf.float64), per_example)
    expected = tape.gradient(clipped, g, output_gradients=w)
    actual = svi.clip_by_norm_vjp(g, w, tf.constant(2.0, tf.float64), per_example)
    np.testing.assert_allclose(actual, expected, rtol=1e-12)


def test_clip_takes_the_norm_of_each_row_or_of_the_whole_tensor():
  g = tf.constant([[3.0, 4.0], [0.3, 0.4]])
  np.testing.assert_allclose(svi.clip_by_norm(g, 1.0, per_example=True),
                             [[0.6, 0.8], [0.3, 0.4]], rtol=1e-6)
  np.testing.assert_allclose(svi.clip_by_norm(g, 1.0), g / np.linalg.norm(g), rtol=1e-6)


class LSTMDecoderProblem:
  """A float32 -ELBO with a small Keras LSTM decoder over tokens, z fed at every step."""

  def __init__(self, batch=4, length=6, vocab=11, latent=3, hidden=8, seed=0):
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    self.tokens = tf.constant(rng.integers(0, vocab, size=(batch, length)), tf.int32)
    self.embed = keras.layers.Embedding(vocab, 5)
    self.lstm = keras.layers.LSTM(hidden, return_sequences=True)
    self.out = keras.layers.Dense(vocab)
    self.mean0 = tf.constant(rng.normal(size=(batch, latent)) * 0.3, tf.float32)
    self.logvar0 = tf.constant(rng.normal(size=(batch, latent)) * 0.1 - 0.5, tf.float32)
    self.loss(self.mean0, self.logvar0, tf.constant(0))  # builds the layers
    self.variables = (self.embed.trainable_variables + self.lstm.trainable_variables
                      + self.out.trainable_variables)

  def loss(self, mean, logvar, step):
    z = distributions.sample(mean, logvar, distributions.step_seed([1, 2], step))
    inputs = self.tokens[:, :-1]
    length = tf.shape(inputs)[1]
    z_seq = tf.repeat(z[:, None, :], length, axis=1)
    hidden = self.lstm(tf.concat([self.embed(inputs), z_seq], -1))
    nll = tf.reduce_sum(keras.losses.sparse_categorical_crossentropy(
        self.tokens[:, 1:], self.out(hidden), from_logits=True), -1)
    return nll + distributions.kl_to_prior(mean, logvar)

  def final_loss(self, mean, logvar):
    return tf.reduce_mean(self.loss(mean, logvar, tf.constant(1000)))


@pytest.mark.parametrize("step_scale, lr", [("batch_mean", 1.0), ("per_example", 0.25)])
def test_reverse_and_finite_difference_agree_with_unrolled_through_an_lstm_in_float32(
    step_scale, lr):
  problem = LSTMDecoderProblem()
  grad_fn = tf.function(lambda mode: refined_loss_and_grads(
      problem, mode, steps=5, max_grad_norm=5.0, lr=lr, step_scale=step_scale))
  _, ref = grad_fn("unrolled")
  _, reverse = grad_fn("reverse")
  _, fd = grad_fn("finite_difference")
  # Measured: 1e-8 and 2e-6 (fd_radius 1e-2); float32 round-off dominates both.
  assert relative_error(reverse, ref) < 1e-6
  assert relative_error(fd, ref) < 1e-4
  # Every decoder variable receives a gradient through the refinement.
  assert all(float(tf.norm(g)) > 0 for g in reverse[2:])


@pytest.mark.parametrize("gradient", svi.GRADIENT_MODES)
def test_zero_steps_returns_lambda_0_with_identity_gradient(gradient):
  problem = SoftplusDecoderProblem()
  with tf.GradientTape(persistent=True) as tape:
    tape.watch([problem.mean0, problem.logvar0])
    mean_k, logvar_k = refine(problem.loss, problem.mean0, problem.logvar0, 0, gradient=gradient)
    total = tf.reduce_sum(mean_k * 2.0) + tf.reduce_sum(logvar_k * 3.0)
  np.testing.assert_array_equal(mean_k, problem.mean0)
  np.testing.assert_array_equal(logvar_k, problem.logvar0)
  d_mean, d_logvar = tape.gradient(total, [problem.mean0, problem.logvar0])
  if gradient == "none":
    assert d_mean is None and d_logvar is None
  else:
    np.testing.assert_array_equal(d_mean, 2.0 * np.ones_like(problem.mean0))
    np.testing.assert_array_equal(d_logvar, 3.0 * np.ones_like(problem.logvar0))


@pytest.mark.parametrize("gradient", EXACT_MODES)
def test_steps_as_a_tensor_inside_tf_function_does_not_retrace(gradient):
  problem = SoftplusDecoderProblem()
  traces = []

  @tf.function
  def refined_value(steps):
    traces.append(1)
    _, grads = refined_loss_and_grads(problem, gradient, steps=steps)
    return grads[0]

  eager = {k: refined_loss_and_grads(problem, gradient, steps=k)[1][0] for k in (2, 5)}
  for k in (2, 5, 0):
    graph = refined_value(tf.constant(k))
    if k in eager:
      np.testing.assert_allclose(graph, eager[k], rtol=1e-12)
  assert len(traces) == 1


@pytest.mark.parametrize("gradient", svi.GRADIENT_MODES)
def test_refinement_lowers_the_loss_toward_the_optimum(gradient):
  # A deterministic quadratic with its minimum at (mean, logvar) = (target, 0).
  target = tf.constant([[1.0, -2.0], [0.5, 0.0]], tf.float64)

  def loss_fn(mean, logvar, step):
    del step
    return tf.reduce_sum(tf.square(mean - target) + tf.square(logvar), -1)

  mean0, logvar0 = tf.zeros_like(target), tf.ones_like(target)
  before = tf.reduce_sum(loss_fn(mean0, logvar0, 0))
  losses = [float(tf.reduce_sum(loss_fn(*refine(loss_fn, mean0, logvar0, k, lr=0.2,
                                                gradient=gradient), 0)))
            for k in (1, 5, 30)]
  assert losses[0] < float(before) and losses[1] < losses[0] and losses[2] < 1e-6


def test_momentum_recursion_matches_a_hand_computed_step():
  # f = 1/2 ||lambda||^2: g = lambda. Step 1: v1 = -l0, l1 = l0 - lr l0.
  # Step 2: v2 = m v1 - l1, l2 = l1 + lr v2.
  lr, m = 0.3, 0.5
  l0 = np.array([[1.0, -2.0]])
  l1 = l0 - lr * l0
  l2 = l1 + lr * (m * -l0 - l1)
  loss_fn = lambda mean, logvar, step: 0.5 * tf.reduce_sum(mean**2 + logvar**2, -1)
  mean_k, logvar_k = refine(loss_fn, tf.constant(l0), tf.constant(2 * l0), 2, lr=lr,
                            momentum=m, max_grad_norm=None)
  np.testing.assert_allclose(mean_k, l2, rtol=1e-12)
  np.testing.assert_allclose(logvar_k, 2 * l2, rtol=1e-12)


def _per_example_loss(mean, logvar, step):
  del step
  return tf.reduce_sum(mean + logvar, -1)


@pytest.mark.parametrize("args, kwargs, message", [
    ((tf.zeros([2, 3]), tf.zeros([2, 4]), 1), {}, "same shape"),
    ((tf.zeros([2, 3]), tf.zeros([2, 3], tf.float64), 1), {}, "one dtype"),
    ((tf.zeros([2, 3], tf.int32), tf.zeros([2, 3], tf.int32), 1), {}, "float"),
    ((tf.zeros([2, 3]), tf.zeros([2, 3]), -1), {}, "steps must be >= 0"),
    ((tf.zeros([2, 3]), tf.zeros([2, 3]), tf.constant([1, 2])), {}, "integer scalar"),
    ((tf.zeros([2, 3]), tf.zeros([2, 3]), 1), {"gradient": "backprop"}, "Unknown gradient mode"),
    ((tf.zeros([2, 3]), tf.zeros([2, 3]), 1), {"step_scale": "sum"}, "Unknown step_scale"),
    ((tf.zeros([]), tf.zeros([]), 1), {}, "leading batch axis"),
    ((tf.zeros([2, 3]), tf.zeros([2, 3]), 1), {"keep_steps": -1}, "keep_steps must be >= 0"),
    ((tf.zeros([2, 3]), tf.zeros([2, 3]), 1), {"keep_steps": 2, "gradient": "unrolled"},
     "only 'reverse' and 'finite_difference' take it"),
])
def test_bad_input_raises_a_clear_error(args, kwargs, message):
  with pytest.raises(ValueError, match=message):
    refine(_per_example_loss, *args, **kwargs)


def test_negative_steps_tensor_fails_when_run():
  with pytest.raises(tf.errors.InvalidArgumentError, match="steps must be >= 0"):
    refine(_per_example_loss, tf.zeros([2, 3]), tf.zeros([2, 3]), tf.constant(-2))


@pytest.mark.parametrize("gradient", svi.GRADIENT_MODES)
def test_a_loss_that_is_not_per_example_is_rejected(gradient):
  scalar = lambda mean, logvar, step: tf.reduce_sum(mean + logvar)
  with pytest.raises(ValueError, match="loss_fn must return one value per example"):
    refine(scalar, tf.zeros([2, 3]), tf.zeros([2, 3]), 2, gradient=gradient)


@pytest.mark.parametrize("gradient", ["reverse", "finite_difference"])
def test_inputs_computed_outside_the_loop_receive_their_refinement_gradient(gradient):
  # `context` depends on a variable but is computed once, outside refine; the reverse sweeps
  # must return its gradient (a closure would silently drop it).
  problem = SoftplusDecoderProblem()
  scale = tf.Variable(1.5, dtype=tf.float64)

  def loss_fn(mean, logvar, step, inputs):
    return problem.loss(mean, logvar, step) * inputs[0]

  def grads(mode):
    with tf.GradientTape() as tape:
      context = tf.exp(scale)
      mean_k, logvar_k = refine(loss_fn, problem.mean0, problem.logvar0, 3, lr=0.1,
                                max_grad_norm=None, gradient=mode, inputs=[context])
      value = problem.final_loss(mean_k, logvar_k)
    return tape.gradient(value, [scale] + problem.variables)

  expected = grads("unrolled")
  assert abs(float(expected[0])) > 1e-3
  tolerance = 1e-10 if gradient == "reverse" else 1e-6
  assert relative_error(grads(gradient), expected) < tolerance
