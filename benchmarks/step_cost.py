"""What token credit costs per optimizer step, against stock uniform GRPO.

    python benchmarks/step_cost.py [--rounds 20] [--json benchmarks/results/step_cost_cpu.json]
    python benchmarks/step_cost.py --vocab-check      # issue 7 part 4: 151,936 vocab, 512 tokens

One process holds one ``CreditGRPOTrainer`` per (scheme, beta) on the same
base model (the embedded tiny model by default) and the same adapter weights.
Each round draws one batch of prompts; every trainer then runs one full
optimizer step on it from the same adapter state and the same RNG seed, so
all schemes generate the same completions. The order of the trainers is
rotated every round, and ratios are taken within a round (scheme / uniform at
the same beta), so drift of the machine cancels. The first round is warm-up.

Per step it records wall time split into generation (TRL's ``_generate``),
scoring (no-grad full-sequence forwards: TRL's KL reference and arca's
passes), forward/backward (the loss forward with its hooks and weighting,
and backward) and the optimizer step; the number of full-sequence forwards;
and peak memory: on CPU the peak resident set size sampled every 0.5 ms
(glibc set to return freed memory, so the peak is the step's own), on GPU
``torch.cuda.max_memory_allocated``. Prints the median of the per-round
ratios with a 95% bootstrap interval, next to an A/A control (a second stock
uniform trainer) that shows what "no difference" measures as, and writes
everything as JSON. On CPU it runs torch single-threaded by default: on the
2-core machine the second core absorbs the OS and the memory sampler.

``--vocab-check`` instead shows that a Qwen3-sized vocabulary (151,936) with
512-token completions scores and trains in bounded memory: a small random
Qwen3 model, peak memory of arca's analysis passes and of one deferred
training forward/backward against the size of a full-vocabulary
log-softmax for the batch.
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import gc
import json
import os
import platform
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import date
from typing import Any

import numpy as np
import torch

SCHEMES = ("uniform", "surprisal", "entropy", "divergence", "arca", "arca_local")
#: Suffix of the A/A control: a second stock-uniform trainer, whose ratio to the
#: first shows what "no difference" measures as on this machine.
AA = "/A-A"
PHASES = ("generation", "scoring", "fwd_bwd", "optimizer", "total")


# ------------------------------------------------------------------ memory


def _glibc() -> Any | None:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def release_freed_memory() -> None:
    """Give freed heap back to the OS so RSS tracks live memory (glibc only)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def fixed_mmap_threshold(nbytes: int = 1 << 16) -> None:
    """Serve allocations above ``nbytes`` with mmap, returned on free: without
    it glibc's adaptive threshold keeps freed tensors resident and the RSS
    peak of one step hides under the previous step's high-water mark. Small
    thresholds cost page faults on every large tensor, so timing rounds set
    it high (32 MiB) and memory rounds low."""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(-3, nbytes)  # M_MMAP_THRESHOLD; setting it disables the adaptation


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextmanager
def peak_memory(device: str) -> Iterator[dict[str, int]]:
    """``{"peak": bytes, "base": bytes}`` over the block: GPU allocator peak, or
    the CPU resident set sampled every 0.5 ms by a thread."""
    res = {"peak": 0, "base": 0}
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        res["base"] = torch.cuda.memory_allocated()
        yield res
        torch.cuda.synchronize()
        res["peak"] = torch.cuda.max_memory_allocated()
        return
    release_freed_memory()
    res["base"] = res["peak"] = _rss()
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            res["peak"] = max(res["peak"], _rss())
            time.sleep(0.0005)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        yield res
    finally:
        stop.set()
        t.join()
        res["peak"] = max(res["peak"], _rss())


# ---------------------------------------------------------- instrumentation


