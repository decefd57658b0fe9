"""Differentiable stochastic variational inference: `refine`.

Given lambda_0 = (mean, logvar) and a loss f(lambda, theta; step) (the negative ELBO with noise
keyed by the step), K steps of heavy-ball SGD refine lambda:

    v_0 = 0
    g_k = clip(grad_lambda f(lambda_k, theta; k))        mean and logvar blocks clipped separately
    v_{k+1} = momentum * v_k - g_k
    lambda_{k+1} = lambda_k + lr * v_{k+1}

and lambda_K is returned. Gradients flow from lambda_K back to lambda_0 and to every variable f
reads (theta), as reverse-mode differentiation of that recursion gives them. With adjoints
lambda_bar_{k+1} (from the loss at lambda_K downwards) and v_bar (the momentum adjoint, 0 at K):

    v_bar <- v_bar + lr * lambda_bar_{k+1}
    u_k = J_clip(g_k)^T (-v_bar)                          the clip's Jacobian is symmetric
    lambda_bar_k = lambda_bar_{k+1} + H_lambda,lambda(k) u_k
    theta_bar   += H_theta,lambda(k) u_k
    v_bar <- momentum * v_bar

(Algorithm 1 of Kim et al. 2018, here with the clip differentiated exactly.) The gradient modes
differ only in how that reverse pass is obtained; the forward recursion is the same in all four.
"""

from typing import Callable, Optional, Sequence, Tuple, Union

import tensorflow as tf

from savae_tf.distributions import GaussianParams

GRADIENT_MODES = ("unrolled", "reverse", "finite_difference", "none")

# Perturbation length |h u| of the central-difference Hessian-vector product, per dtype. Central
# differences err by O(h^2) (truncation) + O(eps_machine / h) (round-off); these balance the two.
_DEFAULT_FD_RADIUS = {tf.float16: 1e-1, tf.bfloat16: 1e-1, tf.float32: 1e-2, tf.float64: 1e-5}

LossFn = Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tf.Tensor]


def clip_by_norm(g, max_norm):
  """g * min(1, max_norm / ||g||), the L2 norm taken over the whole tensor.

  Written with the double-`where` guard so that autodiff through it stays finite at g = 0
  (the `unrolled` mode differentiates this function directly).
  """
  if max_norm is None:
    return g
  sumsq = tf.reduce_sum(tf.square(g))
  over = sumsq > max_norm * max_norm
  scale = tf.where(over, max_norm * tf.math.rsqrt(tf.where(over, sumsq, 1.0)), 1.0)
  return g * tf.cast(scale, g.dtype)


def clip_by_norm_vjp(g, w, max_norm):
  """J^T w for J the Jacobian of `clip_by_norm` at g (J is symmetric).

  Below the threshold J = I; above it J = (c / n) (I - g g^T / n^2) with n = ||g||, c = max_norm.
  """
  if max_norm is None:
    return w
  sumsq = tf.reduce_sum(tf.square(g))
  over = sumsq > max_norm * max_norm
  inv_norm = tf.math.rsqrt(tf.where(over, sumsq, 1.0))
  unit = g * inv_norm
  projected = w - unit * tf.reduce_sum(unit * w)
  return tf.where(over, max_norm * inv_norm * projected, w)


