"""Run evaluations ourselves: tasks (YAML), model backends, metrics, and a resumable, cached loop."""

from evalkeeper.runner.api import list_tasks, load_selection, quickstart, rescore, run_evaluation
from evalkeeper.runner.backends import Backend, ChoiceRequest, GenerateRequest, Result, resolve_backend
from evalkeeper.runner.loop import RunOptions, RunOutcome, compute_metrics, evaluate
from evalkeeper.runner.metrics import exact_match, is_refusal, normalize_answer, token_f1
from evalkeeper.runner.tasks import Doc, LoadedTask, TaskSpec, load_task

__all__ = [
    "Backend", "ChoiceRequest", "Doc", "GenerateRequest", "LoadedTask", "Result", "RunOptions", "RunOutcome",
    "TaskSpec", "compute_metrics", "evaluate", "exact_match", "is_refusal", "list_tasks", "load_selection",
    "load_task", "normalize_answer", "quickstart", "rescore", "resolve_backend", "run_evaluation", "token_f1",
]
