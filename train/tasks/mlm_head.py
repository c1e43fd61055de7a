"""Masked-LM training of a BERT encoder (issue 11): the MLM head for MiniLM, which ships none.

Task `mlm_head` (configs/mlm_head.py; keys in configs/base.py) with a `bert_mlm` model:
model.mode head trains a fresh head on the frozen encoder, full continues MLM training of
encoder and head. Text: the local corpora (SOURCES; never CrowS-Pairs, whose authors ask
that it not be used for training), packed into [CLS] ... [SEP] windows; 1 document in 20
(by a hash of its text) is held out. Masking is BERT's (data/masking.py). Validation is the
held-out masked-token accuracy and perplexity; at the end the engine calls `export`, which
writes WORKDIR/hf, a Hugging Face BertForMaskedLM directory.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax

from data.masking import bert_mask
from data.paths import DataError, resolve_data_dir
from models import bert
from models.hf_checkpoint import load_tokenizer, resolve_checkpoint_dir

# the local corpora (relative to data_dir); CrowS-Pairs is deliberately absent
SOURCES = {
    "wiki": "cs224n_birth_places/wiki.txt",
    "bbc": "bbc_news/bbc",
    "sst2": "sst2/stsa.binary.train",
    "amazon": "amazon_polarity/amazon_polarity.sample5000.ft.txt",
}
HELD_OUT_EVERY = 20  # 1 document in 20 (by hash) is held out


def _read(path: pathlib.Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:  # a few BBC articles are Latin-1
        return path.read_text(encoding="latin-1")


def read_corpus(data_dir) -> dict[str, list[str]]:
    """Documents of each local source: wiki lines, BBC articles, SST-2 sentences, Amazon reviews."""
    root = resolve_data_dir(data_dir)
    docs: dict[str, list[str]] = {}
    for name, rel in SOURCES.items():
        path = root / rel
        if not path.exists():
            raise DataError(f"{path}: not found (the MLM corpus needs {', '.join(SOURCES.values())} "
                            f"under config.data_dir={data_dir!r})")
        if name == "bbc":
            files = sorted(path.glob("*/*.txt"))
            if not files:
                raise DataError(f"{path}: no <topic>/<n>.txt articles")
            docs[name] = [" ".join(_read(f).split()) for f in files]
            continue
        lines = [line.strip() for line in _read(path).splitlines() if line.strip()]
        if name == "sst2":
            lines = [line.split(" ", 1)[1] if " " in line else "" for line in lines]
        elif name == "amazon":
            lines = [line.split(" ", 1)[1] if line.startswith("__label__") else line for line in lines]
        docs[name] = [line for line in lines if line]
    return docs


# counterfactual data augmentation (Zhao et al. 2018; Webster et al. 2020's Zari): both directions
GENDER_PAIRS = [("he", "she"), ("him", "her"), ("his", "her"), ("himself", "herself"), ("man", "woman"),
                ("men", "women"), ("boy", "girl"), ("boys", "girls"), ("father", "mother"),
                ("fathers", "mothers"), ("son", "daughter"), ("sons", "daughters"), ("brother", "sister"),
                ("brothers", "sisters"), ("husband", "wife"), ("husbands", "wives"), ("king", "queen"),
                ("kings", "queens"), ("mr", "mrs"), ("uncle", "aunt"), ("nephew", "niece"), ("male", "female"),
                ("males", "females"), ("gentleman", "lady"), ("gentlemen", "ladies"), ("actor", "actress"),
                ("actors", "actresses"), ("waiter", "waitress"), ("boyfriend", "girlfriend"),
                ("grandfather", "grandmother"), ("grandson", "granddaughter"), ("businessman", "businesswoman"),
                ("spokesman", "spokeswoman"), ("chairman", "chairwoman"), ("masculine", "feminine")]


def _swap_table() -> dict[str, str]:
    table = {}
    for a, b in GENDER_PAIRS:
        table.setdefault(a, b)  # "her" -> "him" / "his" is ambiguous: the first listed pair wins ("him")
        table.setdefault(b, a)
    return table


_SWAP = _swap_table()
_WORD = re.compile(r"\b(" + "|".join(sorted(_SWAP, key=len, reverse=True)) + r")\b", re.IGNORECASE)


def gender_swap(text: str) -> str:
    """Every word of GENDER_PAIRS replaced by its partner, keeping capitalisation."""
    def repl(m):
        w = m.group(0)
        out = _SWAP[w.lower()]
        return out.upper() if w.isupper() and len(w) > 1 else out.capitalize() if w[0].isupper() else out
    return _WORD.sub(repl, text)


def is_held_out(text: str) -> bool:
    return int(hashlib.sha1(text.encode()).hexdigest(), 16) % HELD_OUT_EVERY == 0


def pack(tokenizer, docs: list[str], seq_length: int) -> np.ndarray:
    """[N, seq_length] sequences: the documents' tokens as one stream ([SEP] between documents),
    cut into windows of seq_length - 2 and wrapped in [CLS] ... [SEP]."""
    ids = tokenizer(docs, add_special_tokens=False)["input_ids"]
    stream = np.fromiter((t for doc in ids for t in doc + [tokenizer.sep_token_id]), np.int32)
    body = seq_length - 2
    n = len(stream) // body
    if n == 0:
        raise DataError(f"corpus too small: {len(stream)} tokens, fewer than one sequence of {body}")
    windows = stream[:n * body].reshape(n, body)
    cls = np.full((n, 1), tokenizer.cls_token_id, np.int32)
    sep = np.full((n, 1), tokenizer.sep_token_id, np.int32)
    return np.concatenate([cls, windows, sep], axis=1)


def save_hf(model: bert.BertModel, tokenizer, source_dir: pathlib.Path, out: pathlib.Path) -> pathlib.Path:
    """WORKDIR/hf: a BertForMaskedLM directory (encoder keys under `bert.`, the tied decoder implied)."""
    from safetensors.numpy import save_file

    out.mkdir(parents=True, exist_ok=True)
    state = {}
    for k, v in bert.hf_state_dict(model).items():
        if k.startswith("pooler."):
            continue  # BertForMaskedLM has no pooler
        state[k if k.startswith("cls.") else "bert." + k] = np.ascontiguousarray(v, np.float32)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((source_dir / "config.json").read_text())
    config.update(architectures=["BertForMaskedLM"], tie_word_embeddings=True)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    tokenizer.save_pretrained(str(out))
    return out


@functools.lru_cache(maxsize=2)
def packed_corpus(source: pathlib.Path, data_dir: str, seq_length: int, cda: bool) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) packed sequences of the local text, tokenised by `source`'s tokenizer; cached, as
    the driver's timing run and the run itself read the same."""
    docs = read_corpus(data_dir)
    train_docs = [d for ds in docs.values() for d in ds if not is_held_out(d)]
    eval_docs = [d for ds in docs.values() for d in ds if is_held_out(d)]
    if cda:  # two-sided: the original documents and their gender-swapped copies
        train_docs = train_docs + [gender_swap(d) for d in train_docs]
    tokenizer = load_tokenizer(source)
    return pack(tokenizer, train_docs, seq_length), pack(tokenizer, eval_docs, seq_length)


