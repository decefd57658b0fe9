"""Tests for savae_tf.data.text: the vocabulary, the readers, in-memory and streaming batches."""

import os
import subprocess
import sys

import numpy as np
import pytest

from savae_tf.data import text
from savae_tf.data.text import Vocabulary


def test_build_puts_specials_first_then_words_by_count():
  vocabulary = Vocabulary.build(["b a b", "c b a", "d"], max_size=6)
  assert vocabulary.words == ["<pad>", "<unk>", "<s>", "</s>", "b", "a"]
  assert (vocabulary.pad_id, vocabulary.unk_id, vocabulary.bos_id, vocabulary.eos_id) == (0, 1, 2, 3)
  assert Vocabulary.build(["b a b", "c b a"], min_count=2).words[4:] == ["b", "a"]


def test_encode_adds_start_and_end_and_maps_unknown_words_to_unk():
  vocabulary = Vocabulary.build(["the cat sat"])
  assert vocabulary.encode("the  dog\tsat") == [2, vocabulary.ids["the"], 1,
                                               vocabulary.ids["sat"], 3]
  assert vocabulary.decode(vocabulary.encode("the cat sat") + [0, 0]) == "the cat sat"


def test_a_vocabulary_without_unk_or_end_token():
  vocabulary = Vocabulary(["x", "y", "<s>"], pad=None, unk=None, eos=None)
  assert vocabulary.encode("y x") == [2, 1, 0]
  assert vocabulary.pad_id == 0 and vocabulary.eos_id is None
  with pytest.raises(ValueError, match="'z' is not in the vocabulary"):
    vocabulary.encode("x z")


@pytest.mark.parametrize("sentence", ["", "  \t "])
def test_an_empty_sentence_is_an_error(sentence):
  with pytest.raises(ValueError, match="Empty sentence"):
    Vocabulary.build(["a b"]).encode(sentence)


@pytest.mark.parametrize("words, kwargs, message", [
    (["a", "a", "<s>"], {}, "distinct"),
    (["a b", "<s>"], {}, "whitespace"),
    (["a", "<s>"], {"unk": "<unk>"}, "unk token"),
])
def test_malformed_vocabularies_are_rejected(words, kwargs, message):
  kwargs = {"pad": None, "unk": None, "eos": None, **kwargs}
  with pytest.raises(ValueError, match=message):
    Vocabulary(words, **kwargs)


def test_save_and_load_round_trip(tmp_path):
  vocabulary = Vocabulary(["x", "y", "<s>"], pad=None, unk=None, eos=None)
  vocabulary.save(str(tmp_path / "vocab.json"))
  assert Vocabulary.load(str(tmp_path / "vocab.json")) == vocabulary


def test_read_sentences_plain_and_labeled_files(tmp_path):
  plain = tmp_path / "plain.txt"
  plain.write_text("the cat sat\n\n  a dog  \n")
  assert text.read_sentences(str(plain)) == ["the cat sat", "a dog"]
  labeled = tmp_path / "yelp.txt"
  labeled.write_text("3\tgreat food here\n1\tnot good\n")
  assert text.read_sentences(str(labeled)) == ["great food here", "not good"]
  assert text.read_sentences(str(labeled), "plain")[0] == "3\tgreat food here"


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    ("\n \n", "is empty"),
    ("1\t \n2\t\n", "no usable line"),
])
def test_bad_data_files_are_named(tmp_path, content, message):
  path = tmp_path / "data.txt"
  if content is not None:
    path.write_text(content)
  with pytest.raises(text.DataError, match=message):
    text.read_sentences(str(path))


def test_split_files_finds_either_naming(tmp_path):
  for name in ("yahoo.train.txt", "yahoo.valid.txt", "yahoo.test.txt"):
    (tmp_path / name).write_text("a b\n")
  assert text.split_files(str(tmp_path))["valid"].endswith("yahoo.valid.txt")
  (tmp_path / "yahoo.test.txt").unlink()
  with pytest.raises(text.DataError, match="no test file"):
    text.split_files(str(tmp_path))


def test_batches_hold_one_length_and_each_epoch_has_its_own_seeded_order():
  sentences = ["a b", "a", "b b b", "a a", "b", "a b a", "b a"]
  vocabulary = Vocabulary.build(sentences)
  encoded = text.encode_corpus(sentences, vocabulary, max_length=2)  # drops the 3-word ones
  assert len(encoded) == 5
  corpus = text.BatchedCorpus(encoded, batch_size=2, pad_id=vocabulary.pad_id, seed=4)
  lengths = sorted(int(l) for b in corpus.padded for l in b["lengths"])
  assert lengths == [3, 3, 4, 4, 4]  # <s> w </s> and <s> w w </s>
  for batch in corpus.padded:
    assert len(set(batch["lengths"].tolist())) == 1 and batch["tokens"].shape[1] == batch["lengths"][0]
  assert list(corpus.order(0)) == list(text.BatchedCorpus(encoded, 2, 0, seed=4).order(0))
  epochs = {tuple(corpus.order(e)) for e in range(6)}
  assert len(epochs) > 1
  resumed = [b["tokens"].numpy().tolist() for b in corpus.dataset(epoch=3, start=1)]
  whole = [b["tokens"].numpy().tolist() for b in corpus.dataset(epoch=3)]
  assert resumed == whole[1:]


