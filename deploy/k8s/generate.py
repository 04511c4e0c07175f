#!/usr/bin/env python3
"""Kubernetes manifests for `snug serve`, sized by its own plan.

    deploy/k8s/generate.py MODEL_OR_DIR... --ctx N [--parallel N] --out DIR [options]

Runs `snug serve MODEL... --ctx N --parallel N --dry-run` on the local files (nothing is loaded
or bound), and writes into DIR a Deployment, a Service and a PodDisruptionBudget (and with
--rayservice, DIR/ray/rayservice.yaml: a KubeRay RayService running snug.ray_serve:build_app).
In the pod the models are named by file name under --models-dir.

Memory: the server gets `--memory PLAN`, PLAN being the plan's memory_bytes_all (every model
loaded at once) or, with --load one, memory_bytes_one (the largest alone; the others are evicted
least recently used). The container's memory request and limit are both L, the smallest limit
that leaves snug's default headroom above the plan:

    L - clamp(L // 10, 32 MiB, 1 GiB) >= PLAN

the same headroom snug takes from a cgroup limit when it has no --memory (src/plan/fit.cpp,
default_budget), so the pod would plan the same budget without the flag too. A RayService
worker runs one replica of one model (snug.ray_serve), so its memory is L of memory_bytes_one,
and there is one worker per replica of each model; with one model that is the Deployment's L.

Errors: one line on stderr; exit 2 for a bad argument (missing model, a directory without a
.gguf, --ctx or --parallel < 1, --replicas < 1, no snug program, --out a file, ...), exit 1 when
the dry run fails (snug's own error line is passed through) or a model does not fit.

Standard library only (Python 3.11 here); the YAML is written by the small emitter at the bottom.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = "snug.serve-plan/1"
PORT = 8080
UID = 10001  # the Dockerfile's USER
MIB = 1 << 20
GIB = 1 << 30
HEADROOM_MIN = 32 * MIB
HEADROOM_MAX = GIB
DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
DNS_1123 = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
QUANTITY = re.compile(r"[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?")


class Fail(Exception):
    """An error to print as one line and exit with `code`; `raw`: snug's own line, as it is."""

    def __init__(self, message, code=2, raw=False):
        super().__init__(message)
        self.code = code
        self.raw = raw


# --- memory ------------------------------------------------------------------------------------

