"""The attention theory claims (issue 12 part 4, seeds 001 and 003), asserted with the functions
that build results/attention/theory (analysis/attention_theory.py), at smaller sample sizes."""
import jax.numpy as jnp
import numpy as np
import pytest

from analysis import attention_theory as th


def test_attend_is_softmax_of_scaled_scores():
    q = jnp.array([1.0, 2.0, 0.0, -1.0])
    keys = jnp.array([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 0, 1.0]])
    values = jnp.array([[1.0, 0], [0, 1.0], [1.0, 1.0]])
    scores = np.array([1.0, 2.0, -1.0]) / 2  # 1/sqrt(4)
    expected = np.exp(scores) / np.exp(scores).sum()
    w, out = th.attend(q, keys, values)
    np.testing.assert_allclose(w, expected, rtol=1e-6)
    np.testing.assert_allclose(out, expected @ np.asarray(values), rtol=1e-6)
    w1, _ = th.attend(q, keys, values, scale=1.0)
    np.testing.assert_allclose(w1, np.exp(2 * scores) / np.exp(2 * scores).sum(), rtol=1e-6)


def test_copying_one_hot_on_the_aligned_key_as_its_norm_grows():
    r = th.compute_copying((0.25, 1, 4, 8), samples=64, seed=1)
    weight = r["weight"].mean(1)
    assert np.all(np.diff(weight) > 0), weight          # fails if the key norm does not grow
    assert weight[0] < 0.5                               # a short aligned key is not copied
    assert r["weight"][-1].min() > 0.999                 # every draw: one-hot on k_j
    assert r["max_other"][-1].max() < 1e-3
    assert r["error"][-1].max() < 1e-4                   # output = v_j
    assert r["error"][0].mean() > 0.5


def test_averaging_two_equally_aligned_keys_gives_the_mean_value():
    r = th.compute_averaging((1, 8, 64), seed=2)
    for name in ("beta", "seed001"):
        res = r[name]
        np.testing.assert_allclose(res["w_a"], res["w_b"], atol=1e-5)   # equal weights at every scale
        assert np.all(np.diff(res["w_rest"]) < 0)
        assert res["error"][0] > 0.5 and res["error"][-1] < 1e-4        # c -> (v_a + v_b) / 2
    np.testing.assert_allclose(r["beta"]["w_a"][-1], 0.5, atol=1e-5)
    assert r["beta"]["extract_error"][-1] < 1e-4 and r["exact_extract_error"] < 1e-5   # M c = v_a


def test_scaling_variance_grows_as_h_and_unscaled_softmax_saturates():
    r = th.compute_scaling((4, 64, 512), samples=400, seed=3)
    np.testing.assert_allclose(r["var_dot"] / r["h"], 1, rtol=0.15)
    np.testing.assert_allclose(r["var_scaled"], 1, rtol=0.15)
    # With 1/sqrt(h): entropy, saturation and the gradient through the softmax do not depend on h.
    assert np.ptp(r["entropy_scaled"]) < 0.1 and r["entropy_scaled"].min() > 2.5   # log 32 = 3.47
    assert r["saturated_scaled"].max() < 0.01
    np.testing.assert_allclose(r["grad_s_median_scaled"], r["grad_s_median_scaled"][0], rtol=0.2)
    # Without: entropy and gradient collapse as h grows.
    assert np.all(np.diff(r["entropy_unscaled"]) < 0) and r["entropy_unscaled"][-1] < 0.4
    assert r["saturated_unscaled"][-1] > 0.3
    assert r["grad_s_median_unscaled"][-1] < 0.1 * r["grad_s_median_scaled"][-1]
    assert r["grad_q_median_unscaled"][-1] < 0.3 * r["grad_q_median_scaled"][-1]


def test_dot_product_moments_match_the_seed_formulas():
    m = th.dot_moments(32, 0.5, 0.7, samples=20000, seed=4)
    np.testing.assert_allclose(m["mean"], m["mean_formula"], atol=0.15)
    np.testing.assert_allclose(m["var"], m["var_formula"], rtol=0.05)
    assert m["var_formula"] == pytest.approx(32 * (0.7**4 + 2 * 0.25 * 0.49))


def test_single_head_jumps_under_norm_noise_two_heads_stay_at_the_mean():
    r = th.compute_multihead_noise(samples=400, seed=5)
    iso_one, iso_two = (th.spread(*r["isotropic"][k]) for k in ("single", "multi"))
    assert iso_one["std_lam"] < 0.05 and iso_two["std_lam"] < 0.01          # both fine under tiny noise
    one = th.spread(*r["norm"]["single"])
    assert one["std_lam"] > 0.4 and one["within_0.1"] < 0.05                 # bimodal: v_a or v_b
    lam, along = r["norm"]["single"][0], r["norm"]["ka_along_mu"]
    assert np.all(lam[along > 1.1] > 0.9) and np.all(lam[along < 0.9] < 0.1)  # follows the longer key
    positive = along > 0
    two = th.spread(*(x[positive] for x in r["norm"]["multi"]))
    assert two["std_lam"] < 0.05 and two["within_0.1"] > 0.9
    assert abs(two["mean_lam"] - 0.5) < 0.02
    # The covariance alpha I + mu_a mu_a^T / 2: mu_a . k_a ~ N(1, 1/2).
    assert abs(along.mean() - 1) < 0.1 and abs(along.var() - 0.5) < 0.1


@pytest.fixture(scope="module")
def argmax_result():
    return th.compute_argmax(steps=41)


def test_argmax_attention_gradients_are_zero_for_queries_and_keys(argmax_result):
    r = argmax_result
    np.testing.assert_array_equal(r["example"]["argmax"], [3, 2, -4])     # the seed's answer
    gq, gk, gv = r["norms"]["argmax"]
    assert gq == 0 and gk == 0 and gv > 0
    assert min(r["norms"]["softmax"]) > 0
    value, grad = r["path"]["argmax"]
    assert len(set(value.tolist())) > 1 and np.all(grad == 0)             # jumps, zero derivative
    assert np.abs(r["path"]["softmax"][1]).max() > 0.1


def test_run_claim_writes_table_figure_and_section_links(tmp_path, argmax_result):
    out = tmp_path / "theory"
    out.mkdir()
    text = th.run_claim("argmax", out, argmax_result)
    assert (out / "argmax.png").stat().st_size > 0
    assert "| argmax |" in (out / "argmax.md").read_text()
    assert "](theory/argmax.png)" in text and text.startswith("### ")
    with pytest.raises(ValueError, match="no_such_claim"):
        th.build(out, ["copying", "no_such_claim"])
