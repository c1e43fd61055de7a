"""The GGUF reader's dequantisation of every type in SUPPORTED_QUANTS, against GGML's block formulas.

Each block is built here from its logical fields (scales, minima, quantised values), packed into
bytes in the layout of ggml-common.h's block structs, written into a GGUF file and read back
through models.causal_lm.read_gguf. The expected weights are the formula of
ggml-quants.c's dequantize_row_* evaluated on the logical fields (float64), never on the bytes,
so a wrong bit position, field order, offset or scale in the reader's path shows up.
"""
import numpy as np
import pytest

from models import causal_lm
from models.hf_checkpoint import CheckpointError

gguf = pytest.importorskip("gguf")

QK = 32     # block size of the Q4_0 .. Q8_0 types
QK_K = 256  # super-block size of the K types


def half(values) -> np.ndarray:
    """float16 scales (as a 1-D array), finite and of both signs."""
    return np.asarray(values, np.float16).reshape(-1)


def random_scale(rng, low=0.01, high=2.0) -> np.ndarray:
    return half(rng.uniform(low, high) * rng.choice([-1, 1]))


def pack_nibbles(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Bytes whose low 4 bits are `low` and high 4 bits `high`."""
    return ((low & 0x0F) | ((high & 0x0F) << 4)).astype(np.uint8)


def bits_to_bytes(bits: np.ndarray) -> np.ndarray:
    """A little-endian bit field (bit i of the field is bits[i]) as bytes."""
    value = sum(int(b) << i for i, b in enumerate(bits))
    return np.frombuffer(value.to_bytes(len(bits) // 8, "little"), np.uint8)


def join(*fields) -> np.ndarray:
    return np.concatenate([np.asarray(f).reshape(-1).view(np.uint8) for f in fields])


# ------------------------------------------------------------------ one block of each type
# Each returns (the block's bytes, its values by GGML's dequantisation formula in float64).

def block_f32(rng):
    values = rng.normal(size=1).astype(np.float32)
    return values.view(np.uint8), values.astype(np.float64)


def block_f16(rng):
    values = half(rng.normal(size=1) * 3)
    return values.view(np.uint8), values.astype(np.float64)


def block_bf16(rng):
    # bfloat16 is the top half of a float32: y = float32(bits << 16)
    top = (rng.normal(size=1).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
    values = (top.astype(np.uint32) << 16).view(np.float32)
    return top.view(np.uint8), values.astype(np.float64)


def block_q4_0(rng):
    # struct { half d; uint8 qs[16]; }: element j in the low nibble of qs[j], element j + 16 in the high
    d, q = random_scale(rng), rng.integers(0, 16, QK)
    return join(d, pack_nibbles(q[:16], q[16:])), float(d[0]) * (q - 8.0)


def block_q4_1(rng):
    # struct { half d; half m; uint8 qs[16]; }: y = d q + m
    d, m, q = random_scale(rng), random_scale(rng), rng.integers(0, 16, QK)
    return join(d, m, pack_nibbles(q[:16], q[16:])), float(d[0]) * q + float(m[0])


def block_q5_0(rng):
    # struct { half d; uint8 qh[4]; uint8 qs[16]; }: bit j of qh (little-endian uint32) is element j's 5th bit
    d, q = random_scale(rng), rng.integers(0, 32, QK)
    return join(d, bits_to_bytes(q >> 4), pack_nibbles(q[:16], q[16:])), float(d[0]) * (q - 16.0)


def block_q5_1(rng):
    # struct { half d; half m; uint8 qh[4]; uint8 qs[16]; }: y = d q + m
    d, m, q = random_scale(rng), random_scale(rng), rng.integers(0, 32, QK)
    return join(d, m, bits_to_bytes(q >> 4), pack_nibbles(q[:16], q[16:])), float(d[0]) * q + float(m[0])


def block_q8_0(rng):
    # struct { half d; int8 qs[32]; }
    d, q = random_scale(rng), rng.integers(-128, 128, QK).astype(np.int8)
    return join(d, q), float(d[0]) * q.astype(np.float64)


def block_q2_k(rng):
    # struct { uint8 scales[16]; uint8 qs[64]; half d; half dmin; }: 16 sub-blocks of 16, each with a
    # 4-bit scale (low nibble) and 4-bit minimum (high nibble); y = d scale q - dmin min, q in 0..3.
    # Element e = 128 n + 32 j + i (n < 2, j < 4, i < 32) is bits 2j..2j+1 of qs[32 n + i].
    d, dmin = random_scale(rng), random_scale(rng)
    scale, minimum, q = rng.integers(0, 16, 16), rng.integers(0, 16, 16), rng.integers(0, 4, QK_K)
    qs = np.zeros(64, np.uint8)
    for e in range(QK_K):
        n, j, i = e // 128, (e % 128) // 32, e % 32
        qs[32 * n + i] |= q[e] << (2 * j)
    sub = np.arange(QK_K) // 16
    values = float(d[0]) * scale[sub] * q - float(dmin[0]) * minimum[sub]
    return join(pack_nibbles(scale, minimum), qs, d, dmin), values


def block_q3_k(rng):
    # struct { uint8 hmask[32]; uint8 qs[64]; uint8 scales[12]; half d; }: q in -4..3 is its low 2 bits
    # (as in Q2_K) minus 4 when its hmask bit is clear; element e = 128 n + 32 j + i has its hmask bit
    # at bit 4 n + j of hmask[i]. 16 signed 6-bit scales s (stored s + 32): the low 4 bits of scale i
    # in scales[i % 8] (low nibble for i < 8, high nibble after), its high 2 bits at bits 2 (i // 4)
    # of scales[8 + i % 4]. y = d s q.
    d = random_scale(rng)
    scale, q = rng.integers(-32, 32, 16), rng.integers(-4, 4, QK_K)
    stored = scale + 32
    qs, hmask, packed = np.zeros(64, np.uint8), np.zeros(32, np.uint8), np.zeros(12, np.uint8)
    for e in range(QK_K):
        n, j, i = e // 128, (e % 128) // 32, e % 32
        qs[32 * n + i] |= (q[e] & 3) << (2 * j)
        hmask[i] |= (q[e] >= 0) << (4 * n + j)
    for i in range(16):
        packed[i % 8] |= (stored[i] & 0x0F) << (0 if i < 8 else 4)
        packed[8 + i % 4] |= (stored[i] >> 4) << (2 * (i // 4))
    values = float(d[0]) * scale[np.arange(QK_K) // 16] * q
    return join(hmask, qs, packed, d), values


def pack_k_scales(scale: np.ndarray, minimum: np.ndarray) -> np.ndarray:
    """Q4_K/Q5_K's 12 bytes holding 8 6-bit scales and 8 6-bit minima (get_scale_min_k4's inverse).

    j < 4: scales[j] and minima[j] in the low 6 bits of bytes j and j + 4; j >= 4: their low 4 bits
    in byte j + 4 (scale low nibble, minimum high), their top 2 bits in the top bits of bytes j - 4
    (scale) and j (minimum).
    """
    packed = np.zeros(12, np.uint8)
    for j in range(8):
        if j < 4:
            packed[j] |= scale[j]
            packed[j + 4] |= minimum[j]
        else:
            packed[j + 4] |= (scale[j] & 0x0F) | ((minimum[j] & 0x0F) << 4)
            packed[j - 4] |= (scale[j] >> 4) << 6
            packed[j] |= (minimum[j] >> 4) << 6
    return packed


def block_q4_k(rng):
    # struct { half d; half dmin; uint8 scales[12]; uint8 qs[128]; }: 8 sub-blocks of 32;
    # element e = 64 c + 32 h + i is nibble h of qs[32 c + i]; y = d scale q - dmin min.
    d, dmin = random_scale(rng), random_scale(rng)
    scale, minimum, q = rng.integers(0, 64, 8), rng.integers(0, 64, 8), rng.integers(0, 16, QK_K)
    qs = np.zeros(128, np.uint8)
    for e in range(QK_K):
        c, h, i = e // 64, (e % 64) // 32, e % 32
        qs[32 * c + i] |= q[e] << (4 * h)
    sub = np.arange(QK_K) // 32
    values = float(d[0]) * scale[sub] * q - float(dmin[0]) * minimum[sub]
    return join(d, dmin, pack_k_scales(scale, minimum), qs), values


def block_q5_k(rng):
    # struct { half d; half dmin; uint8 scales[12]; uint8 qh[32]; uint8 qs[128]; }: as Q4_K with a 5th
    # bit: element e = 64 c + 32 h + i has it at bit 2 c + h of qh[i].
    d, dmin = random_scale(rng), random_scale(rng)
    scale, minimum, q = rng.integers(0, 64, 8), rng.integers(0, 64, 8), rng.integers(0, 32, QK_K)
    qs, qh = np.zeros(128, np.uint8), np.zeros(32, np.uint8)
    for e in range(QK_K):
        c, h, i = e // 64, (e % 64) // 32, e % 32
        qs[32 * c + i] |= (q[e] & 0x0F) << (4 * h)
        qh[i] |= (q[e] >> 4) << (2 * c + h)
    sub = np.arange(QK_K) // 32
    values = float(d[0]) * scale[sub] * q - float(dmin[0]) * minimum[sub]
    return join(d, dmin, pack_k_scales(scale, minimum), qh, qs), values


def block_q6_k(rng):
    # struct { uint8 ql[128]; uint8 qh[64]; int8 scales[16]; half d; }: q in -32..31 stored as q + 32;
    # element e = 128 n + 32 k + i (k < 4): low 4 bits in ql[64 n + i + 32 (k % 2)] (low nibble for
    # k < 2, high after), high 2 bits at bits 2k of qh[32 n + i]; y = d scales[e // 16] q.
    d = random_scale(rng, 0.001, 0.1)
    scale, q = rng.integers(-128, 128, 16).astype(np.int8), rng.integers(-32, 32, QK_K)
    stored = q + 32
    ql, qh = np.zeros(128, np.uint8), np.zeros(64, np.uint8)
    for e in range(QK_K):
        n, k, i = e // 128, (e % 128) // 32, e % 32
        ql[64 * n + i + 32 * (k % 2)] |= (stored[e] & 0x0F) << (4 * (k // 2))
        qh[32 * n + i] |= (stored[e] >> 4) << (2 * k)
    values = float(d[0]) * scale[np.arange(QK_K) // 16].astype(np.float64) * q
    return join(ql, qh, scale, d), values


BLOCKS = {"F32": block_f32, "F16": block_f16, "BF16": block_bf16, "Q4_0": block_q4_0, "Q4_1": block_q4_1,
          "Q5_0": block_q5_0, "Q5_1": block_q5_1, "Q8_0": block_q8_0, "Q2_K": block_q2_k, "Q3_K": block_q3_k,
          "Q4_K": block_q4_k, "Q5_K": block_q5_k, "Q6_K": block_q6_k}
ROWS, BLOCKS_PER_ROW = 3, 2


def test_every_supported_type_has_a_hand_written_block():
    assert set(BLOCKS) == set(causal_lm.SUPPORTED_QUANTS)


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_block_sizes_match_ggml(name):
    """Each hand-written block has GGML's (elements, bytes) for its type: the structs above are complete."""
    block_bytes, values = BLOCKS[name](np.random.default_rng(0))
    qtype = gguf.GGMLQuantizationType[name]
    elements = {"F32": 1, "F16": 1, "BF16": 1}.get(name, QK_K if name.endswith("_K") else QK)
    assert (len(values), len(block_bytes)) == (elements, gguf.GGML_QUANT_SIZES[qtype][1])
    assert gguf.GGML_QUANT_SIZES[qtype][0] == elements


