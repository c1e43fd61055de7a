"""One table for an accelerator: the course-scale training steps and LLM decode, float32 and bfloat16,
JAX beside PyTorch on the same device, with step time and MFU.

    python -m benchmarks.accelerator [--out=results/accelerator] [--dtypes=float32,bfloat16]
    python -m benchmarks.accelerator --quick --out=/tmp/accelerator    # tiny shapes: a smoke test

On a GPU install the CUDA build of jax first (`make gpu-setup`); PyTorch needs a CUDA build too
for its column. The whole table takes a few minutes on one GPU.

Rows, each in float32 and bfloat16, on the first device (jax.devices()[0]):
  gpt          the CS224n minGPT pretraining step (configs/birth_pretrain.py: 4 layers, 8 heads,
               256 wide, block 128, batch 128, dropout 0.1, AdamW + clip) against
               reference/gpt.py's course model;
  bert         the MiniLM full fine-tuning step (configs/bert_finetune.py sst2,full, pooler pooling;
               batch 32 x 128 tokens, dropout on, AdamW) against transformers'
               BertForSequenceClassification from the same checkpoint;
  transformer  the course Transformer classifier step (configs/sentiment.py experiment 3 with one
               head: batch 32 x 257 positions, vocabulary 30,522) against reference/transformer.py;
  decode       greedy LLM decode (SmolLM2 from its GGUF file, 128-token prompts) at batch 1 and 32,
               time per new token over 32 tokens, against transformers' generate.
Our training steps are the engine's (train/steps.py make_train_step on the task's loss, with
train/optim.py's optimizer); bfloat16 is the models' compute dtype (config.model.dtype: float32
parameters and optimizer state) and torch.autocast on the PyTorch side; the LLM's weights are
bfloat16 on both sides. PyTorch runs on the same device when it sees it (CUDA for a GPU, the CPU
for the CPU); a TPU has no PyTorch column.

FLOPs are XLA's count of our compiled step (per decoded token for decode; train/throughput.py).
MFU, ours and PyTorch's, is that count over the step time over the device's peak for the dtype
(train/throughput.py: its table, $PEAK_TFLOPS, or on a CPU this machine's measured float32
matmul rate). Decode reads every weight per token: its MFU is low by nature (memory-bound).
ratio = PyTorch time / ours: above 1, ours is faster. Writes OUT/<device>/table.md and table.json
(<device>: the device kind, e.g. nvidia_h100_80gb_hbm3 or cpu, so tables of several chips sit side by side).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
import re
import shlex
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from flax import nnx

from benchmarks import timing
from benchmarks.transformer import course_model_config, make_batch
from configs import bert_finetune, birth_pretrain
from models.build import build_model, trainable_filter
from train import cli, throughput
from train.optim import make_optimizer
from train.steps import data_mesh, make_train_step
from train.tasks.char_gpt import masked_cross_entropy
from train.tasks.text_classification import classification_loss

FLAGS = flags.FLAGS
WORKLOADS = ("gpt", "bert", "transformer", "decode")
DTYPES = ("float32", "bfloat16")
DECODE_BATCHES = (1, 32)
COLUMNS = ("workload", "dtype", "ours (ms)", "ours MFU", "tokens/s", "peer", "peer (ms)", "peer MFU",
           "ratio (peer / ours)", "GFLOP/step", "note")
TINY_LLAMA = dict(model_type="llama", vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=512)


@dataclasses.dataclass
class Sides:
    """One workload at one dtype, ready to time: ours, PyTorch's (None: not on this device)."""
    shape: str  # the batch, in words
    tokens: int  # per step (per decoded token: the batch)
    flops: float | None  # XLA's count of our step, per device
    ours: Callable[[], Any] | None = None  # one step
    peer: Callable[[], Any] | None = None
    peer_name: str = ""
    note: str = ""


def torch_device() -> str | None:
    """Where PyTorch runs beside jax.devices()[0]: "cuda", "cpu", or None (not installed, or it cannot see it)."""
    try:
        import torch
    except ImportError:
        return None
    platform = jax.devices()[0].platform
    if platform == "cpu":
        return "cpu"
    return "cuda" if platform == "gpu" and torch.cuda.is_available() else None


def autocast(device: str, dtype: str):
    """PyTorch's mixed precision for `dtype` (float32: none)."""
    import torch
    return contextlib.nullcontext() if dtype == "float32" else torch.autocast(device, dtype=getattr(torch, dtype))


