"""Benchmarks: our JAX models (built from configs by models.build) against the PyTorch references.

  python -m benchmarks.gpt           minGPT training step vs the course's PyTorch minGPT
  python -m benchmarks.gru           GRU layer and GRU classifiers, forward + backward
  python -m benchmarks.transformer   Transformer classifier step; attention time and memory
  python -m benchmarks.bert          BERT full fine-tuning step vs transformers
  python -m benchmarks.decode        birth-place greedy decoding: key/value cache vs recomputation
  python -m benchmarks.run_all       all of the above, one table (table.md, table.json, logs/)
  python -m benchmarks.profile_step  the minGPT step's time by part, from an XLA profile

All time through benchmarks/timing.py and print its header (versions, threads, load
average) with their tables. torch (and transformers for bert) are benchmark dependencies.
"""
