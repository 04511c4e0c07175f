#!/usr/bin/env python3
"""Two models served across a simulated three-node Ray cluster on this machine.

    pip install '.[ray]'                  # the snug package, its programs, and Ray
    build/snug quantize models/SmolLM2-135M-Instruct.Q4_1.gguf /tmp/smollm2-q8_0.gguf Q8_0
    python deploy/ray/example.py models/SmolLM2-135M-Instruct.Q4_1.gguf /tmp/smollm2-q8_0.gguf

Each replica is a `snug serve` owned by a Ray actor that reserves the bytes
`snug serve --dry-run` plans for it; the nodes get different memory, so where
the replicas land follows the plan. Prints the placement and one answer per
model through the OpenAI client, then shuts everything down. On a real cluster,
`serve run snug.ray_serve:build_app models=A.gguf,B.gguf` does the same
(docs/DEPLOY.md)."""
import json
import sys
import time
import urllib.request
from pathlib import Path

import openai
import ray
from ray import serve
from ray.cluster_utils import Cluster

from snug.ray_serve import build_app, replica_bytes

MiB = 1 << 20


def main(paths):
    plans = {Path(p).stem: replica_bytes(p, 1024, 2) for p in paths}
    big = max(plans.values())
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "memory": big // 2, "node_ip_address": "127.0.0.1"})
    nodes = {cluster.head_node.node_id: big // 2}
    for memory in (big * 3 // 2, big * 5 // 2):
        node = cluster.add_node(num_cpus=2, memory=memory, node_ip_address="127.0.0.1")
        nodes[node.node_id] = memory
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": 8000})
        serve.run(build_app({"models": [{"path": p, "replicas": 1 + (i == 0)}
                                        for i, p in enumerate(paths)],
                             "ctx": 1024, "parallel": 2}), blocking=False)
        for _ in range(480):  # /health: 200 once every model has a replica ready
            try:
                with urllib.request.urlopen("http://127.0.0.1:8000/health") as f:
                    if f.status == 200:
                        break
            except OSError:
                pass
            time.sleep(0.5)
        client = openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="none")
        for name in plans:
            r = client.completions.create(model=name, prompt="The capital of France is",
                                          max_tokens=8, temperature=0)
            print(f"{name}: {r.choices[0].text!r}")
        with urllib.request.urlopen("http://127.0.0.1:8000/v1/replicas") as f:
            placed = json.loads(f.read())["models"]
        for name, m in placed.items():
            for r in m["replicas"]:
                print(f"replica of {name} ({m['planned_bytes'] / MiB:.1f} MiB planned) on node "
                      f"{r.get('node_id', '?')[:8]} ({nodes.get(r.get('node_id'), 0) / MiB:.1f} "
                      f"MiB), ready: {r['ready']}")
    finally:
        serve.shutdown()
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: example.py MODEL.gguf [MODEL.gguf ...]")
    main(sys.argv[1:])
