"""LSTM encoder and decoder for text (Kim et al. 2018, Section 5.2).

Batches are padded: `tokens` [batch, time] int32 with `lengths` [batch] (tokens counted including
`<s>` and `</s>`). Padding never changes a result: the encoder reads the state at each sequence's
true last token and the decoder is causal, so its logits at real positions ignore what follows;
`objectives.token_nll` masks the padded targets.

Decoders expose the interface `SemiAmortizedVAE` and `refine` use:
  `prepare(tokens, training, seed)`: the work that does not depend on z, computed once per batch
    rather than once per refinement step: here the input embeddings, dropped out with one mask per
    batch (drawn from `seed`), already multiplied by the LSTM's input kernel;
  `logits(context, z, training, seed)`: next-token logits [batch, time - 1, vocab] for inputs
    tokens[:, :-1] and targets tokens[:, 1:]. The output dropout mask is drawn from `seed`
    (stateless), so a refinement step replays it exactly.
and, for generation in linear time, `initial_state(z, batch_size)` and
`step(tokens, z, state) -> (logits, state)`: one token at a time with the LSTM state carried.
Under a mixed-precision policy (`keras.mixed_precision`) the networks compute in its compute
dtype and take z and return logits, means and log-variances in its variable dtype (float32), so
lambda, the refiner and the losses stay in float32.

The recurrence. On CPU, and wherever second-order gradients are needed, the LSTMs run
`lstm_sequence`: the inputs' share of the gates, x W + b, is one matrix product over the whole
sequence (for the decoder, once per batch; z's share z W_z once per refinement step) and only
h W_h stays inside the loop, whose gradient of a gradient is plain matrix products. It computes
the function of `keras.layers.LSTM` (whose weights it uses, gates in Keras' order i, f, c, o).
`use_cudnn=True` (or "auto" on a machine with a GPU) runs `keras.layers.LSTM` itself, so cuDNN
can serve it; cuDNN has no second-order gradient, so a decoder inside an exact refinement must be
built with `use_cudnn=False` (the binaries do this from the gradient mode). A graph traced inside
`savae_tf.devices.portable()` (every SavedModel) always runs `lstm_sequence`, so it holds no
cuDNN kernel. `xla_sweeps` ("auto": on a GPU) compiles `lstm_sequence`'s sweeps with XLA.
"""

from typing import NamedTuple, Optional

import keras
import tensorflow as tf

from savae_tf import devices
from savae_tf import distributions
from savae_tf.distributions import GaussianParams


def uniform(init_scale):
  """The paper's U(-s, s) initialiser, or None for the Keras default."""
  return None if init_scale is None else keras.initializers.RandomUniform(-init_scale, init_scale)


def lstm(units, init_scale, use_cudnn, **kwargs):
  init = uniform(init_scale)
  if init is None:
    return keras.layers.LSTM(units, use_cudnn=use_cudnn, **kwargs)
  # PyTorch's two bias vectors are both U(-s, s); one Keras bias of U(-s, s) keeps the range, and
  # no forget-gate bias trick, as in the paper.
  return keras.layers.LSTM(units, use_cudnn=use_cudnn, kernel_initializer=init,
                           recurrent_initializer=init, bias_initializer=init,
                           unit_forget_bias=False, **kwargs)


def dense(units, init_scale, **kwargs):
  init = uniform(init_scale)
  if init is None:
    return keras.layers.Dense(units, **kwargs)
  return keras.layers.Dense(units, kernel_initializer=init, bias_initializer=init, **kwargs)


def embedding(vocab_size, dim, init_scale, **kwargs):
  init = uniform(init_scale)
  return keras.layers.Embedding(vocab_size, dim, embeddings_initializer=init or "uniform",
                                **kwargs)


def dropout(x, rate: float, seed, training):
  """Dropout whose mask is a function of `seed` (a shape [2] seed or `BatchRows`), so it can be
  replayed: `tf.nn.experimental.stateless_dropout`'s arithmetic, on `distributions.uniform`."""
  if not training or rate == 0.0:
    return x
  keep = distributions.uniform(seed, tf.shape(x), x.dtype) >= rate
  # A product with the scaled mask rather than a select: the same values, and its gradient is a
  # product too (the select's gradient broadcasts a zero, a slow path that cost about 5% of an
  # exact refinement step at the paper's size).
  return x * (tf.cast(keep, x.dtype) * tf.constant(1 / (1 - rate), x.dtype))


