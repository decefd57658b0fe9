"""Differentiable stochastic variational inference: `refine`.

Given lambda_0 = (mean, logvar), one row per example, and per-example losses f_b(lambda_b, theta;
step) (each example's negative ELBO, with noise keyed by the step), K steps of heavy-ball SGD
refine lambda:

    v_0 = 0
    g_k = clip(grad_lambda F(lambda_k, theta; k))        mean and logvar blocks clipped separately
    v_{k+1} = momentum * v_k - g_k
    lambda_{k+1} = lambda_k + lr * v_{k+1}

The step-size convention (`step_scale`) says what F and the clip are:
  per_example  F = sum_b f_b: row b of g_k is example b's own gradient, and the clip takes the
               L2 norm of each example's mean gradient (and of its logvar gradient) separately.
               Nothing about one example depends on another or on the batch size.
  batch_mean   F = (1 / B) sum_b f_b over the whole batch B (across tf.distribute replicas), and
               the clip takes one norm over the whole [B, latent] block: the paper's convention.
               Each example moves by lr / B of its own gradient. When no clip binds, batch_mean
               at lr with a batch of B equals per_example at lr / B. The block's norm is
               sqrt(sum_b |g_b|^2) / B, so where an example's |g_b| exceeds c * B the block clip
               binds too, but it may also bind with every example under c * B: per_example with
               a clip of c * B (`SVIConfig.per_example_equivalent` in savae_tf.refiners) equals
               batch_mean wherever the block clip does not bind.

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

from typing import Callable, NamedTuple, Optional, Sequence, Tuple, Union

import tensorflow as tf

from savae_tf.distributions import GaussianParams

GRADIENT_MODES = ("unrolled", "reverse", "finite_difference", "none")
EXACT_MODES = ("unrolled", "reverse")  # the modes that differentiate gradients (second order)
SWEPT_MODES = ("reverse", "finite_difference")  # the modes with a hand-written reverse sweep
STEP_SCALES = ("per_example", "batch_mean")

# Perturbation length |h u| of the central-difference Hessian-vector product, per dtype. Central
# differences err by O(h^2) (truncation) + O(eps_machine / h) (round-off); these balance the two.
_DEFAULT_FD_RADIUS = {tf.float16: 1e-1, tf.bfloat16: 1e-1, tf.float32: 1e-2, tf.float64: 1e-5}

LossFn = Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tf.Tensor]


def global_batch_size(local_batch):
  """Examples in the whole batch: the local batch summed over tf.distribute replicas (float32)."""
  local_batch = tf.cast(local_batch, tf.float32)
  context = tf.distribute.get_replica_context()
  if context is None or context.num_replicas_in_sync == 1:
    return local_batch
  return context.all_reduce(tf.distribute.ReduceOp.SUM, local_batch)


def _group_sum(x, per_example):
  """Sum over each example's row (per_example: [B, 1, ...]) or over the whole tensor ([1, ...])."""
  axes = list(range(1, x.shape.rank)) if per_example else None
  total = tf.reduce_sum(x, axis=axes, keepdims=True)
  return total if per_example else tf.reshape(total, [1] * x.shape.rank)


def clip_by_norm(g, max_norm, per_example=False):
  """g * min(1, max_norm / ||g||): the L2 norm of each row (`per_example`) or of the whole tensor.

  Written with the double-`where` guard so that autodiff through it stays finite at g = 0
  (the `unrolled` mode differentiates this function directly).
  """
  if max_norm is None:
    return g
  sumsq = _group_sum(tf.square(g), per_example)
  over = sumsq > max_norm * max_norm
  scale = tf.where(over, max_norm * tf.math.rsqrt(tf.where(over, sumsq, 1.0)), 1.0)
  return g * tf.cast(scale, g.dtype)


