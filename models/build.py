"""Models from a config's `model` sub-dict (configs/base.py `model_config`): no data needed, only sizes.

    model = build_model(config.model, vocab_size=len(vocab), rngs=nnx.Rngs(0))          # gpt
    model = build_model(config.model, num_classes=2, rngs=nnx.Rngs(0))                  # classifiers

Every classifier is called as `model(input_ids, attention_mask[, token_type_ids])` and
returns logits; the GPT as `model(idx)`. `trainable_filter(model_config)` says which
variables a fine-tuning mode trains (everything but a pretrained BERT's frozen parts).
"""

from __future__ import annotations

from flax import nnx

KINDS = ("gpt", "gru", "transformer", "bert", "bert_mlm")


def _require(name: str, value, kind: str):
    if value is None:
        raise ValueError(f"building a {kind} model needs {name}")
    return value


def build_model(model_config, *, vocab_size: int | None = None, num_classes: int | None = None,
                rngs: nnx.Rngs) -> nnx.Module:
    """vocab_size: the GPT's (from its corpus); num_classes: the classifiers'."""
    m, kind = model_config, model_config.kind
    if kind == "gpt":
        from models.gpt import GPT
        attention = None
        if m.attention.module != "mingpt":
            if m.attention.module != "variants":
                raise ValueError(f"config.model.attention.module={m.attention.module!r}: use mingpt or variants")
            attention = {k: v for k, v in m.attention.items() if k != "module"}
        return GPT(_require("vocab_size", vocab_size, kind), m.block_size, m.n_layer, m.n_head, m.n_embd,
                   m.embd_pdrop, m.resid_pdrop, m.attn_pdrop, attention, positions=m.positions, causal=m.causal,
                   dropout_bits=m.dropout_bits, rngs=rngs)
    if kind == "bert_mlm":
        from models.bert import load_pretrained
        from models.masked_lm import has_mlm_head
        source = m.checkpoint or None
        model = load_pretrained(source, with_mlm_head=True, new_mlm_head=not has_mlm_head(source), rngs=rngs,
                                dropout_bits=m.dropout_bits)
        if m.mode == "full":
            model.train()  # continued pretraining with BERT's dropout; a frozen encoder runs without
        return model
    num_classes = _require("num_classes", num_classes, kind)
    if kind == "gru":
        from models.seq2seq import GRUSentimentClassifier
        return GRUSentimentClassifier(m.vocabulary_size, m.embedding_size, m.hidden_size, m.num_layers, m.dropout,
                                      m.encoder_only, num_classes, rngs=rngs)
    if kind == "transformer":
        from models.transformer import TransformerClassifier
        return TransformerClassifier(
            num_classes, vocabulary_size=m.vocabulary_size, embed_dim=m.embed_dim, hidden_dim=m.hidden_dim,
            num_heads=m.num_heads, num_layers=m.num_layers, block=m.block, dropout=m.dropout,
            max_length=m.max_positions, attention=dict(m.attention) if "attention" in m else None,
            dropout_bits=m.dropout_bits, rngs=rngs)
    if kind == "bert":
        from models.bert import load_classifier
        return load_classifier(m.checkpoint or None, num_classes, mode=m.mode, rngs=rngs, pooling=m.pooling or None,
                               prefix_length=m.prefix_length, lora_rank=m.lora_rank, lora_alpha=m.lora_alpha,
                               lora_targets=tuple(m.lora_targets), dropout_bits=m.dropout_bits)
    raise ValueError(f"config.model.kind={kind!r} is not one of {KINDS}")


def trainable_filter(model_config) -> nnx.filterlib.Filter:
    """The variables training updates: the fine-tuning mode's for BERT, every parameter otherwise."""
    if model_config.kind == "bert":
        from models.peft import trainable_filter as mode_filter
        return mode_filter(model_config.mode)
    if model_config.kind == "bert_mlm" and model_config.mode == "head":
        return nnx.All(nnx.Param, nnx.PathContains("mlm_head"))
    return nnx.Param
