"""The `sgpo serve` command: its arguments, and a server run until Ctrl-C.
add_parser gives the `sgpo` command its subcommand, main is `python -m
sgpo_engine.serve`; both show the package's docstring as their help.

Not here: the server itself (http.py, and the modules it builds on).
"""
from __future__ import annotations

import argparse
import logging
import os
from typing import Optional, Sequence

from . import __doc__ as _HELP  # the package's docstring: the server as its user sees it
from .http import Server


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="Hugging Face-format model folder, or builtin:arith")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (0: any free port)")
    p.add_argument("--served-model-name", default=None, help="the model id clients send (default: folder name)")
    p.add_argument("--dtype", default=None, help="fp32, bf16 or fp16 (default: the checkpoint's)")
    p.add_argument("--device", default=None, help="cpu (default) or cuda")
    p.add_argument("--max-batch", type=int, default=64, help="most completions per generate call")
    p.add_argument("--max-body-bytes", type=int, default=4 << 20, help="largest request body accepted")
    p.add_argument("--default-max-tokens", type=int, default=256, help="max_tokens when a request gives none")
    p.add_argument("--max-n", type=int, default=64, help="largest n accepted")
    p.add_argument("--max-completions", type=int, default=256, help="most completions (prompts x n) per request")
    p.add_argument("--weight-version", default="0", help="the weight_version reported until an update")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: OMP_NUM_THREADS, else all CPUs)")
    p.add_argument("--log-level", default="INFO")


def _run(args: argparse.Namespace, overrides: Sequence[str]) -> int:
    """Loads the model and serves it until Ctrl-C. Takes (args, overrides) as every `sgpo`
    command does; serve has no config fields, so an override is an unknown argument (`sgpo`
    refuses it before this, overrides_ok=False; this is for other callers)."""
    if overrides:
        raise ValueError(f"unrecognized arguments: {' '.join(overrides)}")
    import torch

    from ..tasks.factory import load_policy
    from ..threads import cpu_threads

    torch.set_num_threads(cpu_threads(args.threads, 1))
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    policy = load_policy(args.model, dtype=args.dtype, device=args.device)
    name = args.served_model_name or os.path.basename(os.path.normpath(args.model))
    server = Server(policy, args.host, args.port, model_name=name, max_batch=args.max_batch,
                    max_body_bytes=args.max_body_bytes, default_max_tokens=args.default_max_tokens, max_n=args.max_n,
                    max_completions=args.max_completions, weight_version=args.weight_version)
    print(f"sgpo serve: {name} at {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Adds the `serve` command to an argparse subparsers object; args.func(args, overrides) runs it."""
    p = subparsers.add_parser("serve", help="OpenAI-compatible server over a model",
                              description=_HELP.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(p)
    p.set_defaults(func=_run, overrides_ok=False)
    return p


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="sgpo serve", description=_HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(p)
    return _run(p.parse_args(argv), [])