def set_compute_dtype(config, dtype: str) -> str:
    """Puts `dtype` in the config's model ("" when done); the reason it cannot where the schema lacks it."""
    if "dtype" not in config.model:
        return "" if dtype == "float32" else f"{dtype}: needs config.dtype"
    config.model.dtype = dtype
    if "dtype" in config:
        config.dtype = dtype
    return ""


def engine_step(config, loss: Callable, batch, **sizes) -> tuple[Callable[[], Any], float | None]:
    """The engine's jit'ed training step of `config`'s model on one fixed batch, on the first device:
    (step() -> loss, XLA's FLOPs of one step)."""
    model = build_model(config.model, rngs=nnx.Rngs(params=0, dropout=1), **sizes)
    trainable = trainable_filter(config.model)
    graphdef, params, rest = nnx.split(model, trainable, ...)
    tx = make_optimizer(config, params, config.learning_rate)
    step_fn = make_train_step(graphdef, tx, loss, data_mesh(jax.devices()[:1]), trainable)
    state = {"params": params, "opt": tx.init(params)}
    batch, key = jax.device_put(batch), jax.random.key(0)
    flops = throughput.step_flops(step_fn, state["params"], rest, state["opt"], batch, key)

    def step():
        state["params"], state["opt"], metrics = step_fn(state["params"], rest, state["opt"], batch, key)
        return metrics["loss"]

    return step, flops


def torch_step(model, optimizer, loss_of: Callable, device: str, dtype: str, clip: float = 0.0):
    """A PyTorch training step: forward and loss under autocast, backward, (clip,) optimizer; syncs."""
    import torch

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, dtype):
            loss = loss_of(model)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        return loss.item()  # waits for the device

    return step


def gpt_sides(dtype: str, quick: bool, device: str | None) -> Sides:
    config = birth_pretrain.get_config()
    m = config.model
    batch_size, vocab = (4, 64) if quick else (config.batch_size, 256)
    if quick:
        m.update(n_layer=1, n_head=2, n_embd=32, block_size=17)
    why = set_compute_dtype(config, dtype)
    T = m.block_size - 1
    shape = (f"batch {batch_size} x {T} tokens, {m.n_layer} layers x {m.n_head} heads x {m.n_embd}, "
             f"{m.dropout_bits} dropout bits")
    if why:
        return Sides(shape, batch_size * T, None, note=why)
    rng = np.random.default_rng(0)
    x, y = (rng.integers(0, vocab, size=(batch_size, T)).astype(np.int32) for _ in range(2))
    ours, flops = engine_step(config, lambda mdl, b: masked_cross_entropy(mdl(b[0]), b[1]), (x, y), vocab_size=vocab)
    sides = Sides(shape, batch_size * T, flops, ours, peer_name="course minGPT (reference/gpt.py)")
    if device:
        import torch

        from reference.gpt import TorchGPT
        torch.manual_seed(0)
        model = TorchGPT(vocab, m.block_size, m.n_layer, m.n_head, m.n_embd, pdrop=m.embd_pdrop).to(device).train()
        opt = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, betas=(config.b1, config.b2),
                                weight_decay=config.weight_decay)
        tx, ty = (torch.from_numpy(a).long().to(device) for a in (x, y))
        sides.peer = torch_step(model, opt, lambda mdl: mdl(tx, ty)[1], device, dtype, clip=config.grad_clip)
    return sides


def bert_sides(dtype: str, quick: bool, device: str | None, source: str | None) -> Sides:
    from models.bert import BertConfig
    from models.hf_checkpoint import resolve_checkpoint_dir

    config = bert_finetune.get_config("sst2,full")
    checkpoint = resolve_checkpoint_dir(source)
    config.model.update(checkpoint=str(checkpoint), pooling="pooler")  # the pooling of BertForSequenceClassification
    why = set_compute_dtype(config, dtype)
    batch_size, length = (4, 16) if quick else (32, 128)
    shape = f"batch {batch_size} x {length} tokens, {checkpoint.name}, {config.model.dropout_bits} dropout bits"
    if why:
        return Sides(shape, batch_size * length, None, note=why)
    vocab = BertConfig.from_json(checkpoint / "config.json").vocab_size
    ids, mask, labels = make_batch(batch_size, length, vocab)
    types = np.zeros_like(ids)
    batch = ((ids.astype(np.int32), mask.astype(np.int32), types.astype(np.int32)), labels.astype(np.int32))
    ours, flops = engine_step(config, lambda mdl, b: classification_loss(mdl(*b[0]), b[1]), batch, num_classes=2)
    sides = Sides(shape, batch_size * length, flops, ours, peer_name="transformers BertForSequenceClassification")
    if device:
        import torch
        import transformers
        transformers.logging.set_verbosity_error()  # its fresh classifier head is expected
        transformers.logging.disable_progress_bar()
        torch.manual_seed(0)
        model = transformers.BertForSequenceClassification.from_pretrained(str(checkpoint), num_labels=2)
        model = model.to(device).train()
        opt = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
        t_ids, t_mask, t_types, t_labels = (torch.from_numpy(np.asarray(a)).long().to(device)
                                            for a in (ids, mask, types, labels))
        sides.peer = torch_step(model, opt, lambda mdl: mdl(input_ids=t_ids, attention_mask=t_mask,
                                                            token_type_ids=t_types, labels=t_labels).loss,
                                device, dtype)
    return sides


