"""Trimo's GitHub App: webhooks, commands, permissions, pipelines and reporting."""
