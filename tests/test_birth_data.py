"""Property tests of the CS224n datasets on random documents, and their error messages."""

import string

import numpy as np
import pytest

from data import birth_places, synthetic_bios
from data.birth_places import MASK_CHAR, PAD_CHAR, PAD_ID

ALPHABET = string.ascii_letters + " .,()-'"


def random_corpus(rng, n_docs=50, max_len=300):
    return "\n".join(
        "".join(rng.choice(list(ALPHABET), size=int(rng.integers(1, max_len))))
        for _ in range(n_docs)) + "\n"


@pytest.mark.parametrize("block_size", [24, 37, 128])
def test_char_corruption_properties(block_size):
    rng = np.random.default_rng(block_size)
    corpus = random_corpus(rng)
    ds = birth_places.CharCorruptionDataset(corpus, block_size)
    assert ds.itos[:2] == [PAD_CHAR, MASK_CHAR]
    assert ds.itos[2:] == sorted(set(corpus))
    ratios = []
    for index in range(len(ds)):
        for _ in range(10):
            x, y = ds.example(index, rng)
            assert x.shape == y.shape == (block_size - 1,)
            np.testing.assert_array_equal(x[1:], y[:-1])  # y is x shifted by one
            s = ds.vocab.decode(np.concatenate([x, y[-1:]]))
            body = s.rstrip(PAD_CHAR)
            assert PAD_CHAR not in body and len(s) == block_size  # padding only at the end
            assert body.count(MASK_CHAR) == 3 and body.endswith(MASK_CHAR)
            prefix, suffix, masked, _ = body.split(MASK_CHAR)
            truncated = prefix + masked + suffix
            doc = ds.data[index]
            # The masked span is recoverable: the three pieces rebuild a prefix of the document.
            assert doc.startswith(truncated)
            assert len(truncated) == min(len(doc), len(truncated))
            assert len(truncated) <= int(block_size * 7 / 8)
            if len(doc) >= int(block_size * 7 / 8):
                assert len(truncated) >= 4
            assert 1 <= len(masked) <= max(1, len(truncated) // 2)
            if len(truncated) >= 8:
                ratios.append(len(masked) / len(truncated))
    # Span length averages a quarter of the truncated document.
    assert abs(np.mean(ratios) - 0.25) < 0.03


def test_corruption_is_a_function_of_the_rng():
    ds = birth_places.CharCorruptionDataset(random_corpus(np.random.default_rng(0)), 64)
    a = ds.example(3, np.random.default_rng(7))
    b = ds.example(3, np.random.default_rng(7))
    c = ds.example(3, np.random.default_rng(8))
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], c[0])


def test_getitem_has_the_course_semantics():
    """dataset[i] -> (x, y) as the course's PyTorch datasets: fresh corruption per call, fixed QA examples."""
    corpus = random_corpus(np.random.default_rng(1), n_docs=5, max_len=200)
    ds = birth_places.CharCorruptionDataset(corpus, 64)
    draws = [ds[2] for _ in range(20)]
    for x, y in draws:
        assert x.shape == y.shape == (63,)
        np.testing.assert_array_equal(x[1:], y[:-1])
    assert len({x.tobytes() for x, _ in draws}) > 1  # its own randomness, not a fixed example
    assert ds[-1][0].shape == (63,)  # negative indices count from the end, as for a list
    with pytest.raises(IndexError):
        ds[len(ds)]
    pairs = [f"{ds.data[i][:5]}\t{ds.data[i + 1][:4]}" for i in range(2)]
    names = birth_places.NameDataset(ds, "\n".join(pairs))
    np.testing.assert_array_equal(names[1][0], names.example(1)[0])
    np.testing.assert_array_equal(names[1][1], names.example(1)[1])


