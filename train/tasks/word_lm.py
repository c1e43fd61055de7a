"""Word-level mini-GPT on BBC News (seed 002's study): causal LM or masked LM, and its measurements.

The engine's task `word_lm` (configs/attention_*.py; keys in configs/base.py). The data is
data/bbc_words.py: sentences `<START> ... <STOP>` (objective 'causal' or 'mlm') or contiguous
article windows (`config.windows` > 0, the position-encoding study). Training batches are
sentences of similar length (`train_batch`); validation is dev perplexity on the predicted
tokens (and, with `topic_probe`, a topic probe); the final evaluation (`evaluate`) is
every measurement experiments/attention_study.py records:

  loss(model, batch)                     mean cross-entropy over the predicted tokens
  perplexity(model, split)               exp(mean NLL) over every target token of a split
  prefix_only_perplexity(model, ...)     the same, but each position scored with its future
                                         replaced (PAD or a shuffle): the leak check of 0-masking
  sentence_scores / generate             per-sentence loss of fixed prompts, greedy and sampled text
  features(model, ids)                   mean-pooled last hidden states (the topic probe)

Batches are (inputs, targets) int32 arrays, PAD_ID targets ignored; widths are rounded up to
one of `WIDTHS` so a run compiles a few shapes only.
"""
from __future__ import annotations

import functools
import hashlib
import math
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from data import bbc_words as bw
from data.masking import bert_mask
from data.paths import resolve_path
from train.tasks.char_gpt import masked_cross_entropy

WIDTHS = (16, 32, 48, 64, 100, 128, 256, 512)


def width_for(n: int, limit: int) -> int:
    return min(next((w for w in WIDTHS if w >= n), n), max(limit, n))


def cross_entropy(logits, targets):
    """(mean NLL over targets != PAD, metrics) in float32 or wider."""
    return masked_cross_entropy(logits, targets, ignore_id=bw.PAD_ID)


def mlm_corrupt(ids: np.ndarray, rng: np.random.Generator, vocab_size: int, rate: float = 0.15):
    """BERT's masking (data/masking.py) of the words (not PAD or <START>); random replacements are words.
    Returns (inputs, targets with PAD where nothing is predicted)."""
    inputs, chosen = bert_mask(ids, rng, maskable=(ids != bw.PAD_ID) & (ids != bw.START_ID), mask_id=bw.MASK_ID,
                               replace_ids=np.arange(len(bw.SPECIALS), vocab_size), rate=rate)
    return inputs.astype(np.int32), np.where(chosen, ids, bw.PAD_ID).astype(np.int32)


@functools.lru_cache(maxsize=2)
def _load_corpus(data_dir: pathlib.Path, vocab_cap: int, max_tokens: int) -> bw.BBCWords:
    """One read of the corpus per process: a study's runs share it."""
    return bw.load_bbc_words(data_dir, vocab_cap, max_tokens)


