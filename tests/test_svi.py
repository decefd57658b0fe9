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

  f(lambda, theta; k) = mean_b[ ||softplus(z W1 + b1) W2 - x||^2 + KL(q || p) ],
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
    return tf.reduce_mean(nll + distributions.kl_to_prior(mean, logvar))

  def final_loss(self, mean, logvar):
    """L(lambda_K, theta): the loss with noise no refinement step used."""
    return self.loss(mean, logvar, tf.constant(1000))


def refined_loss_and_grads(problem, gradient, steps=4, max_grad_norm=None, lr=(0.4, 0.3)):
  sources = [problem.mean0, problem.logvar0] + problem.variables
  with tf.GradientTape() as tape:
    tape.watch(sources[:2])
    mean_k, logvar_k = refine(problem.loss, problem.mean0, problem.logvar0, steps, lr=lr,
                              momentum=0.5, max_grad_norm=max_grad_norm, gradient=gradient)
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


@pytest.mark.parametrize("gradient", ["unrolled", "reverse", "finite_difference"])
def test_gradient_equals_central_differences_of_the_whole_procedure(gradient):
  problem = SoftplusDecoderProblem()
  _, grads = refined_loss_and_grads(problem, gradient)
  lam = [tf.Variable(problem.mean0), tf.Variable(problem.logvar0)]

  def procedure():
    mean_k, logvar_k = refine(problem.loss, lam[0], lam[1], 4, lr=(0.4, 0.3), momentum=0.5,
                              max_grad_norm=None, gradient="none")
    return problem.final_loss(mean_k, logvar_k)

  expected = central_differences(procedure, lam + problem.variables)
  assert relative_error(grads, expected) < GRADIENT_TOLERANCE[gradient]
  # The test can fail: the refinement path contributes, so dropping it is far off.
  direct = [g.numpy() for g in refined_loss_and_grads(problem, "none")[1][2:]]
  assert relative_error(direct, expected[2:]) > 1e-2


def test_none_mode_gives_only_the_direct_theta_gradient():
  problem = SoftplusDecoderProblem()
  _, grads = refined_loss_and_grads(problem, "none")
  assert grads[0] is None and grads[1] is None
  mean_k, logvar_k = refine(problem.loss, problem.mean0, problem.logvar0, 4, lr=(0.4, 0.3),
                            max_grad_norm=None, gradient="none")
  expected = central_differences(lambda: problem.final_loss(mean_k, logvar_k), problem.variables)
  assert relative_error(grads[2:], expected) < 1e-6


@pytest.mark.parametrize("gradient", ["reverse", "finite_difference"])
def test_modes_agree_with_unrolled_when_the_clip_is_active(gradient):
  problem = SoftplusDecoderProblem(batch=4)
  max_norm = 0.2
  with tf.GradientTape() as tape:
    tape.watch(problem.mean0)
    first_loss = problem.loss(problem.mean0, problem.logvar0, tf.constant(0))
  assert tf.norm(tape.gradient(first_loss, problem.mean0)) > 2 * max_norm  # the clip acts
  value_ref, ref = refined_loss_and_grads(problem, "unrolled", max_grad_norm=max_norm)
  value, grads = refined_loss_and_grads(problem, gradient, max_grad_norm=max_norm)
  assert float(value) == pytest.approx(float(value_ref), rel=1e-12)
  tolerance = 1e-10 if gradient == "reverse" else 1e-6
  assert relative_error(grads, ref) < tolerance


def test_clip_vjp_is_the_transposed_jacobian_of_the_clip():
  rng = np.random.default_rng(1)
  for scale in (0.1, 10.0):  # below and above the threshold
    g = tf.constant(rng.normal(size=(3, 4)) * scale)
    w = tf.constant(rng.normal(size=(3, 4)))
    with tf.GradientTape() as tape:
      tape.watch(g)
      clipped = svi.clip_by_norm(g, tf.constant(2.0, tf.float64))
    expected = tape.gradient(clipped, g, output_gradients=w)
    actual = svi.clip_by_norm_vjp(g, w, tf.constant(2.0, tf.float64))
    np.testing.assert_allclose(actual, expected, rtol=1e-12)
  clipped = svi.clip_by_norm(tf.constant([[3.0, 4.0]]), 1.0)
  np.testing.assert_allclose(clipped, [[0.6, 0.8]], rtol=1e-6)


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
    return tf.reduce_mean(nll + distributions.kl_to_prior(mean, logvar))

  def final_loss(self, mean, logvar):
    return self.loss(mean, logvar, tf.constant(1000))


