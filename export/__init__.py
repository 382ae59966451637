"""Offline side: datasets, cleaning, splits, CF models, encoder export, repository writer."""
