"""Segmenters through SamPredictor: our own small model and the official SAM architectures."""
from __future__ import annotations

import argparse
import json
import shutil
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from api.config import from_environment
from benchmarks.compare_segmenters import gate
from ml.datasets import load_samples
from ml.errors import ModelUnavailable, WeightsTampered
from ml.segmenter.build import build_branet_sam_small, load_carded_segmenter, load_segmenter
from ml.segmenter.data import held_out_samples, segmenter_split
from ml.segmenter.evaluate import ImageOutcome, _dice, _iou, summary
from ml.segmenter.roi import RoiSettings, Segmenter, rois_from_probability

WEIGHTS = from_environment()["WEIGHTS_DIR"]
GRAY = np.random.default_rng(0).integers(0, 256, (90, 120), dtype=np.uint8)


def tiny_vit_sam() -> Sam:
    """The official architecture (ViT image encoder), scaled down so that it runs in a test."""
    return Sam(
        image_encoder=ImageEncoderViT(img_size=64, patch_size=16, embed_dim=32, depth=1, num_heads=2,
                                      out_chans=32, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                                      use_rel_pos=True, window_size=2, global_attn_indexes=(0,)),
        prompt_encoder=PromptEncoder(embed_dim=32, image_embedding_size=(4, 4), input_image_size=(64, 64),
                                     mask_in_chans=4),
        mask_decoder=MaskDecoder(num_multimask_outputs=3, transformer_dim=32,
                                 transformer=TwoWayTransformer(depth=1, embedding_dim=32, mlp_dim=64, num_heads=2)),
    ).eval()


def test_official_vit_b_checkpoint_saves_and_reloads_through_our_loader(tmp_path):
    from segment_anything import sam_model_registry

    official = sam_model_registry["vit_b"](checkpoint=None)
    path = tmp_path / "sam_vit_b.pth"
    torch.save(official.state_dict(), path)  # what the official checkpoint files hold
    loaded = load_segmenter("vit_b", path)
    assert loaded.image_encoder.img_size == 1024
    for key, value in official.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_a_vit_sam_predicts_through_the_same_path():
    probability = Segmenter(tiny_vit_sam()).probability(GRAY, box=np.array([10, 10, 60, 50]))
    assert probability.shape == GRAY.shape
    assert 0.0 <= probability.min() and probability.max() <= 1.0


def test_loader_refuses_unknown_architectures_and_foreign_state(tmp_path):
    path = tmp_path / "small.pt"
    torch.save(build_branet_sam_small(img_size=128).state_dict(), path)
    with pytest.raises(ModelUnavailable):
        load_segmenter("vit_x", path)
    with pytest.raises(ModelUnavailable):
        load_segmenter("vit_b", path)  # a small model's weights are no ViT checkpoint
    assert load_segmenter("branet_sam_small", path, {"img_size": 128}).image_encoder.img_size == 128


def test_a_carded_segmenter_loads_only_the_weights_its_card_names(tmp_path):
    for name in ("branet-mg-sam-small.json", "branet-mg-sam-small.pt"):
        shutil.copy(WEIGHTS / name, tmp_path / name)
    (model,), card = load_carded_segmenter(tmp_path, "branet-mg-sam-small")
    assert card["modality"] == "mammography"
    assert model.image_encoder.img_size == card["build"]["img_size"]
    (resized,), _ = load_carded_segmenter(tmp_path, "branet-mg-sam-small", img_size=128)
    assert resized.image_encoder.img_size == 128 != card["build"]["img_size"]
    assert resized.prompt_encoder.image_embedding_size == (8, 8)
    for key, value in model.state_dict().items():
        assert torch.equal(resized.state_dict()[key], value), key
    with open(tmp_path / "branet-mg-sam-small.pt", "ab") as weights:
        weights.write(b"\0")
    with pytest.raises(WeightsTampered):
        load_carded_segmenter(tmp_path, "branet-mg-sam-small")