def runs_keras_lstm(use_cudnn) -> bool:
  """Whether an LSTM built with `use_cudnn` runs `keras.layers.LSTM` (cuDNN-capable) rather than
  `lstm_sequence`: when cuDNN is asked for, or allowed ("auto") and a GPU is present; never
  while tracing portably (`devices.portable`: a SavedModel must run on a CPU too)."""
  if devices.tracing_portably():
    return False
  return use_cudnn is True or (use_cudnn == "auto" and devices.gpu_present())


class LSTMState(NamedTuple):
  h: tf.Tensor  # [batch, hidden]
  c: tf.Tensor  # [batch, hidden]


def input_gates(layer: keras.layers.LSTM, inputs, rows=None):
  """The inputs' share of the gates, `inputs` W[rows] (+ b when `rows` starts at 0), for every
  position at once: [..., input] -> [..., 4 * hidden]. `rows` selects kernel rows (a slice), so
  a concatenated input's parts can be projected separately."""
  kernel = tf.cast(layer.cell.kernel, inputs.dtype)
  rows = rows or slice(None)
  gates = tf.tensordot(inputs, kernel[rows], 1)
  if rows.start in (None, 0):
    gates += tf.cast(layer.cell.bias, inputs.dtype)
  return gates


def recurrent_kernel_of(layer: keras.layers.LSTM, dtype):
  return tf.cast(layer.cell.recurrent_kernel, dtype)


def _activations(gates, h, recurrent_kernel):
  """The gate activations (i, f, g, o) concatenated, from the input's share of the gates and h."""
  i, f, g, o = tf.split(gates + tf.matmul(h, recurrent_kernel), 4, axis=-1)
  return tf.concat([tf.sigmoid(i), tf.sigmoid(f), tf.tanh(g), tf.sigmoid(o)], axis=-1)


def _next_state(activations, c):
  i, f, g, o = tf.split(activations, 4, axis=-1)
  c = f * c + i * g
  return LSTMState(o * tf.tanh(c), c)


def lstm_cell(gates, state: LSTMState, recurrent_kernel) -> LSTMState:
  """One LSTM step from the input's share of the gates [batch, 4 * hidden]: Keras' LSTMCell
  (gates i, f, c, o; sigmoid and tanh) with h W_h added here."""
  return _next_state(_activations(gates, state.h, recurrent_kernel), state.c)


def _select(keep, kept, carried):
  """`kept` where the step is kept, else `carried`; without a mask (keep None) every step is kept
  and no select runs (a select per step and value is measurable in the refinement's loops)."""
  return kept if keep is None else tf.where(keep, kept, carried)


def _forward_sweep(gates, h0, c0, recurrent_kernel, keep):
  """Time-major gates [T, B, 4H] and keep [T, B, 1] (or None: every step) -> states h, c
  [T, B, H] (carried where not kept) and the activations [T, B, 4H] of every kept step (zero
  where carried)."""
  steps = tf.shape(gates)[0]
  arrays = [tf.TensorArray(gates.dtype, size=steps) for _ in range(3)]

  def body(t, h, c, hs, cs, acts):
    activations = _activations(gates[t], h, recurrent_kernel)
    state = _next_state(activations, c)
    kept = None if keep is None else keep[t]
    h_t, c_t = _select(kept, state.h, h), _select(kept, state.c, c)
    activations = _select(kept, activations, tf.zeros_like(activations))
    return t + 1, h_t, c_t, hs.write(t, h_t), cs.write(t, c_t), acts.write(t, activations)

  # maximum_iterations: XLA needs the TensorArrays' length bounded.
  _, _, _, hs, cs, acts = tf.while_loop(lambda t, *_: t < steps, body,
                                        (tf.constant(0), h0, c0, *arrays),
                                        maximum_iterations=steps)
  return hs.stack(), cs.stack(), acts.stack()


