"""sgpo-engine: fused kernels and a minimal engine for SGPO / GRPO training.

The names below load on first use (PEP 562), so `import sgpo_engine.cli` does
not import torch: the `sgpo` command sets the OpenMP wait policy first
(docs/design.md section 6.7).
"""
import importlib

__version__ = "0.1.0"
_WHERE = {"ops": None, "reference": None, "Completion": "generation", "generate": "generation",
          "Policy": "model", "load": "model", "decode_attention": "ops", "fused_logprobs": "ops",
          "fused_policy_loss": "ops", "group_advantages": "ops", "sample": "ops"}
__all__ = list(_WHERE)


def __getattr__(name):
    if name not in _WHERE:
        raise AttributeError(f"module 'sgpo_engine' has no attribute {name!r}")
    module = importlib.import_module(f".{_WHERE[name] or name}", __name__)
    value = module if _WHERE[name] is None else getattr(module, name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_WHERE))
