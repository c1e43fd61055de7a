"""Generation and scoring with the causal LMs of `models/llama.py` and `models/gemma.py`.

Generation is a jit-compiled prefill over the (left-padded) prompts, then the new tokens
over a KV cache preallocated for the whole sequence: all in one compiled loop (sample, then a
single-token step; no dispatch or host sync per token), or, when `on_token` streams them, one
compiled step per token from Python. Shapes are rounded up to buckets so that prompts of similar length share a
compilation. Scoring returns log p(continuation | context), summed over its tokens.

    generator = Generator(model)
    out = generator.generate([ids_a, ids_b], max_new_tokens=32, sampling=Sampling(temperature=0.7))
"""
from __future__ import annotations

import dataclasses
import logging
import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from models.llama import activation_dtype, init_cache, output_logits

log = logging.getLogger(__name__)


class PromptTooLongError(ValueError):
    """A prompt (plus the tokens asked for) does not fit the model's context window."""


@dataclasses.dataclass(frozen=True)
class Sampling:
    """temperature 0 is greedy; top_k 0 and top_p 1 switch those filters off."""
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if not (self.temperature >= 0 and math.isfinite(self.temperature)):
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature}")
        if not (isinstance(self.top_k, int) and self.top_k >= 0):
            raise ValueError(f"top_k must be an integer >= 0 (0 = off), got {self.top_k!r}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


def sample_tokens(logits, key, sampling: Sampling):
    """One token per row of (batch, vocab) logits."""
    if sampling.temperature == 0:
        return jnp.argmax(logits, axis=-1)
    logits = logits.astype(jnp.float32) / sampling.temperature
    if sampling.top_k:
        kth = jax.lax.top_k(logits, sampling.top_k)[0][:, -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if sampling.top_p < 1:
        ordered = jnp.sort(logits, axis=-1)[:, ::-1]
        probs = jax.nn.softmax(ordered, axis=-1)
        # keep the smallest set whose mass reaches top_p: a token stays if the mass before it is < top_p
        before = jnp.cumsum(probs, axis=-1) - probs
        cutoff = jnp.min(jnp.where(before < sampling.top_p, ordered, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < cutoff, -jnp.inf, logits)
    return jax.random.categorical(key, logits, axis=-1)


def _bucket(n: int, step: int = 64) -> int:
    return max(step, -(-n // step) * step)


def left_pad(prompts: Sequence[Sequence[int]], length: int, pad_id: int = 0):
    """(tokens, mask) of shape (batch, length), each prompt at the right end."""
    tokens = np.full((len(prompts), length), pad_id, np.int32)
    mask = np.zeros((len(prompts), length), bool)
    for i, p in enumerate(prompts):
        if len(p):
            tokens[i, length - len(p):] = p
            mask[i, length - len(p):] = True
    return tokens, mask


class Generator:
    """Jit-compiled prefill, decode step and scoring for one model (weights captured once)."""

    def __init__(self, model, *, cache_dtype=None):
        """cache_dtype: the KV cache's, by default the activations' (float32 for bfloat16 weights computed
        in float32, models/llama.set_activation_dtype, whose output layer is then read in place too)."""
        self.config = model.config
        self.graphdef, self.state = nnx.split(model)
        self.cache_dtype = cache_dtype or activation_dtype(model)
        self._prefill = jax.jit(self._prefill_fn, donate_argnums=(4,))
        self._step = jax.jit(self._step_fn, donate_argnums=(4,))
        self._decode = jax.jit(self._decode_fn, donate_argnums=(5,), static_argnames=("sampling",))
        self._sample = jax.jit(sample_tokens, static_argnames=("sampling",))
        self._score = jax.jit(self._score_fn)

    # -------------------------------------------------------------- pure functions
    def _prefill_fn(self, state, tokens, mask, kv_mask, cache):
        model = nnx.merge(self.graphdef, state)
        positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
        hidden, cache = model(tokens, positions, kv_mask, cache=cache, cache_index=0)
        return output_logits(model, hidden[:, -1]), cache

    def _step_fn(self, state, token, position, kv_mask, cache, index):
        model = nnx.merge(self.graphdef, state)
        hidden, cache = model(token[:, None], position[:, None], kv_mask, cache=cache, cache_index=index)
        return output_logits(model, hidden[:, 0]), cache

    def _decode_fn(self, state, logits, key, position, kv_mask, cache, start, count, is_stop, sampling):
        """Up to `count` tokens per row in one compiled loop: (tokens (batch, slots), how many, the cache).

        The loop is `generate`'s per-token loop moved into the graph (no dispatch or host sync per
        token): split the key, sample from `logits`, stop once every row has drawn a stop token
        (`is_stop`, a mask over the vocabulary) or `count` tokens are drawn, else write the token
        into cache slot start + n - 1 and run the single-token step for the next logits.
        """
        model = nnx.merge(self.graphdef, state)
        batch, slots = kv_mask.shape

        def draw(logits, key, n, out, done):
            key, sub = jax.random.split(key)
            token = sample_tokens(logits, sub, sampling).astype(jnp.int32)
            out = jax.lax.dynamic_update_slice(out, token[:, None], (0, n))
            return token, key, out, done | is_stop[token]

        def more(carry):
            n, done = carry[0], carry[-1]
            return (n < count) & ~jnp.all(done)

        def step(carry):
            n, token, key, position, kv_mask, cache, out, done = carry
            index = start + n - 1
            kv_mask = jax.lax.dynamic_update_slice(kv_mask, jnp.ones((batch, 1), bool), (0, index))
            hidden, cache = model(token[:, None], position[:, None], kv_mask, cache=cache, cache_index=index)
            token, key, out, done = draw(output_logits(model, hidden[:, 0]), key, n, out, done)
            return n + 1, token, key, position + 1, kv_mask, cache, out, done

        out = jnp.zeros((batch, slots), jnp.int32)
        token, key, out, done = draw(logits, key, 0, out, jnp.zeros(batch, bool))
        carry = jax.lax.while_loop(more, step, (1, token, key, position, kv_mask, cache, out, done))
        return carry[-2], carry[0], carry[5]

    def _score_fn(self, state, tokens, mask, targets, target_mask, gather_at):
        """Sum of log p(targets) where target_mask; targets are predicted from `gather_at`."""
        model = nnx.merge(self.graphdef, state)
        positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
        hidden, _ = model(tokens, positions, mask)
        hidden = jnp.take_along_axis(hidden, gather_at[:, :, None], axis=1)
        logits = output_logits(model, hidden)
        logprobs = jax.nn.log_softmax(logits.astype(jnp.promote_types(logits.dtype, jnp.float32)), axis=-1)
        picked = jnp.take_along_axis(logprobs, targets[:, :, None], axis=-1)[:, :, 0]
        return jnp.sum(jnp.where(target_mask, picked, 0.0), axis=-1)

    # -------------------------------------------------------------- generation
    def check_length(self, prompt_len: int, max_new_tokens: int, *, truncate: bool = False) -> int:
        """How many prompt tokens to keep; refuses (or cuts from the left) over the context."""
        limit = self.config.max_position_embeddings
        if prompt_len + max_new_tokens <= limit:
            return prompt_len
        keep = limit - max_new_tokens
        if not truncate or keep <= 0:
            raise PromptTooLongError(
                f"prompt of {prompt_len} tokens + {max_new_tokens} new tokens exceeds the "
                f"context window of {limit} tokens")
        log.warning("prompt of %d tokens truncated from the left to %d to fit the context of %d",
                    prompt_len, keep, limit)
        return keep

    def generate(self, prompts: Sequence[Sequence[int]], max_new_tokens: int = 64, *,
                 sampling: Sampling = Sampling(), stop_tokens: Sequence[int] = (),
                 on_token: Callable[[int, list[int]], None] | None = None,
                 truncate: bool = False) -> list[list[int]]:
        """New tokens per prompt (each ends at its first stop token, which is not included).

        on_token(step, tokens) is called after each step with one token per prompt
        (for streaming); rows that already stopped repeat their stop token.
        """
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if not prompts or any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        prompts = [list(p)[len(p) - self.check_length(len(p), max_new_tokens, truncate=truncate):]
                   for p in prompts]
        batch = len(prompts)
        length = _bucket(max(len(p) for p in prompts))
        total = min(_bucket(length + max_new_tokens), self.config.max_position_embeddings + length)
        tokens, mask = left_pad(prompts, length)
        kv_mask = np.zeros((batch, total), bool)
        kv_mask[:, :length] = mask
        cache = init_cache(self.config, batch, total, self.cache_dtype)
        logits, cache = self._prefill(self.state, jnp.asarray(tokens), jnp.asarray(mask),
                                      jnp.asarray(kv_mask), cache)
        position = mask.sum(axis=1).astype(np.int32)  # next position of each row
        key = jax.random.key(sampling.seed)
        rule = dataclasses.replace(sampling, seed=0)  # static for jit; the key carries the seed
        if on_token is None:  # every token in one compiled loop
            is_stop = self._stop_mask(stop_tokens)
            drawn, count, _ = self._decode(self.state, logits, key, jnp.asarray(position), jnp.asarray(kv_mask),
                                        cache, length, max_new_tokens, jnp.asarray(is_stop), sampling=rule)
            return [_until_stop(row, is_stop) for row in np.asarray(drawn)[:, :int(count)].tolist()]
        stops = np.asarray(sorted(set(stop_tokens)), np.int64)
        out: list[list[int]] = [[] for _ in range(batch)]
        done = np.zeros(batch, bool)
        for step in range(max_new_tokens):
            key, sub = jax.random.split(key)
            token = np.asarray(self._sample(logits, sub, sampling=rule))
            for i in np.flatnonzero(~done):
                if token[i] in stops:
                    done[i] = True
                else:
                    out[i].append(int(token[i]))
            if on_token is not None:
                on_token(step, token.tolist())
            if done.all() or step == max_new_tokens - 1:
                break
            index = length + step
            kv_mask[:, index] = True
            logits, cache = self._step(self.state, jnp.asarray(token, jnp.int32), jnp.asarray(position),
                                       jnp.asarray(kv_mask), cache, index)
            position += 1
        return out

    def _stop_mask(self, stop_tokens: Sequence[int]) -> np.ndarray:
        is_stop = np.zeros(self.config.vocab_size, bool)
        is_stop[[t for t in set(stop_tokens) if 0 <= t < len(is_stop)]] = True
        return is_stop

    # -------------------------------------------------------------- a shared prefix
    def _extend_fn(self, state, tokens, positions, kv_mask, cache, index, last):
        model = nnx.merge(self.graphdef, state)
        hidden, cache = model(tokens, positions, kv_mask, cache=cache, cache_index=index)
        return output_logits(model, hidden[:, last]), cache

    def after_prefix(self, prefix: Sequence[int], suffixes: Sequence[Sequence[int]], *,
                     max_new_tokens: int = 0, stop_tokens: Sequence[int] = ()):
        """For each suffix: (log-probs of the token after prefix + suffix, greedy continuation).

        The prefix (e.g. few-shot demonstrations shared by every question) is computed
        once and kept in the cache; each suffix is then computed on top of it, right-padded
        to a multiple of 32 tokens (one compilation per such length), and up to
        max_new_tokens are decoded greedily (first token included).
        Yields one pair per suffix, in order.

        prefix + suffix must be the tokenization of the whole prompt text: cut jointly tokenized
        prompts with `split_shared_prefix`, never encode the prefix text and the rest apart. A
        tokenizer merges across the cut (SmolLM2 makes "\n\n" one token alone but "\n", "\n"
        before a word), so parts encoded apart are not the text the model would see (issue 34).
        """
        if not hasattr(self, "_extend"):
            self._extend = jax.jit(self._extend_fn, donate_argnums=(4,))
        prefix = list(prefix)
        longest = max(len(s) for s in suffixes)
        self.check_length(len(prefix) + longest, max_new_tokens)
        width = _bucket(longest, 32)
        total = _bucket(len(prefix) + width + max_new_tokens)
        cache = init_cache(self.config, 1, total, self.cache_dtype)
        kv_mask = np.zeros((1, total), bool)
        p = len(prefix)
        if p:
            chunk = _bucket(p)
            tokens = np.zeros((1, chunk), np.int32)
            tokens[0, :p] = prefix
            kv_mask[0, :p] = True
            cache = self._run_chunk(tokens, 0, kv_mask, cache, p - 1)[1]
        is_stop = self._stop_mask(stop_tokens)
        for suffix in suffixes:
            n = len(suffix)
            if n == 0:
                raise ValueError("every suffix needs at least one token")
            tokens = np.zeros((1, _bucket(n, 32)), np.int32)  # short suffixes stay short
            tokens[0, :n] = suffix
            kv_mask[0, p:] = False
            kv_mask[0, p:p + n] = True
            logits, cache = self._run_chunk(tokens, p, kv_mask, cache, n - 1)
            logprobs = np.asarray(jax.nn.log_softmax(
                logits.astype(jnp.promote_types(logits.dtype, jnp.float32)), axis=-1))[0]
            out: list[int] = []
            if max_new_tokens:  # greedy, in one compiled loop
                drawn, count, cache = self._decode(
                    self.state, logits, jax.random.key(0), jnp.asarray([p + n], jnp.int32), jnp.asarray(kv_mask),
                    cache, p + n, max_new_tokens, jnp.asarray(is_stop), sampling=Sampling())
                out = _until_stop(np.asarray(drawn)[0, :int(count)].tolist(), is_stop)
            yield logprobs, out

    def _run_chunk(self, tokens, start, kv_mask, cache, last):
        positions = start + np.arange(tokens.shape[1], dtype=np.int32)[None]
        return self._extend(self.state, jnp.asarray(tokens), jnp.asarray(positions), jnp.asarray(kv_mask),
                            cache, start, last)

    # -------------------------------------------------------------- scoring
    def score(self, contexts: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]], *,
              batch_size: int = 8) -> np.ndarray:
        """log p(continuation | context) for each pair, summed over the continuation's tokens.

        An empty context scores the continuation's tokens after the first (a whole
        sentence's log-likelihood: give it with the BOS token as context where the model has one).
        """
        if len(contexts) != len(continuations):
            raise ValueError(f"{len(contexts)} contexts but {len(continuations)} continuations")
        results = np.zeros(len(contexts), np.float64)
        for start in range(0, len(contexts), batch_size):
            rows = [(list(c), list(t)) for c, t in
                    zip(contexts[start:start + batch_size], continuations[start:start + batch_size])]
            results[start:start + len(rows)] = self._score_batch(rows, batch_size)
        return results

    def _score_batch(self, rows, batch_size):
        limit = self.config.max_position_embeddings
        for c, t in rows:
            if not t:
                raise ValueError("an empty continuation has no log-likelihood")
            if len(c) + len(t) > limit:
                raise PromptTooLongError(f"context of {len(c)} + continuation of {len(t)} tokens "
                                         f"exceeds the context window of {limit} tokens")
        seqs = [c + t for c, t in rows]
        n_pred = [len(t) if c else len(t) - 1 for c, t in rows]
        length = _bucket(max(map(len, seqs)))
        width = _bucket(max(max(n_pred), 1), 8)
        padded = seqs + [[0]] * (batch_size - len(seqs))  # fixed batch: one compilation
        tokens, mask = left_pad(padded, length)
        targets = np.zeros((batch_size, width), np.int32)
        target_mask = np.zeros((batch_size, width), bool)
        gather_at = np.zeros((batch_size, width), np.int32)
        for i, (seq, n) in enumerate(zip(seqs, n_pred)):
            first = length - n  # index of the first predicted token
            targets[i, :n] = seq[len(seq) - n:]
            target_mask[i, :n] = True
            gather_at[i, :n] = np.arange(first - 1, length - 1)
        scores = self._score(self.state, *map(jnp.asarray, (tokens, mask, targets, target_mask, gather_at)))
        return np.asarray(scores)[:len(rows)]


def _until_stop(tokens: list[int], is_stop: np.ndarray) -> list[int]:
    for i, t in enumerate(tokens):
        if is_stop[t]:
            return tokens[:i]
    return tokens


def split_shared_prefix(prompts: Sequence[Sequence[int]]) -> tuple[list[int], list[list[int]]]:
    """(prefix, suffixes) with prefix + suffixes[i] == prompts[i], for `Generator.after_prefix`.

    The prompts are token ids, each the joint tokenization of one whole prompt text; the prefix
    is their longest common token prefix, cut one token short of the shortest prompt so that
    every suffix keeps a token. So the ids fed to the model are each prompt's own tokenization,
    and the cache still holds whatever the prompts share (demonstrations, an instruction).
    """
    prompts = [list(p) for p in prompts]
    if not prompts or not all(prompts):
        raise ValueError("every prompt needs at least one token")
    shortest = min(map(len, prompts))
    n = 0
    while n < shortest - 1 and all(p[n] == prompts[0][n] for p in prompts):
        n += 1
    return prompts[0][:n], [p[n:] for p in prompts]


def continuation_ids(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) of a scored continuation, as lm-evaluation-harness cuts them.

    The whole text is encoded at once (with the tokenizer's start token, if it adds one) and the
    continuation's tokens are those past the context's own token count; the context's trailing
    whitespace moves to the continuation first. So the two parts together are always the joint
    tokenization of context + continuation; the context part equals the context encoded alone
    only where no token crosses the boundary (callers that score from the context's forward
    pass check that).
    """
    stripped = context.rstrip()
    context, continuation = stripped, context[len(stripped):] + continuation
    whole = list(tokenizer(context + continuation).input_ids)
    n = len(tokenizer(context).input_ids)
    return whole[:n], whole[n:]


def sentence_logprobs(generator: Generator, tokenizer, sentences: Sequence[str], *, batch_size: int = 8) -> np.ndarray:
    """log p(sentence) under a causal LM: the sum over its tokens, each given those before it.

    Each sentence is encoded whole, so the context (the start token) and the scored tokens are
    together its joint tokenization.

    With a start token (Gemma's <bos>) every token is scored; without one (SmolLM2) the
    first token has no context and is left out, the same for every sentence compared.
    """
    contexts, continuations = [], []
    for s in sentences:
        ids = list(tokenizer(s).input_ids)
        bos = tokenizer.bos_token_id
        if bos is not None and ids and ids[0] == bos:
            contexts.append(ids[:1]), continuations.append(ids[1:])
        else:
            contexts.append([]), continuations.append(ids)
    return generator.score(contexts, continuations, batch_size=batch_size)
