"""``acn bench``: the JSON contract and the table, measured for real (small shapes)."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch

from acn.cli.parser import main


def _check_report(report: dict) -> None:
    assert report["step_ratio_acn_over_vae"] == pytest.approx(
        report["acn_step_ms"] / report["vae_step_ms"]
    )
    assert report["step_ratio_acn_over_vae"] > 0
    assert report["sample_images_per_s"] > 0 and report["train_images_per_s_acn"] > 0
    decoding = {(r["image"], r["batch"]): r for r in report["decoding"]}
    assert set(decoding) == {("8x8", 1), ("8x8", 64)}  # --no-large: no 28x28
    for r in decoding.values():
        assert r["cached_images_per_s"] == pytest.approx(r["batch"] / r["cached_s"])
        if r["full_pass_s"] is not None:
            assert r["speedup"] == pytest.approx(r["full_pass_s"] / r["cached_s"])
    assert decoding[("8x8", 64)]["speedup"] is not None  # measured even in --quick
    assert report["knn"], "no k-NN records"
    for record in report["knn"]:
        assert {"backend", "N", "D", "B", "ms"} <= record.keys()
        assert record["ms"] > 0 and record["B"] == 128
    backends = {r["backend"] for r in report["knn"]}
    assert "torch" in backends
    assert {(r["N"], r["D"]) for r in report["knn"]} == {(60_000, 16), (60_000, 128)}


def test_bench_writes_the_contracted_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    args = ["bench", "--quick", "--no-large", "--processes", "0", "--no-load", "--out", str(out)]
    assert main(args) == 0
    report = json.loads(out.read_text())
    _check_report(report)
    assert report["scaling"] == [] and report["load"] == [] and report["codec"] == []
    table = capsys.readouterr().out
    assert "ratio ACN/VAE" in table and "exact k-NN" in table and "N=   60,000" in table
    assert "PixelCNN decoding" in table and "8x8 batch 64: cached" in table


def test_bench_rejects_bad_process_counts(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["bench", "--processes", "1,x"])
    assert stop.value.code == 2
    assert "not a list of integers" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_measures_scaling_and_load(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS")  # the measured processes start as a user's would
    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--no-large", "--processes", "1,2", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    _check_report(report)
    load = {(r["workload"], r["setting"]): r for r in report["load"]}
    assert set(load) == {
        (w, s) for w in ("train8", "sample8") for s in ("torch default", "acn auto")
    }
    for r in load.values():
        assert r["loaded_over_idle"] == pytest.approx(r["loaded_s"] / r["idle_s"])
        assert r["idle_s"] > 0 and r["loaded_s"] > 0
    for w in ("train8", "sample8"):
        assert load[(w, "torch default")]["idle_over_torch_default"] == 1.0
        # Beside the competitor the library counts a busy core and leaves it to it.
        used = int(load[(w, "acn auto")]["threads_loaded"].split()[0])
        assert used <= max(1, (os.cpu_count() or 1) - 1)
    one, two = report["scaling"]
    assert (one["processes"], two["processes"]) == (1, 2)
    assert one["efficiency"] == pytest.approx(1.0)
    assert two["images_per_s"] > 0 and two["efficiency"] > 0


def test_the_codec_bench_puts_the_file_beside_its_bound_and_the_baselines(tiny_runs):
    from acn.experiments.bench_codec import bench_codec, format_codec

    report = bench_codec(tiny_runs["acn"], seeds=2, samples=2, limit=20, search=2)
    assert report["num_images"] == 20 and len(report["file_nats_per_seed"]) == 2
    best = report["best_of_seeds"]
    assert best["bits_per_image"] == pytest.approx(report["codec_bits_per_image"])
    assert min(report["file_nats_per_seed"]) == pytest.approx(
        report["codec_bits_per_image"] * 0.6931471805599453
    )
    assert {"gzip", "bz2", "xz", "png"} <= report["baselines_bits_per_image"].keys()
    assert report["encode_images_per_s"] > 0 and report["decode_images_per_s"] > 0
    search = report["seed_search"]  # one search of both seeds: the best file
    assert search["file_nats_per_search"] == [min(report["file_nats_per_seed"])]
    soft = report["soft_tour"]
    assert len(soft["file_nats_per_seed"]) == 2
    assert soft["ceiling_nats_per_image"] == pytest.approx(math.lgamma(21) / 20)
    assert soft["saving_nats_per_image"] == pytest.approx(
        np.mean(report["file_nats_per_seed"]) - np.mean(soft["file_nats_per_seed"])
    )
    table = format_codec(report)
    assert "best of 2 seeds" in table and "gzip" in table and "soft tour" in table


def test_precision_bench_times_both_precisions_side_by_side():
    from conftest import TINY

    from acn.experiments.bench import _format_precision, bench_precision

    (record,) = bench_precision(1, 2, torch.device("cpu"), ("digits-acn",), tuple(TINY))
    assert record["preset"] == "digits-acn"
    assert record["float32_step_ms"] > 0 and record["bf16_step_ms"] > 0
    assert record["speedup_bf16"] == pytest.approx(
        record["float32_step_ms"] / record["bf16_step_ms"]
    )
    assert record["native_bf16"] in (True, False)
    assert "digits-acn" in "\n".join(_format_precision([record]))


def test_native_bf16_is_read_from_the_cpu_flags():
    from acn.runtime import cpu_native_bf16

    assert not cpu_native_bf16("processor : 0\nflags : fpu sse2 avx2 avx512f\n")
    assert cpu_native_bf16("processor : 0\nFeatures : fp asimd bf16 i8mm\n")
    x86 = cpu_native_bf16("processor : 0\nflags : fpu avx512f avx512_bf16\n")
    # x86's flag counts only where torch dispatches to AVX-512 kernels.
    assert x86 == (torch.backends.cpu.get_cpu_capability() in ("AVX512", "AVX512_BF16"))


def test_the_layout_bench_decodes_every_layout_and_pairs_sizes_by_seed(tiny_runs):
    from acn.experiments.bench_layout import bench_layout, format_layouts, parse_layouts

    layouts = parse_layouts("1x1,4x2,autoxauto")
    assert layouts == [(1, 1), (4, 2), (None, None)]
    report = bench_layout(tiny_runs["acn"], layouts, limit=24, seeds=2, exact=True)
    rows = report["rows"]
    assert [(r["segments"], r["parts"]) for r in rows[:2]] == [(1, 1), (4, 2)]
    assert rows[0]["size_percent_vs_first"] == 0.0 and rows[0]["steps"] == 24
    for row in rows:  # each decoded to its images (bench_layout checks), at a measured speed
        assert row["decode_images_per_s"] > 0 and len(row["bits_per_seed"]) == 2
        pairs = zip(rows[0]["bits_per_seed"], row["bits_per_seed"], strict=True)
        paired = [100 * (b / a - 1) for a, b in pairs]
        assert abs(row["size_percent_vs_first"] - sum(paired) / 2) < 1e-9
    assert "| 4x2 | 4 | 2 |" in format_layouts(report)
    with pytest.raises(ValueError, match="SEGMENTSxPARTS"):
        parse_layouts("8")


def test_flipped_copies_differ_from_their_image_by_the_flips():
    from acn.experiments.bench_scale import flipped_copies

    images = np.random.default_rng(0).integers(0, 2, size=(5, 1, 4, 4)).astype(np.uint8)
    copies = flipped_copies(images, 3, 2, levels=2)
    assert copies.shape == (15, 1, 4, 4) and copies.dtype == np.uint8
    changed = (copies != np.tile(images, (3, 1, 1, 1))).reshape(15, -1).sum(axis=1)
    assert changed.tolist() == [2] * 15
    grey = flipped_copies(images * 3, 2, 3, levels=4)
    assert ((grey != np.tile(images * 3, (2, 1, 1, 1))).reshape(10, -1).sum(axis=1) == 3).all()
    assert grey.max() < 4


def test_the_scale_bench_codes_every_copy_bit_exact(tiny_runs):
    from acn.experiments.bench_scale import bench_scale, format_scale

    report = bench_scale(tiny_runs["acn"], copies=2, flips=1, segments=6, parts=2)
    assert report["num_images"] == 2 * report["base_images"] and report["parts"] == 2
    assert report["bits_per_image"] == pytest.approx(8 * report["bytes"] / report["num_images"])
    assert report["peak_mb_after_decode"] >= report["peak_mb_after_encode"] > 0
    assert "bit-exact" in format_scale(report)


def test_the_soft_tour_bench_pairs_files_by_seed_and_times_its_own_work(tiny_runs):
    from acn.experiments.bench_soft import bench_soft, format_soft

    report = bench_soft(tiny_runs["acn"], seeds=2, sizes=(30, 90))
    saving = report["saving"]
    greedy, soft = saving["greedy_bits_per_image"], saving["soft_bits_per_image"]
    assert len(greedy) == len(soft) == 2
    assert saving["saving_mean"] == pytest.approx(np.mean(np.array(greedy) - np.array(soft)))
    n = saving["num_images"]
    assert saving["ceiling_bits_per_image"] == pytest.approx(math.lgamma(n + 1) / math.log(2) / n)
    assert [w["num_images"] for w in report["work"]] == [30, 90]
    for w in report["work"]:
        assert w["encoder_choices_seconds"] > 0 and w["decoder_choices_seconds"] > 0
        assert w["arrays_mib"] > 0
    table = format_soft(report)
    assert "log2 N!/N" in table and "| 90 |" in table
