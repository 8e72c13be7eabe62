"""Who asked, where to answer, and what they asked for: commands, handlers, policy."""