class WordLMTask:
    """config keys (configs/base.py, task word_lm): data_dir, vocab_cap, seq_len, objective ('causal' |
    'mlm'), mask_rate, windows (0: sentences; > 0: article windows of that many inputs), batch_size, seed,
    and the measurements' (eval_limit, train_eval_limit, leak_check_sentences, sentences, prompts, ...)."""

    def __init__(self, config, corpus: bw.BBCWords | None = None):
        if config.objective not in ("causal", "mlm"):
            raise ValueError(f"config.objective={config.objective!r} must be 'causal' or 'mlm'")
        self.config = config
        self.corpus = corpus or _load_corpus(resolve_path(config.data_dir), config.vocab_cap, config.seq_len + 1)
        self.vocab = self.corpus.vocab
        self.mlm = config.objective == "mlm"
        # the engine's interface (train/tasks/__init__.py)
        self.train_data = self.rows("train")  # only its length is read: batches come from train_batch
        self.tokens_per_example = int(np.mean([len(r) - (not self.mlm) for r in self.train_data]))
        self.model_sizes = {"vocab_size": len(self.vocab)}
        vocab_hash = hashlib.sha1("\n".join(self.vocab.itos).encode()).hexdigest()[:16]
        self.meta = {"vocab_size": len(self.vocab), "vocab_sha1": vocab_hash, "objective": config.objective}
        self._epochs: dict[int, list[np.ndarray]] = {}

    # -- training data --------------------------------------------------------------

    def rows(self, split: str) -> list[np.ndarray]:
        """Token rows of a split: sentences (<= seq_len + 1 tokens) or fixed article windows."""
        if self.config.windows:
            return list(self.corpus.windows(split, self.config.windows))
        return [np.asarray(s, np.int32) for s in self.corpus.sentences[split]]

    def make_batch(self, rows: list[np.ndarray], rng: np.random.Generator | None = None):
        """(inputs, targets): next-token pairs, or (mlm) corrupted rows and their masked-out ids."""
        if self.mlm:
            ids = bw.pad_batch([r[:self.config.seq_len] for r in rows])
            ids = bw.pad_batch(list(ids), width_for(ids.shape[1], self.config.seq_len))
            return mlm_corrupt(ids, rng or np.random.default_rng(0), len(self.vocab), self.config.mask_rate)
        ids = bw.pad_batch(rows)
        width = width_for(ids.shape[1] - 1, max(self.config.seq_len, ids.shape[1] - 1))
        ids = bw.pad_batch(list(ids), width + 1)
        return ids[:, :-1], ids[:, 1:]

    def epoch_batches(self, epoch: int, bucket: int = 50):
        """The epoch's shuffled full batches as lists of row indices (the last partial batch is dropped).

        Sentences are bucketed by length (a torchtext BucketIterator): a random order is cut into
        chunks of `bucket` batches, each chunk sorted by length and cut into batches, and the batches
        shuffled. Batches then need little padding (about 3x fewer positions than random batches of
        these sentences) while each batch is still a random draw of similar lengths.
        """
        rows = self.rows("train")
        rng = np.random.default_rng([self.config.seed, epoch])
        order = rng.permutation(len(rows))
        b = self.config.batch_size
        order = order[:len(order) - len(order) % b]
        if not self.config.windows:
            chunks = [order[i:i + b * bucket] for i in range(0, len(order), b * bucket)]
            order = np.concatenate([c[np.argsort([len(rows[j]) for j in c], kind="stable")] for c in chunks])
        batches = [order[i:i + b] for i in range(0, len(order), b)]
        return [batches[i] for i in rng.permutation(len(batches))]

    def train_batch(self, index: int):
        """Training batch `index` (0-based) of the run: the same on every run and resume."""
        per_epoch = len(self.train_data) // self.config.batch_size
        epoch, position = divmod(index, per_epoch)
        if epoch not in self._epochs:
            self._epochs = {epoch: self.epoch_batches(epoch)}  # one epoch at a time is enough
        rows = self.train_data
        return self.make_batch([rows[i] for i in self._epochs[epoch][position]],
                               np.random.default_rng([self.config.seed, 7, index]))  # MLM corruption

    def decay_tokens(self) -> int:
        return self.config.decay_epochs * len(self.train_data) * self.tokens_per_example

    def loss(self, model, batch):
        x, y = batch
        return cross_entropy(model(x), y)

    def validation_batches(self) -> list:
        """The first eval_limit dev rows, as the eval step's batches of eval_batch_size rows."""
        return [({"inputs": x, "targets": y}, len(x))
                for x, y in self.eval_batches("dev", self.config.eval_limit, self.config.eval_batch_size)]

    def eval_outputs(self, model, batch) -> dict:
        """Per row: the summed NLL of its predicted tokens and how many there are."""
        nll, count = _row_nll(model, batch["inputs"], batch["targets"])
        return {"nll": nll, "tokens": count}

    def summarize(self, outputs: dict) -> dict:
        total, count = float(outputs["nll"].sum()), float(outputs["tokens"].sum())
        return {"dev_nll": total / count, "dev_perplexity": math.exp(total / count), "dev_tokens": int(count)}

    def validate_model(self, model, step: int) -> dict:
        """The topic probe (config.topic_probe) of the model at this validation pass."""
        return topic_probe(model, self.corpus, self.config.seq_len) if self.config.topic_probe else {}

    def step_counts(self, steps: int) -> tuple[np.ndarray, np.ndarray]:
        """Per training step: the input tokens (not PAD) and the predicted tokens of its batch."""
        counts = np.array([((x != bw.PAD_ID).sum(), (y != bw.PAD_ID).sum())
                           for x, y in (self.train_batch(i) for i in range(steps))], np.int64).reshape(-1, 2)
        return counts[:, 0], counts[:, 1]

    # -- measurements ---------------------------------------------------------------

    def eval_batches(self, split: str, limit: int = 0, batch_size: int = 64, rows=None):
        """Batches of a split's first `limit` rows, sorted by length (less padding; sums are unchanged),
        every batch `batch_size` rows (all-PAD filler rows score nothing): few shapes to compile."""
        rows = self.rows(split)[:limit or None] if rows is None else rows
        rows = sorted(rows, key=len)
        rng = np.random.default_rng(1234)  # the same masks for every model (mlm)
        batches = []
        for i in range(0, len(rows), batch_size):
            chunk = rows[i:i + batch_size]
            chunk = chunk + [np.zeros(1, np.int32)] * (batch_size - len(chunk))
            batches.append(self.make_batch(chunk, rng))
        return batches

    def perplexity(self, model, split: str, limit: int = 0, batches=None) -> dict:
        """{'nll', 'perplexity', 'tokens'} over every predicted token of the split (dropout off)."""
        total = count = 0.0
        for x, y in batches if batches is not None else self.eval_batches(split, limit):
            s, c = _nll_sum(model, x, y)
            total, count = total + float(s), count + float(c)
        return {"nll": total / count, "perplexity": math.exp(total / count), "tokens": int(count)}

    def prefix_only_perplexity(self, model, split: str = "dev", limit: int = 200, how: str = "pad",
                               batch_size: int = 128) -> dict:
        """Causal perplexity with the future hidden from every position *by the input*, not the mask.

        For target t of a sentence the model gets inputs[:t+1] followed by PAD tokens ('pad') or by
        the sentence's later inputs in a random order ('shuffle'), and only logits[t] is scored. A
        correctly masked model scores exactly as perplexity(); a model that reads the future
        (0-masking) loses what it gained from it.
        """
        if how not in ("pad", "shuffle"):
            raise ValueError(f"how={how!r} must be 'pad' or 'shuffle'")
        rng = np.random.default_rng(99)
        rows, where, target = [], [], []
        for s in self.corpus.sentences[split][:limit]:
            x, y = np.asarray(s[:-1], np.int32), np.asarray(s[1:], np.int32)
            for t in range(len(x)):
                future = x[t + 1:].copy()
                future = rng.permutation(future) if how == "shuffle" else np.full_like(future, bw.PAD_ID)
                rows.append(np.concatenate([x[:t + 1], future]))
                where.append(t)
                target.append(y[t])
        order = np.argsort([len(r) for r in rows], kind="stable")
        rows, where, target = [rows[i] for i in order], [where[i] for i in order], [target[i] for i in order]
        total = 0.0
        for i in range(0, len(rows), batch_size):
            chunk = rows[i:i + batch_size]
            width = width_for(max(len(r) for r in chunk), self.config.seq_len)
            ids = bw.pad_batch(chunk, width)
            n = len(chunk)
            pad = lambda a: np.pad(np.asarray(a, np.int32), (0, batch_size - n))
            ids = np.pad(ids, ((0, batch_size - n), (0, 0)))
            nll = np.asarray(_scored_nll(model, ids, pad(where[i:i + n]), pad(target[i:i + n])))[:n]
            total += float(nll.sum())
        return {"nll": total / len(rows), "perplexity": math.exp(total / len(rows)), "tokens": len(rows),
                "how": how, "sentences": limit}

    def evaluate(self, model, target: str | None = None):
        """Every final measurement of a run (dropout off): (metrics, greedy continuations as lines).

        metrics["measurements"]: sentences: perplexity on train (the first train_eval_limit rows), dev
        and test; for the causal LM also the scores of config.sentences, greedy and sampled
        continuations of config.prompts and the leak check. Windows: dev perplexity on windows of each
        extrapolation length (up to block_size). The split `target` (default: eval_split) is also
        reported on its own (nll, perplexity) where it was measured.
        """
        c = self.config
        t = time.perf_counter()
        out: dict = {"vocab": self.corpus.stats}
        if c.windows:  # positions study: dev windows of the training length and longer ones
            out["extrapolation"] = {}
            for length in c.extrapolation_lengths:
                rows = list(self.corpus.windows("dev", length)) if length <= c.model.block_size else []
                if rows:  # else longer than the model or than every dev article
                    batches = [window_batch(rows[i:i + 16]) for i in range(0, len(rows), 16)]
                    out["extrapolation"][str(length)] = self.perplexity(model, "dev", batches=batches)
            out["dev"] = out["extrapolation"].get(str(c.windows)) or self.perplexity(model, "dev", batches=[
                window_batch(list(self.corpus.windows("dev", c.windows)))])
        else:
            out["train"] = self.perplexity(model, "train", c.train_eval_limit)
            out["dev"] = self.perplexity(model, "dev")
            out["test"] = self.perplexity(model, "test")
        lines = []
        if not self.mlm and not c.windows:
            out["sentence_scores"] = self.sentence_scores(model, list(c.sentences))
            out["greedy"] = lines = self.generate(model, list(c.prompts), c.generate_steps)
            out["sampled"] = self.generate(model, list(c.prompts), c.generate_steps, temperature=1.0, seed=c.seed)
            if c.leak_check_sentences:
                dev = [np.asarray(s, np.int32) for s in self.corpus.sentences["dev"][:c.leak_check_sentences]]
                out["leak_check"] = {
                    "normal": self.perplexity(model, "dev", batches=self.eval_batches("dev", rows=dev)),
                    "future_pad": self.prefix_only_perplexity(model, "dev", c.leak_check_sentences, "pad"),
                    "future_shuffled": self.prefix_only_perplexity(model, "dev", c.leak_check_sentences, "shuffle")}
        out["measure_seconds"] = time.perf_counter() - t
        split = target or c.eval_split or "dev"
        metrics = {"eval_split": split, "vocab_size": len(self.vocab)}
        if split in out:
            metrics.update(nll=out[split]["nll"], perplexity=out[split]["perplexity"])
        metrics["measurements"] = out
        return metrics, lines

    def sentence_scores(self, model, sentences: list[str]) -> list[dict]:
        """Mean NLL and perplexity of `<START> sentence <STOP>` for each (seed 002's Tables 2 and 3)."""
        out = []
        for text in sentences:
            ids = [bw.START_ID] + self.vocab.encode(bw.tokenize(text)) + [bw.STOP_ID]
            x, y = self.make_batch([np.asarray(ids, np.int32)], np.random.default_rng(0))
            s, c = _nll_sum(model, x, y)
            nll = float(s) / float(c)
            out.append({"sentence": text, "nll": nll, "perplexity": math.exp(nll), "unknown_words":
                        self.vocab.encode(bw.tokenize(text)).count(bw.UNK_ID)})
        return out

    def generate(self, model, prompts: list[str], steps: int = 40, *, temperature: float | None = None,
                 seed: int = 0) -> list[str]:
        """Continuations of `<START> prompt`: greedy (temperature None) or sampled; stop at <STOP>.

        The buffer right of the text holds PAD tokens, as at any generation time: a model that learned
        to read the future (0-masking) reads padding there.
        """
        width = self.config.seq_len
        ids = [[bw.START_ID] + self.vocab.encode(bw.tokenize(p)) for p in prompts]
        tokens = bw.pad_batch(ids, width)
        lengths = np.array([len(i) for i in ids])
        done = np.zeros(len(ids), bool)
        key = jax.random.key(seed)
        for _ in range(steps):
            logits = _last_logits(model, tokens, lengths)
            if temperature is None:
                nxt = np.asarray(jnp.argmax(logits, -1))
            else:
                key, sub = jax.random.split(key)
                nxt = np.asarray(jax.random.categorical(sub, logits / temperature))
            for i in range(len(ids)):
                if not done[i] and lengths[i] < width:
                    tokens[i, lengths[i]] = nxt[i]
                    lengths[i] += 1
                    done[i] = nxt[i] == bw.STOP_ID
            if done.all() or (lengths >= width).all():
                break
        return [self.vocab.decode(tokens[i, :lengths[i]]) for i in range(len(ids))]