def headroom(limit):
    """What snug keeps back from a memory limit it plans against: 10%, in [32 MiB, 1 GiB]."""
    return min(max(limit // 10, HEADROOM_MIN), HEADROOM_MAX)


def memory_limit(plan_bytes):
    """The smallest L with L - headroom(L) >= plan_bytes.

    L - headroom(L) never decreases as L grows (headroom grows by at most 1 per byte), and
    L = plan + 1 GiB always qualifies, so a binary search over [plan, plan + 1 GiB] finds it.
    """
    lo, hi = plan_bytes, plan_bytes + HEADROOM_MAX
    while lo < hi:
        mid = (lo + hi) // 2
        if mid - headroom(mid) >= plan_bytes:
            hi = mid
        else:
            lo = mid + 1
    return lo


def mib(n):
    return f"{n / MIB:.1f} MiB"


# --- arguments ---------------------------------------------------------------------------------

class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage + error
        raise Fail(f"{message} (see --help)")


def parse_args(argv):
    p = Parser(prog="generate.py", description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", metavar="MODEL_OR_DIR",
                   help="GGUF files, or directories of them (served as snug serve --models)")
    p.add_argument("--ctx", type=int, required=True, help="tokens per sequence")
    p.add_argument("--parallel", type=int,
                   help="full-context sequences per model (default: snug's)")
    p.add_argument("--image", default="snug:latest", help="image of the root Dockerfile")
    p.add_argument("--replicas", type=int, default=2)
    p.add_argument("--name", default="snug", help="name and instance label of every object")
    p.add_argument("--namespace", default="default")
    p.add_argument("--models-dir", default="/models",
                   help="folder in the pod that holds the models by file name")
    p.add_argument("--models-pvc", metavar="CLAIM",
                   help="a PersistentVolumeClaim mounted read-only at --models-dir (default: "
                        "none, the image holds the models)")
    p.add_argument("--snug", help="the snug program (default: build/snug here, else snug on PATH)")
    p.add_argument("--load", choices=("all", "one"), default="all",
                   help="size for every model loaded at once, or for the largest alone")
    p.add_argument("--cpu", default="1", help="CPU request of each server pod")
    p.add_argument("--rayservice", action="store_true",
                   help="also write ray/rayservice.yaml (KubeRay, ray.io/v1)")
    p.add_argument("--ray-image", default="snug-ray:latest",
                   help="image with Ray, the snug Python package and the models")
    p.add_argument("--ray-version", help="spec.rayClusterConfig.rayVersion (default: unset)")
    p.add_argument("--ray-head-memory", default="2Gi",
                   help="memory of the Ray head pod (GCS, dashboard, Serve controller, proxy)")
    p.add_argument("--out", required=True, type=Path, help="folder to write the manifests into")
    a = p.parse_args(argv)

    if a.ctx < 1:
        raise Fail(f"--ctx must be at least 1, not {a.ctx}")
    if a.parallel is not None and a.parallel < 1:
        raise Fail(f"--parallel must be at least 1, not {a.parallel}")
    if a.replicas < 1:
        raise Fail(f"--replicas must be at least 1, not {a.replicas}")
    if len(a.name) > 63 or not DNS_1035.fullmatch(a.name):
        raise Fail(f"--name {a.name!r} is not a DNS-1035 label (a-z, 0-9, '-', at most 63)")
    if len(a.namespace) > 63 or not DNS_1123.fullmatch(a.namespace):
        raise Fail(f"--namespace {a.namespace!r} is not a DNS-1123 label")
    if a.models_pvc is not None and not DNS_1123.fullmatch(a.models_pvc):
        raise Fail(f"--models-pvc {a.models_pvc!r} is not a valid claim name")
    if not a.models_dir.startswith("/"):
        raise Fail(f"--models-dir must be an absolute path in the pod, not {a.models_dir!r}")
    for flag, image in (("--image", a.image), ("--ray-image", a.ray_image)):
        if not image or any(c.isspace() for c in image):
            raise Fail(f"{flag} {image!r} is not an image reference")
    for flag, q in (("--cpu", a.cpu), ("--ray-head-memory", a.ray_head_memory)):
        if not QUANTITY.fullmatch(q):
            raise Fail(f"{flag} {q!r} is not a Kubernetes quantity (like 1, 500m, 2Gi)")
    if a.out.exists() and not a.out.is_dir():
        raise Fail(f"--out {str(a.out)!r} exists and is not a directory")
    for m in a.models:
        path = Path(m)
        if path.is_dir():
            if not any(f.is_file() for f in path.glob("*.gguf")):
                raise Fail(f"{m!r} is a directory with no .gguf file in it")
        elif not path.is_file():
            raise Fail(f"model {m!r}: no such file or directory")
    a.snug = find_snug(a.snug)
    return a


def find_snug(given):
    if given is not None:
        if not (os.path.isfile(given) and os.access(given, os.X_OK)):
            raise Fail(f"--snug {given!r} is not an executable file")
        return given
    built = ROOT / "build" / "snug"
    if built.is_file() and os.access(built, os.X_OK):
        return str(built)
    on_path = shutil.which("snug")
    if on_path is None:
        raise Fail(f"no snug program: not built at {built} and not on PATH (give --snug)")
    return on_path


# --- the plan ----------------------------------------------------------------------------------

def dry_run(a):
    """`snug serve ... --dry-run`'s JSON; snug's warnings go to stderr as they came."""
    several = len(a.models) > 1 or Path(a.models[0]).is_dir()
    cmd = [a.snug, "serve", *(["--models"] if several else []), *a.models,
           "--ctx", str(a.ctx), *(["--parallel", str(a.parallel)] if a.parallel else []),
           "--dry-run"]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except OSError as e:
        raise Fail(f"cannot run {a.snug}: {e.strerror}", 2) from None
    except subprocess.TimeoutExpired:
        raise Fail(f"{' '.join(cmd)} did not finish in 120 s", 1) from None
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    if r.returncode != 0:
        if lines:
            raise Fail(lines[-1], 1, raw=True)
        raise Fail(f"snug serve --dry-run exited {r.returncode}", 1)
    for line in lines:
        print(line, file=sys.stderr)
    try:
        plan = json.loads(r.stdout)
    except json.JSONDecodeError:
        raise Fail(f"{a.snug} serve --dry-run printed no JSON plan", 1) from None
    if not isinstance(plan, dict) or plan.get("schema") != SCHEMA:
        raise Fail(f"{a.snug} serve --dry-run: not a {SCHEMA} plan", 1)
    for m in plan["models"]:
        if not m.get("fits", True):
            raise Fail(m.get("refusal") or f"model {m['name']!r} does not fit", 1)
    if not plan["models"]:
        raise Fail("the plan has no model", 1)
    return plan, several


def pod_models(a, plan):
    """The planned models' paths in the pod: --models-dir/FILE_NAME."""
    names = [Path(m["path"]).name for m in plan["models"]]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise Fail(f"two models share the file name {dup[0]!r}: "
                   f"in {a.models_dir} they would be one")
    return [f"{a.models_dir.rstrip('/')}/{n}" for n in names]


# --- the manifests -----------------------------------------------------------------------------

def labels(a, component):
    return {"app.kubernetes.io/name": "snug", "app.kubernetes.io/instance": a.name,
            "app.kubernetes.io/component": component,
            "app.kubernetes.io/managed-by": "snug-k8s-generate"}


def selector(a, component):
    return {k: v for k, v in labels(a, component).items() if not k.endswith("managed-by")}


def meta(a, component, name=None, **extra):
    return {"name": name or a.name, "namespace": a.namespace, "labels": labels(a, component),
            **extra}


def models_volume(a):
    """(volumes, volumeMounts) for --models-pvc, or nothing: the image holds the models."""
    if a.models_pvc is None:
        return [], []
    return ([{"name": "models", "persistentVolumeClaim": {"claimName": a.models_pvc,
                                                          "readOnly": True}}],
            [{"name": "models", "mountPath": a.models_dir, "readOnly": True}])


def http_probe(period, failures, initial=0):
    probe = {"httpGet": {"path": "/health", "port": "http"}}
    if initial:
        probe["initialDelaySeconds"] = initial
    probe.update(periodSeconds=period, timeoutSeconds=5, failureThreshold=failures)
    return probe


def deployment(a, paths, plan_bytes, limit):
    model_args = [paths[0]] if len(paths) == 1 and not a.several else ["--models", *paths]
    args = [*model_args, "--host", "0.0.0.0", "--port", str(PORT), "--ctx", str(a.ctx),
            "--parallel", str(a.parallel), "--memory", str(plan_bytes)]
    volumes, mounts = models_volume(a)
    container = {
        "name": "snug", "image": a.image, "args": args,
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "resources": {"requests": {"cpu": a.cpu, "memory": str(limit)},
                      "limits": {"memory": str(limit)}},
        # Up to 5 minutes to map and check the weights before the other probes start.
        "startupProbe": http_probe(5, 60),
        # /health is 503 while stopping, so a stopping pod leaves the Service at once.
        "readinessProbe": http_probe(5, 2),
        # Lenient: under a flood /health can be refused (503) with the connection pool full.
        "livenessProbe": http_probe(10, 6),
        "securityContext": {"runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID,
                            "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
                            "privileged": False, "capabilities": {"drop": ["ALL"]}},
    }
    if mounts:
        container["volumeMounts"] = mounts
    pod = {"automountServiceAccountToken": False,
           "securityContext": {"runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID,
                               "seccompProfile": {"type": "RuntimeDefault"}},
           # snug serve gives running requests --shutdown-timeout (10 s) after SIGTERM.
           "terminationGracePeriodSeconds": 30,
           "containers": [container]}
    if volumes:
        pod["volumes"] = volumes
    annotations = {"snug/plan-bytes": str(plan_bytes), "snug/plan-load": a.load,
                   "snug/memory-limit-bytes": str(limit)}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": meta(a, "server", annotations=annotations),
        "spec": {
            "replicas": a.replicas,
            "selector": {"matchLabels": selector(a, "server")},
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": labels(a, "server"),
                             "annotations": {"prometheus.io/scrape": "true",
                                             "prometheus.io/port": str(PORT),
                                             "prometheus.io/path": "/metrics"}},
                "spec": pod}}}


