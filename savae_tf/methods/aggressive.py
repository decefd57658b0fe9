"""Aggressive inference-network training (He et al. 2019, "Lagging inference networks").

While the aggressive phase lasts, before each model update the encoder alone is trained on fresh
batches until its objective stops improving, so that it keeps up with the decoder; then the
decoder alone takes the step on the batch. The phase ends for good at the first epoch whose
validation mutual information (of the encoder's posterior) falls below the previous epoch's,
starting from 0 (so an encoder whose MI is negative after the first epoch, a collapsed one,
ends it then); from then on it is a VAE.

As their code (jxhe/vae-lagging-encoder, text.py): every aggressive update, the encoder's and
the decoder's, clips the gradient of all parameters jointly at the optimizer's clip norm and then
applies one network's part (the decoder's gradient of the summed per-sentence loss is large, so
the encoder's steps are short). The inner loop: at most `max_inner_steps` - 1 encoder updates;
every `check_every` of them, the mean loss per predicted unit (token or pixel) over those updates
is compared with the previous window's, and the loop stops when it rose. Deviation from their
code, which starts the inner loop on the batch the decoder then takes: every inner batch here is
a fresh random one (`corpus.draw`), because Keras hands the batch to the step only.

Every draw and noise is keyed by (seed, the optimizer's step, the inner step), and the phase flag,
the previous MI, the encoder's optimizer and the epoch's update counts are checkpointed, so a
killed run resumes exactly. Each epoch's metrics.json entry records `aggressive_phase` (1 while
it lasted) and `encoder_updates_per_decoder_update` (the inner loop's mean length).
"""

import keras
import tensorflow as tf

from savae_tf import replicas
from savae_tf.methods.vae import VAE


class Aggressive(VAE):
  """The VAE objective, trained with an aggressive encoder phase."""
  name = "aggressive"
  needs_training_loop = True
  max_inner_steps = 100
  check_every = 15

  def __init__(self):
    self.active = None  # built with the run's state (`training_state`)
    self.inner_loop = None  # the training loop's callback (`callbacks`)

  def _active_when_traced(self) -> bool:
    if self.active is None or self.inner_loop is None:
      raise ValueError("The aggressive method needs the training loop's hooks (its inner loop "
                       "and phase): train it with savae_tf.training.train or an experiment "
                       "(savae_tf.experiments.runner), not a bare fit.")
    with tf.init_scope():  # the flag's value when the step is traced (retraced when it flips)
      return bool(self.active.numpy())

  def trained_variables(self, model):
    if self._active_when_traced():
      return model.decoder.trainable_variables
    return model.trainable_variables

  def clipped_with(self, model):
    # In the phase the decoder's step is clipped with the encoder's gradient in the norm.
    return model.encoder.trainable_variables if self._active_when_traced() else []

  def training_state(self, model):
    if tf.distribute.get_strategy().num_replicas_in_sync > 1:
      raise ValueError("The aggressive method's inner loop runs on one device; train it without "
                       "a multi-device --strategy.")
    self.active = tf.Variable(True, trainable=False)
    self.previous_mi = tf.Variable(0.0, trainable=False, dtype=tf.float64)
    # This epoch's encoder-only and decoder-only updates of the phase.
    self.encoder_updates = tf.Variable(0, trainable=False, dtype=tf.int64)
    self.decoder_updates = tf.Variable(0, trainable=False, dtype=tf.int64)
    # The encoder's own optimizer, with the model optimizer's settings (learning rate followed).
    self.encoder_optimizer = model.optimizer.__class__.from_config(model.optimizer.get_config())
    self.encoder_optimizer.build(model.encoder.trainable_variables)
    return {"aggressive_active": self.active, "aggressive_previous_mi": self.previous_mi,
            "aggressive_encoder_optimizer": self.encoder_optimizer,
            "aggressive_encoder_updates": self.encoder_updates,
            "aggressive_decoder_updates": self.decoder_updates}

  def callbacks(self, model, corpus):
    self.inner_loop = _InnerLoop(self, model, corpus)
    return [self.inner_loop]

  def after_epoch(self, model, validation):
    decoder_updates = int(self.decoder_updates.numpy())
    entry = {"aggressive_phase": float(decoder_updates > 0),
             "encoder_updates_per_decoder_update":
                 int(self.encoder_updates.numpy()) / max(decoder_updates, 1)}
    self.encoder_updates.assign(0)
    self.decoder_updates.assign(0)
    if not bool(self.active.numpy()) or "mi" not in validation:
      return entry
    print(f"aggressive: {entry['encoder_updates_per_decoder_update']:.1f} encoder updates per "
          f"decoder update; validation mi {validation['mi']:.3f} (previous "
          f"{float(self.previous_mi.numpy()):.3f})", flush=True)
    if validation["mi"] < float(self.previous_mi.numpy()):
      self.active.assign(False)
      model.train_function = None  # retrace the step: it now trains everything
      print("aggressive: validation mi fell; the aggressive phase ends.", flush=True)
    self.previous_mi.assign(validation["mi"])
    return entry

  def encoder_step(self, model, data, seed):
    """One encoder-only update on `data`, clipped jointly with the decoder's gradient; returns
    (sum of per-example losses, units)."""
    step = model.optimizer.iterations
    with tf.GradientTape() as tape:
      out = model.forward(data, seed, True, model.kl_weight(step), 0, None, refine=False)
      loss = out["loss"]
      # Under mixed_float16 the encoder's optimizer is a LossScaleOptimizer too, whose apply
      # divides by the scale: it must be given the scaled loss (unchanged otherwise).
      scaled = self.encoder_optimizer.scale_loss(loss)
    encoder = model.encoder.trainable_variables
    grads = tape.gradient(scaled, encoder + model.decoder.trainable_variables)
    self.encoder_optimizer.apply(
        replicas.clipped_gradients(grads, self.encoder_optimizer, len(encoder)), encoder)
    units = tf.cast(tf.reduce_sum(out["tokens"]), tf.float32)
    return loss * tf.cast(tf.shape(out["tokens"])[0], tf.float32), units


class _InnerLoop(keras.callbacks.Callback):
  """Runs the encoder's inner loop before each training batch while the phase lasts."""

  def __init__(self, method: Aggressive, model, corpus):
    super().__init__()
    self.method, self.vae, self.corpus = method, model, corpus
    # One trace for every batch shape, so a resumed run computes with the very same graph.
    # `corpus.draw` gives the dataset's batches without their examples' positions ("rows").
    batch = {name: spec for name, spec in corpus.dataset().element_spec.items() if name != "rows"}
    self.step = tf.function(lambda data, seed: method.encoder_step(model, data, seed),
                            input_signature=[batch, tf.TensorSpec([2], tf.int32)],
                            autograph=False)

  def on_train_batch_begin(self, batch, logs=None):
    method, model = self.method, self.vae
    if not bool(method.active.numpy()):
      return
    method.encoder_optimizer.learning_rate.assign(model.optimizer.learning_rate)
    iteration = int(model.optimizer.iterations.numpy())
    previous, total, units = float("inf"), 0.0, 0.0
    for inner in range(1, method.max_inner_steps):
      key = iteration * method.max_inner_steps + inner
      seed = tf.constant([model.seed, key % 2**31], tf.int32)
      loss, count = self.step(self.corpus.draw(key), seed)
      total, units = total + float(loss), units + float(count)
      if inner % method.check_every == 0:
        current = total / units
        if previous - current < 0:
          break
        previous, total, units = current, 0.0, 0.0
    method.encoder_updates.assign_add(inner)
    method.decoder_updates.assign_add(1)
