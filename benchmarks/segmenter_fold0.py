"""The shipped ultrasound segmenter on fold 0 of the grouped split (the images it was not trained
on), per data set and prompt kind, through SamPredictor.

    PYTHONPATH=. python benchmarks/segmenter_fold0.py
"""
import json
from pathlib import Path

from ml.cards import SEGMENTER_MODELS
from ml.datasets import load_samples
from ml.segmenter.build import load_carded_segmenter
from ml.segmenter.data import segmenter_split
from ml.segmenter.evaluate import PROMPTS, evaluate
from ml.segmenter.roi import Segmenter

weights = Path("weights")
segmenter = Segmenter.for_card(*load_carded_segmenter(weights, SEGMENTER_MODELS["ultrasound"]))
samples = load_samples(Path("../shared/data"), "ultrasound")
validation = segmenter_split(samples, 0)[1]
for dataset in ("busbra", "busi"):
    for prompt in PROMPTS:
        result = evaluate(segmenter, [s for s in validation if s.dataset == dataset], prompt)
        print(json.dumps({"dataset": dataset, "prompt": prompt, **result}))
