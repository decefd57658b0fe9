"""Tests for the aggressive method (He et al. 2019): the inner loop trains the encoder alone and
stops by its rule, the model step trains the decoder alone while the phase lasts, the phase ends
when validation MI stops rising, and a resumed run ends as an uninterrupted one."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from savae_tf import training
from savae_tf.data import text
from savae_tf.model import SemiAmortizedVAE
from savae_tf.networks.text import LSTMDecoder, LSTMEncoder


def corpus_and_vocabulary(seed=0):
  rng = np.random.default_rng(seed)
  words = "the a cat dog sat ran on mat big small red".split()
  sentences = [" ".join(rng.choice(words, rng.integers(2, 7))) for _ in range(48)]
  vocabulary = text.Vocabulary.build(sentences)
  encoded = text.encode_corpus(sentences, vocabulary, 50)
  return text.BatchedCorpus(encoded, 8, vocabulary.pad_id, seed=1), encoded, vocabulary


def aggressive_model(vocabulary):
  keras.utils.set_random_seed(0)
  model = SemiAmortizedVAE(LSTMDecoder(len(vocabulary), 4, 4, 2),
                           LSTMEncoder(len(vocabulary), 4, 4, 2), mode="aggressive", latent_dim=2)
  model.compile(optimizer=keras.optimizers.SGD(0.5))
  model.optimizer.build(model.trainable_variables)
  model.method.training_state(model)
  return model


def weights(layer):
  return [v.numpy().copy() for v in layer.trainable_variables]


def changed(before, layer):
  return [not np.array_equal(a, v.numpy()) for a, v in zip(before, layer.trainable_variables)]


def test_the_inner_loop_trains_the_encoder_alone_and_stops_at_a_check_or_the_cap():
  corpus, _, vocabulary = corpus_and_vocabulary()
  model = aggressive_model(vocabulary)
  loop, = model.method.callbacks(model, corpus)
  encoder, decoder = weights(model.encoder), weights(model.decoder)
  loop.on_train_batch_begin(0)
  assert not any(changed(decoder, model.decoder)) and all(changed(encoder, model.encoder))
  updates = int(model.method.encoder_optimizer.iterations)
  assert updates == 99 or (updates % 15 == 0 and updates >= 30)  # the first check compares
  assert int(model.optimizer.iterations) == 0  # the model's own step is not taken here


def test_the_model_step_trains_the_decoder_alone_while_the_phase_lasts():
  corpus, _, vocabulary = corpus_and_vocabulary()
  model = aggressive_model(vocabulary)
  model.method.callbacks(model, corpus)  # the training loop's hooks, not run here
  data = corpus.padded[0]
  encoder, decoder = weights(model.encoder), weights(model.decoder)
  model.train_step(data)
  assert not any(changed(encoder, model.encoder)) and all(changed(decoder, model.decoder))
  model.method.active.assign(False)  # after the phase: a VAE step
  encoder = weights(model.encoder)
  model.train_step(data)
  assert all(changed(encoder, model.encoder))


@pytest.mark.parametrize("mis, active_after", [
    ((0.1, 0.3, 0.3, 0.2), (True, True, True, False)),  # ends when mi falls (equal goes on)
    ((-0.05,), (False,)),  # from 0 (He et al.): a collapsed encoder ends it after epoch 1
])
def test_the_phase_ends_at_the_first_epoch_whose_validation_mi_falls(mis, active_after):
  _, _, vocabulary = corpus_and_vocabulary()
  model = aggressive_model(vocabulary)
  model.train_function = "compiled"
  for mi, still_active in zip(mis, active_after):
    model.method.after_epoch(model, {"mi": mi})
    assert bool(model.method.active.numpy()) == still_active
  assert model.train_function is None  # retraced: the step now trains the encoder too
  model.method.after_epoch(model, {"mi": 5.0})
  assert not bool(model.method.active.numpy())  # for good


def clipped_model(vocabulary, clip):
  """An aggressive model whose optimizer (plain SGD, lr 1) clips at `clip`."""
  keras.utils.set_random_seed(0)
  model = SemiAmortizedVAE(LSTMDecoder(len(vocabulary), 4, 4, 2),
                           LSTMEncoder(len(vocabulary), 4, 4, 2), mode="aggressive", latent_dim=2)
  model.compile(optimizer=keras.optimizers.SGD(1.0, global_clipnorm=clip))
  model.optimizer.build(model.trainable_variables)
  model.method.training_state(model)
  return model


def gradients(model, data, seed):
  """The gradient of the training loss (lambda_0's terms, the step's seed) of every variable."""
  with tf.GradientTape() as tape:
    loss = model.forward(data, seed, True, model.kl_weight(model.optimizer.iterations), 0, None,
                         refine=False)["loss"]
  return tape.gradient(loss, model.encoder.trainable_variables
                       + model.decoder.trainable_variables)


@pytest.mark.parametrize("network", ["encoder", "decoder"])
def test_each_update_of_the_phase_clips_every_parameters_gradient_jointly(network):
  # He et al.'s clip_grad_norm_(vae.parameters(), 5) before enc_optimizer.step() (and before
  # dec_optimizer.step()): one network's step is its part of the jointly clipped gradient.
  corpus, _, vocabulary = corpus_and_vocabulary()
  model = clipped_model(vocabulary, clip=1e-3)
  model.method.callbacks(model, corpus)
  data = corpus.padded[0]
  encoder_vars = model.encoder.trainable_variables
  if network == "encoder":
    seed = tf.constant([7, 11], tf.int32)
    grads = gradients(model, data, seed)
    updated, part = encoder_vars, grads[:len(encoder_vars)]
    before = [v.numpy().copy() for v in updated]
    model.method.encoder_step(model, data, seed)
  else:
    seed = tf.random.experimental.stateless_fold_in(tf.constant([model.seed, 0]),  # the step's
                                                    model.optimizer.iterations)
    grads = gradients(model, data, seed)
    updated, part = model.decoder.trainable_variables, grads[len(encoder_vars):]
    before = [v.numpy().copy() for v in updated]
    model.train_step(data)
  joint = float(tf.linalg.global_norm(grads))
  own = float(tf.linalg.global_norm(part))
  assert joint > own > 1e-3  # the clip binds, and jointly it binds harder than alone
  for old, g, v in zip(before, part, updated):
    np.testing.assert_allclose(v.numpy(), old - tf.convert_to_tensor(g).numpy() * 1e-3 / joint,
                               rtol=1e-4, atol=1e-9,
                               err_msg=v.path)


def window_losses(loop, window_means):
  """Makes the loop's encoder step report, for each update of window w, window_means[w]."""
  calls = []

  def step(data, seed):
    calls.append(seed)
    window = min((len(calls) - 1) // 15, len(window_means) - 1)
    return window_means[window] * 10.0, 10.0

  loop.step = step
  return calls


@pytest.mark.parametrize("window_means, expected_updates", [
    ([5.0, 4.0, 4.5], 45),  # the third window's loss rose: stop at that check
    ([5.0, 5.0], 99),  # an unchanged loss goes on: only a rise stops it (He et al.'s rule)
    ([9.0 - k for k in range(7)], 99),  # always improving: the cap
])
def test_the_inner_loop_stops_when_a_windows_loss_rises(window_means, expected_updates):
  corpus, _, vocabulary = corpus_and_vocabulary()
  model = aggressive_model(vocabulary)
  loop, = model.method.callbacks(model, corpus)
  calls = window_losses(loop, window_means)
  loop.on_train_batch_begin(0)
  assert len(calls) == expected_updates


def test_the_loop_counts_encoder_updates_per_decoder_update_and_each_epoch_reports_them():
  corpus, _, vocabulary = corpus_and_vocabulary()
  model = aggressive_model(vocabulary)
  loop, = model.method.callbacks(model, corpus)
  for window_means in ([5.0, 4.0, 4.5], [5.0, 6.0], [9.0 - k for k in range(7)]):  # 45, 30, 99
    window_losses(loop, window_means)
    loop.on_train_batch_begin(0)
  entry = model.method.after_epoch(model, {"mi": 0.5})
  assert entry == {"aggressive_phase": 1.0,
                   "encoder_updates_per_decoder_update": pytest.approx((45 + 30 + 99) / 3)}
  # Counted afresh each epoch; after the phase, the entry says so.
  window_losses(loop, [5.0, 6.0])
  loop.on_train_batch_begin(0)
  assert model.method.after_epoch(model, {"mi": 0.1}) == {  # mi fell: the phase ends
      "aggressive_phase": 1.0, "encoder_updates_per_decoder_update": 30.0}
  calls = window_losses(loop, [5.0, 6.0])
  loop.on_train_batch_begin(0)
  assert not calls
  assert model.method.after_epoch(model, {"mi": 0.2}) == {
      "aggressive_phase": 0.0, "encoder_updates_per_decoder_update": 0.0}


def test_a_resumed_run_ends_as_an_uninterrupted_one(tmp_path):
  corpus, encoded, vocabulary = corpus_and_vocabulary()
  valid = text.BatchedCorpus(encoded[:16], 8, vocabulary.pad_id).dataset()

  def run(directory, epochs):
    model = aggressive_model(vocabulary)
    history = training.train(model, corpus, epochs, str(tmp_path / directory), valid, verbose=0)
    return model, history

  whole, whole_history = run("whole", 2)
  run("split", 1)
  resumed, resumed_history = run("split", 2)
  assert [e["epoch"] for e in resumed_history] == [1, 2]
  assert (int(resumed.method.encoder_optimizer.iterations)
          == int(whole.method.encoder_optimizer.iterations) > 0)
  for a, b in zip(whole.trainable_variables, resumed.trainable_variables):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7, err_msg=a.path)
  assert resumed_history[-1]["val_mi"] == pytest.approx(whole_history[-1]["val_mi"], rel=1e-5)
  assert ([e["encoder_updates_per_decoder_update"] for e in resumed_history]
          == [e["encoder_updates_per_decoder_update"] for e in whole_history])
  assert whole_history[0]["encoder_updates_per_decoder_update"] >= 30  # the first check's


def test_a_bare_fit_refuses_it():
  corpus, _, vocabulary = corpus_and_vocabulary()
  with pytest.raises(ValueError, match="needs the training loop"):
    aggressive_model(vocabulary).fit(corpus.dataset(), epochs=1, verbose=0)
