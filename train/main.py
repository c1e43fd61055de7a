"""Train a config: `python -m train.main --config=configs/<name>.py --workdir=DIR [--config.key=value ...]`.

Re-running the same command resumes from the last checkpoint in DIR.
Every log line has tokens/s and MFU (train/throughput.py): set $PEAK_TFLOPS (one device's peak, in
TFLOP/s) for a chip its table lacks.
"""

from absl import app, flags

from train import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Run directory: checkpoints, metrics, TensorBoard events.", required=True)
cli.define_config("A configs/*.py file.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from train import train  # after flag parsing: keeps --help fast
    results = train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    print(dict(results))


if __name__ == "__main__":
    cli.run(main)
