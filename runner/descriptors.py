"""This process's open-file limit: every connection the preview proxy holds is one of the
runner's descriptors, and its git, Docker and Redis need theirs too."""

from __future__ import annotations

import logging
import resource

log = logging.getLogger(__name__)


def soft_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def raise_to_hard() -> int:
    """Raise the soft limit to the hard one (systemd's soft default is 1024); the soft limit
    after. A hard limit the kernel does not take as a soft one is left alone."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, hard, exc)
    return soft_limit()