class Meter:
    """Wraps one trainer's methods to time phases and count forwards."""

    def __init__(self, trainer: Any, device: str) -> None:
        from arca.scoring import backbone

        self.t: dict[str, float] = {}
        self.tokens = 0
        self.lengths: list[tuple[int, bool]] = []  # (sequence length, grad) per body forward
        self.seq_len = -1
        self.device = device
        tr = self.trainer = trainer
        self._wrap(tr, "_generate", "generation")
        self._wrap(tr, "_prepare_inputs", "prepare")
        real_lp = tr._get_per_token_logps_and_entropies
        real_sp = tr._scoring_pass
        inside = []  # arca's own passes, timed whole (some run the body only)

        def logps(*a: Any, **k: Any) -> Any:
            if torch.is_grad_enabled() or inside:
                return real_lp(*a, **k)
            with self.timed("scoring"):  # TRL's own no-grad passes (KL reference)
                return real_lp(*a, **k)

        def scoring_pass(*a: Any, **k: Any) -> Any:
            inside.append(1)
            try:
                with self.timed("scoring"):
                    return real_sp(*a, **k)
            finally:
                inside.pop()

        tr._get_per_token_logps_and_entropies = logps
        tr._scoring_pass = scoring_pass

        def count(_m: Any, _a: Any, out: Any) -> None:
            self.lengths.append((out.last_hidden_state.shape[1], torch.is_grad_enabled()))

        backbone(tr.model).register_forward_hook(count)
        real_pad = tr._generate_and_score_completions

        def gen_and_score(inputs: Any) -> Any:
            out = real_pad(inputs)
            self.seq_len = out["prompt_ids"].shape[1] + out["completion_ids"].shape[1]
            self.tokens = int(out["completion_mask"].sum())
            return out

        tr._generate_and_score_completions = gen_and_score

    def _sync(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()

    @contextmanager
    def timed(self, key: str) -> Iterator[None]:
        self._sync()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.t[key] = self.t.get(key, 0.0) + time.perf_counter() - t0

    def _wrap(self, obj: Any, name: str, key: str) -> None:
        real = getattr(obj, name)

        def wrapped(*a: Any, **k: Any) -> Any:
            with self.timed(key):
                return real(*a, **k)

        setattr(obj, name, wrapped)

    def full_forwards(self, grad: bool) -> int:
        """Forwards over the whole prompt + completion (generation's are shorter)."""
        return sum(1 for n, g in self.lengths if n == self.seq_len and g == grad)

    def reset(self) -> None:
        self.t = {}
        self.lengths = []
        self.seq_len = -1
        self.tokens = 0


def build_trainers(
    model_name: str, configs: list[tuple[str, float]], args: argparse.Namespace
) -> dict[tuple[str, float], Any]:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from arca.models import LORA_TARGETS, resolve
    from arca.trainer import CreditGRPOConfig, CreditGRPOTrainer

    path = resolve(model_name)
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    base = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    lora = LoraConfig(
        r=args.rank,
        lora_alpha=2 * args.rank,
        target_modules=LORA_TARGETS,
        lora_dropout=0.05,
    )
    trainers = {}
    adapter: dict[str, torch.Tensor] | None = None
    for scheme, beta in configs:
        cfg = CreditGRPOConfig(
            output_dir="/tmp/arca-step-cost",
            token_weighting=scheme.removesuffix(AA),
            beta=beta,
            per_device_train_batch_size=args.batch,
            num_generations=args.k,
            max_completion_length=args.completion,
            learning_rate=1e-4,
            report_to=[],
            use_cpu=args.device == "cpu",
            bf16=args.bf16,
            seed=0,
            logging_steps=1,
            save_strategy="no",
            loss_type="grpo",
            temperature=1.0,
        )
        tr = CreditGRPOTrainer(
            model=copy.deepcopy(base),
            reward_funcs=_reward,
            args=cfg,
            train_dataset=Dataset.from_dict({"prompt": ["x"] * args.batch}),
            processing_class=tok,
            peft_config=lora,
        )
        tr.create_optimizer_and_scheduler(num_training_steps=10_000)
        tr.current_gradient_accumulation_steps = 1  # set by train(); one micro-batch per step here
        lora_params = {n: p for n, p in tr.model.named_parameters() if "lora_" in n}
        if adapter is None:  # one adapter state for all: a trained-like, non-zero B
            g = torch.Generator().manual_seed(0)
            adapter = {
                n: (torch.randn(p.shape, generator=g) * 0.02 if "lora_B" in n else p.detach())
                .to(p.dtype)
                .clone()
                for n, p in lora_params.items()
            }
        tr.arca_adapter = adapter
        trainers[(scheme, beta)] = tr
    return trainers


def _reward(completions: list[str], **_: Any) -> list[float]:
    # Varied rewards, so every group has a nonzero advantage and credit is assigned.
    return [float(len(c) % 5) for c in completions]


def one_step(
    tr: Any, meter: Meter, rows: list[dict[str, Any]], seed: int, memory: bool
) -> dict[str, Any]:
    with torch.no_grad():
        for n, p in tr.model.named_parameters():
            if n in tr.arca_adapter:
                p.copy_(tr.arca_adapter[n])
    tr.model.train()
    tr._buffered_inputs = None  # generate anew, as at the start of every step
    meter.reset()
    torch.manual_seed(seed)
    if meter.device == "cuda":
        torch.cuda.manual_seed_all(seed)
    # The CPU memory sampler competes for the GIL and the two cores: time and
    # memory are measured in separate rounds. GC pauses are kept out of both.
    gc.collect()
    gc.disable()
    try:
        with peak_memory(meter.device) if memory else nullcontext(None) as mem:
            cpu0 = time.process_time()
            with meter.timed("total"):
                with meter.timed("step"):
                    tr.training_step(tr.model, rows, None)
                with meter.timed("optimizer"):
                    tr.optimizer.step()
                    tr.optimizer.zero_grad(set_to_none=True)
            cpu = time.process_time() - cpu0
    finally:
        gc.enable()
    t = meter.t
    fwd_bwd = t["step"] - t.get("prepare", 0.0)
    prep_other = t.get("prepare", 0.0) - t.get("generation", 0.0) - t.get("scoring", 0.0)
    return {
        "generation": t.get("generation", 0.0),
        "scoring": t.get("scoring", 0.0),
        "fwd_bwd": fwd_bwd,
        "optimizer": t["optimizer"],
        "other": prep_other,
        "total": t["total"],
        "cpu_total": cpu,
        "forwards_no_grad": meter.full_forwards(grad=False),
        "forwards_grad": meter.full_forwards(grad=True),
        "completion_tokens": meter.tokens,
        "peak_bytes": mem["peak"] if mem else None,
        "peak_over_start_bytes": mem["peak"] - mem["base"] if mem else None,
    }


def run_steps(args: argparse.Namespace) -> dict[str, Any]:
    from arca.tasks.arithmetic import load_arithmetic

    configs = [(s, b) for b in args.betas for s in args.schemes]
    trainers = build_trainers(args.model, configs, args)
    meters = {c: Meter(tr, args.device) for c, tr in trainers.items()}
    train = load_arithmetic(
        level=1, train_size=(args.rounds + 1) * args.batch, heldout_size=8
    ).train
    task_rows = [train[i] for i in range(len(train))]
    n_prompts = args.batch // args.k
    records: dict[str, list[dict[str, Any]]] = {f"{s}@{b}": [] for s, b in configs}
    # Round 0 warms up; then timing rounds alternate with memory rounds.
    total = 1 + 2 * args.rounds
    for r in range(total):
        prompts = task_rows[r * n_prompts : (r + 1) * n_prompts]
        rows = [dict(p) for p in prompts for _ in range(args.k)]
        order = configs[r % len(configs) :] + configs[: r % len(configs)]
        memory = r % 2 == 0 and r > 0
        if args.device == "cpu":
            fixed_mmap_threshold(1 << 16 if memory else 1 << 25)
        for c in order:
            rec = one_step(trainers[c], meters[c], rows, seed=1000 + r, memory=memory)
            if r > 0:
                records[f"{c[0]}@{c[1]}"].append(rec)
        kind = "warm-up" if r == 0 else "memory" if memory else "timing"
        print(f"round {r}/{total - 1} done ({kind})", flush=True)
    return {"records": records, "configs": configs}


def summarise(res: dict[str, Any], device: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for scheme, beta in res["configs"]:
        all_recs = res["records"][f"{scheme}@{beta}"]
        all_base = res["records"][f"uniform@{beta}"]
        recs = [r for r in all_recs if r["peak_bytes"] is None]
        base = [r for r in all_base if r["peak_bytes"] is None]
        mrecs = [r for r in all_recs if r["peak_bytes"] is not None]
        mbase = [r for r in all_base if r["peak_bytes"] is not None]
        row: dict[str, Any] = {"scheme": scheme, "beta": beta}
        for ph in PHASES:
            row[f"{ph}_s"] = statistics.median(r[ph] for r in recs)
        compute = [r["total"] - r["generation"] for r in recs]
        compute_u = [r["total"] - r["generation"] for r in base]
        row["time_ratio"], row["time_lo"], row["time_hi"] = median_ci(
            [a["total"] / b["total"] for a, b in zip(recs, base, strict=True)]
        )
        row["compute_ratio"], row["compute_lo"], row["compute_hi"] = median_ci(
            [a / b for a, b in zip(compute, compute_u, strict=True)]
        )
        row["forwards"] = recs[0]["forwards_no_grad"] + recs[0]["forwards_grad"]
        row["peak_mb"] = max(r["peak_bytes"] for r in mrecs) / 2**20
        row["mem_ratio"] = max(r["peak_bytes"] for r in mrecs) / max(r["peak_bytes"] for r in mbase)
        row["step_mem_ratio"] = max(r["peak_over_start_bytes"] for r in mrecs) / max(
            max(r["peak_over_start_bytes"] for r in mbase), 1
        )
        # Same adapter, same seed: every scheme must have generated the same batch.
        row["same_batches"] = [r["completion_tokens"] for r in all_recs] == [
            r["completion_tokens"] for r in all_base
        ]
        out[f"{scheme}@{beta}"] = row
    return out


def median_ci(ratios: list[float], n_boot: int = 10_000) -> tuple[float, float, float]:
    """Median of paired ratios with a 95% percentile-bootstrap interval. The
    median, because on a shared 2-core machine a few steps run 20-30% slow
    for reasons outside the process (identical-work pairs disagree by that
    much now and then), and the mean follows them."""
    x = np.asarray(ratios)
    rng = np.random.default_rng(0)
    meds = np.median(x[rng.integers(0, x.size, (n_boot, x.size))], axis=1)
    lo, hi = np.quantile(meds, [0.025, 0.975])
    return float(np.median(x)), float(lo), float(hi)


TARGETS = {  # (time, memory) ceilings of issue 7, by scheme and whether beta > 0
    ("surprisal", False): (1.03, 1.02),
    ("entropy", False): (1.03, 1.02),
    ("divergence", False): (1.08, None),
    ("arca", False): (1.08, None),
    ("arca_local", False): (1.02, 1.02),
}


def target(scheme: str, beta: float) -> tuple[float | None, float | None]:
    if beta > 0 and scheme in ("divergence", "arca"):
        return 1.02, None
    return TARGETS.get((scheme, False), (None, None))


def print_table(summary: dict[str, Any], header: str) -> None:
    print(header)
    cols = (
        f"{'scheme':<14}{'beta':>5}{'step s':>7}{'gen':>6}{'score':>6}{'fwd+bwd':>8}"
        f"{'fwds':>5}{'time x [95% CI]':>22}{'compute x':>10}{'peak MB':>8}{'mem x':>7}"
        f"{'step mem x':>11}  target"
    )
    print(cols)
    for row in summary.values():
        tt, mt = target(row["scheme"], row["beta"])
        verdict = ""
        if tt is not None:
            verdict = f"time<={tt}" + (f", mem<={mt}" if mt else "") + ": "
            mem_ok = mt is None or row["mem_ratio"] <= mt
            if row["time_hi"] <= tt and mem_ok:
                verdict += "met"
            elif row["time_lo"] > tt or not mem_ok:
                verdict += "MISSED"
            else:  # the interval straddles the target
                verdict += "not resolved (interval holds the target)"
        ci = f"{row['time_ratio']:.3f} [{row['time_lo']:.3f}, {row['time_hi']:.3f}]"
        print(
            f"{row['scheme']:<14}{row['beta']:>5g}{row['total_s']:7.2f}{row['generation_s']:6.2f}"
            f"{row['scoring_s']:6.2f}{row['fwd_bwd_s']:8.2f}"
            f"{row['forwards']:>5}{ci:>22}{row['compute_ratio']:10.3f}"
            f"{row['peak_mb']:8.0f}{row['mem_ratio']:7.3f}{row['step_mem_ratio']:11.3f}  {verdict}"
        )


# ------------------------------------------------------------ vocab check


def vocab_check(args: argparse.Namespace) -> dict[str, Any]:
    """Peak memory of scoring and of a deferred training step at V = 151,936."""
    from peft import LoraConfig, get_peft_model

    from arca.models import LORA_TARGETS, tiny_qwen3
    from arca.scoring import scheme_inputs

    fixed_mmap_threshold()
    V, C, P = 151_936, 512, 32
    torch.manual_seed(0)
    model = tiny_qwen3(vocab_size=V, hidden_size=64, seed=0)
    model = get_peft_model(model, LoraConfig(r=8, target_modules=LORA_TARGETS))
    model.eval()
    rows = []
    for B in args.vocab_batches:
        ids = torch.randint(3, V, (B, P + C))
        attn = torch.ones_like(ids)
        full = B * C * V * 4  # one float32 log-softmax over the batch's completions
        with peak_memory("cpu") as mem:
            scheme_inputs(model, ids, attn, C)
        rows.append(_vocab_row(B, C, V, "analysis: both passes (arca diagnose)", mem, full))
    rows += vocab_check_trainer(args, V, C, P)
    return {"rows": rows}


def vocab_check_trainer(args: argparse.Namespace, V: int, C: int, P: int) -> list[dict[str, Any]]:
    """One deferred arca training forward/backward through TRL's fused head."""
    from datasets import Dataset
    from peft import LoraConfig
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    from arca.models import LORA_TARGETS, tiny_qwen3
    from arca.trainer import CreditGRPOConfig, CreditGRPOTrainer

    vocab = {f"t{i}": i for i in range(V)}
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, "t0")))
    tok.pad_token, tok.eos_token = "t0", "t1"
    out = []
    for B in args.vocab_batches:
        trainers = {}
        for scheme in ("uniform", "arca"):
            cfg = CreditGRPOConfig(
                output_dir="/tmp/arca-vocab-check",
                token_weighting=scheme,
                per_device_train_batch_size=B,
                num_generations=2,
                max_completion_length=C,
                report_to=[],
                use_cpu=True,
                save_strategy="no",
            )
            trainers[scheme] = tr = CreditGRPOTrainer(
                model=tiny_qwen3(vocab_size=V, hidden_size=64, seed=0),
                reward_funcs=_reward,
                args=cfg,
                train_dataset=Dataset.from_dict({"prompt": ["t5"] * B}),
                processing_class=tok,
                peft_config=LoraConfig(r=8, target_modules=LORA_TARGETS),
            )
            tr.current_gradient_accumulation_steps = 1
        g = torch.Generator().manual_seed(B)
        batch = {
            "prompt_ids": torch.randint(3, V, (B, P), generator=g),
            "prompt_mask": torch.ones(B, P, dtype=torch.long),
            "completion_ids": torch.randint(3, V, (B, C), generator=g),
            "completion_mask": torch.ones(B, C, dtype=torch.long),
            "advantages": torch.randn(B, generator=g),
            "num_items_in_batch": torch.tensor(float(B * C)),
        }
        full = B * C * V * 4
        arca = trainers["arca"]
        with peak_memory("cpu") as mem:
            base = arca._base_inputs(batch, [])
        out.append(_vocab_row(B, C, V, "trainer: ARCA's adapter-off pass (body)", mem, full))
        with peak_memory("cpu") as mem:
            arca._scoring_pass(batch, adapter=True)  # log-probs + entropies, TRL's fused head
        out.append(_vocab_row(B, C, V, "trainer: scoring pass with log-probs", mem, full))
        for scheme, tr in trainers.items():
            b = dict(batch)
            if scheme == "arca":  # deferred: weights set inside the training forward
                b["arca_advantage"] = b["advantages"]
                b |= {f"arca_{k}": v for k, v in base.items()}
            with peak_memory("cpu") as mem:
                tr._compute_loss(tr.model, b).backward()
            assert b["advantages"].shape == ((B, C) if scheme == "arca" else (B,))
            out.append(_vocab_row(B, C, V, f"trainer: training fwd+bwd, {scheme}", mem, full))
        del trainers, arca, tr
    return out


