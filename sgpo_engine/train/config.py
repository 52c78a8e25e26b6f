"""The training config: one flat dataclass, read from TOML, overridable from
the command line (`--lr 1e-6`, `--max-steps 3`), saved with the run.

TOML tables are only for reading comfort: `[rollout] temperature = 1.0` and a
top-level `temperature = 1.0` mean the same field. Unknown fields and values
of the wrong type are errors that name the field.
"""
from __future__ import annotations

import dataclasses
import difflib
import inspect
import json
import math
import os
import tomllib
import typing
from dataclasses import dataclass, field
from typing import Any, Optional

from .. import options
from ..judge.registry import check_judge, judge_names
from ..model.lora import ALL_LINEARS, LoRAConfig
from ..options import CREDIT, CreditConfig
from ..tasks.builtin import BUILTIN  # the built-in task's (and its model's) name

# The judge options a config carries, as fields: "url" is judge_url, ...
JUDGE_OPTION_FIELDS = {"url": "judge_url", "model": "judge_model", "api_key_env": "judge_api_key_env",
                       "concurrency": "judge_concurrency", "timeout": "judge_timeout",
                       "max_tokens": "judge_max_tokens", "step_mode": "step_mode", "threshold": "prm_threshold",
                       "step_separator": "prm_step_separator"}


