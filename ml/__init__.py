"""Models, training and evaluation for BraNet. Knows nothing of Flask or HTTP."""
