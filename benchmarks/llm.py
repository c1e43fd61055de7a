"""Prefill and decode speed of a local LLM: ours (JAX) vs transformers (PyTorch) vs llama.cpp.

Ours runs once per `--dtypes` entry, in the same run: float32 weights, and bfloat16 weights computed in
float32 (read in place by each decode step, models/llama.py; their parity and BoolQ scores against float32
are in tests/test_bf16_decode.py and results/llm_prompting/). transformers runs float32; both dequantize
the same GGUF file. llama.cpp (llama-cpp-python, an optional extra: `pip install llama-cpp-python`, built
from source) runs the quantized file itself, as its users would. Prefill: one forward
over `--prompt` tokens per row. Decode: tokens/s of greedy generation with a KV cache,
from the difference between generating 1 and 1 + `--new` tokens (so the prefill is
not counted). llama-cpp-python decodes one sequence at a time: it has no batch-8 row.

Decode is also given as a fraction of its memory limit: a decode step reads every weight once
(for all rows of the batch), so `batch` x bandwidth / weight bytes tokens/s is the most it can
reach. The bandwidth is measured in the same rounds as the decodes, interleaved with them (a jitted XLA
sum over 256 MB float32, median over the rounds), since a shared machine's bandwidth drifts;
the weight bytes are those of the model in float32 (a tied embedding is the output layer, read
once; an untied input embedding only contributes the row it looks up). Every row is measured against
that float32 limit; weights stored in fewer bytes (bfloat16, llama.cpp's quantized file) can pass 1,
and a bfloat16 row also gives its fraction of its own limit (half the bytes). `--breakdown` (on by
default) then profiles one batch-1 float32 decode and says where a token's time goes: XLA's dots,
YNNPACK fusions, the cache updates, other operations, and the time between operations.

    ../shared/tools/quiet-run .venv/bin/python -m benchmarks.llm --model=smollm2 [--dtypes=float32,bfloat16]
"""
from __future__ import annotations

import collections
import os
import pathlib
import re
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax import nnx

from benchmarks.timing import define_repeats, header, load_average, measure
from train import cli

FLAGS = flags.FLAGS


