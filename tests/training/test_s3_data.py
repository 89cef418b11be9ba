"""The training loader on object storage: shards and blocklist in a bucket of moto's S3 server, read
through s3fs exactly as from a real bucket (AWS_ENDPOINT_URL + keys from the environment).

The bucket holds a copy of a local shard folder; the loader must give the same samples from either,
skip the same blocklisted ones, leave out a shard without its stats file, and fail in one line (naming
the config key, exit code 2) on a bad protocol or a missing bucket, without printing the secret key.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from training.config import DataConfig
from training.data import DataError, LoaderSettings, build_loader, expand_shards, load_blocklist
from training.synthetic import write_synthetic_shards

pytestmark = pytest.mark.s3

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def local_shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards")
    write_synthetic_shards(out, shards=3, samples=12, size=(40, 32), frames=8, per_bin=2, seed=3)
    # A shard still being written (its stats file not there yet): the loader must leave it out, here and there.
    (out / "shard-000009_r1.tar").write_bytes((out / "shard-000000.tar").read_bytes())
    return out


@pytest.fixture(scope="module")
def bucket_shards(s3_server, local_shards) -> str:
    """The same folder uploaded to s3://<fresh bucket>/run/shards/; returns that folder's URL."""
    url = f"{s3_server.new_bucket()}/run/shards"
    s3_server.fs().put(f"{local_shards}/", url[len("s3://"):] + "/", recursive=True)
    return url


@pytest.fixture(scope="module")
def tokenizer():
    from training.model import build_tokenizer
    from training.model_config import load_preset

    return build_tokenizer(load_preset("tiny"))


def settings(**kw) -> LoaderSettings:
    base = dict(batch_size=4, frames=4, image_size=24, num_transcripts=4, seed=1, max_text_length=12, split="eval")
    base.update(kw)
    return LoaderSettings(**base)


def keys_of(shards: str, tokenizer, **cfg) -> list[str]:
    data = DataConfig(shards=shards, num_workers=cfg.pop("num_workers", 0), holdout_fraction=0.0, **cfg)
    return [k for batch in build_loader(data, settings(), tokenizer, epochs=1) for k in batch["keys"]]


def test_loader_streams_the_same_samples_from_the_bucket(local_shards, bucket_shards, tokenizer):
    names = lambda urls: [u.rsplit("/", 1)[-1] for u in urls]  # noqa: E731
    local_urls = expand_shards(str(local_shards / "shard-*.tar"))
    glob_urls = expand_shards(f"{bucket_shards}/shard-*.tar")
    assert names(glob_urls) == names(local_urls) == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    assert all(u.startswith(bucket_shards + "/") for u in glob_urls)  # URLs stay URLs
    assert expand_shards(bucket_shards) == glob_urls                 # a folder URL: its done *.tar
    assert expand_shards(f"{bucket_shards}/shard-{{000000..000001}}.tar") == glob_urls[:2]
    local = keys_of(str(local_shards / "shard-*.tar"), tokenizer)
    assert len(local) == 36
    assert keys_of(f"{bucket_shards}/shard-*.tar", tokenizer) == local
    # DataLoader worker processes open their own S3 connections (s3fs after fork).
    assert keys_of(bucket_shards, tokenizer, num_workers=2) == keys_of(str(local_shards), tokenizer, num_workers=2)


def test_blocklist_in_the_bucket_is_honoured(s3_server, local_shards, bucket_shards, tokenizer):
    every = keys_of(bucket_shards, tokenizer)
    video = every[0].rsplit("_", 1)[0]
    text = f"# leakage report\n{video}\n{every[5]}  # a sample key\n"
    blocklist = bucket_shards.rsplit("/", 1)[0] + "/leakage/blocklist.txt"
    with s3_server.fs().open(blocklist[len("s3://"):], "wb") as handle:
        handle.write(text.encode())
    assert load_blocklist([blocklist]) == {video, every[5]}
    kept = keys_of(bucket_shards, tokenizer, blocklist=[blocklist])
    assert kept == [k for k in every if not k.startswith(video + "_") and k != every[5]]


def test_bad_locations_are_one_line_errors_naming_the_key(s3_server, bucket_shards, tmp_path, capfd):
    from common.config import ConfigError, load_config
    from training.config import PretrainConfig

    config = tmp_path / "train.yaml"
    config.write_text("pretrain:\n  data:\n    shards: foo://nowhere/shard-*.tar\n")
    with pytest.raises(ConfigError, match="data.shards") as err:
        load_config(PretrainConfig, config, job="pretrain")
    assert "\n" not in str(err.value) and "foo" in str(err.value)
    with pytest.raises(DataError, match=r"data\.shards .*bucket 'no-such-bucket-x1' does not exist") as err:
        expand_shards("s3://no-such-bucket-x1/run/shards/shard-*.tar")
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match="data.blocklist") as err:
        load_blocklist([bucket_shards + "/no-blocklist.txt"])
    assert "\n" not in str(err.value)
    # The command itself: exit 2 and one line, before a model is built (a missing bucket costs no training).
    for shards in ("foo://nowhere/shard-*.tar", "s3://no-such-bucket-x1/shards/shard-*.tar"):
        proc = subprocess.run([sys.executable, "-m", "training.pretrain", "--config", str(config),
                               "--set", f"data.shards={shards}", "--set", f"output.dir={tmp_path / 'out'}"],
                              cwd=ROOT, capture_output=True, text=True, timeout=180)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error")]
        assert len(errors) == 1 and "data.shards" in errors[0], proc.stderr
        assert s3_server.env["AWS_SECRET_ACCESS_KEY"] not in proc.stdout + proc.stderr
    captured = capfd.readouterr()
    assert s3_server.env["AWS_SECRET_ACCESS_KEY"] not in captured.out + captured.err
