"""Tests of autoencoder pretraining (Li et al. 2019), which composes with any encoder method:
beta = 0 while it lasts, then the schedule from its end; the decoder alone is re-initialised."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from savae_tf import actions
from savae_tf import schedules
from savae_tf import training
from savae_tf.data import text
from savae_tf.model import SemiAmortizedVAE, SVIConfig
from savae_tf.networks.text import LSTMDecoder, LSTMEncoder


def corpus():
  rng = np.random.default_rng(0)
  words = "the a cat dog sat ran on mat big small red".split()
  sentences = [" ".join(rng.choice(words, rng.integers(2, 7))) for _ in range(40)]
  vocabulary = text.Vocabulary.build(sentences)
  encoded = text.encode_corpus(sentences, vocabulary, 50)
  return text.BatchedCorpus(encoded, 8, vocabulary.pad_id, seed=1), len(vocabulary)


def model(vocab_size, mode="savae", **kwargs):
  keras.utils.set_random_seed(0)
  built = SemiAmortizedVAE(LSTMDecoder(vocab_size, 4, 4, 2, init_scale=0.1),
                           LSTMEncoder(vocab_size, 4, 4, 2), mode=mode, latent_dim=2,
                           svi_config=SVIConfig(steps=2, lr=0.1), **kwargs)
  built.compile(optimizer=keras.optimizers.SGD(0.5))
  return built


def test_beta_is_0_while_pretraining_then_the_schedule_from_its_end():
  pretrained = model(9, kl_schedule=schedules.Linear(4), pretrain_steps=10)
  betas = [float(pretrained.kl_weight(tf.constant(t, tf.int64))) for t in (0, 9, 10, 13, 14, 99)]
  np.testing.assert_allclose(betas, [0.0, 0.0, 0.35, 1.0, 1.0, 1.0], rtol=1e-6)
  assert float(model(9, kl_schedule=schedules.Linear(4)).kl_weight(0)) == pytest.approx(0.35)


def test_pretraining_trains_an_autoencoder_then_restarts_the_decoder_only(tmp_path):
  batches, vocab_size = corpus()
  pretrained = model(vocab_size, pretrain_steps=len(batches))
  training.train(pretrained, batches, 1, str(tmp_path / "pretrained"), verbose=0)
  # The same epoch with beta = 0 and no restart: the same encoder, a trained decoder.
  autoencoder = model(vocab_size, kl_schedule=schedules.Constant(0.0))
  training.train(autoencoder, batches, 1, str(tmp_path / "autoencoder"), verbose=0)
  for a, b in zip(pretrained.encoder.weights, autoencoder.encoder.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
  # The decoder: exactly a newly built one's initial weights (drawn from seed + 1).
  fresh = model(vocab_size)
  actions.reinitialize_decoder(fresh, batches.draw(0), pretrained.seed + 1)
  for a, b, trained in zip(pretrained.decoder.weights, fresh.decoder.weights,
                           autoencoder.decoder.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    assert not np.array_equal(a.numpy(), trained.numpy())
  assert np.all(np.abs(pretrained.decoder.weights[1].numpy()) <= 0.1)  # U(-0.1, 0.1) again


def test_only_a_method_with_an_encoder_pretrains():
  with pytest.raises(ValueError, match="only a method with an encoder"):
    model(9, mode="svi", pretrain_steps=5)


def test_a_run_resumed_after_the_restart_ends_as_an_uninterrupted_one(tmp_path):
  batches, vocab_size = corpus()

  def run(directory, epochs):
    pretrained = model(vocab_size, pretrain_steps=len(batches))
    training.train(pretrained, batches, epochs, str(tmp_path / directory), verbose=0)
    return pretrained

  whole = run("whole", 2)
  run("split", 1)  # ends with the restart, checkpointed
  resumed = run("split", 2)  # must not restart the decoder again
  for a, b in zip(whole.trainable_variables, resumed.trainable_variables):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7, err_msg=a.path)
