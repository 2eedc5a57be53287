"""Issue 16/17: every bad input a new user tried gets one actionable line (or a warning), nothing is
silently ignored, bad rows never take good rows with them, and no temporary file survives a failure.

Three tables, one row per case of the issues: the launch (composed config -> preflight), data
preparation, and scoring / evaluation reports.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from verl_sod.data import prepare as prepare_mod
from verl_sod.data.prepare import prepare
from verl_sod.preflight import ConfigError, LaunchContext, given_keys, preflight, required_keys
from verl_sod.preflight import files as preflight_files
from verl_sod.tiny import assets

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "sod" / "sod.yaml"
TOOL_CONFIG = ROOT / "verl_sod" / "config" / "tools" / "code_interpreter.yaml"
DIST = "distillation.teacher_models.teacher_model"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Tiny student/teacher dirs, another vocabulary, an empty dir, a dir without tokenizer, data."""
    root = tmp_path_factory.mktemp("bad_input")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VERL_SOD_CACHE", str(root))
        student = assets.build_model(assets.STUDENT)
        teacher = assets.build_model(assets.TEACHER)
        other = root / "other-vocab"
        tok = assets.build_tokenizer()
        tok.add_tokens(["<extra_token>"])
        tok.save_pretrained(other)
    shutil.copy(teacher / "config.json", other / "config.json")
    (root / "empty").mkdir()
    (root / "no-tokenizer").mkdir()
    shutil.copy(teacher / "config.json", root / "no-tokenizer" / "config.json")
    data = root / "train.parquet"
    pq.write_table(pa.Table.from_pylist([{"prompt": [{"role": "user", "content": "1+1?"}]}]), data)
    raw = root / "raw.parquet"
    pq.write_table(pa.Table.from_pylist([{"Problem": "1+1?", "Answer": 2}]), raw)
    return {"student": student, "teacher": teacher, "other": other, "data": data, "raw": raw, "root": root}


def _hub_cache(root: Path, repo: str, source: Path) -> Path:
    """A Hugging Face cache holding ``repo`` as a snapshot copied from ``source``."""
    cache = root / "hf-cache"
    folder = cache / ("models--" + repo.replace("/", "--"))
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text("c0ffee")
    snapshot = folder / "snapshots" / "c0ffee"
    if not snapshot.exists():
        shutil.copytree(source, snapshot)
    return cache


def _base(files: dict, recipe: bool) -> dict[str, str]:
    base = {
        "actor_rollout_ref.model.path": str(files["student"]),
        "data.train_files": str(files["data"]),
        "data.val_files": str(files["data"]),
        "+actor_rollout_ref.model.override_config.attn_implementation": "sdpa",
        f"{DIST}.model_path": str(files["teacher"]),
        "distillation.n_gpus_per_node": "1",
        "distillation.nnodes": "1",
        f"{DIST}.inference.tensor_model_parallel_size": "1",
        "actor_rollout_ref.rollout.name": "vllm",
        "actor_rollout_ref.rollout.multi_turn.tool_config_path": str(TOOL_CONFIG),
    }
    if recipe:
        base["platform"] = "cpu"
        del base["+actor_rollout_ref.model.override_config.attn_implementation"]
    return base


def _compose(files: dict, recipe: bool, drop: tuple[str, ...], add: dict[str, str]):
    from hydra import compose, initialize_config_dir, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    values = {k: v for k, v in _base(files, recipe).items() if k not in drop}
    values.update({k: v.format(**files) for k, v in add.items()})
    overrides = [f"{k}={v}" for k, v in values.items()]
    GlobalHydra.instance().clear()
    if recipe:
        with initialize_config_dir(config_dir=str(RECIPE.parent), version_base=None):
            config = compose(config_name=RECIPE.stem, overrides=overrides)
        return config, LaunchContext(required_keys(RECIPE), given_keys(overrides), str(RECIPE))
    with initialize_config_module(config_module="verl_sod.config", version_base=None):
        config = compose(config_name="verl_sod", overrides=["preset=sod", *overrides])
    return config, LaunchContext()