def test_reverse_and_finite_difference_agree_with_unrolled_through_an_lstm_in_float32():
  problem = LSTMDecoderProblem()
  grad_fn = tf.function(lambda mode: refined_loss_and_grads(problem, mode, steps=5,
                                                            max_grad_norm=5.0, lr=1.0))
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
    return tf.reduce_sum(tf.square(mean - target)) + tf.reduce_sum(tf.square(logvar))

  mean0, logvar0 = tf.zeros_like(target), tf.ones_like(target)
  before = loss_fn(mean0, logvar0, 0)
  losses = [float(loss_fn(*refine(loss_fn, mean0, logvar0, k, lr=0.2, gradient=gradient), 0))
            for k in (1, 5, 30)]
  assert losses[0] < float(before) and losses[1] < losses[0] and losses[2] < 1e-6


def test_momentum_recursion_matches_a_hand_computed_step():
  # f = 1/2 ||lambda||^2: g = lambda. Step 1: v1 = -l0, l1 = l0 - lr l0.
  # Step 2: v2 = m v1 - l1, l2 = l1 + lr v2.
  lr, m = 0.3, 0.5
  l0 = np.array([[1.0, -2.0]])
  l1 = l0 - lr * l0
  l2 = l1 + lr * (m * -l0 - l1)
  loss_fn = lambda mean, logvar, step: 0.5 * tf.reduce_sum(mean**2 + logvar**2)
  mean_k, logvar_k = refine(loss_fn, tf.constant(l0), tf.constant(2 * l0), 2, lr=lr,
                            momentum=m, max_grad_norm=None)
  np.testing.assert_allclose(mean_k, l2, rtol=1e-12)
  np.testing.assert_allclose(logvar_k, 2 * l2, rtol=1e-12)


def _scalar_loss(mean, logvar, step):
  del step
  return tf.reduce_sum(mean) + tf.reduce_sum(logvar)


@pytest.mark.parametrize("args, kwargs, message", [
    ((tf.zeros([2, 3]), tf.zeros([2, 4]), 1), {}, "same shape"),
    ((tf.zeros([2, 3]), tf.zeros([2, 3], tf.float64), 1), {}, "one dtype"),
    ((tf.zeros([2, 3], tf.int32), tf.zeros([2, 3], tf.int32), 1), {}, "float"),
    ((tf.zeros([2, 3]), tf.zeros([2, 3]), -1), {}, "steps must be >= 0"),
    ((tf.zeros([2, 3]), tf.zeros([2, 3]), tf.constant([1, 2])), {}, "integer scalar"),
    ((tf.zeros([2, 3]), tf.zeros([2, 3]), 1), {"gradient": "backprop"}, "Unknown gradient mode"),
])
def test_bad_input_raises_a_clear_error(args, kwargs, message):
  with pytest.raises(ValueError, match=message):
    refine(_scalar_loss, *args, **kwargs)


def test_negative_steps_tensor_fails_when_run():
  with pytest.raises(tf.errors.InvalidArgumentError, match="steps must be >= 0"):
    refine(_scalar_loss, tf.zeros([2, 3]), tf.zeros([2, 3]), tf.constant(-2))


@pytest.mark.parametrize("gradient", svi.GRADIENT_MODES)
def test_a_loss_that_is_not_a_scalar_is_rejected(gradient):
  per_example = lambda mean, logvar, step: tf.reduce_sum(mean + logvar, -1)
  with pytest.raises(ValueError, match="loss_fn must return a scalar"):
    refine(per_example, tf.zeros([2, 3]), tf.zeros([2, 3]), 2, gradient=gradient)


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
