"""Multi-seed paired studies of arms (preset + step weighting) on one task setting.

``python -m verl_sod.study run SPEC.yaml [--out DIR]`` runs every (arm, seed) through the same
launcher users use, one at a time and resumable (:mod:`.run`); ``python -m verl_sod.study report DIR``
turns the per-run summaries into paired, Holm-corrected contrasts with plots (:mod:`.report`).
The spec format: :mod:`.spec`; see ``docs/studies/``.
"""
