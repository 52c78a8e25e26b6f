"""SGPOTrainer: rollout -> verify -> judge -> SGPO advantages -> fused update.

One `train_step`:
  prompts of step s (this rank's share) -> G completions each (`rollout`)
  -> verifier marks correct answers -> the judge scores the incorrect ones in
  scope (RTS) -> `group_advantages` -> for each of mu epochs: micro-batches of
  decoder hidden states -> `fused_policy_loss` -> backward (accumulated) ->
  clip grad norm -> AdamW step -> metrics, and a checkpoint every save_every.

Every random choice of step s derives from (seed, s): the prompts, each
prompt's sampling stream and the micro-batch order. So a run resumed from a
checkpoint retraces the uninterrupted run exactly, and a prompt's rollout is
the same on whichever rank it lands.
"""
from __future__ import annotations

import contextlib
import copy
import gc
import math
import os
import time
import warnings
from typing import Callable, Optional

import torch

from .. import ops
from ..generation.rng import mix_seeds
from ..judge import sgpo_rewards
from ..progress import Progress
from ..tasks import Example, Task, load_policy, make_task
from ..threads import cpu_threads
from . import checkpoint as ckpt
from . import fsdp
from .config import TrainConfig, to_toml
from .credit import prefix_reach, token_advantages
from .distributed import Dist
from .metrics import CompletionLog, MetricsWriter
from .rollout import LocalRollout, OpenAIRollout, RolloutSyncError, WeightSync, rollout_is_weights

_POS = (1 << 63) - 1  # generator seeds must be non-negative
OPTIMIZER_DIR = "optimizer"  # in a checkpoint: the FSDP-sharded optimizer state