def test_an_unshuffled_corpus_runs_its_sentences_in_length_order():
  # What bin/evaluate.py relies on to decompose the sentences a training binary's test decomposes.
  rng = np.random.default_rng(0)
  sentences = [" ".join(["a"] * n) for n in rng.integers(1, 6, 40)]
  vocabulary = Vocabulary.build(sentences)
  encoded = text.encode_corpus(sentences, vocabulary)
  for batch_size in (1, 3, 7):
    corpus = text.BatchedCorpus(encoded, batch_size, vocabulary.pad_id, seed=None)
    ran = [row[:length].tolist() for batch in corpus.dataset()
           for row, length in zip(batch["tokens"].numpy(), batch["lengths"].numpy())]
    order = text.length_order([len(sentence.split()) for sentence in sentences])
    assert ran == [encoded[i] for i in order], batch_size


def _batches(corpus, epoch, start=0):
  return [(b["tokens"].numpy().tolist(), b["lengths"].numpy().tolist())
          for b in corpus.dataset(epoch, start)]


@pytest.mark.parametrize("text_format", ["plain", "labeled"])
def test_the_streaming_corpus_yields_the_in_memory_corpus_batches(tmp_path, text_format):
  rng = np.random.default_rng(0)
  words = "the a cat dog sat ran on mat big small red é".split()
  lines = [" ".join(rng.choice(words, rng.integers(1, 8))) for _ in range(300)]
  lines[10:12] = ["", "   "]  # blank lines are skipped by both
  if text_format == "labeled":
    lines = [f"{i % 5}\t{line}" if line.strip() else line for i, line in enumerate(lines)]
  path = tmp_path / "train.txt"
  path.write_text("\r\n".join(lines) + "\n", encoding="utf-8")  # CRLF: offsets are bytes
  limit, max_length = 250, 6
  sentences = text.read_sentences(str(path))[:limit]
  vocabulary = Vocabulary.build(sentences, max_size=10)  # some words are <unk>
  in_memory = text.BatchedCorpus(text.encode_corpus(sentences, vocabulary, max_length), 8,
                                 vocabulary.pad_id, seed=3)
  streaming = text.StreamingCorpus(str(path), vocabulary, 8, seed=3, max_length=max_length,
                                   limit=limit)
  assert streaming.text_format == text_format
  assert (len(streaming), streaming.num_sentences) == (len(in_memory), in_memory.num_sentences)
  for epoch in (0, 1):
    assert _batches(streaming, epoch) == _batches(in_memory, epoch)
  assert _batches(streaming, 1, start=5) == _batches(in_memory, 1, start=5)  # resume
  for key in range(3):
    np.testing.assert_array_equal(streaming.draw(key)["tokens"], in_memory.draw(key)["tokens"])


def test_the_streaming_corpus_names_a_file_without_usable_sentences(tmp_path):
  vocabulary = Vocabulary.build(["a b"])
  (tmp_path / "empty.txt").write_text("\n \n")
  with pytest.raises(text.DataError, match="empty.txt.*is empty"):
    text.StreamingCorpus(str(tmp_path / "empty.txt"), vocabulary, 4)
  (tmp_path / "long.txt").write_text("a b a b\n")
  with pytest.raises(text.DataError, match="at most 2 words"):
    text.StreamingCorpus(str(tmp_path / "long.txt"), vocabulary, 4, max_length=2)


MEMORY = """
import os, sys, threading
from savae_tf.data import text
def rss():
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
peak, done = [rss()], threading.Event()
def sample():  # the peak resident memory while the corpus is built and its first batch read
  while not done.wait(0.002):
    peak[0] = max(peak[0], rss())
threading.Thread(target=sample, daemon=True).start()
path, how = sys.argv[1], sys.argv[2]
before = rss()
if how == "streaming":
  vocabulary = text.Vocabulary.build(s for _, s in text.stream_sentences(path))
  corpus = text.StreamingCorpus(path, vocabulary, 32, seed=0)
else:
  sentences = text.read_sentences(path)
  vocabulary = text.Vocabulary.build(sentences)
  corpus = text.BatchedCorpus(text.encode_corpus(sentences, vocabulary), 32, 0, seed=0)
first = next(corpus.batches(corpus.order(0)[:1]))
done.set()
print(len(corpus), corpus.num_sentences, max(peak[0], rss()) - before, first["tokens"].sum())
"""


def test_the_streaming_corpus_reads_two_million_sentences_in_a_fraction_of_the_memory(tmp_path):
  rng = np.random.default_rng(0)
  count, distinct = 2_000_000, 20_000
  words = [f"w{i}" for i in range(500)]
  block = "".join(" ".join(rng.choice(words, rng.integers(1, 9))) + "\n" for _ in range(distinct))
  path = tmp_path / "big.txt"
  path.write_text(block * (count // distinct))

  def measure(how):
    result = subprocess.run([sys.executable, "-c", MEMORY, str(path), how], capture_output=True,
                            text=True, timeout=900, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert result.returncode == 0, result.stderr[-3000:]
    return [int(x) for x in result.stdout.split()]

  batches, sentences, streaming_peak, first = measure("streaming")
  assert sentences == count
  in_memory = measure("in_memory")
  assert [batches, sentences, first] == [in_memory[0], in_memory[1], in_memory[3]]
  # About 20 bytes a sentence (55 MB here) against the whole corpus as Python objects (about
  # 550 MB, 10x).
  assert streaming_peak < 120e6 and streaming_peak * 5 < in_memory[2], (streaming_peak,
                                                                        in_memory[2])
