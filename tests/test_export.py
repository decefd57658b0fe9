"""Tests for savae_tf.export: the SavedModel contract of export/README.md."""

import os
import pathlib
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import check_score_through_tfsm_layer
from savae_tf import export
from savae_tf.domains import text as text_domain
from savae_tf.data import synthetic
from savae_tf.data.text import Vocabulary
from savae_tf.model import SemiAmortizedVAE, SVIConfig
from savae_tf.networks.text import LSTMDecoder, LSTMEncoder

SENTENCES = ["the cat sat on the mat", "a dog ran", "the mat"]
CORPUS = SENTENCES + ["the dog sat", "a cat ran on the mat"]
SIGNATURES = {"serving_default", "score", "encode", "refine", "elbo", "generate", "sample",
              "reconstruct", "beam_search"}
# Each signature's keyword inputs (the contract's names and dtypes).
INPUTS = {
    "score": {"sentences": "DT_STRING", "steps": "DT_INT32", "num_samples": "DT_INT32"},
    "encode": {"sentences": "DT_STRING"},
    "refine": {"sentences": "DT_STRING", "mean": "DT_FLOAT", "logvar": "DT_FLOAT",
               "steps": "DT_INT32"},
    "elbo": {"sentences": "DT_STRING", "mean": "DT_FLOAT", "logvar": "DT_FLOAT",
             "num_samples": "DT_INT32", "seed": "DT_INT32"},
    "generate": {"z": "DT_FLOAT", "max_length": "DT_INT32", "temperature": "DT_FLOAT",
                 "seed": "DT_INT32"},
    "sample": {"num": "DT_INT32", "max_length": "DT_INT32", "temperature": "DT_FLOAT",
               "seed": "DT_INT32"},
    "reconstruct": {"sentences": "DT_STRING", "steps": "DT_INT32", "max_length": "DT_INT32"},
    "beam_search": {"z": "DT_FLOAT", "max_length": "DT_INT32", "beam_size": "DT_INT32"},
}


def text_model(mode="savae"):
  keras.utils.set_random_seed(1)
  vocabulary = Vocabulary.build(CORPUS)
  latent = 0 if mode == "autoreg" else 3
  model = SemiAmortizedVAE(LSTMDecoder(len(vocabulary), 6, 8, latent),
                           LSTMEncoder(len(vocabulary), 6, 8, 3), mode=mode, latent_dim=3,
                           svi_config=SVIConfig(steps=3))
  return model, vocabulary


@pytest.fixture(scope="module")
def text_export(tmp_path_factory):
  model, vocabulary = text_model()
  path = export.export(model, vocabulary, str(tmp_path_factory.mktemp("export")))
  return model, vocabulary, path


@pytest.fixture(scope="module")
def text_loaded(text_export):
  """The text export, loaded once per module (loading traces every function)."""
  return tf.saved_model.load(text_export[2])


@pytest.fixture(scope="module")
def text_signatures(text_loaded):
  return text_loaded.signatures


@pytest.fixture(scope="module")
def oracle_signatures(trained_oracle_export):
  return tf.saved_model.load(trained_oracle_export[2]).signatures


@pytest.fixture(scope="module")
def trained_oracle_export(tmp_path_factory):
  """An SA-VAE whose encoder was trained for a few batches against the (fixed) oracle."""
  keras.utils.set_random_seed(2)
  data = synthetic.make_synthetic_data(seed=7, num_train=256, num_valid=1, num_test=64)
  model = SemiAmortizedVAE(data.oracle, LSTMEncoder(1001, 16, 16, 2), mode="savae",
                           latent_dim=2, svi_config=SVIConfig(steps=5),
                           generation_length=synthetic.SEQUENCE_LENGTH)
  model.compile(optimizer=keras.optimizers.Adam(1e-2))
  model.fit(synthetic.SequenceBatches(data.splits["train"], 32, shuffle_seed=0).dataset(),
            epochs=2, verbose=0)
  vocabulary = synthetic.vocabulary()
  path = export.export(model, vocabulary, str(tmp_path_factory.mktemp("oracle")))
  sentences = [vocabulary.decode(row) for row in data.splits["test"]["tokens"]]
  return model, vocabulary, path, sentences


