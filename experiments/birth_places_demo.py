"""The main job: pretrain, finetune, restore and evaluate minGPT on birth places.

  python -m experiments.birth_places_demo                 # synthetic biographies, demo sizes (make demo)
  python -m experiments.birth_places_demo --data=real     # the same sizes on the course files
  python -m experiments.birth_places_demo --data=course   # the assignment's own configs (a GPU job)

Each stage is a config of its own (configs/birth_demo.py `:pretrain`, `:finetune`, `:scratch`,
`,real` for the course files; or configs/birth_pretrain.py, birth_finetune_*.py), trained by
the same engine as `train.main` in its own workdir, so a killed demo resumes where it stopped.
Then each finetuned run is restored from its Orbax checkpoint and evaluated, and the table is
printed next to the majority-place baseline ("always London" on the course data).

`--workdir` and `--max_steps` are the only changes made to the stage configs, and only when
given (the finetune stage's `init_from` follows the pretraining workdir); each is printed.
"""

import pathlib
import time

from absl import flags

from configs import birth_demo, birth_finetune_pretrained, birth_finetune_scratch, birth_pretrain
from data import birth_places, synthetic_bios
from data.paths import resolve_path
from train import cli, evaluate, train

FLAGS = flags.FLAGS


def define_flags():
    """Command-line flags, defined only when run as a script (tests import several drivers)."""
    flags.DEFINE_enum("data", "synthetic", ["synthetic", "real", "course"],
                      "synthetic: generated biographies; real: demo sizes on the course files; course: the course configs.")
    flags.DEFINE_string("workdir", None, "Where the stages' run directories go; default: runs/demo, runs/demo_real "
                        "or runs/course.")
    flags.DEFINE_integer("max_steps", -1, "If > 0, shortens every stage to this many steps.")


DEFAULT_WORKDIRS = {"synthetic": "runs/demo", "real": "runs/demo_real", "course": "runs/course"}
STAGES = {"scratch": "finetune without pretraining", "finetune": "pretrain + finetune"}


def stage_configs(data: str) -> dict:
    if data == "course":
        return {"pretrain": birth_pretrain.get_config(), "finetune": birth_finetune_pretrained.get_config(),
                "scratch": birth_finetune_scratch.get_config()}
    suffix = ",real" if data == "real" else ""
    return {stage: birth_demo.get_config(stage + suffix) for stage in ("pretrain", "finetune", "scratch")}


def override(configs: dict, workdir: pathlib.Path, default_workdir: str, max_steps: int) -> None:
    """The flags' changes to the stage configs, printed (locked configs: a wrong key fails)."""
    for config in configs.values():
        if max_steps > 0:
            config.max_steps = max_steps
    if max_steps > 0:
        print(f"override: max_steps={max_steps} in every stage")
    if workdir != resolve_path(default_workdir).absolute():
        configs["finetune"].init_from = str(workdir / "pretrain")
        print(f"override: finetune init_from={configs['finetune'].init_from}")


def main(argv):
    del argv
    default_workdir = DEFAULT_WORKDIRS[FLAGS.data]
    workdir = resolve_path(FLAGS.workdir or default_workdir).absolute()
    configs = stage_configs(FLAGS.data)
    override(configs, workdir, default_workdir, FLAGS.max_steps)
    data_dir = resolve_path(configs["pretrain"].data_dir)
    if FLAGS.data == "synthetic":
        synthetic_bios.write(data_dir)
        print(f"synthetic biographies written to {data_dir}")

    started, seconds, in_training = time.perf_counter(), {}, {}
    for stage, config in configs.items():
        t = time.perf_counter()
        results = train.train_and_evaluate(config, workdir / stage)
        seconds[stage] = time.perf_counter() - t
        in_training[stage] = results.get("accuracy")

    cfg = configs["finetune"]
    place, baseline = birth_places.majority_baseline(data_dir / cfg.train_file, data_dir / cfg.eval_file)
    print(f"\nDev accuracy on {data_dir / cfg.eval_file} (restored from the Orbax checkpoints):")
    print(f"  {'run':34s} {'accuracy':>9s} {'train time':>11s}")
    print(f"  {'always ' + repr(place):34s} {100 * baseline:8.2f}% {'-':>11s}")
    for stage, title in STAGES.items():
        metrics = evaluate.evaluate_run(workdir / stage)
        if abs(metrics["accuracy"] - in_training[stage]) > 1e-12:
            raise RuntimeError(f"{stage}: restored accuracy {metrics['accuracy']} != in-training {in_training[stage]}")
        extra = f" (+{seconds['pretrain']:.0f}s pretraining)" if stage == "finetune" else ""
        print(f"  {title:34s} {100 * metrics['accuracy']:8.2f}% {seconds[stage]:10.0f}s{extra}")
    print(f"total {time.perf_counter() - started:.0f}s; runs in {workdir}")


if __name__ == "__main__":
    define_flags()
    cli.run(main)
