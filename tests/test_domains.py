"""Tests for savae_tf.domains: each data kind is one object, found from the decoder."""

import numpy as np
import pytest
import tensorflow as tf

from savae_tf import domains
from savae_tf.data.text import Vocabulary
from savae_tf.model import SemiAmortizedVAE
from savae_tf.networks.image import GatedPixelCNN
from savae_tf.networks.synthetic import SyntheticGenerator
from savae_tf.networks.text import LSTMDecoder


def test_a_decoder_names_its_domain():
  assert domains.of(LSTMDecoder(9, 4, 4, 2)).name == "text"
  assert domains.of(GatedPixelCNN(2, 4, (3,), image_shape=(4, 4))).name == "images"
  assert domains.of(SyntheticGenerator(vocab_size=7, embed_dim=4, hidden_dim=4,
                                       mlp_dim=4)).name == "synthetic"
  with pytest.raises(ValueError, match="Unknown domain 'audio'"):
    domains.get("audio")


def test_text_observes_ragged_batches_and_counts_tokens_without_the_start_token():
  obs = domains.get("text").observe({"tokens": tf.constant([[1, 5, 6, 2], [1, 7, 2, 0]]),
                                     "lengths": tf.constant([4, 3])})
  np.testing.assert_array_equal(obs.units(), [3, 2])
  np.testing.assert_array_equal(obs.mask, [[True, True, True], [True, True, False]])
  logits = tf.zeros([2, 3, 9])  # uniform over 9 words: log 9 per real target
  np.testing.assert_allclose(obs.nll(logits), np.log(9) * np.array([3, 2]), rtol=1e-6)
  with pytest.raises(ValueError, match=r"needs batches \{'tokens', 'lengths'\}"):
    domains.get("text").observe({"images": tf.zeros([1, 2, 2, 1])})


def test_images_count_every_pixel_and_have_no_perplexity():
  images = tf.constant(np.ones([2, 3, 4, 1], np.float32))
  obs = domains.get("images").observe({"images": images})
  np.testing.assert_array_equal(obs.units(), [12, 12])
  np.testing.assert_allclose(obs.nll(tf.zeros_like(images)), [12 * np.log(2)] * 2, rtol=1e-6)
  assert domains.get("images").unit_metrics({"nll_bound": np.ones(2)}) == {}
  with pytest.raises(ValueError, match="needs batches"):
    domains.get("images").observe({"tokens": tf.zeros([1, 2], tf.int32)})


def test_perplexity_is_per_predicted_token_of_the_refined_bound_and_of_iw_nll():
  rows = {"nll_bound": np.array([9.0, 3.0]), "refined_nll_bound": np.array([6.0, 2.0]),
          "iw_nll": np.array([4.0, 2.0]), "tokens": np.array([3, 1])}
  metrics = domains.get("text").unit_metrics(rows)
  assert metrics["ppl_bound"] == pytest.approx(np.exp(8.0 / 4))
  assert metrics["ppl"] == pytest.approx(np.exp(6.0 / 4))


def test_artefacts_go_with_the_domain(tmp_path):
  vocabulary = Vocabulary.build(["a b c"])
  model = SemiAmortizedVAE(LSTMDecoder(len(vocabulary), 4, 4, 0), mode="autoreg")
  domains.of(model).save_artefacts(vocabulary, str(tmp_path))
  assert domains.of(model).load_artefacts(model, str(tmp_path)) == vocabulary
  with pytest.raises(ValueError, match="saved with its vocabulary"):
    domains.of(model).save_artefacts(None, str(tmp_path))
  with pytest.raises(ValueError, match="saved without artefacts"):
    domains.get("images").save_artefacts(vocabulary, str(tmp_path))
