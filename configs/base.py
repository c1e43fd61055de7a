"""The one config schema: every key the engine reads, and each model kind's own keys.

Experiment configs start from `get_config(task, model_kind)` and change values; they
never add keys (configs are locked), so every `--config.key=value` override works on
every config, and a misspelt key fails naming itself. `validate(config)` checks values
up front, before anything is built or written.

`dtype` (float32 | bfloat16 | float16) is the compute dtype of mixed precision, for every model kind:
`--config.dtype=bfloat16` (the same setting as `--config.model.dtype`).

Not a runnable experiment on its own.
"""

from __future__ import annotations

import ml_collections

from models import build
from models.typed_config import COMPUTE_DTYPES, ModelConfigError

TASKS = ("span_corruption", "birth_places", "text_classification", "word_lm", "mlm_head")
DATASETS = ("sst2", "boolq", "amazon_polarity", "listops")  # text_classification's
OPTIMIZERS = ("adamw", "sgd", "rmsprop")
SCHEDULES = ("mingpt", "warmup_cosine", "warmup_linear", "constant")
SHARDINGS = ("replicated", "fsdp")


class ConfigError(ValueError):
    """A config value that cannot work, named by its key."""


def model_config(kind: str, **values) -> ml_collections.ConfigDict:
    """The `model` dict of one kind: the fields of its typed config (models/build.py FAMILIES), with
    the course's defaults; the dataclass's docstring says what each field means."""
    if kind not in build.KINDS:
        raise ConfigError(f"config.model.kind={kind!r} is not one of {sorted(build.KINDS)}")
    config = ml_collections.ConfigDict(build.default_fields(kind))
    unknown = sorted(set(values) - set(config))
    if unknown:
        raise ConfigError(f"config.model ({kind}) has no key(s) {unknown}; known: {sorted(config)}")
    config.update(values)
    return config


