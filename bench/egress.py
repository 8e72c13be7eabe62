"""Time to agent with an `allowlist` network beside `none`, and a run's network set-up and
tear-down, in one run.

    python bench/egress.py [--image trimo-agent:base] [--repeat 15]

Each sample starts a locked-down container (the agent's limits) and waits for its
first output line. `none` is the baseline; `allowlist` adds what a run adds: a network
of its own with its own tinyproxy on the runner's egress proxy (started once, before
timing), and stopping that proxy (reading its blocked hosts) afterwards. Then a run's
network on its own: `allowlist` (a network made ahead taken, its proxy started;
released), a new one (made and joined by the proxy; left and removed: what a run would
pay with none made ahead), and `bridge` (made; removed).
"""

from __future__ import annotations

import argparse
import statistics
import time

import docker

from runner import leftovers
from runner.network import EgressProxy, NetworkAttachment, attach, direct, tenant

MARK = "first-output-mark"


def sample(client: docker.DockerClient, image: str, attachment: NetworkAttachment) -> float:
    container = client.containers.run(
        image, ["bash", "-c", f"echo {MARK}"], detach=True, user="1000:1000", init=True,
        network_mode=attachment.network, environment=attachment.env, dns=attachment.dns,
        cap_drop=["ALL"], security_opt=["no-new-privileges"], mem_limit="1g", pids_limit=256,
    )  # fmt: skip
    for chunk in container.logs(stream=True, follow=True):
        if MARK.encode() in chunk:
            break
    elapsed = time.perf_counter()
    container.remove(force=True)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--image", default="trimo-agent:base")
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    client = docker.from_env()
    t0 = time.perf_counter()
    runner_id = "bench-egress"
    proxy = EgressProxy.ensure(client, runner_id, spare=1)
    print(f"egress proxy ready in {time.perf_counter() - t0:.2f} s (once per runner)")
    none: list[float] = []
    allow: list[float] = []
    attach_s: list[float] = []
    release_s: list[float] = []
    try:
        for n in range(args.repeat):
            t0 = time.perf_counter()
            none.append(sample(client, args.image, direct("none")) - t0)
            while not proxy.spares.ready():  # as a runner has one between its runs
                time.sleep(0.05)
            t0 = time.perf_counter()
            attachment = proxy.attach(f"bench-{n}", ["api.anthropic.com", "*.npm.example.net"])
            attach_s.append(time.perf_counter() - t0)
            allow.append(sample(client, args.image, attachment) - t0)
            t1 = time.perf_counter()
            attachment.release()
            release_s.append(time.perf_counter() - t1)
        setup: dict[str, list[float]] = {"new": [], "bridge": []}
        teardown: dict[str, list[float]] = {"new": [], "bridge": []}
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            network = tenant.create(client, runner_id, internal=True)
            network.connect(proxy.container)
            setup["new"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            network.disconnect(proxy.container)
            tenant.remove(network)
            teardown["new"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            bridged = attach(client, "bridge", "bench", [], runner_id)
            setup["bridge"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            bridged.release()
            teardown["bridge"].append(time.perf_counter() - t0)
    finally:
        leftovers.close(client, runner_id)

    def p(values: list[float], q: float) -> float:
        return sorted(values)[min(len(values) - 1, int(q * len(values)))]

    print(f"{'network':<10} {'p50':>7} {'p90':>7}  (time to the agent's first output)")
    print(f"{'none':<10} {statistics.median(none):7.3f} {p(none, 0.9):7.3f}")
    print(f"{'allowlist':<10} {statistics.median(allow):7.3f} {p(allow, 0.9):7.3f}")
    print(f"  of which the run's proxy: p50 {statistics.median(attach_s):.3f} s; "
          f"releasing it afterwards: p50 {statistics.median(release_s):.3f} s")  # fmt: skip
    print(f"{'a run’s network':<28} {'set-up p50':>10} {'tear-down p50':>14}")
    rows = [
        ("allowlist (made ahead)", attach_s, release_s),
        ("allowlist (a new network)", setup["new"], teardown["new"]),
        ("bridge (a new network)", setup["bridge"], teardown["bridge"]),
    ]
    for name, up, down in rows:
        print(f"{name:<28} {statistics.median(up):10.3f} {statistics.median(down):14.3f}")


if __name__ == "__main__":
    main()
