"""The reporter's channels: check run, progress comment, pull request and reactions."""
