"""The paired comparisons that every "tried and not kept" figure of the README rests on."""
import numpy as np

from ml.metrics import paired_mean_difference
from ml.segmenter.evaluate import ImageOutcome, dice_difference


def test_a_constant_gain_has_no_spread_and_identical_scores_differ_by_nothing():
    groups = np.array(["a", "a", "b", "c", "c", "d"])
    a = np.array([0.2, 0.9, 0.5, 0.4, 0.7, 0.1])
    same = paired_mean_difference(groups, a, a.copy())
    assert same["b_minus_a"] == 0 and same["ci95"] == [0.0, 0.0]
    gained = paired_mean_difference(groups, a, a + 0.05)
    assert gained["b_minus_a"] == 0.05 and gained["ci95"] == [0.05, 0.05]
    assert gained["n"] == 6 and gained["a"] == round(float(a.mean()), 4)


def test_whole_groups_are_resampled_so_a_group_that_moves_together_widens_the_interval():
    """Six images, the gain all in one woman's three images: resampling women, a draw either holds
    her or not, so the interval reaches zero; resampling single images would narrow it."""
    a = np.zeros(6)
    b = np.array([0.3, 0.3, 0.3, 0.0, 0.0, 0.0])
    by_woman = paired_mean_difference(np.array(["w1", "w1", "w1", "w2", "w3", "w4"]), a, b)
    by_image = paired_mean_difference(np.arange(6).astype(str), a, b)
    assert by_woman["b_minus_a"] == by_image["b_minus_a"] == 0.15
    assert by_woman["ci95"][0] == 0.0  # some draws hold none of her images
    assert by_woman["ci95"][1] - by_woman["ci95"][0] > by_image["ci95"][1] - by_image["ci95"][0]


def test_dice_difference_pairs_the_lesion_images_and_leaves_lesion_free_ones_out():
    lesion = np.zeros((8, 8), np.int32)
    lesion[2:6, 2:6] = 1
    normal = np.zeros((8, 8), np.int32)
    half = np.zeros((8, 8), bool)
    half[2:6, 2:4] = True
    baseline = [ImageOutcome.of([lesion > 0], lesion), ImageOutcome.of([half], normal), ImageOutcome.of([half], lesion)]
    other = [ImageOutcome.of([half], lesion), ImageOutcome.of([], normal), ImageOutcome.of([lesion > 0], lesion)]
    compared = dice_difference(baseline, other, ["w1", "w2", "w3"])
    assert compared["n"] == 2  # the normal image has no Dice to compare
    assert compared["a"] == compared["b"] == round((1 + 2 / 3) / 2, 4) and compared["b_minus_a"] == 0
