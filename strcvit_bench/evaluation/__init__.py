"""Scoring of predictions and continual-learning metrics of the accuracy matrix."""
