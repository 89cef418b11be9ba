"""`--task svo-probes`: the metric on hand-made cosines, the readers (our jsonl, the release's csv), and the
task end to end on a very small model and probes drawn by the demo's generator (pipeline.demo.eval_sets)."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import yaml

from tests.training.eval_helpers import ucf_set
from tests.training.train_helpers import MINI_MODEL


# ---- the metric ------------------------------------------------------------------------------------------
def test_precision_recall_and_pairwise_on_hand_made_cosines():
    from training.metrics import svo_metrics

    # probe:        0 subj  1 subj  2 verb  3 verb  4 obj
    pos = torch.tensor([0.29, 0.10, 0.26, 0.22, 0.25], dtype=torch.float64)
    neg = torch.tensor([0.10, 0.28, 0.27, 0.22, 0.05], dtype=torch.float64)
    types = ["subject", "subject", "verb", "verb", "object"]
    m = svo_metrics(pos, neg, types, rhos=(0.2, 0.25, 0.3))
    # rho 0.2: positives above: 0, 2, 3, 4 (TP 4); negatives above: 1, 2, 3 (FP 3)
    assert (m["tp@0.2"], m["fp@0.2"]) == (4, 3)
    assert m["precision@0.2"] == pytest.approx(400 / 7) and m["recall@0.2"] == pytest.approx(80.0)
    assert m["accuracy@0.2"] == pytest.approx(100 * (4 + 2) / 10)
    # rho 0.25 is strict: probe 4's 0.25 does not count. Positives 0, 2; negatives 1, 2.
    assert (m["tp@0.25"], m["fp@0.25"], m["precision@0.25"]) == (2, 2, 50.0)
    assert m["precision@0.25_object"] is None                 # nothing of probe 4 is above 0.25: no prediction
    assert m["recall@0.25_object"] == 0.0
    # rho 0.3: nothing is above it at all -> null, not 0 and not 100
    assert m["tp@0.3"] == m["fp@0.3"] == 0 and m["precision@0.3"] is None
    assert m["precision@0.2_subject"] == 50.0 and m["precision@0.2_verb"] == 50.0
    # pairwise: 0 right, 1 wrong, 2 wrong, 3 a tie (wrong), 4 right
    assert m["pairwise_acc"] == pytest.approx(40.0)
    assert (m["pairwise_acc_subject"], m["pairwise_acc_verb"], m["pairwise_acc_object"]) == (50.0, 0.0, 100.0)
    assert (m["probes"], m["probes_subject"], m["probes_verb"], m["probes_object"]) == (5, 2, 2, 1)
    assert m["cos_pos_mean_verb"] == pytest.approx(0.24) and m["chance_precision"] == 50.0


def test_a_type_without_probes_and_bad_input():
    from training.metrics import svo_metrics

    m = svo_metrics(torch.tensor([0.5]), torch.tensor([0.1]), ["verb"], rhos=(0.2,))
    assert m["precision@0.2_verb"] == 100.0 and m["probes_subject"] == 0
    assert m["precision@0.2_subject"] is None and m["pairwise_acc_subject"] is None
    with pytest.raises(ValueError, match="one entry per probe"):
        svo_metrics(torch.tensor([0.5, 0.2]), torch.tensor([0.1]), ["verb"])
    with pytest.raises(ValueError, match="not among"):
        svo_metrics(torch.tensor([0.5]), torch.tensor([0.1]), ["adjective"])


# ---- the readers -----------------------------------------------------------------------------------------
def test_jsonl_reader_counts_bad_rows_and_resolves_paths_beside_it(tmp_path):
    from common.downstream_svo import read_svo

    (tmp_path / "img").mkdir()
    for name in ("a.png", "b.png"):
        (tmp_path / "img" / name).write_bytes(b"x")
    rows = [{"sentence": "A dog runs.", "pos_image": "img/a.png", "neg_image": "img/b.png", "neg_type": "verb"},
            {"sentence": "A cat sits.", "pos_image": "img/a.png", "neg_image": "img/gone.png", "neg_type": "obj"},
            {"sentence": "x", "pos_image": "img/a.png", "neg_image": "img/b.png", "neg_type": "adverb"},
            {"sentence": "", "pos_image": "img/a.png", "neg_image": "img/b.png", "neg_type": "subject"}]
    path = tmp_path / "svo.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{not json\n\n")
    result = read_svo("s", [str(path)])
    assert [p.neg_type for p in result.probes] == ["verb", "object"]
    assert result.probes[0].pos_path == str(tmp_path / "img" / "a.png") and result.probes[1].neg_path is None
    assert result.bad_rows == 3 and "adverb" in result.errors[0]


def test_the_release_csv_with_images_by_id_or_url(tmp_path):
    from common.downstream import DownstreamFormatError
    from common.downstream_svo import read_svo

    images = tmp_path / "images"
    images.mkdir()
    for name in ("0a1b.jpg", "ff02.jpg", "photo_9.jpg"):
        (images / name).write_bytes(b"x")
    csv = tmp_path / "svo_probes.csv"
    csv.write_text("sentence,pos_triplet,neg_triplet,subj_neg,verb_neg,obj_neg,pos_url,neg_url,pos_image_id,neg_image_id\r\n"
                   "A man rides a horse.,\"man,ride,horse\",\"woman,ride,horse\",True,False,False,"
                   "http://x/a.jpg,http://y/photo_9.jpg?s=1,0a1b,\r\n"
                   "A girl eats cake.,\"girl,eat,cake\",\"girl,eat,bread\",False,False,True,,,0a1b,ff02\r\n"
                   "Two flags.,,,True,True,False,,,0a1b,ff02\r\n")
    result = read_svo("svo", [str(csv)], str(images))
    assert [(p.neg_type, Path(p.pos_path).name, Path(p.neg_path).name) for p in result.probes] == [
        ("subject", "0a1b.jpg", "photo_9.jpg"), ("object", "0a1b.jpg", "ff02.jpg")]
    assert result.bad_rows == 1 and "expected one" in result.errors[0]
    (tmp_path / "bad.csv").write_text("sentence,subj_neg,verb_neg,obj_neg\nA.,True,False,False\n")
    with pytest.raises(DownstreamFormatError, match="pos_image_id"):
        read_svo("svo", [str(tmp_path / "bad.csv")])


# ---- end to end ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def svo_run(tmp_path_factory) -> dict:
    """A tiny checkpoint, 4 probes of each type drawn by pipeline.demo.eval_sets, and a config."""
    from pipeline.demo import eval_sets
    from training.model import TVTS
    from training.model_config import load_preset

    root = tmp_path_factory.mktemp("svo")
    cfg = load_preset("tiny", MINI_MODEL)
    torch.manual_seed(0)
    ckpt = root / "model.pt"
    torch.save(TVTS(cfg).state_dict(), ckpt)
    ckpt.with_suffix(".json").write_text(json.dumps({"preset": "tiny", "model": asdict(cfg)}))
    probes = [p for p in eval_sets.svo_plan(0) if p.index % eval_sets.SVO_PER_TYPE < 4]
    eval_sets.make_svo(probes, root / "downstream")
    datasets = [{"name": "shapes_svo", "format": "svo",
                 "annotations": [str(root / "downstream" / "shapes_svo" / "svo_probes.jsonl")]},
                {"name": "colours", **ucf_set(root / "ucf", train=1, test=1)}]
    config = root / "eval.yaml"
    config.write_text(yaml.safe_dump({"seed": 0, "evaluate": {
        "data": {"shards": "unused", "num_workers": 0}, "output": {"dir": str(root / "out")},
        "downstream": {"datasets": datasets, "features": {"batch_size": 5},
                       "svo_probes": {"dataset": "shapes_svo"}}}}))
    return {"ckpt": str(ckpt), "config": str(config), "out": root / "out", "probes": probes}


def run(svo_run, *args: str) -> int:
    from training.evaluate import main

    return main(["--checkpoint", svo_run["ckpt"], "--config", svo_run["config"], *args])


def test_svo_probes_end_to_end_matches_the_towers_by_hand(svo_run, capsys, monkeypatch):
    from training.evaluate import load_model
    from training.model import build_tokenizer
    from training.video_views import ViewSpec, image_views

    assert run(svo_run, "--task", "svo-probes") == 0
    result = json.loads((svo_run["out"] / "shapes_svo" / "svo-probes.json").read_text())
    assert (result["probes"], result["probes_subject"], result["probes_verb"], result["probes_object"]) == (12, 4, 4, 4)
    assert result["rhos"] == [0.2, 0.25, 0.3] and result["images"] == 24 and result["probes_left_out"] == 0
    assert {"precision@0.2_verb", "precision@0.25_subject", "precision@0.3", "recall@0.2", "pairwise_acc_object",
            "chance_pairwise_acc"} <= set(result)
    assert "null when no image is above rho" in result["definitions"]["precision@rho"]
    assert result["features"]["cached"] is False and result["features"]["decoded"] == 24
    table = capsys.readouterr().out
    assert "svo-probes on shapes_svo" in table and "precision rho 0.25" in table and "pairwise acc" in table

    # The same cosines from the towers by hand: image repeated over T frames -> [CLS] -> video_proj; the
    # sentence -> encode_text. Features went through float16, hence the tolerance.
    model, _ = load_model(svo_run["ckpt"])
    tok = build_tokenizer(model.cfg)
    root = Path(svo_run["config"]).parent / "downstream" / "shapes_svo"
    spec = ViewSpec(frames=4, image_size=32)
    with torch.no_grad():
        pos = model.encode_video(torch.cat([image_views(root / p.image("pos"), spec) for p in svo_run["probes"]]))
        neg = model.encode_video(torch.cat([image_views(root / p.image("neg"), spec) for p in svo_run["probes"]]))
        t = tok([p.sentence for p in svo_run["probes"]], max_length=16, truncation=True, padding="longest",
                return_tensors="pt")
        text = model.encode_text(t["input_ids"], t["attention_mask"])
    cos_pos, cos_neg = (text * pos).sum(-1), (text * neg).sum(-1)
    assert result["cos_pos_mean"] == pytest.approx(float(cos_pos.mean()), abs=2e-3)
    assert result["cos_neg_mean_verb"] == pytest.approx(
        float(cos_neg[[p.neg_type == "verb" for p in svo_run["probes"]]].mean()), abs=2e-3)
    margin = cos_pos - cos_neg
    if (margin.abs() > 5e-3).all():                          # no near-tie that float16 could flip
        assert result["pairwise_acc"] == pytest.approx(100.0 * float((margin > 0).float().mean()))

    # The second run reads every image's features from the cache.
    import training.svo_probes as svo

    def no_decoding(*args, **kwargs):
        raise AssertionError("read an image although its features are cached")

    monkeypatch.setattr(svo, "image_views", no_decoding)
    assert run(svo_run, "--task", "svo-probes") == 0
    again = json.loads((svo_run["out"] / "shapes_svo" / "svo-probes.json").read_text())
    assert again["features"]["cached"] is True and again["pairwise_acc"] == result["pairwise_acc"]


def test_baselines_have_their_folder_and_the_summary_lists_svo(svo_run):
    from training.eval_summary import summary_lines

    assert run(svo_run, "--task", "svo-probes", "--random-init", "--set", "seed=1",
               "--set", "downstream.svo_probes.rhos=[-0.5, 0.1]") == 0
    result = json.loads((svo_run["out"] / "random-init" / "shapes_svo" / "svo-probes.json").read_text())
    assert result["weights_from"] == "random init (seed 1)" and result["rhos"] == [-0.5, 0.1]
    assert "precision@-0.5_subject" in result and "precision@0.2" not in result
    if not (svo_run["out"] / "shapes_svo" / "svo-probes.json").exists():
        assert run(svo_run, "--task", "svo-probes") == 0
    lines = summary_lines(svo_run["out"])
    row = next(line for line in lines if "SVO pairwise acc, verb negatives" in line)
    assert row.startswith("svo-probes (shapes_svo)") and row.split()[-1] == "50.00%"


@pytest.mark.parametrize("args, message", [
    (["--task", "svo-probes", "--dataset", "colours"], "has no sentence/image probes"),
    (["--task", "v2v", "--dataset", "shapes_svo"], "has no class labels"),
    (["--task", "svo-probes", "--set", "downstream.svo_probes.rhos=[]"], "downstream.svo_probes.rhos"),
])
def test_wrong_dataset_or_settings_is_one_line(svo_run, capsys, args, message):
    code = 2
    try:
        code = run(svo_run, *args)
    except SystemExit as exc:                  # a config error exits from argument parsing
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
