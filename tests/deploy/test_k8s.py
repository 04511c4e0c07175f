"""deploy/k8s/generate.py: the manifests it writes validate against Kubernetes' own schemas
(kubernetes-validate, strict), their memory is the plan of a fresh `snug serve --dry-run` plus
snug's headroom, the container's arguments make snug plan the same bytes, the committed example
is what it writes now, and every bad input is one line and exit code 2 (1 for a failing dry run).

No cluster and no network: the RayService (a KubeRay custom resource, whose CRD neither
kubernetes-validate nor any package on PyPI ships) is checked against the fields and types of
KubeRay's v1 CRD written down below, and its pod templates against Kubernetes' PodTemplateSpec.
"""
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

TESTS = Path(__file__).resolve().parent.parent
ROOT = Path(os.environ.get("SNUG_SOURCE_DIR", TESTS.parent))
SNUG = os.environ.get("SNUG_BIN", str(ROOT / "build" / "snug"))
GENERATE = ROOT / "deploy" / "k8s" / "generate.py"
EXAMPLE = ROOT / "deploy" / "k8s" / "example"
MODEL = "models/SmolLM2-135M-Instruct.Q4_1.gguf"  # relative: the example's command, from ROOT
# The command deploy/k8s/README.md gives for the committed example (with --out example/).
EXAMPLE_ARGS = [MODEL, "--ctx", "2048", "--parallel", "4", "--rayservice"]
MIB, GIB = 1 << 20, 1 << 30
K8S_VERSION = kubernetes_validate.utils.latest_version()


def generate(*args, cwd=ROOT):
    return subprocess.run([sys.executable, str(GENERATE), "--snug", SNUG, *map(str, args)],
                          cwd=cwd, capture_output=True, text=True, timeout=60)


def load(folder):
    """{relative path: parsed document} of every .yaml under folder."""
    return {str(p.relative_to(folder)): yaml.safe_load(p.read_text())
            for p in sorted(folder.rglob("*.yaml"))}


