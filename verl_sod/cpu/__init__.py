"""verl on a machine with no accelerator: the `cpu` platform, the `hf` rollout backend, verl patches."""
