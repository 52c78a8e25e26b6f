"""Adapters for other trainers: sgpo_engine.integrations.trl (TRL GRPOTrainer)."""