def transformer_sides(dtype: str, quick: bool, device: str | None) -> Sides:
    from configs import sentiment

    config = sentiment.get_config("3")
    config.model = course_model_config()
    m = config.model
    batch_size = 4 if quick else 32
    if quick:
        m.update(vocabulary_size=100, embed_dim=16, hidden_dim=16, num_layers=1, max_positions=16)
    why = set_compute_dtype(config, dtype)
    shape = (f"batch {batch_size} x (1 + {m.max_positions}) positions, {m.num_layers} layers, width {m.embed_dim}, "
             f"{m.dropout_bits} dropout bits")
    if why:
        return Sides(shape, batch_size * (m.max_positions + 1), None, note=why)
    ids, mask, labels = make_batch(batch_size, m.max_positions, m.vocabulary_size)
    batch = ((ids.astype(np.int32), mask.astype(np.int32)), labels.astype(np.int32))
    ours, flops = engine_step(config, lambda mdl, b: classification_loss(mdl(*b[0]), b[1]), batch, num_classes=2)
    sides = Sides(shape, batch_size * (m.max_positions + 1), flops, ours,
                  peer_name="course Transformer (reference/transformer.py)")
    if device:
        import torch

        from reference.transformer import TorchTransformer
        torch.manual_seed(0)
        model = TorchTransformer(
            vocabulary_size=m.vocabulary_size, embed_dim=m.embed_dim, hidden_dim=m.hidden_dim, num_heads=m.num_heads,
            num_layers=m.num_layers, block=m.block, dropout=m.dropout, max_length=m.max_positions,
            num_classes=2).to(device).train()
        opt = torch.optim.AdamW(model.parameters(), lr=config.learning_rate)
        t_ids, t_mask, t_labels = (torch.from_numpy(np.asarray(a)).long().to(device) for a in (ids, mask, labels))
        sides.peer = torch_step(model, opt, lambda mdl: torch.nn.functional.cross_entropy(mdl(t_ids, t_mask), t_labels),
                                device, dtype)
    return sides