def refine(loss_fn: LossFn,
           mean,
           logvar,
           steps: Union[int, tf.Tensor],
           lr: Union[float, Tuple[float, float]] = 1.0,
           momentum: float = 0.5,
           max_grad_norm: Optional[float] = 5.0,
           gradient: str = "unrolled",
           fd_radius: Optional[float] = None,
           inputs: Optional[Sequence[tf.Tensor]] = None) -> GaussianParams:
  """Refines lambda_0 = (mean, logvar) by `steps` differentiable SVI steps; returns lambda_K.

  Args:
    loss_fn: `loss_fn(mean, logvar, step) -> scalar`, the objective of refinement step `step`
      (an int32 scalar tensor in 0..K-1). Any randomness inside it must be a function of `step`
      (e.g. `savae_tf.distributions.step_seed(seed, step)`), because the reverse modes evaluate it
      again and must see the same noise and dropout masks. It may read any trainable variables
      (the decoder's theta); gradients reach them. With `inputs`, it is called as
      `loss_fn(mean, logvar, step, inputs)`.
    mean, logvar: lambda_0, float tensors of the same shape and dtype ([batch, latent]).
    steps: K >= 0, a Python int or a scalar int32 tensor (the loop is a `tf.while_loop`, so a
      new value does not retrace a `tf.function`).
    lr: step size, or a pair (lr for mean, lr for logvar) as in the paper's code.
    momentum: heavy-ball momentum.
    max_grad_norm: the mean block and the logvar block of each gradient are clipped separately to
      this L2 norm, taken over the whole batch tensor (the paper's convention). `None`: no clip.
    gradient: how gradients flow back through the K steps:
      - "unrolled": nested `tf.GradientTape`s record the whole loop; exact second-order
        gradients, memory grows with K times the loss's activations. The reference.
      - "reverse": the reverse sweep above as a `tf.custom_gradient`. Keeps only lambda_k and g_k,
        re-evaluates `loss_fn` at each step in reverse, and computes the Hessian-vector products
        H_lambda,lambda u and H_theta,lambda u exactly with nested tapes; the loss's activations are
        held for one step at a time (inside `tf.function`; eagerly an enclosing tape still records
        the forward loop).
      - "finite_difference": the same sweep with central differences,
        H u ~ (grad f(lambda + h u) - grad f(lambda - h u)) / 2h with |h u| = `fd_radius`.
        Needs only first-order gradients. The error is O(|h u|^2) plus round-off
        O(eps_machine / |h u|): about 1e-4 relative at best in float32, and wrong wherever the
        perturbation crosses a kink of the loss (ReLU, max, the clip threshold).
      - "none": lambda_K is returned with its gradient stopped (VAE+SVI baselines, evaluation).
      Exact modes ("unrolled", "reverse") need second-order gradients, which the cuDNN LSTM
      kernel does not have: on GPU pass `use_cudnn=False` to every recurrent layer inside
      `loss_fn`, or use "finite_difference" or "none".
    fd_radius: perturbation length for "finite_difference"; default 1e-2 in float32, 1e-5 in
      float64.
    inputs: tensors that `loss_fn` reads and that need gradients, typically work that does not
      depend on z and is computed once outside the K steps (a decoder's embeddings). Pass them
      here rather than by closure: the reverse modes return gradients only for `mean`, `logvar`,
      `inputs` and the variables `loss_fn` reads, so a captured tensor that depends on trainable
      variables would silently lose its share of the refinement gradient.

  Returns:
    GaussianParams(mean_K, logvar_K).

  Raises:
    ValueError: mismatched or non-float mean/logvar, negative steps, an unknown gradient mode,
      or a loss_fn that does not return a scalar. A negative `steps` tensor fails when run, with
      `tf.errors.InvalidArgumentError`.
  """
  if gradient not in GRADIENT_MODES:
    raise ValueError(f"Unknown gradient mode {gradient!r}; expected one of {GRADIENT_MODES}.")
  mean = tf.convert_to_tensor(mean)
  logvar = tf.convert_to_tensor(logvar)
  if not mean.dtype.is_floating or mean.dtype != logvar.dtype:
    raise ValueError("mean and logvar must be float tensors of one dtype; got "
                     f"{mean.dtype.name} and {logvar.dtype.name}.")
  if not mean.shape.is_compatible_with(logvar.shape):
    raise ValueError(f"mean and logvar must have the same shape; got {mean.shape} and "
                     f"{logvar.shape}.")
  if isinstance(steps, int):
    if steps < 0:
      raise ValueError(f"steps must be >= 0; got {steps}.")
    steps = tf.constant(steps, tf.int32)
  else:
    steps = tf.convert_to_tensor(steps)
    if steps.shape.rank not in (None, 0) or not steps.dtype.is_integer:
      raise ValueError(f"steps must be an integer scalar; got {steps.dtype.name}{steps.shape}.")
    steps = tf.cast(steps, tf.int32)
    with tf.control_dependencies(
        [tf.debugging.assert_non_negative(steps, message="refine: steps must be >= 0")]):
      steps = tf.identity(steps)

  dtype = mean.dtype
  lr_mean, lr_logvar = lr if isinstance(lr, (tuple, list)) else (lr, lr)
  sweep = _Sweep(loss_fn, None if inputs is None else list(inputs),
                 lr=(_as_dtype(lr_mean, dtype), _as_dtype(lr_logvar, dtype)),
                 momentum=_as_dtype(momentum, dtype),
                 max_norm=None if max_grad_norm is None else _as_dtype(max_grad_norm, dtype),
                 fd_radius=_as_dtype(fd_radius or _DEFAULT_FD_RADIUS[dtype], dtype))

  if gradient == "unrolled":
    mean_k, logvar_k, _ = sweep.forward(mean, logvar, steps, keep_trajectory=False)
    return GaussianParams(mean_k, logvar_k)
  if gradient == "none":
    mean_k, logvar_k, _ = sweep.forward(
        tf.stop_gradient(mean), tf.stop_gradient(logvar), steps, keep_trajectory=False)
    return GaussianParams(tf.stop_gradient(mean_k), tf.stop_gradient(logvar_k))
  hvp = sweep.exact_hvp if gradient == "reverse" else sweep.finite_difference_hvp

  @tf.custom_gradient
  def refine_with_reverse_sweep(mean0, logvar0, *extra_inputs):
    if sweep.inputs is not None:
      sweep.inputs = list(extra_inputs)  # the tensors the custom gradient sees as inputs
    mean_k, logvar_k, trajectory = sweep.forward(mean0, logvar0, steps, keep_trajectory=True)

    def grad_fn(d_mean, d_logvar, variables=None):
      variables = list(variables or [])
      d_mean = tf.zeros_like(mean_k) if d_mean is None else d_mean
      d_logvar = tf.zeros_like(logvar_k) if d_logvar is None else d_logvar
      # The extra inputs and the variables are both "theta" to the reverse sweep.
      d_lambda, d_theta = sweep.backward(trajectory, steps, d_mean, d_logvar,
                                         list(extra_inputs) + variables, hvp)
      d_inputs = d_lambda + d_theta[:len(extra_inputs)]
      return (d_inputs, d_theta[len(extra_inputs):]) if variables else d_inputs

    return (mean_k, logvar_k), grad_fn

  mean_k, logvar_k = refine_with_reverse_sweep(mean, logvar, *(inputs or []))
  return GaussianParams(mean_k, logvar_k)


