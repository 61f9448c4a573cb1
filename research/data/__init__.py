"""Datasets by name (`load`) and the batching pipeline."""

from research.data import gaussians, idx, offline, sequences, text, tfds_source  # noqa: F401  (registers the sources)
from research.data.pipeline import ArrayPipeline, Pipeline, StreamPipeline, map_batches, train_pipeline
from research.data.registry import DataConfig, Dataset, decode, facts, load, names, register

__all__ = ["ArrayPipeline", "DataConfig", "Dataset", "Pipeline", "StreamPipeline", "decode", "facts", "load",
           "map_batches", "names", "register", "train_pipeline"]
