"""The main job: pretrain, finetune, restore and evaluate minGPT on birth places.

  python -m train.birth_places_demo                       # synthetic data, demo sizes
  python -m train.birth_places_demo --data_dir=../shared/data/cs224n_birth_places
  python -m train.birth_places_demo --course              # the assignment's configs

Stages run through the same engine as `train.main` (configs/birth_demo.py, or the
birth_* course configs with --course), each in its own workdir under --workdir,
so a killed demo resumes where it stopped. Finally each finetuned run is restored
from its Orbax checkpoint and evaluated, and the table is printed next to the
majority-place baseline ("always London" on the course data).
"""

import collections
import pathlib
import time

from absl import app, flags, logging

from configs import birth_demo, birth_finetune_pretrained, birth_finetune_scratch, birth_pretrain
from data import birth_places, synthetic_bios
from train import evaluate, train

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", "runs/demo", "Where the stages' run directories go.")
flags.DEFINE_string("data_dir", None, "CS224n-format data; default: synthetic biographies written to WORKDIR/data.")
flags.DEFINE_bool("course", False, "Use the assignment's full configs instead of the demo sizes.")
flags.DEFINE_integer("max_steps", -1, "If > 0, shortens every stage to this many steps.")


def stage_configs(data_dir: str, workdir: pathlib.Path, course: bool):
    if course:
        configs = {"pretrain": birth_pretrain.get_config(), "finetune": birth_finetune_pretrained.get_config(),
                   "scratch": birth_finetune_scratch.get_config()}
    else:
        configs = {stage: birth_demo.get_config(stage) for stage in ("pretrain", "finetune", "scratch")}
    for config in configs.values():
        config.data_dir = data_dir
        if not course and FLAGS.data_dir:
            config.model.block_size = 128  # the course's: real questions run to 70 characters
        if FLAGS.max_steps > 0:
            config.max_steps = FLAGS.max_steps
    configs["finetune"].init_from = str(workdir / "pretrain")
    return configs


def majority_baseline(train_file: pathlib.Path, eval_file: pathlib.Path) -> tuple[str, float]:
    """Always answer the most common training place (London on the course data)."""
    counts = collections.Counter(p.answer for p in birth_places.read_name_place_tsv(train_file))
    place = counts.most_common(1)[0][0]
    answers = [p.answer for p in birth_places.read_name_place_tsv(eval_file)]
    return place, sum(a == place for a in answers) / len(answers)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    workdir = pathlib.Path(FLAGS.workdir).absolute()
    if FLAGS.data_dir:
        data_dir = pathlib.Path(FLAGS.data_dir).absolute()
    else:
        data_dir = synthetic_bios.write(workdir / "data")
        print(f"synthetic biographies written to {data_dir}")
    configs = stage_configs(str(data_dir), workdir, FLAGS.course)

    started, seconds, in_training = time.perf_counter(), {}, {}
    for stage, config in configs.items():
        t = time.perf_counter()
        results = train.train_and_evaluate(config, workdir / stage)
        seconds[stage] = time.perf_counter() - t
        in_training[stage] = results.get("accuracy")

    cfg = configs["finetune"]
    place, baseline = majority_baseline(data_dir / cfg.train_file, data_dir / cfg.eval_file)
    print(f"\nDev accuracy on {data_dir / cfg.eval_file} (restored from the Orbax checkpoints):")
    print(f"  {'run':34s} {'accuracy':>9s} {'train time':>11s}")
    print(f"  {'always ' + repr(place):34s} {100 * baseline:8.2f}% {'-':>11s}")
    for stage, title in (("scratch", "finetune without pretraining"), ("finetune", "pretrain + finetune")):
        metrics = evaluate.evaluate_run(workdir / stage)
        if abs(metrics["accuracy"] - in_training[stage]) > 1e-12:
            raise RuntimeError(f"{stage}: restored accuracy {metrics['accuracy']} != in-training {in_training[stage]}")
        extra = f" (+{seconds['pretrain']:.0f}s pretraining)" if stage == "finetune" else ""
        print(f"  {title:34s} {100 * metrics['accuracy']:8.2f}% {seconds[stage]:10.0f}s{extra}")
    print(f"total {time.perf_counter() - started:.0f}s; runs in {workdir}")


if __name__ == "__main__":
    app.run(main)
