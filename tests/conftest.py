"""Shared pytest set-up: paths and the optional real-data directory."""
import os
import pathlib

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(os.environ.get("SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data():
    """The course datasets beside the checkout; tests that need them skip elsewhere."""
    if not SHARED_DATA.is_dir():
      pytest.skip(f"no shared data directory at {SHARED_DATA}")
    return SHARED_DATA


# ------------------------------------------------------------------ tiny random BERT checkpoints
# A word-level vocabulary (BertTokenizer splits on spaces and punctuation; every word below is
# one token, "nursing" is not in it, so it becomes [UNK] or word pieces).
TINY_WORDS = ("the a man woman he she his her worked as nurse doctor engineer teacher was is "
              "good bad very kind poor rich people . , ##s ##ing").split()
TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + TINY_WORDS
TINY_BERT = dict(vocab_size=len(TINY_VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=37, max_position_embeddings=64, type_vocab_size=2)


def save_tiny_bert(path: pathlib.Path, *, mlm: bool, seed: int = 0) -> pathlib.Path:
    """A random HF BertForMaskedLM (or BertModel) saved with its word-level tokenizer.

    Every tensor is random (HF's init has zero biases and unit norms, which would hide
    swapped parameters); the MLM decoder stays tied to the word embeddings.
    """
    import torch
    import transformers

    torch.manual_seed(seed)
    cfg = transformers.BertConfig(**TINY_BERT)
    model = transformers.BertForMaskedLM(cfg) if mlm else transformers.BertModel(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            p.copy_(1 + 0.2 * noise if "LayerNorm.weight" in name else 0.5 * noise)
    model.eval().save_pretrained(path, safe_serialization=True)
    (path / "vocab.txt").write_text("\n".join(TINY_VOCAB) + "\n")
    transformers.BertTokenizer(vocab=str(path / "vocab.txt")).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_mlm_dir(tmp_path_factory):
    """A tiny random BertForMaskedLM as a Hugging Face directory (config, safetensors, tokenizer)."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny_mlm"), mlm=True)


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory):
    """A tiny random BertModel (no MLM head) as a Hugging Face directory with its tokenizer."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny_encoder"), mlm=False)