def test_the_segmenter_split_keeps_women_apart_and_only_known_lesion_areas(shared_data):
    samples = load_samples(shared_data, "mammography")
    training, validation = segmenter_split(samples, 0)
    assert not {s.group for s in training} & {s.group for s in validation}
    assert all(s.has_outline for s in training + validation)
    assert len(training) + len(validation) == sum(s.has_outline for s in samples) < len(samples)
    assert any(s.label == "normal" for s in validation)
    assert segmenter_split(samples, 1)[1] != validation


def test_encoder_widths_in_the_card_build_the_network_the_weights_came_from(tmp_path):
    wide = build_branet_sam_small(img_size=128, encoder_widths=(32, 64, 128, 256))
    path = tmp_path / "wide.pt"
    torch.save(wide.state_dict(), path)
    with pytest.raises(ModelUnavailable):  # the default widths do not fit these weights
        load_segmenter("branet_sam_small", path, {"img_size": 128})
    loaded = load_segmenter("branet_sam_small", path, {"img_size": 128, "encoder_widths": [32, 64, 128, 256]})
    for key, value in wide.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


@pytest.mark.parametrize("prompt", [{}, {"box": np.array([20, 10, 80, 70])},
                                    {"points": np.array([[40.0, 40.0], [5.0, 5.0]]), "labels": np.array([1, 0])}])
def test_small_model_answers_every_prompt_kind_at_image_size(prompt):
    segmenter = Segmenter(build_branet_sam_small(img_size=128))
    probability = segmenter.probability(GRAY, box=prompt.get("box"), points=prompt.get("points"),
                                        labels=prompt.get("labels"))
    assert probability.shape == GRAY.shape


def test_rois_are_filtered_by_area_and_confidence_and_capped():
    probability = np.zeros((100, 100))
    probability[10:40, 10:40] = 0.9  # large, confident
    probability[60:90, 60:90] = 0.55  # large, less confident
    probability[5:7, 80:82] = 0.99  # 4 pixels: noise
    rois = rois_from_probability(probability, RoiSettings(min_area_fraction=0.01, confidence_threshold=0.5, max_rois=5))
    assert [r.box for r in rois] == [(10, 10, 39, 39), (60, 60, 89, 89)]
    assert rois[0].area == 900 and rois[0].confidence == pytest.approx(0.9)
    strict = rois_from_probability(probability, RoiSettings(min_area_fraction=0.01, confidence_threshold=0.6, max_rois=5))
    assert len(strict) == 1
    assert len(rois_from_probability(probability, RoiSettings(min_area_fraction=0.0, confidence_threshold=0.5, max_rois=1))) == 1


def test_overlap_measures():
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    a[:, :5] = True
    b[:, 2:7] = True
    assert _iou(a, b) == pytest.approx(30 / 70)
    assert _dice(a, b) == pytest.approx(60 / 100)
    assert _iou(np.zeros_like(a), np.zeros_like(a)) == 1.0


def test_outcomes_count_detections_false_rois_and_roi_on_lesion_free_images():
    lesions = np.zeros((20, 20), np.int32)
    lesions[2:6, 2:6], lesions[12:18, 12:18] = 1, 2
    found, stray = lesions == 1, np.zeros((20, 20), bool)
    stray[0:2, 15:20] = True
    outcome = ImageOutcome.of([found, stray], lesions)  # one lesion found, one missed, one stray ROI
    assert (outcome.lesions, outcome.detected, outcome.false_rois) == (2, 1, 1)
    assert outcome.dice == pytest.approx(2 * 16 / (26 + 52))
    clean = ImageOutcome.of([], np.zeros((20, 20), np.int32))
    flagged = ImageOutcome.of([stray], np.zeros((20, 20), np.int32))
    result = summary([outcome, clean, flagged], [0.01, 0.02, 0.03])
    assert result["detection_rate"] == 0.5
    assert result["false_rois_per_image"] == pytest.approx(round(2 / 3, 4))
    assert (result["lesion_free_images"], result["lesion_free_with_roi"]) == (2, 0.5)
    assert result["dice"] == pytest.approx(round(outcome.dice, 4)) and result["ms_per_image"] == 20.0