def _previous(first, sequence):
  """[first, sequence[0], ..., sequence[T - 2]]: each step's incoming state."""
  return tf.concat([first[None], sequence[:-1]], axis=0)


def _zeros_if_none(d, like):
  return tf.zeros_like(like) if d is None else d


def _reverse_sweep(acts, cs, c_prev, recurrent_kernel, keep, d_hs, d_cs, d_acts,
                   keep_carries=False):
  """The reverse sweep of `_forward_sweep`, given the cotangents of its outputs hs, cs and acts.

  Returns d_z [T, B, 4H] (the adjoint of each step's gate pre-activations x_t + h_{t-1} W_h,
  which is also the gradient of the gates), d h0 and d c0, and with `keep_carries` the
  per-step e_t and C_t [T, B, H] that `_reverse_sweep_adjoint` needs. Per step t, carrying the
  adjoints (dh, dc) of h_t and c_t from step t + 1:
      e = dh + d_hs[t];   C = dc + d_cs[t] + e o (1 - tanh^2 c_t)
      d_z = [(C g + d_i) i (1 - i), (C c_{t-1} + d_f) f (1 - f), (C i + d_g) (1 - g^2),
             (e tanh c_t + d_o) o (1 - o)]          (d_i, d_f, d_g, d_o: d_acts[t])
      dh <- d_z W_h^T;   dc <- C f
  and at a carried step d_z = 0, dh <- e, dc <- C. Only d_z W_h^T is a matrix product inside
  the loop: the kernel's gradient, sum_t h_{t-1}^T d_z_t, is one product over all steps
  afterwards (per-step products with an inner dimension of the batch size cost several times
  more)."""
  steps = tf.shape(acts)[0]
  kernel_t = tf.transpose(recurrent_kernel)
  zero_state = tf.zeros_like(cs[0])
  arrays = [tf.TensorArray(acts.dtype, size=steps) for _ in range(3 if keep_carries else 1)]

  def body(n, dh, dc, arrays):
    t = steps - 1 - n
    i, f, g, o = tf.split(acts[t], 4, axis=-1)
    tanh_c = tf.tanh(cs[t])
    e = dh + d_hs[t]
    big_c = dc + d_cs[t] + e * o * (1 - tanh_c * tanh_c)
    d_i, d_f, d_g, d_o = tf.split(d_acts[t], 4, axis=-1)
    d_z = tf.concat([(big_c * g + d_i) * i * (1 - i), (big_c * c_prev[t] + d_f) * f * (1 - f),
                     (big_c * i + d_g) * (1 - g * g), (e * tanh_c + d_o) * o * (1 - o)], axis=-1)
    kept = None if keep is None else keep[t]
    d_z = _select(kept, d_z, tf.zeros_like(d_z))  # a carried step has no gates
    dh = _select(kept, tf.matmul(d_z, kernel_t), e)
    dc = _select(kept, big_c * f, big_c)
    arrays = [arrays[0].write(t, d_z)] + (
        [arrays[1].write(t, e), arrays[2].write(t, big_c)] if keep_carries else [])
    return n + 1, dh, dc, arrays

  _, d_h0, d_c0, arrays = tf.while_loop(lambda n, *_: n < steps, body,
                                        (tf.constant(0), zero_state, zero_state, arrays),
                                        maximum_iterations=steps)
  return (arrays[0].stack(), d_h0, d_c0, *(a.stack() for a in arrays[1:]))