# Every signature on fixed inputs. Kept as source so the fresh process runs exactly this code
# without importing anything of ours: the SavedModel must stand alone.
CALL_ALL = """
import tensorflow as tf

SENTENCES = %r


def call_all(functions):
  # `functions`: name -> a callable taking keyword tensors.
  s = tf.constant(SENTENCES)
  encoded = functions["encode"](sentences=s)
  return {
      "encode": encoded,
      "refine": functions["refine"](sentences=s, mean=encoded["mean"],
                                    logvar=encoded["logvar"], steps=tf.constant(3)),
      "score": functions["score"](sentences=s, steps=tf.constant(4),
                                  num_samples=tf.constant(7)),
      "elbo": functions["elbo"](sentences=s, mean=encoded["mean"], logvar=encoded["logvar"],
                                num_samples=tf.constant(60), seed=tf.constant(2)),
      "generate": functions["generate"](z=tf.constant([[0.5, -1.0, 2.0], [0.0, 0.0, 0.0]]),
                                        max_length=tf.constant(6),
                                        temperature=tf.constant(1.0), seed=tf.constant(5)),
      "sample": functions["sample"](num=tf.constant(4), max_length=tf.constant(5),
                                    temperature=tf.constant(0.7), seed=tf.constant(9)),
      "reconstruct": functions["reconstruct"](sentences=s, steps=tf.constant(2),
                                              max_length=tf.constant(8)),
      "beam_search": functions["beam_search"](z=tf.constant([[0.5, -1.0, 2.0], [0.0, 0.0, 0.0]]),
                                              max_length=tf.constant(6),
                                              beam_size=tf.constant(3)),
  }
""" % (SENTENCES,)
exec(CALL_ALL)

FRESH_PROCESS = CALL_ALL + """
import sys
import numpy as np
loaded = tf.saved_model.load(sys.argv[1])
outputs = call_all(loaded.signatures)
np.savez(sys.argv[2], **{f"{name}/{key}": value.numpy() for name, result in outputs.items()
                         for key, value in result.items()})
"""


@pytest.fixture(scope="module")
def in_memory(text_export):
  """`call_all` through the export's model built in memory, not saved."""
  model, vocabulary, _ = text_export
  return call_all(export.model_export(model, vocabulary).signatures())