class SGPOTrainer:
    """Trains `policy` with SGPO (or plain GRPO with scope="off").

    Anything not given is built from the config: the policy (`model`), the
    task (`dataset`: a sgpo_engine.tasks.Task, see make_task) and from it the
    prompt source, the verifier(response_text, answer) -> bool and the judge
    (an object with .judge(problems, responses, references)), the rollout (a
    callable (examples, seeds) -> completions per example). The task's own
    metrics and evaluation come with it.
    """

    def __init__(self, config: TrainConfig, policy=None, source=None,
                 verifier: Optional[Callable] = None, judge=None, rollout=None, task: Optional[Task] = None):
        self.cfg = cfg = config.validate()
        self.dist = Dist(cfg.device)
        torch.set_num_threads(cpu_threads(cfg.threads, self.dist.local_world))
        self.device = torch.device(self.dist.device)
        torch.manual_seed(cfg.seed)
        self.task = task if task is not None else make_task(cfg)
        self.policy = policy if policy is not None else load_policy(cfg.model, dtype=cfg.dtype)
        self.policy.to(self.device)
        self.policy.decoder.gradient_checkpointing = cfg.gradient_checkpointing
        self.source = source or self.task.source()
        self.verifier = verifier or self.task.verify
        self.judge = judge if judge is not None else self.task.make_judge(cfg, self.policy)
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
        self.ref_policy = self._frozen_copy() if cfg.beta > 0 else None
        self.model = self.policy.decoder
        self.fsdp = cfg.parallel == "fsdp" and self.dist.world > 1
        self.full_policy = None  # FSDP: an unsharded copy for rollouts, evaluation and saving
        self._full_step = -1     # the step whose weights full_policy holds (one all-gather per step)
        if self.fsdp:
            self.full_policy = self._frozen_copy()
            if isinstance(self.rollout, LocalRollout):
                self.rollout.policy = self.full_policy
            fsdp.shard(self.policy.decoder, self.device)
            if self.ref_policy is not None:
                fsdp.shard(self.ref_policy.decoder, self.device)
        elif self.dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel
            self.model = DistributedDataParallel(self.policy.decoder)
        self.optimizer = torch.optim.AdamW(self.policy.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                           betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.step = 0
        if cfg.resume:
            self._resume()
        self.metrics = self.completions = None
        if self.dist.main:
            os.makedirs(cfg.output, exist_ok=True)
            with open(os.path.join(cfg.output, "config.toml"), "w") as f:
                f.write(to_toml(cfg))
            self.metrics = MetricsWriter(cfg.output, cfg.tensorboard, resume_step=self.step)
            if cfg.log_completions:
                self.completions = CompletionLog(cfg.output, cfg.log_completions, resume_step=self.step)

    def close(self):
        """Ends the run's process group (a no-op in one process). DDP's reducer
        holds a reference to the group, so the wrapper goes first: otherwise
        the group outlives destroy_process_group and its Gloo threads are torn
        down during interpreter exit, which aborted a rank in ~1 run of 30
        (docs/design.md section 6.7)."""
        self.model = self.policy.decoder
        gc.collect()
        self.dist.close()

    # ------------------------------------------------------------------ setup
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

    def _frozen_copy(self):
        ref = copy.copy(self.policy)
        ref.decoder = copy.deepcopy(self.policy.decoder).eval().requires_grad_(False)
        return ref

    def _lr_factor(self, step: int) -> float:
        cfg = self.cfg
        if step < cfg.warmup_steps:
            return (step + 1) / (cfg.warmup_steps + 1)
        if cfg.lr_schedule == "constant":
            return 1.0
        t = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))

    def _full(self):
        """The policy with whole weights on this rank: itself, or under FSDP the unsharded copy
        refreshed from the shards (an all-gather: every rank calls it)."""
        if not self.fsdp:
            return self.policy
        if self._full_step != self.step:  # the weights change only in _update, before step += 1
            state = fsdp.full_state_dict(self.policy.decoder)
            with torch.no_grad():
                for name, t in self.full_policy.decoder.state_dict().items():
                    t.copy_(state[name])
            self._full_step = self.step
        return self.full_policy

    # ------------------------------------------------------------------ checkpoints
    def save(self) -> Optional[str]:
        """Writes OUTPUT/checkpoint-STEP (rank 0; under FSDP every rank writes its optimizer
        shard into it) and prunes old ones. Every rank calls it."""
        cfg, path = self.cfg, None
        state = {"scheduler": self.scheduler.state_dict(), "config": to_toml(cfg)}
        if not self.fsdp:
            if self.dist.main:
                state["optimizer"] = self.optimizer.state_dict()
                path = ckpt.save_checkpoint(cfg.output, self.step, self.policy, state, cfg.keep_checkpoints)
        else:
            full = self._full()
            tmp = ckpt.temp_path(cfg.output, self.step)
            if self.dist.main:
                ckpt.begin_checkpoint(cfg.output, self.step, full)
            torch.distributed.barrier()
            fsdp.save_optimizer(self.policy.decoder, self.optimizer, os.path.join(tmp, OPTIMIZER_DIR))
            if self.dist.main:
                path = ckpt.finish_checkpoint(cfg.output, self.step, tmp, state, cfg.keep_checkpoints)
        if self.dist.world > 1:
            torch.distributed.barrier()
        return path

    def _resume(self):
        path = ckpt.latest_checkpoint(self.cfg.output)
        if path is None:
            return  # nothing to resume: a fresh run
        from ..model import load
        saved = load(path, dtype=self.policy.dtype)
        state = ckpt.load_trainer_state(path)
        sharded = os.path.isdir(os.path.join(path, OPTIMIZER_DIR))
        if sharded != self.fsdp:
            raise ValueError(f"{path}: its optimizer state is {'sharded (FSDP under torchrun)' if sharded else 'whole'}; "
                             f"resume it with parallel = '{'fsdp' if sharded else 'ddp'}'"
                             + (" and the same torchrun" if sharded else ""))
        if self.fsdp:
            fsdp.load_full_state_dict(self.policy.decoder, saved.decoder.state_dict())
            fsdp.load_optimizer(self.policy.decoder, self.optimizer, os.path.join(path, OPTIMIZER_DIR))
        else:
            self.policy.decoder.load_state_dict(saved.decoder.state_dict())
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        ckpt.set_rng_state(state["rng"])
        self.step = int(state["step"])

    # ------------------------------------------------------------------ loop
    def train(self) -> list[dict]:
        cfg = self.cfg
        bar = Progress(cfg.max_steps, "train", cfg.progress)
        bar.done = self.step
        history = []
        try:
            if self.sync and self.step < cfg.max_steps:
                self._sync_rollout()  # the server may hold other weights (its own start, a resumed run)
            while self.step < cfg.max_steps:
                m = self.train_step()
                history.append(m)
                bar.update(1, loss=m["loss"], acc=m["accuracy"], neg=m["all_negative_frac"])
                if self.step % cfg.save_every == 0 or self.step == cfg.max_steps:
                    self.save()
        finally:
            bar.close()
            for log in (self.metrics, self.completions):
                if log:
                    log.close()
        return history

    def train_step(self) -> dict:
        cfg, s = self.cfg, self.step
        t_start = time.perf_counter()
        examples = self.source.batch(s, cfg.prompts_per_step)
        share = self.dist.share(len(examples))
        mine = [examples[i] for i in share]
        seeds = mix_seeds(mix_seeds(cfg.seed, s), torch.tensor(list(share))).tolist()

        t0 = time.perf_counter()
        if self.fsdp and isinstance(self.rollout, LocalRollout):
            self._full()  # the rollout copy takes this step's weights
        groups = self.rollout(mine, seeds) if mine else []
        t_rollout = time.perf_counter() - t0
        lag = self._weight_version_lag(groups)

        rew = self._rewards(mine, groups)
        if self.completions and mine:
            self.completions.write(s + 1, mine, groups, rew["sgpo"], rew["adv"].advantages, self.policy.tokenizer)
        t1 = time.perf_counter()
        batch = self._batch(mine, groups, rew)
        update = self._update(batch)
        t_update = time.perf_counter() - t1
        self.step += 1
        t_sync = self._sync_rollout() if self.sync else None
        metrics = self._metrics(mine, groups, rew, batch, update, t_rollout, t_update,
                                time.perf_counter() - t_start)
        if self.cfg.rollout == "openai":
            metrics["weight_version_lag"] = lag
            if t_sync is not None:
                metrics["rollout_sync_seconds"] = t_sync
        if self.task.has_evaluation and cfg.eval_every and self.step % cfg.eval_every == 0:
            metrics.update(self.evaluate())
        if self.metrics:
            self.metrics.write(metrics)
        return metrics

    # ------------------------------------------------------------------ external rollout server
    def _sync_rollout(self) -> float:
        """Rank 0 makes the server load this step's weights (weight_version = self.step); every
        rank raises RolloutSyncError if that failed. Returns the seconds it took."""
        seconds, error = 0.0, None
        policy = self._full()
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

    # ------------------------------------------------------------------ rewards
    def _rewards(self, examples: list[Example], groups) -> dict:
        """Verifier + judge (in scope) -> group_advantages, for this rank's groups."""
        cfg = self.cfg
        if not examples:
            return {}
        problems = [e.prompt if isinstance(e.prompt, str) else e.prompt[-1]["content"] for e in examples]
        refs = [e.reference for e in examples]
        out = sgpo_rewards(problems, groups, [e.answer for e in examples], self.judge, references=refs,
                           scope=cfg.scope, correct_reward=cfg.correct_reward,
                           incorrect_reward=cfg.incorrect_reward, verifier=self.verifier)
        adv = ops.group_advantages(out.rewards, group_offsets=out.group_offsets, correct=out.correct,
                                   rts=out.rts, scope=cfg.scope, credit=cfg.credit, beta=cfg.credit_beta,
                                   gamma=cfg.credit_gamma, credit_scale=cfg.credit_scale, scale=cfg.adv_scale,
                                   eps=cfg.adv_eps, credited_std_floor=cfg.credited_std_floor)
        # sgpo_rewards judges only the incorrect responses in scope: a judged RTS is a credited one
        credited = ~torch.isnan(out.rts)
        keep = torch.ones_like(out.correct)
        if cfg.filter_zero_std_groups:
            keep = (adv.group_std > 0).repeat_interleave(out.group_offsets.diff())
        return {"sgpo": out, "adv": adv, "credited": credited, "keep": keep}

    # ------------------------------------------------------------------ update
    def _batch(self, examples, groups, rew) -> dict:
        """Right-padded training tensors of the kept completions:
        input_ids, targets [N, T] int64, mask [N, T] float (1 = completion token),
        advantages [N] (credit_assignment "sequence") or [N, T] ("prefix"),
        old_logp [N, T] (the sampler's, or None to recompute)."""
        flat = [c for g in groups for c in g]
        kept = [i for i, k in enumerate(rew["keep"].tolist()) if k and flat[i].token_ids] if flat else []
        adv = rew["adv"].advantages[kept] if flat else torch.zeros(0)
        seqs = [(flat[i].prompt_ids, flat[i].token_ids) for i in kept]
        olds = [flat[i].logprobs for i in kept]
        servers = [flat[i].server_logprobs for i in kept]
        N = len(seqs)
        T = max((len(p) + len(t) - 1 for p, t in seqs), default=1)
        input_ids = torch.zeros(N, T, dtype=torch.int64)
        targets = torch.zeros(N, T, dtype=torch.int64)
        mask = torch.zeros(N, T)
        old = torch.zeros(N, T)
        have_old = all(o is not None for o in olds) and not self.cfg.recompute_old_logp
        have_server = all(x is not None for x in servers) and self.cfg.rollout_is != "none" \
            and self.cfg.rollout == "openai"
        server = torch.zeros(N, T)
        for i, (p, t) in enumerate(seqs):
            ids = p + t
            L = len(ids) - 1
            input_ids[i, :L] = torch.tensor(ids[:-1])
            targets[i, :L] = torch.tensor(ids[1:])
            mask[i, len(p) - 1:L] = 1.0  # positions whose target is a completion token
            if have_old:
                old[i, len(p) - 1:L] = torch.tensor(olds[i], dtype=torch.float32)
            if have_server:
                server[i, len(p) - 1:L] = torch.tensor(servers[i], dtype=torch.float32)
        fallbacks = 0
        if self.cfg.credit_assignment == "prefix" and N:
            out = rew["sgpo"]
            reach, fallbacks = prefix_reach([flat[i] for i in kept], [out.verdicts[i] for i in kept],
                                            rew["credited"][kept].tolist(), adv.tolist(), self.policy.tokenizer,
                                            getattr(self.judge, "step_mode", self.cfg.step_mode))
            starts = torch.tensor([len(p) - 1 for p, _ in seqs])  # where each completion's first token is predicted
            adv = token_advantages(adv, torch.tensor(reach), starts, T)
        dev = self.device
        return {"input_ids": input_ids.to(dev), "targets": targets.to(dev), "mask": mask.to(dev),
                "advantages": adv.to(dev, torch.float32), "old_logp": old.to(dev) if have_old else None, "n": N,
                "server_logp": server.to(dev) if have_server else None, "credit_fallbacks": fallbacks}

    def _hidden(self, model, input_ids):
        return model(input_ids)  # [b, T, H]

    @torch.no_grad()
    def _logprobs(self, policy, input_ids, targets):
        hidden = policy.hidden_states(input_ids)
        return ops.fused_logprobs(hidden, policy.lm_head_weight, targets, temperature=self.cfg.temperature)

    def _update(self, batch) -> dict:
        cfg, dist = self.cfg, self.dist
        n = batch["n"]
        n_global, tok_global = dist.sum([float(n), float(batch["mask"].sum())])
        stats = {"loss": 0.0, "clip_ratio_low": 0.0, "clip_ratio_high": 0.0, "kl_mean": 0.0, "grad_norm": 0.0}
        stats["lr"] = self.scheduler.get_last_lr()[0]  # the lr this update uses
        if self.ref_policy is None:
            stats["kl_mean"] = float("nan")
        if n_global == 0:  # nothing to learn from (all groups filtered)
            with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()": on purpose
                warnings.simplefilter("ignore", UserWarning)
                self.scheduler.step()  # the schedule follows the step count, updates or not
            return stats
        self.model.train()
        micro = self._micro_batches(n)
        need_old = batch["old_logp"] is None  # external rollouts or recompute_old_logp: the rollout policy now
        if self.fsdp:  # forwards are collectives: all ranks score, or none
            need_old = dist.sum([float(need_old)])[0] > 0
        if need_old:
            old = self._score(self.policy, batch, micro)
            batch["old_logp"] = old if batch["old_logp"] is None else batch["old_logp"]
        use_is = batch["server_logp"] is not None  # an external server sampled: correct toward the old policy
        if dist.world > 1:  # every rank or none: the correction's statistics are collectives
            use_is = dist.sum([float(use_is)])[0] == dist.world
        if use_is:
            stats.update(self._rollout_is(batch))
        ref_logp = self._score(self.ref_policy, batch, micro) if self.ref_policy is not None else None
        # Each micro-batch contributes its exact share of the global loss: token-
        # normalized losses divide by the global token count, sequence-normalized
        # ones scale by their share of sequences. x world undoes DDP's averaging.
        token_norm = cfg.loss_type in ("dapo", "bnpo", "cispo")
        loss_type = "dapo" if cfg.loss_type in ("dapo", "bnpo") else cfg.loss_type
        for epoch in range(cfg.mu):
            gen = torch.Generator().manual_seed(int(mix_seeds(mix_seeds(cfg.seed, self.step), 1000 + epoch)) & _POS)
            order = torch.randperm(n, generator=gen).to(self.device)
            self.optimizer.zero_grad(set_to_none=True)
            if not micro and dist.world > 1:
                self._empty_backward()  # this rank has no sequences; the others still all-reduce
            for j, idx in enumerate(micro):
                sync = j == len(micro) - 1 or dist.world == 1
                if self.fsdp:
                    self.model.set_requires_gradient_sync(sync)
                if idx is None:  # FSDP padding: this rank ran out of sequences
                    self._empty_backward()
                    continue
                rows = order[idx.to(self.device)]
                ctx = self.model.no_sync() if not sync and not self.fsdp else contextlib.nullcontext()
                with ctx:
                    hidden = self._hidden(self.model, batch["input_ids"][rows])
                    weight = fsdp.gathered_lm_head(self.policy.lm_head_weight) if self.fsdp else self.policy.lm_head_weight
                    loss, met = ops.fused_policy_loss(
                        hidden, weight, batch["targets"][rows], batch["mask"][rows],
                        batch["advantages"][rows], old_logp=batch["old_logp"][rows],
                        ref_logp=None if ref_logp is None else ref_logp[rows], beta=cfg.beta,
                        eps_low=cfg.eps_low, eps_high=cfg.eps_high, delta=cfg.delta,
                        sapo_temperature_pos=cfg.sapo_temperature_pos,
                        sapo_temperature_neg=cfg.sapo_temperature_neg,
                        use_bias_correction_kl=cfg.use_bias_correction_kl, loss_type=loss_type,
                        importance_sampling_level=cfg.importance_sampling_level, temperature=cfg.temperature,
                        max_completion_length=cfg.max_new_tokens,
                        num_items_in_batch=tok_global if token_norm else None)
                    share = 1.0 if token_norm else len(rows) / n_global
                    (loss * (share * dist.world)).backward()
                if epoch == cfg.mu - 1:
                    t = float(batch["mask"][rows].sum())
                    stats["loss"] += float(loss.detach()) * share
                    for k in ("clip_ratio_low", "clip_ratio_high", "kl_mean"):
                        if k in met:
                            stats[k] += float(met[k]) * t
            # max_grad_norm 0 means no clipping (as in transformers), not zeroed gradients
            norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(),
                                                  cfg.max_grad_norm if cfg.max_grad_norm > 0 else math.inf)
            self.optimizer.step()
            stats["grad_norm"] = fsdp.grad_norm_value(norm) if self.fsdp else float(norm)
        self.scheduler.step()
        total = dist.sum([stats["loss"], stats["clip_ratio_low"], stats["clip_ratio_high"], stats["kl_mean"]])
        stats["loss"] = total[0]
        for k, v in zip(("clip_ratio_low", "clip_ratio_high", "kl_mean"), total[1:]):
            stats[k] = v / max(tok_global, 1.0)
        if self.ref_policy is None:
            stats["kl_mean"] = float("nan")
        return stats

    def _micro_batches(self, n: int) -> list:
        """Row ranges of this rank's micro-batches; under FSDP padded with None up to the
        largest count of any rank, so every rank runs the same forwards and backwards."""
        micro = [torch.arange(i, min(i + self.cfg.micro_batch_size, n)) for i in range(0, n, self.cfg.micro_batch_size)]
        if self.fsdp:
            most = int(max(self.dist.all_gather_floats([float(len(micro))])))
            micro += [None] * (most - len(micro))
        return micro

    def _score(self, policy, batch, micro) -> torch.Tensor:
        """Log-probs [N, T] of the batch's targets under `policy`, micro-batch by micro-batch
        (a padding entry runs an empty forward: the other ranks' all-gathers need it)."""
        out = torch.zeros_like(batch["mask"])
        for idx in micro:
            if idx is None:
                self._logprobs(policy, torch.zeros(1, 1, dtype=torch.int64, device=self.device),
                               torch.zeros(1, 1, dtype=torch.int64, device=self.device))
            else:
                out[idx] = self._logprobs(policy, batch["input_ids"][idx], batch["targets"][idx])
        return out

    def _rollout_is(self, batch) -> dict:
        """Scales batch["advantages"] by the truncated importance weights (rollout_is) and returns
        the raw ratios' global mean, min and max over completion tokens, and the share capped."""
        cfg, mask = self.cfg, batch["mask"]
        w, ratio = rollout_is_weights(batch["old_logp"], batch["server_logp"], mask, cfg.rollout_is,
                                      cfg.rollout_is_cap)
        adv = batch["advantages"]
        batch["advantages"] = (adv[:, None] if adv.dim() == 1 else adv) * w
        on = mask > 0
        r = ratio[on].double()
        total, count, capped = self.dist.sum([float(r.sum()), float(on.sum()), float((r > cfg.rollout_is_cap).sum())])
        lo_hi = self.dist.all_gather_floats([float(r.min()) if r.numel() else math.inf,
                                             float(r.max()) if r.numel() else -math.inf])
        return {"is_ratio_mean": total / max(count, 1.0), "is_ratio_min": min(lo_hi[0::2]),
                "is_ratio_max": max(lo_hi[1::2]), "is_capped_frac": capped / max(count, 1.0)}

    def _empty_backward(self):
        """A zero-loss backward through the DDP model and the LM head: every
        parameter gets a zero gradient and this rank joins the gradient
        all-reduce of a step in which it has nothing to train on."""
        hidden = self.model(torch.zeros(1, 1, dtype=torch.int64, device=self.device))  # [1, 1, H]
        (hidden.sum() * 0.0 + self.policy.lm_head_weight.sum() * 0.0).backward()

    # ------------------------------------------------------------------ metrics
    def _metrics(self, examples, groups, rew, batch, update, t_rollout, t_update, t_step) -> dict:
        flat = [c for g in groups for c in g]
        sums = dict.fromkeys(("responses", "correct", "reward", "sgpo_reward", "all_negative", "groups", "credited",
                              "rts", "judged", "judge_failures", "response_tokens", "adv_abs_credited",
                              "credited_group_responses", "adv_abs_mixed", "mixed_group_responses"), 0.0)
        if flat:
            out, adv = rew["sgpo"], rew["adv"]
            judged = ~torch.isnan(out.rts)
            sums.update(responses=float(len(flat)), correct=float(out.correct.sum()),
                        reward=float(out.rewards.sum()), sgpo_reward=float(adv.rewards.sum()),
                        all_negative=float(adv.all_negative.sum()), groups=float(len(examples)),
                        credited=float(rew["credited"].sum()), rts=float(out.rts[judged].sum()),
                        judged=float(judged.sum()), judge_failures=float(out.failed),
                        response_tokens=float(sum(len(c.token_ids) for c in flat)))
            sums.update(self._advantage_scale(out, adv, rew["credited"]))
        sums["train_tokens"] = float(batch["input_ids"].numel())
        sums["credit_fallbacks"] = float(batch["credit_fallbacks"])
        g, task = self.dist.sum_named(sums, self.task.metric_sums(examples, groups))
        times = self.dist.all_gather_floats([t_rollout, t_update])  # per rank: rollout, update
        t_roll, t_upd = max(times[0::2]), max(times[1::2])
        n = max(g["responses"], 1.0)
        m = {
            "step": self.step, "loss": update["loss"],
            "reward_mean": g["reward"] / n, "sgpo_reward_mean": g["sgpo_reward"] / n, "accuracy": g["correct"] / n,
            "all_negative_frac": g["all_negative"] / max(g["groups"], 1.0), "credited_frac": g["credited"] / n,
            "rts_mean": g["rts"] / g["judged"] if g["judged"] else float("nan"),
            "judge_failures": int(g["judge_failures"]),
            "clip_ratio_low": update["clip_ratio_low"], "clip_ratio_high": update["clip_ratio_high"],
            "kl_mean": update["kl_mean"], "grad_norm": update["grad_norm"],
            "lr": update["lr"],
            **{k: update[k] for k in ("is_ratio_mean", "is_ratio_min", "is_ratio_max", "is_capped_frac")
               if k in update},
            "response_len_mean": g["response_tokens"] / n,
            "rollout_tokens_per_s": g["response_tokens"] / max(t_roll, 1e-9),
            "train_tokens_per_s": g["train_tokens"] / max(t_upd, 1e-9),
            "step_seconds": t_step,
        }
        for kind in ("credited", "mixed"):  # the phantom-gradient gauge: |advantage| by kind of group
            count = g[f"{kind}_group_responses"]
            m[f"adv_abs_{kind}"] = g[f"adv_abs_{kind}"] / count if count else float("nan")
        if self.cfg.credit_assignment == "prefix":  # judged responses whose steps did not map onto tokens
            m["credit_fallbacks"] = int(g["credit_fallbacks"])
        m.update(self.task.metrics(task))
        return m

    @staticmethod
    def _advantage_scale(out, adv, credited) -> dict:
        """Sums of |advantage| over the responses of credited groups (some partial credit) and of
        mixed groups (correct and incorrect responses), and their counts."""
        sizes = out.group_offsets.diff()
        in_credited = torch.zeros(len(sizes), dtype=torch.bool).index_put_(
            (torch.repeat_interleave(torch.arange(len(sizes)), sizes)[credited],), torch.tensor(True))
        correct_count = torch.zeros(len(sizes)).index_add_(
            0, torch.repeat_interleave(torch.arange(len(sizes)), sizes), out.correct.float())
        mixed = (correct_count > 0) & (correct_count < sizes)
        a = adv.advantages.abs()
        per = lambda flags: flags.repeat_interleave(sizes)
        return {"adv_abs_credited": float(a[per(in_credited)].sum()),
                "credited_group_responses": float(per(in_credited).sum()),
                "adv_abs_mixed": float(a[per(mixed)].sum()), "mixed_group_responses": float(per(mixed).sum())}

    def evaluate(self, n: Optional[int] = None) -> dict:
        """The task's held-out evaluation (n problems per difficulty, default
        eval_problems): rank 0 computes, the other ranks return {}."""
        policy = self._full()  # under FSDP an all-gather: every rank calls evaluate
        return self.task.evaluate(policy, n or self.cfg.eval_problems) if self.dist.main else {}
