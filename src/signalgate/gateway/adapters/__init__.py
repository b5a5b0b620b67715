"""Adapters turn one kind of inbound payload into normalised `Signal`s."""
