"""Build a tiny, randomly initialised Whisper model in CTranslate2 format, offline, for tests and the demo.

No real Whisper model can be downloaded on these machines (and none ships on PyPI), so the demo config
and the tests point `asr.model` at this one. It runs faster-whisper's real code path (mel features,
Silero VAD, beam search, word timestamps from cross-attention) but, being random, it produces
meaningless words: use it to test plumbing and timing, never text. For real use set `asr.model` to a
converted checkpoint folder (e.g. `ct2-transformers-converter --model openai/whisper-small
--output_dir ... --copy_files tokenizer.json preprocessor_config.json`) or a hub name such as `small`.

    python -m pipeline.transcripts.tiny_whisper --out DIR [--force]     # prints DIR
    from pipeline.transcripts.tiny_whisper import ensure_tiny_whisper   # cached under .cache/models/tiny-whisper

Recipe (ENVIRONMENT-NOTES.md "Models without a hub"): a byte-level BPE (`tokenizers`) trained on a
built-in English text; Whisper's special tokens in Whisper's order (`<|endoftext|>`,
`<|startoftranscript|>`, one token per language, `<|translate|>`, `<|transcribe|>`, `<|startoflm|>`,
`<|startofprev|>`, `<|nocaptions|>`, `<|notimestamps|>`) then the 1501 timestamp tokens
`<|0.00|>`..`<|30.00|>`; a `transformers.WhisperConfig` with d_model 64, 2 encoder + 2 decoder layers,
80 mel bins; random weights from a fixed seed; `ctranslate2.converters.TransformersConverter` to int8.
The build is deterministic and takes a few seconds; the folder is written to a temporary name and
renamed, so concurrent builders never see half a model.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from common.deps import require
from common.paths import CACHE_DIR

DEFAULT_DIR = CACHE_DIR / "models" / "tiny-whisper"
LANGUAGES = (
    "en zh de es ru ko fr ja pt tr pl ca nl ar sv it id hi fi vi he uk el ms cs ro da hu ta no th ur hr bg "
    "lt la mi ml cy sk te fa lv bn sr az sl kn et mk br eu is hy ne mn bs kk sq sw gl mr pa si km sn yo so "
    "af oc ka be tg sd gu am yi lo uz fo ht ps tk nn mt sa lb my bo tl mg as tt haw ln ha ba jw su yue"
).split()
SPECIAL_BEFORE_LANGUAGES = ["<|endoftext|>", "<|startoftranscript|>"]
SPECIAL_AFTER_LANGUAGES = ["<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>",
                           "<|nocaptions|>", "<|notimestamps|>"]
N_TIMESTAMPS = 1501  # <|0.00|> .. <|30.00|> in 20 ms steps
BUILD_VERSION = 2  # bump when the recipe changes: cached models of another version are rebuilt
MARKER = "tvts_tiny_whisper.json"

_TRAINING_TEXT = """\
The quick brown fox jumps over the lazy dog. Today we are going to cook a simple pasta with tomatoes,
onions and a little olive oil. First bring a large pot of salted water to a boil, then slice the onion
thinly and let it soften in the pan. Stir from time to time; it takes about twenty minutes. Meanwhile the
weather outside is changing: clouds are moving in from the west, the wind is picking up and people on the
street hold on to their hats. In the workshop a carpenter measures a board twice before cutting it once,
sands the edges and checks that the corners are square. Numbers one two three four five six seven eight
nine ten, and the days Monday Tuesday Wednesday Thursday Friday Saturday Sunday.
"""


def is_model_dir(path: Path) -> bool:
    return (path / "model.bin").is_file() and (path / "tokenizer.json").is_file()


def is_current(path: Path, seed: int = 0) -> bool:
    """A tiny model built by this recipe version (and seed)."""
    try:
        marker = json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return is_model_dir(path) and marker.get("version") == BUILD_VERSION and marker.get("seed") == seed


def _make_it_babble(model, torch, first_timestamp: int, eot: int, word_starts: list[int]) -> None:
    """Bias the random output layer towards text tokens.

    With uniform random logits the 1501 timestamp tokens together outweigh any single text token, so
    Whisper's timestamp rule forces a timestamp at almost every step and a random model emits a word or
    two per 30 s window. Here the decoder's final LayerNorm gets a bias along one direction u, the
    output rows of the timestamp tokens and end-of-text point against u and those of word-initial tokens
    (byte-level BPE tokens starting with a space) along it: the model then produces a steady stream of
    (meaningless) words over the speech, enough for the demo's ASR videos to pass the segment filters,
    which is what the ASR stage's tests and the demo need to exercise word timing.
    """
    with torch.no_grad():
        d_model = model.config.d_model
        u = torch.randn(d_model)
        u = u / u.norm()
        model.model.decoder.layer_norm.bias.copy_(u * 6.0)
        proj = model.proj_out.weight  # [vocab, d_model]
        proj.normal_(0.0, 0.3)
        proj[first_timestamp:] -= u * 1.0
        proj[eot] -= u * 0.5
        proj[word_starts] += u * 0.5


def _build(out: Path, seed: int = 0) -> None:
    tokenizers = require("tokenizers", why="building the tiny Whisper test model")
    transformers = require("transformers", why="building the tiny Whisper test model")
    torch = require("torch", why="building the tiny Whisper test model")
    converters = require("ctranslate2.converters", "ctranslate2", why="building the tiny Whisper test model")

    # 1. Byte-level BPE on the built-in text, then the special and timestamp tokens (ids follow in order).
    bpe = tokenizers.Tokenizer(tokenizers.models.BPE())
    bpe.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=700, min_frequency=1, show_progress=False,
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator([_TRAINING_TEXT] * 4, trainer=trainer)
    specials = SPECIAL_BEFORE_LANGUAGES + [f"<|{code}|>" for code in LANGUAGES] + SPECIAL_AFTER_LANGUAGES
    bpe.add_special_tokens(specials)
    bpe.add_special_tokens([f"<|{i * 0.02:.2f}|>" for i in range(N_TIMESTAMPS)])
    vocab_size = bpe.get_vocab_size()
    eot = bpe.token_to_id("<|endoftext|>")
    sot = bpe.token_to_id("<|startoftranscript|>")
    assert bpe.token_to_id("<|0.00|>") == bpe.token_to_id("<|notimestamps|>") + 1

    with tempfile.TemporaryDirectory(prefix="tiny-whisper-hf-") as hf_dir:
        fast = transformers.PreTrainedTokenizerFast(
            tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
            unk_token="<|endoftext|>", pad_token="<|endoftext|>",
            additional_special_tokens=[f"<|{code}|>" for code in LANGUAGES])
        fast.save_pretrained(hf_dir)
        # 2. A small Whisper with random weights (fixed seed: the same model on every machine).
        config = transformers.WhisperConfig(
            vocab_size=vocab_size, num_mel_bins=80, d_model=64,
            encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=128,
            decoder_layers=2, decoder_attention_heads=2, decoder_ffn_dim=128,
            max_source_positions=1500, max_target_positions=448,
            pad_token_id=eot, bos_token_id=eot, eos_token_id=eot, decoder_start_token_id=sot,
            suppress_tokens=[], begin_suppress_tokens=[eot])
        config.tie_word_embeddings = False
        torch.manual_seed(seed)
        model = transformers.WhisperForConditionalGeneration(config)
        word_starts = [i for token, i in bpe.get_vocab().items() if token.startswith("\u0120") and len(token) > 2]
        _make_it_babble(model, torch, first_timestamp=bpe.token_to_id("<|0.00|>"), eot=eot, word_starts=word_starts)
        model.generation_config.suppress_tokens = []
        model.generation_config.begin_suppress_tokens = [eot]
        model.generation_config.lang_to_id = {f"<|{code}|>": bpe.token_to_id(f"<|{code}|>") for code in LANGUAGES}
        model.generation_config.alignment_heads = [[1, 0], [1, 1]]
        model.save_pretrained(hf_dir)
        # 3. CTranslate2 conversion (int8 weights); faster-whisper reads tokenizer.json beside model.bin.
        bpe.save(str(Path(hf_dir) / "tokenizer.json"))
        converters.TransformersConverter(hf_dir, copy_files=["tokenizer.json"]).convert(
            str(out), quantization="int8", force=True)
    # The converter finds the language tokens through the tokenizer's `additional_special_tokens`,
    # which transformers 5 no longer exposes: write them into the CTranslate2 config (is_multilingual).
    config_path = Path(out) / "config.json"
    ct2_config = json.loads(config_path.read_text())
    ct2_config["lang_ids"] = sorted(bpe.token_to_id(f"<|{code}|>") for code in LANGUAGES)
    config_path.write_text(json.dumps(ct2_config, indent=2))


def build_tiny_whisper(out: str | os.PathLike, force: bool = False, seed: int = 0) -> Path:
    """Build the model into `out` unless this recipe's model is already there; return the folder.

    The folder appears complete or not at all (built under a temporary name, then renamed); an older
    recipe's build there is replaced.
    """
    out = Path(out)
    if is_current(out, seed) and not force:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        _build(staging / "model", seed=seed)
        (staging / "model" / MARKER).write_text(json.dumps({"version": BUILD_VERSION, "seed": seed}))
        if out.exists():
            os.rename(out, staging / "old")  # out of the way first: a rename cannot replace a folder
        try:
            os.rename(staging / "model", out)
        except OSError:
            if not is_current(out, seed):  # somebody else won the race with a complete model: fine
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def ensure_tiny_whisper(path: str | os.PathLike | None = None) -> Path:
    """The cached tiny model (built on first use)."""
    return build_tiny_whisper(Path(path) if path else DEFAULT_DIR)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.transcripts.tiny_whisper",
        description="Build a tiny random-weight Whisper model (CTranslate2, int8) offline for tests and the "
                    "demo. It exercises faster-whisper's real code path but its words are meaningless.")
    parser.add_argument("--out", default=str(DEFAULT_DIR), help=f"output folder (default {DEFAULT_DIR})")
    parser.add_argument("--force", action="store_true", help="rebuild even if a model is there")
    parser.add_argument("--seed", type=int, default=0, help="weight initialisation seed")
    args = parser.parse_args(argv)
    try:
        path = build_tiny_whisper(args.out, force=args.force, seed=args.seed)
    except Exception as exc:  # one line for the user, not a traceback
        print(f"error: could not build the tiny Whisper model in {args.out}: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
