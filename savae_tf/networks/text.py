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

The recurrence. On CPU, and wherever second-order gradients are needed, the LSTMs run
`lstm_sequence`: the inputs' share of the gates, x W + b, is one matrix product over the whole
sequence (for the decoder, once per batch; z's share z W_z once per refinement step) and only
h W_h stays inside the loop, whose gradient of a gradient is plain matrix products. It computes
the function of `keras.layers.LSTM` (whose weights it uses, gates in Keras' order i, f, c, o).
`use_cudnn=True` (or "auto" on a machine with a GPU) runs `keras.layers.LSTM` itself, so cuDNN
can serve it; cuDNN has no second-order gradient, so a decoder inside an exact refinement must be
built with `use_cudnn=False` (the binaries do this from the gradient mode).
"""

from typing import NamedTuple, Optional

import keras
import tensorflow as tf

from savae_tf.distributions import GaussianParams

try:  # whether any tape is recording: TensorFlow has no public API for it
  from tensorflow.python.eager.record import could_possibly_record as _a_tape_may_record
except ImportError:  # always recomputing the forward sweep is slower but always exact
  def _a_tape_may_record():
    return True


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
  """Dropout whose mask is a function of `seed` (shape [2]), so it can be replayed."""
  if not training or rate == 0.0:
    return x
  return tf.nn.experimental.stateless_dropout(x, rate=rate, seed=seed)


def runs_keras_lstm(use_cudnn) -> bool:
  """Whether an LSTM built with `use_cudnn` runs `keras.layers.LSTM` (cuDNN-capable) rather than
  `lstm_sequence`: when cuDNN is asked for, or allowed ("auto") and a GPU is present."""
  return use_cudnn is True or (use_cudnn == "auto"
                               and bool(tf.config.list_physical_devices("GPU")))


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


def _forward_sweep(gates, h0, c0, recurrent_kernel, keep):
  """Time-major gates [T, B, 4H] and keep [T, B, 1] -> states h, c [T, B, H] (carried where not
  kept) and the activations [T, B, 4H] of every step."""
  steps = tf.shape(gates)[0]
  arrays = [tf.TensorArray(gates.dtype, size=steps) for _ in range(3)]

  def body(t, h, c, hs, cs, acts):
    activations = _activations(gates[t], h, recurrent_kernel)
    state = _next_state(activations, c)
    h_t, c_t = tf.where(keep[t], state.h, h), tf.where(keep[t], state.c, c)
    return t + 1, h_t, c_t, hs.write(t, h_t), cs.write(t, c_t), acts.write(t, activations)

  _, _, _, hs, cs, acts = tf.while_loop(lambda t, *_: t < steps, body,
                                        (tf.constant(0), h0, c0, *arrays))
  return hs.stack(), cs.stack(), acts.stack()


def _backward_sweep(hs, cs, acts, h0, c0, recurrent_kernel, keep, d_hs, d_h, d_c):
  """The reverse sweep of `_forward_sweep`: d gates [T, B, 4H], d h0, d c0, d recurrent_kernel.

  Only d h_{t-1} = d z_t W_h^T runs inside the loop; the kernel's gradient, sum_t h_{t-1}^T d z_t,
  is one matrix product over all steps afterwards (per-step products with an inner dimension
  of the batch size, and their sum, cost several times more)."""
  steps = tf.shape(hs)[0]
  c_prev = tf.concat([c0[None], cs[:-1]], axis=0)
  kernel_t = tf.transpose(recurrent_kernel)

  def body(n, d_h, d_c, d_gates):
    t = steps - 1 - n
    d_h = d_h + d_hs[t]
    i, f, g, o = tf.split(acts[t], 4, axis=-1)
    tanh_c = tf.tanh(cs[t])
    d_c_total = d_c + d_h * o * (1 - tanh_c * tanh_c)
    d_z = tf.concat([d_c_total * g * i * (1 - i), d_c_total * c_prev[t] * f * (1 - f),
                     d_c_total * i * (1 - g * g), d_h * tanh_c * o * (1 - o)], axis=-1)
    d_z = tf.where(keep[t], d_z, tf.zeros_like(d_z))  # a carried step has no gates
    d_h = tf.where(keep[t], tf.matmul(d_z, kernel_t), d_h)
    d_c = tf.where(keep[t], d_c_total * f, d_c)
    return n + 1, d_h, d_c, d_gates.write(t, d_z)

  _, d_h0, d_c0, d_gates = tf.while_loop(
      lambda n, *_: n < steps, body,
      (tf.constant(0), d_h, d_c, tf.TensorArray(hs.dtype, size=steps)))
  d_gates = d_gates.stack()
  h_prev = tf.concat([h0[None], hs[:-1]], axis=0)
  d_kernel = tf.tensordot(h_prev, d_gates, [[0, 1], [0, 1]])
  return d_gates, d_h0, d_c0, d_kernel


@tf.custom_gradient
def _lstm_scan(gates, h0, c0, recurrent_kernel, keep):
  """(h [T, B, H], final h, final c) with a hand-written reverse sweep as its gradient."""
  hs, cs, acts = _forward_sweep(gates, h0, c0, recurrent_kernel, keep)

  def grad(d_hs, d_h, d_c):
    d_hs, d_h, d_c = (tf.zeros_like(x) if d is None else d
                      for d, x in ((d_hs, hs), (d_h, h0), (d_c, c0)))
    saved = hs, cs, acts
    if _a_tape_may_record():
      # A tape is still recording, so this gradient may be differentiated again (SA-VAE's exact
      # refinement): recompute the forward sweep where that tape sees how it depends on the
      # inputs (the saved values are constants to it).
      saved = _forward_sweep(gates, h0, c0, recurrent_kernel, keep)
    return (*_backward_sweep(*saved, h0, c0, recurrent_kernel, keep, d_hs, d_h, d_c), None)

  return (hs, hs[-1], cs[-1]), grad


def lstm_sequence(layer: keras.layers.LSTM, gates, initial_state: Optional[LSTMState] = None,
                  mask=None):
  """Runs `lstm_cell` over gates [batch, time, 4 * hidden]; (outputs [batch, time, hidden], final
  state). Where `mask` [batch, time] is False the state is carried unchanged (so the final state
  is the one at each sequence's last real step), as `keras.layers.LSTM` does with a mask.

  Differentiable to any order; its gradient is a hand-written reverse sweep."""
  hidden = layer.units
  batch, steps = tf.shape(gates)[0], tf.shape(gates)[1]
  if initial_state is None:
    zeros = tf.zeros([batch, hidden], gates.dtype)
    initial_state = LSTMState(zeros, zeros)
  keep = tf.ones([steps, batch, 1], tf.bool) if mask is None else tf.transpose(mask)[:, :, None]
  outputs, h, c = _lstm_scan(tf.transpose(gates, [1, 0, 2]), initial_state.h, initial_state.c,
                             recurrent_kernel_of(layer, gates.dtype), keep)
  outputs = tf.transpose(outputs, [1, 0, 2])
  outputs.set_shape([None, None, hidden])
  return outputs, LSTMState(h, c)


def run_lstm(layer: keras.layers.LSTM, inputs, mask=None):
  """What `layer(inputs, mask=mask)` returns (the whole sequence, or the last state with a mask
  carried through padding), by `keras.layers.LSTM` or `lstm_sequence` as `runs_keras_lstm`
  chooses for the layer's `use_cudnn`."""
  if runs_keras_lstm(layer.use_cudnn):
    return layer(inputs, mask=mask)
  outputs, state = lstm_sequence(layer, input_gates(layer, inputs), mask=mask)
  return outputs if layer.return_sequences else state.h


@keras.saving.register_keras_serializable(package="savae_tf")
class LSTMEncoder(keras.layers.Layer):
  """q(z | x): Embedding -> LSTM -> state at the last real token -> linear mean and logvar heads."""

  def __init__(self, vocab_size: int, word_dim: int, hidden_dim: int, latent_dim: int,
               init_scale: Optional[float] = None, use_cudnn="auto", **kwargs):
    super().__init__(**kwargs)
    self.vocab_size, self.word_dim, self.hidden_dim = vocab_size, word_dim, hidden_dim
    self.latent_dim, self.init_scale, self.use_cudnn = latent_dim, init_scale, use_cudnn
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
            "init_scale": self.init_scale, "use_cudnn": self.use_cudnn}

  def call(self, tokens, lengths):
    mask = tf.sequence_mask(lengths, maxlen=tf.shape(tokens)[1])
    # With a mask, the state is carried through padding, so the last state is each sequence's
    # state at its own last token.
    summary = run_lstm(self.lstm, self.embed(tokens), mask)
    return GaussianParams(self.mean_head(summary), self.logvar_head(summary))


@keras.saving.register_keras_serializable(package="savae_tf")
class LSTMDecoder(keras.layers.Layer):
  """p(x | z): z concatenated to every input embedding, h_0 = W z + b, c_0 = 0.

  With `latent_dim=0` it is the LSTM language model (h_0 = 0, no z input). Dropout (rate
  `dropout`) on the input embeddings (one mask per batch, shared by every refinement step) and
  on the LSTM outputs (a mask per call), only with `training=True`.
  """

  def __init__(self, vocab_size: int, word_dim: int, hidden_dim: int, latent_dim: int,
               dropout: float = 0.0, init_scale: Optional[float] = None, use_cudnn="auto",
               **kwargs):
    super().__init__(**kwargs)
    self.vocab_size, self.word_dim, self.hidden_dim = vocab_size, word_dim, hidden_dim
    self.latent_dim, self.dropout, self.init_scale = latent_dim, dropout, init_scale
    self.use_cudnn = use_cudnn
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
            "dropout": self.dropout, "init_scale": self.init_scale, "use_cudnn": self.use_cudnn}

  data_kind = "text"

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
      h0 = self.init_state(z)
    else:
      h0 = tf.zeros([batch_size, self.hidden_dim], self.compute_dtype)
    return LSTMState(h0, tf.zeros_like(h0))

  def latent_gates(self, z):
    """z's share of the gates [batch, 4 * hidden] (zero without a latent)."""
    return input_gates(self.lstm, z, slice(self.word_dim, None)) if self.latent_dim else 0.0

  def logits(self, context, z=None, training=False, seed=None):
    self._check_seed(training, seed)
    state = self.initial_state(z, tf.shape(context)[0])
    if runs_keras_lstm(self.use_cudnn):
      inputs = context
      if self.latent_dim:
        inputs = tf.concat([inputs, tf.repeat(z[:, None, :], tf.shape(inputs)[1], axis=1)], -1)
      hidden = self.lstm(inputs, initial_state=list(state))
    else:
      gates = context
      if self.latent_dim:
        gates += self.latent_gates(z)[:, None, :]
      hidden = lstm_sequence(self.lstm, gates, state)[0]
    return self.out(dropout(hidden, self.dropout, seed, training))

  def step(self, tokens, z, state: LSTMState):
    """Logits [batch, vocab] for the next token after `tokens` [batch], and the new state."""
    gates = input_gates(self.lstm, self.embed(tokens), slice(0, self.word_dim))
    state = lstm_cell(gates + self.latent_gates(z), state,
                      recurrent_kernel_of(self.lstm, gates.dtype))
    return self.out(state.h), state

  def call(self, tokens, z=None, training=False, seed=None):
    prepare_seed, logits_seed = (None, None) if seed is None else tf.unstack(
        tf.random.experimental.stateless_split(seed, 2))
    return self.logits(self.prepare(tokens, training, prepare_seed), z, training, logits_seed)
