"""Sandboxes started ahead (runner.warm): a run handed to one sees its own directories with
the same flags as a container started for it, its variables as values (never as code), and
nothing of the host's side; after it, nothing stays mounted and its workspace is whole. A
box whose waiter died is not claimed, and a new kind of run trims the old boxes (real
Docker, as root)."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import docker
import docker.errors
import pytest

from runner import disk, leftovers, warm
from runner.container import ContainerSpec, create_kwargs
from runner.errors import TrimoError
from runner.job import Resources
from runner.warm import mounts
from runner.warm.box import BoxKey, Slot, WarmBox, go_message, make_box, misfits, template
from runner.warm.pool import WarmPool, warm_dir
from tests.conftest import unique

pytestmark = pytest.mark.docker

AGENT = "1000:1000"


@contextmanager
def runners_umask() -> Iterator[None]:
    """As the runner's systemd unit runs it: UMask=0077."""
    was = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(was)


def eventually(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def key_for(client: docker.DockerClient, image: str, memory: str = "256m") -> BoxKey:
    return BoxKey(
        image=image,
        image_id=str(client.images.get(image).id),
        user=AGENT,
        resources=Resources(memory=memory, cpus=1, pids=128),
        network="none",
        runner_id=unique(f"warm-{uuid.uuid4().hex[:6]}"),
    )


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs shared with the boxes, as a runner mounts it."""
    where = tmp_path / "warm"
    mounts.shared_tmpfs(where)
    mounts.private_stage(where / "stage")
    yield where
    mounts.detach(where)


@pytest.fixture
def run_dirs(tmp_path: Path) -> Iterator[ContainerSpec]:
    """A run's directories as the engine makes them, on a pipeline's own disk (the agent
    owns its workspace, home and out; /trimo is the host's), and a spec that uses them."""
    (tmp_path / "pipeline").mkdir()
    with disk.mounted(tmp_path / "pipeline", disk.parse_size("64m")) as root:
        yield run_spec(root)


def run_spec(root: Path) -> ContainerSpec:
    for name in ("workspace", "home", "io/out"):
        (root / name).mkdir(parents=True)
    for name in ("workspace", "home", "io/out"):
        os.chown(root / name, 1000, 1000)
    (root / "workspace" / "kept.txt").write_text("the agent's earlier work\n")
    (root / "io" / "prompt.md").write_text("do the thing\n")
    return spec_at(root)


def spec_at(root: Path) -> ContainerSpec:
    """A run's spec, its directories where the engine puts them under the disk's `root`."""
    return ContainerSpec(
        image="",
        command=[],
        workspace=root / "workspace",
        context_dir=root / "io",
        out_dir=root / "io" / "out",
        home=root / "home",
        user=AGENT,
        network="none",
        resources=Resources(memory="256m", cpus=1, pids=128),
    )


def box_for(client: docker.DockerClient, key: BoxKey, shared: Path) -> WarmBox:
    name = f"trimo-warm-test-{uuid.uuid4().hex[:8]}"
    with runners_umask():
        return make_box(client, key, Slot(shared / name, shared / "stage" / name), name)


def run_in(
    client: docker.DockerClient, box: WarmBox, spec: ContainerSpec, script: str
) -> tuple[list[str], int]:
    spec = replace(spec, image=box.key.image, command=["bash", "-c", script])
    assert box.misfits(spec, box.key.image_id) == []
    container = warm.WarmContainer(client, spec, box)
    try:
        container.start()
        lines = list(container.lines())
        return lines, container.wait(timeout=60).exit_code
    finally:
        container.remove()


def mounted_below(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as info:
        return [line.split()[4] for line in info if line.split()[4].startswith(str(path))]


def test_a_run_in_a_box_has_its_directories_flags_and_variables(
    docker_client: docker.DockerClient, test_image: str, shared: Path, run_dirs: ContainerSpec
) -> None:
    box = box_for(docker_client, key_for(docker_client, test_image), shared)
    assert box.claim()
    spec = replace(
        run_dirs,
        env={
            "GREETING": "two words",
            "TRICK": "$(touch /tmp/ran)`touch /tmp/ran`",
            "n": "5",  # names a waiter could have used for itself
            "go": "echo forged",
            "i": "0",
        },
    )
    lines, code = run_in(
        docker_client, box, spec,
        'echo "greeting=$GREETING"; echo "trick=$TRICK"; echo "cwd=$(pwd)"; id -u;'
        "cat /trimo/prompt.md; cat kept.txt;"
        "touch /trimo/forged 2>/dev/null || echo context-read-only;"
        "echo x 2>/dev/null > /trimo-go || echo pipe-read-only;"
        "echo made > /trimo/out/bundle && echo out-writable;"
        "echo new > /workspace/new.txt && echo workspace-writable;"
        "test -e /tmp/ran && echo the-variable-ran-as-code;"
        "awk '{print \"mount\", $5, $6}' /proc/self/mountinfo;"
        "exit 3",
    )  # fmt: skip
    assert code == 3
    assert lines[:6] == [
        "greeting=two words",
        "trick=$(touch /tmp/ran)`touch /tmp/ran`",
        "cwd=/workspace",
        "1000",
        "do the thing",
        "the agent's earlier work",
    ]
    assert "context-read-only" in lines and "pipe-read-only" in lines
    assert "out-writable" in lines and "workspace-writable" in lines
    assert "the-variable-ran-as-code" not in lines
    options = {}  # the top mount of each mount point, as the agent meets it
    for line in lines:
        if line.startswith("mount "):
            _, point, flags = line.split()
            options[point] = set(flags.split(","))
    for point in ("/workspace", "/trimo", "/trimo/out", "/home/agent"):
        assert {"nosuid", "nodev"} <= options[point], point
        assert ("ro" in options[point]) == (point == "/trimo"), point
    assert not (run_dirs.context_dir / "forged").exists()
    assert (run_dirs.out_dir / "bundle").read_text() == "made\n"
    assert (run_dirs.workspace / "new.txt").read_text() == "new\n"
    assert (run_dirs.workspace / "kept.txt").exists(), "the workspace outlives its box"
    assert mounted_below(shared) == [str(shared), str(shared / "stage")]
    assert sorted(os.listdir(shared)) == ["stage"]
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(box.container.id)


def test_a_box_sees_no_other_box_nor_the_hosts_paths(
    docker_client: docker.DockerClient, test_image: str, shared: Path, run_dirs: ContainerSpec
) -> None:
    key = key_for(docker_client, test_image)
    other = box_for(docker_client, key, shared)
    box = box_for(docker_client, key, shared)
    try:
        assert box.claim()
        lines, code = run_in(
            docker_client, box, run_dirs,
            "cat /proc/self/mountinfo; ls -a /workspace /trimo /home/agent",
        )  # fmt: skip
        assert code == 0
        text = "\n".join(lines)
        assert str(shared) not in text and str(run_dirs.workspace.parent) not in text
        assert other.container.name not in text
        assert other.claim(), "the other box still waits for its own run"
    finally:
        other.discard()


def test_a_box_whose_waiter_died_is_not_claimed(
    docker_client: docker.DockerClient, test_image: str, shared: Path
) -> None:
    box = box_for(docker_client, key_for(docker_client, test_image), shared)
    try:
        box.container.kill()
        eventually(lambda: not box.claim(), "a dead box could still be claimed")
    finally:
        box.discard()
    assert sorted(os.listdir(shared)) == ["stage"]


def test_a_run_that_asks_for_other_limits_or_mounts_does_not_fit(tmp_path: Path) -> None:
    key = BoxKey("img", "sha256:1", AGENT, Resources(memory="256m"), "none", "r")
    slot = Slot(tmp_path / "slot", tmp_path / "stage")
    made = create_kwargs(template(key, slot, "box", None))
    made["entrypoint"] = ["bash", "-c", "the waiter"]
    spec = replace(
        spec_at(tmp_path),
        image="img",
        command=["agent"],
        resources=Resources(memory="256m"),
        env={"A": "1"},
        labels={"x": "y"},
        name="trimo-run",
    )

    def run(spec: ContainerSpec, image_id: str = "sha256:1") -> dict[str, object]:
        return {**create_kwargs(spec), "image": image_id}

    assert misfits(made, run(spec), spec) == []
    assert misfits(made, run(spec, "sha256:2"), spec) == ["image"]
    bigger = replace(spec, resources=Resources(memory="512m"))
    assert misfits(made, run(bigger), bigger) == ["mem_limit", "memswap_limit"]
    extra = replace(spec, writable={tmp_path / "cache": "/home/agent/.cache"})
    assert misfits(made, run(extra), extra) == ["volumes"]
    root = replace(spec, user="0:0")
    assert misfits(made, run(root), root) == ["user"]
    shell = replace(spec, env={"UID": "0"})
    assert misfits(made, run(shell), shell) == ["environment"]


def test_what_the_waiter_reads() -> None:
    assert go_message({"A": "1", "B": "x y"}, ["run", ""]) == b"2\0A=1\0B=x y\0run\0\0"
    assert go_message({"A": "has\0nul"}, ["run"]) is None
    assert go_message({"A=B": "1"}, ["run"]) is None
    assert go_message({"1A": "1"}, ["run"]) is None
    assert go_message({}, ["a\0b"]) is None
    assert go_message({"UID": "0"}, ["run"]) is None, "bash will not export it"
    assert go_message({"_trimo_command": "sh"}, ["run"]) is None, "the waiter's own name"


def test_a_new_kind_of_run_trims_the_boxes_made_for_the_last(
    docker_client: docker.DockerClient, test_image: str, tmp_path: Path
) -> None:
    pool = WarmPool()
    first = key_for(docker_client, test_image)
    pool.keep(1, tmp_path / "cache", first.runner_id)
    with runners_umask():
        trim(pool, first, docker_client)
    assert mounted_below(warm_dir(tmp_path / "cache", first.runner_id)) == []


def trim(pool: WarmPool, first: BoxKey, docker_client: docker.DockerClient) -> None:
    try:
        assert pool.take(docker_client, first) is None, "the first run of a kind starts cold"
        eventually(lambda: pool.ready() == 1, "no box was made ahead")

        def boxes() -> list[str]:
            found = docker_client.containers.list(
                all=True, sparse=True, filters={"label": f"dev.trimo.runner={first.runner_id}"}
            )  # sparse: no look at each, which a box removed meanwhile would fail
            return [str(c.attrs["Names"][0]) for c in found]

        made = boxes()
        assert len(made) == 1
        second = replace(first, resources=Resources(memory="512m", cpus=1, pids=128))
        assert pool.take(docker_client, second) is None
        eventually(lambda: made[0] not in boxes(), "the old kind's box stayed")
        eventually(lambda: pool.ready() == 1, "no box for the new kind")
        box = pool.take(docker_client, second)
        assert box is not None and box.key == second
        box.discard()
    finally:
        pool.close()


def test_a_killed_runners_boxes_directories_are_unmounted_at_its_start(
    docker_client: docker.DockerClient, test_image: str, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    key = key_for(docker_client, test_image)
    pool = WarmPool()
    pool.keep(1, cache, key.runner_id)
    pool.take(docker_client, key)
    eventually(lambda: pool.ready() == 1, "no box was made ahead")
    where = warm_dir(cache, key.runner_id)
    assert mounted_below(where)
    cleared = leftovers.clear(docker_client, key.runner_id, cache)  # as after a kill -9
    assert cleared.containers == 1 and cleared.unmounted >= 1
    assert mounted_below(where) == []


@pytest.fixture
def shared_host(tmp_path: Path) -> Iterator[Path]:
    """A host whose mounts are shared, as under systemd: the pipeline's disk is mounted in
    a shared mount."""
    where = tmp_path / "host"
    where.mkdir()
    subprocess.run(["mount", "--bind", str(where), str(where)], check=True)
    subprocess.run(["mount", "--make-rshared", str(where)], check=True)
    yield where
    subprocess.run(["umount", "-R", "--lazy", str(where)], check=True)


def test_a_boxs_mounts_are_linked_to_no_other_copy_of_the_pipelines_disk(
    docker_client: docker.DockerClient, test_image: str, shared: Path, shared_host: Path
) -> None:
    """On a shared host, a bind of the pipeline's disk joined its peer group: the box's
    /trimo/out showed up on the host's disk, and the host's later mounts in the box."""
    (shared_host / "pipeline").mkdir()
    with disk.mounted(shared_host / "pipeline", disk.parse_size("64m")) as root:
        spec = run_spec(root)
        before = mounted_below(shared_host)
        box = box_for(docker_client, key_for(docker_client, test_image), shared)
        assert box.claim()
        spec = replace(spec, image=box.key.image, command=["bash", "-c",
            "while [ ! -e /workspace/go-on ]; do sleep 0.05; done;"
            "echo later=$(grep -c ' /workspace/later ' /proc/self/mountinfo)"])  # fmt: skip
        container = warm.WarmContainer(docker_client, spec, box)
        try:
            container.start()
            on_host = mounted_below(shared_host)
            (root / "workspace" / "later").mkdir()
            subprocess.run(["mount", "-t", "tmpfs", "later", str(root / "workspace" / "later")],
                           check=True)  # fmt: skip
            (root / "workspace" / "go-on").touch()
            lines = list(container.lines())
            subprocess.run(["umount", str(root / "workspace" / "later")], check=True)
        finally:
            container.remove()
    assert on_host == before, "the box's mounts appeared on the host"
    assert lines == ["later=0"], "a mount the host made later reached the box"


def test_a_box_that_does_not_read_its_run_holds_no_one(
    docker_client: docker.DockerClient, test_image: str, shared: Path, run_dirs: ContainerSpec
) -> None:
    """A frozen waiter, and a run larger than a pipe holds: the host gives up in time."""
    box = box_for(docker_client, key_for(docker_client, test_image), shared)
    try:
        assert box.claim()
        box.container.pause()
        spec = replace(run_dirs, image=box.key.image, env={"BIG": "x" * 200_000})
        started = time.monotonic()
        with pytest.raises(TrimoError, match="did not take its run in time"):
            box.begin(spec, timeout=1)
        assert time.monotonic() - started < 10
        box.container.unpause()
    finally:
        box.discard()
    assert mounted_below(shared) == [str(shared), str(shared / "stage")]


def test_the_box_of_a_run_a_killed_runner_left_is_found_by_its_pipeline(
    docker_client: docker.DockerClient, test_image: str, shared: Path, tmp_path: Path
) -> None:
    """A box has no label of its run's: a process taking over the run finds it by the note
    in the pipeline's directory, and removes it before it saves the run's work."""
    box = box_for(docker_client, key_for(docker_client, test_image), shared)
    pipeline = tmp_path / "pipelinedir"
    pipeline.mkdir()
    try:
        warm.note(pipeline, box)
        warm.forget(docker_client, pipeline)
        with pytest.raises(docker.errors.NotFound):
            docker_client.containers.get(box.container.id)
        assert not (pipeline / "warm-box").exists()
        (pipeline / "warm-box").write_text("../../etc/passwd")
        warm.forget(docker_client, pipeline)  # not an id: nothing is asked of Docker
        assert not (pipeline / "warm-box").exists()
    finally:
        box.discard()


def test_the_boxes_go_when_their_image_is_rebuilt(
    docker_client: docker.DockerClient, test_image: str, tmp_path: Path
) -> None:
    tag = f"trimo-warm-test:{uuid.uuid4().hex[:8]}"
    docker_client.images.get(test_image).tag(tag)
    key = replace(key_for(docker_client, test_image), image=tag)
    pool = WarmPool()
    pool.keep(1, tmp_path / "cache", key.runner_id)
    try:
        with runners_umask():
            assert pool.take(docker_client, key) is None
            eventually(lambda: pool.ready() == 1, "no box was made ahead")
        assert not pool.trim_stale(docker_client), "the image is the same"
        [made] = docker_client.containers.list(
            sparse=True, filters={"label": f"dev.trimo.runner={key.runner_id}"}
        )
        docker_client.images.get("debian:bookworm-slim").tag(tag)  # rebuilt, say
        assert pool.trim_stale(docker_client)
        with pytest.raises(docker.errors.NotFound):
            docker_client.containers.get(made.id)
        assert pool.ready() == 0
    finally:
        pool.close()
        docker_client.images.remove(tag)
