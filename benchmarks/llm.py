"""Prefill and decode speed of a local LLM: ours (JAX) vs transformers (PyTorch) vs llama.cpp.

Ours and transformers run the same float32 weights (both dequantize the same GGUF file; ours in
bfloat16 with `--dtype=bfloat16`);
llama.cpp (llama-cpp-python, an optional extra: `pip install llama-cpp-python`, built
from source) runs the quantized file itself, as its users would. Prefill: one forward
over `--prompt` tokens per row. Decode: tokens/s of greedy generation with a KV cache,
from the difference between generating 1 and 1 + `--new` tokens (so the prefill is
not counted). llama-cpp-python decodes one sequence at a time: it has no batch-8 row.

Decode is also given as a fraction of its memory limit: a decode step reads every weight once
(for all rows of the batch), so `batch` x bandwidth / weight bytes tokens/s is the most it can
reach. The bandwidth is measured in the same run (a jitted XLA sum over a 256 MB float32 array,
median of 7); the weight bytes are those of our model (a tied embedding is the output layer, read
once; an untied input embedding only contributes the row it looks up). llama.cpp reads its
quantized file, fewer bytes, so its fraction of the float32 limit can pass 1. So can ours with
`--dtype=bfloat16` (weights stored in bfloat16, computed in float32, read in place: half the bytes);
its table still gives the float32 limit, plus its own bfloat16 limit.

    ../shared/tools/quiet-run .venv/bin/python -m benchmarks.llm --model=smollm2 [--dtype=bfloat16]
"""
from __future__ import annotations

import os
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from flax import nnx

from benchmarks.timing import define_repeats, header, load_average, measure, measure_one
from train import cli

FLAGS = flags.FLAGS