def decode_sides(dtype: str, quick: bool, device: str | None, llm: str, batches=DECODE_BATCHES,
                 repeats: int = 3) -> list[tuple[int, Sides, float | None, float | None]]:
    """Per batch: (batch, Sides, our seconds per token, PyTorch's): decode is timed here, as the
    difference between generating 1 and 1 + `new` tokens (the prefill cancels)."""
    from models import generation
    from models.causal_lm import load_causal_lm, resolve_source
    from models.llama import LlamaConfig, LlamaForCausalLM, init_cache

    prompt, new = (8, 16) if quick else (128, 32)
    if quick:
        model = LlamaForCausalLM(LlamaConfig.from_hf(TINY_LLAMA), param_dtype=jnp.dtype(dtype), rngs=nnx.Rngs(0))
        name = "tiny random Llama"
    else:
        path = resolve_source(llm)
        model, _ = load_causal_lm(path, dtype=dtype, with_tokenizer=False)
        name = path.name
    gen = generation.Generator(model)
    ref = None
    if device:
        import torch
        import transformers
        if quick:
            hf_config = transformers.LlamaConfig(**{k: v for k, v in TINY_LLAMA.items() if k != "model_type"})
            ref = transformers.LlamaForCausalLM(hf_config)
        else:
            ref = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name)
        ref = ref.to(device=device, dtype=getattr(torch, dtype)).eval()
        ref.generation_config.pad_token_id = 0
    rng = np.random.default_rng(0)
    out = []
    for batch in batches:
        prompts = rng.integers(3, min(model.config.vocab_size, 30000), (batch, prompt))
        lists = [list(map(int, p)) for p in prompts]
        # XLA's count of one decode step at the cache length generate() uses for these prompts
        length = generation._bucket(prompt)
        total = min(generation._bucket(length + 1 + new), model.config.max_position_embeddings + length)
        kv_mask = np.zeros((batch, total), bool)
        kv_mask[:, :length + 1] = True
        flops = throughput.step_flops(gen._step, gen.state, jnp.zeros(batch, jnp.int32),
                                      jnp.full(batch, prompt, jnp.int32), jnp.asarray(kv_mask),
                                      init_cache(model.config, batch, total, gen.cache_dtype), length)
        fns = {"ours 1": lambda: gen.generate(lists, 1), "ours n": lambda: gen.generate(lists, 1 + new)}
        if ref is not None:
            import torch
            tokens = torch.from_numpy(prompts).long().to(device)

            def hf_generate(n):
                with torch.no_grad():
                    return ref.generate(tokens, max_new_tokens=n, min_new_tokens=n, do_sample=False).cpu()

            fns.update({"peer 1": lambda: hf_generate(1), "peer n": lambda: hf_generate(1 + new)})
        times = timing.measure(fns, repeats=repeats, warmup=1)

        def per_token(side):
            """Seconds per new token: the fastest of each length (least disturbed by other load), subtracted."""
            if f"{side} 1" not in times:
                return None
            seconds = (min(times[f"{side} n"].wall) - min(times[f"{side} 1"].wall)) / new
            return seconds if seconds > 0 else None

        sides = Sides(f"batch {batch}, {prompt}-token prompts, {new} new tokens, {name}", batch, flops,
                      peer_name="transformers generate" if ref is not None else "")
        ours_s, peer_s = per_token("ours"), per_token("peer")
        if ours_s is None or (ref is not None and peer_s is None):
            sides.note = "too noisy: generating more tokens did not take longer"
        out.append((batch, sides, ours_s, peer_s))
    return out


def row(workload: str, dtype: str, sides: Sides, ours_s: float | None, peer_s: float | None, peak: float | None,
        no_peer: str = "") -> dict:
    """One table row (times in ms; MFU in [0, 1]; None where not measured); `no_peer`: why PyTorch has no time."""
    note = sides.note or ("" if sides.peer_name else no_peer)
    return {
        "workload": f"{workload}: {sides.shape}", "dtype": dtype,
        "ours_ms": None if ours_s is None else 1e3 * ours_s,
        "ours_mfu": throughput.mfu(sides.flops, ours_s or 0.0, peak),
        "tokens_per_s": None if not ours_s else sides.tokens / ours_s,
        "peer": sides.peer_name, "peer_ms": None if peer_s is None else 1e3 * peer_s,
        "peer_mfu": throughput.mfu(sides.flops, peer_s or 0.0, peak),
        "ratio": peer_s / ours_s if peer_s and ours_s else None,
        "gflop_per_step": None if sides.flops is None else sides.flops / 1e9, "note": note,
    }


def run(workloads=WORKLOADS, dtypes=DTYPES, *, quick: bool = False, repeats: int = 5, bert_source: str | None = None,
        llm: str = "smollm2", with_torch: bool = True, log: Callable[[str], None] = print) -> list[dict]:
    """Every row of the table: each workload in each dtype; a failure is its row's note, the rest still run."""
    device = torch_device() if with_torch else None
    no_peer = ("" if device else "PyTorch does not see this device" if with_torch
               else "PyTorch left out (--no_torch)")
    rows = []
    for workload in workloads:
        for dtype in dtypes:
            peak = throughput.device_peak(jax.devices()[0], dtype).flops_per_s
            start = time.perf_counter()
            try:
                if workload == "decode":
                    for _, sides, ours_s, peer_s in decode_sides(dtype, quick, device, llm, repeats=repeats):
                        rows.append(row(workload, dtype, sides, ours_s, peer_s, peak, no_peer))
                    log(f"{workload} {dtype}: {time.perf_counter() - start:.0f} s")
                    continue
                build = {"gpt": gpt_sides, "transformer": transformer_sides,
                         "bert": lambda d, q, dev: bert_sides(d, q, dev, bert_source)}[workload]
                sides = build(dtype, quick, device)
                fns = {k: f for k, f in (("ours", sides.ours), ("peer", sides.peer)) if f is not None}
                times = timing.measure(fns, repeats) if fns else {}
                rows.append(row(workload, dtype, sides, times["ours"].median if "ours" in times else None,
                                times["peer"].median if "peer" in times else None, peak, no_peer))
            except Exception as e:  # one failure (out of memory, a missing checkpoint) is its row's note
                rows.append({"workload": workload, "dtype": dtype, "note": f"failed: {type(e).__name__}: {e}"[:300]})
            log(f"{workload} {dtype}: {time.perf_counter() - start:.0f} s")
    return rows