def clip_by_norm_vjp(g, w, max_norm, per_example=False):
  """J^T w for J the Jacobian of `clip_by_norm` at g (J is symmetric; per example it is block
  diagonal, one block per row).

  Below the threshold J = I; above it J = (c / n) (I - g g^T / n^2) with n = ||g||, c = max_norm.
  """
  if max_norm is None:
    return w
  sumsq = _group_sum(tf.square(g), per_example)
  over = sumsq > max_norm * max_norm
  inv_norm = tf.math.rsqrt(tf.where(over, sumsq, 1.0))
  unit = g * inv_norm
  projected = w - unit * _group_sum(unit * w, per_example)
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
           inputs: Optional[Sequence[tf.Tensor]] = None,
           step_scale: str = "per_example",
           keep_steps: int = 0) -> GaussianParams:
  """Refines lambda_0 = (mean, logvar) by `steps` differentiable SVI steps; returns lambda_K.

  Args:
    loss_fn: `loss_fn(mean, logvar, step) -> [batch]`, each example's objective at refinement
      step `step` (an int32 scalar tensor in 0..K-1); row b may read only row b of mean and
      logvar. Any randomness inside it must be a function of `step`
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
      this L2 norm, per example or over the whole batch as `step_scale` says. `None`: no clip.
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
        Needs only first-order gradients (per_example: each example gets its own h, so its
        perturbation does not depend on the others). The error is O(|h u|^2) plus round-off
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
    step_scale: "per_example" (default) or "batch_mean" (the paper's); see the module docstring.
    keep_steps: for "reverse" and "finite_difference", a memory budget in steps: the last
      `keep_steps` steps keep their activations and are differentiated as "unrolled" does (no
      re-evaluation, memory growing by one step's activations each); the steps before them go
      through the reverse sweep. 0 (default): memory flat in K; >= K: the same as "unrolled".

  Returns:
    GaussianParams(mean_K, logvar_K).

  Raises:
    ValueError: mismatched or non-float mean/logvar, negative steps, an unknown gradient mode or
      step scale, keep_steps < 0 or given to a mode without a reverse sweep, or a loss_fn that
      does not return one value per example. A negative `steps` tensor fails when run, with
      `tf.errors.InvalidArgumentError`.
  """
  if gradient not in GRADIENT_MODES:
    raise ValueError(f"Unknown gradient mode {gradient!r}; expected one of {GRADIENT_MODES}.")
  if step_scale not in STEP_SCALES:
    raise ValueError(f"Unknown step_scale {step_scale!r}; expected one of {STEP_SCALES}.")
  if keep_steps < 0 or (keep_steps and gradient not in SWEPT_MODES):
    raise ValueError(f"keep_steps must be >= 0, and only 'reverse' and 'finite_difference' take "
                     f"it; got {keep_steps} with {gradient!r}.")
  mean = tf.convert_to_tensor(mean)
  logvar = tf.convert_to_tensor(logvar)
  if not mean.dtype.is_floating or mean.dtype != logvar.dtype:
    raise ValueError("mean and logvar must be float tensors of one dtype; got "
                     f"{mean.dtype.name} and {logvar.dtype.name}.")
  if not mean.shape.is_compatible_with(logvar.shape):
    raise ValueError(f"mean and logvar must have the same shape; got {mean.shape} and "
                     f"{logvar.shape}.")
  if mean.shape.rank is None or mean.shape.rank < 1:
    raise ValueError(f"mean and logvar need a leading batch axis; got shape {mean.shape}.")
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
                 fd_radius=_as_dtype(fd_radius or _DEFAULT_FD_RADIUS[dtype], dtype),
                 per_example=step_scale == "per_example")

  if gradient == "unrolled":
    state = sweep.forward(mean, logvar, 0, steps)
    return GaussianParams(state.mean, state.logvar)
  if gradient == "none":
    state = sweep.forward(tf.stop_gradient(mean), tf.stop_gradient(logvar), 0, steps)
    return GaussianParams(tf.stop_gradient(state.mean), tf.stop_gradient(state.logvar))
  hvp = sweep.exact_hvp if gradient == "reverse" else sweep.finite_difference_hvp
  swept = tf.maximum(steps - keep_steps, 0)  # the steps the reverse sweep differentiates

  @tf.custom_gradient
  def refine_with_reverse_sweep(mean0, logvar0, *extra_inputs):
    if sweep.inputs is not None:
      sweep.inputs = list(extra_inputs)  # the tensors the custom gradient sees as inputs
    state = sweep.forward(mean0, logvar0, 0, swept, keep_trajectory=True)

    def grad_fn(*d_state, variables=None):
      variables = list(variables or [])
      d_state = [tf.zeros_like(x) if d is None else d for d, x in zip(d_state, state[:4])]
      # The extra inputs and the variables are both "theta" to the reverse sweep.
      d_lambda, d_theta = sweep.backward(state.trajectory, swept, *d_state,
                                         list(extra_inputs) + variables, hvp)
      d_inputs = d_lambda + d_theta[:len(extra_inputs)]
      return (d_inputs, d_theta[len(extra_inputs):]) if variables else d_inputs

    return tuple(state[:4]), grad_fn

  state = _SweepState(*refine_with_reverse_sweep(mean, logvar, *(inputs or [])), ())
  if keep_steps:  # the kept steps, recorded by the tapes as "unrolled" is
    state = sweep.forward(state.mean, state.logvar, swept, steps,
                          velocity=(state.v_mean, state.v_logvar))
  return GaussianParams(state.mean, state.logvar)


