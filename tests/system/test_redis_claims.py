"""What the docs say about Redis deployments is what is tested: no Redis Cluster claim."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

NEGATION = re.compile(r"\b(not|no|nothing|never|without|cannot|unsupported)\b", re.IGNORECASE)
"""A sentence about Cluster must say it is not supported (or what is missing for it)."""

BLOCK_START = re.compile(r"^\s*([-*|]\s|\d+\.\s)")
"""A line that starts a list item or a table row starts a new block of text."""

SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z`*(\[])")


def _files() -> list[Path]:
    """Every tracked file a user or operator reads: docs, deployment files, shipped code."""
    listed = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    wanted = []
    for name in listed:
        path = Path(name)
        if path.parts[0] in {"tests", "harness", "bench"}:
            continue  # tests may name Cluster to check this very rule
        if path.suffix in {".md", ".py", ".lua", ".yml", ".yaml", ".toml", ".example"} or (
            path.name in {"Dockerfile", "dev"}
        ):
            wanted.append(REPO / path)
    return wanted


def _sentences_about_cluster(text: str) -> list[str]:
    """The sentences of ``text`` that mention a cluster, wrapped lines joined."""
    blocks: list[list[str]] = [[]]
    for line in text.splitlines():
        if not line.strip() or BLOCK_START.match(line):
            blocks.append([])
        # Comment markers and heading hashes are not words: a comment may wrap over lines.
        blocks[-1].append(re.sub(r"^\s*(#+|--)\s?", "", line).strip())
    return [
        " ".join(part.split())
        for block in blocks
        for part in SENTENCE_END.split(" ".join(block))
        if re.search(r"\bcluster\b", part, re.IGNORECASE)
    ]


def test_no_sentence_claims_redis_cluster_support() -> None:
    """Each mention of Redis Cluster in docs, deployment files and code says it is unsupported."""
    claims = [
        f"{path.relative_to(REPO)}: {sentence}"
        for path in _files()
        for sentence in _sentences_about_cluster(path.read_text(errors="replace"))
        if not NEGATION.search(sentence)
    ]
    assert claims == [], "unsupported claims about Redis Cluster:\n" + "\n".join(claims)


def test_the_rule_catches_the_old_claim() -> None:
    """The check would have caught what the README used to say."""
    old = (
        "Managed Redis works over `rediss://` with a password. Every key of a\n"
        "  deployment shares one hash tag, so the scripts also run on Redis Cluster.\n"
    )
    sentences = _sentences_about_cluster(old)
    assert sentences == [
        "Every key of a deployment shares one hash tag, so the scripts also run on Redis Cluster."
    ]
    assert not NEGATION.search(sentences[0])


def test_the_readme_says_what_is_supported() -> None:
    """The README names the one supported shape and cites why Cluster is not supported."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("### Supported Redis", 1)[1].split("\n### ", 1)[0]
    assert "one Redis primary" in section
    assert "Not supported: Redis Cluster" in section
    assert "https://github.com/celery/kombu/pull/2204" in section
    assert "https://redis.io/docs/latest/commands/eval/" in section
