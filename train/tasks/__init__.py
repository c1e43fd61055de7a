"""Tasks: what the engine trains, one module per family.

A task holds only what a task is: its data as batches, its loss, its validation and its
final evaluation. Models come from `models.build`, datasets from `data/`. The engine
(`train/train.py`) uses, from a task:

  train_data          random access: len(...) and .example(index, rng) -> (x, y)
  tokens_per_example  for throughput (and minGPT's token-based schedule)
  model_sizes         keyword sizes for models.build.build_model (vocab_size, num_classes, ...)
  meta                JSON facts a checkpoint must agree with (e.g. the vocabulary)
  decay_tokens()      where minGPT's cosine schedule ends
  loss(model, batch) -> (loss, metrics)
  validation_batches() -> [(batch, real_rows)]; empty when the task has no validation set
  eval_outputs(model, batch) -> per-example arrays; summarize(outputs) -> metrics
  evaluate(model, target=None) -> (metrics, prediction lines), target: the config's eval_file
      or eval_split unless given; nested metrics go to WORKDIR/eval_metrics.json only
and, where a task needs them:
  prepare_batch(batch) -> batch     e.g. cut padding columns of a stacked training batch
  train_batch(index) -> batch       the task batches itself (word_lm: sentences of similar length)
  validate_model(model, step) -> metrics  more validation measurements of the eval-mode model (a probe)
  update_scale(params) -> tree | None  per-parameter factors on the optimizer's updates (learning rates)
  export(model, workdir) -> path    after training: the model in another format (a Hugging Face directory)
"""

from train.tasks.char_gpt import BirthPlacesTask, SpanCorruptionTask
from train.tasks.mlm_head import MLMHeadTask
from train.tasks.text_classification import TextClassificationTask
from train.tasks.word_lm import WordLMTask

TASKS = {"span_corruption": SpanCorruptionTask, "birth_places": BirthPlacesTask,
         "text_classification": TextClassificationTask, "word_lm": WordLMTask, "mlm_head": MLMHeadTask}


def build(config):
    if config.task not in TASKS:
        raise ValueError(f"config.task={config.task!r} is not one of {sorted(TASKS)}")
    return TASKS[config.task](config)