TOOL = "actor_rollout_ref.rollout.multi_turn.tool_config_path"
# (issue case, recipe?, keys dropped from the base, overrides added, error regex or None = passes)
LAUNCH_CASES = [
    (
        "recipe-without-train-files",
        True,
        ("data.train_files",),
        {},
        r"data.train_files is required by .*sod.yaml",
    ),
    (
        "recipe-without-val-files",
        True,
        ("data.val_files",),
        {},
        r"data.val_files is required by .*\(marked \?\?\?\)",
    ),
    ("recipe-without-tool-config", True, (TOOL,), {}, r"tool_config_path is required .* default None"),
    (
        "preset-on-verl-default-data",
        False,
        ("data.train_files", "data.val_files"),
        {},
        r"data.train_files=~/data/rlhf/gsm8k/train.parquet: no such file \(verl's default",
    ),
    (
        "data-file-missing",
        False,
        (),
        {"data.val_files": "/no/such/val.parquet"},
        r"data.val_files=/no/such/val.parquet: no such file",
    ),
    (
        "data-file-raw-benchmark",
        False,
        (),
        {"data.train_files": "{raw}"},
        r"no 'prompt' column .*verl_sod.data prepare",
    ),
    (
        "tool-config-missing",
        False,
        (),
        {TOOL: "/no/tool.yaml"},
        r"tool_config_path=/no/tool.yaml: no such file",
    ),
    (
        "legacy-custom-reward-function",
        False,
        (),
        {"custom_reward_function.path": "/my/reward.py"},
        r"custom_reward_function.path is a pre-0.9 verl key .* Use reward.custom_reward_function.path",
    ),
    (
        "legacy-reward-manager",
        False,
        (),
        {"reward_model.reward_manager": "dapo"},
        r"Use reward.reward_manager.name",
    ),
    (
        "legacy-reward-kwargs",
        False,
        (),
        {"+reward_model.reward_kwargs.max_resp_len": "8"},
        r"Use reward.reward_kwargs.max_resp_len",
    ),
    (
        "legacy-sandbox-url",
        False,
        (),
        {"sandbox_fusion.url": "http://sb:8080"},
        r"Use reward.sandbox_fusion.url",
    ),
    (
        "empty-teacher-dir",
        False,
        (),
        {f"{DIST}.model_path": "{root}/empty"},
        rf"{DIST}.model_path=.*/empty: no config.json",
    ),
    (
        "teacher-dir-without-tokenizer",
        False,
        (),
        {f"{DIST}.model_path": "{root}/no-tokenizer"},
        rf"{DIST}.model_path: cannot load a tokenizer from .*/no-tokenizer",
    ),
    (
        "sod-epsilon-inf",
        False,
        (),
        {"distillation.distillation_loss.sod_epsilon": "inf"},
        r"sod_epsilon=inf is not a finite",
    ),
    (
        "sod-delta-nan",
        False,
        (),
        {"distillation.distillation_loss.sod_delta": "nan"},
        r"sod_delta=nan is not a finite",
    ),
    (
        "gpu-without-flash-attn",
        False,
        ("+actor_rollout_ref.model.override_config.attn_implementation",),
        {"actor_rollout_ref.model.use_remove_padding": "true"},
        r"flash_attn package is not installed \(actor_rollout_ref.model.use_remove_padding=true",
    ),
    (
        "hub-teacher-not-cached",
        False,
        (),
        {f"{DIST}.model_path": "toy-org/not-cached"},
        r"cannot compare .*toy-org/not-cached.*skip_tokenizer_check=true",
    ),
    (
        "hub-teacher-cached-other-vocab",
        False,
        (),
        {f"{DIST}.model_path": "toy-org/other"},
        r"toy-org/other .*and the student .* different tokenizers",
    ),
    (
        "legacy-trainer-with-sod",
        False,
        (),
        {"trainer.use_v1": "false"},
        r"trainer.use_v1=false selects verl's legacy trainer .*sod_step_ids",
    ),
    # continuing is right: these pass (with a warning where something is unchecked or missing)
    (
        "hub-teacher-not-cached-opt-out",
        False,
        (),
        {f"{DIST}.model_path": "toy-org/not-cached", "+verl_sod.skip_tokenizer_check": "true"},
        None,
    ),
    ("hub-teacher-cached-same-vocab", False, (), {f"{DIST}.model_path": "toy-org/same"}, None),
    (
        "agent-without-tool",
        False,
        (TOOL,),
        {"actor_rollout_ref.rollout.agent.default_agent_loop": "sod_tool_agent"},
        None,
    ),
    ("recipe-complete", True, (), {}, None),
]
#: every error names what to do
ACTION = re.compile(r"\b(Add|add|Use|Set|set|Remove|Point|Download|prepare|pick|Pass|Install)\b")
WARNINGS = {
    "hub-teacher-not-cached-opt-out": "tokenizer check skipped",
    "agent-without-tool": "runs without any tool",
}