def _vocab_row(B: int, C: int, V: int, what: str, mem: dict[str, int], full: int) -> dict[str, Any]:
    row = {
        "B": B,
        "C": C,
        "V": V,
        "what": what,
        "peak_over_start_mb": (mem["peak"] - mem["base"]) / 2**20,
        "full_logsoftmax_mb": full / 2**20,
    }
    print(_vocab_line(row), flush=True)
    return row


def _vocab_line(r: dict[str, Any]) -> str:
    return (
        f"{r['what']:<42} B={r['B']:<3} C={r['C']} V={r['V']}: peak +{r['peak_over_start_mb']:7.0f} MB"
        f"   (a full-vocab log-softmax would be {r['full_logsoftmax_mb']:7.0f} MB)"
    )


# -------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--schemes", nargs="+", default=list(SCHEMES))
    ap.add_argument("--betas", nargs="+", type=float, default=[0.0, 0.04])
    ap.add_argument("--rounds", type=int, default=20, help="timing rounds (as many memory rounds)")
    ap.add_argument("--batch", type=int, default=32, help="completions per step")
    ap.add_argument("--k", type=int, default=4, help="completions per prompt")
    ap.add_argument("--completion", type=int, default=64, help="max completion tokens")
    ap.add_argument("--rank", type=int, default=64)
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: 1 on CPU)")
    ap.add_argument("--no-control", action="store_true", help="skip the A/A uniform control")
    ap.add_argument("--vocab-check", action="store_true")
    ap.add_argument("--vocab-batches", nargs="+", type=int, default=[2, 4, 8])
    args = ap.parse_args(argv)
    threads = args.threads or (1 if args.device == "cpu" else 0)
    if threads:
        torch.set_num_threads(threads)
    machine = (
        torch.cuda.get_device_name()
        if args.device == "cuda"
        else f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores"
    )
    meta = {
        "date": date.today().isoformat(),
        "machine": machine,
        "torch": torch.__version__,
        "args": {k: v for k, v in vars(args).items()},
    }
    if args.vocab_check:
        res = vocab_check(args)
    else:
        if "uniform" not in args.schemes:
            args.schemes = ["uniform", *args.schemes]
        if not args.no_control:
            args.schemes = [*args.schemes, "uniform" + AA]
        raw = run_steps(args)
        summary = summarise(raw, args.device)
        dt = "bf16" if args.bf16 else "float32"
        print_table(
            summary,
            f"\n{meta['date']}, {machine} ({torch.get_num_threads()} torch thread(s)), {args.model} model, {dt}, {args.batch} completions x "
            f"<= {args.completion} tokens, LoRA r={args.rank}; median of {args.rounds} paired timing rounds [95% bootstrap CI]",
        )
        res = {"summary": summary, "records": raw["records"]}
    if args.json:
        os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(meta | res, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