def test_embeddings_are_cached_by_content_and_bounded():
    segmenter = Segmenter(build_branet_sam_small(img_size=128), cache_size=2)
    first = segmenter.probability(GRAY, box=np.array([10, 10, 60, 50]))
    assert segmenter.cached_images() == 2  # the image and its mirror image
    again = segmenter.probability(GRAY, box=np.array([10, 10, 60, 50]))  # from the cache
    assert np.allclose(first, again) and segmenter.cached_images() == 2
    for seed in (1, 2):
        segmenter.probability(np.random.default_rng(seed).integers(0, 256, (50, 50), dtype=np.uint8))
    assert segmenter.cached_images() == 2


def test_the_no_prompt_answer_can_come_from_a_mask_token_of_its_own():
    model = build_branet_sam_small(img_size=128)
    last_layer = model.mask_decoder.output_hypernetworks_mlps[1].layers[-1]
    with torch.no_grad():  # mask token 1 now answers logit 0 everywhere: probability 0.5
        last_layer.weight.zero_()
        last_layer.bias.zero_()
    shared, own = Segmenter(model), Segmenter.for_card(model, {"automatic_mask_token": 1})
    assert own.automatic_mask_token == 1 and Segmenter.for_card(model, {}).automatic_mask_token == 0
    assert np.allclose(own.probability(GRAY), 0.5) and not np.allclose(shared.probability(GRAY), 0.5, atol=1e-3)
    box = np.array([10, 10, 60, 50])  # a prompt is answered by token 0 either way
    assert np.allclose(own.probability(GRAY, box=box), shared.probability(GRAY, box=box))
    with pytest.raises(ValueError, match="automatic_mask_token"):
        Segmenter(model, 2)


def test_an_ensemble_answers_the_mean_of_its_members():
    members = [build_branet_sam_small(img_size=128) for _ in range(2)]  # two random starts
    ensemble, alone = Segmenter(members), [Segmenter(member) for member in members]
    for prompt in ({}, {"box": np.array([10, 10, 60, 50])}):
        answers = [segmenter.probability(GRAY, **prompt) for segmenter in alone]
        assert not np.allclose(answers[0], answers[1], atol=1e-3)
        assert np.allclose(ensemble.probability(GRAY, **prompt), np.mean(answers, axis=0), atol=1e-6)
    assert ensemble.cached_images() == 2  # each image holds both members' embeddings
    with pytest.raises(ValueError, match="at least one"):
        Segmenter([])


def test_training_geometry_moves_the_image_and_its_lesions_together():
    from ml.segmenter.train import randomly_warped

    pixels = np.zeros((90, 120), dtype=np.uint8)
    lesions = np.zeros((90, 120), dtype=np.int32)
    pixels[20:40, 20:45], lesions[20:40, 20:45] = 200, 1
    pixels[50:70, 70:100], lesions[50:70, 70:100] = 200, 2
    rng = np.random.default_rng(0)
    for _ in range(10):
        warped, moved = randomly_warped(pixels, lesions, rng)
        assert warped.shape == moved.shape == pixels.shape
        inside = moved > 0
        assert inside.sum() > 0.6 * (lesions > 0).sum()  # zoom and shift keep most of both lesions
        assert (warped[inside] > 100).mean() > 0.95 and (warped[~inside] > 100).mean() < 0.02
        assert sorted(np.unique(moved)) == list(range(moved.max() + 1))  # labels stay consecutive