@pytest.mark.parametrize(
    ("case", "recipe", "drop", "add", "error"), LAUNCH_CASES, ids=[c[0] for c in LAUNCH_CASES]
)
def test_launch_case(files, monkeypatch, caplog, case, recipe, drop, add, error):
    import huggingface_hub.constants

    cache = _hub_cache(files["root"], "toy-org/other", files["other"])
    _hub_cache(files["root"], "toy-org/same", files["teacher"])
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(preflight_files, "flash_attn_installed", lambda: False)
    config, context = _compose(files, recipe, drop, add)
    caplog.set_level(logging.WARNING)
    if error is None:
        preflight(config, context)
        if case in WARNINGS:
            assert WARNINGS[case] in caplog.text
        return
    with pytest.raises(ConfigError, match=error) as err:
        preflight(config, context)
    message = str(err.value)
    assert "\n" not in message, message  # one line
    assert ACTION.search(message), f"no fix named in: {message}"


def test_recipe_markers_are_found():
    assert set(required_keys(RECIPE)) >= {"data.train_files", "data.val_files", TOOL, f"{DIST}.model_path"}


# ---------------------------------------------------------------- data preparation
GOOD = {"Problem": "How many toy widgets?", "Answer": 7}


def _jsonl_with_bad_byte(path: Path) -> Path:
    lines = [json.dumps(GOOD).encode(), b'{"Problem": "caf\xe9?", "Answer": 1}', json.dumps(GOOD).encode()]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _json_with_bad_byte(path: Path) -> Path:
    path.write_bytes(b'[{"Problem": "caf\xe9?", "Answer": 1}]')
    return path


def _wrong_schema(path: Path) -> Path:
    pq.write_table(pa.Table.from_pylist([{"problem": f"p{i}", "answer": i} for i in range(50)]), path)
    return path


def _not_parquet(path: Path) -> Path:
    path.write_bytes(b"this is not parquet")
    return path


# (issue case, input builder, output is a file?, status, stderr regex, rows written)
DATA_CASES = [
    (
        "non-utf8-byte-jsonl",
        lambda p: _jsonl_with_bad_byte(p / "in.jsonl"),
        False,
        0,
        r"bad row 1: not UTF-8",
        2,
    ),
    (
        "non-utf8-byte-json",
        lambda p: _json_with_bad_byte(p / "in.json"),
        False,
        2,
        r"error: .*byte 17 \(line 1\) is not UTF-8",
        0,
    ),
    (
        "missing-input",
        lambda p: p / "missing.parquet",
        False,
        2,
        r"error: --input .*missing.parquet: no such file",
        0,
    ),
    (
        "output-is-a-file",
        lambda p: _jsonl_with_bad_byte(p / "in.jsonl"),
        True,
        2,
        r"error: --output .*: exists and is not a directory",
        0,
    ),
    (
        "wrong-schema",
        lambda p: _wrong_schema(p / "aime25.parquet"),
        False,
        2,
        r"error: .*missing \['Answer', 'Problem'\]",
        0,
    ),
    (
        "unreadable-parquet",
        lambda p: _not_parquet(p / "in.parquet"),
        False,
        2,
        r"error: --input .*not a readable parquet",
        0,
    ),
]