def _as_dtype(value, dtype):
  """A hyperparameter in the refined dtype (a Python float goes straight to it, not via float32)."""
  return tf.cast(value, dtype) if tf.is_tensor(value) else tf.constant(value, dtype)


class _Sweep:
  """The forward recursion and its reverse sweep for one `refine` call."""

  def __init__(self, loss_fn, inputs, lr, momentum, max_norm, fd_radius):
    self.loss_fn = loss_fn
    self.inputs = inputs
    self.lr = lr
    self.momentum = momentum
    self.max_norm = max_norm
    self.fd_radius = fd_radius

  def loss(self, mean, logvar, step):
    value = tf.convert_to_tensor(self.loss_fn(mean, logvar, step) if self.inputs is None
                                 else self.loss_fn(mean, logvar, step, self.inputs))
    if value.shape.rank is not None and value.shape.rank != 0:
      raise ValueError(f"loss_fn must return a scalar; it returned shape {value.shape}.")
    if value.shape.rank is None:
      value = tf.ensure_shape(value, [])
    return value

  def lambda_gradient(self, mean, logvar, step):
    """grad_lambda f at step `step`, with respect to lambda only (theta-gradients are skipped)."""
    with tf.GradientTape(watch_accessed_variables=False) as tape:
      tape.watch([mean, logvar])
      value = self.loss(mean, logvar, step)
    return tape.gradient(value, [mean, logvar],
                         unconnected_gradients=tf.UnconnectedGradients.ZERO)

  def full_gradient(self, mean, logvar, step, theta):
    with tf.GradientTape(watch_accessed_variables=False) as tape:
      tape.watch([mean, logvar] + theta)
      value = self.loss(mean, logvar, step)
    grads = tape.gradient(value, [mean, logvar] + theta,
                          unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return [tf.convert_to_tensor(g) for g in grads]

  def forward(self, mean, logvar, steps, keep_trajectory):
    """Runs the K steps; with `keep_trajectory`, also returns lambda_k and unclipped g_k."""
    trajectory = tuple(
        tf.TensorArray(mean.dtype, size=steps, element_shape=mean.shape)
        for _ in range(4)) if keep_trajectory else ()

    def body(k, mean, logvar, v_mean, v_logvar, trajectory):
      g_mean, g_logvar = self.lambda_gradient(mean, logvar, k)
      if keep_trajectory:
        trajectory = tuple(ta.write(k, t) for ta, t in
                           zip(trajectory, (mean, logvar, g_mean, g_logvar)))
      v_mean = self.momentum * v_mean - clip_by_norm(g_mean, self.max_norm)
      v_logvar = self.momentum * v_logvar - clip_by_norm(g_logvar, self.max_norm)
      return (k + 1, mean + self.lr[0] * v_mean, logvar + self.lr[1] * v_logvar,
              v_mean, v_logvar, trajectory)

    _, mean, logvar, _, _, trajectory = tf.while_loop(
        lambda k, *_: k < steps, body,
        (tf.constant(0), mean, logvar, tf.zeros_like(mean), tf.zeros_like(logvar), trajectory))
    return mean, logvar, trajectory

  def backward(self, trajectory, steps, d_mean, d_logvar, theta, hvp):
    """The reverse sweep; returns ([d mean_0, d logvar_0], [d theta_i for each tensor or variable])."""
    means, logvars, g_means, g_logvars = trajectory

    def body(k, d_mean, d_logvar, v_mean, v_logvar, d_theta):
      v_mean = v_mean + self.lr[0] * d_mean
      v_logvar = v_logvar + self.lr[1] * d_logvar
      u_mean = clip_by_norm_vjp(g_means.read(k), -v_mean, self.max_norm)
      u_logvar = clip_by_norm_vjp(g_logvars.read(k), -v_logvar, self.max_norm)
      h_mean, h_logvar, h_theta = hvp(means.read(k), logvars.read(k), k, u_mean, u_logvar,
                                      theta)
      d_theta = [a + b for a, b in zip(d_theta, h_theta)]
      return (k - 1, d_mean + h_mean, d_logvar + h_logvar,
              self.momentum * v_mean, self.momentum * v_logvar, d_theta)

    # parallel_iterations=1: step k's loss and lambda-gradient do not depend on the adjoint, so
    # a parallel loop would run several steps' forward passes ahead and hold their activations.
    _, d_mean, d_logvar, _, _, d_theta = tf.while_loop(
        lambda k, *_: k >= 0, body,
        (steps - 1, d_mean, d_logvar, tf.zeros_like(d_mean), tf.zeros_like(d_logvar),
         [tf.zeros_like(v) for v in theta]),
        parallel_iterations=1)
    return [d_mean, d_logvar], d_theta

  def exact_hvp(self, mean, logvar, step, u_mean, u_logvar, theta):
    """(H_ll u, H_tl u) at step `step` by reverse-over-reverse differentiation."""
    with tf.GradientTape(watch_accessed_variables=False) as outer:
      outer.watch([mean, logvar] + theta)
      g_mean, g_logvar = self.lambda_gradient(mean, logvar, step)
    grads = outer.gradient([g_mean, g_logvar], [mean, logvar] + theta,
                           output_gradients=[u_mean, u_logvar],
                           unconnected_gradients=tf.UnconnectedGradients.ZERO)
    grads = [tf.convert_to_tensor(g) for g in grads]
    return grads[0], grads[1], grads[2:]

  def finite_difference_hvp(self, mean, logvar, step, u_mean, u_logvar, theta):
    """(H_ll u, H_tl u) by central differences of the full gradient along u."""
    u_norm = tf.sqrt(tf.reduce_sum(tf.square(u_mean)) + tf.reduce_sum(tf.square(u_logvar)))
    nonzero = u_norm > 0
    h = tf.where(nonzero, self.fd_radius / tf.where(nonzero, u_norm, 1.0), 0.0)
    plus = self.full_gradient(mean + h * u_mean, logvar + h * u_logvar, step, theta)
    minus = self.full_gradient(mean - h * u_mean, logvar - h * u_logvar, step, theta)
    inv_2h = tf.where(nonzero, 0.5 / tf.where(nonzero, h, 1.0), 0.0)
    diff = [(p - m) * inv_2h for p, m in zip(plus, minus)]
    return diff[0], diff[1], diff[2:]
