"""sgpo_engine.options is the one list of every option set; the C++ parser
(csrc/options.h) must accept exactly those strings. Each list is read back
from the op's own error message and compared, and every value is run once,
so a value added on one side only fails here."""
import ast
import re

import pytest
import torch

from sgpo_engine import ops, options

F64 = torch.float64


def _group_advantages(**kw):
    args = dict(scope="all_negative", credit="sigmoid", scale="group")
    args.update(kw)
    r = torch.tensor([0.0, 1.0, 0.0, 0.0], dtype=F64)
    return torch.ops.sgpo.group_advantages(r, 2, None, r > 0, torch.full((4,), 0.5, dtype=F64), args["scope"],
                                           args["credit"], 5.0, 0.5, 0.5, args["scale"], 1e-4)


def _policy_loss(**kw):
    args = dict(loss_type="dapo", importance_sampling_level="token")
    args.update(kw)
    g = torch.Generator().manual_seed(0)
    B, T, H, V = 2, 3, 4, 5
    hidden, weight = torch.randn(B, T, H, generator=g, dtype=F64), torch.randn(V, H, generator=g, dtype=F64)
    targets = torch.randint(0, V, (B, T), generator=g)
    old = torch.full((B, T), -1.5, dtype=F64)
    return torch.ops.sgpo.fused_policy_loss(hidden, weight, None, targets, torch.ones(B, T, dtype=F64),
                                            torch.randn(B, generator=g, dtype=F64), old, None, 0.0, 0.2, 0.2, None, 1.0, 1.05, False,
                                            args["loss_type"], args["importance_sampling_level"], 1.0, None, None,
                                            None, False, False, False)


CASES = [("scope", options.SCOPES, _group_advantages), ("credit", options.CREDITS, _group_advantages),
         ("scale", options.SCALES, _group_advantages), ("loss_type", options.LOSS_TYPES, _policy_loss),
         ("importance_sampling_level", options.IS_LEVELS, _policy_loss)]


@pytest.mark.parametrize("name, values, call", CASES, ids=[c[0] for c in CASES])
def test_cpp_accepts_exactly_the_python_options(name, values, call):
    with pytest.raises(ValueError, match=f"^{name}: expected one of") as err:
        call(**{name: "not-an-option"})
    listed = ast.literal_eval(re.search(r"expected one of (\(.*\)), got", str(err.value)).group(1))
    assert tuple(listed) == tuple(values)
    for value in values:  # each one runs
        call(**{name: value})


@pytest.mark.parametrize("name, values, call", CASES, ids=[c[0] for c in CASES])
def test_python_wrapper_error_is_the_cpp_one(name, values, call):
    # The wrappers pass options straight through: one owner of the check.
    kw = {name: "not-an-option"}
    if call is _group_advantages:
        fn = lambda: ops.group_advantages(torch.zeros(4, dtype=F64), group_size=2, **kw)
    else:
        h = torch.zeros(1, 2, 3, dtype=F64)
        fn = lambda: ops.fused_policy_loss(h, torch.zeros(4, 3, dtype=F64), torch.zeros(1, 2, dtype=torch.int64),
                                           torch.ones(1, 2, dtype=F64), torch.zeros(1, dtype=F64), **kw)
    with pytest.raises(ValueError, match=re.escape(f"{name}: expected one of {tuple(values)}")):
        fn()
