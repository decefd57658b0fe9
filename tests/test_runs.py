"""Tests for savae_tf.runs: a saved model directory loads back to the same model; a run
directory refuses what would mix two runs."""

import json

import numpy as np
import pytest
import tensorflow as tf

from savae_tf import runs
from savae_tf.domains import text as text_domain
from savae_tf.data import synthetic
from savae_tf.data.text import Vocabulary
from savae_tf.model import SemiAmortizedVAE, SVIConfig
from savae_tf.networks.synthetic import SyntheticGenerator
from savae_tf.networks.text import LSTMDecoder, LSTMEncoder


def scores(model, tokens, lengths):
  return model.score({"tokens": tokens, "lengths": lengths}, 3, 5)


@pytest.mark.parametrize("kind", ["text", "synthetic"])
def test_a_saved_model_loads_back_with_the_same_outputs(kind, tmp_path):
  if kind == "text":
    vocabulary = Vocabulary.build(["a b c d e f"])
    decoder, latent = LSTMDecoder(len(vocabulary), 4, 5, 2, dropout=0.3), 2
  else:
    vocabulary = synthetic.vocabulary(20)
    decoder, latent = SyntheticGenerator(20, 4, 5, 6, latent_dim=2), 2
  model = SemiAmortizedVAE(decoder, LSTMEncoder(len(vocabulary), 4, 5, latent), mode="savae",
                           latent_dim=latent, svi_config=SVIConfig(steps=4, lr=0.5,
                                                                   gradient="unrolled"))
  runs.save_model(model, vocabulary, str(tmp_path))
  loaded, loaded_vocabulary = runs.load_model(str(tmp_path))
  assert loaded_vocabulary == vocabulary
  assert loaded.get_config() == model.get_config()
  tokens = tf.constant([[2, 4, 5, 3, 0], [2, 6, 7, 8, 3]]) % len(vocabulary)
  lengths = tf.constant([4, 5])
  for key, value in scores(model, tokens, lengths).items():
    np.testing.assert_allclose(scores(loaded, tokens, lengths)[key], value, rtol=1e-6, err_msg=key)


def test_missing_or_mismatched_files_are_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    runs.load_model(str(tmp_path / "nowhere"))
  with pytest.raises(FileNotFoundError, match="no config.json"):
    runs.load_model(str(tmp_path))
  vocabulary = Vocabulary.build(["a b c"])
  model = SemiAmortizedVAE(LSTMDecoder(len(vocabulary), 4, 5, 2), LSTMEncoder(len(vocabulary), 4, 5, 2),
                           mode="vae", latent_dim=2)
  runs.save_model(model, vocabulary, str(tmp_path))
  Vocabulary.build(["a b c d"]).save(str(tmp_path / text_domain.VOCAB))
  with pytest.raises(ValueError, match="vocab.json has 8 words but the model was built for 7"):
    runs.load_model(str(tmp_path))


def test_an_image_model_loads_back_with_its_batch_norm_statistics(tmp_path):
  from savae_tf.networks.image import GatedPixelCNN, ResNetEncoder
  encoder = ResNetEncoder(2, channels=4, stages=1, image_shape=(6, 6))
  decoder = GatedPixelCNN(2, channels=4, kernel_sizes=(3,), image_shape=(6, 6))
  model = SemiAmortizedVAE(decoder, encoder, mode="savae", latent_dim=2,
                           svi_config=SVIConfig(steps=2))
  images = tf.cast(tf.random.stateless_uniform([4, 6, 6, 1], [0, 1]) < 0.5, tf.float32)
  encoder(images, training=True)  # moves the moving averages away from their initial values
  runs.save_model(model, None, str(tmp_path))
  assert not (tmp_path / text_domain.VOCAB).exists()
  loaded, vocabulary = runs.load_model(str(tmp_path))
  assert vocabulary is None
  for mine, theirs in zip(loaded.encoder.non_trainable_variables, encoder.non_trainable_variables):
    np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
  expected, got = model.score({"images": images}, 2, 5), loaded.score({"images": images}, 2, 5)
  for key in ("nll_bound", "refined_nll_bound", "iw_nll"):
    np.testing.assert_allclose(got[key], expected[key], rtol=1e-6, err_msg=key)
  with pytest.raises(ValueError, match="saved without artefacts"):
    runs.save_model(model, Vocabulary.build(["a"]), str(tmp_path / "other"))


RUN = {"model": "savae", "dec_h_dim": 128, "svi_lr": None}


def checkpointed(directory, flags=RUN):
  """A run directory as a training binary leaves it after its first checkpoint."""
  runs.claim_run_directory(str(directory), flags)
  (directory / runs.CHECKPOINTS).mkdir()
  (directory / runs.CHECKPOINTS / "ckpt-1.index").write_text("")


def test_a_flag_added_after_a_run_began_counts_at_its_default(tmp_path):
  run_dir = tmp_path / "run"
  checkpointed(run_dir)  # run.json without --refiner, which did not exist yet
  defaults = {"refiner": "sgd", "refiner_units": 64}
  runs.claim_run_directory(str(run_dir), dict(RUN, refiner="sgd", refiner_units=64),
                           defaults=defaults)  # its behaviour then: resumed
  with pytest.raises(runs.RunDirectoryError, match="--refiner=sgd \\(now learned\\)"):
    runs.claim_run_directory(str(run_dir), dict(RUN, refiner="learned", refiner_units=64),
                             defaults=defaults)


