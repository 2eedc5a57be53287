"""Per-step SOD records written during training (``sod_sync`` trainer) for ``verl_sod.report``."""
