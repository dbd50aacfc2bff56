"""``arca diagnose``: where does token credit land, on *your* models?

No training. For a base (initial) model and one or more policies trained from
it, and one set of completions, it scores the completions with every model and
reports, per model and scheme:

- concentration: Gini, effective-token ratio and count (mean and 10/50/90%
  quantiles over completions) and the regime (uniform broadcast / middle /
  sparse; thresholds stated), with the mean length ``T``;
- credit correctness against a ground truth of where each wrong completion
  first went wrong (``--locator``): the task's exact locator where it has one
  (arithmetic's worked solutions, a custom ``error_locator``), or on any task
  with a reward, Monte-Carlo values of prefixes (:mod:`arca.tasks.mc`: ``k``
  continuations per prefix from ``--mc-model``, binary search for the first
  zero-value step), estimated once, recorded in ``diagnose.json`` with their
  cost and, where the task also has an exact locator, their agreement with it,
  and cached in ``completions.jsonl`` for the next diagnosis of the same
  completions: prefix blame, error lift, top-1/3 hit on every wrong completion
  with a located error, and (exact locators) the share of the weight on result
  tokens of correct ones (:mod:`arca.credit.correctness`);
- drift: the exact mean per-position ``KL(pi || pi_base)`` over the vocabulary;
- Spearman rank correlations between the schemes' weights;
- for LoRA policies, the paper's propositions checked numerically
  (:mod:`arca.theory`): ``L = ||W_lm||_op``, ``beta``, Prop. 2's bound, Prop.
  1's stated and corrected bounds, Prop. 3's variances from hooks on the LoRA
  layers; a violated bound is printed as a finding with the completion.

The first row is always the base model alone: surprisal, entropy and
high-entropy weights exist before any training, divergence and ARCA (which
compare a policy with the base model) do not. Policies are LoRA adapters on the
base model (``--adapter A [B ...]``), or fully fine-tuned checkpoints with
``--ref-model INITIAL --model CKPT [CKPT ...]``, whose divergence and ARCA
compare with the initial model. All rows score the same completions: sampled
from the base model (``--task``, or ``--config`` for any task arca train
takes, ``task: custom`` included) or the last policy (``--sample-from
policy``), or read from a JSONL file (``--completions``; ``--task`` or
``--config`` then names their task, for its ground truth).

Outputs: ``OUT/diagnose.json``, ``OUT/report.md``, ``OUT/tokens.html`` and
``OUT/completions.jsonl`` (the completions diagnosed, to reuse with
``--completions`` on other checkpoints).
"""

from arca.diagnose.cli import add_parser
from arca.diagnose.completions import Completion, read_completions, sample_completions
from arca.diagnose.core import BASE_SCHEMES, SCHEMES, diagnose, diagnose_models
from arca.diagnose.policies import Models, Policy, adapter_state, load_models
from arca.diagnose.text import adapter_message, findings, format_summary, report_markdown
from arca.diagnose.truth import Truth, choose_locator, monte_carlo_truth

__all__ = [
    "BASE_SCHEMES",
    "SCHEMES",
    "Completion",
    "Models",
    "Policy",
    "Truth",
    "adapter_message",
    "adapter_state",
    "add_parser",
    "choose_locator",
    "diagnose",
    "diagnose_models",
    "findings",
    "format_summary",
    "load_models",
    "monte_carlo_truth",
    "read_completions",
    "report_markdown",
    "sample_completions",
]
