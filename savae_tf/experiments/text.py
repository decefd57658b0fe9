"""The text experiment from bin/train_text.py's flags (`savae_tf.flags.define_text_flags`):
the corpus (Penn Treebank, a directory, files, or a stream), its vocabulary, the LSTM encoder and
decoder, and the paper's learning-rate decay."""

import itertools
import os

from absl import app
from absl import flags

from savae_tf import actions
from savae_tf import factories
from savae_tf.data import text
from savae_tf.domains.text import VOCAB
from savae_tf.experiments.runner import Experiment
from savae_tf.networks.text import LSTMDecoder, LSTMEncoder

FLAGS = flags.FLAGS

# The paper's Yahoo recipe.
PRESETS = {"yahoo": dict(optimizer="sgd", learning_rate=1.0, max_grad_norm=5.0, init_scale=0.1,
                         batch_size=32, decay_from_epoch=15, warmup=10, svi_steps=20,
                         svi_step_scale="batch_mean", svi_lr=1.0, momentum=0.5,
                         svi_max_grad_norm=5.0, epochs=30,
                         enc_word_dim=512, enc_h_dim=1024, dec_word_dim=512, dec_h_dim=1024,
                         latent_dim=32, dropout=0.5, max_length=200, max_vocab=70000,
                         min_count=1)}


def _split_paths():
  return (text.split_files(FLAGS.data_dir) if FLAGS.data_dir else
          {"train": FLAGS.train_file, "valid": FLAGS.valid_file, "test": FLAGS.test_file})


def _read_splits(splits):
  """{split: sentences} of `splits`, each cut to its --max_*_sentences."""
  if FLAGS.dataset == "ptb":
    sentences = {split: text.ptb_sentences(split) for split in splits}
  else:
    paths = _split_paths()
    sentences = {split: text.read_sentences(paths[split], FLAGS.text_format) for split in splits}
  return {split: lines[:(FLAGS.max_train_sentences if split == "train"
                         else FLAGS.max_eval_sentences) or None]
          for split, lines in sentences.items()}


def _streamed_training_data():
  """(vocabulary, StreamingCorpus) of the training file, read as a stream."""
  path = _split_paths()["train"]
  streamed = (sentence for _, sentence in text.stream_sentences(path, FLAGS.text_format))
  vocabulary = text.Vocabulary.build(
      itertools.islice(streamed, FLAGS.max_train_sentences or None), FLAGS.max_vocab,
      FLAGS.min_count)
  return vocabulary, text.StreamingCorpus(path, vocabulary, FLAGS.batch_size, FLAGS.seed,
                                          FLAGS.max_length, FLAGS.text_format,
                                          FLAGS.max_train_sentences)


def _corpora():
  """(vocabulary, train, valid, test) of the flags; bad data is a usage error naming it."""
  try:
    if FLAGS.streaming:
      vocabulary, train = _streamed_training_data()
      sentences = _read_splits(["valid", "test"])
    else:
      sentences = _read_splits(text.SPLITS)
      vocabulary = text.Vocabulary.build(sentences["train"], FLAGS.max_vocab, FLAGS.min_count)
    saved_vocab = os.path.join(FLAGS.model_dir, VOCAB)
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
  valid, test = (text.BatchedCorpus(splits[s], FLAGS.batch_size, vocabulary.pad_id)
                 for s in ("valid", "test"))
  print(f"data: {train.num_sentences} / {len(splits['valid'])} / {len(splits['test'])} "
        f"sentences, vocabulary {len(vocabulary)}, {len(train)} batches per epoch", flush=True)
  return vocabulary, train, valid, test


def _model(vocabulary, train):
  init = FLAGS.init_scale or None
  encoder = LSTMEncoder(len(vocabulary), FLAGS.enc_word_dim, FLAGS.enc_h_dim, FLAGS.latent_dim,
                        init_scale=init, xla_sweeps=FLAGS.xla_sweeps)
  decoder = LSTMDecoder(len(vocabulary), FLAGS.dec_word_dim, FLAGS.dec_h_dim,
                        factories.latent_dim(FLAGS.method, FLAGS.latent_dim),
                        dropout=FLAGS.dropout, init_scale=init,
                        use_cudnn=factories.decoder_use_cudnn(FLAGS.method),
                        xla_sweeps=FLAGS.xla_sweeps)
  return factories.model_from_flags(decoder, encoder, FLAGS.method, FLAGS.latent_dim, len(train),
                                    train.largest_batch(),
                                    generation_length=train.longest - 1)  # after <s>


def experiment(binary) -> Experiment:
  """The run bin/train_text.py's flags ask for (`binary`: its module, whose flags define it)."""
  strategy, modules = factories.start_run(binary, PRESETS)
  vocabulary, train, valid, test = _corpora()
  with strategy.scope():
    model = _model(vocabulary, train)
  decay = [actions.LearningRateDecay(FLAGS.decay_from_epoch)] if FLAGS.decay_from_epoch else []
  return Experiment(model, train, valid.dataset(), test, FLAGS.model_dir, FLAGS.epochs,
                    vocabulary, strategy, FLAGS.checkpoint_every, FLAGS.num_samples,
                    factories.flag_values(FLAGS, modules), decay, export_dir=FLAGS.export_dir,
                    gaps=factories.gap_config(), gap_examples=FLAGS.gap_examples)


