"""Lesion ROIs with Segment Anything's architecture: our small CPU model or an official checkpoint."""
