"""LSTM encoder and decoder for text (Kim et al. 2018, Section 5.2).

Batches are padded: `tokens` [batch, time] int32 with `lengths` [batch] (tokens counted including
`<s>` and `</s>`). Padding never changes a result: the encoder reads the state at each sequence's
true last token and the decoder is causal, so its logits at real positions ignore what follows;
`objectives.token_nll` masks the padded targets.

Decoders expose the interface `SemiAmortizedVAE` and `refine` use:
  `prepare(tokens, training)`: the work that does not depend on z (computed once per batch, not
    once per refinement step);
  `logits(context, z, training, seed)`: next-token logits [batch, time - 1, vocab] for inputs
    tokens[:, :-1] and targets tokens[:, 1:]. Dropout masks are drawn from `seed` (stateless), so a
    refinement step replays them exactly.
"""

from typing import Optional

import keras
import tensorflow as tf

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
  """Dropout whose mask is a function of `seed` (shape [2]), so it can be replayed."""
  if not training or rate == 0.0:
    return x
  return tf.nn.experimental.stateless_dropout(x, rate=rate, seed=seed)


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
    # With a mask, Keras carries the state through padding, so the last output is the output at
    # each sequence's own last token.
    summary = self.lstm(self.embed(tokens), mask=mask)
    return GaussianParams(self.mean_head(summary), self.logvar_head(summary))


@keras.saving.register_keras_serializable(package="savae_tf")
class LSTMDecoder(keras.layers.Layer):
  """p(x | z): z concatenated to every input embedding, h_0 = W z + b, c_0 = 0.

  With `latent_dim=0` it is the LSTM language model (h_0 = 0, no z input). Dropout (rate
  `dropout`) on the input embeddings and on the LSTM outputs, only with `training=True`.
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

  def prepare(self, tokens, training=False):
    del training
    return self.embed(tokens[:, :-1])

  def logits(self, context, z=None, training=False, seed=None):
    if training and self.dropout and seed is None:
      raise ValueError("LSTMDecoder needs a seed to draw dropout masks when training.")
    embed_seed, output_seed = (None, None) if seed is None else tf.unstack(
        tf.random.experimental.stateless_split(seed, 2))
    inputs = dropout(context, self.dropout, embed_seed, training)
    initial_state = None
    if self.latent_dim:
      steps = tf.shape(inputs)[1]
      inputs = tf.concat([inputs, tf.repeat(z[:, None, :], steps, axis=1)], axis=-1)
      h0 = self.init_state(z)
      initial_state = [h0, tf.zeros_like(h0)]
    hidden = self.lstm(inputs, initial_state=initial_state)
    return self.out(dropout(hidden, self.dropout, output_seed, training))

  def call(self, tokens, z=None, training=False, seed=None):
    return self.logits(self.prepare(tokens, training), z, training, seed)
