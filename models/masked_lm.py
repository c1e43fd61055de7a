"""A masked language model for the bias probes: a BERT with its MLM head, its tokenizer, and
jit-compiled, batched scoring at chosen positions: what the bias probes, CrowS-Pairs and
the masked-LM head adaptation score with.

`load_mlm(source)` accepts any Hugging Face BERT MLM directory (`BertForMaskedLM`, e.g.
bert-base-uncased) or the name of an installed package shipping one. A directory without an
MLM head is refused with a message pointing to the head adaptation
(`python -m experiments.mlm_head`), which writes such a directory for MiniLM.

Batches are padded to a fixed number of rows and to a length rounded up to a multiple of
`LENGTH_BUCKET`, so one compiled function serves many inputs (a handful of compilations
for CrowS-Pairs rather than one per sentence length).
"""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from models import bert
from models.hf_checkpoint import CheckpointError, read_state_dict, resolve_checkpoint_dir
from models.layers import set_compute_dtype
from models.typed_config import COMPUTE_DTYPES, DROPOUT_BITS, check_fields

LENGTH_BUCKET = 8
ADAPT_COMMAND = "python -m experiments.mlm_head --config=configs/mlm_head.py:head --workdir=runs/mlm_head"


def has_mlm_head(source) -> bool:
    state = read_state_dict(resolve_checkpoint_dir(source))
    return any(k.startswith(("cls.predictions.", "bert.cls.predictions.")) for k in state)


@dataclasses.dataclass(frozen=True)
class PretrainedMLMConfig:
    """A config's `model` dict for kind "bert_mlm" (task mlm_head): a pretrained BERT with its masked-LM head.

    checkpoint: a Hugging Face directory or package ("" = the MiniLM package); a fresh head if it has none.
    mode: head (only the head trains; the encoder frozen, run without dropout) | full (everything trains).
    dropout_bits: hash (the default) | threefry, where the dropout bits come from (models/layers.py).
    dtype: the compute dtype, float32 | bfloat16 | float16 (models/layers.set_compute_dtype).
    """
    checkpoint: str = ""
    mode: str = "head"
    dropout_bits: str = "hash"
    dtype: str = "float32"

    def __post_init__(self):
        check_fields(self, choices={"mode": ("head", "full"), "dropout_bits": DROPOUT_BITS, "dtype": COMPUTE_DTYPES})


class PretrainedMLM:
    """The `bert_mlm` model kind: `from_config` gives a `bert.BertModel` with its masked-LM head."""

    Config = PretrainedMLMConfig

    @staticmethod
    def from_config(config: PretrainedMLMConfig, *, rngs: nnx.Rngs) -> bert.BertModel:
        source = config.checkpoint or None
        model = bert.load_pretrained(source, with_mlm_head=True, new_mlm_head=not has_mlm_head(source), rngs=rngs,
                                     dropout_bits=config.dropout_bits)
        if config.mode == "full":
            model.train()  # continued pretraining with BERT's dropout; a frozen encoder runs without
        return set_compute_dtype(model, config.dtype)


