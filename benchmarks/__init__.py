"""Benchmarks: our JAX models (built from configs by models.build) against the PyTorch references.

  python -m benchmarks.gpt           minGPT training step vs the course's PyTorch minGPT
  python -m benchmarks.gru           GRU layer and GRU classifiers, forward + backward
  python -m benchmarks.transformer   Transformer classifier step; attention time and memory
  python -m benchmarks.bert          BERT full fine-tuning step vs transformers

All time through benchmarks/timing.py and print its header (versions, threads, load
average) with their tables. torch (and transformers for bert) are benchmark dependencies.
"""
