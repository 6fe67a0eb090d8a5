"""The shipped ultrasound segmenter on fold 0 of the grouped split (the images it was not trained
on), per data set and prompt kind, through SamPredictor.

    PYTHONPATH=. python benchmarks/segmenter_fold0.py
"""
import json
from pathlib import Path

from ml.cards import SEGMENTER_MODELS
from ml.datasets import grouped_folds, load_samples
from ml.segmenter.build import load_carded_segmenter
from ml.segmenter.evaluate import PROMPTS, evaluate
from ml.segmenter.roi import Segmenter

weights = Path("weights")
segmenter = Segmenter(load_carded_segmenter(weights, SEGMENTER_MODELS["ultrasound"])[0])
samples = load_samples(Path("../shared/data"), "ultrasound")
_, held_out = grouped_folds(samples, 5, 0)[0]
validation = [samples[i] for i in held_out if samples[i].has_outline]
for dataset in ("busbra", "busi"):
    for prompt in PROMPTS:
        result = evaluate(segmenter, [s for s in validation if s.dataset == dataset], prompt)
        print(json.dumps({"dataset": dataset, "prompt": prompt, **result}))
