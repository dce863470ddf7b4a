"""`hf:PATH` on a tiny random Llama saved to a temp folder: same code path as the embedded model."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from evalkeeper.runner import RunOptions, run_evaluation
from evalkeeper.runner.backends import resolve_backend
from evalkeeper.runner.backends.base import ChoiceRequest
from evalkeeper.store import Workspace


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch = pytest.importorskip("torch")
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = ["<pad>", "<unk>", "<eos>"] + [str(i) for i in range(200)] + "what is the capital of a b c + - * ? = answer with number only".split()
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(dict.fromkeys(words))}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      pad_token_id=fast.pad_token_id, eos_token_id=fast.eos_token_id, bos_token_id=None)
    path = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(cfg).save_pretrained(path)
    fast.save_pretrained(path)
    return path


def test_hf_backend_runs_generation_and_choice(workspace: Workspace, tiny_model: Path) -> None:
    out = run_evaluation(workspace, f"hf:{tiny_model}", tasks=["arith", "general_knowledge"],
                         options=RunOptions(progress=False, limit=4), backend_options={"batch_size": 3})
    run = workspace.get_run(out.run.run_id)
    assert run.status == "complete" and run.n_samples == 8
    assert run.model.backend == "hf" and run.model.name == tiny_model.name and len(run.model.digest or "") == 64
    rows = workspace.query_samples(run.run_id, task="general_knowledge").to_pylist()
    for row in rows:
        assert len(row["logprobs"]) == 4 and all(math.isfinite(v) for v in row["logprobs"])
        assert row["logprobs"].index(max(row["logprobs"])) == __import__("json").loads(row["metadata"])["chosen_index"]


def test_batching_does_not_change_choice_scores(tiny_model: Path) -> None:
    backend = resolve_backend(f"hf:{tiny_model}", batch_size=4)
    backend.load()  # type: ignore[attr-defined]
    reqs = [ChoiceRequest(prompt="what is 1 + 2 ?", choices=("3", "4 5 6"), chat=False),
            ChoiceRequest(prompt="what is the capital of a b c 7 8 9 10 11 ?", choices=("a", "b c", "c"), chat=False)]
    together = backend._choose(reqs)  # type: ignore[attr-defined]
    alone = [backend._choose([r])[0] for r in reqs]  # type: ignore[attr-defined]
    for a, b in zip(together, alone, strict=True):
        assert a.choice_logprobs == pytest.approx(b.choice_logprobs, abs=1e-4)


def test_batches_keep_shared_heads_together_and_lengths_close() -> None:
    from evalkeeper.runner.backends.local import batches

    head = "Q: 1 + 1?\nA: 2\n\nQ: 2 + 2?\nA: 4\n\nQ: 3 + 3?\nA: 6\n\n"
    other = "Q: 5 + 5?\nA: 10\n\nQ: 2 + 2?\nA: 4\n\nQ: 3 + 3?\nA: 6\n\n"
    texts = ([f"{head}Q: {'9' * k} + 1?" for k in range(1, 8)] + [f"{other}Q: {k} + 2?" for k in range(2)]
             + ["short one", "a much, much longer loose prompt with no shared head", "mid-sized loose prompt"])
    got = batches(list(range(len(texts))), texts.__getitem__, size=4)
    assert sorted(i for b in got for i in b) == list(range(len(texts)))  # every item once
    assert all(0 < len(b) <= 4 for b in got)
    for b in got:  # a batch never mixes two heads with a third kind
        kinds = {texts[i][:len(head)] if texts[i].startswith((head, other)) else "loose" for i in b}
        assert len(kinds) == 1
    first = [b for b in got if texts[b[0]].startswith(head)]
    assert [len(b) for b in first] == [4, 3]
    assert [texts[i] for i in first[0]] == sorted((texts[i] for i in first[0]), key=len)  # shortest first
    loose = next(b for b in got if not texts[b[0]].startswith((head, other)))
    assert [texts[i] for i in loose] == ["short one", "mid-sized loose prompt",
                                         "a much, much longer loose prompt with no shared head"]
