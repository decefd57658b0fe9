"""Tests for savae_tf.data.text: the vocabulary."""

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
  lengths = sorted(int(l) for b in corpus.batches for l in b["lengths"])
  assert lengths == [3, 3, 4, 4, 4]  # <s> w </s> and <s> w w </s>
  for batch in corpus.batches:
    assert len(set(batch["lengths"].tolist())) == 1 and batch["tokens"].shape[1] == batch["lengths"][0]
  assert list(corpus.order(0)) == list(text.BatchedCorpus(encoded, 2, 0, seed=4).order(0))
  epochs = {tuple(corpus.order(e)) for e in range(6)}
  assert len(epochs) > 1
  resumed = [b["tokens"].numpy().tolist() for b in corpus.dataset(epoch=3, start=1)]
  whole = [b["tokens"].numpy().tolist() for b in corpus.dataset(epoch=3)]
  assert resumed == whole[1:]
