"""Safe names made from untrusted text: branch slugs, pipeline ids, agent and runner names.

Also `inline_code`, which quotes untrusted text for a markdown comment.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

from runner.job import is_valid_branch_name

AGENT_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
RUNNER_LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
PIPELINE_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,100}$")

SLUG_FALLBACK = "issue"
"""The slug of a title with no usable letters or digits (only emoji, say)."""

_PIPELINE_MAX = 100
_HASH_LEN = 8

# Letters that Unicode decomposition leaves alone but that have a usual ASCII spelling.
_TRANSLITERATE = str.maketrans(
    {
        "ß": "ss",
        "æ": "ae",
        "Æ": "AE",
        "œ": "oe",
        "Œ": "OE",
        "ø": "o",
        "Ø": "O",
        "đ": "d",
        "Đ": "D",
        "ł": "l",
        "Ł": "L",
        "þ": "th",
        "Þ": "TH",
        "ð": "d",
        "Ð": "D",
        "ı": "i",
    }
)


def is_agent_name(name: str) -> bool:
    """Whether `name` has the shape of an agent name (the registry check is elsewhere)."""
    return bool(AGENT_NAME_RE.fullmatch(name))


def is_runner_label(label: str) -> bool:
    """Whether `label` can name a runner queue."""
    return bool(RUNNER_LABEL_RE.fullmatch(label))


def slugify(title: str, max_len: int = 40) -> str:
    """Lowercase ASCII words of `title` joined by `-`, at most `max_len` long, never empty."""
    if max_len < 1:
        raise ValueError(f"max_len must be at least 1, not {max_len}")
    text = unicodedata.normalize("NFKD", title.translate(_TRANSLITERATE))
    ascii_text = text.encode("ascii", "ignore").decode("ascii").lower()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text).strip("-")
    if len(slug) > max_len:
        cut = slug[: max_len + 1]
        # Prefer to end on a whole word when that keeps at least half the room.
        boundary = cut.rfind("-")
        slug = cut[:boundary] if boundary >= max_len // 2 else slug[:max_len]
        slug = slug.rstrip("-")
    return slug or SLUG_FALLBACK[:max_len]


def issue_branch(prefix: str, number: int, title: str) -> str:
    """The branch of an issue pipeline, `<prefix><number>-<slug>`, e.g. `trimo/42-fix-login`."""
    if number < 1:
        raise ValueError(f"issue number must be positive, not {number}")
    branch = f"{prefix}{number}-{slugify(title)}"
    if not is_valid_branch_name(branch):
        raise ValueError(f"branch prefix {prefix!r} does not make a safe branch name")
    return branch


def pipeline_id(repo_full_name: str, number: int) -> str:
    """A queue- and path-safe id for the pipeline of issue or pull request `number`.

    `octo-org/Hello-World` and 42 give `octo-org.hello-world.42` (GitHub names are
    case-insensitive). Names that need changing to fit, or are too long, get a short
    hash of the full name so that different repositories never share an id.
    """
    if number < 1:
        raise ValueError(f"issue or pull request number must be positive, not {number}")
    name = repo_full_name.strip().lower()
    suffix = f".{number}"
    plain = name.replace("/", ".")
    owner, _, _ = name.partition("/")
    exact = (
        name.count("/") == 1
        and "." not in owner
        and ".." not in plain
        and bool(re.fullmatch(r"[a-z0-9][a-z0-9._-]*", plain))
        and len(plain) + len(suffix) <= _PIPELINE_MAX
    )
    if exact:
        return plain + suffix
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_LEN]
    safe = re.sub(r"\.{2,}", ".", re.sub(r"[^a-z0-9._-]+", "-", plain)).strip(".-")
    room = _PIPELINE_MAX - len(suffix) - _HASH_LEN - 1
    if room < 1:
        raise ValueError(f"issue or pull request number is too large: {number}")
    safe = safe[:room].rstrip(".-")
    return f"{safe}-{digest}{suffix}" if safe else f"{digest}{suffix}"


def branch_pipeline_id(repo_full_name: str, branch: str) -> str:
    """The id of a pipeline with no issue behind it, from its repository and branch, e.g.
    `new-hello-world-fix-login-3fa2b1c0` (a hash keeps different repositories apart)."""
    name = repo_full_name.strip().lower()
    digest = hashlib.sha256(f"{name}:{branch}".encode("utf-8", "surrogatepass")).hexdigest()
    leaf = branch.rsplit("/", 1)[-1]
    return f"new-{slugify(name.partition('/')[2], 30)}-{slugify(leaf, 50)}-{digest[:_HASH_LEN]}"


def inline_code(text: str, limit: int = 60) -> str:
    """`text` as a markdown code span: shown literally, no mentions, links or formatting.

    Text longer than `limit` is shortened with `…`; line breaks become spaces.
    """
    flat = " ".join(text.split())
    if len(flat) > limit:
        flat = flat[: max(limit - 1, 0)] + "…"
    longest = max((len(run) for run in re.findall(r"`+", flat)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if flat.startswith("`") or flat.endswith("`") or not flat.strip() else ""
    return f"{fence}{pad}{flat}{pad}{fence}"


def attempt_branch(branch: str, number: int) -> str:
    """Attempt `number`'s branch beside the pipeline's `branch`: `trimo/issue-7-attempt-2`.

    A sibling, not a child: git cannot hold `trimo/issue-7/attempt-2` while the branch
    `trimo/issue-7` exists (a ref cannot be both a file and a directory)."""
    return f"{branch}-attempt-{number}"


MAX_ATTEMPT_NUMBER = 10_000
"""The highest attempt number a pipeline may reach (and `/trimo pick` may name)."""


def attempts_fit(branch: str) -> bool:
    """Whether every attempt's branch beside `branch` is a name Trimo works on (a long
    pull request branch leaves no room for `-attempt-N`)."""
    return is_valid_branch_name(attempt_branch(branch, MAX_ATTEMPT_NUMBER))