def _reverse_sweep_adjoint(acts, cs, c_prev, recurrent_kernel, keep, d_z, es, big_cs, d_acts,
                           dd_z, dd_h0, dd_c0):
  """The adjoint of `_reverse_sweep` (what differentiating its results again needs), given the
  cotangents dd_z, dd_h0, dd_c0 of its results d_z, d h0, d c0; a sweep forward in time, the
  reverse sweep's steps undone in reverse order. Returns the cotangents of acts, cs, c_prev,
  W_h, d_hs, d_cs and d_acts."""
  steps = tf.shape(acts)[0]
  names = ("acts", "cs", "c_prev", "dh_in", "d_hs", "d_cs", "d_acts")
  arrays = {name: tf.TensorArray(acts.dtype, size=steps) for name in names}

  def body(t, dh, dc, arrays):  # dh, dc: the cotangents of step t's results dh and dc
    i, f, g, o = tf.split(acts[t], 4, axis=-1)
    tanh_c = tf.tanh(cs[t])
    slope = 1 - tanh_c * tanh_c
    d_i, d_f, d_g, d_o = tf.split(d_acts[t], 4, axis=-1)
    bar_i, bar_f, bar_g, bar_o = tf.split(dd_z[t] + tf.matmul(dh, recurrent_kernel), 4, -1)
    # cotangents of the four factors (C g + d_i), (C c_{t-1} + d_f), (C i + d_g), (e tanh c + d_o)
    in_i, in_f, in_g, in_o = (bar_i * i * (1 - i), bar_f * f * (1 - f), bar_g * (1 - g * g),
                              bar_o * o * (1 - o))
    c_bar = dc * f + in_i * g + in_f * c_prev[t] + in_g * i
    e_bar = in_o * tanh_c + c_bar * o * slope
    big_c, e_t = big_cs[t], es[t]
    acts_bar = tf.concat([
        bar_i * (big_c * g + d_i) * (1 - 2 * i) + in_g * big_c,
        bar_f * (big_c * c_prev[t] + d_f) * (1 - 2 * f) + dc * big_c,
        bar_g * (big_c * i + d_g) * (-2 * g) + in_i * big_c,
        bar_o * (e_t * tanh_c + d_o) * (1 - 2 * o) + c_bar * e_t * slope], axis=-1)
    tanh_c_bar = in_o * e_t - 2 * c_bar * e_t * o * tanh_c
    kept = None if keep is None else keep[t]
    zeros = tf.zeros_like(dh)
    results = {
        "acts": _select(kept, acts_bar, tf.zeros_like(acts_bar)),
        "cs": _select(kept, tanh_c_bar * slope, zeros),
        "c_prev": _select(kept, in_f * big_c, zeros),
        "dh_in": _select(kept, dh, zeros),
        "d_hs": _select(kept, e_bar, dh),
        "d_cs": _select(kept, c_bar, dc),
        "d_acts": _select(kept, tf.concat([in_i, in_f, in_g, in_o], -1), tf.zeros_like(acts_bar)),
    }
    arrays = {name: arrays[name].write(t, results[name]) for name in names}
    return t + 1, results["d_hs"], results["d_cs"], arrays

  _, _, _, arrays = tf.while_loop(lambda t, *_: t < steps, body,
                                  (tf.constant(0), dd_h0, dd_c0, arrays),
                                  maximum_iterations=steps)
  out = {name: array.stack() for name, array in arrays.items()}
  kernel_bar = tf.tensordot(out["dh_in"], d_z, [[0, 1], [0, 1]])  # d_h_t = d_z_t W_h^T
  return (out["acts"], out["cs"], out["c_prev"], kernel_bar, out["d_hs"], out["d_cs"],
          out["d_acts"])


class _Sweeps(NamedTuple):
  forward: object
  reverse: object
  adjoint: object


def _jit(fn):
  """`fn` compiled by XLA (one program per shape; reduce_retracing keeps the Python-side traces
  few across sentence lengths). Its callers are custom gradients, so no tape needs to see into
  it: its inputs are detached, or a recording tape would ask TensorFlow for a differentiable
  variant of the program, whose loop state cannot leave XLA."""
  compiled = tf.function(fn, jit_compile=True, reduce_retracing=True, autograph=False)

  def call(*args, **kwargs):
    return compiled(*(None if a is None else tf.stop_gradient(a) for a in args), **kwargs)

  return call


# The three sweeps as they are, or each compiled whole by XLA: one fused program per sweep
# instead of some 15-30 small kernels per time step (what bounds them on a GPU).
_SWEEPS = {False: _Sweeps(_forward_sweep, _reverse_sweep, _reverse_sweep_adjoint),
           True: _Sweeps(_jit(_forward_sweep), _jit(_reverse_sweep),
                         _jit(_reverse_sweep_adjoint))}


