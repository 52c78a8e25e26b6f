"""TRL's GRPOTrainer with its policy loss replaced by ops.fused_policy_loss.

    from sgpo_engine.integrations.trl import SGPOGRPOTrainer, SGPOReward
    trainer = SGPOGRPOTrainer(model=..., reward_funcs=[SGPOReward(judge)], args=GRPOConfig(...),
                              train_dataset=...)             # GRPOTrainer's constructor, unchanged

Only `_compute_loss` changes. TRL scores the completion tokens with its
chunked log-prob head and then builds the loss from [B, T] log-probs; here the
backbone's last hidden states and the LM-head weight go straight into the
fused op, which computes the loss and its gradients in one pass over the
vocabulary (docs/design.md section 3.2). The formulas are TRL 1.16's, loss
type by loss type (grpo, bnpo, dr_grpo, dapo, cispo, sapo), at token or
sequence level, with clip-higher (epsilon_high), delta, and beta against TRL's
reference model (with or without use_bias_correction_kl); tests/test_integration_trl.py checks loss and gradients
against GRPOTrainer's own on the same batch.

Advantages of shape [B, T] are passed through as TRL itself does. With an
SGPOReward(credit_assignment="prefix") among the reward functions, the trainer
makes them: `_generate_and_score_completions` collects that reward's scores of
the batch (`SGPOReward.collect`) and turns TRL's [B] advantages into
step-level credit (docs/design.md 1.6, credit.py) from their verdicts.

vLLM's importance-sampling correction (all four modes) scales the advantages
by TRL's truncated ratios, which is TRL's formula (see _compute_loss); only
the clip metrics differ: a token whose ratio is masked to 0 is never counted
as clipped here.

The features the op does not have fall back to TRL's own loss for the whole
run, with one warning: loss types luspo and vespo, top_entropy_quantile < 1,
off_policy_mask_threshold, the entropy bonus, MoE aux losses, multimodal inputs, tool masks
and logit soft-capping / scaling. The `entropy` metric is not logged on the
fused path (the op does not compute it); the clip and KL metrics are.
"""
from __future__ import annotations

import warnings

import torch
from trl import GRPOTrainer

from ... import ops
from .credit import prefix_advantages
from .reward import SGPOReward

FUSED_LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo")
_TOKEN_NORMALIZED = ("dapo", "cispo")  # divided by TRL's num_items_in_batch, not a per-batch count


