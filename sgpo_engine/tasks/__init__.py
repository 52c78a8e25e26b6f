"""The built-in synthetic task (the engine's embedded default): left-to-right
`+`/`-` chains with worked solutions, an exact step judge, an exact answer
verifier, a character-level tokenizer, and a warm-started tiny Llama model.

    from sgpo_engine.tasks import ArithTask, eval_set, step_judge, verify, load_warm_start
    task = ArithTask(min_ops=5, max_ops=8, seed=0)
    problems = task.batch(16)                 # Problem(prompt, answer, reference, k, ...)
    policy = load_warm_start()

See arith.py for the problem format and what the judge counts as an error.
"""
from .arith import (ANSWER_PREFIX, ArithTask, Problem, correct_prefix, eval_set, extract_answer, first_error,
                    first_error_of_steps, is_heldout, make_judge, make_problem, parse_prompt, premature_answer,
                    response_lines, step_judge, verify)
from .tokenizer import VOCAB, build_tokenizer, save_tokenizer
from .warmup import (WARM_START_DIR, cache_dir, evaluate, load_warm_start, model_config, new_policy,
                     num_parameters, sft_batch, sft_loss, warm_start, warm_start_path)

__all__ = ["ANSWER_PREFIX", "ArithTask", "Problem", "correct_prefix", "eval_set", "extract_answer", "first_error",
           "first_error_of_steps", "is_heldout", "make_judge", "make_problem", "parse_prompt",
           "premature_answer", "response_lines", "step_judge", "verify", "VOCAB", "build_tokenizer",
           "save_tokenizer", "WARM_START_DIR", "cache_dir", "evaluate", "load_warm_start", "model_config",
           "new_policy", "num_parameters", "sft_batch", "sft_loss", "warm_start", "warm_start_path"]
