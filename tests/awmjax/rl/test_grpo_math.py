"""Advantages, rewards and the policy loss against hand-computed cases."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from awmjax.rl.advantages import advantages, zero_variance_groups
from awmjax.rl.config import GRPOConfig, RewardConfig
from awmjax.rl.loss import k3_kl, policy_loss


def test_rewards_follow_awm_by_default_and_reject_unknown_outcomes():
    r = RewardConfig()
    assert [r.reward(o) for o in ("complete", "partial", "incomplete", "format_error", "env_error")] == [1.0, 0.1, 0.0, -1.0, 0.0]
    with pytest.raises(ValueError, match="unknown episode outcome 'crashed'"):
        r.reward("crashed")
    with pytest.raises(ValueError, match="complete > partial"):
        RewardConfig(partial=2.0)


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match=r"GRPOConfig.advantage='ppo'; allowed: dr_grpo, grpo, rloo"):
        GRPOConfig(advantage="ppo")
    with pytest.raises(ValueError, match="GRPOConfig.importance"):
        GRPOConfig(importance="batch")


def test_advantages_by_hand():
    rewards = jnp.array([[1.0, 0.0, 0.0, 0.0], [0.1, 0.1, 0.1, 0.1], [1.0, -1.0, 1.0, -1.0]])
    assert zero_variance_groups(rewards).tolist() == [False, True, False]
    # group 0: mean 0.25, std sqrt(3)/4
    std0 = math.sqrt(3) / 4
    np.testing.assert_allclose(advantages("grpo", rewards)[0], [0.75 / std0, -0.25 / std0, -0.25 / std0, -0.25 / std0], rtol=1e-5)
    np.testing.assert_allclose(advantages("dr_grpo", rewards)[0], [0.75, -0.25, -0.25, -0.25], rtol=1e-6)
    np.testing.assert_allclose(advantages("rloo", rewards)[0], [1.0, -1 / 3, -1 / 3, -1 / 3], rtol=1e-6)
    np.testing.assert_allclose(advantages("rloo", rewards)[2], [4 / 3, -4 / 3, 4 / 3, -4 / 3], rtol=1e-6)
    for name in ("grpo", "dr_grpo", "rloo"):
        assert advantages(name, rewards)[1].tolist() == [0.0] * 4  # zero-variance group: no gradient


def _loss(logp, old, adv, mask, **cfg):
    return policy_loss(jnp.array(logp), jnp.array(old), jnp.array(adv), jnp.array(mask), GRPOConfig(**cfg))


def test_unclipped_loss_is_minus_ratio_times_advantage_token_mean():
    logp = [[math.log(0.5), math.log(0.5), 0.0]]
    old = [[math.log(0.5), math.log(0.5), 0.0]]
    loss, m = _loss(logp, old, [2.0], [[1, 1, 0]], importance="token", kl_coef=0.0)
    assert float(loss) == pytest.approx(-2.0)  # ratio 1 on both masked tokens
    assert float(m["tokens"]) == 2 and float(m["clip_frac_high"]) == 0


def test_clipping_on_both_sides_with_separate_bounds():
    # ratio 2 on a positive advantage is clipped at 1 + 0.28; ratio 0.5 on a negative one at 1 - 0.2
    hi, m_hi = _loss([[math.log(2.0)]], [[0.0]], [1.0], [[1]], importance="token", kl_coef=0.0)
    assert float(hi) == pytest.approx(-1.28) and float(m_hi["clip_frac_high"]) == 1
    lo, m_lo = _loss([[math.log(0.5)]], [[0.0]], [-1.0], [[1]], importance="token", kl_coef=0.0)
    assert float(lo) == pytest.approx(0.8) and float(m_lo["clip_frac_low"]) == 1
    # the pessimistic side is not clipped: ratio 0.5 with a positive advantage keeps 0.5
    keep, _ = _loss([[math.log(0.5)]], [[0.0]], [1.0], [[1]], importance="token", kl_coef=0.0)
    assert float(keep) == pytest.approx(-0.5)


def test_sequence_level_ratio_is_the_geometric_mean_of_token_ratios():
    logp = [[math.log(2.0), math.log(0.5), math.log(4.0)]]
    old = [[0.0, 0.0, 0.0]]
    seq, m = _loss(logp, old, [1.0], [[1, 1, 0]], importance="sequence", kl_coef=0.0, clip_high=10.0)
    assert float(m["ratio_mean"]) == pytest.approx(1.0)  # sqrt(2 * 0.5)
    assert float(seq) == pytest.approx(-1.0)


def test_kl_is_zero_when_policy_equals_reference_and_positive_otherwise():
    logp = jnp.log(jnp.array([[0.3, 0.6]]))
    assert float(jnp.abs(k3_kl(logp, logp)).max()) == 0.0
    assert float(k3_kl(logp, jnp.log(jnp.array([[0.6, 0.3]]))).min()) > 0
    loss_same, m = policy_loss(logp, logp, jnp.array([0.0]), jnp.ones((1, 2)), GRPOConfig(), ref_logp_BT=logp)
    assert float(m["kl"]) == 0.0 and float(loss_same) == 0.0


def test_gradient_flows_only_through_masked_tokens():
    old = jnp.zeros((1, 3))

    def f(logp):
        return policy_loss(logp, old, jnp.array([1.0]), jnp.array([[1.0, 0.0, 1.0]]), GRPOConfig(importance="token", kl_coef=0.0))[0]

    g = jax.grad(f)(jnp.zeros((1, 3)))
    assert float(g[0, 1]) == 0.0 and float(g[0, 0]) == pytest.approx(-0.5) and float(g[0, 2]) == pytest.approx(-0.5)