def _row_nll(model, x, y):
    """Per row: summed NLL over targets != PAD, and their count."""
    logits = model(x).astype(jnp.float32)
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    w = (y != bw.PAD_ID).astype(jnp.float32)
    return (nll * w).sum(1), w.sum(1)


@jax.jit
def _nll_sum(model, x, y):
    nll, count = _row_nll(model, x, y)
    return nll.sum(), count.sum()


def window_batch(rows):
    """Next-token pairs of equal-length windows (no bucketing: the window length is the point)."""
    ids = np.stack(rows)
    return ids[:, :-1], ids[:, 1:]


@jax.jit
def _scored_nll(model, ids, where, target):
    logits = model(ids).astype(jnp.float32)[jnp.arange(ids.shape[0]), where]
    return optax.softmax_cross_entropy_with_integer_labels(logits, target)


@jax.jit
def _last_logits(model, tokens, lengths):
    return model(tokens)[jnp.arange(tokens.shape[0]), lengths - 1]


@jax.jit
def _pooled(model, ids):
    """Mean over real tokens of the last hidden states (after the final LayerNorm): (N, width)."""
    h = model.hidden(ids)
    w = (ids != bw.PAD_ID).astype(h.dtype)[..., None]
    return (h * w).sum(1) / jnp.maximum(w.sum(1), 1.0)


