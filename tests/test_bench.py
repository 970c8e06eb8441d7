"""bench.py stays alive: --quick runs both sides and prints finite positive figures; the FLOP formula is right."""
import importlib.util
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NUMBER = r"([-+0-9.eE]+|nan|inf)"


def _positive(text):
    value = float(text)
    return math.isfinite(value) and value > 0


def test_flop_formula_matches_torch_flop_counter():
    """bench.step_flops counts exactly the matmul FLOPs torch sees in one training forward + backward of ours."""
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import XLMRobertaConfig, XLMRobertaModel

    import bench
    import xpe

    torch.manual_seed(0)
    config = XLMRobertaConfig(vocab_size=100, max_position_embeddings=128, type_vocab_size=1, hidden_size=32,
                              num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    backbone = XLMRobertaModel(config, add_pooling_layer=False).requires_grad_(False)
    for method, frac, mlp_rows in (("xpe", 1.0, 20), ("spt", 0.0, 0)):
        model = xpe.build_classifier(backbone, xpe.PromptConfig(method=method, xpe_frac=frac)).train()
        input_ids = torch.randint(3, 100, (6, 17))
        mask = torch.ones_like(input_ids)
        mask[0, 12:] = 0
        with FlopCounterMode(display=False) as counter:
            model(input_ids, mask).sum().backward()
        mlp = 32 * 256 + 256 * 256 + 256 * 32
        head = 32 * 32 + 32 * 7
        assert bench.step_flops([17], [6], config, 20, mlp_rows, mlp, head) == counter.get_total_flops(), method


def test_missing_peft_fails_with_one_line(tmp_path):
    fake = tmp_path / "peft"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('No module named peft')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run([sys.executable, "bench.py", "--quick"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install peft" in lines[0], out.stderr


def test_quick_prints_both_sides_and_ratios(sib200_dir, e5_dir):
    if importlib.util.find_spec("peft") is None:
        message = "peft is not installed (pip install peft): bench.py's peer side needs it"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must install it")
        pytest.skip(message)
    out = subprocess.run([sys.executable, "bench.py", "--quick", "--data-dir", str(sib200_dir),
                          "--tokenizer", str(e5_dir)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    lines = out.stdout.strip().splitlines()
    for side in ("ours", "peer"):
        train = [l for l in lines if l.startswith(f"{side} train: ")]
        assert len(train) == 1, out.stdout
        m = re.match(rf"{side} train: {NUMBER} steps/s, {NUMBER} sentences/s, {NUMBER} tokens/s .*MFU n/a", train[0])
        assert m and all(_positive(g) for g in m.groups()), train[0]
        evals = [l for l in lines if l.startswith(f"{side} eval: ")]
        assert len(evals) == 1, out.stdout
        m = re.match(rf"{side} eval: (\d+) sentences \(3 languages.*, {NUMBER} sentences/s$", evals[0])
        assert m and int(m.group(1)) == 96 and _positive(m.group(2)), evals[0]
    m = re.fullmatch(rf"ratio ours/peer: train steps/s {NUMBER}x, eval sentences/s {NUMBER}x", lines[-1])
    assert m and all(_positive(g) for g in m.groups()), lines[-1]
