"""Without the compiled extension, ops.* fall back to the reference with
exactly one RuntimeWarning (run in a subprocess where importing
sgpo_engine._C fails)."""
import os
import subprocess
import sys
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent("""
    import sys, warnings
    sys.modules["sgpo_engine._C"] = None  # makes `from . import _C` raise ImportError
    warnings.simplefilter("always")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import torch
        from sgpo_engine import ops, reference
        sys.path.insert(0, "tests")
        from op_checks import credit_settings
        assert not ops.HAS_EXTENSION
        assert not hasattr(torch.ops.sgpo, "sample"), "the extension's ops are registered after all"
        f64 = torch.float64
        g = torch.Generator().manual_seed(0)

        # group_advantages, twice
        r = torch.randn(12, generator=g, dtype=f64)
        c = torch.rand(12, generator=g) < 0.3
        s = torch.rand(12, generator=g, dtype=f64)
        for _ in range(2):
            out = ops.group_advantages(r, group_size=4, correct=c, rts=s, scale="batch")
            ref = reference.group_advantages(r, torch.arange(0, 13, 4), c, s, **credit_settings(scale="batch"))
            for a, b in zip(out, ref):
                assert torch.equal(a, b)
        out = ops.group_advantages(r, group_offsets=torch.tensor([0, 1, 5, 12]))
        ref = reference.group_advantages(r, torch.tensor([0, 1, 5, 12]), **credit_settings())
        assert all(torch.equal(a, b) for a, b in zip(out, ref))

        # fused_policy_loss with gradients
        B, T, H, V = 2, 5, 4, 11
        h = torch.randn(B, T, H, generator=g, dtype=f64, requires_grad=True)
        w = torch.randn(V, H, generator=g, dtype=f64, requires_grad=True)
        t = torch.randint(0, V, (B, T), generator=g)
        m = torch.ones(B, T, dtype=f64)
        adv = torch.randn(B, generator=g, dtype=f64)
        old = torch.randn(B, T, generator=g, dtype=f64) - 2.5
        for _ in range(2):
            loss, met = ops.fused_policy_loss(h, w, t, m, adv, old_logp=old, ref_logp=old, beta=0.1,
                                              loss_type="grpo", chunk_size=3)
            rloss, rmet = reference.fused_policy_loss(h, w, t, m, adv, old_logp=old, ref_logp=old, beta=0.1,
                                                      loss_type="grpo")
            assert torch.equal(loss, rloss) and met.keys() == rmet.keys()
            gh, gw = torch.autograd.grad(loss, [h, w])
            rgh, rgw = torch.autograd.grad(rloss, [h, w])
            assert torch.equal(gh, rgh) and torch.equal(gw, rgw)

        # fused_logprobs, [B, T, H] and [N, H]
        lp, ent = ops.fused_logprobs(h, w, t, temperature=0.7, return_entropy=True)
        rlp, rent = reference.fused_logprobs(h, w, t, None, 0.7, return_entropy=True)
        assert torch.equal(lp, rlp) and torch.equal(ent, rent)
        lp2 = ops.fused_logprobs(h.reshape(-1, H), w, t.reshape(-1))
        assert torch.equal(lp2, reference.fused_logprobs(h.reshape(-1, H), w, t.reshape(-1)))

        # sample: same generator, same uniforms as the reference
        logits = torch.randn(8, 30, generator=g, dtype=f64)
        tok, lpr = ops.sample(logits, temperature=0.9, top_k=5, top_p=0.9, min_p=0.01,
                              generator=torch.Generator().manual_seed(4))
        u = torch.rand(8, generator=torch.Generator().manual_seed(4), dtype=f64)
        full = lambda v, d=f64: torch.full((8,), v, dtype=d)
        rtok, rlpr = reference.sample(logits, full(0.9), full(5, torch.int64), full(0.9), full(0.01), u)
        assert torch.equal(tok, rtok) and torch.equal(lpr, rlpr)

        # argument checks still apply
        try:
            ops.sample(logits, top_p=0.0)
        except ValueError as e:
            assert "top_p" in str(e)
        else:
            raise AssertionError("no ValueError")

    runtime = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(runtime) == 1, [str(w.message) for w in runtime]
    assert "sgpo_engine._C" in str(runtime[0].message), runtime[0].message
    print("FALLBACK-OK")
""")


def test_reference_fallback_with_one_warning():
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and "FALLBACK-OK" in proc.stdout, proc.stdout + proc.stderr