def test_a_weighted_set_fills_more_of_each_epoch_at_the_same_cost():
    from ml.segmenter.train import epoch_order

    datasets = ["busbra"] * 300 + ["busi"] * 100
    rng = np.random.default_rng(0)
    plain = epoch_order(datasets, {}, rng)
    assert sorted(plain) == list(range(400))  # every image once
    weighted = np.concatenate([epoch_order(datasets, {"busi": 3}, rng) for _ in range(20)])
    assert len(weighted) == 20 * 400
    share = (weighted >= 300).mean()  # busi: 300 of the 600 places in each draw
    assert 0.47 < share < 0.53 and len(np.unique(weighted[weighted < 300])) == 300


@pytest.mark.parametrize("prompt", [{}, {"box": np.array([20, 10, 80, 70])},
                                    {"points": np.array([[40.0, 40.0], [5.0, 5.0]]), "labels": np.array([1, 0])}])
def test_a_mirrored_image_and_prompt_get_the_mirrored_answer(prompt):
    segmenter = Segmenter(build_branet_sam_small(img_size=128))
    last_column = GRAY.shape[1] - 1
    mirrored = np.ascontiguousarray(GRAY[:, ::-1])
    box, points = prompt.get("box"), prompt.get("points")
    mirrored_prompt = {
        "box": None if box is None else np.array([last_column - box[2], box[1], last_column - box[0], box[3]]),
        "points": None if points is None else np.column_stack([last_column - points[:, 0], points[:, 1]]),
        "labels": prompt.get("labels"),
    }
    one_answer = segmenter._answer(GRAY, box, points, prompt.get("labels"))
    assert not np.allclose(segmenter._answer(mirrored, **mirrored_prompt)[:, ::-1], one_answer, atol=1e-3)
    probability = segmenter.probability(GRAY, box=box, points=points, labels=prompt.get("labels"))
    assert np.allclose(segmenter.probability(mirrored, **mirrored_prompt)[:, ::-1], probability, atol=1e-5)
    assert segmenter.cached_images() == 2  # the image and its mirror image, each encoded once


def test_training_can_start_from_another_segmenter_and_the_card_says_which_and_how(tmp_path, shared_data):
    from tests.test_ml import mias_subset, run_module

    data_root = mias_subset(tmp_path, shared_data)

    def train(name: str, *extra: str):
        return run_module("ml.segmenter.train", "--modality", "mammography", "--data-root", str(data_root),
                          "--epochs", "1", "--size", "64", "--batch-size", "8", "--run-dir", str(tmp_path / name),
                          "--weights-dir", str(tmp_path / name), *extra)

    parent = train("parent", "--automatic-weight", "0.5", "--automatic-mask-token", "1")
    assert parent.returncode == 0, parent.stderr
    parent_weights = tmp_path / "parent" / "branet-mg-sam-small.pt"
    parent_card = json.loads((tmp_path / "parent" / "branet-mg-sam-small.json").read_text())
    assert parent_card["training"]["command"].endswith("--automatic-weight 0.5 --automatic-mask-token 1")
    assert "no-prompt answer for every image, weight 0.5" in parent_card["training"]["prompts"]
    assert "no-prompt answer from mask token 1" in parent_card["training"]["prompts"]
    assert parent_card["automatic_mask_token"] == 1
    # another seed and a learning rate too small to move a weight, at another input size
    child = train("child", "--seed", "1", "--lr", "1e-12", "--size", "96", "--init", str(parent_weights),
                  "--dataset-weights", "mias=2")
    assert child.returncode == 0, child.stderr
    start = torch.load(parent_weights, weights_only=True)
    trained = torch.load(tmp_path / "child" / "branet-mg-sam-small.pt", weights_only=True)
    assert trained.keys() == start.keys()
    # the learnt weights (batch normalisation's running statistics move in training whatever the rate)
    for key, _ in build_branet_sam_small(img_size=64).named_parameters():
        torch.testing.assert_close(trained[key].float(), start[key].float(), atol=2e-3, rtol=0)
    card = json.loads((tmp_path / "child" / "branet-mg-sam-small.json").read_text())
    assert card["training"]["initialised_from"]["sha256"] == json.loads(
        (tmp_path / "parent" / "branet-mg-sam-small.json").read_text())["sha256"]
    assert f"--init {parent_weights} --dataset-weights mias=2" in card["training"]["command"]
    assert card["training"]["dataset_weights"] == {"mias": 2} and card["build"]["img_size"] == 96
    assert "automatic_mask_token" not in card  # not asked for: token 0 answers every request
    # an epoch-old model finds no held-out lesion without a prompt: its card says it serves prompts only
    assert card["metrics"]["auto"]["detection_rate"] < 0.5 and card["automatic_rois"] is False

    wider = train("wider", "--encoder-widths", "8,16,32,64", "--init", str(parent_weights))
    assert wider.returncode != 0 and "is not a segmenter of these encoder widths" in wider.stderr
    for weight in ("-1", "nan", "heavy"):
        refused = train("refused", "--automatic-weight", weight)
        assert refused.returncode == 2 and "--automatic-weight: a finite number >= 0" in refused.stderr
    refused = train("refused", "--automatic-mask-token", "2")
    assert refused.returncode == 2 and "--automatic-mask-token: invalid choice" in refused.stderr
    for weights in ("mias=0", "mias", "mias=1.5"):
        refused = train("refused", "--dataset-weights", weights)
        assert refused.returncode == 2 and "--dataset-weights: SET=K with a whole K >= 1" in refused.stderr
    refused = train("refused", "--dataset-weights", "busi=2")
    assert refused.returncode == 1 and "--dataset-weights names busi: the mammography images come from mias" in refused.stderr
    assert not (tmp_path / "refused").exists()


