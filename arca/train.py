"""``arca train``: the GRPO/RLOO + LoRA + token-credit recipe, from a YAML config.

Follows TRL's script convention: ``arca train --config FILE.yaml [--field value ...]``
where the fields are those of :class:`RunArguments`, :class:`arca.trainer.CreditGRPOConfig`
(every ``trl.GRPOConfig`` field too) and ``trl.ModelConfig`` (``model_name_or_path``,
``lora_r``, ``lora_alpha``, ...), and a command-line value overrides the file's.

``use_peft: true`` trains a LoRA adapter (the paper's setting); ``use_peft:
false`` fine-tunes every weight, with divergence and ARCA measured against a
frozen copy of the initial model (the paper's missing control).

The run directory (``output_dir``) holds ``config.yaml`` (the resolved config),
``metrics.jsonl`` (one line per optimizer step), ``samples.jsonl`` (completions
with per-token weights at step 1, every ``sample_every`` steps and the last), ``checkpoint-N/``
folders (adapter, optimizer, scheduler, RNG states; each appears atomically)
and ``adapter/`` (the final adapter) or, with full fine-tuning, ``model/``
(the final model and tokenizer); :mod:`arca.run_folder` owns the folder. ``--resume`` continues from the last
checkpoint; steps after it are dropped from the metrics first, so a killed and
resumed run ends with the same metrics lines as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arca.config import PRESET_ROOT, config_path, read_config
from arca.credit._checks import NonFiniteError
from arca.credit.schemes import GROUND_TRUTH_SCHEMES
from arca.io import atomic_write_text, filter_jsonl
from arca.models import LORA_TARGETS, identity, resolve
from arca.run_folder import (
    CONFIG,
    CURVE,
    METRICS,
    SAMPLES,
    began,
    check_resume,
    config_record,
    final_from_checkpoint,
    final_weights,
    finished,
    lock,
)
from arca.tasks.arithmetic import DEFAULT_LEVEL
from arca.tasks.custom import check_chat_template, read_template
from arca.tasks.files import check_files, file_spec, local_source, near_config
from arca.tasks.formats import prompt_text
from arca.tasks.loaders import TASKS, check_task_config, task_from_config, task_locator
from arca.tasks.mc import MC, MCSchedule, MCSettings, Score, step_boundaries


@dataclass
class RunArguments:
    """What to train on and what to keep (the rest is TRL's config)."""

    task: str = field(
        default="arithmetic",
        metadata={
            "help": "arithmetic, math, gsm8k, or custom: your data (data), prompt "
            "(prompt_column or prompt_template) and reward (reward_funcs)"
        },
    )
    data: str | None = field(
        default=None,
        metadata={
            "help": "MATH/GSM8K/custom data: a .jsonl/.json/.parquet file, a folder, or a Hub id"
        },
    )
    prompt_template: str | None = field(
        default=None,
        metadata={
            "help": "the prompt as a Python format string over the row's columns ('Q: {question}\\nA:'; "
            "built-in tasks: {problem}; a literal brace is {{ or }}), or a .txt file holding one. "
            "Default: arca's step-by-step \\boxed{} template (built-in tasks), prompt_column (custom)"
        },
    )
    prompt_column: str = field(
        default="prompt",
        metadata={"help": "custom: the column holding the prompt (text or a conversation)"},
    )
    columns: str | None = field(
        default=None,
        metadata={
            "help": "custom: rename columns, source:target pairs (YAML: a mapping), e.g. "
            "question:prompt,final:answer; reward functions see the new names"
        },
    )
    use_chat_template: bool = field(
        default=False,
        metadata={
            "help": "send each prompt as a user message, so TRL applies the tokenizer's chat template "
            "(instruct models); conversational data gets it without this"
        },
    )
    system_prompt: str | None = field(
        default=None,
        metadata={"help": "with use_chat_template: a system message before each prompt"},
    )
    reward_funcs: list[str] | None = field(
        default=None,
        metadata={
            "help": "reward functions with TRL's signature, as TRL's grpo.py names them: "
            "accuracy_reward, think_format_reward, ..., or an import path (my_module.my_reward, "
            "my_module:my_reward, path/to/file.py:my_reward); weighted by reward_weights. "
            "Default: the task's \\boxed{} answer against the 'answer' column"
        },
    )
    correct_reward: float = field(
        default=1.0,
        metadata={
            "help": "arca eval: a completion counts as correct when its (weighted, summed) reward "
            "is at least this; 1.0 makes it accuracy for 0/1 rewards"
        },
    )
    error_locator: str | None = field(
        default=None,
        metadata={
            "help": "where a wrong completion first went wrong, for the credit-correctness "
            "metrics: an import path of (row, completion) -> arca.tasks.base.Located, or mc: "
            "Monte-Carlo values of prefixes from k continuations graded by the task's reward "
            "(any task; see the mc_* fields). Default: the task's own (arithmetic), else none"
        },
    )
    mc_every: int = field(
        default=10,
        metadata={"help": "error_locator mc: locate at step 1 and every N steps"},
    )
    mc_completions: int = field(
        default=8,
        metadata={
            "help": "error_locator mc: completions located per process at those steps "
            "(negative advantages first)"
        },
    )
    mc_k: int = field(default=4, metadata={"help": "error_locator mc: continuations per value"})
    mc_cut: str = field(
        default="step",
        metadata={"help": "error_locator mc: cut points after each step (step) or every token"},
    )
    mc_search: str = field(
        default="binary",
        metadata={"help": "error_locator mc: binary search (OmegaPRM) or all cut points"},
    )
    mc_model: str = field(
        default="base",
        metadata={
            "help": "error_locator mc: the estimating model, base (fixed ground truth) or policy"
        },
    )
    step_rule: str | None = field(
        default=None,
        metadata={
            "help": "custom: where a completion's steps end, text -> character offsets, as an "
            "import path (the mc locator's cut points); default: after sentence ends, newlines, '='"
        },
    )
    heldout_size: int = field(default=200, metadata={"help": "problems held out for evaluation"})
    level: int = field(default=DEFAULT_LEVEL, metadata={"help": "arithmetic difficulty level"})
    train_size: int = field(default=5000, metadata={"help": "arithmetic training problems"})
    few_shot: int = field(
        default=0,
        metadata={
            "help": "arithmetic: worked examples prepended to every prompt (small pretrained LMs)"
        },
    )
    split_seed: int | None = field(
        default=None,
        metadata={
            "help": "seed of the held-out split (default: the task's, arithmetic 0, MATH/GSM8K "
            "1337); independent of the training seed, so runs of any seed share one held-out set"
        },
    )
    skip_malformed: bool = field(
        default=False, metadata={"help": "skip and count malformed data rows"}
    )
    max_prompt_length: int | None = field(
        default=None,
        metadata={"help": "drop (and count) prompts longer than this many tokens (paper: 512)"},
    )
    sample_every: int = field(
        default=10,
        metadata={
            "help": "save sample completions at step 1, every N steps and the last step (0: never)"
        },
    )
    sample_count: int = field(default=4, metadata={"help": "completions per sample"})
    eval_every: int = field(
        default=0,
        metadata={
            "help": "learning curve: greedy accuracy on eval_problems held-out problems before "
            "training, every N steps and at the last step, into curve.jsonl (0: none)"
        },
    )
    eval_problems: int = field(
        default=100,
        metadata={"help": "learning curve: how many of the held-out problems (the first ones)"},
    )
    resume: bool = field(
        default=False, metadata={"help": "continue from the last checkpoint in output_dir"}
    )
    # A mapping in YAML (as ``columns``); HfArgumentParser needs a plain type.
    files_sha256: str | None = field(
        default=None,
        metadata={
            "help": "recorded by arca in config.yaml: the SHA-256 of each local file the run "
            "reads (data, reward and locator .py files); resuming or evaluating the run with "
            "one of them changed is refused"
        },
    )
    model_identity: str | None = field(
        default=None,
        metadata={
            "help": "recorded by arca in config.yaml: the model the run started from, by "
            "content (sha256 of its weights, or hub:<id>@<commit>); a config that names one "
            "is refused when the model is now another build or revision"
        },
    )


def parse(argv: list[str]) -> tuple[RunArguments, Any, Any]:
    """Parse and validate everything before any model is loaded."""
    from trl import ModelConfig, TrlParser

    from arca.trainer import CreditGRPOConfig

    argv = list(argv)
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise FileNotFoundError("--config: missing file name")
        path = config_path(argv[i + 1])
        given = read_config(path)
        here = path.parent
        argv = [*argv[:i], *argv[i + 2 :]]
    else:
        given, here = {}, Path(".")
    argv = _cpu_defaults(argv, given)
    # No abbreviations: `--max_st 3` would train max_steps 3 while a sweep
    # stores the abbreviation as its override and later refuses the full name.
    parser = TrlParser((RunArguments, CreditGRPOConfig, ModelConfig), allow_abbrev=False)
    run, cfg, model = _parse_fields(parser, argv, given)
    for obj in (run, cfg, model):
        check_types(obj)
    if cfg.max_steps == 0 or cfg.max_steps < -1:
        raise ValueError(
            f"max_steps: must be >= 1 (or -1: train num_train_epochs epochs), got {cfg.max_steps}"
        )
    if not cfg.learning_rate > 0:
        raise ValueError(f"learning_rate: must be > 0, got {cfg.learning_rate}")

    # What ran, whichever folder reads config.yaml later: files made absolute,
    # a template file replaced by the text it held.
    run.reward_funcs = [file_spec(f, here) for f in run.reward_funcs] if run.reward_funcs else None
    run.error_locator = file_spec(run.error_locator, here) if run.error_locator else None
    run.step_rule = file_spec(run.step_rule, here) if run.step_rule else None
    if run.error_locator == MC:
        mc_schedule(run, cfg, score=lambda *_: [])  # checks the mc_* fields before any model loads
    if run.prompt_template and run.prompt_template.endswith(".txt"):
        run.prompt_template = str(near_config(run.prompt_template, here))
    run.prompt_template = read_template(run.prompt_template)
    run.data = local_source(run.data, here) if run.data else None
    check_task_config(dataclasses.asdict(run) | {"reward_weights": cfg.reward_weights})
    if cfg.token_weighting in GROUND_TRUTH_SCHEMES and not run.error_locator:
        exact = task_locator(run.task) if run.task in TASKS else None
        if exact is None:
            raise ValueError(
                f"token_weighting: {cfg.token_weighting} is a ceiling that uses the ground truth "
                f"(each wrong completion's first wrong token), and task {run.task} has no error "
                "locator; set error_locator: mc (Monte-Carlo, any task with a reward) or an import "
                "path of your locator, or train another scheme"
            )
    run.files_sha256 = check_files(dataclasses.asdict(run)) or None  # type: ignore[assignment]
    if model.use_peft:
        if model.lora_r < 1:
            raise ValueError(f"lora_r: the LoRA rank must be >= 1, got {model.lora_r}")
        if model.lora_alpha <= 0:
            raise ValueError(f"lora_alpha: must be > 0, got {model.lora_alpha}")
        if not 0 <= model.lora_dropout < 1:
            raise ValueError(f"lora_dropout: must be in [0, 1), got {model.lora_dropout}")
    elif cfg.token_weighting == "arca_local":
        raise ValueError(
            "token_weighting: arca_local reads the LoRA layers' output; with use_peft: false "
            "(full fine-tuning) use arca, which compares against the initial model"
        )
    if run.sample_every < 0 or run.sample_count < 0:
        raise ValueError("sample_every and sample_count must be >= 0")
    if run.eval_every < 0 or run.eval_problems < 1:
        raise ValueError(
            f"eval_every must be >= 0 and eval_problems >= 1, got {run.eval_every}, "
            f"{run.eval_problems}"
        )
    if run.eval_every and (cfg.fsdp or cfg.deepspeed):
        raise ValueError(
            "eval_every: the learning curve generates on the main process with the whole "
            "model, which FSDP and DeepSpeed shard; evaluate checkpoints with arca eval instead"
        )
    if not model.model_name_or_path:
        model.model_name_or_path = "tiny"
    _check_report_to(cfg.report_to)
    out = Path(cfg.output_dir)
    for parent in [out, *out.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(
                    f"output_dir: {parent} is a file, not a folder; choose another output_dir"
                )
            if not os.access(parent, os.W_OK):
                raise ValueError(f"output_dir: cannot write in {parent}; choose another output_dir")
            break
    return run, cfg, model


def mc_schedule(run: RunArguments, cfg: Any, score: Score, rule: Any = None) -> MCSchedule:
    """The Monte-Carlo ground truth of a run with ``error_locator: mc``: its
    ``mc_*`` fields, the task's reward (``score``) and the rollouts' sampling
    (temperature, top-p, completion length, seed)."""
    settings = MCSettings(
        k=run.mc_k,
        cut=run.mc_cut,
        search=run.mc_search,
        temperature=float(cfg.temperature),
        top_p=float(cfg.top_p),
        max_new_tokens=int(cfg.max_completion_length or 0),
        seed=int(cfg.seed),
    )
    return MCSchedule(
        settings,
        score,
        correct_reward=run.correct_reward,
        every=run.mc_every,
        count=run.mc_completions,
        model=run.mc_model,
        rule=rule or step_boundaries,
    )


#: Range checks on values that TRL and transformers accept at parse time and
#: fail on only after the model loads (or never): field -> (test, requirement).
_RANGES: dict[str, tuple[Callable[[float], bool], str]] = {
    "per_device_train_batch_size": (lambda v: v >= 1, "must be >= 1"),
    "gradient_accumulation_steps": (lambda v: v >= 1, "must be >= 1"),
    "max_completion_length": (lambda v: v >= 1, "must be >= 1"),
    "temperature": (lambda v: v > 0, "must be > 0 (TRL samples; there is no greedy training)"),
    "top_p": (lambda v: 0 < v <= 1, "must be in (0, 1]"),
    "beta": (lambda v: v >= 0, "must be >= 0 (the KL penalty's weight; 0 turns it off)"),
}


def _parse_fields(parser: Any, argv: list[str], given: dict[str, Any]) -> tuple[Any, ...]:
    """TRL's ``parse_args_and_config`` with arca's checks: the config file's
    ``given`` fields become defaults that ``argv`` overrides, unknown fields
    and flags are named (with the closest field), values out of range are
    refused before TRL's dataclasses derive anything from them, and a saved
    ``config.yaml`` (which records ``generation_batch_size`` and
    ``steps_per_generation`` both) reads back."""
    given = dict(given)
    env = given.pop("env", None)  # TRL's config files may set environment variables
    if env is not None:
        if not isinstance(env, dict):
            raise ValueError("env: must map environment variable names to values")
        os.environ.update({str(k): str(v) for k, v in env.items()})
    dests = {a.dest for a in parser._actions if a.dest != "help"}
    for key in given:
        if key not in dests:
            raise ValueError(f"{key}: not a field of arca train{_closest(key, dests)}")
    gbs = None
    if "generation_batch_size" in _named(argv, given) and "steps_per_generation" in _named(
        argv, given
    ):
        # Both describe the same global batch; TRL refuses the pair, so derive
        # one and check it against the other.
        gbs = given.pop("generation_batch_size", None)
        argv, flag_value = _drop_flag(argv, "generation_batch_size")
        gbs = flag_value if flag_value is not None else gbs
    parser.set_defaults_with_config(**given)
    namespace, rest = parser.parse_known_args(argv)
    if rest:
        bad = next((a for a in rest if a.startswith("-")), rest[0])
        if not bad.startswith("-"):
            raise ValueError(
                f"{bad}: unexpected argument (give a config as --config FILE, fields as --field value)"
            )
        name = bad.split("=")[0]
        raise ValueError(
            f"{name}: not an option of arca train{_closest(name.lstrip('-'), dests)}; "
            "options are spelt out in full (arca train --help lists them)"
        )
    for name, (ok, need) in _RANGES.items():
        v = getattr(namespace, name, None)
        if isinstance(v, int | float) and not isinstance(v, bool) and not ok(v):
            raise ValueError(f"{name}: {need}, got {v}")
    if namespace.task == "arithmetic" and isinstance(namespace.train_size, int):
        if namespace.train_size < 1:
            raise ValueError(
                f"train_size: must be >= 1 arithmetic problems, got {namespace.train_size}"
            )
    if namespace.advantage_estimator == "rloo" and "scale_rewards" in _named(argv, given):
        if namespace.scale_rewards not in ("none", False, "false"):
            # CreditGRPOConfig replaces TRL's default ("group") for RLOO; a value
            # asked for explicitly would be replaced silently.
            raise ValueError(
                f"scale_rewards: advantage_estimator 'rloo' uses unscaled rewards, got "
                f"{namespace.scale_rewards!r}; set scale_rewards: none (or leave it out)"
            )
    outputs = []
    for dtype in parser.dataclass_types:
        keys = {f.name for f in dataclasses.fields(dtype) if f.init}
        outputs.append(dtype(**{k: v for k, v in vars(namespace).items() if k in keys}))
        for k in keys:
            if hasattr(namespace, k):
                delattr(namespace, k)
    cfg = outputs[1]
    if gbs is not None and cfg.generation_batch_size != int(gbs):
        raise ValueError(
            f"generation_batch_size: {gbs} given, but steps_per_generation {cfg.steps_per_generation} "
            f"x per_device_train_batch_size {cfg.per_device_train_batch_size} x {cfg.world_size} "
            f"process(es) makes {cfg.generation_batch_size}; give one of the two (a run's "
            "config.yaml records both: it ran with another number of processes?)"
        )
    return tuple(outputs)


def _named(argv: list[str], given: dict[str, Any]) -> set[str]:
    """The fields a config file or the command line sets."""
    flags = {a[2:].split("=")[0].replace("-", "_") for a in argv if a.startswith("--")}
    return flags | set(given)


def _drop_flag(argv: list[str], name: str) -> tuple[list[str], str | None]:
    """``argv`` without ``--name value`` (any spelling), and the last value it had."""
    spellings = {f"--{name}", f"--{name.replace('_', '-')}"}
    out, value, i = [], None, 0
    while i < len(argv):
        a = argv[i]
        if a in spellings and i + 1 < len(argv):
            value, i = argv[i + 1], i + 2
            continue
        if a.split("=")[0] in spellings and "=" in a:
            value, i = a.split("=", 1)[1], i + 1
            continue
        out.append(a)
        i += 1
    return out, value


def _closest(name: str, known: set[str]) -> str:
    import difflib

    match = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    hint = f" (did you mean {match[0]}?)" if match else ""
    return f"{hint}; arca train --help lists the fields"


def _cpu_defaults(argv: list[str], config: dict[str, Any]) -> list[str]:
    """Settings neither the ``config`` file nor the command line gives, chosen
    for this machine and said: LoRA (arca's setting; TRL's default trains every
    weight), and without a GPU the CPU in float32 (TRL's default is bf16 on a GPU)."""
    given = {a[2:].split("=")[0] for a in argv if a.startswith("--")} | set(config)
    chosen = []
    if "use_peft" not in given:
        chosen.append(("use_peft", "true", "a LoRA adapter, arca's setting"))
    import torch

    if not torch.cuda.is_available():
        if "use_cpu" not in given:
            chosen.append(("use_cpu", "true", "no GPU found"))
        if "bf16" not in given and "fp16" not in given:
            chosen.append(("bf16", "false", "float32 on the CPU"))
    if "output_dir" not in given:
        chosen.append(("output_dir", "runs/train", "TRL's default is trainer_output"))
    if chosen and "-h" not in argv and "--help" not in argv:
        said = "; ".join(f"{k}: {v} ({why})" for k, v, why in chosen)
        print(f"arca train: not set, so chosen: {said}")
    return [*argv, *(x for k, v, _ in chosen for x in (f"--{k}", v))]


def _check_report_to(report_to: Any) -> None:
    """A logging backend that is not installed fails after the model loads; say so first."""
    import importlib.util

    backends = [report_to] if isinstance(report_to, str) else list(report_to or [])
    modules = {
        "tensorboard": ("tensorboard", "tensorboardX"),
        "wandb": ("wandb",),
        "mlflow": ("mlflow",),
        "trackio": ("trackio",),
    }
    for b in backends:
        need = modules.get(b)
        if need and not any(importlib.util.find_spec(m) for m in need):
            raise ValueError(
                f"report_to: {b!r} needs the {need[0]} package, which is not installed "
                f"(pip install {need[0]}), or use report_to: none"
            )


def check_types(obj: Any) -> None:
    """Refuse a value of the wrong type for an ``int``/``float``/``bool`` field
    (``lora_r: 6.5``, ``learning_rate: null``): YAML values reach the dataclass
    unconverted. Values equal to the field's default are not checked (some
    TRL defaults do not match their annotation)."""
    import typing

    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        v, hint = getattr(obj, f.name), hints.get(f.name)
        if f.default is not dataclasses.MISSING and v == f.default and type(v) is type(f.default):
            continue
        args = set(typing.get_args(hint)) or {hint}
        if v is None:
            if type(None) not in args and args & {int, float, bool}:
                raise ValueError(f"{f.name}: must be a number, got null")
            continue
        if bool in args and not isinstance(v, bool) and args <= {bool, type(None)}:
            raise ValueError(f"{f.name}: must be true or false, got {v!r}")
        if int in args and float not in args and (isinstance(v, bool) or not isinstance(v, int)):
            if args <= {int, type(None)}:
                raise ValueError(f"{f.name}: must be a whole number, got {v!r}")
        if float in args and args <= {float, int, type(None)}:
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise ValueError(f"{f.name}: must be a number, got {v!r}")


def run_training(run: RunArguments, cfg: Any, model_args: Any) -> Path:
    """Train one run into ``cfg.output_dir``, which the main process locks
    for the duration (another arca process on it stops, naming this one)."""
    from contextlib import nullcontext

    from accelerate import PartialState

    main = PartialState().is_main_process
    with lock(cfg.output_dir, "arca train") if main else nullcontext():
        return _run_training(run, cfg, model_args, main)


def _run_training(run: RunArguments, cfg: Any, model_args: Any, main: bool) -> Path:
    import yaml
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.trainer_utils import get_last_checkpoint
    from trl import get_peft_config

    from arca.callbacks import CompactProgress, LearningCurve, MetricsFile, SampleWriter
    from arca.trainer import CreditGRPOTrainer

    out = Path(cfg.output_dir)
    last = get_last_checkpoint(str(out)) if out.is_dir() else None
    # A run that stopped before its first step (a reward that raised, a wrong
    # setting) recorded nothing worth protecting: it is replaced, not resumed.
    started = began(out, last)
    if not started and ((out / CONFIG).is_file() or (out / METRICS).exists()):
        if main:
            print(
                f"output_dir: {out} holds a run that never completed a step (no metrics line, "
                "sample, checkpoint or weights); starting it afresh with these settings"
            )
    elif (out / METRICS).exists() and not run.resume:
        raise FileExistsError(
            f"output_dir: {out} already holds a run; pass --resume to continue it or choose another output_dir"
        )
    if model_args.use_peft and model_args.lora_target_modules is None:
        # Recorded as trained: config.yaml once said null here while these trained.
        model_args.lora_target_modules = LORA_TARGETS
    resolved = config_record(run, cfg, model_args)
    path = resolve(model_args.model_name_or_path)
    # What the model is by content: a name such as tiny may mean another build later.
    actual = identity(path)
    if run.model_identity is not None and run.model_identity != actual:
        raise ValueError(
            f"model_identity: the config records {run.model_identity}, but "
            f"{model_args.model_name_or_path} is now {actual} (another build or revision); "
            "delete model_identity from the config to train the model as it is now"
        )
    resolved["model_identity"] = actual
    if started and run.resume and (out / CONFIG).is_file():
        check_resume(out / CONFIG, resolved)
    final = "adapter" if model_args.use_peft else "model"
    # Training a finished run again would take one more step (transformers checks
    # max_steps only after a step) and write another checkpoint; with no
    # checkpoint kept (save_strategy: no) it would start over.
    done = run.resume and (
        (last is not None and finished(Path(last), cfg.max_steps))
        or (last is None and final_weights(out) is not None)
    )
    if done:
        if main:
            if final_weights(out) is None:
                final_from_checkpoint(Path(last), out / final)
            at = f" at {Path(last).name}" if last else ""
            print(f"run already finished{at}: nothing to train ({out}/{final}/)")
        return out
    task = task_from_config(resolved)
    if task.skipped:
        print(f"skipped {task.skipped} malformed rows, e.g. {task.skipped_examples[0]}")
    if task.locate_error is None and run.error_locator != MC:
        print(
            f"task {run.task}: no error locator, so where a wrong completion went wrong is not "
            "known; credit-correctness metrics (credit/prefix_blame, ...) are not logged "
            "(error_locator: mc estimates it by Monte-Carlo, docs/ground-truth.md)"
        )
    dtype = model_args.dtype if model_args.dtype not in (None, "auto") else "auto"
    tok = AutoTokenizer.from_pretrained(path)
    check_chat_template(tok, task, model_args.model_name_or_path, run.use_chat_template)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    train = task.train
    if run.max_prompt_length:
        limit = run.max_prompt_length
        n = len(train)
        # No token spans more characters than the vocabulary's longest entry, so a
        # prompt longer than limit * that many characters is too long without
        # tokenizing it (one 30 MB line once took the tokenizer to 12 GB).
        widest = max((len(t) for t in tok.get_vocab()), default=1)

        def fits(r: dict[str, Any]) -> bool:
            text = prompt_text(r["prompt"], tok)
            return len(text) <= limit * widest and len(tok(text)["input_ids"]) <= limit

        train = train.filter(fits)
        if len(train) < n:
            print(
                f"max_prompt_length: dropped {n - len(train)} of {n} prompts longer than {limit} tokens"
            )
        if len(train) == 0:
            raise ValueError(f"max_prompt_length: every prompt is longer than {limit} tokens")
    if main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(
            out / CONFIG,
            yaml.safe_dump(resolved, sort_keys=False),
        )
    curve = []
    if run.eval_every:
        rows = task.heldout.to_list()
        if run.eval_problems > len(rows):
            raise ValueError(
                f"eval_problems: {run.eval_problems} asked for, the held-out set has {len(rows)}"
            )
        curve = [
            LearningCurve(
                out / CURVE,
                rows[: run.eval_problems],
                task.score,
                every=run.eval_every,
                correct_reward=run.correct_reward,
                max_new_tokens=int(cfg.max_completion_length),
            )
        ]
    trainer = CreditGRPOTrainer(
        model,
        reward_funcs=task.trl_rewards(),
        args=cfg,
        train_dataset=train,
        processing_class=tok,
        peft_config=get_peft_config(model_args),
        callbacks=[MetricsFile(out / METRICS), *curve],
        error_locator=mc_schedule(run, cfg, task.score, task.step_rule)
        if run.error_locator == MC
        else task.locate_error,
        correct_reward=run.correct_reward,  # what KTAE counts as correct, as arca eval does
    )
    from transformers import ProgressCallback

    trainer.base_model_name = model_args.model_name_or_path
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(CompactProgress())
    if run.sample_every:
        trainer.sample_writer = SampleWriter(out / SAMPLES, run.sample_every, run.sample_count)
    resume_from = last if run.resume and last else None
    if resume_from and main and (out / SAMPLES).is_file():
        # Samples drawn after the checkpoint's step are drawn again, as
        # MetricsFile drops the metrics lines past it.
        drawn_before = int(Path(resume_from).name.rsplit("-", 1)[-1])
        filter_jsonl(out / SAMPLES, lambda rec: SampleWriter.step_of(rec) <= drawn_before)
    try:
        trainer.train(resume_from_checkpoint=resume_from)
    except NonFiniteError as e:
        step = trainer.state.global_step
        if not step:  # before any update: not the learning rate's doing
            raise
        raise ValueError(
            f"training diverged at step {step + 1}: after {step} update(s) at learning_rate "
            f"{cfg.learning_rate:g} the policy's outputs are non-finite ({e.name}); lower "
            "learning_rate (metrics.jsonl holds the steps before)"
        ) from e
    trainer.save_final(out / final)
    if main and final_weights(out) is None:
        raise ValueError(
            f"{out / final}: the trained weights were not saved (DeepSpeed ZeRO-3 without "
            "stage3_gather_16bit_weights_on_model_save: true?); the checkpoints hold them sharded"
        )
    if main:
        print(f"run finished: {out} (metrics.jsonl, {final}/)")
    return out


def help_text() -> str:
    """``arca train --help``: ``--config`` and arca's own options first, each
    with its default and help; TRL's and transformers' options after."""
    from trl import GRPOConfig

    from arca.trainer import CreditGRPOConfig

    shown = ("tiny/arca_r64", "paper/arca_r64", "tiny-full/arca_full")
    presets = [p for p in shown if (PRESET_ROOT / f"{p}.yaml").is_file()]
    lines = [
        "usage: arca train --config FILE.yaml [--field value ...]",
        "",
        "  --config FILE.yaml   the run's settings; any --field value below overrides the file's.",
        f"                       A shipped preset works from any folder: {', '.join(presets)}, ...",
        "",
    ]
    trl_fields = {f.name for f in dataclasses.fields(GRPOConfig)}
    groups = [
        ("arca: what to train on and what to keep", dataclasses.fields(RunArguments)),
        (
            "arca: token credit (CreditGRPOConfig)",
            [
                f
                for f in dataclasses.fields(CreditGRPOConfig)
                if f.name not in trl_fields or f.name == "loss_type"
            ],
        ),
    ]
    for title, fields in groups:
        lines.append(f"{title}:")
        for f in fields:
            default = f.default if f.default is not dataclasses.MISSING else None
            lines.append(f"  --{f.name} (default: {default})")
            lines.append(f"      {f.metadata.get('help', '')}")
        lines.append("")
    lines.append("TRL's and transformers' options (trl.GRPOConfig, trl.ModelConfig) follow.")
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        from trl import ModelConfig, TrlParser

        from arca.trainer import CreditGRPOConfig

        print(help_text())
        TrlParser((RunArguments, CreditGRPOConfig, ModelConfig)).print_help()
        return 0
    run, cfg, model = parse(argv)
    run_training(run, cfg, model)
    return 0
