"""Trains a masked-LM head for a BERT encoder that ships none (MiniLM), or continues MLM training
of encoder and head, and saves a Hugging Face BertForMaskedLM directory (issue 11).

    python -m experiments.mlm_head --config=configs/mlm_head.py:head --workdir=runs/mlm_head/head
    python -m experiments.mlm_head --config=configs/mlm_head.py:full --workdir=runs/mlm_head/full \
        --config.init_from=runs/mlm_head/head/hf

configs/mlm_head.py describes the stages, the masking, the text and the budget. Outputs in
WORKDIR: hf/ (the model), log.jsonl (progress), result.json (held-out masked-token accuracy and
perplexity before and after training).
"""
from __future__ import annotations

import hashlib
import json
import math
import pathlib
import re
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from data.paths import DataError, resolve_data_dir
from models import bert
from models.hf_checkpoint import resolve_checkpoint_dir

# the local corpora (relative to data_dir); CrowS-Pairs is deliberately absent
SOURCES = {
    "wiki": "cs224n_birth_places/wiki.txt",
    "bbc": "bbc_news/bbc",
    "sst2": "sst2/stsa.binary.train",
    "amazon": "amazon_polarity/amazon_polarity.sample5000.ft.txt",
}
HELD_OUT_EVERY = 20  # 1 document in 20 (by hash) is held out


def _read(path: pathlib.Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:  # a few BBC articles are Latin-1
        return path.read_text(encoding="latin-1")


def read_corpus(data_dir) -> dict[str, list[str]]:
    """Documents of each local source: wiki lines, BBC articles, SST-2 sentences, Amazon reviews."""
    root = resolve_data_dir(data_dir)
    docs: dict[str, list[str]] = {}
    for name, rel in SOURCES.items():
        path = root / rel
        if not path.exists():
            raise DataError(f"{path}: not found (the MLM corpus needs {', '.join(SOURCES.values())} "
                            f"under config.data_dir={data_dir!r})")
        if name == "bbc":
            files = sorted(path.glob("*/*.txt"))
            if not files:
                raise DataError(f"{path}: no <topic>/<n>.txt articles")
            docs[name] = [" ".join(_read(f).split()) for f in files]
            continue
        lines = [line.strip() for line in _read(path).splitlines() if line.strip()]
        if name == "sst2":
            lines = [line.split(" ", 1)[1] if " " in line else "" for line in lines]
        elif name == "amazon":
            lines = [line.split(" ", 1)[1] if line.startswith("__label__") else line for line in lines]
        docs[name] = [line for line in lines if line]
    return docs


# counterfactual data augmentation (Zhao et al. 2018; Webster et al. 2020's Zari): both directions
GENDER_PAIRS = [("he", "she"), ("him", "her"), ("his", "her"), ("himself", "herself"), ("man", "woman"),
                ("men", "women"), ("boy", "girl"), ("boys", "girls"), ("father", "mother"),
                ("fathers", "mothers"), ("son", "daughter"), ("sons", "daughters"), ("brother", "sister"),
                ("brothers", "sisters"), ("husband", "wife"), ("husbands", "wives"), ("king", "queen"),
                ("kings", "queens"), ("mr", "mrs"), ("uncle", "aunt"), ("nephew", "niece"), ("male", "female"),
                ("males", "females"), ("gentleman", "lady"), ("gentlemen", "ladies"), ("actor", "actress"),
                ("actors", "actresses"), ("waiter", "waitress"), ("boyfriend", "girlfriend"),
                ("grandfather", "grandmother"), ("grandson", "granddaughter"), ("businessman", "businesswoman"),
                ("spokesman", "spokeswoman"), ("chairman", "chairwoman"), ("masculine", "feminine")]


def _swap_table() -> dict[str, str]:
    table = {}
    for a, b in GENDER_PAIRS:
        table.setdefault(a, b)  # "her" -> "him" / "his" is ambiguous: the first listed pair wins ("him")
        table.setdefault(b, a)
    return table


_SWAP = _swap_table()
_WORD = re.compile(r"\b(" + "|".join(sorted(_SWAP, key=len, reverse=True)) + r")\b", re.IGNORECASE)


def gender_swap(text: str) -> str:
    """Every word of GENDER_PAIRS replaced by its partner, keeping capitalisation."""
    def repl(m):
        w = m.group(0)
        out = _SWAP[w.lower()]
        return out.upper() if w.isupper() and len(w) > 1 else out.capitalize() if w[0].isupper() else out
    return _WORD.sub(repl, text)


def is_held_out(text: str) -> bool:
    return int(hashlib.sha1(text.encode()).hexdigest(), 16) % HELD_OUT_EVERY == 0


def pack(tokenizer, docs: list[str], seq_length: int) -> np.ndarray:
    """[N, seq_length] sequences: the documents' tokens as one stream ([SEP] between documents),
    cut into windows of seq_length - 2 and wrapped in [CLS] ... [SEP]."""
    ids = tokenizer(docs, add_special_tokens=False)["input_ids"]
    stream = np.fromiter((t for doc in ids for t in doc + [tokenizer.sep_token_id]), np.int32)
    body = seq_length - 2
    n = len(stream) // body
    if n == 0:
        raise DataError(f"corpus too small: {len(stream)} tokens, fewer than one sequence of {body}")
    windows = stream[:n * body].reshape(n, body)
    cls = np.full((n, 1), tokenizer.cls_token_id, np.int32)
    sep = np.full((n, 1), tokenizer.sep_token_id, np.int32)
    return np.concatenate([cls, windows, sep], axis=1)


def mask_tokens(ids: np.ndarray, rng: np.random.Generator, *, mask_id: int, replace_ids: np.ndarray,
                mask_prob: float = 0.15):
    """BERT's masking of [B, L] packed sequences ([CLS] first, [SEP] last, no padding).

    round(mask_prob * (L - 2)) positions per row are chosen; 80% become [MASK], 10% a random
    token from `replace_ids`, 10% stay. Returns (inputs, positions [B, M], labels [B, M]).
    """
    b, length = ids.shape
    m = max(1, round(mask_prob * (length - 2)))
    positions = np.sort(np.argsort(rng.random((b, length - 2)), axis=1)[:, :m] + 1, axis=1).astype(np.int32)
    labels = np.take_along_axis(ids, positions, axis=1)
    action = rng.random((b, m))
    new = np.where(action < 0.8, mask_id,
                   np.where(action < 0.9, rng.choice(replace_ids, size=(b, m)), labels))
    inputs = ids.copy()
    np.put_along_axis(inputs, positions, new.astype(np.int32), axis=1)
    return inputs, positions, labels


def trainable_filter(stage: str):
    return nnx.All(nnx.Param, nnx.PathContains("mlm_head")) if stage == "head" else nnx.Param


def _names(path) -> list[str]:
    """The DictKey names of a leaf's path (the Variable's `.value` attribute dropped)."""
    return [str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey)]