def _cell(value, fmt: str) -> str:
    return "" if value is None else format(value, fmt)


def markdown(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|---|---|" + "---:|" * 3 + "---|" + "---:|" * 4 + "---|"]
    for r in rows:
        cells = [r["workload"], r["dtype"], _cell(r.get("ours_ms"), ".2f"), _cell(r.get("ours_mfu"), ".1%"),
                 _cell(r.get("tokens_per_s"), ",.0f"), r.get("peer", ""), _cell(r.get("peer_ms"), ".2f"),
                 _cell(r.get("peer_mfu"), ".1%"), _cell(r.get("ratio"), ".2f") + ("x" if r.get("ratio") else ""),
                 _cell(r.get("gflop_per_step"), ".3g"), r.get("note", "")]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def write_table(out: pathlib.Path, rows: list[dict], machine: str, peaks: dict[str, str], command: str) -> str:
    """OUT/table.md (machine line, peaks, table) and OUT/table.json; returns the Markdown."""
    out.mkdir(parents=True, exist_ok=True)
    text = "\n".join([machine, *(f"MFU peak, {d}: {p}" for d, p in peaks.items()), "", markdown(rows), ""])
    (out / "table.md").write_text(text)
    record = {"command": command, "machine": machine, "device": jax.devices()[0].device_kind, "peaks": peaks,
              "rows": rows}
    (out / "table.json").write_text(json.dumps(record, indent=1) + "\n")
    return text


def device_folder(device_kind: str) -> str:
    """A folder name for a device kind: "NVIDIA H100 80GB HBM3" -> "nvidia_h100_80gb_hbm3"."""
    return re.sub(r"[^a-z0-9]+", "_", device_kind.lower()).strip("_") or "device"


def peak_lines(dtypes) -> dict[str, str]:
    """What each dtype's MFU is measured against, in words."""
    lines = {}
    for dtype in dtypes:
        peak = throughput.device_peak(jax.devices()[0], dtype)
        lines[dtype] = (f"{peak.flops_per_s / 1e12:.3g} TFLOP/s per device ({peak.source})" if peak.flops_per_s
                        else peak.source)
    return lines


def main(argv):
    del argv
    # JAX takes 75% of a GPU's memory up front by default: PyTorch's side needs its share.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    repeats = min(FLAGS.repeats, 2) if FLAGS.quick else FLAGS.repeats
    rows = run(FLAGS.workloads, FLAGS.dtypes, quick=FLAGS.quick, repeats=repeats, bert_source=FLAGS.bert_source,
               llm=FLAGS.llm, with_torch=not FLAGS.no_torch, log=lambda s: print(s, file=sys.stderr, flush=True))
    command = shlex.join(["python", "-m", "benchmarks.accelerator", *sys.argv[1:]])
    out = pathlib.Path(FLAGS.out) / device_folder(jax.devices()[0].device_kind)
    print(write_table(out, rows, timing.header(), peak_lines(FLAGS.dtypes), command))
    print(f"written: {out}/table.md, table.json", file=sys.stderr)
    timing.emit_rows("accelerator", [
        {"workload": f"{r['workload']}, {r['dtype']}", "ours_ms": r["ours_ms"], "peer": r["peer"],
         "peer_ms": r["peer_ms"], "note": f"MFU {r['ours_mfu']:.1%}" if r.get("ours_mfu") else r.get("note", "")}
        for r in rows if r.get("ours_ms") and r.get("peer_ms")])


def define_flags():
    cli.define_out("results/accelerator", "<device>/table.md and table.json")
    timing.define_quick("tiny models and batches on every workload, 2 repeats")
    timing.define_repeats(5)
    cli.define_list("workloads", WORKLOADS, "Workloads", choices=WORKLOADS)
    cli.define_list("dtypes", DTYPES, "Compute dtypes", choices=DTYPES)
    flags.DEFINE_string("bert_source", None, "BERT checkpoint directory or package (default: MiniLM).")
    flags.DEFINE_string("llm", "smollm2", "The decode rows' model: smollm2, gemma3, a .gguf file or a Hugging Face "
                        "directory (ignored with --quick: a tiny random Llama).")
    flags.DEFINE_bool("no_torch", False, "Leave the PyTorch column out.")


if __name__ == "__main__":
    define_flags()
    cli.run(main)