def test_segmenters_of_one_split_join_into_an_ensemble_and_other_splits_are_refused(tmp_path, shared_data):
    from tests.test_ml import mias_subset, run_module

    data_root = mias_subset(tmp_path, shared_data)
    name = "branet-mg-sam-small"

    def train(run: str, *extra: str):
        done = run_module("ml.segmenter.train", "--modality", "mammography", "--data-root", str(data_root),
                          "--epochs", "1", "--size", "64", "--batch-size", "8", "--run-dir", str(tmp_path / run),
                          "--weights-dir", str(tmp_path / run), *extra)
        assert done.returncode == 0, done.stderr
        return tmp_path / run

    def join(*members: Path, into: str = "ensemble"):
        return run_module("ml.segmenter.ensemble", "--modality", "mammography", "--data-root", str(data_root),
                          "--weights-dir", str(tmp_path / into), *map(str, members))

    first, second = train("first"), train("second", "--seed", "1", "--split-seed", "0")
    other_split = train("other-split", "--seed", "1")
    second_card = json.loads((second / f"{name}.json").read_text())
    assert second_card["training"]["split_seed"] == 0 and "--seed 1" in second_card["training"]["command"]
    assert second_card["training"]["command"].endswith("--split-seed 0")

    refused = join(first, other_split)
    assert refused.returncode == 1 and "different splits (split seeds [0, 1])" in refused.stderr
    narrower = train("narrower", "--seed", "2", "--split-seed", "0", "--encoder-widths", "8,16,32,64")
    refused = join(first, narrower)
    assert refused.returncode == 1 and "weight shapes" in refused.stderr
    refused = join(first, tmp_path / "no-such-run")
    assert refused.returncode == 1 and "member " in refused.stderr and "is missing" in refused.stderr
    tampered = tmp_path / "tampered"
    shutil.copytree(second, tampered)
    with open(tampered / f"{name}.pt", "ab") as weights:
        weights.write(b"\0")
    refused = join(first, tampered)
    assert refused.returncode == 1 and f"member {tampered}" in refused.stderr and "sha256" in refused.stderr
    refused = join(first)
    assert refused.returncode == 2 and "at least two members" in refused.stderr
    assert not (tmp_path / "ensemble").exists()

    joined = join(first, second)
    assert joined.returncode == 0, joined.stderr
    members, card = load_carded_segmenter(tmp_path / "ensemble", name)
    assert len(members) == card["members"] == 2 and card["training"]["split_seed"] == 0
    assert [m["sha256"] for m in card["training"]["members"]] == [
        json.loads((run / f"{name}.json").read_text())["sha256"] for run in (first, second)]
    for member, run in zip(members, (first, second)):
        (alone,), _ = load_carded_segmenter(run, name)
        for key, value in alone.state_dict().items():
            assert torch.equal(member.state_dict()[key], value), key
    # measured afresh, as the ensemble answers, on the fold no member trained on
    assert set(card["metrics"]) >= {"auto", "box", "point", "per_dataset"}
    assert card["metrics"]["box"]["n"] == second_card["metrics"]["box"]["n"]
    assert card["automatic_rois"] is (card["metrics"]["auto"]["detection_rate"] >= 0.5)
    ensemble = Segmenter.for_card(members, card)
    box = np.array([5, 5, 40, 30])
    answers = [Segmenter(member).probability(GRAY, box=box) for member in members]
    assert np.allclose(ensemble.probability(GRAY, box=box), np.mean(answers, axis=0), atol=1e-6)

    # an ensemble extends with one more run, its networks joining one by one; none joins twice
    refused = join(tmp_path / "ensemble", first, into="twice")
    assert refused.returncode == 1 and "would join twice" in refused.stderr and card["training"]["members"][0]["sha256"] in refused.stderr
    assert not (tmp_path / "twice").exists()
    third = train("third", "--seed", "3", "--split-seed", "0")
    extended = join(tmp_path / "ensemble", third, into="extended")
    assert extended.returncode == 0, extended.stderr
    networks, extended_card = load_carded_segmenter(tmp_path / "extended", name)
    assert len(networks) == extended_card["members"] == 3 and extended_card["training"]["split_seed"] == 0
    assert [m["sha256"] for m in extended_card["training"]["members"]] == [
        *(m["sha256"] for m in card["training"]["members"]), json.loads((third / f"{name}.json").read_text())["sha256"]]
    for network, original in zip(networks, members):
        assert all(torch.equal(network.state_dict()[key], value) for key, value in original.state_dict().items())