def make_optimizer(config, params):
    """AdamW with an injectable learning rate, weight decay on kernels and embeddings only, and
    the per-leaf update scale that gives the head `head_learning_rate` in the full stage."""
    decays = jax.tree_util.tree_map_with_path(lambda path, _: _names(path)[-1] in ("kernel", "embedding"), params)
    tx = optax.inject_hyperparams(optax.adamw)(learning_rate=0.0, weight_decay=config.weight_decay, mask=decays)
    # the full stage trains a young head faster than the pretrained encoder: its updates are scaled
    head_scale = config.head_learning_rate / config.learning_rate if config.stage == "full" else 1.0
    lr_scale = jax.tree_util.tree_map_with_path(
        lambda path, _: head_scale if "mlm_head" in _names(path) else 1.0, params)
    return tx, decays, lr_scale


def save_hf(model: bert.BertModel, tokenizer, source_dir: pathlib.Path, out: pathlib.Path) -> pathlib.Path:
    """WORKDIR/hf: a BertForMaskedLM directory (encoder keys under `bert.`, the tied decoder implied)."""
    from safetensors.numpy import save_file

    out.mkdir(parents=True, exist_ok=True)
    state = {}
    for k, v in bert.hf_state_dict(model).items():
        if k.startswith("pooler."):
            continue  # BertForMaskedLM has no pooler
        state[k if k.startswith("cls.") else "bert." + k] = np.ascontiguousarray(v, np.float32)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((source_dir / "config.json").read_text())
    config.update(architectures=["BertForMaskedLM"], tie_word_embeddings=True)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    tokenizer.save_pretrained(str(out))
    return out


