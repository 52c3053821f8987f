"""vLLM backend on a real GPU (run on a lent GPU: benchmarks/gpu_check.sh, or pytest -m gpu).

The hf and vllm backends must pick the same letter on the demo benchmark: vLLM returns A-D
log-probabilities, which differ from the hf backend's logits by a per-row constant."""
import pytest

pytestmark = pytest.mark.gpu


def test_vllm_matches_hf_predictions(tiny_model_dir, tmp_path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    pytest.importorskip("vllm")
    from eval.run import main
    hf = main(["eval/benchmarks/demo.yaml", f"model={tiny_model_dir}", f"out_dir={tmp_path}/hf", "backend=hf"])
    vl = main(["eval/benchmarks/demo.yaml", f"model={tiny_model_dir}", f"out_dir={tmp_path}/vllm", "backend=vllm"])
    import json
    def preds(r, d):
        return [json.loads(l)["pred"] for l in (tmp_path / d / r["predictions"]).read_text().splitlines()]
    a, b = preds(hf, "hf"), preds(vl, "vllm")
    agree = sum(x == y for x, y in zip(a, b)) / len(a)
    assert len(a) == len(b) == hf["n_questions"] and agree >= 0.97, agree
