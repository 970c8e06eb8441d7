"""tools/bench.py stays alive: --quick runs both sides and prints finite positive figures; the FLOP formula is right."""
import math
import os
import re
import subprocess
import sys
import tempfile
import time

import pytest
import torch

import train
from tools import bench
from conftest import (ROOT, argparse_refusals, cpu_bf16, flags_not_given, outside, refused_in_one_line,
                      require_extra)

NUMBER = r"([-+0-9.eE]+|nan|inf)"


def _positive(text):
    value = float(text)
    return math.isfinite(value) and value > 0


def test_flop_formula_matches_torch_flop_counter():
    """bench.step_flops counts exactly the matmul FLOPs torch sees in one training forward + backward of ours."""
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import XLMRobertaConfig, XLMRobertaModel

    from tools import bench
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
    out = subprocess.run([sys.executable, "-m", "tools.bench", "--quick"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install peft" in lines[0], out.stderr


def test_quick_prints_both_sides_and_ratios(sib200_dir, e5_dir):
    require_extra("peft")  # the peer side
    out = subprocess.run([sys.executable, "-m", "tools.bench", "--quick", "--data-dir", str(sib200_dir),
                          "--tokenizer", str(e5_dir)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    lines = out.stdout.strip().splitlines()

    def figures(prefix, pattern):
        (line,) = [l for l in lines if l.startswith(prefix)]
        m = re.match(re.escape(prefix) + pattern, line)
        assert m and all(_positive(g) for g in m.groups()), line
        return [float(g) for g in m.groups()]

    run_steps = rf"[^:]*: {NUMBER} run-steps/s"
    figures("train packed (4 runs", run_steps + ", .*MFU n/a")
    figures("train one after another (4 runs", run_steps + ", .*MFU n/a")
    figures("seeds packed (2 seeds", run_steps)
    figures("seeds in turn (2 seeds", run_steps)
    figures("target runs packed (2 languages x 2 seeds", run_steps)
    figures("target runs one after another (4 runs", run_steps)
    figures("eval one pass (4 runs, 96 sentences", rf"[^:]*: {NUMBER} s, {NUMBER} sentence-runs/s")
    figures("eval a pass per run (4 runs", rf"[^:]*: {NUMBER} s, {NUMBER} sentence-runs/s")
    steps = rf"[^:]*: {NUMBER} steps/s, {NUMBER} sentences/s, {NUMBER} tokens/s .*MFU n/a"
    figures("ours train (train.fit)", steps)
    figures("peer train (Trainer, NaN filter on", steps)
    figures("peer train (Trainer, logging_nan_inf_filter=False)", steps)
    figures("ours eval (1 run)", rf": {NUMBER} sentences/s; peer eval \(Trainer.predict\): {NUMBER} sentences/s")
    for side in ("fp32", "bf16"):
        figures(f"precision {side}", rf"[^:]*: train {NUMBER} steps/s, scoring {NUMBER} sentences/s")
    figures("peak memory", rf"[^:]*: one run {NUMBER} GiB, 4 runs packed {NUMBER} GiB")
    figures("sweep packed (xpe, --lr-prompt 0.005,0.001,0.0005,5e-05)", rf": {NUMBER} run-steps/s")
    figures("sweep one after another", rf": {NUMBER} run-steps/s")
    ratios = closing_ratios(lines)
    assert set(ratios) == {"packed / one after another", "sweep pack / one after another", "seeds packed / in turn",
                           "target pack / one after another", "eval one pass / a pass per run",
                           "ours / stock Trainer", "ours / Trainer without NaN filter", "ours eval / Trainer.predict",
                           "bf16 / fp32 train", "bf16 / fp32 scoring", "peak memory pack / one run"}, lines[-1]
    assert all(_positive(v) for v in ratios.values()), lines[-1]


def closing_ratios(lines):
    """{name: value} of the last line, "ratios: A / B N.NNx, ...", as a script reads it."""
    assert lines[-1].startswith("ratios: "), lines[-1]
    items = lines[-1][len("ratios: "):].split(", ")
    found = [re.fullmatch(rf"([^,]+ / [^,]+) {NUMBER}x", item) for item in items]
    assert all(found), lines[-1]
    return {m.group(1): m.group(2) for m in found}


def test_only_the_chosen_gpu_is_made_visible():
    """The Trainer spreads the peer over every visible GPU (DataParallel) while ours uses one: leave one."""
    from tools import bench

    assert bench.visible_devices("cuda", None) == "0"
    assert bench.visible_devices("cuda:1", None) == "1"
    assert bench.visible_devices("cuda:1", "4,6,7") == "6"
    with pytest.raises(ValueError, match="only 2 GPU"):
        bench.visible_devices("cuda:2", "0,1")


def test_the_peak_for_mfu_is_the_gpus_own():
    from tools import bench

    assert bench.peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert bench.peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert bench.peak_tflops("NVIDIA H100 NVL") == 835.0
    assert bench.peak_tflops("NVIDIA H200") == 989.0
    assert bench.peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert bench.peak_tflops("NVIDIA GeForce RTX 4090") is None  # bench.py then asks for --peak-tflops


def test_ours_is_timed_through_the_loop_train_py_runs(sib200_dir, e5_dir, monkeypatch, capsys):
    """Every training figure of ours comes from train.fit, bookkeeping included, not from a copy of its loop."""
    from tools import bench
    import train

    monkeypatch.setenv("TQDM_DISABLE", "1")  # bench.main sets it; the test gives it back afterwards
    calls, real = [], train.fit
    monkeypatch.setattr(train, "fit", lambda runs, *args, **kwargs: calls.append(len(runs)) or real(runs, *args,
                                                                                                   **kwargs))
    threads = torch.get_num_threads()
    try:
        assert bench.main(["--quick", "--no-peer", "--no-eval", "--data-dir", str(sib200_dir),
                           "--tokenizer", str(e5_dir)]) == 0
    finally:  # --quick runs on one thread; later tests compare runs across processes, bit for bit
        torch.set_num_threads(threads)
    # the process warm-up and the packed four, the four alone, the sweep of four packed and alone, the eight seeds
    # packed, two packs of four in turn, the four target runs packed and alone, one run in fp32 and in bf16 (the
    # memory section's runs train in child processes)
    assert calls == [4, 4, 1, 1, 1, 1, 4, 1, 1, 1, 1, 8, 4, 4, 4, 1, 1, 1, 1, 1, 1]
    printed = capsys.readouterr().out
    assert "train packed (4 runs" in printed and "seeds in turn" in printed


def test_a_pack_peaks_at_one_runs_memory(sib200_dir, e5_dir):
    """The memory probe (a child process training N runs) on a toy shape, widened so that activations count:
    four runs packed peak within 1.3x of one run, because each run's pass goes backward as it ends."""
    from tools import bench

    args = bench.parse_args(["--quick", "--data-dir", str(sib200_dir), "--tokenizer", str(e5_dir), "--batch-size",
                             "64", "--steps", "1"])
    s = type("S", (), {"args": args, "common": type("C", (), {"precision": "fp32"})})()
    one, four = (bench.memory_probe_peak(s, n, "wide") for n in (1, 4))
    assert four <= 1.3 * one, (one, four)


@pytest.mark.parametrize("amx, avx512_bf16, native", [(True, True, True), (True, False, True),
                                                      (False, True, True), (False, False, False)])
def test_native_bf16_is_what_the_cpu_reports(monkeypatch, amx, avx512_bf16, native):
    from tools import bench
    cpu_bf16(monkeypatch, amx, avx512_bf16)
    assert bench.native_bf16("cpu") is native and bench.native_bf16("cuda") is True


def test_a_torch_without_the_probes_has_no_native_bf16(monkeypatch):
    from tools import bench
    for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        monkeypatch.delattr(torch.cpu, name, raising=False)
    assert bench.native_bf16("cpu") is False


# Every flag of tools.bench with a value out of its range: one line (argparse's own refusals end in one), exit 2,
# refused before anything is built or timed. {tmp}: the test's folder, which holds a-file.
BENCH_FLAGS = [
    (["--quick=yes"], "argument --quick: ignored explicit argument 'yes'"),
    (["--config", "huge"], "argument --config: invalid choice: 'huge'"),
    (["--decoder", "7b"], "argument --decoder: invalid choice: '7b'"),
    (["--device", "tpu"], "--device tpu: not a device; use cpu, cuda or cuda:N"),
    (["--device", "cuda:x"], "--device cuda:x: not a device"),
    (["--max-length", "1000"], "--max-length 1000 and 20 prompt vectors need more positions than"),
    (["--method", "lstm"], "argument --method: invalid choice: 'lstm'"),
    (["--source", "xyz_Latn"], "unknown language or group 'xyz_Latn'"),
    (["--targets", "xyz_Latn"], "unknown language or group 'xyz_Latn'"),
    (["--eval-languages", "xyz_Latn"], "unknown language or group 'xyz_Latn'"),
    (["--no-eval=yes"], "argument --no-eval: ignored explicit argument 'yes'"),
    (["--no-peer=yes"], "argument --no-peer: ignored explicit argument 'yes'"),
    (["--data-dir", "{tmp}/a-file"], "data directory {tmp}/a-file does not exist"),
    (["--tokenizer", "{tmp}/a-file"], "no tokenizer in {tmp}/a-file"),
    (["--threads", "100000000"], "--threads 100000000: this machine has"),  # torch started them at the first step
    (["--seed", "4294967296"], "numpy takes at most 4294967295: use a smaller --seed, or --no-peer"),
    (["--no-peer", "--seed", str(train.MAX_SEED)], f"--seed {train.MAX_SEED}: the seeds section trains seed "
                                                   f"{train.MAX_SEED + 1} too"),  # the largest seed is train.py's
    (["--precision", "fp16"], "argument --precision: invalid choice: 'fp16'"),
    (["--steps", "1_0"], "argument --steps: invalid int value: '1_0'"),  # read as train.py reads --steps
] + [([f"--{key.replace('_', '-')}={text}"], f"--{key.replace('_', '-')} must be {values.words()}")
     for key, values in bench.own_values().items() if key != "threads"  # its top: this machine's CPUs, above
     for text in outside(values, as_text=True)]


@pytest.mark.parametrize("args, words", BENCH_FLAGS)
def test_every_flag_out_of_range_is_one_line_and_nothing_is_timed(tmp_path, tiny_model_dir, sib200_dir, monkeypatch,
                                                                  capsys, args, words):
    from tools import bench

    (tmp_path / "a-file").write_text("mine")
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # where a timed run's folders would go
    monkeypatch.setenv("TQDM_DISABLE", "1")  # bench.main sets it; the test gives it back afterwards

    def timed(*_):
        raise AssertionError("timed before the flags were checked")

    monkeypatch.setattr(bench, "fit_seconds", timed)
    monkeypatch.setattr(bench, "predict_seconds", timed)
    fill = lambda text: text.replace("{tmp}", str(tmp_path))
    # the peer's own limits are checked only with the peer; elsewhere it is left out, so that peft is not needed
    peer = [] if any(a.startswith("--no-peer") for a in args) or "--no-peer" in words else ["--no-peer"]
    argv = ["--quick", *peer, "--tokenizer", str(tiny_model_dir), "--data-dir", str(sib200_dir), *map(fill, args)]
    threads, start = torch.get_num_threads(), time.perf_counter()
    try:
        code = bench.main(argv)
    except SystemExit as e:  # argparse's refusals: one line, as train.Parser makes them
        code = e.code
    finally:
        torch.set_num_threads(threads)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err and fill(words) in err[-1], err
    assert len(err) == 1, err
    assert flags_not_given(err[0], argv) <= {"--no-peer", "--peak-tflops"}, err  # what to add to go on
    assert time.perf_counter() - start < 60
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "tmp"] and not any((tmp_path / "tmp").iterdir())


def test_every_bench_flag_is_walked():
    from tools import bench

    walked = {a.split("=")[0] for args, _ in BENCH_FLAGS for a in args if a.startswith("--")}
    flags = {opt for action in bench.parser()._actions for opt in action.option_strings if opt.startswith("--")}
    assert flags - walked == {"--help"} and walked <= flags


def test_argparse_refusals_are_one_line_naming_the_flag(tmp_path, monkeypatch, capsys):
    """An unknown flag, a missing value, a bad type or choice and an empty --data-dir or --tokenizer: one line, exit
    2, no usage, nothing timed or written."""
    from tools import bench

    monkeypatch.chdir(tmp_path)
    cases = argparse_refusals(bench.parser())
    assert {"--data-dir", "--tokenizer", "--steps", "--config", "--precision"} <= {flag for _, flag in cases}
    for argv, flag in cases:
        assert flag in refused_in_one_line(bench.main, argv, capsys, "tools.bench")
    assert list(tmp_path.iterdir()) == []


# issue 42: a language spec with an empty or repeated item, and a data row given twice, are one line here too
COUNTED_FLAGS = [
    (["--source", "eng_Latn,"], "empty item in the language spec 'eng_Latn,'"),
    (["--targets", "joshi5-"], "empty term in 'joshi5-'"),
    (["--eval-languages", "eng_Latn,fra_Latn,eng_Latn"], "names 'eng_Latn' twice"),
]


@pytest.mark.parametrize("args, words", COUNTED_FLAGS)
def test_a_spec_that_names_a_thing_twice_or_nothing_is_one_line_and_nothing_is_timed(
        tmp_path, tiny_model_dir, sib200_dir, monkeypatch, capsys, args, words):
    test_every_flag_out_of_range_is_one_line_and_nothing_is_timed(tmp_path, tiny_model_dir, sib200_dir, monkeypatch,
                                                                  capsys, args, words)


def test_a_repeated_training_row_is_one_line_and_nothing_is_timed(tmp_path, tiny_model_dir, monkeypatch, capsys):
    import shutil

    from tools import bench

    from conftest import FIXTURE_SIB200
    shutil.copytree(FIXTURE_SIB200, tmp_path / "data")
    train = tmp_path / "data" / "eng_Latn" / "train.tsv"
    lines = train.read_text(encoding="utf-8").splitlines()
    train.write_text("\n".join(lines + [lines[2]]) + "\n", encoding="utf-8")
    monkeypatch.setenv("TQDM_DISABLE", "1")
    monkeypatch.setattr(bench, "fit_seconds", lambda *_: pytest.fail("timed"))
    code = bench.main(["--quick", "--no-peer", "--tokenizer", str(tiny_model_dir), "--data-dir", str(tmp_path / "data"),
                       "--source", "eng_Latn", "--targets", "fra_Latn", "--eval-languages", "fra_Latn"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and f"{train}, line {len(lines) + 1}: index_id" in err and len(err.splitlines()) == 1, err


def test_the_decoder_shape_times_a_pack_and_names_the_logits_it_never_forms(sib200_dir, tiny_decoder_dirs, capsys):
    """--decoder: one run, the four methods packed against one after another through train.fit, and scoring at a 32k
    and a 256k vocabulary (its peak memory on CUDA only; the full-vocabulary logits it avoids, computed)."""
    from tools import bench

    threads = torch.get_num_threads()
    try:
        code = bench.main(["--quick", "--decoder", "quick", "--no-peer", "--tokenizer", str(tiny_decoder_dirs["llama"]),
                           "--data-dir", str(sib200_dir), "--eval-limit", "8", "--steps", "2"])
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert code == 0, out
    for words in ("decoder train one run (xpe):", "decoder train packed (4 runs, one step for all):",
                  "decoder train one after another (4 runs):", "decoder scoring, vocabulary 32768:",
                  "decoder scoring, vocabulary 262144:", "ratios: decoder packed / one after another"):
        assert words in out, out
    full = [float(line.split("would take ")[1].split(" MiB")[0]) for line in out.splitlines() if "would take" in line]
    assert len(full) == 2 and full[1] == pytest.approx(8 * full[0])
