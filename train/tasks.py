"""Tasks: what the engine trains. A task owns its data, model, loss and final evaluation.

The engine (`train/train.py`) only needs, from a task:
  * `train_data`: random access, `len(...)` and `.example(index, rng) -> (x, y)`;
  * `tokens_per_example`: for the learning-rate schedule and throughput;
  * `make_model(rngs)`, `loss(model, batch)`;
  * `evaluate(model, path=None)` -> (metrics, prediction lines) or None;
  * `meta`: JSON facts a checkpoint must agree with (e.g. the vocabulary).
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from data import birth_places
from models.gpt import GPT

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def resolve_path(path: str) -> pathlib.Path:
    """A path as given, or else relative to the repository (where configs' defaults point)."""
    given = pathlib.Path(path).expanduser()
    if given.is_absolute() or given.exists():
        return given
    return REPO_ROOT / given


def resolve_data_dir(data_dir: str) -> pathlib.Path:
    path = resolve_path(data_dir)
    if not path.is_dir():
        raise birth_places.DataError(f"data directory {data_dir!r} does not exist (looked at {path.absolute()})")
    return path


def masked_cross_entropy(logits: jax.Array, targets: jax.Array, ignore_id: int = birth_places.PAD_ID):
    """Mean token cross-entropy over targets != ignore_id (PyTorch's ignore_index)."""
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))  # bf16 -> f32, f64 stays
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    weights = (targets != ignore_id).astype(logits.dtype)
    count = weights.sum()
    loss = (nll * weights).sum() / jnp.maximum(count, 1.0)
    return loss, {"loss": loss, "scored_tokens": count}


def greedy_decode(model: GPT, prompts: list[np.ndarray], steps: int, chunk: int = 256) -> list[np.ndarray]:
    """Appends `steps` argmax tokens to each prompt (minGPT `sample` with sample=False).

    Prompts are right-padded into one (N, T) buffer; the model is causal, so the
    padding never influences the positions that are read.
    """
    block_size = model.block_size
    longest = max(len(p) for p in prompts)
    if longest >= block_size:
        raise ValueError(f"a prompt of {longest} tokens leaves no room in block_size {block_size}")
    width = min(block_size, longest + steps)
    graphdef, state = nnx.split(model)

    @jax.jit
    def run(state, tokens, lengths):
        model = nnx.merge(graphdef, state)
        rows = jnp.arange(tokens.shape[0])

        def body(_, carry):
            tokens, lengths = carry
            logits = model(tokens)[rows, lengths - 1]
            nxt = jnp.argmax(logits, axis=-1).astype(tokens.dtype)
            room = lengths < width  # past the buffer: stop writing (the answer ended long before)
            tokens = tokens.at[rows, jnp.minimum(lengths, width - 1)].set(
                jnp.where(room, nxt, tokens[rows, jnp.minimum(lengths, width - 1)]))
            return tokens, lengths + room

        return jax.lax.fori_loop(0, steps, body, (tokens, lengths))

    outputs = []
    for start in range(0, len(prompts), chunk):
        group = prompts[start:start + chunk]
        n = len(group)
        tokens = np.full((chunk, width), birth_places.PAD_ID, np.int32)  # fixed shape: one compilation
        lengths = np.ones(chunk, np.int32)
        for i, p in enumerate(group):
            tokens[i, :len(p)] = p
            lengths[i] = len(p)
        out, out_len = jax.device_get(run(state, tokens, lengths))
        outputs.extend(out[i, :out_len[i]] for i in range(n))
    return outputs