def _differentiable_reverse_sweep(acts, cs, c_prev, recurrent_kernel, keep, d_hs, d_cs, d_acts,
                                  sweeps):
  """`_reverse_sweep` with `_reverse_sweep_adjoint` as its gradient (exact to second order: its
  own gradient treats the saved per-step values as constants)."""

  @tf.custom_gradient
  def sweep(acts, cs, c_prev, recurrent_kernel, d_hs, d_cs, d_acts):
    d_z, d_h0, d_c0, es, big_cs = sweeps.reverse(acts, cs, c_prev, recurrent_kernel, keep, d_hs,
                                                 d_cs, d_acts, keep_carries=True)

    def grad(dd_z, dd_h0, dd_c0):
      cotangents = [_zeros_if_none(d, x) for d, x in ((dd_z, d_z), (dd_h0, d_h0), (dd_c0, d_c0))]
      return sweeps.adjoint(acts, cs, c_prev, recurrent_kernel, keep, d_z, es, big_cs, d_acts,
                            *cotangents)

    return (d_z, d_h0, d_c0), grad

  return sweep(acts, cs, c_prev, recurrent_kernel, d_hs, d_cs, d_acts)


def _lstm_scan(gates, h0, c0, recurrent_kernel, keep, sweeps):
  """`_forward_sweep`'s (hs, cs, acts), with `_differentiable_reverse_sweep` as its gradient.

  The gradient reads the op's own outputs rather than values saved inside it: a tape that
  recorded this op sees through them how they depend on the inputs, so differentiating the
  gradient again is exact without recomputing the forward sweep."""
  recorded = {}

  @tf.custom_gradient
  def scan(gates, h0, c0, recurrent_kernel):
    hs, cs, acts = sweeps.forward(gates, h0, c0, recurrent_kernel, keep)

    def grad(d_hs, d_cs, d_acts):
      hs, cs, acts = recorded["outputs"]
      d_hs, d_cs, d_acts = (_zeros_if_none(d, x)
                            for d, x in ((d_hs, hs), (d_cs, cs), (d_acts, acts)))
      d_z, d_h0, d_c0 = _differentiable_reverse_sweep(
          acts, cs, _previous(c0, cs), recurrent_kernel, keep, d_hs, d_cs, d_acts, sweeps)
      return d_z, d_h0, d_c0, tf.tensordot(_previous(h0, hs), d_z, [[0, 1], [0, 1]])

    return (hs, cs, acts), grad

  recorded["outputs"] = scan(gates, h0, c0, recurrent_kernel)
  return recorded["outputs"]


def lstm_sequence(layer: keras.layers.LSTM, gates, initial_state: Optional[LSTMState] = None,
                  mask=None, xla: bool = False):
  """Runs `lstm_cell` over gates [batch, time, 4 * hidden]; (outputs [batch, time, hidden], final
  state). Where `mask` [batch, time] is False the state is carried unchanged (so the final state
  is the one at each sequence's last real step), as `keras.layers.LSTM` does with a mask.

  Its gradient is a hand-written reverse sweep, and so is that gradient's gradient (what SA-VAE's
  exact refinement takes): exact to second order. With `xla`, each sweep (forward, reverse, and
  the reverse's adjoint) runs as one XLA program: the same values and derivatives."""
  hidden = layer.units
  batch = tf.shape(gates)[0]
  if initial_state is None:
    zeros = tf.zeros([batch, hidden], gates.dtype)
    initial_state = LSTMState(zeros, zeros)
  keep = None if mask is None else tf.transpose(mask)[:, :, None]
  hs, cs, _ = _lstm_scan(tf.transpose(gates, [1, 0, 2]), initial_state.h, initial_state.c,
                         recurrent_kernel_of(layer, gates.dtype), keep, _SWEEPS[bool(xla)])
  outputs = tf.transpose(hs, [1, 0, 2])
  outputs.set_shape([None, None, hidden])
  return outputs, LSTMState(hs[-1], cs[-1])