def service(a):
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta(a, "server"),
            "spec": {"type": "ClusterIP", "selector": selector(a, "server"),
                     "ports": [{"name": "http", "port": PORT, "targetPort": "http",
                                "protocol": "TCP"}]}}


def pod_disruption_budget(a):
    # maxUnavailable 1, not minAvailable: with one replica a drain may still evict it.
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": meta(a, "server"),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(a, "server")}}}


def rayservice(a, paths, limit):
    """snug.ray_serve runs each replica as its own `snug serve` of one model, asking Ray for
    that model's plan: so one worker per replica of each model, each with room for the largest
    model alone (`limit` is from memory_bytes_one, whatever --load says)."""
    workers = a.replicas * len(paths)
    serve_config = {"applications": [{
        "name": a.name, "import_path": "snug.ray_serve:build_app", "route_prefix": "/",
        "args": {"models": paths, "ctx": a.ctx, "parallel": a.parallel,
                 "replicas": a.replicas}}]}
    volumes, mounts = models_volume(a)
    # Ray writes its session under /tmp/ray, so the root file system stays writable here.
    security = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}

    def template(container_name, cpu, memory, mount):
        c = {"name": container_name, "image": a.ray_image,
             "resources": {"requests": {"cpu": cpu, "memory": memory},
                           "limits": {"memory": memory}},
             "securityContext": security}
        if mount and mounts:
            c["volumeMounts"] = mounts
        spec = {"containers": [c]}
        if mount and volumes:
            spec["volumes"] = volumes
        return {"metadata": {"labels": labels(a, "ray")}, "spec": spec}

    cluster = {
        # The head runs no replica (num-cpus 0). KubeRay gives `ray start` the worker's memory
        # limit as Ray's memory resource and its CPU as num-cpus (a replica asks for 1).
        "headGroupSpec": {"rayStartParams": {"dashboard-host": "0.0.0.0", "num-cpus": "0"},
                          "template": template("ray-head", "1", a.ray_head_memory, False)},
        "workerGroupSpecs": [{
            "groupName": "snug", "replicas": workers, "minReplicas": workers,
            "maxReplicas": workers, "rayStartParams": {},
            "template": template("ray-worker", a.cpu, str(limit), True)}]}
    if a.ray_version:
        cluster = {"rayVersion": a.ray_version, **cluster}
    return {"apiVersion": "ray.io/v1", "kind": "RayService", "metadata": meta(a, "ray"),
            "spec": {"serveConfigV2": dump_yaml(serve_config), "rayClusterConfig": cluster}}