def test_networks_trained_on_every_image_carry_their_validated_recipes_figures_and_refuse_held_out_benchmarks(
        tmp_path, shared_data):
    from tests.test_ml import mias_subset, run_module

    data_root = mias_subset(tmp_path, shared_data)
    name = "branet-mg-sam-small"

    def train(run: str, *extra: str):
        return run_module("ml.segmenter.train", "--modality", "mammography", "--data-root", str(data_root),
                          "--epochs", "1", "--size", "64", "--batch-size", "8", "--run-dir", str(tmp_path / run),
                          "--weights-dir", str(tmp_path / run), *extra)

    def join(*members: Path, into: str, validated_by: Path | None = None):
        return run_module("ml.segmenter.ensemble", "--modality", "mammography", "--data-root", str(data_root),
                          "--weights-dir", str(tmp_path / into), *map(str, members),
                          *(["--validated-by", str(validated_by)] if validated_by else []))

    def card_of(run: Path) -> dict:
        return json.loads((run / f"{name}.json").read_text())

    for run, seed in (("split-a", "0"), ("split-b", "1")):
        assert train(run, "--seed", seed, "--split-seed", "0").returncode == 0
    assert join(tmp_path / "split-a", tmp_path / "split-b", into="validated").returncode == 0
    validated = card_of(tmp_path / "validated")

    refused = train("refused", "--all-images")
    assert refused.returncode == 2 and "--all-images and --validated-by go together" in refused.stderr
    refused = train("refused", "--all-images", "--validated-by", str(tmp_path / "validated"), "--split-seed", "0")
    assert refused.returncode == 2 and "--all-images holds none out" in refused.stderr
    refused = train("refused", "--all-images", "--validated-by", str(tmp_path / "nothing-here"))
    assert refused.returncode == 1 and "--validated-by" in refused.stderr and "is missing" in refused.stderr
    assert not (tmp_path / "refused" / f"{name}.pt").exists()

    for run, seed in (("all-a", "0"), ("all-b", "1")):
        done = train(run, "--seed", seed, "--all-images", "--validated-by", str(tmp_path / "validated"))
        assert done.returncode == 0, done.stderr
    member = card_of(tmp_path / "all-a")
    outlined = sum(1 for s in load_samples(data_root, "mammography") if s.has_outline)
    assert member["training"]["all_images"] is True and "split_seed" not in member["training"]
    assert member["training"]["images"] == outlined > card_of(tmp_path / "split-a")["training"]["images"]
    assert member["training"]["command"].endswith(f"--all-images --validated-by {tmp_path / 'validated'}")
    assert member["metrics"]["box"] == validated["metrics"]["box"]
    assert member["metrics"]["validated_by"]["sha256"] == validated["sha256"]
    assert member["metrics"]["split"].startswith("none held out") and member["automatic_rois"] is validated["automatic_rois"]
    refused = train("twice-over", "--all-images", "--validated-by", str(tmp_path / "all-a"))
    assert refused.returncode == 1 and "held nothing out either" in refused.stderr

    refused = join(tmp_path / "all-a", tmp_path / "split-a", into="mixed", validated_by=tmp_path / "validated")
    assert refused.returncode == 1 and "different splits" in refused.stderr
    refused = join(tmp_path / "all-a", tmp_path / "all-b", into="unvalidated")
    assert refused.returncode == 1 and "need --validated-by" in refused.stderr
    refused = join(tmp_path / "split-a", tmp_path / "split-b", into="needless", validated_by=tmp_path / "validated")
    assert refused.returncode == 1 and "only they take it" in refused.stderr
    refused = join(tmp_path / "all-a", tmp_path / "all-b", into="one-short", validated_by=tmp_path / "split-a")
    assert refused.returncode == 1 and "holds 1 networks, these members 2" in refused.stderr
    assert not any((tmp_path / d).exists() for d in ("mixed", "unvalidated", "needless", "one-short"))

    joined = join(tmp_path / "all-a", tmp_path / "all-b", into="shipped", validated_by=tmp_path / "validated")
    assert joined.returncode == 0, joined.stderr
    networks, shipped = load_carded_segmenter(tmp_path / "shipped", name)
    assert len(networks) == shipped["members"] == 2 and shipped["training"]["all_images"] is True
    assert {key: shipped["metrics"][key] for key in ("auto", "box", "point")} == {
        key: validated["metrics"][key] for key in ("auto", "box", "point")}
    assert shipped["training"]["command"].endswith(f"--validated-by {tmp_path / 'validated'}")

    # a benchmark on fold 0 measures only segmenters that never saw it
    samples = load_samples(data_root, "mammography")
    assert held_out_samples(samples, 0, [validated]) == segmenter_split(samples, 0)[1]
    with pytest.raises(SystemExit, match="held out nothing, so it trained on fold 0 of split 0"):
        held_out_samples(samples, 0, [validated, shipped])
    with pytest.raises(SystemExit, match="held out fold 0 of split 0, so it trained on fold 0 of split 1"):
        held_out_samples(samples, 1, [validated])


def test_compare_segmenters_reads_a_gate_as_the_served_one_with_two_thresholds_changed():
    served = RoiSettings()
    chosen = gate("0.65/0.4")
    assert (chosen.confidence_threshold, chosen.lesion_threshold) == (0.65, 0.4)
    assert (chosen.min_area_fraction, chosen.max_rois) == (served.min_area_fraction, served.max_rois)
    for wrong in ("0.65", "0.65/0.4/0.1", "high/low", "1.2/0.4", "0.65/0"):
        with pytest.raises(argparse.ArgumentTypeError):
            gate(wrong)
