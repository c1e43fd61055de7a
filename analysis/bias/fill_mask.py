"""Fill-mask for any BERT-style masked LM, batched (issue 11), as transformers' pipeline("fill-mask").

    python -m analysis.bias.fill_mask --model=DIR "The man worked as a [MASK]." "The woman worked as a [MASK]."
    python -m analysis.bias.fill_mask --model=DIR --targets=nurse,doctor "She is a [MASK]."

DIR is a Hugging Face BERT MLM directory (config.json, weights with cls.predictions.*, tokenizer),
e.g. bert-base-uncased or the adapted MiniLM that `python -m experiments.mlm_head` writes.

Each [MASK] is predicted independently (as the pipeline does): the probabilities at a mask
are the softmax of the model's logits there, over the whole vocabulary (with `targets`, the
same probabilities restricted to the targets, not renormalised).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from data.paths import DataError
from models.masked_lm import MaskedLM, load_mlm


class PromptError(DataError):
    """A prompt or target the probe cannot use as given (shown as a user error by the commands)."""


def target_ids(tokenizer, targets: Sequence[str]) -> list[int]:
    """Vocabulary ids of the targets, in order, duplicates dropped; each must be one token."""
    ids: list[int] = []
    for t in targets:
        pieces = tokenizer(t, add_special_tokens=False)["input_ids"]
        if len(pieces) != 1:
            raise PromptError(
                f"target {t!r} is not a single vocabulary token: the tokenizer splits it into "
                f"{tokenizer.convert_ids_to_tokens(pieces)}; fill_mask scores one token per [MASK] "
                f"(pick a word in the vocabulary, or mask one piece at a time)")
        if pieces[0] == tokenizer.unk_token_id and t != tokenizer.unk_token:
            raise PromptError(f"target {t!r} is not in the vocabulary (it becomes {tokenizer.unk_token})")
        if pieces[0] not in ids:
            ids.append(pieces[0])
    if not ids:
        raise PromptError("targets is empty; pass at least one word or leave targets unset")
    return ids


def encode_prompts(tokenizer, texts: Sequence[str],
                   masks_per_text: int | None) -> tuple[list[list[int]], list[list[int]]]:
    """Token ids of each text (with [CLS]/[SEP]) and the positions of its mask tokens, checked."""
    seqs, positions = [], []
    mask_id = tokenizer.mask_token_id
    for i, text in enumerate(texts):
        ids = tokenizer(text)["input_ids"]
        pos = [j for j, t in enumerate(ids) if t == mask_id]
        if not pos or (masks_per_text is not None and len(pos) != masks_per_text):
            want = "at least one" if masks_per_text is None else f"exactly {masks_per_text}"
            raise PromptError(f"text {i} {text!r} has {len(pos)} {tokenizer.mask_token} token(s); "
                              f"fill_mask needs {want}")
        seqs.append(ids)
        positions.append(pos)
    return seqs, positions


def fill_mask(model, tokenizer, texts: str | Sequence[str], top_k: int = 5, targets: Sequence[str] | None = None,
              *, masks_per_text: int | None = 1, batch_size: int = 64) -> list[list[list[dict]]]:
    """The top-k fillers of every [MASK] of every text, with probabilities.

    model: a MaskedLM (reused across calls: compiled once) or a BertModel with an MLM head.
    Returns result[text][mask] = [{"score", "token", "token_str", "sequence"}, ...], best first;
    the keys are the pipeline's. `masks_per_text` is the number of masks each text must hold
    (None: any number >= 1).
    """
    if top_k < 1:
        raise ValueError(f"top_k={top_k}: must be at least 1")
    if isinstance(texts, str):
        texts = [texts]
    mlm = model if isinstance(model, MaskedLM) else MaskedLM(model, tokenizer, batch_size=batch_size)
    seqs, positions = encode_prompts(tokenizer, texts, masks_per_text)
    width = max(len(p) for p in positions)
    pos = np.array([p + [p[0]] * (width - len(p)) for p in positions], np.int32)
    probs = np.exp(mlm.log_probs(seqs, pos).astype(np.float64))
    ids = None if targets is None else np.array(target_ids(tokenizer, list(targets)))
    k = top_k if ids is None else min(top_k, len(ids))
    results = []
    for seq, p, pr in zip(seqs, positions, probs):
        per_mask = []
        for m, position in enumerate(p):
            scores = pr[m] if ids is None else pr[m][ids]
            best = np.argsort(-scores, kind="stable")[:k]
            row = []
            for b in best:
                token = int(b if ids is None else ids[b])
                filled = np.array(seq)
                filled[position] = token
                row.append({"score": float(scores[b]), "token": token,
                            "token_str": tokenizer.decode([token]),
                            "sequence": tokenizer.decode(filled, skip_special_tokens=len(p) == 1)})
            per_mask.append(row)
        results.append(per_mask)
    return results


def format_table(text: str, per_mask: list[list[dict]]) -> str:
    """A Markdown table of the top fillers (one column pair per mask)."""
    lines = [f"**{text}**", ""]
    head = " | ".join(f"mask {m + 1} | p" for m in range(len(per_mask)))
    lines += [f"| rank | {head} |", "|---" * (1 + 2 * len(per_mask)) + "|"]
    for r in range(max(len(x) for x in per_mask)):
        cells = " | ".join(f"{x[r]['token_str']} | {x[r]['score']:.4f}" if r < len(x) else " | "
                           for x in per_mask)
        lines.append(f"| {r + 1} | {cells} |")
    return "\n".join(lines)


def main(argv):
    texts = argv[1:]
    if not texts:
        raise PromptError('give at least one text with [MASK], e.g. "The man worked as a [MASK]."')
    mlm = load_mlm(FLAGS.model, batch_size=FLAGS.batch_size)
    results = fill_mask(mlm, mlm.tokenizer, texts, top_k=FLAGS.top_k, targets=FLAGS.targets,
                        masks_per_text=None)
    for text, per_mask in zip(texts, results):
        print(format_table(text, per_mask) + "\n")


if __name__ == "__main__":
    from absl import flags

    from train import cli

    FLAGS = flags.FLAGS
    flags.DEFINE_string("model", None, "A Hugging Face BERT MLM directory (or installed package).", required=True)
    flags.DEFINE_integer("top_k", 5, "How many fillers to show per [MASK].")
    flags.DEFINE_list("targets", None, "Only score these words (each one vocabulary token).")
    flags.DEFINE_integer("batch_size", 64, "Texts per forward pass.")
    cli.run(main)
