"""Shared pytest fixtures: the optional real-data directory, tiny checkpoints and tiny datasets.

The plain functions and constants they are built from live in tests/helpers.py.
"""
import os
import pathlib
import shutil
import tempfile

import jax
import numpy as np
import pytest

from tests.helpers import (
    NEGATIVE,
    POSITIVE,
    REPO_ROOT,
    SST2_BERT,
    SST2_VOCAB,
    SST2_WORDS,
    TINY_VOCAB,
    TINY_WORD_BERT,
    hf_bert,
    randomize,
    save_checkpoint,
)

# The suite compiles some thousands of small programs that each run a few times: XLA's backend optimisations
# cost more compile time than they save (about a quarter of the suite). Subprocesses inherit the variable;
# JAX_DISABLE_MOST_OPTIMIZATIONS=0 runs the suite fully optimised. Benchmarks and real runs never set it.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
jax.config.update("jax_disable_most_optimizations",
                  os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"].lower() in ("1", "true", "yes", "on"))

# One compilation cache for the run, shared by the pytest workers and the subprocesses the tests start:
# many tests (and every subprocess) compile the same tiny programs. The first process to load this file
# (pytest's controller) names a fresh folder; the others inherit it.
_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_CACHE:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="jax-test-cache-")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs",
                  float(os.environ.get("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")))



def pytest_unconfigure(config):
    """The process that made the cache folder removes it when the run ends."""
    if _OWN_CACHE and not hasattr(config, "workerinput"):
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


SHARED_DATA = pathlib.Path(os.environ.get("SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data():
    """The course datasets beside the checkout; tests that need them skip elsewhere."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"no shared data directory at {SHARED_DATA}")
    return SHARED_DATA


# ------------------------------------------------------------------ tiny random BERT checkpoints

def save_tiny_word_bert(path: pathlib.Path, *, mlm: bool, seed: int = 0) -> pathlib.Path:
    """A random HF BertForMaskedLM (or BertModel) saved with its word-level tokenizer.

    Every tensor is random (HF's init has zero biases and unit norms, which would hide
    swapped parameters); the MLM decoder stays tied to the word embeddings.
    """
    model = randomize(hf_bert(TINY_WORD_BERT, mlm=mlm, seed=seed), seed, scale=0.5)
    return save_checkpoint(model, path, vocab=TINY_VOCAB)


@pytest.fixture(scope="session")
def tiny_mlm_dir(tmp_path_factory):
    """A tiny random BertForMaskedLM as a Hugging Face directory (config, safetensors, tokenizer)."""
    return save_tiny_word_bert(tmp_path_factory.mktemp("tiny_mlm"), mlm=True)


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory):
    """A tiny random BertModel (no MLM head) as a Hugging Face directory with its tokenizer."""
    return save_tiny_word_bert(tmp_path_factory.mktemp("tiny_encoder"), mlm=False)


# ------------------------------------------------------------------ the engine's tiny datasets

@pytest.fixture(scope="module")
def bios_dir(tmp_path_factory):
    """Synthetic biographies of 40 people in the birth-place files' layout (tiny_birth_config's data)."""
    from data import synthetic_bios

    return synthetic_bios.write(tmp_path_factory.mktemp("data"), num_people=40, seed=1)


@pytest.fixture(scope="module")
def sst2_checkpoint(tmp_path_factory):
    """A BertModel with HF's init and the SST-2 words' tokenizer; also returns its parameter count."""
    model = hf_bert(SST2_BERT, seed=0)
    path = save_checkpoint(model, tmp_path_factory.mktemp("tiny_bert"), vocab=SST2_VOCAB)
    return path, sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def sst2_dir(tmp_path_factory):
    """stsa.binary.* with a learnable rule: the sentiment word decides the label."""
    d = tmp_path_factory.mktemp("sst2")
    rng = np.random.default_rng(0)
    sizes = {"train": 48, "dev": 16, "test": 20}
    for split, n in sizes.items():
        lines = []
        for _ in range(n):
            label = int(rng.integers(2))
            word = rng.choice(POSITIVE if label else NEGATIVE)
            filler = " ".join(rng.choice(SST2_WORDS[:6], size=int(rng.integers(1, 6))))
            lines.append(f"{label} {filler} {word} movie")
        (d / f"stsa.binary.{split}").write_text("\n".join(lines) + "\n")
    return d, sizes