def mask_sequences(ids: np.ndarray, rng: np.random.Generator, *, mask_id: int, replace_ids: np.ndarray,
                   rate: float = 0.15):
    """BERT's masking of [B, L] packed sequences ([CLS] first, [SEP] last, no padding): the same number
    of positions in every row. Returns (inputs, positions [B, M], labels [B, M])."""
    inner = np.ones(ids.shape, bool)
    inner[:, [0, -1]] = False
    inputs, chosen = bert_mask(ids, rng, maskable=inner, mask_id=mask_id, replace_ids=replace_ids, rate=rate)
    positions = np.nonzero(chosen)[1].reshape(len(ids), -1).astype(np.int32)  # row-major: sorted per row
    return inputs, positions, np.take_along_axis(ids, positions, axis=1)


class MaskedSequences:
    """Packed sequences as the engine's random-access dataset, masked afresh each time they are drawn."""

    def __init__(self, sequences: np.ndarray, mask_kw: dict):
        self.sequences, self.mask_kw = sequences, mask_kw

    def __len__(self) -> int:
        return len(self.sequences)

    def example(self, index: int, rng: np.random.Generator):
        inputs, positions, labels = mask_sequences(self.sequences[index][None], rng, **self.mask_kw)
        return {"input_ids": inputs[0], "positions": positions[0], "labels": labels[0]}


