"""The built-in synthetic task (the engine's embedded default): left-to-right
`+`/`-` chains with worked solutions, an exact step judge, an exact answer
verifier, a character-level tokenizer, and a warm-started tiny Llama model.

    from sgpo_engine.tasks import ArithTask, eval_set, step_judge, verify, load_warm_start
    task = ArithTask(min_ops=5, max_ops=8, seed=0)
    problems = task.batch(16)                 # Problem(prompt, answer, reference, k, ...)
    policy = load_warm_start()

See arith.py for the problem format and what the judge counts as an error.

The trainer sees its task only through the `Task` interface (base.py):
`make_task(cfg)` picks a TrainConfig's task, `BuiltinTask` (this one) or
`DatasetTask` (a dataset file's prompts); `load_policy(cfg.model)` loads its policy.
"""
from .arith import (ANSWER_PREFIX, ArithTask, Problem, correct_prefix, eval_set, extract_answer, first_error,
                    first_error_of_steps, is_heldout, exact_judge, make_problem, parse_prompt, premature_answer,
                    response_lines, step_judge, verify)
from .base import Example, Task
from .builtin import BUILTIN, ArithSource, BuiltinTask
from .dataset import DatasetTask, JsonlSource
from .factory import load_policy, make_task
from .tokenizer import VOCAB, build_tokenizer, save_tokenizer
from .warmup import (WARM_START_DIR, cache_dir, evaluate, load_warm_start, model_config, new_policy,
                     num_parameters, sft_batch, sft_loss, warm_start, warm_start_path)

__all__ = ["ANSWER_PREFIX", "ArithTask", "Problem", "correct_prefix", "eval_set", "extract_answer", "first_error",
           "first_error_of_steps", "is_heldout", "exact_judge", "make_problem", "parse_prompt",
           "premature_answer", "response_lines", "step_judge", "verify", "VOCAB", "build_tokenizer",
           "save_tokenizer", "WARM_START_DIR", "cache_dir", "evaluate", "load_warm_start", "model_config",
           "new_policy", "num_parameters", "sft_batch", "sft_loss", "warm_start", "warm_start_path",
           "Example", "Task", "BUILTIN", "ArithSource", "BuiltinTask", "DatasetTask", "JsonlSource", "load_policy",
           "make_task"]