def header(a, paths, plan_bytes, which, limit):
    lines = [
        "Generated by deploy/k8s/generate.py from `snug serve --dry-run`: rerun it, do not edit.",
        f"Models in the pod (--ctx {a.ctx} --parallel {a.parallel}):",
        *(f"  {path}" for path in paths),
        f"Plan ({SCHEMA}): {plan_bytes} bytes ({mib(plan_bytes)}) = {which}.",
        f"Memory limit: {limit} bytes ({mib(limit)}), the smallest L with",
        f"  L - clamp(L/10, 32 MiB, 1 GiB) >= {plan_bytes} (snug's default headroom).",
    ]
    return "".join(f"# {line}\n" for line in lines)


def generate(argv):
    a = parse_args(argv)
    plan, a.several = dry_run(a)
    if a.parallel is None:
        a.parallel = plan["models"][0]["parallel"]
    paths = pod_models(a, plan)
    plan_bytes = plan["memory_bytes_all" if a.load == "all" else "memory_bytes_one"]
    limit = memory_limit(plan_bytes)
    head = header(a, paths, plan_bytes,
                  "memory_bytes_all, every model loaded" if a.load == "all"
                  else "memory_bytes_one, the largest model alone", limit)
    files = {"deployment.yaml": (head, deployment(a, paths, plan_bytes, limit)),
             "service.yaml": (head, service(a)),
             "poddisruptionbudget.yaml": (head, pod_disruption_budget(a))}
    if a.rayservice:
        one = plan["memory_bytes_one"]
        files["ray/rayservice.yaml"] = (
            header(a, paths, one, "memory_bytes_one (a worker runs one replica)",
                   memory_limit(one)),
            rayservice(a, paths, memory_limit(one)))
    try:
        for name, (comment, doc) in files.items():
            target = a.out / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(comment + dump_yaml(doc))
    except OSError as e:
        raise Fail(f"cannot write to --out {str(a.out)!r}: {e.strerror}") from None
    print(f"wrote {', '.join(files)} to {a.out} (plan {plan_bytes} bytes, limit {limit})")


