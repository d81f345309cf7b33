"""Evaluation protocols on frozen features: linear probe, KNN retrieval, multi-stream ensembles."""