def _names(path) -> list[str]:
    """The DictKey names of a leaf's path (the Variable's `.value` attribute dropped)."""
    return [str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey)]


def update_scale(config, params):
    """The full stage trains a young head faster than the pretrained encoder: its updates are scaled
    by head_learning_rate / learning_rate (None: no scaling)."""
    if config.model.mode != "full" or not config.head_learning_rate:
        return None
    head_scale = config.head_learning_rate / config.learning_rate
    return jax.tree_util.tree_map_with_path(lambda path, _: head_scale if "mlm_head" in _names(path) else 1.0, params)


class MLMHeadTask:

    def __init__(self, config):
        self.config = config
        self.source = resolve_checkpoint_dir(config.model.checkpoint or None)
        self.tokenizer = load_tokenizer(self.source)
        train_sequences, eval_sequences = packed_corpus(self.source, config.data_dir, config.seq_length, config.cda)
        special = set(self.tokenizer.all_special_ids)
        vocab_size = json.loads((self.source / "config.json").read_text())["vocab_size"]  # the model's
        replace_ids = np.array([i for i in range(vocab_size) if i not in special], np.int32)
        self.mask_kw = dict(mask_id=self.tokenizer.mask_token_id, replace_ids=replace_ids, rate=config.mask_rate)
        self.train_data = MaskedSequences(train_sequences, self.mask_kw)
        self.eval_sequences = eval_sequences[:config.eval_sequences]
        self.tokens_per_example = config.seq_length
        self.model_sizes = {}
        self.meta = {"seq_length": config.seq_length, "cda": bool(config.cda),
                     "vocab_size": vocab_size}

    def decay_tokens(self) -> int:
        return self.config.decay_epochs * len(self.train_data) * self.tokens_per_example

    def update_scale(self, params):
        return update_scale(self.config, params)

    def _forward(self, model, batch):
        ids = batch["input_ids"]
        out = model(ids, jnp.ones_like(ids), jnp.zeros_like(ids), mlm_positions=batch["positions"])
        return out.logits.astype(jnp.float32)

    def loss(self, model, batch):
        logits = self._forward(model, batch)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"]).mean()
        return loss, {"loss": loss, "accuracy": (logits.argmax(-1) == batch["labels"]).mean()}

    def validation_batches(self) -> list:
        """The held-out sequences, masked once with a fixed seed (the same masks for every model)."""
        inputs, positions, labels = mask_sequences(self.eval_sequences, np.random.default_rng(1234), **self.mask_kw)
        n, size = len(inputs), self.config.eval_batch_size
        batches = []
        for start in range(0, n, size):
            part = {"input_ids": inputs[start:start + size], "positions": positions[start:start + size],
                    "labels": labels[start:start + size]}
            real = len(part["labels"])  # the last batch is padded with copies of its first row
            batches.append(({k: np.concatenate([v, np.repeat(v[:1], size - real, 0)]) for k, v in part.items()},
                            real))
        return batches

    def eval_outputs(self, model, batch) -> dict:
        """Per sequence: the summed cross-entropy and the correct predictions at its masked positions."""
        logits = self._forward(model, batch)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"])
        return {"cross_entropy": ce.sum(-1), "correct": (logits.argmax(-1) == batch["labels"]).sum(-1),
                "masked": jnp.full(ce.shape[:1], ce.shape[1])}

    def summarize(self, outputs: dict) -> dict:
        masked = float(outputs["masked"].sum())
        cross_entropy = float(outputs["cross_entropy"].sum()) / masked
        return {"masked_token_accuracy": float(outputs["correct"].sum()) / masked,
                "perplexity": math.exp(cross_entropy), "cross_entropy": cross_entropy,
                "sequences": len(outputs["masked"]), "masked_tokens": int(masked)}

    def export(self, model, workdir: pathlib.Path) -> pathlib.Path:
        """WORKDIR/hf: the trained model as a Hugging Face BertForMaskedLM directory."""
        return save_hf(model, self.tokenizer, self.source, pathlib.Path(workdir) / "hf")
