"""PyTorch reference implementations, used by tests and benchmarks.

The course's models written in PyTorch (same parameter names and layouts as the
course code), against which tests/ check our JAX modules weight for weight and
benchmarks/ time them. torch is a test/benchmark dependency only: nothing in
models/, train/ or data/ imports this package.

  gpt          TorchGPT (CS224n minGPT, model.py), TorchBlock, TorchCausalSelfAttention
  attention    TorchCourseAttention (IFT6135 A2 formula, optional SDPA), TorchAdditiveAttention
  transformer  TorchTransformer (IFT6135 A2, optional linear head), TorchBlock
  seq2seq      TorchClassifier, TorchEncoderDecoder, TorchEncoder, TorchDecoderAttn, TorchAttn
  gru          CourseGRU (the gate equations, one Python step per timestep)
"""
