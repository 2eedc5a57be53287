"""The CPU path: tiny local assets (and, later, the CPU platform and `hf` rollout backend)."""