class _GPTTask:
    """Shared by both CS224n tasks: the vocabulary comes from the pretraining corpus."""

    def __init__(self, config):
        self.config = config
        self.data_dir = resolve_data_dir(config.data_dir)
        corpus_path = self.data_dir / config.pretrain_corpus
        self.pretrain_data = birth_places.CharCorruptionDataset(
            birth_places.read_text(corpus_path), config.model.block_size, source=str(corpus_path))
        self.vocab = self.pretrain_data.vocab
        self.tokens_per_example = config.model.block_size - 1
        self.meta = {"vocab": "".join(self.vocab.itos)}

    def make_model(self, rngs: nnx.Rngs) -> GPT:
        m = self.config.model
        attention = None
        if m.get("attention") and m.attention.module != "mingpt":
            if m.attention.module != "variants":
                raise ValueError(f"config.model.attention.module={m.attention.module!r}: use mingpt or variants")
            attention = {k: v for k, v in m.attention.items() if k != "module"}
        return GPT(self.vocab_size, m.block_size, m.n_layer, m.n_head, m.n_embd,
                   m.embd_pdrop, m.resid_pdrop, m.attn_pdrop, attention, rngs=rngs)

    def decay_tokens(self) -> int:
        """The course's `final_tokens = 200 * len(dataset) * block_size`."""
        return self.config.decay_epochs * len(self.train_data) * self.config.model.block_size

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def loss(self, model: GPT, batch):
        x, y = batch
        return masked_cross_entropy(model(x), y)

    def evaluate(self, model: GPT, path: str | pathlib.Path | None = None):
        """Greedy-decodes `name⁇` for each line of the eval file; exact-match accuracy."""
        path = pathlib.Path(path) if path else self.data_dir / self.config.eval_file
        pairs = birth_places.read_name_place_tsv(path, require_answers=False)
        prompts = [self.vocab.encode(p.question + birth_places.MASK_CHAR, f"{path}:{p.line}") for p in pairs]
        completions = greedy_decode(model, prompts, self.config.decode_steps)
        predictions = [birth_places.extract_prediction(self.vocab.decode(c)) for c in completions]
        total, correct = birth_places.evaluate_places(predictions, [p.answer for p in pairs])
        metrics = {"eval_file": str(path), "examples": len(pairs)}
        if total:
            metrics.update(correct=correct, accuracy=correct / total)
        return metrics, predictions


class SpanCorruptionTask(_GPTTask):
    """Pretraining on the corpus by span corruption."""

    def __init__(self, config):
        super().__init__(config)
        self.train_data = self.pretrain_data


class BirthPlacesTask(_GPTTask):
    """Finetuning on `Where was X born?⁇place⁇`."""

    def __init__(self, config):
        super().__init__(config)
        path = self.data_dir / config.train_file
        self.train_data = birth_places.NameDataset(
            self.pretrain_data, birth_places.read_name_place_tsv(path), source=str(path))


# ----------------------------------------------------------------------------- text classification


def load_text_dataset(config, tokenizer) -> dict:
    """{split: {input_ids, attention_mask, token_type_ids, label}} for config.dataset."""
    from data import amazon_polarity, boolq, sst2
    data_dir = resolve_data_dir(config.data_dir)
    kwargs = dict(max_length=config.max_length, tfds_dir=config.tfds_dir or None)
    if config.dataset == "sst2":
        splits = sst2.load_sst2(data_dir, tokenizer, **kwargs)
    elif config.dataset == "boolq":
        splits = boolq.load_boolq(data_dir, tokenizer, **kwargs)
    elif config.dataset == "amazon_polarity":
        splits = amazon_polarity.load_amazon_polarity(data_dir, tokenizer, fields=config.text_fields, **kwargs)
    else:
        raise ValueError(f"config.dataset={config.dataset!r} is not one of sst2, boolq, amazon_polarity")
    if config.get("train_limit", 0) > 0:  # a documented subset, for runs this machine can afford
        splits["train"] = {k: v[:config.train_limit] for k, v in splits["train"].items()}
    return splits


def make_classifier(model_config, num_classes: int, rngs: nnx.Rngs) -> nnx.Module:
    """The IFT6135 / fine-tuning models, all called as model(input_ids, attention_mask[, token_type_ids])."""
    kind = model_config.kind
    if kind == "gru":
        from models.seq2seq import GRUSentimentClassifier
        return GRUSentimentClassifier(
            model_config.vocabulary_size, model_config.embedding_size, model_config.hidden_size,
            model_config.num_layers, model_config.dropout, model_config.encoder_only, num_classes, rngs=rngs)
    if kind == "transformer":
        from models.transformer import TransformerClassifier
        return TransformerClassifier(
            num_classes, vocabulary_size=model_config.vocabulary_size, embed_dim=model_config.embed_dim,
            hidden_dim=model_config.hidden_dim, num_heads=model_config.num_heads,
            num_layers=model_config.num_layers, block=model_config.block, dropout=model_config.dropout,
            max_length=model_config.max_length, rngs=rngs)
    if kind == "bert":
        from models import peft
        return peft.load_classifier(
            model_config.checkpoint or None, num_classes, mode=model_config.mode, rngs=rngs,
            pooling=model_config.pooling or None, prefix_length=model_config.prefix_length,
            lora_rank=model_config.lora_rank, lora_alpha=model_config.lora_alpha,
            lora_targets=tuple(model_config.lora_targets))
    raise ValueError(f"config.model.kind={kind!r} is not one of gru, transformer, bert")