@pytest.mark.parametrize(
    ("case", "build", "out_is_file", "status", "err_re", "written"),
    DATA_CASES,
    ids=[c[0] for c in DATA_CASES],
)
def test_data_case(tmp_path, capsys, case, build, out_is_file, status, err_re, written):
    src = build(tmp_path)
    out = tmp_path / "out"
    if out_is_file:
        out.write_text("a file")
    code, report = prepare("aime2024", src, out)
    err = capsys.readouterr().err
    assert code == status, err
    assert re.search(err_re, err), err
    assert len(err.strip().splitlines()) == 1, err  # one line, not one per row
    assert report.written == written
    if not out_is_file:
        assert written or not out.exists() or not list(out.iterdir()), "output created on a failed run"
        assert not list(tmp_path.rglob("*.tmp")), "temporary file left behind"
    if written:
        assert pq.read_table(out / "aime2024.parquet").num_rows == written


def test_no_tmp_left_when_the_run_crashes_mid_write(tmp_path, monkeypatch):
    """A crash after a chunk reached NAME.parquet.tmp: the exception propagates, the tmp file goes."""
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(GOOD) + "\n" for _ in range(300)))
    convert, split = prepare_mod.CONVERTERS["aime2024"]
    seen = []

    def crashing(index, row, opts):
        if index == 290:
            seen.extend(tmp_path.rglob("*.tmp"))
            raise RuntimeError("disk gone")
        return convert(index, row, opts)

    monkeypatch.setitem(prepare_mod.CONVERTERS, "aime2024", (crashing, split))
    with pytest.raises(RuntimeError, match="disk gone"):
        prepare("aime2024", src, tmp_path / "out")
    assert seen, "the crash came before any chunk was written: the test proves nothing"
    assert not list(tmp_path.rglob("*.tmp"))
    assert not (tmp_path / "out" / "aime2024.parquet").exists()


# ---------------------------------------------------------------- scoring and reports
def _dump(path: Path, lines: list[str]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "4.jsonl").write_text("\n".join(lines) + "\n")
    return path


def _line(uid: str, score: float | None = 1.0, output: str | None = "\\boxed{1}") -> str:
    record = {"uid": uid, "input": "q", "gts": "1", "step": 4, "data_source": "AIME2024"}
    if score is not None:
        record["score"] = score
    if output is not None:
        record["output"] = output
    return json.dumps(record)


# (issue case, dump lines, samples kept, skipped reason regex)
SCORE_CASES = [
    (
        "truncated-line",
        [_line("p1_0_0"), _line("p1_1_0")[:30], _line("p2_0_0", 0.0)],
        2,
        r"4.jsonl:2: not valid JSON",
    ),
    ("line-without-output", [_line("p1_0_0"), _line("p2_0_0", output=None)], 1, r"4.jsonl:2: no 'output'"),
    (
        "line-without-score",
        [_line("p1_0_0"), _line("p2_0_0", score=None)],
        1,
        r"4.jsonl:2: no numeric 'score'",
    ),
]


@pytest.mark.parametrize(("case", "lines", "kept", "reason"), SCORE_CASES, ids=[c[0] for c in SCORE_CASES])
def test_score_case(tmp_path, caplog, case, lines, kept, reason):
    from verl_sod.eval.__main__ import main

    caplog.set_level(logging.WARNING)
    dump = _dump(tmp_path / "gen", lines)
    assert main(["score", "--generations", str(dump), "--out", str(tmp_path / "rep")]) == 0
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert report["samples"] == kept
    assert re.search(reason, caplog.text), caplog.text
    assert len(report["skipped_lines"]) == 1 and re.search(
        reason, report["skipped_lines"][0]["where"] + ": " + report["skipped_lines"][0]["reason"]
    )
    assert "dump lines were skipped" in (tmp_path / "rep" / "report.md").read_text()


def test_score_with_no_usable_line_is_one_error(tmp_path, capsys):
    from verl_sod.eval.__main__ import main

    dump = _dump(tmp_path / "gen", [_line("p1_0_0")[:20]])
    assert main(["score", "--generations", str(dump), "--out", str(tmp_path / "rep")]) == 2
    assert re.search(
        r"^error: no usable sample in .*4.jsonl \(1 lines skipped\)", capsys.readouterr().err, re.M
    )


@pytest.mark.parametrize("truth", [None, "", []], ids=["none", "empty", "empty-list"])
def test_math_without_ground_truth_says_why(truth):
    from verl_sod.rewards import compute_score

    result = compute_score("AIME2024", "so \\boxed{42}", truth)
    assert result["score"] == 0.0 and "no ground truth for data_source 'AIME2024'" in result["error"]