def get_config(task: str, model_kind: str) -> ml_collections.ConfigDict:
    if task not in TASKS:
        raise ConfigError(f"config.task={task!r} is not one of {TASKS}")
    config = ml_collections.ConfigDict()
    config.name = task
    config.task = task
    config.seed = 0

    # Data. Paths are as given, else relative to the repository.
    config.data_dir = ""
    # What the final evaluation scores, after training: a file of the data directory (the
    # CS224n tasks) or a split of the dataset (text classification); "" skips it.
    config.eval_file = ""
    config.eval_split = ""
    config.eval_batch_size = 64
    config.eval_every_steps = 0  # > 0: validation metrics every N steps (tasks with a validation set)
    # Model selection: "" keeps the last step; a validation metric ("accuracy", "loss") keeps the
    # parameters of its best validation pass in workdir/best, and the final evaluation scores those.
    config.select_best = ""
    config.early_stopping_patience = 0  # > 0 (with select_best): stop after N validations without a new best
    config.eval_at_start = False  # also validate at step 0, before any training (a learning curve's first point)
    if task in ("span_corruption", "birth_places"):  # train/tasks/char_gpt.py
        config.pretrain_corpus = "wiki.txt"  # the vocabulary always comes from it, as in the course
        config.train_file = "birth_places_train.tsv"
        config.decode_steps = 32  # greedy characters after `name⁇`
    elif task == "word_lm":  # train/tasks/word_lm.py: BBC News words (data/bbc_words.py), seed 002's mini-GPT
        config.vocab_cap = 10_000  # the most frequent training words (specials included); the rest are <UNK>
        config.seq_len = 100  # inputs per row: sentences are cut to it
        config.objective = "causal"  # causal: next-token prediction | mlm: BERT's masking (data/masking.py)
        config.mask_rate = 0.15  # mlm: the share of each row's words that is predicted
        config.windows = 0  # 0: sentences `<START> words <STOP>`; > 0: contiguous article windows of N inputs
        config.eval_limit = 640  # dev rows of each validation pass (0: all)
        # The final measurements (eval_split set): perplexity on the first train_eval_limit train rows, dev and
        # test; for causal sentences also the leak check (dev sentences scored with their future hidden; 0
        # skips it), the scores of `sentences` and greedy and sampled continuations of `prompts`.
        config.train_eval_limit = 1280
        config.leak_check_sentences = 0
        config.sentences = ()
        config.prompts = ()
        config.generate_steps = 40
        config.extrapolation_lengths = ()  # windows: dev perplexity on windows of these lengths
        config.topic_probe = False  # also a BBC topic probe of the frozen features at every validation pass
    elif task == "mlm_head":  # train/tasks/mlm_head.py: masked-LM training of a BERT on the local text
        config.seq_length = 64  # tokens per packed sequence, [CLS] and [SEP] included
        config.mask_rate = 0.15  # BERT's masking (data/masking.py)
        config.eval_sequences = 256  # held-out sequences, masked once with a fixed seed
        config.cda = False  # counterfactual data augmentation: add a gender-swapped copy of the training text
        config.head_learning_rate = 0.0  # > 0 with model.mode full: the head's rate (the encoder: learning_rate)
        # Budgets that experiments/mlm_head.py fits max_steps to (0: none): CPU-minutes of the training
        # process, or wall-clock minutes when max_cpu_minutes is 0.
        config.max_cpu_minutes = 0.0
        config.max_minutes = 0.0
    else:  # train/tasks/text_classification.py
        config.dataset = "sst2"  # sst2 | boolq | amazon_polarity | listops (a data/listops.py directory)
        config.tfds_dir = ""  # prepared array_record cache; "" = $TFDS_DATA_DIR or ~/tensorflow_datasets
        config.tokenizer = ""  # checkpoint dir or package with the WordPiece vocabulary; "" = the MiniLM package
        config.max_length = 128  # tokens per example (pairs are cut longest-first)
        config.text_fields = "title"  # amazon_polarity: title | title_content
        config.train_limit = 0  # > 0: train on the first N examples only
        # > 0: cut each batch's padding columns down to a multiple of this. BERT and the exact-attention
        # Transformer mask padding, so only the cost changes (the GRUs read padding: not allowed)
        config.trim_padding = 0

    config.model = model_config(model_kind)
    # Mixed precision: the compute dtype, float32 | bfloat16 | float16 (float16 with a loss scale,
    # train/steps.py). Parameters and optimizer state stay float32; logits, softmaxes, LayerNorm statistics
    # and the loss are float32. One setting under two names: `dtype` is a reference to `model.dtype`
    # (the model builds with it), so --config.dtype and --config.model.dtype set the same value.
    config.dtype = config.model.dtype
    config.model.dtype = config.get_ref("dtype")

    # Optimisation.
    config.num_epochs = 1
    config.max_steps = -1  # > 0 shortens a run (the schedule is unchanged)
    config.batch_size = 32
    config.optimizer = "adamw"  # adamw | sgd | rmsprop
    config.learning_rate = 1e-3
    config.b1 = 0.9
    config.b2 = 0.999
    config.eps = 1e-8
    config.weight_decay = 0.0  # adamw
    config.no_decay = ("bias",)  # parameters whose path has one of these parts get no weight decay
    config.momentum = 0.9  # sgd
    config.rmsprop_decay = 0.99  # rmsprop
    config.grad_clip = 1.0  # global-norm clipping; 0 turns it off
    # Learning-rate schedule. mingpt: token-based linear warmup over warmup_tokens, cosine
    # decay to min_lr_fraction at decay_epochs x len(train data) x tokens per example.
    # warmup_cosine / warmup_linear: step-based, over warmup_steps and the whole run.
    config.schedule = "constant"
    config.warmup_tokens = 0
    config.decay_epochs = 0
    config.warmup_steps = 0
    config.min_lr_fraction = 0.0

    # Runs.
    config.init_from = ""  # workdir of a run whose checkpoint initialises the model
    config.init_from_step = 0  # which of its checkpoints; 0 = the latest
    config.log_every_steps = 10
    config.checkpoint_every_steps = 200
    config.keep_checkpoints = 3

    # Past one process (train/distributed.py). num_processes 1: one process (the default);
    # > 1: every process runs the same command with its own process_id and joins
    # coordinator_address ('host:port' of process 0); 0: jax.distributed.initialize() detects
    # the cluster (TPU slice, SLURM, Open MPI). sharding: replicated | fsdp (parameters and
    # optimizer state split over the data axis where a dimension divides, ZeRO-3 style).
    config.num_processes = 1
    config.coordinator_address = ""
    config.process_id = 0
    config.sharding = "replicated"
    return config


