"""The runs service, the pipeline state machine, and the queue and tokens beside it."""
