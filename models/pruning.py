"""Physical head pruning (issue 13): remove attention heads from the weight matrices.

A head h of a layer owns columns h*d:(h+1)*d (d = head size) of the query, key and value
projections and the same rows of the attention output projection. Pruning keeps only the
columns/rows of the surviving heads, so the layer computes exactly what the head-masked
model computes with a mask of zeros on the pruned heads (the output projection's bias is
untouched; a layer that loses every head adds just that bias). Supported: BERT
(`BertModel`, `BertClassifier`) and minGPT with its own attention (`GPT(attention=None)`).

    keep = np.array(...)                       # (num_layers, num_heads) booleans, True = keep
    prune_heads(model, keep)                   # in place
    save_pruned(model, keep, "runs/heads/x")   # pruned.json + params.npz
    model = load_pruned("runs/heads/x")        # builds the smaller model and fills it in

Bad input is a ValueError (a mask of the wrong shape, a head or layer index that does not
exist, pruning an already pruned model) or a CheckpointError (a checkpoint of another model
or of other weights).
"""
from __future__ import annotations

import dataclasses
import json
import pathlib

import jax.numpy as jnp
import numpy as np
from flax import nnx

from models import bert as bert_lib
from models.gpt import GPT, CausalSelfAttention
from models.hf_checkpoint import CheckpointError, check_fits, flatten

FORMAT = "heads-pruned-v1"


def _kind(model) -> str:
    if isinstance(model, bert_lib.BertClassifier):
        return "bert_classifier"
    if isinstance(model, bert_lib.BertModel):
        return "bert"
    if isinstance(model, GPT):
        return "gpt"
    raise ValueError(f"head pruning supports BertModel, BertClassifier and GPT, got {type(model).__name__}")


def attention_modules(model) -> list:
    """The per-layer modules that own query/key/value and the output projection."""
    kind = _kind(model)
    if kind == "gpt":
        mods = [b.attn for b in model.blocks]
        if not all(isinstance(m, CausalSelfAttention) for m in mods):
            raise ValueError("physical pruning supports minGPT's own attention (attention=None); this GPT "
                             "uses models.attention.SelfAttention variants: use a head mask instead")
        return mods
    encoder = model.bert if kind == "bert_classifier" else model
    return list(encoder.layers)


def head_shape(model) -> tuple[int, int]:
    """(num_layers, num_heads) of the unpruned model."""
    kind = _kind(model)
    if kind == "gpt":
        return len(model.blocks), model.n_head
    cfg = (model.bert if kind == "bert_classifier" else model).config
    return cfg.num_hidden_layers, cfg.num_attention_heads


def keep_from_pruned(heads_to_prune: dict[int, list[int]], shape: tuple[int, int]) -> np.ndarray:
    """{layer: [heads]} (Hugging Face's prune_heads argument) -> (layers, heads) keep mask."""
    layers, heads = shape
    keep = np.ones(shape, bool)
    for layer, hs in heads_to_prune.items():
        if not 0 <= int(layer) < layers:
            raise ValueError(f"cannot prune layer {layer}: the model has layers 0..{layers - 1}")
        hs = list(hs)
        if len(set(hs)) > heads:
            raise ValueError(f"cannot prune {len(set(hs))} heads of layer {layer}: it has {heads}")
        bad = [h for h in hs if not 0 <= int(h) < heads]
        if bad:
            raise ValueError(f"cannot prune heads {bad} of layer {layer}: it has heads 0..{heads - 1}")
        keep[int(layer), hs] = False
    return keep


def _check_keep(model, keep) -> np.ndarray:
    keep = np.asarray(keep)
    shape = head_shape(model)
    if keep.shape != shape:
        raise ValueError(f"keep mask must have shape (num_layers, num_heads) = {shape}, got {keep.shape}")
    if not np.all((keep == 0) | (keep == 1)):
        raise ValueError("keep mask must hold only 0/1 (or booleans): pruning removes whole heads")
    return keep.astype(bool)


def _columns(kept: np.ndarray, head_size: int) -> np.ndarray:
    return (kept[:, None] * head_size + np.arange(head_size)[None, :]).reshape(-1)


def _sliced_linear(linear: nnx.Linear, *, columns=None, rows=None) -> nnx.Linear:
    """A new nnx.Linear holding the given output columns or input rows of `linear`."""
    kernel, bias = linear.kernel[...], linear.bias[...]
    if columns is not None:
        kernel, bias = kernel[:, columns], bias[columns]
    if rows is not None:
        kernel = kernel[rows, :]
    # zeros init: a layer that lost every head has a (0, d) kernel (a fan-in of 0)
    new = nnx.Linear(kernel.shape[0], kernel.shape[1], kernel_init=nnx.initializers.zeros,
                     rngs=nnx.Rngs(0), param_dtype=kernel.dtype)
    new.kernel.set_value(jnp.asarray(kernel))
    new.bias.set_value(jnp.asarray(bias))
    return new