# --- YAML --------------------------------------------------------------------------------------
# Block style, two spaces. A string is written plain only when every YAML 1.1 and 1.2 reader
# takes it back as that string (it starts with a letter, '/' or '_', or is an option such as
# --host, and holds no character YAML gives a meaning); otherwise double-quoted, with JSON's
# escapes (all valid in YAML). Multi-line strings are literal blocks.

_PLAIN = re.compile(r"(?:[A-Za-z/_]|--?[A-Za-z])[A-Za-z0-9_./=+@:-]*")
_RESERVED = {"y", "n", "yes", "no", "true", "false", "on", "off", "null"}


def _scalar(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if not isinstance(v, str):
        raise TypeError(f"no YAML for {type(v).__name__}")
    plain = (_PLAIN.fullmatch(v) and v.lower() not in _RESERVED
             and not v.endswith(":") and ": " not in v)
    return v if plain else json.dumps(v)


def _block(s, indent):
    chomp = "-" if not s.endswith("\n") else ("+" if s.endswith("\n\n") else "")
    lead = str(2) if s[:1] in (" ", "\n") else ""
    body = s[:-1] if s.endswith("\n") else s
    pad = " " * (indent + 2)
    return f"|{lead}{chomp}\n" + "".join(f"{pad}{line}\n" if line else "\n"
                                         for line in body.split("\n"))


def _node(v, indent):
    """(inline text after 'key:' or '-', or None) and the lines below it."""
    if isinstance(v, dict) and v:
        return None, _map(v, indent + 2)
    if isinstance(v, list) and v:
        return None, _seq(v, indent + 2)
    if isinstance(v, dict):
        return "{}", ""
    if isinstance(v, list):
        return "[]", ""
    if isinstance(v, str) and "\n" in v and all(c.isprintable() or c == "\n" for c in v):
        text = _block(v, indent)
        first, rest = text.split("\n", 1)
        return first, rest
    return _scalar(v), ""


def _map(d, indent):
    out = []
    for k, v in d.items():
        inline, below = _node(v, indent)
        key = " " * indent + _scalar(str(k)) + ":"
        out.append(f"{key} {inline}\n{below}" if inline is not None else f"{key}\n{below}")
    return "".join(out)


def _seq(items, indent):
    out = []
    pad = " " * indent
    for v in items:
        if isinstance(v, dict) and v:
            text = _map(v, indent + 2)
            out.append(pad + "- " + text[indent + 2:])
        else:
            inline, below = _node(v, indent)
            out.append(f"{pad}- {inline}\n{below}" if inline is not None else f"{pad}-\n{below}")
    return "".join(out)


def dump_yaml(doc):
    """One YAML document for a dict of dicts, lists, strings, ints, bools and None."""
    if not isinstance(doc, dict) or not doc:
        raise TypeError("a document is a non-empty mapping")
    return _map(doc, 0)


def main(argv=None):
    try:
        generate(sys.argv[1:] if argv is None else argv)
    except Fail as e:
        print(str(e) if e.raw else f"generate.py: error: {e}", file=sys.stderr)
        return e.code
    return 0


if __name__ == "__main__":
    sys.exit(main())
