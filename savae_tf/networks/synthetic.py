"""The generator of the paper's synthetic experiment (Table 1), as reconstructed here.

    z ~ N(0, I_2),  h_t = LSTM(h_{t-1}, embed(x_{t-1})),  x_t ~ softmax(MLP([h_t; z]))

with x_0 = <s>. Assumptions (the paper's repository has no synthetic code): embedding and hidden
size 100, an MLP with one tanh hidden layer of 500 units, vocabulary 1000 output words plus a start
token (id `vocab_size`) that is only ever an input. The oracle's weights (scaled so that its true
NLL and plain SVI's gap match the paper's) are drawn in savae_tf/data/synthetic.py.

z enters only the MLP, so the LSTM states do not depend on z: `prepare` computes them once per
batch and the K refinement steps only rerun the MLP. Generation carries the LSTM state
(`initial_state`, `step`), one token at a time.
"""

from typing import Optional

import keras
import tensorflow as tf

from savae_tf import decoding
from savae_tf.networks import text


@keras.saving.register_keras_serializable(package="savae_tf")
class SyntheticGenerator(keras.layers.Layer):
  """p(x | z) of the synthetic experiment, with the decoder interface of `SemiAmortizedVAE`."""

  def __init__(self, vocab_size: int = 1000, embed_dim: int = 100, hidden_dim: int = 100,
               mlp_dim: int = 500, latent_dim: int = 2, init_scale: Optional[float] = None,
               **kwargs):
    super().__init__(**kwargs)
    self.vocab_size, self.embed_dim, self.hidden_dim = vocab_size, embed_dim, hidden_dim
    self.mlp_dim, self.latent_dim, self.init_scale = mlp_dim, latent_dim, init_scale
    self.embed = text.embedding(vocab_size + 1, embed_dim, init_scale)
    self.lstm = text.lstm(hidden_dim, init_scale, use_cudnn="auto", return_sequences=True)
    self.hidden = text.dense(mlp_dim, init_scale, activation="tanh")
    self.out = text.dense(vocab_size, init_scale)
    self.embed.build((None, None))
    self.lstm.build((None, None, embed_dim))
    self.hidden.build((None, None, hidden_dim + latent_dim))
    self.out.build((None, None, mlp_dim))
    self.built = True

  # The start token is an input id past the output vocabulary: vocabularies have vocab_size + 1 words.
  input_only_ids = 1
  domain = "synthetic"  # savae_tf.domains

  @property
  def floats_per_target(self):
    return self.vocab_size

  @property
  def start_token(self):
    return self.vocab_size

  def get_config(self):
    return {**super().get_config(), "vocab_size": self.vocab_size, "embed_dim": self.embed_dim,
            "hidden_dim": self.hidden_dim, "mlp_dim": self.mlp_dim,
            "latent_dim": self.latent_dim, "init_scale": self.init_scale}

  def prepare(self, tokens, training=False, seed=None):
    del training, seed  # no dropout
    return text.run_lstm(self.lstm, self.embed(tokens[:, :-1]))

  def logits(self, context, z, training=False, seed=None):
    del training, seed  # no dropout
    steps = tf.shape(context)[1]
    return self.out(self.hidden(
        tf.concat([context, tf.repeat(z[:, None, :], steps, axis=1)], axis=-1)))

  def initial_state(self, z, batch_size=None) -> text.LSTMState:
    zeros = tf.zeros([tf.shape(z)[0] if batch_size is None else batch_size, self.hidden_dim])
    return text.LSTMState(zeros, zeros)

  def step(self, tokens, z, state: text.LSTMState):
    """Logits [batch, vocab] for the next token after `tokens` [batch], and the new state."""
    state = text.lstm_cell(text.input_gates(self.lstm, self.embed(tokens)), state,
                           text.recurrent_kernel_of(self.lstm, tf.float32))
    return self.out(self.hidden(tf.concat([state.h, z], axis=-1))), state

  def call(self, tokens, z, training=False, seed=None):
    return self.logits(self.prepare(tokens), z)

  def sample(self, z, length: int, seed):
    """Sequences [batch, length + 1] (start token first) drawn from p(x | z), stateless."""
    tokens = decoding.decode(self, z, self.start_token, length, 1.0, seed).tokens
    return tf.concat([tf.fill([tf.shape(z)[0], 1], self.start_token), tokens], axis=1)
