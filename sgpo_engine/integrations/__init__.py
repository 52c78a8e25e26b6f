"""Adapters for other trainers: sgpo_engine.integrations.trl (TRL's GRPOTrainer: SGPOReward,
SGPOGRPOTrainer) and sgpo_engine.integrations.verl (verl's "sgpo" estimator and reward manager)."""