def test_reloaded_in_a_fresh_process_matches_the_in_memory_model(text_export, in_memory,
                                                                 tmp_path):
  path = text_export[2]
  out = tmp_path / "outputs.npz"
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
  result = subprocess.run([sys.executable, "-c", FRESH_PROCESS, path, str(out)], env=env,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  reloaded = np.load(out, allow_pickle=True)  # string outputs are object arrays
  assert {key.split("/")[0] for key in reloaded.files} == set(in_memory)
  for name, result in in_memory.items():
    for key, value in result.items():
      got = reloaded[f"{name}/{key}"]
      if value.dtype == tf.string:
        assert got.tolist() == value.numpy().tolist(), (name, key)
      else:
        np.testing.assert_allclose(got, value.numpy(), rtol=1e-5, atol=1e-5, err_msg=name + key)


def test_saved_model_cli_shows_every_signature_with_its_dtypes(text_export):
  _, _, path = text_export
  cli = pathlib.Path(sys.executable).parent / "saved_model_cli"
  result = subprocess.run([str(cli), "show", "--dir", path, "--all"], capture_output=True,
                          text=True, timeout=300,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  assert result.returncode == 0, result.stderr[-3000:]
  blocks = {}
  for block in result.stdout.split("signature_def['")[1:]:
    blocks[block.split("'")[0]] = block
  assert SIGNATURES <= set(blocks)
  expected = {
      "score": {"nll_bound": "DT_FLOAT", "refined_nll_bound": "DT_FLOAT", "kl": "DT_FLOAT",
                "iw_nll": "DT_FLOAT", "num_tokens": "DT_INT32", "mean": "DT_FLOAT",
                "logvar": "DT_FLOAT", "z": "DT_FLOAT", "mean0": "DT_FLOAT",
                "logvar0": "DT_FLOAT", "z0": "DT_FLOAT"},
      "encode": {"mean": "DT_FLOAT", "logvar": "DT_FLOAT"},
      "refine": {"mean": "DT_FLOAT", "logvar": "DT_FLOAT"},
      "elbo": {"elbo": "DT_FLOAT", "iw_log_likelihood": "DT_FLOAT", "d_mean": "DT_FLOAT",
               "d_logvar": "DT_FLOAT"},
      "generate": {"sentences": "DT_STRING", "tokens": "DT_INT32"},
      "sample": {"z": "DT_FLOAT", "sentences": "DT_STRING"},
      "reconstruct": {"sentences": "DT_STRING"},
      "beam_search": {"sentences": "DT_STRING", "tokens": "DT_INT32", "log_probs": "DT_FLOAT"},
  }
  for name in expected:
    taken, returned = blocks[name].split("following input(s):")[1].split("following output(s):")
    for kind, text, specs in (("inputs", taken, INPUTS), ("outputs", returned, expected)):
      listed = set(re.findall(kind + r"\['(\w+)'\]", text))
      assert listed == set(specs[name]), (name, kind, listed)
      for key, dtype in specs[name].items():
        assert f"{kind}['{key}'] tensor_info:\n        dtype: {dtype}" in text, (name, key)
  assert "outputs['iw_nll']" in blocks["serving_default"]


def test_a_session_based_loader_runs_it_as_tf_serving_would(text_export):
  _, _, path = text_export
  cli = pathlib.Path(sys.executable).parent / "saved_model_cli"
  result = subprocess.run(
      [str(cli), "run", "--dir", path, "--tag_set", "serve", "--signature_def", "score",
       "--input_exprs", f"sentences={SENTENCES!r};steps=3;num_samples=4"],
      capture_output=True, text=True, timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  assert result.returncode == 0, result.stderr[-3000:]
  printed = result.stdout.split("Result for output key num_tokens:")[1].split("Result")[0]
  assert printed.split() == ["[7", "4", "3]"]


def test_versions_are_integer_directories_never_overwritten(text_export, tmp_path):
  model, vocabulary, path = text_export
  assert os.path.basename(path) == "1"  # the first export into an empty directory
  for name in ("3", "10", "notes", "2b"):
    (tmp_path / name).mkdir()
  assert export.next_version(str(tmp_path)) == 11  # TF Serving's integer versions only
  with pytest.raises(FileExistsError):
    export.export(model, vocabulary, str(tmp_path), version=3)
  assert not list((tmp_path / "3").iterdir())


def test_refinement_tightens_the_bound_of_a_trained_model(trained_oracle_export,
                                                         oracle_signatures):
  sentences = trained_oracle_export[3]
  score = oracle_signatures["score"]
  out = score(sentences=tf.constant(sentences), steps=tf.constant(20),
              num_samples=tf.constant(200))
  amortized, refined, iw = (out[k].numpy() for k in ("nll_bound", "refined_nll_bound", "iw_nll"))
  assert refined.mean() < amortized.mean()
  # iw_nll <= refined bound up to Monte Carlo error of the single-sample bound.
  stderr = refined.std() / np.sqrt(len(refined))
  assert iw.mean() <= refined.mean() + 3 * stderr
  assert (out["num_tokens"].numpy() == 5).all()


def test_steps_zero_leaves_the_posterior_where_the_encoder_put_it(text_signatures):
  loaded = text_signatures
  s = tf.constant(SENTENCES)
  encoded = loaded["encode"](sentences=s)
  refined = loaded["refine"](sentences=s, mean=encoded["mean"], logvar=encoded["logvar"],
                             steps=tf.constant(0))
  np.testing.assert_array_equal(refined["mean"], encoded["mean"])
  np.testing.assert_array_equal(refined["logvar"], encoded["logvar"])
  score = loaded["score"](sentences=s, steps=tf.constant(0), num_samples=tf.constant(1))
  np.testing.assert_array_equal(score["mean0"], encoded["mean"])  # the encoder's posterior
  np.testing.assert_array_equal(score["logvar0"], encoded["logvar"])
  kl = -0.5 * np.sum(1 + encoded["logvar"] - encoded["mean"]**2 - np.exp(encoded["logvar"]), -1)
  np.testing.assert_allclose(score["kl"], kl, rtol=1e-4, atol=1e-6)


def test_unknown_words_are_unk_and_long_sentences_are_scored_whole(text_signatures):
  score = text_signatures["score"]
  args = dict(steps=tf.constant(2), num_samples=tf.constant(3))
  unknown = score(sentences=tf.constant(["the zebra sat"]), **args)
  unk = score(sentences=tf.constant(["the <unk> sat"]), **args)
  np.testing.assert_allclose(unknown["refined_nll_bound"], unk["refined_nll_bound"])
  long = score(sentences=tf.constant([" ".join(["the cat sat on the mat"] * 20)]), **args)
  assert long["num_tokens"].numpy()[0] == 121  # 120 words and </s>
  assert np.isfinite(long["iw_nll"].numpy()).all()


@pytest.mark.parametrize("batch", [1, 1000])
def test_a_batch_of_one_and_of_a_thousand(text_signatures, batch):
  loaded = text_signatures
  sentences = tf.constant([SENTENCES[i % 3] for i in range(batch)])
  out = loaded["score"](sentences=sentences, steps=tf.constant(2), num_samples=tf.constant(2))
  assert out["iw_nll"].shape == (batch,) and np.isfinite(out["iw_nll"].numpy()).all()
  assert out["num_tokens"].numpy()[0] == 7
  rec = loaded["reconstruct"](sentences=sentences, steps=tf.constant(1), max_length=tf.constant(4))
  assert rec["sentences"].shape == (batch,)


@pytest.mark.parametrize("call, message", [
    (lambda f: f["score"](sentences=tf.constant(["the cat", ""]), steps=tf.constant(1),
                          num_samples=tf.constant(1)), "empty sentence"),
    (lambda f: f["score"](sentences=tf.constant(["the cat", "   "]), steps=tf.constant(1),
                          num_samples=tf.constant(1)), "empty sentence"),
    (lambda f: f["score"](sentences=tf.constant(["the cat"]), steps=tf.constant(-1),
                          num_samples=tf.constant(1)), "steps must be >= 0"),
    (lambda f: f["score"](sentences=tf.constant(["the cat"]), steps=tf.constant(1),
                          num_samples=tf.constant(0)), "num_samples must be >= 1"),
    (lambda f: f["reconstruct"](sentences=tf.constant(["the cat"]), steps=tf.constant(-3),
                                max_length=tf.constant(3)), "steps must be >= 0"),
    (lambda f: f["generate"](z=tf.zeros([1, 3]), max_length=tf.constant(-1),
                             temperature=tf.constant(1.0), seed=tf.constant(0)),
     "max_length must be >= 0"),
    (lambda f: f["sample"](num=tf.constant(2), max_length=tf.constant(3),
                           temperature=tf.constant(-1.0), seed=tf.constant(0)),
     "temperature must be >= 0"),
    (lambda f: f["sample"](num=tf.constant(-1), max_length=tf.constant(3),
                           temperature=tf.constant(1.0), seed=tf.constant(0)),
     "num must be >= 0"),
    (lambda f: f["beam_search"](z=tf.zeros([1, 3]), max_length=tf.constant(3),
                                beam_size=tf.constant(0)), "beam_size must be >= 1"),
])
def test_bad_input_is_an_error_that_names_the_problem(text_signatures, call, message):
  with pytest.raises(tf.errors.InvalidArgumentError, match=message):
    call(text_signatures)


def test_a_vocabulary_without_unk_rejects_unknown_words(trained_oracle_export,
                                                        oracle_signatures):
  sentences = trained_oracle_export[3]
  score = oracle_signatures["score"]
  with pytest.raises(tf.errors.InvalidArgumentError, match="not in the vocabulary"):
    score(sentences=tf.constant([sentences[0], "w1 hello"]), steps=tf.constant(1),
          num_samples=tf.constant(1))


def test_generation_stops_at_the_end_token_and_greedy_is_deterministic(text_export,
                                                                      text_signatures):
  vocabulary = text_export[1]
  generate = text_signatures["generate"]
  z = tf.constant(np.random.default_rng(0).normal(size=(64, 3)), tf.float32)
  out = generate(z=z, max_length=tf.constant(12), temperature=tf.constant(1.0),
                 seed=tf.constant(3))
  for tokens, sentence in zip(out["tokens"].numpy(), out["sentences"].numpy()):
    words = [vocabulary.words[t] for t in tokens]
    if "</s>" in words:
      end = words.index("</s>")
      assert all(w == "<pad>" for w in words[end + 1:])
      words = words[:end]
    assert sentence.decode() == " ".join(words)
  greedy = [generate(z=z, max_length=tf.constant(12), temperature=tf.constant(0.0),
                     seed=tf.constant(seed))["tokens"].numpy() for seed in (1, 2)]
  np.testing.assert_array_equal(greedy[0], greedy[1])


def test_max_length_zero_generates_the_model_s_own_length(oracle_signatures, text_signatures):
  # The oracle's vocabulary has no </s>: every sentence is as long as the length asked for.
  drawn = oracle_signatures["sample"](num=tf.constant(3), max_length=tf.constant(0),
                                      temperature=tf.constant(1.0), seed=tf.constant(1))
  assert [len(s.split()) for s in drawn["sentences"].numpy()] == [synthetic.SEQUENCE_LENGTH] * 3
  beams = oracle_signatures["beam_search"](z=drawn["z"], max_length=tf.constant(0),
                                           beam_size=tf.constant(2))
  assert beams["tokens"].shape[-1] == synthetic.SEQUENCE_LENGTH
  # A model that recorded no length draws the documented default.
  out = text_signatures["generate"](z=tf.zeros([2, 3]), max_length=tf.constant(0),
                                    temperature=tf.constant(0.0), seed=tf.constant(0))
  assert out["tokens"].shape == (2, text_domain.DEFAULT_GENERATION_LENGTH)


def test_beam_search_ranks_its_sentences_and_a_beam_of_one_is_greedy(text_export,
                                                                     text_signatures):
  vocabulary = text_export[1]
  loaded = text_signatures
  z = tf.constant(np.random.default_rng(1).normal(size=(16, 3)), tf.float32)
  beams = loaded["beam_search"](z=z, max_length=tf.constant(10), beam_size=tf.constant(4))
  assert beams["sentences"].shape == (16, 4) and beams["tokens"].shape == (16, 4, 10)
  assert np.all(np.diff(beams["log_probs"].numpy(), axis=1) <= 1e-6)
  for tokens, sentence in zip(beams["tokens"].numpy()[:, 0], beams["sentences"].numpy()[:, 0]):
    words = [vocabulary.words[t] for t in tokens]
    assert sentence.decode() == " ".join(words[:words.index("</s>")] if "</s>" in words
                                         else words)
  one = loaded["beam_search"](z=z, max_length=tf.constant(10), beam_size=tf.constant(1))
  greedy = loaded["generate"](z=z, max_length=tf.constant(10), temperature=tf.constant(0.0),
                              seed=tf.constant(0))
  np.testing.assert_array_equal(one["tokens"][:, 0], greedy["tokens"])
  np.testing.assert_array_equal(one["sentences"][:, 0], greedy["sentences"])


def test_the_language_model_exports_with_an_empty_latent(tmp_path):
  model, vocabulary = text_model("autoreg")
  loaded = tf.saved_model.load(export.export(model, vocabulary, str(tmp_path))).signatures
  out = loaded["score"](sentences=tf.constant(SENTENCES), steps=tf.constant(5),
                        num_samples=tf.constant(3))
  np.testing.assert_allclose(out["iw_nll"], out["nll_bound"])
  np.testing.assert_allclose(out["refined_nll_bound"], out["nll_bound"])
  empty = tf.zeros([len(SENTENCES), 0])
  elbo = loaded["elbo"](sentences=tf.constant(SENTENCES), mean=empty, logvar=empty,
                        num_samples=tf.constant(3), seed=tf.constant(0))
  np.testing.assert_allclose(elbo["elbo"], -out["nll_bound"], rtol=1e-6)
  sample = loaded["sample"](num=tf.constant(3), max_length=tf.constant(4),
                            temperature=tf.constant(1.0), seed=tf.constant(0))
  assert sample["z"].shape == (3, 0) and sample["sentences"].shape == (3,)


def test_a_sentence_gets_the_same_outputs_alone_and_in_any_batch(trained_oracle_export,
                                                                   assert_batch_invariant):
  # The SA-VAE's rows of encode, refine, score and reconstruct do not depend on the batch: its
  # size, the sentence's position, or the other sentences (a long one among them).
  _, _, path, sentences = trained_oracle_export
  long_sentence = " ".join(sentences[:12])  # 60 words; the oracle saw sentences of 5
  assert_batch_invariant(path, sentences[:10] + [long_sentence], "sentences")


def test_unknown_and_long_sentences_do_not_change_their_batch_mates(text_export,
                                                                  assert_batch_invariant):
  _, _, path = text_export
  pool = SENTENCES + ["zebra okapi quagga", "<unk> <unk>", " ".join(CORPUS * 30)]
  assert_batch_invariant(path, pool, "sentences")


def test_every_signature_is_unchanged_and_has_a_one_dict_endpoint(text_loaded):
  signatures = text_loaded.signatures
  assert set(signatures) == SIGNATURES
  for name, inputs in INPUTS.items():
    positional, keywords = signatures[name].structured_input_signature
    assert positional == () and set(keywords) == set(inputs), name  # as TF Serving sees them
    # The endpoint takes one dict of exactly the signature's inputs (names, dtypes, shapes).
    endpoint = getattr(text_loaded, name + "_dict")
    assert [f.structured_input_signature for f in endpoint.concrete_functions] == [
        ((keywords,), {})], name
  by_dict = {name: (lambda endpoint: lambda **inputs: endpoint(inputs))(
      getattr(text_loaded, name + "_dict")) for name in INPUTS}
  through_dicts, through_signatures = call_all(by_dict), call_all(signatures)
  for name, outputs in through_signatures.items():
    assert set(through_dicts[name]) == set(outputs), name
    for key, value in outputs.items():
      np.testing.assert_array_equal(through_dicts[name][key], value, err_msg=f"{name}/{key}")


def test_a_keras_model_scores_through_tfsm_layer_as_the_signature_does(
    text_export, text_signatures, in_memory):
  # `call_all`'s score inputs; steps and num_samples differ, so a wrong routing would show.
  inputs = {"sentences": tf.constant(SENTENCES), "steps": tf.constant(4),
            "num_samples": tf.constant(7)}
  check_score_through_tfsm_layer(text_export[2], text_signatures["score"], in_memory["score"],
                                 inputs, atol=1e-5)


SCORE_IN_A_FRESH_PROCESS = """
import sys
import numpy as np
import tensorflow as tf
score = tf.saved_model.load(sys.argv[1]).signatures["score"]
out = score(sentences=tf.constant(%r), steps=tf.constant(4), num_samples=tf.constant(7))
np.savez(sys.argv[2], **{key: value.numpy() for key, value in out.items()})
""" % (SENTENCES,)


def saved_ops(path):
  """(every op type in the SavedModel's graphs and functions, names of functions XLA must
  compile)."""
  from tensorflow.core.protobuf import saved_model_pb2
  saved = saved_model_pb2.SavedModel()
  saved.ParseFromString((pathlib.Path(path) / "saved_model.pb").read_bytes())
  ops, compiled = set(), set()
  for graph in saved.meta_graphs:
    ops |= {node.op for node in graph.graph_def.node}
    for function in graph.graph_def.library.function:
      ops |= {node.op for node in function.node_def}
      if function.attr["_XlaMustCompile"].b:
        compiled.add(function.signature.name)
  return ops, compiled


def test_an_export_traced_on_a_gpu_holds_no_gpu_only_op_and_serves_on_a_cpu(tmp_path):
  from conftest import simulated_gpu
  model, vocabulary = text_model("vae")  # its LSTMs may pick cuDNN (use_cudnn="auto")
  with simulated_gpu():
    path = export.export(model, vocabulary, str(tmp_path / "gpu"))
  ops, compiled = saved_ops(path)
  assert "VarHandleOp" in ops or "ReadVariableOp" in ops  # the graphs were read
  assert not {op for op in ops if op.startswith("Cudnn")} and not compiled
  # Served on a CPU: a fresh CPU-only process scores as the model here (on the CPU) does.
  out = tmp_path / "score.npz"
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
  result = subprocess.run([sys.executable, "-c", SCORE_IN_A_FRESH_PROCESS, path, str(out)],
                          env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  reloaded = np.load(out)
  score = export.model_export(model, vocabulary).signatures()["score"]
  for key, value in score(sentences=tf.constant(SENTENCES), steps=tf.constant(4),
                          num_samples=tf.constant(7)).items():
    np.testing.assert_allclose(reloaded[key], value.numpy(), rtol=1e-5, atol=1e-5, err_msg=key)
  # What the test guards against: traced on a GPU but not portably, `encode` holds cuDNN's LSTM.
  with simulated_gpu():
    graph = export.model_export(model, vocabulary).signatures()["encode"].graph.as_graph_def()
  ops = {node.op for node in graph.node} | {node.op for function in graph.library.function
                                            for node in function.node_def}
  assert any(op.startswith("Cudnn") for op in ops)