def run(config, workdir) -> dict:
    """Trains one stage in `workdir`; returns (and writes) result.json's contents."""
    from models.masked_lm import has_mlm_head
    from models.hf_checkpoint import load_tokenizer

    if config.stage not in ("head", "full"):
        raise DataError(f"config.stage={config.stage!r} is not head or full")
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    log_file = workdir / "log.jsonl"
    log_file.write_text("")

    def log(record):
        with log_file.open("a") as f:
            f.write(json.dumps(record) + "\n")
        print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()), flush=True)

    source = resolve_checkpoint_dir(config.init_from or config.checkpoint)
    tokenizer = load_tokenizer(source)
    model = bert.load_pretrained(source, with_mlm_head=True, new_mlm_head=not has_mlm_head(source),
                                 rngs=nnx.Rngs(params=config.seed, dropout=config.seed + 1))
    dropout = config.stage == "full"  # continued pretraining as BERT's; a frozen encoder runs without
    model.train() if dropout else model.eval()

    docs = read_corpus(config.data_dir)
    train_docs = [d for ds in docs.values() for d in ds if not is_held_out(d)]
    eval_docs = [d for ds in docs.values() for d in ds if is_held_out(d)]
    if config.cda:  # two-sided: the original documents and their gender-swapped copies
        train_docs = train_docs + [gender_swap(d) for d in train_docs]
    train_seqs = pack(tokenizer, train_docs, config.seq_length)
    eval_seqs = pack(tokenizer, eval_docs, config.seq_length)[:config.eval_sequences]
    special = set(tokenizer.all_special_ids)
    replace_ids = np.array([i for i in range(model.config.vocab_size) if i not in special], np.int32)
    mask_kw = dict(mask_id=tokenizer.mask_token_id, replace_ids=replace_ids, mask_prob=config.mask_prob)
    log({"event": "data", "train_documents": len(train_docs), "eval_documents": len(eval_docs),
         "train_sequences": len(train_seqs), "eval_sequences": len(eval_seqs),
         "train_tokens": int(train_seqs.size), **{f"{k}_documents": len(v) for k, v in docs.items()}})

    trainable = trainable_filter(config.stage)
    graphdef, params, rest = nnx.split(model, trainable, ...)
    eval_model = nnx.merge(graphdef, params, rest)
    eval_model.eval()
    eval_graphdef = nnx.graphdef(eval_model)

    def loss_and_acc(model, ids, positions, labels):
        out = model(ids, jnp.ones_like(ids), jnp.zeros_like(ids), mlm_positions=positions)
        ce = optax.softmax_cross_entropy_with_integer_labels(out.logits.astype(jnp.float32), labels)
        return ce.mean(), (out.logits.argmax(-1) == labels).mean()

    tx, _, lr_scale = make_optimizer(config, params)
    opt_state = tx.init(params)

    @jax.jit
    def train_step(params, rest, opt_state, ids, positions, labels, key, lr):
        model = nnx.merge(graphdef, params, rest)
        if dropout:  # fresh dropout masks each step, as the engine's train step
            nnx.reseed(model, dropout=key)
        grad_fn = nnx.value_and_grad(lambda m: loss_and_acc(m, ids, positions, labels),
                                     argnums=nnx.DiffState(0, trainable), has_aux=True)
        (loss, acc), grads = grad_fn(model)
        opt_state.hyperparams["learning_rate"] = lr
        updates, opt_state = tx.update(grads, opt_state, params)
        updates = jax.tree_util.tree_map(lambda u, k: u * k, updates, lr_scale)
        return optax.apply_updates(params, updates), opt_state, loss, acc, optax.tree.norm(grads)

    @jax.jit
    def eval_step(params, rest, ids, positions, labels):
        return loss_and_acc(nnx.merge(eval_graphdef, params, rest), ids, positions, labels)

    eval_inputs = mask_tokens(eval_seqs, np.random.default_rng(1234), **mask_kw)

    def evaluate(params):
        total_ce = total_acc = 0.0
        n = len(eval_seqs)
        for s in range(0, n, config.batch_size):
            sl = slice(s, min(n, s + config.batch_size))
            ce, acc = eval_step(params, rest, *(jnp.asarray(a[sl]) for a in eval_inputs))
            total_ce += float(ce) * (sl.stop - sl.start)
            total_acc += float(acc) * (sl.stop - sl.start)
        return {"masked_token_accuracy": total_acc / n, "perplexity": math.exp(total_ce / n),
                "cross_entropy": total_ce / n}

    before = evaluate(params)
    log({"event": "eval", "step": 0, **before})

    rng = np.random.default_rng(config.seed)
    key = jax.random.key(config.seed)
    planned = config.max_steps
    # the budget is CPU time of this process (all its threads) when max_cpu_minutes is set, else wall clock
    use_cpu = bool(config.max_cpu_minutes)
    clock = time.process_time if use_cpu else time.perf_counter
    minutes = config.max_cpu_minutes if use_cpu else config.max_minutes
    budget_s = minutes * 60 if minutes else float("inf")
    t_start = time.perf_counter()
    cpu_start = time.process_time()  # all threads of this process
    c_start = clock()
    t_timed = c_timed = None  # steps are timed from step 3 on (compilation excluded from throughput)
    tokens_per_step = config.batch_size * config.seq_length
    step = 0
    loss_sum = acc_sum = 0.0
    while step < planned:
        rows = rng.integers(0, len(train_seqs), config.batch_size)
        ids, positions, labels = mask_tokens(train_seqs[rows], rng, **mask_kw)
        progress = step / max(1, planned)
        lr = config.learning_rate * min(1.0, (step + 1) / max(1, config.warmup_steps)) * (1 - progress)
        params, opt_state, loss, acc, gnorm = train_step(
            params, rest, opt_state, jnp.asarray(ids), jnp.asarray(positions), jnp.asarray(labels),
            jax.random.fold_in(key, step), jnp.float32(lr))
        step += 1
        loss_sum += float(loss)
        acc_sum += float(acc)
        if step == 3:
            t_timed, c_timed = time.perf_counter(), clock()
        if t_timed is not None and step == 8 and budget_s < float("inf"):
            # fit the schedule to the budget: the run ends with its learning rate decayed
            per_step = (clock() - c_timed) / 5
            fit = int((budget_s - (clock() - c_start)) / per_step) + step
            if fit < planned:
                planned = max(step + 1, fit)
                log({"event": "plan", "planned_steps": planned,
                     ("cpu_seconds_per_step" if use_cpu else "seconds_per_step"): per_step,
                     "reason": f"max_cpu_minutes={config.max_cpu_minutes}" if use_cpu
                     else f"max_minutes={config.max_minutes}"})
        if step % config.log_every_steps == 0 or step == planned:
            elapsed = time.perf_counter() - t_start
            rate = (step - 3) / (time.perf_counter() - t_timed) if t_timed and step > 3 else float("nan")
            n = config.log_every_steps if step % config.log_every_steps == 0 else step % config.log_every_steps
            log({"step": step, "of": planned, "loss": loss_sum / n, "accuracy": acc_sum / n, "lr": lr,
                 "grad_norm": float(gnorm), "tokens_per_s": rate * tokens_per_step,
                 "elapsed_s": elapsed, "eta_s": (planned - step) / rate if rate == rate and rate > 0 else None})
            loss_sum = acc_sum = 0.0
    train_seconds = time.perf_counter() - t_start
    train_cpu_seconds = time.process_time() - cpu_start
    after = evaluate(params)
    log({"event": "eval", "step": step, **after})

    model = nnx.merge(graphdef, params, rest)
    out = save_hf(model, tokenizer, source, workdir / "hf")
    result = {"stage": config.stage, "source": str(source), "steps": step, "max_steps": config.max_steps,
              "tokens_seen": step * tokens_per_step, "train_seconds": train_seconds,
              "train_cpu_seconds": train_cpu_seconds,
              "batch_size": config.batch_size, "seq_length": config.seq_length,
              "learning_rate": config.learning_rate, "head_learning_rate": config.head_learning_rate, "cda": config.cda,
              "held_out_sequences": len(eval_seqs),
              "held_out_masked_tokens": int(eval_inputs[1].size),
              "before": before, "after": after, "model_dir": str(out)}
    (workdir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv):
    del argv
    result = run(FLAGS.config, FLAGS.workdir)
    b, a = result["before"], result["after"]
    print(f"held-out masked-token accuracy {b['masked_token_accuracy']:.3f} -> {a['masked_token_accuracy']:.3f}, "
          f"perplexity {b['perplexity']:.1f} -> {a['perplexity']:.1f}; model in {result['model_dir']}")


if __name__ == "__main__":
    from absl import flags
    from ml_collections import config_flags

    from train import cli

    FLAGS = flags.FLAGS
    config_flags.DEFINE_config_file("config", None, "configs/mlm_head.py:head or :full.", lock_config=True)
    flags.DEFINE_string("workdir", None, "Where the run's outputs go.", required=True)
    cli.run(main)
