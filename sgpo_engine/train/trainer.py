"""SGPOTrainer: rollout -> verify -> judge -> SGPO advantages -> fused update.

One `train_step`:
  prompts of step s (this rank's share) -> G completions each (`rollout`)
  -> verifier marks correct answers -> the judge scores the incorrect ones in
  scope (RTS) -> SGPO advantages (credit.score_groups) -> the training batch
  (batch.py) -> mu epochs of micro-batched fused-loss updates (update.py) ->
  metrics, and a checkpoint every save_every.

The pieces live in their own modules: the credit in sgpo_engine.credit, the
batch layout in batch.py, the update in update.py, the parallel strategy
(one process, DDP, FSDP) in parallel.py, the KL term's reference model in
reference_model.py, the metrics in metrics.py. This class wires them and
owns the loop, the external rollout server's sync and the checkpoints.

Every random choice of step s derives from (seed, s): the prompts, each
prompt's sampling stream and the micro-batch order. So a run resumed from a
checkpoint retraces the uninterrupted run exactly, and a prompt's rollout is
the same on whichever rank it lands.
"""
from __future__ import annotations

import math
import os
import sys
import time
import warnings
from typing import Callable, Optional

import torch

from ..credit import ScoredGroups, prefix_reach, problem_text, score_groups, select_groups
from ..evaluation import evaluate as evaluate_heldout, local_sampler
from ..evaluation.curves import plot_run
from ..generation.rng import mix_seeds
from ..judge import JudgeContext, make_judge
from ..model.lora import add_lora, has_lora, load_adapter, merged_copy
from ..progress import Progress
from ..tasks import Example, Task, load_policy, make_task
from ..threads import cpu_threads
from . import checkpoint as ckpt
from .batch import TrainBatch, train_batch
from .config import JUDGE_OPTION_FIELDS, TrainConfig, to_toml
from .distributed import Dist
from .metrics import (CompletionLog, MetricsWriter, Timings, compute_metrics, new_totals, progress_line,
                      response_sums, step_metrics)
from .parallel import make_parallel
from .reference_model import reference_model
from .rollout import LocalRollout, OpenAIRollout, RolloutSyncError, WeightSync
from .sampling import Draw, draw_sums, keep_first_informative
from .update import Optim, UpdateStats, update