def run_lstm(layer: keras.layers.LSTM, inputs, mask=None, xla_sweeps: str = "off"):
  """What `layer(inputs, mask=mask)` returns (the whole sequence, or the last state with a mask
  carried through padding), by `keras.layers.LSTM` or `lstm_sequence` as `runs_keras_lstm`
  chooses for the layer's `use_cudnn` (the latter compiled as `devices.use_xla(xla_sweeps)`)."""
  if runs_keras_lstm(layer.use_cudnn):
    return layer(inputs, mask=mask)
  outputs, state = lstm_sequence(layer, input_gates(layer, inputs), mask=mask,
                                 xla=devices.use_xla(xla_sweeps))
  return outputs if layer.return_sequences else state.h


@keras.saving.register_keras_serializable(package="savae_tf")
class LSTMEncoder(keras.layers.Layer):
  """q(z | x): Embedding -> LSTM -> state at the last real token -> linear mean and logvar heads."""

  def __init__(self, vocab_size: int, word_dim: int, hidden_dim: int, latent_dim: int,
               init_scale: Optional[float] = None, use_cudnn="auto", xla_sweeps: str = "auto",
               **kwargs):
    super().__init__(**kwargs)
    self.vocab_size, self.word_dim, self.hidden_dim = vocab_size, word_dim, hidden_dim
    self.latent_dim, self.init_scale, self.use_cudnn = latent_dim, init_scale, use_cudnn
    self.xla_sweeps = devices.check_xla_setting(xla_sweeps)
    self.embed = embedding(vocab_size, word_dim, init_scale, dtype=self.dtype_policy)
    self.lstm = lstm(hidden_dim, init_scale, use_cudnn, dtype=self.dtype_policy)
    self.mean_head = dense(latent_dim, init_scale, dtype=self.dtype_policy)
    self.logvar_head = dense(latent_dim, init_scale, dtype=self.dtype_policy)
    self.embed.build((None, None))
    self.lstm.build((None, None, word_dim))
    self.mean_head.build((None, hidden_dim))
    self.logvar_head.build((None, hidden_dim))
    self.built = True

  def get_config(self):
    return {**super().get_config(), "vocab_size": self.vocab_size, "word_dim": self.word_dim,
            "hidden_dim": self.hidden_dim, "latent_dim": self.latent_dim,
            "init_scale": self.init_scale, "use_cudnn": self.use_cudnn,
            "xla_sweeps": self.xla_sweeps}

  def call(self, tokens, lengths):
    mask = tf.sequence_mask(lengths, maxlen=tf.shape(tokens)[1])
    # With a mask, the state is carried through padding, so the last state is each sequence's
    # state at its own last token.
    summary = run_lstm(self.lstm, self.embed(tokens), mask, self.xla_sweeps)
    return GaussianParams(*(tf.cast(head(summary), self.dtype)
                            for head in (self.mean_head, self.logvar_head)))


