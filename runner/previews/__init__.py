"""QA previews: a pipeline branch's app running live behind this runner's reverse proxy."""