def validate(config) -> None:
    """Raises ConfigError naming the first key whose value cannot work."""
    def need(ok: bool, key: str, what: str):
        if not ok:
            raise ConfigError(f"config.{key}={_get(config, key)!r}: {what}")

    need(config.task in TASKS, "task", f"must be one of {TASKS}")
    model = config.model
    # an override may have replaced the model section (--config.model={}): its checks below name what is missing
    model_dtype = model.get("dtype", "float32") if hasattr(model, "get") else "float32"
    need(config.get("dtype", model_dtype) in COMPUTE_DTYPES, "dtype", f"must be one of {COMPUTE_DTYPES}")
    try:  # the model's keys are its typed config's fields, checked by the dataclass
        build.typed_config(model)
    except ModelConfigError as e:
        raise ConfigError(f"config.model.{e.field}={e.value!r}: {e.what}") from None
    need(config.get("dtype", model_dtype) == model_dtype, "dtype",
         f"differs from config.model.dtype={model_dtype!r}; they are one setting: give both the same value")
    need(config.optimizer in OPTIMIZERS, "optimizer", f"must be one of {OPTIMIZERS}")
    need(config.schedule in SCHEDULES, "schedule", f"must be one of {SCHEDULES}")
    for key in ("batch_size", "num_epochs", "log_every_steps", "checkpoint_every_steps", "keep_checkpoints",
                "eval_batch_size"):
        need(isinstance(config[key], int) and config[key] > 0, key, "must be a positive integer")
    need(isinstance(config.eval_every_steps, int) and config.eval_every_steps >= 0, "eval_every_steps",
         "must be 0 (off) or a positive integer")
    need(config.max_steps == -1 or config.max_steps > 0, "max_steps", "must be -1 (the whole run) or positive")
    need(not config.select_best or config.eval_every_steps > 0, "select_best",
         "needs validation passes: set eval_every_steps > 0")
    need(isinstance(config.early_stopping_patience, int) and config.early_stopping_patience >= 0,
         "early_stopping_patience", "must be 0 (off) or a positive number of validation passes")
    need(not config.early_stopping_patience or bool(config.select_best), "early_stopping_patience",
         "needs select_best (the metric whose best pass it waits for)")
    need(config.init_from_step >= 0, "init_from_step", "must be 0 (the latest) or a checkpoint step")
    need(config.learning_rate > 0, "learning_rate", "must be positive")
    need(config.grad_clip >= 0, "grad_clip", "must be 0 (off) or positive")
    need(0 <= config.min_lr_fraction <= 1, "min_lr_fraction", "must be in [0, 1]")
    need(config.warmup_steps >= 0 and config.warmup_tokens >= 0, "warmup_steps",
         "warmup_steps and warmup_tokens must be >= 0")
    need(config.schedule != "mingpt" or config.decay_epochs > 0, "decay_epochs",
         "must be positive with schedule='mingpt'")
    need(config.sharding in SHARDINGS, "sharding", f"must be one of {SHARDINGS}")
    n = config.num_processes
    need(isinstance(n, int) and n >= 0, "num_processes",
         "must be 1 (one process), 0 (detect the cluster) or the number of processes")
    if n > 1:
        host, _, port = config.coordinator_address.rpartition(":")
        need(bool(host) and port.isdigit(), "coordinator_address",
             f"with num_processes={n} it must be 'host:port' of process 0's machine, e.g. '10.0.0.1:1234'")
        need(isinstance(config.process_id, int) and 0 <= config.process_id < n, "process_id",
             f"must be in [0, {n}) with num_processes={n}")
    if config.task == "text_classification":
        need(not config.eval_file, "eval_file", "text classification scores a dataset split: use eval_split")
        need(config.eval_split in ("", "train", "validation", "test"), "eval_split",
             "must be '', train, validation or test")
        need(isinstance(config.max_length, int) and config.max_length > 0, "max_length", "must be a positive integer")
        need(config.train_limit >= 0, "train_limit", "must be 0 (all) or positive")
        need(isinstance(config.trim_padding, int) and config.trim_padding >= 0, "trim_padding",
             "must be 0 (off) or the multiple to round each batch's length up to")
        if config.trim_padding:
            exact = model.kind == "bert" or (model.kind == "transformer" and model.attention.kind == "exact")
            need(exact, "trim_padding", "only BERT and the exact-attention Transformer mask padding exactly "
                 "(the GRUs read it, Linformer/Performer/BigBird depend on the length); set trim_padding=0")
            need(config.num_processes == 1, "trim_padding",
                 "needs one process (each process would cut its rows to a different length)")
        if model.kind == "transformer":
            need(config.max_length <= model.max_positions, "max_length",
                 f"exceeds config.model.max_positions={model.max_positions}")
        need(config.dataset in DATASETS, "dataset", f"must be one of {DATASETS}")
        if config.dataset == "listops":
            need(model.kind == "transformer", "model.kind", "ListOps is set up for the transformer classifier")
    elif config.task == "word_lm":
        need(model.kind == "gpt", "model.kind", "the word-level LM is the mini-GPT")
        need(config.objective in ("causal", "mlm"), "objective", "must be causal or mlm")
        need(model.causal == (config.objective == "causal"), "model.causal",
             f"must be {config.objective == 'causal'} with objective={config.objective!r} (an MLM attends both ways)")
        need(not config.eval_file, "eval_file", "the word-level LM measures its splits: use eval_split")
        need(config.eval_split in ("", "train", "dev", "test"), "eval_split", "must be '', train, dev or test")
        need(0 < config.mask_rate < 1, "mask_rate", "must be in (0, 1)")
        need(config.windows >= 0, "windows", "must be 0 (sentences) or the window length")
        need(max(config.seq_len, config.windows) <= model.block_size, "seq_len",
             f"seq_len / windows exceed config.model.block_size={model.block_size}")
        need(config.windows == 0 or config.objective == "causal", "windows", "article windows are for the causal LM")
    elif config.task == "mlm_head":
        need(model.kind == "bert_mlm", "model.kind", "the MLM head is trained on a bert_mlm model")
        need(not config.eval_file and not config.eval_split, "eval_split",
             "the MLM head is measured by validation on held-out text (eval_every_steps, eval_at_start)")
        need(0 < config.mask_rate < 1, "mask_rate", "must be in (0, 1)")
        need(isinstance(config.seq_length, int) and config.seq_length > 2, "seq_length", "must be above 2")
        need(config.eval_sequences > 0, "eval_sequences", "must be positive")
        need(config.head_learning_rate >= 0, "head_learning_rate", "must be 0 (as learning_rate) or positive")
    else:
        need(not config.eval_split, "eval_split", "the CS224n tasks score a file: use eval_file")
        need(config.decode_steps > 0, "decode_steps", "must be positive")


def _get(config, dotted: str):
    for part in dotted.split("."):
        config = config[part]
    return config
