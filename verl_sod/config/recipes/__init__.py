"""The paper recipes' shared hydra configs (``pkg://verl_sod.config.recipes``).

``recipes/NAME/NAME.yaml`` puts this package on its search path and composes from it: ``paper/rl``
(the settings the four RL recipes share: data, actor, rollout, tools, reward, trainer), ``paper/distill``
(``paper/rl`` plus the teacher's pool, for SOD and OPD), ``paper/megatron`` (verl's Megatron engine) and
``student/qwen3-*`` (the student model, for the RL and the SFT recipes alike). A package of its own, so
that the SFT recipe (verl's ``sft_trainer`` config) reaches ``student/`` without verl_sod's RL groups.
"""