class SGPOTrainer:
    """Trains `policy` with SGPO (or plain GRPO with scope="off").

    Anything not given is built from the config: the policy (`model`), the
    task (`dataset`: a sgpo_engine.tasks.Task, see make_task) and from it the
    prompt source, the verifier(response_text, answer) -> bool and the judge
    (an object with .judge(problems, responses, references); `judge` names it
    in judge/registry.py), the rollout (a callable (examples, seeds) ->
    completions per example). The task's own metrics and evaluation come with it.
    """

    def __init__(self, config: TrainConfig, policy=None, source=None,
                 verifier: Optional[Callable] = None, judge=None, rollout=None, task: Optional[Task] = None):
        self.cfg = cfg = config.validate()
        self.credit = cfg.credit_config()
        self.dist = Dist(cfg.device)
        torch.set_num_threads(cpu_threads(cfg.threads, self.dist.local_world))
        self.device = torch.device(self.dist.device)
        torch.manual_seed(cfg.seed)
        self.task = task if task is not None else make_task(cfg)
        self.policy = policy if policy is not None else load_policy(cfg.model, dtype=cfg.dtype)
        self.policy.to(self.device)
        if cfg.lora_r and not has_lora(self.policy):  # only the adapters train (model/lora.py)
            add_lora(self.policy, cfg.lora_config(), where="config field 'lora_target_modules'")
            self.policy.base_model_path = cfg.model  # adapter_config.json's base_model_name_or_path
        self.policy.decoder.gradient_checkpointing = cfg.gradient_checkpointing
        self.source = source or self.task.source()
        self.verifier = verifier or self.task.verify
        self.judge = judge if judge is not None else self._make_judge()
        self.rollout = rollout or (OpenAIRollout(self.policy, cfg) if cfg.rollout == "openai"
                                   else LocalRollout(self.policy, cfg))
        self.sync = None  # keeps an external rollout server on the trainer's weights
        if cfg.rollout == "openai" and cfg.rollout_sync == "disk":
            self.sync = WeightSync(cfg.rollout_url, os.path.join(cfg.output, "rollout_weights"))
        elif cfg.rollout == "openai":
            warnings.warn("config field 'rollout_sync' = 'none': the rollout server keeps its weights, so every "
                          "rollout after the first step is off-policy (metric weight_version_lag)", stacklevel=2)
        if cfg.credit_assignment == "prefix" and self.policy.tokenizer is None:
            raise ValueError("config field 'credit_assignment': 'prefix' maps the judge's steps to tokens "
                             "and needs the policy's tokenizer (the model folder has no tokenizer.json)")
        self._preflight()
        self.ref_policy = reference_model(self.policy, cfg)
        self.parallel = make_parallel(cfg, self.dist, self.policy)
        if self.ref_policy is not None:
            self.ref_policy = self.parallel.prepare_reference(self.ref_policy)
        trainable = [p for p in self.policy.parameters() if p.requires_grad]  # LoRA: the adapters alone
        optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                      betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps)
        self.optim = Optim(optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, self._lr_factor))
        self.step = 0
        self.batches_drawn = 0  # the prompt stream's cursor (sampling.py); a checkpoint carries it
        self._merged, self._merged_step = None, -1  # LoRA: the merged copy rollouts sample from
        self.totals = new_totals()  # compute since step 0, every rank (metrics.compute_metrics)
        if cfg.resume:
            self._resume()
        # the held-out problems: the same subset at every evaluation, on every rank, after a resume
        self.heldout = self.task.heldout(cfg.eval_problems, cfg.seed) if cfg.eval_every else []
        self.on_eval: Optional[Callable[[int, dict], None]] = None  # called with (step, eval metrics)
        self.metrics = self.completions = None
        if self.dist.main:
            os.makedirs(cfg.output, exist_ok=True)
            with open(os.path.join(cfg.output, "config.toml"), "w") as f:
                f.write(to_toml(cfg))
            self.metrics = MetricsWriter(cfg.output, cfg.tensorboard, resume_step=self.step)
            if cfg.log_completions:
                self.completions = CompletionLog(cfg.output, cfg.log_completions, resume_step=self.step)

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.optim.optimizer

    @property
    def scheduler(self):
        return self.optim.scheduler

    def close(self):
        """Ends the run's process group (a no-op in one process; see parallel.SingleProcess.close)."""
        self.parallel.close()

    # ------------------------------------------------------------------ setup
    def _make_judge(self):
        """The judge config field `judge` names (judge/registry.py); None with scope "off"."""
        cfg = self.cfg
        if cfg.scope == "off":
            return None
        context = JudgeContext(policy=self.policy, task_judge=self.task.builtin_judge)
        return make_judge(cfg.judge, cfg.judge_options(), context, where="config field 'judge'",
                          option_name=lambda o: f"config field '{JUDGE_OPTION_FIELDS[o]}'")

    def _preflight(self):
        """Bad input as one error naming it, before the first step: a model
        without the tokenizer or chat template its prompts need, a prompt that
        does not fit the context, a judge server that is not there."""
        cfg = self.cfg
        if hasattr(self.source, "check_prompts"):  # a dataset file: text prompts, and rows to name
            tok = self.policy.tokenizer
            if tok is None:
                raise ValueError(f"{cfg.model}: no tokenizer.json, and the dataset's prompts are text")
            if cfg.chat_template and tok.chat_template is None:
                raise ValueError(f"{cfg.model}: config field 'chat_template' is true, but the tokenizer has no "
                                 "chat template (tokenizer_config.json 'chat_template' or chat_template.jinja)")
            self.source.check_prompts(self.policy, cfg.chat_template)
        if hasattr(self.judge, "check_server"):
            self.judge.check_server("config field 'judge_url'")

    def _lr_factor(self, step: int) -> float:
        cfg = self.cfg
        if step < cfg.warmup_steps:
            return (step + 1) / (cfg.warmup_steps + 1)
        if cfg.lr_schedule == "constant":
            return 1.0
        t = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))

    # ------------------------------------------------------------------ checkpoints
    def save(self) -> Optional[str]:
        """Writes OUTPUT/checkpoint-STEP and prunes old ones. Every rank calls it."""
        cfg = self.cfg
        state = {"scheduler": self.scheduler.state_dict(), "config": to_toml(cfg),
                 "batches_drawn": self.batches_drawn, "totals": self.totals}
        return self.parallel.save(cfg.output, self.step, self.optimizer, state, cfg.keep_checkpoints)

    def _resume(self):
        path = ckpt.latest_checkpoint(self.cfg.output)
        if path is None:
            return  # nothing to resume: a fresh run
        from ..model import load
        if has_lora(self.policy):  # the checkpoint holds the adapters: on the base model again
            saved = load_policy(self.cfg.model, dtype=self.policy.dtype)
            load_adapter(saved, path)
        else:
            saved = load(path, dtype=self.policy.dtype)
        state = ckpt.load_trainer_state(path)
        self.parallel.load(path, saved, self.optimizer, state)
        self.scheduler.load_state_dict(state["scheduler"])
        ckpt.set_rng_state(state["rng"])
        self.step = int(state["step"])
        self.batches_drawn = int(state.get("batches_drawn", self.step))  # older checkpoints: one batch a step
        self.totals = {**new_totals(), **state.get("totals", {})}

    # ------------------------------------------------------------------ loop
    def train(self) -> list[dict]:
        cfg = self.cfg
        bar = Progress(cfg.max_steps, "train", cfg.progress)
        bar.done = self.step
        # off a terminal (a log file, CI, nohup) and not silenced: one plain line per step
        lines = cfg.progress is None and not bar.enabled and self.dist.main
        history = []
        try:
            if self.sync and self.step < cfg.max_steps:
                self._sync_rollout()  # the server may hold other weights (its own start, a resumed run)
            if cfg.eval_every and cfg.eval_at_start and self.step == 0:
                start = {"step": 0, **self.evaluate()}  # the curve's start: the policy before any update
                if self.metrics:
                    self.metrics.write(start)
                if lines:
                    print(progress_line(start, cfg.max_steps), file=sys.stderr, flush=True)
            while self.step < cfg.max_steps:
                m = self.train_step()
                history.append(m)
                bar.update(1, loss=m["loss"], acc=m["accuracy"], neg=m["all_negative_frac"])
                if lines:
                    print(progress_line(m, cfg.max_steps), file=sys.stderr, flush=True)
                if self.step % cfg.save_every == 0 or self.step == cfg.max_steps:
                    self.save()
        finally:
            bar.close()
            for log in (self.metrics, self.completions):
                if log:
                    log.close()
        if self.dist.main and cfg.eval_every and history:
            plot_run(cfg.output)  # OUTPUT/curves.png: is it learning?
        return history

    def train_step(self) -> dict:
        cfg, s = self.cfg, self.step
        t_start = time.perf_counter()
        draws, t_rollout, lag = self._draw(s)
        mine, groups, scored = self._step_groups(draws)
        if self.completions and mine:
            self.completions.write(s + 1, mine, groups, scored.rewards, scored.advantages.advantages,
                                   self.policy.tokenizer)
        t1 = time.perf_counter()
        batch = self._batch(mine, groups, scored)
        stats = self._update(batch)
        t_update = time.perf_counter() - t1
        self.step += 1
        t_sync = self._sync_rollout() if self.sync else None
        metrics = self._metrics(mine, groups, scored, batch, stats, draws,
                                Timings(t_rollout, t_update, time.perf_counter() - t_start))
        if self.cfg.rollout == "openai":
            metrics["weight_version_lag"] = lag
            if t_sync is not None:
                metrics["rollout_sync_seconds"] = t_sync
        if cfg.eval_every and (self.step % cfg.eval_every == 0 or self.step == cfg.max_steps):
            metrics.update(self.evaluate())
        if self.metrics:
            self.metrics.write(metrics)
        return metrics

    # ------------------------------------------------------------------ external rollout server
    def _sync_rollout(self) -> float:
        """Rank 0 makes the server load this step's weights (weight_version = self.step); every
        rank raises RolloutSyncError if that failed. Returns the seconds it took."""
        seconds, error = 0.0, None
        policy = self.parallel.full_policy(self.step)
        if self.dist.main:
            try:
                seconds = self.sync(policy, self.step)
            except RolloutSyncError as e:
                error = e
        failed = self.dist.sum([1.0 if error else 0.0])[0] if self.dist.world > 1 else float(error is not None)
        if failed:
            raise error or RolloutSyncError("config field 'rollout_url': rank 0 could not sync the rollout server")
        return seconds

    def _weight_version_lag(self, groups) -> float:
        """Steps between the trainer's weights and the oldest weight_version among the completions
        (NaN when the server reports none); with rollout_sync on, more than max_staleness is refused."""
        if self.cfg.rollout != "openai":
            return float("nan")
        versions = {c.weight_version for g in groups for c in g if c.weight_version is not None}
        lags = [self.step - int(v) for v in versions if v.lstrip("-").isdigit()]
        lag = max(self.dist.all_gather_floats([float(max(lags)) if lags else -1.0]))
        if lag < 0:
            return float("nan")
        if self.sync and lag > self.cfg.max_staleness:
            raise RolloutSyncError(f"config field 'max_staleness': the rollout server's completions at step "
                                   f"{self.step} come from weights {lag:.0f} step(s) old (max_staleness = "
                                   f"{self.cfg.max_staleness}); is another trainer updating {self.cfg.rollout_url}?")
        return lag

    # ------------------------------------------------------------------ one step's pieces
    def _draw(self, s: int) -> tuple[list[Draw], float, float]:
        """Step s's rollouts (sampling.py): one batch of prompts, or with dynamic sampling
        batches until prompts_per_step informative groups or max_sample_batches. Returns the
        draws, the seconds spent generating and the weight-version lag (openai rollouts)."""
        cfg = self.cfg
        if isinstance(self.rollout, LocalRollout):
            self.rollout.policy = self._sampling_policy(s)
        filtering = cfg.dynamic_sampling == "filter"
        draws, seconds, lag, informative = [], 0.0, float("nan"), 0
        while len(draws) < (cfg.max_sample_batches if filtering else 1):
            c = self.batches_drawn  # the prompt stream's cursor: the step itself without dynamic sampling
            self.batches_drawn += 1
            examples = self.source.batch(c, cfg.prompts_per_step)
            share = self.dist.share(len(examples))
            mine = [examples[i] for i in share]
            seeds = mix_seeds(mix_seeds(cfg.seed, c), torch.tensor(list(share))).tolist()
            t0 = time.perf_counter()
            groups = self.rollout(mine, seeds) if mine else []
            seconds += time.perf_counter() - t0
            batch_lag = self._weight_version_lag(groups)
            lag = batch_lag if math.isnan(lag) else max(lag, batch_lag)
            draw = Draw(mine, groups, self._score_groups(mine, groups), share.start)
            draws.append(draw)
            if filtering:  # every rank the same flags, so the same decision to draw again
                mine_flags = draw.scored.informative.tolist() if draw.scored is not None else []
                draw.flags = [bool(f) for f in self.dist.all_gather_floats([float(f) for f in mine_flags])]
                informative += sum(draw.flags)
                if informative >= cfg.prompts_per_step:
                    break
        return draws, seconds, lag

    def _sampling_policy(self, step: int):
        """What rollouts and evaluation sample from at `step`: the policy (under FSDP its unsharded
        copy, parallel.full_policy), or with LoRA and lora_merged_rollouts a merged copy of it,
        refreshed once a step (model/lora.py: merged_copy)."""
        policy = self.parallel.full_policy(step)
        if not (has_lora(policy) and self.cfg.lora_merged_rollouts) or self.parallel.sharded:
            return policy  # under FSDP a merged copy would be a third whole one: the adapters in the forward
        if self._merged_step != step:
            self._merged = merged_copy(policy, into=self._merged)
            self._merged_step = step
        return self._merged

    def _step_groups(self, draws: list[Draw]):
        """(examples, groups, ScoredGroups) the update trains on: the one draw, or the first
        prompts_per_step informative groups of the draws (sampling.keep_first_informative)."""
        if self.cfg.dynamic_sampling == "off":
            d = draws[0]
            return d.examples, d.groups, d.scored
        keep = keep_first_informative(draws, self.cfg.prompts_per_step)
        examples = [d.examples[g] for d, k in zip(draws, keep) for g in k]
        groups = [d.groups[g] for d, k in zip(draws, keep) for g in k]
        parts = [(d.scored, k) for d, k in zip(draws, keep) if d.scored is not None]
        scored = select_groups([p for p, _ in parts], [k for _, k in parts], self.credit) if examples else None
        return examples, groups, scored

    def _score_groups(self, examples: list[Example], groups) -> Optional[ScoredGroups]:
        """Verifier + judge (in scope) -> SGPO advantages, for this rank's groups (None: no groups)."""
        if not examples:
            return None
        return score_groups([problem_text(e.prompt) for e in examples], groups, [e.answer for e in examples],
                            self.judge, self.credit, references=[e.reference for e in examples],
                            verifier=self.verifier)

    def _kept(self, scored: ScoredGroups) -> torch.Tensor:
        """[N] bool: the responses the update trains on (filter_zero_std_groups drops the groups
        whose rewards after credit are all equal)."""
        if self.cfg.filter_zero_std_groups:
            return scored.informative.repeat_interleave(scored.group_sizes)
        return torch.ones_like(scored.rewards.correct)

    def _batch(self, examples, groups, scored: Optional[ScoredGroups]) -> TrainBatch:
        """The kept, non-empty completions as the update's TrainBatch in config field
        `update_layout` (batch.py), with step-level advantages under credit_assignment "prefix"."""
        cfg = self.cfg
        flat = [c for g in groups for c in g]
        group_of = [k for k, g in enumerate(groups) for _ in g]
        kept = [i for i, k in enumerate(self._kept(scored).tolist()) if k and flat[i].token_ids] if flat else []
        adv = scored.advantages.advantages[kept] if flat else torch.zeros(0)
        completions = [flat[i] for i in kept]
        reach, fallbacks = None, 0
        if cfg.credit_assignment == "prefix" and kept:
            reach, fallbacks = prefix_reach(completions, [scored.rewards.verdicts[i] for i in kept],
                                            scored.credited[kept].tolist(), adv.tolist(), self.policy.tokenizer,
                                            getattr(self.judge, "step_mode", cfg.step_mode))
        old = all(c.logprobs is not None for c in completions) and not cfg.recompute_old_logp
        server = all(c.server_logprobs is not None for c in completions) and cfg.rollout_is != "none" \
            and cfg.rollout == "openai"
        batch = train_batch(cfg.update_layout, completions, [group_of[i] for i in kept], adv, reach,
                            device=self.device, old_logp=old, server_logp=server)
        batch.credit_fallbacks = fallbacks
        return batch

    def _update(self, batch: TrainBatch) -> UpdateStats:
        return update(self.policy, batch, self.cfg, self.optim, self.parallel, self.step, self.ref_policy)

    def _metrics(self, examples, groups, scored, batch: TrainBatch, stats: UpdateStats, draws: list[Draw],
                 times: Timings) -> dict:
        """The step's metrics over all ranks (metrics.py), with the task's own and the compute
        it cost, per step and since step 0 (self.totals)."""
        g, task, drawn = self.dist.sum_named(response_sums(groups, scored, batch),
                                             self.task.metric_sums(examples, groups), draw_sums(draws))
        slowest = self.dist.all_gather_floats([times.rollout, times.update])  # per rank: rollout, update
        times = Timings(max(slowest[0::2]), max(slowest[1::2]), times.step)
        m = step_metrics(self.step, g, stats, times, self.cfg.credit_assignment == "prefix")
        m.update(self.task.metrics(task))
        m.update(compute_metrics(drawn, g, len(draws), times, self.totals))
        return m

    def evaluate(self, examples: Optional[list] = None) -> dict:
        """The held-out metrics ("eval/..."; evaluation/heldout.py) of the current policy on
        `examples` (default: the run's fixed subset). Every rank samples its share with the
        rollouts' policy (under FSDP the unsharded copy they use, no second one) and every
        rank returns the metrics over all of them."""
        examples = self.heldout if examples is None else examples
        if not examples:
            raise ValueError("evaluate: no held-out problems (config fields 'eval_every' and 'eval_dataset')")
        policy = self._sampling_policy(self.step)  # under FSDP an all-gather: every rank calls evaluate
        m = evaluate_heldout(local_sampler(policy), examples, self.cfg.eval_settings(), self.verifier,
                             self.task.sample_metrics, self.dist).metrics
        if self.on_eval:
            self.on_eval(self.step, m)
        return m
