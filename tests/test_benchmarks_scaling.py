"""benchmarks/scaling.py: the planned sweeps and the report's arithmetic on hand-made records."""

import json

import pytest

from benchmarks import scaling


def _rec(model, sweep, *, t=4, batch=8, width=0.5, img_per_s, rss_mb, remat=False, xla_mb=None):
    # XLA memory: `xla_mb` of temporaries, 10 MB of (donated) arguments aliased by the outputs.
    xla = None if xla_mb is None else {"argument": 10.0, "output": 10.0, "temp": xla_mb,
                                       "alias": 10.0}
    return {"model": model, "sweep": sweep, "mode": "train", "num_steps": t, "batch": batch,
            "width": width, "img_per_s": img_per_s, "peak_rss_mb": rss_mb, "compile_s": 3.0,
            "options": {"remat": remat}, "xla_memory_mb": xla}


def test_plan():
    configs = scaling.plan(["vgg_snn", "resnet19"], batch=8, width=0.5, steps=2, warmup=1)
    # Per model: 6 T values x 2 remat settings, 5 batches, 3 widths.
    assert len(configs) == 2 * (12 + 5 + 3)
    t_sweep = [c for c in configs if c["sweep"] == "T" and c["model"] == "resnet19"]
    assert sorted({c["num_steps"] for c in t_sweep}) == [1, 2, 4, 8, 16, 32]
    assert {c["options"]["remat"] for c in t_sweep} == {False, True}
    assert all(c["batch"] == 8 and c["width"] == 0.5 for c in t_sweep)
    widths = [c for c in configs if c["sweep"] == "width" and c["model"] == "vgg_snn"]
    assert [c["width"] for c in widths] == [0.25, 0.5, 1.0]
    assert all(c["num_steps"] == 0 and c["batch"] == 8 for c in widths)  # the model's own T
    with pytest.raises(ValueError, match="unknown sweep"):
        scaling.plan(["vgg_snn"], 8, 0.5, 2, 1, ["depth"])


def test_rows_against_linear():
    records = [
        # T sweep: 1 -> 2 -> 4 steps; time 1.0, 1.5, 4.4 s per step (batch 8); XLA memory
        # 10 + 92.4, 10 + 194.8, 10 + 502 MB = 0.1, 0.2, 0.5 GB.
        _rec("vgg_snn", "T", t=1, img_per_s=8.0, rss_mb=1024, xla_mb=92.4),
        _rec("vgg_snn", "T", t=4, img_per_s=8 / 4.4, rss_mb=2048, xla_mb=502.0),
        _rec("vgg_snn", "T", t=2, img_per_s=8 / 1.5, rss_mb=1536, xla_mb=194.8),
        _rec("vgg_snn", "T", t=2, img_per_s=1.0, rss_mb=9999, remat=True),
        # batch sweep: 4 -> 16, 0.5 s and 1.0 s per step; no XLA memory recorded.
        _rec("vgg_snn", "batch", batch=4, img_per_s=8.0, rss_mb=1000),
        _rec("vgg_snn", "batch", batch=16, img_per_s=16.0, rss_mb=2000),
        _rec("vgg_snn", "width", width=1.0, img_per_s=2.0, rss_mb=3000),
        {"mode": "gemm", "gflop_per_s": 100.0},  # not a sweep point: ignored
    ]
    rows = scaling.table_rows(records)
    t_rows = [r for r in rows if r["sweep"] == "T" and not r["remat"]]
    assert [r["value"] for r in t_rows] == [1, 2, 4]
    assert [r["step_s"] for r in t_rows] == pytest.approx([1.0, 1.5, 4.4])
    # Linear from T = 1: 2 s at T = 2, 4 s at T = 4; 0.2 GB and 0.4 GB.
    assert [r["time_vs_linear"] for r in t_rows] == pytest.approx([1.0, 0.75, 1.1])
    assert [r["xla_gb"] for r in t_rows] == pytest.approx([0.1, 0.2, 0.5])
    assert [r["memory_vs_linear"] for r in t_rows] == pytest.approx([1.0, 1.0, 1.25])
    remat = [r for r in rows if r["remat"]]
    assert len(remat) == 1 and remat[0]["time_vs_linear"] == pytest.approx(1.0)  # own series
    b_rows = [r for r in rows if r["sweep"] == "batch"]
    # batch 16 = 4x batch 4: linear would be 2.0 s; measured 1.0 s. No XLA memory: no ratio
    # (peak RSS, which holds the runtime and compiler, is never compared with linear).
    assert [r["time_vs_linear"] for r in b_rows] == pytest.approx([1.0, 0.5])
    assert b_rows[1]["memory_vs_linear"] is None and b_rows[1]["xla_gb"] is None
    (w_row,) = [r for r in rows if r["sweep"] == "width"]
    assert w_row["time_vs_linear"] is None and w_row["step_s"] == pytest.approx(4.0)
    text = scaling.markdown(rows)
    assert "| vgg_snn | T | no | 4 | 4.400 | 1.10 | 0.500 | 1.25 | 2.00 | 3 |" in text
    assert "| vgg_snn | width | no | 1 | 4.000 | - | - | - | 2.93 | 3 |" in text


def test_latest_record_wins_and_report_files(tmp_path):
    path = tmp_path / "scaling.jsonl"
    records = [_rec("resnet19", "batch", batch=4, img_per_s=4.0, rss_mb=1000),
               _rec("resnet19", "batch", batch=8, img_per_s=4.0, rss_mb=1000),
               _rec("resnet19", "batch", batch=8, img_per_s=8.0, rss_mb=1000)]  # a re-run
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    text = scaling.report(str(path))
    assert "| resnet19 | batch | no | 8 | 1.000 | 0.50 | - | - | 0.98 | 3 |" in text
    assert text.count("| resnet19 |") == 2
    assert (tmp_path / "scaling.md").read_text() == text
    assert (tmp_path / "scaling.png").stat().st_size > 0
