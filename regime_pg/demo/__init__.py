"""Offline demo data: real daily index prices turned into regime embeddings."""