def article_features(model, corpus: bw.BBCWords, split: str, length: int, batch_size: int = 64) -> np.ndarray:
    """Frozen features of each article: its first `length` tokens, mean-pooled (dropout off)."""
    rows = [s[:length] for s in corpus.streams[split]]
    out = []
    for i in range(0, len(rows), batch_size):
        chunk = rows[i:i + batch_size]
        ids = bw.pad_batch(chunk + [[bw.PAD_ID]] * (batch_size - len(chunk)), length)
        out.append(np.asarray(_pooled(model, ids))[:len(chunk)])
    return np.concatenate(out)


def fit_linear_probe(x_train, y_train, x_eval, y_eval, num_classes: int, steps: int = 300,
                     l2: float = 1e-3) -> dict:
    """Multinomial logistic regression (full-batch Adam, standardised features); accuracies."""
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    xt, xe = (x_train - mean) / std, (x_eval - mean) / std
    params = {"w": jnp.zeros((xt.shape[1], num_classes)), "b": jnp.zeros(num_classes)}
    tx = optax.adam(0.05)
    state = tx.init(params)

    def loss(p):
        logits = xt @ p["w"] + p["b"]
        return optax.softmax_cross_entropy_with_integer_labels(logits, y_train).mean() + l2 * (p["w"] ** 2).sum()

    @jax.jit
    def fit(params, state):
        def body(_, carry):
            p, s = carry
            g = jax.grad(loss)(p)
            u, s = tx.update(g, s, p)
            return optax.apply_updates(p, u), s
        return jax.lax.fori_loop(0, steps, body, (params, state))[0]

    params = fit(params, state)
    acc = lambda x, y: float(np.mean(np.asarray(jnp.argmax(x @ params["w"] + params["b"], -1)) == y))
    return {"train": acc(xt, y_train), "eval": acc(xe, y_eval)}


def topic_probe(model, corpus: bw.BBCWords, length: int) -> dict:
    """BBC topic classification by a linear head on the frozen model: train articles fit, dev articles score."""
    topics = {t: i for i, t in enumerate(bw.bbc_news.TOPICS)}
    labels = {s: np.array([topics[a.topic] for a in corpus.articles[s]]) for s in ("train", "dev")}
    feats = {s: article_features(model, corpus, s, length) for s in ("train", "dev")}
    acc = fit_linear_probe(feats["train"], labels["train"], feats["dev"], labels["dev"], len(topics))
    return {"probe_accuracy": acc["eval"], "probe_train_accuracy": acc["train"]}