def bandwidth_probe(megabytes: int = 256):
    """(a call that reads `megabytes` MB: a jitted XLA sum over float32, its bytes)."""
    x = jnp.ones(megabytes * 2**20 // 4, jnp.float32)
    total = jax.jit(jnp.sum)
    return (lambda: total(x)), x.nbytes


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


# XLA instruction names (dot.12, copy_dot_fusion, dynamic-update-slice.3): the thunks a compiled program runs;
# the profiler's other events (Python frames "$...", ThunkExecutor::Execute, PjitFunction(...)) wrap them.
HLO_NAME = re.compile(r"^[a-z][\w.-]*$")


PARTS = ("dots", "YNNPACK fusions", "cache updates", "other operations", "between operations")


def decode_parts(thunk_seconds: dict[str, float], wall: float, tokens: int) -> dict[str, float]:
    """Milliseconds per decoded token in each part of a decode step, from the thunks' summed time.

    thunk_seconds: {event name: seconds} of the decode alone (a trace of 1 + `tokens` tokens less one
    of 1 token); wall: the same difference in wall seconds. Parts, by the thunk's name: XLA's dots (the
    float32 weights' matrix-vector products, the attention over the cache, the output layer), fusions
    handed to YNNPACK (dots or reductions), the cache updates (dynamic-update-slice), every other XLA
    operation, and the time between operations (wall less the thunks: each thunk's dispatch and the
    waits; 0 where threads overlap). A bfloat16 model's products are multiply-and-sum fusions, which the
    names do not tell from the norms' sums: its breakdown is not given.
    """
    parts = collections.Counter()
    for name, seconds in thunk_seconds.items():
        if not HLO_NAME.match(name):
            continue
        part = ("YNNPACK fusions" if name.startswith("ynn_fusion") else "dots" if "dot" in name else
                "cache updates" if "dynamic-update-slice" in name or "dynamic_update_slice" in name else
                "other operations")
        parts[part] += seconds
    # a part done mostly in the prefill can come out slightly below 0 in the difference of two traces
    ms = {part: max(0.0, 1e3 * parts[part] / tokens) for part in PARTS[:-1]}
    ms["between operations"] = max(0.0, 1e3 * wall / tokens - sum(ms.values()))
    return ms


def traced_decode(generate, tokens: int) -> tuple[dict[str, float], float]:
    """({thunk name: seconds}, wall seconds) of decoding `tokens` tokens: a trace of generate(1 + tokens) less
    one of generate(1) (the prefill and the first token)."""
    from benchmarks.profile_step import thunk_times

    def trace(n):
        with tempfile.TemporaryDirectory() as tmp:
            with jax.profiler.trace(tmp, create_perfetto_trace=True):
                start = time.perf_counter()
                generate(n)  # returns Python lists: the tokens are computed
                wall = time.perf_counter() - start  # without writing the trace out
            return thunk_times(pathlib.Path(tmp)), wall

    generate(1), generate(1 + tokens)  # compiled before the traces
    (one, one_wall), (many, many_wall) = trace(1), trace(1 + tokens)
    return {name: many[name] - one.get(name, 0.0) for name in many}, many_wall - one_wall


def breakdown_table(ms: dict[str, float], weight_bytes: int, bandwidth: float) -> list[str]:
    """Markdown lines: ms per token in each part, and the rate the dots read the weights at (as if they read
    them all) against the sum's bandwidth."""
    rate = weight_bytes / (ms["dots"] / 1e3) / 1e9 if ms["dots"] else float("nan")
    return ["| " + " | ".join(f"{part} (ms/token)" for part in PARTS) + " | all | weights read by the dots |",
            "|" + "---:|" * (len(PARTS) + 2),
            "| " + " | ".join(f"{ms[part]:.1f}" for part in PARTS) + f" | {sum(ms.values()):.1f} "
            f"| {rate:.1f} GB/s ({rate / (bandwidth / 1e9):.2f} of the sum's) |"]


def decode_table(rows, bandwidth: float, float32_bytes: int, own_bytes: dict[str, int]) -> list[str]:
    """Markdown lines of the results table.

    rows: (framework, batch, prefill tokens/s, decode tokens/s); a framework named "jax (DTYPE weights)"
    also gets its fraction of its own limit from own_bytes[DTYPE] (the bytes its weights take).
    Every decode is compared with transformers' at the same batch and with the float32 limit.
    """
    lines = ["| framework | batch | prefill tokens/s | decode tokens/s | decode vs transformers "
             "| float32 limit tokens/s | decode / float32 limit | own limit tokens/s | decode / own limit |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    torch_decode = {batch: decode for name, batch, _, decode in rows if name == "torch"}
    for name, batch, prefill, decode in rows:
        limit = decode_limit(bandwidth, float32_bytes, batch)
        versus = f"{decode / torch_decode[batch]:.2f}x" if batch in torch_decode else ""
        line = (f"| {name} | {batch} | {prefill:,.0f} | {decode:,.1f} | {versus} | {limit:,.1f} "
                f"| {decode / limit:.2f} |")
        dtype = name.removeprefix("jax (").removesuffix(" weights)")
        if dtype in own_bytes and own_bytes[dtype] != float32_bytes:
            own_limit = decode_limit(bandwidth, own_bytes[dtype], batch)
            line += f" {own_limit:,.1f} | {decode / own_limit:.2f} |"
        else:
            line += " | |"
        lines.append(line)
    return lines


def main(argv):
    del argv
    import torch
    import transformers

    from models.causal_lm import load_causal_lm, resolve_source
    from models.generation import Generator

    if not FLAGS.dtypes:
        raise app.UsageError("--dtypes is empty: give float32, bfloat16 or both")
    load_before = os.getloadavg()[0]
    path = resolve_source(FLAGS.model)
    generators, own_bytes = {}, {}
    for dtype in FLAGS.dtypes:
        # bfloat16: the weights stored in bfloat16, computed in float32 and read in place (models/llama.py)
        model, _ = load_causal_lm(path, dtype=dtype, compute_dtype="float32", with_tokenizer=False)
        generators[f"jax ({dtype} weights)"] = Generator(model)
        own_bytes[dtype] = decode_weight_bytes(model)
        float32_bytes = decode_weight_bytes(model, jnp.float32)  # the float32 limit, whatever the dtype
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

    probe, probe_bytes = bandwidth_probe()
    rng = np.random.default_rng(0)
    vocab = next(iter(generators.values())).config.vocab_size
    rows, bandwidths = [], []
    for batch in FLAGS.batches:
        prompts = rng.integers(100, min(vocab, 30000), (batch, FLAGS.prompt))
        lists = [list(map(int, p)) for p in prompts]
        tokens = torch.tensor(prompts)

        def hf_generate(n):
            with torch.no_grad():
                return ref.generate(tokens, max_new_tokens=n, min_new_tokens=n, do_sample=False)

        fns = {"bandwidth": probe, "torch 1": lambda: hf_generate(1), "torch n": lambda: hf_generate(1 + FLAGS.new)}
        for name, gen in generators.items():
            fns[f"{name} 1"] = lambda gen=gen: gen.generate(lists, 1)
            fns[f"{name} n"] = lambda gen=gen: gen.generate(lists, 1 + FLAGS.new)
        if llama is not None and batch == 1:
            def llama_generate(n):
                llama.reset()
                llama.eval(lists[0])
                for _ in range(n - 1):
                    llama.eval([llama.sample(top_k=1, temp=0.0)])
                return llama.n_tokens

            fns.update({"llama.cpp 1": lambda: llama_generate(1), "llama.cpp n": lambda: llama_generate(1 + FLAGS.new)})
        times = measure(fns, repeats=FLAGS.repeats, warmup=1)
        bandwidths.append(probe_bytes / times["bandwidth"].median)
        for name in [*generators, "torch", "llama.cpp"]:
            if f"{name} 1" not in times:
                continue
            one, many = times[f"{name} 1"].median, times[f"{name} n"].median
            rows.append((name, batch, batch * FLAGS.prompt / one, batch * FLAGS.new / max(many - one, 1e-9)))

    bandwidth = statistics.median(bandwidths)
    breakdown = None
    if FLAGS.breakdown and "float32" in FLAGS.dtypes:  # profiled after the timings (the profiler slows it)
        prompt = [list(map(int, rng.integers(100, min(vocab, 30000), FLAGS.prompt)))]
        gen = generators["jax (float32 weights)"]
        breakdown = decode_parts(*traced_decode(lambda n: gen.generate(prompt, n), FLAGS.new), FLAGS.new)
    report = [f"`python -m benchmarks.llm {' '.join(sys.argv[1:])}`", "", header(), "",
              f"1-minute load average before the benchmark: {load_before:.2f}", "",
              f"{FLAGS.model} ({path.name}), prompt {FLAGS.prompt} tokens, {FLAGS.new} decoded tokens, "
              f"median of {FLAGS.repeats}", "",
              f"read bandwidth {bandwidth / 1e9:.1f} GB/s (XLA sum over 256 MB float32, interleaved with the decodes; "
              f"{', '.join(f'{b / 1e9:.1f}' for b in bandwidths)} GB/s per batch size); float32 weights read per "
              f"decode step {float32_bytes / 1e6:.0f} MB; batch-1 float32 limit "
              f"{decode_limit(bandwidth, float32_bytes, 1):.1f} tokens/s. Ours computes in float32 whatever its "
              f"weights' dtype; transformers runs float32 weights.", ""]
    report += decode_table(rows, bandwidth, float32_bytes, own_bytes)
    if breakdown:
        report += ["", f"Where a batch-1 float32 decode token's time goes: a profiler trace of {FLAGS.new} tokens (its "
                   "own run, slowed by the profiler), each part's XLA operations summed by name, and the wall time "
                   "between them; the dots' rate counts every weight byte as read by them.", ""]
        report += breakdown_table(breakdown, float32_bytes, bandwidth)
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
    define_repeats(5)
    flags.DEFINE_bool("no_llama_cpp", False, "Leave llama.cpp out (it is an optional extra).")
    cli.define_list("dtypes", ["float32", "bfloat16"], "Our weights' dtypes, one row each; bfloat16 is computed "
                    "in float32, reading the weights in place. Every row is measured against the float32 limit.",
                    choices=["float32", "bfloat16"])
    flags.DEFINE_bool("breakdown", True, "Also profile one batch-1 float32 decode of ours: ms per token in dots, "
                      "YNNPACK fusions, cache updates, other operations and between operations.")
    flags.DEFINE_string("out", "", "Also write the table to this markdown file (with the command and the load).")
    cli.run(main)