class TextClassificationTask:
    """Sentence(-pair) classification: SST-2, BoolQ, Amazon Polarity; GRU, Transformer or BERT."""

    def __init__(self, config):
        from data import text
        from models import peft
        self.config = config
        tokenizer = text.load_tokenizer(config.tokenizer or None)
        self.splits = load_text_dataset(config, tokenizer)
        self.train_data = text.ArrayExamples(self.splits["train"])
        self.tokens_per_example = config.max_length
        self.num_classes = int(max(int(s["label"].max()) for s in self.splits.values())) + 1
        self.meta = {"dataset": config.dataset, "max_length": config.max_length}
        self.uses_token_types = config.model.kind == "bert"
        # BERT fine-tuning modes train only part of the model; the others train everything.
        self.trainable = peft.trainable_filter(config.model.mode) if config.model.kind == "bert" else nnx.Param
        self._forward = None

    def make_model(self, rngs: nnx.Rngs) -> nnx.Module:
        return make_classifier(self.config.model, self.num_classes, rngs)

    def logits(self, model, inputs):
        if self.uses_token_types:
            return model(inputs["input_ids"], inputs["attention_mask"], inputs["token_type_ids"])
        return model(inputs["input_ids"], inputs["attention_mask"])

    def loss(self, model, batch):
        inputs, labels = batch
        logits = self.logits(model, inputs).astype(jnp.float32)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return loss, {"loss": loss, "accuracy": (logits.argmax(-1) == labels).mean()}

    def predict(self, model, split: dict) -> np.ndarray:
        """Logits for a whole split, in fixed-size batches (one compilation)."""
        graphdef, state = nnx.split(model)
        if self._forward is None or self._forward[0] != graphdef:
            self._forward = (graphdef, jax.jit(lambda st, inputs: self.logits(nnx.merge(graphdef, st), inputs)))
        forward = self._forward[1]
        size = self.config.eval_batch_size
        n = len(split["label"])
        out = []
        for start in range(0, n, size):
            inputs = {k: split[k][start:start + size] for k in ("input_ids", "attention_mask", "token_type_ids")}
            m = len(inputs["input_ids"])
            if m < size:  # pad the last batch
                inputs = {k: np.concatenate([v, np.zeros((size - m,) + v.shape[1:], v.dtype)]) for k, v in inputs.items()}
            out.append(np.asarray(forward(state, inputs))[:m])
        return np.concatenate(out)

    def _metrics(self, model, split: dict) -> dict:
        logits = self.predict(model, split)
        labels = split["label"]
        loss = optax.softmax_cross_entropy_with_integer_labels(jnp.asarray(logits), jnp.asarray(labels)).mean()
        return {"loss": float(loss), "accuracy": float((logits.argmax(-1) == labels).mean()), "examples": len(labels)}, logits

    def validate(self, model) -> dict:
        return self._metrics(model, self.splits["validation"])[0]

    def evaluate(self, model, path=None):
        """Test-split metrics and one predicted label per line."""
        if path is not None:
            raise ValueError("text classification evaluates its dataset's test split; eval_file is not used")
        metrics, logits = self._metrics(model, self.splits["test"])
        return metrics, [str(int(i)) for i in logits.argmax(-1)]


TASKS = {"span_corruption": SpanCorruptionTask, "birth_places": BirthPlacesTask,
         "text_classification": TextClassificationTask}


def build(config):
    if config.task not in TASKS:
        raise ValueError(f"config.task={config.task!r} is not one of {sorted(TASKS)}")
    return TASKS[config.task](config)
