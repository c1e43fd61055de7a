"""benchmarks/xla_flags.py: its reading of which library runs each dot of a compiled module."""

import jax
import jax.numpy as jnp

from benchmarks.xla_flags import library_fusions

HLO = """\
%fused_computation.1 (param_0: f32[4,8], param_1: f32[8,2]) -> f32[4,2] {
  ROOT %dot.1 = f32[4,2]{1,0} dot(%param_0, %param_1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

%fused_computation.2 (param_0: f32[4,2]) -> f32[4] {
  ROOT %reduce.2 = f32[4]{0} reduce(%param_0, %c), dimensions={1}, to_apply=%add
}

ENTRY %main (a: f32[4,8], b: f32[8,2]) -> f32[4] {
  %ynn_fusion = f32[4,2]{1,0} fusion(%a, %b), kind=kCustom, calls=%fused_computation.1, \
backend_config={"fusion_config":{"kind":"__ynn_fusion"}}
  %onednn_fusion = f32[4]{0} fusion(%ynn_fusion), kind=kCustom, calls=%fused_computation.2, \
backend_config={"fusion_config":{"kind":"__onednn_fusion"}}
  ROOT %dot.3 = f32[4,4]{1,0} dot(%a, %a), lhs_contracting_dims={1}, rhs_contracting_dims={1}
}
"""


def test_each_dot_is_credited_to_the_fusion_that_calls_it():
    counts = library_fusions(HLO)
    assert (counts["ynn_fusions"], counts["onednn_fusions"], counts["xnn_fusions"]) == (1, 1, 0)
    assert (counts["ynn_dots"], counts["onednn_dots"], counts["xla_dots"]) == (1, 0, 1)


def test_a_compiled_matmul_has_its_dot_counted_once():
    text = jax.jit(lambda a, b: a @ b).lower(jnp.ones((64, 32)), jnp.ones((32, 16))).compile().as_text()
    counts = library_fusions(text)
    assert sum(counts[k] for k in counts if k.endswith("_dots")) == 1

