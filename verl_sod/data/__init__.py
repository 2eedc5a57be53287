"""Data preparation: benchmark and training files -> verl RL parquet with SOD's tool prompt, and
cold-start SFT chats -> verl multi-turn SFT parquet (:mod:`verl_sod.data.sft`).

``python -m verl_sod.data prepare NAME --input PATH --output DIR`` (see :mod:`verl_sod.data.__main__`);
formats and options are described in docs/rewards-and-data.md.
"""