def dry_run(*args):
    r = subprocess.run([SNUG, "serve", *map(str, args), "--dry-run"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def container(docs):
    return docs["deployment.yaml"]["spec"]["template"]["spec"]["containers"][0]


def flag(args, name):
    return args[args.index(name) + 1]


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    out = tmp_path_factory.mktemp("example")
    r = generate(*EXAMPLE_ARGS, "--out", out)
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    """Two models (the default one under two names) beside a model of an architecture snug
    does not run, which it skips with a warning, and a file that is no model."""
    d = tmp_path_factory.mktemp("models")
    for name in ("alpha", "beta"):
        (d / f"{name}.gguf").symlink_to(ROOT / MODEL)
    (d / "mamba.gguf").write_bytes(as_architecture(ROOT / MODEL, b"mamba"))
    (d / "notes.txt").write_text("not a model\n")
    return d


def as_architecture(path, arch):
    """The GGUF at `path` with general.architecture and its "llama." keys renamed to
    `arch` (five letters, so every length and offset stays as it was)."""
    import gguf_fast
    data = path.read_bytes()
    end = gguf_fast.Reader(str(path)).data_offset  # the header: keys and tensor infos
    header = data[:end].replace(b"llama.", arch + b".")
    value = (5).to_bytes(8, "little") + b"llama"
    at = header.index(value, header.index(b"general.architecture"))
    header = header[:at + 8] + arch + header[at + 13:]
    return header + data[end:]


@pytest.fixture(scope="module")
def several(tmp_path_factory, models_dir):
    """A folder of models, all loaded at once, from a volume."""
    out = tmp_path_factory.mktemp("several")
    r = generate(models_dir, "--ctx", "1024", "--parallel", "2", "--replicas", 3,
                 "--models-pvc", "snug-models", "--name", "llm", "--namespace", "serving",
                 "--rayservice", "--out", out)
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="module")
def several_one(tmp_path_factory, models_dir):
    """The same folder sized for the largest model alone (--load one)."""
    out = tmp_path_factory.mktemp("several_one")
    r = generate(models_dir, "--ctx", "1024", "--parallel", "2", "--load", "one",
                 "--rayservice", "--out", out)
    assert r.returncode == 0, r.stderr
    return out


LOAD = {"example": "memory_bytes_all", "several": "memory_bytes_all",
        "several_one": "memory_bytes_one"}


# The plan's byte counts (seven digits or more) and its MiB figures: they move
# with snug's own image (docs/PLAN.md), a few KiB whenever the binary changes.
PLAN_FIGURE = re.compile(r"(\d+(?:\.\d+)? MiB|\d{7,})")


def same_but_plan_figures(ours, committed, tolerance=0.01):
    """Whether two manifests are the same text with the plan's figures within
    `tolerance` of each other; (False, why) otherwise."""
    a, b = PLAN_FIGURE.split(ours), PLAN_FIGURE.split(committed)
    if len(a) != len(b):
        return False, "their plan figures differ in number"
    for i, (x, y) in enumerate(zip(a, b)):
        if i % 2 == 0:
            if x != y:
                return False, f"text differs: {x[:80]!r} against {y[:80]!r}"
            continue
        u, v = float(x.split()[0]), float(y.split()[0])
        if abs(u - v) > tolerance * max(u, v):
            return False, f"a plan figure moved more than {tolerance:.0%}: {x} now, {y} committed"
    return True, ""


def test_the_committed_example_is_what_the_generator_writes_now(example):
    """The committed example is what generate.py writes now, but for the plan's
    figures, which may be up to 1% off: they follow the binary's size."""
    ours = sorted(str(p.relative_to(example)) for p in example.rglob("*") if p.is_file())
    committed = sorted(str(p.relative_to(EXAMPLE)) for p in EXAMPLE.rglob("*") if p.is_file())
    assert ours == committed, "regenerate deploy/k8s/example (deploy/k8s/README.md)"
    for name in ours:
        same, why = same_but_plan_figures((example / name).read_text(), (EXAMPLE / name).read_text())
        assert same, (f"deploy/k8s/example/{name} differs from what generate.py writes now ({why}): "
                      "regenerate it with the command in deploy/k8s/README.md")


def test_the_example_check_catches_what_it_should():
    text = "limit: 393192368 bytes (375.0 MiB)\nreplicas: 2\nport: 8080\n"
    assert same_but_plan_figures(text, text)[0]
    near = text.replace("393192368", "393992368").replace("375.0 MiB", "375.8 MiB")
    assert same_but_plan_figures(near, text)[0]
    assert not same_but_plan_figures(text.replace("393192368", "423192368"), text)[0]
    assert not same_but_plan_figures(text.replace("replicas: 2", "replicas: 3"), text)[0]
    assert not same_but_plan_figures(text.replace("8080", "8081"), text)[0]
    assert not same_but_plan_figures(text + "extra: 1234567\n", text)[0]


@pytest.mark.parametrize("which", ["example", "several"])
def test_every_kubernetes_kind_validates_strictly(which, request):
    docs = load(request.getfixturevalue(which))
    kinds = {d["kind"] for d in docs.values()}
    assert kinds == {"Deployment", "Service", "PodDisruptionBudget", "RayService"}
    assert int(K8S_VERSION.split(".")[1]) >= 30, K8S_VERSION
    for name, doc in docs.items():
        if doc["kind"] == "RayService":
            continue
        # Raises with the path of the first field that is unknown, missing or mistyped.
        assert kubernetes_validate.validate(doc, K8S_VERSION, strict=True), name
    # And a broken one does not validate: the check has teeth.
    bad = json.loads(json.dumps(docs["deployment.yaml"]))
    container({"deployment.yaml": bad})["resources"]["limit"] = {"memory": "1Gi"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_the_server_is_probed_locked_down_and_scraped(example):
    docs = load(example)
    pod = docs["deployment.yaml"]["spec"]["template"]
    c = container(docs)
    assert c["image"] == "snug:latest" and docs["deployment.yaml"]["spec"]["replicas"] == 2
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/health", "port": "http"}, probe
    assert c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 10001
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert pod["metadata"]["annotations"] == {"prometheus.io/scrape": "true",
                                              "prometheus.io/port": "8080",
                                              "prometheus.io/path": "/metrics"}
    assert c["args"][:5] == ["/models/SmolLM2-135M-Instruct.Q4_1.gguf",
                             "--host", "0.0.0.0", "--port", "8080"]
    svc, pdb = docs["service.yaml"], docs["poddisruptionbudget.yaml"]
    assert svc["spec"]["type"] == "ClusterIP" and svc["spec"]["ports"][0]["port"] == 8080
    selector = docs["deployment.yaml"]["spec"]["selector"]["matchLabels"]
    assert svc["spec"]["selector"] == selector == pdb["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod["metadata"]["labels"].items()


def limit_rule(plan):
    """Checks the documented rule from its definition: L fits, L - 1 does not."""
    def left(limit):
        return limit - min(max(limit // 10, 32 * MIB), GIB)
    return lambda limit: left(limit) >= plan and left(limit - 1) < plan


@pytest.mark.parametrize("which", ["example", "several", "several_one"])
def test_memory_is_a_fresh_plan_plus_the_headroom(which, request, models_dir):
    docs = load(request.getfixturevalue(which))
    if which == "example":
        fresh = dry_run(MODEL, "--ctx", 2048, "--parallel", 4)
    else:
        fresh = dry_run("--models", models_dir, "--ctx", 1024, "--parallel", 2)
        assert fresh["memory_bytes_one"] < fresh["memory_bytes_all"]
    plan = fresh[LOAD[which]]
    c = container(docs)
    assert int(flag(c["args"], "--memory")) == plan
    limit = int(c["resources"]["limits"]["memory"])
    assert c["resources"]["requests"]["memory"] == c["resources"]["limits"]["memory"]
    assert limit_rule(plan)(limit), (plan, limit)
    # A Ray worker holds one replica of one model: sized for the largest alone, one worker
    # per replica of each model (with one model: the Deployment's figure and replicas).
    worker = docs["ray/rayservice.yaml"]["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    res = worker["template"]["spec"]["containers"][0]["resources"]
    ray_limit = int(res["limits"]["memory"])
    assert int(res["requests"]["memory"]) == ray_limit
    assert limit_rule(fresh["memory_bytes_one"])(ray_limit), (fresh, ray_limit)
    models = len(fresh["models"])
    assert worker["replicas"] == docs["deployment.yaml"]["spec"]["replicas"] * models
    if which == "example":
        assert ray_limit == limit and models == 1


def test_the_rule_across_its_three_ranges():
    spec = importlib.util.spec_from_file_location("generate", GENERATE)
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    # Headroom 32 MiB, 10%, 1 GiB; and the edges between them.
    for plan in (1, 100 * MIB, 288 * MIB - 1, 288 * MIB, 288 * MIB + 1, 353003244, 5 * GIB,
                 9 * GIB - 1, 9 * GIB, 9 * GIB + 1, 40 * GIB + 7):
        assert limit_rule(plan)(gen.memory_limit(plan)), plan
    assert gen.memory_limit(100 * MIB) == 132 * MIB
    assert gen.memory_limit(20 * GIB) == 21 * GIB


@pytest.mark.parametrize("which", ["example", "several", "several_one"])
def test_the_container_arguments_make_snug_plan_the_same(which, request, models_dir):
    """The pod's arguments, with /models/ read as the folder the models came from, plan what
    the limit was sized for, and the budget they give holds it."""
    docs = load(request.getfixturevalue(which))
    c = container(docs)
    here = ROOT / "models" if which == "example" else models_dir
    args = [str(here / a[len("/models/"):]) if a.startswith("/models/") else a
            for a in c["args"]]
    plan = dry_run(*args)
    key = LOAD[which]
    assert plan["budget"] == {"bytes": int(flag(c["args"], "--memory")), "source": "--memory"}
    assert plan[key] == plan["budget"]["bytes"]
    assert all(m["fits"] for m in plan["models"])
    names = [Path(m["path"]).name for m in plan["models"]]
    assert names == [Path(a).name for a in c["args"] if a.endswith(".gguf")]
    if which != "example":
        assert c["args"][0] == "--models" and names == ["alpha.gguf", "beta.gguf"]
    if which == "several":
        assert c["volumeMounts"] == [{"name": "models", "mountPath": "/models", "readOnly": True}]


# KubeRay's v1 RayService CRD (ray-operator/config/crd/bases/ray.io_rayservices.yaml, v1.7),
# the fields the generator writes: their types and what the CRD marks required.
INT32 = {"type": "integer", "minimum": -(2 ** 31), "maximum": 2 ** 31 - 1}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
QUANTITY = {"anyOf": [{"type": "integer"}, {"type": "string",
                                            "pattern": r"^[0-9]+(\.[0-9]+)?(m|[KMGT]i?|k)?$"}]}
RESOURCES = {"type": "object", "additionalProperties": False, "properties": {
    "requests": {"type": "object", "additionalProperties": QUANTITY},
    "limits": {"type": "object", "additionalProperties": QUANTITY}}}
RAYSERVICE = {
    "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "ray.io/v1"}, "kind": {"const": "RayService"},
        "metadata": {"type": "object", "required": ["name"], "properties": {
            "name": {"type": "string"}, "namespace": {"type": "string"},
            "labels": STRING_MAP}},
        "spec": {"type": "object", "additionalProperties": False,
                 "required": ["rayClusterConfig"], "properties": {
                     "serveConfigV2": {"type": "string"},
                     "rayClusterConfig": {
                         "type": "object", "additionalProperties": False,
                         "required": ["headGroupSpec"], "properties": {
                             "rayVersion": {"type": "string"},
                             "headGroupSpec": {
                                 "type": "object", "additionalProperties": False,
                                 "required": ["template"], "properties": {
                                     "rayStartParams": STRING_MAP,
                                     "template": {"type": "object"}}},
                             "workerGroupSpecs": {"type": "array", "items": {
                                 "type": "object", "additionalProperties": False,
                                 "required": ["groupName", "minReplicas", "maxReplicas",
                                              "template"],
                                 "properties": {
                                     "groupName": {"type": "string"},
                                     "replicas": INT32, "minReplicas": INT32,
                                     "maxReplicas": INT32,
                                     "rayStartParams": STRING_MAP,
                                     "template": {"type": "object"}}}}}}}}}}


@pytest.mark.parametrize("which", ["example", "several"])
def test_the_rayservice_has_kuberays_shape_and_runs_the_plan(which, request):
    docs = load(request.getfixturevalue(which))
    rs = docs["ray/rayservice.yaml"]
    jsonschema.validate(rs, RAYSERVICE)
    cluster = rs["spec"]["rayClusterConfig"]
    groups = [("head", cluster["headGroupSpec"])] + [
        (g["groupName"], g) for g in cluster["workerGroupSpecs"]]
    for name, group in groups:
        # Each pod template is a Kubernetes PodTemplateSpec: validated as one, strictly.
        wrapped = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": name},
                   "template": group["template"]}
        assert kubernetes_validate.validate(wrapped, K8S_VERSION, strict=True), name
        for c in group["template"]["spec"]["containers"]:
            jsonschema.validate(c["resources"], RESOURCES)
    worker = cluster["workerGroupSpecs"][0]
    replicas = docs["deployment.yaml"]["spec"]["replicas"]
    assert worker["replicas"] == worker["minReplicas"] == worker["maxReplicas"]
    serve = yaml.safe_load(rs["spec"]["serveConfigV2"])
    (app,) = serve["applications"]
    assert app["import_path"] == "snug.ray_serve:build_app"
    args = container(docs)["args"]
    assert app["args"] == {"models": [a for a in args if a.endswith(".gguf")],
                           "ctx": int(flag(args, "--ctx")),
                           "parallel": int(flag(args, "--parallel")), "replicas": replicas}
    # And the schema above has teeth: a worker group without its name is refused.
    del worker["groupName"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(rs, RAYSERVICE)


def fake_snug(tmp_path, plan):
    """A stand-in for snug whose dry run prints `plan` (a model too large is only planned so
    under --memory, which the generator never passes)."""
    path = tmp_path / "fake-snug"
    path.write_text(f"#!/bin/sh\ncat <<'EOF'\n{json.dumps(plan)}\nEOF\n")
    path.chmod(0o755)
    return path


BAD_INPUTS = {
    "missing model": (["models/nope.gguf", "--ctx", "2048"], 2, "no such file"),
    "folder without a .gguf": (["{tmp}/empty", "--ctx", "2048"], 2, "no .gguf"),
    "ctx 0": ([MODEL, "--ctx", "0"], 2, "--ctx must be at least 1"),
    "ctx negative": ([MODEL, "--ctx", "-5"], 2, "--ctx must be at least 1"),
    "ctx missing": ([MODEL], 2, "--ctx"),
    "parallel 0": ([MODEL, "--ctx", "2048", "--parallel", "0"], 2, "--parallel"),
    "replicas 0": ([MODEL, "--ctx", "2048", "--replicas", "0"], 2, "--replicas"),
    "no snug": ([MODEL, "--ctx", "2048", "--snug", "{tmp}/no-snug"], 2, "--snug"),
    "out is a file": ([MODEL, "--ctx", "2048", "--out", "{tmp}/file"], 2, "not a directory"),
    "bad name": ([MODEL, "--ctx", "2048", "--name", "Snug_1"], 2, "DNS-1035"),
    "not a GGUF": (["{tmp}/junk.gguf", "--ctx", "2048"], 1, "snug: error:"),
    "does not fit": ([MODEL, "--ctx", "2048", "--snug", "{fake}"], 1, "cannot be served"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_a_bad_input_is_one_line_and_its_exit_code(case, tmp_path):
    args, code, words = BAD_INPUTS[case]
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no model here\n")
    (tmp_path / "file").write_text("")
    (tmp_path / "junk.gguf").write_bytes(b"this is not a GGUF file\n" * 10)
    model = {"name": "big", "path": MODEL, "context_length": 2048, "parallel": 4,
             "planned_bytes": 1 << 40, "kv_bytes": 1 << 30, "fits": False,
             "refusal": "model 'big' cannot be served in this budget: it needs 1.0 TiB"}
    fake = fake_snug(tmp_path, {"schema": "snug.serve-plan/1", "models": [model],
                                "process_bytes": 0, "server_bytes": 0,
                                "memory_bytes_all": 1 << 40, "memory_bytes_one": 1 << 40})
    args = [a.format(tmp=tmp_path, fake=fake) for a in args]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "out")]
    r = subprocess.run([sys.executable, str(GENERATE), *([] if "--snug" in args else
                                                         ["--snug", SNUG]), *args],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    lines = r.stderr.splitlines()
    assert r.returncode == code, r.stderr
    assert len(lines) == 1 and words in lines[0], r.stderr
    assert r.stdout == ""
    assert not (tmp_path / "out").exists()


def test_yaml_reads_back_as_written():
    spec = importlib.util.spec_from_file_location("generate", GENERATE)
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    tricky = ["", "yes", "No", "on", "null", "~", "true", "0.0.0.0", "8080", "1:20", "1e3",
              "-1", "--host", "-", "---", "a: b", "a #b", "#x", "ends:", "key:value", "@x",
              "*x", "&x", "!x", "%x", "|x", ">x", "'q'", '"q"', "[a]", "{a}", "é ü", "tab\tx",
              " lead", "trail ", "two\nlines", "end\n", "keep\n\n", "\nfirst", "  indented\nx",
              "snug.ray_serve:build_app", "/models/a b.gguf", "2Gi", "500m", ".inf", "0x1F"]
    doc = {"strings": tricky, "map": {s or "empty": s for s in tricky},
           "ints": [0, -3, 2 ** 40], "bools": [True, False], "none": None, "empty": {},
           "list": [], "nested": [{"a": [1, {"b": []}]}, [1, 2], "x"]}
    assert yaml.safe_load(gen.dump_yaml(doc)) == doc