class SGPOGRPOTrainer(GRPOTrainer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._fused_unsupported = self._unsupported_features()
        if self._fused_unsupported:
            warnings.warn(f"SGPOGRPOTrainer: {', '.join(self._fused_unsupported)}: using TRL's own loss "
                          "(the fused loss does not support this)", stacklevel=2)

    def _generate_and_score_completions(self, inputs):
        prefix = [f for f in self.reward_funcs if isinstance(f, SGPOReward) and f.credit_assignment == "prefix"]
        if not prefix:
            return super()._generate_and_score_completions(inputs)
        with prefix[0].collect() as calls:  # the reward's scores of this batch, verdicts included
            out = super()._generate_and_score_completions(inputs)
        if not calls:  # TRL did not score this batch with it: nothing to bound
            return out
        out["advantages"] = prefix_advantages(out["advantages"], calls[-1], out["completion_ids"],
                                              out["completion_mask"], self._offsets_tokenizer(), prefix[0].step_mode)
        return out

    def _offsets_tokenizer(self):
        """sgpo_engine's Tokenizer over the processing class's fast tokenizer (decode_with_offsets)."""
        if not hasattr(self, "_sgpo_tokenizer"):
            from ...model.tokenizer import Tokenizer
            hf = getattr(self.processing_class, "tokenizer", self.processing_class)
            if not hasattr(hf, "backend_tokenizer"):
                raise ValueError("processing_class: prefix credit needs a fast (tokenizers-backed) tokenizer")
            self._sgpo_tokenizer = Tokenizer(hf.backend_tokenizer)
        return self._sgpo_tokenizer

    def _unsupported_features(self) -> list[str]:
        text = self.model.config.get_text_config()
        checks = [
            (self.loss_type not in FUSED_LOSS_TYPES, f"loss_type={self.loss_type!r}"),
            (self.top_entropy_quantile < 1.0, "top_entropy_quantile < 1"),
            (self.off_policy_mask_threshold is not None, "off_policy_mask_threshold"),
            (getattr(self, "_entropy_bonus_enabled", False), "the entropy bonus"),
            (getattr(self, "aux_loss_enabled", False), "MoE aux loss"),
            (getattr(text, "final_logit_softcapping", None) is not None, "final_logit_softcapping"),
            (any(getattr(text, k, None) not in (None, 1.0)
                 for k in ("logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling")),
             "scaled logits"),
        ]
        return [name for bad, name in checks if bad]

    def _compute_loss(self, model, inputs):
        if self._fused_unsupported or "tool_mask" in inputs or inputs.get("pixel_values") is not None:
            return super()._compute_loss(model, inputs)
        prompt_ids, prompt_mask = inputs["prompt_ids"], inputs["prompt_mask"]
        completion_ids, mask = inputs["completion_ids"], inputs["completion_mask"]  # [B, T]
        T = completion_ids.size(1)
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)                   # [B, P + T]
        attention_mask = torch.cat([prompt_mask, mask], dim=1)
        unwrapped = self.accelerator.unwrap_model(model)
        if hasattr(unwrapped, "peft_config"):  # PEFT: the causal LM with its adapters injected
            unwrapped = unwrapped.get_base_model()
        backbone = unwrapped.base_model            # transformers' backbone: model.model for Llama/Qwen
        with self.accelerator.autocast():
            last = backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        hidden = last[:, -T - 1:-1]                      # [B, T, H]: the positions that predict the completion
        head = unwrapped.get_output_embeddings()
        hidden = hidden.to(head.weight.dtype)

        mode = "train" if self.model.training else "eval"
        accumulation = self.current_gradient_accumulation_steps if mode == "train" else 1.0
        num_items = None
        if self.loss_type in _TOKEN_NORMALIZED:  # TRL's normalizer, rescaled to one accumulation window
            num_items = inputs["num_items_in_batch"].clamp(min=1.0) / self.accelerator.num_processes
            if mode == "train":
                num_items = num_items * self.current_gradient_accumulation_steps / self.args.steps_per_generation
        advantages = inputs["advantages"]
        if self.use_vllm and self.vllm_importance_sampling_correction and "importance_sampling_ratio" in inputs:
            # TRL multiplies the surrogate (not the KL term) by the truncated IS ratio [B, T] or [B, 1]:
            # every surrogate is linear in a positive scale of the advantage, so scale the advantages
            adv = advantages if advantages.dim() == 2 else advantages[:, None]
            advantages = (adv * inputs["importance_sampling_ratio"]).expand(-1, T)
        loss, metrics = ops.fused_policy_loss(
            hidden, head.weight, completion_ids, mask, advantages, bias=head.bias,
            old_logp=inputs.get("old_per_token_logps"),
            ref_logp=inputs["ref_per_token_logps"] if self.beta != 0.0 else None, beta=self.beta,
            eps_low=self.epsilon_low, eps_high=self.epsilon_high, delta=self.args.delta,
            sapo_temperature_pos=self.args.sapo_temperature_pos, sapo_temperature_neg=self.args.sapo_temperature_neg,
            use_bias_correction_kl=self.args.use_bias_correction_kl,
            loss_type=self.loss_type, importance_sampling_level=self.importance_sampling_level,
            temperature=self.temperature, max_completion_length=self.max_completion_length,
            num_items_in_batch=None if num_items is None else float(num_items))
        if self.loss_type not in _TOKEN_NORMALIZED:
            loss = loss / accumulation
        self._log_fused_metrics(mode, loss, metrics, mask, accumulation)
        return loss

    def _log_fused_metrics(self, mode, loss, metrics, mask, accumulation):
        """The metrics TRL logs, from the op's mask-weighted means, reduced over processes."""
        policy_loss = loss.detach() * (1.0 if self.loss_type in _TOKEN_NORMALIZED else accumulation)
        self._metrics[mode]["policy_loss"].append(self.accelerator.gather(policy_loss).nanmean().item())
        tokens = mask.sum().float()

        def global_mean(local_mean):
            totals = self.accelerator.reduce(torch.stack([local_mean.detach() * tokens, tokens]), reduction="sum")
            return (totals[0] / totals[1].clamp(min=1.0)).item()

        if self.beta != 0.0:
            self._metrics[mode]["kl"].append(global_mean(metrics["kl_mean"]))
        if self.loss_type == "cispo":
            self._metrics[mode]["cispo_clip_ratio"].append(global_mean(metrics["clip_ratio_high"]))
        elif self.loss_type != "sapo":
            low, high = global_mean(metrics["clip_ratio_low"]), global_mean(metrics["clip_ratio_high"])
            self._metrics[mode]["clip_ratio/low_mean"].append(low)
            self._metrics[mode]["clip_ratio/high_mean"].append(high)
            self._metrics[mode]["clip_ratio/region_mean"].append(low + high)  # disjoint: A < 0 vs A > 0
