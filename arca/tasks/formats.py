"""TRL's prompt formats: text, or a conversation (a list of ``{"role",
"content"}`` messages), and how a conversation becomes the text a model reads."""

from __future__ import annotations

from typing import Any

Message = dict[str, str]


def is_conversation(value: Any) -> bool:
    """TRL's conversational format: a list of ``{"role", "content"}`` messages."""
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(m, dict) and "role" in m and "content" in m for m in value)
    )


def as_chat(prompt: str, system_prompt: str | None = None) -> list[Message]:
    """A text prompt as a one-turn conversation, for the tokenizer's chat template."""
    head = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [*head, {"role": "user", "content": prompt}]


def prompt_text(prompt: str | list[Message], tokenizer: Any) -> str:
    """The text the model reads for ``prompt``: a conversation through the
    tokenizer's chat template with the generation prompt, as TRL renders it."""
    if isinstance(prompt, str):
        return prompt
    return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