def read_bandwidth(megabytes: int = 256, repeats: int = 7) -> float:
    """Bytes/s an XLA reduction reads: a jitted sum over `megabytes` MB of float32, median of `repeats`."""
    x = jnp.ones(megabytes * 2**20 // 4, jnp.float32)
    total = jax.jit(jnp.sum)
    return x.nbytes / measure_one(lambda: total(x), repeats).median


def decode_weight_bytes(model, dtype=None) -> int:
    """Weight bytes one decode step reads: every parameter once; an untied input embedding, one row.

    dtype: count the weights as if stored in it (float32: the limit a float32 model would have).
    """
    def nbytes(x):
        return x.nbytes if dtype is None else x.size * jnp.dtype(dtype).itemsize

    total = sum(nbytes(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    if getattr(model, "lm_head", None) is not None:  # untied: the lookup reads one row of the table
        table = model.embed_tokens.embedding[...]
        total -= nbytes(table) - nbytes(table) // table.shape[0]
    return total


def decode_limit(bandwidth: float, weight_bytes: int, batch: int) -> float:
    """The most tokens/s a memory-bound decode can reach: each step reads the weights once for `batch` rows."""
    return batch * bandwidth / weight_bytes


def main(argv):
    del argv
    import torch
    import transformers

    from models.causal_lm import load_causal_lm, resolve_source
    from models.generation import Generator

    load_before = os.getloadavg()[0]
    path = resolve_source(FLAGS.model)
    # bfloat16: the weights stored in bfloat16, computed in float32 and read in place (models/llama.py)
    model, _ = load_causal_lm(path, dtype=FLAGS.dtype, compute_dtype="float32", with_tokenizer=False)
    gen = Generator(model)
    ref = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                            dtype=torch.float32).eval()
    llama = None
    if not FLAGS.no_llama_cpp:
        try:
            import llama_cpp
            llama = llama_cpp.Llama(model_path=str(path), n_ctx=FLAGS.prompt + FLAGS.new + 8,
                                    n_batch=FLAGS.prompt, n_threads=torch.get_num_threads(), verbose=False)
        except ImportError:
            print("llama-cpp-python is not installed: no llama.cpp column (pip install llama-cpp-python)")

    bandwidth = read_bandwidth()
    weight_bytes = decode_weight_bytes(model, jnp.float32)  # the float32 limit, whatever --dtype
    own_bytes = decode_weight_bytes(model)
    rng = np.random.default_rng(0)
    vocab = model.config.vocab_size
    rows = []
    for batch in FLAGS.batches:
        prompts = rng.integers(100, min(vocab, 30000), (batch, FLAGS.prompt))
        lists = [list(map(int, p)) for p in prompts]
        tokens = torch.tensor(prompts)

        def hf_generate(n):
            with torch.no_grad():
                return ref.generate(tokens, max_new_tokens=n, min_new_tokens=n, do_sample=False)

        fns = {"jax 1": lambda: gen.generate(lists, 1), "jax n": lambda: gen.generate(lists, 1 + FLAGS.new),
               "torch 1": lambda: hf_generate(1), "torch n": lambda: hf_generate(1 + FLAGS.new)}
        if llama is not None and batch == 1:
            def llama_generate(n):
                llama.reset()
                llama.eval(lists[0])
                for _ in range(n - 1):
                    llama.eval([llama.sample(top_k=1, temp=0.0)])
                return llama.n_tokens

            fns.update({"llama.cpp 1": lambda: llama_generate(1), "llama.cpp n": lambda: llama_generate(1 + FLAGS.new)})
        times = measure(fns, repeats=FLAGS.repeats, warmup=1)
        for name in ("jax", "torch", "llama.cpp"):
            if f"{name} 1" not in times:
                continue
            one, many = times[f"{name} 1"].median, times[f"{name} n"].median
            rows.append((name, batch, batch * FLAGS.prompt / one, batch * FLAGS.new / max(many - one, 1e-9)))

    own = FLAGS.dtype != "float32"
    jax_name = f"jax ({FLAGS.dtype} weights)" if own else "jax"
    report = [f"`python -m benchmarks.llm {' '.join(sys.argv[1:])}`", "", header(), "",
              f"1-minute load average before the benchmark: {load_before:.2f}", "",
              f"{FLAGS.model} ({path.name}), prompt {FLAGS.prompt} tokens, {FLAGS.new} decoded tokens, "
              f"median of {FLAGS.repeats}", "",
              f"read bandwidth {bandwidth / 1e9:.1f} GB/s (XLA sum over 256 MB float32); float32 weights read per "
              f"decode step {weight_bytes / 1e6:.0f} MB; batch-1 float32 limit "
              f"{decode_limit(bandwidth, weight_bytes, 1):.1f} tokens/s", ""]
    if own:
        report += [f"jax runs {FLAGS.dtype} weights ({own_bytes / 1e6:.0f} MB per step) computed in float32, "
                   f"against the SAME float32 limit (the weights in float32) and, in the last two columns, its own "
                   f"{FLAGS.dtype} limit; transformers runs float32", ""]
    extra = f" {FLAGS.dtype} limit tokens/s | decode / {FLAGS.dtype} limit |" if own else ""
    report += ["| framework | batch | prefill tokens/s | decode tokens/s | decode vs transformers "
               "| float32 limit tokens/s | decode / float32 limit |" + extra,
               "|---|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if own else "")]
    torch_decode = {b: d for n, b, _, d in rows if n == "torch"}
    for name, batch, prefill, decode in rows:
        limit = decode_limit(bandwidth, weight_bytes, batch)
        line = (f"| {jax_name if name == 'jax' else name} | {batch} | {prefill:,.0f} | {decode:,.1f} "
                f"| {decode / torch_decode[batch]:.2f}x | {limit:,.1f} | {decode / limit:.2f} |")
        if own:
            own_limit = decode_limit(bandwidth, own_bytes, batch)
            line += f" {own_limit:,.1f} | {decode / own_limit:.2f} |" if name == "jax" else " | |"
        report.append(line)
    report += ["", f"load average after: {load_average()}"]
    print("\n".join(report))
    if FLAGS.out:
        out = pathlib.Path(FLAGS.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("\n".join(report) + "\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    flags.DEFINE_string("model", "smollm2", "smollm2, gemma3, a .gguf file or a Hugging Face directory.")
    flags.DEFINE_integer("prompt", 128, "Prompt tokens per row.", lower_bound=1)
    flags.DEFINE_integer("new", 32, "Decoded tokens per row.", lower_bound=1)
    cli.define_list("batches", [1, 8], "Batch sizes", item=int)
    define_repeats(3)
    flags.DEFINE_bool("no_llama_cpp", False, "Leave llama.cpp out (it is an optional extra).")
    flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"],
                      "Our weights' dtype; bfloat16 is computed in float32, reading the weights in place. The "
                      "limits stay those of float32 weights (a bfloat16 column is added).")
    flags.DEFINE_string("out", "", "Also write the table to this markdown file (with the command and the load).")
    cli.run(main)