class _SweepState(NamedTuple):
  """lambda and the momentum v after some steps, and (reverse sweep) the trajectory before."""
  mean: tf.Tensor
  logvar: tf.Tensor
  v_mean: tf.Tensor
  v_logvar: tf.Tensor
  trajectory: tuple  # lambda_k and the unclipped g_k of each step: TensorArrays, or ()


def _as_dtype(value, dtype):
  """A hyperparameter in the refined dtype (a Python float goes straight to it, not via float32)."""
  return tf.cast(value, dtype) if tf.is_tensor(value) else tf.constant(value, dtype)


class _Sweep:
  """The forward recursion and its reverse sweep for one `refine` call."""

  def __init__(self, loss_fn, inputs, lr, momentum, max_norm, fd_radius, per_example):
    self.loss_fn = loss_fn
    self.inputs = inputs
    self.lr = lr
    self.momentum = momentum
    self.max_norm = max_norm
    self.fd_radius = fd_radius
    self.per_example = per_example

  def losses(self, mean, logvar, step):
    """The per-example losses f_b, [batch]."""
    value = tf.convert_to_tensor(self.loss_fn(mean, logvar, step) if self.inputs is None
                                 else self.loss_fn(mean, logvar, step, self.inputs))
    if value.shape.rank is not None and value.shape.rank != 1:
      raise ValueError("loss_fn must return one value per example (shape [batch]); it returned "
                       f"shape {value.shape}.")
    return tf.ensure_shape(value, mean.shape[:1])

  def objective(self, values, weights=1.0):
    """F: the sum of the (weighted) per-example losses, over the whole batch for batch_mean."""
    total = tf.reduce_sum(values * weights)
    if self.per_example:
      return total
    return total / tf.cast(global_batch_size(tf.shape(values)[0]), values.dtype)

  def loss(self, mean, logvar, step):
    return self.objective(self.losses(mean, logvar, step))

  def clip(self, g):
    return clip_by_norm(g, self.max_norm, self.per_example)

  def lambda_gradient(self, mean, logvar, step):
    """grad_lambda f at step `step`, with respect to lambda only (theta-gradients are skipped)."""
    with tf.GradientTape(watch_accessed_variables=False) as tape:
      tape.watch([mean, logvar])
      value = self.loss(mean, logvar, step)
    return tape.gradient(value, [mean, logvar],
                         unconnected_gradients=tf.UnconnectedGradients.ZERO)

  def forward(self, mean, logvar, start, stop, keep_trajectory=False, velocity=None):
    """Runs steps start..stop - 1 from lambda and momentum `velocity` (default 0); with
    `keep_trajectory` (start 0), also keeps lambda_k and the unclipped g_k of each step."""
    trajectory = tuple(
        tf.TensorArray(mean.dtype, size=stop, element_shape=mean.shape)
        for _ in range(4)) if keep_trajectory else ()
    v_mean, v_logvar = velocity or (tf.zeros_like(mean), tf.zeros_like(logvar))

    def body(k, mean, logvar, v_mean, v_logvar, trajectory):
      g_mean, g_logvar = self.lambda_gradient(mean, logvar, k)
      if keep_trajectory:
        trajectory = tuple(ta.write(k, t) for ta, t in
                           zip(trajectory, (mean, logvar, g_mean, g_logvar)))
      v_mean = self.momentum * v_mean - self.clip(g_mean)
      v_logvar = self.momentum * v_logvar - self.clip(g_logvar)
      return (k + 1, mean + self.lr[0] * v_mean, logvar + self.lr[1] * v_logvar,
              v_mean, v_logvar, trajectory)

    _, *state = tf.while_loop(lambda k, *_: k < stop, body,
                              (tf.convert_to_tensor(start), mean, logvar, v_mean, v_logvar,
                               trajectory))
    return _SweepState(*state)

  def backward(self, trajectory, steps, d_mean, d_logvar, d_v_mean, d_v_logvar, theta, hvp):
    """The reverse sweep from the adjoints of lambda_K and v_K; returns ([d mean_0,
    d logvar_0], [d theta_i for each tensor or variable])."""
    means, logvars, g_means, g_logvars = trajectory

    def body(k, d_mean, d_logvar, v_mean, v_logvar, d_theta):
      v_mean = v_mean + self.lr[0] * d_mean
      v_logvar = v_logvar + self.lr[1] * d_logvar
      u_mean = clip_by_norm_vjp(g_means.read(k), -v_mean, self.max_norm, self.per_example)
      u_logvar = clip_by_norm_vjp(g_logvars.read(k), -v_logvar, self.max_norm, self.per_example)
      h_mean, h_logvar, h_theta = hvp(means.read(k), logvars.read(k), k, u_mean, u_logvar,
                                      theta)
      d_theta = [a + b for a, b in zip(d_theta, h_theta)]
      return (k - 1, d_mean + h_mean, d_logvar + h_logvar,
              self.momentum * v_mean, self.momentum * v_logvar, d_theta)

    # parallel_iterations=1: step k's loss and lambda-gradient do not depend on the adjoint, so
    # a parallel loop would run several steps' forward passes ahead and hold their activations.
    _, d_mean, d_logvar, _, _, d_theta = tf.while_loop(
        lambda k, *_: k >= 0, body,
        (steps - 1, d_mean, d_logvar, d_v_mean, d_v_logvar, [tf.zeros_like(v) for v in theta]),
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
    """(H_ll u, H_tl u) by central differences of the full gradient along u.

    The perturbation h u has length `fd_radius` per example (per_example) or over the batch.
    Example b's difference quotient is (grad f_b(lambda + h_b u) - grad f_b(lambda - h_b u)) /
    2 h_b; weighting f_b by 1 / (2 h_b) before differentiating gives every example its own h_b
    in one gradient, theta's share (a sum over examples) included.
    """
    u_sumsq = (_group_sum(tf.square(u_mean), self.per_example)
               + _group_sum(tf.square(u_logvar), self.per_example))
    nonzero = u_sumsq > 0
    h = tf.where(nonzero, self.fd_radius * tf.math.rsqrt(tf.where(nonzero, u_sumsq, 1.0)), 0.0)
    inv_2h = tf.reshape(tf.where(nonzero, 0.5 / tf.where(nonzero, h, 1.0), 0.0), [-1])
    # Each point's gradient separately, and the quotient as their difference: the gradient of
    # one difference of losses sums both paths with an AddN, and grappler's rewrite of that sum
    # plus the sweep's accumulator crashes inside the reverse loop on TF 2.21 (the paper-size
    # image model: "AlreadyExists ... AddOpsRewrite ... tmp_var").
    with tf.GradientTape(watch_accessed_variables=False, persistent=True) as tape:
      tape.watch([mean, logvar] + theta)
      plus = self.objective(self.losses(mean + h * u_mean, logvar + h * u_logvar, step), inv_2h)
      minus = self.objective(self.losses(mean - h * u_mean, logvar - h * u_logvar, step), inv_2h)
    grads = [[tf.convert_to_tensor(g) for g in
              tape.gradient(value, [mean, logvar] + theta,
                            unconnected_gradients=tf.UnconnectedGradients.ZERO)]
             for value in (plus, minus)]
    del tape
    difference = [a - b for a, b in zip(*grads)]
    return difference[0], difference[1], difference[2:]