@keras.saving.register_keras_serializable(package="savae_tf")
class LSTMDecoder(keras.layers.Layer):
  """p(x | z): z concatenated to every input embedding, h_0 = W z + b, c_0 = 0.

  With `latent_dim=0` it is the LSTM language model (h_0 = 0, no z input). Dropout (rate
  `dropout`) on the input embeddings (one mask per batch, shared by every refinement step) and
  on the LSTM outputs (a mask per call), only with `training=True`.
  """

  def __init__(self, vocab_size: int, word_dim: int, hidden_dim: int, latent_dim: int,
               dropout: float = 0.0, init_scale: Optional[float] = None, use_cudnn="auto",
               xla_sweeps: str = "auto", **kwargs):
    super().__init__(**kwargs)
    self.vocab_size, self.word_dim, self.hidden_dim = vocab_size, word_dim, hidden_dim
    self.latent_dim, self.dropout, self.init_scale = latent_dim, dropout, init_scale
    self.use_cudnn, self.xla_sweeps = use_cudnn, devices.check_xla_setting(xla_sweeps)
    self.embed = embedding(vocab_size, word_dim, init_scale, dtype=self.dtype_policy)
    self.lstm = lstm(hidden_dim, init_scale, use_cudnn, return_sequences=True,
                     dtype=self.dtype_policy)
    self.out = dense(vocab_size, init_scale, dtype=self.dtype_policy)
    self.embed.build((None, None))
    self.lstm.build((None, None, word_dim + latent_dim))
    self.out.build((None, None, hidden_dim))
    if latent_dim:
      self.init_state = dense(hidden_dim, init_scale, dtype=self.dtype_policy)
      self.init_state.build((None, latent_dim))
    self.built = True

  def get_config(self):
    return {**super().get_config(), "vocab_size": self.vocab_size, "word_dim": self.word_dim,
            "hidden_dim": self.hidden_dim, "latent_dim": self.latent_dim,
            "dropout": self.dropout, "init_scale": self.init_scale, "use_cudnn": self.use_cudnn,
            "xla_sweeps": self.xla_sweeps}

  domain = "text"  # savae_tf.domains

  @property
  def floats_per_target(self):
    """Logits per predicted token (what one importance sample costs in memory)."""
    return self.vocab_size

  @property
  def has_second_order_gradient(self):
    """False when the Keras layer runs and may pick cuDNN, whose kernel has none."""
    return not runs_keras_lstm(self.use_cudnn)

  def _check_seed(self, training, seed):
    if training and self.dropout and seed is None:
      raise ValueError("LSTMDecoder needs a seed to draw dropout masks when training.")

  def prepare(self, tokens, training=False, seed=None):
    """The input embeddings of tokens[:, :-1], dropped out (one mask from `seed`), and, unless
    the Keras layer runs, their share of the gates [batch, time - 1, 4 * hidden]."""
    self._check_seed(training, seed)
    embedded = dropout(self.embed(tokens[:, :-1]), self.dropout, seed, training)
    if runs_keras_lstm(self.use_cudnn):
      return embedded
    return input_gates(self.lstm, embedded, slice(0, self.word_dim))

  def initial_state(self, z, batch_size=None) -> LSTMState:
    """(h_0, c_0): (W z + b, 0), or zeros for the language model (then give `batch_size`)."""
    if self.latent_dim:
      h0 = self.init_state(self._compute(z))
    else:
      h0 = tf.zeros([batch_size, self.hidden_dim], self.compute_dtype)
    return LSTMState(h0, tf.zeros_like(h0))

  def latent_gates(self, z):
    """z's share of the gates [batch, 4 * hidden] (zero without a latent)."""
    if not self.latent_dim:
      return 0.0
    return input_gates(self.lstm, self._compute(z), slice(self.word_dim, None))

  def _compute(self, z):
    return tf.cast(z, self.compute_dtype)

  def logits(self, context, z=None, training=False, seed=None):
    self._check_seed(training, seed)
    state = self.initial_state(z, tf.shape(context)[0])
    if runs_keras_lstm(self.use_cudnn):
      inputs = context
      if self.latent_dim:
        z = self._compute(z)
        inputs = tf.concat([inputs, tf.repeat(z[:, None, :], tf.shape(inputs)[1], axis=1)], -1)
      hidden = self.lstm(inputs, initial_state=list(state))
    else:
      gates = context
      if self.latent_dim:
        gates += self.latent_gates(z)[:, None, :]
      hidden = lstm_sequence(self.lstm, gates, state, xla=devices.use_xla(self.xla_sweeps))[0]
    return tf.cast(self.out(dropout(hidden, self.dropout, seed, training)), self.dtype)

  def step(self, tokens, z, state: LSTMState):
    """Logits [batch, vocab] for the next token after `tokens` [batch], and the new state."""
    gates = input_gates(self.lstm, self.embed(tokens), slice(0, self.word_dim))
    state = lstm_cell(gates + self.latent_gates(z), state,
                      recurrent_kernel_of(self.lstm, gates.dtype))
    return tf.cast(self.out(state.h), self.dtype), state

  def call(self, tokens, z=None, training=False, seed=None):
    prepare_seed, logits_seed = (None, None) if seed is None else distributions.split(seed, 2)
    return self.logits(self.prepare(tokens, training, prepare_seed), z, training, logits_seed)