def test_a_run_directory_resumes_only_with_the_flags_it_was_started_with(tmp_path):
  run_dir = tmp_path / "run"
  checkpointed(run_dir)
  runs.claim_run_directory(str(run_dir), dict(RUN))  # the same run: resumed
  with pytest.raises(runs.RunDirectoryError) as refused:
    runs.claim_run_directory(str(run_dir), dict(RUN, model="vae", dec_h_dim=256))
  message = str(refused.value)
  assert "--dec_h_dim=128 (now 256)" in message and "--model=savae (now vae)" in message
  assert "svi_lr" not in message and "--overwrite" in message
  assert (run_dir / runs.CHECKPOINTS).is_dir()  # refused: nothing deleted
  runs.claim_run_directory(str(run_dir), dict(RUN, model="vae"), overwrite=True)
  assert not (run_dir / runs.CHECKPOINTS).exists()  # started afresh, with the new flags
  assert json.loads((run_dir / runs.RUN).read_text())["model"] == "vae"


def test_a_run_that_never_checkpointed_starts_afresh_with_new_flags(tmp_path):
  runs.claim_run_directory(str(tmp_path / "run"), RUN)  # e.g. stopped by bad data
  runs.claim_run_directory(str(tmp_path / "run"), dict(RUN, model="vae"))
  assert json.loads((tmp_path / "run" / runs.RUN).read_text())["model"] == "vae"


def test_checkpoints_from_before_run_json_resume_and_get_one(tmp_path):
  (tmp_path / runs.CHECKPOINTS).mkdir()
  (tmp_path / runs.CHECKPOINTS / "ckpt-1.index").write_text("")
  runs.claim_run_directory(str(tmp_path), RUN)
  assert json.loads((tmp_path / runs.RUN).read_text()) == RUN


@pytest.mark.parametrize("overwrite", [False, True])
def test_an_unrelated_non_empty_directory_is_refused_and_kept(tmp_path, overwrite):
  (tmp_path / "thesis.tex").write_text("precious")
  with pytest.raises(runs.RunDirectoryError, match="not empty and holds no training run"):
    runs.claim_run_directory(str(tmp_path), RUN, overwrite=overwrite)
  assert (tmp_path / "thesis.tex").read_text() == "precious"
  assert not (tmp_path / runs.RUN).exists()


def test_an_unwritable_directory_is_named(tmp_path):
  (tmp_path / "a_file").write_text("")
  with pytest.raises(runs.RunDirectoryError, match=r"--model_dir=.*a_file/run is not writable"):
    runs.claim_run_directory(str(tmp_path / "a_file" / "run"), RUN)
  with pytest.raises(runs.RunDirectoryError, match=r"--export_dir=.* is not writable"):
    runs.ensure_writable(str(tmp_path / "a_file" / "export"), "--export_dir")


def test_a_cluster_s_other_workers_only_refuse_other_flags(tmp_path):
  # The chief's files in progress (here a stray one) are not someone else's: no refusal, no write.
  (tmp_path / "run").mkdir()
  (tmp_path / "run" / "tmpab12cd").write_text("")
  runs.claim_run_directory(str(tmp_path / "run"), RUN, write=False)
  assert not (tmp_path / "run" / runs.RUN).exists()
  checkpointed(tmp_path / "trained")
  with pytest.raises(runs.RunDirectoryError, match="other flags"):
    runs.claim_run_directory(str(tmp_path / "trained"), dict(RUN, model="vae"), write=False)
  # With --overwrite the chief deletes the run; the others neither refuse nor delete.
  runs.claim_run_directory(str(tmp_path / "trained"), dict(RUN, model="vae"), overwrite=True,
                           write=False)
  assert (tmp_path / "trained" / runs.CHECKPOINTS).is_dir()


def test_a_run_recorded_before_the_method_flag_resumes_under_its_new_name(tmp_path):
  run_dir = tmp_path / "run"
  runs.claim_run_directory(str(run_dir), {"model": "savae", "dec_h_dim": 128})
  (run_dir / runs.CHECKPOINTS).mkdir()
  (run_dir / runs.CHECKPOINTS / "ckpt-1.index").write_text("")
  runs.claim_run_directory(str(run_dir), {"method": "savae", "dec_h_dim": 128})
  assert json.loads((run_dir / runs.RUN).read_text())["method"] == "savae"
  with pytest.raises(runs.RunDirectoryError, match="--method=savae \\(now vae\\)"):
    runs.claim_run_directory(str(run_dir), {"method": "vae", "dec_h_dim": 128})


def test_metrics_json_is_written_whole_and_its_epochs_read_back(tmp_path):
  assert runs.recorded_epochs(str(tmp_path / "run")) == []
  path = runs.write_metrics(str(tmp_path / "run"), {"epochs": [{"epoch": 1}], "test": {}})
  assert json.load(open(path)) == {"epochs": [{"epoch": 1}], "test": {}}
  assert runs.recorded_epochs(str(tmp_path / "run")) == [{"epoch": 1}]