def write_quantised_gguf(path, tensors: dict[str, tuple[str, np.ndarray]]):
    """A llama GGUF file holding raw tensors {gguf name: (type name, bytes (rows, bytes per row))}."""
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(len(tensors))
    writer.add_context_length(16)
    writer.add_embedding_length(8)
    writer.add_feed_forward_length(8)
    writer.add_head_count(2)
    writer.add_head_count_kv(2)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(8)
    writer.add_rope_freq_base(10000.0)
    writer.add_rope_dimension_count(4)
    for name, (qtype, data) in tensors.items():
        writer.add_tensor(name, data, raw_dtype=gguf.GGMLQuantizationType[qtype])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def read_back(tmp_path_factory):
    """{type name: (weight read by read_gguf, expected (rows, columns) float64)} for every supported type."""
    rng = np.random.default_rng(0)
    tensors, expected = {}, {}
    for layer, name in enumerate(sorted(BLOCKS)):
        blocks = [[BLOCKS[name](rng) for _ in range(BLOCKS_PER_ROW)] for _ in range(ROWS)]
        data = np.stack([np.concatenate([b for b, _ in row]) for row in blocks])
        expected[name] = np.stack([np.concatenate([v for _, v in row]) for row in blocks])
        tensors[f"blk.{layer}.ffn_up.weight"] = (name, data)
    path = write_quantised_gguf(tmp_path_factory.mktemp("quants") / "quants.gguf", tensors)
    _, state = causal_lm.read_gguf(path)
    return {name: (state[f"model.layers.{layer}.mlp.up_proj.weight"], expected[name])
            for layer, name in enumerate(sorted(BLOCKS))}


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_reader_dequantises_by_the_ggml_formula(read_back, name):
    weight, expected = read_back[name]
    assert weight.dtype == np.float32 and weight.shape == expected.shape
    # float32 arithmetic on exact float16 / integer fields: a few roundings of the largest magnitude
    np.testing.assert_allclose(weight, expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())


def test_an_unsupported_type_is_refused_by_name(tmp_path):
    data = np.zeros((1, gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.IQ4_NL][1]), np.uint8)
    path = write_quantised_gguf(tmp_path / "iq4.gguf", {"blk.0.ffn_up.weight": ("IQ4_NL", data)})
    with pytest.raises(CheckpointError, match="uses quantisation IQ4_NL, which is not supported"):
        causal_lm.read_gguf(path)