@dataclasses.dataclass
class MaskedLM:
    """A BERT with an MLM head (in eval mode) and its tokenizer, scored in padded batches."""
    model: bert.BertModel
    tokenizer: object
    batch_size: int = 64
    name: str = ""

    def __post_init__(self):
        if self.model.mlm_head is None:
            raise CheckpointError(f"model {self.name or ''} has no MLM head")
        if self.tokenizer.mask_token_id is None:
            raise CheckpointError(f"the tokenizer of {self.name or 'the model'} defines no mask token")
        self.model.eval()
        graphdef, state = nnx.split(self.model)
        self._state = state

        @jax.jit
        def log_probs(state, ids, mask, positions):
            model = nnx.merge(graphdef, state)
            out = model(ids, mask, jnp.zeros_like(ids), mlm_positions=positions, deterministic=True)
            return jax.nn.log_softmax(out.logits.astype(jnp.float32), axis=-1)

        @jax.jit
        def token_log_probs(state, ids, mask, positions, targets):
            lp = log_probs(state, ids, mask, positions)
            return jnp.take_along_axis(lp, targets[..., None], axis=-1)[..., 0]

        self._log_probs = log_probs
        self._token_log_probs = token_log_probs

    @property
    def max_length(self) -> int:
        return self.model.config.max_position_embeddings

    def _batches(self, sequences: Sequence[Sequence[int]], extra: Sequence[np.ndarray]):
        """Yields (row indices, ids, mask, *extra rows) padded to batch_size rows and a bucketed length."""
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))  # similar lengths together
        pad = self.tokenizer.pad_token_id or 0
        for start in range(0, len(order), self.batch_size):
            rows = order[start:start + self.batch_size]
            longest = max(len(sequences[i]) for i in rows)
            if longest > self.max_length:
                raise ValueError(f"a sequence of {longest} tokens exceeds the model's "
                                 f"{self.max_length} positions")
            length = min(-(-longest // LENGTH_BUCKET) * LENGTH_BUCKET, self.max_length)
            ids = np.full((self.batch_size, length), pad, np.int32)
            mask = np.zeros((self.batch_size, length), np.int32)
            for r, i in enumerate(rows):
                ids[r, :len(sequences[i])] = sequences[i]
                mask[r, :len(sequences[i])] = 1
            mask[len(rows):, 0] = 1  # padding rows: one real token keeps them finite
            cols = []
            for e in extra:
                c = np.zeros((self.batch_size,) + e.shape[1:], e.dtype)
                c[:len(rows)] = e[rows]
                cols.append(c)
            yield rows, ids, mask, cols

    def log_probs(self, sequences: Sequence[Sequence[int]], positions: np.ndarray) -> np.ndarray:
        """[N, M, vocab] log-probabilities at `positions` ([N, M]) of each token-id sequence."""
        positions = np.asarray(positions, np.int32)
        out = np.zeros(positions.shape + (self.model.config.vocab_size,), np.float32)
        for rows, ids, mask, (pos,) in self._batches(sequences, [positions]):
            lp = self._log_probs(self._state, jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(pos))
            out[rows] = np.asarray(lp)[:len(rows)]
        return out

    def token_log_probs(self, sequences: Sequence[Sequence[int]], positions: np.ndarray,
                        targets: np.ndarray) -> np.ndarray:
        """[N, M] log P(targets[n, m] at positions[n, m] | sequence n): only M numbers per row leave the device."""
        positions = np.asarray(positions, np.int32)
        targets = np.asarray(targets, np.int32)
        out = np.zeros(positions.shape, np.float32)
        for rows, ids, mask, (pos, tgt) in self._batches(sequences, [positions, targets]):
            lp = self._token_log_probs(self._state, jnp.asarray(ids), jnp.asarray(mask),
                                       jnp.asarray(pos), jnp.asarray(tgt))
            out[rows] = np.asarray(lp)[:len(rows)]
        return out


def load_mlm(source, *, batch_size: int = 64) -> MaskedLM:
    """A MaskedLM from a Hugging Face BERT MLM directory (or package); a clear error without a head."""
    from models.hf_checkpoint import load_tokenizer

    ckpt_dir = resolve_checkpoint_dir(source)
    if not has_mlm_head(ckpt_dir):
        raise CheckpointError(
            f"{ckpt_dir} has no masked-LM head (no cls.predictions.* weights), so it cannot fill "
            f"masks or score CrowS-Pairs. Use a BertForMaskedLM directory (e.g. bert-base-uncased), "
            f"or train a head for this encoder first:\n  {ADAPT_COMMAND.replace('runs/mlm_head', 'DIR')} "
            f"--config.model.checkpoint={source}\nand pass DIR/hf (the adapted model) instead.")
    model = bert.load_pretrained(ckpt_dir, with_mlm_head=True)
    return MaskedLM(model, load_tokenizer(ckpt_dir), batch_size=batch_size, name=str(source))


def model_name(source) -> str:
    """A short label for tables: the directory name, or the package name."""
    p = pathlib.Path(str(source))
    return p.name if p.name not in ("hf", "") else p.parent.name
