"""Plain helpers shared by the test modules: tiny models, configs and data, PyTorch-to-Flax copiers.

Test modules import these from here and never from one another; the fixtures built on them
live in conftest.py, where pytest finds them without an import. torch, transformers and the
engine are imported inside the functions that use them: the training subprocesses import
this file for one config and should not pay for PyTorch.
"""
import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

# ------------------------------------------------------------------ tiny BERT sizes and vocabularies
# Random token ids, no tokenizer (test_bert, test_heads, test_peft: one shape, so they share compiled ops).
TINY_BERT = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=37, max_position_embeddings=40, type_vocab_size=2)

# The bias probes' word-level vocabulary (BertTokenizer splits on spaces and punctuation; every word
# below is one token, "nursing" is not in it, so it becomes [UNK] or word pieces).
TINY_WORDS = ("the a man woman he she his her worked as nurse doctor engineer teacher was is "
              "good bad very kind poor rich people . , ##s ##ing").split()
TINY_VOCAB = SPECIAL_TOKENS + TINY_WORDS
TINY_WORD_BERT = dict(vocab_size=len(TINY_VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=37, max_position_embeddings=64, type_vocab_size=2)

# The SST-2 runs' vocabulary: the sentiment word decides the label.
SST2_WORDS = "the a movie film is was good bad great awful not very fun boring plot actors".split()
SST2_VOCAB = SPECIAL_TOKENS + SST2_WORDS
SST2_BERT = dict(vocab_size=len(SST2_VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=37, max_position_embeddings=40, type_vocab_size=2)
POSITIVE, NEGATIVE = ("good", "great", "fun"), ("bad", "awful", "boring")


# ------------------------------------------------------------------ random weights and tiny BERTs

def randomize(model, seed=0, *, scale=0.3, norm_key="LayerNorm.weight"):
    """Every parameter of a PyTorch model drawn anew (in place); returns the model in eval mode.

    Hugging Face's init (zero biases, unit norms, small weights) would hide swapped biases or
    norms and keep activations where GELU variants agree. Parameters whose name contains
    `norm_key` (None: none) become 1 + 0.2 * noise, the others scale * noise; the noise is drawn
    in each parameter's dtype from a generator seeded with `seed`.
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=p.dtype)
            p.copy_(1 + 0.2 * noise if norm_key and norm_key in name else scale * noise)
    return model.eval()


def hf_bert(sizes, *, mlm=False, seed=0):
    """A Hugging Face BertModel (BertForMaskedLM with mlm=True) of the given config sizes, in eval mode.

    Its weights are Hugging Face's init under torch.manual_seed(seed); pass it to randomize for
    every tensor random.
    """
    import torch
    import transformers

    torch.manual_seed(seed)
    model_class = transformers.BertForMaskedLM if mlm else transformers.BertModel
    return model_class(transformers.BertConfig(**sizes)).eval()


def save_word_tokenizer(path, vocab) -> pathlib.Path:
    """A word-level BertTokenizer (vocab.txt and the tokenizer files) in `path`."""
    import transformers

    path = pathlib.Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    transformers.BertTokenizer(vocab=str(path / "vocab.txt")).save_pretrained(path)
    return path


def save_checkpoint(model, path, fmt="safetensors", *, old_names=False, vocab=None) -> pathlib.Path:
    """A Hugging Face checkpoint directory of `model`: save_pretrained for safetensors, a
    hand-written pytorch_model.bin otherwise; with `vocab`, also its word-level tokenizer.

    transformers 5 writes safetensors even with safe_serialization=False, so the .bin is
    torch.save'd directly, with every key (including the tied decoder) as older releases did;
    old_names: the original Google conversion's LayerNorm.gamma/beta.
    """
    import torch

    path = pathlib.Path(path)
    if fmt == "safetensors":
        model.save_pretrained(path, safe_serialization=True)
    else:
        path.mkdir(parents=True, exist_ok=True)
        model.config.save_pretrained(path)
        state = model.state_dict()
        if old_names:
            state = {k.replace("LayerNorm.weight", "LayerNorm.gamma")
                     .replace("LayerNorm.bias", "LayerNorm.beta"): v for k, v in state.items()}
        torch.save(state, path / "pytorch_model.bin")
    if vocab is not None:
        save_word_tokenizer(path, vocab)
    return path


# ------------------------------------------------------------------ PyTorch -> Flax copiers

def jitter_(torch_module):
    """Nudge float64 parameters off the float32 grid, so that a silent float32 cast shows."""
    import torch

    with torch.no_grad():
        for p in torch_module.parameters():
            p.add_(1e-6 * torch.randn_like(p))
    return torch_module


def copy_linear(jax_linear, torch_linear):
    """torch (out, in) weight -> nnx (in, out) kernel, in torch's dtype."""
    jax_linear.kernel.set_value(jnp.asarray(torch_linear.weight.detach().numpy().T))
    jax_linear.bias.set_value(jnp.asarray(torch_linear.bias.detach().numpy()))


def copy_attention(jax_attn, torch_attn):
    """The four projections of the course's attention (query, key, value, proj)."""
    for name in ("query", "key", "value", "proj"):
        copy_linear(getattr(jax_attn, name), getattr(torch_attn, name))


def copy_gpt_from_torch(model, torch_gpt, skip=()):
    """The reference minGPT's parameters into our GPT, in torch's dtype; `skip`: keys left out
    (pos_emb for a model without learned positions)."""
    from reference.gpt import flax_params

    params = flax_params(torch_gpt)
    for key in skip:
        del params[key]
    nnx.replace_by_pure_dict(state := nnx.state(model, nnx.Param), params)
    nnx.update(model, state)
    return model


def torch_name_to_nnx_path(torch_module, name):
    """A reference Transformer's parameter name -> (path in the nnx module, transpose?)."""
    import torch

    parts = [int(p) if p.isdigit() else p for p in name.split(".")]
    owner = torch_module.get_submodule(".".join(name.split(".")[:-1]))
    path = []
    for i, part in enumerate(parts[:-1]):
        if i and parts[i - 1] == "linear" and isinstance(part, int):
            path.append({0: "fc1", 3: "fc2"}[part])  # the course's nn.Sequential indices
        else:
            path.append(part)
    last = parts[-1]
    if isinstance(owner, torch.nn.Linear) and last == "weight":
        return path + ["kernel"], True
    if isinstance(owner, torch.nn.Embedding):
        return path + ["embedding"], False
    return path + [last], False


def lookup_path(tree, path):
    """The node at `path` in an nnx module or a state tree (attributes, keys or list indices)."""
    for part in path:
        tree = tree[part] if isinstance(part, int) or not hasattr(tree, part) else getattr(tree, part)
    return tree


def copy_from_torch(jax_module, torch_module):
    """Copy every parameter of a reference Transformer (or block) into the matching nnx variable."""
    names = []
    for name, param in torch_module.named_parameters():
        path, transpose = torch_name_to_nnx_path(torch_module, name)
        value = param.detach().numpy()
        lookup_path(jax_module, path).set_value(jnp.asarray(value.T if transpose else value))
        names.append(name)
    n_jax = len(jax.tree.leaves(nnx.state(jax_module, nnx.Param)))
    assert n_jax == len(names), f"{n_jax} nnx params vs {len(names)} torch params"


def assert_grads_match(jax_grads, torch_module, **tol):
    """Our gradients against the reference's .grad, parameter by parameter (copy_from_torch's layout)."""
    for name, param in torch_module.named_parameters():
        path, transpose = torch_name_to_nnx_path(torch_module, name)
        ours = np.asarray(lookup_path(jax_grads, path)[...])
        theirs = param.grad.numpy()
        chex.assert_trees_all_close(ours, theirs.T if transpose else theirs, **tol, custom_message=name)


def random_mask(rng, batch, seq):
    """Padding masks with a different number of real tokens per row (at least one)."""
    lengths = rng.integers(1, seq + 1, size=batch)
    lengths[0] = seq
    return (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int32)


# ------------------------------------------------------------------ shrunken engine configs

def tiny_birth_config(data_dir, stage="pretrain", **overrides):
    """The birth-place demo's config shrunk to a one-layer minGPT and 12 steps."""
    from configs import birth_demo

    config = birth_demo.get_config(stage)
    config.data_dir = str(data_dir)
    config.model.update(block_size=48, n_layer=1, n_head=2, n_embd=16)
    config.update(batch_size=8, max_steps=12, log_every_steps=3, checkpoint_every_steps=4, init_from="")
    config.update(overrides)
    return config


def tiny_sst2_config(checkpoint_dir, sst2_dir, tfds_dir, mode, **overrides):
    """bert_finetune's SST-2 config in `mode` on the tiny checkpoint and files (conftest's sst2_*)."""
    from configs import bert_finetune

    config = bert_finetune.get_config(f"sst2,{mode}")
    config.update(data_dir=str(sst2_dir), tfds_dir=str(tfds_dir), tokenizer=str(checkpoint_dir),
                  max_length=16, batch_size=8, max_steps=6, eval_every_steps=3, log_every_steps=3,
                  checkpoint_every_steps=100, eval_batch_size=16, schedule="constant", learning_rate=1e-2)
    config.model.checkpoint = str(checkpoint_dir)
    config.update(overrides)
    return config


def tiny_listops_config(data_dir, **overrides):
    """A tiny ListOps Transformer classifier: periodic validation and a final split evaluation."""
    from configs import listops

    config = listops.get_config("exact")
    config.data_dir = str(data_dir)
    config.max_length = config.model.max_positions = 63
    config.model.embed_dim, config.model.hidden_dim, config.model.num_layers = 16, 16, 1
    config.update(batch_size=16, max_steps=4, eval_every_steps=2, eval_batch_size=16, **overrides)
    return config


def final_params(workdir, config):
    """The run's restored parameters (as leaves) and their step."""
    from train import rundir, tasks, train

    task = tasks.build(config)
    _, params, _, _ = train.build_split_model(config, task)
    params, step = rundir.restore_params(workdir, params, task.meta)
    return jax.tree.leaves(params), step
