"""analysis/bert_memory.py on a tiny random BERT: the compiled sizes follow the parameter counts."""
import pytest

from analysis import bert_memory
from tests.helpers import hf_bert, save_checkpoint

TINY = dict(vocab_size=1100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=37, max_position_embeddings=40, type_vocab_size=2)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    model = hf_bert(TINY, seed=0)
    return save_checkpoint(model, tmp_path_factory.mktemp("tiny_bert")), sum(p.numel() for p in model.parameters())


@pytest.mark.slow
def test_memory_follows_what_trains(checkpoint):
    ckpt, n_params = checkpoint
    rows = {m: bert_memory.measure_mode(m, 4, 16, str(ckpt)) for m in ("full", "head")}
    mib = 4 / bert_memory.MIB  # float32 bytes per parameter, in MiB
    head = 2 * TINY["hidden_size"] + 2
    full = rows["full"]
    assert full["trainable_parameters"] == n_params + head
    # AdamW keeps two moments per trained parameter (plus a step counter)
    assert full["optimizer_state_mib"] == pytest.approx(2 * (n_params + head) * mib, rel=1e-3)
    assert rows["head"]["optimizer_state_mib"] == pytest.approx(2 * head * mib, rel=0.05)
    # every mode's forward holds the weights (jit drops the unused pooler: mean pooling);
    # the full step also holds the optimizer state
    d = TINY["hidden_size"]
    for r in rows.values():
        assert r["forward"]["argument_mib"] >= (n_params - d * d - d) * mib
    assert full["train_step"]["argument_mib"] >= 3 * n_params * mib
    # backward through the encoder keeps activations: more temporaries than a frozen-encoder step
    assert full["train_step"]["temp_mib"] > rows["head"]["train_step"]["temp_mib"]
    text = bert_memory.markdown(list(rows.values()), "cpu")
    assert text.count("\n| ") == 1 + len(rows)
