"""The webhook edge: verify, dedupe and queue GitHub deliveries, and which events Trimo takes."""
