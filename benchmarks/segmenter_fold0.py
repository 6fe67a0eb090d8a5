"""The shipped ultrasound segmenter's recipe, validated on split 0 (`weights/split0`), on fold 0 of the grouped split (the images it was not trained
on), per data set and prompt kind, through SamPredictor.

    PYTHONPATH=. python benchmarks/segmenter_fold0.py
"""
import json
from pathlib import Path

from ml.cards import SEGMENTER_MODELS
from ml.datasets import load_samples
from ml.segmenter.build import load_carded_segmenter
from ml.segmenter.data import held_out_samples
from ml.segmenter.evaluate import PROMPTS, evaluate
from ml.segmenter.roi import Segmenter

weights = Path("weights/split0")
networks, card = load_carded_segmenter(weights, SEGMENTER_MODELS["ultrasound"])
segmenter = Segmenter.for_card(networks, card)
samples = load_samples(Path("../shared/data"), "ultrasound")
validation = held_out_samples(samples, 0, [card])
for dataset in ("busbra", "busi"):
    for prompt in PROMPTS:
        result = evaluate(segmenter, [s for s in validation if s.dataset == dataset], prompt)
        print(json.dumps({"dataset": dataset, "prompt": prompt, **result}))