def prune_heads(model, keep) -> None:
    """Removes the heads with keep[layer, head] == False from `model`, in place."""
    keep = _check_keep(model, keep)
    out_name = "proj" if _kind(model) == "gpt" else "attn_out"
    for layer_keep, mod in zip(keep, attention_modules(model)):
        heads_now = mod.n_head if isinstance(mod, CausalSelfAttention) else mod.num_heads
        if heads_now != keep.shape[1]:
            raise ValueError(f"the model is already pruned ({heads_now} of {keep.shape[1]} heads left in a "
                             f"layer); prune the unpruned model with the combined keep mask")
        for name in ("query", "key", "value"):
            if not isinstance(getattr(mod, name), nnx.Linear):
                raise ValueError(f"cannot prune a {type(getattr(mod, name)).__name__} {name} projection "
                                 f"(LoRA): merge the adapters first")
        kept = np.flatnonzero(layer_keep)
        cols = _columns(kept, mod.head_size)
        for name in ("query", "key", "value"):
            setattr(mod, name, _sliced_linear(getattr(mod, name), columns=cols))
        setattr(mod, out_name, _sliced_linear(getattr(mod, out_name), rows=cols))
        if isinstance(mod, CausalSelfAttention):
            mod.n_head = len(kept)
        else:
            mod.num_heads = len(kept)


# ------------------------------------------------------------------ checkpoints

def _description(model) -> dict:
    kind = _kind(model)
    if kind == "gpt":
        blk = model.blocks[0]
        return {"kind": kind, "vocab_size": model.vocab_size, "block_size": model.block_size,
                "n_layer": len(model.blocks), "n_head": model.n_head, "n_embd": blk.ln1.scale.shape[0]}
    encoder = model.bert if kind == "bert_classifier" else model
    d = {"kind": kind, "config": dataclasses.asdict(encoder.config), "pooler": encoder.pooler is not None}
    if kind == "bert_classifier":
        if model.mode not in ("full", "head", "linear_probe"):
            raise ValueError(f"saving a pruned {model.mode!r} classifier is not supported (adapters/prefix)")
        d.update(num_classes=model.classifier.dense.out_features, pooling=model.pooling, mode=model.mode)
    return d


def _build(desc: dict):
    kind = desc["kind"]
    rngs = nnx.Rngs(0)
    if kind == "gpt":
        return GPT(desc["vocab_size"], desc["block_size"], desc["n_layer"], desc["n_head"], desc["n_embd"],
                   0.0, 0.0, 0.0, rngs=rngs)
    encoder = bert_lib.BertModel(bert_lib.BertConfig(**desc["config"]), add_pooling_layer=desc["pooler"],
                                 rngs=rngs)
    if kind == "bert":
        return encoder
    return bert_lib.BertClassifier(encoder, desc["num_classes"], mode=desc["mode"], pooling=desc["pooling"],
                                   rngs=rngs)


def save_pruned(model, keep, directory, extra: dict | None = None) -> pathlib.Path:
    """Writes pruned.json (what model, which heads) and params.npz (the smaller weights)."""
    keep = _check_keep(model, keep)
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    params = {k: np.asarray(v) for k, v in flatten(nnx.state(model, nnx.Param)).items()}
    np.savez(directory / "params.npz", **params)
    meta = {"format": FORMAT, "model": _description(model), "keep": keep.astype(int).tolist(),
            "heads_kept": int(keep.sum()), "heads_total": int(keep.size), **(extra or {})}
    (directory / "pruned.json").write_text(json.dumps(meta, indent=1))
    return directory


def load_pruned(directory, *, expect_kind: str | None = None):
    """The pruned model saved by save_pruned, in eval mode. expect_kind: 'bert', 'bert_classifier', 'gpt'."""
    directory = pathlib.Path(directory)
    meta_path = directory / "pruned.json"
    if not meta_path.is_file():
        raise CheckpointError(f"{directory}: no pruned.json; not a pruned-heads checkpoint (save_pruned writes one)")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{meta_path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    kind = meta["model"]["kind"]
    if expect_kind is not None and kind != expect_kind:
        raise CheckpointError(f"{meta_path} holds a pruned {kind!r} model, not a {expect_kind!r} one")
    model = _build(meta["model"])
    prune_heads(model, np.asarray(meta["keep"], bool))
    state = nnx.state(model, nnx.Param)
    expected = flatten(state)
    with np.load(directory / "params.npz") as f:
        found = {k: f[k] for k in f.files}
    check_fits(expected, found, f"{directory}/params.npz")
    nnx.replace_by_pure_dict(state, _unflatten(found, nnx.to_pure_dict(state)))
    nnx.update(model, state)
    model.eval()
    return model


def _unflatten(flat: dict, template, prefix=""):
    """Fill the nested pure dict `template` from '/'-joined names."""
    out = {}
    for k, v in template.items():
        name = f"{prefix}{k}"
        out[k] = _unflatten(flat, v, name + "/") if isinstance(v, dict) else jnp.asarray(flat[name])
    return out


def apply_checkpoint_keep(model, directory) -> np.ndarray:
    """The keep mask of a saved pruned checkpoint, checked against `model` (another model: an error)."""
    meta = json.loads((pathlib.Path(directory) / "pruned.json").read_text())
    want, have = meta["model"], _description(model)
    if want != have:
        diff = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
        raise CheckpointError(f"{directory}: the pruned checkpoint is of another model (differs in {diff})")
    return np.asarray(meta["keep"], bool)