def test_name_dataset_scores_only_the_answer():
    rng = np.random.default_rng(1)
    corpus = random_corpus(rng) + "Where was born?\n"
    pre = birth_places.CharCorruptionDataset(corpus, 64)
    lines = []
    for _ in range(20):
        name = "".join(rng.choice(list(string.ascii_letters), size=int(rng.integers(3, 15))))
        place = "".join(rng.choice(list(string.ascii_letters), size=int(rng.integers(2, 12))))
        lines.append(f"Where was {name} born?\t{place}")
    ds = birth_places.NameDataset(pre, "\n".join(lines))
    for line, (x, y) in zip(lines, (ds.example(i) for i in range(len(ds)))):
        question, answer = line.split("\t")
        full = question + MASK_CHAR + answer + MASK_CHAR
        full += PAD_CHAR * (64 - len(full))
        assert pre.vocab.decode(x) == full[:-1]
        assert x.shape == y.shape == (63,)
        assert np.all(y[:len(question) - 1] == PAD_ID)
        assert pre.vocab.decode(y[len(question) - 1:]) == full[len(question):]
        np.testing.assert_array_equal(x[len(question):], y[len(question) - 1:-1])  # shift over the answer
        # Scored targets are exactly the answer and its closing MASK.
        scored = pre.vocab.decode(y[y != PAD_ID])
        assert scored == MASK_CHAR + answer + MASK_CHAR


def test_prediction_extraction_and_accuracy():
    assert birth_places.extract_prediction(f"Where was X born?{MASK_CHAR}Paris{MASK_CHAR}Lon") == "Paris"
    assert birth_places.extract_prediction("no mask at all") == ""
    assert birth_places.evaluate_places(["Paris", "Rome", "Oslo"], ["Paris", "Lima", "Oslo"]) == (3, 2)
    assert birth_places.evaluate_places(["Paris"], [None]) == (0, 0)


def test_bad_input_names_file_and_line(tmp_path):
    bad = tmp_path / "train.tsv"
    bad.write_text("Where was A born?\tParis\nWhere was B born? Rome\n")
    with pytest.raises(birth_places.DataError, match=r"train\.tsv:2: .*no tab"):
        birth_places.read_name_place_tsv(bad)
    empty = tmp_path / "empty.tsv"
    empty.write_text("\n")
    with pytest.raises(birth_places.DataError, match="empty"):
        birth_places.read_name_place_tsv(empty)
    with pytest.raises(birth_places.DataError, match="not found"):
        birth_places.read_name_place_tsv(tmp_path / "missing.tsv")
    with pytest.raises(birth_places.DataError, match="empty corpus"):
        birth_places.CharCorruptionDataset("\n\n", 32)
    pre = birth_places.CharCorruptionDataset("Where was born? abc\n", 32)
    oov = tmp_path / "oov.tsv"
    oov.write_text("Where was abc born?\tabc\nWhere was Zed born?\tabc\n")
    with pytest.raises(birth_places.DataError, match=r"oov\.tsv:2: character 'Z'"):
        birth_places.NameDataset(pre, birth_places.read_name_place_tsv(oov), source=str(oov))


def test_synthetic_generator_is_deterministic_and_consistent():
    a, b = synthetic_bios.generate(50, seed=3), synthetic_bios.generate(50, seed=3)
    assert a == b
    assert a != synthetic_bios.generate(50, seed=4)
    wiki = a["wiki.txt"].splitlines()
    for line in a["birth_places_train.tsv"].splitlines() + a["birth_dev.tsv"].splitlines():
        question, place = line.split("\t")
        name = question.removeprefix("Where was ").removesuffix(" born?")
        docs = [d for d in wiki if d.startswith((name + ".", name + " ("))]
        assert len(docs) >= 3  # every person is described three ways
        for doc in docs:  # ... and every description agrees with the answer
            assert f"born in {place}" in doc.replace("Born in", "born in") or f"born? In {place}" in doc


def test_london_baseline_counts_gold_answers(tmp_path):
    from analysis.london_baseline import baseline_accuracy
    directory = synthetic_bios.write(tmp_path, num_people=60, seed=5)
    answers = [line.split("\t")[1] for line in (directory / "birth_dev.tsv").read_text().splitlines()]
    for place in ("London", "Paris"):
        assert baseline_accuracy(directory / "birth_dev.tsv", place) == (len(answers), answers.count(place))