@dataclass
class TrainConfig:
    # ---- [model]
    model: str = BUILTIN                 # HF-layout folder, or builtin:arith (the shipped warm start)
    dtype: str = "float32"               # float32 | bfloat16 | float16
    device: str = "cpu"                  # cpu | cuda

    # ---- [data]
    dataset: str = BUILTIN               # .jsonl / .parquet file, or builtin:arith
    prompt_field: str = "prompt"         # a string, or chat messages [{"role", "content"}]
    answer_field: str = "answer"         # what the verifier checks a response against
    reference_field: str = "reference"   # optional worked solution shown to the judge
    chat_template: bool = False          # apply the tokenizer's chat template to string prompts
    task_min_ops: int = 10               # builtin:arith difficulty (operations per problem)
    task_max_ops: int = 12

    # ---- [rollout]
    rollout: str = "local"               # local (the engine's generate) | openai (an external server)
    rollout_url: str = ""                # with rollout = openai: its API root (.../v1) or the server root
    rollout_model: str = ""              # with rollout = openai: the model id it serves
    rollout_sync: str = "disk"           # openai: after each step load the new weights (SGLang's
                                         # /update_weights_from_disk) | none (the server stays off-policy)
    max_staleness: int = 0               # refuse rollouts whose weight_version lags more steps than this
    rollout_is: str = "token_truncate"   # correction of server vs trainer log-probs (TRL's modes) | none
    rollout_is_cap: float = 2.0          # truncate the importance weight at, or mask above, this
    prompts_per_step: int = 16
    num_samples: int = 8                 # G, responses per prompt
    max_new_tokens: int = 112
    temperature: float = 1.0
    top_k: int = 0                       # 0: off
    top_p: float = 1.0
    min_p: float = 0.0
    stop: list = field(default_factory=list)  # stop strings (comma-separated on the command line)

    # ---- [judge]
    judge: str = "builtin"               # a judge of judge/registry.py: builtin (the task's exact checker) | http |
                                         # local | prm | calc | calc+http | calc+local | calc+prm | none (--help lists them)
    judge_url: str = ""                  # with judge = http: an OpenAI-compatible API root (.../v1)
    judge_model: str = ""                # with judge = http: the model id it serves
    judge_api_key_env: str = "OPENAI_API_KEY"  # environment variable holding the judge's API key
    judge_concurrency: int = 8           # requests in flight
    judge_timeout: float = 60.0          # seconds for one attempt
    judge_max_tokens: int = 1024         # the judge's reply budget (its verdict is the last line)
    step_mode: str = "line"              # how responses split into steps: line | paragraph | marker
    prm_threshold: float = 0.5           # with judge = prm: the first step the PRM scores below this is wrong
    prm_step_separator: str = "<extra_0>"  # with judge = prm: what follows each step (Qwen2.5-Math-PRM's)
    correct_reward: float = CREDIT.correct_reward
    incorrect_reward: float = CREDIT.incorrect_reward

    # ---- [sgpo]
    scope: str = CREDIT.scope            # all_negative | all_incorrect | off (plain GRPO)
    credit: str = CREDIT.credit          # sigmoid | linear: judged prefix fraction -> partial credit
    credit_beta: float = CREDIT.credit_beta    # sigmoid(credit_beta * (rts - credit_gamma))
    credit_gamma: float = CREDIT.credit_gamma
    credit_scale: float = CREDIT.credit_scale  # linear: the most partial credit, as a fraction of correct_reward
    adv_scale: str = CREDIT.scale        # group | batch | none: what the advantages are divided by
    adv_eps: float = CREDIT.eps
    credited_std_floor: float = CREDIT.credited_std_floor  # adv_scale group: a credited group divides by at
                                         # least this std (0: off)
    filter_zero_std_groups: bool = False  # drop groups whose rewards are all equal
    dynamic_sampling: str = "off"        # filter: DAPO's dynamic sampling, draw prompt batches until
                                         # prompts_per_step informative groups (train/sampling.py)
    max_sample_batches: int = 4          # dynamic_sampling: at most this many batches a step
    credit_assignment: str = CREDIT.credit_assignment  # sequence (published SGPO) | prefix (judged steps only)

    # ---- [loss]
    loss_type: str = "dapo"              # grpo | bnpo | dapo | dr_grpo | cispo | sapo (TRL's formulas)
    importance_sampling_level: str = "token"  # token | sequence (GSPO)
    eps_low: float = 0.2                 # ratio clip: [1 - eps_low, 1 + eps_high]
    eps_high: float = 0.2                # cispo: the cap on its detached ratio (epsilon_max, e.g. 5)
    delta: Optional[float] = None        # cap on the unclipped ratio (two-sided GRPO; none: off)
    sapo_temperature_pos: float = 1.0    # sapo's gate temperature for positive advantages
    sapo_temperature_neg: float = 1.05   # and for the others
    beta: float = 0.0                    # k3 KL to the frozen initial policy
    use_bias_correction_kl: bool = False  # KL term k3 x ratio (TRL's option and default; unbiased gradient)
    mu: int = 1                          # optimization epochs per rollout
    micro_batch_size: int = 64           # sequences per forward/backward, at most
    update_layout: str = "packed"        # "packed": each prompt once, completions unpadded (docs/design.md 4.3);
                                         # "padded": each row right-padded to the step's longest (the reference)
    micro_batch_tokens: int = 4096       # packed: decoder positions per forward/backward, at most
    recompute_old_logp: bool = False     # recompute old log-probs instead of the sampler's
    gradient_checkpointing: bool = False

    # ---- [eval]
    eval_every: int = 0                  # held-out evaluation every N steps, at step 0 and at the last (0 = off)
    eval_dataset: str = ""               # held-out .jsonl / .parquet with the fields of `dataset` (builtin:arith
                                         # has its own held-out split)
    eval_problems: int = 100             # a fixed, seeded subset of that many rows (0: all); builtin:arith: per k
    eval_samples: int = 1                # k samples per problem (accuracy is then mean@k, and pass@k is reported)
    eval_temperature: float = 0.0        # 0: greedy; > 0 samples with the rollout's top_k / top_p / min_p
    eval_max_new_tokens: int = 0         # 0: max_new_tokens
    eval_group_field: str = ""           # a held-out row field to break the metrics down by (e.g. level, source)
    eval_at_start: bool = True           # with eval_every: evaluate before the first step too (the curve's start)

    # ---- [lora]
    lora_r: int = 0                      # LoRA rank (0: off, full fine-tuning); LoRA wants about 10x the full
                                         # fine-tune's lr (Schulman et al. 2025, "LoRA Without Regret")
    lora_alpha: float = 16.0             # the update is scaled by lora_alpha / lora_r
    lora_dropout: float = 0.0
    lora_target_modules: list = field(default_factory=lambda: list(ALL_LINEARS))  # short names of the
                                         # linears to adapt (default: every linear of attention and MLP)
    lora_merged_rollouts: bool = True    # sample from a merged copy of the weights, refreshed each step
                                         # (1.2x faster generation, bench_lora.py; one more copy of the
                                         # weights); off, and under FSDP: the adapters in the forward

    # ---- [optim]
    lr: float = 1e-4
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    max_grad_norm: float = 1.0
    warmup_steps: int = 0
    lr_schedule: str = "cosine"          # cosine | constant
    min_lr_ratio: float = 0.1            # cosine's floor, as a fraction of lr

    # ---- [run]
    max_steps: int = 100
    seed: int = 0
    output: str = "runs/sgpo"
    save_every: int = 50                 # checkpoint every N steps (and at the last)
    keep_checkpoints: int = 2
    resume: bool = False                 # continue from the latest checkpoint in output
    tensorboard: bool = True
    log_completions: int = 8             # completions per step written to OUTPUT/completions.jsonl (0: off)
    progress: Optional[bool] = None      # progress bar (default: on a terminal)
    threads: int = 0                     # torch CPU threads per process (0: OMP_NUM_THREADS, else CPUs / local ranks)
    parallel: str = "ddp"                # under torchrun: ddp (replicated) | fsdp (FSDP2: parameters, gradients
                                         # and optimizer state sharded; bf16 compute on GPUs)

    def credit_config(self) -> CreditConfig:
        """The SGPO credit settings of this config (the fields of [sgpo] and the rewards)."""
        return CreditConfig(scope=self.scope, credit=self.credit, credit_beta=self.credit_beta,
                            credit_gamma=self.credit_gamma, credit_scale=self.credit_scale, scale=self.adv_scale,
                            eps=self.adv_eps, credited_std_floor=self.credited_std_floor,
                            correct_reward=self.correct_reward, incorrect_reward=self.incorrect_reward,
                            credit_assignment=self.credit_assignment)

    def judge_options(self) -> dict:
        """The judge options this config gives (judge/registry.py names), e.g. {"url": judge_url, ...}."""
        return {opt: getattr(self, name) for opt, name in JUDGE_OPTION_FIELDS.items()}

    def validate(self) -> "TrainConfig":
        choices = dict(rollout=("local", "openai"), judge=judge_names(),
                       scope=options.SCOPES, credit=options.CREDITS, credit_assignment=options.CREDIT_ASSIGNMENTS,
                       adv_scale=options.SCALES, loss_type=options.LOSS_TYPES,
                       importance_sampling_level=options.IS_LEVELS, lr_schedule=("cosine", "constant"),
                       rollout_sync=("disk", "none"), rollout_is=options.ROLLOUT_IS, parallel=("ddp", "fsdp"),
                       update_layout=options.UPDATE_LAYOUTS, dynamic_sampling=("off", "filter"),
                       dtype=("float32", "bfloat16", "float16"))
        for name, allowed in choices.items():
            options.check_choice(f"config field '{name}'", getattr(self, name), allowed)
        positive = ("prompts_per_step", "num_samples", "max_new_tokens", "micro_batch_size", "micro_batch_tokens", "mu",
                    "max_steps", "max_sample_batches",
                    "save_every", "keep_checkpoints", "judge_concurrency", "judge_max_tokens")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"config field '{name}': expected >= 1, got {getattr(self, name)}")
        nonneg = ("lr", "weight_decay", "max_grad_norm", "warmup_steps", "beta", "eps_low", "eps_high",
                  "temperature", "top_k", "min_p", "adv_eps", "eval_every", "eval_problems", "eval_max_new_tokens", "log_completions", "threads", "max_staleness",
                  "credited_std_floor")
        for name in nonneg:
            if getattr(self, name) < 0:
                raise ValueError(f"config field '{name}': expected >= 0, got {getattr(self, name)}")
        for name in ("sapo_temperature_pos", "sapo_temperature_neg"):
            if not getattr(self, name) > 0:
                raise ValueError(f"config field '{name}': expected > 0, got {getattr(self, name)}")
        if not self.rollout_is_cap > 0:
            raise ValueError(f"config field 'rollout_is_cap': expected > 0, got {self.rollout_is_cap}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"config field 'top_p': expected in (0, 1], got {self.top_p}")
        if self.temperature == 0:
            raise ValueError("config field 'temperature': RL needs sampling (> 0); greedy rollouts have no variance")
        if self.rollout == "openai" and not (self.rollout_url and self.rollout_model):
            raise ValueError("config fields 'rollout_url' and 'rollout_model' are required with rollout = 'openai'")
        self._validate_eval()
        if self.lora_r < 0:
            raise ValueError(f"config field 'lora_r': expected >= 0 (0: off), got {self.lora_r}")
        if self.lora_r:
            self.lora_config()
        spec = check_judge(self.judge, self.judge_options(), "config field 'judge'",
                           lambda o: f"config field '{JUDGE_OPTION_FIELDS[o]}'")
        if self.judge == "builtin" and self.dataset != BUILTIN:
            raise ValueError("config field 'judge': 'builtin' is the built-in task's checker; with your own "
                             f"dataset use one of {', '.join(n for n in judge_names() if n != 'builtin')} "
                             "('none' with scope = 'off')")
        if not spec.needs_judge and self.scope != "off":
            raise ValueError(f"config field 'scope': without a judge (judge = '{self.judge}') only scope = 'off' works")
        self.credit_config().validated(lambda f: f"config field '{_CREDIT_FIELDS.get(f, f)}'")
        return self

    def _validate_eval(self) -> None:
        if self.dataset == BUILTIN and self.eval_dataset:
            raise ValueError("config field 'eval_dataset': builtin:arith evaluates on its own held-out split; "
                             "leave eval_dataset empty (eval_problems sets how many per k)")
        if self.eval_every and self.dataset != BUILTIN and not self.eval_dataset:
            raise ValueError("config field 'eval_every': a dataset's evaluation needs held-out rows: set "
                             "config field 'eval_dataset' to a file disjoint from 'dataset'")
        if self.eval_dataset and not os.path.isfile(self.eval_dataset):
            raise ValueError(f"config field 'eval_dataset': no such file {self.eval_dataset}")
        self.eval_settings()

    def lora_config(self) -> LoRAConfig:
        """The adapters of config fields lora_* (model/lora.py), checked."""
        return LoRAConfig(r=self.lora_r, alpha=self.lora_alpha, dropout=self.lora_dropout,
                          target_modules=list(self.lora_target_modules)).validated(
            lambda f: f"config field 'lora_{'r' if f == 'r' else f}'")

    def eval_settings(self):
        """How the held-out problems are sampled (evaluation.EvalSettings): the eval fields, the
        rollout's sampling filters and chat template, and as many sequences per generate call as a
        rollout has."""
        from ..evaluation.heldout import EvalSettings
        names = {"num_samples": "eval_samples", "temperature": "eval_temperature",
                 "max_new_tokens": "eval_max_new_tokens"}
        return EvalSettings(
            num_samples=self.eval_samples, temperature=self.eval_temperature,
            max_new_tokens=self.eval_max_new_tokens or self.max_new_tokens, top_k=self.top_k, top_p=self.top_p,
            min_p=self.min_p, stop=list(self.stop), chat_template=self.chat_template, seed=self.seed,
            batch_size=max(1, self.prompts_per_step * self.num_samples // max(self.eval_samples, 1)),
        ).validated(lambda f: f"config field '{names.get(f, f)}'")


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_CREDIT_FIELDS = {"scale": "adv_scale", "eps": "adv_eps"}  # CreditConfig's names of TrainConfig fields

# What TRL's GRPOConfig (or verl) calls some fields: a user's first guess.
_OTHER_NAMES = {"learning_rate": "lr", "num_generations": "num_samples", "max_completion_length": "max_new_tokens",
                "epsilon": "eps_low", "epsilon_high": "eps_high", "num_iterations": "mu", "output_dir": "output",
                "model_name_or_path": "model", "max_new_token": "max_new_tokens", "group_size": "num_samples",
                "kl_coef": "beta", "per_device_train_batch_size": "micro_batch_size", "clip_ratio": "eps_low"}


def unknown_field(name: str, where: str) -> ValueError:
    """The error for a name that is not a field, with the closest field when one is close."""
    close = difflib.get_close_matches(name, [*FIELDS, *_OTHER_NAMES], n=1, cutoff=0.6)
    guess = _OTHER_NAMES.get(close[0], close[0]) if close else None
    hint = f" (did you mean '{guess}'?)" if guess else " (`sgpo train --help` lists them)"
    return ValueError(f"{where}: unknown field '{name}'{hint}")


def field_tables() -> list[tuple[str, list[tuple[str, str, Any, str]]]]:
    """[(table, [(field, type, default, comment)])], in TrainConfig's order.

    Read from TrainConfig's source: its `# ---- [table]` lines and each field's
    trailing comment are the documentation, so help cannot drift from the code.
    """
    hints = typing.get_type_hints(TrainConfig)
    defaults = dataclasses.asdict(TrainConfig())
    tables: list[tuple[str, list]] = []
    for line in inspect.getsource(TrainConfig).splitlines():
        text = line.strip()
        if text.startswith("# ---- ["):
            tables.append((text[len("# ---- "):], []))
            continue
        if text.startswith("#") and tables and tables[-1][1]:  # a field's comment, continued
            name, kind, default, comment = tables[-1][1][-1]
            tables[-1][1][-1] = (name, kind, default, f"{comment} {text.lstrip('#').strip()}")
            continue
        name = text.split(":", 1)[0]
        if name in FIELDS and tables:
            hint = hints[name]
            args = [a.__name__ for a in typing.get_args(hint) if a is not type(None)]
            kind = f"{args[0]} or none" if args else hint.__name__
            comment = text.split("#", 1)[1].strip() if "#" in text else ""
            tables[-1][1].append((name, kind, defaults[name], comment))
    return tables


def fields_help() -> str:
    """Every field, grouped by TOML table, with its type, default and meaning."""
    out = []
    for table, rows in field_tables():
        out.append(table)
        for name, kind, default, comment in rows:
            flag = f"  --{name.replace('_', '-')} {kind.upper().replace(' ', '_')}"
            out.append(f"{flag:<32} default {json.dumps(default)}" + (f"; {comment}" if comment else ""))
        out.append("")
    return "\n".join(out)


def _coerce(name: str, value: Any) -> Any:
    """A TOML or command-line value as the field's type; errors name the field."""
    hint = typing.get_type_hints(TrainConfig)[name]
    optional = typing.get_origin(hint) is typing.Union and type(None) in typing.get_args(hint)
    base = next(a for a in typing.get_args(hint) if a is not type(None)) if optional else hint
    if isinstance(value, str) and base is not str:
        text = value.strip()
        if optional and text.lower() in ("none", "null", ""):
            return None
        try:
            value = json.loads(text.lower() if base is bool else text)
        except json.JSONDecodeError:
            if base is list:
                value = [s for s in text.split(",") if s]
            else:
                raise ValueError(f"config field '{name}': cannot read {text!r} as {base.__name__}") from None
    if value is None and optional:
        return None
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    origin = typing.get_origin(base) or base
    if not isinstance(value, origin) or (origin in (int, float) and isinstance(value, bool)):
        raise ValueError(f"config field '{name}': expected {base.__name__}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"config field '{name}': expected a finite number, got {value}")
    return value


def from_dict(values: dict, where: str = "config") -> TrainConfig:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        items = value.items() if isinstance(value, dict) else [(key, value)]
        for k, v in items:  # one level of tables, flattened
            if k not in FIELDS:
                raise unknown_field(k, where)
            if k in flat:
                raise ValueError(f"{where}: field '{k}' is given twice")
            flat[k] = _coerce(k, v)
    return TrainConfig(**flat)


def load(path: Optional[str], overrides: Optional[list[str]] = None) -> TrainConfig:
    """Config from a TOML file (or the defaults) plus `--field value` overrides."""
    values: dict[str, Any] = {}
    if path:
        if not os.path.isfile(path):
            raise ValueError(f"config: no such file {path}")
        try:
            with open(path, "rb") as f:
                values = tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"{path}: invalid TOML: {e}") from None
    cfg = from_dict(values, where=path or "config")
    return apply_overrides(cfg, overrides or []).validate()


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """`--max-steps 3 --lr=1e-6 --resume` -> {"max_steps": 3, "lr": 1e-6, "resume": True}
    (a bool flag alone means true)."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise ValueError(f"override: expected --field value, got {arg!r}")
        key, _, value = arg[2:].partition("=")
        name = key.replace("-", "_")
        if name not in FIELDS:
            raise unknown_field(name, "override")
        if not _:
            is_bool = typing.get_type_hints(TrainConfig)[name] is bool
            if is_bool and (i + 1 == len(args) or args[i + 1].startswith("--")):
                value = "true"
            else:
                if i + 1 == len(args):
                    raise ValueError(f"override: --{key} needs a value")
                i += 1
                value = args[i]
        out[name] = _coerce(name, value)
        i += 1
    return out


def apply_overrides(cfg: TrainConfig, args: list[str]) -> TrainConfig:
    """cfg with the `--field value` overrides of parse_overrides applied."""
    return TrainConfig(**{**dataclasses.asdict(cfg), **parse_overrides(args)})


def to_toml(cfg: TrainConfig) -> str:
    """The resolved config as TOML (flat; None fields are written as comments)."""
    lines = []
    for name, value in dataclasses.asdict(cfg).items():
        if value is None:
            lines.append(f"# {name} = (none)")
        else:
            lines.append(f"{name} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"
