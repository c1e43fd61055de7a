"""Birth-place evaluation decoding: key/value cache against recomputing the prefix every step.

  python -m benchmarks.decode [--questions=500] [--torch_questions=50]

The pretraining model's sizes (configs/birth_pretrain.py: 4 layers, 8 heads, 256 wide,
block 128), weights copied from a PyTorch minGPT so all three decoders run the same
function; the first `questions` lines of birth_dev.tsv as `name⁇` prompts, 32 greedy
characters each (the evaluation's decode_steps). Rows:
  - JAX with the cache (models.gpt.greedy_decode, the evaluation's default);
  - JAX recomputing the whole buffer every step (cache=False);
  - the course's utils.sample loop in PyTorch, one question at a time, on the first
    `torch_questions` questions and scaled to `questions` (it is the slow one).
Every row must give the same completions (checked; the table says so).
For benchmarks/run_all.py it emits two rows, ours = the cached decoder, against JAX
recomputation and against the course's PyTorch sample() loop.
"""

import time

import numpy as np
import torch
from absl import flags
from flax import nnx

from benchmarks.timing import define_repeats, emit_rows, header, measure_one
from configs import birth_pretrain
from data import birth_places
from data.paths import resolve_data_dir
from models.gpt import GPT, greedy_decode
from reference.gpt import TorchGPT, course_greedy, flax_params
from train import cli

FLAGS = flags.FLAGS


def main(argv):
    del argv
    config = birth_pretrain.get_config()
    m, steps = config.model, config.decode_steps
    data_dir = resolve_data_dir(FLAGS.data_dir or config.data_dir)
    corpus = birth_places.CharCorruptionDataset(birth_places.read_text(data_dir / config.pretrain_corpus),
                                                m.block_size)
    pairs = birth_places.read_name_place_tsv(data_dir / "birth_dev.tsv")[:FLAGS.questions]
    prompts = [corpus.vocab.encode(p.question + birth_places.MASK_CHAR) for p in pairs]

    torch.manual_seed(0)
    reference = TorchGPT(corpus.vocab_size, m.block_size, m.n_layer, m.n_head, m.n_embd).eval()
    model = GPT(corpus.vocab_size, m.block_size, m.n_layer, m.n_head, m.n_embd, rngs=nnx.Rngs(0))
    nnx.replace_by_pure_dict(state := nnx.state(model, nnx.Param), flax_params(reference))
    nnx.update(model, state)
    model.eval()

    outputs, times = {}, {}
    for name, cache in (("cached", True), ("recompute", False)):
        def run(cache=cache, name=name):
            outputs[name] = greedy_decode(model, prompts, steps, pad_id=birth_places.PAD_ID, cache=cache)
            return 0
        times[name] = measure_one(run, FLAGS.repeats, warmup=1).median
    n_torch = min(FLAGS.torch_questions, len(prompts))
    start = time.perf_counter()
    outputs["torch"] = [course_greedy(reference, p, steps, m.block_size) for p in prompts[:n_torch]]
    times["torch"] = (time.perf_counter() - start) * len(prompts) / n_torch
    # Recomputing crops nothing (prompts + 32 fit in 128), so all three decode the same characters.
    same = all(np.array_equal(a, b) for a, b in zip(outputs["cached"], outputs["recompute"])) and all(
        np.array_equal(a, b) for a, b in zip(outputs["cached"], outputs["torch"]))

    print(f"Greedy decoding of {len(prompts)} birth-place dev questions, {steps} characters each, "
          f"minGPT {m.n_layer} layers x {m.n_head} heads x {m.n_embd}; same completions in every row: "
          f"{'yes' if same else 'NO'}")
    print(header())
    print("| decoder | seconds | questions/s | speed-up vs recompute |")
    print("|---|---:|---:|---:|")
    rows = [("JAX, key/value cache (jit, scan)", "cached"), ("JAX, recompute the buffer each step", "recompute"),
            (f"PyTorch {torch.__version__}, course sample() per question (timed on {n_torch}, scaled)", "torch")]
    for label, key in rows:
        print(f"| {label} | {times[key]:.2f} | {len(prompts) / times[key]:.1f} | "
              f"{times['recompute'] / times[key]:.2f}x |")
    workload = (f"greedy decoding, {len(prompts)} birth-place dev questions x {steps} characters, "
                f"key/value cache (jit, scan)")
    same_note = "same completions" if same else "completions DIFFER"
    emit_rows("decode", [
        {"workload": workload, "ours_ms": 1e3 * times["cached"], "peer": "JAX recompute",
         "peer_ms": 1e3 * times["recompute"], "note": same_note},
        {"workload": workload, "ours_ms": 1e3 * times["cached"], "peer": "PyTorch course sample()",
         "peer_ms": 1e3 * times["torch"],
         "note": f"{same_note}; PyTorch timed on {n_torch} questions, scaled to {len(prompts)}"}])


if __name__ == "__main__":
    flags.DEFINE_integer("questions", 500, "Dev questions decoded by the JAX rows.", lower_bound=1)
    flags.DEFINE_integer("torch_questions", 50, "Questions decoded by the PyTorch loop (time scaled up).",
                         lower_bound=1)
    define_repeats(3)
    flags.DEFINE_string("data_dir", "", "wiki.txt and birth_dev.tsv (default: the pretraining config's).")
    cli.run(main)
